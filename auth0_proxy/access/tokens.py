"""Validation of the edge clients' access tokens (RS256 JWTs issued by the tenant).

Both Auth0 access-token profiles are accepted on purpose: the default one (``typ: JWT``, client in
``azp``, ``gty: client-credentials``) and RFC 9068 (``typ: at+jwt``, client in ``client_id``).
Authlib's stock RFC 9068 validator rejects the default profile, so this validator is our own,
built on joserfc (``authlib.jose`` is deprecated).
"""

from __future__ import annotations

import logging
import threading

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2.rfc6749 import UnsupportedTokenTypeError
from authlib.oauth2.rfc6750 import BearerTokenValidator
from flask import Flask, current_app, g
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)

from auth0_proxy.auth0.keys import KeyStore
from auth0_proxy.core import clock
from auth0_proxy.core.errors import (
    APIError,
    InsufficientScope,
    TokenInQueryString,
    TokenMissing,
    TokenRejected,
)

log = logging.getLogger("auth0_proxy.auth")

# RFC 8725 section 3.1: accept only the algorithm the issuer uses. Auth0 signs with RS256.
ALGORITHMS = ["RS256"]
# Auth0 default profile "JWT"; RFC 9068 section 2.1 "at+jwt" (with or without "application/").
TOKEN_TYPES = {"jwt", "at+jwt", "application/at+jwt"}

CLIENT_SUBJECT_SUFFIX = "@clients"
CLIENT_CREDENTIALS = "client-credentials"

MALFORMED = "The access token is malformed."
NOT_BEARER = "Send the access token as 'Authorization: Bearer <access token>'."
UNKNOWN_KEY = "The access token is signed with a key the tenant does not publish."
BAD_SIGNATURE = "The access token's signature is invalid."
NOT_ACCESS_TOKEN = "The token is not an access token."  # noqa: S105 - a message
EXPIRED = "The access token has expired."
NOT_CLIENT_CREDENTIALS = "The access token was not issued to a client (client credentials)."
CLAIM_PROBLEMS = {
    "aud": "The access token is not for this API (audience).",
    "iss": "The access token was not issued by this tenant (issuer).",
    "nbf": "The access token is not valid yet.",
    "iat": "The access token is issued in the future.",
}


def client_id_of(claims: dict) -> str | None:
    """The client the token was issued to: ``client_id`` (RFC 9068), ``azp`` (Auth0 profile),
    else the subject of a client-credentials token, ``<client_id>@clients``."""
    for claim in ("client_id", "azp"):
        if isinstance(claims.get(claim), str) and claims[claim]:
            return claims[claim]
    subject = claims.get("sub")
    if isinstance(subject, str) and subject.endswith(CLIENT_SUBJECT_SUFFIX):
        return subject.removesuffix(CLIENT_SUBJECT_SUFFIX) or None
    return None


class AccessToken(dict):
    """The verified claims of a caller's token, with what the proxy reads of them."""

    def __init__(self, claims: dict):
        super().__init__(claims)
        self.client_id: str = client_id_of(claims)
        self.org_id: str | None = claims.get("org_id")
        self.scopes = frozenset(self.get_scope().split())

    def get_scope(self) -> str:
        """Granted scopes: ``scope`` and, with Auth0 RBAC, ``permissions``."""
        permissions = self.get("permissions")
        permissions = permissions if isinstance(permissions, list) else []
        scope = self.get("scope") if isinstance(self.get("scope"), str) else ""
        return " ".join([scope, *[p for p in permissions if isinstance(p, str)]]).strip()


