"""Caching and request coalescing: fewer calls to Auth0, never another organization's data.

In this process where one process shows it (two apps on one Redis are two hosts); under gunicorn
where it takes workers (one cache shared by processes) or streaming.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.support import (
    BIG_ORG,
    BIG_ORG_SIZE,
    JWKS,
    MEMBERS,
    TOKEN,
    USER,
    USER_ORGS,
    assert_refused,
    join_refreshes,
    user_path,
)

NO_CACHE = {"Cache-Control": "no-cache"}
NOT_A_MEMBER = "user is not a member of the caller's organization"


def ids(response) -> set[str]:
    return {member["user_id"] for member in response.json()}


def test_member_list_is_read_once_per_ttl_by_all_workers(start_proxy, call, make_token, tenant):
    proxy = start_proxy(workers=2, cache_ttl_seconds=60)
    token = make_token("edge-acme")
    for _ in range(20):
        response = call("/users", token, via=proxy)
        assert ids(response) == set(tenant.member_ids("org_acme"))
    assert tenant.counts[MEMBERS] == 1


def test_member_list_near_its_ttl_is_refreshed_while_it_is_served(
    make_app, call, make_token, tenant, clock
):
    """In the last fifth of its TTL a list is served as it is while one background fetch
    replaces it: while clients keep syncing, none of them waits for Auth0."""
    proxy = make_app(cache_ttl_seconds=6)  # refreshed from 0.8 * (6 - 1) = 4 s
    token = make_token("edge-acme")
    started = clock.monotonic()
    assert call("/users", token, via=proxy).status_code == 200
    tenant.add_member("org_acme", "auth0|frank-globex")
    try:
        clock.advance(started + 4.3 - clock.monotonic())
        answers = []

        def listed() -> set[str]:
            answers.append(call("/users", token, via=proxy))
            return ids(answers[-1])

        while "auth0|frank-globex" not in listed():
            assert clock.monotonic() < started + 6, "the list was not refreshed ahead of its TTL"
            time.sleep(0.1)  # the background refresh (a thread) lands meanwhile
        clock.advance(started + 6.5 - clock.monotonic())  # past the first listing's TTL
        assert "auth0|frank-globex" in listed()
    finally:
        tenant.remove_member("org_acme", "auth0|frank-globex")
    assert tenant.counts[MEMBERS] == 2  # the first listing and its one successor
    assert {answer.log["upstream_calls"] for answer in answers} == {0}


def test_no_cache_reads_fresh_once_per_interval_per_client(make_app, call, make_token, tenant):
    proxy = make_app(cache_ttl_seconds=60, fresh_read_interval_seconds=60)
    acme, globex = make_token("edge-acme"), make_token("edge-globex")
    call("/users", acme, via=proxy)
    call("/users", acme, via=proxy, headers=NO_CACHE)
    assert tenant.counts[MEMBERS] == 2
    call("/users", acme, via=proxy, headers=NO_CACHE)  # within the interval: from the cache
    assert tenant.counts[MEMBERS] == 2
    call("/users", globex, via=proxy, headers=NO_CACHE)  # another client has its own allowance
    assert tenant.counts[MEMBERS] == 3


def test_removed_member_is_refused_once_the_refresh_after_one_ttl_lands(
    make_app, call, make_token, tenant, clock
):
    """Past its TTL a stale answer is served once more while it is refreshed: with budget to
    spare, the request after that refresh sees the removal."""
    proxy = make_app(cache_ttl_seconds=2)
    token = make_token("edge-acme")
    assert call(user_path("auth0|bob-acme"), token, via=proxy).status_code == 200
    assert ids(call("/users", token, via=proxy)) >= {"auth0|bob-acme"}
    tenant.remove_member("org_acme", "auth0|bob-acme")
    try:
        clock.advance(2.5)
        stale = call(user_path("auth0|bob-acme"), token, via=proxy)
        assert stale.status_code == 200
        assert int(stale.headers["Age"]) >= 2 and "ttl=-" in stale.headers["Cache-Status"]
        assert "auth0|bob-acme" in ids(call("/users", token, via=proxy))  # stale too
        join_refreshes()
        deadline = time.monotonic() + 2  # the refresh landed; a worker's memory is 1 s
        while (answer := call(user_path("auth0|bob-acme"), token, via=proxy)).status_code == 200:
            assert time.monotonic() < deadline, "the refreshed membership was not seen"
            join_refreshes()
            time.sleep(0.1)
        assert_refused(answer, 404, "inexistent_user", NOT_A_MEMBER)
        while "auth0|bob-acme" in ids(call("/users", token, via=proxy)):
            assert time.monotonic() < deadline, "the refreshed list was not seen"
            join_refreshes()
            time.sleep(0.1)
    finally:
        tenant.add_member("org_acme", "auth0|bob-acme")


def test_removed_member_is_refused_within_one_ttl_under_steady_traffic(
    make_app, call, make_token, tenant
):
    """A worker's memory of the cache is short, and requests do not keep it alive."""
    proxy = make_app(cache_ttl_seconds=2)
    token = make_token("edge-acme")
    assert call(user_path("auth0|bob-acme"), token, via=proxy).status_code == 200
    tenant.remove_member("org_acme", "auth0|bob-acme")
    try:
        deadline = time.monotonic() + 2 + 1 + 1  # the TTL, the worker's memory, slack
        while call(user_path("auth0|bob-acme"), token, via=proxy).status_code == 200:
            assert time.monotonic() < deadline, "a removed member was served past one TTL"
            time.sleep(0.1)
    finally:
        tenant.add_member("org_acme", "auth0|bob-acme")


