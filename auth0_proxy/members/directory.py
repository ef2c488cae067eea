"""What the proxy knows of organizations: member lists, memberships and profiles, cached.

Auth0's Management API is rate-limited per tenant, so each answer is kept in the shared cache,
fresh for ``ttl`` seconds (0: not cached) and servable ``max_stale`` seconds longer while its
refresh waits for the budget or Auth0 fails, and fetched once for every caller who asks
meanwhile. Each answer says how fresh it is. Keys name exactly what they hold (an organization's
member list, a user's organizations, a user's profile), and a profile is only ever returned
after the membership check for the caller's organization, so no cached answer reaches another
organization's caller. Every key also names the organization it was read for: nothing an
organization is answered (a hit or a miss, its ``Age``, its cost) depends on what another
organization read, even of a user both share. Member lists are kept as JSON text, page by page,
and profiles as JSON, so serving a cached answer costs no encoding (and a list little memory).
Each complete member list read from Auth0 also feeds the organization's change feed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from auth0_proxy.auth0.management import ManagementClient
from auth0_proxy.caching.cache import SharedCache
from auth0_proxy.caching.entries import Entry, Fetch
from auth0_proxy.caching.listings import Listings
from auth0_proxy.core import clock, metrics
from auth0_proxy.core.errors import UpstreamUnavailable, UserNotFound
from auth0_proxy.core.json_codec import dumps, json_fragment, loads
from auth0_proxy.core.paging import needs_profiles
from auth0_proxy.core.schemas import member_entry, public_profile
from auth0_proxy.core.scope import FETCHED_NOW, Freshness, request_scope
from auth0_proxy.spending.budget import BudgetExhausted, Governor, reserved

from .changes import Change, ChangeFeed, Observation, encode_cursor
from .turns import Turns

log = logging.getLogger("auth0_proxy.directory")

MEMBER_LIST_KEY = "member-list:{org_id}"
# The organizations whose lists were read with events on (for user.deleted and a lost stream).
KNOWN_ORGS_KEY = "known-organizations"
KNOWN_ORGS_SECONDS = 30 * 86400
# Changed by each write to the organization; part of the keys of what is cached for it.
GENERATION_KEY = "generation:{org_id}"
GENERATION_GRACE_SECONDS = 60
TURN_POLL_SECONDS = 0.1  # a client at its turn's time, while its claimer starts the listing


@dataclass(frozen=True)
class Answer:
    """What a view sends: the body (JSON bytes, or pages of a JSON array), how fresh it is,
    and its strong entity tag where the body's digest is known before it is sent; for a small
    member list from the cache, also the whole array (``whole``)."""

    body: Any
    freshness: Freshness
    etag: str | None = None
    listing: str | None = None  # the stored member list it comes from (its generation), if any
    whole: bytes | None = None


class Directory:
    def __init__(
        self,
        management: ManagementClient,
        cache: SharedCache,
        changes: ChangeFeed,
        *,
        ttl: int,
        max_stale: int,
        writable_orgs: frozenset[str] = frozenset(),
        governor: Governor | None = None,
        client_wait: float = 0.0,
        reconcile_seconds: int | None = None,
    ):
        self.management = management
        # With Auth0's events on (events.py), how long a member list is fresh: events keep it
        # true meanwhile, and re-reading it then corrects what an event stream missed.
        self.reconcile_seconds = reconcile_seconds
        # Cold lists' turns (turns.py), when there is a budget to take them in.
        self.turns = (
            Turns(cache, governor, self.list_in_turn, self.listed_pages) if governor else None
        )
        self.client_wait = client_wait  # how long a client may wait for its turn
        # Each writable organization's generation as this process last read or wrote it: what
        # its remembered answers are keyed by, should the store fail.
        self._generations: dict[str, str | None] = {}
        self.writable_orgs = writable_orgs
        self.cache = cache
        self.listings = Listings(cache)
        self.changes = changes
        self.ttl = ttl
        self.list_ttl = reconcile_seconds if reconcile_seconds and ttl else ttl
        self._registered: set[str] = set()  # organizations this process made known
        self.max_stale = max_stale

    def member_profile(
        self, org_id: str, user_id: str, *, fresh: bool = False, membership: Entry | None = None
    ) -> Answer:
        """The profile of a user who belongs to the organization, as JSON, without
        identity-provider tokens (``membership``: the user's organizations, if just checked).

        :raise UserNotFound: the user does not exist, or is not a member: the same answer for
            both, so a caller cannot learn that a user exists in another organization (404).
        """
        membership = membership or self.require_member(org_id, user_id, fresh=fresh)
        profile = self._profile(org_id, user_id, fresh)
        etag = _entity_tag(hashlib.sha256(profile.value).hexdigest())
        return Answer(profile.value, self._freshness(membership, profile), etag)

    def listed_profile(self, org_id: str, user_id: str) -> bytes:
        """The profile (JSON) of a user the organization's member list names. The list is the
        authority here: a membership read at another moment could disagree with it."""
        return self._profile(org_id, user_id, fresh=False).value

    def require_member(self, org_id: str, user_id: str, *, fresh: bool = False) -> Entry:
        """The user's organizations, if the organization is one of them.

        :raise UserNotFound: the user does not exist, or is not a member (404).
        """
        organizations = lambda: self.management.user_organization_ids(user_id)  # noqa: E731
        key = self._membership_key(org_id, user_id)
        return _member_of(org_id, self._cached(key, organizations, fresh))

    def confirm_member(self, org_id: str, user_id: str) -> Entry:
        """The user's organizations as Auth0 lists them now, if the organization is one of
        them: what authorizes a write, never a cached answer (which may be minutes old, and
        miss a change made in Auth0 itself).

        :raise UserNotFound: the user does not exist, or is not a member (404).
        """
        now = clock.now()
        organizations = self.management.user_organization_ids(user_id)
        return _member_of(org_id, Entry(organizations, now, now, now))

    def organization_read(self, org_id: str, path: str, params: dict[str, str]) -> Answer:
        """Auth0's answer to a read about the organization (its profile, invitations,
        connections, a member's roles), as JSON, cached like every answer; ``path`` must be
        the organization's own, checked by the caller.

        :raise Relayed: Auth0 refused the read (an invitation it does not have: 404).
        """
        query = urlencode(sorted(params.items()))
        fetch = lambda: dumps(self.management.relay("GET", path, params=params)[1])  # noqa: E731
        key = f"org-read:{_key_part(f'{path}?{query}')}{self._generation(org_id, reads=True)}"
        entry = self._cached(key, fetch, fresh=False)
        return Answer(entry.value, self._freshness(entry))

    def written(self, org_id: str) -> None:
        """A write changed what Auth0 holds for the organization: every answer cached for it
        (member list, memberships, profiles, organization reads) is read afresh from now on,
        by every worker and host, whatever each holds in memory."""
        if org_id in self.writable_orgs:
            self.renew(org_id)

    def renew(self, org_id: str) -> None:
        """Change the organization's generation: what is cached under it is read afresh (for
        an organization no client writes to, only its organization reads, with events on)."""
        lifetime = max(self.ttl, self.list_ttl) + self.max_stale + GENERATION_GRACE_SECONDS
        generation = uuid.uuid4().hex
        self.cache.store.set(GENERATION_KEY.format(org_id=org_id), generation, lifetime)
        self._generations[org_id] = generation
        scope = request_scope()
        if scope is not None:
            scope.generations.pop(org_id, None)  # this request's next read sees it too

    def _generation(self, org_id: str, *, reads: bool = False) -> str:
        """The part of the organization's cache keys that a write changes; only for those a
        client may write to, and with events on for organization reads (one shared-store read
        per request, kept in its scope: the others need none)."""
        if org_id not in self.writable_orgs and not (reads and self.reconcile_seconds):
            return ""
        scope = request_scope()
        known = scope.generations if scope is not None else {}
        if org_id not in known:
            generation = self.cache.store.get(GENERATION_KEY.format(org_id=org_id))
            if self.cache.store.failing:  # the last this process saw or made, not a default
                generation = self._generations.get(org_id)  # whose answers it remembers
            else:
                self._generations[org_id] = generation
            known[org_id] = f"@{generation or 0}"
        return known[org_id]

    def member_list(self, org_id: str, *, fresh: bool = False) -> Answer:
        """The organization's members, a page of JSON text at a time (objects joined by commas):
        from the cache, or fetched once and stored while it is read."""
        fetch = functools.partial(self._fetch_member_pages, org_id)
        if not self.ttl:
            return Answer(fetch(1).pages_then_stored(), FETCHED_NOW)
        key = self._list_key(org_id)
        try:
            entry, pages = self.listings.listing(
                key, fetch, ttl=self.list_ttl, stale_seconds=self.max_stale, fresh=fresh
            )
        except BudgetExhausted as refused:
            if fresh or self.turns is None:
                raise
            entry, pages = self._listing_in_turn(org_id, key, fetch, refused)
        if entry is None:
            return Answer(pages, FETCHED_NOW)
        digest, whole = _entity_tag(entry.value.digest), self.listings.whole(key, entry.value)
        return Answer(pages, freshness_of(entry), digest, entry.value.generation, whole)

    def _listing_in_turn(
        self, org_id: str, key: str, fetch: Callable[[int], Fetch], refused: BudgetExhausted
    ) -> tuple[Entry | None, Iterator[str]]:
        """A cold list the budget refused: waited for if its turn (turns.py) comes within the
        client's wait, else refused again with the turn's time in ``Retry-After``.

        :raise BudgetExhausted: its turn is further off (429); as ``refused`` where no turn
            could be taken (the store fails).
        """
        turn = self.turns.take(org_id)
        if turn is None:
            raise refused
        deadline = clock.monotonic() + self.client_wait
        if turn.due - clock.now() > self.client_wait:
            raise BudgetExhausted(
                reason=refused.reason, headers={"Retry-After": str(self.turns.retry_after(turn))}
            )
        while True:
            time.sleep(max(0.0, turn.due - clock.now()))
            claimed = self.turns.claim(org_id)
            try:
                with reserved(claimed.calls) if claimed else contextlib.nullcontext():
                    return self.listings.listing(
                        key, fetch, ttl=self.list_ttl, stale_seconds=self.max_stale
                    )
            except BudgetExhausted:  # the turn's claimer has not taken the listing's lock yet
                if claimed or clock.monotonic() > deadline:
                    raise
                time.sleep(TURN_POLL_SECONDS)

    def list_in_turn(self, org_id: str) -> None:
        """List the organization with its turn's paid calls, unless someone claimed them
        first, and store the list (read to its end)."""
        turn = self.turns.claim(org_id)
        if turn is None:
            return
        with reserved(turn.calls):
            answer = self.member_list(org_id)
        for _ in answer.body:  # stored as it is read
            pass

    def has_list(self, org_id: str) -> bool:
        """Whether the organization's member list is cached (fresh or stale)."""
        return self.cache.store.get(self._list_key(org_id)) is not None

    def listed_pages(self, org_id: str) -> int | None:
        """The page count of the organization's last listing, if it is remembered."""
        return self.cache.store.get(self._list_key(org_id) + ":pages")

    def _list_key(self, org_id: str) -> str:
        return MEMBER_LIST_KEY.format(org_id=org_id) + self._generation(org_id)

    def member_profiles(
        self, org_id: str, fields: tuple[str, ...], *, fresh: bool = False
    ) -> Answer:
        """The members, a page at a time, with at least the ``fields`` asked for.

        Member fields come from the member list itself. Other profile fields need profiles: each
        page of the member list becomes one users search for its members (a page of 50 keeps the
        query's URL to a few kilobytes; the search answers up to 100 per call), cached with the
        list (see ``profiles``).
        """
        listing = self.member_list(org_id, fresh=fresh)
        pages = self._with_profiles(org_id, listing, fields)
        return Answer(pages, listing.freshness, listing=listing.listing)

    def profiles(
        self,
        org_id: str,
        user_ids: list[str],
        fields: tuple[str, ...] | None = None,
        *,
        listing: str | None = None,
    ) -> list[dict]:
        """The profiles (just ``fields``, or whole) of these members of the organization (at
        most 100), in their order, without identity-provider tokens, found by one users search.
        One the search does not find yet (it is eventually consistent) is left out.

        Cached for as long as the stored member list ``listing`` named them: asked again, the
        same page costs no call until the list is read anew (a list fetched for this request,
        None, is searched again).
        """

        def search() -> list[dict]:
            found = {u["user_id"]: u for u in self.management.search_users(user_ids, fields)}
            return [public_profile(found[u]) for u in user_ids if u in found]

        if listing is None or not self.ttl:
            return search()
        key = f"profiles:{org_id}:{listing}:{_key_part(repr((user_ids, fields)))}"
        return loads(self._cached(key, lambda: dumps(search()), fresh=False).value)

    def member_changes(self, org_id: str, since: str | None) -> Answer:
        """The members added, removed and updated since the cursor ``since`` (none: just the
        current cursor, to sync from), and the cursor that follows, as a dict.

        :raise InvalidCursor: not a cursor of this proxy (400).
        :raise ChangesExpired: the changes since it are no longer kept (410).
        """
        listing = self.member_list(org_id)  # fetched or refreshed like any list, so recorded
        if listing.freshness.ttl is None:
            for _ in listing.body:  # fetched for this request: read to the end, so recorded
                pass
        if since is None:
            change, head = Change(), self.changes.head(org_id)
        else:
            change, head = self.changes.since(org_id, since)
        if head is None:  # not recorded: the cache failed
            raise UpstreamUnavailable("The change feed is not available right now; retry later.")
        answer = {**change.__dict__, "cursor": encode_cursor(head)}
        age = max(0, int(clock.now() - head.observed_at))
        return Answer(answer, Freshness(age, listing.freshness.ttl))

    def member_records(self, org_id: str, *, fresh: bool = False) -> tuple[list[dict], Answer]:
        """Every member of the organization as records, from the cached list (or read from
        Auth0 now), and the listing they come from (read: only its freshness and generation
        are left). The one source of a page of members, on both surfaces."""
        listing = self.member_list(org_id, fresh=fresh)
        if listing.whole is not None:
            listing.body.close()  # its pages, never read
            return loads(listing.whole), listing
        return [member for page in listing.body for member in loads(f"[{page}]")], listing

    def _fetch_member_pages(self, org_id: str, expected_pages: int) -> Fetch:
        """The member list from Auth0, page by page; once stored, compared with the last one
        for the change feed (not before: the feed never runs ahead of the list served)."""
        observation = self.changes.observe(org_id)

        def pages() -> Iterator[str]:
            for page in self.management.list_members(org_id, expected_pages):
                observation.add(page)
                yield json_fragment(page)

        return Fetch(pages(), functools.partial(self._recorded, org_id, observation))

    def _recorded(self, org_id: str, observation: Observation) -> None:
        """A listing read from Auth0 is stored: the change feed records it; with events on, the
        organization is known (for a user's deletion, a lost stream), and what the listing
        changed is a correction: an event that never came (or comes after the listing)."""
        change = self.changes.record(org_id, observation)
        if not self.reconcile_seconds:
            return
        self._register(org_id)
        if change is not None:
            reconciled(org_id, change)

    def _with_profiles(
        self, org_id: str, listing: Answer, fields: tuple[str, ...]
    ) -> Iterator[list]:
        profiles_needed = needs_profiles(fields)
        for fragment in listing.body:
            members = loads(f"[{fragment}]")
            if members and profiles_needed:
                user_ids = [member["user_id"] for member in members]
                members = self.profiles(org_id, user_ids, fields, listing=listing.listing)
            yield members

    def _profile(self, org_id: str, user_id: str, fresh: bool) -> Entry:
        # Stripped before it is cached, so identity-provider tokens are never stored either;
        # kept as JSON, so a cached profile costs no encoding.
        profile_json = lambda: dumps(public_profile(self.management.get_user(user_id)))  # noqa: E731
        return self._cached(self._profile_key(org_id, user_id), profile_json, fresh)

    def _membership_key(self, org_id: str, user_id: str) -> str:
        return f"user-orgs:{org_id}:{_key_part(user_id)}{self._generation(org_id)}"

    def _profile_key(self, org_id: str, user_id: str) -> str:
        return f"profile-json:{org_id}:{_key_part(user_id)}{self._generation(org_id)}"

    # What Auth0's events tell (events.py), stored as of now for every worker and host.

    def member_joined(self, org_id: str, profile: dict, organizations: list[str]) -> None:
        """Auth0 holds the user (``profile``) as a member of the organization now, among
        their ``organizations``: its list, their membership and profile say so from now on."""
        user_id = profile["user_id"]
        self._store_now(self._membership_key(org_id, user_id), organizations)
        self._store_now(self._profile_key(org_id, user_id), dumps(public_profile(profile)))
        member = member_entry.load(profile)  # the member list's own fields
        self._edit_list(org_id, lambda members: _upserted(members, member))

    def member_left(self, org_id: str, user_id: str, organizations: list[str]) -> None:
        """Auth0 no longer holds the user as a member of the organization (``organizations``:
        theirs now): gone from its list, its membership and profile answers."""
        self._store_now(self._membership_key(org_id, user_id), organizations)
        self._forget(self._profile_key(org_id, user_id))
        self._edit_list(org_id, lambda members: _without(members, user_id))

    def organization_deleted(self, org_id: str) -> None:
        """The organization is gone: nothing cached for it answers again (its next read asks
        Auth0, which no longer has it)."""
        for member in self.listings.drop(self._list_key(org_id)):
            user_id = member["user_id"]
            self._forget(self._membership_key(org_id, user_id))
            self._forget(self._profile_key(org_id, user_id))
        self.renew(org_id)

    def reconcile(self, org_id: str) -> None:
        """Read the organization's member list from Auth0 again and store it, whatever is
        cached (what it corrects is logged: ``reconciled``).

        :raise BudgetExhausted: the budget cannot afford it now (the cached list answered).
        """
        answer = self.member_list(org_id, fresh=True)
        for _ in answer.body:  # stored as it is read
            pass
        if answer.freshness.ttl is not None:
            raise BudgetExhausted(reason=f"{org_id}: no budget to reconcile its list now")

    def known_organizations(self) -> frozenset[str]:
        """The organizations whose member lists this deployment read, with events on: those a
        user's deletion (which names no organization) or a lost event stream may concern."""
        return self.cache.store.get(KNOWN_ORGS_KEY) or frozenset()

    def organizations_listing(self, user_id: str) -> list[str]:
        """The known organizations whose last listing names the user (the change feed's)."""
        return [
            org_id
            for org_id in sorted(self.known_organizations())
            if (head := self.changes.head(org_id)) is not None and user_id in head.digests
        ]

    def _register(self, org_id: str) -> None:
        if org_id in self._registered:
            return
        with self.cache.exclusive(KNOWN_ORGS_KEY):
            known = self.known_organizations()
            if org_id not in known:
                self.cache.store.set(KNOWN_ORGS_KEY, known | {org_id}, KNOWN_ORGS_SECONDS)
        self._registered.add(org_id)

    def _edit_list(self, org_id: str, edit: Callable[[list[dict]], list[dict] | None]) -> None:
        """Rewrite the organization's cached member list, if one is cached, and record it in
        the change feed as any listing is."""

        def recorded(members: list[dict]) -> None:
            observation = self.changes.observe(org_id)
            observation.add(members)
            self.changes.record(org_id, observation)

        if self.ttl:
            self.listings.rewrite(
                self._list_key(org_id),
                edit,
                stale_seconds=self.max_stale,
                page_size=self.management.page_size,
                written=recorded,
            )

    def _store_now(self, key: str, value: Any) -> None:
        if self.ttl:
            self.cache.write(key, value, self.ttl, self.max_stale, clock.now())

    def _forget(self, key: str) -> None:
        self.cache.store.delete(key)
        self.cache.memo.forget(key)

    def _cached(self, key: str, fetch: Callable[[], Any], fresh: bool) -> Entry:
        """The entry for ``key``; with caching off, one for a value fetched now."""
        if not self.ttl:
            now = clock.now()
            return Entry(fetch(), now, now, now)
        create = lambda: (fetch(), self.ttl)  # noqa: E731
        if fresh:
            return self.cache.replace(key, create, stale_seconds=self.max_stale)
        return self.cache.entry(key, create, stale_seconds=self.max_stale)

    def _freshness(self, *entries: Entry) -> Freshness:
        return freshness_of(*entries) if self.ttl else FETCHED_NOW


