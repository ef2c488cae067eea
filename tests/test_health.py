"""Liveness and readiness probes, and the answers for routes and methods the proxy has not."""

from __future__ import annotations

from importlib.metadata import version

from tests.conftest import REDIS_URL
from tests.support import TOKEN, assert_refused


def test_healthz_names_the_packages_version_and_makes_no_upstream_call(call, tenant):
    response = call("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": version("auth0-m2m-proxy")}
    assert tenant.requests == []


def test_readyz_is_ready_with_keys_and_management_token(call):
    response = call("/readyz")
    assert response.status_code == 200 and response.json() == {"status": "ready", "store": "ok"}


def test_readyz_says_the_store_is_ok_when_redis_answers(make_app, call, redis_prefix):
    proxy = make_app(cache_type="redis", cache_redis_url=REDIS_URL, cache_key_prefix=redis_prefix)
    response = call("/readyz", via=proxy)
    assert response.status_code == 200 and response.json() == {"status": "ready", "store": "ok"}


def test_readyz_stays_ready_and_says_the_store_is_unavailable_while_redis_is_down(
    make_app, call, make_token, app_log
):
    """Each process serves through the outage (its own buckets, Auth0 directly): the probe
    tells the operator, and keeps the instance in the load balancer."""
    proxy = make_app(cache_type="redis", cache_redis_url="redis://127.0.0.1:1/0")
    for _ in range(2):
        response = call("/readyz", via=proxy)
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "store": "unavailable"}
    assert call("/users", make_token(), via=proxy).status_code == 200
    warnings = [r["message"] for r in app_log.records if r["logger"] == "auth0_proxy.store"]
    assert warnings == [
        "cache unavailable (ConnectionError); serving from memory or Auth0 directly"
    ]


def test_readyz_is_503_while_auth0_refuses_the_management_token(make_app, call, tenant):
    proxy = make_app(failure_cooldown_seconds=0, retry_budget_seconds=0)
    tenant.inject_fault(TOKEN, status=500, times=1000)
    reason = "token endpoint: 500 internal_server_error: Internal Server Error"
    assert_refused(call("/readyz", via=proxy), 503, "temporarily_unavailable", reason)
    tenant.clear_faults()
    assert call("/readyz", via=proxy).status_code == 200


def test_unknown_route_is_auth0_style_404(call):
    answer = call("/admin")
    assert_refused(answer, 404, "not_found", answer.json()["message"])


def test_wrong_method_is_auth0_style_405(call):
    answer = call("/users", method="POST")
    assert_refused(answer, 405, "method_not_allowed", answer.json()["message"])
    assert answer.headers["Allow"]


def test_the_proxy_tells_auth0_its_version_in_its_user_agent(call, make_token, tenant):
    assert call("/users", make_token()).status_code == 200
    agents = {request["user_agent"] for request in tenant.requests}
    assert agents == {f"auth0-m2m-proxy/{version('auth0-m2m-proxy')}"}
