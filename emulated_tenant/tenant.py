"""The emulated tenant's state and the rules that act on it.

Tests mutate a tenant while its threaded server answers requests, so every read and write of
shared state goes through one re-entrant lock. Readers get snapshots (tuples, fresh dicts).
"""

from __future__ import annotations

import itertools
import secrets
import string
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from joserfc.jwk import RSAKey

from . import tokens
from .errors import (
    Auth0Error,
    client_grant_already_associated,
    client_grant_not_associated,
    generic_error,
    inexistent_client_grant,
    inexistent_organization,
    inexistent_user,
    invalid_body,
    payload_error,
)
from .events import EventLog, StreamSettings
from .ratelimit import MANAGEMENT, PlanLimits, RateLimitDecision, TokenBucket, take_from_each
from .records import (
    AUTH0_PROFILE,
    DATABASE_CONNECTION,
    DATABASE_STRATEGY,
    DEFAULT_TOKEN_LIFETIME,
    MANAGEMENT_API,
    TOKEN_PROFILES,
    Api,
    Client,
    ClientGrant,
    Connection,
    EnabledConnection,
    Invitation,
    Organization,
    Role,
    User,
    check_organization_usage,
    normalized_email,
    timestamp,
)
from .routes import ENDPOINTS
from .webhooks import Authorization, WebhookStream

#: How ``GET /users/{id}/organizations`` answers for a user that does not exist.
UNKNOWN_USER_ORGANIZATIONS_MODES = ("empty", "404")
#: The connections a new Auth0 tenant starts with; seeded users' identities name them.
DATABASE_CONNECTION_ID = "con_database"
GOOGLE_CONNECTION_ID = "con_google"
DEFAULT_CONNECTIONS = (
    (DATABASE_CONNECTION_ID, DATABASE_CONNECTION, DATABASE_STRATEGY),
    (GOOGLE_CONNECTION_ID, "google-oauth2", "google-oauth2"),
)
#: an invitation's lifetime when ttl_sec is 0 or absent (Auth0's default; the spec caps ttl_sec
#: at 30 days)
INVITATION_TTL = 7 * 86_400
# Auth0 builds the invitation URL on the client's application login URI; emulated clients have
# none, so every invitation points here.
INVITATION_LOGIN_URI = "https://app.example.com/login"
_ID_ALPHABET = string.ascii_letters + string.digits
# Auth0 publishes no wording for these refusals, so the messages are the emulator's; the answer
# is 400 invalid_body, the code Auth0's docs list for a refused body of these writes (the spec
# lists no 404 for POST /organizations/{id}/members nor for the member-roles writes).
UNKNOWN_USERS = "One or more users do not exist."
UNKNOWN_ROLES = "One or more roles do not exist."
NOT_A_MEMBER = "The user is not a member of the organization."


@dataclass
class Fault:
    """An injected misbehaviour for the next ``times`` calls to one endpoint."""

    status: int | None
    times: int
    delay: float
    body: Any
    after: int = 0  # calls that pass untouched before the fault starts
    headers: dict | None = None  # replace the answer's headers of these names

    def error_body(self) -> Any:
        if self.body is not None:
            return self.body
        assert self.status is not None
        return generic_error(self.status).body()


