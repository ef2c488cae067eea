"""``auth0-m2m-proxy check-config [PATH] [--online]``: the installed console script (a real
subprocess) for the main paths, ``main([...])`` in this process for the rest, all against the
emulated tenant over real HTTPS."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from auth0_proxy.cli import main
from emulated_tenant.demo import API_AUDIENCE as PROXY_API
from emulated_tenant.demo import MGMT_SCOPES
from emulated_tenant.tenant import MANAGEMENT_API
from tests.support import JWKS, TOKEN, proxy_config_for

SCRIPT = shutil.which("auth0-m2m-proxy", path=str(Path(sys.executable).parent))
ORGANIZATION = "GET /api/v2/organizations/{id}"
CORE_READS = ["read:users", "read:organizations", "read:organization_members"]
SURFACE_READS = [
    "read:organization_member_roles",
    "read:organization_invitations",
    "read:organization_connections",
]


def run_script(*args: str, env: dict | None = None, cwd: Path | None = None):
    """The console script as installed (``pip install -e .``), in a process of its own."""
    assert SCRIPT, f"no auth0-m2m-proxy next to {sys.executable}: run .venv/bin/pip install -e ."
    base = {
        name: value
        for name, value in os.environ.items()
        if name not in ("AUTH0_MGMT_CLIENT_SECRET", "AUTH0_PROXY_CONFIG")
    }
    return subprocess.run(
        [SCRIPT, *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def ca_env(tenant_server) -> dict:
    """What makes HTTPS to the tenant trust its test CA, as for the proxy's own tests."""
    return {"REQUESTS_CA_BUNDLE": tenant_server.ca_bundle}


