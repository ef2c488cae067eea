"""The tenant's directory entries: APIs, clients (with their client grants), roles, connections,
organizations (with their members' roles, enabled connections and invitations) and users."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

AUTH0_PROFILE = "auth0"
RFC9068_PROFILE = "rfc9068"
TOKEN_PROFILES = (AUTH0_PROFILE, RFC9068_PROFILE)
DEFAULT_TOKEN_LIFETIME = 86_400
FIXED_TIMESTAMP = "2024-01-15T09:30:00.000Z"
MEMBER_FIELDS = ("user_id", "email", "picture", "name")
DATABASE_STRATEGY = "auth0"
DATABASE_CONNECTION = "Username-Password-Authentication"
#: root attributes ``PATCH /users/{id}`` may set (null removes them); metadata is merged instead
UPDATABLE_PROFILE_FIELDS = (
    "email",
    "email_verified",
    "name",
    "nickname",
    "given_name",
    "family_name",
    "picture",
    "username",
    "phone_number",
    "phone_verified",
    "blocked",
)
METADATA_FIELDS = ("user_metadata", "app_metadata")
# A grants key meaning "this tenant's Management API", usable before the server (hence the
# audience https://localhost:<port>/api/v2/) exists.
MANAGEMENT_API = "urn:emulated-tenant:management-api"


@dataclass
class Api:
    """A custom API (resource server) clients can request tokens for."""

    identifier: str
    token_profile: str = AUTH0_PROFILE
    scopes: list[str] = field(default_factory=list)
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME


#: a client grant's ``organization_usage``: the application must not (``deny``, the default),
#: may (``allow``) or must (``require``) name an organization when it asks for a token
ORGANIZATION_USAGES = ("deny", "allow", "require")


@dataclass
class ClientGrant:
    """What one application may ask of one API, and for which organizations
    (auth0.com/docs/manage-users/organizations/organizations-for-m2m-applications).

    ``organization_ids`` are the organizations an administrator associated the grant with; with
    ``allow_any_organization`` the application may use any organization without one.
    ``audience`` may be ``MANAGEMENT_API``, which stands for the tenant's Management API.
    """

    id: str
    client_id: str
    audience: str
    scope: list[str] = field(default_factory=list)
    organization_usage: str = "deny"
    allow_any_organization: bool = False
    organization_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        check_organization_usage(self.organization_usage)

    def may_use(self, org_id: str) -> bool:
        """Whether a token for this grant may carry ``org_id`` (the organization exists)."""
        if self.organization_usage == "deny":
            return False
        return self.allow_any_organization or org_id in self.organization_ids

    def organization_grant(self, audience: str) -> dict[str, Any]:
        """The spec's ``OrganizationClientGrant`` shape (an organization's associated grants, and
        the answer to associating one); ``audience`` is the grant's, resolved."""
        return {
            "id": self.id,
            "client_id": self.client_id,
            "audience": audience,
            "scope": list(self.scope),
            "organization_usage": self.organization_usage,
            "allow_any_organization": self.allow_any_organization,
        }

    def body(self, audience: str) -> dict[str, Any]:
        """The spec's ``ClientGrantResponseContent`` shape (``GET /client-grants``): an
        application's own grant, never one of Auth0's system grants."""
        return {**self.organization_grant(audience), "is_system": False, "subject_type": "client"}


def check_organization_usage(usage: str) -> None:
    """:raise ValueError: not one of ``ORGANIZATION_USAGES``."""
    if usage not in ORGANIZATION_USAGES:
        raise ValueError(f"organization_usage must be one of {ORGANIZATION_USAGES}, not {usage!r}")


@dataclass
class Client:
    """A machine-to-machine application with its client grants, at most one per audience."""

    client_id: str
    client_secret: str
    #: by audience; ``MANAGEMENT_API`` keys the grant for this tenant's Management API
    grants: dict[str, ClientGrant] = field(default_factory=dict)


