"""The official Auth0 Python SDK works through the proxy, for one organization, unchanged.

Each test points ``auth0.management.ManagementClient`` at the proxy exactly as an edge server
would: the proxy's host:port as the domain and an M2M token for the proxy's API as the token.
The SDK speaks HTTPS only, so gunicorn serves TLS itself (``--certfile``/``--keyfile``) and the
SDK trusts the test CA through ``SSL_CERT_FILE``, as it would a private CA in production. Every
answer is also checked against Auth0's published schema for it (tests/auth0_schemas.json).

The SDK's organization is one of its own (``org_sdk``), so writes change nothing other tests
count on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from auth0.management import ManagementClient
from auth0.management.core.api_error import ApiError
from auth0.management.errors import BadRequestError, ForbiddenError, NotFoundError

from emulated_tenant.certs import generate_certificates
from emulated_tenant.demo import API_AUDIENCE, WRITE_SCOPES
from scripts.proxy_server import ProxyServer
from tests.support import proxy_config_for

SCHEMAS = json.loads(Path(__file__).with_name("auth0_schemas.json").read_text())
# GET /users-by-email's answer has no named schema in the spec: an array of users.
SCHEMAS["$defs"]["UsersByEmail"] = {
    "type": "array",
    "items": {"$ref": "#/$defs/UserResponseSchema"},
}
ORG = "org_sdk"
OTHER_ORG = "org_globex"
READER, WRITER = "edge-sdk", "edge-sdk-admin"
MEMBERS = [f"auth0|sdk-{n:02d}" for n in range(12)]
SHARED = "auth0|shared-consultant"  # also in org_acme and org_globex
OUTSIDER = "auth0|frank-globex"
ROLE, FORBIDDEN_ROLE = "rol_viewer", "rol_admin"
DATABASE = "Username-Password-Authentication"


@pytest.fixture(scope="module")
def sdk_proxy(tenant_server, tmp_path_factory) -> Iterator[ProxyServer]:
    """The proxy under gunicorn over TLS, with org_sdk's reader and writer clients."""
    tenant = tenant_server.tenant
    if tenant.organization(ORG) is None:
        tenant.add_organization(ORG, "sdk", "SDK Test Org")
        for user_id in MEMBERS:
            name = user_id.split("|")[1]
            tenant.add_user(user_id, f"{name}@sdk.example", name.title(), organizations=[ORG])
        tenant.add_member(ORG, SHARED)
        for connection in ("con_database", "con_google"):
            tenant.enable_connection(ORG, connection)
        tenant.assign_member_roles(ORG, MEMBERS[0], [ROLE])
        tenant.add_invitation(ORG, inviter_name="Ops", invitee_email="new@sdk.example")
        for client_id, scopes in (
            (READER, ["read:users"]),
            (WRITER, ["read:users", *WRITE_SCOPES]),
        ):
            tenant.add_client(
                client_id, f"{client_id}-secret", grants={API_AUDIENCE: scopes}, organizations=[ORG]
            )
    config = proxy_config_for(tenant_server, cache_ttl_seconds=30)
    config["clients"].update({READER: ORG, WRITER: ORG})
    config["writes"] = {
        WRITER: {
            "permissions": sorted(WRITE_SCOPES),
            "roles": [ROLE],
            "app_metadata_keys": ["plan"],
            "connections": [DATABASE, "con_database"],  # by name for users, id for invitations
            "invitation_clients": [READER],
        }
    }
    workdir = tmp_path_factory.mktemp("sdk-proxy")
    server = ProxyServer(
        config,
        ca_bundle=tenant_server.ca_bundle,
        workdir=str(workdir),
        tls=generate_certificates(workdir / "tls"),
    )
    with server:
        yield server


ANSWERS: list[httpx.Response] = []  # every answer the SDK received, in order


@pytest.fixture
def sdk(sdk_proxy, tenant, monkeypatch):
    """``sdk(client_id)``: the SDK as that edge client sets it up: the proxy's domain, a token
    for the proxy's API, and the CA that signed the proxy's certificate. Its HTTP client is the
    SDK's default one, with a hook that keeps each answer for ``conforms``."""
    monkeypatch.setenv("SSL_CERT_FILE", str(sdk_proxy.tls.ca_bundle))
    ANSWERS.clear()

    def client(client_id: str = READER, scope: str | None = None) -> ManagementClient:
        token = tenant.issue_token(client_id, API_AUDIENCE, scope=scope)
        http = httpx.Client(timeout=60, follow_redirects=True, event_hooks={"response": [keep]})
        return ManagementClient(domain=sdk_proxy.domain, token=token, httpx_client=http)

    return client


