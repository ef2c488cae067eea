"""Event Streams to a webhook, as Auth0 pushes them (../shared/auth0-facts.md, "Events").

Each event recorded after the stream was added is POSTed as one CloudEvent (JSON) with the
configured ``Authorization``; an answer other than 2xx, or no answer, is retried with a growing
backoff until the event is delivered. Auth0 delivers at least once and in no promised order, so
a receiver must drop duplicates and cope with any order: ``duplicate_every`` and
``shuffle_window`` make both happen on demand; off by default, delivery is prompt and in order.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType

import requests

from .events import Event, EventLog, OffsetGone

#: ``webhook_authorization``: ``{"method": "bearer", "token"}`` or ``{"method": "basic",
#: "username", "password"}``
Authorization = Mapping[str, str]


class WebhookStream:
    """One Event Stream: a daemon thread delivering to ``endpoint`` until ``stop()``.

    The settings are attributes, read as each batch is delivered; the counters are of POSTs:
    ``attempts`` made, ``delivered`` (2xx, duplicates included) and ``failures`` (any other
    answer, or none).
    """

    def __init__(
        self,
        log: EventLog,
        endpoint: str,
        authorization: Authorization,
        *,
        event_types: Iterable[str] | None = None,
        verify: bool | str = True,
    ) -> None:
        """:raise ValueError: an authorization of an unknown method or missing its fields."""
        self.endpoint = endpoint
        self.event_types = frozenset(event_types or ())  # empty: every type
        #: deliver every Nth event twice (None: never)
        self.duplicate_every: int | None = None
        #: deliver events up to N at a time in random order (0: one by one, in order), waiting
        #: up to ``shuffle_linger_seconds`` for a batch to fill
        self.shuffle_window = 0
        self.shuffle_linger_seconds = 1.0
        self.random = random.Random()  # a test seeds it for a known order
        #: the first retry's backoff; each next one doubles, up to ``max_retry_seconds``
        self.retry_seconds = 1.0
        self.max_retry_seconds = 30.0
        self.timeout = 10.0  # seconds for the receiver to answer one POST
        self.attempts = self.delivered = self.failures = 0
        self._log = log
        self._offset = log.latest_offset()
        self._session = _session(authorization, verify)
        self._stopped = threading.Event()
        self._counted = threading.Condition()
        self._taken = 0
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End delivery: at once while waiting for events or a retry, else after the POST in
        flight (at most ``timeout``)."""
        self._stopped.set()
        self._log.wake()
        self._thread.join(self.timeout + 1)
        self._session.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` holds, checked after each POST (``lambda: stream.delivered
        >= 3``); whether it did within ``timeout``."""
        with self._counted:
            return self._counted.wait_for(condition, timeout)

    def __enter__(self) -> WebhookStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopped.is_set():
            for event in self._next_batch():
                self._deliver(event)
                self._taken += 1
                if self.duplicate_every and self._taken % self.duplicate_every == 0:
                    self._deliver(event)

    def _next_batch(self) -> list[Event]:
        """The events to deliver next (after waiting for some), in the order to deliver them."""
        self._log.wait(self._offset, None, self._stopped.is_set)
        window = self.shuffle_window
        batch = self._take(window or None)
        if window > 1:
            lingers_until = time.monotonic() + self.shuffle_linger_seconds
            while len(batch) < window and not self._stopped.is_set():
                left = lingers_until - time.monotonic()
                if left <= 0:
                    break
                self._log.wait(self._offset, left, self._stopped.is_set)
                batch += self._take(window - len(batch))
            self.random.shuffle(batch)
        return batch

    def _take(self, limit: int | None) -> list[Event]:
        """Up to ``limit`` events of the stream's types, the offset moved past them (and past
        those of other types)."""
        try:
            recorded = self._log.after(self._offset)
        except OffsetGone:  # the receiver was failing for longer than the log keeps events
            recorded = self._log.kept()
        taken: list[Event] = []
        for event in recorded:
            if limit is not None and len(taken) >= limit:
                break
            self._offset = event.offset
            if not self.event_types or event.cloud_event["type"] in self.event_types:
                taken.append(event)
        return taken

    def _deliver(self, event: Event) -> None:
        """POST the event until the receiver answers 2xx (or the stream stops)."""
        backoff = self.retry_seconds
        while not self._stopped.is_set() and not self._post(event):
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, self.max_retry_seconds)

    def _post(self, event: Event) -> bool:
        """One attempt; whether the receiver answered 2xx."""
        try:
            response = self._session.post(
                self.endpoint, data=json.dumps(event.cloud_event), timeout=self.timeout
            )
            response.close()
            delivered = 200 <= response.status_code < 300
        except requests.RequestException:
            delivered = False
        with self._counted:
            self.attempts += 1
            if delivered:
                self.delivered += 1
            else:
                self.failures += 1
            self._counted.notify_all()
        return delivered


def _session(authorization: Authorization, verify: bool | str) -> requests.Session:
    """A session sending the stream's headers and verifying as asked (no proxy or CA from the
    environment: the stream's own settings are the whole story)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = verify
    session.headers["Content-Type"] = "application/json"
    session.headers["Authorization"] = authorization_header(authorization)
    return session


def authorization_header(authorization: Authorization) -> str:
    """The ``Authorization`` header for a ``webhook_authorization``.

    :raise ValueError: an unknown method, or one missing its fields.
    """
    method = authorization.get("method")
    try:
        if method == "bearer":
            return f"Bearer {authorization['token']}"
        if method == "basic":
            pair = f"{authorization['username']}:{authorization['password']}"
            return "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    except KeyError as missing:
        raise ValueError(f"webhook_authorization {method!r} needs {missing}") from None
    raise ValueError(f"webhook_authorization method must be bearer or basic, not {method!r}")