def test_cached_answers_never_reach_another_organization(make_app, call, make_token, tenant):
    proxy = make_app(cache_ttl_seconds=60)
    acme, globex = make_token("edge-acme"), make_token("edge-globex")
    # Warm the cache with each organization's list and profiles.
    assert ids(call("/users", acme, via=proxy)) == set(tenant.member_ids("org_acme"))
    assert call(user_path("auth0|frank-globex"), globex, via=proxy).status_code == 200
    assert call(user_path("auth0|alice-acme"), acme, via=proxy).status_code == 200
    # Now each asks for the other's: lists stay per organization, profiles stay behind membership.
    assert ids(call("/users", globex, via=proxy)) == set(tenant.member_ids("org_globex"))
    for user, other_org in [("auth0|frank-globex", acme), ("auth0|alice-acme", globex)]:
        answer = call(user_path(user), other_org, via=proxy)
        assert_refused(answer, 404, "inexistent_user", NOT_A_MEMBER)
    for client in (acme, globex):
        assert call(user_path("auth0|shared-consultant"), client, via=proxy).status_code == 200


def test_fifty_concurrent_cold_requests_make_one_member_list_fetch(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy(workers=2, threads=16, cache_ttl_seconds=60)
    token = make_token("edge-big")
    tenant.latency = 0.01  # the fetch takes a moment: the others arrive while it is in flight
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(lambda _: call("/users", token, via=proxy), range(50)))
    finally:
        tenant.latency = 0
    assert all(len(response.json()) == BIG_ORG_SIZE for response in responses)
    assert tenant.counts[MEMBERS] == math.ceil(BIG_ORG_SIZE / 50)  # one listing, page by page


def test_concurrent_requests_for_one_user_make_one_fetch_each(
    start_proxy, call, make_token, tenant
):
    proxy = start_proxy(workers=2, threads=16, cache_ttl_seconds=60)
    token = make_token("edge-acme")
    tenant.latency = 0.05
    try:
        with ThreadPoolExecutor(max_workers=30) as pool:
            statuses = list(
                pool.map(
                    lambda _: call(user_path("auth0|carol-acme"), token, via=proxy).status_code,
                    range(30),
                )
            )
    finally:
        tenant.latency = 0
    assert statuses == [200] * 30
    assert (tenant.counts[USER_ORGS], tenant.counts[USER]) == (1, 1)


def test_hosts_sharing_redis_fetch_tokens_and_lists_once(
    make_app, call, make_token, tenant, redis_prefix
):
    """Two apps, each with its own Store and memory, on one Redis: two hosts."""
    shared = {"cache_type": "redis", "cache_key_prefix": redis_prefix, "cache_ttl_seconds": 60}
    hosts = [make_app(**shared), make_app(**shared)]
    token = make_token("edge-acme")
    for _ in range(5):
        for host in hosts:
            assert ids(call("/users", token, via=host)) == set(tenant.member_ids("org_acme"))
    assert (tenant.counts[TOKEN], tenant.counts[MEMBERS]) == (1, 1)


def test_cache_outage_answers_from_auth0_then_from_this_processs_memory(
    make_app, call, make_token, tenant, app_log
):
    """A Redis never reached: the first list and profile come from Auth0, none fails; what
    this process fetched then answers from its memory (tests/test_outage_memory.py)."""
    proxy = make_app(
        cache_type="redis", cache_redis_url="redis://127.0.0.1:1/0", cache_ttl_seconds=60
    )
    token = make_token("edge-acme")
    for _ in range(3):
        assert ids(call("/users", token, via=proxy)) == set(tenant.member_ids("org_acme"))
        assert call(user_path("auth0|alice-acme"), token, via=proxy).status_code == 200
    assert (tenant.counts[MEMBERS], tenant.counts[USER]) == (1, 1)
    warnings = [r["message"] for r in app_log.records if r["logger"] == "auth0_proxy.store"]
    assert warnings == [
        "cache unavailable (ConnectionError); serving from memory or Auth0 directly"
    ]


def test_cache_outage_does_not_let_unknown_key_ids_fetch_the_jwks_per_request(
    make_app, call, make_token, tenant
):
    """Without the shared cache a worker still keeps what it fetched for a second, so a flood of
    made-up kids costs at most a couple of JWKS fetches a second, not one a request."""
    proxy = make_app(cache_type="redis", cache_redis_url="redis://127.0.0.1:1/0")
    assert call("/users", make_token(), via=proxy).status_code == 200
    tenant.reset_counts()
    started = time.monotonic()
    for n in range(40):
        token = make_token(header={"kid": f"made-up-{n}"})
        assert_refused(
            call("/users", token, via=proxy), 401, "invalid_token", "unknown signing key"
        )
    seconds = time.monotonic() - started
    assert tenant.counts[JWKS] <= 2 * math.ceil(seconds + 1)


def test_streamed_list_is_valid_json_of_the_whole_organization(start_proxy, make_token, tenant):
    proxy = start_proxy(workers=1, cache_ttl_seconds=60)
    for attempt in ("cold", "cached"):
        response = requests.get(
            f"{proxy.url}/users",
            headers={"Authorization": f"Bearer {make_token('edge-big')}"},
            timeout=60,
        )
        assert response.headers["Content-Type"] == "application/json", attempt
        assert {m["user_id"] for m in response.json()} == set(tenant.member_ids(BIG_ORG)), attempt
