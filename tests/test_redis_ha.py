"""Redis in high availability, on real servers the tests start from the ``redis-server`` binary:
a Sentinel set-up (a primary and its replica, both with a password, and a sentinel with one of
its own) whose primary is killed mid-run, and a 3-primary Redis Cluster. The store's other tests
run on the cluster too (the ``store`` fixture's ``redis-cluster`` case)."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from redis.cluster import RedisCluster

from auth0_proxy.core.config import ConfigError
from auth0_proxy.storage.buckets import Bucket
from auth0_proxy.storage.store import RedisBackend, Store, store_for
from tests.conftest import redis_store
from tests.support import ids, redis_sentinel, redis_server, wait_for_redis

PASSWORD = "data-password"  # the test servers' own
SENTINEL_PASSWORD = "sentinel-password"
SERVICE = "proxy-primary"
FAILOVER_BOUND_SECONDS = 30  # the issue's: one budget again within 30 s of the primary's death
SHARED = Bucket("shared", rate=0.001, capacity=10)  # refills next to nothing during a test


@dataclass
class SentinelSet:
    primary: redis.Redis
    primary_process: object
    replica: redis.Redis
    sentinel: str  # its address

    @property
    def settings(self) -> dict:
        """The proxy block for this set-up: the URL holds the servers' password only (its
        host is not used: the sentinel names the primary)."""
        return {
            "cache_type": "redis",
            "cache_redis_url": f"redis://:{PASSWORD}@unused/0",
            "cache_redis_mode": "sentinel",
            "cache_redis_sentinels": [self.sentinel],
            "cache_redis_sentinel_service": SERVICE,
            "cache_redis_sentinel_password": SENTINEL_PASSWORD,
        }

    def store(self, prefix: str) -> Store:
        """A process's store, as ``bind_cache`` makes it from ``settings`` (each Flask-Caching
        key is the setting's name in capitals)."""
        config = {key.upper(): value for key, value in self.settings.items()}
        config["CACHE_DEFAULT_TIMEOUT"] = 300
        return store_for(RedisBackend.factory(None, config, [], {}), prefix, "")


@pytest.fixture
def sentinel_set(tmp_path) -> Iterator[SentinelSet]:
    url = f"redis://:{PASSWORD}@127.0.0.1:{{}}/0".format
    auth = ("--port", "{port}", "--requirepass", PASSWORD, "--masterauth", PASSWORD)
    with redis_server(tmp_path, url, *auth) as (primary_url, primary_process):
        primary = redis.Redis.from_url(primary_url)
        port = primary.connection_pool.connection_kwargs["port"]
        follow = ("--replicaof", "127.0.0.1", str(port))
        with redis_server(tmp_path, url, *auth, *follow) as (replica_url, _):
            replica = redis.Redis.from_url(replica_url)
            wait_for_redis(
                replica, lambda: replica.info("replication")["master_link_status"] == "up"
            )
            with redis_sentinel(tmp_path, SERVICE, port, PASSWORD, SENTINEL_PASSWORD) as address:
                yield SentinelSet(primary, primary_process, replica, address)


def spend_one_budget(first: Store, second: Store, bucket: Bucket) -> None:
    """Two processes spending from ``bucket`` see one bucket: 6 taken of 10 leave 4 to both."""
    assert first.take_tokens([bucket], 6)[0]
    assert not second.take_tokens([bucket], 5)[0]  # their own buckets would have granted it
    assert second.take_tokens([bucket], 4)[0]
    assert first.up and second.up  # on the store, not on the outage's fallback


