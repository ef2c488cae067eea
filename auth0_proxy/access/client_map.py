"""Which organizations each client may act for, as every worker sees it: the config's ``clients``
map and, with ``client_grants.enabled``, Auth0's own authorizations (access/grants.py). A client
the config names is decided by the config alone: its entry wins over Auth0's.

Auth0's map is read by one worker of the deployment at a time (a lease in the shared store), a
read beginning every ``refresh_seconds`` (``RETRY_SECONDS`` after one that failed), at the
budget's lowest rank, and kept in the store under a version. Every worker looks at that version
each second and keeps the map in memory, so a request reads a dict, not the store. A read that
fails keeps the last map whole: never a part of one, never none.

A client the map does not know, or whose token names an organization the map does not give it
(a customer authorized since), is looked up in Auth0 on its request: that client's grant and its
organizations, at most one such lookup per ``lookup_interval_seconds`` in the whole deployment,
however many unknown clients ask (while the store is out, one per interval times the processes
last counted, in each process). What a lookup finds serves until a newer read of the map, and
stands ``SETTLED_SECONDS`` for its client: one authorized for nothing cannot take every turn.

Revocation: a dissociation is in the first read of the map begun after it, within
``refresh_seconds`` (plus that read's own time), and every worker uses that map a second after
it is stored. A token issued before is refused from then on: each request is checked against the
map, not against the token's age. Not while reads fail, nor while the store is out (no worker
reads alone then): the map in use stays, and its age (a metric, and an alert) says how old it
is. The hosts' clocks are assumed in step (NTP): a lookup and a read are ordered by their times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from auth0_proxy.auth0.management import ManagementClient
from auth0_proxy.core import clock, metrics
from auth0_proxy.core.config import ClientGrantsSettings
from auth0_proxy.core.errors import APIError
from auth0_proxy.spending.budget import PAGE_WAIT_SECONDS, Rank, errand
from auth0_proxy.storage.store import Store

from .grants import ANY_ORGANIZATION, Authorization, covers, read_authorizations

log = logging.getLogger("auth0_proxy.client_map")

MAP_KEY = "client-grants:map"  # {"version", "clients": {client_id: [org_id, ...]}}
HEAD_KEY = "client-grants:head"  # {"version", "read_at", "clients"}: small, read every second
ATTEMPT_KEY = "client-grants:attempt"  # when the last read began, done or not
LEASE_KEY = "client-grants:reading"
LOOKED_UP_KEY = "client-grants:looked-up:{client_id}"  # {"orgs", "at"}
LOOKUP_TURN_KEY = "client-grants:lookup:{turn}"
KEEP_SECONDS = 30 * 86400  # the last good map outlives any Auth0 outage
# Renewed before each grant a read takes, whose call may wait PAGE_WAIT_SECONDS for the budget;
# a dead reader's lapses after this.
LEASE_SECONDS = 2 * PAGE_WAIT_SECONDS
SYNC_SECONDS = 1
RETRY_SECONDS = 30
# What a lookup found stands this long for its client, unless a read of the map supersedes it:
# a client Auth0 authorizes for nothing (or not for the organization its token names) takes
# one lookup turn a minute at most, however often it calls.
SETTLED_SECONDS = 60


class _LeaseLost(Exception):
    """Another worker reads the map now (this one's lease lapsed), or this one stops."""


@dataclass(frozen=True)
class Derived:
    """Auth0's map as one read of it found it; ``read_at``: when that read began."""

    clients: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    version: str = ""
    read_at: float | None = None


class ClientMap:
    """The organizations of each client: ``static`` (the config's), then Auth0's."""

    sync_seconds = SYNC_SECONDS

    def __init__(
        self,
        static: Mapping[str, tuple[str, ...]],
        store: Store,
        management: ManagementClient,
        *,
        audience: str,
        settings: ClientGrantsSettings,
    ):
        self.static = static
        self.store = store
        self.management = management
        self.audience = audience
        self.settings = settings
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._derived = Derived()
        self._looked_up: dict[str, tuple[tuple[str, ...], float]] = {}
        self._last_turn: float | None = None  # this process's last lookup turn
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[], None]] = []

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def read_at(self) -> float | None:
        """When the read of Auth0's map in use began (None: no map yet)."""
        return self._derived.read_at

    def allowed(self, client_id: str, org_id: str | None = None) -> tuple[str, ...]:
        """The organizations ``client_id`` may act for (``ANY_ORGANIZATION`` among them: any
        its token names); none for a client of neither map. With a token naming ``org_id``,
        a client of Auth0's map that it does not decide is looked up first.

        :raise APIError: the lookup failed (Auth0, or the budget: 429).
        """
        static = self.static.get(client_id)
        if static is not None or not self.enabled:
            return static or ()
        derived = self._derived.clients.get(client_id, ())
        if covers(derived, org_id):
            return derived
        return self._looked_up_organizations(client_id, org_id) or derived

    def organizations(self) -> list[str]:
        """Every organization a client may act for, the config's first (prewarmed: a trusted
        allow_any_organization names none)."""
        maps = (self.static, self._derived.clients)
        org_ids = (org_id for clients in maps for org_ids in clients.values() for org_id in org_ids)
        return [org_id for org_id in dict.fromkeys(org_ids) if org_id != ANY_ORGANIZATION]

    def knows(self, client_id: str) -> bool:
        """Whether either map names the client (a metric label of its own, when asked)."""
        return client_id in self.static or client_id in self._derived.clients

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (briefly: on the thread following the map) whenever the map in use
        changes."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Use the stored map now, then follow it (and read it when due) each second."""
        if not self.enabled:
            return
        self._follow()
        self._thread = threading.Thread(target=self._run, name="client grants", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sync(self) -> None:
        """Follow the stored map, and read Auth0's if a read is due and no one else reads."""
        head = self._follow()
        if self.read_at is not None:  # the map in use, even while the store is out
            metrics.CLIENT_GRANTS_AGE.set(max(0.0, clock.now() - self.read_at))
        if self._due(head["read_at"] if head else None):
            self.refresh()

    def refresh(self) -> None:
        """Read Auth0's map now, unless another worker is reading it."""
        if not self.store.add(LEASE_KEY, self.holder, LEASE_SECONDS) or self.store.failing:
            return  # a store that is out grants every add: no worker reads alone then
        try:
            self.store.set(ATTEMPT_KEY, clock.now(), KEEP_SECONDS)
            self._read()
        finally:
            self.store.delete_if(LEASE_KEY, self.holder)

    def _run(self) -> None:
        while not self._stopping.wait(self.sync_seconds):
            try:
                self.sync()
            except Exception as error:  # the next second tries again; the map in use stays
                log.warning("following the client grants map failed: %s", type(error).__name__)

    def _follow(self) -> dict | None:
        """Take the stored map if its version is new; the stored head."""
        head = self.store.get(HEAD_KEY)
        if not isinstance(head, dict):
            return None
        current = self._derived
        if current.read_at is not None and head["read_at"] < current.read_at:
            return head  # an older read than the one in use (its writes failed): never back
        if head["version"] != current.version:
            stored = self.store.get(MAP_KEY)
            if isinstance(stored, dict) and stored.get("version") == head["version"]:
                clients = {client: tuple(orgs) for client, orgs in stored["clients"].items()}
                self._use(Derived(clients, head["version"], head["read_at"]))
        elif head["read_at"] != current.read_at:
            self._use(Derived(current.clients, current.version, head["read_at"]))
        return head

    def _use(self, derived: Derived) -> None:
        changed = derived.version != self._derived.version
        self._derived = derived
        metrics.CLIENT_GRANTS_CLIENTS.set(len(derived.clients))
        for listener in self._listeners if changed else ():
            listener()
        with self._lock:  # what was looked up before this read is superseded by it
            self._looked_up = {
                client: found
                for client, found in self._looked_up.items()
                if found[1] >= (derived.read_at or 0)
            }

    def _due(self, read_at: float | None) -> bool:
        now = clock.now()
        attempted = self.store.get(ATTEMPT_KEY)
        if isinstance(attempted, int | float) and now < attempted + min(
            RETRY_SECONDS, self.settings.refresh_seconds
        ):
            return False
        return read_at is None or now >= read_at + self.settings.refresh_seconds

    def _read(self) -> None:
        """One read of Auth0's map, stored for every worker; on failure the last map stays."""
        started = clock.now()
        try:
            with self._errand(started):
                found = read_authorizations(
                    self.management,
                    self.audience,
                    trust_any=self.settings.trust_allow_any_organization,
                    patient=True,
                    progress=self._renew_lease,
                )
        except APIError as error:
            metrics.CLIENT_GRANTS_REFRESHES.labels("failed").inc()
            log.warning(
                "reading Auth0's client grants failed (the last map stays): %s", error.reason
            )
            return
        except _LeaseLost:
            log.info("stopped reading Auth0's client grants: another worker reads them")
            return
        stored = self.store.get(HEAD_KEY)
        if isinstance(stored, dict) and stored["read_at"] > started:
            return  # a read begun after this one ended first: it stands
        clients = effective(found)
        self._count_changes(self._derived.clients, clients)
        version = _version(clients)
        self.store.set(MAP_KEY, {"version": version, "clients": clients}, KEEP_SECONDS)
        head = {"version": version, "read_at": started, "clients": len(clients)}
        self.store.set(HEAD_KEY, head, KEEP_SECONDS)
        self._use(Derived(clients, version, started))
        metrics.CLIENT_GRANTS_REFRESHES.labels("ok").inc()
        refused = sum(1 for authorization in found if authorization.refused)
        log.info(
            "read Auth0's client grants in %.1f s: %d client(s) mapped, %d grant(s) mapping to"
            " nothing",
            clock.now() - started,
            len(clients),
            refused,
        )

    def _errand(self, now: float) -> AbstractContextManager[None]:
        """A read's rank at the budget: the lowest, ahead of need; as a stale answer clients
        are asking for when there is no map yet (Auth0's clients are all refused) or the one in
        use missed a read (clients' own demand must not put revocation off for ever)."""
        if self.read_at is not None and now - self.read_at < 2 * self.settings.refresh_seconds:
            return errand(Rank.AHEAD)
        return errand(Rank.STALE, urgency=1.0)

    def _renew_lease(self) -> None:
        """Keep the lease for the read under way.

        :raise _LeaseLost: it lapsed (another worker may read now), or this worker stops.
        """
        if self._stopping.is_set() or not self.store.extend_if(
            LEASE_KEY, self.holder, LEASE_SECONDS
        ):
            raise _LeaseLost

    def _count_changes(
        self, before: Mapping[str, tuple[str, ...]], after: Mapping[str, tuple[str, ...]]
    ) -> None:
        old, new = _pairs(before), _pairs(after)
        metrics.CLIENT_GRANTS_CHANGES.labels("added").inc(len(new - old))
        metrics.CLIENT_GRANTS_CHANGES.labels("removed").inc(len(old - new))

    def _looked_up_organizations(self, client_id: str, org_id: str | None) -> tuple[str, ...]:
        """What the last lookup of the client found, while it stands (``_stands``); else what
        a lookup finds now, if this interval's is still to be had. The store (another worker's
        lookup) is read only when this worker's own does not stand."""
        found = self._looked_up.get(client_id)
        if not self._stands(found, org_id):
            found = self._newer_stored_lookup(client_id, found)
        if self._stands(found, org_id):
            return found[0]
        if not self._take_lookup_turn():
            metrics.CLIENT_GRANTS_LOOKUPS.labels("limited").inc()
            return found[0] if found is not None and found[1] >= (self.read_at or 0.0) else ()
        return self._look_up(client_id)

    def _stands(self, found: tuple[tuple[str, ...], float] | None, org_id: str | None) -> bool:
        """Whether a lookup decides the token without another: made since the map in use was
        read, and naming the token's organization, or made less than ``SETTLED_SECONDS`` ago."""
        if found is None or found[1] < (self.read_at or 0.0):
            return False
        return covers(found[0], org_id) or clock.now() < found[1] + SETTLED_SECONDS

    def _newer_stored_lookup(
        self, client_id: str, found: tuple[tuple[str, ...], float] | None
    ) -> tuple[tuple[str, ...], float] | None:
        """The newer of ``found`` and the lookup of the client the store holds."""
        stored = self.store.get(LOOKED_UP_KEY.format(client_id=client_id))
        if isinstance(stored, dict) and (found is None or stored["at"] > found[1]):
            found = (tuple(stored["orgs"]), stored["at"])
            with self._lock:
                self._looked_up[client_id] = found
        return found

    def _take_lookup_turn(self) -> bool:
        """This interval's one lookup, if no process of the deployment has had it. While the
        store is out (it cannot say), each process takes one per interval times the processes
        last counted: the deployment's one, shared out."""
        interval = self.settings.lookup_interval_seconds
        failing = self.store.failing
        spacing = interval * (max(self.store.processes, 1) if failing else 1)
        now = clock.now()
        with self._lock:
            if self._last_turn is not None and now < self._last_turn + spacing:
                return False
            self._last_turn = now
        if failing:
            return True
        turn = int(now // interval)
        return self.store.add(LOOKUP_TURN_KEY.format(turn=turn), self.holder, 2 * interval)

    def _look_up(self, client_id: str) -> tuple[str, ...]:
        started = clock.now()
        try:
            found = read_authorizations(
                self.management,
                self.audience,
                trust_any=self.settings.trust_allow_any_organization,
                client_id=client_id,
            )
        except APIError:
            metrics.CLIENT_GRANTS_LOOKUPS.labels("failed").inc()
            raise
        org_ids = effective(found).get(client_id, ())
        ttl = 2 * self.settings.refresh_seconds  # a newer map supersedes it before then
        stored = {"orgs": list(org_ids), "at": started}
        self.store.set(LOOKED_UP_KEY.format(client_id=client_id), stored, ttl)
        with self._lock:
            self._looked_up[client_id] = (org_ids, started)
        metrics.CLIENT_GRANTS_LOOKUPS.labels("found" if org_ids else "not_found").inc()
        log.info(
            "looked up client %s in Auth0's client grants: %d organization(s)",
            client_id,
            len(org_ids),
        )
        return org_ids


def effective(found: list[Authorization]) -> dict[str, tuple[str, ...]]:
    """Each client with the organizations its grant authorizes (those with none left out)."""
    return {
        authorization.client_id: authorization.organizations
        for authorization in found
        if authorization.organizations
    }


def _pairs(clients: Mapping[str, tuple[str, ...]]) -> set[tuple[str, str]]:
    return {(client, org_id) for client, org_ids in clients.items() for org_id in org_ids}


def _version(clients: Mapping[str, tuple[str, ...]]) -> str:
    text = json.dumps(clients, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
