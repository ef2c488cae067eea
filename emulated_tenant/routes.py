"""Every route the emulated tenant serves, in one table: endpoint (method and path) → handler.

A route under /api/v2 is a Management API route: bearer-protected, rate limited and validated
against its operation in management_api_spec.json, which must exist (checked at import).
"""

from __future__ import annotations

from . import discovery, management, oauth
from .query import operations
from .routing import Route, RouteTable

ROUTES = RouteTable(
    [
        Route("POST /oauth/token", oauth.client_credentials_grant),
        Route("GET /.well-known/jwks.json", discovery.jwks),
        Route("GET /.well-known/openid-configuration", discovery.openid_configuration),
        Route("GET /api/v2/organizations/{id}/members", management.organization_members),
        Route("GET /api/v2/users/{id}", management.user),
        Route("GET /api/v2/users/{id}/organizations", management.user_organizations),
        Route("GET /api/v2/users", management.users),
    ],
    spec_operations=operations(),
)

#: the keys ``Tenant.inject_fault``, ``Tenant.counts`` and the request log use
ENDPOINTS = ROUTES.endpoints
