"""A Redis reached over TLS with a password, both in the URL (which may come from a secret file,
``AUTH0_PROXY_PROXY_CACHE_REDIS_URL_FILE``): a real ``redis-server`` started by the test."""

from __future__ import annotations

import json

import pytest
import redis

from emulated_tenant.certs import generate_certificates
from tests.support import ids, redis_server

PASSWORD = "tls-test-password-0123"


@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server of the test's own, on TLS only, with a password: its URL and a client."""
    certs = generate_certificates(tmp_path / "tls")

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
