"""The invisible proxy: Auth0's Management API at /api/v2, for the caller's organization only.

An edge server keeps its Auth0 SDK and changes two settings, the domain (the proxy's) and the
token (its M2M token for the proxy's API). What it may do is the table below, one rule per
operation: method, path, the Auth0 permission it needs (a read also takes ``read:users``), how
the organization is enforced, whether it writes. Routing and refusal both follow from the table:
any other method or path under /api/v2 is 403 before the token is even read, and never reaches
Auth0. Writes are off unless the config's ``writes`` block grants them to the client. Every
request under /api/v2 that is not a read (a write, or anything refused as one might be) is an
audit line, whatever answered it: what it was, who sent it, whether it reached Auth0, and how it
ended.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from urllib.parse import quote

from flask import Blueprint, Flask, Response, current_app, g, request

from auth0_proxy.access.caller import identify_caller
from auth0_proxy.auth0.management import RELAYED_STATUSES
from auth0_proxy.core.auth0_api import (
    ENABLED_CONNECTIONS,
    INVITATION,
    INVITATIONS,
    MEMBER_ROLES,
    MEMBERS,
    ORGANIZATION,
    PREFIX,
    USER,
    USER_ORGANIZATIONS,
    USERS,
    USERS_BY_EMAIL,
)
from auth0_proxy.core.config import ConfigError, WriteGrant
from auth0_proxy.core.errors import OperationNotAllowed, OrganizationNotFound, SharedUser
from auth0_proxy.core.paging import OFFSET
from auth0_proxy.core.schemas import (
    InvitationRequestSchema,
    MemberRolesRequestSchema,
    MembersRequestSchema,
    UserCreateRequestSchema,
    UserUpdateRequestSchema,
)
from auth0_proxy.core.scope import Caller, RequestScope
from auth0_proxy.edge.answers import directory

from . import reads, writes
from .operation import Call, Org, Rule
from .query import CHECKPOINT, EMAIL, FIELDS, SEARCH, SORT, Query, checked_query

audit_log = logging.getLogger("auth0_proxy.audit")

READ_METHODS = frozenset(["GET", "HEAD", "OPTIONS"])  # what the audit leaves out


READ, WRITE = False, True
RELAYS_READ, RELAYS_WRITE = (400, 404), RELAYED_STATUSES  # Auth0's refusals passed on
RULES = (
    # method, path under /api/v2, Auth0 permission, organization, writes?, handler, query taken
    Rule("GET", ORGANIZATION, "read:organizations", Org.OWN, READ, reads.relayed,
         relays=RELAYS_READ),
    Rule("GET", MEMBERS, "read:organization_members", Org.OWN, READ, reads.members,
         OFFSET + CHECKPOINT + FIELDS, relays=RELAYS_READ),
    Rule("GET", MEMBER_ROLES, "read:organization_member_roles", Org.OWN_MEMBER, READ, reads.relayed,
         OFFSET, relays=RELAYS_READ),
    Rule("GET", INVITATIONS, "read:organization_invitations", Org.OWN, READ,
         reads.relayed, OFFSET + FIELDS + SORT, relays=RELAYS_READ),
    Rule("GET", INVITATION, "read:organization_invitations", Org.OWN,
         READ, reads.relayed, FIELDS, relays=RELAYS_READ),
    Rule("GET", ENABLED_CONNECTIONS, "read:organization_connections", Org.OWN, READ,
         reads.relayed, OFFSET, relays=RELAYS_READ),
    Rule("GET", USER, "read:users", Org.MEMBER, READ, reads.user, FIELDS),
    Rule("GET", USER_ORGANIZATIONS, "read:organizations", Org.MEMBER, READ,
         reads.user_organizations, OFFSET),
    Rule("GET", USERS, "read:users", Org.MEMBERS_ONLY, READ, reads.users,
         OFFSET + FIELDS + SEARCH),
    Rule("GET", USERS_BY_EMAIL, "read:users", Org.MEMBERS_ONLY, READ, reads.users_by_email,
         FIELDS + EMAIL),
    Rule("POST", INVITATIONS, "create:organization_invitations", Org.OWN, WRITE,
         writes.invite, body=InvitationRequestSchema, relays=RELAYS_WRITE),
    Rule("DELETE", MEMBERS, "delete:organization_members", Org.OWN, WRITE,
         writes.remove_members, body=MembersRequestSchema, relays=RELAYS_WRITE),
    Rule("POST", MEMBER_ROLES, "create:organization_member_roles", Org.OWN_MEMBER, WRITE,
         writes.assign_roles, body=MemberRolesRequestSchema, relays=RELAYS_WRITE),
    Rule("DELETE", MEMBER_ROLES, "delete:organization_member_roles", Org.OWN_MEMBER, WRITE,
         writes.remove_roles, body=MemberRolesRequestSchema, relays=RELAYS_WRITE),
    Rule("PATCH", USER, "update:users", Org.MEMBER, WRITE, writes.update_user,
         body=UserUpdateRequestSchema, relays=RELAYS_WRITE),
    # The user created is made a member (POST /organizations/{id}/members), and deleted again
    # should that fail (DELETE /users/{id}): the management application needs both too.
    Rule("POST", USERS, "create:users", Org.NEW_MEMBER, WRITE, writes.create_user,
         body=UserCreateRequestSchema, relays=RELAYS_WRITE,
         upstream_permissions=("create:organization_members", "delete:users")),
    Rule("DELETE", USER, "delete:users", Org.MEMBER, WRITE, writes.delete_user,
         relays=RELAYS_WRITE, refuses=(SharedUser,)),
)  # fmt: skip
WRITE_PERMISSIONS = frozenset(rule.permission for rule in RULES if rule.write)

NO_WRITES = WriteGrant()

bp = Blueprint("management_api", __name__)


# Every method reaches the dispatcher, which refuses what the table does not name (OPTIONS
# included: Flask would answer it with the methods the route takes).
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
ROUTE = {"methods": METHODS, "provide_automatic_options": False}


@bp.route(PREFIX, **ROUTE)
@bp.route(f"{PREFIX}/", **ROUTE)
@bp.route(f"{PREFIX}/<id:rest>", **ROUTE)
def dispatch(rest: str = "") -> Response:
    """Answer a Management API request by its rule, or refuse it: the one pipeline of every
    operation. The rule is matched; the caller identified by a token with one of its scopes;
    a write's grant found; the query checked; the organization and member enforced; then the
    handler runs. ``audit`` writes a write's line after, however it ended."""
    if request.method == "OPTIONS":
        return options(raw_path())
    rule, params = match(request.method, raw_path())
    if rule is None:
        raise OperationNotAllowed(reason=f"no rule for {request.method} {request.path[:200]}")
    scope: RequestScope = g.scope
    scope.route = PREFIX + rule.template  # for the metrics: the operation, not the catch-all
    facts = scope.write = rule.audit_facts(params) if rule.write else None
    caller = identify_caller(rule.scopes)
    grant = write_grant(caller, rule) if rule.write else None
    call = Call(caller, rule.template, params, _query(rule), grant, audit=facts)
    return rule.handler(enforce_organization(rule, call))


