"""The writes of the Management API surface: each only for a client the config grants it, only
within the caller's organization, only touching what the grant names (roles, ``app_metadata``
keys, connections), and each followed by a new cache generation for the organization, so the
next read, on any worker or host, sees what it changed.

Auth0's own refusals (a body it finds invalid, a user that exists) reach the caller as Auth0
worded them. The rule table in management_api has checked the grant, the organization and the
membership, and writes the audit line.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flask import Response, current_app, g, jsonify, request

from .api_reads import directory
from .errors import APIError, InvalidBody, OperationNotAllowed, SharedUser, UpstreamFailed
from .management import ManagementClient, api_path
from .schemas import public_profile

if TYPE_CHECKING:
    from .management_api import Call

log = logging.getLogger(__name__)

UPDATABLE_USER_FIELDS = ("user_metadata", "app_metadata")


def invite(call: Call) -> Response:
    """Invite someone to the caller's organization, with allowed roles only."""
    body = json_body()
    _check_roles(call, body.get("roles", []))
    status, invitation = management().relay("POST", call.path(call.template), body=body)
    directory().written(call.caller.org_id)
    g.write_target = invitation.get("id") if isinstance(invitation, dict) else None
    return jsonify(invitation), status


def remove_members(call: Call) -> Response:
    """Remove users from the caller's organization (Auth0 ignores ids that are no members)."""
    body = json_body()
    g.write_target = ",".join(map(str, body.get("members", [])))[:512]
    return _relayed_write(call, body)


def assign_roles(call: Call) -> Response:
    """Give a member roles in the caller's organization: allowed roles only."""
    body = json_body()
    _check_roles(call, body.get("roles", []))
    g.write_target = call.params["user_id"]
    return _relayed_write(call, body)


remove_roles = assign_roles  # the same checks; the method tells Auth0 which


def update_user(call: Call) -> Response:
    """Change a member's ``user_metadata``, or its allowed ``app_metadata`` keys."""
    body = json_body()
    for name in body:
        if name not in UPDATABLE_USER_FIELDS:
            raise InvalidBody(
                f"Payload validation error: '{name}' cannot be changed through the organization "
                f"proxy (only {' and '.join(UPDATABLE_USER_FIELDS)})."
            )
    _check_metadata(call, body)
    status, profile = management().relay("PATCH", call.path(call.template), body=body)
    directory().written(call.caller.org_id)
    return jsonify(public_profile(profile)), status


def create_user(call: Call) -> Response:
    """Create a user in an allowed connection and make it a member of the caller's organization,
    as one operation: if it cannot become a member, it is deleted again, so no user is left
    outside every organization."""
    body = json_body()
    connection = body.get("connection")
    if connection not in call.grant.connections:
        raise OperationNotAllowed(
            f"Creating users in the connection {str(connection)[:100]!r} is not enabled for "
            "this client in the proxy.",
            reason="connection not in the client's writes",
        )
    _check_metadata(call, body)
    status, created = management().relay("POST", call.path(call.template), body=body)
    user_id = created["user_id"] if isinstance(created, dict) else None
    if not isinstance(user_id, str):
        raise UpstreamFailed(reason="POST /api/v2/users answered without a user_id")
    g.write_target = user_id
    _make_member(call, user_id)
    directory().written(call.caller.org_id)
    return jsonify(public_profile(created)), status


def delete_user(call: Call) -> Response:
    """Delete a member who belongs to no other organization (read afresh from Auth0, not from
    the cache: a deletion is not undone)."""
    user_id = call.params["id"]
    organizations = set(management().user_organization_ids(user_id))
    if organizations - {call.caller.org_id}:
        raise SharedUser(reason="user belongs to other organizations too")
    return _relayed_write(call, None)


def json_body() -> dict:
    """:raise InvalidBody: the body is not a JSON object (400)."""
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise InvalidBody()
    return body


def _relayed_write(call: Call, body: dict | None) -> Response:
    status, answer = management().relay(request.method, call.path(call.template), body=body)
    directory().written(call.caller.org_id)
    return Response(status=status) if answer is None else (jsonify(answer), status)


def _make_member(call: Call, user_id: str) -> None:
    """:raise UpstreamFailed: it could not be made a member; it was deleted again (or, should
    that fail too, the answer and an error line say so)."""
    members = api_path("/organizations/{id}/members", id=call.caller.org_id)
    try:
        management().relay("POST", members, body={"members": [user_id]})
    except APIError as error:
        log.warning("created user could not be made a member: %s; deleting it", error.reason)
        try:
            management().relay("DELETE", api_path("/users/{id}", id=user_id))
        except APIError as cleanup:
            log.error("created user %s could not be deleted again: %s", user_id, cleanup.reason)
            raise UpstreamFailed(
                f"The user {user_id} was created but could not be made a member of the "
                "organization, and deleting it again failed: it exists outside the organization.",
                reason="create_user: membership and cleanup failed",
            ) from None
        raise UpstreamFailed(
            "The user could not be made a member of the organization, so it was deleted "
            f"again: nothing was created ({error.message})",
            reason=f"create_user: membership failed: {error.reason}",
        ) from None


def _check_roles(call: Call, roles: object) -> None:
    """:raise OperationNotAllowed: a role the client may not give or take (403)."""
    for role in roles if isinstance(roles, list) else [roles]:
        if role not in call.grant.roles:
            raise OperationNotAllowed(
                f"The role {str(role)[:100]!r} cannot be assigned or removed by this client "
                "through the proxy.",
                reason="role not in the client's writes",
            )


def _check_metadata(call: Call, body: dict) -> None:
    """:raise InvalidBody: metadata that is no object, or an ``app_metadata`` key the client
    may not change (400, naming it)."""
    for name in UPDATABLE_USER_FIELDS:
        if name in body and not isinstance(body[name], dict):
            raise InvalidBody(f"Payload validation error: '{name}' must be an object.")
    for key in body.get("app_metadata", {}):
        if key not in call.grant.app_metadata_keys:
            raise InvalidBody(
                f"Payload validation error: app_metadata.{str(key)[:100]} cannot be changed "
                "through the organization proxy."
            )


def management() -> ManagementClient:
    return current_app.extensions["management"]
