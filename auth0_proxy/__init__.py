"""auth0-m2m-proxy: lets each edge client read only the users of its own Auth0 Organization."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

from flask import Flask, Response
from flask_caching import Cache

from auth0_proxy.access.client_map import ClientMap
from auth0_proxy.access.tokens import Auth0TokenValidator, require_oauth
from auth0_proxy.auth0.keys import KeyStore
from auth0_proxy.auth0.management import ManagementClient
from auth0_proxy.auth0.upstream import Upstream
from auth0_proxy.caching.cache import SharedCache
from auth0_proxy.core import errors, metrics
from auth0_proxy.core.config import (
    ConfigError,
    ProxySettings,
    Settings,
    config_path,
    ensure_private_directory,
    load_config_file,
    load_settings,
)
from auth0_proxy.core.json_codec import FastJSONProvider
from auth0_proxy.edge import body_limits, events_webhook, users
from auth0_proxy.edge.api_v2 import openapi, pipeline
from auth0_proxy.members.changes import ChangeFeed
from auth0_proxy.members.directory import Directory
from auth0_proxy.members.event_consumer import EventConsumer
from auth0_proxy.members.events import Events
from auth0_proxy.members.turns import Prewarm
from auth0_proxy.ops import health, logs, request_log
from auth0_proxy.spending import policy
from auth0_proxy.spending.budget import Governor
from auth0_proxy.spending.policy import ClientPolicy
from auth0_proxy.storage.store import Store, store_for

CACHE_TYPES = {
    "filesystem": "FileSystemCache",
    "redis": "auth0_proxy.storage.store.RedisBackend",
    "simple": "SimpleCache",
}
# Part of every cache key: changed whenever what is stored changes shape, so that a proxy never
# reads entries another version left in a shared or persistent cache.
STORAGE_FORMAT = "v5"  # v5: the classes stored (Entry, Listing, the feed's) moved to new modules


class ProxyApp(Flask):
    """Flask, remembering which of its views and hooks are synchronous: Flask asks again for
    each of them on every request, and the proxy's answer never changes (all are)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._synchronous: dict[Callable, Callable] = {}

    def ensure_sync(self, func: Callable) -> Callable:
        if func not in self._synchronous:
            self._synchronous[func] = super().ensure_sync(func)
        return self._synchronous[func]

    def make_default_options_response(self) -> Response:
        """``OPTIONS``: 204 with the methods in ``Allow``, as /api/v2 answers it (Flask's own
        is a 200 with an empty text/html body, which no client of a JSON API expects)."""
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


# The configuration gunicorn's master accepted, at start or at its last good reload (SIGHUP):
# the workers it forks build their app from it, not from the file, which may have changed since
# (a bad edit then stops no worker, and every worker serves the same mapping).
_accepted: Settings | None = None


def accept_configuration() -> Settings:
    """Load the config file and make it the one the workers forked from now on start with,
    once an app builds from it here (what a worker does: a bad one must fail here, not in
    every worker).

    :raise ConfigError: it is missing or invalid (the configuration accepted before stays).
    """
    global _accepted
    settings = load_configuration()
    try:
        create_app(settings=settings, serving=False)
    except Exception as error:  # any step of the build: a worker would fail to boot the same
        raise ConfigError(f"the app cannot be built from it: {error}") from None
    _accepted = settings
    return settings


def create_app(
    test_config: Mapping | None = None, *, settings: Settings | None = None, serving: bool = True
) -> Flask:
    """Build the app from ``settings`` (already loaded), or ``test_config`` (same shape as
    config.json), else from the configuration gunicorn's master accepted, else from the file.
    An app built only to be checked (not ``serving``: in gunicorn's master, by the CLI) starts
    no background work: the heartbeat, the prewarming (a thread of the master would also be
    forked, with any lock it held, into every worker).

    :raise ConfigError: the configuration is missing or invalid.
    """
    if settings is None:
        use_accepted = test_config is None and _accepted is not None
        settings = _accepted if use_accepted else load_configuration(test_config)
    app = ProxyApp(__name__, static_folder=None)  # it serves no files
    # A user id may hold slashes ("%2F0" arrives as "/users//0"): it is the id, not a path to
    # tidy up with a redirect (an HTML 308 that would drop the slash).
    app.url_map.merge_slashes = False
    app.config["SETTINGS"] = settings
    app.json = FastJSONProvider(app)
    configure_logger()
    register_extensions(app, settings)
    if serving:
        start_background_work(app, settings)
    register_blueprints(app)
    register_errorhandlers(app)
    return app


