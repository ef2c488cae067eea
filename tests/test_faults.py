"""Auth0's faults: 429s and 5xx retried within a budget, timeouts, failing token and key endpoints.

Each fault is injected in the emulated tenant; the proxy must answer with the documented status
and an Auth0-style body, never a 500, and must not multiply upstream calls. In this process,
but where it takes gunicorn: workers sharing a back-off, threads freed by timeouts, a stream cut.
"""

from __future__ import annotations

import email.utils
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support import (
    JWKS,
    MEMBERS,
    TOKEN,
    USER,
    USER_ORGS,
    assert_cut_off,
    assert_refused,
    user_path,
)

ACME_MEMBERS = "/api/v2/organizations/org_acme/members"
ACME_ORGS_OF_ALICE = "/api/v2/users/auth0%7Calice-acme/organizations"
PERSISTENT = 1000  # times: a fault that lasts the whole test


def statuses_from_tenant(tenant, endpoint: str) -> list[int]:
    return [r["status"] for r in tenant.requests if r["endpoint"] == endpoint]


def test_one_server_error_is_retried_unseen(call, make_token, tenant):
    tenant.inject_fault(MEMBERS, status=500)
    assert call("/users", make_token()).status_code == 200
    assert statuses_from_tenant(tenant, MEMBERS) == [500, 200]


def test_lasting_server_errors_are_502_after_a_bounded_number_of_retries(
    make_app, call, make_token, tenant
):
    proxy = make_app(retry_budget_seconds=1)
    tenant.inject_fault(MEMBERS, status=503, times=PERSISTENT)
    reason = f"Auth0 answered 503 on {ACME_MEMBERS}: service_unavailable: Service Unavailable"
    assert_refused(call("/users", make_token(), via=proxy), 502, "bad_gateway", reason)
    # Back-off of 0.1, 0.2, 0.4 s (+ jitter up to as much again) within a 1 s budget.
    assert 2 <= tenant.counts[MEMBERS] <= 4


def test_one_rate_limit_answer_is_waited_out_unseen(call, make_token, tenant):
    tenant.inject_fault(MEMBERS, status=429)
    assert call("/users", make_token()).status_code == 200
    assert statuses_from_tenant(tenant, MEMBERS) == [429, 200]


def test_rate_limit_beyond_the_budget_is_429_with_retry_after(make_app, call, make_token, tenant):
    proxy = make_app(retry_budget_seconds=0)
    tenant.inject_fault(MEMBERS, status=429)
    response = call("/users", make_token(), via=proxy)
    reason = f"Auth0 answered 429 on GET {ACME_MEMBERS}"
    assert_refused(response, 429, "too_many_requests", reason)
    assert int(response.headers["Retry-After"]) >= 1


def test_a_rate_limited_tenant_is_not_called_again_until_it_resets(
    start_proxy, call, make_token, tenant
):
    """One 429 makes every worker wait: a burst of clients is no burst of upstream calls."""
    proxy = start_proxy(workers=2, retry_budget_seconds=0)
    # Retry-After 10 s: the 31 requests below all fall inside it, however slow the machine.
    tenant.inject_fault(MEMBERS, status=429, headers={"Retry-After": "10"})
    tokens = [make_token(client) for client in ("edge-acme", "edge-globex", "edge-big")]
    assert call("/users", tokens[0], via=proxy).status_code == 429
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda n: call("/users", tokens[n % 3], via=proxy), range(30)))
    assert {response.status_code for response in responses} == {429}
    assert all(int(response.headers["Retry-After"]) >= 1 for response in responses)
    assert tenant.counts[MEMBERS] == 1


def test_many_clients_against_a_rate_limited_tenant_all_get_served(
    start_proxy, call, make_token, tenant
):
    # The budget is the tenant's limit, all of it for the proxy: the proxy paces itself to it.
    budget = {"share": 1, "limits": {"management": {"burst": 5, "per_minute": 600}}}
    proxy = start_proxy(workers=2, threads=8, retry_budget_seconds=20, budget=budget)
    tenant.set_rate_limit(per_second=10, burst=5)
    try:
        tokens = [make_token(client) for client in ("edge-acme", "edge-globex")]
        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(
                pool.map(
                    lambda n: call(user_path("auth0|shared-consultant"), tokens[n % 2], via=proxy),
                    range(40),
                )
            )
    finally:
        tenant.set_rate_limit(None)
    assert [response.status_code for response in responses] == [200] * 40
    # 80 calls were needed. Without the shared budget each waiting thread would call again on
    # its own and the refusals would outnumber them many times; paced, Auth0 refuses few.
    refused = sum(1 for record in tenant.requests if record["status"] == 429)
    assert refused < 10


