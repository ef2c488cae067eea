"""The emulated Auth0 tenant keeps Auth0's promises over real HTTPS.

Every test talks to a fresh demo tenant through ``requests`` with certificate verification on, so
what passes here is what the proxy will see.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from emulated_tenant import Tenant, TenantServer, demo, demo_tenant, management, proxy_config
from emulated_tenant.query import operations
from emulated_tenant.ratelimit import endpoint_group
from emulated_tenant.routes import ROUTES
from emulated_tenant.routing import MissingOperation, Route, RouteTable

REPO_ROOT = Path(__file__).resolve().parent.parent
BIG_ORG_ID = "org_big"
BIG_ORG_SIZE = 2_500

MEMBERS = "/api/v2/organizations/{}/members"
MANAGEMENT_ENDPOINTS = {
    "members": "/api/v2/organizations/org_acme/members",
    "user": "/api/v2/users/auth0%7Calice-acme",
    "user organizations": "/api/v2/users/auth0%7Calice-acme/organizations",
    "users": "/api/v2/users",
}
ALICE_ACME_ROLES = "/api/v2/organizations/org_acme/members/auth0%7Calice-acme/roles"
# A request the demo tenant answers with the route's success status, for each row of the route
# table: its path and, for a Management write, its JSON body.
ROUTE_EXAMPLES: dict[str, tuple[str, Any]] = {
    "GET /api/v2/events": ("/api/v2/events", None),
    "POST /oauth/token": ("/oauth/token", None),
    "GET /.well-known/jwks.json": ("/.well-known/jwks.json", None),
    "GET /.well-known/openid-configuration": ("/.well-known/openid-configuration", None),
    "GET /api/v2/organizations/{id}": ("/api/v2/organizations/org_acme", None),
    "GET /api/v2/organizations/{id}/members": (MANAGEMENT_ENDPOINTS["members"], None),
    "POST /api/v2/organizations/{id}/members": (
        MANAGEMENT_ENDPOINTS["members"],
        {"members": [demo.ORPHAN_USER_ID]},
    ),
    "DELETE /api/v2/organizations/{id}/members": (
        MANAGEMENT_ENDPOINTS["members"],
        {"members": ["auth0|bob-acme"]},
    ),
    "GET /api/v2/organizations/{id}/members/{user_id}/roles": (ALICE_ACME_ROLES, None),
    "POST /api/v2/organizations/{id}/members/{user_id}/roles": (
        ALICE_ACME_ROLES,
        {"roles": ["rol_admin"]},
    ),
    "DELETE /api/v2/organizations/{id}/members/{user_id}/roles": (
        ALICE_ACME_ROLES,
        {"roles": ["rol_viewer"]},
    ),
    "GET /api/v2/organizations/{id}/invitations": (
        "/api/v2/organizations/org_acme/invitations",
        None,
    ),
    "POST /api/v2/organizations/{id}/invitations": (
        "/api/v2/organizations/org_acme/invitations",
        {
            "inviter": {"name": "Alice Anders"},
            "invitee": {"email": "newcomer@acme.example"},
            "client_id": demo.PORTAL_CLIENT_ID,
        },
    ),
    "GET /api/v2/organizations/{id}/invitations/{invitation_id}": (
        "/api/v2/organizations/org_acme/invitations/uinv_acme0000000001",
        None,
    ),
    "GET /api/v2/organizations/{id}/enabled_connections": (
        "/api/v2/organizations/org_acme/enabled_connections",
        None,
    ),
    "GET /api/v2/users/{id}": (MANAGEMENT_ENDPOINTS["user"], None),
    "PATCH /api/v2/users/{id}": (MANAGEMENT_ENDPOINTS["user"], {"name": "Alice A. Anders"}),
    "DELETE /api/v2/users/{id}": ("/api/v2/users/auth0%7Cdave-acme", None),
    "GET /api/v2/users/{id}/organizations": (MANAGEMENT_ENDPOINTS["user organizations"], None),
    "GET /api/v2/users": (MANAGEMENT_ENDPOINTS["users"], None),
    "POST /api/v2/users": (
        "/api/v2/users",
        {
            "connection": "Username-Password-Authentication",
            "email": "zoe@acme.example",
            "password": "correct horse battery staple",
        },
    ),
    "GET /api/v2/users-by-email": ("/api/v2/users-by-email?email=alice%40acme.example", None),
    # cgr_0000000000000002: edge-acme's grant for the proxy's API, associated with org_acme
    "GET /api/v2/client-grants": ("/api/v2/client-grants", None),
    "GET /api/v2/client-grants/{id}/organizations": (
        "/api/v2/client-grants/cgr_0000000000000002/organizations",
        None,
    ),
    "GET /api/v2/organizations/{id}/client-grants": (
        "/api/v2/organizations/org_acme/client-grants",
        None,
    ),
    "POST /api/v2/organizations/{id}/client-grants": (
        "/api/v2/organizations/org_globex/client-grants",
        {"grant_id": "cgr_0000000000000002"},
    ),
    "DELETE /api/v2/organizations/{id}/client-grants/{grant_id}": (
        "/api/v2/organizations/org_acme/client-grants/cgr_0000000000000002",
        None,
    ),
}
# What an administrator's token holds besides the proxy's management permissions: the routes
# that authorize and revoke an edge application for an organization.
ADMIN_SCOPES = ["create:organization_client_grants", "delete:organization_client_grants"]
INEXISTENT_USER = {
    "statusCode": 404,
    "error": "Not Found",
    "message": "The user does not exist.",
    "errorCode": "inexistent_user",
}
SCOPE_FOR_ENDPOINT = {
    "members": "read:organization_members",
    "user": "read:users",
    "user organizations": "read:organizations",
    "users": "read:users",
}


@pytest.fixture
def tenant() -> Tenant:
    return demo_tenant()


@pytest.fixture
def server(tenant: Tenant) -> Iterator[TenantServer]:
    with TenantServer(tenant) as running:
        yield running


@pytest.fixture
def http(server: TenantServer) -> Iterator[requests.Session]:
    """A session that verifies TLS against the tenant's throwaway CA."""
    with requests.Session() as session:
        session.trust_env = False  # else REQUESTS_CA_BUNDLE / proxy variables would override
        session.verify = server.ca_bundle
        yield session


