"""The /api/v2 surface's rules, in process: the default refusal, the organization rule, Auth0's
query semantics, the cache it shares with /users, and what writes leave behind (the audit line,
a new cache generation every worker sees). tests/test_sdk.py proves the same operations through
the official SDK over TLS; this file covers what the SDK never sends.
"""

from __future__ import annotations

import json

import pytest

from auth0_proxy import create_app
from auth0_proxy.core.config import ConfigError
from auth0_proxy.edge.api_v2.pipeline import RULES, WRITE_PERMISSIONS
from emulated_tenant.demo import WRITE_SCOPES
from tests.support import (
    ERROR_KEYS,
    MEMBER_FIELDS,
    MEMBERS,
    WRITER_SCOPE,
    proxy_config_for,
    write,
)

ACME_MEMBERS = sorted(
    [
        "auth0|alice-acme",
        "auth0|bob-acme",
        "auth0|carol-acme",
        "auth0|dave-acme",
        "google-oauth2|erin-acme",
        "auth0|shared-consultant",
    ]
)
DENIED = [
    ("GET", "/api/v2/clients"),
    ("GET", "/api/v2/organizations"),
    ("GET", "/api/v2/roles"),
    ("GET", "/api/v2/users/auth0%7Calice-acme/roles"),
    ("GET", "/api/v2/users/auth0%7Calice-acme/logs"),
    ("GET", "/api/v2/organizations/org_acme/members/auth0%7Calice-acme"),
    ("PUT", "/api/v2/users/auth0%7Calice-acme"),
    ("POST", "/api/v2/organizations/org_acme/members"),
    ("DELETE", "/api/v2/organizations/org_acme"),
    ("PATCH", "/api/v2/organizations/org_acme"),
    ("OPTIONS", "/api/v2/clients"),
    ("HEAD", "/api/v2/users"),
    ("GET", "/api/v2"),
    ("GET", "/api/v2/"),
    ("GET", "/api/v2/users/"),
    ("GET", "/api/v2/users/a/b/organizations"),
    ("GET", "/api/v2/organizations/org_acme/members/../../clients"),
]


def upstream_management_calls(tenant) -> list[str]:
    return [r["raw_uri"] for r in tenant.requests if r["raw_uri"].startswith("/api/v2")]


@pytest.mark.parametrize(("method", "path"), DENIED)
def test_anything_outside_the_table_is_403_before_the_token_or_auth0(
    call, tenant, make_token, method, path
):
    for token in (None, make_token()):
        answer = call(path, token, method=method)
        assert answer.status_code == 403, path
        if method == "HEAD":
            continue  # no body
        body = answer.json()
        assert set(body) == ERROR_KEYS and body["errorCode"] == "operation_not_allowed"
        assert body["message"] == "This operation is not available through the organization proxy."
    assert tenant.requests == [], "no call to Auth0 at all, not even for the signing keys"


def test_the_table_declares_each_operation_once():
    keys = [(rule.method, rule.template) for rule in RULES]
    assert len(keys) == len(set(keys))
    assert set(WRITE_SCOPES) == WRITE_PERMISSIONS  # the write permissions of the demo API


def test_a_read_takes_read_users_or_its_own_permission(call, make_token):
    path = "/api/v2/organizations/org_acme/members"
    assert call(path, make_token(scope="read:organization_members")).status_code == 200
    assert call(path, make_token(scope="read:users")).status_code == 200
    refused = call(path, make_token(scope="read:organizations"))
    assert refused.status_code == 403 and refused.json()["errorCode"] == "insufficient_scope"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v2/organizations/org_globex"),
        ("GET", "/api/v2/organizations/org_globex/members"),
        ("GET", "/api/v2/organizations/org_globex/invitations"),
        ("GET", "/api/v2/organizations/org_nope/enabled_connections"),
        ("GET", "/api/v2/organizations/org_globex/members/auth0%7Cfrank-globex/roles"),
    ],
)
def test_another_organization_is_auth0s_404_without_an_upstream_call(
    call, tenant, make_token, method, path
):
    answer = call(path, make_token(), method=method)
    assert answer.status_code == 404
    assert answer.json() == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "No organization found by that id or name",
        "errorCode": "inexistent_organization",
    }
    assert upstream_management_calls(tenant) == []