def test_slow_auth0_is_504_and_not_retried(make_app, call, make_token, tenant):
    proxy = make_app(read_timeout_seconds=0.5)
    token = make_token()
    assert call("/users", token, via=proxy).status_code == 200
    tenant.inject_fault(MEMBERS, status=None, delay=2.0, times=PERSISTENT)
    response = call("/users", token, via=proxy)
    assert_refused(response, 504, "gateway_timeout", f"timeout on GET {ACME_MEMBERS}")
    assert response.log["upstream_calls"] == 1  # the timeout used the time: no retry


def test_failing_token_endpoint_is_503(make_app, call, make_token, tenant):
    proxy = make_app(retry_budget_seconds=0.5)
    tenant.inject_fault(TOKEN, status=503, times=PERSISTENT)
    response = call("/users", make_token(), via=proxy)
    reason = "token endpoint: 503 service_unavailable: Service Unavailable"
    body = assert_refused(response, 503, "temporarily_unavailable", reason)
    assert "management token" in body["message"]


def test_unreachable_jwks_is_503_not_401(make_app, call, make_token, tenant):
    proxy = make_app(failure_cooldown_seconds=0, retry_budget_seconds=0.5)
    tenant.inject_fault(JWKS, status=503, times=PERSISTENT)
    answer = call("/users", make_token(), via=proxy)
    assert_refused(answer, 503, "temporarily_unavailable", "JWKS answered 503")
    tenant.clear_faults()
    # Once Auth0 answers again, the same token is fine.
    assert call("/users", make_token(), via=proxy).status_code == 200


def test_cached_keys_keep_working_while_the_jwks_is_unreachable(call, make_token, tenant):
    assert call("/users", make_token()).status_code == 200
    tenant.reset_counts()
    tenant.inject_fault(JWKS, status=503, times=PERSISTENT)
    assert call("/users", make_token()).status_code == 200
    assert tenant.counts[JWKS] == 0


@pytest.mark.parametrize(
    ("endpoint", "key", "failure"),
    [
        (JWKS, "jwks", "JWKS answered 503"),
        (
            TOKEN,
            "management-token:proxy-mgmt-client",
            "token endpoint: 503 service_unavailable: Service Unavailable",
        ),
    ],
)
def test_failing_auth0_is_asked_once_per_cooldown_not_once_per_request(
    make_app, call, make_token, tenant, endpoint, key, failure
):
    proxy = make_app(failure_cooldown_seconds=30, retry_budget_seconds=0)
    tenant.inject_fault(endpoint, status=503, times=PERSISTENT)
    token = make_token()
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: call("/users", token, via=proxy), range(40)))
    assert {response.status_code for response in responses} == {503}
    assert tenant.counts[endpoint] == 1
    assert all(1 <= int(response.headers["Retry-After"]) <= 30 for response in responses)
    remembered = f"{key}: failed moments ago, not asking Auth0 again yet"
    reasons = sorted(response.log["reason"] for response in responses)
    assert reasons == sorted([failure] + [remembered] * 39)


UNEXPECTED_MEMBERS = f"{ACME_MEMBERS}: unexpected answer shape"
UNEXPECTED_ORGS = f"{ACME_ORGS_OF_ALICE}: unexpected answer shape"


@pytest.mark.parametrize(
    ("endpoint", "body", "path", "reason"),
    [
        (
            MEMBERS,
            ["not", "an", "object"],
            "/users",
            f"GET {ACME_MEMBERS}: body is not a JSON object",
        ),
        (MEMBERS, {"members": None}, "/users", UNEXPECTED_MEMBERS),
        (MEMBERS, {"members": ["not-an-object"]}, "/users", UNEXPECTED_MEMBERS),
        (MEMBERS, {"members": [{"email": "no-user-id@example.com"}]}, "/users", UNEXPECTED_MEMBERS),
        (
            USER_ORGS,
            {"organizations": ["org_acme"], "start": 0, "total": 1},
            "/users/auth0%7Calice-acme",
            UNEXPECTED_ORGS,
        ),
        (
            USER_ORGS,
            {"organizations": [], "start": "0", "total": 0},
            "/users/auth0%7Calice-acme",
            UNEXPECTED_ORGS,
        ),
        (
            USER_ORGS,
            "a string",
            "/users/auth0%7Calice-acme",
            f"GET {ACME_ORGS_OF_ALICE}: body is not a JSON object",
        ),
    ],
)
def test_unexpected_auth0_answer_is_502_not_a_crash(
    call, make_token, tenant, endpoint, body, path, reason
):
    tenant.inject_fault(endpoint, status=200, body=body, times=2)
    assert_refused(call(path, make_token()), 502, "bad_gateway", reason)


