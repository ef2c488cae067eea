"""The tenant's events, as Auth0 publishes them (Early Access): CloudEvents 1.0, each with an
opaque offset to resume from, kept for a bounded number of events.

Shape (../shared/auth0-facts.md, "Events"; the OpenAPI spec's ``EventStreamCloudEvent*``):
``specversion`` "1.0", ``type``, ``source`` ``urn:auth0:<domain>``, ``id`` ``evt_`` and 22
alphanumerics, ``time`` (RFC 3339), ``data.object``, ``a0tenant``, ``a0stream``. For membership
events ``data.object`` is ``{"organization": {"id", "name"}, "user": {"user_id"}}`` (with
``role`` for role events); for ``user.*`` it is the user's profile; for ``organization.deleted``
the organization.

Readers (the Events API's streams, sse.py; webhook deliveries, webhooks.py) wait on the log's
condition, which every recorded event notifies: nothing polls.
"""

from __future__ import annotations

import random
import string
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ALPHANUMERICS = string.ascii_letters + string.digits
STREAM_ID = "est_emulatedtenantstream0"
RETAINED = 10_000  # events kept; an offset older than the oldest kept is gone (410)


class OffsetGone(Exception):
    """The offset names an event no longer kept: start again from a full reconciliation."""


class UnknownOffset(Exception):
    """Not an offset this tenant gave."""


@dataclass(frozen=True)
class Event:
    offset: str
    cloud_event: dict[str, Any]


@dataclass
class StreamSettings:
    """How the Events API's streams behave; tests shorten them. Auth0 publishes none of these
    figures but "every few minutes" for closing a stream."""

    #: the ``retry:`` advice a stream opens with: how long a client waits to reconnect
    retry_ms: int = 1000
    #: an ``offset-only`` heartbeat is sent when no message was sent for this long
    heartbeat_seconds: float = 5.0
    #: each stream is ended after this long, as Auth0 closes them every few minutes
    stream_seconds: float = 300.0


class EventLog:
    """Events in the order they happened, each with an offset after the previous one's."""

    def __init__(self, domain: Callable[[], str], retained: int = RETAINED):
        self.domain = domain  # the tenant's, when the event happens
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)  # a test may fix it
        self._events: deque[Event] = deque(maxlen=retained)
        self._next = 1
        # re-entrant: a waiter's ``until`` may ask the log (``stream_cut``) while it waits
        self._changed = threading.Condition(threading.RLock())
        self._epoch = 0  # bumped by each cut: a stream ends when it changes
        self._streams_closed = False

    def record(self, event_type: str, data_object: dict[str, Any]) -> Event:
        """Publish an event of ``event_type`` about ``data_object``, happening now."""
        cloud_event = {
            "specversion": "1.0",
            "type": event_type,
            "source": f"urn:auth0:{self.domain()}",
            "id": "evt_" + "".join(random.choices(ALPHANUMERICS, k=22)),  # unique, not secret
            "time": self.now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": {"object": data_object},
            "a0tenant": self.domain().split(".", 1)[0],
            "a0stream": STREAM_ID,
        }
        with self._changed:
            event = Event(_offset(self._next), cloud_event)
            self._next += 1
            self._events.append(event)
            self._changed.notify_all()
        return event

    def after(self, offset: str | None) -> list[Event]:
        """The events after ``offset`` (none: after the latest, as a stream with no ``from``).

        :raise UnknownOffset: not an offset of this log.
        :raise OffsetGone: its events are no longer kept.
        """
        with self._changed:
            events = list(self._events)
            newest = self._next - 1
        if offset is None:
            return []
        position = _position(offset)
        if position > newest:
            raise UnknownOffset(offset)
        oldest = events[0] if events else None
        if oldest is not None and position < _position(oldest.offset) - 1:
            raise OffsetGone(offset)
        return [event for event in events if _position(event.offset) > position]

    def kept(self) -> list[Event]:
        """Every event still kept, oldest first."""
        with self._changed:
            return list(self._events)

    def latest_offset(self) -> str:
        with self._changed:
            return _offset(self._next - 1)

    def offset_before(self, moment: datetime) -> str:
        """The offset to resume from so that the first event is the first kept one whose
        ``time`` is at or after ``moment`` (none such: the latest offset, only new ones)."""
        with self._changed:
            events = list(self._events)
            newest = self._next - 1
        for event in events:
            if _time_of(event) >= moment:
                return _offset(_position(event.offset) - 1)
        return _offset(newest)

    @property
    def retained(self) -> int:
        """How many events are kept; lowering it drops the oldest at once (a test's 410)."""
        return self._events.maxlen or 0

    @retained.setter
    def retained(self, count: int) -> None:
        with self._changed:
            self._events = deque(self._events, maxlen=count)

    def wait(self, offset: str, timeout: float | None, until: Callable[[], bool]) -> None:
        """Block until an event after ``offset`` is recorded, ``until()`` holds (checked each
        time the log is woken: see ``wake``), or ``timeout`` seconds pass."""
        position = _position(offset)
        with self._changed:
            self._changed.wait_for(lambda: self._next - 1 > position or until(), timeout)

    def wake(self) -> None:
        """Make every waiter check its ``until`` again (a webhook stopping, a stream cut)."""
        with self._changed:
            self._changed.notify_all()

    def stream_epoch(self) -> int:
        """Noted by a stream when it opens: ``stream_cut`` tells it when to end."""
        with self._changed:
            return self._epoch

    def stream_cut(self, epoch: int) -> bool:
        """Whether a stream opened at ``epoch`` must end: cut since, or streams are closed."""
        with self._changed:
            return self._epoch != epoch or self._streams_closed

    def cut_streams(self) -> None:
        """End every open stream now, as a dropped connection would; new ones may open."""
        with self._changed:
            self._epoch += 1
            self._changed.notify_all()

    def close_streams(self) -> None:
        """End every open stream, and any opened until ``open_streams``: the server is stopping,
        and a stream holds a serving thread until it ends."""
        with self._changed:
            self._streams_closed = True
        self.cut_streams()

    def open_streams(self) -> None:
        with self._changed:
            self._streams_closed = False


def _offset(position: int) -> str:
    """Opaque to clients; here a fixed-width text that sorts as the events do."""
    return f"{position:016x}"


def _position(offset: str) -> int:
    """:raise UnknownOffset: not an offset's shape."""
    if len(offset) != 16 or any(c not in string.hexdigits for c in offset):
        raise UnknownOffset(offset)
    return int(offset, 16)


def _time_of(event: Event) -> datetime:
    return datetime.fromisoformat(event.cloud_event["time"])
