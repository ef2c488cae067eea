"""Auth0's events applied to the shared cache: a change made in Auth0 is answered by every
worker and host within seconds, instead of after the next refresh of what it touched.

An event is taken as a hint, never as the truth: webhooks deliver at least once and in no
order, a stream replays from its stored offset, and an event may be missed altogether. So each
one is confirmed by reading Auth0's state now, through the budget like any read (a membership
event: the user's organizations, and their profile if they are a member; a user event: the
profile and their organizations), and that state is what is stored. An event applied late,
twice or before an older one then leaves the cache equal to Auth0 all the same; ordering by
``time`` instead could not tell two changes within a millisecond apart, nor repair a missed
one. A duplicate (same ``id``) of an event applied is dropped before it costs a read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from auth0_proxy.auth0.management import ManagementClient
from auth0_proxy.core import clock, metrics
from auth0_proxy.core.errors import UpstreamUnavailable, UserNotFound
from auth0_proxy.core.schemas import MEMBER_EVENTS, ROLE_EVENTS, cloud_event
from auth0_proxy.storage.store import Store

from .directory import Directory

APPLIED_KEY = "event-applied:{digest}"
APPLIED_SECONDS = 7 * 86400  # a redelivery within this is recognised (Auth0 retries for days)


class InvalidEvent(ValueError):
    """Not a CloudEvent of a type the proxy applies; ``messages`` says what is wrong."""

    def __init__(self, messages: Any):
        super().__init__("not an Auth0 event the proxy applies")
        self.messages = messages


@dataclass(frozen=True)
class Event:
    """What the proxy needs of an event: which, when (epoch seconds) and about whom."""

    id: str
    type: str
    time: float
    org_id: str | None = None
    user_id: str | None = None


def parse_event(body: object) -> Event:
    """:raise InvalidEvent: not a CloudEvent of a known type, naming what it concerns."""
    try:
        loaded = cloud_event.load(body if isinstance(body, dict) else {"": body})
    except ValidationError as error:
        raise InvalidEvent(error.messages) from None
    about = loaded["data"]["object"]
    organization = about.get("organization", {}).get("id")
    if loaded["type"] == "organization.deleted":
        organization = about["id"]
    user = about.get("user", {}).get("user_id") or about.get("user_id")
    return Event(loaded["id"], loaded["type"], loaded["time"].timestamp(), organization, user)


class Events:
    """Applies events to what ``directory`` caches, each once, in any order."""

    def __init__(self, directory: Directory, management: ManagementClient, store: Store):
        self.directory = directory
        self.management = management
        self.store = store
        self._apply: dict[str, Callable[[Event], None]] = {
            **dict.fromkeys(MEMBER_EVENTS, self._membership),
            **dict.fromkeys(ROLE_EVENTS, self._roles),
            "organization.deleted": self._organization_deleted,
            "user.updated": self._user,
            "user.deleted": self._user,
        }

    def apply(self, event: Event) -> bool:
        """Apply the event, unless it was already; whether it was applied now.

        :raise UpstreamUnavailable: the shared store fails: applied here alone, the event
            would reach no other process (503: deliver it again).
        :raise APIError: Auth0 or the budget refused a confirming read (deliver it again).
        """
        metrics.EVENTS_RECEIVED.labels(event.type).inc()
        if self.store.failing:
            raise UpstreamUnavailable(reason="the shared store fails: events wait")
        applied = APPLIED_KEY.format(digest=hashlib.sha256(event.id.encode()).hexdigest()[:32])
        if self.store.get(applied):
            metrics.EVENTS_DUPLICATES.inc()
            return False
        try:
            self._apply[event.type](event)
        except Exception:
            metrics.EVENTS_FAILED.inc()
            raise
        # Marked once applied, not before: a worker killed in between leaves its redelivery to
        # be applied (twice at worst, as two deliveries at once may be: it is idempotent).
        self.store.set(applied, 1, APPLIED_SECONDS)
        metrics.EVENTS_APPLIED.labels(event.type).inc()
        metrics.EVENTS_LAG.observe(max(0.0, clock.now() - event.time))
        return True

    def _membership(self, event: Event) -> None:
        """A member added or removed: whether they are one now, as Auth0 says."""
        organizations = self.management.user_organization_ids(event.user_id)
        if event.org_id in organizations:
            try:
                profile = self.management.get_user(event.user_id)
            except UserNotFound:  # deleted since
                organizations = []
            else:
                self.directory.member_joined(event.org_id, profile, organizations)
                return
        self.directory.member_left(event.org_id, event.user_id, organizations)

    def _roles(self, event: Event) -> None:
        """A member's roles changed: the organization's reads (roles among them) are read
        afresh."""
        self.directory.renew(event.org_id)

    def _organization_deleted(self, event: Event) -> None:
        self.directory.organization_deleted(event.org_id)

    def _user(self, event: Event) -> None:
        """A user updated or deleted: their profile as Auth0 holds it now, in each of their
        organizations; gone from every organization that lists them if Auth0 has no such user
        (a deletion names no organization, and may come before an update)."""
        try:
            profile = self.management.get_user(event.user_id)
        except UserNotFound:
            for org_id in self.directory.organizations_listing(event.user_id):
                self.directory.member_left(org_id, event.user_id, [])
            return
        organizations = self.management.user_organization_ids(event.user_id)
        for org_id in organizations:
            self.directory.member_joined(org_id, profile, organizations)