@pytest.fixture
def in_process(monkeypatch, ca_env):
    """This process's environment as the script's: the tenant's CA, no secret or path set."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_env["REQUESTS_CA_BUNDLE"])
    monkeypatch.delenv("AUTH0_MGMT_CLIENT_SECRET", raising=False)
    monkeypatch.delenv("AUTH0_PROXY_CONFIG", raising=False)


@pytest.fixture
def config(tenant_server, tmp_path) -> dict:
    """The tests' proxy config for the tenant (as tests/support.py builds it), cache in tmp."""
    return proxy_config_for(tenant_server, cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def write_config(tmp_path) -> Callable[..., Path]:
    def write(content: dict | str, name: str = "config.json") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return write


def with_management_client(tenant, config: dict, scopes: list[str] | None) -> str:
    """Register a management client of the test's own in the tenant, granted ``scopes`` for the
    Management API (None: no grant at all), and make it the config's; its secret."""
    client_id = f"cli-mgmt-{uuid.uuid4().hex[:8]}"
    secret = f"{client_id}-secret-{uuid.uuid4().hex}"
    grants = None if scopes is None else {MANAGEMENT_API: scopes}
    tenant.add_client(client_id, secret, grants=grants)
    config["auth0"]["mgmt_client_id"] = client_id
    config["auth0"]["mgmt_client_secret"] = secret
    return secret


def lines(output: str) -> dict[str, str]:
    """The online report's lines by check name: ``{"JWKS": "ok    JWKS: ..."}``."""
    found = {}
    for line in output.splitlines():
        status, _, rest = line.strip().partition("  ")
        if status.strip() in ("ok", "FAIL", "warn", "skip") and ":" in rest:
            found[rest.strip().split(":", 1)[0]] = line.strip()
    return found


def assert_no_secret(output: str, secret: str, tenant) -> None:
    assert secret not in output
    assert "eyJ" not in output  # no JWT, of any kind
    for token in tenant.live_management_tokens():
        assert token not in output


# Offline


def test_valid_file_exits_0_with_a_summary(config, write_config, tenant_server):
    config["writes"] = {"edge-acme": {"permissions": ["update:users", "delete:users"]}}
    path = write_config(config)

    result = run_script("check-config", str(path))

    assert result.returncode == 0, result.stderr
    assert f"{path}: OK" in result.stdout
    assert f"tenant: {tenant_server.tenant.domain}" in result.stdout
    assert "clients: 4; organizations mapped: 3 (org_acme, org_big, org_globex)" in result.stdout
    assert f"cache: filesystem ({config['proxy']['cache_dir']})" in result.stdout
    assert "writes: edge-acme: delete:users, update:users" in result.stdout
    assert config["auth0"]["mgmt_client_secret"] not in result.stdout + result.stderr
    assert "online" not in result.stdout  # offline: no call to the tenant


def test_path_defaults_to_config_json_in_the_working_directory(config, write_config, tmp_path):
    write_config(config, "config.json")

    result = run_script("check-config", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "config.json: OK" in result.stdout
    assert "writes: none granted" in result.stdout


def test_path_defaults_to_auth0_proxy_config(config, write_config, in_process, monkeypatch, capsys):
    path = write_config(config, "elsewhere.json")
    monkeypatch.setenv("AUTH0_PROXY_CONFIG", str(path))

    assert main(["check-config"]) == 0
    assert f"{path}: OK" in capsys.readouterr().out


def test_invalid_file_exits_1_naming_the_key(config, write_config):
    config["clients"]["edge-acme"] = "acme"
    path = write_config(config)

    result = run_script("check-config", str(path))

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("auth0-m2m-proxy: configuration error: ")
    assert "clients.edge-acme" in result.stderr and "organization id" in result.stderr


@pytest.mark.parametrize("example", ["config.json.example", "config.writes.json.example"])
def test_an_example_not_filled_in_exits_1_naming_its_placeholders(example):
    path = Path(__file__).resolve().parent.parent / example

    result = run_script("check-config", str(path), env={"AUTH0_MGMT_CLIENT_SECRET": "s3cret-value"})

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"auth0-m2m-proxy: configuration error: config file '{path}': "
        "clients: 'EDGE_CLIENT_ID_OF_ACME' is the example's placeholder, and so are "
    )
    assert "auth0.domain 'your-tenant.eu.auth0.com'" in result.stderr
    assert "auth0.mgmt_client_secret 'or leave this key out" in result.stderr
    assert result.stderr.rstrip().endswith("fill in your own values")


def test_a_placeholder_left_in_a_config_exits_1_naming_its_key(config, write_config):
    config["auth0"]["mgmt_client_id"] = "PROXY_MANAGEMENT_CLIENT_ID"
    path = write_config(config)

    result = run_script("check-config", str(path))

    assert result.returncode == 1
    assert result.stderr == (
        f"auth0-m2m-proxy: configuration error: config file '{path}': auth0.mgmt_client_id: "
        "'PROXY_MANAGEMENT_CLIENT_ID' is the example's placeholder; fill in your own value\n"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["clients"].update({"edge-x": ["org_ok", "not-an-org"]}), "clients.edge-x: "),
        (lambda c: c["auth0"].update(domian="x.auth0.com"), "auth0.domian: unknown key"),
        (lambda c: c["auth0"].update(domain="https://x.auth0.com/"), "auth0.domain: give the"),
        (lambda c: c["auth0"].pop("mgmt_client_secret"), "auth0.mgmt_client_secret: missing"),
        (lambda c: c["proxy"].update(page_size=500), "proxy.page_size: "),
        # load_configuration's own check, beyond the file's schema: the server's rules, all
        (
            lambda c: c.update(writes={"edge-acme": {"permissions": ["update:roles"]}}),
            "writes.edge-acme.permissions: 'update:roles' is no write of the proxy",
        ),
    ],
)
def test_invalid_settings_exit_1_naming_the_key(
    config, write_config, in_process, capsys, change, message
):
    change(config)
    path = write_config(config)

    assert main(["check-config", str(path)]) == 1
    output = capsys.readouterr()
    assert output.out == ""
    assert "configuration error" in output.err and message in output.err


def test_a_file_that_is_not_json_exits_1(write_config, in_process, capsys):
    path = write_config('{"clients": {"edge-acme": "org_acme",}')

    assert main(["check-config", str(path)]) == 1
    assert f"config file '{path}' is not valid JSON" in capsys.readouterr().err


def test_a_duplicate_client_exits_1(write_config, in_process, capsys):
    path = write_config('{"clients": {"a": "org_a", "a": "org_b"}, "auth0": {}}')

    assert main(["check-config", str(path)]) == 1
    assert "duplicate key 'a'" in capsys.readouterr().err


