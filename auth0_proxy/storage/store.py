"""Where the shared cache keeps its values, and the two atomic steps coordination needs.

Values go through Flask-Caching's backend (cachelib): files shared by the workers of one host,
Redis shared by hosts, or the memory of one process. This module adds what cachelib lacks:

- a failing backend (Redis down, a full disk) is a miss or a no-op, logged once per interval:
  a cache outage costs speed, never answers; after a failure, operations fail at once for a
  second before one tries the backend again, so a backend that hangs costs one timeout a
  second, not one per operation;
- ``add`` (set if absent) and ``delete_if`` (delete if it still holds this value) are atomic,
  so locks and markers can be built on them: on Redis with ``SET NX`` and a script, in the file
  cache under a host-wide ``flock``, in memory under a lock;
- ``take_tokens`` spends from token buckets (the upstream budget, the rate limits) atomically:
  in one Redis script on Redis's clock, in the file cache from a file of their own mapped into
  memory (buckets.py), in memory under a lock; while the backend fails, each process spends
  from buckets of its own, so the budget still bounds it;
- every key carries one prefix (tenant and storage format; token buckets the tenant only, so a
  format change never splits the budget), applied here for every backend. The buckets' prefix
  is a Redis Cluster hash tag (``{auth0-m2m-proxy:tenant:}budget:...``): a cluster keeps them in
  one slot, where one script may spend from several.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cachelib import BaseCache, FileSystemCache
from flask_caching.backends.rediscache import RedisCache

from auth0_proxy.core import clock, metrics

from . import redis_client
from .buckets import FILE_NAME, Bucket, BucketFile, spend_from

if TYPE_CHECKING:
    import redis

log = logging.getLogger("auth0_proxy.store")

OUTAGE_LOG_INTERVAL_SECONDS = 10
# Every process sharing a Redis says it is alive this often, and is counted as alive for
# PROCESS_TTL_SECONDS after; while the store fails, each spends its share of the budget only
# (the budget divided by the processes last counted).
HEARTBEAT_SECONDS = 10
PROCESS_TTL_SECONDS = 60
# The probe does not ask a backend that failed this recently again: one that hangs would hold
# each probe for its timeout (a Kubernetes probe's default timeout is one second); longer than a
# probe's period, so a hanging backend holds one probe in three at most.
PROBE_AFTER_FAILURE_SECONDS = 30
PROBE_KEY = "probe"  # read, never written
# After a failure, operations fail at once (no network) for this long, then one tries the backend
# again while the others go on failing at once: a Redis that hangs (rather than refuses) would
# hold every operation for its timeout (a second), several per request.
RETRY_AFTER_FAILURE_SECONDS = 1.0
# KEYS[1] still holds ARGV[1]: delete it; else leave it (it is someone else's now).
DELETE_IF_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
EXTEND_IF_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end
return 0
"""
# Token buckets KEYS[i], each ARGV: rate, capacity, floor, ceiling (after the spend: calls).
# Refill each by Redis's clock (so hosts with skewed clocks agree), lower it to its ceiling, then
# spend ``calls`` from all of them if each stays at or above its floor; else from none.
TAKE_TOKENS_SCRIPT = """
redis.replicate_commands()  -- writes after TIME: replicate effects (Redis < 5 needs it asked)
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
local calls = tonumber(ARGV[1])
local tokens, granted = {}, true
for i, key in ipairs(KEYS) do
  local rate, capacity = tonumber(ARGV[4 * i - 2]), tonumber(ARGV[4 * i - 1])
  local floor, ceiling = tonumber(ARGV[4 * i]), tonumber(ARGV[4 * i + 1])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local level = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  level = math.min(capacity, level + math.max(0, now - at) * rate, ceiling)
  tokens[i] = level
  if level - calls < floor then granted = false end
end
local answer = {granted and 1 or 0}
for i, key in ipairs(KEYS) do
  if granted then tokens[i] = tokens[i] - calls end
  local rate, capacity = tonumber(ARGV[4 * i - 2]), tonumber(ARGV[4 * i - 1])
  redis.call('HSET', key, 'tokens', tostring(tokens[i]), 'at', tostring(now))
  redis.call('EXPIRE', key, math.ceil((capacity - tokens[i]) / rate) + 1)
  answer[i + 1] = tostring(tokens[i])
end
return answer
"""