def load_configuration(test_config: Mapping | None = None, path: str | None = None) -> Settings:
    """The settings from ``test_config``, else the config file at ``path`` (default: where
    ``config_path`` says), with every check, also those that need the Management API
    surface's rule table.

    :raise ConfigError: the configuration is missing or invalid.
    """
    settings = (
        load_settings(test_config)
        if test_config is not None
        else load_config_file(path or config_path())
    )
    pipeline.check_grants(settings.writes)
    return settings


def configure_logger() -> None:
    """JSON lines by default; ``LOG_FORMAT=text`` for development; level from ``LOG_LEVEL``."""
    logs.configure_logging(os.environ.get("LOG_LEVEL", "INFO"), logs.log_format())


def register_extensions(app: Flask, settings: Settings) -> None:
    """Bind the cache, the upstream budget, the Auth0 connection pool, the key store, the
    Management client, the clients map, the directory, the client policy and the token
    validator."""
    proxy = settings.proxy
    store = bind_cache(app, settings)
    shared_cache = SharedCache(
        store,
        # Outlast the slowest fetch: the retry budget, then one more connect and read timeout.
        lock_seconds=math.ceil(
            proxy.retry_budget_seconds + proxy.connect_timeout_seconds + proxy.read_timeout_seconds
        )
        + 2,
        failure_seconds=proxy.failure_cooldown_seconds,
        may_refresh=policy.pay_for_refresh,
    )
    governor = Governor(store, settings.budget.limits, share=settings.budget.share)
    upstream = Upstream(
        settings.auth0.base_url,
        governor,
        connect_timeout=proxy.connect_timeout_seconds,
        read_timeout=proxy.read_timeout_seconds,
        retry_budget=proxy.retry_budget_seconds,
        on_call=request_log.count_upstream_call,
        before_request=policy.charge_upstream_call,
    )
    keys = KeyStore(
        upstream,
        shared_cache,
        cache_seconds=proxy.jwks_cache_seconds,
        refetch_interval=proxy.jwks_refetch_interval_seconds,
    )
    management = ManagementClient(upstream, shared_cache, settings.auth0, page_size=proxy.page_size)
    app.extensions["keys"] = keys
    app.extensions["management"] = management
    app.extensions["governor"] = governor
    app.extensions["store"] = store  # for /readyz
    app.extensions["client_map"] = ClientMap(
        settings.clients,
        store,
        management,
        audience=settings.auth0.api_audience,
        settings=settings.client_grants,
    )
    app.extensions["directory"] = Directory(
        management,
        shared_cache,
        ChangeFeed(shared_cache, retention=proxy.changes_retention_seconds),
        ttl=proxy.cache_ttl_seconds,
        max_stale=proxy.max_stale_seconds,
        writable_orgs=frozenset(
            org_id for client_id in settings.writes for org_id in settings.clients[client_id]
        ),
        governor=governor,
        client_wait=proxy.retry_budget_seconds,
        reconcile_seconds=(
            settings.events.reconcile_seconds if settings.events.source != "off" else None
        ),
    )
    if settings.events.source != "off":
        app.extensions["events"] = Events(app.extensions["directory"], management, store)
    app.extensions["policy"] = ClientPolicy(
        store,
        limits=settings.rate_limits,
        fresh_read_interval=proxy.fresh_read_interval_seconds,
    )
    require_oauth.init_app(
        app,
        Auth0TokenValidator(
            keys,
            issuer=settings.auth0.issuer,
            audience=settings.auth0.api_audience,
            leeway=proxy.leeway_seconds,
            accept_user_tokens=proxy.accept_user_tokens,
        ),
    )