class Auth0TokenValidator(BearerTokenValidator):
    """Verifies signature, issuer, audience and lifetime of a client-credentials token."""

    def __init__(
        self,
        keys: KeyStore,
        *,
        issuer: str,
        audience: str,
        leeway: int,
        accept_user_tokens: bool = False,
    ):
        super().__init__()
        self.keys = keys
        self.accept_user_tokens = accept_user_tokens
        self.verified = VerifiedTokens()
        self.claims_registry = jwt.JWTClaimsRegistry(
            now=lambda: int(clock.now()),
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
        )

    def authenticate_token(self, token_string: str) -> AccessToken:
        """:raise TokenRejected: any reason the token is not a valid token for this API (401).
        :raise UpstreamUnavailable: the signing keys cannot be had, for a token that may be
            fine (503; a malformed one is still 401).
        """
        unreachable = None
        try:
            key_set = self.keys.key_set()
        except APIError as error:
            key_set, unreachable = None, error
        token = self.verified.recall(token_string, key_set, clock.now())
        if token is None:
            claims = self._verify(token_string, unreachable)
            self._check_claims(claims)
            self._check_client(claims)
            token = AccessToken(claims)
            if key_set is not None:  # else verified by keys fetched meanwhile: no set to tie it to
                self.verified.remember(token_string, key_set, token, self._valid_between(claims))
        return token

    def _valid_between(self, claims: dict) -> tuple[float, float]:
        """When checked claims pass ``_check_claims`` (first second, first second past): only
        ``exp``, ``nbf`` and ``iat`` depend on the time, and the registry has checked they are
        numbers. With the leeway, as the registry applies it."""
        leeway = self.claims_registry.leeway
        not_before = max(claims["iat"], claims.get("nbf", claims["iat"]))
        return not_before - leeway, claims["exp"] + leeway

    def _verify(self, token_string: str, unreachable: APIError | None = None) -> dict:
        """Signature and header; the token's claims if both are right. Should the keys be
        needed and still unreachable, the error is the one the first attempt met."""
        try:
            token = jwt.decode(token_string, self._key_for, algorithms=ALGORITHMS)
        except APIError as error:
            raise unreachable or error from None
        except InvalidKeyIdError:
            raise TokenRejected(UNKNOWN_KEY, reason="unknown signing key") from None
        except BadSignatureError:
            raise TokenRejected(BAD_SIGNATURE, reason="bad signature") from None
        except JoseError as error:
            raise TokenRejected(MALFORMED, reason=f"malformed token ({error.error})") from None
        except (ValueError, TypeError):
            raise TokenRejected(MALFORMED, reason="malformed token") from None
        self._check_header(token.header)
        return token.claims

    def validate_token(self, token: AccessToken, scopes, request) -> None:
        """The token is already verified; only the scope is left to check.

        :raise InsufficientScope: the token lacks a required scope (403).
        """
        if scopes and not any(token.scopes.issuperset(scope.split()) for scope in scopes):
            g.scope.client_id = token.client_id  # a valid token's, for the refusal's log lines
            raise InsufficientScope(" ".join(scopes), reason="insufficient scope")

    def _key_for(self, guest):
        return self.keys.key_for(guest.headers().get("kid"))

    @staticmethod
    def _check_header(header: dict) -> None:
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in TOKEN_TYPES:
            raise TokenRejected(NOT_ACCESS_TOKEN, reason=f"token type {typ!r}")
        # Auth0 never marks header parameters critical; a token that does was not made by it
        # (RFC 7515 section 4.1.11 lets a recipient refuse what it does not expect).
        if "crit" in header:
            raise TokenRejected(MALFORMED, reason="crit header")

    def _check_claims(self, claims: dict) -> None:
        try:
            self.claims_registry.validate(claims)
        except ExpiredTokenError:
            raise TokenRejected(EXPIRED, reason="expired") from None
        except MissingClaimError as error:
            message = f"The access token lacks the '{error.claim}' claim."
            raise TokenRejected(message, reason=f"missing claim {error.claim}") from None
        except InvalidClaimError as error:
            message = CLAIM_PROBLEMS.get(error.claim, MALFORMED)
            raise TokenRejected(message, reason=f"invalid claim {error.claim}") from None

    def _check_client(self, claims: dict) -> None:
        """The token names its client, and (unless user tokens are accepted) was issued to it.

        A client-credentials token's subject is "<client_id>@clients" and, in Auth0's profile,
        its ``gty`` is "client-credentials"; anything else was issued to a user.
        """
        client_id = client_id_of(claims)
        if client_id is None:
            raise TokenRejected(NOT_CLIENT_CREDENTIALS, reason="no client id")
        if self.accept_user_tokens:
            return
        if claims.get("gty", CLIENT_CREDENTIALS) != CLIENT_CREDENTIALS:
            raise TokenRejected(NOT_CLIENT_CREDENTIALS, reason=f"grant type {claims['gty']!r}")
        if claims["sub"] != client_id + CLIENT_SUBJECT_SUFFIX:
            raise TokenRejected(NOT_CLIENT_CREDENTIALS, reason="subject is not the client")


