"""What the cache keeps and how long: an ``Entry`` (a value with its freshness), a ``Listing``
(a sequence stored page by page), a ``Fetch`` of one, when a value is refreshed ahead of
expiry, and the memories of what this process read lately (``Memo``, ``PageMemo``)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from auth0_proxy.core import clock

# Share of a value's lifetime after which a read refreshes it ahead of expiry (earlier for a
# value slow to fetch: see refresh_time).
REFRESH_AHEAD_AT = 0.8
# Entries a process keeps in memory: for at most this long, this many of them.
MEMO_SECONDS = 1.0
MEMO_ENTRIES = 4096
# Text of listing pages a process keeps in memory (see PageMemo): a few large lists.
PAGE_MEMO_BYTES = 32 * 1024 * 1024

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

    While the shared store fails, what it remembers is recalled ``however_old`` (until dropped
    for room): stale-if-error (RFC 5861), within the bound each caller sets with
    ``Entry.usable``, and as old as the entry's own ``stored_at`` says (its ``Age``).

    Reads take no lock (a dict lookup is atomic); when full, the oldest write is dropped.
    """

    def __init__(self, seconds: float = MEMO_SECONDS, size: int = MEMO_ENTRIES):
        self.seconds = seconds
        self.size = size
        self._entries: dict[str, tuple[Entry, float]] = {}
        self._lock = threading.Lock()

    def recall(self, key: str, *, however_old: bool = False) -> Entry | None:
        memo = self._entries.get(key)
        if memo is None or (memo[1] < clock.monotonic() and not however_old):
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
    is served: a warm list costs no store read per page (a file read and unpickling each).
    While the store fails, the pages of listings this process fetched are kept here too, and
    serve their listing for as long as it is usable."""

    def __init__(self, max_bytes: int = PAGE_MEMO_BYTES):
        self.max_bytes = max_bytes
        self._pages: OrderedDict[str, str | bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self._pages

    def recall(self, key: str) -> str | bytes | None:
        page = self._pages.get(key)
        if page is not None:
            with self._lock:
                if key in self._pages:
                    self._pages.move_to_end(key)
        return page

    def remember(self, key: str, page: str | bytes) -> None:
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


def refresh_time(ttl: float, fetch_seconds: float = 0.0) -> float:
    """Seconds after storing when a value is refreshed ahead of expiry: in the last fifth of its
    lifetime, or earlier by twice what fetching it took (so a slow fetch, a long member list, is
    done before the value expires), but never in the first half, so a value slower to fetch than
    its TTL is not fetched back to back."""
    lifetime = ttl - 1  # cachelib's file cache rounds expiry down to the second
    lead = min(max(lifetime * (1 - REFRESH_AHEAD_AT), 2 * fetch_seconds), lifetime / 2)
    return max(lifetime - lead, 0)
