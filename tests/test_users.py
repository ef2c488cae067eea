"""GET /users and GET /users/<id>: an organization's users, and only those."""

from __future__ import annotations

import http.client
import json
import math
from urllib.parse import unquote

import pytest
from werkzeug.exceptions import NotFound

from tests.support import (
    BIG_ORG,
    BIG_ORG_SIZE,
    MEMBER_FIELDS,
    MEMBERS,
    USER_ORGS,
    assert_refused,
    user_path,
)

NOT_A_MEMBER = "user is not a member of the caller's organization"


def ids(members: list[dict]) -> set[str]:
    return {member["user_id"] for member in members}


def test_lists_all_members_of_the_callers_organization(call, make_token, tenant):
    response = call("/users", make_token("edge-acme"))
    assert response.status_code == 200
    members = response.json()
    assert ids(members) == set(tenant.member_ids("org_acme"))
    assert all(set(member) <= MEMBER_FIELDS and "user_id" in member for member in members)


def test_list_never_contains_another_organizations_users(call, make_token, tenant):
    acme = ids(call("/users", make_token("edge-acme")).json())
    globex = ids(call("/users", make_token("edge-globex")).json())
    assert globex == set(tenant.member_ids("org_globex"))
    assert acme & globex == {"auth0|shared-consultant"}  # the one user in both organizations


def test_organization_of_2500_members_is_complete(call, make_token, tenant):
    members = call("/users", make_token("edge-big")).json()
    assert len(members) == BIG_ORG_SIZE
    assert ids(members) == set(tenant.member_ids(BIG_ORG))
    # Checkpoint paging at the default page size of 50: one upstream call per page, no more.
    assert tenant.counts[MEMBERS] == math.ceil(BIG_ORG_SIZE / 50)


def test_member_gets_full_profile(call, make_token):
    response = call(user_path("auth0|alice-acme"), make_token("edge-acme"))
    assert response.status_code == 200
    profile = response.json()
    assert profile["user_id"] == "auth0|alice-acme"
    assert {"email", "identities", "created_at", "app_metadata"} <= set(profile)


def test_unknown_user_gets_404(call, make_token):
    response = call(user_path("auth0|nobody"), make_token("edge-acme"))
    body = assert_refused(response, 404, "inexistent_user", NOT_A_MEMBER)
    assert body["message"] == "The user does not exist."


def test_member_of_other_org_gets_the_same_404_as_an_unknown_user(call, make_token, tenant):
    assert tenant.user_profile("auth0|frank-globex") is not None  # he exists, in org_globex
    token = make_token("edge-acme")
    unknown = call(user_path("auth0|nobody"), token)
    other_org = call(user_path("auth0|frank-globex"), token)
    assert_refused(other_org, 404, "inexistent_user", NOT_A_MEMBER)
    assert other_org.status_code == unknown.status_code == 404
    assert other_org.json() == unknown.json()
    assert "frank" not in other_org.text
    assert call(user_path("auth0|frank-globex"), make_token("edge-globex")).status_code == 200


@pytest.mark.parametrize("unknown_user_organizations", ["empty", "404"])
def test_user_deleted_after_the_listing_gets_the_same_404_as_a_non_member(
    call, make_token, tenant, unknown_user_organizations
):
    """A sync lists the members, then fetches each profile; a user deleted in between is an
    everyday event. Auth0 may answer such a user's organizations with an empty list or a 404."""
    tenant.unknown_user_organizations = unknown_user_organizations
    tenant.add_user("auth0|leaving-acme", "leaving@acme.example", organizations=["org_acme"])
    token = make_token("edge-acme")
    assert "auth0|leaving-acme" in ids(call("/users", token).json())
    tenant.delete_user("auth0|leaving-acme")
    deleted = call(user_path("auth0|leaving-acme"), token)
    assert_refused(deleted, 404, "inexistent_user", NOT_A_MEMBER)
    assert deleted.json() == call(user_path("auth0|frank-globex"), token).json()