def test_a_missing_file_exits_1(tmp_path, in_process, capsys):
    path = tmp_path / "absent.json"

    assert main(["check-config", str(path)]) == 1
    assert f"cannot read config file '{path}': No such file or directory" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["check-everything"]) == 2
    assert main(["check-config", "a.json", "b.json"]) == 2
    assert main(["check-config", "--offline"]) == 2
    assert "usage: auth0-m2m-proxy" in capsys.readouterr().err
    assert main(["check-config", "--help"]) == 0


def test_the_script_without_a_command_exits_2():
    result = run_script()

    assert result.returncode == 2
    assert "usage: auth0-m2m-proxy" in result.stderr


# Online


def test_online_against_the_tenant_is_ok(config, write_config, tenant, ca_env):
    path = write_config(config)

    result = run_script("check-config", str(path), "--online", env=ca_env)

    assert result.returncode == 0, result.stdout + result.stderr
    checks = lines(result.stdout)
    clients = {f"client {client_id}" for client_id in config["clients"]}
    assert set(checks) == {
        "JWKS",
        "management token",
        "management permissions",
        "organizations",
        "clients map",
        *clients,
    }
    assert all(line.startswith("ok ") for line in checks.values()), result.stdout
    assert checks["client edge-acme"].endswith("client edge-acme: org_acme (config)")
    assert (
        f"https://{tenant.domain}/.well-known/jwks.json: 1 RS256 signing key(s)" in (checks["JWKS"])
    )
    assert "client proxy-mgmt-client" in checks["management token"]
    assert "all 3 mapped organization(s) exist" in checks["organizations"]
    assert result.stderr == ""
    assert_no_secret(result.stdout + result.stderr, config["auth0"]["mgmt_client_secret"], tenant)
    # The proxy's own parts made the calls: one JWKS, one token, one read per organization.
    assert tenant.counts[JWKS] == 1
    assert tenant.counts[TOKEN] == 1
    assert tenant.counts[ORGANIZATION] == 3


def test_online_fetches_a_token_of_its_own_each_time(
    config, write_config, tenant, in_process, make_app, capfd
):
    """A cache of its own: the configured secret is tried every time, never a token a running
    proxy cached in the same cache directory. (capfd: the app logs to file descriptor 2.)"""
    proxy = make_app(cache_dir=config["proxy"]["cache_dir"])
    with proxy.app_context():
        proxy.extensions["management"].token()  # cached in the shared cache directory
    config["auth0"]["mgmt_client_secret"] = "rotated-away"
    path = write_config(config)

    assert main(["check-config", str(path), "--online"]) == 1
    assert main(["check-config", str(path), "--online"]) == 1

    assert lines(capfd.readouterr().out)["management token"].startswith("FAIL")
    assert tenant.counts[TOKEN] == 3  # the proxy's, and one for each check


def test_online_names_a_mapped_organization_that_does_not_exist(
    config, write_config, tenant, in_process, capsys
):
    config["clients"]["edge-ghost"] = ["org_acme", "org_ghost"]
    path = write_config(config)

    assert main(["check-config", str(path), "--online"]) == 1

    checks = lines(capsys.readouterr().out)
    assert checks["organizations"].startswith("FAIL")
    assert (
        "1 of 4 mapped organization(s) do not exist: org_ghost (clients.edge-ghost)"
        in (checks["organizations"])
    )
    assert checks["JWKS"].startswith("ok") and checks["management token"].startswith("ok")


@pytest.mark.parametrize("secret_from", ["file", "environment"])
def test_online_with_a_wrong_secret_fails_without_printing_it(
    config, write_config, tenant, ca_env, secret_from
):
    wrong = f"wrong-secret-{uuid.uuid4().hex}"
    env = dict(ca_env)
    if secret_from == "file":
        config["auth0"]["mgmt_client_secret"] = wrong
    else:
        env["AUTH0_MGMT_CLIENT_SECRET"] = wrong  # wins over the file's, as for the proxy
    path = write_config(config)

    result = run_script("check-config", str(path), "--online", env=env)

    assert result.returncode == 1
    checks = lines(result.stdout)
    assert checks["management token"].startswith("FAIL")
    assert "token endpoint: 401 access_denied: Unauthorized" in checks["management token"]
    assert checks["management permissions"] == "skip  management permissions: no management token"
    assert checks["organizations"].startswith("skip")
    assert checks["JWKS"].startswith("ok")
    assert_no_secret(result.stdout + result.stderr, wrong, tenant)


