"""The Management API writes the emulator implements, with Auth0's semantics.

Each function is a route handler: its body has already been validated against the operation's
request schema in the spec excerpt (payload.py), so it only applies Auth0's rules about the
tenant's state. The success status (201, 204) is the route's (routes.py).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .routing import Call

if TYPE_CHECKING:
    from .tenant import Tenant


def create_invitation(tenant: Tenant, call: Call) -> Any:
    """The invitation created.

    :raise 404 inexistent_organization, 404 inexistent_client: unknown organization or client.
    :raise 400 invalid_body: a connection the organization has not enabled, or unknown roles.
    """
    body = call.body
    invitation = tenant.add_invitation(
        call.path_params["id"],
        body["invitee"]["email"],
        body["client_id"],
        body["inviter"]["name"],
        connection_id=body.get("connection_id"),
        roles=body.get("roles", ()),
        app_metadata=body.get("app_metadata"),
        user_metadata=body.get("user_metadata"),
        ttl_sec=body.get("ttl_sec", 0),
    )
    return invitation.body()


def add_members(tenant: Tenant, call: Call) -> None:
    """:raise 404 inexistent_organization. :raise 400 invalid_body: an unknown user."""
    tenant.add_members(call.path_params["id"], call.body["members"])


def remove_members(tenant: Tenant, call: Call) -> None:
    """The users leave the organization and lose their roles in it; non-members are ignored.

    :raise 404 inexistent_organization.
    """
    tenant.remove_members(call.path_params["id"], call.body["members"])


def assign_member_roles(tenant: Tenant, call: Call) -> None:
    """:raise 404 inexistent_organization. :raise 400 invalid_body: not a member, unknown role."""
    params = call.path_params
    tenant.assign_member_roles(params["id"], params["user_id"], call.body["roles"])


def remove_member_roles(tenant: Tenant, call: Call) -> None:
    """Roles the member does not hold are ignored.

    :raise 404 inexistent_organization. :raise 400 invalid_body: not a member.
    """
    params = call.path_params
    tenant.remove_member_roles(params["id"], params["user_id"], call.body["roles"])


def associate_client_grant(tenant: Tenant, call: Call) -> Any:
    """The grant, now associated: its client may use the organization in client-credentials
    requests for the grant's API (if the grant allows organizations).

    :raise 404 inexistent_organization, 404 inexistent_client_grant: unknown organization or grant.
    :raise 409 conflict: associated already.
    """
    grant = tenant.associate_client_grant(call.path_params["id"], call.body["grant_id"])
    return grant.organization_grant(tenant.grant_audience(grant))


def dissociate_client_grant(tenant: Tenant, call: Call) -> None:
    """The grant's client may no longer use the organization for new tokens.

    :raise 404 inexistent_organization, 404 inexistent_client_grant: unknown organization or
        grant, or the grant is not associated with the organization.
    """
    params = call.path_params
    tenant.dissociate_client_grant(params["id"], params["grant_id"])


def create_user(tenant: Tenant, call: Call) -> Any:
    """The new user's full profile.

    :raise 400: unknown or non-database connection, email or password missing.
    :raise 409 auth0_idp_error: the user id, or the email in that connection, is taken.
    """
    attributes = dict(call.body)
    return tenant.create_user(attributes.pop("connection"), **attributes)


def update_user(tenant: Tenant, call: Call) -> Any:
    """The full profile after the update (metadata merged at the top level, null deletes).

    :raise 404 inexistent_user.
    """
    return tenant.update_user(call.path_params["id"], call.body)


def delete_user(tenant: Tenant, call: Call) -> None:
    """The user, their memberships and organization roles are gone. An unknown user is 204 too:
    the spec lists no 404 for this operation."""
    with contextlib.suppress(KeyError):
        tenant.delete_user(call.path_params["id"])