def test_user_in_no_organization_gets_404(call, make_token, tenant):
    loner = next(
        p["user_id"] for p in tenant.user_profiles() if not tenant.organizations_of(p["user_id"])
    )
    assert_refused(
        call(user_path(loner), make_token("edge-acme")), 404, "inexistent_user", NOT_A_MEMBER
    )


@pytest.mark.parametrize("client_id", ["edge-acme", "edge-globex"])
def test_user_in_two_organizations_is_visible_to_both(call, make_token, client_id):
    response = call(user_path("auth0|shared-consultant"), make_token(client_id))
    assert response.status_code == 200
    assert response.json()["user_id"] == "auth0|shared-consultant"


def test_member_of_a_large_organization_is_found(call, make_token, tenant):
    last = sorted(tenant.member_ids(BIG_ORG))[-1]
    assert call(user_path(last), make_token("edge-big")).status_code == 200
    assert_refused(
        call(user_path(last), make_token("edge-acme")), 404, "inexistent_user", NOT_A_MEMBER
    )


def test_org_id_claim_selects_one_of_the_clients_organizations(call, make_token, tenant):
    token = make_token("edge-reseller", organization="org_globex")
    assert ids(call("/users", token).json()) == set(tenant.member_ids("org_globex"))
    assert_refused(call(user_path("auth0|alice-acme"), token), 404, "inexistent_user", NOT_A_MEMBER)


def test_client_of_several_orgs_without_org_claim_gets_403(call, make_token):
    response = call("/users", make_token("edge-reseller"))
    body = assert_refused(
        response,
        403,
        "access_denied",
        "client maps to several organizations and the token names none",
    )
    assert "organization" in body["message"]


def test_org_id_claim_outside_the_clients_organizations_gets_403(call, make_token):
    token = make_token("edge-acme", claims={"org_id": "org_globex"})
    reason = "org_id claim not allowed for client"
    assert_refused(call("/users", token), 403, "access_denied", reason)
    assert_refused(call(user_path("auth0|frank-globex"), token), 403, "access_denied", reason)


def test_unmapped_client_gets_403(call, make_token, tenant):
    response = call("/users", make_token("edge-unmapped"))
    assert_refused(response, 403, "access_denied", "client is not in the clients map")
    assert tenant.counts[MEMBERS] == 0


@pytest.mark.parametrize(
    "user_id",
    [
        "../organizations/org_globex/members",
        "auth0|frank-globex/../../organizations/org_globex/members",
        "x?fields=email",
        "x#fragment",
    ],
)
def test_ids_cannot_reach_another_upstream_endpoint(call, make_token, tenant, user_id):
    response = call(user_path(user_id), make_token("edge-acme"))
    assert_refused(response, 404, "inexistent_user", NOT_A_MEMBER)
    assert tenant.counts[MEMBERS] == 0
    for record in tenant.requests:
        assert record["endpoint"] in {
            "GET /api/v2/users/{id}/organizations",
            "POST /oauth/token",
            "GET /.well-known/jwks.json",
        }


@pytest.mark.parametrize("cache_ttl_seconds", [0, 60])
def test_identity_provider_tokens_are_never_returned_nor_cached(
    make_app, call, make_token, tenant, tmp_path, cache_ttl_seconds
):
    tenant.add_user(
        "google-oauth2|idp-user",
        "idp.user@acme.example",
        organizations=["org_acme"],
        identities=[
            {
                "provider": "google-oauth2",
                "connection": "google-oauth2",
                "user_id": "idp-user",
                "isSocial": True,
                "access_token": "ya29.idp-access-token",
                "refresh_token": "1//idp-refresh-token",
            }
        ],
    )
    cache_dir = tmp_path / "idp-cache"
    app = make_app(cache_ttl_seconds=cache_ttl_seconds, cache_dir=str(cache_dir))
    try:
        response = call(user_path("google-oauth2|idp-user"), make_token("edge-acme"), via=app)
        assert response.status_code == 200
        identity = response.json()["identities"][0]
        assert identity["provider"] == "google-oauth2"
        assert "idp-access-token" not in response.text and "idp-refresh-token" not in response.text
    finally:
        tenant.remove_member("org_acme", "google-oauth2|idp-user")
    stored = b"".join(path.read_bytes() for path in cache_dir.rglob("*") if path.is_file())
    assert (b"idp.user@acme.example" in stored) == bool(cache_ttl_seconds)  # the profile is there
    assert b"idp-access-token" not in stored and b"idp-refresh-token" not in stored


