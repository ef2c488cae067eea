"""Sequences too long to hold (a member list), stored and served page by page: fetched once
while the others wait, stored as they are read, so a worker holds one page at a time; served
from the store (and this process's ``PageMemo``) once stored, refreshed ahead of expiry like
any entry, the last listing stored winning whole. While the store fails, this process serves the
listings it remembers, and keeps the pages of those it fetches meanwhile, to serve them too."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import Any

from auth0_proxy.core import clock
from auth0_proxy.core.errors import APIError, CachedPageMissing
from auth0_proxy.core.json_codec import json_fragment, loads

from .cache import SharedCache
from .entries import Entry, Fetch, ListDigest, Listing, Memo, PageMemo

# Pages outlive their listing's entry by this long, so that a reader that found the entry finds
# every page (unless fetching the list took longer, or the cache dropped pages for room).
PAGE_GRACE_SECONDS = 60
# A listing up to this size is also kept whole in this process, as the one JSON array it is
# answered as: a warm list then costs no join and no write per page. About 2,000 members.
WHOLE_BYTES = 256 * 1024
TOO_LARGE = b""  # what is kept for a listing larger than that
# How long a sequence's page count is remembered after its listing is gone: what the budget
# must hold to list it again.
PAGE_COUNT_SECONDS = 86400


class Listings:
    """Listings kept in ``cache``: each an entry whose value names its pages."""

    def __init__(self, cache: SharedCache):
        self.cache = cache
        self.store = cache.store
        # Listings this process read from the store within the last second; while the store
        # fails, every one it remembers however old, and those it stored meanwhile whose every
        # page it kept in ``pages`` (``_kept``). Pages outlive them.
        self.memo = Memo()
        self.pages = PageMemo()

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
        now = clock.now()
        current = None if fresh else self.memo.recall(key)
        if current is None:
            current = self.store.get(key)
            if current is not None:
                self.memo.remember(key, current)
            elif self.store.failing:  # what this process remembers answers (stale-if-error)
                current = self.memo.recall(key, however_old=True)
        if current is not None and not current.usable(now, stale_seconds):
            current = None
        if current is not None and self.store.failing and not self._held(key, current.value):
            current = None  # its pages are not all in this process: read them from Auth0
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

    def whole(self, key: str, listing: Listing) -> bytes | None:
        """The listing's pages as one JSON array (their items joined by commas), if it is at
        most ``WHOLE_BYTES``: made once per listing in this process, with its pages. None for a
        larger one, or one whose pages are gone (then streamed, and cut off where one is)."""
        whole_key = _page_key(key, listing.generation, 0)
        body = self.pages.recall(whole_key)
        if body is None:
            body = self._joined(key, listing)
            if body is None:
                return None
            self.pages.remember(whole_key, body)
        return body or None

    def rewrite(
        self,
        key: str,
        edit: Callable[[list], list | None],
        *,
        stale_seconds: float,
        page_size: int,
        written: Callable[[list], None] = lambda items: None,
    ) -> bool:
        """Store the cached listing as ``edit`` changes its items (None: nothing to change),
        under the key's lock (a fetch in progress finishes first; a refresh started before
        finds it replaced and is dropped); then ``written`` runs with the new items, still
        under the lock. The new listing is as old as now (its ``Age``) and fresh until the
        one it replaces was: an edit is no reading of the whole, which is still due then.
        Nothing is done for a listing not cached (the next read fetches it whole) or whose
        pages are gone. Whether it was rewritten."""
        with self.cache.locks.hold(key):
            current = self.store.get(key)
            if current is None:
                return False
            items = self._items(key, current.value)
            if items is None:
                self.store.delete(key)  # incomplete: read anew
                return False
            edited = edit(items)
            if edited is None:
                return False
            now = clock.now()
            ttl = max(current.fresh_until - now, 1.0)
            starts = range(0, max(len(edited), 1), page_size)
            pages = [json_fragment(edited[start : start + page_size]) for start in starts]
            listing = _run_to_end(self._store_listing(key, iter(pages), ttl + stale_seconds))
            self._kept(key, self.cache.write(key, listing, ttl, stale_seconds, now))
            written(edited)
            return True

    def drop(self, key: str) -> list:
        """Delete the cached listing; the items it held (none where its pages are gone)."""
        with self.cache.locks.hold(key):
            current = self.store.get(key)
            self.store.delete(key)
            self.memo.forget(key)
        return (self._items(key, current.value) or []) if current is not None else []

    def _items(self, key: str, listing: Listing) -> list | None:
        """Every item of the listing (JSON pages), or None where a page is gone."""
        try:
            return [
                item for page in self._cached_pages(key, listing) for item in loads(f"[{page}]")
            ]
        except CachedPageMissing:
            return None

    def _joined(self, key: str, listing: Listing) -> bytes | None:
        pages, size = [], 0
        try:
            for page in self._cached_pages(key, listing):
                size += len(page)
                if size > WHOLE_BYTES:
                    return TOO_LARGE
                if page:
                    pages.append(page)
        except CachedPageMissing:
            return None
        return ("[" + ",".join(pages) + "]").encode()

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
        with self.cache.locks.hold(key, done=settled):
            seen = self.store.get(key)
            if not fresh and seen is not None and seen.usable(clock.now(), stale_seconds):
                yield seen
                return
            fetched_at, fetch = clock.now(), fetch_pages(expected)
            listing = yield from self._store_listing(key, fetch.pages, ttl + stale_seconds)
            if self.store.get(key) == seen:
                self._kept(key, self.cache.write(key, listing, ttl, stale_seconds, fetched_at))
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

        def written(entry: Entry) -> None:
            self._kept(key, entry)
            fetches[0].stored()

        self.cache.refresh_in_background(
            key, current, refetch, stale_seconds=stale_seconds, written=written
        )

    def _kept(self, key: str, entry: Entry) -> None:
        """This process stored the listing ``entry``: it reads it back from the store, where
        another worker may store a newer one; while the store fails, it serves it from memory
        if it kept every page (else what it remembered before serves on)."""
        if not self.store.failing:
            self.memo.forget(key)
        elif self._held(key, entry.value):
            self.memo.remember(key, entry)

    def _held(self, key: str, listing: Listing) -> bool:
        """Whether every page of ``listing`` is in this process's memory."""
        numbers = range(1, listing.pages + 1)
        return all(_page_key(key, listing.generation, number) in self.pages for number in numbers)

    def _store_listing(
        self, key: str, pages: Iterator[str], ttl: float
    ) -> Generator[str, None, Listing]:
        """Store and yield each page under a new generation; return the listing naming them.
        A page the store fails to take is kept in this process, which may then serve it."""
        generation, digest = uuid.uuid4().hex, ListDigest()
        for number, page in enumerate(pages, start=1):
            page_key = _page_key(key, generation, number)
            self.store.set(page_key, page, ttl + PAGE_GRACE_SECONDS)
            if self.store.failing:
                self.pages.remember(page_key, page)
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


def _run_to_end(steps: Iterator[Any]) -> Any:
    """Run a generator to its end; what it returned."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def _page_key(key: str, generation: str, number: int) -> str:
    return f"{key}:{generation}:{number}"
