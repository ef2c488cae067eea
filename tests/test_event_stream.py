"""The Events API reader (events.source events_api): the stream applied by one consumer per
deployment, resumed from the stored offset after a cut or a stop, a lost offset (410) leading
to a reconciliation, and the lease moving to another worker when its holder stops."""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask

from auth0_proxy import create_app, stop_background_work
from auth0_proxy.auth0.event_stream import messages
from auth0_proxy.core import metrics
from auth0_proxy.members.event_consumer import LEASE_KEY, OFFSET_KEY, EventConsumer
from scripts.proxy_server import ProxyServer
from tests.support import ids, proxy_config_for, user_path
from tests.test_metrics import parse, total

CAROL = "auth0|carol-acme"
EVENTS = "GET /api/v2/events"
WAIT_SECONDS = 20  # for a condition that holds within a second or two (a slow CI machine)


def eventually(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> bool:
    """Whether ``condition`` holds within ``timeout`` (checked every 50 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def make_worker(tenant_server, tmp_path, monkeypatch, app_log) -> Iterator[Callable[..., Flask]]:
    """``make_worker()``: an app reading the Events API, its consumer started; the workers made
    share one cache directory (one deployment), and each stops its consumer afterwards."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_server.ca_bundle)
    monkeypatch.setattr(EventConsumer, "lease_seconds", 2)  # a stopped holder's lease, sooner
    monkeypatch.setattr(EventConsumer, "poll_seconds", 0.1)
    apps: list[Flask] = []

    def make() -> Flask:
        config = proxy_config_for(
            tenant_server, cache_ttl_seconds=30, cache_dir=str(tmp_path / "shared")
        )
        config["events"] = {"source": "events_api"}
        app = create_app(config)
        logging.getLogger("auth0_proxy").addHandler(app_log)
        apps.append(app)
        return app

    yield make
    for app in apps:
        stop_background_work(app)


@pytest.fixture
def carol_back(tenant) -> Iterator[None]:
    yield
    tenant.add_member("org_acme", CAROL)


def consumer(app: Flask) -> EventConsumer:
    return app.extensions["event_consumer"]


def reading(app: Flask) -> bool:
    """Whether the app's consumer holds the lease and has the stream open."""
    stream = consumer(app)._response
    return consumer(app).held.is_set() and stream is not None and not stream.raw.closed


def listed(call, token: str, app: Flask) -> set[str]:
    return ids(call("/users", token, via=app))


def stream_queries(tenant) -> list[dict[str, list[str]]]:
    return [
        parse_qs(urlsplit(request["raw_uri"]).query)
        for request in tenant.requests
        if request["endpoint"] == EVENTS
    ]


def test_the_stream_is_read_by_one_worker_and_applied_for_all(
    make_worker, call, make_token, tenant, carol_back
):
    first, second = make_worker(), make_worker()
    token = make_token("edge-acme")
    assert CAROL in listed(call, token, second)
    assert eventually(lambda: reading(first) or reading(second))
    assert not (consumer(first).held.is_set() and consumer(second).held.is_set())
    reader = consumer(first) if reading(first) else consumer(second)
    samples = parse(metrics.render()[0].decode())
    assert total(samples, "auth0_proxy_events_lease_held", holder=reader.holder) == 1
    assert total(samples, "auth0_proxy_events_stream_connected") == 1

    tenant.remove_member("org_acme", CAROL)

    assert eventually(lambda: CAROL not in listed(call, token, second))
    assert CAROL not in listed(call, token, first)
    assert call(user_path(CAROL), token, via=first).status_code == 404
    queries = stream_queries(tenant)
    assert len(queries) == 1  # one reader for the deployment
    assert sorted(queries[0]["event_type"]) == sorted(
        [
            "organization.member.added",
            "organization.member.deleted",
            "organization.member.role.assigned",
            "organization.member.role.deleted",
            "organization.deleted",
            "user.updated",
            "user.deleted",
        ]
    )
    assert "from_timestamp" in queries[0]  # the first start: no offset stored yet


def test_a_cut_stream_resumes_from_the_stored_offset_losing_nothing(
    make_worker, call, make_token, tenant, carol_back
):
    app = make_worker()
    token = make_token("edge-acme")
    assert CAROL in listed(call, token, app)
    assert eventually(lambda: reading(app))
    store = app.extensions["store"]
    assert eventually(lambda: store.get(OFFSET_KEY) is not None)  # a heartbeat's, at least
    consumer(app).stop()  # the reader stops: changes happen meanwhile
    stored = store.get(OFFSET_KEY)
    tenant.remove_member("org_acme", CAROL)

    successor = make_worker()  # another worker (or a restart) resumes after it
    assert eventually(lambda: CAROL not in listed(call, token, successor))
    resumed = stream_queries(tenant)[-1]
    assert resumed["from"] == [stored]

    tenant.cut_event_streams()  # Auth0 closes the stream; a change right after it
    tenant.add_member("org_acme", CAROL)
    assert eventually(lambda: CAROL in listed(call, token, successor))


def test_a_lost_offset_starts_a_reconciliation_and_reading_from_the_newest_event(
    make_worker, call, make_token, tenant, app_log, carol_back
):
    app = make_worker()
    token = make_token("edge-acme")
    assert CAROL in listed(call, token, app)
    assert eventually(lambda: reading(app))
    consumer(app).stop()
    store = app.extensions["store"]
    stale = tenant.events.latest_offset()
    tenant.remove_member("org_acme", CAROL)  # its event is lost with the offset
    tenant.events.retained = 1
    tenant.add_member("org_acme", "auth0|frank-globex")
    tenant.remove_member("org_acme", "auth0|frank-globex")
    store.set(OFFSET_KEY, stale, 600)

    successor = make_worker()
    assert eventually(lambda: CAROL not in listed(call, token, successor))
    warnings = [r["message"] for r in app_log.records if r["level"] == "WARNING"]
    assert any("no longer keeps events after offset" in w for w in warnings)
    assert any("reconciling org_acme corrected 0 added, 1 removed" in w for w in warnings)
    assert eventually(lambda: "from" not in (stream_queries(tenant)[-1]))  # from the newest


def test_the_lease_moves_to_another_worker_when_its_holder_stops(
    make_worker, call, make_token, tenant, carol_back
):
    first = make_worker()
    assert eventually(lambda: reading(first))
    second = make_worker()
    store = first.extensions["store"]
    assert store.get(LEASE_KEY) == consumer(first).holder
    assert not consumer(second).held.is_set()

    dead = consumer(first)  # dies: stops renewing, without giving the lease up
    dead._stopping.set()
    dead._close_stream()

    assert eventually(lambda: reading(second))
    assert store.get(LEASE_KEY) == consumer(second).holder
    tenant.remove_member("org_acme", CAROL)
    token = make_token("edge-acme")
    assert eventually(lambda: CAROL not in listed(call, token, second))


def test_under_gunicorn_a_killed_readers_lease_goes_to_another_worker(
    tenant_server, tmp_path, make_token, tenant, carol_back
):
    """Two workers of one instance: one reads; SIGKILLed, another takes over (and gunicorn
    starts a new worker), and the change made meanwhile is applied, not lost."""
    config = proxy_config_for(tenant_server, cache_ttl_seconds=30)
    config["events"] = {"source": "events_api"}
    server = ProxyServer(
        config, ca_bundle=tenant_server.ca_bundle, workers=2, workdir=str(tmp_path)
    ).start()
    token = make_token("edge-acme")
    try:
        assert every_answer(server, token, lambda members: CAROL in members)
        holder = value_within(lambda: lease_holder_pid(server))
        tenant.remove_member("org_acme", CAROL)
        assert eventually(lambda: every_answer(server, token, lambda members: CAROL not in members))

        os.kill(holder, signal.SIGKILL)
        tenant.add_member("org_acme", CAROL)  # while no one reads

        assert eventually(lambda: every_answer(server, token, lambda members: CAROL in members))
        assert value_within(lambda: lease_holder_pid(server)) != holder
    finally:
        server.stop()


def every_answer(server: ProxyServer, token: str, holds: Callable[[set[str]], bool]) -> bool:
    """Whether ``holds`` of the members in each of a few answers (the kernel spreads them over
    the workers)."""
    for _ in range(4):
        try:
            answer = requests.get(
                f"{server.url}/users", headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
        except requests.ConnectionError:  # the killed worker's listening socket, reset
            return False
        if not holds({member["user_id"] for member in answer.json()}):
            return False
    return True


def lease_holder_pid(server: ProxyServer) -> int | None:
    """The worker holding the Events API lease, as the instance's metrics say."""
    text = requests.get(server.metrics_url, timeout=10).text
    held = re.search(r'auth0_proxy_events_lease_held\{holder="[^"]*:(\d+):\w+"\} 1\.0', text)
    return int(held.group(1)) if held else None


def value_within(read: Callable[[], int | None], timeout: float = WAIT_SECONDS) -> int:
    """What ``read()`` gives once it gives something, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while (value := read()) is None:
        assert time.monotonic() < deadline, "nothing within the timeout"
        time.sleep(0.05)
    return value


def test_sse_messages_are_read_as_the_specification_says():
    lines = [
        ":connected",
        "",
        "retry: 2500",
        "",
        "id: 0000000000000002",
        "event: user.updated",
        'data: {"offset": "0000000000000002", "event": {"id": "evt_1", "type": "user.updated"}}',
        "",
        "id: 0000000000000003",
        "event: offset-only",
        "data:{}",
        "",
        'data: {"id": "evt_2",',
        'data:  "type": "user.deleted"}',
        "",
    ]
    got = list(messages(lines))
    assert [(m.event, m.id, m.retry) for m in got] == [
        ("message", None, 2500),
        ("user.updated", "0000000000000002", None),
        ("offset-only", "0000000000000003", None),
        ("message", None, None),
    ]
    assert got[1].data == {"id": "evt_1", "type": "user.updated"}  # unwrapped, as SDKs send
    assert got[3].data == {"id": "evt_2", "type": "user.deleted"}  # over two data lines