@pytest.mark.parametrize(
    ("raw_path", "reason"),
    [
        ("/users/..", "id '..' is not a path segment"),
        ("/users/.", "id '.' is not a path segment"),
        ("/users/%2E%2E", "id '..' is not a path segment"),
        ("/users/%2e", "id '.' is not a path segment"),
        ("/users/", NotFound.description),
    ],
)
def test_dot_segment_ids_never_reach_auth0(proxy, make_token, tenant, raw_path, reason):
    # http.client sends the path as written; requests would resolve the dots before sending.
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    connection.request("GET", raw_path, headers={"Authorization": f"Bearer {make_token()}"})
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 404
    assert body["statusCode"] == 404
    request_id = response.getheader("X-Request-ID")
    [line] = [r for r in proxy.log_records() if r.get("request_id") == request_id]
    assert line["reason"] == reason
    assert not [r for r in tenant.requests if r["endpoint"] is None or "/users/" in r["raw_uri"]]


HOSTILE_IDS = [
    "a/b",
    "auth0|frank-globex/../auth0|alice-acme",
    "a%2Fb",
    "?",
    "auth0|alice-acme?fields=app_metadata",
    "#",
    "a\x00b",
    "auth0|ünïcödé-ユーザー-👤",
    "a" * 1500,
    "auth0|frank-globex",
    "AUTH0|ALICE-ACME",
    " auth0|alice-acme",
    "auth0|alice-acme ",
]


@pytest.mark.parametrize("user_id", HOSTILE_IDS)
def test_hostile_ids_are_one_path_segment_upstream(call, make_token, tenant, user_id):
    response = call(user_path(user_id), make_token("edge-acme"))
    assert_refused(response, 404, "inexistent_user", NOT_A_MEMBER)
    for record in tenant.requests:
        if record["endpoint"] in {"POST /oauth/token", "GET /.well-known/jwks.json"}:
            continue
        # Only the membership lookup ran, for exactly this id: nothing else was reached.
        assert record["endpoint"] == "GET /api/v2/users/{id}/organizations"
        segments = record["raw_uri"].split("?", 1)[0].split("/")
        assert len(segments) == 6
        assert segments[:4] + segments[5:] == ["", "api", "v2", "users", "organizations"]
        assert unquote(segments[4]) == user_id


@pytest.mark.parametrize(("path", "user_id"), [("/users/%2F0", "/0"), ("/users//0", "/0")])
def test_ids_with_slashes_are_ids_never_redirects(call, make_token, tenant, path, user_id):
    answer = call(path, make_token("edge-acme"))
    assert_refused(answer, 404, "inexistent_user", NOT_A_MEMBER)
    [lookup] = [r["raw_uri"] for r in tenant.requests if r["endpoint"] == USER_ORGS]
    assert unquote(lookup.split("/")[4]) == user_id


def test_fields_parameter_cannot_reach_beyond_the_organization(call, make_token, tenant):
    token = make_token("edge-acme")
    members = call("/users?fields=user_id,app_metadata,identities&include_fields=true", token)
    assert {member["user_id"] for member in members.json()} == set(tenant.member_ids("org_acme"))
    response = call(user_path("auth0|frank-globex") + "?fields=user_id,email", token)
    assert_refused(response, 404, "inexistent_user", NOT_A_MEMBER)
    assert "frank" not in response.text