class Store:
    """Values by key in one backend, whose failures are misses and no-ops.

    ``add`` and ``delete_if`` are atomic for the threads of this process; the subclasses make
    them atomic for whoever shares their backend.
    """

    cache_type = "simple"  # as config.json names the backend: the gauge's label
    shared_by_hosts = False

    def __init__(self, backend: BaseCache, prefix: str, bucket_prefix: str | None = None):
        self.backend = backend
        self.prefix = prefix
        # Token buckets keep their own prefix: without the storage format, so a rolling upgrade
        # that changes the format (old and new processes at once) still spends one budget.
        self.bucket_prefix = prefix if bucket_prefix is None else bucket_prefix
        self.up: bool | None = None  # did the last operation succeed (None: none made yet)
        self._failed_at = -float(PROBE_AFTER_FAILURE_SECONDS)
        self._retry_at = 0.0  # while failing: when an operation may try the backend again
        self._last_outage_log = -float(OUTAGE_LOG_INTERVAL_SECONDS)
        self._mutex = threading.Lock()
        self._state_mutex = threading.Lock()
        self._own_buckets: dict[str, tuple[float, float]] = {}  # while the backend fails
        # The processes sharing the backend, as last counted: remembered through an outage.
        self.processes = 1

    @property
    def failing(self) -> bool:
        """Whether the backend failed at the last operation (and has not answered since)."""
        return self.up is False

    def get(self, key: str) -> Any:
        return self._safely(self.backend.get, None, self.prefix + key)

    def set(self, key: str, value: Any, ttl: float) -> None:
        self._safely(self.backend.set, None, self.prefix + key, value, timeout=_seconds(ttl))

    def delete(self, key: str) -> None:
        self._safely(self.backend.delete, None, self.prefix + key)

    def add(self, key: str, value: str | int, ttl: float) -> bool:
        """Set ``key`` only if it is absent; whether it was. A failing backend says yes, so a
        lock built on it is granted and the caller goes to Auth0 directly."""
        return self._safely(self._add, True, self.prefix + key, value, _seconds(ttl))

    def delete_if(self, key: str, value: str | int) -> bool:
        """Delete ``key`` only if it still holds ``value`` (a lock released by its owner)."""
        return self._safely(self._delete_if, False, self.prefix + key, value)

    def extend_if(self, key: str, value: str | int, ttl: float) -> bool:
        """Keep ``key`` ``ttl`` seconds more only if it still holds ``value`` (a lease renewed
        by its holder); whether it did. A failing backend says no."""
        return self._safely(self._extend_if, False, self.prefix + key, value, _seconds(ttl))

    def answers(self) -> bool:
        """Whether the backend answers now: a read of a key no one writes (a failure is one as
        any other: logged, and the gauge set); no read while it failed lately."""
        if self.failing and clock.monotonic() - self._failed_at < PROBE_AFTER_FAILURE_SECONDS:
            return False
        return self._safely(self._probe, False)

    def _probe(self) -> bool:
        self.backend.get(self.prefix + PROBE_KEY)
        return True

    def take_tokens(self, buckets: Sequence[Bucket], calls: int) -> tuple[bool, list[float]]:
        """Spend ``calls`` tokens from every bucket, if each keeps its floor; else from none.
        Whether they were spent, and each bucket's level after. While the backend fails, this
        process spends from buckets of its own."""
        keyed = [dataclasses.replace(b, key=self.bucket_key(b.key)) for b in buckets]
        taken = self._safely(self._take_tokens, None, keyed, calls)
        if taken is None:
            own = [share_of(bucket, self.processes) for bucket in keyed]
            with self._mutex:
                return self._take_from(self._own_buckets, own, calls)
        return taken

    def bucket_key(self, key: str) -> str:
        """``key`` with the buckets' prefix, as a hash tag (every bucket in one cluster slot)."""
        return f"{{{self.bucket_prefix}}}{key}"

    def beat(self) -> None:
        """Say this process is alive, and count those that are (kept through an outage). A
        failure is left to the operations that need the store to say (and log)."""
        with contextlib.suppress(Exception):  # its outage is reported where it matters
            self.processes = self._count_processes()

    def _count_processes(self) -> int:
        return 1  # a store no other process shares

    def start_heartbeat(self) -> None:
        """Beat now and every HEARTBEAT_SECONDS, in a thread that ends with the store; for a
        store other hosts share (a file cache's processes are one host's: a failing disk is
        rarer than a Redis outage, and the budget is not divided there)."""
        if not self.shared_by_hosts:
            return
        self.beat()
        alive = weakref.ref(self)

        def beat_on() -> None:
            while True:
                time.sleep(HEARTBEAT_SECONDS)
                store = alive()
                if store is None:
                    return
                store.beat()
                del store

        threading.Thread(target=beat_on, name="store heartbeat", daemon=True).start()

    def _take_tokens(self, buckets: Sequence[Bucket], calls: int) -> tuple[bool, list[float]]:
        with self._exclusive():
            now = clock.now()
            states = [self.backend.get(bucket.key) for bucket in buckets]
            granted, levels = spend_from(buckets, states, calls, now)
            for bucket, level in zip(buckets, levels, strict=True):
                self.backend.set(bucket.key, (level, now), timeout=bucket.seconds_to_refill(level))
            return granted, levels

    @staticmethod
    def _take_from(
        states: dict[str, tuple[float, ...]], buckets: Sequence[Bucket], calls: int
    ) -> tuple[bool, list[float]]:
        """Spend from buckets whose states are in ``states``, and update them there."""
        now = clock.now()
        granted, levels = spend_from(buckets, [states.get(b.key) for b in buckets], calls, now)
        for bucket, level in zip(buckets, levels, strict=True):
            states[bucket.key] = (level, now)
        return granted, levels

    def _add(self, key: str, value: str | int, ttl: int) -> bool:
        with self._exclusive():
            return not self.backend.has(key) and bool(self.backend.set(key, value, timeout=ttl))

    def _delete_if(self, key: str, value: str | int) -> bool:
        with self._exclusive():
            return self.backend.get(key) == value and bool(self.backend.delete(key))

    def _extend_if(self, key: str, value: str | int, ttl: int) -> bool:
        with self._exclusive():
            return self.backend.get(key) == value and bool(
                self.backend.set(key, value, timeout=ttl)
            )

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._mutex:
            yield

    def _safely(self, operation, fallback: Any, *args, **kwargs) -> Any:
        if self.failing and not self._may_try_again():
            return fallback
        try:
            result = operation(*args, **kwargs)
        except Exception as error:  # any backend failure: Redis down, disk full, ...
            now = clock.monotonic()
            self._failed_at = now
            self._retry_at = now + RETRY_AFTER_FAILURE_SECONDS
            if self.up is not False:
                self._record(up=False)
            if now - self._last_outage_log > OUTAGE_LOG_INTERVAL_SECONDS:
                self._last_outage_log = now
                log.warning(
                    "cache unavailable (%s); serving from memory or Auth0 directly",
                    type(error).__name__,
                )
            return fallback
        if not self.up:  # the first operation, or the first since a failure
            if self.up is False:
                log.warning("cache available again; the budget is shared again")
            self._record(up=True)
        return result

    def _may_try_again(self) -> bool:
        """While the backend fails: whether this operation tries it (one per
        RETRY_AFTER_FAILURE_SECONDS; the others meanwhile fail at once)."""
        now = clock.monotonic()
        with self._state_mutex:
            if now < self._retry_at:
                return False
            self._retry_at = now + RETRY_AFTER_FAILURE_SECONDS
            return True

    def _record(self, up: bool) -> None:
        """The backend's state changed: into ``up`` and the gauge (once per change, not per
        operation: a gauge's write is a write to a file under gunicorn)."""
        with self._state_mutex:
            if self.up is not up:
                self.up = up
                metrics.observe_store(self.cache_type, up)


