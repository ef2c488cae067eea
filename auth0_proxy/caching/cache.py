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
- **streaming**: a sequence too long to hold (a member list) is stored and served page by page.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from auth0_proxy.core import clock, metrics
from auth0_proxy.core.errors import APIError, CachedPageMissing, UpstreamUnavailable
from auth0_proxy.spending.budget import BudgetExhausted, Rank, errand
from auth0_proxy.storage.store import Store

log = logging.getLogger("auth0_proxy.cache")

# Share of a value's lifetime after which a read refreshes it ahead of expiry (earlier for a
# value slow to fetch: see refresh_time).
REFRESH_AHEAD_AT = 0.8
# Background refreshes a process runs at once; beyond them, values expire and are fetched by
# the request that next needs them.
MAX_REFRESHES = 4
# Entries a process keeps in memory: for at most this long, this many of them.
MEMO_SECONDS = 1.0
MEMO_ENTRIES = 4096
# Pages outlive their listing's entry by this long, so that a reader that found the entry finds
# every page (unless fetching the list took longer, or the cache dropped pages for room).
PAGE_GRACE_SECONDS = 60

# Text of listing pages a process keeps in memory (see PageMemo): a few large lists.
PAGE_MEMO_BYTES = 32 * 1024 * 1024

# After a failed or unaffordable refresh, reads try again after this long.
REFRESH_RETRY_SECONDS = 1

# How long a sequence's page count is remembered after its listing is gone: what the budget
# must hold to list it again.
PAGE_COUNT_SECONDS = 86400

# A fetch: the value, and for how many seconds it is fresh.
Create = Callable[[], tuple[Any, float]]


class Fetch(NamedTuple):
    """A sequence being fetched: its pages, and what to do once a listing of them is stored
    (not before: what follows a listing must never run ahead of what is served)."""

    pages: Iterator[str]
    stored: Callable[[], None]

    def pages_then_stored(self) -> Iterator[str]:
        """The pages, then ``stored`` (for a sequence that is not cached)."""
        yield from self.pages
        self.stored()


@dataclass(frozen=True)
class Entry:
    """A cached value, fresh until ``fresh_until`` (wall clock); from ``refresh_at`` on, reads
    refresh it in the background."""

    value: Any
    refresh_at: float
    stored_at: float
    fresh_until: float

    def age(self, now: float) -> int:
        """Seconds since it was fetched: the ``Age`` of an answer made from it (RFC 9111)."""
        return max(0, int(now - self.stored_at))

    def usable(self, now: float, stale_seconds: float) -> bool:
        return now < self.fresh_until + stale_seconds


@dataclass(frozen=True)
class Listing:
    """A sequence stored page by page under a generation of its own, so two fetches of one
    sequence never mix their pages: the last listing stored wins, whole. ``digest`` is the
    SHA-256 of the pages joined as one JSON array: the same list, the same digest."""

    generation: str
    pages: int
    digest: str


class Memo:
    """What this process read lately, kept for ``seconds`` from the read: a burst of requests
    for one key costs one read of the shared store (a file or a Redis round trip, unpickling).
    Recalling an entry does not extend it, so a change elsewhere is seen within ``seconds``.

    Reads take no lock (a dict lookup is atomic); when full, the oldest write is dropped.
    """

    def __init__(self, seconds: float = MEMO_SECONDS, size: int = MEMO_ENTRIES):
        self.seconds = seconds
        self.size = size
        self._entries: dict[str, tuple[Entry, float]] = {}
        self._lock = threading.Lock()

    def recall(self, key: str) -> Entry | None:
        memo = self._entries.get(key)
        if memo is None or memo[1] < clock.monotonic():
            return None
        return memo[0]

    def remember(self, key: str, entry: Entry) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (entry, clock.monotonic() + self.seconds)
            if len(self._entries) > self.size:
                del self._entries[next(iter(self._entries))]

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


