"""What the tenant publishes for token verifiers: its JWKS and its OpenID configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .routing import Call

if TYPE_CHECKING:
    from .tenant import Tenant


def jwks(tenant: Tenant, call: Call) -> dict[str, Any]:
    """``/.well-known/jwks.json``: the public halves of every published signing key."""
    return tenant.jwks()


def openid_configuration(tenant: Tenant, call: Call) -> dict[str, Any]:
    """``/.well-known/openid-configuration``: where a verifier finds the JWKS and token endpoint."""
    return {
        "issuer": tenant.issuer,
        "jwks_uri": f"{tenant.issuer}.well-known/jwks.json",
        "token_endpoint": f"{tenant.issuer}oauth/token",
        "grant_types_supported": ["client_credentials"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