def options(path: str) -> Response:
    """204 with the methods the table takes for this path in ``Allow``; no token needed, as
    it tells nothing the OpenAPI document does not.

    :raise OperationNotAllowed: no rule names the path (403, as for any other method).
    """
    methods = {rule.method for rule in RULES if match(rule.method, path)[0] is not None}
    if not methods:
        raise OperationNotAllowed(reason=f"no rule for OPTIONS {request.path[:200]}")
    response = Response(status=204)
    response.headers["Allow"] = ", ".join(sorted(methods | {"OPTIONS"}))
    del response.headers["Content-Type"]
    return response


def match(method: str, path: str) -> tuple[Rule | None, dict[str, str]]:
    """The rule for this request and its path parameters; (None, {}) for any other request."""
    segments = path.removeprefix(PREFIX).split("/")
    for rule in RULES:
        try:
            params = rule.match(method, segments)
        except UnicodeDecodeError:
            return None, {}
        if params is not None:
            return rule, params
    return None, {}


def enforce_organization(rule: Rule, call: Call) -> Call:
    """The call, once its organization and member (if the path names one) are the caller's;
    a write's member is confirmed with Auth0 now.

    :raise OrganizationNotFound: another organization's id (404, as if it did not exist).
    :raise UserNotFound: a user who is not a member (404, as if it did not exist).
    """
    org_id = call.caller.org_id
    if rule.org in (Org.OWN, Org.OWN_MEMBER) and call.params["id"] != org_id:
        raise OrganizationNotFound(reason="another organization's id")
    member = {Org.OWN_MEMBER: "user_id", Org.MEMBER: "id"}.get(rule.org)
    if member is None:
        return call
    members = directory()
    check = members.confirm_member if rule.write else members.require_member
    return dataclasses.replace(call, membership=check(org_id, call.params[member]))


