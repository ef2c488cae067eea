"""Every route the emulated tenant serves, in one table: endpoint (method and path) → handler.

A route under /api/v2 is a Management API route: bearer-protected, rate limited and validated
against its operation in management_api_spec.json, which must exist (checked at import).
"""

from __future__ import annotations

from . import discovery, management, oauth, sse, writes
from .query import operations
from .routing import Route, RouteTable

ORG = "/api/v2/organizations/{id}"
CLIENT_GRANTS = "/api/v2/client-grants"

ROUTES = RouteTable(
    [
        Route("POST /oauth/token", oauth.client_credentials_grant),
        Route("GET /.well-known/jwks.json", discovery.jwks),
        Route("GET /.well-known/openid-configuration", discovery.openid_configuration),
        Route(f"GET {ORG}", management.organization),
        Route(f"GET {ORG}/members", management.organization_members),
        Route(f"POST {ORG}/members", writes.add_members, status=204),
        Route(f"DELETE {ORG}/members", writes.remove_members, status=204),
        Route(f"GET {ORG}/members/{{user_id}}/roles", management.organization_member_roles),
        Route(f"POST {ORG}/members/{{user_id}}/roles", writes.assign_member_roles, status=204),
        Route(f"DELETE {ORG}/members/{{user_id}}/roles", writes.remove_member_roles, status=204),
        Route(f"GET {ORG}/invitations", management.organization_invitations),
        # The spec says 200; Auth0 answers 201 Created (as auth0/auth0-java's
        # OrganizationsEntityTest.shouldCreateInvitation has its mock tenant answer).
        Route(f"POST {ORG}/invitations", writes.create_invitation, status=201),
        Route(f"GET {ORG}/invitations/{{invitation_id}}", management.organization_invitation),
        Route(f"GET {ORG}/enabled_connections", management.organization_enabled_connections),
        Route(f"GET {ORG}/client-grants", management.organization_client_grants),
        Route(f"POST {ORG}/client-grants", writes.associate_client_grant, status=201),
        Route(
            f"DELETE {ORG}/client-grants/{{grant_id}}", writes.dissociate_client_grant, status=204
        ),
        Route(f"GET {CLIENT_GRANTS}", management.client_grants),
        Route(f"GET {CLIENT_GRANTS}/{{id}}/organizations", management.client_grant_organizations),
        Route("GET /api/v2/users/{id}", management.user),
        Route("PATCH /api/v2/users/{id}", writes.update_user),
        Route("DELETE /api/v2/users/{id}", writes.delete_user, status=204),
        Route("GET /api/v2/users/{id}/organizations", management.user_organizations),
        Route("GET /api/v2/users", management.users),
        Route("POST /api/v2/users", writes.create_user, status=201),
        Route("GET /api/v2/users-by-email", management.users_by_email),
        Route("GET /api/v2/events", sse.subscribe_events),
    ],
    spec_operations=operations(),
)

#: the keys ``Tenant.inject_fault``, ``Tenant.counts`` and the request log use
ENDPOINTS = ROUTES.endpoints
