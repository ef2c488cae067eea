"""Fixtures: a real emulated tenant over HTTPS, the proxy under gunicorn, and token makers.

The tenant and the proxy live for the whole session (starting gunicorn costs a second); tests that
change the tenant undo their change, and tests that count upstream calls start their own proxy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
import requests

from emulated_tenant import TenantServer, demo_tenant
from emulated_tenant.demo import API_AUDIENCE as PROXY_API
from emulated_tenant.demo import proxy_config
from scripts.proxy_server import ProxyServer

BIG_ORG = "org_big"
BIG_ORG_SIZE = 2500


@pytest.fixture(scope="session")
def tenant_server() -> Iterator[TenantServer]:
    tenant = demo_tenant()
    tenant.add_organization(BIG_ORG, "big", "Big Customer")
    tenant.seed_organization(BIG_ORG, BIG_ORG_SIZE, prefix="big")
    for client_id, orgs in CLIENT_ORGS.items():
        if tenant.client(client_id) is None:
            tenant.add_client(
                client_id,
                f"{client_id}-secret",
                grants={PROXY_API: ["read:users"]},
                organizations=orgs,
            )
    with TenantServer(tenant) as server:
        yield server


@pytest.fixture
def tenant(tenant_server):
    """The tenant's state; counters reset for each test, injected faults dropped after it."""
    tenant_server.tenant.reset_counts()
    yield tenant_server.tenant
    tenant_server.tenant.clear_faults()


# Which organizations each edge client may reach, in the proxy config used by the tests.
CLIENT_ORGS = {
    "edge-acme": ["org_acme"],
    "edge-globex": ["org_globex"],
    "edge-big": [BIG_ORG],
    "edge-reseller": ["org_acme", "org_globex"],
    "edge-unmapped": ["org_acme"],  # a real client of the tenant, absent from the proxy config
}


def proxy_config_for(tenant_server: TenantServer, **proxy_settings) -> dict:
    config = copy.deepcopy(proxy_config(tenant_server.tenant))
    config["clients"] = {
        client: orgs[0] if len(orgs) == 1 else orgs
        for client, orgs in CLIENT_ORGS.items()
        if client != "edge-unmapped"
    }
    config["proxy"] = proxy_settings
    return config


@pytest.fixture(scope="session")
def proxy(tenant_server, tmp_path_factory) -> Iterator[ProxyServer]:
    """The proxy as deployed: gunicorn, 2 workers, threads, talking HTTPS to the tenant."""
    # Refetch keys at most every second, so a key rotated by one test is known to the next;
    # no caching of Auth0's answers, so each test sees the upstream calls it causes (caching has
    # its own tests, with proxies of their own).
    server = ProxyServer(
        proxy_config_for(tenant_server, jwks_refetch_interval_seconds=1, cache_ttl_seconds=0),
        ca_bundle=tenant_server.ca_bundle,
        workdir=str(tmp_path_factory.mktemp("proxy")),
    )
    with server:
        yield server


@pytest.fixture
def start_proxy(tenant_server, tmp_path) -> Iterator[Callable[..., ProxyServer]]:
    """Start a proxy of the test's own (fresh cache, own settings); stopped after the test."""
    started = []

    def start(workers=2, threads=4, env=None, **proxy_settings) -> ProxyServer:
        proxy_settings.setdefault("cache_ttl_seconds", 0)  # caching tests turn it on
        server = ProxyServer(
            proxy_config_for(tenant_server, **proxy_settings),
            ca_bundle=tenant_server.ca_bundle,
            workers=workers,
            threads=threads,
            workdir=str(tmp_path / f"proxy{len(started)}"),
            env=env,
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def make_token(tenant_server) -> Callable[..., str]:
    """Sign a token as the tenant would for an edge client; keywords override claims."""

    def make(client_id: str = "edge-acme", organization: str | None = None, **kwargs) -> str:
        kwargs.setdefault("scope", "read:users")
        return tenant_server.tenant.issue_token(
            client_id, kwargs.pop("audience", PROXY_API), organization, **kwargs
        )

    return make


@pytest.fixture
def call(proxy) -> Callable[..., requests.Response]:
    """GET a proxy path with a bearer token (or raw headers)."""

    def get(path: str, token: str | None = None, headers: dict | None = None, server=None):
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(f"{(server or proxy).url}{path}", headers=headers, timeout=60)

    return get


def user_path(user_id: str) -> str:
    return f"/users/{quote(user_id, safe='')}"
