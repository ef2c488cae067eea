"""The shared cache: one fetch per key across threads, workers and (with Redis) hosts.

Flask-Caching stores the values; this module adds what it lacks: a lock, built on the backend's
atomic ``add`` so it works for every backend that has one, and a short memory of failures. Locks
expire, so a worker that dies while holding one blocks the others for at most ``lock_seconds``.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask_caching.backends.filesystemcache import FileSystemCache

from .errors import APIError, UpstreamUnavailable

log = logging.getLogger(__name__)

OUTAGE_LOG_INTERVAL_SECONDS = 10
# Share of a value's lifetime after which refresh_ahead fetches its successor (earlier for a
# value that is slow to fetch: see SharedCache.put).
REFRESH_AHEAD_AT = 0.8
# Background refreshes a process runs at once; beyond them, values expire and are fetched by
# the request that next needs them, as without refresh-ahead.
MAX_REFRESHES = 4
# get_or_create values a process keeps in memory: for at most this long, this many of them.
MEMO_SECONDS = 1.0
MEMO_ENTRIES = 4096


class LockingFileSystemCache(FileSystemCache):
    """FileSystemCache with an atomic ``add`` and the key prefix applied.

    cachelib's ``add`` tests for the file and then writes it, so two workers can both win, and an
    expired lock file would block forever; a host-local ``flock`` makes test-and-set one step.
    cachelib also ignores ``CACHE_KEY_PREFIX``, which keeps proxies of different tenants that
    share a directory apart.
    """

    def __init__(self, cache_dir: str, *args, key_prefix: str = "", **kwargs):
        self.key_prefix = key_prefix  # before cachelib's __init__, which names its count file
        super().__init__(cache_dir, *args, **kwargs)

    @classmethod
    def factory(cls, app, config, args, kwargs):
        kwargs["key_prefix"] = config["CACHE_KEY_PREFIX"]
        return super().factory(app, config, args, kwargs)

    def _get_filename(self, key: str) -> str:
        return super()._get_filename(self.key_prefix + key)

    def add(self, key: str, value: Any, timeout: int | None = None) -> bool:
        with open(os.path.join(self._path, ".add.lock"), "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            if self.has(key):
                return False
            return self.set(key, value, timeout)


class SharedCache:
    """The proxy's view of the shared cache: one fetch per key, and failures remembered briefly.

    ``lock_seconds`` must outlast the slowest fetch (the upstream timeouts), or a second caller
    would start fetching while the first still waits. ``failure_seconds`` is how long a failed
    fetch is answered from memory (503 with Retry-After), so that while Auth0 fails, a flood of
    requests does not become a flood of upstream calls.
    """

    def __init__(self, backend, *, lock_seconds: int, failure_seconds: int):
        self.backend = backend
        self.lock_seconds = lock_seconds
        self.failure_seconds = failure_seconds
        self._last_outage_log = -OUTAGE_LOG_INTERVAL_SECONDS
        # What this process read lately, so a burst of requests does not re-read the shared
        # cache (a file or a Redis round trip, and unpickling) for the same key every time.
        self._memo: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._refresh_slots = threading.BoundedSemaphore(MAX_REFRESHES)

    # A cache outage must cost speed, not answers: every operation that fails is logged and
    # taken as a miss (get), a no-op (set, delete) or a granted lock (add), so requests go
    # straight to Auth0 until the cache is back.

    def get(self, key: str) -> Any:
        return self._safely("get", None, key)

    def set(self, key: str, value: Any, ttl: int) -> None:
        self._safely("set", None, key, value, timeout=max(int(ttl), 1))

    def add(self, key: str, value: Any, ttl: int) -> bool:
        """Set the key only if absent; atomic, so usable as a lock or a rate guard."""
        return bool(self._safely("add", True, key, value, timeout=max(int(ttl), 1)))

    def delete(self, key: str) -> None:
        self.forget_local(key)
        self._safely("delete", None, key)

    def reread(self, key: str) -> tuple[Any, float, float] | None:
        """The get_or_create entry in the shared cache now (another worker may have replaced
        it), and remembered so by this process."""
        entry = self.get(key)
        if entry is not None:
            self._remember(key, entry)
        return entry

    def forget_local(self, key: str) -> None:
        """Drop this process's memory of a get_or_create value: the next read sees the cache."""
        with self._memo_lock:
            self._memo.pop(key, None)

    def discard(self, key: str, value: Any) -> None:
        """Delete a get_or_create value if it is still ``value`` (e.g. a token Auth0 refused),
        not a successor another worker already stored."""
        self.forget_local(key)
        entry = self.get(key)
        if entry is not None and entry[0] == value:
            self.delete(key)

    def _safely(self, operation: str, fallback: Any, *args, **kwargs) -> Any:
        try:
            return getattr(self.backend, operation)(*args, **kwargs)
        except Exception as error:  # any backend failure: Redis down, disk full, ...
            now = time.monotonic()
            if now - self._last_outage_log > OUTAGE_LOG_INTERVAL_SECONDS:
                self._last_outage_log = now
                log.warning(
                    "cache unavailable (%s); serving from Auth0 directly", type(error).__name__
                )
            return fallback

    def get_or_create(
        self, key: str, create: Callable[[], tuple[Any, int]], *, refresh_ahead: bool = False
    ) -> Any:
        """The cached value, or one caller creates it while the others wait for it.

        ``create`` returns ``(value, ttl_seconds)``. Its exception reaches the caller that ran it
        and is remembered for ``failure_seconds``. With ``refresh_ahead``, a value past
        ``REFRESH_AHEAD_AT`` of its lifetime is still served while one background thread fetches
        its successor, so no request waits for it.

        :raise UpstreamUnavailable: a fetch of this key failed moments ago (503).
        """
        entry = self._recall(key)
        if entry is None:  # remembered for MEMO_SECONDS from this read, however often recalled
            entry = self.get(key) or self._create_once(key, create)
            self._remember(key, entry)
        value, refresh_at, _ = entry
        if refresh_ahead and time.time() >= refresh_at:
            self.refresh_in_background(key, create, entry)
        return value

    def _create_once(
        self, key: str, create: Callable[[], tuple[Any, int]]
    ) -> tuple[Any, float, float]:
        settled = lambda: self.get(key) is not None or self.get(f"{key}:failed") is not None  # noqa: E731
        with self.lock(key, done=settled):
            entry = self.get(key)
            if entry is not None:
                return entry
            self._raise_recent_failure(key)
            started = time.monotonic()
            try:
                value, ttl = create()
                return self.put(key, value, ttl, fetch_seconds=time.monotonic() - started)
            except APIError as error:
                # Remember Auth0's failures, not its answers (a 404 is an answer).
                if self.failure_seconds > 0 and error.status_code >= 500:
                    failure = (error.message, time.time() + self.failure_seconds)
                    self.set(f"{key}:failed", failure, self.failure_seconds)
                    error.headers.setdefault("Retry-After", str(self.failure_seconds))
                raise

    def put(
        self, key: str, value: Any, ttl: int, *, fetch_seconds: float = 0.0
    ) -> tuple[Any, float, float]:
        """Store a value for get_or_create, with the time to refresh it ahead of expiry: the
        last fifth of its lifetime, or earlier by twice what fetching it took (so that a slow
        fetch, a long member list, is done before the value expires), but never in the first
        half, so that a value slower to fetch than its TTL is not fetched back to back."""
        now = time.time()
        lifetime = ttl - 1  # cachelib's file cache rounds expiry down to the second
        lead = min(max(lifetime * (1 - REFRESH_AHEAD_AT), 2 * fetch_seconds), lifetime / 2)
        entry = (value, now + max(lifetime - lead, 0), now)  # value, refresh at, stored at
        self.set(key, entry, ttl)
        self._remember(key, entry)
        return entry

    def _recall(self, key: str) -> tuple[Any, float, float] | None:
        with self._memo_lock:
            memo = self._memo.get(key)
            if memo is None or memo[1] < time.monotonic():
                return None
            self._memo.move_to_end(key)
            return memo[0]

    def _remember(self, key: str, entry: tuple[Any, float, float]) -> None:
        with self._memo_lock:
            self._memo[key] = (entry, time.monotonic() + MEMO_SECONDS)
            self._memo.move_to_end(key)
            if len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)

    def refresh_in_background(
        self,
        key: str,
        create: Callable[[], tuple[Any, int]],
        current: tuple[Any, float, float],
        *,
        seconds: int = 0,
    ) -> None:
        """Store a successor to ``current`` (the entry under ``key``) from ``create``, in a
        background thread: nobody waits for it.

        One refresh of a key runs at a time across threads, workers and hosts (for at most
        ``seconds``, or ``lock_seconds`` if longer: how long one may take), and at most
        ``MAX_REFRESHES`` in a process. A refresh replaces only the entry it was started for,
        never one stored meanwhile (keys fetched for a new kid, a no-cache read).
        """
        if not self._refresh_slots.acquire(blocking=False):
            return
        marker = f"{key}:refreshing"
        if not self.add(marker, 1, max(seconds, self.lock_seconds)):
            self._refresh_slots.release()
            return  # another thread, worker or host is on it

        def refresh() -> None:
            started = time.monotonic()
            try:
                latest = self.reread(key)
                if latest is not None and latest[2] != current[2]:
                    self.delete(marker)  # refreshed meanwhile, by a worker that saw it sooner
                    return
                value, ttl = create()
                latest = self.get(key)
                if latest is None or latest[2] == current[2]:
                    self.put(key, value, ttl, fetch_seconds=time.monotonic() - started)
                self.delete(marker)
            except Exception as error:  # logged here, redacted, not by the thread's excepthook
                reason = error.reason if isinstance(error, APIError) else repr(error)
                log.warning("refreshing %s ahead of expiry failed: %s", key, reason)
                # Do not try again at once: the current value serves until it expires.
                self.set(marker, 1, max(self.failure_seconds, 1))
            finally:
                self._refresh_slots.release()

        try:
            threading.Thread(target=refresh, name=f"refresh {key}", daemon=True).start()
        except RuntimeError as error:  # no thread to be had: the value serves until it expires
            log.warning("refreshing %s ahead of expiry failed: %r", key, error)
            self.delete(marker)
            self._refresh_slots.release()

    @contextmanager
    def lock(
        self, name: str, *, done: Callable[[], bool] = lambda: False, poll_seconds: float = 0.05
    ) -> Iterator[None]:
        """Run the block while holding the lock ``name``, across all users of the cache.

        A waiter stops waiting as soon as ``done()`` says the holder did the work (and then
        runs the block without the lock, which re-checks and finds it done), or when the lock
        has been held for ``lock_seconds`` (the holder is stuck or dead).
        """
        lock_key, owner = f"{name}:lock", uuid.uuid4().hex
        deadline = time.monotonic() + self.lock_seconds
        while not self.add(lock_key, owner, self.lock_seconds):
            time.sleep(poll_seconds)
            if done() or time.monotonic() > deadline:
                owner = None
                break
        try:
            yield
        finally:
            if owner is not None and self.get(lock_key) == owner:
                self.delete(lock_key)

    def _raise_recent_failure(self, key: str) -> None:
        failure = self.get(f"{key}:failed")
        if failure is not None:
            message, until = failure
            raise UpstreamUnavailable(
                message,
                reason=f"{key}: failed moments ago, not asking Auth0 again yet",
                headers={"Retry-After": str(max(1, math.ceil(until - time.time())))},
            )
