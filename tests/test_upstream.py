"""The proxy's calls to Auth0: tokens and keys fetched once, replaced when rotated or revoked."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from emulated_tenant import TenantServer, demo_tenant
from scripts.proxy_server import ProxyServer
from tests.conftest import PROXY_API, proxy_config_for, user_path

MEMBERS = "GET /api/v2/organizations/{id}/members"
TOKEN = "POST /oauth/token"
JWKS = "GET /.well-known/jwks.json"
USER = "GET /api/v2/users/{id}"
USER_ORGS = "GET /api/v2/users/{id}/organizations"


def test_management_token_and_jwks_fetched_once_across_two_workers(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy(workers=2, threads=4)
    token = make_token("edge-acme")
    paths = ["/users", user_path("auth0|alice-acme")] * 40
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda path: call(path, token, server=proxy).status_code, paths))
    assert statuses == [200] * len(paths)
    assert tenant.counts[TOKEN] == 1
    assert tenant.counts[JWKS] == 1
    workers = {record["pid"] for record in proxy.log_records() if record.get("path")}
    assert len(workers) == 2, "both gunicorn workers should have served requests"


def test_connections_to_auth0_are_kept_alive_and_reused(
    start_proxy, call, make_token, tenant, tenant_server
):
    """One pooled session per worker: every upstream call after the first reuses a connection."""
    proxy = start_proxy(workers=1, threads=1)
    token = make_token("edge-acme")
    assert call("/users", token, server=proxy).status_code == 200
    connections, calls = tenant_server.connections, sum(tenant.counts.values())
    for _ in range(10):
        assert call(user_path("auth0|alice-acme"), token, server=proxy).status_code == 200
    assert sum(tenant.counts.values()) - calls == 20  # uncached: membership and profile each
    assert tenant_server.connections == connections


def test_revoked_management_token_is_replaced_without_an_error(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy()
    token = make_token("edge-acme")
    assert call("/users", token, server=proxy).status_code == 200
    tenant.revoke_management_tokens()
    assert call("/users", token, server=proxy).status_code == 200
    assert tenant.counts[TOKEN] == 2


def test_rotated_signing_key_is_accepted_without_restart(start_proxy, call, make_token, tenant):
    proxy = start_proxy()
    assert call("/users", make_token(), server=proxy).status_code == 200
    tenant.rotate_key()
    assert call("/users", make_token(), server=proxy).status_code == 200
    assert tenant.counts[JWKS] == 2


def test_unknown_kids_refetch_the_jwks_at_most_once_per_interval(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy(jwks_refetch_interval_seconds=600)
    assert call("/users", make_token(), server=proxy).status_code == 200
    for n in range(20):
        token = make_token(header={"kid": f"made-up-{n}"})
        assert call("/users", token, server=proxy).status_code == 401
    assert tenant.counts[JWKS] == 2


def test_proxies_of_two_tenants_can_share_one_cache_directory(tenant_server, tmp_path):
    shared_cache = str(tmp_path / "shared-cache")
    other = demo_tenant()
    with TenantServer(other) as other_server:
        bundle = tmp_path / "both-cas.pem"
        bundle.write_text(
            Path(tenant_server.ca_bundle).read_text() + Path(other_server.ca_bundle).read_text()
        )
        servers = []
        for server in (tenant_server, other_server):
            config = proxy_config_for(server, cache_dir=shared_cache)
            servers.append(
                (
                    server.tenant,
                    ProxyServer(
                        config,
                        ca_bundle=str(bundle),
                        workers=1,
                        workdir=str(tmp_path / server.domain),
                    ),
                )
            )
        try:
            for _, proxy in servers:
                proxy.start()
            for _ in range(3):
                for tenant, proxy in servers:
                    token = tenant.issue_token("edge-acme", PROXY_API, scope="read:users")
                    response = requests.get(
                        f"{proxy.url}/users",
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=30,
                    )
                    assert response.status_code == 200
        finally:
            for _, proxy in servers:
                proxy.stop()


def test_requests_racing_a_key_rotation_all_wait_for_the_one_refetch(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy(workers=2, threads=8)
    assert call("/users", make_token(), server=proxy).status_code == 200
    tenant.rotate_key()
    tenant.latency = 0.2  # a JWKS fetch in flight long enough for the others to arrive meanwhile
    try:
        tokens = [make_token() for _ in range(24)]
        path = user_path("auth0|alice-acme")
        with ThreadPoolExecutor(max_workers=24) as pool:
            statuses = list(pool.map(lambda t: call(path, t, server=proxy).status_code, tokens))
    finally:
        tenant.latency = 0
    assert statuses == [200] * 24
    assert tenant.counts[JWKS] == 2


def test_failed_key_refetch_is_tried_again_after_the_cooldown_not_the_interval(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy(jwks_refetch_interval_seconds=600, failure_cooldown_seconds=1)
    assert call("/users", make_token(), server=proxy).status_code == 200
    tenant.rotate_key()
    tenant.inject_fault(JWKS, status=503, times=20)
    new_key_token = make_token()
    assert call("/users", new_key_token, server=proxy).status_code == 503  # may be fine: not 401
    tenant.clear_faults()
    time.sleep(1.5)
    assert call("/users", new_key_token, server=proxy).status_code == 200


def test_management_token_is_renewed_ahead_of_expiry_so_no_request_waits(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy(workers=1)
    tenant.management_token_lifetime = 4  # cached 2 s, renewed in the background after 0.8 s
    try:
        token = make_token()
        deadline = time.monotonic() + 5
        request_ids = []
        while time.monotonic() < deadline:
            request_id = uuid.uuid4().hex
            assert (
                call(
                    "/users", token, server=proxy, headers={"X-Request-ID": request_id}
                ).status_code
                == 200
            )
            request_ids.append(request_id)
    finally:
        tenant.management_token_lifetime = 86400
    assert tenant.counts[TOKEN] >= 3
    calls = {r["request_id"]: r["upstream_calls"] for r in proxy.log_records() if "request_id" in r}
    # The first request fetched the keys, the token and the members; every later one only the
    # members: no request ever waited for a token.
    assert [calls[request_id] for request_id in request_ids[1:]] == [1] * (len(request_ids) - 1)


def test_a_withdrawn_key_is_not_trusted_by_a_remembered_signature(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy(workers=1, jwks_refetch_interval_seconds=1)
    old_token = make_token()
    assert call("/users", old_token, server=proxy).status_code == 200  # verified, remembered
    old_kid = tenant.signing_key.kid
    tenant.rotate_key()
    tenant.withdraw_key(old_kid)
    time.sleep(1.1)  # past the refetch interval
    assert call("/users", make_token(), server=proxy).status_code == 200  # new key: JWKS refetched
    time.sleep(1.1)
    assert call("/users", old_token, server=proxy).status_code == 401
