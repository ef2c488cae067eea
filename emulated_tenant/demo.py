"""The deterministic demo tenant used by ``make demo`` and the tests, and its proxy config."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests

from auth0_proxy.core.auth0_api import GROUPS

from .tenant import DATABASE_CONNECTION_ID, GOOGLE_CONNECTION_ID, MANAGEMENT_API, Tenant

API_AUDIENCE = "https://m2m-proxy.example.com"
#: what edge-acme and edge-globex are granted
API_SCOPES = ["read:users"]
#: the proxy's write permissions, granted to edge-acme-admin only
WRITE_SCOPES = [
    "create:organization_invitations",
    "delete:organization_members",
    "create:organization_member_roles",
    "delete:organization_member_roles",
    "update:users",
    "create:users",
    "delete:users",
]
#: every permission the proxy's API defines
API_PERMISSIONS = ["read:users", "read:organizations", *WRITE_SCOPES]

MGMT_CLIENT_ID = "proxy-mgmt-client"
MGMT_CLIENT_SECRET = "proxy-mgmt-secret"
MGMT_SCOPES = [
    "read:users",
    "read:organization_members",
    "read:organizations",
    "read:organization_member_roles",
    "read:organization_invitations",
    "read:organization_connections",
    "read:events",  # the Events API (events.source events_api)
    "read:client_grants",  # the clients map from Auth0 (client_grants.enabled)
    "read:organization_client_grants",
    "create:organization_members",
    *WRITE_SCOPES,
]

ACME_ORG_ID = "org_acme"
GLOBEX_ORG_ID = "org_globex"
ACME_CLIENT_ID = "edge-acme"
ACME_CLIENT_SECRET = "edge-acme-secret"
GLOBEX_CLIENT_ID = "edge-globex"
GLOBEX_CLIENT_SECRET = "edge-globex-secret"
ACME_ADMIN_CLIENT_ID = "edge-acme-admin"
ACME_ADMIN_CLIENT_SECRET = "edge-acme-admin-secret"
# The application invited users log in to (an invitation names one).
PORTAL_CLIENT_ID = "customer-portal"
PORTAL_CLIENT_SECRET = "customer-portal-secret"

SHARED_USER_ID = "auth0|shared-consultant"
ORPHAN_USER_ID = "auth0|orphan-olga"

ORGANIZATIONS = {
    ACME_ORG_ID: ("acme", "Acme Corp"),
    GLOBEX_ORG_ID: ("globex", "Globex Inc"),
}

# (user_id, email, name, organizations)
USERS = [
    ("auth0|alice-acme", "alice@acme.example", "Alice Anders", [ACME_ORG_ID]),
    ("auth0|bob-acme", "bob@acme.example", "Bob Baker", [ACME_ORG_ID]),
    ("auth0|carol-acme", "carol@acme.example", "Carol Chen", [ACME_ORG_ID]),
    ("auth0|dave-acme", "dave@acme.example", "Dave Diaz", [ACME_ORG_ID]),
    ("google-oauth2|erin-acme", "erin@acme.example", "Erin Evans", [ACME_ORG_ID]),
    ("auth0|frank-globex", "frank@globex.example", "Frank Fischer", [GLOBEX_ORG_ID]),
    ("auth0|grace-globex", "grace@globex.example", "Grace Gupta", [GLOBEX_ORG_ID]),
    ("auth0|hank-globex", "hank@globex.example", "Hank Hill", [GLOBEX_ORG_ID]),
    (SHARED_USER_ID, "sam@consulting.example", "Sam Shared", [ACME_ORG_ID, GLOBEX_ORG_ID]),
    (ORPHAN_USER_ID, "olga@nowhere.example", "Olga Orphan", []),
]

# Branding and metadata, which GET /organizations/{id} shows when set.
ORGANIZATION_DETAILS: dict[str, dict[str, Any]] = {
    ACME_ORG_ID: {
        "branding": {
            "logo_url": "https://acme.example/logo.png",
            "colors": {"primary": "#0059d6", "page_background": "#ffffff"},
        },
        "metadata": {"tier": "enterprise"},
    },
}

# (role_id, name, description)
ROLES = [
    ("rol_viewer", "Viewer", "Reads the organization's users"),
    ("rol_editor", "Editor", "Updates the organization's users"),
    ("rol_admin", "Admin", "Manages the organization's members, roles and invitations"),
]
# (org_id, user_id, role ids)
MEMBER_ROLES = [
    (ACME_ORG_ID, "auth0|alice-acme", ["rol_viewer", "rol_editor"]),
    (ACME_ORG_ID, SHARED_USER_ID, ["rol_viewer"]),
    (GLOBEX_ORG_ID, "auth0|frank-globex", ["rol_admin"]),
    (GLOBEX_ORG_ID, SHARED_USER_ID, ["rol_viewer"]),
]
# (invitation_id, org_id, inviter, invitee, roles, connection_id, created_at)
INVITATIONS = [
    (
        "uinv_acme0000000001",
        ACME_ORG_ID,
        "Alice Anders",
        "new.hire@acme.example",
        ["rol_viewer"],
        DATABASE_CONNECTION_ID,
        datetime(2024, 1, 10, 9, 0, tzinfo=UTC),
    ),
    (
        "uinv_acme0000000002",
        ACME_ORG_ID,
        "Alice Anders",
        "contractor@partner.example",
        [],
        None,
        datetime(2024, 1, 12, 14, 30, tzinfo=UTC),
    ),
    (
        "uinv_globex00000001",
        GLOBEX_ORG_ID,
        "Frank Fischer",
        "intern@globex.example",
        ["rol_editor"],
        GOOGLE_CONNECTION_ID,
        datetime(2024, 1, 11, 8, 15, tzinfo=UTC),
    ),
    (
        "uinv_globex00000002",
        GLOBEX_ORG_ID,
        "Grace Gupta",
        "auditor@audit.example",
        [],
        None,
        datetime(2024, 1, 13, 16, 45, tzinfo=UTC),
    ),
]

EDGE_CLIENTS = {
    ACME_CLIENT_ID: (ACME_CLIENT_SECRET, ACME_ORG_ID),
    GLOBEX_CLIENT_ID: (GLOBEX_CLIENT_SECRET, GLOBEX_ORG_ID),
}


def demo_tenant() -> Tenant:
    """Two organizations with a shared member and an org-less user, roles held in them, their
    enabled connections and pending invitations; the proxy's API, the proxy's management client,
    one edge client per organization and a writing one for Acme."""
    tenant = Tenant()
    tenant.add_api(API_AUDIENCE, scopes=API_PERMISSIONS)
    for org_id, (name, display_name) in ORGANIZATIONS.items():
        tenant.add_organization(org_id, name, display_name, **ORGANIZATION_DETAILS.get(org_id, {}))
    for user_id, email, name, organizations in USERS:
        tenant.add_user(user_id, email, name, organizations=organizations)
    add_clients(tenant)
    add_access_control(tenant)
    return tenant


def add_clients(tenant: Tenant) -> None:
    """The proxy's management client, the edge clients and the application invitees log in to."""
    tenant.add_client(MGMT_CLIENT_ID, MGMT_CLIENT_SECRET, grants={MANAGEMENT_API: MGMT_SCOPES})
    for client_id, (secret, org_id) in EDGE_CLIENTS.items():
        grants = {API_AUDIENCE: API_SCOPES}
        tenant.add_client(client_id, secret, grants=grants, organizations=[org_id])
    admin_grants = {API_AUDIENCE: ["read:users", *WRITE_SCOPES]}
    tenant.add_client(
        ACME_ADMIN_CLIENT_ID, ACME_ADMIN_CLIENT_SECRET, admin_grants, organizations=[ACME_ORG_ID]
    )
    tenant.add_client(PORTAL_CLIENT_ID, PORTAL_CLIENT_SECRET)


