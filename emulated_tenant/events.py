"""The tenant's events, as Auth0 publishes them (Early Access): CloudEvents 1.0, each with an
opaque offset to resume from, kept for a bounded number of events.

Shape (../shared/auth0-facts.md, "Events"; the OpenAPI spec's ``EventStreamCloudEvent*``):
``specversion`` "1.0", ``type``, ``source`` ``urn:auth0:<domain>``, ``id`` ``evt_`` and 22
alphanumerics, ``time`` (RFC 3339), ``data.object``, ``a0tenant``, ``a0stream``. For membership
events ``data.object`` is ``{"organization": {"id", "name"}, "user": {"user_id"}}`` (with
``role`` for role events); for ``user.*`` it is the user's profile.
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


class EventLog:
    """Events in the order they happened, each with an offset after the previous one's."""

    def __init__(self, domain: Callable[[], str], retained: int = RETAINED):
        self.domain = domain  # the tenant's, when the event happens
        self._events: deque[Event] = deque(maxlen=retained)
        self._next = 1
        self._mutex = threading.Lock()

    def record(self, event_type: str, data_object: dict[str, Any]) -> Event:
        """Publish an event of ``event_type`` about ``data_object``, happening now."""
        cloud_event = {
            "specversion": "1.0",
            "type": event_type,
            "source": f"urn:auth0:{self.domain()}",
            "id": "evt_" + "".join(random.choices(ALPHANUMERICS, k=22)),  # unique, not secret
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": {"object": data_object},
            "a0tenant": self.domain().split(".", 1)[0],
            "a0stream": STREAM_ID,
        }
        with self._mutex:
            event = Event(_offset(self._next), cloud_event)
            self._next += 1
            self._events.append(event)
        return event

    def after(self, offset: str | None) -> list[Event]:
        """The events after ``offset`` (none: after the latest, as a stream with no ``from``).

        :raise UnknownOffset: not an offset of this log.
        :raise OffsetGone: its events are no longer kept.
        """
        with self._mutex:
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

    def latest_offset(self) -> str:
        with self._mutex:
            return _offset(self._next - 1)


def _offset(position: int) -> str:
    """Opaque to clients; here a fixed-width text that sorts as the events do."""
    return f"{position:016x}"


def _position(offset: str) -> int:
    """:raise UnknownOffset: not an offset's shape."""
    if len(offset) != 16 or any(c not in string.hexdigits for c in offset):
        raise UnknownOffset(offset)
    return int(offset, 16)
