"""SharedCache and Directory in-process, with real parts: races that HTTP tests cannot time."""

from __future__ import annotations

import contextlib
import threading
import time

from cachelib import SimpleCache

from auth0_proxy.cache import SharedCache
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
