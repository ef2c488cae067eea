"""The upstream budget: the share of the tenant's Auth0 rate limits the proxy may spend, held by
every worker and instance together.

Auth0 limits the Management API per tenant, with a token bucket per endpoint group, and every
application of the company spends from the same buckets. The governor keeps the same buckets,
scaled to the proxy's share, in the shared store (atomic in Redis, host-wide with the file
cache), and every upstream call spends from its group's bucket, and from the whole API's where
the plan has one, before it is sent.

Calls are ranked by what they are for (``errand``):

- a client waiting with nothing cached may queue for tokens yet to come, within its wait;
- a refresh of a stale answer needs a reserve left for clients: half the bucket, less the
  older the answer (so the stalest answers are refreshed first);
- a refresh ahead of expiry needs three quarters of the bucket left.

The buckets follow what Auth0 says: ``x-ratelimit-remaining`` lowers them when other
applications spend the tenant's limit, and a 429 empties them until Auth0's reset.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import requests

from auth0_proxy.core import clock, metrics
from auth0_proxy.core.auth0_api import Limit
from auth0_proxy.core.errors import TooManyRequests
from auth0_proxy.storage.buckets import Bucket
from auth0_proxy.storage.store import Store

log = logging.getLogger("auth0_proxy.budget")

# Shares of a bucket a refresh must leave for clients (see the module docstring). The wider the
# stale reserve's range, the more surely the stalest of the answers polled wins the next tokens.
STALE_RESERVE = 0.5
AHEAD_RESERVE = 0.75
# How long a page of a listing under way may wait for its turn at the budget before the listing
# gives up (a client's list is then cut off; a refresh leaves the current list in place).
PAGE_WAIT_SECONDS = 60


class Rank(enum.IntEnum):
    CLIENT = 0  # a client waits, with nothing cached
    STALE = 1  # a refresh of a stale answer that clients are asking for
    AHEAD = 2  # a refresh of a fresh answer, ahead of its expiry


@dataclass(frozen=True)
class Errand:
    """What the upstream calls of this thread are for; ``urgency`` (0 to 1) is how much of its
    allowed staleness a stale answer has used."""

    rank: Rank = Rank.CLIENT
    urgency: float = 0.0


_current_errand: ContextVar[Errand | None] = ContextVar("upstream_errand", default=None)
CLIENT_ERRAND = Errand()
# Calls this thread reserved earlier (a turn, ``Governor.reserve``): its next listing's prepaid.
_reserved: ContextVar[Prepaid | None] = ContextVar("reserved_calls", default=None)


def current_errand() -> Errand:
    """What this thread's upstream calls are for: a client's request unless said otherwise."""
    return _current_errand.get() or CLIENT_ERRAND


@contextmanager
def errand(rank: Rank, urgency: float = 0.0) -> Iterator[None]:
    """Make the upstream calls of the block count as ``rank``."""
    token = _current_errand.set(Errand(rank, min(max(urgency, 0.0), 1.0)))
    try:
        yield
    finally:
        _current_errand.reset(token)


class BudgetExhausted(TooManyRequests):
    message = (
        "The proxy's share of the tenant's Auth0 rate limit is spent; "
        "retry after the time in Retry-After."
    )


class Prepaid:
    """The calls a listing paid for before its first page: its pages are taken from here, and
    any beyond (the list grew) queue for the budget rather than cut the list off; those of a
    ``turn``'s listing (paid at the back of the queue, and due now) are taken at its head."""

    def __init__(self, calls: int, *, turn: bool = False):
        self.calls = calls
        self.turn = turn

    def take(self) -> bool:
        if self.calls <= 0:
            return False
        self.calls -= 1
        return True


@contextmanager
def reserved(calls: int) -> Iterator[None]:
    """The block's next listing is paid with ``calls`` reserved earlier (its turn's)."""
    token = _reserved.set(Prepaid(calls, turn=True))
    try:
        yield
    finally:
        _reserved.reset(token)


