"""Per-client policy: what one edge client may cost the tenant and change, beyond what it may see.

Every client's allowances live here, as token buckets in the shared store (the governor's
mechanism, so they hold across workers and hosts):

- its requests, and all clients' requests together (``rate_limits.client.requests`` and
  ``rate_limits.global``), taken once a request's token names its client;
- its calls to Auth0's Management API (``rate_limits.client.upstream``): each call made for its
  request costs one (a cold read, an unknown id, each page of a list, each users search), and
  a read that starts a refresh in the background pays one for it, so no client can spend more
  of the tenant's budget than its allowance, however it asks. A request's first call must fit
  (else 429, nothing sent); its further calls (the pages of a list under way) wait for the
  allowance to refill rather than cut off an answer already begun;
- its ``Cache-Control: no-cache`` reads: one per ``proxy.fresh_read_interval_seconds``, and
  only while its upstream allowance has one too (else the cache answers);

Answers to a client carry Auth0's ``x-ratelimit-*`` headers for the limit that binds it; over a
limit it gets Auth0's 429 with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from dataclasses import dataclass

from flask import Flask, Response, current_app, request

from auth0_proxy.core import clock
from auth0_proxy.core.auth0_api import Limit
from auth0_proxy.core.config import RateLimits
from auth0_proxy.core.errors import TooManyRequests
from auth0_proxy.core.scope import Quota, current_scope, request_scope
from auth0_proxy.storage.buckets import Bucket
from auth0_proxy.storage.store import Store

from .budget import PAGE_WAIT_SECONDS, Rank, current_errand

# A worker takes up to this many of a client's requests at once from the shared buckets, and
# drops those it has not spent after LEASE_SECONDS (see ClientPolicy.admit).
LEASE_CALLS = 16
LEASE_SECONDS = 1.0
# How long a call of a request under way may wait for the client's upstream allowance before
# the answer is cut off (as long as a page of a listing waits for the budget).
UNDER_WAY_WAIT_SECONDS = PAGE_WAIT_SECONDS


class ClientRateLimited(TooManyRequests):
    """Auth0's own answer when a caller exceeds its limit; ``limit`` names which."""

    message = (
        "Too many requests. Check the X-RateLimit-Limit, X-RateLimit-Remaining and "
        "X-RateLimit-Reset headers."
    )

    def __init__(self, limit: str, **kwargs):
        super().__init__(reason=f"rate limit: {limit}", **kwargs)
        self.limit = limit

    @property
    def metric_code(self) -> str:
        return f"rate_limit_{self.limit}"


