"""The deterministic demo tenant used by ``make demo`` and the tests, and its proxy config."""

from __future__ import annotations

from typing import Any

import requests

from auth0_proxy.budget import GROUPS

from .tenant import MANAGEMENT_API, Tenant

API_AUDIENCE = "https://m2m-proxy.example.com"
API_SCOPES = ["read:users"]

MGMT_CLIENT_ID = "proxy-mgmt-client"
MGMT_CLIENT_SECRET = "proxy-mgmt-secret"
MGMT_SCOPES = ["read:users", "read:organization_members", "read:organizations"]

ACME_ORG_ID = "org_acme"
GLOBEX_ORG_ID = "org_globex"
ACME_CLIENT_ID = "edge-acme"
ACME_CLIENT_SECRET = "edge-acme-secret"
GLOBEX_CLIENT_ID = "edge-globex"
GLOBEX_CLIENT_SECRET = "edge-globex-secret"

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

EDGE_CLIENTS = {
    ACME_CLIENT_ID: (ACME_CLIENT_SECRET, ACME_ORG_ID),
    GLOBEX_CLIENT_ID: (GLOBEX_CLIENT_SECRET, GLOBEX_ORG_ID),
}


def demo_tenant() -> Tenant:
    """Two organizations with a shared member and an org-less user, the proxy's API, the proxy's
    management client, and one edge client per organization."""
    tenant = Tenant()
    tenant.add_api(API_AUDIENCE, scopes=API_SCOPES)
    for org_id, (name, display_name) in ORGANIZATIONS.items():
        tenant.add_organization(org_id, name, display_name)
    for user_id, email, name, organizations in USERS:
        tenant.add_user(user_id, email, name, organizations=organizations)
    tenant.add_client(MGMT_CLIENT_ID, MGMT_CLIENT_SECRET, grants={MANAGEMENT_API: MGMT_SCOPES})
    for client_id, (secret, org_id) in EDGE_CLIENTS.items():
        grants = {API_AUDIENCE: API_SCOPES}
        tenant.add_client(client_id, secret, grants=grants, organizations=[org_id])
    return tenant


# A budget block for the proxy that no test or benchmark reaches unless it means to: they measure
# other things than the budget (which `make simulate` measures), and are not paced by it.
UNBOUNDED_BUDGET = {
    "limits": {group: {"burst": 100_000, "per_minute": 1_000_000} for group in GROUPS},
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
    }


def edge_token(base_url: str, ca_bundle: str) -> str:
    """An M2M token for the proxy's API, as ``edge-acme`` gets one from the tenant at
    ``base_url`` (client credentials over HTTPS, trusting ``ca_bundle``)."""
    response = requests.post(
        f"{base_url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": ACME_CLIENT_ID,
            "client_secret": ACME_CLIENT_SECRET,
            "audience": API_AUDIENCE,
        },
        verify=ca_bundle,
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["access_token"]