def write_grant(caller: Caller, rule: Rule) -> WriteGrant:
    """What the client may touch with this write (the ``writes`` block of the config; none by
    default). Its token's scope was checked by ``identify_caller``; what each body field may
    hold within the grant, by the rule's handler.

    :raise OperationNotAllowed: the config does not let this client make such writes (403).
    """
    grant = current_app.extensions["write_grants"].get(caller.client_id, NO_WRITES)
    if rule.permission not in grant.permissions:
        raise OperationNotAllowed(
            f"Writes that need {rule.permission} are not enabled for this client in the proxy.",
            reason=f"{rule.permission} not in the client's writes",
        )
    return grant


def check_grants(grants: Mapping[str, WriteGrant]) -> None:
    """:raise ConfigError: a ``writes`` permission that no write of the surface needs (at start,
    on reload and by check-config, before any request)."""
    for client_id, grant in grants.items():
        if unknown := sorted(grant.permissions - WRITE_PERMISSIONS):
            raise ConfigError(
                f"writes.{client_id}.permissions: {unknown[0]!r} is no write of the proxy; "
                f"use {', '.join(sorted(WRITE_PERMISSIONS))}"
            )


def init_app(app: Flask, grants: Mapping[str, WriteGrant]) -> None:
    app.extensions["write_grants"] = dict(grants)
    app.after_request(audit)


def audit(response: Response) -> Response:
    """The audit line of a request under /api/v2 that is not a read, however it was answered
    (a refused token, a body too large, a method no rule names): ``outcome`` is ``done``, or
    ``refused: <status> <errorCode>`` when nothing was sent to Auth0, or ``failed: ...`` when
    something was (Auth0 refused it, failed, or did not answer in time: it may be done)."""
    req = request._get_current_object()  # resolved once: this runs after every request
    if req.method in READ_METHODS:
        return response
    path = req.path
    if not (path == PREFIX or path.startswith(PREFIX + "/")):
        return response
    scope: RequestScope = g.scope
    facts, caller = scope.write, scope.caller
    sent = facts is not None and facts.sent
    status = response.status_code
    if status < 400:
        outcome = "done"
    else:
        outcome = f"{'failed' if sent else 'refused'}: {status} {scope.error_code}"
    audit_log.info(
        "write %s",
        outcome,
        extra={
            "fields": {
                "audit": True,
                "request_id": scope.request_id,
                "caller_request_id": scope.caller_request_id,
                "client_id": scope.client_id,
                "org_id": caller.org_id if caller else None,
                "action": facts.action if facts else f"{req.method} {path[:200]}",
                "permission": facts.permission if facts else None,
                "target": facts.target if facts else None,
                "outcome": outcome,
                "sent": sent,
                "reason": scope.denial_reason if status >= 400 else None,
            }
        },
    )
    return response


def _query(rule: Rule) -> Query:
    return checked_query(request.args, rule.query)


def raw_path() -> str:
    """The path as the client sent it, encoding intact: Auth0 ids carry ``|`` and may carry an
    encoded ``/``, which the decoded path would split into two segments."""
    environ = request.environ
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:
        return quote(request.path, safe="/|:@!$&'()*+,;=")
    return raw.split("?", 1)[0]