def freshness_of(*entries: Entry) -> Freshness:
    """An answer made of several entries is as old as the oldest."""
    now = clock.now()
    return Freshness(
        max(entry.age(now) for entry in entries),
        math.floor(min(entry.fresh_until for entry in entries) - now),
    )


def reconciled(org_id: str, change: Change) -> None:
    """A listing read from Auth0 with events on: what it changed, an event missed."""
    metrics.RECONCILIATIONS.inc()
    corrections = len(change.added) + len(change.removed) + len(change.updated)
    if corrections:
        metrics.RECONCILIATION_CORRECTIONS.inc(corrections)
        log.warning(
            "reconciling %s corrected %d added, %d removed, %d updated member(s): events missed",
            org_id,
            len(change.added),
            len(change.removed),
            len(change.updated),
        )


def _upserted(members: list[dict], member: dict) -> list[dict] | None:
    """The list with ``member`` in its place, or inserted before the first member whose id
    sorts after its own (Auth0 lists members in user_id order); None if it is there already,
    unchanged."""
    for index, listed in enumerate(members):
        if listed["user_id"] == member["user_id"]:
            return None if listed == member else [*members[:index], member, *members[index + 1 :]]
    after = (i for i, listed in enumerate(members) if listed["user_id"] > member["user_id"])
    position = next(after, len(members))
    return [*members[:position], member, *members[position:]]


def _without(members: list[dict], user_id: str) -> list[dict] | None:
    """The list without the user; None if they are not in it."""
    others = [m for m in members if m["user_id"] != user_id]
    return others if len(others) < len(members) else None


def _member_of(org_id: str, membership: Entry) -> Entry:
    """:raise UserNotFound: the organization is not among the user's (404)."""
    if org_id not in membership.value:
        raise UserNotFound(reason="user is not a member of the caller's organization")
    return membership


def _entity_tag(hexdigest: str) -> str:
    """A strong entity tag from a SHA-256 digest: 128 bits are plenty to tell answers apart."""
    return hexdigest[:32]


def _key_part(user_id: str) -> str:
    """A user id as a cache key part: hashed, so no id (say "x:lock") can name another entry."""
    return hashlib.sha256(user_id.encode()).hexdigest()