@pytest.fixture
def mgmt_token(tenant: Tenant, server: TenantServer) -> str:
    return tenant.issue_token(demo.MGMT_CLIENT_ID, tenant.management_audience)


@pytest.fixture
def api(server: TenantServer, http: requests.Session, mgmt_token: str) -> Iterator[Any]:
    """``api(path)``: GET a Management API path with the proxy's management token."""

    def get(path: str, token: str | None = mgmt_token, **params: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http.get(server.url + path, headers=headers, params=params or None)

    yield get


@pytest.fixture
def big_org(tenant: Tenant) -> list[str]:
    tenant.add_organization(BIG_ORG_ID, "big", "Big Co")
    return tenant.seed_organization(BIG_ORG_ID, BIG_ORG_SIZE, "big")


def request_token(http: requests.Session, server: TenantServer, **params: str) -> requests.Response:
    return http.post(
        f"{server.url}/oauth/token", data={"grant_type": "client_credentials", **params}
    )


def published_keys(server: TenantServer, http: requests.Session) -> KeySet:
    return KeySet.import_key_set(http.get(f"{server.url}/.well-known/jwks.json").json())


def decode(server: TenantServer, http: requests.Session, token: str) -> jwt.Token:
    return jwt.decode(token, published_keys(server, http), algorithms=["RS256"])


def test_edge_client_token_uses_auth0_profile_and_carries_org_id(
    server: TenantServer, http: requests.Session, tenant: Tenant
) -> None:
    response = request_token(
        http,
        server,
        client_id=demo.ACME_CLIENT_ID,
        client_secret=demo.ACME_CLIENT_SECRET,
        audience=demo.API_AUDIENCE,
        organization=demo.ACME_ORG_ID,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400
    assert body["scope"] == "read:users"
    token = decode(server, http, body["access_token"])
    assert token.header == {"alg": "RS256", "typ": "JWT", "kid": tenant.signing_key.kid}
    claims = token.claims
    assert claims["iss"] == f"https://localhost:{server.port}/"
    assert claims["sub"] == "edge-acme@clients"
    assert claims["aud"] == demo.API_AUDIENCE
    assert claims["scope"] == "read:users"
    assert claims["gty"] == "client-credentials"
    assert claims["azp"] == demo.ACME_CLIENT_ID
    assert claims["org_id"] == demo.ACME_ORG_ID
    assert claims["exp"] - claims["iat"] == 86400
    assert "jti" not in claims and "client_id" not in claims


def test_rfc9068_api_token_has_at_jwt_type_client_id_and_jti(
    server: TenantServer, http: requests.Session, tenant: Tenant
) -> None:
    tenant.add_api("https://rfc9068.example.com", token_profile="rfc9068", scopes=["read:x"])
    tenant.add_client("strict", "strict-secret", grants={"https://rfc9068.example.com": ["read:x"]})
    body = {
        "grant_type": "client_credentials",
        "client_id": "strict",
        "client_secret": "strict-secret",
        "audience": "https://rfc9068.example.com",
    }
    response = http.post(f"{server.url}/oauth/token", json=body)
    assert response.status_code == 200
    token = decode(server, http, response.json()["access_token"])
    assert token.header["typ"] == "at+jwt"
    assert token.claims["client_id"] == "strict"
    assert token.claims["jti"]
    assert "gty" not in token.claims and "azp" not in token.claims
    assert "org_id" not in token.claims


def test_management_token_is_tenant_wide_with_default_profile(
    server: TenantServer, http: requests.Session, tenant: Tenant
) -> None:
    response = request_token(
        http,
        server,
        client_id=demo.MGMT_CLIENT_ID,
        client_secret=demo.MGMT_CLIENT_SECRET,
        audience=tenant.management_audience,
    )
    claims = decode(server, http, response.json()["access_token"]).claims
    assert claims["aud"] == f"https://localhost:{server.port}/api/v2/"
    assert claims["gty"] == "client-credentials"
    assert claims["scope"].split() == demo.MGMT_SCOPES
    assert {"read:users", "read:organization_members", "read:organizations"} <= set(
        demo.MGMT_SCOPES
    )
    assert "org_id" not in claims


@pytest.mark.parametrize(
    ("params", "status", "error", "description"),
    [
        ({"client_secret": "wrong"}, 401, "access_denied", "Unauthorized"),
        ({"client_id": "nobody"}, 401, "access_denied", "Unauthorized"),
        ({"grant_type": "password"}, 403, "unauthorized_client", None),
        (
            {"audience": "MANAGEMENT"},
            403,
            "access_denied",
            'Client is not authorized to access "MANAGEMENT". You need to create a '
            '"client-grant" associated to this API. '
            "See: https://auth0.com/docs/api/v2#!/Client_Grants/post_client_grants",
        ),
        ({"organization": demo.GLOBEX_ORG_ID}, 400, "invalid_request", None),
        ({"organization": "org_missing"}, 400, "invalid_request", None),
        ({"audience": "https://unknown.example.com"}, 403, "access_denied", None),
    ],
)
def test_token_errors_are_oauth_shaped(
    server: TenantServer,
    http: requests.Session,
    tenant: Tenant,
    params: dict[str, str],
    status: int,
    error: str,
    description: str | None,
) -> None:
    request = {
        "grant_type": "client_credentials",
        "client_id": demo.ACME_CLIENT_ID,
        "client_secret": demo.ACME_CLIENT_SECRET,
        "audience": demo.API_AUDIENCE,
        **params,
    }
    if request["audience"] == "MANAGEMENT":
        request["audience"] = tenant.management_audience
        description = description.replace("MANAGEMENT", tenant.management_audience)
    response = http.post(f"{server.url}/oauth/token", data=request)
    assert response.status_code == status
    assert response.json()["error"] == error
    if description is not None:
        assert response.json()["error_description"] == description


def test_jwks_publishes_only_public_signing_keys(
    server: TenantServer, http: requests.Session, tenant: Tenant
) -> None:
    keys = http.get(f"{server.url}/.well-known/jwks.json").json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kid"] == tenant.signing_key.kid
    assert {"kty": "RSA", "use": "sig", "alg": "RS256"}.items() <= keys[0].items()
    assert not {"d", "p", "q", "dp", "dq", "qi"} & keys[0].keys()
    assert keys == tenant.jwks()["keys"]


def test_jwks_can_leave_out_the_key_algorithm(
    server: TenantServer, http: requests.Session, tenant: Tenant
) -> None:
    tenant.jwks_names_algorithm = False
    tenant.rotate_key()
    keys = http.get(f"{server.url}/.well-known/jwks.json").json()["keys"]
    assert len(keys) == 2
    assert all("alg" not in key for key in keys)
    assert {"kty": "RSA", "use": "sig", "kid": tenant.signing_key.kid}.items() <= keys[1].items()


@pytest.mark.parametrize("algorithm", ["RS384", "RS512", "PS256", "PS384", "PS512"])
def test_tokens_under_other_rsa_algorithms_are_signed_with_the_tenant_key(
    server: TenantServer, http: requests.Session, tenant: Tenant, algorithm: str
) -> None:
    token = tenant.issue_token(demo.ACME_CLIENT_ID, demo.API_AUDIENCE, header={"alg": algorithm})
    with pytest.raises(JoseError):  # the published key names RS256
        jwt.decode(token, published_keys(server, http), algorithms=[algorithm])
    tenant.jwks_names_algorithm = False
    verified = jwt.decode(token, published_keys(server, http), algorithms=[algorithm])
    assert verified.header == {"alg": algorithm, "typ": "JWT", "kid": tenant.signing_key.kid}
    assert verified.claims["azp"] == demo.ACME_CLIENT_ID


def test_rotated_key_signs_new_tokens_and_old_key_stays_published(
    server: TenantServer, http: requests.Session, tenant: Tenant, api: Any, mgmt_token: str
) -> None:
    old_kid = tenant.signing_key.kid
    new_kid = tenant.rotate_key()
    kids = [key["kid"] for key in http.get(f"{server.url}/.well-known/jwks.json").json()["keys"]]
    assert kids == [old_kid, new_kid]
    fresh = tenant.issue_token(demo.MGMT_CLIENT_ID, tenant.management_audience)
    assert decode(server, http, fresh).header["kid"] == new_kid
    assert api(MANAGEMENT_ENDPOINTS["user"], token=fresh).status_code == 200
    assert api(MANAGEMENT_ENDPOINTS["user"], token=mgmt_token).status_code == 200


def test_members_without_paging_params_are_the_first_50_as_an_array(
    api: Any, big_org: list[str]
) -> None:
    response = api(MEMBERS.format(BIG_ORG_ID))
    assert response.status_code == 200
    members = response.json()
    assert [member["user_id"] for member in members] == big_org[:50]
    assert set(members[0]) == {"user_id", "email", "picture", "name"}


def test_members_offset_page_with_totals(api: Any, big_org: list[str]) -> None:
    body = api(MEMBERS.format(BIG_ORG_ID), page=3, per_page=20, include_totals="true").json()
    assert body["start"] == 60 and body["limit"] == 20 and body["total"] == BIG_ORG_SIZE
    assert [member["user_id"] for member in body["members"]] == big_org[60:80]


def test_members_offset_paging_stops_at_1000_records(api: Any, big_org: list[str]) -> None:
    assert api(MEMBERS.format(BIG_ORG_ID), page=19, per_page=50).status_code == 200
    response = api(MEMBERS.format(BIG_ORG_ID), page=20, per_page=50)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_paging"


def test_members_checkpoint_paging_reaches_every_member(api: Any, big_org: list[str]) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"take": 100}
    for _ in range(BIG_ORG_SIZE // 100 + 1):
        body = api(MEMBERS.format(BIG_ORG_ID), **params).json()
        seen += [member["user_id"] for member in body["members"]]
        if "next" not in body:
            break
        params["from"] = body["next"]
    assert seen == big_org


def test_members_checkpoint_default_take_is_50_and_last_page_has_no_next(
    api: Any, tenant: Tenant
) -> None:
    body = api(MEMBERS.format(demo.ACME_ORG_ID), take=3).json()
    assert len(body["members"]) == 3 and body["next"]
    rest = api(MEMBERS.format(demo.ACME_ORG_ID), **{"from": body["next"]}).json()
    assert len(rest["members"]) == 3
    assert "next" not in rest


def test_members_mixing_checkpoint_and_offset_paging_is_400(api: Any) -> None:
    response = api(MEMBERS.format(demo.ACME_ORG_ID), take=10, page=1)
    assert response.status_code == 400


def test_members_fields_projection(api: Any) -> None:
    only_ids = api(MEMBERS.format(demo.ACME_ORG_ID), fields="user_id").json()
    assert all(member.keys() == {"user_id"} for member in only_ids)
    with_roles = api(MEMBERS.format(demo.ACME_ORG_ID), fields="user_id,roles").json()
    assert with_roles[0] == {
        "user_id": "auth0|alice-acme",
        "roles": [{"id": "rol_editor", "name": "Editor"}, {"id": "rol_viewer", "name": "Viewer"}],
    }
    assert with_roles[1] == {"user_id": "auth0|bob-acme", "roles": []}
    without_email = api(
        MEMBERS.format(demo.ACME_ORG_ID), fields="email", include_fields="false"
    ).json()
    assert set(without_email[0]) == {"user_id", "picture", "name"}


def test_membership_changes_show_immediately(api: Any, tenant: Tenant) -> None:
    tenant.remove_member(demo.ACME_ORG_ID, "auth0|bob-acme")
    tenant.add_member(demo.ACME_ORG_ID, demo.ORPHAN_USER_ID)
    ids = [member["user_id"] for member in api(MEMBERS.format(demo.ACME_ORG_ID)).json()]
    assert "auth0|bob-acme" not in ids and demo.ORPHAN_USER_ID in ids


def test_unknown_organization_is_404(api: Any) -> None:
    response = api(MEMBERS.format("org_nope"))
    assert response.status_code == 404
    assert response.json() == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "No organization found by that id or name",
        "errorCode": "inexistent_organization",
    }


def test_organization_id_longer_than_50_is_400(api: Any) -> None:
    assert api(MEMBERS.format("o" * 51)).status_code == 400


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (MEMBERS.format("org_acme"), {"unknown": "1"}),
        (MEMBERS.format("org_acme"), {"per_page": "101"}),
        (MEMBERS.format("org_acme"), {"per_page": "0"}),
        (MEMBERS.format("org_acme"), {"per_page": "ten"}),
        (MEMBERS.format("org_acme"), {"take": "101"}),
        (MEMBERS.format("org_acme"), {"include_totals": "yes"}),
        (MEMBERS.format("org_acme"), {"fields": "user_id,password"}),
        (MEMBERS.format("org_acme"), {"per_page": ["10", "20"]}),
        ("/api/v2/users/auth0%7Calice-acme", {"fields": "user_id;email"}),
        ("/api/v2/users", {"search_engine": "v9"}),
        ("/api/v2/users", {"sort": "name"}),
    ],
)
def test_queries_the_published_spec_forbids_are_400(
    api: Any, path: str, params: dict[str, Any]
) -> None:
    response = api(path, **params)
    assert response.status_code == 400
    body = response.json()
    assert body["statusCode"] == 400 and body["error"] == "Bad Request"
    assert body["errorCode"] == "invalid_query_string"
    assert body["message"].startswith("Query validation error:")


