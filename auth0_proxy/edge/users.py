"""The proxy's resource: the users of the caller's organization, and nothing else.

Every answer made from the cache says how old it is (``Age``, RFC 9111) and how fresh
(``Cache-Status``, RFC 9211: ``hit; ttl=N``, negative when served stale; ``fwd=miss`` when
fetched for the request). A member list or profile from the cache carries a strong ``ETag``,
and ``If-None-Match`` with it answers 304 with no body and no upstream call.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request
from werkzeug.routing import BaseConverter

from auth0_proxy.access.caller import require_organization
from auth0_proxy.core.json_codec import json_fragment
from auth0_proxy.core.paging import (
    MemberQuery,
    changes_cursor,
    member_query,
    members_page,
    only_fields,
)
from auth0_proxy.core.scope import Caller
from auth0_proxy.members.directory import Answer
from auth0_proxy.spending.policy import may_read_fresh

from .answers import (
    described,
    directory,
    json_array_response,
    member_list_response,
    not_modified,
)

log = logging.getLogger("auth0_proxy.users")

bp = Blueprint("users", __name__)


class IdConverter(BaseConverter):
    """An Auth0 id in a path: any non-empty text, slashes included ("%2F0" arrives decoded as
    "/0", which Werkzeug's ``path`` converter would not take)."""

    regex = ".+"
    part_isolating = False  # may span path segments


@bp.get("/users")
@require_organization("read:users")
def list_users(caller: Caller):
    """All members of the caller's organization, streamed as one JSON array (with just the
    fields named in ``fields``, if any); or one page of them, when the client asks with Auth0's
    paging parameters, sliced from the same cached list and answered as Auth0 would. The query
    is checked before Auth0 is asked.
    """
    query = member_query(request.args)
    fresh = wants_fresh_read(caller)
    if query.paging is not None:
        return member_page(caller, query, fresh)
    if query.fields is None:
        answer = directory().member_list(caller.org_id, fresh=fresh)
        return not_modified(answer) or described(member_list_response(answer), answer)
    answer = directory().member_profiles(caller.org_id, query.fields, fresh=fresh)
    fields = query.fields
    pages = (
        json_fragment([only_fields(member, fields) for member in page]) for page in answer.body
    )
    return described(json_array_response(pages), answer)


def member_page(caller: Caller, query: MemberQuery, fresh: bool) -> Response:
    """The page the client asked for, from the organization's cached member list."""
    everyone, listing = directory().member_records(caller.org_id, fresh=fresh)
    shown = lambda window: [only_fields(m, query.fields) for m in window]  # noqa: E731
    page = members_page(everyone, query.paging, shown=shown)
    return described(jsonify(page), Answer(None, listing.freshness))


@bp.get("/users/changes")
@require_organization("read:users")
def list_changes(caller: Caller):
    """The members added, removed and updated since the cursor ``since``, and the next cursor;
    without ``since``, only the cursor to start from (take it before a full GET /users)."""
    answer = directory().member_changes(caller.org_id, changes_cursor(request.args))
    return described(jsonify(answer.body), answer)


@bp.get("/users/<id:user_id>")
@require_organization("read:users")
def get_user(caller: Caller, user_id: str):
    """A member's full profile; 404 for anyone else."""
    answer = directory().member_profile(caller.org_id, user_id, fresh=wants_fresh_read(caller))
    return not_modified(answer) or described(
        Response(answer.body, content_type="application/json"), answer
    )


def wants_fresh_read(caller: Caller) -> bool:
    """``Cache-Control: no-cache`` asks for a fresh read, within the client's allowance."""
    req = request._get_current_object()
    if "no-cache" not in req.environ.get("HTTP_CACHE_CONTROL", ""):  # spares most a parse
        return False
    return bool(req.cache_control.no_cache) and may_read_fresh(caller.client_id)