def start_background_work(app: Flask, settings: Settings) -> None:
    """The store's heartbeat (it counts the processes sharing the budget, for an outage), the
    process metrics' sampling, the following of Auth0's client grants map, the prewarming of
    the clients map's organizations (members/turns.py) where lists are cached at all, and the
    Events API's reader."""
    app.extensions["store"].start_heartbeat()
    metrics.start_process_sampling()
    app.extensions["client_map"].start()
    directory: Directory = app.extensions["directory"]
    if settings.proxy.prewarm and settings.proxy.cache_ttl_seconds and directory.turns:
        client_map = app.extensions["client_map"]
        prewarm = Prewarm(directory.turns, client_map.organizations, directory.has_list)
        client_map.on_change(prewarm.wake)  # a customer onboarded in Auth0: its list too
        app.extensions["prewarm"] = prewarm
        prewarm.start()
    if settings.events.source == "events_api":
        app.extensions["event_consumer"] = EventConsumer(
            app.extensions["events"],
            app.extensions["store"],
            connect_timeout=settings.proxy.connect_timeout_seconds,
            first_start_window=directory.list_ttl + settings.proxy.max_stale_seconds,
        )
        app.extensions["event_consumer"].start()


def stop_background_work(app: Flask) -> None:
    """A worker exits: the Events API's reader gives its lease up for another to take now, and
    the client grants map is no longer followed nor prewarmed."""
    for name in ("event_consumer", "prewarm"):
        if (work := app.extensions.get(name)) is not None:
            work.stop()
    app.extensions["client_map"].stop()


def bind_cache(app: Flask, settings: Settings) -> Store:
    """Flask-Caching's backend for ``proxy.cache_type``, in a Store whose keys are this tenant's
    (proxies of different tenants can share a cache directory or a Redis)."""
    proxy: ProxySettings = settings.proxy
    if proxy.cache_type == "filesystem":  # again in each worker: it may be gone, or replaced
        ensure_private_directory(proxy.cache_dir)
    flask_cache = Cache(
        app,
        config={
            "CACHE_TYPE": CACHE_TYPES[proxy.cache_type],
            "CACHE_DIR": proxy.cache_dir,
            "CACHE_REDIS_URL": proxy.cache_redis_url,
            "CACHE_REDIS_MODE": proxy.cache_redis_mode,
            "CACHE_REDIS_SENTINELS": proxy.cache_redis_sentinels,
            "CACHE_REDIS_SENTINEL_SERVICE": proxy.cache_redis_sentinel_service,
            "CACHE_REDIS_SENTINEL_PASSWORD": proxy.cache_redis_sentinel_password,
            "CACHE_KEY_PREFIX": "",  # the Store prefixes every key, for every backend
            "CACHE_DEFAULT_TIMEOUT": 300,
            # Files a filesystem cache keeps before pruning the expired ones: member lists are
            # stored page by page, one set of pages per listing (a few hundred MB at most).
            "CACHE_THRESHOLD": 20_000,
        },
    )
    tenant = f"{proxy.cache_key_prefix}{settings.auth0.domain}:"
    with app.app_context():  # the backend is the app's; the Store keeps it for every thread
        # The budget's buckets carry no storage format: old and new versions share them.
        store = store_for(
            flask_cache.cache, f"{tenant}{STORAGE_FORMAT}:", proxy.cache_dir, bucket_prefix=tenant
        )
    return store


def register_blueprints(app: Flask) -> None:
    """The users resource, the Management API surface, the health probes and, with
    ``events.source`` webhook, the endpoint Auth0's Event Streams deliver to."""
    app.url_map.converters["id"] = users.IdConverter
    app.register_blueprint(users.bp)
    app.register_blueprint(pipeline.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    if app.config["SETTINGS"].events.source == "webhook":
        app.register_blueprint(events_webhook.bp)


def register_errorhandlers(app: Flask) -> None:
    """Auth0-style JSON for every error, one log line per request (and an audit line per
    write), and the request limits."""
    errors.init_app(app)
    request_log.init_app(app)
    body_limits.init_app(app)
    policy.init_app(app)
    pipeline.init_app(app, app.config["SETTINGS"].writes)