def test_user_profile_by_percent_encoded_id(api: Any) -> None:
    response = api("/api/v2/users/auth0%7Calice-acme")
    assert response.status_code == 200
    profile = response.json()
    assert profile["user_id"] == "auth0|alice-acme"
    assert profile["email"] == "alice@acme.example"
    assert profile["identities"] == [
        {
            "connection": "Username-Password-Authentication",
            "provider": "auth0",
            "user_id": "alice-acme",
            "isSocial": False,
        }
    ]
    for field in ("email_verified", "nickname", "picture", "created_at", "updated_at"):
        assert field in profile


def test_encoded_slash_stays_inside_the_user_id(api: Any, tenant: Tenant) -> None:
    tenant.add_user("auth0|a/b", "slash@example.com")
    response = api("/api/v2/users/auth0%7Ca%2Fb")
    assert response.status_code == 200
    assert response.json()["user_id"] == "auth0|a/b"
    assert tenant.requests[-1]["raw_uri"] == "/api/v2/users/auth0%7Ca%2Fb"


def test_user_fields_projection(api: Any) -> None:
    response = api("/api/v2/users/auth0%7Calice-acme", fields="user_id,email")
    assert response.json() == {"user_id": "auth0|alice-acme", "email": "alice@acme.example"}


def test_unknown_user_is_404(api: Any) -> None:
    response = api("/api/v2/users/auth0%7Cnobody")
    assert response.status_code == 404
    assert response.json() == INEXISTENT_USER


