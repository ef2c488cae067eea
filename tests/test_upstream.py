"""The proxy's calls to Auth0: tokens and keys fetched once, failures answered with 502/503/504."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import PROXY_API, proxy_config_for, user_path
from tests.emulated_tenant import TenantServer, demo_tenant
from tests.harness import ProxyServer
from tests.test_tokens import assert_auth0_error

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


def test_revoked_management_token_is_replaced_without_an_error(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy()
    token = make_token("edge-acme")
    assert call("/users", token, server=proxy).status_code == 200
    tenant.revoke_management_tokens()
    assert call("/users", token, server=proxy).status_code == 200
    assert tenant.counts[TOKEN] == 2


def test_auth0_server_error_is_502(call, make_token, tenant):
    tenant.inject_fault(MEMBERS, status=500)
    assert_auth0_error(call("/users", make_token()), 502, "bad_gateway")


def test_auth0_rate_limit_is_429_with_retry_after(call, make_token, tenant):
    tenant.inject_fault(MEMBERS, status=429)
    response = call("/users", make_token())
    assert_auth0_error(response, 429, "too_many_requests")
    assert int(response.headers["Retry-After"]) >= 1


def test_slow_auth0_is_504(start_proxy, call, make_token, tenant):
    proxy = start_proxy(read_timeout_seconds=0.5)
    token = make_token()
    assert call("/users", token, server=proxy).status_code == 200
    tenant.inject_fault(MEMBERS, status=None, delay=2.0)
    assert_auth0_error(call("/users", token, server=proxy), 504, "gateway_timeout")


def test_token_endpoint_failure_is_503(start_proxy, call, make_token, tenant):
    proxy = start_proxy()
    tenant.inject_fault(TOKEN, status=503)
    response = call("/users", make_token(), server=proxy)
    body = assert_auth0_error(response, 503, "temporarily_unavailable")
    assert "management token" in body["message"]


def test_unreachable_jwks_is_503_not_401(start_proxy, call, make_token, tenant):
    proxy = start_proxy(failure_cooldown_seconds=0)
    tenant.inject_fault(JWKS, status=503)
    assert_auth0_error(call("/users", make_token(), server=proxy), 503, "temporarily_unavailable")
    # Once Auth0 answers again, the same token is fine.
    assert call("/users", make_token(), server=proxy).status_code == 200


@pytest.mark.parametrize("endpoint", [JWKS, TOKEN])
def test_failing_auth0_is_asked_once_per_cooldown_not_once_per_request(
    start_proxy, call, make_token, tenant, endpoint
):
    proxy = start_proxy(failure_cooldown_seconds=30)
    tenant.inject_fault(endpoint, status=503, times=100)
    token = make_token()
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: call("/users", token, server=proxy), range(40)))
    assert {response.status_code for response in responses} == {503}
    assert tenant.counts[endpoint] == 1
    assert responses[-1].headers["Retry-After"] == "30"


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


@pytest.mark.parametrize(
    ("endpoint", "body", "path"),
    [
        (MEMBERS, ["not", "an", "object"], "/users"),
        (MEMBERS, {"members": None}, "/users"),
        (MEMBERS, {"members": ["not-an-object"]}, "/users"),
        (MEMBERS, {"members": [{"email": "no-user-id@example.com"}]}, "/users"),
        (MEMBERS, {"members": [], "next": "same"}, "/users"),  # then "same" again: no progress
        (
            USER_ORGS,
            {"organizations": ["org_acme"], "start": 0, "total": 1},
            "/users/auth0%7Calice-acme",
        ),
        (USER_ORGS, {"organizations": [], "start": "0", "total": 0}, "/users/auth0%7Calice-acme"),
        (USER_ORGS, "a string", "/users/auth0%7Calice-acme"),
    ],
)
def test_unexpected_auth0_answer_is_502_not_a_crash(call, make_token, tenant, endpoint, body, path):
    tenant.inject_fault(endpoint, status=200, body=body, times=2)
    assert_auth0_error(call(path, make_token()), 502, "bad_gateway")


def test_profile_with_null_identities_is_returned_as_is(call, make_token, tenant):
    tenant.inject_fault(USER, status=200, body={"user_id": "auth0|alice-acme", "identities": None})
    response = call("/users/auth0%7Calice-acme", make_token())
    assert response.status_code == 200
    assert response.json() == {"user_id": "auth0|alice-acme", "identities": None}


def test_token_answer_without_access_token_is_503(start_proxy, call, make_token, tenant):
    proxy = start_proxy(workers=1)
    tenant.inject_fault(TOKEN, status=200, body={"token_type": "Bearer"})
    assert_auth0_error(call("/users", make_token(), server=proxy), 503, "temporarily_unavailable")


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