class Governor:
    """Token buckets per endpoint group, ``share`` of the plan's ``limits``, in ``store``."""

    def __init__(self, store: Store, limits: Mapping[str, Limit], *, share: float):
        self.store = store
        self.limits = dict(limits)
        self.share = share

    def spend(
        self, group: str, *, wait: float = 0.0, committed: bool = False, turn: bool = False
    ) -> None:
        """Spend one call on ``group``, as the current errand; sleep if it queued for tokens.

        A client may queue up to ``wait`` seconds. A ``committed`` call (a page of a listing
        under way, beyond what it prepaid) must not cut its list off: a client's queues up to
        ``PAGE_WAIT_SECONDS`` (ahead of new requests, which queue only their wait); a refresh's
        waits its turn as its rank would, rather than take what clients wait for. A page of a
        ``turn``'s listing goes at once: its listing had its place in the queue (whose later
        turns each wait one call longer; a few calls, absorbed by the tenant's burst).

        :raise BudgetExhausted: the errand cannot afford the call (429, with Retry-After).
        """
        if turn:
            self._queued(group, 1)
            return
        client = current_errand().rank is Rank.CLIENT
        if not committed or client:
            self._take(group, 1, wait=PAGE_WAIT_SECONDS if committed else wait)
            return
        deadline = clock.monotonic() + PAGE_WAIT_SECONDS
        while True:
            try:
                return self._take(group, 1, wait=wait)
            except BudgetExhausted as refused:
                retry_after = float(refused.headers["Retry-After"])
                if clock.monotonic() + retry_after > deadline:
                    raise
                time.sleep(retry_after)

    def prepay(self, group: str, calls: int, *, wait: float = 0.0) -> Prepaid:
        """Pay for a listing's pages at once, so that it starts only when the budget holds them
        all: at most what the errand may take from a full bucket (a longer list's further
        pages wait their turn).

        :raise BudgetExhausted: the errand cannot afford them now (429, with Retry-After).
        """
        paid = _reserved.get()
        if paid is not None and paid.calls > 0:
            _reserved.set(None)  # once: a second listing in the block pays its own way
            return paid
        current = current_errand()
        affordable = [
            self._capacity(name) - max(self._floor(name, current, wait), 0.0)
            for name in self._names(group)
        ]
        calls = max(1, min(calls, math.floor(min(affordable, default=calls))))
        self._take(group, calls, wait=wait)
        return Prepaid(calls)

    def reserve(self, group: str, calls: int) -> float:
        """Take ``calls`` now at the back of the queue, however far below zero that leaves the
        buckets (a turn: see members/turns.py): the seconds until the budget reaches them."""
        return self._queued(group, calls)

    def queued_seconds(self, group: str) -> float:
        """How long a call to ``group`` taken now would wait for its tokens: the queue."""
        return self._queued(group, 0)

    def _queued(self, group: str, calls: int) -> float:
        buckets = [self._bucket(name, -math.inf) for name in self._names(group)]
        if not buckets:
            return 0.0
        _, levels = self.store.take_tokens(buckets, calls)
        if calls:
            _count(buckets, levels, calls, True, current_errand())
        return max(0.0, *(-level / b.rate for b, level in zip(buckets, levels, strict=True)))

    def observe(self, group: str, response: requests.Response, retry_after: float) -> None:
        """Follow Auth0's own account of the tenant's limit: after a 429 the bucket is empty
        until ``retry_after``; with ``x-ratelimit-remaining`` low (other applications spend the
        limit too) it holds no more than the proxy's share of what is left. The headers
        describe one bucket: the one whose burst is ``x-ratelimit-limit`` (else the group's)."""
        names = self._names(group)
        if not names:
            return
        reported = _integer(response.headers.get("x-ratelimit-limit"))
        name = next((n for n in names if self.limits[n].burst == reported), names[0])
        limit = self.limits[name]
        if response.status_code == 429:
            ceiling = -self.share * limit.per_minute / 60 * retry_after
        else:
            remaining = _integer(response.headers.get("x-ratelimit-remaining"))
            if remaining is None:
                return
            ceiling = remaining - (1 - self.share) * (reported or limit.burst)
            if ceiling >= self._capacity(name):
                return  # nothing to lower: spares a store round trip on most calls
        bucket = dataclasses.replace(self._bucket(name, floor=-math.inf), ceiling=ceiling)
        self.store.take_tokens([bucket], 0)

    def _take(self, group: str, calls: int, *, wait: float) -> None:
        current = current_errand()
        buckets = [
            self._bucket(name, self._floor(name, current, wait)) for name in self._names(group)
        ]
        if not buckets:
            return
        granted, levels = self.store.take_tokens(buckets, calls)
        _count(buckets, levels, calls, granted, current)
        if granted:
            queued = max(
                -level / bucket.rate for bucket, level in zip(buckets, levels, strict=True)
            )
            if queued > 0:
                time.sleep(queued)
            return
        # When the errand could spend them, were it to ask again with the same wait.
        retry_after = max(
            (calls + b.floor - level) / b.rate for b, level in zip(buckets, levels, strict=True)
        )
        raise BudgetExhausted(
            reason=f"{group} budget spent for {current.rank.name.lower()} calls",
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        )

    def _names(self, group: str) -> list[str]:
        """The buckets a call to ``group`` spends from: its own, and the whole Management API's."""
        names = [group] if group in self.limits else []
        if group != "authentication" and "management" in self.limits and group != "management":
            names.append("management")
        return names

    def _floor(self, name: str, current: Errand, wait: float) -> float:
        """The level a spend must leave in bucket ``name``: below zero, calls queue."""
        capacity = self._capacity(name)
        if current.rank is Rank.CLIENT:
            return -self._rate(name) * max(wait, 0.0)
        if current.rank is Rank.STALE:
            return capacity * STALE_RESERVE * (1 - current.urgency)
        return capacity * AHEAD_RESERVE

    def _bucket(self, name: str, floor: float) -> Bucket:
        return Bucket(f"budget:{name}", self._rate(name), self._capacity(name), floor)

    def _capacity(self, name: str) -> float:
        return max(self.share * self.limits[name].burst, 1.0)

    def _rate(self, name: str) -> float:
        return self.share * self.limits[name].per_minute / 60


def _count(
    buckets: list[Bucket], levels: list[float], calls: int, granted: bool, current: Errand
) -> None:
    """The spend (or the refusal) in the metrics, and what each bucket holds now."""
    for bucket, level in zip(buckets, levels, strict=True):
        name = bucket.key.removeprefix("budget:")
        if granted:
            metrics.BUDGET_SPENT.labels(name).inc(calls)
        else:
            metrics.BUDGET_REFUSED.labels(name, current.rank.name.lower()).inc(calls)
        metrics.BUDGET_LEFT.labels(name).set(level)


def _integer(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() else None