def test_online_with_a_client_not_authorized_for_the_management_api(
    config, write_config, tenant, in_process, capsys
):
    secret = with_management_client(tenant, config, scopes=None)
    path = write_config(config)

    assert main(["check-config", str(path), "--online"]) == 1

    output = capsys.readouterr()
    checks = lines(output.out)
    assert checks["management token"].startswith("FAIL")
    assert "403 access_denied: Client is not authorized" in checks["management token"]
    assert_no_secret(output.out + output.err, secret, tenant)


def test_online_names_a_read_permission_the_management_client_lacks(
    config, write_config, tenant, in_process, capsys
):
    secret = with_management_client(tenant, config, ["read:users", "read:organizations"])
    path = write_config(config)

    assert main(["check-config", str(path), "--online"]) == 1

    output = capsys.readouterr()
    checks = lines(output.out)
    line = checks["management permissions"]
    assert line.startswith("FAIL")
    assert "the token lacks read:organization_members (the proxy's reads)" in line
    assert checks["organizations"].startswith("ok")  # read:organizations is there
    assert_no_secret(output.out + output.err, secret, tenant)


def test_online_names_read_events_where_the_events_api_is_read(
    config, write_config, tenant, in_process, capsys
):
    with_management_client(tenant, config, CORE_READS)
    config["events"] = {"source": "events_api"}
    path = write_config(config)

    assert main(["check-config", str(path), "--online"]) == 1

    line = lines(capsys.readouterr().out)["management permissions"]
    assert "the token lacks read:events (events.source events_api)" in line


def test_online_prints_the_effective_clients_map_with_where_each_entry_came_from(
    config, write_config, tenant, in_process, capsys
):
    """With client_grants on: the config's entries (one winning over Auth0's grant, said so),
    Auth0's, and the grants that map to nothing, with why."""
    tenant.add_client("edge-cli-new", "edge-cli-new-secret")
    usable = tenant.add_client_grant("edge-cli-new", PROXY_API, organization_usage="require")
    tenant.associate_client_grant("org_globex", usable.id)
    tenant.add_client("edge-cli-any", "edge-cli-any-secret")
    anywhere = tenant.add_client_grant(
        "edge-cli-any", PROXY_API, organization_usage="allow", allow_any_organization=True
    )
    tenant.add_client("edge-cli-deny", "edge-cli-deny-secret")
    denied = tenant.add_client_grant("edge-cli-deny", PROXY_API)  # Auth0's default: deny
    config["client_grants"] = {"enabled": True}
    path = write_config(config)
    try:
        assert main(["check-config", str(path), "--online"]) == 0
    finally:
        for grant in (usable, anywhere, denied):
            tenant.delete_client_grant(grant.id)

    output = capsys.readouterr().out
    assert (
        "client grants: Auth0's also map clients (config entries win), read every 300 s, an"
        " unknown client looked up at most every 10 s; allow_any_organization refused"
    ) in output
    checks = lines(output)
    acme_grant = tenant.client_grant_for("edge-acme", PROXY_API).id
    assert checks["client edge-acme"].endswith(
        f"org_acme (config; wins over Auth0's grant {acme_grant} (org_acme))"
    )
    assert checks["client edge-cli-new"] == (
        f"ok    client edge-cli-new: org_globex (Auth0's grant {usable.id})"
    )
    assert checks["client edge-cli-any"].startswith("warn")
    assert "nothing: allow_any_organization, not trusted" in checks["client edge-cli-any"]
    assert "nothing: organization_usage deny" in checks["client edge-cli-deny"]
    mapped = [
        line for line in checks.values() if line.startswith("ok") and "(Auth0's grant" in line
    ]
    assert "client edge-cli-new" in " ".join(mapped)
    assert f"config: 4; Auth0's client grants: {len(mapped)}" in checks["clients map"]


def test_online_names_what_reading_client_grants_needs(
    config, write_config, tenant, in_process, capsys
):
    with_management_client(tenant, config, CORE_READS)
    config["client_grants"] = {"enabled": True}
    path = write_config(config)

    assert main(["check-config", str(path), "--online"]) == 1

    checks = lines(capsys.readouterr().out)
    assert (
        "the token lacks read:client_grants (client_grants.enabled);"
        " read:organization_client_grants (client_grants.enabled)"
    ) in checks["management permissions"]
    assert checks["clients map"].startswith("FAIL")
    assert "cannot read Auth0's client grants" in checks["clients map"]


