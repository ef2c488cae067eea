"""Auth0's events keep the shared cache true (events.source): each event type applied, by two
workers sharing one cache; duplicates, out-of-order delivery; the webhook's refusals; and the
reconciliation that corrects a missed event."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from auth0_proxy import create_app
from auth0_proxy.core import metrics
from emulated_tenant.demo import API_AUDIENCE as PROXY_API
from emulated_tenant.demo import SHARED_USER_ID
from tests.support import ERROR_KEYS, ids, join_refreshes, proxy_config_for, user_path
from tests.test_metrics import parse, total

WEBHOOK_TOKEN = "test-webhook-token-0123456789abcdefghij"
NEWCOMER = "auth0|nina-newcomer"
CAROL = "auth0|carol-acme"
FRESH_LIST = {"Cache-Control": "no-cache"}
MEMO_SECONDS = 1.1  # what another worker remembers of a read (caching/entries.Memo), passed


@pytest.fixture
def make_worker(tenant_server, tmp_path, monkeypatch, app_log) -> Callable[..., Flask]:
    """``make_worker(**events)``: an app with the ``events`` block given (webhook by default),
    all sharing one cache directory, as a deployment's workers share its cache."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_server.ca_bundle)

    def make(clients: dict | None = None, **events) -> Flask:
        config = proxy_config_for(
            tenant_server, cache_ttl_seconds=30, cache_dir=str(tmp_path / "shared")
        )
        config["clients"].update(clients or {})
        config["events"] = {"source": "webhook", "webhook_token": WEBHOOK_TOKEN, **events}
        app = create_app(config)
        logging.getLogger("auth0_proxy").addHandler(app_log)
        return app

    return make


@pytest.fixture
def workers(make_worker) -> tuple[Flask, Flask]:
    return make_worker(), make_worker()


@pytest.fixture
def newcomer(tenant) -> Iterator[str]:
    """A user of the tenant in no organization yet; gone afterwards."""
    tenant.add_user(NEWCOMER, "nina@acme.example", "Nina Newcomer")
    yield NEWCOMER
    if tenant.user_profile(NEWCOMER) is not None:
        tenant.delete_user(NEWCOMER)


@pytest.fixture
def carol_back(tenant) -> Iterator[None]:
    """Carol is an Acme member again after the test, as the demo tenant has her."""
    yield
    if tenant.user_profile(CAROL) is None:
        tenant.add_user(CAROL, "carol@acme.example", "Carol Chen", organizations=["org_acme"])
    tenant.add_member("org_acme", CAROL)


def events_since(tenant, offset: str) -> list[dict]:
    """The CloudEvents the tenant published after ``offset``."""
    return [event.cloud_event for event in tenant.events.after(offset)]


def carol_leaves_unannounced(tenant, call, token: str, app: Flask) -> list[dict]:
    """Acme's list cached at ``app``, then Carol removed in Auth0: the events that tell it,
    not delivered yet."""
    call("/users", token, via=app)
    offset = tenant.events.latest_offset()
    tenant.remove_member("org_acme", CAROL)
    return events_since(tenant, offset)


def deliver(app: Flask, body, token: str = WEBHOOK_TOKEN, scheme: str = "Bearer"):
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    return app.test_client().post("/events/auth0", json=body, headers=headers)


def change_and_deliver(tenant, app: Flask, change: Callable[[], object]) -> list[dict]:
    """Make a change in the tenant and deliver the events it published to ``app``."""
    offset = tenant.events.latest_offset()
    change()
    published = events_since(tenant, offset)
    answer = deliver(app, published)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return published


def test_a_removed_member_is_gone_at_once_everywhere_on_every_worker(
    workers, call, make_token, tenant, clock, carol_back
):
    first, second = workers
    token = make_token("edge-acme")
    admin = make_token("edge-acme", scope="read:organization_members read:users")
    call("/users", token, via=second)  # read from Auth0, then served from the cache
    before = call("/users", token, via=second)
    assert CAROL in ids(before)
    assert call(user_path(CAROL), token, via=second).status_code == 200
    assert CAROL in ids(call("/api/v2/organizations/org_acme/members", admin, via=second))
    cursor = call("/users/changes", token, via=second).json()["cursor"]

    change_and_deliver(tenant, first, lambda: tenant.remove_member("org_acme", CAROL))
    clock.advance(MEMO_SECONDS)

    after = call("/users", token, via=second)
    assert CAROL not in ids(after)
    assert after.headers["ETag"] != before.headers["ETag"]
    assert int(after.headers["Age"]) <= 2  # as old as the event applied, not the first read
    assert call(user_path(CAROL), token, via=second).status_code == 404
    listed = call("/api/v2/organizations/org_acme/members", admin, via=second)
    assert CAROL not in ids(listed)
    assert call(f"/users/changes?since={cursor}", token, via=second).json()["removed"] == [CAROL]
    assert tenant.counts.get("GET /api/v2/organizations/{id}/members", 0) == 1  # the first read


