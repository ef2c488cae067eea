"""Auth0's Management API as the proxy speaks it: the path templates it uses, one builder and
one reader of paths, and the endpoint groups of Auth0's rate limits with each plan's limits.

Every other module names Auth0's paths and groups through this one, so an Auth0 path is spelled
once.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from .errors import UserNotFound

PREFIX = "/api/v2"

# Path templates under PREFIX, as Auth0's reference names them.
ORGANIZATION = "/organizations/{id}"
MEMBERS = ORGANIZATION + "/members"
MEMBER_ROLES = MEMBERS + "/{user_id}/roles"
INVITATIONS = ORGANIZATION + "/invitations"
INVITATION = INVITATIONS + "/{invitation_id}"
ENABLED_CONNECTIONS = ORGANIZATION + "/enabled_connections"
USERS = "/users"
USER = USERS + "/{id}"
USER_ORGANIZATIONS = USER + "/organizations"
USERS_BY_EMAIL = "/users-by-email"
EVENTS = "/events"
CLIENT_GRANTS = "/client-grants"
CLIENT_GRANT_ORGANIZATIONS = CLIENT_GRANTS + "/{id}/organizations"


def api_path(template: str, **params: str) -> str:
    """A Management API path from a template such as ``USER``, each parameter encoded as one
    path segment.

    :raise UserNotFound: a parameter that is a dot-segment or empty (404).
    """
    return PREFIX + template.format(**{name: segment(v) for name, v in params.items()})


def segment(value: str) -> str:
    """Percent-encode one path segment, so that no id can reach another upstream endpoint.

    "." and ".." stay dot-segments even when encoded: urllib3 resolves them, and so may URL
    normalizers in front of Auth0 (RFC 3986 section 6.2.2). No Auth0 id is one, so refuse them.

    :raise UserNotFound: the id is a dot-segment or empty (404).
    """
    if value in ("", ".", ".."):
        raise UserNotFound(reason=f"id {value!r} is not a path segment")
    return quote(value, safe="")


def endpoint_template(path: str) -> str:
    """``/api/v2/organizations/org_1/members`` as ``/api/v2/organizations/{id}/members``: the
    upstream metrics' label, which no id can multiply."""
    path = path.split("?", 1)[0]
    if not path.startswith(PREFIX + "/"):
        return path
    parts = path.split("/")[3:]
    named = [part if index % 2 == 0 else "{id}" for index, part in enumerate(parts)]
    return PREFIX + "/" + "/".join(named)


def endpoint_group(path: str) -> str:
    """The group of Auth0's limits a call to ``path`` counts against (besides the whole API's)."""
    if not path.startswith(PREFIX + "/"):
        return "authentication"  # the token endpoint and the JWKS
    parts = path.split("?", 1)[0].split("/")[3:]  # after "", "api", "v2"
    if parts[0] == "organizations":
        return "organization_members" if parts[2:3] == ["members"] else "organizations"
    if parts[0] in ("users", "users-by-email"):
        return "user_organizations" if parts[2:3] == ["organizations"] else "users"
    return "management"


@dataclass(frozen=True)
class Limit:
    """One of Auth0's token buckets: ``burst`` calls at once, refilled at ``per_minute``."""

    burst: int
    per_minute: float


# Auth0's published limits per plan (auth0.com/docs/troubleshoot/customer-support/
# operational-policies/rate-limit-policy and its rate-limit-configurations pages; summarized in
# auth0-facts.md). Where a plan's table names no figure for a group, the stricter reading is
# taken: the same limit as the plans that name one.
_PAID_GROUPS = {
    "organization_members": Limit(40, 500),
    "users": Limit(40, 500),
    "user_organizations": Limit(40, 500),
    "organizations": Limit(20, 200),
    "authentication": Limit(30, 1800),  # POST /oauth/token: 30/s
}
PLANS: dict[str, dict[str, Limit]] = {
    "free": {"management": Limit(2, 120), "authentication": Limit(30, 1800)},
    # Essentials and Professional: the older whole-API policy of 16 requests a second, with
    # Enterprise's burst (a smaller one would make the groups' published bursts unreachable).
    "essentials": {**_PAID_GROUPS, "management": Limit(50, 960)},
    "professional": {**_PAID_GROUPS, "management": Limit(50, 960)},
    "enterprise": {**_PAID_GROUPS, "management": Limit(50, 960)},
}
DEFAULT_PLAN = "professional"
GROUPS = (
    "organization_members",
    "organizations",
    "user_organizations",
    "users",
    "management",
    "authentication",
)
