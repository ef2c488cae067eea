"""The edge-client examples (examples/python, examples/node) work, run as an edge team runs them.

Each example runs as a subprocess, configured by the environment as its README says, against
the proxy under gunicorn (HTTPS, with the emulated tenant's test CA, which signs both servers)
in front of the emulated tenant. Its organization has a few more members than three pages of
the page size the example is given, so it must follow every page. The tenant's own records
say who the members are and how often the token endpoint was asked; a first token that the
proxy refuses (401) is replaced once.

With a per-client rate limit of one request a second (burst 1), the proxy answers most of an
example's calls 429 with ``Retry-After``: the example must still complete, every page of it.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from emulated_tenant.demo import API_AUDIENCE
from scripts.proxy_server import ROOT, ProxyServer
from tests.support import TOKEN, proxy_config_for

EXAMPLES = ROOT / "examples"
ORG = "org_examples"
CLIENT_ID, CLIENT_SECRET = "edge-examples", "edge-examples-secret"
MEMBER_COUNT = 17
PAGE_SIZE = 5  # the examples' --page-size: four pages of members
PAGES = math.ceil(MEMBER_COUNT / PAGE_SIZE)
# One request a second per client, no burst beyond one: an example's second call in a second is
# answered 429. (`requests`: every request of the client; the proxy refuses the flat
# {"client": {"per_minute": 60, "burst": 1}} as unknown keys.)
TIGHT_RATE_LIMITS = {"client": {"requests": {"per_minute": 60, "burst": 1}}}


@pytest.fixture(scope="module")
def examples_org(tenant_server) -> list[str]:
    """org_examples, its members, and its edge client (a real client of the tenant)."""
    tenant = tenant_server.tenant
    if tenant.organization(ORG) is None:
        tenant.add_organization(ORG, "examples", "Examples Org")
        tenant.seed_organization(ORG, MEMBER_COUNT, prefix="example")
        tenant.add_client(
            CLIENT_ID, CLIENT_SECRET, grants={API_AUDIENCE: ["read:users"]}, organizations=[ORG]
        )
    return list(tenant.member_ids(ORG))


def start_proxy(tenant_server, workdir: Path, **extra_config) -> ProxyServer:
    """The proxy over HTTPS with the tenant's certificate (one CA for both), org_examples's
    client mapped, and its management token and the tenant's keys fetched already, so that
    every token request the tenant sees afterwards is the example's."""
    config = proxy_config_for(tenant_server, cache_ttl_seconds=30)
    config["clients"][CLIENT_ID] = ORG
    config.update(extra_config)
    server = ProxyServer(
        config,
        ca_bundle=tenant_server.ca_bundle,
        workdir=str(workdir),
        tls=tenant_server.certificates,
    )
    server.start()
    ready = requests.get(f"{server.url}/readyz", verify=tenant_server.ca_bundle, timeout=30)
    assert ready.status_code == 200, ready.text
    return server


@pytest.fixture(scope="module")
def examples_proxy(tenant_server, examples_org, tmp_path_factory) -> Iterator[ProxyServer]:
    server = start_proxy(tenant_server, tmp_path_factory.mktemp("examples-proxy"))
    yield server
    server.stop()


def python_command() -> list[str]:
    return [sys.executable, str(EXAMPLES / "python" / "sync_users.py")]


def node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the Node.js example needs Node.js 20 or newer")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 20:
        pytest.skip(f"node {version.stdout.strip()} is too old: the example needs Node.js 20+")
    return [node, str(EXAMPLES / "node" / "sync-users.mjs")]


