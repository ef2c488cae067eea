"""The upstream budget: ranked spending from token buckets shared by every worker and instance,
following what Auth0 reports of its own limit.

The governor runs on each store the proxy supports; the end-to-end tests run the proxy with a
budget small enough to reach and check what its clients and the tenant see.
"""

from __future__ import annotations

import pytest
import requests
from cachelib import FileSystemCache

from auth0_proxy.core.auth0_api import Limit
from auth0_proxy.spending.budget import BudgetExhausted, Governor, Rank, errand
from auth0_proxy.storage.store import store_for
from tests.conftest import redis_store
from tests.support import MEMBERS, USER_ORGS, assert_refused, ids, join_refreshes, user_path

GROUP = "organization_members"


def governor(store, *, burst: int = 8, per_minute: float = 1.2, share: float = 0.5) -> Governor:
    """Half of a bucket of ``burst``: 4 tokens, refilled so slowly (one a 100 s) that a test
    sees only what it spends."""
    return Governor(store, {GROUP: Limit(burst, per_minute)}, share=share)


def spends(budget: Governor, rank: Rank = Rank.CLIENT, urgency: float = 0.0, **kwargs) -> bool:
    """Whether one call of this rank is afforded (and then spent)."""
    with errand(rank, urgency):
        try:
            budget.spend(GROUP, **kwargs)
        except BudgetExhausted:
            return False
    return True


def test_refresh_ahead_leaves_three_quarters_of_the_bucket_to_clients(store):
    budget = governor(store)
    assert [spends(budget, Rank.AHEAD) for _ in range(2)] == [True, False]
    assert [spends(budget) for _ in range(4)] == [True, True, True, False]


def test_stale_refreshes_keep_a_reserve_that_shrinks_as_the_answer_ages(store):
    budget = governor(store)
    assert spends(budget, Rank.AHEAD)  # 3 of 4 left
    assert spends(budget, Rank.STALE, urgency=0.0)  # the reserve of a just-stale answer: 2
    assert not spends(budget, Rank.STALE, urgency=0.0)
    assert spends(budget, Rank.STALE, urgency=0.5)  # staler: a reserve of 1
    assert spends(budget, Rank.STALE, urgency=1.0)  # at its maximum staleness: none
    assert not spends(budget)


def test_a_client_refused_is_told_when_to_come_back(store):
    budget = governor(store)
    for _ in range(4):
        assert spends(budget)
    with pytest.raises(BudgetExhausted) as refused:
        budget.spend(GROUP)
    assert refused.value.status_code == 429
    assert int(refused.value.headers["Retry-After"]) == 100  # one token, at 0.01 a second


def test_a_client_may_queue_for_tokens_within_its_wait(store):
    budget = governor(store, burst=2, per_minute=120)  # 1 token, refilled at 1 a second
    assert spends(budget)
    assert not spends(budget, wait=0)
    assert spends(budget, wait=1.5)  # queued for the next token, and slept until it came


def test_a_listing_starts_only_when_the_budget_holds_all_its_pages(store):
    budget = governor(store)
    assert spends(budget)  # 3 left
    with errand(Rank.AHEAD), pytest.raises(BudgetExhausted):
        budget.prepay(GROUP, 3)  # 3 pages would leave less than the reserve
    with errand(Rank.STALE, urgency=1.0):
        prepaid = budget.prepay(GROUP, 3)
    assert [prepaid.take() for _ in range(4)] == [True, True, True, False]
    assert not spends(budget)


def test_pages_beyond_the_prepaid_ones_queue_rather_than_cut_the_list_off(store):
    budget = governor(store, burst=2, per_minute=120)
    budget.prepay(GROUP, 1)
    budget.spend(GROUP, committed=True)  # the bucket is empty: it waited for the next token


