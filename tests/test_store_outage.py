"""The budget through a Redis outage: every process sharing the Redis says it is alive
(heartbeats in the store), and while the Redis is down each spends only its part of the budget,
so all of them together spend no more than the share; a Redis that hangs costs a process one
timeout a second, not one per operation. A real ``redis-server`` of the test's own is stopped
mid-run (cached answers through an outage: tests/test_outage_memory.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff

from auth0_proxy.storage.buckets import Bucket
from auth0_proxy.storage.redis_client import RETRIES, connect
from auth0_proxy.storage.store import (
    RETRY_AFTER_FAILURE_SECONDS,
    RedisBackend,
    Store,
    share_of,
    store_for,
)
from tests.support import redis_server

PROCESSES = 4
BURST = 20


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server the test may stop: its URL and process."""
    with redis_server(tmp_path, "redis://127.0.0.1:{}/0".format, "--port", "{port}") as running:
        yield running


def redis_stores(url: str, count: int) -> list[Store]:
    """``count`` processes' stores on one Redis (as workers of several instances have)."""
    config = {"CACHE_REDIS_URL": url, "CACHE_DEFAULT_TIMEOUT": 300}
    stores = []
    for _ in range(count):
        backend = RedisBackend.factory(None, config, [], {})
        stores.append(store_for(backend, "tenant:v5:", "", bucket_prefix="tenant:"))
    return stores


def spend_all(stores: list[Store], bucket: Bucket) -> int:
    """Calls granted to all processes, each spending until refused."""
    granted = 0
    for store in stores:
        for _ in range(10 * BURST):
            taken, _ = store.take_tokens([bucket], 1)
            if not taken:
                break
            granted += 1
    return granted


def test_processes_count_each_other_and_spend_only_their_part_while_redis_is_down(own_redis):
    url, server = own_redis
    stores = redis_stores(url, PROCESSES)
    for store in stores:
        store.beat()
    for store in stores:
        store.beat()  # each sees all of them once all have said they are alive
    assert [store.processes for store in stores] == [PROCESSES] * PROCESSES

    budget = Bucket("budget:users", rate=1e-6, capacity=BURST)  # no refill during the test
    server.terminate()
    server.wait(timeout=10)
    granted = spend_all(stores, budget)
    assert granted == BURST  # all together: the share, not PROCESSES times it
    assert all(store.processes == PROCESSES for store in stores)  # remembered through it


def test_without_the_count_each_process_would_spend_the_whole_share(own_redis):
    """What the heartbeats prevent: a process that counted no others spends the whole share."""
    url, server = own_redis
    stores = redis_stores(url, 2)  # no beat: each believes it is alone
    server.terminate()
    server.wait(timeout=10)
    assert spend_all(stores, Bucket("budget:users", rate=1e-6, capacity=BURST)) == 2 * BURST


def test_a_share_keeps_at_least_one_call_and_scales_the_reserves():
    bucket = Bucket("b", rate=2.0, capacity=4, floor=2, ceiling=8)
    part = share_of(bucket, 8)
    assert (part.rate, part.capacity, part.floor, part.ceiling) == (0.25, 1.0, 0.25, 1.0)
    assert share_of(bucket, 1) is bucket


def seconds_to_miss(store: Store) -> float:
    """How long a read of the store takes to miss (the store fails)."""
    started = time.monotonic()
    assert store.get("entry") is None
    return time.monotonic() - started


def test_a_hanging_redis_is_tried_once_a_second_not_by_every_operation(clock):
    """A Redis that accepts and never answers (hung, not down) holds each operation that tries
    it for its timeout; after one has failed, the others fail at once, without trying, until a
    second has passed. Counted by the connections a silent server of the test's own accepts."""
    connections = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]

        def accept_and_keep_silent() -> None:
            with contextlib.suppress(OSError):
                while True:
                    connections.append(listener.accept()[0])

        threading.Thread(target=accept_and_keep_silent, daemon=True).start()
        store = redis_stores(f"redis://127.0.0.1:{port}/0", 1)[0]
        assert store.get("entry") is None and store.failing  # tried: its timeout, no retry
        for _ in range(20):  # within the second: at once, no connection
            assert store.get("entry") is None and store.add("lock", "me", 5)
        assert len(connections) == 1
        clock.advance(RETRY_AFTER_FAILURE_SECONDS)
        assert store.get("entry") is None  # one tries again
        assert len(connections) == 2
    for connection in connections:
        connection.close()


def test_every_redis_client_retries_once_at_once(redis_cluster_url):
    """A refused connection (Redis down) is retried once, at once: the client's default is three
    retries with growing sleeps, about 4 s of a request per store operation while Redis is down
    (the store treats the failure as an outage anyway, and fails at once for a second after)."""
    retries = [
        connect("redis://127.0.0.1:1/0").get_retry(),
        connect("redis://:pw@unused/0", "sentinel", ["127.0.0.1:1"]).get_retry(),
        connect(redis_cluster_url, "cluster").retry,  # the cluster's, over its nodes
    ]
    for retry in retries:
        assert (retry._retries, type(retry._backoff)) == (RETRIES, NoBackoff) == (1, NoBackoff)
        assert retry._supported_errors == (redis.ConnectionError,)  # a timeout: not again