def test_user_organizations(api: Any) -> None:
    shared = api("/api/v2/users/auth0%7Cshared-consultant/organizations").json()
    assert shared == [
        {"id": "org_acme", "name": "acme", "display_name": "Acme Corp"},
        {"id": "org_globex", "name": "globex", "display_name": "Globex Inc"},
    ]
    paged = api(
        "/api/v2/users/auth0%7Cshared-consultant/organizations",
        page=1,
        per_page=1,
        include_totals="true",
    ).json()
    assert paged == {"organizations": [shared[1]], "start": 1, "limit": 1, "total": 2}
    assert api("/api/v2/users/auth0%7Corphan-olga/organizations").json() == []
    assert api("/api/v2/users/auth0%7Cnobody/organizations").json() == []


def test_deleted_user_is_gone_from_profile_listing_and_search(api: Any, tenant: Tenant) -> None:
    listed = [member["user_id"] for member in api(MEMBERS.format(demo.ACME_ORG_ID)).json()]
    assert "auth0|bob-acme" in listed
    tenant.delete_user("auth0|bob-acme")
    assert api("/api/v2/users/auth0%7Cbob-acme").json()["errorCode"] == "inexistent_user"
    listed = [member["user_id"] for member in api(MEMBERS.format(demo.ACME_ORG_ID)).json()]
    assert "auth0|bob-acme" not in listed
    assert "auth0|bob-acme" not in tenant.member_ids(demo.ACME_ORG_ID)
    assert api("/api/v2/users", q='user_id:"auth0|bob-acme"').json() == []


