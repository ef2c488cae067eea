"""The cache's layers in this process, with real parts: races that HTTP tests cannot time.

The Store runs on each backend the proxy supports (memory, files, and Redis where one answers);
the SharedCache and Directory above it on the memory and file stores.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import pytest
from cachelib import FileSystemCache, SimpleCache

from auth0_proxy.auth0.management import ManagementClient
from auth0_proxy.auth0.upstream import Upstream
from auth0_proxy.caching.cache import MAX_REFRESHES, SharedCache
from auth0_proxy.caching.entries import Entry, Fetch, PageMemo, refresh_time
from auth0_proxy.caching.listings import Listings
from auth0_proxy.core.config import load_settings
from auth0_proxy.core.errors import UpstreamUnavailable, UserNotFound
from auth0_proxy.members.changes import ChangeFeed
from auth0_proxy.members.directory import Directory
from auth0_proxy.spending.budget import Governor
from auth0_proxy.storage.buckets import Bucket
from auth0_proxy.storage.store import Store, store_for
from tests.support import BIG_ORG, BIG_ORG_SIZE, join_refreshes, proxy_config_for


def test_add_sets_only_what_is_absent(store):
    assert store.add("lock", "mine", 5)
    assert not store.add("lock", "theirs", 5)
    assert store.delete_if("lock", "mine")
    assert store.add("lock", "theirs", 5)


def test_extend_if_renews_only_the_holders_lease(store):
    assert store.add("lease", "holder", 1)
    assert not store.extend_if("lease", "another", 5)
    assert store.extend_if("lease", "holder", 5)
    time.sleep(1.5)  # past the first second (the file cache counts whole seconds)
    assert not store.add("lease", "another", 5), "the renewed lease expired"
    assert not store.extend_if("absent", "holder", 5)
    assert store.add("absent", "holder", 5), "extend_if made a key that was absent"


def test_a_lock_taken_over_after_it_expired_is_not_released_by_its_first_owner(store):
    assert store.add("lock", "first", 1)
    time.sleep(2.1)  # expired (the file cache counts whole seconds)
    assert store.add("lock", "second", 5)
    assert not store.delete_if("lock", "first")
    assert not store.add("lock", "third", 5), "the second owner's lock was released"


def test_add_is_atomic_across_threads(store):
    winners = []
    start = threading.Barrier(8)

    def contend(n: int) -> None:
        start.wait()
        if store.add("contended", f"owner-{n}", 5):
            winners.append(n)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1


def test_values_round_trip_under_the_prefix(store):
    store.set("entry", {"value": [1, "two"]}, 5)
    assert store.get("entry") == {"value": [1, "two"]}
    store.delete("entry")
    assert store.get("entry") is None


class FailingBackend(SimpleCache):
    """A backend whose every operation fails, as Redis does while it is down."""

    def get(self, key):
        raise ConnectionError("down")

    set = has = delete = get


def test_a_failing_backend_is_a_miss_logged_once_per_interval():
    store = Store(FailingBackend(), "test:")
    logger, records = logging.getLogger("auth0_proxy.store"), []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        assert store.get("x") is None
        store.set("x", 1, 5)
        store.delete("x")
        assert store.add("lock", "me", 5)  # granted: the caller goes to Auth0 directly
        assert not store.delete_if("lock", "me")
    finally:
        logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == [
        "cache unavailable (ConnectionError); serving from memory or Auth0 directly"
    ]


def shared_cache(lock_seconds: int = 5) -> SharedCache:
    return SharedCache(
        store_for(SimpleCache(), "test:", ""), lock_seconds=lock_seconds, failure_seconds=1
    )


def test_a_late_refresh_does_not_overwrite_a_newer_value(clock):
    cache = shared_cache()
    cache.replace("jwks", lambda: ("old", 2))  # refreshed ahead from 0.8 s
    release = threading.Event()

    def slow_fetch():
        release.wait(10)
        return "stale", 60

    clock.advance(0.9)
    assert cache.get_or_create("jwks", slow_fetch, refresh_ahead=True) == "old"
    cache.replace("jwks", lambda: ("new", 60))  # keys fetched for a new kid meanwhile
    release.set()
    join_refreshes()
    cache.memo.forget("jwks")
    assert cache.get_or_create("jwks", slow_fetch) == "new"


def test_a_refresh_never_replaces_a_value_stored_meanwhile_whatever_its_clock():
    """Another host's fresh read stored a value with a clock behind ours: it stays."""
    cache = shared_cache()
    cache.replace("members", lambda: ("old", 60))
    current = cache.store.get("members")
    with held_refreshes() as release:
        cache.refresh_in_background("members", current, blocked_refresh(release))
        cache.store.set(
            "members",
            type(current)("newer", current.refresh_at, current.stored_at - 5, current.fresh_until),
            60,
        )
    assert cache.store.get("members").value == "newer"


