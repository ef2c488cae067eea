"""The emulated tenant's organization, invitation, role and user operations keep Auth0's promises.

Like test_emulated_tenant.py (whose fixtures these are: a fresh demo tenant and server per test),
every call is real HTTPS with certificate verification on. Answers are checked against the
response schemas of the spec excerpt the tenant serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import requests

from emulated_tenant import Tenant, TenantServer, demo
from emulated_tenant.payload import BodyViolation, check_value
from emulated_tenant.query import inline_refs, load_spec
from emulated_tenant.ratelimit import endpoint_group
from tests.test_emulated_tenant import http, mgmt_token, server, tenant  # noqa: F401 (fixtures)

ACME = "/api/v2/organizations/org_acme"
GLOBEX = "/api/v2/organizations/org_globex"
ALICE = "auth0|alice-acme"
ALICE_PATH = "/api/v2/users/auth0%7Calice-acme"
ALICE_ROLES = f"{ACME}/members/auth0%7Calice-acme/roles"
DATABASE = "Username-Password-Authentication"
NEW_INVITATION = {
    "inviter": {"name": "Alice Anders"},
    "invitee": {"email": "newcomer@acme.example"},
    "client_id": demo.PORTAL_CLIENT_ID,
}
NEW_USER = {"connection": DATABASE, "email": "Zoe@Acme.example", "password": "a long passphrase"}
NO_ORGANIZATION = {
    "statusCode": 404,
    "error": "Not Found",
    "message": "No organization found by that id or name",
    "errorCode": "inexistent_organization",
}


@dataclass(frozen=True)
class Management:
    """The test's demo tenant, and calls to its Management API with the proxy's token."""

    tenant: Tenant
    server: TenantServer
    http: requests.Session
    token: str

    def __call__(
        self, method: str, path: str, body: Any = None, token: str | None = None, **params: Any
    ) -> requests.Response:
        """A ``method`` call of ``path`` with ``body`` as JSON and ``params`` as the query."""
        return self.http.request(
            method,
            self.server.url + path,
            headers={"Authorization": f"Bearer {token or self.token}"},
            params=params or None,
            json=body,
        )

    def post_raw(self, path: str, **request: Any) -> requests.Response:
        """A POST with the body given as ``requests`` takes it (``data=...``)."""
        headers = {"Authorization": f"Bearer {self.token}", **request.pop("headers", {})}
        return self.http.post(self.server.url + path, headers=headers, **request)


@pytest.fixture
def mgmt(tenant, server, http, mgmt_token) -> Management:  # noqa: F811
    return Management(tenant, server, http, mgmt_token)


def response_schema(endpoint: str, status: str = "200") -> dict[str, Any]:
    """The answer schema the excerpt gives ``"GET /organizations/{id}"`` (refs inlined)."""
    method, path = endpoint.split(" ", 1)
    spec = load_spec()
    response = spec["paths"][path][method.lower()]["responses"]
    return inline_refs(spec, response[status]["content"]["application/json"]["schema"])


def assert_conforms(body: Any, endpoint: str, status: str = "200") -> None:
    try:
        check_value(body, response_schema(endpoint, status))
    except BodyViolation as violation:
        pytest.fail(f"{endpoint} answer breaks its schema at {violation.path!r}: {violation}")


def test_the_schema_check_catches_a_wrong_shape() -> None:
    invitation = {"id": "uinv_1", "invitee": {"email": "a@b.example"}, "status": "pending"}
    with pytest.raises(BodyViolation, match="Additional properties not allowed: status"):
        check_value(
            invitation, response_schema("GET /organizations/{id}/invitations/{invitation_id}")
        )
    with pytest.raises(BodyViolation, match="oneOf"):
        check_value(
            {"members": [{"user_id": 7}]}, response_schema("GET /organizations/{id}/members")
        )


def assert_invalid_body(response: requests.Response, message: str) -> None:
    assert response.status_code == 400
    assert response.json() == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": message,
        "errorCode": "invalid_body",
    }


def member_ids(mgmt: Management, org: str = ACME) -> list[str]:
    return [member["user_id"] for member in mgmt("GET", f"{org}/members").json()]


# --- reads -----------------------------------------------------------------------------------


def test_organization_by_id_shows_branding_and_metadata_when_set(mgmt: Management) -> None:
    acme = mgmt("GET", ACME)
    assert acme.status_code == 200
    assert acme.json() == {
        "id": "org_acme",
        "name": "acme",
        "display_name": "Acme Corp",
        "branding": {
            "logo_url": "https://acme.example/logo.png",
            "colors": {"primary": "#0059d6", "page_background": "#ffffff"},
        },
        "metadata": {"tier": "enterprise"},
    }
    assert_conforms(acme.json(), "GET /organizations/{id}")
    globex = mgmt("GET", GLOBEX).json()
    assert globex == {"id": "org_globex", "name": "globex", "display_name": "Globex Inc"}


def test_unknown_organization_by_id_is_404(mgmt: Management) -> None:
    response = mgmt("GET", "/api/v2/organizations/org_nope")
    assert response.status_code == 404
    assert response.json() == NO_ORGANIZATION
    assert mgmt("GET", "/api/v2/organizations/acme").status_code == 404  # a name is not an id


def test_member_roles_are_listed_by_name_and_paged(mgmt: Management) -> None:
    roles = mgmt("GET", ALICE_ROLES)
    assert roles.status_code == 200
    assert roles.json() == [
        {"id": "rol_editor", "name": "Editor", "description": "Updates the organization's users"},
        {"id": "rol_viewer", "name": "Viewer", "description": "Reads the organization's users"},
    ]
    assert_conforms(roles.json(), "GET /organizations/{id}/members/{user_id}/roles")
    page = mgmt("GET", ALICE_ROLES, page=1, per_page=1, include_totals="true").json()
    assert page == {"roles": [roles.json()[1]], "start": 1, "limit": 1, "total": 2}
    assert_conforms(page, "GET /organizations/{id}/members/{user_id}/roles")


def test_member_roles_belong_to_one_organization(mgmt: Management) -> None:
    shared = "/members/auth0%7Cshared-consultant/roles"
    assert [role["id"] for role in mgmt("GET", ACME + shared).json()] == ["rol_viewer"]
    assert [role["id"] for role in mgmt("GET", GLOBEX + shared).json()] == ["rol_viewer"]
    frank = "/members/auth0%7Cfrank-globex/roles"
    assert [role["id"] for role in mgmt("GET", GLOBEX + frank).json()] == ["rol_admin"]
    assert mgmt("GET", ACME + frank).json() == []  # not a member of Acme: no roles there


def test_member_roles_of_an_unknown_organization_is_404(mgmt: Management) -> None:
    response = mgmt("GET", "/api/v2/organizations/org_nope/members/auth0%7Calice-acme/roles")
    assert response.status_code == 404
    assert response.json() == NO_ORGANIZATION


def test_member_listing_shows_roles_of_that_organization_when_asked(mgmt: Management) -> None:
    members = mgmt("GET", f"{GLOBEX}/members", fields="user_id,roles").json()
    assert members == [
        {"user_id": "auth0|frank-globex", "roles": [{"id": "rol_admin", "name": "Admin"}]},
        {"user_id": "auth0|grace-globex", "roles": []},
        {"user_id": "auth0|hank-globex", "roles": []},
        {"user_id": "auth0|shared-consultant", "roles": [{"id": "rol_viewer", "name": "Viewer"}]},
    ]
    assert_conforms(members, "GET /organizations/{id}/members")
    checkpoint = mgmt("GET", f"{GLOBEX}/members", take=1, fields="roles,user_id").json()
    assert checkpoint["members"] == [members[0]]
    assert "roles" not in mgmt("GET", f"{GLOBEX}/members").json()[0]


def test_invitations_are_newest_first_unless_sorted(mgmt: Management) -> None:
    newest_first = mgmt("GET", f"{ACME}/invitations")
    assert newest_first.status_code == 200
    body = newest_first.json()
    assert [invitation["id"] for invitation in body] == [
        "uinv_acme0000000002",
        "uinv_acme0000000001",
    ]
    assert_conforms(body, "GET /organizations/{id}/invitations")
    oldest_first = mgmt("GET", f"{ACME}/invitations", sort="created_at:1").json()
    assert oldest_first == body[::-1]


def test_invitation_shape(mgmt: Management) -> None:
    invitation = mgmt("GET", f"{ACME}/invitations/uinv_acme0000000001")
    assert invitation.status_code == 200
    assert invitation.json() == {
        "id": "uinv_acme0000000001",
        "organization_id": "org_acme",
        "inviter": {"name": "Alice Anders"},
        "invitee": {"email": "new.hire@acme.example"},
        "invitation_url": "https://app.example.com/login?invitation=ticket-acme0000000001"
        "&organization=org_acme&organization_name=acme",
        "created_at": "2024-01-10T09:00:00.000Z",
        "expires_at": "2024-01-17T09:00:00.000Z",
        "client_id": demo.PORTAL_CLIENT_ID,
        "connection_id": "con_database",
        "app_metadata": {},
        "user_metadata": {},
        "roles": ["rol_viewer"],
        "ticket_id": "ticket-acme0000000001",
    }
    assert_conforms(invitation.json(), "GET /organizations/{id}/invitations/{invitation_id}")


def test_invitations_fields_and_paging(mgmt: Management) -> None:
    only = mgmt("GET", f"{ACME}/invitations", fields="id,invitee").json()
    assert only == [
        {"id": "uinv_acme0000000002", "invitee": {"email": "contractor@partner.example"}},
        {"id": "uinv_acme0000000001", "invitee": {"email": "new.hire@acme.example"}},
    ]
    without = mgmt("GET", f"{ACME}/invitations", fields="invitation_url", include_fields="false")
    assert all("invitation_url" not in invitation for invitation in without.json())
    assert "ticket_id" in without.json()[0]
    page = mgmt("GET", f"{ACME}/invitations", page=1, per_page=1, include_totals="true").json()
    # Auth0 does not count invitations: the page has no total (nor does the spec's schema).
    assert page.keys() == {"invitations", "start", "limit"}
    assert (page["start"], page["limit"]) == (1, 1)
    assert [invitation["id"] for invitation in page["invitations"]] == ["uinv_acme0000000001"]
    assert_conforms(page, "GET /organizations/{id}/invitations")
    one = mgmt("GET", f"{ACME}/invitations/uinv_acme0000000001", fields="roles").json()
    assert one == {"roles": ["rol_viewer"]}


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (f"{ACME}/invitations", {"sort": "expires_at:1"}),
        (f"{ACME}/invitations", {"fields": "id,password"}),
        (f"{ACME}/invitations", {"include_totals": "maybe"}),
        (f"{ACME}/enabled_connections", {"per_page": "101"}),
        (ALICE_ROLES, {"fields": "id"}),
        ("/api/v2/users-by-email", {"email": "a@b.example", "fields": "password"}),
    ],
)
def test_new_reads_refuse_queries_the_spec_forbids(
    mgmt: Management, path: str, params: dict[str, str]
) -> None:
    response = mgmt("GET", path, **params)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_query_string"


def test_unknown_invitation_is_404(mgmt: Management) -> None:
    unknown = mgmt("GET", f"{ACME}/invitations/uinv_nope")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "The invitation does not exist.",
        "errorCode": "inexistent_invitation",
    }
    other_org = mgmt("GET", f"{ACME}/invitations/uinv_globex00000001")
    assert other_org.json() == unknown.json()
    no_org = mgmt("GET", "/api/v2/organizations/org_nope/invitations/uinv_acme0000000001")
    assert no_org.json() == NO_ORGANIZATION
    assert mgmt("GET", "/api/v2/organizations/org_nope/invitations").json() == NO_ORGANIZATION


def test_enabled_connections(mgmt: Management) -> None:
    connections = mgmt("GET", f"{ACME}/enabled_connections")
    assert connections.status_code == 200
    assert connections.json() == [
        {
            "connection_id": "con_database",
            "assign_membership_on_login": False,
            "show_as_button": True,
            "is_signup_enabled": False,
            "connection": {"name": DATABASE, "strategy": "auth0"},
        },
        {
            "connection_id": "con_google",
            "assign_membership_on_login": False,
            "show_as_button": True,
            "is_signup_enabled": False,
            "connection": {"name": "google-oauth2", "strategy": "google-oauth2"},
        },
    ]
    assert_conforms(connections.json(), "GET /organizations/{id}/enabled_connections")
    page = mgmt("GET", f"{ACME}/enabled_connections", per_page=1, include_totals="true").json()
    assert page == {
        "enabled_connections": connections.json()[:1],
        "start": 0,
        "limit": 1,
        "total": 2,
    }
    assert_conforms(page, "GET /organizations/{id}/enabled_connections")
    missing = mgmt("GET", "/api/v2/organizations/org_nope/enabled_connections")
    assert missing.json() == NO_ORGANIZATION


def test_enabled_connections_show_their_settings(mgmt: Management) -> None:
    mgmt.tenant.add_connection("con_enterprise00001", "acme-okta", strategy="okta")
    mgmt.tenant.enable_connection(
        demo.ACME_ORG_ID,
        "con_enterprise00001",
        assign_membership_on_login=True,
        show_as_button=False,
        is_signup_enabled=True,
    )
    last = mgmt("GET", f"{ACME}/enabled_connections").json()[-1]
    assert last == {
        "connection_id": "con_enterprise00001",
        "assign_membership_on_login": True,
        "show_as_button": False,
        "is_signup_enabled": True,
        "connection": {"name": "acme-okta", "strategy": "okta"},
    }


def test_users_by_email_match_exactly_and_case_sensitively(mgmt: Management) -> None:
    found = mgmt("GET", "/api/v2/users-by-email", email="alice@acme.example")
    assert found.status_code == 200
    assert [profile["user_id"] for profile in found.json()] == [ALICE]
    assert found.json()[0] == mgmt("GET", ALICE_PATH).json()  # the full profile
    assert_conforms(found.json(), "GET /users-by-email")
    assert mgmt("GET", "/api/v2/users-by-email", email="Alice@Acme.example").json() == []
    assert mgmt("GET", "/api/v2/users-by-email", email="alice@acme").json() == []
    projected = mgmt(
        "GET", "/api/v2/users-by-email", email="alice@acme.example", fields="user_id,email"
    )
    assert projected.json() == [{"user_id": ALICE, "email": "alice@acme.example"}]


def test_users_by_email_requires_the_email(mgmt: Management) -> None:
    response = mgmt("GET", "/api/v2/users-by-email")
    assert response.status_code == 400
    assert response.json() == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "Query validation error: 'Missing required property: email'.",
        "errorCode": "invalid_query_string",
    }


def test_users_by_email_lists_every_connection(mgmt: Management) -> None:
    mgmt.tenant.add_user("google-oauth2|alice", "alice@acme.example", "Alice (Google)")
    found = mgmt("GET", "/api/v2/users-by-email", email="alice@acme.example").json()
    assert [profile["user_id"] for profile in found] == [ALICE, "google-oauth2|alice"]


# --- invitations ---------------------------------------------------------------------------


def test_creating_an_invitation_answers_201_with_it(mgmt: Management) -> None:
    body = {
        **NEW_INVITATION,
        "connection_id": "con_database",
        "roles": ["rol_viewer", "rol_editor"],
        "app_metadata": {"plan": "trial"},
        "user_metadata": {"locale": "fr"},
        "ttl_sec": 3600,
        "send_invitation_email": False,
    }
    response = mgmt("POST", f"{ACME}/invitations", body)
    assert response.status_code == 201
    created = response.json()
    assert_conforms(created, "POST /organizations/{id}/invitations")
    assert created["id"].startswith("uinv_")
    assert created["organization_id"] == "org_acme"
    assert created["inviter"] == {"name": "Alice Anders"}
    assert created["invitee"] == {"email": "newcomer@acme.example"}
    assert created["roles"] == ["rol_viewer", "rol_editor"]
    assert created["app_metadata"] == {"plan": "trial"}
    assert created["user_metadata"] == {"locale": "fr"}
    assert created["invitation_url"].startswith("https://")
    assert f"invitation={created['ticket_id']}" in created["invitation_url"]
    assert lifetime(created) == 3600
    assert mgmt("GET", f"{ACME}/invitations/{created['id']}").json() == created
    assert mgmt("GET", f"{ACME}/invitations").json()[0] == created  # the newest


def test_an_invitation_lives_seven_days_by_default(mgmt: Management) -> None:
    created = mgmt("POST", f"{ACME}/invitations", NEW_INVITATION).json()
    assert lifetime(created) == 7 * 86_400
    assert "roles" not in created and "connection_id" not in created


def lifetime(invitation: dict[str, Any]) -> float:
    created, expires = (
        datetime.fromisoformat(invitation[name].replace("Z", "+00:00"))
        for name in ("created_at", "expires_at")
    )
    return (expires - created).total_seconds()


@pytest.mark.parametrize(
    ("org", "changes", "status", "error_code", "message"),
    [
        (
            "org_nope",
            {},
            404,
            "inexistent_organization",
            "No organization found by that id or name",
        ),
        (
            "org_acme",
            {"client_id": "nobody"},
            404,
            "inexistent_client",
            "The client does not exist",
        ),
        (
            "org_acme",
            {"connection_id": "con_nope"},
            400,
            "invalid_body",
            "The connection is not enabled for this organization.",
        ),
        (
            "org_acme",
            {"roles": ["rol_nope"]},
            400,
            "invalid_body",
            "One or more roles do not exist.",
        ),
    ],
)
def test_invitations_refuse_unknown_references(
    mgmt: Management, org: str, changes: dict, status: int, error_code: str, message: str
) -> None:
    response = mgmt("POST", f"/api/v2/organizations/{org}/invitations", NEW_INVITATION | changes)
    assert response.status_code == status
    assert response.json() == {
        "statusCode": status,
        "error": "Not Found" if status == 404 else "Bad Request",
        "message": message,
        "errorCode": error_code,
    }
    assert len(mgmt("GET", f"{ACME}/invitations").json()) == 2


def test_an_invitation_through_a_connection_not_enabled_for_the_org_is_400(
    mgmt: Management,
) -> None:
    mgmt.tenant.add_connection("con_globex_only0001", "globex-db")
    mgmt.tenant.enable_connection(demo.GLOBEX_ORG_ID, "con_globex_only0001")
    body = NEW_INVITATION | {"connection_id": "con_globex_only0001"}
    assert mgmt("POST", f"{ACME}/invitations", body).status_code == 400
    assert mgmt("POST", f"{GLOBEX}/invitations", body).status_code == 201


# --- body validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        (
            "POST",
            f"{ACME}/invitations",
            {"inviter": {"name": "A"}, "client_id": "c"},
            "Payload validation error: 'Missing required property: invitee'.",
        ),
        (
            "POST",
            f"{ACME}/invitations",
            NEW_INVITATION | {"expires": "never"},
            "Payload validation error: 'Additional properties not allowed: expires'.",
        ),
        (
            "POST",
            f"{ACME}/invitations",
            NEW_INVITATION | {"invitee": {}},
            "Payload validation error: 'Missing required property: email' on property invitee.",
        ),
        (
            "POST",
            f"{ACME}/invitations",
            NEW_INVITATION | {"invitee": {"email": 42}},
            "Payload validation error: 'Expected type string but found type integer' "
            "on property invitee.email.",
        ),
        (
            "POST",
            f"{ACME}/invitations",
            NEW_INVITATION | {"invitee": {"email": "not-an-address"}},
            "Payload validation error: 'Object didn't pass validation for format email: "
            "not-an-address' on property invitee.email.",
        ),
        (
            "POST",
            f"{ACME}/invitations",
            NEW_INVITATION | {"inviter": {"name": ""}},
            "Payload validation error: 'String is too short (0 chars), minimum 1' "
            "on property inviter.name.",
        ),
        (
            "POST",
            f"{ACME}/invitations",
            NEW_INVITATION | {"ttl_sec": 2_592_001},
            "Payload validation error: 'Value 2592001 is greater than maximum 2592000' "
            "on property ttl_sec.",
        ),
        (
            "POST",
            f"{ACME}/invitations",
            NEW_INVITATION | {"send_invitation_email": "yes"},
            "Payload validation error: 'Expected type boolean but found type string' "
            "on property send_invitation_email.",
        ),
        (
            "POST",
            ALICE_ROLES,
            {"roles": []},
            "Payload validation error: 'Array is too short (0), minimum 1' on property roles.",
        ),
        (
            "DELETE",
            ALICE_ROLES,
            {"roles": ["rol_viewer", 7]},
            "Payload validation error: 'Expected type string but found type integer' "
            "on property roles[1].",
        ),
        (
            "POST",
            ALICE_ROLES,
            {"roles": ["rol_viewer"], "organization": "org_globex"},
            "Payload validation error: 'Additional properties not allowed: organization'.",
        ),
        (
            "POST",
            f"{ACME}/members",
            {"users": [ALICE]},
            "Payload validation error: 'Missing required property: members'.",
        ),
        (
            "DELETE",
            f"{ACME}/members",
            {"members": "auth0|bob-acme"},
            "Payload validation error: 'Expected type array but found type string' "
            "on property members.",
        ),
        (
            "POST",
            "/api/v2/users",
            {"email": "x@acme.example", "password": "p"},
            "Payload validation error: 'Missing required property: connection'.",
        ),
        (
            "POST",
            "/api/v2/users",
            NEW_USER | {"phone_number": "555-0100"},
            "Payload validation error: 'String does not match pattern ^\\+[0-9]{1,15}$: "
            "555-0100' on property phone_number.",
        ),
        (
            "POST",
            "/api/v2/users",
            NEW_USER | {"roles": ["rol_admin"]},
            "Payload validation error: 'Additional properties not allowed: roles'.",
        ),
        (
            "PATCH",
            ALICE_PATH,
            {"name": 7},
            "Payload validation error: 'Expected type string,null but found type integer' "
            "on property name.",
        ),
        (
            "PATCH",
            ALICE_PATH,
            {"user_metadata": ["not", "an", "object"]},
            "Payload validation error: 'Expected type object but found type array' "
            "on property user_metadata.",
        ),
        (
            "PATCH",
            ALICE_PATH,
            None,
            "Payload validation error: 'Expected type object but found type null'.",
        ),
    ],
)
def test_bodies_the_spec_forbids_are_400_and_change_nothing(
    mgmt: Management,
    method: str,
    path: str,
    body: Any,
    message: str,
) -> None:
    before = snapshot(mgmt.tenant)
    assert_invalid_body(mgmt(method, path, body), message)
    assert snapshot(mgmt.tenant) == before


def snapshot(state: Tenant) -> Any:
    """Everything the writes may change, to prove a refused one changed nothing."""
    return (
        state.user_profiles(),
        [state.member_ids(org) for org in demo.ORGANIZATIONS],
        [state.invitations(org) for org in demo.ORGANIZATIONS],
        [state.member_roles(org, ALICE) for org in demo.ORGANIZATIONS],
    )


def test_a_body_that_is_not_json_is_400(mgmt: Management) -> None:
    response = mgmt.post_raw(
        f"{ACME}/members", data="{members: [", headers={"Content-Type": "application/json"}
    )
    assert_invalid_body(response, "Invalid request payload JSON format")


def test_a_form_body_is_validated_like_json(mgmt: Management) -> None:
    form = {"connection": DATABASE, "email": "form@acme.example", "password": "pass phrase"}
    response = mgmt.post_raw("/api/v2/users", data=form)
    assert response.status_code == 201
    assert response.json()["email"] == "form@acme.example"
    refused = mgmt.post_raw(f"{ACME}/members", data={"members": ALICE})
    assert_invalid_body(
        refused,
        "Payload validation error: 'Expected type array but found type string' "
        "on property members.",
    )


# --- members and their roles ---------------------------------------------------------------


def test_adding_members_answers_204_and_they_are_members(mgmt: Management) -> None:
    response = mgmt("POST", f"{ACME}/members", {"members": [demo.ORPHAN_USER_ID, ALICE]})
    assert response.status_code == 204
    assert response.content == b"" and "Content-Type" not in response.headers
    assert demo.ORPHAN_USER_ID in member_ids(mgmt)
    organizations = mgmt("GET", "/api/v2/users/auth0%7Corphan-olga/organizations").json()
    assert [organization["id"] for organization in organizations] == ["org_acme"]


def test_adding_an_unknown_user_adds_no_one(mgmt: Management) -> None:
    body = {"members": [demo.ORPHAN_USER_ID, "auth0|nobody"]}
    assert_invalid_body(mgmt("POST", f"{ACME}/members", body), "One or more users do not exist.")
    assert demo.ORPHAN_USER_ID not in member_ids(mgmt)


def test_removing_members_answers_204_and_drops_their_roles(mgmt: Management) -> None:
    response = mgmt("DELETE", f"{ACME}/members", {"members": [ALICE, "auth0|frank-globex"]})
    assert response.status_code == 204
    assert ALICE not in member_ids(mgmt)
    assert "auth0|frank-globex" in member_ids(mgmt, GLOBEX)  # another org's member: untouched
    assert mgmt("POST", f"{ACME}/members", {"members": [ALICE]}).status_code == 204
    assert mgmt("GET", ALICE_ROLES).json() == []  # back as a member, without the old roles


def test_member_writes_to_an_unknown_organization_are_404(mgmt: Management) -> None:
    for method in ("POST", "DELETE"):
        response = mgmt(method, "/api/v2/organizations/org_nope/members", {"members": [ALICE]})
        assert response.status_code == 404
        assert response.json() == NO_ORGANIZATION


def test_assigning_and_removing_member_roles(mgmt: Management) -> None:
    assigned = mgmt("POST", ALICE_ROLES, {"roles": ["rol_admin", "rol_viewer"]})
    assert assigned.status_code == 204
    assert [role["id"] for role in mgmt("GET", ALICE_ROLES).json()] == [
        "rol_admin",
        "rol_editor",
        "rol_viewer",
    ]
    removed = mgmt("DELETE", ALICE_ROLES, {"roles": ["rol_editor", "rol_viewer"]})
    assert removed.status_code == 204
    assert [role["id"] for role in mgmt("GET", ALICE_ROLES).json()] == ["rol_admin"]
    # Removing a role the member does not hold (or that does not exist) is not an error.
    assert mgmt("DELETE", ALICE_ROLES, {"roles": ["rol_viewer", "rol_nope"]}).status_code == 204
    shared = "/members/auth0%7Cshared-consultant/roles"
    assert [role["id"] for role in mgmt("GET", GLOBEX + shared).json()] == ["rol_viewer"]


def test_member_role_writes_refuse_non_members_and_unknown_roles(mgmt: Management) -> None:
    frank = f"{ACME}/members/auth0%7Cfrank-globex/roles"
    for method in ("POST", "DELETE"):
        refused = mgmt(method, frank, {"roles": ["rol_viewer"]})
        assert_invalid_body(refused, "The user is not a member of the organization.")
    unknown = mgmt("POST", ALICE_ROLES, {"roles": ["rol_admin", "rol_nope"]})
    assert_invalid_body(unknown, "One or more roles do not exist.")
    assert [role["id"] for role in mgmt("GET", ALICE_ROLES).json()] == ["rol_editor", "rol_viewer"]
    no_org = "/api/v2/organizations/org_nope/members/auth0%7Calice-acme/roles"
    assert mgmt("POST", no_org, {"roles": ["rol_viewer"]}).json() == NO_ORGANIZATION


# --- users ---------------------------------------------------------------------------------


def test_updating_a_user_answers_the_full_updated_profile(mgmt: Management) -> None:
    before = mgmt("GET", ALICE_PATH).json()
    response = mgmt(
        "PATCH",
        ALICE_PATH,
        {"name": "Alice B. Anders", "email": "Alice.B@Acme.example", "blocked": True},
    )
    assert response.status_code == 200
    updated = response.json()
    assert_conforms(updated, "PATCH /users/{id}")
    assert updated["name"] == "Alice B. Anders"
    assert updated["email"] == "alice.b@acme.example"  # a database user's email: lower case
    assert updated["blocked"] is True
    assert updated["updated_at"] > before["updated_at"]
    assert updated["created_at"] == before["created_at"]
    assert updated == mgmt("GET", ALICE_PATH).json()
    found = mgmt("GET", "/api/v2/users-by-email", email="alice.b@acme.example").json()
    assert [profile["user_id"] for profile in found] == [ALICE]


def test_metadata_is_merged_at_the_top_level(mgmt: Management) -> None:
    first = {
        "app_metadata": {"plan": "pro", "flags": {"beta": True, "dark": True}},
        "user_metadata": {"theme": "dark", "locale": "en"},
    }
    assert mgmt("PATCH", ALICE_PATH, first).status_code == 200
    second = {"app_metadata": {"plan": None, "flags": {"beta": False}, "seats": 5}}
    profile = mgmt("PATCH", ALICE_PATH, second).json()
    # Top-level keys merge, null deletes one, a nested object is replaced whole.
    assert profile["app_metadata"] == {"flags": {"beta": False}, "seats": 5}
    assert profile["user_metadata"] == {"theme": "dark", "locale": "en"}
    cleared = mgmt("PATCH", ALICE_PATH, {"user_metadata": {}}).json()
    assert cleared["user_metadata"] == {}  # an empty object removes the metadata
    assert cleared["app_metadata"] == {"flags": {"beta": False}, "seats": 5}


def test_null_removes_a_root_attribute_and_unknown_ones_are_ignored(mgmt: Management) -> None:
    given = mgmt("PATCH", ALICE_PATH, {"given_name": "Alice", "family_name": "Anders"}).json()
    assert (given["given_name"], given["family_name"]) == ("Alice", "Anders")
    # The spec allows other properties (additionalProperties: true); they are not stored.
    removed = mgmt("PATCH", ALICE_PATH, {"given_name": None, "favourite_colour": "red"}).json()
    assert "given_name" not in removed and "favourite_colour" not in removed
    assert removed["family_name"] == "Anders"


def test_updating_an_unknown_user_is_404(mgmt: Management) -> None:
    response = mgmt("PATCH", "/api/v2/users/auth0%7Cnobody", {"name": "Nobody"})
    assert response.status_code == 404
    assert response.json() == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "The user does not exist.",
        "errorCode": "inexistent_user",
    }


def test_creating_a_user_answers_201_with_the_profile(mgmt: Management) -> None:
    body = NEW_USER | {
        "name": "Zoe Zimmer",
        "given_name": "Zoe",
        "user_metadata": {"locale": "de"},
        "app_metadata": {"plan": "trial"},
    }
    response = mgmt("POST", "/api/v2/users", body)
    assert response.status_code == 201
    profile = response.json()
    assert_conforms(profile, "POST /users", "201")
    provider, _, generated = profile["user_id"].partition("|")
    assert provider == "auth0" and len(generated) == 24
    assert profile["email"] == "zoe@acme.example"  # stored in lower case
    assert profile["email_verified"] is False
    assert (profile["name"], profile["given_name"], profile["nickname"]) == (
        "Zoe Zimmer",
        "Zoe",
        "zoe",
    )
    assert profile["identities"] == [
        {"connection": DATABASE, "provider": "auth0", "user_id": generated, "isSocial": False}
    ]
    assert profile["user_metadata"] == {"locale": "de"}
    assert profile["app_metadata"] == {"plan": "trial"}
    assert profile["created_at"] == profile["updated_at"]
    assert "last_login" not in profile and "logins_count" not in profile
    assert "password" not in profile
    user_path = "/api/v2/users/auth0%7C" + generated
    assert mgmt("GET", user_path).json() == profile
    by_email = mgmt("GET", "/api/v2/users-by-email", email="zoe@acme.example").json()
    assert by_email == [profile]


def test_a_user_created_with_an_id_keeps_it(mgmt: Management) -> None:
    profile = mgmt("POST", "/api/v2/users", NEW_USER | {"user_id": "zoe-1"}).json()
    assert profile["user_id"] == "auth0|zoe-1"
    assert profile["name"] == "zoe@acme.example"  # Auth0 names a user by the email by default


@pytest.mark.parametrize(
    "body",
    [
        NEW_USER | {"email": "ALICE@acme.example"},  # alice@acme.example, in the same connection
        NEW_USER | {"user_id": "alice-acme"},  # auth0|alice-acme
    ],
)
def test_creating_an_existing_user_is_409(mgmt: Management, body: dict[str, Any]) -> None:
    response = mgmt("POST", "/api/v2/users", body)
    assert response.status_code == 409
    assert response.json() == {
        "statusCode": 409,
        "error": "Conflict",
        "message": "The user already exists.",
        "errorCode": "auth0_idp_error",
    }


def test_the_same_email_in_another_connection_is_another_user(mgmt: Management) -> None:
    mgmt.tenant.add_connection("con_partners0000001", "Partners")
    response = mgmt("POST", "/api/v2/users", NEW_USER | {"connection": "Partners"})
    assert response.status_code == 201
    assert response.json()["identities"][0]["connection"] == "Partners"
    assert mgmt("POST", "/api/v2/users", NEW_USER | {"connection": "Partners"}).status_code == 409


@pytest.mark.parametrize(
    ("body", "message", "error_code"),
    [
        (
            NEW_USER | {"connection": "Nope"},
            "The connection does not exist.",
            "inexistent_connection",
        ),
        (
            NEW_USER | {"connection": "google-oauth2"},
            "Users can only be created in database or passwordless connections.",
            "operation_not_supported",
        ),
        (
            {"connection": DATABASE, "email": "x@acme.example"},
            "Payload validation error: 'Missing required property: password'.",
            "invalid_body",
        ),
        (
            {"connection": DATABASE, "password": "a long passphrase"},
            "Payload validation error: 'Missing required property: email'.",
            "invalid_body",
        ),
    ],
)
def test_creating_a_user_outside_a_database_connection_or_incomplete_is_400(
    mgmt: Management, body: dict[str, Any], message: str, error_code: str
) -> None:
    response = mgmt("POST", "/api/v2/users", body)
    assert response.status_code == 400
    assert response.json() == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": message,
        "errorCode": error_code,
    }


def test_deleting_a_user_removes_memberships_and_roles(mgmt: Management) -> None:
    response = mgmt("DELETE", "/api/v2/users/auth0%7Cshared-consultant")
    assert response.status_code == 204
    assert response.content == b""
    assert mgmt("GET", "/api/v2/users/auth0%7Cshared-consultant").status_code == 404
    assert demo.SHARED_USER_ID not in member_ids(mgmt) + member_ids(mgmt, GLOBEX)
    assert mgmt.tenant.member_roles(demo.GLOBEX_ORG_ID, demo.SHARED_USER_ID) == []


def test_deleting_an_unknown_user_is_204_too(mgmt: Management) -> None:
    # The spec lists no 404 for DELETE /users/{id}.
    assert mgmt("DELETE", "/api/v2/users/auth0%7Cnobody").status_code == 204


# --- scopes, counting and rate-limit groups ------------------------------------------------

NEW_OPERATIONS = [
    ("POST", f"{ACME}/invitations", NEW_INVITATION, "create:organization_invitations"),
    ("POST", f"{ACME}/members", {"members": [ALICE]}, "create:organization_members"),
    ("DELETE", f"{ACME}/members", {"members": [ALICE]}, "delete:organization_members"),
    ("POST", ALICE_ROLES, {"roles": ["rol_admin"]}, "create:organization_member_roles"),
    ("DELETE", ALICE_ROLES, {"roles": ["rol_viewer"]}, "delete:organization_member_roles"),
    ("PATCH", ALICE_PATH, {"name": "X"}, "update:users"),
    ("POST", "/api/v2/users", NEW_USER, "create:users"),
    ("DELETE", ALICE_PATH, None, "delete:users"),
    ("GET", ACME, None, "read:organizations"),
    ("GET", ALICE_ROLES, None, "read:organization_member_roles"),
    ("GET", f"{ACME}/invitations", None, "read:organization_invitations"),
    ("GET", f"{ACME}/enabled_connections", None, "read:organization_connections"),
    ("GET", "/api/v2/users-by-email?email=alice%40acme.example", None, "read:users"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"),
    NEW_OPERATIONS,
    ids=[f"{method} {path}" for method, path, _, _ in NEW_OPERATIONS],
)
def test_each_new_operation_requires_its_scope(
    mgmt: Management,
    method: str,
    path: str,
    body: Any,
    scope: str,
) -> None:
    audience = mgmt.tenant.management_audience
    before = snapshot(mgmt.tenant)
    lacking = mgmt.tenant.issue_token(demo.MGMT_CLIENT_ID, audience, scope="read:clients")
    refused = mgmt(method, path, body, token=lacking)
    assert refused.status_code == 403
    assert refused.json()["errorCode"] == "insufficient_scope"
    assert refused.json()["message"].startswith(f"Insufficient scope, expected any of: {scope}")
    assert snapshot(mgmt.tenant) == before
    assert scope in demo.MGMT_SCOPES
    sufficient = mgmt.tenant.issue_token(demo.MGMT_CLIENT_ID, audience, scope=scope)
    assert mgmt(method, path, body, token=sufficient).status_code in (200, 201, 204)


def test_writes_are_counted_and_logged(mgmt: Management) -> None:
    mgmt.tenant.reset_counts()
    mgmt("POST", f"{ACME}/members", {"members": [demo.ORPHAN_USER_ID]})
    mgmt("POST", f"{ACME}/members", {"members": []})
    mgmt("PATCH", ALICE_PATH, {"name": "Alice"})
    assert mgmt.tenant.counts == {
        "POST /api/v2/organizations/{id}/members": 2,
        "PATCH /api/v2/users/{id}": 1,
    }
    logged = [(r["method"], r["status"], r["group"]) for r in mgmt.tenant.requests]
    assert logged == [
        ("POST", 204, "management"),
        ("POST", 400, "management"),
        ("PATCH", 200, "management"),
    ]


def test_faults_can_be_injected_into_writes(mgmt: Management) -> None:
    mgmt.tenant.inject_fault("POST /api/v2/users", status=503)
    assert mgmt("POST", "/api/v2/users", NEW_USER).status_code == 503
    assert mgmt("GET", "/api/v2/users-by-email", email="zoe@acme.example").json() == []
    assert mgmt("POST", "/api/v2/users", NEW_USER).status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("GET", "/api/v2/organizations/org_acme", "organizations"),
        ("GET", "/api/v2/organizations/org_acme/invitations", "organizations"),
        ("GET", "/api/v2/organizations/org_acme/invitations/uinv_1", "organizations"),
        ("GET", "/api/v2/organizations/org_acme/enabled_connections", "organizations"),
        ("GET", "/api/v2/organizations/{id}/members/{user_id}/roles", "organization_members"),
        ("GET", "/api/v2/users-by-email?email=a%40b.example", "users"),
        ("POST", "/api/v2/organizations/{id}/invitations", "management"),
        ("POST", "/api/v2/organizations/{id}/members/{user_id}/roles", "management"),
        ("DELETE", "/api/v2/organizations/{id}/members", "management"),
        ("POST", "/api/v2/users", "management"),
        ("DELETE", "/api/v2/users/{id}", "management"),
    ],
)
def test_new_operations_count_against_their_endpoint_group(
    method: str, path: str, group: str
) -> None:
    assert endpoint_group(method, path) == group


def test_the_acme_admin_client_may_write_for_acme_only(mgmt: Management) -> None:
    def admin_token(organization: str) -> requests.Response:
        request = {
            "grant_type": "client_credentials",
            "client_id": demo.ACME_ADMIN_CLIENT_ID,
            "client_secret": demo.ACME_ADMIN_CLIENT_SECRET,
            "audience": demo.API_AUDIENCE,
            "organization": organization,
        }
        return mgmt.http.post(f"{mgmt.server.url}/oauth/token", data=request)

    acme = admin_token(demo.ACME_ORG_ID)
    assert acme.status_code == 200
    assert acme.json()["scope"].split() == ["read:users", *demo.WRITE_SCOPES]
    assert admin_token(demo.GLOBEX_ORG_ID).status_code == 400
    assert set(demo.WRITE_SCOPES) <= set(mgmt.tenant.api(demo.API_AUDIENCE).scopes)