def test_deleting_an_unknown_user_is_a_key_error(tenant: Tenant) -> None:
    with pytest.raises(KeyError):
        tenant.delete_user("auth0|nobody")


def test_deleted_user_has_no_organizations_by_default(api: Any, tenant: Tenant) -> None:
    assert tenant.unknown_user_organizations == "empty"
    tenant.delete_user(demo.SHARED_USER_ID)
    response = api("/api/v2/users/auth0%7Cshared-consultant/organizations")
    assert response.status_code == 200
    assert response.json() == []


def test_deleted_user_organizations_answer_404_in_that_mode(api: Any, tenant: Tenant) -> None:
    tenant.unknown_user_organizations = "404"
    assert len(api("/api/v2/users/auth0%7Cshared-consultant/organizations").json()) == 2
    assert api("/api/v2/users/auth0%7Corphan-olga/organizations").json() == []
    tenant.delete_user(demo.SHARED_USER_ID)
    response = api("/api/v2/users/auth0%7Cshared-consultant/organizations")
    assert response.status_code == 404
    assert response.json() == INEXISTENT_USER


def test_unknown_user_organizations_mode_is_empty_or_404(tenant: Tenant) -> None:
    with pytest.raises(ValueError, match="not 'error'"):
        tenant.unknown_user_organizations = "error"
    assert tenant.unknown_user_organizations == "empty"


def test_users_search_by_user_id(api: Any) -> None:
    one = api("/api/v2/users", q='user_id:"auth0|alice-acme"', search_engine="v3").json()
    assert [user["user_id"] for user in one] == ["auth0|alice-acme"]
    several = api(
        "/api/v2/users",
        q='user_id:(auth0|bob-acme OR "auth0|alice-acme" OR "auth0|nobody")',
        search_engine="v3",
        include_totals="true",
        fields="user_id",
    ).json()
    assert several == {
        "users": [{"user_id": "auth0|alice-acme"}, {"user_id": "auth0|bob-acme"}],
        "start": 0,
        "limit": 50,
        "length": 2,
        "total": 2,
    }


def test_users_search_rejects_unsupported_syntax_and_deep_pages(api: Any) -> None:
    assert api("/api/v2/users", q="name:*", search_engine="v3").status_code == 400
    deep = api("/api/v2/users", page=10, per_page=100)
    assert deep.status_code == 400
    assert deep.json()["errorCode"] == "invalid_paging"


