"""What the proxy knows of organizations: member lists, memberships and profiles, cached.

Auth0's Management API is rate-limited per tenant, so each answer is kept in the shared cache
for ``ttl`` seconds (0: not cached) and fetched once for every caller who asks meanwhile,
whichever worker or host they reach (request coalescing: the others wait for that one fetch).
A caller that sends ``Cache-Control: no-cache`` gets a fresh read, at most once per
``fresh_interval`` seconds per client. Keys name exactly what they hold (an organization's
member list, a user's organizations, a user's profile), and a profile is only ever returned
after the membership check for the caller's organization, so no cached answer reaches another
organization's caller.

Member lists are stored page by page, so a worker streams an organization of any size with one
page in memory. Each listing's pages are keyed by its generation, so two fetches of one list
(a slow first reader, a no-cache read, an expiry) never overwrite each other's pages; the last
listing stored wins, whole. A list read in the last fifth of its TTL (earlier if it is slow to
fetch) is served as it is while one background fetch stores its successor, so while clients keep
syncing none waits for a list.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator

import orjson

from .cache import SharedCache
from .errors import UpstreamFailed, UserNotFound
from .json_codec import dumps
from .management import ManagementClient
from .paging import beyond_member_fields
from .schemas import only_fields, public_profile

# Pages outlive their list's entry, so a reader that found the entry finds every page.
PAGE_GRACE_SECONDS = 60
# Renamed whenever what is stored under it changes shape, so that a proxy never reads an entry
# an older (or newer) version left in a shared or persistent cache: "members:" held a bare dict.
MEMBER_LIST_KEY = "member-list:{org_id}"


class Directory:
    def __init__(
        self, management: ManagementClient, cache: SharedCache, *, ttl: int, fresh_interval: int
    ):
        self.management = management
        self.cache = cache
        self.ttl = ttl
        self.fresh_interval = fresh_interval

    def member_profile(self, org_id: str, user_id: str, *, fresh: bool = False) -> dict:
        """The profile of a user who belongs to the organization.

        :raise UserNotFound: the user does not exist, or is not a member: the same answer for
            both, so a caller cannot learn that a user exists in another organization (404).
        """
        organizations = self.management.user_organization_ids
        user_key = _key_part(user_id)
        if org_id not in self._cached(f"user-orgs:{user_key}", fresh, organizations, user_id):
            raise UserNotFound(reason="user is not a member of the caller's organization")
        return self._cached(f"profile:{user_key}", fresh, self.management.get_user, user_id)

    def member_pages(self, org_id: str, *, fresh: bool = False) -> Iterator[str]:
        """The organization's members, page by page, each page as JSON objects joined by commas:
        from the cache, or fetched once and stored. Pages are kept serialized, so serving a
        cached list costs no JSON encoding at all.

        :raise UpstreamFailed: a page of the cached list was gone before it was read.
        """
        if not self.ttl:
            yield from map(_json_fragment, self.management.member_pages(org_id))
            return
        key = MEMBER_LIST_KEY.format(org_id=org_id)
        if fresh:
            self.cache.delete(key)
        entry = self.cache.get(key)
        if entry is None:
            with self.cache.lock(key, done=lambda: self.cache.get(key) is not None):
                entry = self.cache.get(key)
                if entry is None:
                    yield from self._fetch_member_pages(org_id, key)
                    return
        listing, refresh_at, _ = entry
        if time.time() >= refresh_at:  # near its end: the next listing is fetched meanwhile
            refetch = lambda: self._refetch_listing(org_id, key)  # noqa: E731
            self.cache.refresh_in_background(key, refetch, entry, seconds=self.ttl)
        yield from self._cached_member_pages(key, listing)

    def member_fields_pages(
        self, org_id: str, fields: list[str], *, fresh: bool = False
    ) -> Iterator[str]:
        """The members with just the fields asked for, page by page (JSON fragments).

        Member fields come from the member list itself. Any other profile field needs profiles:
        each page of the member list becomes one users search for its members, and a page of 50
        (the default page size; the search answers up to 100 per call) keeps the query's URL
        to a few kilobytes. The search is eventually consistent, so a member added moments ago
        may be missing from this view until Auth0 has indexed them.
        """
        needs_profiles = beyond_member_fields(fields)
        for fragment in self.member_pages(org_id, fresh=fresh):
            members = orjson.loads(f"[{fragment}]")
            if members and needs_profiles:
                found = self.management.search_users([m["user_id"] for m in members], fields)
                members = [public_profile(profile) for profile in found]
            yield _json_fragment([only_fields(member, fields) for member in members])

    def member_page(self, org_id: str, params: dict) -> dict:
        """One page, exactly as the client asked for it; not cached (a paging client follows
        Auth0's own cursor, and pages of different sizes would rarely be asked twice)."""
        return self.management.member_page(org_id, params)

    def may_read_fresh(self, client_id: str) -> bool:
        """Whether this client's ``no-cache`` is honoured now (once per ``fresh_interval``)."""
        return self.cache.add(f"fresh-read:{client_id}", 1, self.fresh_interval)

    def _cached(self, key: str, fresh: bool, fetch, *args):
        if not self.ttl:
            return fetch(*args)
        if fresh:
            self.cache.delete(key)
        return self.cache.get_or_create(key, lambda: (fetch(*args), self.ttl))

    def _fetch_member_pages(self, org_id: str, key: str) -> Iterator[str]:
        """Fetch and store the list while yielding its pages; store its listing last."""
        started = time.monotonic()
        listing = _new_listing()
        yield from self._store_pages(org_id, key, listing)
        self.cache.put(key, listing, self.ttl, fetch_seconds=time.monotonic() - started)

    def _refetch_listing(self, org_id: str, key: str) -> tuple[dict, int]:
        """Fetch and store the whole list again, for a refresh ahead of expiry."""
        listing = _new_listing()
        for _ in self._store_pages(org_id, key, listing):
            pass
        return listing, self.ttl

    def _store_pages(self, org_id: str, key: str, listing: dict) -> Iterator[str]:
        """Each page of the list, stored under the listing's generation and counted in it."""
        for page in self.management.member_pages(org_id):
            listing["pages"] += 1
            fragment = _json_fragment(page)
            page_key = _page_key(key, listing, listing["pages"])
            self.cache.set(page_key, fragment, self.ttl + PAGE_GRACE_SECONDS)
            yield fragment

    def _cached_member_pages(self, key: str, listing: dict) -> Iterator[str]:
        for number in range(1, listing["pages"] + 1):
            fragment = self.cache.get(_page_key(key, listing, number))
            if fragment is None:  # evicted, or the cache failed: the list cannot be completed
                raise UpstreamFailed(
                    "The member list expired while it was being read; ask again.",
                    reason=f"{key}: page {number} missing",
                )
            yield fragment


def _new_listing() -> dict:
    """A listing about to be fetched: its pages are stored under a generation of its own."""
    return {"generation": uuid.uuid4().hex, "pages": 0}


def _page_key(key: str, listing: dict, number: int) -> str:
    return f"{key}:{listing['generation']}:page:{number}"


def _json_fragment(members: list[dict]) -> str:
    """Members as JSON objects joined by commas: a slice of the array GET /users returns."""
    return dumps(members)[1:-1].decode()


def _key_part(user_id: str) -> str:
    """A user id as a cache key part: hashed, so no id (say "x:lock") can name another entry."""
    return hashlib.sha256(user_id.encode()).hexdigest()
