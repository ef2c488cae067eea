"""The proxy's calls to Auth0: tokens and keys fetched once, replaced when rotated or revoked.

In this process, but where it takes gunicorn's workers to show one fetch for all of them.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from auth0_proxy import create_app
from emulated_tenant import TenantServer, demo_tenant
from emulated_tenant.demo import API_AUDIENCE
from tests.support import (
    JWKS,
    TOKEN,
    assert_invalid_token,
    assert_refused,
    proxy_config_for,
    user_path,
    withdraw_signing_key,
)


def test_management_token_and_jwks_fetched_once_across_two_workers(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy(workers=2, threads=4)
    token = make_token("edge-acme")
    paths = ["/users", user_path("auth0|alice-acme")] * 40
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda path: call(path, token, via=proxy).status_code, paths))
    assert statuses == [200] * len(paths)
    assert tenant.counts[TOKEN] == 1
    assert tenant.counts[JWKS] == 1
    workers = {record["pid"] for record in proxy.log_records() if record.get("path")}
    assert len(workers) == 2, "both gunicorn workers should have served requests"


def test_connections_to_auth0_are_kept_alive_and_reused(
    make_app, call, make_token, tenant, tenant_server
):
    """One pooled session per worker: every upstream call after the first reuses a connection."""
    proxy = make_app()
    token = make_token("edge-acme")
    assert call("/users", token, via=proxy).status_code == 200
    connections, calls = tenant_server.connections, sum(tenant.counts.values())
    for _ in range(10):
        assert call(user_path("auth0|alice-acme"), token, via=proxy).status_code == 200
    assert sum(tenant.counts.values()) - calls == 20  # uncached: membership and profile each
    assert tenant_server.connections == connections


def test_revoked_management_token_is_replaced_without_an_error(make_app, call, make_token, tenant):
    proxy = make_app()
    token = make_token("edge-acme")
    assert call("/users", token, via=proxy).status_code == 200
    tenant.revoke_management_tokens()
    assert call("/users", token, via=proxy).status_code == 200
    assert tenant.counts[TOKEN] == 2


def test_rotated_signing_key_is_accepted_without_restart(make_app, call, make_token, tenant):
    proxy = make_app()
    assert call("/users", make_token(), via=proxy).status_code == 200
    tenant.rotate_key()
    assert call("/users", make_token(), via=proxy).status_code == 200
    assert tenant.counts[JWKS] == 2


def test_unknown_kids_refetch_the_jwks_at_most_once_per_interval(
    make_app, call, make_token, tenant
):
    proxy = make_app(jwks_refetch_interval_seconds=600)
    assert call("/users", make_token(), via=proxy).status_code == 200
    for n in range(20):
        token = make_token(header={"kid": f"made-up-{n}"})
        assert_invalid_token(call("/users", token, via=proxy), "unknown signing key")
    assert tenant.counts[JWKS] == 2


def test_proxies_of_two_tenants_can_share_one_cache_directory(
    tenant_server, tmp_path, monkeypatch, call
):
    shared_cache = str(tmp_path / "shared-cache")
    with TenantServer(demo_tenant()) as other_server:
        bundle = tmp_path / "both-cas.pem"
        bundle.write_text(
            Path(tenant_server.ca_bundle).read_text() + Path(other_server.ca_bundle).read_text()
        )
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        proxies = [
            (server.tenant, create_app(proxy_config_for(server, cache_dir=shared_cache)))
            for server in (tenant_server, other_server)
        ]
        for _ in range(3):
            for tenant, proxy in proxies:
                token = tenant.issue_token("edge-acme", API_AUDIENCE, scope="read:users")
                assert call("/users", token, via=proxy).status_code == 200


def test_requests_racing_a_key_rotation_all_wait_for_the_one_refetch(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy(workers=2, threads=8)
    assert call("/users", make_token(), via=proxy).status_code == 200
    tenant.rotate_key()
    tenant.latency = 0.2  # a JWKS fetch in flight long enough for the others to arrive meanwhile
    try:
        tokens = [make_token() for _ in range(24)]
        path = user_path("auth0|alice-acme")
        with ThreadPoolExecutor(max_workers=24) as pool:
            statuses = list(pool.map(lambda t: call(path, t, via=proxy).status_code, tokens))
    finally:
        tenant.latency = 0
    assert statuses == [200] * 24
    assert tenant.counts[JWKS] == 2


def test_failed_key_refetch_is_tried_again_after_the_cooldown_not_the_interval(
    make_app, call, make_token, tenant, clock
):
    proxy = make_app(jwks_refetch_interval_seconds=600, failure_cooldown_seconds=1)
    assert call("/users", make_token(), via=proxy).status_code == 200
    tenant.rotate_key()
    tenant.inject_fault(JWKS, status=503, times=20)
    new_key_token = make_token()
    answer = call("/users", new_key_token, via=proxy)  # the token may be fine: 503, not 401
    assert_refused(answer, 503, "temporarily_unavailable", "JWKS answered 503")
    tenant.clear_faults()
    clock.advance(1.5)  # the failure's memory lapses
    assert call("/users", new_key_token, via=proxy).status_code == 200


def test_management_token_is_renewed_ahead_of_expiry_so_no_request_waits(
    make_app, call, make_token, tenant
):
    proxy = make_app()
    tenant.management_token_lifetime = 4  # cached 2 s, renewed in the background after 0.8 s
    try:
        token = make_token()
        deadline = time.monotonic() + 5
        answers = []
        while time.monotonic() < deadline:
            answers.append(call("/users", token, via=proxy))
            assert answers[-1].status_code == 200
    finally:
        tenant.management_token_lifetime = 86400
    assert tenant.counts[TOKEN] >= 3
    # The first request fetched the keys, the token and the members; every later one only the
    # members: no request ever waited for a token.
    assert [answer.log["upstream_calls"] for answer in answers[1:]] == [1] * (len(answers) - 1)


def test_a_withdrawn_key_is_not_trusted_by_a_remembered_signature(
    make_app, call, make_token, tenant, clock
):
    proxy = make_app(jwks_refetch_interval_seconds=1)
    old_token = make_token()
    assert call("/users", old_token, via=proxy).status_code == 200  # verified, remembered
    withdraw_signing_key(tenant)
    clock.advance(1.1)  # past the refetch interval
    assert call("/users", make_token(), via=proxy).status_code == 200  # new key: JWKS refetched
    clock.advance(1.1)
    assert_invalid_token(call("/users", old_token, via=proxy), "unknown signing key")