@pytest.mark.parametrize("endpoint", list(MANAGEMENT_ENDPOINTS))
def test_management_api_requires_a_valid_token(api: Any, tenant: Tenant, endpoint: str) -> None:
    path = MANAGEMENT_ENDPOINTS[endpoint]
    invalid = {
        "statusCode": 401,
        "error": "Unauthorized",
        "message": "Invalid token",
        "attributes": {"error": "Invalid token"},
    }
    assert api(path, token=None).status_code == 401
    assert api(path, token="not-a-jwt").json() == invalid
    edge_token = tenant.issue_token(demo.ACME_CLIENT_ID, demo.API_AUDIENCE)
    assert api(path, token=edge_token).json() == invalid
    foreign_key = RSAKey.generate_key(2048, parameters={"kid": tenant.signing_key.kid})
    forged = tenant.issue_token(demo.MGMT_CLIENT_ID, tenant.management_audience, key=foreign_key)
    assert api(path, token=forged).json() == invalid
    expired = tenant.issue_token(demo.MGMT_CLIENT_ID, tenant.management_audience, expires_in=-5)
    response = api(path, token=expired)
    assert response.status_code == 401
    assert response.json()["message"] == "Expired token received for JSON Web Token validation"


@pytest.mark.parametrize("endpoint", list(MANAGEMENT_ENDPOINTS))
def test_management_api_requires_the_operation_scope(
    api: Any, tenant: Tenant, endpoint: str
) -> None:
    scope = SCOPE_FOR_ENDPOINT[endpoint]
    audience = tenant.management_audience
    lacking = tenant.issue_token(demo.MGMT_CLIENT_ID, audience, scope="read:clients")
    response = api(MANAGEMENT_ENDPOINTS[endpoint], token=lacking)
    assert response.status_code == 403
    body = response.json()
    assert body["errorCode"] == "insufficient_scope"
    assert body["message"].startswith(f"Insufficient scope, expected any of: {scope}")
    sufficient = tenant.issue_token(demo.MGMT_CLIENT_ID, audience, scope=scope)
    assert api(MANAGEMENT_ENDPOINTS[endpoint], token=sufficient).status_code == 200


def test_revoked_management_tokens_are_refused_but_new_ones_work(
    api: Any, tenant: Tenant, mgmt_token: str
) -> None:
    tenant.revoke_management_tokens()
    assert api(MANAGEMENT_ENDPOINTS["user"], token=mgmt_token).status_code == 401
    fresh = tenant.issue_token(demo.MGMT_CLIENT_ID, tenant.management_audience)
    assert api(MANAGEMENT_ENDPOINTS["user"], token=fresh).status_code == 200


def test_rate_limit_answers_429_with_headers(api: Any, tenant: Tenant) -> None:
    tenant.set_rate_limit(0.5, burst=2)
    first, second, third = (api(MANAGEMENT_ENDPOINTS["user"]) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert third.headers["x-ratelimit-remaining"] == "0"
    assert int(third.headers["x-ratelimit-reset"]) >= int(time.time())
    assert int(third.headers["Retry-After"]) >= 1
    assert third.json() == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": "Global limit has been reached",
        "errorCode": "too_many_requests",
    }
    tenant.set_rate_limit(None)
    assert api(MANAGEMENT_ENDPOINTS["user"]).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("GET", "/api/v2/organizations/{id}/members", "organization_members"),
        ("GET", "/api/v2/organizations/org_acme/members?take=50", "organization_members"),
        ("GET", "/api/v2/organizations/org_acme/members/auth0%7Ca/roles", "organization_members"),
        ("GET", "/api/v2/users", "users"),
        ("GET", "/api/v2/users/{id}", "users"),
        ("GET", "/api/v2/users/auth0%7Calice-acme?fields=email", "users"),
        ("GET", "/api/v2/users-by-email", "users"),
        ("GET", "/api/v2/users/{id}/organizations", "user_organizations"),
        ("GET", "/api/v2/organizations/{id}", "organizations"),
        ("GET", "/api/v2/organizations", "organizations"),
        ("GET", "/api/v2/organizations/name/members", "organizations"),
        ("GET", "/api/v2/users/{id}/roles", "management"),
        ("PATCH", "/api/v2/users/{id}", "management"),
        ("POST", "/api/v2/organizations/{id}/members", "management"),
        ("GET", "/api/v2/clients", "management"),
        ("GET", "/api/v2", "management"),
    ],
)
def test_each_management_call_counts_against_its_endpoint_group(
    method: str, path: str, group: str
) -> None:
    assert endpoint_group(method, path) == group


def test_endpoint_groups_are_only_for_management_paths() -> None:
    with pytest.raises(ValueError):
        endpoint_group("GET", "/.well-known/jwks.json")


def test_an_unknown_plan_is_refused(tenant: Tenant) -> None:
    with pytest.raises(ValueError, match="unknown plan 'startup'"):
        tenant.enforce_plan("startup")


def calls_until_refused(api: Any, paths: list[str], at_most: int = 120) -> list[Any]:
    """Call ``paths`` in turn until the first 429 (the last answer), at most ``at_most`` times."""
    answers = []
    while len(answers) < at_most:
        answers.append(api(paths[len(answers) % len(paths)]))
        if answers[-1].status_code == 429:
            break
    return answers


