"""The tenant's directory entries: APIs, clients, organizations and users."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AUTH0_PROFILE = "auth0"
RFC9068_PROFILE = "rfc9068"
TOKEN_PROFILES = (AUTH0_PROFILE, RFC9068_PROFILE)
DEFAULT_TOKEN_LIFETIME = 86_400
FIXED_TIMESTAMP = "2024-01-15T09:30:00.000Z"
MEMBER_FIELDS = ("user_id", "email", "picture", "name")
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


@dataclass
class Client:
    """A machine-to-machine application with its client grants and allowed organizations."""

    client_id: str
    client_secret: str
    grants: dict[str, list[str]] = field(default_factory=dict)
    organizations: set[str] = field(default_factory=set)

    def scopes_for(self, audience: str, management_audience: str) -> list[str] | None:
        """The client grant's scopes for ``audience``, or None when there is no grant."""
        if audience in self.grants:
            return list(self.grants[audience])
        if audience == management_audience and MANAGEMENT_API in self.grants:
            return list(self.grants[MANAGEMENT_API])
        return None


@dataclass
class Organization:
    """An Auth0 organization; members are kept sorted on demand because Auth0 pages in id order."""

    id: str
    name: str
    display_name: str
    member_ids: set[str] = field(default_factory=set)
    _sorted_ids: tuple[str, ...] | None = None

    def add_members(self, user_ids: list[str]) -> None:
        self.member_ids.update(user_ids)
        self._sorted_ids = None

    def remove_member(self, user_id: str) -> None:
        self.member_ids.discard(user_id)
        self._sorted_ids = None

    def sorted_member_ids(self) -> tuple[str, ...]:
        """An immutable snapshot, safe to page through outside the tenant lock."""
        if self._sorted_ids is None:
            self._sorted_ids = tuple(sorted(self.member_ids))
        return self._sorted_ids

    def summary(self) -> dict[str, str]:
        """The shape ``GET /users/{id}/organizations`` lists."""
        return {"id": self.id, "name": self.name, "display_name": self.display_name}


@dataclass
class User:
    """A database or social user; the full profile is built when asked, so seeding stays cheap."""

    user_id: str
    email: str
    name: str
    profile_fields: dict[str, Any] = field(default_factory=dict)

    def profile(self) -> dict[str, Any]:
        """The full ``GET /users/{id}`` body; extra profile fields override the defaults."""
        profile = {
            "user_id": self.user_id,
            "email": self.email,
            "email_verified": True,
            "name": self.name,
            "nickname": self.email.split("@", 1)[0],
            "picture": _picture(self.email),
            "created_at": FIXED_TIMESTAMP,
            "updated_at": FIXED_TIMESTAMP,
            "identities": [_identity(self.user_id)],
            "app_metadata": {},
            "user_metadata": {},
            "last_login": FIXED_TIMESTAMP,
            "logins_count": 1,
        }
        profile.update(self.profile_fields)
        return profile

    def member(self) -> dict[str, Any]:
        """The four fields an organization member listing carries."""
        profile = self.profile()
        return {name: profile[name] for name in MEMBER_FIELDS if name in profile}


def _picture(email: str) -> str:
    initials = email[:2].lower() or "xx"
    return f"https://cdn.auth0.com/avatars/{initials}.png"


def _identity(user_id: str) -> dict[str, Any]:
    """Auth0 derives the identity from the id: ``auth0|x`` is a database user, others are social."""
    provider, _, provider_user_id = user_id.partition("|")
    if not provider_user_id:
        provider, provider_user_id = "auth0", user_id
    database = provider == "auth0"
    connection = "Username-Password-Authentication" if database else provider
    return {
        "connection": connection,
        "provider": provider,
        "user_id": provider_user_id,
        "isSocial": not database,
    }