@dataclass(frozen=True)
class Role:
    """An RBAC role of the tenant; members hold roles per organization."""

    id: str
    name: str
    description: str = ""

    def body(self) -> dict[str, str]:
        """The shape ``GET /organizations/{id}/members/{user_id}/roles`` lists."""
        return {"id": self.id, "name": self.name, "description": self.description}

    def member_role(self) -> dict[str, str]:
        """The shape a member listing carries under ``roles`` (``fields=roles``)."""
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True)
class Connection:
    """An identity source users belong to: a database (strategy ``auth0``) or a social one."""

    id: str
    name: str
    strategy: str = DATABASE_STRATEGY

    @property
    def is_database(self) -> bool:
        return self.strategy == DATABASE_STRATEGY


@dataclass(frozen=True)
class EnabledConnection:
    """A connection members of one organization may log in with, and how."""

    connection: Connection
    assign_membership_on_login: bool = False
    show_as_button: bool = True
    is_signup_enabled: bool = False

    def body(self) -> dict[str, Any]:
        """The shape ``GET /organizations/{id}/enabled_connections`` lists."""
        return {
            "connection_id": self.connection.id,
            "assign_membership_on_login": self.assign_membership_on_login,
            "show_as_button": self.show_as_button,
            "is_signup_enabled": self.is_signup_enabled,
            "connection": {"name": self.connection.name, "strategy": self.connection.strategy},
        }