class PageMemo:
    """Pages of stored listings this process read lately, up to ``max_bytes`` of text, the
    least recently read dropped first. A page's key names its listing's generation, and a
    generation's pages never change, so a page remembered is right for as long as its listing
    is served: a warm list costs no store read per page (a file read and unpickling each)."""

    def __init__(self, max_bytes: int = PAGE_MEMO_BYTES):
        self.max_bytes = max_bytes
        self._pages: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def recall(self, key: str) -> str | None:
        page = self._pages.get(key)
        if page is not None:
            with self._lock:
                if key in self._pages:
                    self._pages.move_to_end(key)
        return page

    def remember(self, key: str, page: str) -> None:
        if len(page) > self.max_bytes:
            return
        with self._lock:
            if key in self._pages:
                return
            self._pages[key] = page
            self._bytes += len(page)
            while self._bytes > self.max_bytes:
                _, dropped = self._pages.popitem(last=False)
                self._bytes -= len(dropped)


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
        self.pages = PageMemo()
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
            self._refresh_in_background(
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
            with self._lock(key):
                return self._fetch_and_write(key, create, stale_seconds)
        except APIError as error:
            current = self._read_shared(key) if stale_seconds else None
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
        return self._lock(name)

    def discard(self, key: str, value: Any) -> None:
        """Delete the entry if it still holds ``value`` (a token Auth0 refused), not a successor
        another worker stored meanwhile."""
        with self._lock(key):
            entry = self.store.get(key)
            if entry is not None and entry.value == value:
                self.store.delete(key)
            self.memo.forget(key)  # last: a read meanwhile may have remembered ``value`` again

    def listing(
        self,
        key: str,
        fetch_pages: Callable[[int], Fetch],
        *,
        ttl: float,
        stale_seconds: float = 0,
        fresh: bool = False,
    ) -> tuple[Entry | None, Iterator[str]]:
        """The pages of a long sequence, and the entry they come from (None: fetched now).

        From the cache, or fetched once while the others wait; stored page by page as they are
        yielded, so a worker holds one page at a time. ``fetch_pages`` is told how many pages
        the last listing had (what the budget must hold). ``fresh`` fetches anew while others
        keep reading the current listing, which also answers should the first page fail.

        :raise CachedPageMissing: a page of the cached listing was gone before it was read.
        """
        # A listing is read from the store, not this process's memo: its pages are only there
        # (or in ``self.pages``, once read from there).
        now = clock.now()
        current = self.store.get(key)
        if current is not None and not current.usable(now, stale_seconds):
            current = None
        if current is not None and not fresh:
            if now >= current.refresh_at:
                self._refresh_listing(key, current, fetch_pages, ttl, stale_seconds)
            return current, self._cached_pages(key, current.value)
        expected = current.value.pages if current else self.store.get(f"{key}:pages") or 1
        fetched = self._locked_listing(key, fetch_pages, expected, ttl, stale_seconds, fresh)
        try:
            first = next(fetched, None)
        except APIError as error:
            if error.status_code < 429 or current is None:
                raise
            return current, self._cached_pages(key, current.value)  # stale if error
        if isinstance(first, Entry):  # another caller stored it while this one waited
            return first, self._cached_pages(key, first.value)
        return None, itertools.chain([] if first is None else [first], fetched)

    def _read(self, key: str) -> Entry | None:
        return self.memo.recall(key) or self._read_shared(key)

    def _read_shared(self, key: str) -> Entry | None:
        entry = self.store.get(key)
        if entry is not None:
            self.memo.remember(key, entry)
        return entry

    def _write(self, key: str, value: Any, ttl: float, stale: float, fetched_at: float) -> Entry:
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
    ) -> bool:
        """Compare-and-set: write unless another entry replaced ``expected`` meanwhile (one that
        expired is replaced), and only holding the key's lock, which every writer holds: while
        another has it, that writer's value is at least as new. Whether it wrote."""
        with self._lock_if_free(key) as held:
            if held and self.store.get(key) in (expected, None):
                self._write(key, value, ttl, stale, fetched_at)
                return True
        return False

    def _create_once(self, key: str, create: Create, stale_seconds: float) -> Entry:
        failed = f"{key}:failed"
        settled = lambda: self.store.get(key) is not None or self.store.get(failed) is not None  # noqa: E731
        with self._lock(key, done=settled):
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
        return self._write(key, value, ttl, stale_seconds, fetched_at)

    def _locked_listing(
        self,
        key: str,
        fetch_pages: Callable[[int], Fetch],
        expected: int,
        ttl: float,
        stale_seconds: float,
        fresh: bool,
    ) -> Iterator[str | Entry]:
        """Under the key's lock: the entry another caller stored meanwhile, or each page as it
        is fetched and stored, the listing stored after the last: unless another listing was
        stored meanwhile (this one was read slower than the lock lasts), which is newer."""
        settled = lambda: not fresh and self.store.get(key) is not None  # noqa: E731
        with self._lock(key, done=settled):
            seen = self.store.get(key)
            if not fresh and seen is not None and seen.usable(clock.now(), stale_seconds):
                yield seen
                return
            fetched_at, fetch = clock.now(), fetch_pages(expected)
            listing = yield from self._store_listing(key, fetch.pages, ttl + stale_seconds)
            if self.store.get(key) == seen:
                self._write(key, listing, ttl, stale_seconds, fetched_at)
                fetch.stored()

    def _refresh_listing(
        self,
        key: str,
        current: Entry,
        fetch_pages: Callable[[int], Fetch],
        ttl: float,
        stale_seconds: float,
    ) -> None:
        """Refresh a listing in the background; once stored, what follows it runs."""
        fetches: list[Fetch] = []

        def refetch() -> tuple[Listing, float]:
            fetches.append(fetch_pages(current.value.pages))
            listing = _run_to_end(self._store_listing(key, fetches[0].pages, ttl + stale_seconds))
            return listing, ttl

        written = lambda: fetches[0].stored()  # noqa: E731
        self._refresh_in_background(
            key, current, refetch, stale_seconds=stale_seconds, written=written
        )

    def _store_listing(
        self, key: str, pages: Iterator[str], ttl: float
    ) -> Generator[str, None, Listing]:
        """Store and yield each page under a new generation; return the listing naming them."""
        generation, digest = uuid.uuid4().hex, ListDigest()
        for number, page in enumerate(pages, start=1):
            self.store.set(_page_key(key, generation, number), page, ttl + PAGE_GRACE_SECONDS)
            digest.add(page)
            yield page
        self.store.set(f"{key}:pages", digest.pages, PAGE_COUNT_SECONDS)
        return Listing(generation, digest.pages, digest.hexdigest())

    def _cached_pages(self, key: str, listing: Listing) -> Iterator[str]:
        for number in range(1, listing.pages + 1):
            page_key = _page_key(key, listing.generation, number)
            page = self.pages.recall(page_key)
            if page is None:
                page = self.store.get(page_key)
                if page is None:  # evicted, or the cache failed: it cannot be completed
                    raise CachedPageMissing(reason=f"{key}: page {number} missing")
                self.pages.remember(page_key, page)
            yield page

    def _refresh_in_background(
        self,
        key: str,
        current: Entry,
        create: Create,
        *,
        stale_seconds: float = 0,
        written: Callable[[], None] = lambda: None,
        paid_by_reader: bool = True,
    ) -> None:
        """Store a successor to ``current`` from ``create`` (then run ``written``), in a thread
        nobody waits for, as the budget's refresh of a stale answer (the staler, the more
        urgent) or of a fresh one.

        One refresh of a key runs at a time across threads, workers and hosts (for at most
        ``lock_seconds``, or the entry's lifetime if longer: how long one may take), and at most
        ``MAX_REFRESHES`` in a process.
        """
        if not self._refresh_slots.acquire(blocking=False):
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
                    if not self._write_if_current(
                        key, current, value, ttl, stale_seconds, fetched_at
                    ):
                        return  # the marker stays: no refresh again until it expires
                    written()
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

    @contextmanager
    def _lock(
        self, name: str, *, done: Callable[[], bool] = lambda: False, poll_seconds: float = 0.05
    ) -> Iterator[None]:
        """Run the block holding the lock ``name``, across everyone who shares the store.

        A waiter stops waiting as soon as ``done()`` says the holder did the work (it then runs
        the block without the lock, re-checks and finds it done), or once the lock has been held
        for ``lock_seconds`` (the holder is stuck or dead).
        """
        lock_key, owner = f"{name}:lock", uuid.uuid4().hex
        deadline = clock.monotonic() + self.lock_seconds
        waited = False
        while not self.store.add(lock_key, owner, self.lock_seconds):
            if not waited:
                waited = True
                metrics.COALESCED_WAITS.inc()
            time.sleep(poll_seconds)
            if done() or clock.monotonic() > deadline:
                owner = None
                break
        try:
            yield
        finally:
            if owner is not None:
                self.store.delete_if(lock_key, owner)

    @contextmanager
    def _lock_if_free(self, name: str) -> Iterator[bool]:
        """Take the lock ``name`` if nobody holds it; whether it was taken."""
        lock_key, owner = f"{name}:lock", uuid.uuid4().hex
        held = self.store.add(lock_key, owner, self.lock_seconds)
        try:
            yield held
        finally:
            if held:
                self.store.delete_if(lock_key, owner)

    def _remember_failure(self, failed: str, error: APIError) -> None:
        """Remember Auth0's failures, not its answers (a 404 is an answer)."""
        if self.failure_seconds > 0 and error.status_code >= 500:
            until = clock.now() + self.failure_seconds
            self.store.set(failed, (error.message, until), self.failure_seconds)
            error.headers.setdefault("Retry-After", str(self.failure_seconds))

    def _raise_recent_failure(self, key: str, failed: str) -> None:
        failure = self.store.get(failed)
        if failure is not None:
            message, until = failure
            raise UpstreamUnavailable(
                message,
                reason=f"{key}: failed moments ago, not asking Auth0 again yet",
                headers={"Retry-After": str(max(1, math.ceil(until - clock.now())))},
            )