def keep(response: httpx.Response) -> None:
    response.read()
    ANSWERS.append(response)


def conforms(schema: str) -> object:
    """The last answer's body, checked against Auth0's schema ``schema`` for it."""
    body = ANSWERS[-1].json()
    jsonschema.validate(body, {**SCHEMAS, "$ref": f"#/$defs/{schema}"})
    return body


def management_calls(tenant) -> list[str]:
    return [
        r["raw_uri"]
        for r in tenant.requests
        if (r["endpoint"] or "").startswith(("GET /api", "POST /api", "PATCH /api", "DELETE /api"))
    ]


# Reads


def test_get_organization(sdk):
    organization = sdk().organizations.get(ORG)
    assert organization.id == ORG and organization.name == "sdk"
    conforms("GetOrganizationResponseContent")


def test_another_organization_is_not_found(sdk, tenant):
    with pytest.raises(NotFoundError) as raised:
        sdk().organizations.get(OTHER_ORG)
    assert raised.value.body["errorCode"] == "inexistent_organization"
    assert not management_calls(tenant)


def test_list_members_by_checkpoint_from_the_cache(sdk, tenant):
    client = sdk()
    first = [member.user_id for member in client.organizations.members.list(ORG, take=5)]
    calls = len(management_calls(tenant))
    again = [member.user_id for member in client.organizations.members.list(ORG, take=5)]
    assert first == again == sorted([*MEMBERS, SHARED])
    assert len(management_calls(tenant)) == calls, "paged again while fresh: no upstream call"


def test_list_members_by_offset_with_fields(sdk):
    client = sdk()
    pager = client.organizations.members.list(ORG, fields="user_id,email", include_fields=True)
    members = list(pager)
    body = conforms("ListOrganizationMembersPaginatedResponseContent")
    assert all(set(member) == {"user_id", "email"} for member in body["members"])
    assert {m.user_id for m in members} == {*MEMBERS, SHARED}


def test_member_roles(sdk):
    roles = list(sdk().organizations.members.roles.list(ORG, MEMBERS[0]))
    assert [role.id for role in roles] == [ROLE]
    conforms("ListOrganizationMemberRolesResponseContent")


def test_member_roles_of_an_outsider_are_not_found(sdk):
    with pytest.raises(NotFoundError):
        list(sdk().organizations.members.roles.list(ORG, OUTSIDER))


def test_invitations(sdk):
    client = sdk()
    invitations = list(client.organizations.invitations.list(ORG))
    assert invitations and all(i.organization_id == ORG for i in invitations)
    conforms("ListOrganizationInvitationsResponseContent")
    one = client.organizations.invitations.get(ORG, invitations[0].id)
    assert one.invitee.email == invitations[0].invitee.email
    conforms("GetOrganizationInvitationResponseContent")


def test_enabled_connections(sdk):
    connections = list(sdk().organizations.enabled_connections.list(ORG))
    assert {c.connection_id for c in connections} == {"con_database", "con_google"}
    conforms("ListOrganizationConnectionsResponseContent")


def test_get_member_with_fields(sdk):
    user = sdk().users.get(MEMBERS[1], fields="user_id,email", include_fields=True)
    assert user.user_id == MEMBERS[1] and user.email == "sdk-01@sdk.example"
    assert conforms("GetUserResponseContent") == {"user_id": MEMBERS[1], "email": user.email}
    sdk().users.get(MEMBERS[1])
    assert conforms("GetUserResponseContent")["name"] == "Sdk-01"


def test_get_outsider_is_not_found(sdk):
    with pytest.raises(NotFoundError) as raised:
        sdk().users.get(OUTSIDER)
    assert raised.value.body["errorCode"] == "inexistent_user"


def test_user_organizations_name_only_the_callers(sdk):
    organizations = list(sdk().users.organizations.list(SHARED))
    assert [organization.id for organization in organizations] == [ORG]
    conforms("ListUserOrganizationsResponseContent")