def test_the_proxy_serves_through_a_sentinel_failover_and_shares_one_budget_again(
    sentinel_set, make_app, call, make_token, tenant
):
    prefix = f"ha-{uuid.uuid4().hex}:"
    first, second = sentinel_set.store(prefix), sentinel_set.store(prefix)
    spend_one_budget(first, second, SHARED)
    proxy = make_app(**sentinel_set.settings, cache_key_prefix=prefix, cache_ttl_seconds=120)
    token = make_token("edge-acme")
    members = set(tenant.member_ids("org_acme"))
    assert ids(call("/users", token, via=proxy)) == members
    assert sentinel_set.primary.keys(f"*{prefix}*")  # on the primary the sentinel named

    sentinel_set.primary_process.send_signal(signal.SIGKILL)
    died = time.monotonic()
    assert ids(call("/users", token, via=proxy)) == members  # served on: from Auth0, in its share
    after = Bucket("after-failover", rate=0.001, capacity=10)
    probe = Bucket("probe", rate=1000, capacity=1000)
    while not all(store.take_tokens([probe], 1)[0] and store.up for store in (first, second)):
        assert time.monotonic() - died < FAILOVER_BOUND_SECONDS, "no primary again within 30 s"
        time.sleep(0.2)  # the sentinel's failover, a real process's
    spend_one_budget(first, second, after)
    assert time.monotonic() - died < FAILOVER_BOUND_SECONDS
    assert sentinel_set.replica.info("replication")["role"] == "master"  # it was promoted
    assert ids(call("/users", token, via=proxy)) == members  # the replica had the list
    assert tenant.counts["GET /api/v2/organizations/{id}/members"] == 2  # before, and during


def test_two_processes_on_a_cluster_spend_one_budget_from_buckets_in_one_slot(
    redis_cluster_url,
):
    prefix = f"cluster-{uuid.uuid4().hex}:"
    first, second = (redis_store(prefix, redis_cluster_url, "cluster") for _ in range(2))
    spend_one_budget(first, second, SHARED)
    buckets = [Bucket(f"group-{n}", rate=0.001, capacity=10) for n in range(8)]
    assert first.take_tokens(buckets, 3)[0] and first.up  # one script, eight keys
    assert second.take_tokens(buckets, 7)[0] and not second.take_tokens(buckets, 1)[0]
    cluster = RedisCluster.from_url(redis_cluster_url)
    slots = {cluster.keyslot(first.bucket_key(bucket.key)) for bucket in [SHARED, *buckets]}
    assert len(slots) == 1


def test_the_proxy_on_a_cluster_caches_and_budgets_across_its_nodes(
    redis_cluster_url, make_app, call, make_token, tenant
):
    prefix = f"cluster-{uuid.uuid4().hex}:"
    settings = {
        "cache_type": "redis",
        "cache_redis_url": redis_cluster_url,
        "cache_ttl_seconds": 60,
    }
    first, second = (
        make_app(**settings, cache_redis_mode="cluster", cache_key_prefix=prefix) for _ in "12"
    )
    token = make_token("edge-acme")
    for proxy in (first, second, first):
        assert ids(call("/users", token, via=proxy)) == set(tenant.member_ids("org_acme"))
    assert tenant.counts["GET /api/v2/organizations/{id}/members"] == 1  # shared by both
    cluster = RedisCluster.from_url(redis_cluster_url)
    keys = [key.decode() for key in cluster.scan_iter(match=f"*{prefix}*")]
    assert any("}budget:" in key for key in keys)
    assert len({cluster.keyslot(key) for key in keys}) > 1  # values spread over the nodes


def test_a_cluster_down_at_start_is_an_outage_not_a_failed_start(
    make_app, call, make_token, tenant
):
    proxy = make_app(
        cache_type="redis", cache_redis_url="redis://127.0.0.1:1/0", cache_redis_mode="cluster"
    )
    answer = call("/users", make_token("edge-acme"), via=proxy)
    assert ids(answer) == set(tenant.member_ids("org_acme"))  # from Auth0 directly


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ({"cache_redis_mode": "sentinel"}, "proxy.cache_redis_sentinels: give the sentinels"),
        ({"cache_redis_sentinels": ["sentinel-0"]}, "must be host:port"),
        ({"cache_redis_mode": "primary"}, "proxy.cache_redis_mode: Must be one of"),
        ({"cache_key_prefix": "{team}:"}, "must not contain '{' or '}'"),
    ],
)
def test_redis_settings_that_cannot_work_are_refused_at_start(make_app, proxy, message):
    with pytest.raises(ConfigError, match=message):
        make_app(**proxy)
