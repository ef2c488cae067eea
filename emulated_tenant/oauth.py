"""``POST /oauth/token`` for the client-credentials grant, with Auth0's error answers."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from .errors import OAuthError
from .records import ClientGrant
from .routing import Call

if TYPE_CHECKING:
    from .tenant import Tenant

CLIENT_GRANTS_DOCS = "https://auth0.com/docs/api/v2#!/Client_Grants/post_client_grants"
# Auth0 publishes no wording for a client-credentials request that breaks its grant's
# organization_usage; these follow its login's "parameter organization is required for this
# client" (the /authorize answer for an application that requires organizations).
ORGANIZATION_REQUIRED = "parameter organization is required for this client grant"
ORGANIZATION_NOT_ALLOWED = "parameter organization is not allowed for this client grant"


def client_credentials_grant(tenant: Tenant, call: Call) -> dict[str, Any]:
    """Issue an access token to an authenticated client for an audience it has a grant for.

    :raise 401 access_denied: unknown client or wrong secret.
    :raise 403 unauthorized_client: any grant type other than client_credentials.
    :raise 403 access_denied: unknown audience or no client grant for it.
    :raise 400 invalid_request: missing grant_type, or the organization rules of the client's
        grant for the audience broken (``_token_organization``).
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
    grant = tenant.client_grant_for(client.client_id, audience)
    if grant is None:
        description = (
            f'Client is not authorized to access "{audience}". You need to create a '
            f'"client-grant" associated to this API. See: {CLIENT_GRANTS_DOCS}'
        )
        raise OAuthError(403, "access_denied", description)
    org_id = _token_organization(tenant, grant, params.get("organization"))
    scopes = _granted_scopes(grant.scope, params.get("scope"))
    token = tenant.issue_token(
        client.client_id, audience, org_id, scope=scopes, expires_in=api.token_lifetime
    )
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": api.token_lifetime,
        "scope": " ".join(scopes),
    }


def _token_organization(tenant: Tenant, grant: ClientGrant, requested: str | None) -> str | None:
    """The token's ``org_id``: the organization requested (by id or by name, as Auth0 accepts)
    when the grant lets the client use it, else None when none was requested.

    The grant's ``organization_usage`` says whether the client must not (deny), may (allow) or
    must (require) name one, and it may name only organizations the grant is associated with,
    or any with ``allow_any_organization``
    (auth0.com/docs/manage-users/organizations/organizations-for-m2m-applications).

    :raise 400 invalid_request: an organization with ``deny``, none with ``require``, or an
        unknown one or one the grant is not authorized for.
    """
    if not requested:
        if grant.organization_usage == "require":
            raise OAuthError(400, "invalid_request", ORGANIZATION_REQUIRED)
        return None
    if grant.organization_usage == "deny":
        raise OAuthError(400, "invalid_request", ORGANIZATION_NOT_ALLOWED)
    organization = tenant.organization(requested)
    if organization is None or not grant.may_use(organization.id):
        description = f'Client is not authorized to access organization "{requested}".'
        raise OAuthError(400, "invalid_request", description)
    return organization.id


def _granted_scopes(granted: list[str], requested: str | None) -> list[str]:
    """All granted scopes, or only the requested ones among them when ``scope`` is sent."""
    if requested is None:
        return list(granted)
    wanted = set(requested.split())
    return [scope for scope in granted if scope in wanted]