def test_list_users_pages_the_members(sdk):
    users = list(sdk().users.list(per_page=5))
    assert sorted(user.user_id for user in users) == sorted([*MEMBERS, SHARED])
    conforms("ListUsersResponseContent")


def test_search_users_by_email_or_id(sdk):
    q = f'email:"sdk-02@sdk.example" OR user_id:{MEMBERS[3]} OR email:frank@globex.example'
    pager = sdk().users.list(q=q)
    assert sorted(user.user_id for user in pager) == [MEMBERS[2], MEMBERS[3]]
    conforms("ListUsersResponseContent")


def test_unsupported_search_is_refused(sdk):
    with pytest.raises(BadRequestError) as raised:
        list(sdk().users.list(q="name:*"))
    assert "email:" in raised.value.body["message"] and "user_id:" in raised.value.body["message"]


def test_users_by_email(sdk):
    users = sdk().users.list_users_by_email(email="sdk-04@sdk.example")
    assert [user.user_id for user in users] == [MEMBERS[4]]
    conforms("UsersByEmail")
    assert sdk().users.list_users_by_email(email="frank@globex.example") == []


# Refusals


def test_an_operation_outside_the_table_is_forbidden_without_an_upstream_call(sdk, tenant):
    with pytest.raises(ForbiddenError) as raised:
        sdk().clients.list()
    assert raised.value.body["errorCode"] == "operation_not_allowed"
    assert "organization proxy" in raised.value.body["message"]
    assert not management_calls(tenant)


def test_a_write_without_the_config_grant_is_forbidden(sdk, tenant):
    with pytest.raises(ForbiddenError):
        sdk(READER, scope="read:users update:users").users.update(MEMBERS[5], user_metadata={})
    assert not management_calls(tenant)


def test_a_write_without_the_permission_in_the_token_is_forbidden(sdk):
    with pytest.raises(ForbiddenError) as raised:
        sdk(WRITER, scope="read:users").users.update(MEMBERS[5], user_metadata={})
    assert raised.value.body["errorCode"] == "insufficient_scope"


# Writes


def test_create_invitation(sdk):
    client = sdk(WRITER)
    invitation = client.organizations.invitations.create(
        ORG, inviter={"name": "Ops"}, invitee={"email": "another@sdk.example"},
        client_id=READER, connection_id="con_database", roles=[ROLE],
    )  # fmt: skip
    conforms("CreateOrganizationInvitationResponseContent")
    listed = [i.id for i in client.organizations.invitations.list(ORG)]
    assert invitation.id in listed, "the write's own next read sees it"


def test_invitation_with_a_role_not_allowed_is_forbidden(sdk):
    with pytest.raises(ForbiddenError):
        sdk(WRITER).organizations.invitations.create(
            ORG, inviter={"name": "Ops"}, invitee={"email": "x@sdk.example"},
            client_id=READER, roles=[FORBIDDEN_ROLE],
        )  # fmt: skip


def test_assign_and_remove_member_roles(sdk):
    client = sdk(WRITER)
    client.organizations.members.roles.assign(ORG, MEMBERS[6], roles=[ROLE])
    assert [r.id for r in client.organizations.members.roles.list(ORG, MEMBERS[6])] == [ROLE]
    client.organizations.members.roles.delete(ORG, MEMBERS[6], roles=[ROLE])
    assert list(client.organizations.members.roles.list(ORG, MEMBERS[6])) == []
    with pytest.raises(ForbiddenError):
        client.organizations.members.roles.assign(ORG, MEMBERS[6], roles=[FORBIDDEN_ROLE])


def test_update_user_metadata_and_allowed_app_metadata(sdk):
    client = sdk(WRITER)
    updated = client.users.update(
        MEMBERS[7], user_metadata={"theme": "dark"}, app_metadata={"plan": "gold"}
    )
    assert updated.user_metadata == {"theme": "dark"} and updated.app_metadata == {"plan": "gold"}
    conforms("UpdateUserResponseContent")
    assert client.users.get(MEMBERS[7]).user_metadata == {"theme": "dark"}, "read sees the write"
    with pytest.raises(BadRequestError) as raised:
        client.users.update(MEMBERS[7], app_metadata={"role": "admin"})
    assert "app_metadata.role" in raised.value.body["message"]
    with pytest.raises(BadRequestError) as raised:
        client.users.update(MEMBERS[7], email="stolen@evil.example")
    assert "'email'" in raised.value.body["message"]