class FileStore(Store):
    """The file cache of one host: atomic steps hold an ``flock`` on a file in its directory,
    which excludes every thread of every worker (cachelib's own ``add`` tests, then writes).
    Buckets are in a file of their own, mapped into memory (cachelib would prune them first:
    a bucket pruned is a full one)."""

    cache_type = "filesystem"

    def __init__(
        self, backend: BaseCache, prefix: str, directory: str, bucket_prefix: str | None = None
    ):
        super().__init__(backend, prefix, bucket_prefix)
        # Named as cachelib names its temporary files, which its pruning leaves alone (it would
        # read any other file as an entry, and may delete it).
        suffix = getattr(backend, "_fs_transaction_suffix", ".__wz_cache")
        self.lock_path = os.path.join(directory, f".store.lock{suffix}")
        self.buckets = BucketFile(os.path.join(directory, f"{FILE_NAME}{suffix}"))

    def _take_tokens(self, buckets: Sequence[Bucket], calls: int) -> tuple[bool, list[float]]:
        return self.buckets.take(buckets, calls)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with open(self.lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield


class RedisStore(Store):
    """Redis, shared by hosts: atomic steps are single Redis commands (``SET NX``, a script).

    Keys written by ``add`` hold plain strings or integers, read back only by ``delete_if`` and
    ``extend_if``.
    """

    cache_type = "redis"
    shared_by_hosts = True

    def __init__(self, backend: RedisBackend, prefix: str, bucket_prefix: str | None = None):
        super().__init__(backend, prefix, bucket_prefix)
        self.client = backend.client
        self._process_pid: int | None = None
        self._process_id = ""
        from redis.commands.core import Script  # redis is imported by the Redis store only

        # As bytes, so that making them asks the client nothing (a Cluster client is made on
        # first use: redis_client.py).
        self._delete_if_script = Script(self.client, DELETE_IF_SCRIPT.encode())
        self._extend_if_script = Script(self.client, EXTEND_IF_SCRIPT.encode())
        self._take_tokens_script = Script(self.client, TAKE_TOKENS_SCRIPT.encode())

    def _add(self, key: str, value: str | int, ttl: int) -> bool:
        return bool(self.client.set(key, value, nx=True, ex=ttl))

    def _delete_if(self, key: str, value: str | int) -> bool:
        return bool(self._delete_if_script(keys=[key], args=[value]))

    def _extend_if(self, key: str, value: str | int, ttl: int) -> bool:
        return bool(self._extend_if_script(keys=[key], args=[value, ttl]))

    def _count_processes(self) -> int:
        """Live processes sharing this Redis: each one's last beat in a sorted set."""
        if self._process_pid != os.getpid():  # a forked worker is a process of its own
            self._process_pid = os.getpid()
            self._process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        key, now = self.bucket_key("processes"), clock.now()
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(key, {self._process_id: now})
        pipe.zremrangebyscore(key, "-inf", now - PROCESS_TTL_SECONDS)
        pipe.zcard(key)
        pipe.expire(key, 2 * PROCESS_TTL_SECONDS)
        return max(1, int(pipe.execute()[2]))

    def _take_tokens(self, buckets: Sequence[Bucket], calls: int) -> tuple[bool, list[float]]:
        args: list[str] = [str(calls)]
        for bucket in buckets:
            limits = (bucket.rate, bucket.capacity, bucket.floor, bucket.ceiling)
            args += [repr(min(max(float(value), -1e300), 1e300)) for value in limits]
        answer = self._take_tokens_script(keys=[bucket.key for bucket in buckets], args=args)
        return answer[0] == 1, [float(level) for level in answer[1:]]


# ``redis_client.connect``'s arguments, by the Flask-Caching config keys bind_cache gives them.
REDIS_OPTIONS = {
    "mode": "CACHE_REDIS_MODE",
    "sentinels": "CACHE_REDIS_SENTINELS",
    "service": "CACHE_REDIS_SENTINEL_SERVICE",
    "sentinel_password": "CACHE_REDIS_SENTINEL_PASSWORD",
}


class RedisBackend(RedisCache):
    """Flask-Caching's Redis backend on a client made here (one server, Sentinel or Cluster:
    redis_client.py) and kept as ``client``, so that ``RedisStore`` runs its atomic steps on
    the same connections."""

    client: redis.Redis

    @classmethod
    def factory(cls, app, config, args, kwargs) -> RedisBackend:
        given = {arg: config[key] for arg, key in REDIS_OPTIONS.items() if key in config}
        client = redis_client.connect(config["CACHE_REDIS_URL"], **given)
        backend = cls(host=client, default_timeout=config["CACHE_DEFAULT_TIMEOUT"])
        backend.client = client
        return backend


def store_for(
    backend: BaseCache, prefix: str, directory: str, bucket_prefix: str | None = None
) -> Store:
    """The Store that makes ``backend``'s atomic steps hold for everyone who shares it."""
    if isinstance(backend, RedisBackend):
        return RedisStore(backend, prefix, bucket_prefix)
    if isinstance(backend, FileSystemCache):
        return FileStore(backend, prefix, directory, bucket_prefix)
    return Store(backend, prefix, bucket_prefix)


def _seconds(ttl: float) -> int:
    """cachelib counts whole seconds, and 0 means forever: at least one."""
    return max(int(ttl), 1)


def share_of(bucket: Bucket, processes: int) -> Bucket:
    """This process's part of ``bucket`` while the store fails: a ``processes``-th of its rate,
    capacity and reserves, so all of them together spend no more than the bucket would. A
    capacity below one call is raised to one (a process must be able to call at all): the
    worst case is then one call per process per refill."""
    if processes <= 1:
        return bucket
    return dataclasses.replace(
        bucket,
        rate=bucket.rate / processes,
        capacity=max(1.0, bucket.capacity / processes),
        floor=bucket.floor / processes,
        ceiling=bucket.ceiling / processes,
    )