@pytest.fixture(params=["python", "node"])
def example(request, tenant_server) -> Callable[..., subprocess.CompletedProcess]:
    """``example(proxy, *args, **env)``: run the example against ``proxy``, configured by the
    environment as examples/README.md says, trusting the test CA."""
    command = python_command() if request.param == "python" else node_command()

    def run(proxy: ProxyServer, *args: str, **env: str) -> subprocess.CompletedProcess:
        environment = {
            **os.environ,
            "AUTH0_DOMAIN": tenant_server.domain,
            "AUTH0_CLIENT_ID": CLIENT_ID,
            "AUTH0_CLIENT_SECRET": CLIENT_SECRET,
            "PROXY_AUDIENCE": API_AUDIENCE,
            "PROXY_URL": proxy.url,
            "REQUESTS_CA_BUNDLE": tenant_server.ca_bundle,  # Python (requests)
            "NODE_EXTRA_CA_CERTS": tenant_server.ca_bundle,  # Node.js
            **env,
        }
        return subprocess.run(
            [*command, "--page-size", str(PAGE_SIZE), *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def printed_members(output: str) -> list[str]:
    """The member ids the example printed (its ``user_id<TAB>email`` lines)."""
    return [line.split("\t")[0] for line in output.splitlines() if "\t" in line]


def token_requests(tenant, since: int) -> int:
    return sum(1 for r in tenant.requests[since:] if r["endpoint"] == TOKEN)


def client_lines(proxy: ProxyServer) -> list[dict]:
    """The proxy's access-log lines of the example's requests."""
    return [r for r in proxy.log_records() if r.get("client_id") == CLIENT_ID and "status" in r]


def assert_synced(run: subprocess.CompletedProcess, members: list[str]) -> None:
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    printed = printed_members(run.stdout)
    assert len(printed) == len(set(printed)), "a member printed twice"
    assert sorted(printed) == sorted(members)
    assert f"profile of {printed[0]}: " in run.stdout
    assert run.stdout.splitlines()[-1] == f"synced {len(members)} members"


def test_syncs_every_page_with_one_token(example, examples_proxy, examples_org, tenant):
    since = len(tenant.requests)
    before = len(client_lines(examples_proxy))
    run = example(examples_proxy)
    assert_synced(run, examples_org)
    assert token_requests(tenant, since) == 1, "the token is fetched once and reused"
    lines = client_lines(examples_proxy)[before:]
    pages = [line for line in lines if line["path"] == "/users"]
    assert len(pages) == PAGES and all(line["status"] == 200 for line in pages)
    profiles = [line for line in lines if line["path"].startswith("/users/")]
    assert [line["status"] for line in profiles] == [200]


def test_a_refused_token_is_replaced_once(example, examples_proxy, examples_org, tenant):
    """A token the proxy refuses (here: one that expired already, as after a clock jump) is
    replaced by a new one, once, and the call repeated."""
    expired = tenant.issue_token(CLIENT_ID, API_AUDIENCE, expires_in=-3600)
    stale = {"access_token": expired, "token_type": "Bearer", "expires_in": 86_400}
    tenant.inject_fault(TOKEN, status=200, body=stale)  # the example's first token request
    since = len(tenant.requests)
    before = len(examples_proxy.log_records())
    run = example(examples_proxy)
    assert_synced(run, examples_org)
    assert token_requests(tenant, since) == 2
    refused = [r for r in examples_proxy.log_records()[before:] if r.get("status") == 401]
    assert [(r["path"], r["reason"]) for r in refused] == [("/users", "expired")]


def test_a_wrong_secret_fails_with_a_non_zero_exit(example, examples_proxy, examples_org):
    run = example(examples_proxy, AUTH0_CLIENT_SECRET="not-the-secret")
    assert run.returncode == 1
    assert "sync failed: token request: 401" in run.stderr
    assert not printed_members(run.stdout)


def test_missing_settings_are_named(example, examples_proxy):
    run = example(examples_proxy, PROXY_URL="")
    assert run.returncode == 2
    assert "--proxy-url" in run.stderr


def test_completes_under_a_tight_rate_limit_by_retrying(
    example, tenant_server, examples_org, tenant, tmp_path
):
    try:
        proxy = start_proxy(tenant_server, tmp_path / "proxy", rate_limits=TIGHT_RATE_LIMITS)
    except RuntimeError as error:  # gunicorn exited: the config was refused
        pytest.fail(f"the proxy refused rate_limits {TIGHT_RATE_LIMITS}: {error}")
    try:
        since = len(tenant.requests)
        run = example(proxy)
        assert_synced(run, examples_org)
        assert token_requests(tenant, since) == 1, "the token is fetched once and reused"
        lines = client_lines(proxy)
        limited = [line for line in lines if line["status"] == 429]
        assert limited, "the proxy answered no 429: is rate_limits implemented?"
        pages = [line for line in lines if line["path"] == "/users" and line["status"] == 200]
        assert len(pages) == PAGES
        assert "429 on /users" in run.stderr, "the example says when it waits"
    finally:
        proxy.stop()
