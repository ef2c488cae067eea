"""Fixtures: a real emulated tenant over HTTPS, the proxy in this process or under gunicorn, and
a token maker.

Most tests run the proxy in this process: ``create_app`` with the test's config and Flask's test
client, talking real HTTPS to the tenant, a fresh app (and cache) per test. What needs the server
(streaming and its cut-off, workers sharing a cache, gunicorn's own limits, signals) runs under
gunicorn, as deployed. ``call`` sends a request either way and returns an ``Answer`` with the
line the proxy logged for it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
import redis
import requests
from cachelib import FileSystemCache, SimpleCache
from flask import Flask

from auth0_proxy import create_app
from auth0_proxy.core import clock as proxy_clock
from auth0_proxy.ops.logs import JsonFormatter
from auth0_proxy.storage.store import RedisBackend, Store, store_for
from emulated_tenant import TenantServer, demo_tenant
from emulated_tenant.demo import API_AUDIENCE as PROXY_API
from emulated_tenant.events import RETAINED, StreamSettings
from scripts.proxy_server import ProxyServer
from tests.support import (
    BIG_ORG,
    BIG_ORG_SIZE,
    CLIENT_ORGS,
    Answer,
    proxy_config_for,
    redis_cluster,
)


@pytest.fixture(autouse=True)
def _real_time_after_each_test() -> Iterator[None]:
    """Whatever a test did to the proxy's clock, the next one starts on real time."""
    yield
    proxy_clock.reset()


@pytest.fixture
def clock() -> Iterator[ModuleType]:
    """The proxy's clock: ``clock.advance(seconds)`` is time passing for the app in this process
    (not for gunicorn's workers, the tenant, or Redis); real time again after the test."""
    yield proxy_clock
    proxy_clock.reset()


@pytest.fixture(scope="session")
def tenant_server() -> Iterator[TenantServer]:
    tenant = demo_tenant()
    tenant.add_organization(BIG_ORG, "big", "Big Customer")
    tenant.seed_organization(BIG_ORG, BIG_ORG_SIZE, prefix="big")
    for client_id, orgs in CLIENT_ORGS.items():
        if tenant.client(client_id) is None:
            tenant.add_client(
                client_id,
                f"{client_id}-secret",
                grants={PROXY_API: ["read:users"]},
                organizations=orgs,
            )
    with TenantServer(tenant) as server:
        yield server


@pytest.fixture
def tenant(tenant_server):
    """The tenant's state; counters reset for each test, faults and settings undone after it."""
    tenant = tenant_server.tenant
    tenant.reset_counts()
    yield tenant
    tenant.clear_faults()
    assert tenant.wait_until_idle(timeout=30), "the tenant is still answering this test's calls"
    tenant.latency = 0.0
    tenant.set_rate_limit(None)
    tenant.enforce_plan(None)
    tenant.management_token_lifetime = 86_400
    tenant.unknown_user_organizations = "empty"
    tenant.jwks_names_algorithm = True
    tenant.event_settings = StreamSettings()
    tenant.events.retained = RETAINED


class LogCapture(logging.Handler):
    """The proxy's log lines, formatted (and redacted) as deployed, parsed back."""

    def __init__(self):
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.records: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(json.loads(self.format(record)))


@pytest.fixture
def app_log() -> Iterator[LogCapture]:
    capture = LogCapture()
    yield capture
    logging.getLogger("auth0_proxy").removeHandler(capture)


@pytest.fixture
def make_app(tenant_server, tmp_path, monkeypatch, app_log) -> Iterator[Callable[..., Flask]]:
    """``make_app(**proxy_settings)``: the proxy in this process, with a cache of its own.

    Answers are not cached unless the test sets ``cache_ttl_seconds``, so each test sees the
    upstream calls it causes.
    """
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_server.ca_bundle)
    apps = []

    def make(**proxy_settings) -> Flask:
        proxy_settings.setdefault("cache_ttl_seconds", 0)
        proxy_settings.setdefault("cache_dir", str(tmp_path / f"cache{len(apps)}"))
        app = create_app(proxy_config_for(tenant_server, **proxy_settings))
        logging.getLogger("auth0_proxy").addHandler(app_log)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["management"].upstream.session.close()