def test_members_by_offset_with_totals(call, make_token):
    answer = call("/api/v2/organizations/org_acme/members?page=1&per_page=2&include_totals=true",
                  make_token())  # fmt: skip
    body = answer.json()
    assert answer.status_code == 200
    assert [m["user_id"] for m in body["members"]] == ACME_MEMBERS[2:4]
    assert (body["start"], body["limit"], body["total"]) == (2, 2, len(ACME_MEMBERS))
    assert all(set(m) == MEMBER_FIELDS for m in body["members"])


def test_members_without_paging_are_auth0s_first_page_as_an_array(call, make_token):
    body = call("/api/v2/organizations/org_acme/members", make_token()).json()
    assert [m["user_id"] for m in body] == ACME_MEMBERS


def test_members_offset_window_ends_at_1000(call, make_token):
    answer = call("/api/v2/organizations/org_big/members?page=10&per_page=100",
                  make_token("edge-big"))  # fmt: skip
    assert answer.status_code == 400 and answer.json()["errorCode"] == "invalid_paging"


def test_members_by_checkpoint_reach_past_1000(make_app, call, make_token, tenant):
    app, token, seen, checkpoint = make_app(cache_ttl_seconds=60), make_token("edge-big"), [], None
    while True:
        path = "/api/v2/organizations/org_big/members?take=100"
        answer = call(path + (f"&from={checkpoint}" if checkpoint else ""), token, via=app)
        answer = answer.json()
        seen += [m["user_id"] for m in answer["members"]]
        checkpoint = answer.get("next")
        if not checkpoint:
            break
    assert len(seen) == len(set(seen)) == 2500
    assert tenant.counts[MEMBERS] == 50, "the list read once, in Auth0's pages of 50"


def test_members_fields_excluded(call, make_token):
    path = "/api/v2/organizations/org_acme/members?fields=picture,email&include_fields=false"
    body = call(path, make_token()).json()
    assert all(set(m) == {"user_id", "name"} for m in body)


def test_a_bad_checkpoint_is_a_400(call, make_token):
    answer = call("/api/v2/organizations/org_acme/members?from=%25%25", make_token())
    assert answer.status_code == 400 and answer.json()["errorCode"] == "invalid_query_string"


@pytest.mark.parametrize(
    "query",
    ["per_page=0", "per_page=101", "page=-1", "take=x", "include_totals=yes", "bogus=1",
     "page=1&page=2", "page=0&from=abc"],
)  # fmt: skip
def test_query_validation_before_any_upstream_call(call, make_token, tenant, query):
    answer = call(f"/api/v2/organizations/org_acme/members?{query}", make_token())
    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "invalid_query_string"
    assert upstream_management_calls(tenant) == []


def test_an_sdk_paging_the_cached_list_costs_no_upstream_call(make_app, call, make_token, tenant):
    app, token = make_app(cache_ttl_seconds=60), make_token()
    call("/users", token, via=app)
    tenant.reset_counts()
    for page in range(3):
        path = f"/api/v2/organizations/org_acme/members?page={page}&per_page=2"
        assert call(path, token, via=app).status_code == 200
    assert tenant.counts[MEMBERS] == 0


def test_users_search_never_finds_another_organizations_member(call, make_token):
    q = "user_id:auth0%7Cfrank-globex%20OR%20email:grace@globex.example"
    answer = call(f"/api/v2/users?q={q}&include_totals=true", make_token())
    assert answer.json() == {"users": [], "start": 0, "limit": 50, "length": 0, "total": 0}


def test_users_list_includes_totals_as_auth0(call, make_token):
    body = call("/api/v2/users?per_page=4&include_totals=true", make_token()).json()
    assert [u["user_id"] for u in body["users"]] == ACME_MEMBERS[:4]
    assert (body["start"], body["limit"], body["length"], body["total"]) == (0, 4, 4, 6)
    assert all("identities" in user for user in body["users"]), "full profiles"