def test_a_value_slow_to_fetch_is_refreshed_earlier():
    assert refresh_time(31) == pytest.approx(24)  # the last fifth of 30 s
    assert refresh_time(31, fetch_seconds=5) == pytest.approx(20)  # twice the fetch, earlier


def test_a_value_slower_to_fetch_than_its_ttl_is_not_refreshed_in_its_first_half():
    assert refresh_time(31, fetch_seconds=20) == pytest.approx(15)


def test_concurrent_callers_share_one_fetch():
    cache = shared_cache()
    fetches = []

    def fetch():
        fetches.append(1)
        time.sleep(0.2)
        return "value", 60

    with contextlib.ExitStack():
        threads = [
            threading.Thread(target=cache.get_or_create, args=("key", fetch)) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert fetches == [1]


def test_a_failed_fetch_is_remembered_for_the_cooldown(clock):
    cache = shared_cache()
    calls = []

    def failing():
        calls.append(1)
        raise UpstreamUnavailable(reason="down")

    for _ in range(3):
        with pytest.raises(UpstreamUnavailable) as raised:
            cache.get_or_create("key", failing)
    assert calls == [1]
    assert raised.value.headers["Retry-After"] == "1"
    clock.advance(1.1)  # the failure's memory lapses
    with pytest.raises(UpstreamUnavailable):
        cache.get_or_create("key", failing)
    assert calls == [1, 1]


def test_a_fresh_read_moments_after_a_failure_is_answered_from_its_memory():
    cache = shared_cache()
    calls = []

    def failing():
        calls.append(1)
        raise UpstreamUnavailable(reason="down")

    with pytest.raises(UpstreamUnavailable):
        cache.get_or_create("key", failing)
    with pytest.raises(UpstreamUnavailable):
        cache.replace("key", failing)
    assert calls == [1]


def test_a_refresh_that_outlasts_its_entry_is_still_stored(clock):
    """A slow refresh is what refreshing early is for: the entry expiring meanwhile does not
    make its successor go to waste."""
    cache = shared_cache()
    cache.replace("list", lambda: ("old", 2))  # refreshed ahead from 0.8 s, gone after 2 s

    def slow_fetch():
        time.sleep(2.5)
        return "new", 60

    clock.advance(0.9)
    assert cache.get_or_create("list", slow_fetch, refresh_ahead=True) == "old"
    join_refreshes()
    assert cache.store.get("list").value == "new"


def test_a_refresh_skipped_while_another_writes_is_not_started_again_at_once():
    """While another holds the key's lock (a fresh read storing a newer value), a refresh does
    not write; nor do the reads that follow start one refresh after another."""
    cache = shared_cache()
    stale(cache, "list")
    assert cache.store.add("list:lock", "another writer", 30)
    calls = []

    def fetch():
        calls.append(1)
        return "refreshed", 60

    for _ in range(5):
        assert cache.get_or_create("list", fetch, refresh_ahead=True) == "old"
        join_refreshes()
    assert calls == [1]
    assert cache.store.get("list").value == "old"


def test_a_discarded_value_is_fetched_again_but_not_its_successor():
    cache = shared_cache()
    cache.replace("token", lambda: ("refused", 60))
    cache.discard("token", "other")  # not what is stored: kept
    assert cache.get_or_create("token", lambda: ("unused", 60)) == "refused"
    cache.discard("token", "refused")
    assert cache.get_or_create("token", lambda: ("renewed", 60)) == "renewed"


def blocked_refresh(release: threading.Event, value="refreshed"):
    def create():
        release.wait(10)
        return value, 60

    return create


@contextlib.contextmanager
def held_refreshes():
    """An event that holds every blocked_refresh started in the block until the block ends."""
    release = threading.Event()
    try:
        yield release
    finally:
        release.set()
        join_refreshes()


def running_refreshes(prefix: str) -> int:
    return sum(1 for thread in threading.enumerate() if thread.name.startswith(prefix))


def stale(cache: SharedCache, key: str) -> Entry:
    """An entry stored under ``key``, already due for a refresh (fresh for a minute)."""
    now = time.time()
    entry = Entry("old", now - 1, now, now + 60)
    cache.store.set(key, entry, 60)
    return entry


def test_background_refreshes_are_bounded_per_process():
    cache = shared_cache()
    with held_refreshes() as release:
        for n in range(MAX_REFRESHES + 3):
            cache.refresh_in_background(
                f"list-{n}", stale(cache, f"list-{n}"), blocked_refresh(release)
            )
        assert running_refreshes("refresh list-") == MAX_REFRESHES


def test_a_long_refresh_is_not_started_twice():
    """A refresh may take as long as its entry's lifetime (a long list, paced by the budget):
    it keeps others off for that long, not only lock_seconds."""
    cache = shared_cache(lock_seconds=1)
    entry = stale(cache, "list")
    with held_refreshes() as release:
        cache.refresh_in_background("list", entry, blocked_refresh(release))
        time.sleep(1.5)  # past lock_seconds
        cache.refresh_in_background("list", entry, blocked_refresh(release))
        assert running_refreshes("refresh list") == 1


def test_a_worker_with_an_old_memory_does_not_refresh_what_another_already_did():
    cache = shared_cache()
    old = stale(cache, "token")
    cache.replace("token", lambda: ("new", 60))  # another worker's refresh
    calls = []
    cache.refresh_in_background("token", old, lambda: calls.append(1) or ("mine", 60))
    join_refreshes()
    assert calls == [] and cache.store.get("token").value == "new"


def test_a_refresh_without_a_thread_gives_back_its_slot_and_marker(monkeypatch):
    cache = shared_cache()
    entry = stale(cache, "list")

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        for _ in range(MAX_REFRESHES + 1):
            cache.refresh_in_background("list", entry, lambda: ("new", 60))  # does not raise
    assert cache.store.add("list:refreshing", 1, 5), "the refresh marker was left behind"
    with held_refreshes() as release:
        for n in range(MAX_REFRESHES):
            other = stale(cache, f"other-{n}")
            cache.refresh_in_background(f"other-{n}", other, blocked_refresh(release))
        assert running_refreshes("refresh other-") == MAX_REFRESHES


def real_directory(tenant_server, tmp_path, backend=None) -> Directory:
    """The proxy's Directory over HTTPS to the emulated tenant, with an in-process cache."""
    settings = load_settings(proxy_config_for(tenant_server, cache_dir=str(tmp_path)), environ={})
    store = store_for(backend or SimpleCache(), "test:", "")
    cache = SharedCache(store, lock_seconds=5, failure_seconds=1)
    governor = Governor(store, settings.budget.limits, share=settings.budget.share)
    upstream = Upstream(
        settings.auth0.base_url, governor, connect_timeout=5, read_timeout=10, retry_budget=0
    )
    management = ManagementClient(upstream, cache, settings.auth0, page_size=50)
    return Directory(management, cache, ChangeFeed(cache, retention=600), ttl=60, max_stale=60)


def test_a_fresh_listing_does_not_break_a_reader_of_the_previous_one(
    tenant_server, tmp_path, monkeypatch
):
    """A reader streams the cached list while a fresh read stores a new one: both complete."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_server.ca_bundle)  # as the proxy is run
    directory = real_directory(tenant_server, tmp_path)
    list(directory.member_list(BIG_ORG).body)  # cached

    reader = directory.member_list(BIG_ORG).body
    first = next(reader)
    fresh = list(directory.member_list(BIG_ORG, fresh=True).body)
    rest = list(reader)
    assert len([first, *rest]) == len(fresh) == BIG_ORG_SIZE // 50


class RecordingCache(SimpleCache):
    """A memory backend that remembers every key it was asked to store."""

    def __init__(self):
        super().__init__()
        self.keys_set: list[str] = []

    def set(self, key, value, timeout=None):
        self.keys_set.append(key)
        return super().set(key, value, timeout)


def test_user_ids_never_appear_in_cache_keys(tenant_server, tmp_path, monkeypatch):
    """Hashed, so an id such as '<someone>:lock' cannot name another entry (its lock, say)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_server.ca_bundle)
    backend = RecordingCache()
    directory = real_directory(tenant_server, tmp_path, backend)
    for user_id in ["auth0|alice-acme", "auth0|alice-acme:lock", "x:failed"]:
        with contextlib.suppress(UserNotFound):
            directory.member_profile("org_acme", user_id)
    assert backend.keys_set, "the directory should have cached something"
    assert not [key for key in backend.keys_set if "alice" in key or "x:failed" in key]


