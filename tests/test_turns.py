"""A cold start: a client the budget refuses gets its organization's turn, whose time is real
(it retries at ``Retry-After`` and is served), and the clients map's organizations are listed
ahead of demand by one process of the deployment (members/turns.py)."""

from __future__ import annotations

import time

from tests.support import MEMBERS, ids

GROUP = "organization_members"
# One call a minute, a burst of one: the first list is paid, the next wait for their turns.
SLOW_BUDGET = {"limits": {GROUP: {"burst": 2, "per_minute": 2}}, "share": 0.5}


def wait_until(condition, seconds: float = 10) -> None:
    """Until ``condition()`` holds: for the proxy's own threads (a prewarm, a turn's timer)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.05)


def test_a_refused_client_comes_back_at_retry_after_and_is_served(
    make_app, call, make_token, tenant, clock
):
    proxy = make_app(cache_ttl_seconds=600, budget=SLOW_BUDGET)
    assert call("/users", make_token("edge-acme"), via=proxy).status_code == 200
    refused = call("/users", make_token("edge-globex"), via=proxy)
    assert refused.status_code == 429
    turn = int(refused.headers["Retry-After"])
    later = call("/users", make_token("edge-big"), via=proxy)
    assert int(later.headers["Retry-After"]) > turn  # queued behind globex's turn
    again = call("/users", make_token("edge-globex"), via=proxy)
    assert int(again.headers["Retry-After"]) <= turn  # the same turn, not a new one
    assert tenant.counts[MEMBERS] == 1

    clock.advance(turn)  # the client comes back when it was told
    answer = call("/users", make_token("edge-globex"), via=proxy)
    assert answer.status_code == 200
    assert ids(answer) == set(tenant.member_ids("org_globex"))
    assert tenant.counts[MEMBERS] == 2  # its turn's call, paid when the turn was taken


def test_a_turn_nobody_comes_back_for_is_listed_by_the_process_that_took_it(
    make_app, call, make_token, tenant
):
    budget = {"limits": {GROUP: {"burst": 2, "per_minute": 60}}, "share": 0.5}  # 2 s a call
    proxy = make_app(cache_ttl_seconds=600, budget=budget, retry_budget_seconds=0.5)
    assert call("/users", make_token("edge-acme"), via=proxy).status_code == 200
    refused = call("/users", make_token("edge-globex"), via=proxy)  # it waits 0.5 s at most
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) <= 4
    wait_until(lambda: tenant.counts[MEMBERS] == 2)  # the turn's timer listed it
    answer = call("/users", make_token("edge-globex"), via=proxy)
    assert answer.status_code == 200 and tenant.counts[MEMBERS] == 2  # from the cache


def test_the_clients_maps_organizations_are_listed_ahead_of_demand_once(
    make_app, call, make_token, tenant, tmp_path
):
    clients = ("edge-acme", "edge-globex", "edge-big")
    cold = make_app(cache_ttl_seconds=600)  # what listing each organization once costs
    for client in clients:
        assert call("/users", make_token(client), via=cold).status_code == 200
    pages = tenant.counts[MEMBERS]
    tenant.reset_counts()

    shared = {"cache_ttl_seconds": 600, "cache_dir": str(tmp_path / "shared"), "prewarm": True}
    make_app(**shared), make_app(**shared)  # two workers of one host: one prewarms
    wait_until(lambda: tenant.counts[MEMBERS] >= pages)
    time.sleep(0.5)  # the other worker, had it prewarmed too, would list them again
    assert tenant.counts[MEMBERS] == pages
    for client in clients:
        answer = call("/users", make_token(client), via=make_app(**shared))
        assert answer.status_code == 200
    assert tenant.counts[MEMBERS] == pages  # every answer from the cache
