"""The membership change feed: who joined, left or changed in an organization since a cursor.

Auth0 has no such feed, so it is derived from the member lists the proxy fetches anyway: each
complete listing is compared with the last one (a digest per member), and what differs is kept
as one numbered change, shared by every instance through the store. A cursor names a feed and a
change number; a cursor whose changes are no longer kept (older than the retention, or the feed
was lost with the cache) is refused with 410, and the client syncs in full.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from auth0_proxy.caching.cache import SharedCache
from auth0_proxy.core import clock
from auth0_proxy.core.errors import ChangesExpired, InvalidCursor

# A client further behind than this many changes syncs in full (each is one store read).
MAX_CHANGES_READ = 1000


@dataclass(frozen=True)
class FeedHead:
    """The last listing seen: its members' digests, and the number of the last change."""

    feed: str
    number: int
    digests: dict[str, str]
    observed_at: float


@dataclass(frozen=True)
class Change:
    added: list[dict] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    updated: list[dict] = field(default_factory=list)


class Observation:
    """A listing as it is fetched, page by page: the digests of all members, and the members
    that differ from the feed's last listing (kept for the change). The first listing of a
    feed keeps no member: it records no change, and a cold list of 100,000 members would
    otherwise be held whole while it streams."""

    def __init__(self, head: FeedHead | None):
        self.head = head
        self.digests: dict[str, str] = {}
        self.changed: dict[str, dict] = {}

    def add(self, members: Iterable[dict]) -> None:
        for member in members:
            digest = _digest(member)
            self.digests[member["user_id"]] = digest
            if self.head is not None and self.head.digests.get(member["user_id"]) != digest:
                self.changed[member["user_id"]] = member


class ChangeFeed:
    """The feeds of every organization, kept ``retention`` seconds in the shared cache's store."""

    def __init__(self, cache: SharedCache, *, retention: int):
        self.cache = cache
        self.store = cache.store
        self.retention = retention

    def observe(self, org_id: str) -> Observation:
        """Start comparing a listing of the organization with the last one."""
        return Observation(self.store.get(_head_key(org_id)))

    def record(self, org_id: str, observation: Observation) -> Change | None:
        """Keep what changed since the last listing, unless another listing was recorded since
        this one started (it is as recent): one writer at a time, across instances. What
        changed (None: the feed's first listing, or not recorded)."""
        with self.cache.exclusive(_head_key(org_id)):
            return self._record(org_id, observation)

    def _record(self, org_id: str, observation: Observation) -> Change | None:
        head = self.store.get(_head_key(org_id))
        if head != observation.head:
            return None
        now = clock.now()
        change = None
        if head is None:
            head = FeedHead(uuid.uuid4().hex, 0, observation.digests, now)
        else:
            change = _change(head.digests, observation)
            number = head.number + 1 if change != Change() else head.number
            if number != head.number:
                self.store.set(_change_key(org_id, head.feed, number), change, self.retention)
            head = FeedHead(head.feed, number, observation.digests, now)
        self.store.set(_head_key(org_id), head, self.retention)
        return change

    def head(self, org_id: str) -> FeedHead | None:
        return self.store.get(_head_key(org_id))

    def since(self, org_id: str, cursor: str) -> tuple[Change, FeedHead]:
        """Every change after ``cursor``, merged into one, and the head it leads to.

        :raise InvalidCursor: not a cursor of this proxy (400).
        :raise ChangesExpired: the changes since it are no longer kept (410).
        """
        feed, number = decode_cursor(cursor)
        head = self.head(org_id)
        if head is None or head.feed != feed:
            raise ChangesExpired(reason="cursor of a feed no longer kept")
        if number > head.number:
            raise InvalidCursor(reason="cursor ahead of the feed")
        if head.number - number > MAX_CHANGES_READ:
            raise ChangesExpired(reason=f"more than {MAX_CHANGES_READ} changes behind")
        changes = []
        for later in range(number + 1, head.number + 1):
            change = self.store.get(_change_key(org_id, feed, later))
            if change is None:
                raise ChangesExpired(reason=f"change {later} no longer kept")
            changes.append(change)
        return merge(changes), head


def merge(changes: list[Change]) -> Change:
    """Successive changes as one: where a member was before the first and after the last.

    A member first seen added was absent before; first seen removed or updated, present. Its
    last change says where it is now.
    """
    present_before: dict[str, bool] = {}
    now: dict[str, dict | None] = {}
    for change in changes:
        for member in change.added:
            present_before.setdefault(member["user_id"], False)
            now[member["user_id"]] = member
        for member in change.updated:
            present_before.setdefault(member["user_id"], True)
            now[member["user_id"]] = member
        for user_id in change.removed:
            present_before.setdefault(user_id, True)
            now[user_id] = None
    merged = Change()
    for user_id, member in now.items():
        if member is None:
            if present_before[user_id]:
                merged.removed.append(user_id)
        elif present_before[user_id]:
            merged.updated.append(member)
        else:
            merged.added.append(member)
    return merged


def encode_cursor(head: FeedHead) -> str:
    return base64.urlsafe_b64encode(f"{head.feed}.{head.number}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """:raise InvalidCursor: not a cursor this proxy made (400)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        feed, number = text.split(".")
        if len(feed) != 32 or not number.isdigit():
            raise ValueError
        return feed, int(number)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidCursor(reason="unreadable cursor") from None


def _change(before: dict[str, str], observation: Observation) -> Change:
    now = observation.digests
    return Change(
        added=[member for user_id, member in observation.changed.items() if user_id not in before],
        removed=[user_id for user_id in before if user_id not in now],
        updated=[member for user_id, member in observation.changed.items() if user_id in before],
    )


def _digest(member: dict) -> str:
    # ASCII JSON: a name with a lone surrogate (Auth0 has served them) is digested too.
    return hashlib.sha256(json.dumps(member, sort_keys=True).encode()).hexdigest()[:32]


def _head_key(org_id: str) -> str:
    return f"changes:{org_id}"


def _change_key(org_id: str, feed: str, number: int) -> str:
    return f"changes:{org_id}:{feed}:{number}"