def test_online_warns_of_missing_reads_of_the_api_v2_surface(
    config, write_config, tenant, in_process, capsys
):
    with_management_client(tenant, config, CORE_READS)
    path = write_config(config)

    assert main(["check-config", str(path), "--online"]) == 0

    line = lines(capsys.readouterr().out)["management permissions"]
    assert line.startswith("warn")
    assert f"lacks {', '.join(sorted(SURFACE_READS))}" in line


def test_online_names_what_the_granted_writes_need(
    config, write_config, tenant, in_process, capsys
):
    """The permissions come from the rule table: create:users needs its own, and what the
    rule's new member takes (joining the organization, and deletion should that fail)."""
    with_management_client(
        tenant, config, [*CORE_READS, *SURFACE_READS, "create:users", "update:users"]
    )
    config["writes"] = {
        "edge-acme": {"permissions": ["create:users", "update:users"]},
        "edge-globex": {"permissions": ["delete:organization_members"]},
    }
    path = write_config(config)

    assert main(["check-config", str(path), "--online"]) == 1

    line = lines(capsys.readouterr().out)["management permissions"]
    assert line.startswith("FAIL")
    assert "create:organization_members (writes.edge-acme: create:users)" in line
    assert "delete:users (writes.edge-acme: create:users)" in line
    assert "delete:organization_members (writes.edge-globex: delete:organization_members)" in line
    assert "update:users" not in line.split("lacks", 1)[1]


def test_online_ok_with_writes_the_management_client_can_make(
    config, write_config, tenant, in_process, capsys
):
    assert {"create:users", "update:users", "create:organization_members"} <= set(MGMT_SCOPES)
    config["writes"] = {"edge-acme": {"permissions": ["create:users", "update:users"]}}
    path = write_config(config)

    assert main(["check-config", str(path), "--online"]) == 0

    line = lines(capsys.readouterr().out)["management permissions"]
    assert line.startswith("ok")
    assert "has the 7 needed" in line
    # the demo's management client holds writes no client is granted here: least privilege
    assert "not needed, could be removed: create:organization_invitations" in line


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_online_with_the_tenant_unreachable_fails_in_bounded_time(
    config, write_config, in_process, capsys
):
    config["auth0"]["domain"] = f"127.0.0.1:{closed_port()}"
    del config["auth0"]["management_audience"]
    path = write_config(config)

    started = time.monotonic()
    assert main(["check-config", str(path), "--online"]) == 1
    elapsed = time.monotonic() - started

    checks = lines(capsys.readouterr().out)
    assert checks["JWKS"].startswith("FAIL")
    assert "ConnectionError on GET /.well-known/jwks.json" in checks["JWKS"]
    assert checks["management token"].startswith("FAIL")
    assert checks["organizations"].startswith("skip")
    # the configured retry budget (3 s) for each of the two calls, and no more
    assert elapsed < 15, elapsed


def test_online_without_trusting_the_tenants_ca_says_so(config, write_config, monkeypatch, capsys):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.delenv("AUTH0_MGMT_CLIENT_SECRET", raising=False)
    path = write_config(config)

    assert main(["check-config", str(path), "--online"]) == 1

    line = lines(capsys.readouterr().out)["JWKS"]
    assert line.startswith("FAIL") and "SSLError" in line and "REQUESTS_CA_BUNDLE" in line


def test_a_short_secret_does_not_cut_letters_out_of_the_report(tmp_path, tenant_server, capsys):
    config = proxy_config_for(tenant_server)
    config["auth0"]["mgmt_client_secret"] = "x"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "https://m2m-proxy.example.com" in out and "[redacted]" not in out


def test_a_redis_password_is_never_printed(tmp_path, tenant_server, capsys):
    config = proxy_config_for(tenant_server)
    config["proxy"] = {
        "cache_type": "redis",
        "cache_redis_url": "redis://user:Pw-in-userinfo-1@redis:6379/0?password=Pw-in-query-2",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "redis://redis:6379/0" in out
    assert "Pw-in-userinfo-1" not in out and "Pw-in-query-2" not in out