class Tenant:
    """An Auth0 tenant in memory: directory, signing keys, counters, throttling and faults."""

    def __init__(self, domain: str | None = None) -> None:
        self._lock = threading.RLock()
        self._domain = domain
        self._keys = [tokens.generate_signing_key()]
        self._public_keys = tokens.public_key_set(self._keys)
        self._apis: dict[str, Api] = {}
        self._clients: dict[str, Client] = {}
        self._grant_numbers = itertools.count(1)
        self._organizations: dict[str, Organization] = {}
        self._users: dict[str, User] = {}
        self._roles: dict[str, Role] = {}
        self._connections: dict[str, Connection] = {
            connection_id: Connection(connection_id, name, strategy)
            for connection_id, name, strategy in DEFAULT_CONNECTIONS
        }
        self._live_management_tokens: set[str] = set()
        #: seconds a Management API token lives (Auth0's default: a day)
        self.management_token_lifetime = DEFAULT_TOKEN_LIFETIME
        self._revoked_tokens: set[str] = set()
        self._faults: dict[str, deque[Fault]] = {}
        self._rate_limiter: TokenBucket | None = None
        self._plan_limits: PlanLimits | None = None
        self.counts: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self.latency = 0.0
        self._unknown_user_organizations = "empty"
        #: False publishes JWKS keys without ``"alg"``, so only a verifier's own allow-list
        #: can refuse a token signed with the tenant's key under another RSA algorithm
        self.jwks_names_algorithm = True
        #: what changed, as Auth0's Events publish it (events.py)
        self.events = EventLog(lambda: self._domain or "emulated-tenant.local")
        #: how ``GET /api/v2/events`` streams behave (sse.py): tests shorten them
        self.event_settings = StreamSettings()

    @property
    def domain(self) -> str:
        """``host:port`` the tenant answers on; set by TenantServer once its port is known."""
        if self._domain is None:
            raise RuntimeError("tenant domain is not set: start a TenantServer first")
        return self._domain

    @domain.setter
    def domain(self, value: str) -> None:
        with self._lock:
            self._domain = value

    @property
    def issuer(self) -> str:
        return f"https://{self.domain}/"

    @property
    def management_audience(self) -> str:
        return f"https://{self.domain}/api/v2/"

    @property
    def unknown_user_organizations(self) -> str:
        """``"empty"`` (an unknown user has no organizations) or ``"404"`` (inexistent_user):
        Auth0 does not document which, so a client must cope with both."""
        return self._unknown_user_organizations

    @unknown_user_organizations.setter
    def unknown_user_organizations(self, mode: str) -> None:
        if mode not in UNKNOWN_USER_ORGANIZATIONS_MODES:
            raise ValueError(f"expected one of {UNKNOWN_USER_ORGANIZATIONS_MODES}, not {mode!r}")
        self._unknown_user_organizations = mode

    def add_api(
        self,
        identifier: str,
        token_profile: str = AUTH0_PROFILE,
        scopes: Iterable[str] = (),
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
    ) -> Api:
        """Register a custom API whose tokens use ``token_profile`` ("auth0" or "rfc9068")."""
        if token_profile not in TOKEN_PROFILES:
            raise ValueError(f"token_profile must be one of {TOKEN_PROFILES}")
        api = Api(identifier, token_profile, list(scopes), token_lifetime)
        with self._lock:
            self._apis[identifier] = api
        return api

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        grants: Mapping[str, Iterable[str]] | None = None,
        organizations: Iterable[str] = (),
    ) -> Client:
        """Register (or replace) an M2M client with client grants ``{audience: [scopes]}``.

        ``MANAGEMENT_API`` as an audience stands for this tenant's Management API audience. The
        client may use ``organizations`` for every other audience: those grants are
        ``organization_usage: "allow"`` and associated with them (``add_client_grant`` and
        ``associate_client_grant`` set anything else up).
        """
        org_ids = set(organizations)
        client = Client(client_id, client_secret)
        with self._lock:
            self._clients[client_id] = client
            for audience, scopes in (grants or {}).items():
                for_organizations = bool(org_ids) and self._grant_key(audience) != MANAGEMENT_API
                grant = self.add_client_grant(
                    client_id,
                    audience,
                    scopes,
                    organization_usage="allow" if for_organizations else "deny",
                )
                if for_organizations:
                    grant.organization_ids.update(org_ids)
        return client

    def add_client_grant(
        self,
        client_id: str,
        audience: str,
        scopes: Iterable[str] = (),
        *,
        organization_usage: str = "deny",
        allow_any_organization: bool = False,
    ) -> ClientGrant:
        """Grant the client ``scopes`` of the API ``audience`` (``MANAGEMENT_API``: this tenant's
        Management API), associated with no organization yet.

        :raise ValueError: unknown client, a grant for that client and audience exists already,
            or an ``organization_usage`` other than deny, allow or require.
        """
        check_organization_usage(organization_usage)
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                raise ValueError(f"no client {client_id!r}")
            key = self._grant_key(audience)
            if key in client.grants:
                raise ValueError(f"client {client_id!r} has a grant for {audience!r} already")
            grant = ClientGrant(
                id=f"cgr_{next(self._grant_numbers):016d}",
                client_id=client_id,
                audience=key,
                scope=list(scopes),
                organization_usage=organization_usage,
                allow_any_organization=allow_any_organization,
            )
            client.grants[key] = grant
            return grant

    def client_grant(self, grant_id: str) -> ClientGrant | None:
        with self._lock:
            return next((g for g in self._client_grants() if g.id == grant_id), None)

    def client_grant_for(self, client_id: str, audience: str) -> ClientGrant | None:
        """The client's grant for ``audience`` (the Management API's by its URL or by
        ``MANAGEMENT_API``), or None."""
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                return None
            return client.grants.get(self._grant_key(audience))

    def update_client_grant(
        self,
        grant_id: str,
        *,
        organization_usage: str | None = None,
        allow_any_organization: bool | None = None,
        scopes: Iterable[str] | None = None,
    ) -> ClientGrant:
        """Change what is given (None keeps it); the grant's associations stay as they are.

        :raise KeyError: unknown grant. :raise ValueError: an unknown ``organization_usage``.
        """
        if organization_usage is not None:
            check_organization_usage(organization_usage)
        with self._lock:
            grant = self._require_client_grant(grant_id)
            if organization_usage is not None:
                grant.organization_usage = organization_usage
            if allow_any_organization is not None:
                grant.allow_any_organization = allow_any_organization
            if scopes is not None:
                grant.scope = list(scopes)
            return grant

    def delete_client_grant(self, grant_id: str) -> None:
        """Remove the grant and its associations: the client gets no more tokens for that API
        (tokens issued already stay valid until they expire, as Auth0's do).

        :raise KeyError: unknown grant.
        """
        with self._lock:
            grant = self._require_client_grant(grant_id)
            grant.organization_ids.clear()
            del self._clients[grant.client_id].grants[grant.audience]

    def associate_client_grant(self, org_id: str, grant_id: str) -> ClientGrant:
        """Authorize the grant's client for the organization (``POST
        /organizations/{id}/client-grants``); it takes effect once the grant allows or requires
        organizations.

        :raise 404 inexistent_organization, 404 inexistent_client_grant (KeyError): unknown ids.
        :raise 409 conflict (ValueError): associated already.
        """
        with self._lock:
            self._require_known_organization(org_id)
            grant = self._require_client_grant(grant_id)
            if org_id in grant.organization_ids:
                raise client_grant_already_associated()
            grant.organization_ids.add(org_id)
            return grant

    def dissociate_client_grant(self, org_id: str, grant_id: str) -> None:
        """Withdraw the authorization (``DELETE /organizations/{id}/client-grants/{grant_id}``):
        no new token of the grant's client carries that organization; issued ones stay valid.

        :raise 404 inexistent_organization, 404 inexistent_client_grant (KeyError): unknown ids,
            or the grant is not associated with the organization.
        """
        with self._lock:
            self._require_known_organization(org_id)
            grant = self._require_client_grant(grant_id)
            if org_id not in grant.organization_ids:
                raise client_grant_not_associated()
            grant.organization_ids.discard(org_id)

    def grant_audience(self, grant: ClientGrant) -> str:
        """The audience the grant's answers show: the Management API's URL for
        ``MANAGEMENT_API`` (once the server has started)."""
        if grant.audience == MANAGEMENT_API and self._domain is not None:
            return self.management_audience
        return grant.audience

    def client_grant_bodies(self) -> list[dict[str, Any]]:
        """Every client grant as ``GET /client-grants`` shows it, ordered by id."""
        with self._lock:
            return [grant.body(self.grant_audience(grant)) for grant in self._client_grants()]

    def client_grant_organizations(self, grant_id: str) -> list[dict[str, Any]] | None:
        """The organizations the grant is associated with (as ``GET /organizations/{id}`` shows
        them), ordered by id; None for an unknown grant."""
        with self._lock:
            grant = self.client_grant(grant_id)
            if grant is None:
                return None
            return [
                self._organizations[org_id].details()
                for org_id in sorted(grant.organization_ids)
                if org_id in self._organizations
            ]

    def organization_client_grants(self, org_id: str) -> list[dict[str, Any]] | None:
        """The grants associated with the organization (``OrganizationClientGrant`` shape),
        ordered by id; None for an unknown organization."""
        with self._lock:
            if org_id not in self._organizations:
                return None
            return [
                grant.organization_grant(self.grant_audience(grant))
                for grant in self._client_grants()
                if org_id in grant.organization_ids
            ]

    def add_organization(
        self,
        org_id: str,
        name: str,
        display_name: str | None = None,
        *,
        branding: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Organization:
        organization = Organization(org_id, name, display_name or name)
        organization.branding = dict(branding) if branding is not None else None
        organization.metadata = dict(metadata) if metadata is not None else None
        with self._lock:
            self._organizations[org_id] = organization
        return organization

    def add_role(self, role_id: str, name: str, description: str = "") -> Role:
        role = Role(role_id, name, description)
        with self._lock:
            self._roles[role_id] = role
        return role

    def add_connection(
        self, connection_id: str, name: str, strategy: str = DATABASE_STRATEGY
    ) -> Connection:
        """Add a connection; strategy ``auth0`` is a database, any other a social or enterprise
        connection (Username-Password-Authentication and google-oauth2 exist from the start)."""
        connection = Connection(connection_id, name, strategy)
        with self._lock:
            self._connections[connection_id] = connection
        return connection

    def enable_connection(
        self,
        org_id: str,
        connection_id: str,
        assign_membership_on_login: bool = False,
        show_as_button: bool = True,
        is_signup_enabled: bool = False,
    ) -> EnabledConnection:
        """Let the organization's members log in with the connection.

        :raise KeyError: no such organization or connection.
        """
        with self._lock:
            organization = self._require_organization(org_id)
            enabled = EnabledConnection(
                self._connections[connection_id],
                assign_membership_on_login,
                show_as_button,
                is_signup_enabled,
            )
            organization.enabled_connections[connection_id] = enabled
            return enabled

    def add_invitation(
        self,
        org_id: str,
        invitee_email: str,
        client_id: str | None = None,
        inviter_name: str = "Admin",
        *,
        connection_id: str | None = None,
        roles: Iterable[str] = (),
        app_metadata: Mapping[str, Any] | None = None,
        user_metadata: Mapping[str, Any] | None = None,
        ttl_sec: int = 0,
        invitation_id: str | None = None,
        ticket_id: str | None = None,
        created_at: float | None = None,
    ) -> Invitation:
        """Invite ``invitee_email`` to the organization through ``client_id``'s login (None, for
        seeding only: an invitation naming no client); ``ttl_sec`` 0 means Auth0's default of 7
        days.

        :raise 404 inexistent_organization, 404 inexistent_client: unknown organization or client.
        :raise 400 invalid_body: a connection the organization has not enabled, unknown roles.
        """
        role_ids = tuple(roles)
        with self._lock:
            organization = self._require_known_organization(org_id)
            if client_id is not None and client_id not in self._clients:
                raise Auth0Error(404, "The client does not exist", "inexistent_client")
            if connection_id is not None and connection_id not in organization.enabled_connections:
                raise invalid_body("The connection is not enabled for this organization.")
            self._require_roles(role_ids)
            created = time.time() if created_at is None else created_at
            ticket_id = ticket_id or _random_id(32)
            query = {"invitation": ticket_id, "organization": org_id}
            invitation = Invitation(
                id=invitation_id or f"uinv_{_random_id(16)}",
                organization_id=org_id,
                inviter_name=inviter_name,
                invitee_email=invitee_email,
                client_id=client_id,
                invitation_url=f"{INVITATION_LOGIN_URI}?"
                + urlencode({**query, "organization_name": organization.name}),
                ticket_id=ticket_id,
                created_at=timestamp(created),
                expires_at=timestamp(created + (ttl_sec or INVITATION_TTL)),
                connection_id=connection_id,
                roles=role_ids,
                app_metadata=dict(app_metadata or {}),
                user_metadata=dict(user_metadata or {}),
            )
            organization.invitations[invitation.id] = invitation
            return invitation

    def add_user(
        self,
        user_id: str,
        email: str,
        name: str | None = None,
        organizations: Iterable[str] = (),
        **profile_fields: Any,
    ) -> User:
        """Add (or replace) a user and make them a member of ``organizations``."""
        user = User(user_id, email, name or email, dict(profile_fields))
        with self._lock:
            self._users[user_id] = user
            for org_id in organizations:
                self.add_member(org_id, user_id)
        return user

    def delete_user(self, user_id: str) -> None:
        """Remove a user and their memberships, as deleting them in Auth0 does.

        :raise KeyError: no such user.
        """
        with self._lock:
            profile = self._require_user(user_id).profile()
            del self._users[user_id]
            for organization in self._organizations.values():
                if user_id in organization.member_ids:
                    organization.remove_member(user_id)
            self.events.record("user.deleted", profile)

    def delete_organization(self, org_id: str) -> None:
        """Remove an organization with its memberships, member roles, invitations and client-grant
        associations: one ``organization.deleted`` event (no ``organization.member.deleted`` for
        its members).

        :raise KeyError: no such organization.
        """
        with self._lock:
            organization = self._require_organization(org_id)
            del self._organizations[org_id]
            for grant in self._client_grants():
                grant.organization_ids.discard(org_id)
            self.events.record("organization.deleted", _deleted_organization(organization))

    def cut_event_streams(self) -> None:
        """End every open ``GET /api/v2/events`` stream at once, as a dropped connection
        would: clients reconnect with the last offset they got."""
        self.events.cut_streams()

    def add_event_stream(
        self,
        endpoint: str,
        authorization: Authorization,
        *,
        event_types: Iterable[str] | None = None,
        verify: bool | str = True,
    ) -> WebhookStream:
        """Push each event recorded from now on to a webhook, as an Auth0 Event Stream does
        (webhooks.py): ``authorization`` is ``{"method": "bearer", "token"}`` or ``{"method":
        "basic", "username", "password"}``; ``verify`` as ``requests`` takes it. ``stop()`` it.
        """
        return WebhookStream(
            self.events, endpoint, authorization, event_types=event_types, verify=verify
        )

    def add_member(self, org_id: str, user_id: str) -> None:
        with self._lock:
            self._require_user(user_id)
            organization = self._require_organization(org_id)
            self._joined(organization, [user_id])

    def remove_member(self, org_id: str, user_id: str) -> None:
        """End a membership, and with it the member's roles in that organization."""
        with self._lock:
            self._left(self._require_organization(org_id), [user_id])

    def _joined(self, organization: Organization, user_ids: list[str]) -> None:
        """Make the users members (under the lock), each new one an event."""
        new = [user_id for user_id in user_ids if user_id not in organization.member_ids]
        organization.add_members(user_ids)
        for user_id in new:
            self.events.record("organization.member.added", _membership(organization, user_id))

    def _left(self, organization: Organization, user_ids: Iterable[str]) -> None:
        """End the users' memberships (under the lock), each that was one an event."""
        for user_id in user_ids:
            if user_id in organization.member_ids:
                organization.remove_member(user_id)
                self.events.record(
                    "organization.member.deleted", _membership(organization, user_id)
                )

    def add_members(self, org_id: str, user_ids: Iterable[str]) -> None:
        """``POST /organizations/{id}/members``: all the users join, or none does.

        :raise 404 inexistent_organization. :raise 400 invalid_body: an unknown user.
        """
        ids = list(user_ids)
        with self._lock:
            organization = self._require_known_organization(org_id)
            if any(user_id not in self._users for user_id in ids):
                raise invalid_body(UNKNOWN_USERS)
            self._joined(organization, ids)

    def remove_members(self, org_id: str, user_ids: Iterable[str]) -> None:
        """``DELETE /organizations/{id}/members``: the users (and their roles there) leave;
        ids that are not members are ignored.

        :raise 404 inexistent_organization.
        """
        with self._lock:
            self._left(self._require_known_organization(org_id), user_ids)

    def assign_member_roles(self, org_id: str, user_id: str, role_ids: Iterable[str]) -> None:
        """Give a member roles in the organization (assigning a held role again is a no-op).

        :raise 404 inexistent_organization. :raise 400 invalid_body: not a member, unknown role.
        """
        roles = tuple(role_ids)
        with self._lock:
            organization = self._require_membership(org_id, user_id)
            self._require_roles(roles)
            held = organization.member_roles.setdefault(user_id, set())
            for role_id in dict.fromkeys(role for role in roles if role not in held):
                held.add(role_id)
                self._role_event(
                    "organization.member.role.assigned", organization, user_id, role_id
                )

    def remove_member_roles(self, org_id: str, user_id: str, role_ids: Iterable[str]) -> None:
        """Take roles from a member; roles the member does not hold are ignored.

        :raise 404 inexistent_organization. :raise 400 invalid_body: not a member.
        """
        with self._lock:
            organization = self._require_membership(org_id, user_id)
            held = organization.member_roles.get(user_id, set())
            for role_id in dict.fromkeys(role for role in role_ids if role in held):
                held.discard(role_id)
                self._role_event("organization.member.role.deleted", organization, user_id, role_id)

    def _role_event(
        self, event_type: str, organization: Organization, user_id: str, role_id: str
    ) -> None:
        role = self._roles[role_id]
        membership = _membership(organization, user_id)
        self.events.record(event_type, {**membership, "role": {"id": role.id, "name": role.name}})

    def member_roles(self, org_id: str, user_id: str) -> list[dict[str, str]] | None:
        """The user's roles in the organization by name ([] for a non-member), or None when the
        organization does not exist."""
        with self._lock:
            organization = self._organizations.get(org_id)
            if organization is None:
                return None
            return [role.body() for role in self._member_roles(organization, user_id)]

    def member_role_summaries(self, org_id: str, user_id: str) -> list[dict[str, str]]:
        """The ``roles`` a member listing shows for the user: id and name of each."""
        with self._lock:
            organization = self._organizations.get(org_id)
            if organization is None:
                return []
            return [role.member_role() for role in self._member_roles(organization, user_id)]

    def organization_details(self, org_id: str) -> dict[str, Any] | None:
        """The ``GET /organizations/{id}`` body (by id only), or None."""
        with self._lock:
            organization = self._organizations.get(org_id)
            return organization.details() if organization else None

    def enabled_connections(self, org_id: str) -> list[dict[str, Any]] | None:
        """The organization's enabled connections in the order they were enabled, or None."""
        with self._lock:
            organization = self._organizations.get(org_id)
            if organization is None:
                return None
            return [enabled.body() for enabled in organization.enabled_connections.values()]

    def invitations(self, org_id: str) -> list[dict[str, Any]] | None:
        """The organization's invitations, oldest first (ties by id), or None."""
        with self._lock:
            organization = self._organizations.get(org_id)
            if organization is None:
                return None
            ordered = sorted(organization.invitations.values(), key=_invitation_order)
            return [invitation.body() for invitation in ordered]

    def invitation(self, org_id: str, invitation_id: str) -> dict[str, Any] | None:
        """One invitation of the organization, or None (for an unknown organization too)."""
        with self._lock:
            organization = self._organizations.get(org_id)
            invitation = organization.invitations.get(invitation_id) if organization else None
            return invitation.body() if invitation else None

    def seed_organization(self, org_id: str, count: int, prefix: str = "member") -> list[str]:
        """Add ``count`` generated members ``auth0|<prefix>-NNNNN`` (ids sort numerically).

        Seeding sets the state a test starts from, so it publishes no events.
        """
        width = max(5, len(str(count)))
        ids = [f"auth0|{prefix}-{number:0{width}d}" for number in range(count)]
        with self._lock:
            organization = self._require_organization(org_id)
            for user_id in ids:
                email = f"{user_id.split('|', 1)[1]}@example.com"
                self._users.setdefault(user_id, User(user_id, email, email))
            organization.add_members(ids)
        return ids

    def organization(self, org_id_or_name: str) -> Organization | None:
        """An organization by id, or by name as Auth0's ``organization`` parameter allows."""
        with self._lock:
            if org_id_or_name in self._organizations:
                return self._organizations[org_id_or_name]
            for organization in self._organizations.values():
                if organization.name == org_id_or_name:
                    return organization
            return None

    def member_ids(self, org_id: str) -> tuple[str, ...] | None:
        """Sorted member ids of an organization, or None when it does not exist."""
        with self._lock:
            organization = self._organizations.get(org_id)
            return organization.sorted_member_ids() if organization else None

    def members(self, user_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Member listings for these ids (ids of users no longer present are skipped)."""
        with self._lock:
            return [self._users[uid].member() for uid in user_ids if uid in self._users]

    def user_profile(self, user_id: str) -> dict[str, Any] | None:
        with self._lock:
            user = self._users.get(user_id)
            return user.profile() if user else None

    def user_profiles(self) -> list[dict[str, Any]]:
        """Every user's profile, ordered by user_id."""
        with self._lock:
            return [self._users[uid].profile() for uid in sorted(self._users)]

    def users_by_email(self, email: str) -> list[dict[str, Any]]:
        """Profiles whose email is exactly ``email``, ordered by user_id. Auth0 matches exactly
        and case-sensitively ("Retrieve Users with Get Users by Email Endpoint"); it stores a
        database user's email in lower case, so that is the case to search with."""
        with self._lock:
            return [
                self._users[uid].profile()
                for uid in sorted(self._users)
                if self._users[uid].email == email
            ]

    def create_user(self, connection: str, **attributes: Any) -> dict[str, Any]:
        """``POST /users`` in a database connection: the new profile (``user_id`` is
        ``auth0|<attributes["user_id"] or a generated id>``, the email stored in lower case).

        :raise 400: unknown or non-database connection, email or password missing.
        :raise 409 auth0_idp_error: the id, or the email in that connection, is taken.
        """
        with self._lock:
            database = self._database_connection(connection)
            for required in ("email", "password"):
                if not attributes.get(required):
                    raise payload_error(f"Missing required property: {required}", "")
            email = normalized_email(attributes["email"], database_user=True)
            user_id = f"{DATABASE_STRATEGY}|{attributes.get('user_id') or secrets.token_hex(12)}"
            if user_id in self._users or self._email_taken(database.name, email):
                raise Auth0Error(409, "The user already exists.", "auth0_idp_error")
            now = timestamp()
            user = User(
                user_id,
                email,
                attributes.get("name") or email,
                {"email_verified": False, **_created_profile(attributes)},
                connection=database.name,
                created_at=now,
                updated_at=now,
                logins_count=0,
            )
            self._users[user_id] = user
            return user.profile()

    def update_user(self, user_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /users/{id}``: the updated profile (see ``User.update`` for the rules).

        :raise 404 inexistent_user.
        """
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                raise inexistent_user()
            user.update(changes)
            self.events.record("user.updated", user.profile())
            return user.profile()

    def organizations_of(self, user_id: str) -> list[dict[str, str]]:
        """The organizations ``user_id`` belongs to, ordered by id."""
        with self._lock:
            return [
                org.summary()
                for org_id, org in sorted(self._organizations.items())
                if user_id in org.member_ids
            ]

    def client(self, client_id: str) -> Client | None:
        with self._lock:
            return self._clients.get(client_id)

    def api(self, identifier: str) -> Api | None:
        """A registered API; the Management API is built in and uses the Auth0 profile."""
        with self._lock:
            if identifier == self.management_audience:
                return Api(identifier, AUTH0_PROFILE, [], self.management_token_lifetime)
            return self._apis.get(identifier)

    @property
    def signing_key(self) -> RSAKey:
        """The private key new tokens are signed with (its kid is set)."""
        with self._lock:
            return self._keys[-1]

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The published key set; its keys name RS256 unless ``jwks_names_algorithm`` is off."""
        with self._lock:
            return tokens.public_jwks(self._keys, self.jwks_names_algorithm)

    def rotate_key(self) -> str:
        """Publish a new key and sign with it from now on; old keys stay published."""
        key = tokens.generate_signing_key()
        with self._lock:
            self._keys.append(key)
            self._public_keys = tokens.public_key_set(self._keys)
        return key.kid

    def withdraw_key(self, kid: str) -> None:
        """Stop publishing a key (as after a compromise); the current signing key stays."""
        with self._lock:
            if kid == self._keys[-1].kid:
                raise ValueError("rotate_key() first: the current signing key cannot go")
            self._keys = [key for key in self._keys if key.kid != kid]
            self._public_keys = tokens.public_key_set(self._keys)

    def issue_token(
        self,
        client_id: str,
        audience: str,
        organization: str | None = None,
        *,
        scope: str | Iterable[str] | None = None,
        expires_in: int = DEFAULT_TOKEN_LIFETIME,
        claims: Mapping[str, Any] | None = None,
        header: Mapping[str, Any] | None = None,
        key: RSAKey | None = None,
    ) -> str:
        """Sign a token as /oauth/token would, without checking secrets or grants.

        ``scope`` defaults to the client's grant for ``audience``; ``claims``/``header`` add or
        override entries (None deletes); ``key`` signs with a foreign key. Used to forge tokens:
        ``header={"alg": "RS512"}`` (or RS384, PS256, PS384, PS512) signs with the tenant's
        current key under that algorithm.
        """
        with self._lock:
            api = self.api(audience)
            profile = api.token_profile if api else AUTH0_PROFILE
            signing_key = key or self.signing_key
            base_claims = tokens.token_claims(
                profile=profile,
                issuer=self.issuer,
                client_id=client_id,
                audience=audience,
                scopes=self._scopes_for(client_id, audience, scope),
                organization=organization,
                issued_at=int(time.time()),
                expires_in=expires_in,
            )
            token_header = tokens.token_header(profile, signing_key.kid)
            token = tokens.sign(
                tokens.with_overrides(token_header, header),
                tokens.with_overrides(base_claims, claims),
                signing_key,
            )
            if audience == self.management_audience:
                # Same claims in the same second sign to the same bytes: re-issuing un-revokes.
                self._revoked_tokens.discard(token)
                self._live_management_tokens.add(token)
            return token

    def revoke_management_tokens(self) -> None:
        """Refuse every Management API token issued so far (tokens issued later still work)."""
        with self._lock:
            self._revoked_tokens |= self._live_management_tokens
            self._live_management_tokens.clear()

    def live_management_tokens(self) -> list[str]:
        """Management API tokens issued and not revoked (e.g. to check none leaks into logs)."""
        with self._lock:
            return sorted(self._live_management_tokens)

    def authenticate_management_token(self, token: str) -> dict[str, Any]:
        """The claims of a valid Management API token.

        :raise TokenRejected: forged, foreign, expired, revoked or for another audience.
        """
        with self._lock:
            if token in self._revoked_tokens:
                raise tokens.TokenRejected("Invalid token")
            public_keys = self._public_keys
        return tokens.verify_management_token(
            token,
            public_keys,
            issuer=self.issuer,
            audience=self.management_audience,
            now=int(time.time()),
        )

    def set_rate_limit(self, per_second: float | None, burst: int | None = None) -> None:
        """Throttle all /api/v2 calls with one token bucket; None removes the limit."""
        with self._lock:
            if per_second is None:
                self._rate_limiter = None
            else:
                size = burst if burst is not None else max(1, int(per_second))
                self._rate_limiter = TokenBucket(per_second, size)

    def enforce_plan(self, plan: str | None) -> None:
        """Limit /api/v2 calls as Auth0 does on ``plan`` (``ratelimit.PLANS``: "free",
        "essentials", "professional", "enterprise"), with full buckets: each call spends a token
        of its endpoint group's bucket and of the whole API's. None removes the plan's buckets;
        ``set_rate_limit``'s bucket applies on top either way.

        :raise ValueError: an unknown plan.
        """
        limits = PlanLimits(plan) if plan is not None else None
        with self._lock:
            self._plan_limits = limits

    @property
    def plan(self) -> str | None:
        """The plan whose limits are enforced, if any."""
        return self._plan_limits.plan if self._plan_limits else None

    def take_rate_limit_token(self, group: str = MANAGEMENT) -> RateLimitDecision:
        """A token from every bucket covering a call of ``group`` (``ratelimit.endpoint_group``),
        or none if one is empty: the decision of the bucket that refused, else the tightest."""
        with self._lock:
            buckets = [self._rate_limiter] if self._rate_limiter is not None else []
            if self._plan_limits is not None:
                buckets += self._plan_limits.buckets_for(group)
            return take_from_each(buckets)

    def inject_fault(
        self,
        endpoint: str,
        status: int | None = 503,
        times: int = 1,
        delay: float = 0.0,
        body: Any = None,
        after: int = 0,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``endpoint`` (e.g. ``"GET /api/v2/users/{id}"``)
        answer ``status`` after ``delay`` seconds; ``status=None`` only delays them. ``after``
        lets that many calls pass first (e.g. to fail the third page of a listing); ``headers``
        replace the answer's headers of those names (e.g. an odd ``Retry-After``)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        if status is None and delay <= 0:
            raise ValueError("a fault needs a status, a delay, or both")
        with self._lock:
            self._faults.setdefault(endpoint, deque()).append(
                Fault(status, times, delay, body, after, headers)
            )

    def clear_faults(self) -> None:
        """Drop every injected fault not yet suffered."""
        with self._lock:
            self._faults.clear()

    def take_fault(self, endpoint: str) -> Fault | None:
        """The fault this call must suffer, if any, consuming one of its ``times``."""
        with self._lock:
            pending = self._faults.get(endpoint)
            if not pending:
                return None
            fault = pending[0]
            if fault.after > 0:
                fault.after -= 1
                return None
            fault.times -= 1
            if fault.times <= 0:
                pending.popleft()
            return fault

    def record_request(
        self,
        method: str,
        raw_uri: str,
        endpoint: str | None,
        status: int,
        group: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        """Count an answered request; ``group`` is its Management endpoint group (None outside
        /api/v2), so calls per group per minute can be counted from ``time``."""
        with self._lock:
            if endpoint is not None:
                self.counts[endpoint] += 1
            self.requests.append(
                {
                    "method": method,
                    "raw_uri": raw_uri,
                    "endpoint": endpoint,
                    "status": status,
                    "time": time.time(),
                    "group": group,
                    "user_agent": user_agent,
                }
            )

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def request_ended(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait until no request is being answered (a delayed answer still sleeping would be
        counted in whatever test runs next); whether that happened within ``timeout``."""
        with self._lock:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def reset_counts(self) -> None:
        """Forget counted and recorded requests (in place, so held references see it)."""
        with self._lock:
            self.counts.clear()
            self.requests.clear()

    def _scopes_for(
        self, client_id: str, audience: str, scope: str | Iterable[str] | None
    ) -> list[str]:
        if scope is None:
            grant = self.client_grant_for(client_id, audience)
            return list(grant.scope) if grant is not None else []
        return scope.split() if isinstance(scope, str) else list(scope)

    def _client_grants(self) -> list[ClientGrant]:
        """Every client's grants, ordered by id (under the lock)."""
        grants = [grant for client in self._clients.values() for grant in client.grants.values()]
        return sorted(grants, key=lambda grant: grant.id)

    def _require_client_grant(self, grant_id: str) -> ClientGrant:
        """:raise 404 inexistent_client_grant (a KeyError)."""
        grant = self.client_grant(grant_id)
        if grant is None:
            raise inexistent_client_grant()
        return grant

    def _grant_key(self, audience: str) -> str:
        """The key a client's grants use for ``audience``: ``MANAGEMENT_API`` for this tenant's
        Management API (whose URL is known once the server has started), else the audience."""
        if self._domain is not None and audience == self.management_audience:
            return MANAGEMENT_API
        return audience

    def _require_organization(self, org_id: str) -> Organization:
        organization = self._organizations.get(org_id)
        if organization is None:
            raise KeyError(f"no organization {org_id!r}")
        return organization

    def _require_user(self, user_id: str) -> User:
        user = self._users.get(user_id)
        if user is None:
            raise KeyError(f"no user {user_id!r}")
        return user

    def _require_known_organization(self, org_id: str) -> Organization:
        """:raise 404 inexistent_organization: as the Management API answers."""
        organization = self._organizations.get(org_id)
        if organization is None:
            raise inexistent_organization()
        return organization

    def _require_membership(self, org_id: str, user_id: str) -> Organization:
        organization = self._require_known_organization(org_id)
        if user_id not in organization.member_ids:
            raise invalid_body(NOT_A_MEMBER)
        return organization

    def _require_roles(self, role_ids: Iterable[str]) -> None:
        if any(role_id not in self._roles for role_id in role_ids):
            raise invalid_body(UNKNOWN_ROLES)

    def _member_roles(self, organization: Organization, user_id: str) -> list[Role]:
        held = organization.member_roles.get(user_id, set())
        roles = [self._roles[role_id] for role_id in held if role_id in self._roles]
        return sorted(roles, key=lambda role: (role.name, role.id))

    def _database_connection(self, name: str) -> Connection:
        """:raise 400: no connection of that name, or not a database one."""
        found = [c for c in self._connections.values() if c.name == name]
        if not found:
            raise Auth0Error(400, "The connection does not exist.", "inexistent_connection")
        if not found[0].is_database:
            # Auth0 creates users only in database (and passwordless) connections; its wording
            # for a social one is not published.
            raise Auth0Error(
                400,
                "Users can only be created in database or passwordless connections.",
                "operation_not_supported",
            )
        return found[0]

    def _email_taken(self, connection: str, email: str | None) -> bool:
        return any(
            user.identity()["connection"] == connection and (user.email or "").lower() == email
            for user in self._users.values()
        )


#: what ``POST /users`` keeps besides email, name and the connection (password: never stored)
_CREATED_PROFILE_FIELDS = (
    "email_verified",
    "given_name",
    "family_name",
    "nickname",
    "picture",
    "username",
    "phone_number",
    "phone_verified",
    "blocked",
    "user_metadata",
    "app_metadata",
)


def _created_profile(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {name: attributes[name] for name in _CREATED_PROFILE_FIELDS if name in attributes}


def _invitation_order(invitation: Invitation) -> tuple[str, str]:
    return invitation.created_at, invitation.id


def _random_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


__all__ = ["MANAGEMENT_API", "Fault", "Tenant"]


def _deleted_organization(organization: Organization) -> dict[str, Any]:
    """An ``organization.deleted`` event's ``data.object``: the organization as ``GET
    /organizations/{id}`` shows it, less ``branding``, which the event's schema does not allow
    (``EventStreamCloudEventOrgDeletedObject``: id, name, display_name, metadata)."""
    details = organization.details()
    details.pop("branding", None)
    return details


def _membership(organization: Organization, user_id: str) -> dict[str, Any]:
    """A membership event's ``data.object``."""
    return {
        "organization": {"id": organization.id, "name": organization.name},
        "user": {"user_id": user_id},
    }
