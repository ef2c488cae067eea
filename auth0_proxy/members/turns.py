"""Cold member lists: a client that must wait for the budget gets a turn whose time is real, and
the organizations of the clients map are listed ahead of demand (prewarming).

A turn reserves an organization's listing at the back of the budget's queue: its calls are taken
from the shared buckets now, however far below zero that leaves them, so every worker and host
queues behind it, and the time it names is when the budget reaches it. The client is told that
time (``Retry-After``); at it, whoever comes first lists the organization with the calls already
paid (the process that took the turn, or a client coming back, who otherwise waits for that
listing like any coalesced reader). One turn per organization at a time, kept in the store.

Prewarming: one process of the deployment at a time (a lease in the store) takes turns for the
organizations of the clients map that have no list cached, those never listed first, whenever
the budget's queue is shorter than ``PREWARM_QUEUE_SECONDS``: idle budget warms them, and a
client asking meanwhile queues behind a few seconds of them, not behind all.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from auth0_proxy.caching.cache import SharedCache
from auth0_proxy.core import clock
from auth0_proxy.core.auth0_api import MEMBERS, api_path, endpoint_group
from auth0_proxy.spending.budget import Governor

log = logging.getLogger("auth0_proxy.turns")

MEMBERS_GROUP = endpoint_group(api_path(MEMBERS, id="org_any"))
TURN_KEY = "turn:{org_id}"
# A turn is kept this long past its time: a listing under way, a client coming back late.
TURN_GRACE_SECONDS = 60
# Prewarming takes a turn only while the budget's queue is shorter than this.
PREWARM_QUEUE_SECONDS = 5
PREWARM_IDLE_SECONDS = 30  # between looks, once every organization's list is cached
LEASE_SECONDS = 30
# A client comes back this long after its turn's time: its listing has begun by then.
RETRY_MARGIN_SECONDS = 1


@dataclass(frozen=True)
class Turn:
    """An organization's listing, paid for ``calls`` pages, due at ``due`` (wall clock)."""

    due: float
    calls: int


class Turns:
    """The turns of cold lists, in ``cache``'s store, paid from ``governor``'s budget.

    ``list_now(org_id)`` lists an organization in its turn (and stores the list);
    ``known_pages(org_id)`` is the page count of its last listing, if any is remembered.
    """

    def __init__(
        self,
        cache: SharedCache,
        governor: Governor,
        list_now: Callable[[str], None],
        known_pages: Callable[[str], int | None],
    ):
        self.cache = cache
        self.store = cache.store
        self.governor = governor
        self.list_now = list_now
        self.known_pages = known_pages
        self._pages_seen: deque[int] = deque(maxlen=64)

    def take(self, org_id: str) -> Turn | None:
        """The organization's turn: the one already taken, else a new one at the back of the
        queue. None while the store fails (a turn no other process could see is no turn)."""
        key = TURN_KEY.format(org_id=org_id)
        turn = self.store.get(key)
        if turn is not None or self.store.failing:
            return turn
        with self.cache.exclusive(key):
            turn = self.store.get(key)
            if turn is None:
                calls = self._expected_pages(org_id)
                wait = self.governor.reserve(MEMBERS_GROUP, calls)
                turn = Turn(clock.now() + wait, calls)
                self.store.set(key, turn, wait + TURN_GRACE_SECONDS)
                self._list_when_due(org_id, turn)
        return turn

    def claim(self, org_id: str) -> Turn | None:
        """The organization's turn, if it is due and nobody claimed it yet: its paid calls are
        the claimer's to list with."""
        turn = self.store.get(TURN_KEY.format(org_id=org_id))
        if turn is None or turn.due > clock.now():
            return None
        claim = f"{TURN_KEY.format(org_id=org_id)}:{turn.due!r}:claimed"
        return turn if self.store.add(claim, 1, TURN_GRACE_SECONDS) else None

    def pending(self, org_id: str) -> bool:
        return self.store.get(TURN_KEY.format(org_id=org_id)) is not None

    def retry_after(self, turn: Turn) -> int:
        """Seconds a client should wait for ``turn``: its time, and the margin."""
        return max(1, math.ceil(turn.due - clock.now()) + RETRY_MARGIN_SECONDS)

    def _expected_pages(self, org_id: str) -> int:
        """The pages to reserve: the organization's last count, else the median of the lists
        this process listed in turns (at the very first, one). A listing's pages beyond those
        reserved go at the head of the queue (``Prepaid.turn``)."""
        known = self.known_pages(org_id)
        if known:
            return known
        return round(statistics.median(self._pages_seen)) if self._pages_seen else 1

    def _list_when_due(self, org_id: str, turn: Turn) -> None:
        wait = max(0.0, turn.due - clock.now())
        timer = threading.Timer(wait, self._list_in_turn, args=(org_id,))
        timer.daemon = True
        timer.start()

    def _list_in_turn(self, org_id: str) -> None:
        try:
            self.list_now(org_id)
        except Exception as error:  # the client coming back lists it, or takes a new turn
            log.warning("listing %s in its turn failed (%s)", org_id, type(error).__name__)
        pages = self.known_pages(org_id)
        if pages:
            self._pages_seen.append(pages)


class Prewarm:
    """Takes turns for the organizations ``orgs()`` names (the clients map's, which Auth0's
    grants may change) whose lists are not cached (``cached(org_id)``), in one process of the
    deployment at a time, while the budget's queue is short."""

    def __init__(
        self, turns: Turns, orgs: Callable[[], Iterable[str]], cached: Callable[[str], bool]
    ):
        self.turns = turns
        self.orgs = orgs
        self.cached = cached
        self._owner = uuid.uuid4().hex
        self._woken = threading.Event()
        self.stopped = False

    def start(self) -> None:
        """Prewarm in a thread that ends with this object (the app's)."""
        alive = weakref.ref(self)
        woken = self._woken

        def run() -> None:
            while (prewarm := alive()) is not None and not prewarm.stopped:
                woken.clear()  # a wake from now on is for the step after this one
                pause = prewarm.step()
                del prewarm
                woken.wait(pause)

        threading.Thread(target=run, name="prewarm", daemon=True).start()

    def wake(self) -> None:
        """Look now: the organizations may have changed (a new clients map)."""
        self._woken.set()

    def stop(self) -> None:
        """No more steps (the worker exits)."""
        self.stopped = True
        self._woken.set()

    def step(self) -> float:
        """Take the turns the queue has room for, if this process holds the lease; the seconds
        until the next step."""
        if not self._hold_lease():
            return LEASE_SECONDS / 3
        for org_id in self._cold():
            if self.turns.governor.queued_seconds(MEMBERS_GROUP) > PREWARM_QUEUE_SECONDS:
                return 1.0
            self.turns.take(org_id)
        return PREWARM_IDLE_SECONDS

    def _cold(self) -> Iterator[str]:
        """The organizations with no list cached and no turn, those never listed first; found
        as they are asked for (a step ends when the queue is full)."""
        listed_before = []
        for org_id in dict.fromkeys(self.orgs()):
            if self.cached(org_id) or self.turns.pending(org_id):
                continue
            if self.turns.known_pages(org_id) is None:
                yield org_id
            else:
                listed_before.append(org_id)
        yield from listed_before

    def _hold_lease(self) -> bool:
        key = "prewarm:lease"
        if self.turns.store.add(key, self._owner, LEASE_SECONDS):
            return True
        if self.turns.store.get(key) == self._owner:
            self.turns.store.set(key, self._owner, LEASE_SECONDS)
            return True
        return False