def test_user_organizations_of_a_shared_user_name_only_the_callers(call, make_token):
    body = call("/api/v2/users/auth0%7Cshared-consultant/organizations", make_token()).json()
    assert [organization["id"] for organization in body] == ["org_acme"]


def test_identity_provider_tokens_never_reach_the_caller(call, make_token, tenant):
    identity = {"connection": "c", "provider": "oauth2", "user_id": "1",
                "access_token": "idp-secret", "refresh_token": "idp-refresh"}  # fmt: skip
    tenant.add_user(
        "auth0|idp-acme", "idp@acme.example", organizations=["org_acme"], identities=[identity]
    )
    try:
        for path in ("/api/v2/users/auth0%7Cidp-acme",
                     "/api/v2/users?q=user_id:auth0%7Cidp-acme",  # a few: the profile cache
                     "/api/v2/users?per_page=50",  # a page: one users search
                     "/api/v2/users-by-email?email=idp@acme.example"):  # fmt: skip
            answer = call(path, make_token())
            assert answer.status_code == 200 and b"idp@acme.example" in answer.body
            assert b"idp-secret" not in answer.body and b"idp-refresh" not in answer.body
    finally:
        tenant.delete_user("auth0|idp-acme")


@pytest.mark.parametrize("user_id", ["..", ".", "%2E%2E", "%2e"])
def test_a_dot_segment_id_is_an_unknown_user_without_an_upstream_call(
    call, make_token, tenant, user_id
):
    answer = call(f"/api/v2/users/{user_id}/organizations", make_token())
    assert answer.status_code == 404 and answer.json()["errorCode"] == "inexistent_user"
    assert upstream_management_calls(tenant) == []


def test_a_write_permission_unknown_to_the_table_is_a_config_error(tenant_server):
    config = proxy_config_for(tenant_server)
    config["writes"] = {"edge-acme": {"permissions": ["update:clients"]}}
    with pytest.raises(ConfigError, match=r"writes\.edge-acme\.permissions: 'update:clients'"):
        create_app(config)


@pytest.fixture(params=["filesystem", "redis"])
def shared_cache(request, tmp_path) -> dict:
    """The proxy settings of a cache shared by workers of one host, or by hosts (Redis)."""
    if request.param == "redis":
        return {"cache_type": "redis", "cache_key_prefix": request.getfixturevalue("redis_prefix")}
    return {"cache_dir": str(tmp_path / "shared")}


DAVE = "/api/v2/users/auth0%7Cdave-acme"


def test_a_write_is_seen_by_the_next_read_on_another_worker(
    make_writer, shared_cache, call, make_token, tenant
):
    first, second = (make_writer(cache_ttl_seconds=60, **shared_cache) for _ in range(2))
    reader, writer = make_token(), make_token(scope=WRITER_SCOPE)
    assert call(DAVE, reader, via=second).json()["user_metadata"] == {}  # cached by both
    call(DAVE, reader, via=first)
    try:
        assert (
            write(first, "PATCH", DAVE, {"user_metadata": {"desk": 7}}, writer).status_code == 200
        )
        assert call(DAVE, reader, via=second).json()["user_metadata"] == {"desk": 7}
    finally:
        tenant.add_user("auth0|dave-acme", "dave@acme.example", "Dave Diaz", ["org_acme"])


def test_a_write_is_authorized_by_auth0s_membership_now_not_the_cache(
    make_writer, call, make_token, tenant
):
    """A member moved to another organization in Auth0 (not through the proxy) is no longer
    the caller's to change, even while the cache still says so."""
    app = make_writer(cache_ttl_seconds=60, max_stale_seconds=600)
    assert call(DAVE, make_token(), via=app).status_code == 200  # membership cached
    tenant.remove_member("org_acme", "auth0|dave-acme")
    tenant.add_member("org_globex", "auth0|dave-acme")
    try:
        answer = write(
            app, "PATCH", DAVE, {"user_metadata": {"x": 1}}, make_token(scope=WRITER_SCOPE)
        )
        assert answer.status_code == 404 and answer.get_json()["errorCode"] == "inexistent_user"
        assert tenant.user_profile("auth0|dave-acme")["user_metadata"] == {}
    finally:
        tenant.remove_member("org_globex", "auth0|dave-acme")
        tenant.add_member("org_acme", "auth0|dave-acme")


