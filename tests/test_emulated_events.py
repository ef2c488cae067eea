"""The emulated tenant publishes what changes as Auth0's Events do (emulated_tenant/events.py),
serves them as the Events API's stream (GET /api/v2/events, sse.py) and pushes them to webhooks
as Event Streams do (webhooks.py): what issue 21's consumers are built against. Shapes from
../shared/auth0-facts.md ("Events").

The stream and the webhooks are exercised for real: HTTPS to a running tenant, HTTP(S) to a
receiver on loopback. Nothing asserts a duration: tests wait for what they expect, with timeouts.
"""

from __future__ import annotations

import base64
import json
import random
import re
import ssl
import threading
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from emulated_tenant import Tenant, TenantServer, demo, demo_tenant
from emulated_tenant.__main__ import event_stream, parse_args
from emulated_tenant.certs import generate_certificates
from emulated_tenant.events import EventLog, OffsetGone, StreamSettings, UnknownOffset
from emulated_tenant.payload import check_value
from emulated_tenant.query import inline_refs, load_spec
from tests.test_emulated_tenant import http, server  # noqa: F401 (fixtures)

EVENT_ID = re.compile(r"evt_[A-Za-z0-9]{22}")
EVENTS = "/api/v2/events"
ALICE = "auth0|alice-acme"
WAIT = 5  # seconds before a test gives up waiting (never reached when all is well)


@pytest.fixture
def tenant():
    tenant = demo_tenant()
    tenant.domain = "tenant.example.com"
    return tenant


def published(tenant, since: str) -> list[tuple[str, dict]]:
    return [
        (e.cloud_event["type"], e.cloud_event["data"]["object"]) for e in tenant.events.after(since)
    ]


def test_membership_changes_are_published_once_each(tenant):
    start = tenant.events.latest_offset()
    tenant.add_member("org_globex", "auth0|alice-acme")
    tenant.add_member("org_globex", "auth0|alice-acme")  # a member already: no event
    tenant.remove_members("org_globex", ["auth0|alice-acme", "auth0|nobody"])
    org = {"id": "org_globex", "name": tenant.organization("org_globex").name}
    membership = {"organization": org, "user": {"user_id": "auth0|alice-acme"}}
    assert published(tenant, start) == [
        ("organization.member.added", membership),
        ("organization.member.deleted", membership),
    ]


def test_each_event_is_a_cloud_event_of_the_tenant_with_an_offset_to_resume_from(tenant):
    start = tenant.events.latest_offset()
    tenant.update_user("auth0|alice-acme", {"user_metadata": {"tier": "gold"}})
    tenant.delete_user("auth0|bob-acme")
    [updated, deleted] = tenant.events.after(start)
    for event in (updated, deleted):
        cloud = event.cloud_event
        assert cloud["specversion"] == "1.0" and EVENT_ID.fullmatch(cloud["id"])
        assert cloud["source"] == "urn:auth0:tenant.example.com"
        assert cloud["time"].endswith("Z") and cloud["a0stream"].startswith("est_")
    assert updated.cloud_event["type"] == "user.updated"
    assert updated.cloud_event["data"]["object"]["user_metadata"] == {"tier": "gold"}
    assert deleted.cloud_event["data"]["object"]["user_id"] == "auth0|bob-acme"
    assert updated.offset < deleted.offset == tenant.events.latest_offset()
    assert tenant.events.after(updated.offset) == [deleted]  # resumed after an offset
    assert tenant.events.after(None) == []  # no offset: from the newest on


def test_role_changes_name_the_role(tenant):
    role = next(iter(tenant._roles.values()))
    tenant.remove_member_roles("org_acme", "auth0|alice-acme", [role.id])  # held or not
    start = tenant.events.latest_offset()
    tenant.assign_member_roles("org_acme", "auth0|alice-acme", [role.id, role.id])
    tenant.remove_member_roles("org_acme", "auth0|alice-acme", [role.id])
    types = [e.cloud_event["type"] for e in tenant.events.after(start)]
    assert types == ["organization.member.role.assigned", "organization.member.role.deleted"]
    assert tenant.events.after(start)[0].cloud_event["data"]["object"]["role"]["id"] == role.id


