"""Per-client rate limits: each client's requests, those that reach Auth0, all clients' together.

Every limit is a token bucket in the shared store, so it holds across workers and hosts; over
one, the answer is Auth0's 429 with ``Retry-After`` and ``x-ratelimit-*``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
import requests

from auth0_proxy.core.auth0_api import Limit
from auth0_proxy.core.config import (
    CLIENT_UPSTREAM,
    ClientLimits,
    ConfigError,
    RateLimits,
    load_settings,
)
from auth0_proxy.spending.policy import ClientPolicy
from auth0_proxy.storage.buckets import Bucket
from tests.conftest import REDIS_URL
from tests.support import MEMBERS, join_refreshes, proxy_config_for

SLOW = 0.001  # per minute: a bucket that refills nothing within a test

AUTH0_429_MESSAGE = (
    "Too many requests. Check the X-RateLimit-Limit, X-RateLimit-Remaining and "
    "X-RateLimit-Reset headers."
)


def limits(requests_burst=None, upstream_burst=None, global_burst=None, **extra) -> dict:
    """A rate_limits block: each burst given is a bucket that does not refill during the test;
    each one not given, no limit."""

    def rate(burst):
        return {"per_minute": SLOW, "burst": burst} if burst else {"per_minute": 0}

    return {
        "client": {"requests": rate(requests_burst), "upstream": rate(upstream_burst)},
        "global": rate(global_burst),
        **extra,
    }


def assert_rate_limited(answer, limit: int) -> None:
    assert answer.status_code == 429
    assert answer.json() == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": AUTH0_429_MESSAGE,
        "errorCode": "too_many_requests",
    }
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.headers["x-ratelimit-limit"] == str(limit)
    assert answer.headers["x-ratelimit-remaining"] == "0"
    assert int(answer.headers["x-ratelimit-reset"]) > time.time()


def test_a_client_over_its_request_limit_gets_auth0s_429_without_an_upstream_call(
    make_app, call, make_token, tenant
):
    proxy = make_app(cache_ttl_seconds=60, rate_limits=limits(requests_burst=3))
    token = make_token()
    answers = [call("/users", token, via=proxy) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0"]
    assert {a.headers["x-ratelimit-limit"] for a in answers} == {"3"}
    tenant.reset_counts()
    refused = call("/users", token, via=proxy)
    assert_rate_limited(refused, 3)
    assert refused.log["reason"] == "rate limit: requests"
    assert tenant.requests == []
    # another client has an allowance of its own
    assert call("/users", make_token("edge-globex"), via=proxy).status_code == 200


def test_the_limit_refills_at_its_rate_and_retry_after_says_when(make_app, call, make_token, clock):
    once_a_second = {"client": {"requests": {"per_minute": 60, "burst": 1}}}
    proxy = make_app(cache_ttl_seconds=60, rate_limits=once_a_second)
    token = make_token()
    assert call("/users", token, via=proxy).status_code == 200
    refused = call("/users", token, via=proxy)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    clock.advance(1.05)
    assert call("/users", token, via=proxy).status_code == 200


def test_the_global_limit_holds_for_all_clients_together(make_app, call, make_token):
    proxy = make_app(cache_ttl_seconds=60, rate_limits=limits(global_burst=2))
    assert call("/users", make_token("edge-acme"), via=proxy).status_code == 200
    assert call("/users", make_token("edge-globex"), via=proxy).status_code == 200
    refused = call("/users", make_token("edge-big"), via=proxy)
    assert_rate_limited(refused, 2)
    assert refused.log["reason"] == "rate limit: global"


def test_requests_without_a_valid_token_spend_no_clients_allowance(make_app, call, make_token):
    proxy = make_app(rate_limits=limits(requests_burst=1))
    for _ in range(5):
        assert call("/users", "not-a-token", via=proxy).status_code == 401
    assert call("/users", make_token(), via=proxy).status_code == 200


def test_unknown_ids_spend_the_upstream_allowance_while_cached_reads_go_on(
    make_app, call, make_token, tenant
):
    """A client asking for ids that are not cached costs an upstream call each: it may make
    ``upstream`` of them, and its cached reads are still answered."""
    proxy = make_app(cache_ttl_seconds=60, rate_limits=limits(upstream_burst=4))
    token = make_token()
    member = f"/users/{quote(sorted(tenant.member_ids('org_acme'))[0])}"
    assert call("/users", token, via=proxy).status_code == 200  # cold: one page
    assert call(member, token, via=proxy).status_code == 200  # cold: organizations, profile
    tenant.reset_counts()
    unknown = [call(f"/users/{quote(f'auth0|nobody-{n}')}", token, via=proxy) for n in range(3)]
    assert [a.status_code for a in unknown] == [404, 429, 429]
    assert_rate_limited(unknown[-1], 4)
    assert unknown[-1].log["reason"] == "rate limit: upstream"
    assert [a.log["upstream_calls"] for a in unknown] == [1, 0, 0]
    tenant.reset_counts()
    assert call("/users", token, via=proxy).status_code == 200
    assert call(member, token, via=proxy).status_code == 200
    assert tenant.requests == []


def test_a_cold_read_pays_for_each_page_it_takes(make_app, call, make_token, tenant):
    proxy = make_app(page_size=2, cache_ttl_seconds=60, rate_limits=limits(upstream_burst=10))
    token = make_token()
    answer = call("/users", token, via=proxy)
    assert answer.status_code == 200 and len(answer.json()) == len(tenant.member_ids("org_acme"))
    pages = tenant.counts[MEMBERS]
    assert pages == 3  # a page per two members
    unknown = call(f"/users/{quote('auth0|nobody')}", token, via=proxy)
    assert unknown.headers["x-ratelimit-remaining"] == str(10 - pages - 1)


def test_no_cache_over_the_upstream_allowance_is_answered_from_the_cache(
    make_app, call, make_token, tenant, clock
):
    proxy = make_app(
        cache_ttl_seconds=60, fresh_read_interval_seconds=1, rate_limits=limits(upstream_burst=2)
    )
    token = make_token()
    no_cache = {"Cache-Control": "no-cache"}
    assert call("/users", token, via=proxy).status_code == 200  # cold: pays 1
    clock.advance(1.05)
    first = call("/users", token, no_cache, via=proxy)  # fresh: pays the last one
    assert first.status_code == 200 and first.log["upstream_calls"] > 0
    clock.advance(1.05)  # a fresh read is due again, but the upstream allowance is spent
    tenant.reset_counts()
    second = call("/users", token, no_cache, via=proxy)
    assert second.status_code == 200 and second.log["upstream_calls"] == 0
    assert tenant.requests == []


def test_no_cache_is_honoured_once_per_interval(make_app, call, make_token, tenant):
    proxy = make_app(cache_ttl_seconds=60, fresh_read_interval_seconds=60)
    token = make_token()
    no_cache = {"Cache-Control": "no-cache"}
    assert call("/users", token, via=proxy).status_code == 200
    assert call("/users", token, no_cache, via=proxy).log["upstream_calls"] > 0
    assert call("/users", token, no_cache, via=proxy).log["upstream_calls"] == 0


def test_a_clients_override_replaces_the_default_for_it_alone(make_app, call, make_token):
    overrides = {"clients": {"edge-globex": {"requests": {"per_minute": 0}}}}
    proxy = make_app(cache_ttl_seconds=60, rate_limits=limits(requests_burst=1, **overrides))
    assert call("/users", make_token("edge-acme"), via=proxy).status_code == 200
    assert call("/users", make_token("edge-acme"), via=proxy).status_code == 429
    globex = make_token("edge-globex")
    answers = [call("/users", globex, via=proxy) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert "x-ratelimit-limit" not in answers[0].headers  # no limit, nothing to tell


def test_management_api_reads_are_limited_too(make_app, call, make_token):
    proxy = make_app(cache_ttl_seconds=60, rate_limits=limits(requests_burst=1))
    token = make_token(scope="read:users read:organizations")
    assert call("/api/v2/organizations/org_acme", token, via=proxy).status_code == 200
    assert_rate_limited(call("/api/v2/organizations/org_acme", token, via=proxy), 1)


@pytest.mark.parametrize("cache_type", ["filesystem", "redis"])
def test_a_limit_is_shared_by_every_worker(start_proxy, make_token, redis_prefix_if, cache_type):
    """Two gunicorn workers, many connections at once: the client gets its burst, no more."""
    extra = redis_prefix_if(cache_type)
    proxy = start_proxy(workers=2, threads=4, rate_limits=limits(requests_burst=10), **extra)
    token = make_token()

    def get(_):
        with requests.Session() as session:  # a connection each: both workers take some
            return session.get(f"{proxy.url}/users", headers={"Authorization": f"Bearer {token}"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = [response.status_code for response in pool.map(get, range(30))]
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    pids = {line["pid"] for line in proxy.log_records() if line.get("status") == 429}
    assert len(pids) == 2, "both workers refused some: the bucket is theirs together"


def test_a_worker_takes_a_busy_clients_requests_in_leases_and_never_more_than_its_limit(
    make_app, call, make_token
):
    """Burst 200: a worker takes 4 at a time while the bucket is over half full, then one by
    one. The headers count each request; the client gets its burst exactly, no more."""
    proxy = make_app(cache_ttl_seconds=60, rate_limits=limits(requests_burst=200))
    token = make_token()
    answers = [call("/users", token, via=proxy) for _ in range(5)]
    remaining = [int(a.headers["x-ratelimit-remaining"]) for a in answers]
    assert remaining == [199, 198, 197, 196, 195]
    store = proxy.extensions["policy"].store
    bucket = Bucket("limit:requests:edge-acme", rate=SLOW / 60, capacity=200)
    assert store.take_tokens([bucket], 0)[1] == [pytest.approx(192, abs=0.01)]  # two leases
    while answers[-1].status_code == 200:
        answers.append(call("/users", token, via=proxy))
    assert len(answers) == 201 and answers[-2].headers["x-ratelimit-remaining"] == "0"
    assert_rate_limited(answers[-1], 200)


def test_leases_of_several_workers_never_admit_more_than_the_limit(start_proxy, make_token):
    proxy = start_proxy(workers=2, threads=4, rate_limits=limits(requests_burst=200))
    token = make_token()

    def get(_):
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            return [session.get(f"{proxy.url}/users").status_code for _ in range(20)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = [status for result in pool.map(get, range(15)) for status in result]
    # Calls a worker took and did not spend before its lease timed out are lost: fewer than a
    # lease (4 here) a worker, and leases are one call once the bucket is half empty.
    assert 200 - 3 * 8 <= statuses.count(200) <= 200
    assert statuses.count(200) + statuses.count(429) == 300


@pytest.fixture
def redis_prefix_if(request):
    def settings(cache_type: str) -> dict:
        if cache_type != "redis":
            return {"cache_type": cache_type}
        prefix = request.getfixturevalue("redis_prefix")
        return {"cache_type": "redis", "cache_redis_url": REDIS_URL, "cache_key_prefix": prefix}

    return settings


def test_defaults_protect_the_tenants_budget(tenant_server):
    config = proxy_config_for(tenant_server)
    del config["rate_limits"]
    settings = load_settings(config)
    assert settings.rate_limits.client.requests is None  # warm answers cost the tenant nothing
    assert settings.rate_limits.client.upstream == CLIENT_UPSTREAM
    assert settings.rate_limits.total is None  # the budget holds the fleet; no cap on capacity
    # A client alone can spend at most a small share of the default budget's users group.
    share, users = settings.budget.share, settings.budget.limits["users"]
    assert CLIENT_UPSTREAM.per_minute <= share * users.per_minute / 4


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"clients": {"edge-nobody": {}}}, "rate_limits.clients.edge-nobody"),
        ({"client": {"requests": {"per_minute": -1}}}, "rate_limits.client.requests.per_minute"),
        ({"client": {"upstream": {"burst": 5}}}, "rate_limits.client.upstream.per_minute"),
        ({"global": {"per_minute": 60, "burst": 0}}, "rate_limits.global.burst"),
        ({"client": {"request": {"per_minute": 1}}}, "rate_limits.client.request"),
    ],
)
def test_a_bad_rate_limits_block_names_its_key(tenant_server, block, message):
    config = proxy_config_for(tenant_server, rate_limits=block)
    with pytest.raises(ConfigError, match=f"^{message}: "):
        load_settings(config)


def test_a_429_of_the_upstream_limit_tells_that_limit(make_app, call, make_token):
    """The request limit's headers, set when the request was admitted, do not hide the limit
    that refused it."""
    rates = limits(requests_burst=100, upstream_burst=1)
    proxy = make_app(cache_ttl_seconds=60, rate_limits=rates)
    token = make_token()
    assert call("/users", token, via=proxy).status_code == 200  # the one upstream read
    refused = call(f"/users/{quote('auth0|nobody')}", token, via=proxy)
    assert_rate_limited(refused, 1)
    assert refused.log["reason"] == "rate limit: upstream"


def test_a_client_without_a_request_limit_is_told_no_other_quota(make_app, call, make_token):
    rates = limits(global_burst=50, **{"clients": {"edge-globex": {"requests": {"per_minute": 0}}}})
    rates["client"]["requests"] = {"per_minute": SLOW, "burst": 10}
    proxy = make_app(cache_ttl_seconds=60, rate_limits=rates)
    answer = call("/users", make_token("edge-globex"), via=proxy)
    assert answer.status_code == 200
    assert not {"x-ratelimit-limit", "x-ratelimit-remaining"} & set(answer.headers.keys())
    assert call("/users", make_token(), via=proxy).headers["x-ratelimit-limit"] == "10"


def test_reading_stale_answers_cannot_reach_auth0_past_the_upstream_allowance(
    make_app, call, make_token, tenant, clock
):
    """A read that starts a refresh in the background pays for it as for a call of its own:
    once the allowance is spent, the stale answers serve on and nothing reaches Auth0."""
    # The plan's budget (the tests' unbounded one is lowered to what the tenant reports left,
    # under its reserve for refreshes).
    proxy = make_app(cache_ttl_seconds=1, budget={}, rate_limits=limits(upstream_burst=6))
    token = make_token()
    members = sorted(tenant.member_ids("org_acme"))[:2]
    for member in members:  # two cold reads, two calls each (organizations, profile), then...
        assert call(f"/users/{quote(member)}", token, via=proxy).status_code == 200
    clock.advance(2.2)  # ... both stale
    tenant.reset_counts()
    first = call(f"/users/{quote(members[0])}", token, via=proxy)  # pays the last two
    assert first.status_code == 200 and "ttl=-" in first.headers["Cache-Status"]
    deadline = time.monotonic() + 10
    while len(tenant.requests) < 2:  # its organizations and its profile, refreshed
        assert time.monotonic() < deadline, "the paid refresh never reached Auth0"
        time.sleep(0.05)
    assert tenant.wait_until_idle(timeout=10)
    refreshed = len(tenant.requests)
    second = call(f"/users/{quote(members[1])}", token, via=proxy)  # nothing left to pay
    assert second.status_code == 200 and "ttl=-" in second.headers["Cache-Status"]
    join_refreshes()  # a refresh that would have started has ended
    assert tenant.wait_until_idle(timeout=10)
    assert len(tenant.requests) == refreshed, "no refresh went without paying"


def policy_of(store, requests_limit, total=None) -> ClientPolicy:
    limits = RateLimits(client=ClientLimits(requests=requests_limit, upstream=None), total=total)
    return ClientPolicy(store, limits=limits, fresh_read_interval=60)


def shared_level(store, key: str, capacity: int) -> float:
    return store.take_tokens([Bucket(key, rate=SLOW / 60, capacity=capacity)], 0)[1][0]


def test_threads_renewing_a_lease_at_once_lose_no_call(store):
    """Burst 800 (leases of 16): 8 threads x 10 requests take what they spend, and at most a
    lease's unspent calls more."""
    policy = policy_of(store, Limit(burst=800, per_minute=SLOW))
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: [policy.admit("edge-acme") for _ in range(10)], range(8)))
    taken = 800 - shared_level(store, "limit:requests:edge-acme", 800)
    assert 80 <= round(taken) < 80 + 16