def test_an_added_member_appears_at_once_with_its_profile(
    workers, call, make_token, tenant, clock, newcomer
):
    first, second = workers
    token = make_token("edge-acme")
    assert newcomer not in ids(call("/users", token, via=second))
    assert call(user_path(newcomer), token, via=second).status_code == 404

    change_and_deliver(tenant, first, lambda: tenant.add_member("org_acme", newcomer))
    clock.advance(MEMO_SECONDS)
    tenant.reset_counts()

    listed = call("/users", token, via=second).json()
    assert {"user_id": newcomer, "email": "nina@acme.example", "name": "Nina Newcomer"}.items() <= (
        next(member for member in listed if member["user_id"] == newcomer).items()
    )
    profile = call(user_path(newcomer), token, via=second)
    assert profile.status_code == 200 and profile.json()["name"] == "Nina Newcomer"
    assert tenant.counts == {}  # both answered from what the event stored


def test_a_user_update_refreshes_the_profile_in_every_organization_without_idp_tokens(
    workers, call, make_token, tenant, clock
):
    first, second = workers
    acme, globex = make_token("edge-acme"), make_token("edge-globex")
    original = tenant.user_profile(SHARED_USER_ID)
    for token in (acme, globex):
        call("/users", token, via=second)
        call(user_path(SHARED_USER_ID), token, via=second)
    identity = {**original["identities"][0], "access_token": "idp-secret-token"}
    try:
        change_and_deliver(
            tenant,
            first,
            lambda: tenant.update_user(SHARED_USER_ID, {"name": "Sam Renamed"}),
        )
        tenant.add_user(  # the IdP token, as a social login leaves it in the profile
            SHARED_USER_ID,
            original["email"],
            "Sam Renamed",
            ["org_acme", "org_globex"],
            identities=[identity],
        )
        change_and_deliver(
            tenant, first, lambda: tenant.update_user(SHARED_USER_ID, {"nickname": "sam2"})
        )
        clock.advance(MEMO_SECONDS)
        for token in (acme, globex):
            listed = {m["user_id"]: m for m in call("/users", token, via=second).json()}
            assert listed[SHARED_USER_ID]["name"] == "Sam Renamed"
            profile = call(user_path(SHARED_USER_ID), token, via=second)
            assert profile.json()["name"] == "Sam Renamed"
            assert "idp-secret-token" not in profile.text
    finally:
        tenant.add_user(
            SHARED_USER_ID, original["email"], original["name"], ["org_acme", "org_globex"]
        )


def test_a_deleted_user_is_gone_from_every_organization(
    workers, call, make_token, tenant, clock, newcomer
):
    first, second = workers
    tenant.add_member("org_acme", newcomer)
    tenant.add_member("org_globex", newcomer)
    tokens = make_token("edge-acme"), make_token("edge-globex")
    for token in tokens:
        assert newcomer in ids(call("/users", token, via=second))
        assert call(user_path(newcomer), token, via=second).status_code == 200

    published = change_and_deliver(tenant, first, lambda: tenant.delete_user(newcomer))
    assert [event["type"] for event in published] == ["user.deleted"]  # names no organization
    clock.advance(MEMO_SECONDS)

    for token in tokens:
        assert newcomer not in ids(call("/users", token, via=second))
        assert call(user_path(newcomer), token, via=second).status_code == 404


def test_a_deleted_organization_answers_nothing_it_had_cached(
    make_worker, call, make_token, tenant, clock
):
    org, user, client = "org_doomed", "auth0|dora-doomed", "edge-doomed"
    tenant.add_organization(org, "doomed", "Doomed Inc")
    tenant.add_user(user, "dora@doomed.example", "Dora Doomed", organizations=[org])
    tenant.add_client(
        client, f"{client}-secret", grants={PROXY_API: ["read:users"]}, organizations=[org]
    )
    try:
        first, second = (make_worker(clients={client: org}) for _ in range(2))
        token = make_token(client)
        for _ in range(2):  # read from Auth0, then from the cache
            assert ids(call("/users", token, via=second)) == {user}
            assert call(user_path(user), token, via=second).status_code == 200

        change_and_deliver(tenant, first, lambda: tenant.delete_organization(org))
        clock.advance(MEMO_SECONDS)

        gone = call("/users", token, via=second)
        assert gone.status_code == 404 and gone.json()["errorCode"] == "inexistent_organization"
        assert call(user_path(user), token, via=second).status_code == 404
    finally:
        tenant.delete_user(user)


