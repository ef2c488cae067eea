"""Auth0's paging parameters on GET /users: checked first, with Auth0's limits, and answered from
the organization's cached member list, as GET /api/v2/organizations/{id}/members answers them."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.support import (
    BIG_ORG,
    BIG_ORG_SIZE,
    MEMBER_FIELDS,
    MEMBERS,
    USERS_SEARCH,
    assert_auth0_error,
    assert_refused,
)

LIST_PAGE_SIZE = 50  # proxy.page_size's default: members per page of the list read from Auth0


def test_offset_page_with_totals(make_app, call, make_token, tenant):
    app, token = make_app(cache_ttl_seconds=60), make_token("edge-big")
    body = call("/users?page=2&per_page=100&include_totals=true", token, via=app).json()
    assert (body["start"], body["limit"], body["total"]) == (200, 100, BIG_ORG_SIZE)
    assert [m["user_id"] for m in body["members"]] == sorted(tenant.member_ids(BIG_ORG))[200:300]
    assert all(set(member) <= MEMBER_FIELDS for member in body["members"])
    # The whole list was read once, page by page, and every other page comes from it.
    assert tenant.counts[MEMBERS] == BIG_ORG_SIZE // LIST_PAGE_SIZE
    again = call("/users?page=3&per_page=100&include_totals=true", token, via=app).json()
    assert [m["user_id"] for m in again["members"]] == sorted(tenant.member_ids(BIG_ORG))[300:400]
    assert tenant.counts[MEMBERS] == BIG_ORG_SIZE // LIST_PAGE_SIZE


def test_offset_page_without_totals_is_a_bare_array(call, make_token, tenant):
    body = call("/users?page=1&per_page=3", make_token("edge-big")).json()
    assert [m["user_id"] for m in body] == sorted(tenant.member_ids(BIG_ORG))[3:6]


def test_checkpoint_paging_reaches_every_member(make_app, call, make_token, tenant):
    app, token, seen, cursor = make_app(cache_ttl_seconds=60), make_token("edge-big"), [], None
    while True:
        path = "/users?take=100" + (f"&from={quote(cursor)}" if cursor else "")
        page = call(path, token, via=app).json()
        seen += [member["user_id"] for member in page["members"]]
        cursor = page.get("next")
        if not cursor:
            break
    assert seen == sorted(tenant.member_ids(BIG_ORG))
    assert tenant.counts[MEMBERS] == BIG_ORG_SIZE // LIST_PAGE_SIZE  # the list, read once
    assert "next" not in page  # as Auth0 answers the last page


def test_checkpoint_page_without_from_is_the_first(call, make_token, tenant):
    body = call("/users?take=5", make_token("edge-big")).json()
    assert set(body) == {"members", "next"}
    assert [m["user_id"] for m in body["members"]] == sorted(tenant.member_ids(BIG_ORG))[:5]


INVALID_PAGING = (
    "You can only page through the first 1000 records with page and per_page; "
    "use from and take beyond them."
)


@pytest.mark.parametrize(
    ("query", "error_code", "message"),
    [
        ("per_page=101", "invalid_query_string", "per_page: Must be greater than or equal"),
        ("per_page=0", "invalid_query_string", "per_page: Must be greater than or equal"),
        ("page=-1", "invalid_query_string", "page: Must be greater than or equal to 0"),
        ("take=500", "invalid_query_string", "take: Must be greater than or equal"),
        ("page=x", "invalid_query_string", "page: Not a valid integer."),
        ("include_totals=yes", "invalid_query_string", "include_totals: Not a valid boolean."),
        ("page=1&take=10", "invalid_query_string", "use either page/per_page/include_totals"),
        ("from=", "invalid_query_string", "from: Length must be between 1 and 1024."),
        ("q=user_id:*", "invalid_query_string", "q: Unknown field."),
        ("page=1&page=2", "invalid_query_string", "each parameter may be given once"),
        ("page=10&per_page=100", "invalid_paging", INVALID_PAGING),
        ("page=20&per_page=50", "invalid_paging", INVALID_PAGING),
    ],
)
def test_bad_paging_is_refused_before_any_upstream_call(
    call, make_token, tenant, query, error_code, message
):
    body = assert_auth0_error(call(f"/users?{query}", make_token("edge-big")), 400, error_code)
    assert message in body["message"]
    assert tenant.counts[MEMBERS] == 0


def test_paging_never_reaches_another_organization(call, make_token, tenant):
    body = call("/users?page=0&per_page=100&include_totals=true", make_token("edge-acme")).json()
    assert {m["user_id"] for m in body["members"]} == set(tenant.member_ids("org_acme"))
    assert body["total"] == len(tenant.member_ids("org_acme"))


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
    ("query", "message"),
    [
        ("fields=password", "unknown fields password"),
        ("fields=app_metadata,secret", "unknown fields secret"),
        ("fields=email&include_fields=false", "include_fields=false is not supported"),
        ("fields=app_metadata&page=0", "profile fields need the whole list"),
    ],
)
def test_bad_fields_are_refused_before_any_upstream_call(call, make_token, tenant, query, message):
    answer = call(f"/users?{query}", make_token("edge-acme"))
    body = assert_refused(
        answer, 400, "invalid_query_string", f"Query validation error: {message}."
    )
    assert message in body["message"]
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


def test_a_users_search_answering_another_organizations_user_is_filtered(call, make_token, tenant):
    """Auth0 answers the users search; should it ever answer more than was asked (another
    organization's user among them), only the members asked for reach the caller."""
    acme = sorted(tenant.member_ids("org_acme"))
    profiles = [tenant.user_profile(user_id) for user_id in [*acme, "auth0|frank-globex"]]
    answer = {"users": profiles, "start": 0, "limit": 50, "length": 7, "total": 7}
    tenant.inject_fault(USERS_SEARCH, status=200, body=answer)
    members = call(PROFILE_QUERY + ",email", make_token("edge-acme")).json()
    assert [m["user_id"] for m in members] == acme
    assert tenant.counts[USERS_SEARCH] == 1
