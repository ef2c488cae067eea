"""Through an Auth0 outage: the signing keys and the management token the proxy has serve on,
stale, while they are fetched again in the background; readiness follows what is at hand."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support import (
    JWKS,
    TOKEN,
    assert_invalid_token,
    assert_refused,
    withdraw_signing_key,
)

PERSISTENT = 1000  # times: a fault that lasts the whole test
JWKS_FAILED = "JWKS answered 503"
TOKEN_FAILED = "token endpoint: 503 service_unavailable: Service Unavailable"


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_known_kid_keeps_validating_through_a_jwks_outage_longer_than_the_cache_time(
    make_app, call, make_token, tenant
):
    proxy = make_app(jwks_cache_seconds=1, failure_cooldown_seconds=1, retry_budget_seconds=0)
    assert call("/users", make_token(), via=proxy).status_code == 200
    tenant.inject_fault(JWKS, status=503, times=PERSISTENT)
    tenant.reset_counts()
    statuses = []
    outage_ends = time.monotonic() + 3.2  # three cache times, three failure cooldowns
    while time.monotonic() < outage_ends:
        statuses.append(call("/users", make_token(), via=proxy).status_code)
        time.sleep(0.05)
    assert set(statuses) == {200}
    # Fetched again in the background meanwhile, about once per failure cooldown, not once per
    # request (the file cache keeps the cooldown's marker until a whole second: up to 5 times).
    assert 2 <= tenant.counts[JWKS] <= 5 < len(statuses)


def test_unknown_kid_is_503_during_a_jwks_outage_and_valid_once_it_ends(
    make_app, call, make_token, tenant, clock
):
    """A token signed with a key the proxy never saw may be fine: 503, not 401, as when the
    keys were never fetched; once Auth0 answers, the new keys are fetched and used."""
    proxy = make_app(jwks_cache_seconds=1, failure_cooldown_seconds=1, retry_budget_seconds=0)
    old_key_token = make_token()
    assert call("/users", old_key_token, via=proxy).status_code == 200
    tenant.inject_fault(JWKS, status=503, times=PERSISTENT)
    tenant.rotate_key()
    clock.advance(1.1)  # past the cache time
    new_key_token = make_token()
    answer = call("/users", new_key_token, via=proxy)
    assert_refused(answer, 503, "temporarily_unavailable", JWKS_FAILED)
    assert call("/users", old_key_token, via=proxy).status_code == 200
    tenant.clear_faults()
    assert wait_until(lambda: call("/users", new_key_token, via=proxy).status_code == 200)


def test_readyz_stays_ready_through_an_outage_while_keys_and_token_are_cached(
    make_app, call, make_token, tenant, clock
):
    """Stale keys serve for a day, the management token until it expires, not after."""
    proxy = make_app(jwks_cache_seconds=1, failure_cooldown_seconds=1, retry_budget_seconds=0)
    tenant.management_token_lifetime = 4  # renewed after 2 s, used until 3 s (iat is whole s)
    assert call("/readyz", via=proxy).status_code == 200
    cached = clock.now()
    tenant.inject_fault(JWKS, status=503, times=PERSISTENT)
    tenant.inject_fault(TOKEN, status=503, times=PERSISTENT)
    clock.advance(cached + 2.3 - clock.now())  # past both cache times
    assert call("/readyz", via=proxy).status_code == 200
    assert call("/users", make_token(), via=proxy).status_code == 200
    # Both fetched again in the background meanwhile.
    assert wait_until(lambda: tenant.counts[JWKS] >= 2 and tenant.counts[TOKEN] >= 2)
    clock.advance(cached + 3.2 - clock.now())  # the token has expired
    assert_refused(call("/readyz", via=proxy), 503, "temporarily_unavailable", TOKEN_FAILED)


def test_readyz_is_503_when_nothing_was_ever_cached_and_auth0_fails(make_app, call, tenant):
    proxy = make_app(failure_cooldown_seconds=0, retry_budget_seconds=0)
    tenant.inject_fault(JWKS, status=503, times=PERSISTENT)
    tenant.inject_fault(TOKEN, status=503, times=PERSISTENT)
    assert_refused(call("/readyz", via=proxy), 503, "temporarily_unavailable", JWKS_FAILED)
    tenant.clear_faults()
    tenant.inject_fault(TOKEN, status=503, times=PERSISTENT)  # the keys alone are not enough
    assert_refused(call("/readyz", via=proxy), 503, "temporarily_unavailable", TOKEN_FAILED)


def test_a_remembered_token_is_not_recalled_once_its_key_is_withdrawn(
    make_app, call, make_token, tenant, clock
):
    """Verified tokens are remembered against the key set that verified them: once the JWKS
    is fetched again after its cache time, without the key, the token is refused."""
    proxy = make_app(jwks_cache_seconds=1)
    old_token = make_token()
    assert call("/users", old_token, via=proxy).status_code == 200  # verified, remembered
    withdraw_signing_key(tenant)
    clock.advance(1.1)  # past the cache time: the next reads fetch the keys again
    assert wait_until(lambda: call("/users", old_token, via=proxy).status_code != 200)
    assert_invalid_token(call("/users", old_token, via=proxy), "unknown signing key")