@pytest.fixture
def make_writer(tenant_server, tmp_path, monkeypatch, app_log):
    """``make_writer(grant, **proxy_settings)``: an app whose edge-acme has ``grant`` as its
    ``writes`` entry (by default: update users' metadata); the apps share a cache directory."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_server.ca_bundle)

    def make(grant: dict | None = None, **proxy_settings):
        proxy_settings.setdefault("cache_dir", str(tmp_path / "shared"))
        config = proxy_config_for(tenant_server, **proxy_settings)
        config["writes"] = {"edge-acme": grant or {"permissions": ["update:users"]}}
        app = create_app(config)  # sets the proxy's log handlers: the capture comes after
        logging.getLogger("auth0_proxy").addHandler(app_log)
        return app

    return make


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()


@pytest.fixture(scope="session")
def proxy(tenant_server, tmp_path_factory) -> Iterator[ProxyServer]:
    """The proxy as deployed: gunicorn, 2 workers, threads, talking HTTPS to the tenant."""
    server = ProxyServer(
        proxy_config_for(tenant_server, cache_ttl_seconds=0),
        ca_bundle=tenant_server.ca_bundle,
        workdir=str(tmp_path_factory.mktemp("proxy")),
    )
    with server:
        yield server


@pytest.fixture
def start_proxy(tenant_server, tmp_path) -> Iterator[Callable[..., ProxyServer]]:
    """Start a proxy under gunicorn of the test's own (fresh cache, own settings)."""
    started = []

    def start(workers=2, threads=4, env=None, **proxy_settings) -> ProxyServer:
        proxy_settings.setdefault("cache_ttl_seconds", 0)
        server = ProxyServer(
            proxy_config_for(tenant_server, **proxy_settings),
            ca_bundle=tenant_server.ca_bundle,
            workers=workers,
            threads=threads,
            workdir=str(tmp_path / f"proxy{len(started)}"),
            env=env,
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def call(app, app_log) -> Callable[..., Answer]:
    """``call(path, token, headers=..., via=...)``: a request to the proxy, by default the
    test's app in this process; ``via`` another app, or a ProxyServer (over HTTP)."""

    def send(
        path: str,
        token: str | None = None,
        headers: dict | None = None,
        *,
        via: Flask | ProxyServer = app,
        method: str = "GET",
    ) -> Answer:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if isinstance(via, ProxyServer):
            return _over_http(via, method, path, headers)
        response = via.test_client().open(path, method=method, headers=headers)
        request_id = response.headers.get("X-Request-ID")
        return Answer(
            response.status_code,
            response.headers,
            response.get_data(),
            lambda: _line_of(app_log.records, request_id),
        )

    return send


def _over_http(server: ProxyServer, method: str, path: str, headers: dict) -> Answer:
    response = requests.request(method, f"{server.url}{path}", headers=headers, timeout=60)
    request_id = response.headers.get("X-Request-ID")
    return Answer(
        response.status_code,
        response.headers,
        response.content,
        lambda: _line_of(server.log_records(), request_id),
    )


def _line_of(records: list[dict], request_id: str | None) -> dict | None:
    lines = [r for r in records if request_id and r.get("request_id") == request_id]
    assert len(lines) <= 1, f"{len(lines)} log lines for one request"
    return lines[0] if lines else None


@pytest.fixture
def make_token(tenant_server) -> Callable[..., str]:
    """Sign a token as the tenant would for an edge client; keywords override claims."""

    def make(client_id: str = "edge-acme", organization: str | None = None, **kwargs) -> str:
        kwargs.setdefault("scope", "read:users")
        return tenant_server.tenant.issue_token(
            client_id, kwargs.pop("audience", PROXY_API), organization, **kwargs
        )

    return make


REDIS_URL = "redis://127.0.0.1:6379/0"


def skip_without_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis answers at 127.0.0.1:6379 (start one to run the Redis tests)")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the local Redis; its keys are deleted afterwards."""
    skip_without_redis()
    prefix = f"auth0-m2m-proxy-test-{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"*{prefix}*"):
        client.delete(key)


def redis_store(prefix: str, url: str = REDIS_URL, mode: str = "standalone") -> Store:
    """A Store on the local Redis (or the one at ``url``, in ``mode``), under ``prefix``."""
    config = {"CACHE_REDIS_URL": url, "CACHE_REDIS_MODE": mode, "CACHE_DEFAULT_TIMEOUT": 300}
    return store_for(RedisBackend.factory(None, config, [], {}), prefix, "")


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory) -> Iterator[str]:
    """A 3-primary Redis Cluster of this test process's own, for every test that asks."""
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as url:
        yield url


@pytest.fixture(params=["memory", "filesystem", "redis", "redis-cluster"])
def store(request, tmp_path) -> Iterator[Store]:
    """A Store on each backend; the Redis one under a prefix of its own, deleted afterwards;
    the Cluster one on a cluster of the tests' own."""
    if request.param == "memory":
        yield store_for(SimpleCache(), "test:", "")
    elif request.param == "filesystem":
        yield store_for(FileSystemCache(str(tmp_path)), "test:", str(tmp_path))
    else:
        if request.param == "redis":
            shared = redis_store(request.getfixturevalue("redis_prefix"))
        else:
            url = request.getfixturevalue("redis_cluster_url")
            shared = redis_store(f"test-{uuid.uuid4().hex}:", url, mode="cluster")
        yield shared
        # Else the test ran on the fallback (each process's own buckets), not on Redis.
        assert shared.up is not False, "the Redis store failed during the test"