class ClientPolicy:
    def __init__(
        self,
        store: Store,
        *,
        limits: RateLimits | None = None,
        fresh_read_interval: int,
    ):
        self.store = store
        self.limits = limits or RateLimits()
        self.fresh_read = Limit(burst=1, per_minute=60 / fresh_read_interval)
        self._leases: dict[str, Lease] = {}  # by client id, this process's
        self._leases_mutex = threading.Lock()
        self._renewing: dict[str, threading.Lock] = {}  # by client id

    def admit(self, client_id: str) -> Quota | None:
        """Take one request from the client's and the global allowance; the client's quota
        after it (None: the client has no request limit).

        A worker takes several at once while the client's bucket is more than half full, and
        spends them here (a lease): far from its limit, a busy client costs one shared step per
        ``LEASE_CALLS`` requests, not one each; near it, each request is counted in the store.

        :raise ClientRateLimited: either is spent (429, with Retry-After).
        """
        own_limit = self.limits.of(client_id).requests
        if own_limit is None and self.limits.total is None:
            return None  # no request limit (the default): nothing to count
        own = Allowance(f"requests:{client_id}", own_limit, "requests")
        total = Allowance("requests", self.limits.total, "global")
        if own.limit is None:
            self._take(total)
            return None
        quota = self._spend_leased(client_id, own)
        if quota is not None:
            return quota
        with self._leases_mutex:
            renewing = self._renewing.setdefault(client_id, threading.Lock())
        with renewing:  # one of the client's leases taken at a time: a second would drop one
            return self._spend_leased(client_id, own) or self._lease(client_id, own, total)

    def _spend_leased(self, client_id: str, own: Allowance) -> Quota | None:
        """One of the calls this worker holds for the client, if it holds one still."""
        with self._leases_mutex:
            lease = self._leases.get(client_id)
            if lease is None or lease.calls < 1 or clock.monotonic() >= lease.until:
                return None
            lease.calls -= 1
            return own.quota(lease.level + lease.calls, clock.now())

    def _lease(self, client_id: str, own: Allowance, total: Allowance) -> Quota:
        """Take the next lease (spending its first call), or one call near a limit.

        :raise ClientRateLimited: over the client's or the global limit.
        """
        calls = lease_size(own.limit, self._leases.get(client_id), total.limit)
        try:
            level = self._take(own, total, calls=calls)
        except ClientRateLimited:
            with self._leases_mutex:  # near a limit: one by one from now
                self._leases[client_id] = Lease(0, 0.0, 0.0)
            if calls == 1:
                raise
            calls, level = 1, self._take(own, total)
        with self._leases_mutex:
            self._leases[client_id] = Lease(calls - 1, level, clock.monotonic() + LEASE_SECONDS)
        return own.quota(level + calls - 1, clock.now())

    def charge_upstream(self, client_id: str, *, under_way: bool = False) -> Quota | None:
        """Take one of the client's calls to Auth0; one of a request ``under_way`` (it made or
        paid one already) waits for the allowance to refill, up to ``UNDER_WAY_WAIT_SECONDS``.

        :raise ClientRateLimited: its upstream allowance is spent (429, with Retry-After).
        """
        upstream = self._upstream(client_id)
        deadline = clock.monotonic() + (UNDER_WAY_WAIT_SECONDS if under_way else 0)
        while True:
            try:
                level = self._take(upstream)
            except ClientRateLimited as refused:
                wait = int(refused.headers["Retry-After"])
                if clock.monotonic() + wait > deadline:
                    raise
                time.sleep(1 / upstream.bucket().rate)  # the time one call takes to refill
                continue
            return None if level is None else upstream.quota(level, clock.now())

    def admit_address(self, address: str) -> None:
        """:raise ClientRateLimited: the address spent its failed authentications (429)."""
        failures = self._failed_auth(address)
        level = self._take(failures, calls=0)
        if level is not None and level < 1:
            wait = (1 - level) / failures.bucket().rate
            raise ClientRateLimited(
                "failed_auth",
                message="Too many failed authentications from this address; retry after the "
                "time in Retry-After.",
                headers={"Retry-After": str(math.ceil(wait))},
            )

    def count_failed_auth(self, address: str) -> None:
        """One more failed authentication of the address (none counted once it is spent)."""
        with contextlib.suppress(ClientRateLimited):
            self._take(self._failed_auth(address))

    def _failed_auth(self, address: str) -> Allowance:
        return Allowance(f"failed-auth:{address}", self.limits.failed_auth, "failed_auth")

    def take_fresh_read(self, client_id: str) -> bool:
        """Whether this client's ``no-cache`` is honoured now: once per interval, and only
        while its upstream allowance holds one, which it then pays."""
        fresh = Allowance(f"fresh:{client_id}", self.fresh_read, "fresh")
        try:
            self._take(fresh, self._upstream(client_id))
        except ClientRateLimited:
            return False
        return True

    def _upstream(self, client_id: str) -> Allowance:
        return Allowance(f"upstream:{client_id}", self.limits.of(client_id).upstream, "upstream")

    def _take(self, *allowances: Allowance, calls: int = 1) -> float | None:
        """Spend ``calls`` from every limited allowance, or from none: the first allowance's
        level after (None if it has no limit).

        :raise ClientRateLimited: naming the allowance that refused, with its quota.
        """
        limited = [allowance for allowance in allowances if allowance.limit is not None]
        if not limited:
            return None
        granted, levels = self.store.take_tokens([a.bucket() for a in limited], calls)
        if granted:
            return levels[0] if limited[0] is allowances[0] else None
        allowance, level = next((a, v) for a, v in zip(limited, levels, strict=True) if v < calls)
        wait = (1 - level) / allowance.bucket().rate
        raise ClientRateLimited(
            allowance.name,
            headers={
                "Retry-After": str(max(1, math.ceil(wait))),
                **allowance.quota(level, clock.now()).headers(),
            },
        )


@dataclass
class Lease:
    """Requests a worker took from a client's buckets and has not spent yet."""

    calls: int
    level: float  # the client's bucket after they were taken
    until: float  # (monotonic) then the calls left are dropped: they were counted already