def pages_of(members: list[str], stored: list[str], stall: threading.Event | None = None) -> Fetch:
    """A fetch of one page per member; ``stall`` (if given) holds it after the first page;
    once its listing is stored, it says so in ``stored``."""

    def pages():
        for number, member in enumerate(members):
            if number == 1 and stall is not None:
                stall.wait(10)
            yield f'"{member}"'

    return Fetch(pages(), lambda: stored.append(",".join(members)))


def test_a_listing_read_slower_than_its_lock_does_not_replace_a_newer_one():
    """A client stalls mid-list; the lock expires and another caller stores the list after a
    member's removal: the stalled listing, older, is not stored over it, nor recorded."""
    cache, stored, stall = Listings(shared_cache(lock_seconds=1)), [], threading.Event()
    entry, slow = cache.listing("list", lambda _: pages_of(["x", "y"], stored, stall), ttl=60)
    assert entry is None and next(slow) == '"x"'
    time.sleep(1.2)  # past lock_seconds
    newer, pages = cache.listing("list", lambda _: pages_of(["y"], stored), ttl=60)
    assert newer is None and list(pages) == ['"y"']
    stall.set()
    assert list(slow) == ['"y"']
    _, pages = cache.listing("list", lambda _: pages_of(["z"], stored), ttl=60)
    assert list(pages) == ['"y"'] and stored == ["y"]


