"""Shared cache helpers: one fetch per key across threads, workers and (with Redis) hosts.

Flask-Caching stores the values; this module adds the one thing it lacks, a lock, built on the
cache's atomic ``add`` so it works for every backend that has one. Locks expire, so a worker that
dies while holding one blocks the others for at most ``lock_seconds``.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask_caching.backends.filesystemcache import FileSystemCache


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


def get_or_create(
    cache,
    key: str,
    create: Callable[[], tuple[Any, int]],
    *,
    lock_seconds: int = 15,
    poll_seconds: float = 0.05,
) -> Any:
    """Return the cached value, or let exactly one caller create it while the others wait.

    ``create`` returns ``(value, ttl_seconds)``. Exceptions from it reach the caller that ran it;
    waiters then try again themselves.
    """
    value = cache.get(key)
    if value is not None:
        return value
    lock_key, owner = f"{key}:lock", uuid.uuid4().hex
    deadline = time.monotonic() + lock_seconds
    while not cache.add(lock_key, owner, timeout=lock_seconds):
        time.sleep(poll_seconds)
        value = cache.get(key)
        if value is not None:
            return value
        if time.monotonic() > deadline:
            owner = None  # the holder is stuck; go ahead without the lock
            break
    try:
        value = cache.get(key)
        if value is None:
            value, ttl = create()
            cache.set(key, value, timeout=max(int(ttl), 1))
        return value
    finally:
        if owner is not None and cache.get(lock_key) == owner:
            cache.delete(lock_key)