def test_an_offset_no_longer_kept_is_gone_and_a_made_up_one_unknown():
    log = EventLog(lambda: "tenant.example.com", retained=3)
    events = [log.record("user.updated", {"user_id": f"u{n}"}) for n in range(5)]  # keeps 3
    with pytest.raises(OffsetGone):
        log.after(events[0].offset)  # the event after it is no longer kept
    assert log.after(events[1].offset) == events[2:]  # every event after it is
    with pytest.raises(UnknownOffset):
        log.after("not-an-offset")
    with pytest.raises(UnknownOffset):
        log.after("ffffffffffffffff")  # ahead of the newest


def spec_schema(name: str) -> dict[str, Any]:
    """A component schema of the spec excerpt the tenant serves, refs inlined."""
    spec = load_spec()
    return inline_refs(spec, spec["components"]["schemas"][name])


def test_deleting_an_organization_publishes_it_once(tenant):
    org_id = "org_0123456789abcdef"  # shaped as the event's schema wants an organization id
    branding = {"logo_url": "https://initech.example/logo.png"}
    tenant.add_organization(org_id, "initech", "Initech", branding=branding, metadata={"a": "b"})
    tenant.add_user("auth0|milton", "milton@initech.example", organizations=[org_id])
    tenant.assign_member_roles(org_id, "auth0|milton", ["rol_admin"])
    start = tenant.events.latest_offset()
    tenant.delete_organization(org_id)
    organization = {
        "id": org_id,
        "name": "initech",
        "display_name": "Initech",
        "metadata": {"a": "b"},
    }
    assert published(tenant, start) == [("organization.deleted", organization)]  # no branding
    [deleted] = tenant.events.after(start)
    check_value(deleted.cloud_event, spec_schema("EventStreamCloudEventOrgDeletedCloudEvent"))
    assert tenant.organization_details(org_id) is None
    assert tenant.organizations_of("auth0|milton") == []
    with pytest.raises(KeyError):
        tenant.delete_organization(org_id)


def test_deleting_a_user_publishes_only_user_deleted(tenant):
    start = tenant.events.latest_offset()
    tenant.delete_user(demo.SHARED_USER_ID)  # a member of two organizations, with roles
    assert [event_type for event_type, _ in published(tenant, start)] == ["user.deleted"]
    assert tenant.organizations_of(demo.SHARED_USER_ID) == []


def test_adding_a_user_to_organizations_is_one_event_per_membership(tenant):
    start = tenant.events.latest_offset()
    tenant.add_user("auth0|zed", "zed@example.com", organizations=["org_acme", "org_globex"])
    assert [(t, o["organization"]["id"]) for t, o in published(tenant, start)] == [
        ("organization.member.added", "org_acme"),
        ("organization.member.added", "org_globex"),
    ]


def test_log_times_come_from_its_clock_and_a_timestamp_finds_the_first_at_or_after_it():
    log = EventLog(lambda: "tenant.example.com")
    base = datetime(2030, 1, 1, tzinfo=UTC)
    events = []
    for seconds in (0, 1.5, 2):
        log.now = lambda seconds=seconds: base + timedelta(seconds=seconds)
        events.append(log.record("user.updated", {"user_id": "u"}))
    assert events[1].cloud_event["time"] == "2030-01-01T00:00:01.500Z"
    assert log.after(log.offset_before(base + timedelta(seconds=1))) == events[1:]
    assert log.after(log.offset_before(base - timedelta(days=1))) == events
    assert log.offset_before(base + timedelta(days=1)) == log.latest_offset()


# --- the Events API: GET /api/v2/events ------------------------------------------------------


@pytest.fixture
def events_token(tenant: Tenant, server: TenantServer) -> str:  # noqa: F811
    """A Management API token with the scope the Events API requires."""
    return tenant.issue_token(demo.MGMT_CLIENT_ID, tenant.management_audience, scope="read:events")


@pytest.fixture
def subscribe(server: TenantServer, http: requests.Session, events_token: str):  # noqa: F811
    """``subscribe(headers, token=..., **query)``: open the stream; once it returns (the
    answer's headers received), the stream's start is fixed."""
    opened = []

    def open_stream(
        headers: dict[str, str] | None = None, token: str = events_token, **query: Any
    ) -> requests.Response:
        response = http.get(
            server.url + EVENTS,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
            params=query or None,
            stream=True,
            timeout=WAIT,
        )
        opened.append(response)
        return response

    yield open_stream
    for response in opened:
        response.close()