def refresh_time(ttl: float, fetch_seconds: float = 0.0) -> float:
    """Seconds after storing when a value is refreshed ahead of expiry: in the last fifth of its
    lifetime, or earlier by twice what fetching it took (so a slow fetch, a long member list, is
    done before the value expires), but never in the first half, so a value slower to fetch than
    its TTL is not fetched back to back."""
    lifetime = ttl - 1  # cachelib's file cache rounds expiry down to the second
    lead = min(max(lifetime * (1 - REFRESH_AHEAD_AT), 2 * fetch_seconds), lifetime / 2)
    return max(lifetime - lead, 0)


def _run_to_end(steps: Iterator[Any]) -> Any:
    """Run a generator to its end; what it returned."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


class ListDigest:
    """SHA-256 of pages of JSON text (array items joined by commas) as one JSON array: exactly
    the bytes of the answer, however the members fell into pages."""

    def __init__(self):
        self._hash = hashlib.sha256(b"[")
        self._separator = b""
        self.pages = 0

    def add(self, page: str) -> None:
        self.pages += 1
        if page:
            self._hash.update(self._separator + page.encode())
            self._separator = b","

    def hexdigest(self) -> str:
        digest = self._hash.copy()
        digest.update(b"]")
        return digest.hexdigest()


def _page_key(key: str, generation: str, number: int) -> str:
    return f"{key}:{generation}:{number}"
