"""One reader of Auth0's Events API per deployment (``events.source`` ``events_api``).

Every worker of every instance runs a consumer, and exactly one reads: the holder of a lease in
the shared store, renewed while it reads. A holder that stops (killed, or its host gone) stops
renewing; another takes the lease within ``LEASE_SECONDS`` + ``POLL_SECONDS``. The offset of
the last event applied is kept in the store, so whoever reads next resumes where the last
stopped, losing nothing; an event that cannot be applied yet is read again from there. When
Auth0 no longer keeps that offset (410), reading starts again from the latest event while
every known organization's member list is read anew (a reconciliation), which corrects what
was missed in between.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import requests

from auth0_proxy.auth0.event_stream import Message, OffsetGone, messages, open_stream
from auth0_proxy.core import clock, metrics
from auth0_proxy.core.errors import APIError
from auth0_proxy.core.schemas import EVENT_TYPES
from auth0_proxy.spending.budget import BudgetExhausted, Rank, errand
from auth0_proxy.storage.store import Store

from .directory import Directory
from .events import Events, InvalidEvent, parse_event

log = logging.getLogger("auth0_proxy.event_consumer")

LEASE_KEY = "events:lease"
OFFSET_KEY = "events:offset"
OFFSET_SECONDS = 30 * 86400
LEASE_SECONDS = 6  # a holder that stops renewing is replaced after this
POLL_SECONDS = 1  # how often a consumer without the lease tries for it, and a holder renews
MAX_BACKOFF_SECONDS = 30  # after a failed connection, at most this long before the next


class EventConsumer:
    """Reads the stream while it holds the lease; applies each event through ``events``.

    Two threads: one keeps the lease (takes it when free, renews it while held, and closes the
    stream when it is lost), one reads the stream while the lease is held.
    """

    lease_seconds = LEASE_SECONDS
    poll_seconds = POLL_SECONDS

    def __init__(
        self,
        events: Events,
        store: Store,
        *,
        connect_timeout: float,
        first_start_window: float,
        holder: str | None = None,
    ):
        self.events = events
        self.directory: Directory = events.directory
        self.store = store
        self.connect_timeout = connect_timeout
        # A first start replays what happened while the lists cached now were read.
        self.first_start_window = first_start_window
        # Unique to this consumer: the host and process, for the lease metric's readers.
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.retry_seconds = 1.0  # Auth0's ``retry``, once it says
        self._from_newest = False  # after a lost offset: neither an offset nor a time
        self.held = threading.Event()
        self._stopping = threading.Event()
        self._response: requests.Response | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target, name in ((self._keep_lease, "events lease"), (self.run, "auth0 events")):
            self._threads.append(threading.Thread(target=target, name=name, daemon=True))
            self._threads[-1].start()

    def stop(self) -> None:
        """Stop reading and give the lease up, so another consumer takes over at once."""
        self._stopping.set()
        self._close_stream()
        for thread in self._threads:
            thread.join(timeout=5)
        self.store.delete_if(LEASE_KEY, self.holder)
        self.held.clear()
        metrics.EVENTS_LEASE_HELD.labels(self.holder).set(0)

    def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if not self.held.wait(self.poll_seconds):
                continue
            try:
                self.read_stream()
                failures = 0
            except Exception as error:  # logged, redacted; the loop reconnects
                if self._stopping.is_set():
                    return  # the stream was closed under the reader
                failures += 1
                reason = error.reason if isinstance(error, APIError) else type(error).__name__
                log.warning("the Events API stream failed: %s", reason)
            if not self._stopping.is_set():
                metrics.EVENTS_STREAM_RECONNECTS.inc()
                backoff = self.retry_seconds * 2 ** min(failures, 5)
                self._stopping.wait(min(backoff, MAX_BACKOFF_SECONDS))

    def _keep_lease(self) -> None:
        while not self._stopping.is_set():
            if self.hold_lease():
                self.held.set()
            elif self.held.is_set():
                log.warning("the Events API lease went to another consumer")
                self.held.clear()
                self._close_stream()
            self._stopping.wait(self.poll_seconds)

    def hold_lease(self) -> bool:
        """Take the lease if free, or renew it if this consumer holds it; whether it does."""
        held = self.store.extend_if(LEASE_KEY, self.holder, self.lease_seconds) or (
            self.store.add(LEASE_KEY, self.holder, self.lease_seconds)
            and not self.store.failing  # which grants every add
        )
        metrics.EVENTS_LEASE_HELD.labels(self.holder).set(1 if held else 0)
        return held

    def read_stream(self) -> None:
        """Read from the stored offset until the stream ends, the lease is lost or the
        consumer stops; an event not applied ends it (read again from its offset next time)."""
        offset = self.store.get(OFFSET_KEY)
        since = None if offset or self._from_newest else clock.now() - self.first_start_window
        try:
            self._response = open_stream(
                self.events.management,
                offset=offset,
                since=since,
                types=EVENT_TYPES,
                connect_timeout=self.connect_timeout,
            )
        except OffsetGone:
            log.warning("Auth0 no longer keeps events after offset %s: reconciling", offset)
            self.store.delete(OFFSET_KEY)  # from the newest event, while lists are read anew
            self._from_newest = True
            self._reconcile_in_background()
            return
        metrics.EVENTS_STREAM_CONNECTED.set(1)
        try:
            for message in messages(self._response.iter_lines(decode_unicode=True)):
                if self._stopping.is_set() or not self.held.is_set():
                    return
                self._take(message)
        finally:
            metrics.EVENTS_STREAM_CONNECTED.set(0)
            self._close_stream()

    def _take(self, message: Message) -> None:
        """Apply a message's event, then keep its offset (a heartbeat's too)."""
        if message.retry is not None:
            self.retry_seconds = message.retry / 1000
        if message.event in EVENT_TYPES and message.data is not None:
            try:
                event = parse_event(message.data)
            except InvalidEvent as invalid:  # never applicable: skipped, not retried forever
                log.warning("skipped an Events API message: %s", invalid.messages)
            else:
                self.events.apply(event)
        if message.id:
            self.store.set(OFFSET_KEY, message.id, OFFSET_SECONDS)

    def _close_stream(self) -> None:
        response = self._response
        if response is not None:
            response.close()

    def _reconcile_in_background(self) -> None:
        organizations = sorted(self.directory.known_organizations())
        threading.Thread(
            target=reconcile,
            args=(self.directory, organizations, self._stopping.is_set),
            name="reconcile",
            daemon=True,
        ).start()


def reconcile(
    directory: Directory, organizations: list[str], stopping: Callable[[], bool] = lambda: False
) -> None:
    """Read each organization's member list anew, as a refresh of a list past its freshness
    (events were lost: every list may be stale), waiting while the budget cannot afford it;
    what each corrects is logged (directory.reconciled)."""
    for org_id in organizations:
        while not stopping():
            try:
                with errand(Rank.STALE, urgency=1.0):
                    directory.reconcile(org_id)
                break
            except BudgetExhausted:
                time.sleep(1)
            except APIError as error:
                log.warning("reconciling %s failed: %s", org_id, error.reason)
                break