def test_a_user_of_no_organization_is_not_deleted(make_writer, call, make_token, tenant):
    app = make_writer({"permissions": ["delete:users"]}, cache_ttl_seconds=60)
    tenant.add_user("auth0|leaving-acme", "leaving@acme.example", organizations=["org_acme"])
    try:
        path = "/api/v2/users/auth0%7Cleaving-acme"
        assert call(path, make_token(), via=app).status_code == 200  # membership cached
        tenant.remove_member("org_acme", "auth0|leaving-acme")
        answer = write(app, "DELETE", path, None, make_token(scope=WRITER_SCOPE))
        assert answer.status_code == 404
        assert tenant.user_profile("auth0|leaving-acme") is not None
    finally:
        tenant.delete_user("auth0|leaving-acme")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"app_metadata": {"admin": True}}, 400),
        ({"connection_id": "con_google"}, 403),
        ({"client_id": "edge-globex"}, 403),
        ({"roles": ["rol_admin"]}, 403),
        ({"roles": [{"id": "rol_viewer"}]}, 400),
        ({"roles": "rol_viewer"}, 400),
    ],
)
def test_an_invitation_stays_within_the_grant(make_writer, make_token, tenant, body, status):
    grant = {
        "permissions": ["create:organization_invitations"],
        "roles": ["rol_viewer"],
        "app_metadata_keys": ["plan"],
        "connections": ["con_database"],
        "invitation_clients": ["customer-portal"],
    }
    allowed = {"inviter": {"name": "Ops"}, "invitee": {"email": "new@acme.example"},
               "client_id": "customer-portal", "connection_id": "con_database",
               "roles": ["rol_viewer"], "app_metadata": {"plan": "gold"}}  # fmt: skip
    app, token = make_writer(grant), make_token(scope=WRITER_SCOPE)
    path = "/api/v2/organizations/org_acme/invitations"
    answer = write(app, "POST", path, {**allowed, **body}, token)
    assert answer.status_code == status and set(answer.get_json()) == ERROR_KEYS
    assert upstream_management_calls(tenant) == []
    assert write(app, "POST", path, allowed, token).status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("DELETE", "/api/v2/organizations/org_acme/members", {"members": 5}),
        ("DELETE", "/api/v2/organizations/org_acme/members", {"members": None}),
        ("POST", "/api/v2/users", {"connection": ["Username-Password-Authentication"]}),
        ("POST", "/api/v2/users", {"connection": "Username-Password-Authentication",
                                   "email": "v@acme.example", "email_verified": True}),
        ("PATCH", DAVE, {"user_metadata": "x"}),
        ("PATCH", DAVE, ["user_metadata"]),
        ("PATCH", DAVE, "not json"),
    ],
)  # fmt: skip
def test_a_malformed_write_is_a_400(make_writer, make_token, method, path, body):
    grant = {"permissions": ["delete:organization_members", "create:users", "update:users"],
             "connections": ["Username-Password-Authentication"]}  # fmt: skip
    scope = "delete:organization_members create:users update:users"
    answer = write(make_writer(grant), method, path, body, make_token(scope=scope))
    assert answer.status_code in (400, 403), answer.get_data()
    assert answer.get_json()["errorCode"] in ("invalid_body", "operation_not_allowed")