def messages(response: requests.Response) -> Iterator[dict[str, str]]:
    """The stream's messages as they come, each as its fields (a ``:`` comment as
    ``comment``), until the server ends it."""
    fields: dict[str, str] = {}
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith(":"):
            fields["comment"] = line[1:]
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            yield fields
            fields = {}


def next_events(stream: Iterator[dict[str, str]], count: int) -> list[dict[str, str]]:
    """The next ``count`` event messages, skipping the preamble and heartbeats."""
    found = []
    for message in stream:
        if message.get("event", "offset-only") != "offset-only":
            found.append(message)
            if len(found) == count:
                break
    return found


def test_a_stream_opens_then_sends_each_new_event_with_its_offset(tenant, subscribe):
    tenant.event_settings.retry_ms = 2500
    response = subscribe()
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    stream = messages(response)
    assert next(stream) == {"comment": "connected"}
    assert next(stream) == {"retry": "2500"}
    updated = tenant.events.record("user.updated", {"user_id": ALICE})  # after the stream opened
    [message] = next_events(stream, 1)
    assert message["id"] == updated.offset and message["event"] == "user.updated"
    assert json.loads(message["data"]) == updated.cloud_event
    assert tenant.counts == {"GET /api/v2/events": 1}
    assert tenant.requests[-1]["group"] == "management"


def test_every_change_through_the_management_api_is_one_event(
    tenant,
    server,  # noqa: F811
    http,  # noqa: F811
    subscribe,
):
    stream = messages(subscribe())
    start = tenant.events.latest_offset()
    token = tenant.issue_token(demo.MGMT_CLIENT_ID, tenant.management_audience)
    acme = f"{server.url}/api/v2/organizations/org_acme"
    olga_roles = f"{acme}/members/auth0%7Corphan-olga/roles"
    writes = [
        ("POST", f"{acme}/members", {"members": [demo.ORPHAN_USER_ID, ALICE]}),  # Alice is one
        ("POST", olga_roles, {"roles": ["rol_admin", "rol_admin"]}),
        ("DELETE", olga_roles, {"roles": ["rol_admin", "rol_viewer"]}),  # holds only the one
        ("DELETE", f"{acme}/members", {"members": [demo.ORPHAN_USER_ID, "auth0|nobody"]}),
        ("PATCH", f"{server.url}/api/v2/users/auth0%7Calice-acme", {"name": "Alice A."}),
        ("DELETE", f"{server.url}/api/v2/users/auth0%7Calice-acme", None),
    ]
    for method, url, body in writes:
        answer = http.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code in (200, 204)
    expected = [
        "organization.member.added",
        "organization.member.role.assigned",
        "organization.member.role.deleted",
        "organization.member.deleted",
        "user.updated",
        "user.deleted",
    ]
    assert [event_type for event_type, _ in published(tenant, start)] == expected
    streamed = next_events(stream, len(expected))
    assert [(m["id"], m["event"]) for m in streamed] == [
        (e.offset, e.cloud_event["type"]) for e in tenant.events.after(start)
    ]


def test_event_type_filters_and_repeats(tenant, subscribe):
    stream = messages(subscribe(event_type=["user.deleted", "organization.member.added"]))
    tenant.update_user(ALICE, {"name": "Alice A."})
    tenant.add_member("org_globex", ALICE)
    tenant.delete_user(ALICE)
    tenant.events.record("organization.member.added", {"marker": True})
    assert [m["event"] for m in next_events(stream, 3)] == [
        "organization.member.added",
        "user.deleted",
        "organization.member.added",
    ]


def test_an_unknown_event_type_is_400(subscribe):
    response = subscribe(event_type="user.renamed")
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_query_string"


def test_heartbeats_carry_the_offset_reached_filtered_events_included(tenant, subscribe):
    tenant.event_settings.heartbeat_seconds = 0.02
    stream = messages(subscribe(event_type="user.deleted"))
    before = tenant.events.latest_offset()
    heartbeat = next(m for m in stream if m.get("event") == "offset-only")
    assert heartbeat == {"id": before, "event": "offset-only", "data": f'{{"offset":"{before}"}}'}
    tenant.update_user(ALICE, {"name": "Alice A."})  # not a user.deleted: filtered out
    filtered = tenant.events.latest_offset()
    heartbeat = next(m for m in stream if m.get("id") == filtered)
    assert heartbeat["event"] == "offset-only"
    assert json.loads(heartbeat["data"]) == {"offset": filtered}