class VerifiedTokens:
    """Tokens this process found valid, by their exact text, with the times they stay valid.

    The same token is presented again and again until it expires; checking its RS256 signature
    and claims each time is most of a cached request's work. A token is recalled only against
    the key set that verified it (when the JWKS changes, a key withdrawn, it is verified again)
    and only between the times its claims allow; outside them it is checked in full again, so
    it gets the same refusal as a token seen for the first time.
    """

    def __init__(self, size: int = 10_000):
        self.size = size
        self._tokens: dict[str, tuple[object, AccessToken, float, float]] = {}
        self._lock = threading.Lock()

    def recall(self, token_string: str, key_set: object, now: float) -> AccessToken | None:
        """Without a lock: a dict lookup is atomic, and entries are replaced, never changed."""
        entry = self._tokens.get(token_string)
        if entry is None:
            return None
        verified_by, token, valid_from, valid_until = entry
        if verified_by is not key_set or not valid_from <= int(now) < valid_until:
            return None
        return token

    def remember(
        self, token_string: str, key_set: object, token: AccessToken, valid: tuple[float, float]
    ) -> None:
        """When full, the token remembered first goes: at worst it is verified once more."""
        with self._lock:
            self._tokens.pop(token_string, None)
            self._tokens[token_string] = (key_set, token, *valid)
            if len(self._tokens) > self.size:
                del self._tokens[next(iter(self._tokens))]


class Auth0ResourceProtector(ResourceProtector):
    """Authlib's protector, bound per app like any Flask extension.

    Our validator raises the proxy's errors directly, and the header is read here
    (``bearer_token``), so no Authlib error reaches the caller.
    """

    def init_app(self, app: Flask, validator: Auth0TokenValidator) -> None:
        app.extensions["token_validator"] = validator

    def acquire_token(self, scopes=None, **kwargs) -> AccessToken:
        """The request's validated token; views get their caller from
        ``access.require_organization``, so Authlib's ``current_token`` is not set.

        Authlib's ``validate_request`` wraps the request in an OAuth request object (computing
        its full URL) and passes it through four layers; only the Authorization header is needed
        here, read as Authlib reads it.

        :raise TokenMissing, TokenRejected: no usable bearer token (401).
        :raise TokenInQueryString: the token came in the URL (400).
        :raise InsufficientScope: the token grants none of ``scopes`` (403).
        :raise UpstreamUnavailable: the signing keys cannot be had (503).
        """
        scopes = [scopes] if isinstance(scopes, str) else scopes
        request = flask_request._get_current_object()
        token_string = bearer_token(request)
        validator: Auth0TokenValidator = current_app._get_current_object().extensions[
            "token_validator"
        ]
        token = validator.authenticate_token(token_string)
        validator.validate_token(token, scopes, request)
        return token


def bearer_token(request) -> str:
    """The bearer token from the Authorization header, and only from there.

    :raise TokenInQueryString: an ``access_token`` in the URL (400): RFC 6750 section 2.3
        allows it, but URLs end up in logs and caches (RFC 6750 section 5.3).
    :raise TokenMissing: no Authorization header, or an empty one (401).
    :raise TokenRejected: a scheme other than Bearer, or no credential after it (401).
    """
    if request.query_string and "access_token" in request.args:
        raise TokenInQueryString(reason="access_token in the query string")
    header = request.environ.get("HTTP_AUTHORIZATION")
    if not header:
        raise TokenMissing(reason="no Authorization header")
    # RFC 6749 section 7.1: the token type, then the credential (split as Authlib splits it).
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise TokenRejected(NOT_BEARER, reason=UnsupportedTokenTypeError.error)
    return parts[1]


# Unbound here, bound to the app (with its validator) in the factory.
require_oauth = Auth0ResourceProtector()
