"""The writes of the Management API surface: each only for a client the config grants it, only
within the caller's organization, only touching what the grant names (roles, ``app_metadata``
keys, connections, the applications an invitation names). Once a write is sent, the
organization's cache generation changes, whatever Auth0 answered (a timeout may hide a write
done), so the next read, on any worker or host, sees what it changed.

Auth0's own refusals (a body it finds invalid, a user that exists) reach the caller as Auth0
worded them. The rule table in the pipeline has checked the grant, the organization and the
membership (with Auth0, at the time of the write), and writes the audit line.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flask import Response, current_app, jsonify, request

from auth0_proxy.auth0.management import ManagementClient
from auth0_proxy.core.auth0_api import MEMBERS, USER, api_path
from auth0_proxy.core.errors import (
    APIError,
    InvalidBody,
    OperationNotAllowed,
    SharedUser,
    UpstreamFailed,
)
from auth0_proxy.core.schemas import (
    UserCreateRequestSchema,
    UserUpdateRequestSchema,
    public_profile,
)
from auth0_proxy.edge.answers import directory

if TYPE_CHECKING:
    from .operation import Call

log = logging.getLogger("auth0_proxy.api_writes")

METADATA = ("user_metadata", "app_metadata")
# What a created user may be given, what an update may change: the fields of their bodies'
# schemas (no verified email, blocked state or chosen id).
CREATE_FIELDS = frozenset(UserCreateRequestSchema().fields)
UPDATE_FIELDS = frozenset(UserUpdateRequestSchema().fields)
# Levels of arrays and objects a write's body may nest: far more than any Auth0 body or metadata
# needs, and far less than what the JSON encoder sending it on can take (Python's recursion).
MAX_BODY_DEPTH = 32


def invite(call: Call) -> Response:
    """Invite someone to the caller's organization, with allowed roles, metadata, connection
    and login application only."""
    body = json_body()
    _check_roles(call, body)
    _check_metadata(call, body)
    # Without a connection the invitee may sign up through any the organization enables, one
    # the grant does not name too: an invitation is held to the grant by naming one.
    _check_allowed(call.grant.connections, body, "connection_id", required=True)
    _check_allowed(call.grant.invitation_clients, body, "client_id", required=True)
    status, invitation = _write(call, body)
    call.audit.target = invitation.get("id") if isinstance(invitation, dict) else None
    return jsonify(invitation), status


def remove_members(call: Call) -> Response:
    """Remove users from the caller's organization (Auth0 ignores ids that are no members)."""
    body = json_body()
    call.audit.target = ",".join(_strings(body, "members"))[:512]
    return _answer(*_write(call, body))


def assign_roles(call: Call) -> Response:
    """Give a member roles in the caller's organization (or take them): allowed roles only."""
    body = json_body()
    _check_roles(call, body)
    return _answer(*_write(call, body))


remove_roles = assign_roles  # the same checks; the method tells Auth0 which


def update_user(call: Call) -> Response:
    """Change a member's ``user_metadata``, or its allowed ``app_metadata`` keys."""
    body = json_body()
    _check_fields(body, UPDATE_FIELDS)
    _check_metadata(call, body)
    status, profile = _write(call, body)
    return jsonify(public_profile(profile)), status


def create_user(call: Call) -> Response:
    """Create a user in an allowed connection and make it a member of the caller's organization,
    as one operation: if it cannot become a member, it is deleted again, so no user is left
    outside every organization."""
    body = json_body()
    _check_fields(body, CREATE_FIELDS)
    _check_allowed(call.grant.connections, body, "connection", required=True)
    _check_metadata(call, body)
    status, created = _write(call, body)
    user_id = created.get("user_id") if isinstance(created, dict) else None
    if not isinstance(user_id, str):
        raise UpstreamFailed(reason="POST /api/v2/users answered without a user_id")
    call.audit.target = user_id
    _make_member(call, user_id)
    return jsonify(public_profile(created)), status


def delete_user(call: Call) -> Response:
    """Delete a member who belongs to no other organization (as Auth0 lists them now)."""
    if set(call.membership.value) != {call.caller.org_id}:
        raise SharedUser(reason="user belongs to other organizations too")
    return _answer(*_write(call, None))


def json_body() -> dict:
    """:raise InvalidBody: the body is not a JSON object, or nests deeper than
    ``MAX_BODY_DEPTH`` (400)."""
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise InvalidBody()
    if nested_deeper(body, MAX_BODY_DEPTH):
        raise InvalidBody(
            f"Payload validation error: the body nests deeper than {MAX_BODY_DEPTH} levels.",
            reason="body nested too deeply",
        )
    return body


def nested_deeper(value: object, levels: int) -> bool:
    """Whether a parsed JSON value nests arrays and objects more than ``levels`` deep (walked
    without recursion, which such a value could exhaust, and no further than ``levels``)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > levels:
            return True
        pending.extend((child, depth + 1) for child in item)
    return False


def _write(
    call: Call, body: dict | None, *, method: str | None = None, path: str | None = None
) -> tuple[int, object]:
    """Send a write to Auth0 (by default the request's own); whatever comes of it, what is
    cached for the organization is read afresh from now on."""
    call.audit.sent = True  # for the audit line: from here on, the write may be done
    try:
        return management().relay(method or request.method, path or call.upstream_path, body=body)
    finally:
        directory().written(call.caller.org_id)


def _answer(status: int, answer: object) -> Response:
    return Response(status=status) if answer is None else (jsonify(answer), status)


def _make_member(call: Call, user_id: str) -> None:
    """:raise UpstreamFailed: it could not be made a member; it was deleted again (or, should
    that fail too, the answer and an error line say so)."""
    members = api_path(MEMBERS, id=call.caller.org_id)
    try:
        _write(call, {"members": [user_id]}, method="POST", path=members)
    except APIError as error:
        log.warning("created user could not be made a member: %s; deleting it", error.reason)
        try:
            management().relay("DELETE", api_path(USER, id=user_id))
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


def _strings(body: dict, name: str) -> list[str]:
    """:raise InvalidBody: ``name`` is not a list of strings (400)."""
    values = body.get(name, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidBody(f"Payload validation error: '{name}' must be a list of strings.")
    return values


def _check_fields(body: dict, allowed) -> None:
    """:raise InvalidBody: a field the proxy does not let edge clients set (400, naming it)."""
    for name in body:
        if name not in allowed:
            raise InvalidBody(
                f"Payload validation error: '{str(name)[:100]}' cannot be set through the "
                "organization proxy."
            )


def _check_roles(call: Call, body: dict) -> None:
    """:raise OperationNotAllowed: a role the client may not give or take (403)."""
    for role in _strings(body, "roles"):
        if role not in call.grant.roles:
            raise OperationNotAllowed(
                f"The role {role[:100]!r} cannot be assigned or removed by this client "
                "through the proxy.",
                reason="role not in the client's writes",
            )


def _check_allowed(allowed: frozenset[str], body: dict, name: str, *, required: bool) -> None:
    """:raise OperationNotAllowed: ``name`` holds a value the grant does not list (403)."""
    if name not in body and not required:
        return
    value = body.get(name)
    if not isinstance(value, str) or value not in allowed:
        raise OperationNotAllowed(
            f"The {name} {str(value)[:100]!r} is not enabled for this client in the proxy.",
            reason=f"{name} not in the client's writes",
        )


def _check_metadata(call: Call, body: dict) -> None:
    """:raise InvalidBody: metadata that is no object, or an ``app_metadata`` key the client
    may not change (400, naming it)."""
    for name in METADATA:
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