def test_under_a_global_limit_a_worker_takes_one_call_at_a_time(store):
    """A lease's unspent calls would be taken from every client's global allowance."""
    policy = policy_of(store, Limit(burst=800, per_minute=SLOW), Limit(burst=20, per_minute=SLOW))
    for client in ("edge-acme", "edge-globex", "edge-big"):
        policy.admit(client)
    assert shared_level(store, "limit:requests", 20) == pytest.approx(17, abs=0.01)
    assert shared_level(store, "limit:requests:edge-acme", 800) == pytest.approx(799, abs=0.01)


def failing_addresses(burst: int) -> dict:
    return {**limits(), "failed_auth": {"per_minute": SLOW, "burst": burst}}


def test_an_address_that_keeps_failing_to_authenticate_is_refused_unread(
    make_app, call, make_token, tenant
):
    proxy = make_app(trust_forwarded_for=True, rate_limits=failing_addresses(3))
    attacker, neighbour = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.9"}
    for _ in range(3):
        assert call("/users", "not-a-token", attacker, via=proxy).status_code == 401
    refused = call("/users", make_token(), attacker, via=proxy)  # even a good token, now
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["errorCode"] == "too_many_requests"
    assert "X-RateLimit" not in refused.json()["message"]  # it sends none of those headers
    assert refused.log["reason"] == "rate limit: failed_auth"
    assert call("/users", make_token(), neighbour, via=proxy).status_code == 200


def test_the_forwarded_address_is_believed_only_when_trusted(make_app, call, make_token):
    """Untrusted, X-Forwarded-For is the client's to choose: failures count against the
    connection's address, whatever address the header names."""
    proxy = make_app(rate_limits=failing_addresses(2))
    for n in range(2):
        header = {"X-Forwarded-For": f"192.0.2.{n}"}
        assert call("/users", "not-a-token", header, via=proxy).status_code == 401
    fresh_header = {"X-Forwarded-For": "192.0.2.99"}
    assert call("/users", make_token(), fresh_header, via=proxy).status_code == 429


def test_by_default_failed_authentications_are_not_counted(make_app, call, make_token):
    proxy = make_app(rate_limits=limits())
    for _ in range(50):
        assert call("/users", "not-a-token", via=proxy).status_code == 401
    assert call("/users", make_token(), via=proxy).status_code == 200
