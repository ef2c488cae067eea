"""Cached answers through a Redis outage: while the shared store fails, what a process read or
fetched answers from its memory (stale-if-error, RFC 5861), with its honest ``Age`` and within
``max_stale_seconds``, and no refresh starts that no other process could share; while the store
answers, the memory is kept for a second only, as ever. A real redis-server of the test's own is
stopped (a crash: it would come back empty)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import redis

from auth0_proxy.caching.entries import MEMO_SECONDS
from auth0_proxy.storage.store import RETRY_AFTER_FAILURE_SECONDS
from bench.simulate import parse_args, simulate
from tests.support import (
    MEMBERS,
    USER,
    USER_ORGS,
    WRITER_SCOPE,
    ids,
    join_refreshes,
    redis_binary,
    redis_server,
    user_path,
    write,
)

TTL = 30
MAX_STALE = 60
ALICE = user_path("auth0|alice-acme")


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server the test may stop: its URL and process."""
    with redis_server(tmp_path, "redis://127.0.0.1:{}/0".format, "--port", "{port}") as running:
        yield running


@pytest.fixture
def proxy(make_app, own_redis):
    """The proxy on the test's own Redis, answers fresh for TTL s and servable MAX_STALE more."""
    url, _ = own_redis
    return make_app(
        cache_type="redis",
        cache_redis_url=url,
        cache_ttl_seconds=TTL,
        max_stale_seconds=MAX_STALE,
    )


def stop(server) -> None:
    server.terminate()
    server.wait(timeout=10)


def warm(call, proxy, token: str, *paths: str) -> dict[str, str]:
    """Each path read twice (fetched, then from the store): the ETag of each."""
    etags = {}
    for path in paths:
        assert call(path, token, via=proxy).status_code == 200
        again = call(path, token, via=proxy)
        assert again.status_code == 200 and again.headers["Cache-Status"].startswith(
            "auth0-m2m-proxy; hit"
        )
        etags[path] = again.headers["ETag"]
    return etags


def reads_of_members(tenant) -> tuple[int, int, int]:
    return tenant.counts[MEMBERS], tenant.counts[USER_ORGS], tenant.counts[USER]


def test_warm_list_and_profile_are_served_from_memory_while_redis_is_down(
    proxy, own_redis, call, make_token, tenant, clock
):
    token = make_token("edge-acme")
    etags = warm(call, proxy, token, "/users", ALICE)
    stop(own_redis[1])
    tenant.reset_counts()
    clock.advance(TTL + 10)  # stale, long past the memory's second

    listed = call("/users", token, via=proxy)
    profile = call(ALICE, token, via=proxy)
    unchanged = call("/users", token, {"If-None-Match": etags["/users"]}, via=proxy)

    assert listed.status_code == 200 and ids(listed) == set(tenant.member_ids("org_acme"))
    assert profile.status_code == 200 and profile.json()["user_id"] == "auth0|alice-acme"
    assert unchanged.status_code == 304
    for answer in (listed, profile):
        assert TTL + 10 <= int(answer.headers["Age"]) <= TTL + 12  # since read from Auth0
        assert answer.headers["Cache-Status"].startswith("auth0-m2m-proxy; hit; ttl=-")
    join_refreshes()
    assert sum(tenant.counts.values()) == 0  # no refresh either: none could be shared


def test_an_answer_past_max_stale_is_fetched_then_remembered_while_redis_is_down(
    proxy, own_redis, call, make_token, tenant, clock
):
    token = make_token("edge-big")  # a list of many pages, each kept in memory
    big_user = user_path("auth0|big-00001")
    warm(call, proxy, token, "/users", big_user)
    stop(own_redis[1])
    tenant.reset_counts()
    clock.advance(TTL + MAX_STALE + 1)  # past what may be served stale

    fetched = [call(path, token, via=proxy) for path in ("/users", big_user)]
    assert [answer.headers["Age"] for answer in fetched] == ["0", "0"]
    assert reads_of_members(tenant) == (50, 1, 1)  # 2,500 members, 50 a page

    clock.advance(2 * MEMO_SECONDS)
    remembered = [call(path, token, via=proxy) for path in ("/users", big_user)]
    assert [answer.status_code for answer in remembered] == [200, 200]
    assert len(remembered[0].json()) == 2500
    assert all(int(answer.headers["Age"]) <= 3 for answer in remembered)
    assert reads_of_members(tenant) == (50, 1, 1)  # the list and profile just fetched


