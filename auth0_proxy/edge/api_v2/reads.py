"""The reads of the Management API surface, each answered as Auth0 answers it, for the caller's
organization only, from the caches the proxy already keeps wherever the data is the same.

A member list paged by an SDK is sliced from the cached list (no upstream call while it is
fresh); profiles are the cached member profiles; the organization's own resources (its profile,
invitations, connections, a member's roles) are Auth0's answers, cached per query. The rule table
in the pipeline has checked the organization and membership before a handler runs.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from flask import Response, jsonify

from auth0_proxy.core.auth0_api import ORGANIZATION, api_path
from auth0_proxy.core.errors import UserNotFound
from auth0_proxy.core.json_codec import loads
from auth0_proxy.core.paging import (
    MEMBER_FIELDS,
    InvalidQuery,
    members_page,
    offset_page,
)
from auth0_proxy.core.scope import Freshness
from auth0_proxy.edge.answers import described, directory
from auth0_proxy.members.directory import Answer

from .query import search_terms, selected

if TYPE_CHECKING:
    from .operation import Call

# Up to this many profiles come from the profile cache, one entry each; more, from one search.
FEW_PROFILES = 3


def relayed(call: Call) -> Response:
    """Auth0's answer to a read of the organization itself or its own resources (invitations,
    connections, a member's roles), cached per query."""
    answer = directory().organization_read(call.caller.org_id, call.upstream_path, call.query.sent)
    return described(Response(answer.body, content_type="application/json"), answer)


def members(call: Call) -> Response:
    """A page of the organization's members, by offset or checkpoint, sliced from the cached
    member list; with ``roles`` among the fields, Auth0's own page (the list carries none)."""
    query = call.query
    if "roles" in (query.get("fields") or "").split(",") and query.get("include_fields", True):
        return relayed(call)
    everyone, listing = directory().member_records(call.caller.org_id)
    shown = lambda window: [selected(m, query, MEMBER_FIELDS) for m in window]  # noqa: E731
    return _answer(members_page(everyone, query.paging(), shown=shown), listing.freshness)


def user(call: Call) -> Response:
    """A member's profile, with the fields asked for."""
    answer = directory().member_profile(
        call.caller.org_id, call.params["id"], membership=call.membership
    )
    return _answer(selected(loads(answer.body), call.query), answer.freshness)


def user_organizations(call: Call) -> Response:
    """A member's organizations, as far as the caller may know: its own, never the others."""
    org_id = call.caller.org_id
    answer = directory().organization_read(org_id, api_path(ORGANIZATION, id=org_id), {})
    own = [loads(answer.body)]
    return _answer(offset_page("organizations", own, call.query.paging()), answer.freshness)


def users(call: Call) -> Response:
    """The organization's members as Auth0 lists users: full profiles, paged by offset, found by
    ``email:``/``user_id:`` terms in ``q``. A member of another organization is never found: the
    search runs over this organization's member list."""
    query = call.query
    emails, user_ids = search_terms(query.get("q")) if query.get("q") else (None, None)
    everyone, listing = directory().member_records(call.caller.org_id)
    if emails is not None:
        everyone = [
            m
            for m in everyone
            if m["user_id"] in user_ids or str(m.get("email", "")).lower() in emails
        ]
    shown = lambda window: [selected(p, query) for p in _profiles(call, window, listing)]  # noqa: E731
    page = offset_page("users", everyone, query.paging(), shown=shown, length=True)
    return _answer(page, listing.freshness)


def users_by_email(call: Call) -> Response:
    """The members with exactly this email (case-sensitive, as Auth0 documents the endpoint;
    it stores a database user's email in lower case)."""
    email = call.query.get("email")
    if not email:
        raise InvalidQuery("Query validation error: 'Missing required property: email'.")
    everyone, listing = directory().member_records(call.caller.org_id)
    found = [member for member in everyone if member.get("email") == email]
    profiles = [selected(p, call.query) for p in _profiles(call, found, listing)]
    return _answer(profiles, listing.freshness)


def _answer(body: object, freshness: Freshness) -> Response:
    return described(jsonify(body), Answer(None, freshness))


def _profiles(call: Call, members: list[dict], listing: Answer) -> list[dict]:
    """The full profiles of these members, in their order: the cached ones for a few, else one
    users search for the page, cached with the list (Auth0's own GET /users answers from that
    search too)."""
    if len(members) > FEW_PROFILES:
        user_ids = [member["user_id"] for member in members]
        return directory().profiles(call.caller.org_id, user_ids, listing=listing.listing)
    profiles = []
    for member in members:
        # One deleted since the list was read is left out, as the search would.
        with contextlib.suppress(UserNotFound):
            profile = directory().listed_profile(call.caller.org_id, member["user_id"])
            profiles.append(loads(profile))
    return profiles
