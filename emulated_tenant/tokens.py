"""Signing access tokens the way Auth0 does, and checking Management API tokens on the way in.

Token profiles (auth0.com/docs/secure/tokens/access-tokens/access-token-profiles):
the Auth0 profile has ``typ: JWT``, ``azp`` and ``gty``; RFC 9068 has ``typ: at+jwt``,
``client_id`` and ``jti`` and no ``gty``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from .records import RFC9068_PROFILE

ALGORITHM = "RS256"
EXPIRED_MESSAGE = "Expired token received for JSON Web Token validation"


class TokenRejected(Exception):
    """The Management API refuses this bearer token; the message is what Auth0 says."""


def generate_signing_key() -> RSAKey:
    """A fresh RSA key with a random kid and no ``alg``: joserfc signs only under the ``alg`` a
    key names, and tests sign RS512 or PS256 tokens with it too. Publishing adds the ``alg``."""
    kid = secrets.token_urlsafe(16)
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"})


def public_jwks(
    keys: Iterable[RSAKey], names_algorithm: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """The ``/.well-known/jwks.json`` document: public halves only, naming RS256 as Auth0's do
    unless ``names_algorithm`` is False (then a verifier cannot lean on the key's ``alg``)."""
    published = [key.as_dict(private=False) for key in keys]
    if names_algorithm:
        published = [{**key, "alg": ALGORITHM} for key in published]
    return {"keys": published}


def token_header(profile: str, kid: str) -> dict[str, Any]:
    typ = "at+jwt" if profile == RFC9068_PROFILE else "JWT"
    return {"alg": ALGORITHM, "typ": typ, "kid": kid}


def token_claims(
    *,
    profile: str,
    issuer: str,
    client_id: str,
    audience: str,
    scopes: list[str],
    organization: str | None,
    issued_at: int,
    expires_in: int,
) -> dict[str, Any]:
    """Client-credentials claims for ``profile``; ``sub`` is ``<client_id>@clients``."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": f"{client_id}@clients",
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + expires_in,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    if organization is not None:
        claims["org_id"] = organization
    if profile == RFC9068_PROFILE:
        claims["client_id"] = client_id
        claims["jti"] = secrets.token_hex(16)
    else:
        claims["gty"] = "client-credentials"
        claims["azp"] = client_id
    return claims


def with_overrides(base: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` updated by ``overrides``, where an override of None deletes the entry."""
    merged = dict(base)
    for name, value in (overrides or {}).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def sign(header: dict[str, Any], claims: dict[str, Any], key: RSAKey) -> str:
    """A compact JWS under whatever algorithm the header names, so tests can forge oddities."""
    algorithm = header.get("alg", ALGORITHM)
    return jwt.encode(header, claims, key, algorithms=[algorithm], default_type=None)


def public_key_set(keys: Iterable[RSAKey]) -> KeySet:
    """The verification keys, built once per rotation rather than per request."""
    return KeySet([RSAKey.import_key(key.as_dict(private=False)) for key in keys])


def verify_management_token(
    token: str, public_keys: KeySet, *, issuer: str, audience: str, now: int
) -> dict[str, Any]:
    """The claims of a token this tenant signed for its Management API.

    :raise TokenRejected: bad signature, unknown kid, wrong issuer or audience, or expired.
    """
    try:
        claims = jwt.decode(token, public_keys, algorithms=[ALGORITHM]).claims
    except (JoseError, ValueError, TypeError):
        raise TokenRejected("Invalid token") from None
    audiences = claims.get("aud")
    audiences = audiences if isinstance(audiences, list) else [audiences]
    if claims.get("iss") != issuer or audience not in audiences:
        raise TokenRejected("Invalid token")
    expires_at = claims.get("exp")
    if not isinstance(expires_at, int | float):
        raise TokenRejected("Invalid token")
    if expires_at <= now:
        raise TokenRejected(EXPIRED_MESSAGE)
    return claims
