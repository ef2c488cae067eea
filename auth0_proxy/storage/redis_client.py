"""How the proxy reaches Redis: one server, a primary found through Sentinel, or a Cluster.

``proxy.cache_redis_url`` always gives the connection's credentials, database and TLS
(``rediss://``, ``ssl_ca_certs=``); its host is the server's for ``standalone`` and one node's
(any) for ``cluster``, and is not used for ``sentinel``, whose sentinels say where the primary is
now. Every client times out, so a Redis that hangs is an outage (a miss), not a hung request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from auth0_proxy.core.config import ProxySettings, host_and_port

TIMEOUT_SECONDS = 1.0
TIMEOUTS = {"socket_timeout": TIMEOUT_SECONDS, "socket_connect_timeout": TIMEOUT_SECONDS}
# One retry, at once, of a connection error: a pooled connection the server closed (a restart)
# is opened again. Not of a timeout (a Redis that hangs would hold the request twice as long).
# The client's default retries both three times with growing sleeps: seconds held in a request
# per store operation while Redis is down, which the store treats as an outage anyway.
RETRIES = 1


def connect(
    url: str,
    mode: str = ProxySettings.cache_redis_mode,
    sentinels: Sequence[str] = (),
    service: str = ProxySettings.cache_redis_sentinel_service,
    sentinel_password: str | None = None,
) -> Any:
    """A client for ``mode`` (config.py's ``REDIS_MODES``); it connects when first used, never
    here, so a Redis that is down when the proxy starts is an outage like any other."""
    import redis  # here, not above: it makes every worker larger, and most use no Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    retry = Retry(NoBackoff(), RETRIES, supported_errors=(redis.ConnectionError,))
    options = {**TIMEOUTS, "retry": retry}
    if mode == "sentinel":
        return _sentinel_primary(url, sentinels, service, sentinel_password, options)
    if mode == "cluster":
        from redis.cluster import RedisCluster

        # A Cluster client asks the cluster for its slots as it is made.
        return MadeOnFirstUse(lambda: RedisCluster.from_url(url, **options))
    return redis.Redis.from_url(url, **options)


def _sentinel_primary(
    url: str,
    sentinels: Sequence[str],
    service: str,
    sentinel_password: str | None,
    client_options: dict,
) -> Any:
    """The primary of ``service``, as the sentinels name it at each new connection (after a
    failover, the connections to the old primary fail once, and the next ones go to the new)."""
    from redis.connection import SSLConnection, parse_url
    from redis.sentinel import Sentinel

    options = parse_url(url)
    options.pop("host", None), options.pop("port", None)
    tls = options.pop("connection_class", None) is SSLConnection  # Sentinel picks its own class
    to_sentinels = {**TIMEOUTS, "password": sentinel_password}
    if tls:  # the sentinels speak TLS when the servers do, with the same CA
        to_sentinels |= {"ssl": True, "ssl_ca_certs": options.get("ssl_ca_certs")}
    addresses = [host_and_port(address) for address in sentinels]
    sentinel = Sentinel(addresses, sentinel_kwargs=to_sentinels)
    return sentinel.master_for(service, ssl=tls, **options, **client_options)


class MadeOnFirstUse:
    """A client made by ``make`` when first used, and again on the next use if making it
    failed."""

    def __init__(self, make: Callable[[], Any]):
        self._make = make
        self._client = None
        self._mutex = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            with self._mutex:
                if self._client is None:
                    self._client = self._make()
        return getattr(self._client, name)