def test_from_resumes_after_an_offset(tenant, subscribe):
    first, second, third = (tenant.events.record("user.updated", {"n": n}) for n in range(3))
    stream = messages(subscribe(**{"from": first.offset}))
    assert [m["id"] for m in next_events(stream, 2)] == [second.offset, third.offset]


def test_last_event_id_takes_precedence_over_from(tenant, subscribe):
    first, second, third = (tenant.events.record("user.updated", {"n": n}) for n in range(3))
    stream = messages(subscribe({"Last-Event-ID": second.offset}, **{"from": first.offset}))
    fourth = tenant.events.record("user.updated", {"n": 3})
    assert [m["id"] for m in next_events(stream, 2)] == [third.offset, fourth.offset]


def test_from_timestamp_starts_at_the_first_kept_event_at_or_after_it(tenant, subscribe):
    base = datetime(2030, 1, 1, tzinfo=UTC)
    recorded = []
    for seconds in (0, 1.5, 2):
        tenant.events.now = lambda seconds=seconds: base + timedelta(seconds=seconds)
        recorded.append(tenant.events.record("user.updated", {"n": seconds}))
    stream = messages(subscribe(from_timestamp="2030-01-01T00:00:01Z"))
    assert [m["id"] for m in next_events(stream, 2)] == [e.offset for e in recorded[1:]]


def test_a_timestamp_that_is_not_rfc_3339_is_400(subscribe):
    for value in ("yesterday", "2030-01-01T00:00:00"):  # the second lacks its offset
        response = subscribe(from_timestamp=value)
        assert response.status_code == 400
        assert response.json()["errorCode"] == "invalid_query_string"


def test_without_an_offset_the_stream_starts_with_the_next_event(tenant, subscribe):
    tenant.events.record("user.updated", {"n": "old"})
    stream = messages(subscribe())
    new = tenant.events.record("user.updated", {"n": "new"})
    assert [m["id"] for m in next_events(stream, 1)] == [new.offset]


def test_the_server_ends_a_stream_after_stream_seconds(tenant, subscribe):
    tenant.event_settings.stream_seconds = 0.05
    tenant.event_settings.heartbeat_seconds = 60
    assert list(messages(subscribe())) == [{"comment": "connected"}, {"retry": "1000"}]


def test_cutting_event_streams_ends_every_open_one_and_clients_resume(tenant, subscribe):
    responses = [subscribe(), subscribe()]
    streams = [messages(response) for response in responses]
    for stream in streams:
        assert [next(stream), next(stream)] == [{"comment": "connected"}, {"retry": "1000"}]
    reached = tenant.events.latest_offset()
    tenant.cut_event_streams()
    for stream in streams:
        assert list(stream) == []  # the stream ended
    missed = tenant.events.record("user.updated", {"n": "while cut"})
    resumed = messages(subscribe({"Last-Event-ID": reached}))
    assert [m["id"] for m in next_events(resumed, 1)] == [missed.offset]


def test_an_offset_no_longer_kept_is_410(tenant, subscribe):
    old = tenant.events.record("user.updated", {"n": 0})
    for n in range(3):
        tenant.events.record("user.updated", {"n": n + 1})
    tenant.events.retained = 2
    response = subscribe(**{"from": old.offset})
    assert response.status_code == 410
    assert response.json() == {
        "statusCode": 410,
        "error": "Gone",
        "message": "The events after this offset are no longer kept.",
        "errorCode": "cursor_expired",
    }


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({}, {"from": "not-an-offset"}),
        ({}, {"from": "ffffffffffffffff"}),  # ahead of the newest
        ({}, {"from": ""}),
        ({"Last-Event-ID": "not-an-offset"}, {}),
        ({"Last-Event-ID": "ffffffffffffffff"}, {"from": "0000000000000001"}),  # the header wins
    ],
)
def test_an_offset_that_is_not_the_tenants_is_400(subscribe, headers, query):
    response = subscribe(headers, **query)
    assert response.status_code == 400
    assert response.json() == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "The offset is not one of this tenant's events.",
        "errorCode": "invalid_cursor",
    }


