"""What the proxy knows of organizations: member lists, memberships and profiles, cached.

Auth0's Management API is rate-limited per tenant, so each answer is kept in the shared cache
for ``ttl`` seconds (0: not cached) and fetched once for every caller who asks meanwhile. Keys
name exactly what they hold (an organization's member list, a user's organizations, a user's
profile), and a profile is only ever returned after the membership check for the caller's
organization, so no cached answer reaches another organization's caller. Member lists are kept
as JSON text, page by page, and profiles as JSON, so serving a cached answer costs no encoding
(and a list little memory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from .cache import SharedCache
from .errors import UserNotFound
from .json_codec import dumps, json_fragment
from .management import ManagementClient
from .paging import CheckpointPaging, OffsetPaging, needs_profiles
from .schemas import public_profile

MEMBER_LIST_KEY = "member-list:{org_id}"


class Directory:
    def __init__(self, management: ManagementClient, cache: SharedCache, *, ttl: int):
        self.management = management
        self.cache = cache
        self.ttl = ttl

    def member_profile_json(self, org_id: str, user_id: str, *, fresh: bool = False) -> bytes:
        """The profile of a user who belongs to the organization, as JSON, without
        identity-provider tokens.

        :raise UserNotFound: the user does not exist, or is not a member: the same answer for
            both, so a caller cannot learn that a user exists in another organization (404).
        """
        user = _key_part(user_id)
        organizations = lambda: self.management.user_organization_ids(user_id)  # noqa: E731
        if org_id not in self._cached(f"user-orgs:{user}", organizations, fresh):
            raise UserNotFound(reason="user is not a member of the caller's organization")
        # Stripped before it is cached, so identity-provider tokens are never stored either;
        # kept as JSON, so a cached profile costs no encoding.
        profile = lambda: dumps(public_profile(self.management.get_user(user_id)))  # noqa: E731
        return self._cached(f"profile-json:{user}", profile, fresh)

    def member_list_json(self, org_id: str, *, fresh: bool = False) -> Iterator[str]:
        """The organization's members, a page of JSON text at a time (objects joined by commas):
        from the cache, or fetched once and stored while it is read."""
        fetch = lambda: map(json_fragment, self.management.list_members(org_id))  # noqa: E731
        if not self.ttl:
            return fetch()
        key = MEMBER_LIST_KEY.format(org_id=org_id)
        return self.cache.stream_or_create(key, fetch, ttl=self.ttl, fresh=fresh)

    def member_profiles(
        self, org_id: str, fields: tuple[str, ...], *, fresh: bool = False
    ) -> Iterator[list[dict]]:
        """The members, a page at a time, with at least the ``fields`` asked for.

        Member fields come from the member list itself. Other profile fields need profiles: each
        page of the member list becomes one users search for its members (a page of 50 keeps the
        query's URL to a few kilobytes; the search answers up to 100 per call). The search is
        eventually consistent: a member added moments ago may be missing here for a while.
        """
        profiles_needed = needs_profiles(fields)
        for fragment in self.member_list_json(org_id, fresh=fresh):
            members = orjson.loads(f"[{fragment}]")
            if members and profiles_needed:
                user_ids = [member["user_id"] for member in members]
                members = list(map(public_profile, self.management.search_users(user_ids, fields)))
            yield members

    def member_page(self, org_id: str, paging: OffsetPaging | CheckpointPaging) -> dict:
        """One page, exactly as the client asked for it; not cached (a paging client follows
        Auth0's own cursor, and pages of different sizes would rarely be asked twice)."""
        return self.management.member_page(org_id, paging)

    def _cached(self, key: str, fetch: Callable[[], Any], fresh: bool) -> Any:
        if not self.ttl:
            return fetch()
        create = lambda: (fetch(), self.ttl)  # noqa: E731
        return self.cache.replace(key, create) if fresh else self.cache.get_or_create(key, create)


def _key_part(user_id: str) -> str:
    """A user id as a cache key part: hashed, so no id (say "x:lock") can name another entry."""
    return hashlib.sha256(user_id.encode()).hexdigest()