def add_access_control(tenant: Tenant) -> None:
    """Roles and who holds them, both connections enabled for both organizations (no membership
    on login), and two invitations per organization."""
    for role_id, name, description in ROLES:
        tenant.add_role(role_id, name, description)
    for org_id in ORGANIZATIONS:
        tenant.enable_connection(org_id, DATABASE_CONNECTION_ID, assign_membership_on_login=False)
        tenant.enable_connection(org_id, GOOGLE_CONNECTION_ID)
    for org_id, user_id, role_ids in MEMBER_ROLES:
        tenant.assign_member_roles(org_id, user_id, role_ids)
    for invitation_id, org_id, inviter, invitee, roles, connection_id, created in INVITATIONS:
        tenant.add_invitation(
            org_id,
            invitee,
            PORTAL_CLIENT_ID,
            inviter,
            connection_id=connection_id,
            roles=roles,
            invitation_id=invitation_id,
            ticket_id=f"ticket-{invitation_id.removeprefix('uinv_')}",
            created_at=created.timestamp(),
        )


# A budget block for the proxy that no test or benchmark reaches unless it means to: they measure
# other things than the budget (which `make simulate` measures), and are not paced by it.
UNBOUNDED_BUDGET = {
    "limits": {group: {"burst": 100_000, "per_minute": 1_000_000} for group in GROUPS},
}
# Likewise, no per-client rate limits: tests of them and `make demo` set their own.
UNLIMITED_RATES = {
    "client": {"requests": {"per_minute": 0}, "upstream": {"per_minute": 0}},
    "global": {"per_minute": 0},
}


def proxy_config(tenant: Tenant) -> dict[str, Any]:
    """The proxy's config.json for ``tenant`` (its domain must be set: start the server first)."""
    return {
        "clients": {client_id: org_id for client_id, (_, org_id) in EDGE_CLIENTS.items()},
        "auth0": {
            "domain": tenant.domain,
            "mgmt_client_id": MGMT_CLIENT_ID,
            "mgmt_client_secret": MGMT_CLIENT_SECRET,
            "management_audience": tenant.management_audience,
            "api_audience": API_AUDIENCE,
        },
        "proxy": {"metrics_per_client": True},  # the demo shows a client's series
    }


def edge_token(
    base_url: str,
    ca_bundle: str,
    client_id: str = ACME_CLIENT_ID,
    secret: str = ACME_CLIENT_SECRET,
    organization: str | None = None,
) -> str:
    """An M2M token for the proxy's API, as an edge client (``edge-acme`` by default) gets one
    from the tenant at ``base_url`` (client credentials over HTTPS, trusting ``ca_bundle``),
    naming ``organization`` if given."""
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
        "audience": API_AUDIENCE,
    }
    if organization is not None:
        form["organization"] = organization
    response = requests.post(f"{base_url}/oauth/token", data=form, verify=ca_bundle, timeout=10)
    response.raise_for_status()
    return response.json()["access_token"]
