"""``GET /api/v2/events``: the tenant's events as Auth0's Events API serves them, a Server-Sent
Events stream (../shared/auth0-facts.md, "Events").

A stream opens with a ``:connected`` comment and ``retry: <ms>``; then each event is
``id: <offset>``, ``event: <type>``, ``data: <CloudEvent JSON>``; when nothing was sent for a
while, an ``offset-only`` heartbeat carries the offset reached (events filtered out by
``event_type`` advance it too), so a client always has an offset to store. The server ends the
stream after ``stream_seconds`` (Auth0 closes connections every few minutes), on
``Tenant.cut_event_streams()`` and when the server stops; the client reconnects with its last
offset.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Response

from .errors import cursor_expired, invalid_cursor, query_error
from .events import EventLog, OffsetGone, StreamSettings, UnknownOffset
from .routing import Call

if TYPE_CHECKING:
    from .tenant import Tenant

CONTENT_TYPE = "text/event-stream"


def subscribe_events(tenant: Tenant, call: Call) -> Response:
    """The stream, from the offset in ``Last-Event-ID`` (which wins) or ``from``; else from the
    first kept event at or after ``from_timestamp``; else from the next event on.

    :raise 400 invalid_cursor: not an offset of this tenant. :raise 410 cursor_expired: the
        events after it are no longer kept. :raise 400 invalid_query_string: a bad timestamp.
    """
    log = tenant.events
    source = EventSource(
        log,
        replace(tenant.event_settings),
        _start_offset(log, call),
        frozenset(call.query.get("event_type", ())),
    )
    response = Response(source.messages(), content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-cache"
    return response


class EventSource:
    """One client's stream: the offset it has reached, and when it must end."""

    def __init__(
        self, log: EventLog, settings: StreamSettings, offset: str, event_types: frozenset[str]
    ) -> None:
        self.log = log
        self.settings = settings
        self.offset = offset
        self.event_types = event_types  # empty: every type
        self._epoch = log.stream_epoch()  # noted now: a cut before the first read still counts

    def messages(self) -> Iterator[str]:
        """The stream's text, message by message, until it must end."""
        yield ":connected\n\n"
        yield f"retry: {self.settings.retry_ms}\n\n"
        ends_at = time.monotonic() + self.settings.stream_seconds
        heartbeat_at = time.monotonic() + self.settings.heartbeat_seconds
        while not self.log.stream_cut(self._epoch) and time.monotonic() < ends_at:
            try:
                sent = list(self._new_events())
            except OffsetGone:  # fell behind the log: reconnecting answers 410
                return
            yield from sent
            now = time.monotonic()
            if sent:
                heartbeat_at = now + self.settings.heartbeat_seconds
            elif now >= heartbeat_at:
                yield _message(self.offset, "offset-only", {"offset": self.offset})
                heartbeat_at = now + self.settings.heartbeat_seconds
            else:
                self._wait(min(ends_at, heartbeat_at) - now)

    def _new_events(self) -> Iterator[str]:
        """Messages for the events recorded since the offset reached, which moves past them."""
        for event in self.log.after(self.offset):
            self.offset = event.offset
            event_type = event.cloud_event["type"]
            if not self.event_types or event_type in self.event_types:
                yield _message(event.offset, event_type, event.cloud_event)

    def _wait(self, timeout: float) -> None:
        self.log.wait(self.offset, timeout, lambda: self.log.stream_cut(self._epoch))


def _start_offset(log: EventLog, call: Call) -> str:
    """The offset the stream resumes after, checked now so a refusal is the answer's status."""
    offset = call.headers.get("Last-Event-ID") or call.query.get("from")
    if offset is None:
        if "from_timestamp" in call.query:
            return log.offset_before(_timestamp(call.query["from_timestamp"]))
        return log.latest_offset()
    try:
        log.after(offset)
    except UnknownOffset:
        raise invalid_cursor() from None
    except OffsetGone:
        raise cursor_expired() from None
    return offset


def _timestamp(value: str) -> datetime:
    """:raise 400 invalid_query_string: not an RFC 3339 date-time with its offset."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise query_error(
            f"Query validation error: 'Invalid RFC 3339 date-time: {value}' "
            "on property from_timestamp."
        )
    return moment


def _message(offset: str, event_type: str, data: Any) -> str:
    """One SSE message; the JSON on one line, as a ``data:`` field must be."""
    payload = json.dumps(data, separators=(",", ":"))
    return f"id: {offset}\nevent: {event_type}\ndata: {payload}\n\n"