def test_profile_with_null_identities_is_returned_as_is(call, make_token, tenant):
    tenant.inject_fault(USER, status=200, body={"user_id": "auth0|alice-acme", "identities": None})
    response = call("/users/auth0%7Calice-acme", make_token())
    assert response.status_code == 200
    assert response.json() == {"user_id": "auth0|alice-acme", "identities": None}


def test_token_answer_without_access_token_is_503(make_app, call, make_token, tenant):
    proxy = make_app()
    tenant.inject_fault(TOKEN, status=200, body={"token_type": "Bearer"})
    assert_refused(
        call("/users", make_token(), via=proxy),
        503,
        "temporarily_unavailable",
        "token endpoint answered without access_token or expires_in",
    )


def test_hung_auth0_frees_every_worker_thread_by_its_timeout(start_proxy, call, make_token, tenant):
    """1 worker x 2 threads, 8 callers, Auth0 hanging 5 s: all get 504 before Auth0 answers any."""
    proxy = start_proxy(workers=1, threads=2, read_timeout_seconds=0.5, retry_budget_seconds=0)
    token = make_token()
    assert call("/users", token, via=proxy).status_code == 200
    tenant.reset_counts()
    tenant.inject_fault(MEMBERS, status=None, delay=5.0, times=PERSISTENT)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: call("/users", token, via=proxy), range(8)))
    for answer in answers:
        assert_refused(answer, 504, "gateway_timeout", f"timeout on GET {ACME_MEMBERS}")
    assert call("/healthz", via=proxy).status_code == 200
    # Auth0 has not finished answering a single one of them: the timeouts freed the threads.
    assert tenant.requests == []


def test_expiring_management_tokens_are_renewed_unseen(make_app, call, make_token, tenant):
    proxy = make_app()
    tenant.management_token_lifetime = 3
    try:
        token = make_token()
        deadline = time.monotonic() + 5
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(call("/users", token, via=proxy).status_code)
    finally:
        tenant.management_token_lifetime = 86400
    assert set(statuses) == {200}
    assert tenant.counts[TOKEN] >= 2


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503, "times": PERSISTENT, "after": 2},  # page 3 of 50 fails for good
        {"status": 200, "body": {"members": [], "next": "same"}, "times": 2},  # paging stalls
    ],
)
def test_failure_after_the_list_started_cuts_it_off_unparseable(
    start_proxy, make_token, tenant, fault
):
    proxy = start_proxy(workers=1, retry_budget_seconds=0)
    tenant.inject_fault(MEMBERS, **fault)
    response = requests.get(
        f"{proxy.url}/users",
        headers={"Authorization": f"Bearer {make_token('edge-big')}"},
        stream=True,
        timeout=60,
    )
    assert_cut_off(response, proxy.log_text)


@pytest.mark.parametrize(
    ("headers", "expected_retry_after"),
    [
        ({"Retry-After": "86400"}, 60),  # a day: capped, or one header locks Auth0 out
        ({"Retry-After": "²"}, 1),  # not an ASCII number
        ({"Retry-After": "soon", "x-ratelimit-reset": "inf"}, 1),
        ({"Retry-After": "1e400"}, 1),  # infinite
        ({"Retry-After": "1000000000000"}, 60),
    ],
)
def test_odd_rate_limit_headers_give_a_bounded_retry_after(
    make_app, call, make_token, tenant, headers, expected_retry_after
):
    proxy = make_app(retry_budget_seconds=0)
    tenant.inject_fault(MEMBERS, status=429, headers=headers)
    response = call("/users", make_token(), via=proxy)
    reason = f"Auth0 answered 429 on GET {ACME_MEMBERS}"
    assert_refused(response, 429, "too_many_requests", reason)
    assert response.headers["Retry-After"] == str(expected_retry_after)


def test_reset_is_read_against_auth0s_clock(make_app, call, make_token, tenant):
    """Auth0's Date says it is 10 s before our clock: its reset 15 s after its now is 15 s away."""
    proxy = make_app(retry_budget_seconds=0)
    auth0_now = time.time() - 10
    headers = {
        "Retry-After": "",
        "Date": email.utils.formatdate(auth0_now, usegmt=True),
        "x-ratelimit-reset": str(int(auth0_now) + 15),
    }
    tenant.inject_fault(MEMBERS, status=429, headers=headers)
    response = call("/users", make_token(), via=proxy)
    assert 14 <= int(response.headers["Retry-After"]) <= 16
