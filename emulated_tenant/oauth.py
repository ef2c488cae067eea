"""``POST /oauth/token`` for the client-credentials grant, with Auth0's error answers."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from .errors import OAuthError
from .routing import Call

if TYPE_CHECKING:
    from .tenant import Tenant

CLIENT_GRANTS_DOCS = "https://auth0.com/docs/api/v2#!/Client_Grants/post_client_grants"


def client_credentials_grant(tenant: Tenant, call: Call) -> dict[str, Any]:
    """Issue an access token to an authenticated client for an audience it has a grant for.

    :raise 401 access_denied: unknown client or wrong secret.
    :raise 403 unauthorized_client: any grant type other than client_credentials.
    :raise 403 access_denied: unknown audience or no client grant for it.
    :raise 400 invalid_request: missing grant_type, or an organization the client may not use.
    """
    params = call.body
    if not params.get("grant_type"):
        raise OAuthError(400, "invalid_request", "Missing required parameter: grant_type")
    client = tenant.client(params.get("client_id", ""))
    secret = params.get("client_secret", "")
    if client is None or not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
        raise OAuthError(401, "access_denied", "Unauthorized")
    if params["grant_type"] != "client_credentials":
        grant_type = params["grant_type"]
        description = f"Grant type '{grant_type}' not allowed for the client."
        raise OAuthError(403, "unauthorized_client", description)
    audience = params.get("audience", "")
    api = tenant.api(audience) if audience else None
    if api is None:
        description = f"Service not found: {audience}" if audience else "No audience"
        raise OAuthError(403, "access_denied", description)
    granted = client.scopes_for(audience, tenant.management_audience)
    if granted is None:
        description = (
            f'Client is not authorized to access "{audience}". You need to create a '
            f'"client-grant" associated to this API. See: {CLIENT_GRANTS_DOCS}'
        )
        raise OAuthError(403, "access_denied", description)
    org_id = _allowed_organization(tenant, client.organizations, params.get("organization"))
    scopes = _granted_scopes(granted, params.get("scope"))
    token = tenant.issue_token(
        client.client_id, audience, org_id, scope=scopes, expires_in=api.token_lifetime
    )
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": api.token_lifetime,
        "scope": " ".join(scopes),
    }


def _allowed_organization(tenant: Tenant, allowed: set[str], requested: str | None) -> str | None:
    """The org id for ``org_id``; Auth0 accepts an organization's id or its name here."""
    if not requested:
        return None
    organization = tenant.organization(requested)
    if organization is None or organization.id not in allowed:
        description = f'Client is not authorized to access organization "{requested}".'
        raise OAuthError(400, "invalid_request", description)
    return organization.id


def _granted_scopes(granted: list[str], requested: str | None) -> list[str]:
    """All granted scopes, or only the requested ones among them when ``scope`` is sent."""
    if requested is None:
        return list(granted)
    wanted = set(requested.split())
    return [scope for scope in granted if scope in wanted]