def test_plan_endpoint_group_buckets_are_independent(api: Any, tenant: Tenant) -> None:
    tenant.enforce_plan("professional")
    first = api(MANAGEMENT_ENDPOINTS["members"])
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == (
        "40",
        "39",
    )
    pages = calls_until_refused(api, [MANAGEMENT_ENDPOINTS["members"]])
    refused = pages[-1]
    assert refused.status_code == 429
    # Burst 40, refilled at 500/min (one token each 0.12 s) while the pages are read.
    assert 39 <= len(pages) - 1 <= 39 + 10
    assert refused.headers["x-ratelimit-limit"] == "40"
    assert api(MANAGEMENT_ENDPOINTS["user"]).status_code == 200
    assert api(MANAGEMENT_ENDPOINTS["user organizations"]).status_code == 200


def test_plan_429_names_the_bucket_that_refused(api: Any, tenant: Tenant) -> None:
    tenant.enforce_plan("professional")
    refused = calls_until_refused(api, [MANAGEMENT_ENDPOINTS["members"]])[-1]
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit"] == "40"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) >= int(time.time())
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json() == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": "Global limit has been reached",
        "errorCode": "too_many_requests",
    }


@pytest.mark.parametrize(
    ("plan", "burst", "group_burst"), [("free", 2, None), ("enterprise", 50, 40)]
)
def test_plan_management_bucket_caps_the_sum_of_groups(
    api: Any, tenant: Tenant, plan: str, burst: int, group_burst: int | None
) -> None:
    tenant.enforce_plan(plan)
    paths = [MANAGEMENT_ENDPOINTS["members"], MANAGEMENT_ENDPOINTS["user"]]
    answers = calls_until_refused(api, paths)
    refused = answers[-1]
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit"] == str(burst)
    allowed = len(answers) - 1
    assert allowed >= burst
    if group_burst is not None:  # more than any one group's bucket would let through
        assert allowed > group_burst


def test_lifting_the_plan_lifts_its_limits(api: Any, tenant: Tenant) -> None:
    tenant.enforce_plan("free")
    assert calls_until_refused(api, [MANAGEMENT_ENDPOINTS["user"]])[-1].status_code == 429
    tenant.enforce_plan(None)
    assert tenant.plan is None
    answer = api(MANAGEMENT_ENDPOINTS["user"])
    assert answer.status_code == 200
    assert answer.headers["x-ratelimit-limit"] == "1000"


def test_the_global_rate_limit_applies_on_top_of_the_plan(api: Any, tenant: Tenant) -> None:
    tenant.enforce_plan("enterprise")
    tenant.set_rate_limit(0.5, burst=2)
    answers = [api(MANAGEMENT_ENDPOINTS["members"]) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[1].headers["x-ratelimit-remaining"] == "0"  # the tighter bucket's headers
    assert answers[2].headers["x-ratelimit-limit"] == "2"


def test_every_management_answer_carries_rate_limit_headers(api: Any) -> None:
    for response in (api(MANAGEMENT_ENDPOINTS["members"]), api("/api/v2/nope")):
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= {
            name.lower() for name in response.headers
        }


def test_injected_fault_answers_then_recovers(api: Any, tenant: Tenant) -> None:
    tenant.inject_fault("GET /api/v2/users/{id}", status=503, times=2)
    statuses = [api(MANAGEMENT_ENDPOINTS["user"]).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    tenant.inject_fault("GET /api/v2/users/{id}", status=500, body={"oops": True})
    assert api(MANAGEMENT_ENDPOINTS["user"]).json() == {"oops": True}


def test_injected_429_looks_like_a_throttled_answer(api: Any, tenant: Tenant) -> None:
    tenant.inject_fault("GET /api/v2/users/{id}", status=429)
    response = api(MANAGEMENT_ENDPOINTS["user"])
    assert response.status_code == 429
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["Retry-After"] == "1"
    assert response.json()["statusCode"] == 429


def test_injected_delay_without_status_only_slows(api: Any, tenant: Tenant) -> None:
    tenant.inject_fault("GET /api/v2/users/{id}", status=None, delay=0.3)
    started = time.monotonic()
    assert api(MANAGEMENT_ENDPOINTS["user"]).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_inject_fault_refuses_unknown_endpoints(tenant: Tenant) -> None:
    with pytest.raises(ValueError):
        tenant.inject_fault("GET /api/v2/clients")


def test_counts_and_request_log(
    server: TenantServer, http: requests.Session, api: Any, tenant: Tenant
) -> None:
    tenant.reset_counts()
    started = time.time()
    http.get(f"{server.url}/.well-known/jwks.json")
    api(MANAGEMENT_ENDPOINTS["members"])
    api(MANAGEMENT_ENDPOINTS["members"])
    api("/api/v2/users/auth0%7Cnobody")
    api("/api/v2/nope")
    assert tenant.counts == {
        "GET /.well-known/jwks.json": 1,
        "GET /api/v2/organizations/{id}/members": 2,
        "GET /api/v2/users/{id}": 1,
    }
    last = tenant.requests[-1]
    assert last == {
        "method": "GET",
        "raw_uri": "/api/v2/nope",
        "endpoint": None,
        "status": 404,
        "time": last["time"],
        "group": "management",
        "user_agent": http.headers["User-Agent"],
    }
    assert started <= last["time"] <= time.time()
    assert tenant.requests[-2]["status"] == 404
    groups = [request["group"] for request in tenant.requests]
    assert groups == [None, "organization_members", "organization_members", "users", "management"]
    tenant.reset_counts()
    assert not tenant.counts and not tenant.requests


@pytest.mark.parametrize("route", ROUTES.routes, ids=lambda route: route.endpoint)
def test_every_route_in_the_table_is_served(
    server: TenantServer, http: requests.Session, tenant: Tenant, route: Route
) -> None:
    token_request = {
        "grant_type": "client_credentials",
        "client_id": demo.MGMT_CLIENT_ID,
        "client_secret": demo.MGMT_CLIENT_SECRET,
        "audience": tenant.management_audience,
    }
    path, body = ROUTE_EXAMPLES[route.endpoint]
    tenant.event_settings.stream_seconds = 0  # the event stream ends at once
    admin_token = tenant.issue_token(
        demo.MGMT_CLIENT_ID, tenant.management_audience, scope=[*demo.MGMT_SCOPES, *ADMIN_SCOPES]
    )
    response = http.request(
        route.method,
        server.url + path,
        headers={"Authorization": f"Bearer {admin_token}"} if route.is_management else None,
        data=token_request if route.endpoint == "POST /oauth/token" else None,
        json=body,
    )
    assert response.status_code == route.status
    assert tenant.requests[-1]["endpoint"] == route.endpoint


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/v2/users"),
        ("PUT", "/api/v2/users/auth0%7Calice-acme"),
        ("POST", "/api/v2/organizations/org_acme"),
        ("GET", "/api/v2/clients"),
        ("GET", "/api/v2/users/"),
        ("GET", "/"),
    ],
)
def test_unmatched_requests_get_json_404(
    server: TenantServer, http: requests.Session, tenant: Tenant, method: str, path: str
) -> None:
    response = http.request(method, server.url + path, json={})
    assert response.status_code == 404
    assert response.json() == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "Not Found",
        "errorCode": "not_found",
    }
    assert tenant.requests[-1]["endpoint"] is None