def test_update_outsider_is_not_found(sdk, tenant):
    with pytest.raises(NotFoundError):
        sdk(WRITER).users.update(OUTSIDER, user_metadata={"x": 1})
    assert tenant.user_profile(OUTSIDER)["user_metadata"] == {}


def test_create_user_makes_a_member(sdk, tenant):
    client = sdk(WRITER)
    created = client.users.create(
        connection=DATABASE, email="created@sdk.example", password="A-long-passw0rd!"
    )
    conforms("CreateUserResponseContent")
    assert ORG in [o["id"] for o in tenant.organizations_of(created.user_id)]
    assert client.users.get(created.user_id).email == "created@sdk.example"


def test_create_user_in_a_connection_not_allowed_is_forbidden(sdk, tenant):
    with pytest.raises(ForbiddenError):
        sdk(WRITER).users.create(connection="google-oauth2", email="g@sdk.example")
    assert not management_calls(tenant)


def test_create_user_that_cannot_become_a_member_is_deleted_again(sdk, tenant):
    # Every attempt: the SDK retries a 502 (nothing was created, so that is safe) twice.
    tenant.inject_fault("POST /api/v2/organizations/{id}/members", status=500, times=3)
    with pytest.raises(ApiError) as raised:
        sdk(WRITER).users.create(
            connection=DATABASE, email="orphan@sdk.example", password="A-long-passw0rd!"
        )
    assert raised.value.status_code == 502
    assert "deleted again" in raised.value.body["message"]
    assert not [p for p in tenant.user_profiles() if p["email"] == "orphan@sdk.example"]
    created = [r for r in tenant.requests if r["endpoint"] == "POST /api/v2/users"]
    deleted = [r for r in tenant.requests if r["endpoint"] == "DELETE /api/v2/users/{id}"]
    assert len(created) == len(deleted) == 3


def test_remove_members(sdk, tenant):
    client = sdk(WRITER)
    client.organizations.members.delete(ORG, members=[MEMBERS[8]])
    assert MEMBERS[8] not in tenant.member_ids(ORG)
    assert MEMBERS[8] not in [m.user_id for m in client.organizations.members.list(ORG)]


def test_delete_member(sdk, tenant):
    client = sdk(WRITER)
    client.users.delete(MEMBERS[9])
    assert tenant.user_profile(MEMBERS[9]) is None
    with pytest.raises(NotFoundError):
        client.users.get(MEMBERS[9])


def test_delete_shared_user_is_a_conflict(sdk, tenant):
    with pytest.raises(ApiError) as raised:  # the spec lists no 409 here: the SDK's base error
        sdk(WRITER).users.delete(SHARED)
    assert raised.value.status_code == 409
    assert "other organizations" in raised.value.body["message"]
    assert tenant.user_profile(SHARED) is not None


def test_every_write_is_an_audit_line(sdk, sdk_proxy):
    sdk(WRITER).users.update(MEMBERS[10], user_metadata={"seen": True})
    lines = [r for r in sdk_proxy.log_records() if r.get("audit")]
    line = lines[-1]
    assert line["client_id"] == WRITER and line["org_id"] == ORG
    assert line["action"] == "PATCH /users/{id}" and line["target"] == MEMBERS[10]
    assert line["outcome"] == "done"


def test_the_documented_example_works(sdk_proxy, tenant, monkeypatch):
    """docs/sdk.md's example ("Using the Auth0 SDKs through the proxy"), run as written against
    the proxy (its domain, organization id and token put in)."""
    page = (Path(__file__).parent.parent / "docs" / "sdk.md").read_text()
    example = page.split("```python\n", 1)[1].split("```", 1)[0]
    example = example.replace("proxy.example.com", sdk_proxy.domain)
    example = example.replace("org_AcmeOrganizationId", ORG)
    monkeypatch.setenv("SSL_CERT_FILE", str(sdk_proxy.tls.ca_bundle))
    monkeypatch.setenv("PROXY_TOKEN", tenant.issue_token(READER, API_AUDIENCE))
    namespace: dict = {}
    exec(compile(example, "docs/sdk.md", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["org"].id == ORG
    assert namespace["profile"].email == "sam@consulting.example"  # the last member listed
