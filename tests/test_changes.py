"""The membership change feed: GET /users/changes?since=<cursor>, derived from the listings."""

from __future__ import annotations

import time

import pytest

from auth0_proxy.members.changes import Change, FeedHead, Observation, merge
from tests.support import assert_refused

ADDED, REMOVED, UPDATED = "auth0|frank-globex", "auth0|carol-acme", "auth0|dave-acme"
FRESH = {"Cache-Control": "no-cache"}


@pytest.fixture
def acme_changes(tenant):
    """Frank joins Acme, Carol leaves it, Dave changes his name; undone afterwards."""

    def change() -> None:
        tenant.add_member("org_acme", ADDED)
        tenant.remove_member("org_acme", REMOVED)
        tenant.add_user(UPDATED, "dave@acme.example", "Dave Renamed")

    yield change
    tenant.add_member("org_acme", REMOVED)
    tenant.remove_member("org_acme", ADDED)
    tenant.add_user(UPDATED, "dave@acme.example", "Dave Diaz")


def test_changes_since_a_cursor_list_who_was_added_removed_and_updated(
    make_app, call, make_token, acme_changes
):
    proxy = make_app(cache_ttl_seconds=60, fresh_read_interval_seconds=1)
    token = make_token("edge-acme")
    start = call("/users/changes", token, via=proxy)
    assert start.status_code == 200
    assert start.json() == {
        "added": [],
        "removed": [],
        "updated": [],
        "cursor": start.json()["cursor"],
    }
    acme_changes()
    call("/users", token, FRESH, via=proxy)  # the next listing
    changes = call(f"/users/changes?since={start.json()['cursor']}", token, via=proxy).json()
    assert [member["user_id"] for member in changes["added"]] == [ADDED]
    assert changes["removed"] == [REMOVED]
    assert [(m["user_id"], m["name"]) for m in changes["updated"]] == [(UPDATED, "Dave Renamed")]
    nothing_since = call(f"/users/changes?since={changes['cursor']}", token, via=proxy).json()
    assert nothing_since == {**Change().__dict__, "cursor": changes["cursor"]}


def test_a_cursor_of_another_organization_reveals_nothing(make_app, call, make_token):
    proxy = make_app(cache_ttl_seconds=60)
    globex_cursor = call("/users/changes", make_token("edge-globex"), via=proxy).json()["cursor"]
    answer = call(f"/users/changes?since={globex_cursor}", make_token("edge-acme"), via=proxy)
    assert_refused(answer, 410, "cursor_expired", "cursor of a feed no longer kept")


def test_a_cursor_older_than_what_is_kept_is_410(make_app, call, make_token):
    proxy = make_app(cache_ttl_seconds=1, changes_retention_seconds=1)
    token = make_token("edge-acme")
    cursor = call("/users/changes", token, via=proxy).json()["cursor"]
    time.sleep(2.2)  # the feed's retention has passed
    answer = call(f"/users/changes?since={cursor}", token, via=proxy)
    assert_refused(answer, 410, "cursor_expired", "cursor of a feed no longer kept")
    assert "sync in full" in answer.json()["message"]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("since=not-a-cursor", "unreadable cursor"),
        ("since=", "Query validation error: since: Shorter than minimum length 1"),
        ("since=x&since=y", "Query validation error: each parameter may be given once."),
        ("from=x", "Query validation error: from: unknown parameter"),
    ],
)
def test_a_bad_query_is_400(make_app, call, make_token, query, reason):
    proxy = make_app(cache_ttl_seconds=60)
    answer = call(f"/users/changes?{query}", make_token("edge-acme"), via=proxy)
    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "invalid_query_string"


def test_successive_changes_merge_into_where_each_member_ended_up():
    alice, bob = {"user_id": "a", "name": "Alice"}, {"user_id": "b", "name": "Bob"}
    changes = [
        Change(added=[alice], removed=["b"]),  # alice joins, bob leaves
        Change(added=[bob], removed=["a"]),  # bob is back, alice leaves
        Change(updated=[{**bob, "name": "Robert"}]),
    ]
    merged = merge(changes)
    assert merged == Change(updated=[{"user_id": "b", "name": "Robert"}])  # alice: never seen


def test_only_a_listing_compared_with_a_last_one_keeps_members():
    """The first listing of a feed records no change: it holds no member while it streams (a
    cold list of 100,000 would be held whole), only their digests."""
    members = [{"user_id": f"auth0|m{n}", "name": f"M {n}"} for n in range(3)]
    first = Observation(None)
    first.add(members)
    assert first.changed == {} and len(first.digests) == 3
    later = Observation(FeedHead("f" * 32, 0, first.digests, time.time()))
    later.add([*members[:2], {"user_id": "auth0|m2", "name": "M 2, renamed"}])
    assert list(later.changed) == ["auth0|m2"]