def test_the_stream_requires_read_events(tenant, subscribe):
    audience = tenant.management_audience
    lacking = tenant.issue_token(demo.MGMT_CLIENT_ID, audience, scope="read:users read:logs")
    response = subscribe(token=lacking)
    assert response.status_code == 403
    assert response.json() == {
        "statusCode": 403,
        "error": "Forbidden",
        "message": "Insufficient scope, expected any of: read:events",
        "errorCode": "insufficient_scope",
    }
    assert subscribe(token="not-a-token").status_code == 401


def test_faults_and_rate_limits_apply_to_the_stream(tenant, subscribe):
    tenant.inject_fault("GET /api/v2/events", status=503)
    assert subscribe().status_code == 503
    tenant.set_rate_limit(1, burst=1)
    assert subscribe().status_code == 200
    assert subscribe().status_code == 429
    assert tenant.counts == {"GET /api/v2/events": 3}


def test_stopping_the_server_ends_open_streams():
    tenant = demo_tenant()
    with requests.Session() as session, TenantServer(tenant) as running:
        token = tenant.issue_token(
            demo.MGMT_CLIENT_ID, tenant.management_audience, scope="read:events"
        )
        response = session.get(
            running.url + EVENTS,
            headers={"Authorization": f"Bearer {token}"},
            verify=running.ca_bundle,
            stream=True,
            timeout=WAIT,
        )
        assert next(messages(response)) == {"comment": "connected"}
        stopping = threading.Thread(target=running.stop)
        stopping.start()
        stopping.join(WAIT)
        assert not stopping.is_alive(), "an open stream held the server's shutdown"


# --- Event Streams: webhooks -----------------------------------------------------------------

BEARER = {"method": "bearer", "token": "s3cret"}