def test_instances_sharing_redis_spend_one_budget(redis_prefix):
    """Two proxies (their own connections, one Redis) draw from the same buckets."""
    first, second = governor(redis_store(redis_prefix)), governor(redis_store(redis_prefix))
    assert spends(first) and spends(second) and spends(first) and spends(second)
    assert not spends(first) and not spends(second)


def test_workers_sharing_a_cache_directory_spend_one_budget(tmp_path):
    stores = [store_for(FileSystemCache(str(tmp_path)), "test:", str(tmp_path)) for _ in "ab"]
    first, second = governor(stores[0]), governor(stores[1])
    assert [spends(first), spends(second), spends(first), spends(second)] == [True] * 4
    assert not spends(second)


def auth0_answer(status: int, headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    return response


def test_other_applications_spending_the_tenants_limit_lower_the_budget(store):
    """Auth0 has 5 of 8 left: the proxy keeps the others their half, and may spend 1."""
    budget = governor(store)
    answer = auth0_answer(200, {"x-ratelimit-limit": "8", "x-ratelimit-remaining": "5"})
    budget.observe(GROUP, answer, 0.0)
    assert [spends(budget), spends(budget)] == [True, False]


def test_a_full_tenant_bucket_leaves_the_budget_as_it_is(store):
    budget = governor(store)
    answer = auth0_answer(200, {"x-ratelimit-limit": "8", "x-ratelimit-remaining": "8"})
    budget.observe(GROUP, answer, 0.0)
    assert [spends(budget) for _ in range(5)] == [True] * 4 + [False]


def test_an_auth0_429_empties_the_budget_until_its_reset(store):
    budget = governor(store, burst=8, per_minute=600)  # 5 tokens a second
    budget.observe(GROUP, auth0_answer(429, {}), 10.0)
    with pytest.raises(BudgetExhausted) as refused:
        budget.spend(GROUP, wait=1.0)
    assert int(refused.value.headers["Retry-After"]) >= 10


# End to end: the proxy in this process, with a budget of one token for member lists.
TINY_BUDGET = {"limits": {GROUP: {"burst": 2, "per_minute": 1}}, "share": 0.5}


def test_a_client_with_nothing_cached_and_no_budget_gets_429_without_an_upstream_call(
    make_app, call, make_token, tenant
):
    proxy = make_app(cache_ttl_seconds=60, budget=TINY_BUDGET)
    assert call("/users", make_token("edge-acme"), via=proxy).status_code == 200
    answer = call("/users", make_token("edge-globex"), via=proxy)
    assert_refused(
        answer, 429, "too_many_requests", "organization_members budget spent for client calls"
    )
    assert 1 <= int(answer.headers["Retry-After"]) <= 121  # its turn, and a second
    assert tenant.counts[MEMBERS] == 1


def test_a_stale_list_is_served_with_its_age_when_the_budget_cannot_refresh_it(
    make_app, call, make_token, tenant, clock
):
    proxy = make_app(cache_ttl_seconds=1, budget=TINY_BUDGET)
    token = make_token("edge-acme")
    assert call("/users", token, via=proxy).status_code == 200
    tenant.add_member("org_acme", "auth0|frank-globex")
    try:
        clock.advance(1.2)  # past the TTL: stale
        for _ in range(3):
            answer = call("/users", token, via=proxy)
            join_refreshes()
        assert answer.status_code == 200
        assert "auth0|frank-globex" not in ids(answer)  # the last good list, not a refresh
        assert int(answer.headers["Age"]) >= 1
        assert answer.headers["Cache-Status"].startswith("auth0-m2m-proxy; hit; ttl=-")
        assert tenant.counts[MEMBERS] == 1
    finally:
        tenant.remove_member("org_acme", "auth0|frank-globex")


@pytest.mark.parametrize("status", [429, 503])
def test_auth0_failing_a_refresh_serves_the_last_good_answer(
    make_app, call, make_token, tenant, status
):
    """Stale-if-error: neither Auth0's 429 nor its 5xx reaches a client that has an answer."""
    proxy = make_app(cache_ttl_seconds=1, retry_budget_seconds=0)
    token = make_token("edge-acme")
    assert call(user_path("auth0|bob-acme"), token, via=proxy).status_code == 200
    assert call("/users", token, via=proxy).status_code == 200
    tenant.inject_fault(MEMBERS, status=status, times=100)
    tenant.inject_fault(USER_ORGS, status=status, times=100)
    join_refreshes()
    for path in ["/users", user_path("auth0|bob-acme")] * 2:
        answer = call(path, token, via=proxy)
        join_refreshes()
        assert answer.status_code == 200, answer.text
    no_cache = {"Cache-Control": "no-cache"}
    assert call("/users", token, no_cache, via=proxy).status_code == 200
    assert call(user_path("auth0|bob-acme"), token, no_cache, via=proxy).status_code == 200


def test_headers_of_the_whole_apis_bucket_lower_that_bucket_not_the_groups(store):
    """Auth0 reports the tighter of two buckets; the burst it names says which."""
    budget = Governor(
        store, {GROUP: Limit(8, 1.2), "management": Limit(16, 1.2)}, share=0.5
    )  # 4 and 8 tokens
    answer = auth0_answer(200, {"x-ratelimit-limit": "16", "x-ratelimit-remaining": "10"})
    budget.observe(GROUP, answer, 0.0)  # the whole API's: at most 10 - 8 = 2 for the proxy
    assert [spends(budget), spends(budget), spends(budget)] == [True, True, False]


def test_two_proxies_sharing_redis_hold_one_budget_between_them(
    make_app, call, make_token, tenant, redis_prefix
):
    """What one instance spent, the other cannot: its cold request is 429, Auth0 not called."""
    shared = {"cache_type": "redis", "cache_key_prefix": redis_prefix, "cache_ttl_seconds": 60}
    first, second = (make_app(**shared, budget=TINY_BUDGET) for _ in range(2))
    assert call("/users", make_token("edge-acme"), via=first).status_code == 200
    answer = call("/users", make_token("edge-globex"), via=second)
    assert_refused(
        answer, 429, "too_many_requests", "organization_members budget spent for client calls"
    )
    assert call("/users", make_token("edge-acme"), via=second).status_code == 200  # cached
    assert tenant.counts[MEMBERS] == 1


def test_a_list_longer_than_a_refresh_may_spend_is_prepaid_what_it_may_and_paced_after(store):
    """A refresh at no urgency must leave 2 of 4 tokens: it prepays 2 pages of 10, not none."""
    budget = governor(store)
    with errand(Rank.STALE, urgency=0.0):
        prepaid = budget.prepay(GROUP, 10)
    assert prepaid.calls == 2
    assert not spends(budget, Rank.STALE, urgency=0.0)  # its next pages wait their turn


@pytest.mark.parametrize("backend", ["filesystem", "redis"])
def test_two_storage_formats_spend_one_budget(backend, tmp_path, request):
    """A rolling upgrade that changes the storage format runs old and new processes side by
    side: their cached values are apart, their budget is one."""
    if backend == "redis":
        tenant = request.getfixturevalue("redis_prefix")
        old, new = (redis_store(f"{tenant}{version}:") for version in ("v4", "v5"))
        old.bucket_prefix = new.bucket_prefix = tenant  # as create_app makes them
    else:
        tenant, files = "proxy:tenant:", FileSystemCache(str(tmp_path))
        old, new = (
            store_for(files, f"{tenant}{version}:", str(tmp_path), bucket_prefix=tenant)
            for version in ("v4", "v5")
        )
    limits = {"users": Limit(burst=10, per_minute=60)}
    old_governor, new_governor = (Governor(s, limits, share=1.0) for s in (old, new))
    for _ in range(10):
        old_governor.spend("users")
    with pytest.raises(BudgetExhausted):
        new_governor.spend("users")
    old.set("key", "old value", 60)
    assert new.get("key") is None  # the cached values stay apart
