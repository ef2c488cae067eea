"""Membership churn for `make simulate`, and how long each change takes to reach the proxies.

A thread makes ``per_minute`` changes in the tenant, spread evenly, each in a random simulated
organization: it removes a random member, then adds one (back, if removed long enough ago for
its removal to be probed to the end; else a new user), and so on.
Right before each change it takes each proxy's change-feed cursor for the organization; right
after, a probe asks every proxy, every ``PROBE_SECONDS``, for the organization's list and, once
it reflects the change, the /api/v2 member list, the user's profile and the change feed since
that cursor, until all four do (so a probe waiting on a list costs one request an interval).
A change's latency at a proxy is the time from the change to the first moment all four
reflected it there (the last of them); one not reflected within ``PROBE_LIMIT_SECONDS`` is
counted as such.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

import requests

from emulated_tenant import Tenant

PROBE_SECONDS = 0.5
PROBE_LIMIT_SECONDS = 120


@dataclass
class Change:
    kind: str  # "removal" or "addition"
    org: str
    user: str
    at: float = 0.0
    latencies: list[float | None] = field(default_factory=list)  # per proxy; None: never seen


class Churn:
    """Changes made in ``tenant``, probed at ``proxy_urls`` with each organization's token."""

    def __init__(
        self,
        tenant: Tenant,
        proxy_urls: Sequence[str],
        tokens: dict[str, str],
        per_minute: float,
        seed: int,
    ):
        self.tenant = tenant
        self.proxy_urls = proxy_urls
        self.tokens = tokens  # organization → a token of one of its clients
        self.period = 60 / per_minute
        self.rng = random.Random(seed)
        self.changes: list[Change] = []
        self._removed: list[tuple[float, str, str]] = []  # when, organization, user
        self._probes: list[threading.Thread] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, at: float, until: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(at, until), daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
        for probe in self._probes:
            probe.join()

    def _run(self, at: float, until: float) -> None:
        time.sleep(max(0.0, at - time.time()))
        while time.time() + PROBE_LIMIT_SECONDS / 6 < until:
            change = self._next_change()
            cursors = [self._cursor(url, change.org) for url in self.proxy_urls]
            change.at = time.time()
            if change.kind == "removal":
                self.tenant.remove_member(change.org, change.user)
            else:
                self.tenant.add_member(change.org, change.user)
            self.changes.append(change)
            probe = threading.Thread(target=self._probe, args=(change, cursors), daemon=True)
            probe.start()
            self._probes.append(probe)
            time.sleep(max(0.0, change.at + self.period - time.time()))

    def _next_change(self) -> Change:
        """A removal, then an addition: back into its organization of a user removed more than
        ``PROBE_LIMIT_SECONDS`` ago (whose removal was probed to its end), else a new user."""
        if len(self.changes) % 2:
            if self._removed and self._removed[0][0] < time.time() - PROBE_LIMIT_SECONDS:
                _, org, user = self._removed.pop(0)
            else:
                org, user = self.rng.choice(sorted(self.tokens)), f"auth0|churn-{len(self.changes)}"
                self.tenant.add_user(user, f"churn-{len(self.changes)}@churn.example")
            return Change("addition", org, user)
        org = self.rng.choice(sorted(self.tokens))
        user = self.rng.choice(self.tenant.member_ids(org))
        self._removed.append((time.time(), org, user))
        return Change("removal", org, user)

    def _cursor(self, url: str, org: str) -> str | None:
        answer = _get(url, "/users/changes", self.tokens[org])
        return answer.json()["cursor"] if answer is not None and answer.ok else None

    def _probe(self, change: Change, cursors: list[str | None]) -> None:
        pending = dict(enumerate(self.proxy_urls))
        change.latencies = [None] * len(self.proxy_urls)
        while pending and time.time() < change.at + PROBE_LIMIT_SECONDS:
            for index, url in list(pending.items()):
                if self._reflects(url, change, cursors[index]):
                    change.latencies[index] = time.time() - change.at
                    del pending[index]
            time.sleep(PROBE_SECONDS)

    def _reflects(self, url: str, change: Change, cursor: str | None) -> bool:
        """Whether every surface of the proxy at ``url`` answers the change: the list first,
        the others only once it does (a probe costs one request an interval meanwhile)."""
        token, removed = self.tokens[change.org], change.kind == "removal"
        if not self._listed_as_changed(_get(url, "/users", token), change):
            return False
        # One page of up to 100 (Auth0's default page is 50: a member may be on the second).
        api_v2 = _get(url, f"/api/v2/organizations/{change.org}/members?per_page=100", token)
        if not self._listed_as_changed(api_v2, change):
            return False
        profile = _get(url, f"/users/{quote(change.user, safe='')}", token)
        if profile is None or profile.status_code != (404 if removed else 200):
            return False
        if cursor is None:  # no cursor was to be had: the feed is not probed
            return True
        feed = _get(url, f"/users/changes?since={cursor}", token)
        if feed is None or not feed.ok:
            return False
        body = feed.json()
        return change.user in (
            body["removed"] if removed else [m["user_id"] for m in body["added"]]
        )

    @staticmethod
    def _listed_as_changed(answer: requests.Response | None, change: Change) -> bool:
        if answer is None or not answer.ok:
            return False
        listed = change.user in {member["user_id"] for member in answer.json()}
        return listed != (change.kind == "removal")


def _get(url: str, path: str, token: str) -> requests.Response | None:
    try:
        return requests.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except requests.RequestException:
        return None