def test_a_write_auth0_did_but_answered_late_still_refreshes_the_cache(
    make_writer, call, make_token, tenant
):
    app = make_writer(cache_ttl_seconds=60, read_timeout_seconds=0.5)
    reader = make_token()
    assert call(DAVE, reader, via=app).json()["user_metadata"] == {}
    tenant.inject_fault("PATCH /api/v2/users/{id}", status=None, delay=1.0)
    try:
        answer = write(
            app, "PATCH", DAVE, {"user_metadata": {"desk": 9}}, make_token(scope=WRITER_SCOPE)
        )
        assert answer.status_code == 504
        assert tenant.wait_until_idle(timeout=10)
        assert call(DAVE, reader, via=app).json()["user_metadata"] == {"desk": 9}
        assert tenant.counts["PATCH /api/v2/users/{id}"] == 1, "a write is never resent"
    finally:
        tenant.add_user("auth0|dave-acme", "dave@acme.example", "Dave Diaz", ["org_acme"])


def test_a_write_auth0_failed_is_not_resent_and_its_answer_holds_no_idp_token(
    make_writer, make_token, tenant
):
    token = make_token(scope=WRITER_SCOPE)
    tenant.inject_fault("PATCH /api/v2/users/{id}", status=503)
    answer = write(make_writer(), "PATCH", DAVE, {"user_metadata": {"a": 1}}, token)
    assert answer.status_code == 502
    assert tenant.counts["PATCH /api/v2/users/{id}"] == 1, "a 5xx write may be done: not resent"
    secret = {"connection": "c", "provider": "oauth2", "user_id": "1", "access_token": "idp-secret"}
    tenant.add_user("auth0|dave-acme", "dave@acme.example", "Dave Diaz", ["org_acme"],
                    identities=[secret])  # fmt: skip
    try:
        answer = write(make_writer(), "PATCH", DAVE, {"user_metadata": {"a": 1}}, token)
        assert answer.status_code == 200 and b"idp-secret" not in answer.get_data()
    finally:
        tenant.add_user("auth0|dave-acme", "dave@acme.example", "Dave Diaz", ["org_acme"])


def test_members_the_list_names_are_found_whatever_a_cached_membership_says(
    make_app, call, make_token, tenant
):
    app, token = make_app(cache_ttl_seconds=60), make_token()
    path = "/api/v2/users/auth0%7Clate-acme"
    tenant.add_user("auth0|late-acme", "late@acme.example")
    try:
        assert call(path, token, via=app).status_code == 404  # not a member yet: cached
        tenant.add_member("org_acme", "auth0|late-acme")  # an invitation accepted
        for query in ("/api/v2/users-by-email?email=late@acme.example",
                      "/api/v2/users?q=email:late@acme.example"):  # fmt: skip
            answer = call(query, token, via=app)
            assert answer.status_code == 200 and b"auth0|late-acme" in answer.body
    finally:
        tenant.delete_user("auth0|late-acme")


def test_users_by_email_needs_the_email(call, make_token):
    answer = call("/api/v2/users-by-email", make_token())
    assert answer.status_code == 400 and answer.json()["errorCode"] == "invalid_query_string"


def test_a_write_refused_for_its_token_is_an_audit_line_too(make_writer, make_token, app_log):
    answer = write(make_writer(), "PATCH", DAVE, {"user_metadata": {}}, make_token())
    assert answer.status_code == 403
    line = [r for r in app_log.records if r.get("audit")][-1]
    assert line["outcome"] == "refused: 403 insufficient_scope"
    assert line["client_id"] == "edge-acme" and line["target"] == "auth0|dave-acme"


def test_a_refused_write_is_an_audit_line_too(make_writer, make_token, app_log, tenant):
    app = make_writer()
    token = make_token(scope=WRITER_SCOPE)
    answer = write(app, "PATCH", DAVE, {"email": "taken@evil.example"}, token)
    assert answer.status_code == 400 and "'email'" in answer.get_json()["message"]
    audit = [r for r in app_log.records if r.get("audit")]
    assert audit[-1]["outcome"] == "refused: 400 invalid_body"
    assert audit[-1]["client_id"] == "edge-acme" and audit[-1]["org_id"] == "org_acme"
    assert audit[-1]["target"] == "auth0|dave-acme"
    assert upstream_management_calls(tenant) == [
        "/api/v2/users/auth0%7Cdave-acme/organizations?page=0&per_page=100&include_totals=true"
    ], "only the membership check"
    assert "taken@evil.example" not in json.dumps(audit)