def test_while_redis_answers_memory_is_kept_for_a_second_only(
    proxy, own_redis, call, make_token, tenant, clock
):
    """As without an outage: what another process changed in the store is seen within a
    second (here: the store emptied, as a Redis restarted without persistence is)."""
    token = make_token("edge-acme")
    warm(call, proxy, token, "/users", ALICE)
    url, _ = own_redis

    redis.Redis.from_url(url).flushdb()
    tenant.reset_counts()
    clock.advance(MEMO_SECONDS + 0.1)

    answers = [call(path, token, via=proxy) for path in ("/users", ALICE)]
    assert [answer.headers["Age"] for answer in answers] == ["0", "0"]
    assert reads_of_members(tenant) == (1, 1, 1)  # read afresh, not from memory


def test_once_redis_answers_again_memory_is_kept_for_a_second_only(
    proxy, own_redis, call, make_token, tenant, clock, tmp_path
):
    """The store is asked first, so its return is seen within a second (here: empty, as a
    Redis restarted without persistence is): what it lacks is read afresh."""
    token = make_token("edge-acme")
    warm(call, proxy, token, "/users", ALICE)
    url, server = own_redis
    port = urlsplit(url).port
    stop(server)
    clock.advance(TTL)
    assert int(call("/users", token, via=proxy).headers["Age"]) >= TTL  # from memory
    tenant.reset_counts()

    again = redis_server(tmp_path, "redis://127.0.0.1:{}/0".format, "--port", "{port}", port=port)
    with again:
        clock.advance(RETRY_AFTER_FAILURE_SECONDS)  # the store is asked again
        answers = [call(path, token, via=proxy) for path in ("/users", ALICE)]
    assert [answer.headers["Age"] for answer in answers] == ["0", "0"]
    assert reads_of_members(tenant) == (1, 1, 1)


def test_a_fleet_on_two_instances_is_answered_from_memory_through_an_outage() -> None:
    """``make simulate --redis-outage``, small: two proxies of two workers each on a Redis of
    the simulation's own, stopped mid-run; every poll meanwhile answered, none refused."""
    redis_binary()
    fleet = "--clients 12 --orgs 3 --members 60 --poll 1 --ramp 1 --warmup 1 --minutes 0.07"
    run = simulate(parse_args([*fleet.split(), "--redis-outage", "2", "--redis-outage-at", "1"]))
    outage = next(phase for phase in run.phases if phase.name.startswith("outage"))
    answers = [answer for answer in run.fleet.answers if outage.holds(answer.due)]
    assert len(answers) >= 12
    assert {answer.status for answer in answers} <= {200, 304}
    assert not any(answer.cut_off for answer in answers)
    assert not [r for r in run.requests if outage.holds(r["time"]) and r["status"] == 429]


def test_a_write_before_the_outage_is_not_hidden_by_what_was_remembered_before_it(
    make_writer, make_token, own_redis
):
    """The answers of an organization clients write to are keyed by its generation, which a
    write changes; while the store fails, the one this process last saw is used, not a default
    under which it may remember answers from before the write."""
    url, server = own_redis
    app = make_writer(
        cache_type="redis", cache_redis_url=url, cache_ttl_seconds=TTL, max_stale_seconds=MAX_STALE
    )
    token = make_token("edge-acme", scope=WRITER_SCOPE)
    dave = "/api/v2/users/auth0%7Cdave-acme"
    assert "tier" not in read(app, dave, token).get_json().get("user_metadata", {})
    answer = write(app, "PATCH", dave, {"user_metadata": {"tier": "gold"}}, token)
    assert answer.status_code == 200
    assert read(app, dave, token).get_json()["user_metadata"]["tier"] == "gold"
    stop(server)
    during = read(app, dave, token)
    assert during.status_code == 200 and during.get_json()["user_metadata"]["tier"] == "gold"


def read(app, path: str, token: str):
    return app.test_client().get(path, headers={"Authorization": f"Bearer {token}"})