def test_a_role_event_drops_the_members_cached_roles(workers, call, make_token, tenant, clock):
    first, second = workers
    token = make_token("edge-acme", scope="read:organization_member_roles")
    path = f"/api/v2/organizations/org_acme/members/{CAROL.replace('|', '%7C')}/roles"
    before = {role["id"] for role in call(path, token, via=second).json()}
    role = next(r for r in ("rol_viewer", "rol_admin", "rol_editor") if r not in before)
    try:
        change_and_deliver(
            tenant, first, lambda: tenant.assign_member_roles("org_acme", CAROL, [role])
        )
        clock.advance(MEMO_SECONDS)
        assert role in {r["id"] for r in call(path, token, via=second).json()}
    finally:
        tenant.remove_member_roles("org_acme", CAROL, [role])


def test_a_duplicate_is_applied_once(workers, call, make_token, tenant, carol_back):
    first, second = workers
    published = carol_leaves_unannounced(tenant, call, make_token("edge-acme"), first)
    tenant.reset_counts()
    before = parse(metrics.render()[0].decode())
    assert deliver(first, published).get_json() == {"received": 1, "applied": 1, "duplicates": 0}
    calls = dict(tenant.counts)
    again = deliver(second, published[0])  # one event alone, to the other worker
    assert again.get_json() == {"received": 1, "applied": 0, "duplicates": 1}
    assert tenant.counts == calls  # no confirming read for the duplicate
    after = parse(metrics.render()[0].decode())

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    removal = {"type": "organization.member.deleted"}
    assert delta("auth0_proxy_events_received_total", **removal) == 2
    assert delta("auth0_proxy_events_applied_total", **removal) == 1
    assert delta("auth0_proxy_events_duplicates_total") == 1
    assert delta("auth0_proxy_events_lag_seconds_count") == 1


def test_an_event_auth0_failed_to_confirm_is_refused_then_applied_when_delivered_again(
    workers, call, make_token, tenant, clock, carol_back
):
    first, second = workers
    token = make_token("edge-acme")
    published = carol_leaves_unannounced(tenant, call, token, second)
    tenant.inject_fault("GET /api/v2/users/{id}/organizations", status=500, times=10)
    refused = deliver(first, published)
    assert refused.status_code >= 500  # Auth0 delivers it again
    clock.advance(MEMO_SECONDS)
    assert CAROL in ids(call("/users", token, via=second))  # nothing applied meanwhile
    tenant.clear_faults()
    clock.advance(10)  # past the failure remembered for Retry-After
    assert deliver(second, published).get_json()["applied"] == 1
    clock.advance(MEMO_SECONDS)
    assert CAROL not in ids(call("/users", token, via=second))


def test_events_out_of_order_leave_auth0s_truth(
    workers, call, make_token, tenant, clock, carol_back
):
    """Carol leaves and joins again; the leaving arrives last. Each event is confirmed against
    Auth0 when applied, so the cache ends as Auth0 is: she is a member."""
    first, second = workers
    token = make_token("edge-acme")
    call("/users", token, via=second)
    offset = tenant.events.latest_offset()
    tenant.remove_member("org_acme", CAROL)
    tenant.add_member("org_acme", CAROL)
    left, joined = events_since(tenant, offset)
    assert (left["type"], joined["type"]) == (
        "organization.member.deleted",
        "organization.member.added",
    )
    assert deliver(first, joined).status_code == 200
    assert deliver(second, left).status_code == 200
    clock.advance(MEMO_SECONDS)
    assert CAROL in ids(call("/users", token, via=first))
    assert call(user_path(CAROL), token, via=first).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token",
        f"Bearer {WEBHOOK_TOKEN}x",
        "Basic " + base64.b64encode(b"auth0:wrong").decode(),
        f"Token {WEBHOOK_TOKEN}",
        "Basic %%%",
    ],
)
def test_a_webhook_without_the_token_is_refused_and_applies_nothing(
    workers, call, make_token, tenant, clock, carol_back, authorization
):
    first, _ = workers
    token = make_token("edge-acme")
    published = carol_leaves_unannounced(tenant, call, token, first)
    headers = {"Authorization": authorization} if authorization else {}
    answer = first.test_client().post("/events/auth0", json=published, headers=headers)
    assert answer.status_code == 401
    assert set(answer.get_json()) == ERROR_KEYS
    assert WEBHOOK_TOKEN not in answer.get_data(as_text=True)
    clock.advance(MEMO_SECONDS)
    assert CAROL in ids(call("/users", token, via=first))  # nothing applied


