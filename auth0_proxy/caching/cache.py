"""Fetch once, serve many: the cache every answer the proxy keeps from Auth0 goes through.

On top of the Store (which turns a failing backend into misses), this layer gives each key:

- **coalescing**: one caller fetches while the others wait for its result, across threads,
  workers and (with Redis) hosts. The lock is a key set only if absent, released only by its
  owner (compare-and-delete), and it expires, so a worker that dies holding it blocks the others
  for at most ``lock_seconds``;
- **refresh ahead**: an ``Entry`` carries the time from which a read fetches its successor in the
  background while the current value is still served, so while clients keep asking none waits;
- **stale-while-revalidate and stale-if-error** (RFC 5861): a key read with ``stale_seconds``
  is kept that much longer than it is fresh; a stale entry is served while a refresh is tried in
  the background, and when a fetch fails or the budget cannot afford it. Refreshes count as the
  budget's lower ranks (``budget.errand``), so they never take what waiting clients need;
- **compare-and-set**: a refresh writes only if the entry it was started for is still the
  current one, so a late refresh never replaces a newer value (keys fetched for a new kid);
- **remembered failures**: a failed fetch is answered from memory (503 with Retry-After) for
  ``failure_seconds``, so while Auth0 fails a flood of requests is no flood of upstream calls;
- **the store's outage**: while the Store fails, what this process read or fetched answers from
  its memory (``Memo``), however long ago, as far as ``stale_seconds`` allow (stale-if-error),
  and no refresh starts in the background: its result could reach no other process, and this
  one serves what it has; an entry it must fetch is remembered here, and answers next;
- (``listings``: a sequence too long to hold, stored and served page by page; ``locks``: the
  locks all this takes.)
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from auth0_proxy.core import clock
from auth0_proxy.core.errors import APIError, UpstreamUnavailable
from auth0_proxy.spending.budget import BudgetExhausted, Rank, errand
from auth0_proxy.storage.store import Store

from .entries import Create, Entry, Memo, refresh_time
from .locks import Locks

log = logging.getLogger("auth0_proxy.cache")

# Background refreshes a process runs at once; beyond them, values expire and are fetched by
# the request that next needs them.
MAX_REFRESHES = 4

# After a failed or unaffordable refresh, reads try again after this long.
REFRESH_RETRY_SECONDS = 1


class SharedCache:
    """Get-or-create over the Store, one fetch per key for everyone who shares it.

    ``lock_seconds`` must outlast the slowest fetch (the upstream timeouts), or a second caller
    would start fetching while the first still waits. ``may_refresh`` is asked, by the reader
    whose read starts a refresh in the background, whether it may (the reader's allowance pays
    for it); if not, the current value serves on.
    """

    def __init__(
        self,
        store: Store,
        *,
        lock_seconds: int,
        failure_seconds: int,
        may_refresh: Callable[[], bool] = lambda: True,
    ):
        self.store = store
        self.lock_seconds = lock_seconds
        self.failure_seconds = failure_seconds
        self.may_refresh = may_refresh
        self.memo = Memo()
        self.locks = Locks(store, lock_seconds)
        self._refresh_slots = threading.BoundedSemaphore(MAX_REFRESHES)

    def get_or_create(self, key: str, create: Create, *, refresh_ahead: bool = False) -> Any:
        """The cached value, or one caller creates it while the others wait (see ``entry``)."""
        return self.entry(key, create, refresh_ahead=refresh_ahead).value

    def entry(
        self,
        key: str,
        create: Create,
        *,
        refresh_ahead: bool = False,
        stale_seconds: float = 0,
        paid_by_reader: bool = True,
    ) -> Entry:
        """The cached entry, or one caller creates it while the others wait for it.

        ``create``'s exception reaches the caller that ran it, and a 5xx is remembered for
        ``failure_seconds``. A stale entry (up to ``stale_seconds`` past its freshness) is
        served while one background thread fetches its successor; with ``refresh_ahead``, so is
        a fresh one past its ``refresh_at``. The reader whose read starts it pays for it
        (``may_refresh``), unless ``paid_by_reader`` is off (the proxy's own token and keys).

        :raise UpstreamUnavailable: a fetch of this key failed moments ago (503).
        """
        now = clock.now()
        entry = self._read(key)
        if entry is None or not entry.usable(now, stale_seconds):
            return self._create_once(key, create, stale_seconds)
        if now >= entry.fresh_until or (refresh_ahead and now >= entry.refresh_at):
            self.refresh_in_background(
                key, entry, create, stale_seconds=stale_seconds, paid_by_reader=paid_by_reader
            )
        return entry

    def replace(self, key: str, create: Create, *, stale_seconds: float = 0) -> Entry:
        """Fetch the value now and store it, whatever is cached (a client's fresh read, the
        keys after an unknown kid); others keep reading the current value meanwhile. Should
        Auth0 fail or the budget refuse, a cached entry answers instead, if ``stale_seconds``
        allow it.

        :raise UpstreamUnavailable: a fetch of this key failed moments ago (503).
        """
        try:
            with self.locks.hold(key):
                return self._fetch_and_write(key, create, stale_seconds)
        except APIError as error:
            current = self._read_shared_or_recall(key) if stale_seconds else None
            if error.status_code < 429 or current is None:
                raise
            if not current.usable(clock.now(), stale_seconds):
                raise
            return current

    def latest(self, key: str) -> Any:
        """The value in the shared store now (another worker may have replaced it), or None."""
        entry = self._read_shared(key)
        return entry.value if entry is not None else None

    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """Hold the lock ``name`` across everyone who shares the store (one writer at a time)."""
        return self.locks.hold(name)

    def discard(self, key: str, value: Any) -> None:
        """Delete the entry if it still holds ``value`` (a token Auth0 refused), not a successor
        another worker stored meanwhile."""
        with self.locks.hold(key):
            entry = self.store.get(key)
            if entry is not None and entry.value == value:
                self.store.delete(key)
            self.memo.forget(key)  # last: a read meanwhile may have remembered ``value`` again

    def _read(self, key: str) -> Entry | None:
        return self.memo.recall(key) or self._read_shared_or_recall(key)

    def _read_shared_or_recall(self, key: str) -> Entry | None:
        """The shared store's entry; should the store fail, what this process remembers of it,
        however old (the caller's ``stale_seconds`` bound it). The store is asked first, so
        that its return is seen (a failing store answers at once: see Store)."""
        entry = self._read_shared(key)
        if entry is None and self.store.failing:
            return self.memo.recall(key, however_old=True)
        return entry

    def _read_shared(self, key: str) -> Entry | None:
        entry = self.store.get(key)
        if entry is not None:
            self.memo.remember(key, entry)
        return entry

    def write(self, key: str, value: Any, ttl: float, stale: float, fetched_at: float) -> Entry:
        """Store ``value`` as fetched at ``fetched_at`` (when its fetch began: an answer is as
        old as the first thing read for it), fresh for ``ttl`` from then."""
        now = clock.now()
        refresh_at = fetched_at + refresh_time(ttl, now - fetched_at)
        entry = Entry(value, refresh_at, fetched_at, fetched_at + ttl)
        if fetched_at + ttl + stale > now:
            self.store.set(key, entry, fetched_at + ttl + stale - now)
            self.memo.remember(key, entry)
        return entry

    def _write_if_current(
        self, key: str, expected: Entry, value: Any, ttl: float, stale: float, fetched_at: float
    ) -> Entry | None:
        """Compare-and-set: write unless another entry replaced ``expected`` meanwhile (one that
        expired is replaced), and only holding the key's lock, which every writer holds: while
        another has it, that writer's value is at least as new. The entry written, if any."""
        with self.locks.hold_if_free(key) as held:
            if held and self.store.get(key) in (expected, None):
                return self.write(key, value, ttl, stale, fetched_at)
        return None

    def _create_once(self, key: str, create: Create, stale_seconds: float) -> Entry:
        failed = f"{key}:failed"
        settled = lambda: self.store.get(key) is not None or self.store.get(failed) is not None  # noqa: E731
        with self.locks.hold(key, done=settled):
            entry = self._read_shared(key)
            if entry is not None and entry.usable(clock.now(), stale_seconds):
                return entry
            return self._fetch_and_write(key, create, stale_seconds)

    def _fetch_and_write(self, key: str, create: Create, stale_seconds: float) -> Entry:
        """Run ``create`` and store its value; a failure is remembered, and one remembered
        answers for it. The caller holds the key's lock."""
        failed = f"{key}:failed"
        self._raise_recent_failure(key, failed)
        fetched_at = clock.now()
        try:
            value, ttl = create()
        except APIError as error:
            self._remember_failure(failed, error)
            raise
        return self.write(key, value, ttl, stale_seconds, fetched_at)

    def refresh_in_background(
        self,
        key: str,
        current: Entry,
        create: Create,
        *,
        stale_seconds: float = 0,
        written: Callable[[Entry], None] = lambda entry: None,
        paid_by_reader: bool = True,
    ) -> None:
        """Store a successor to ``current`` from ``create`` (then run ``written`` with it), in a
        thread nobody waits for, as the budget's refresh of a stale answer (the staler, the more
        urgent) or of a fresh one.

        One refresh of a key runs at a time across threads, workers and hosts (for at most
        ``lock_seconds``, or the entry's lifetime if longer: how long one may take), and at most
        ``MAX_REFRESHES`` in a process. None while the store fails: the successor would reach no
        other process (nor, for a listing, its pages), and ``current`` serves on meanwhile.
        """
        if self.store.failing or not self._refresh_slots.acquire(blocking=False):
            return
        marker = f"{key}:refreshing"
        now = clock.now()
        lifetime = current.fresh_until - current.stored_at
        if not self.store.add(marker, 1, max(lifetime, self.lock_seconds)):
            self._refresh_slots.release()
            return  # another thread, worker or host is on it
        if paid_by_reader and not self.may_refresh():
            self.store.delete(marker)  # another reader may start it
            self._refresh_slots.release()
            return
        stale_for = now - current.fresh_until
        rank = Rank.STALE if stale_for >= 0 else Rank.AHEAD
        urgency = stale_for / stale_seconds if stale_seconds else 0.0

        def refresh() -> None:
            fetched_at = clock.now()
            try:
                if self._read_shared(key) in (current, None):  # else refreshed by another
                    with errand(rank, urgency):
                        value, ttl = create()
                    successor = self._write_if_current(
                        key, current, value, ttl, stale_seconds, fetched_at
                    )
                    if successor is None:
                        return  # the marker stays: no refresh again until it expires
                    written(successor)
                self.store.delete(marker)
            except BudgetExhausted:  # the current value serves; a later read tries again
                self.store.set(marker, 1, REFRESH_RETRY_SECONDS)
            except Exception as error:  # logged here, redacted, not by the thread's excepthook
                reason = error.reason if isinstance(error, APIError) else repr(error)
                log.warning("refreshing %s failed: %s", key, reason)
                # Not again at once: the current value serves until it expires.
                self.store.set(marker, 1, max(self.failure_seconds, REFRESH_RETRY_SECONDS))
            finally:
                self._refresh_slots.release()

        try:
            threading.Thread(target=refresh, name=f"refresh {key}", daemon=True).start()
        except RuntimeError as error:  # no thread to be had: the value serves until it expires
            log.warning("refreshing %s ahead of expiry failed: %r", key, error)
            self.store.delete(marker)
            self._refresh_slots.release()

    def _remember_failure(self, failed: str, error: APIError) -> None:
        """Remember Auth0's failures, not its answers (a 404 is an answer)."""
        if self.failure_seconds > 0 and error.status_code >= 500:
            until = clock.now() + self.failure_seconds
            self.store.set(failed, (error.message, until), self.failure_seconds)
            error.headers.setdefault("Retry-After", str(self.failure_seconds))

    def _raise_recent_failure(self, key: str, failed: str) -> None:
        failure = self.store.get(failed)
        if failure is not None and failure[1] > clock.now():  # until then (the store's TTL rounds)
            message, until = failure
            raise UpstreamUnavailable(
                message,
                reason=f"{key}: failed moments ago, not asking Auth0 again yet",
                headers={"Retry-After": str(max(1, math.ceil(until - clock.now())))},
            )
