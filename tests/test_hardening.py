"""The second hardening round (issue 18): strings Auth0 may serve, bodies no encoder can send,
what a client's calls to Auth0 cost it, the audit of every write-shaped request, the invitation
grant, and answers that tell nothing of another organization's traffic.

Each test here failed on the code before that round.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.support import (
    ERROR_KEYS,
    TOKEN,
    WRITER_SCOPE,
    assert_auth0_error,
    join_refreshes,
    user_path,
    write,
)

ODD_USER = "auth0|odd-name-acme"
ODD_NAME = "Zoë \ud83d"  # a lone high surrogate: an emoji cut in half, as Auth0 has served
ODD_EMAIL = "odd@acme.example"
DAVE = "/api/v2/users/auth0%7Cdave-acme"
SLOW = 0.001  # per minute: a bucket that refills nothing within a test


def upstream_allowance(burst: int, per_minute: float = SLOW) -> dict:
    """A rate_limits block with only an upstream allowance, of ``burst`` calls."""
    return {
        "client": {"requests": {"per_minute": 0}, "upstream": {"per_minute": per_minute,
                                                               "burst": burst}},
    }  # fmt: skip


def management_calls(tenant) -> list[str]:
    return [r["raw_uri"] for r in tenant.requests if r["raw_uri"].startswith("/api/v2")]


@pytest.fixture
def odd_member(tenant):
    tenant.add_user(ODD_USER, ODD_EMAIL, ODD_NAME, ["org_acme"], given_name=ODD_NAME)
    yield ODD_USER
    tenant.delete_user(ODD_USER)


ODD_READS = [
    "/users",
    "/users?fields=user_id,name,given_name",
    user_path(ODD_USER),
    "/api/v2/organizations/org_acme/members",
    "/api/v2/users",
    "/api/v2/users?q=" + quote(f"email:{ODD_EMAIL}"),
    "/api/v2/users/" + quote(ODD_USER, safe=""),
    "/api/v2/users-by-email?email=" + quote(ODD_EMAIL),
]


def odd_names(body: object) -> list[str]:
    """The names and given names in an answer that are the odd one."""
    if isinstance(body, dict):
        found = [v for k, v in body.items() if k in ("name", "given_name") and v == ODD_NAME]
        return found + [name for value in body.values() for name in odd_names(value)]
    if isinstance(body, list):
        return [name for value in body for name in odd_names(value)]
    return []


@pytest.mark.parametrize("cache_type", ["filesystem", "redis"])
def test_a_name_cut_mid_emoji_round_trips_through_every_read(
    make_app, call, make_token, odd_member, cache_type, request
):
    settings = {"cache_ttl_seconds": 60}
    if cache_type == "redis":
        settings |= {"cache_type": "redis", "cache_key_prefix": request.getfixturevalue(
            "redis_prefix")}  # fmt: skip
    app, token = make_app(**settings), make_token()
    for path in ODD_READS:
        for attempt in ("cold", "warm"):
            answer = call(path, token, via=app)
            assert answer.status_code == 200, (path, attempt, answer.text)
            assert odd_names(json.loads(answer.body)), (path, attempt)


def test_a_name_cut_mid_emoji_reaches_the_change_feed(make_app, call, make_token, tenant):
    app, token = make_app(), make_token()
    cursor = call("/users/changes", token, via=app).json()["cursor"]
    tenant.add_user(ODD_USER, ODD_EMAIL, ODD_NAME, ["org_acme"])
    try:
        answer = call(f"/users/changes?since={quote(cursor)}", token, via=app)
        assert answer.status_code == 200, answer.text
        assert [m["name"] for m in answer.json()["added"]] == [ODD_NAME]
    finally:
        tenant.delete_user(ODD_USER)


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("levels", [40, 1000, 5000])
@pytest.mark.parametrize(
    ("method", "path", "body", "permission"),
    [
        ("PATCH", DAVE, '{"user_metadata":{"a":%s}}', "update:users"),
        ("DELETE", "/api/v2/organizations/org_acme/members",
         '{"members":["auth0|dave-acme"],"x":%s}', "delete:organization_members"),
    ],
)  # fmt: skip
def test_a_deeply_nested_body_is_a_400_never_sent_and_audited_as_refused(
    make_writer, make_token, app_log, tenant, method, path, body, permission, levels
):
    app = make_writer({"permissions": [permission]})
    answer = app.test_client().open(
        path,
        method=method,
        data=body % nested(levels),
        content_type="application/json",
        headers={"Authorization": f"Bearer {make_token(scope=permission)}"},
    )
    assert answer.status_code == 400, answer.get_data()
    assert answer.get_json()["errorCode"] == "invalid_body"
    assert not [r for r in app_log.records if r["level"] == "ERROR" or "exception" in r]
    [audit] = [r for r in app_log.records if r.get("audit")]
    assert (audit["outcome"], audit["sent"]) == ("refused: 400 invalid_body", False)
    assert not [uri for uri in management_calls(tenant) if not uri.endswith("include_totals=true")]


def test_a_body_within_the_depth_is_sent(make_writer, make_token, tenant):
    deep = {"a": json.loads(nested(20))}
    answer = write(make_writer(), "PATCH", DAVE, {"user_metadata": deep}, make_token(
        scope=WRITER_SCOPE))  # fmt: skip
    try:
        assert answer.status_code == 200, answer.get_data()
        assert tenant.user_profile("auth0|dave-acme")["user_metadata"] == deep
    finally:
        tenant.add_user("auth0|dave-acme", "dave@acme.example", "Dave Diaz", ["org_acme"])


def test_profile_fields_cost_one_call_each_and_are_cached_with_the_list(
    make_app, call, make_token, tenant
):
    """A list with profile fields is a page of members and a users search per page: each call
    is paid from the client's allowance, and the searches are asked once per cached list (the
    list fetched for the first request is cached once read; its searches with the next)."""
    app = make_app(page_size=2, cache_ttl_seconds=60, rate_limits=upstream_allowance(100))
    token = make_token()
    call("/users/" + quote("auth0|alice-acme", safe=""), token, via=app)  # the token, fetched
    before = int(call(user_path("auth0|nobody"), token, via=app).headers["x-ratelimit-remaining"])
    tenant.reset_counts()
    cold = call("/users?fields=user_id,given_name", token, via=app)
    assert cold.status_code == 200 and len(cold.json()) == len(tenant.member_ids("org_acme"))
    calls = len(management_calls(tenant))
    assert calls == 2 * 3  # three pages of two members, and a search for each
    assert cold.log["upstream_calls"] == calls  # the line is written once the list is
    warm = [call("/users?fields=user_id,given_name", token, via=app) for _ in range(4)]
    assert [answer.json() for answer in warm] == [cold.json()] * 4
    assert [answer.log["upstream_calls"] for answer in warm] == [3, 0, 0, 0]
    after = call(user_path("auth0|nobody-else"), token, via=app)
    assert int(after.headers["x-ratelimit-remaining"]) == before - calls - 3 - 1


def test_a_cold_list_over_the_allowance_is_refused_before_it_starts(
    make_app, call, make_token, tenant
):
    app = make_app(page_size=2, cache_ttl_seconds=60, rate_limits=upstream_allowance(1))
    token = make_token()
    assert call(user_path("auth0|nobody"), token, via=app).status_code == 404  # one call
    tenant.reset_counts()
    refused = call("/users", token, via=app)
    assert_auth0_error(refused, 429, "too_many_requests")
    assert management_calls(tenant) == []


def test_a_list_under_way_waits_for_the_allowance_instead_of_being_cut_off(
    make_app, call, make_token, tenant
):
    """Burst 1, refilled 20 times a second: the first page is paid at once, the others wait
    their turn (a client's allowance is its pace, not a cliff)."""
    app = make_app(page_size=2, cache_ttl_seconds=60, rate_limits=upstream_allowance(1, 1200))
    answer = call("/users", make_token(), via=app)
    assert answer.status_code == 200 and len(answer.json()) == len(tenant.member_ids("org_acme"))
    assert answer.log["upstream_calls"] >= 3


def test_a_client_never_makes_more_calls_than_its_allowance(make_app, call, make_token, tenant):
    """Three pages of members and a users search, for an allowance of two calls that does not
    refill: two are made, then the answer is Auth0's 429; another client's reads go on."""
    app = make_app(page_size=2, rate_limits=upstream_allowance(2))
    call("/readyz", via=app)  # the proxy's own token and keys: its cost, not a client's
    tenant.reset_counts()
    refused = call("/api/v2/users", make_token(), via=app)
    assert_auth0_error(refused, 429, "too_many_requests")
    assert len(management_calls(tenant)) == 2 == refused.log["upstream_calls"]
    answer = call(user_path("auth0|frank-globex"), make_token("edge-globex"), via=app)
    assert answer.status_code == 200, answer.text


def test_the_proxys_own_token_is_renewed_whatever_a_clients_allowance(
    make_app, call, make_token, tenant
):
    """Renewing the management token is the proxy's cost: a client whose read starts it does
    not pay for it, and one with nothing left does not hold it back."""
    tenant.management_token_lifetime = 2  # renewed ahead at every read
    app, token = make_app(rate_limits=upstream_allowance(2)), make_token()
    assert call(user_path("auth0|alice-acme"), token, via=app).status_code == 200  # spends 2
    join_refreshes()
    tenant.reset_counts()
    assert call(user_path("auth0|alice-acme"), token, via=app).status_code == 429
    join_refreshes()
    assert tenant.counts[TOKEN] >= 1


WRITE_SHAPED = [
    ("POST", "/api/v2/organizations/org_acme/members", {}, 403, "operation_not_allowed"),
    ("PUT", DAVE, {}, 403, "operation_not_allowed"),
    ("PATCH", "/api/v2/organizations/org_acme", {}, 403, "operation_not_allowed"),
    ("PATCH", DAVE, {"headers": {"Transfer-Encoding": "chunked"}}, 411, "length_required"),
    ("PATCH", DAVE, {"data": b"{" + b" " * (2 * 2**20) + b"}"}, 413,
     "request_entity_too_large"),
    ("PROPFIND", "/api/v2/users", {}, 405, "method_not_allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "extra", "status", "code"), WRITE_SHAPED)
def test_every_write_shaped_request_is_an_audit_line_with_the_proxys_own_id(
    make_writer, make_token, app_log, method, path, extra, status, code
):
    app = make_writer()
    headers = {"Authorization": f"Bearer {make_token(scope=WRITER_SCOPE)}",
               "X-Request-ID": "victim-request-0001", **extra.get("headers", {})}  # fmt: skip
    ids = []
    for _ in range(2):
        answer = app.test_client().open(
            path, method=method, headers=headers, data=extra.get("data", b"{}"),
            content_type="application/json")  # fmt: skip
        assert answer.status_code == status and answer.get_json()["errorCode"] == code
        ids.append(answer.headers["X-Request-ID"])
    audit = [r for r in app_log.records if r.get("audit")]
    assert [line["request_id"] for line in audit] == ids and ids[0] != ids[1]
    for line in audit:
        assert line["caller_request_id"] == "victim-request-0001"
        assert (line["outcome"], line["sent"]) == (f"refused: {status} {code}", False)
        assert line["action"].startswith(f"{method} /api/v2") and line["reason"]


def test_a_write_auth0_refused_is_audited_as_sent(make_writer, make_token, app_log, tenant):
    tenant.inject_fault("PATCH /api/v2/users/{id}", status=503)
    answer = write(make_writer(), "PATCH", DAVE, {"user_metadata": {"a": 1}}, make_token(
        scope=WRITER_SCOPE))  # fmt: skip
    assert answer.status_code == 502
    [audit] = [r for r in app_log.records if r.get("audit")]
    assert (audit["outcome"], audit["sent"]) == ("failed: 502 bad_gateway", True)


def test_reads_are_no_audit_lines(call, make_token, app_log):
    for method in ("GET", "HEAD", "OPTIONS"):
        call("/api/v2/users", make_token(), method=method)
    assert not [r for r in app_log.records if r.get("audit")]


INVITATION = {"inviter": {"name": "Ops"}, "invitee": {"email": "new@acme.example"},
              "client_id": "customer-portal"}  # fmt: skip
INVITER = {"permissions": ["create:organization_invitations"],
           "invitation_clients": ["customer-portal"]}  # fmt: skip


@pytest.mark.parametrize("connections", [[], ["con_database"]])
def test_an_invitation_naming_no_connection_is_refused(
    make_writer, make_token, tenant, connections
):
    """Without ``connection_id`` the invitee may sign up through any connection the
    organization enables: an invitation is held to the grant by naming one of it."""
    app, token = make_writer({**INVITER, "connections": connections}), make_token(
        scope=WRITER_SCOPE)  # fmt: skip
    path = "/api/v2/organizations/org_acme/invitations"
    answer = write(app, "POST", path, INVITATION, token)
    assert answer.status_code == 403 and set(answer.get_json()) == ERROR_KEYS
    assert "connection_id" in answer.get_json()["message"]
    assert management_calls(tenant) == []
    if connections:
        named = write(app, "POST", path, {**INVITATION, "connection_id": "con_database"}, token)
        assert named.status_code == 201


def answer_facts(answer) -> tuple:
    """What a caller sees of an answer, less what differs between any two (its id, the
    time, and the second the caller's allowance is full again)."""
    unlike = {"x-request-id", "date", "x-ratelimit-reset"}
    headers = sorted((k.lower(), v) for k, v in answer.headers.items() if k.lower() not in unlike)
    return answer.status_code, answer.body, headers


@pytest.mark.parametrize("shared", ["auth0|frank-globex", "auth0|shared-consultant"])
def test_no_answer_tells_what_another_organization_read(make_app, call, make_token, shared):
    """edge-acme's answers for a user edge-globex read moments ago are those it gets when
    nobody read it: in status, body and every header (cost, Age, Cache-Status); and another
    organization's user is answered as an id nobody has."""
    acme, globex = make_token(), make_token("edge-globex")
    proxy = lambda: make_app(cache_ttl_seconds=60, rate_limits={}, budget={})  # noqa: E731
    seen, unseen = proxy(), proxy()
    assert call(user_path(shared), globex, via=seen).status_code == 200
    for path in (user_path(shared), f"/api/v2/users/{quote(shared, safe='')}"):
        assert answer_facts(call(path, acme, via=seen)) == answer_facts(
            call(path, acme, via=unseen))  # fmt: skip
    if shared == "auth0|frank-globex":  # asked first by each, in a proxy of its own
        stranger = call(user_path("auth0|nobody-at-all"), acme, via=proxy())
        outsider = call(user_path(shared), acme, via=proxy())
        assert answer_facts(stranger) == answer_facts(outsider)


@pytest.mark.parametrize("path", ["/users", user_path("auth0|alice-acme"), "/api/v2/users"])
def test_options_is_a_204_with_allow_and_no_body(call, path):
    answer = call(path, method="OPTIONS")
    assert answer.status_code == 204 and answer.body == b""
    assert "GET" in answer.headers["Allow"] and "OPTIONS" in answer.headers["Allow"]
    assert "Content-Type" not in answer.headers


def test_options_outside_the_table_is_refused_as_any_method(call):
    assert_auth0_error(call("/api/v2/clients", method="OPTIONS"), 403, "operation_not_allowed")