class Receiver(ThreadingHTTPServer):
    """A webhook on loopback: keeps each POST (headers, JSON body) and answers the statuses
    queued in ``answers`` (then 204)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Webhook)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.answers: deque[int] = deque()
        self.posts: list[tuple[dict[str, str], dict]] = []
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://localhost:{self.server_port}/auth0-events"
        serving = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)
        serving.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Webhook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.posts.append((dict(self.headers), body))
        self.send_response(self.server.answers.popleft() if self.server.answers else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    webhook = Receiver()
    yield webhook
    webhook.close()


@pytest.fixture
def push(tenant, receiver):
    """``push(authorization, event_types, **settings)``: an Event Stream from the tenant to the
    receiver, its settings set before any event; stopped after the test."""
    streams = []

    def add(authorization=BEARER, event_types=None, **settings):
        stream = tenant.add_event_stream(receiver.url, authorization, event_types=event_types)
        for name, value in settings.items():
            setattr(stream, name, value)
        streams.append(stream)
        return stream

    yield add
    for stream in streams:
        stream.stop()


def delivered_ids(receiver: Receiver) -> list[str]:
    return [body["id"] for _, body in receiver.posts]


@pytest.mark.parametrize(
    ("authorization", "header"),
    [
        (BEARER, "Bearer s3cret"),
        (
            {"method": "basic", "username": "auth0", "password": "pa:ss"},
            "Basic " + base64.b64encode(b"auth0:pa:ss").decode(),
        ),
    ],
    ids=["bearer", "basic"],
)
def test_a_webhook_gets_each_new_event_as_one_cloud_event(
    tenant, receiver, push, authorization, header
):
    tenant.events.record("user.updated", {"n": "before the stream"})  # not delivered
    stream = push(authorization)
    recorded = [tenant.events.record("user.updated", {"n": n}) for n in range(2)]
    assert stream.wait_until(lambda: stream.delivered == 2, WAIT)
    assert [body for _, body in receiver.posts] == [event.cloud_event for event in recorded]
    for headers, _ in receiver.posts:
        assert headers["Authorization"] == header
        assert headers["Content-Type"] == "application/json"
    assert (stream.attempts, stream.failures) == (2, 0)


def test_a_webhook_gets_only_its_event_types(tenant, receiver, push):
    stream = push(event_types=["user.deleted"])
    tenant.update_user(ALICE, {"name": "Alice A."})
    tenant.delete_user(ALICE)
    assert stream.wait_until(lambda: stream.delivered == 1, WAIT)
    assert [body["type"] for _, body in receiver.posts] == ["user.deleted"]


def test_a_failed_delivery_is_retried_until_2xx(tenant, receiver, push):
    receiver.answers.extend([500, 503])
    stream = push(retry_seconds=0.01)
    event = tenant.events.record("user.updated", {"n": 0})
    assert stream.wait_until(lambda: stream.delivered == 1, WAIT)
    assert (stream.attempts, stream.failures) == (3, 2)
    assert delivered_ids(receiver) == [event.cloud_event["id"]] * 3


def test_an_unreachable_webhook_is_retried_and_stop_ends_the_retries(tenant, receiver):
    receiver.close()  # nothing listens on its port any more
    stream = tenant.add_event_stream(receiver.url, BEARER)
    stream.retry_seconds = 60  # stop() must not wait for the backoff
    tenant.events.record("user.updated", {"n": 0})
    assert stream.wait_until(lambda: stream.failures >= 1, WAIT)
    stream.stop()
    assert not stream.running and stream.delivered == 0


def test_duplicate_every_delivers_every_nth_event_twice(tenant, receiver, push):
    stream = push(duplicate_every=2)
    ids = [tenant.events.record("user.updated", {"n": n}).cloud_event["id"] for n in range(4)]
    assert stream.wait_until(lambda: stream.delivered == 6, WAIT)
    assert delivered_ids(receiver) == [ids[0], ids[1], ids[1], ids[2], ids[3], ids[3]]


def test_shuffle_window_delivers_a_batch_in_random_order(tenant, receiver, push):
    stream = push(shuffle_window=4, random=random.Random(3))
    ids = [tenant.events.record("user.updated", {"n": n}).cloud_event["id"] for n in range(4)]
    assert stream.wait_until(lambda: stream.delivered == 4, WAIT)
    shuffled = list(ids)
    random.Random(3).shuffle(shuffled)
    assert delivered_ids(receiver) == shuffled != ids


def test_a_webhook_authorization_needs_a_known_method_and_its_fields(tenant):
    for authorization in ({"method": "bearer"}, {"method": "api-key", "token": "x"}):
        with pytest.raises(ValueError, match="webhook_authorization"):
            tenant.add_event_stream("https://localhost/", authorization)


def tls_receiver(directory) -> tuple[Receiver, str]:
    """A receiver over HTTPS, and the CA bundle its certificate is verified with."""
    certificates = generate_certificates(directory)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificates.cert, certificates.key)
    return Receiver(tls), str(certificates.ca_bundle)


def test_the_cli_pushes_events_to_an_https_webhook_it_verifies(tenant, tmp_path):
    webhook, ca_bundle = tls_receiver(tmp_path)
    flags = ["--event-stream-url", webhook.url, "--event-stream-token", "t0ken"]
    args = parse_args(["--cert-dir", str(tmp_path), *flags, "--event-stream-ca", ca_bundle])
    try:
        with event_stream(tenant, args) as stream:
            event = tenant.events.record("user.updated", {"n": 0})
            assert stream.wait_until(lambda: stream.delivered == 1, WAIT)
        [(headers, body)] = webhook.posts
        assert headers["Authorization"] == "Bearer t0ken" and body == event.cloud_event
    finally:
        webhook.close()


def test_a_webhook_whose_certificate_is_not_trusted_gets_nothing(tenant, tmp_path):
    webhook, _ = tls_receiver(tmp_path)
    try:
        with tenant.add_event_stream(webhook.url, BEARER) as stream:  # the system's CAs
            tenant.events.record("user.updated", {"n": 0})
            assert stream.wait_until(lambda: stream.failures >= 1, WAIT)
        assert stream.delivered == 0 and webhook.posts == []
    finally:
        webhook.close()


def test_the_cli_wants_a_token_for_the_event_stream(tmp_path):
    with pytest.raises(SystemExit):
        parse_args(["--cert-dir", str(tmp_path), "--event-stream-url", "https://localhost/"])
    assert not parse_args(["--cert-dir", str(tmp_path)]).event_stream_url


def test_streams_and_the_log_have_their_documented_defaults(tenant):
    assert tenant.event_settings == StreamSettings(1000, 5.0, 300.0)
    assert tenant.events.retained == 10_000
