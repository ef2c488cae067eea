"""Liveness and readiness probes."""

from __future__ import annotations

import requests

from tests.test_tokens import assert_auth0_error


def test_healthz_makes_no_upstream_call(call, tenant):
    response = call("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert tenant.requests == []


def test_readyz_is_ready_with_keys_and_management_token(call):
    response = call("/readyz")
    assert response.status_code == 200 and response.json() == {"status": "ready"}


def test_readyz_is_503_while_auth0_refuses_the_management_token(start_proxy, call, tenant):
    proxy = start_proxy(workers=1, failure_cooldown_seconds=0, retry_budget_seconds=0)
    tenant.inject_fault("POST /oauth/token", status=500, times=1000)
    assert_auth0_error(call("/readyz", server=proxy), 503, "temporarily_unavailable")
    tenant.clear_faults()
    assert call("/readyz", server=proxy).status_code == 200


def test_unknown_route_is_auth0_style_404(call):
    assert_auth0_error(call("/admin"), 404, "not_found")


def test_wrong_method_is_auth0_style_405(proxy):
    response = requests.post(f"{proxy.url}/users", timeout=10)
    assert_auth0_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"]
