"""The tenant's signing keys (JWKS), cached and refreshed on key rotation.

Auth0: cache the JWKS; when a token names an unknown ``kid`` fetch it again, but not more often
than the refetch interval, so a flood of made-up kids cannot burn the tenant's rate limit
(auth0.com/docs/secure/tokens/json-web-tokens/json-web-key-sets). Through an Auth0 outage the
last keys fetched serve on, stale, while they are fetched again in the background.
"""

from __future__ import annotations

import logging

from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet, RSAKey

from auth0_proxy.caching.cache import SharedCache
from auth0_proxy.core import metrics
from auth0_proxy.core.errors import UpstreamUnavailable

from .upstream import Upstream

log = logging.getLogger("auth0_proxy.keys")

JWKS_PATH = "/.well-known/jwks.json"
# How long past its cache time the last JWKS fetched still verifies tokens, should Auth0 not
# answer (stale-if-error, RFC 5861): a day. While Auth0 is unreachable the proxy cannot learn
# of a withdrawn key anyway, and refusing every token would make an outage of Auth0's JWKS
# endpoint an outage of the proxy; after a day it no longer vouches for keys it cannot check.
JWKS_MAX_STALE_SECONDS = 86400
CACHE_KEY = "jwks"
REFETCHED = "jwks:refetched"


class KeyStore:
    """Finds the public key for a token's ``kid`` among the tenant's published RSA keys."""

    def __init__(
        self, upstream: Upstream, cache: SharedCache, *, cache_seconds: int, refetch_interval: int
    ):
        self.upstream = upstream
        self.cache = cache
        self.cache_seconds = cache_seconds
        self.refetch_interval = refetch_interval
        self._parsed: tuple[dict, KeySet] = ({}, KeySet([]))

    def key_for(self, kid: str | None) -> RSAKey:
        """:raise InvalidKeyIdError: no published key has this kid (the token is invalid).
        :raise UpstreamUnavailable: the JWKS cannot be fetched (503: the token may be fine).
        """
        if not kid:
            raise InvalidKeyIdError("the token names no key id")
        keys = self.key_set()
        if kid not in {key.kid for key in keys}:
            self._refetch()
            keys = self._newest_key_set()
        return keys.get_by_kid(kid)

    def key_set(self) -> KeySet:
        """The cached keys, refreshed in the background ahead of their cache time; past it, and
        should Auth0 fail, served stale for up to ``JWKS_MAX_STALE_SECONDS`` while a refresh is
        tried again, at most once per failure cooldown.

        :raise UpstreamUnavailable: no keys are cached and the JWKS cannot be fetched (503).
        """
        entry = self.cache.entry(
            CACHE_KEY,
            self._fetch,
            refresh_ahead=True,
            stale_seconds=JWKS_MAX_STALE_SECONDS,
            paid_by_reader=False,  # the proxy's cost, not a client's
        )
        return self._parse(entry.value)

    def _newest_key_set(self) -> KeySet:
        """The keys just refetched, by this worker or another: from the shared cache, not this
        process's memory of it; with the cache down, this process's own latest keys (fetching
        again would let a flood of unknown kids fetch the JWKS once per request)."""
        jwks = self.cache.latest(CACHE_KEY)
        return self._parse(jwks) if jwks is not None else self.key_set()

    def _parse(self, jwks: dict) -> KeySet:
        """Parse RSA keys once per JWKS document, not once per request."""
        parsed = self._parsed
        if jwks is not parsed[0] and jwks != parsed[0]:
            parsed = self._parsed = (jwks, KeySet.import_key_set(jwks))
        return parsed[1]

    def _refetch(self) -> None:
        """Fetch the JWKS again, at most once per refetch interval across all workers.

        Concurrent requests with the new key wait for the one refetch in flight rather than
        being refused; a flood of made-up kids finds the interval's refetch done and stops.
        A failed refetch does not spend the interval: it is remembered briefly (503 for unknown
        kids meanwhile, since the token may be fine), then tried again.

        :raise UpstreamUnavailable: the refetch failed, now or moments ago (503).
        """
        self.cache.get_or_create(REFETCHED, self._fetch_and_store)

    def _fetch_and_store(self) -> tuple[int, int]:
        """Store the fresh JWKS; the marker it returns spends this refetch interval.

        Fetched before ``replace``, which would answer a failure with the stale keys: those
        lack the new kid, and must not spend the interval (the failure is a 503 instead).
        """
        log.info("unknown key id; fetching the JWKS again")
        fetched = self._fetch()
        self.cache.replace(CACHE_KEY, lambda: fetched, stale_seconds=JWKS_MAX_STALE_SECONDS)
        return 1, self.refetch_interval

    @metrics.fetch_of("jwks")
    def _fetch(self) -> tuple[dict, int]:
        response = self.upstream.request("GET", JWKS_PATH)
        if response.status_code != 200:
            raise UpstreamUnavailable(
                "The proxy cannot fetch the tenant's signing keys.",
                reason=f"JWKS answered {response.status_code}",
            )
        try:
            jwks = {"keys": [key for key in response.json()["keys"] if _is_rs256_key(key)]}
            KeySet.import_key_set(jwks)
        except (ValueError, KeyError, TypeError, JoseError):
            raise UpstreamUnavailable(
                "The proxy cannot read the tenant's signing keys.", reason="JWKS is malformed"
            ) from None
        return jwks, self.cache_seconds


def _is_rs256_key(key: object) -> bool:
    """Keep only RSA signing keys: the proxy accepts RS256 alone (RFC 8725 section 3.1)."""
    return (
        isinstance(key, dict)
        and key.get("kty") == "RSA"
        and key.get("use", "sig") == "sig"
        and key.get("alg", "RS256") == "RS256"
        and isinstance(key.get("kid"), str)
    )
