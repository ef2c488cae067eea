"""A Redis reached over TLS with a password, both in the URL (which may come from a secret file,
``AUTH0_PROXY_PROXY_CACHE_REDIS_URL_FILE``): a real ``redis-server`` started by the test."""

from __future__ import annotations

import json

import pytest
import redis

from emulated_tenant.certs import generate_certificates
from tests.support import ids, redis_sentinel, redis_server

PASSWORD = "tls-test-password-0123"


@pytest.fixture
def certs(tmp_path):
    return generate_certificates(tmp_path / "tls")


@pytest.fixture
def tls_redis(tmp_path, certs):
    """A redis-server of the test's own, on TLS only, with a password: its URL and a client."""

    def url(port: int) -> str:
        return f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={certs.ca_bundle}"

    options = ["--port", "0", "--tls-port", "{port}", "--tls-auth-clients", "no"]
    options += ["--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key)]
    options += ["--tls-ca-cert-file", str(certs.ca_bundle), "--requirepass", PASSWORD]
    with redis_server(tmp_path, url, *options) as (address, _):
        yield address, redis.Redis.from_url(address)


def test_the_cache_and_the_budget_live_in_a_redis_over_tls(
    tls_redis, make_app, call, make_token, tenant
):
    url, client = tls_redis
    proxy = make_app(cache_type="redis", cache_redis_url=url, cache_ttl_seconds=60)
    token = make_token("edge-acme")
    for _ in range(2):
        assert ids(call("/users", token, via=proxy)) == set(tenant.member_ids("org_acme"))
    assert tenant.counts["GET /api/v2/organizations/{id}/members"] == 1  # once, then cached
    keys = {key.decode() for key in client.scan_iter()}
    assert any("}budget:" in key for key in keys)  # the budget's buckets are there too
    assert any(":member-list:" in key for key in keys)


def test_a_wrong_password_is_an_outage_not_an_error(
    tls_redis, make_app, call, make_token, tenant, app_log
):
    """The proxy serves from Auth0 directly, as through any store outage."""
    url, _ = tls_redis
    wrong = url.replace(PASSWORD, "not-the-password")
    proxy = make_app(cache_type="redis", cache_redis_url=wrong, cache_ttl_seconds=60)
    answer = call("/users", make_token("edge-acme"), via=proxy)
    assert ids(answer) == set(tenant.member_ids("org_acme"))
    assert PASSWORD not in answer.text and "not-the-password" not in answer.text
    logged = json.dumps(app_log.records)
    assert "cache unavailable" in logged  # said, once
    assert "not-the-password" not in logged and PASSWORD not in logged


def test_sentinel_over_tls_names_the_primary_the_proxy_reaches_over_tls(
    tls_redis, certs, tmp_path, make_app, call, make_token, tenant
):
    """The sentinels speak TLS when the URL is ``rediss://``, trusting the URL's CA."""
    url, client = tls_redis
    port = client.connection_pool.connection_kwargs["port"]
    with redis_sentinel(
        tmp_path, "tls-primary", port, PASSWORD, "sentinel-pw", tls=certs, replicas=False
    ) as sentinel:
        proxy = make_app(
            cache_type="redis",
            cache_redis_url=url.replace(f"127.0.0.1:{port}", "unused"),
            cache_redis_mode="sentinel",
            cache_redis_sentinels=[sentinel],
            cache_redis_sentinel_service="tls-primary",
            cache_redis_sentinel_password="sentinel-pw",
            cache_ttl_seconds=60,
        )
        token = make_token("edge-acme")
        for _ in range(2):
            assert ids(call("/users", token, via=proxy)) == set(tenant.member_ids("org_acme"))
    assert tenant.counts["GET /api/v2/organizations/{id}/members"] == 1  # cached on the primary
    assert any(":member-list:" in key.decode() for key in client.scan_iter())