def test_management_route_without_a_spec_operation_fails_loudly() -> None:
    unspecified = Route("GET /api/v2/clients", management.users)
    with pytest.raises(MissingOperation, match=r"'GET /api/v2/clients'.*management_api_spec"):
        RouteTable([*ROUTES.routes, unspecified], spec_operations=operations())


def test_latency_delays_every_answer(
    server: TenantServer, http: requests.Session, tenant: Tenant
) -> None:
    tenant.latency = 0.2
    started = time.monotonic()
    http.get(f"{server.url}/.well-known/jwks.json")
    assert time.monotonic() - started >= 0.2


def test_seeding_ten_thousand_members_is_fast(tenant: Tenant) -> None:
    tenant.add_organization("org_huge", "huge")
    started = time.monotonic()
    ids = tenant.seed_organization("org_huge", 10_000, "huge")
    assert time.monotonic() - started < 2.0
    assert len(ids) == 10_000 and tenant.member_ids("org_huge") == tuple(ids)


def test_proxy_config_points_at_the_running_tenant(server: TenantServer, tenant: Tenant) -> None:
    config = proxy_config(tenant)
    assert config["clients"] == {"edge-acme": "org_acme", "edge-globex": "org_globex"}
    assert config["auth0"] == {
        "domain": server.domain,
        "mgmt_client_id": "proxy-mgmt-client",
        "mgmt_client_secret": "proxy-mgmt-secret",
        "management_audience": f"https://{server.domain}/api/v2/",
        "api_audience": "https://m2m-proxy.example.com",
    }


def ignore_sigint() -> None:
    """What a shell does to a background job of a script (``make test &``, nohup)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def serve_from_command_line_then_send(
    tmp_path: Path, stop_signal: signal.Signals
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m emulated_tenant`` with SIGINT ignored, check it serves, send a signal."""
    config_path = tmp_path / "config.json"
    command = [
        sys.executable,
        "-m",
        "emulated_tenant",
        "--port",
        "0",
        "--cert-dir",
        str(tmp_path / "certs"),
        "--config-out",
        str(config_path),
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=ignore_sigint,
    )
    try:
        banner = process.stdout.readline() if process.stdout else ""
        assert "https://localhost:" in banner
        domain = json.loads(config_path.read_text())["auth0"]["domain"]
        jwks = requests.get(
            f"https://{domain}/.well-known/jwks.json",
            verify=tmp_path / "certs" / "ca.pem",
            timeout=5,
        )
        assert jwks.status_code == 200
        process.send_signal(stop_signal)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, banner + stdout, stderr)


def test_command_line_serves_demo_tenant_and_exits_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    stopped = serve_from_command_line_then_send(tmp_path, signal.SIGINT)
    assert stopped.returncode == 0
    assert "Emulated tenant stopped." in stopped.stdout
    assert "Traceback" not in stopped.stderr


def test_command_line_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    stopped = serve_from_command_line_then_send(tmp_path, signal.SIGTERM)
    assert stopped.returncode == 0
    assert "Emulated tenant stopped." in stopped.stdout
    assert "Traceback" not in stopped.stderr