def lease_size(limit: Limit, previous: Lease | None, total: Limit | None) -> int:
    """How many requests to take at once: a fiftieth of the burst, at most ``LEASE_CALLS``;
    one at a time once the bucket was found half empty (near the limit, each is counted), and
    under a global limit (calls taken and not spent would be taken from every client)."""
    if total is not None or (previous is not None and previous.level < limit.burst / 2):
        return 1
    return max(1, min(LEASE_CALLS, limit.burst // 50))


@dataclass(frozen=True)
class Allowance:
    """A limit applied to one key of the shared store; ``name`` is for the log and metrics."""

    key: str
    limit: Limit | None
    name: str

    def bucket(self) -> Bucket:
        return Bucket(f"limit:{self.key}", self.limit.per_minute / 60, self.limit.burst)

    def quota(self, level: float, now: float) -> Quota:
        limit = self.limit
        return Quota(
            limit=limit.burst,
            remaining=max(0, math.floor(level)),
            reset=math.ceil(now + max(0.0, limit.burst - level) * 60 / limit.per_minute),
        )


def init_app(app: Flask) -> None:
    app.after_request(_quota_headers)
    settings = app.config["SETTINGS"]
    if settings.rate_limits.failed_auth is not None:  # off by default: then no cost at all
        trusted = settings.proxy.trust_forwarded_for
        app.before_request(lambda: policy().admit_address(client_address(trusted)))
        app.after_request(functools.partial(_count_failed_auth, trusted))


def client_address(trust_forwarded_for: bool) -> str:
    """The client's address: the connection's, or (behind nginx, which sets it) the last
    address in ``X-Forwarded-For``, which a client cannot choose past nginx."""
    req = request._get_current_object()
    forwarded = req.environ.get("HTTP_X_FORWARDED_FOR") if trust_forwarded_for else None
    return forwarded.rsplit(",", 1)[-1].strip() if forwarded else req.remote_addr or "unknown"


def _count_failed_auth(trusted: bool, response: Response) -> Response:
    if response.status_code == 401:
        policy().count_failed_auth(client_address(trusted))
    return response


def admit_request(client_id: str) -> None:
    """Admit the request of ``client_id`` (the token is verified) against its limits.

    :raise ClientRateLimited: over a limit (429).
    """
    current_scope().quota = policy().admit(client_id)


def may_read_fresh(client_id: str) -> bool:
    """Whether the request's ``no-cache`` is honoured (see ``ClientPolicy.take_fresh_read``);
    a request so honoured has paid its first upstream call."""
    if not policy().take_fresh_read(client_id):
        return False
    scope = current_scope()
    scope.upstream_credit, scope.upstream_paid = 1, True
    return True


def charge_upstream_call(group: str, *, ahead: bool = False) -> None:
    """Told before each upstream call: a client's request pays one call of its upstream
    allowance for each call to the Management API (``ahead``: for a listing's first page,
    before the listing prepays the budget; the page itself then costs nothing more). Auth0's
    authentication endpoints (the proxy's own token, the signing keys) are the proxy's cost;
    refreshes in the background, and the checks before the token names a client, pay nothing.

    :raise ClientRateLimited: the allowance is spent (429).
    """
    if group == "authentication":
        return
    _charge(under_way_waits=True, ahead=ahead)


def pay_for_refresh() -> bool:
    """Whether the refresh in the background that this request's read starts may go: it pays
    one call from the client's upstream allowance, never waiting for it, so re-reading stale
    answers cannot reach Auth0 more often than cold reads could."""
    try:
        _charge(under_way_waits=False)
    except ClientRateLimited:
        return False
    return True


def _charge(*, under_way_waits: bool, ahead: bool = False) -> None:
    """One call of the request's client, from a credit it paid ahead, else from its upstream
    allowance: its first call must fit, its further ones may wait (``under_way_waits``).

    :raise ClientRateLimited: the allowance is spent (429).
    """
    scope = request_scope()
    if scope is None or scope.client_id is None or current_errand().rank is not Rank.CLIENT:
        return
    if scope.upstream_credit > 0:  # paid already (a page paid ahead uses it when it is sent)
        if not ahead:
            scope.upstream_credit -= 1
        return
    under_way = under_way_waits and scope.upstream_paid
    quota = policy().charge_upstream(scope.client_id, under_way=under_way)  # raises unpaid
    scope.upstream_paid = True
    scope.upstream_credit = 1 if ahead else 0
    if quota is not None and quota.remaining < getattr(scope.quota, "remaining", 1e9):
        scope.quota = quota  # the headers tell the tighter of the two


def _quota_headers(response: Response) -> Response:
    """The client's quota, unless the answer tells another (a 429 tells the limit it hit)."""
    scope = request_scope()
    quota = scope.quota if scope is not None else None
    if quota is not None and "x-ratelimit-limit" not in response.headers:
        response.headers.update(quota.headers())
    return response


def policy() -> ClientPolicy:
    return current_app._get_current_object().extensions["policy"]
