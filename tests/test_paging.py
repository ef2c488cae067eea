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