def test_a_listing_is_as_old_as_its_first_page(clock):
    cache, stored = Listings(shared_cache()), []
    started = clock.now()
    _, pages = cache.listing("list", lambda _: pages_of(["x"], stored), ttl=60)
    clock.advance(0.5)
    list(pages)
    assert cache.store.get("list").stored_at < started + 0.5


def test_the_page_count_outlives_the_listing_for_the_next_ones_budget():
    cache, asked = Listings(shared_cache()), []

    def fetch(expected: int) -> Fetch:
        asked.append(expected)
        return pages_of(["a", "b", "c"], [])

    list(cache.listing("list", fetch, ttl=1)[1])
    time.sleep(1.1)  # expired from the store: the page count's own store TTL outlives it
    list(cache.listing("list", fetch, ttl=1)[1])
    assert asked == [1, 3]


def test_a_failing_backend_leaves_each_process_a_budget_of_its_own():
    store = Store(FailingBackend(), "test:")
    bucket = Bucket("budget:users", rate=0.01, capacity=2)
    assert [store.take_tokens([bucket], 1)[0] for _ in range(3)] == [True, True, False]


def test_the_file_caches_pruning_never_refills_the_budget(tmp_path):
    backend = FileSystemCache(str(tmp_path), threshold=5)
    store = store_for(backend, "test:", str(tmp_path))
    bucket = Bucket("budget:users", rate=0.01, capacity=2)
    assert store.take_tokens([bucket], 2)[0]
    for n in range(20):  # past the threshold: cachelib prunes the entries soonest to expire
        store.set(f"profile-{n}", n, 600)
    assert not store.take_tokens([bucket], 1)[0]


def test_the_page_memo_keeps_the_pages_read_last_within_its_bytes():
    memo = PageMemo(max_bytes=10)
    memo.remember("a", "aaaa")
    memo.remember("b", "bbbb")
    assert memo.recall("a") == "aaaa"  # read lately: kept before b
    memo.remember("c", "cccc")
    assert (memo.recall("a"), memo.recall("b"), memo.recall("c")) == ("aaaa", None, "cccc")
    memo.remember("huge", "x" * 11)  # more than it may hold: not kept, nothing dropped for it
    assert memo.recall("huge") is None and memo.recall("a") == "aaaa"