@dataclass(frozen=True)
class Invitation:
    """An invitation to join an organization, in the spec's OrganizationInvitation shape."""

    id: str
    organization_id: str
    inviter_name: str
    invitee_email: str
    client_id: str | None
    invitation_url: str
    ticket_id: str
    created_at: str
    expires_at: str
    connection_id: str | None = None
    roles: tuple[str, ...] = ()
    app_metadata: dict[str, Any] = field(default_factory=dict)
    user_metadata: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON body; ``client_id``, ``connection_id`` and ``roles`` only when set (the
        schema's ``roles`` has minItems 1, so Auth0 leaves an empty list out)."""
        body: dict[str, Any] = {
            "id": self.id,
            "organization_id": self.organization_id,
            "inviter": {"name": self.inviter_name},
            "invitee": {"email": self.invitee_email},
            "invitation_url": self.invitation_url,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "client_id": self.client_id,
            "connection_id": self.connection_id,
            "app_metadata": copy.deepcopy(self.app_metadata),
            "user_metadata": copy.deepcopy(self.user_metadata),
            "roles": list(self.roles),
            "ticket_id": self.ticket_id,
        }
        return {name: value for name, value in body.items() if value not in (None, [])}


@dataclass
class Organization:
    """An Auth0 organization; members are kept sorted on demand because Auth0 pages in id order.

    A member's roles belong to the membership: removing the member drops them.
    """

    id: str
    name: str
    display_name: str
    member_ids: set[str] = field(default_factory=set)
    _sorted_ids: tuple[str, ...] | None = None
    branding: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    member_roles: dict[str, set[str]] = field(default_factory=dict)
    enabled_connections: dict[str, EnabledConnection] = field(default_factory=dict)
    invitations: dict[str, Invitation] = field(default_factory=dict)

    def add_members(self, user_ids: list[str]) -> None:
        self.member_ids.update(user_ids)
        self._sorted_ids = None

    def remove_member(self, user_id: str) -> None:
        self.member_ids.discard(user_id)
        self.member_roles.pop(user_id, None)
        self._sorted_ids = None

    def sorted_member_ids(self) -> tuple[str, ...]:
        """An immutable snapshot, safe to page through outside the tenant lock."""
        if self._sorted_ids is None:
            self._sorted_ids = tuple(sorted(self.member_ids))
        return self._sorted_ids

    def summary(self) -> dict[str, str]:
        """The shape ``GET /users/{id}/organizations`` lists."""
        return {"id": self.id, "name": self.name, "display_name": self.display_name}

    def details(self) -> dict[str, Any]:
        """The ``GET /organizations/{id}`` body: the summary, with branding and metadata if set."""
        details: dict[str, Any] = dict(self.summary())
        if self.branding is not None:
            details["branding"] = copy.deepcopy(self.branding)
        if self.metadata is not None:
            details["metadata"] = dict(self.metadata)
        return details


@dataclass
class User:
    """A database or social user; the full profile is built when asked, so seeding stays cheap.

    ``connection`` names the identity's connection (None: derived from the id's provider);
    a user who never logged in (``logins_count`` 0) has no ``last_login``, as in Auth0.
    """

    user_id: str
    email: str | None
    name: str | None
    profile_fields: dict[str, Any] = field(default_factory=dict)
    connection: str | None = None
    created_at: str = FIXED_TIMESTAMP
    updated_at: str = FIXED_TIMESTAMP
    logins_count: int = 1

    def profile(self) -> dict[str, Any]:
        """The full ``GET /users/{id}`` body; extra profile fields override the defaults, and a
        field set to None is left out."""
        handle = self.email or self.user_id
        profile = {
            "user_id": self.user_id,
            "email": self.email,
            "email_verified": True,
            "name": self.name,
            "nickname": handle.split("@", 1)[0],
            "picture": _picture(handle),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "identities": [self.identity()],
            "app_metadata": {},
            "user_metadata": {},
        }
        if self.logins_count:
            profile.update(last_login=FIXED_TIMESTAMP, logins_count=self.logins_count)
        profile.update(copy.deepcopy(self.profile_fields))
        return {name: value for name, value in profile.items() if value is not None}

    def identity(self) -> dict[str, Any]:
        return _identity(self.user_id, self.connection)

    @property
    def is_database_user(self) -> bool:
        return self.identity()["provider"] == DATABASE_STRATEGY

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a ``PATCH /users/{id}`` body: documented root attributes are replaced (null
        removes them), metadata is merged (``merge_metadata``), anything else is ignored."""
        for name in METADATA_FIELDS:
            if name in changes:
                current = self.profile().get(name, {})
                self.profile_fields[name] = merge_metadata(current, changes[name])
        for name in UPDATABLE_PROFILE_FIELDS:
            if name not in changes:
                continue
            value = changes[name]
            if name == "email":
                self.email = normalized_email(value, self.is_database_user)
            elif name == "name":
                self.name = value
            else:
                self.profile_fields[name] = value
        self.updated_at = timestamp()

    def member(self) -> dict[str, Any]:
        """The four fields an organization member listing carries."""
        profile = self.profile()
        return {name: profile[name] for name in MEMBER_FIELDS if name in profile}


def merge_metadata(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Auth0 merges metadata at the root level only: a key set to null is deleted, a nested
    object replaces the old one whole, and an empty object removes the metadata completely.
    (auth0.com/docs/manage-users/user-accounts/metadata/manage-metadata-api)"""
    if not patch:
        return {}
    merged = {**current, **copy.deepcopy(dict(patch))}
    return {name: value for name, value in merged.items() if value is not None}


def normalized_email(email: str | None, database_user: bool) -> str | None:
    """Auth0 saves a database user's email in lower case, however it was given (Search Users by
    Email, auth0.com/docs/api/management/v2/users-by-email/get-users-by-email); other identity
    providers' emails are kept as they come."""
    return email.lower() if email and database_user else email


def timestamp(at: float | None = None) -> str:
    """An Auth0 timestamp (ISO 8601, milliseconds, UTC), for ``at`` seconds since the epoch or
    now."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _picture(email: str) -> str:
    initials = email[:2].lower() or "xx"
    return f"https://cdn.auth0.com/avatars/{initials}.png"


def _identity(user_id: str, connection: str | None = None) -> dict[str, Any]:
    """Auth0 derives the identity from the id: ``auth0|x`` is a database user, others are social."""
    provider, _, provider_user_id = user_id.partition("|")
    if not provider_user_id:
        provider, provider_user_id = DATABASE_STRATEGY, user_id
    database = provider == DATABASE_STRATEGY
    if connection is None:
        connection = DATABASE_CONNECTION if database else provider
    return {
        "connection": connection,
        "provider": provider,
        "user_id": provider_user_id,
        "isSocial": not database,
    }
