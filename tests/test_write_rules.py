"""The rules of the /api/v2 write surface, in process: each write stays within the caller's
organization (as Auth0 lists it at the time of the write) and within what the client's ``writes``
grant names, whatever the token holds, and a refused write never reaches Auth0.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from emulated_tenant.demo import WRITE_SCOPES
from tests.support import write

ORG, OTHER_ORG = "org_acme", "org_globex"
EVERY_WRITE = " ".join(["read:users", *WRITE_SCOPES])  # the token never is what refuses
DOMAIN = "@rules.example"  # the users a test makes, deleted after it
DATABASE = "Username-Password-Authentication"
UPSTREAM_ROLES = "/api/v2/organizations/{id}/members/{user_id}/roles"
ROLE_WRITER = {
    "permissions": ["create:organization_member_roles", "delete:organization_member_roles"],
    "roles": ["rol_viewer"],
}
CREATOR = {
    "permissions": ["create:users"],
    "connections": [DATABASE],
    "app_metadata_keys": ["plan"],
}
NEW_USER = {"connection": DATABASE, "email": f"new{DOMAIN}", "password": "A-long-passw0rd!"}


@pytest.fixture
def add_user(tenant):
    """``add_user(name, *organizations)``: a user of the test's own, its id; every user of
    ``DOMAIN`` (those the proxy created too) is deleted after the test."""

    def add(name: str, *organizations: str) -> str:
        user_id = f"auth0|{name}"
        tenant.add_user(user_id, f"{name}{DOMAIN}", organizations=organizations)
        return user_id

    yield add
    for profile in tenant.user_profiles():
        if profile["email"].endswith(DOMAIN):
            tenant.delete_user(profile["user_id"])


@pytest.fixture
def send(make_writer, make_token):
    """``send(grant, method, path, body)``: edge-acme's request, its token holding every write
    permission, to a proxy whose config grants it ``grant``."""

    def request(grant: dict, method: str, path: str, body=None, *, app=None):
        return write(app or make_writer(grant), method, path, body, make_token(scope=EVERY_WRITE))

    return request


def user_path(user_id: str) -> str:
    return f"/api/v2/users/{quote(user_id, safe='')}"


def roles_path(user_id: str) -> str:
    return f"/api/v2/organizations/{ORG}/members/{quote(user_id, safe='')}/roles"


def refused(answer, status: int, error_code: str) -> str:
    """The refusal's message, once the answer is that refusal."""
    assert answer.status_code == status, answer.get_data()
    assert answer.get_json()["errorCode"] == error_code
    return answer.get_json()["message"]


def created(tenant) -> list[str]:
    return [p["user_id"] for p in tenant.users_by_email(NEW_USER["email"])]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_roles_of_another_organizations_user_are_not_found_and_never_asked(send, tenant, method):
    outsider = "auth0|frank-globex"
    body = None if method == "GET" else {"roles": ["rol_viewer"]}
    refused(send(ROLE_WRITER, method, roles_path(outsider), body), 404, "inexistent_user")
    assert tenant.counts[f"{method} {UPSTREAM_ROLES}"] == 0


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_role_write_for_a_member_who_left_is_not_found_whatever_the_cache_says(
    make_writer,
    send,
    make_token,
    add_user,
    tenant,
    method,
):
    leaver = add_user("leaver", ORG)
    app = make_writer(ROLE_WRITER, cache_ttl_seconds=60)
    assert write(app, "GET", user_path(leaver), None, make_token()).status_code == 200  # cached
    tenant.remove_member(ORG, leaver)
    answer = send(ROLE_WRITER, method, roles_path(leaver), {"roles": ["rol_viewer"]}, app=app)
    refused(answer, 404, "inexistent_user")
    assert tenant.counts[f"{method} {UPSTREAM_ROLES}"] == 0


def test_a_write_the_grant_does_not_name_is_refused_whatever_the_token_holds(
    send, add_user, tenant
):
    member = add_user("kept", ORG)
    answer = send({"permissions": ["update:users"]}, "DELETE", user_path(member))
    assert "delete:users" in refused(answer, 403, "operation_not_allowed")
    assert tenant.user_profile(member) is not None


@pytest.mark.parametrize(
    "field",
    [{"app_metadata": {"admin": True}}, {"user_id": "chosen"}, {"email_verified": True},
     {"blocked": True}],
    ids=lambda field: next(iter(field)),
)  # fmt: skip
def test_a_created_user_is_given_nothing_outside_the_grant(send, add_user, tenant, field):
    answer = send(CREATOR, "POST", "/api/v2/users", {**NEW_USER, **field})
    assert next(iter(field)) in refused(answer, 400, "invalid_body")
    assert tenant.counts["POST /api/v2/users"] == 0 and created(tenant) == []


def test_a_user_is_created_only_in_a_connection_of_the_grant(send, add_user, tenant):
    grant = {**CREATOR, "connections": ["google-oauth2"]}
    answer = send(grant, "POST", "/api/v2/users", NEW_USER)
    assert DATABASE in refused(answer, 403, "operation_not_allowed")
    assert tenant.counts["POST /api/v2/users"] == 0 and created(tenant) == []


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_only_the_grants_roles_are_assigned_or_removed(send, add_user, tenant, method):
    member = add_user("promoted", ORG)
    tenant.assign_member_roles(ORG, member, ["rol_admin"])
    answer = send(ROLE_WRITER, method, roles_path(member), {"roles": ["rol_admin"]})
    assert "rol_admin" in refused(answer, 403, "operation_not_allowed")
    assert tenant.counts[f"{method} {UPSTREAM_ROLES}"] == 0
    assert [role["id"] for role in tenant.member_roles(ORG, member)] == ["rol_admin"]


def test_an_update_changes_only_the_grants_app_metadata_keys(send, add_user, tenant):
    member = add_user("updated", ORG)
    grant = {"permissions": ["update:users"], "app_metadata_keys": ["plan"]}
    body = {"user_metadata": {"theme": "dark"}, "app_metadata": {"plan": "gold", "role": "admin"}}
    answer = send(grant, "PATCH", user_path(member), body)
    assert "app_metadata.role" in refused(answer, 400, "invalid_body")
    profile = tenant.user_profile(member)
    assert profile["app_metadata"] == profile["user_metadata"] == {}


def test_a_user_of_other_organizations_too_is_not_deleted(send, add_user, tenant):
    shared = add_user("shared", ORG, OTHER_ORG)
    answer = send({"permissions": ["delete:users"]}, "DELETE", user_path(shared))
    refused(answer, 409, "user_in_other_organizations")
    assert tenant.counts["DELETE /api/v2/users/{id}"] == 0
    assert tenant.user_profile(shared) is not None
