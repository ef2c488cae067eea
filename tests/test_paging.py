"""Auth0's paging parameters on GET /users: passed through with its limits, checked first."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.conftest import BIG_ORG, BIG_ORG_SIZE
from tests.test_tokens import assert_auth0_error

MEMBERS = "GET /api/v2/organizations/{id}/members"
MEMBER_FIELDS = {"user_id", "email", "name", "picture"}


def test_offset_page_with_totals(call, make_token, tenant):
    body = call("/users?page=2&per_page=100&include_totals=true", make_token("edge-big")).json()
    assert (body["start"], body["limit"], body["total"]) == (200, 100, BIG_ORG_SIZE)
    assert [m["user_id"] for m in body["members"]] == sorted(tenant.member_ids(BIG_ORG))[200:300]
    assert all(set(member) <= MEMBER_FIELDS for member in body["members"])
    assert tenant.counts[MEMBERS] == 1


def test_offset_page_without_totals_is_a_bare_array(call, make_token, tenant):
    body = call("/users?page=1&per_page=3", make_token("edge-big")).json()
    assert [m["user_id"] for m in body] == sorted(tenant.member_ids(BIG_ORG))[3:6]


def test_checkpoint_paging_reaches_every_member(call, make_token, tenant):
    token, seen, cursor = make_token("edge-big"), [], None
    while True:
        path = "/users?take=100" + (f"&from={quote(cursor)}" if cursor else "")
        page = call(path, token).json()
        seen += [member["user_id"] for member in page["members"]]
        cursor = page.get("next")
        if not cursor:
            break
    assert seen == sorted(tenant.member_ids(BIG_ORG))
    assert tenant.counts[MEMBERS] == BIG_ORG_SIZE // 100


@pytest.mark.parametrize(
    ("query", "error_code"),
    [
        ("per_page=101", "invalid_query_string"),
        ("per_page=0", "invalid_query_string"),
        ("page=-1", "invalid_query_string"),
        ("take=500", "invalid_query_string"),
        ("page=x", "invalid_query_string"),
        ("include_totals=yes", "invalid_query_string"),
        ("page=1&take=10", "invalid_query_string"),
        ("q=user_id:*", "invalid_query_string"),
        ("page=1&page=2", "invalid_query_string"),
        ("page=10&per_page=100", "invalid_paging"),
        ("page=20&per_page=50", "invalid_paging"),
    ],
)
def test_bad_paging_is_refused_before_any_upstream_call(
    call, make_token, tenant, query, error_code
):
    response = call(f"/users?{query}", make_token("edge-big"))
    assert_auth0_error(response, 400, error_code)
    assert tenant.counts[MEMBERS] == 0


def test_paging_never_reaches_another_organization(call, make_token, tenant):
    body = call("/users?page=0&per_page=100&include_totals=true", make_token("edge-acme")).json()
    assert {m["user_id"] for m in body["members"]} == set(tenant.member_ids("org_acme"))
    assert body["total"] == len(tenant.member_ids("org_acme"))


USERS_SEARCH = "GET /api/v2/users"
PROFILE_QUERY = "/users?fields=email_verified,app_metadata,last_login"


def test_profile_fields_come_in_batches_through_the_users_search(call, make_token, tenant):
    members = call(PROFILE_QUERY, make_token("edge-big")).json()
    assert [m["user_id"] for m in members] == sorted(tenant.member_ids(BIG_ORG))
    assert all(
        set(m) == {"user_id", "email_verified", "app_metadata", "last_login"} for m in members
    )
    # One search per page of 50 members, never one call per user.
    assert tenant.counts[USERS_SEARCH] == BIG_ORG_SIZE // 50
    assert tenant.counts["GET /api/v2/users/{id}"] == 0


def test_member_fields_filter_the_list_without_the_users_search(call, make_token, tenant):
    members = call("/users?fields=email", make_token("edge-acme")).json()
    assert {m["user_id"] for m in members} == set(tenant.member_ids("org_acme"))
    assert all(set(m) == {"user_id", "email"} for m in members)
    assert tenant.counts[MEMBERS] == 1 and tenant.counts[USERS_SEARCH] == 0


def test_member_fields_filter_a_page(call, make_token, tenant):
    body = call("/users?fields=name&take=3", make_token("edge-big")).json()
    assert [set(m) for m in body["members"]] == [{"user_id", "name"}] * 3
    assert "next" in body
    page = call("/users?fields=email&per_page=3", make_token("edge-big")).json()
    assert [set(m) for m in page] == [{"user_id", "email"}] * 3


def test_profile_fields_never_include_another_organizations_users(call, make_token, tenant):
    members = call(PROFILE_QUERY + ",email", make_token("edge-acme")).json()
    assert {m["user_id"] for m in members} == set(tenant.member_ids("org_acme"))
    assert not any("globex" in m["email"] for m in members)


@pytest.mark.parametrize(
    "query",
    [
        "fields=password",
        "fields=app_metadata,secret",
        "fields=email&include_fields=false",
        "fields=app_metadata&page=0",
    ],
)
def test_bad_fields_are_refused_before_any_upstream_call(call, make_token, tenant, query):
    assert_auth0_error(
        call(f"/users?{query}", make_token("edge-acme")), 400, "invalid_query_string"
    )
    assert tenant.counts[MEMBERS] == tenant.counts[USERS_SEARCH] == 0


def test_a_member_id_cannot_widen_the_users_search(call, make_token, tenant):
    sneaky = 'auth0|x" OR user_id:"auth0|frank-globex'
    tenant.add_user(sneaky, "sneaky@acme.example", organizations=["org_acme"])
    try:
        members = call(PROFILE_QUERY + ",email", make_token("edge-acme")).json()
    finally:
        tenant.remove_member("org_acme", sneaky)
    assert sneaky in {m["user_id"] for m in members}
    assert "auth0|frank-globex" not in {m["user_id"] for m in members}
