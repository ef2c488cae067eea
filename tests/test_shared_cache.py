"""SharedCache and Directory in-process, with real parts: races that HTTP tests cannot time."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from cachelib import SimpleCache

from auth0_proxy.cache import MAX_REFRESHES, SharedCache
from auth0_proxy.config import load_settings
from auth0_proxy.directory import Directory
from auth0_proxy.errors import UserNotFound
from auth0_proxy.management import ManagementClient
from auth0_proxy.upstream import Upstream
from tests.conftest import BIG_ORG, BIG_ORG_SIZE, proxy_config_for


def shared_cache(backend=None) -> SharedCache:
    return SharedCache(backend or SimpleCache(), lock_seconds=5, failure_seconds=1)


def real_directory(tenant_server, tmp_path, backend=None) -> Directory:
    """The proxy's Directory over HTTPS to the emulated tenant, with an in-process cache."""
    settings = load_settings(proxy_config_for(tenant_server, cache_dir=str(tmp_path)), environ={})
    cache = shared_cache(backend)
    upstream = Upstream(
        settings.auth0.base_url, cache, connect_timeout=5, read_timeout=10, retry_budget=0
    )
    management = ManagementClient(upstream, cache, settings.auth0, page_size=50)
    return Directory(management, cache, ttl=60, fresh_interval=10)


def test_a_late_refresh_does_not_overwrite_a_newer_value():
    cache = shared_cache()
    cache.put("jwks", "old", 2)  # refresh ahead after 0.8 s
    release = threading.Event()

    def slow_fetch():
        release.wait(10)
        return "stale", 60

    time.sleep(0.9)
    assert cache.get_or_create("jwks", slow_fetch, refresh_ahead=True) == "old"
    cache.put("jwks", "new", 60)  # e.g. keys fetched for a new kid while the refresh was slow
    release.set()
    for thread in threading.enumerate():
        if thread.name == "refresh jwks":
            thread.join(10)
    cache.forget_local("jwks")
    assert cache.get_or_create("jwks", slow_fetch) == "new"


def test_a_fresh_listing_does_not_break_a_reader_of_the_previous_one(
    tenant_server, tmp_path, monkeypatch
):
    """A reader streams the cached list while a no-cache read stores a new one: both complete."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_server.ca_bundle)  # as the proxy is run
    directory = real_directory(tenant_server, tmp_path)
    list(directory.member_pages(BIG_ORG))  # cached

    reader = directory.member_pages(BIG_ORG)
    first = next(reader)
    fresh = list(directory.member_pages(BIG_ORG, fresh=True))
    rest = list(reader)
    assert len([first, *rest]) == len(fresh) == BIG_ORG_SIZE // 50


def test_user_ids_never_appear_in_cache_keys(tenant_server, tmp_path, monkeypatch):
    """Hashed, so an id such as '<someone>:lock' cannot name another entry (its lock, say)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_server.ca_bundle)
    backend = SimpleCache()
    directory = real_directory(tenant_server, tmp_path, backend)
    for user_id in ["auth0|alice-acme", "auth0|alice-acme:lock", "x:failed"]:
        with contextlib.suppress(UserNotFound):
            directory.member_profile("org_acme", user_id)
    keys = list(backend._cache)  # cachelib's SimpleCache keeps its entries in this dict
    assert keys, "the directory should have cached something"
    assert not [key for key in keys if "alice" in key or "x:failed" in key]


def blocked_refresh(release: threading.Event, value="refreshed"):
    def create():
        release.wait(10)
        return value, 60

    return create


def join_refreshes() -> None:
    for thread in threading.enumerate():
        if thread.name.startswith("refresh "):
            thread.join(10)


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


def test_a_value_slow_to_fetch_is_refreshed_earlier():
    cache = shared_cache()
    _, quick_refresh_at, stored_at = cache.put("quick", 1, 31)
    _, slow_refresh_at, slow_stored_at = cache.put("slow", 1, 31, fetch_seconds=5)
    assert quick_refresh_at - stored_at == pytest.approx(24)  # the last fifth of 30 s
    assert slow_refresh_at - slow_stored_at == pytest.approx(20)  # twice the fetch, before 30 s


def test_a_refresh_never_replaces_a_value_stored_meanwhile_whatever_its_clock():
    """Another host's no-cache read stored a value with a clock behind ours: it stays."""
    cache = shared_cache()
    current = cache.put("members", "old", 60)
    newer = ("newer", current[1], current[2] - 5)
    with held_refreshes() as release:
        cache.refresh_in_background("members", blocked_refresh(release), current)
        cache.set("members", newer, 60)
    assert cache.get("members") == newer


def test_background_refreshes_are_bounded_per_process():
    cache = shared_cache()
    with held_refreshes() as release:
        for n in range(MAX_REFRESHES + 3):
            entry = cache.put(f"list-{n}", "old", 60)
            cache.refresh_in_background(f"list-{n}", blocked_refresh(release), entry)
        assert running_refreshes("refresh list-") == MAX_REFRESHES


def test_a_long_refresh_is_not_started_twice():
    """A refresh that may take ``seconds`` keeps others off for that long, not lock_seconds."""
    cache = SharedCache(SimpleCache(), lock_seconds=1, failure_seconds=1)
    entry = cache.put("list", "old", 60)
    with held_refreshes() as release:
        cache.refresh_in_background("list", blocked_refresh(release), entry, seconds=30)
        time.sleep(1.5)  # past lock_seconds
        cache.refresh_in_background("list", blocked_refresh(release), entry, seconds=30)
        assert running_refreshes("refresh list") == 1


def test_a_value_slower_to_fetch_than_its_ttl_is_not_refreshed_in_its_first_half():
    cache = shared_cache()
    _, refresh_at, stored_at = cache.put("slow", 1, 31, fetch_seconds=20)
    assert refresh_at - stored_at == pytest.approx(15)


def test_a_worker_with_an_old_memory_does_not_refresh_what_another_already_did():
    cache = shared_cache()
    old = cache.put("token", "old", 60)
    cache.set("token", ("new", time.time() + 50, time.time()), 60)  # another worker's refresh
    calls = []
    cache.refresh_in_background("token", lambda: calls.append(1) or ("mine", 60), old)
    join_refreshes()
    assert calls == [] and cache.get("token")[0] == "new"
    assert cache.get_or_create("token", lambda: ("unused", 60)) == "new"  # memory updated


def test_a_refresh_without_a_thread_gives_back_its_slot_and_marker(monkeypatch):
    cache = shared_cache()
    entry = cache.put("list", "old", 60)

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        for _ in range(MAX_REFRESHES + 1):
            cache.refresh_in_background("list", lambda: ("new", 60), entry)  # does not raise
    assert cache.get("list:refreshing") is None
    with held_refreshes() as release:
        for n in range(MAX_REFRESHES):
            cache.refresh_in_background(f"other-{n}", blocked_refresh(release), entry)
        assert running_refreshes("refresh other-") == MAX_REFRESHES