def test_basic_credentials_with_the_token_as_password_are_accepted(workers, tenant, carol_back):
    first, _ = workers
    offset = tenant.events.latest_offset()
    tenant.remove_member("org_acme", CAROL)
    basic = base64.b64encode(f"auth0:{WEBHOOK_TOKEN}".encode()).decode()
    answer = deliver(first, events_since(tenant, offset), token=basic, scheme="Basic")
    assert answer.status_code == 200 and answer.get_json()["applied"] == 1


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        [],
        {"specversion": "1.0"},
        {
            "specversion": "1.0",
            "id": "evt_x",
            "type": "user.created",
            "source": "urn:auth0:t",
            "time": "2026-12-05T10:00:00Z",
            "data": {"object": {"user_id": "auth0|x"}},
        },
        {
            "specversion": "1.0",
            "id": "evt_x",
            "type": "organization.member.deleted",
            "source": "urn:auth0:t",
            "time": "2026-12-05T10:00:00Z",
            "data": {"object": {"organization": {"id": "org_acme"}}},
        },
    ],
    ids=["not-json", "empty", "not-an-event", "unknown-type", "no-user"],
)
def test_a_malformed_delivery_is_refused_and_applies_nothing(
    workers, call, make_token, tenant, clock, carol_back, body
):
    first, _ = workers
    token = make_token("edge-acme")
    valid = carol_leaves_unannounced(tenant, call, token, first)
    batch = body if isinstance(body, str | list) and not body else [*valid, body]
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    data = body if isinstance(body, str) else json.dumps(batch)
    answer = first.test_client().post("/events/auth0", data=data, headers=headers)
    assert answer.status_code == 400
    assert answer.get_json()["errorCode"] == "invalid_body"
    clock.advance(MEMO_SECONDS)
    assert CAROL in ids(call("/users", token, via=first))  # not even the valid event applied


def test_without_events_the_webhook_is_not_there(make_app, tenant):
    answer = deliver(make_app(cache_ttl_seconds=30), [])
    assert answer.status_code == 404


def test_an_event_keeps_the_lists_reconciliation_due_and_says_how_old_it_is(
    make_worker, call, make_token, tenant, clock, newcomer
):
    """An event edits the list: its Age is the event's, its next full reading stays due when
    it was (else a busy organization's list would never be reconciled)."""
    app = make_worker(reconcile_seconds=60)
    token = make_token("edge-acme")
    call("/users", token, via=app)  # read at t
    clock.advance(30)
    change_and_deliver(tenant, app, lambda: tenant.add_member("org_acme", newcomer))
    edited = call("/users", token, via=app)
    assert newcomer in ids(edited)
    assert int(edited.headers["Age"]) <= 1
    ttl = int(edited.headers["Cache-Status"].rsplit("ttl=", 1)[1])
    assert 0 < ttl <= 30  # due at t + 60 still
    tenant.reset_counts()
    clock.advance(25)  # t + 55: in the reconciliation interval's last fifth
    call("/users", token, via=app)
    join_refreshes()
    assert tenant.counts["GET /api/v2/organizations/{id}/members"] == 1


def test_reconciliation_corrects_a_missed_event_and_says_so(
    make_worker, call, make_token, tenant, clock, app_log, carol_back
):
    app = make_worker(reconcile_seconds=60)
    token = make_token("edge-acme")
    assert CAROL in ids(call("/users", token, via=app))
    tenant.remove_member("org_acme", CAROL)  # its event never delivered
    corrections = metrics.RECONCILIATION_CORRECTIONS._value.get()
    clock.advance(30)  # past cache_ttl_seconds: events keep lists, no refresh yet
    assert CAROL in ids(call("/users", token, via=app))
    clock.advance(25)  # into the reconciliation interval's last fifth: read again
    call("/users", token, via=app)
    join_refreshes()
    clock.advance(MEMO_SECONDS)
    assert CAROL not in ids(call("/users", token, via=app))
    assert metrics.RECONCILIATION_CORRECTIONS._value.get() == corrections + 1
    warning = next(r for r in app_log.records if "corrected" in r.get("message", ""))
    assert warning["level"] == "WARNING" and "org_acme" in warning["message"]
