"""Freshness on every answer: Age and Cache-Status, strong ETags and 304s that cost nothing
upstream, and the bound on how long a removed member can still be served."""

from __future__ import annotations

import pytest

from tests.support import MEMBERS, USER, USER_ORGS, assert_refused, ids, join_refreshes, user_path

NOT_A_MEMBER = "user is not a member of the caller's organization"


@pytest.mark.parametrize("path", ["/users", user_path("auth0|bob-acme")])
def test_a_cached_answer_has_a_strong_etag_and_if_none_match_gets_304_with_no_upstream_call(
    make_app, call, make_token, tenant, path
):
    proxy = make_app(cache_ttl_seconds=60)
    token = make_token("edge-acme")
    call(path, token, via=proxy)  # fetched (a streamed list has no ETag yet)
    cached = call(path, token, via=proxy)
    etag = cached.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert cached.headers["Cache-Status"].startswith("auth0-m2m-proxy; hit; ttl=")
    calls_before = sum(tenant.counts.values())

    for validator in [etag, f'"other", {etag}', f"W/{etag}"]:
        answer = call(path, token, {"If-None-Match": validator}, via=proxy)
        assert answer.status_code == 304
        assert answer.body == b""
        assert answer.headers["ETag"] == etag and "Age" in answer.headers
    assert sum(tenant.counts.values()) == calls_before
    assert call(path, token, {"If-None-Match": '"other"'}, via=proxy).status_code == 200


def test_an_unchanged_list_keeps_its_etag_and_a_changed_one_gets_a_new_one(
    make_app, call, make_token, tenant, clock
):
    proxy = make_app(cache_ttl_seconds=60, fresh_read_interval_seconds=1)
    token = make_token("edge-acme")
    fresh = {"Cache-Control": "no-cache"}
    call("/users", token, via=proxy)
    etag = call("/users", token, via=proxy).headers["ETag"]
    call("/users", token, fresh, via=proxy)  # fetched again: the same members
    assert call("/users", token, {"If-None-Match": etag}, via=proxy).status_code == 304
    tenant.add_member("org_acme", "auth0|frank-globex")
    try:
        clock.advance(1.1)  # the client's next fresh read is allowed
        call("/users", token, fresh, via=proxy)
        answer = call("/users", token, {"If-None-Match": etag}, via=proxy)
        assert answer.status_code == 200 and "auth0|frank-globex" in ids(answer)
        assert answer.headers["ETag"] != etag
    finally:
        tenant.remove_member("org_acme", "auth0|frank-globex")


def test_another_organizations_etag_matches_nothing(make_app, call, make_token):
    proxy = make_app(cache_ttl_seconds=60)
    acme, globex = make_token("edge-acme"), make_token("edge-globex")
    for token in (acme, globex, acme, globex):
        call("/users", token, via=proxy)
    globex_etag = call("/users", globex, via=proxy).headers["ETag"]
    answer = call("/users", acme, {"If-None-Match": globex_etag}, via=proxy)
    assert answer.status_code == 200 and answer.headers["ETag"] != globex_etag


def test_a_non_member_gets_404_whatever_etag_it_sends(make_app, call, make_token):
    proxy = make_app(cache_ttl_seconds=60)
    frank = user_path("auth0|frank-globex")
    globex = make_token("edge-globex")
    call(frank, globex, via=proxy)
    etag = call(frank, globex, via=proxy).headers["ETag"]
    answer = call(frank, make_token("edge-acme"), {"If-None-Match": etag}, via=proxy)
    assert_refused(answer, 404, "inexistent_user", NOT_A_MEMBER)


@pytest.mark.parametrize("path", ["/users", "/users?take=2", "/users?page=0&per_page=2"])
def test_an_answer_fetched_for_the_request_says_so(make_app, call, make_token, path):
    proxy = make_app(cache_ttl_seconds=60)
    answer = call(path, make_token("edge-acme"), via=proxy)
    assert answer.headers["Cache-Status"] == "auth0-m2m-proxy; fwd=miss"
    assert answer.headers["Age"] == "0" and "ETag" not in answer.headers


def test_a_removed_member_is_never_served_past_the_ttl_plus_the_maximum_staleness(
    make_app, call, make_token, tenant, clock
):
    """Auth0 fails every refresh: the last good answer serves while it may (stale-if-error),
    and not a moment past ``cache_ttl_seconds + max_stale_seconds``."""
    # Seconds enough that a slow first request (a loaded machine) still leaves the entries
    # usable when the stale read comes.
    proxy = make_app(cache_ttl_seconds=2, max_stale_seconds=4, retry_budget_seconds=0)
    token = make_token("edge-acme")
    bob = user_path("auth0|bob-acme")
    assert call(bob, token, via=proxy).status_code == 200
    tenant.remove_member("org_acme", "auth0|bob-acme")
    tenant.inject_fault(USER_ORGS, status=503, times=1000)
    try:
        clock.advance(2.2)
        assert call(bob, token, via=proxy).status_code == 200  # stale: the removal unseen
        join_refreshes()
        clock.advance(4.2)  # past TTL + maximum staleness
        assert call(bob, token, via=proxy).status_code == 502  # Auth0 failing; never the profile
        tenant.clear_faults()
        clock.advance(2.1)  # the remembered failure has passed
        assert_refused(call(bob, token, via=proxy), 404, "inexistent_user", NOT_A_MEMBER)
    finally:
        tenant.clear_faults()
        tenant.add_member("org_acme", "auth0|bob-acme")


def test_a_fresh_answer_is_not_refetched_and_says_how_fresh(make_app, call, make_token, tenant):
    proxy = make_app(cache_ttl_seconds=60)
    token = make_token("edge-acme")
    call(user_path("auth0|bob-acme"), token, via=proxy)
    answer = call(user_path("auth0|bob-acme"), token, via=proxy)
    ttl = int(answer.headers["Cache-Status"].rsplit("ttl=", 1)[1])
    assert 50 <= ttl <= 60 and int(answer.headers["Age"]) <= 10
    assert (tenant.counts[USER], tenant.counts[MEMBERS]) == (1, 0)
