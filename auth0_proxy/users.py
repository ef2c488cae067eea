"""The proxy's resource: the users of the caller's organization, and nothing else.

Every answer made from the cache says how old it is (``Age``, RFC 9111) and how fresh
(``Cache-Status``, RFC 9211: ``hit; ttl=N``, negative when served stale; ``fwd=miss`` when
fetched for the request). A member list or profile from the cache carries a strong ``ETag``,
and ``If-None-Match`` with it answers 304 with no body and no upstream call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context
from werkzeug.routing import BaseConverter

from .access import require_organization
from .directory import Answer, Directory
from .errors import APIError
from .json_codec import json_fragment
from .paging import changes_cursor, member_query
from .policy import may_read_fresh
from .schemas import member_page_answer, only_fields
from .scope import FETCHED_NOW, Caller

log = logging.getLogger(__name__)

bp = Blueprint("users", __name__)

CACHE_NAME = "auth0-m2m-proxy"  # who answers, in Cache-Status


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
    paging parameters (answered as Auth0 would). The query is checked before Auth0 is asked.
    """
    query = member_query(request.args)
    if query.paging is not None:
        page = directory().member_page(caller.org_id, query.paging)
        return described(jsonify(member_page_answer(page, query)), Answer(page, FETCHED_NOW))
    fresh = wants_fresh_read(caller)
    if query.fields is None:
        answer = directory().member_list(caller.org_id, fresh=fresh)
        return not_modified(answer) or described(json_array_response(answer.body), answer)
    answer = directory().member_profiles(caller.org_id, query.fields, fresh=fresh)
    fields = query.fields
    pages = (
        json_fragment([only_fields(member, fields) for member in page]) for page in answer.body
    )
    return described(json_array_response(pages), answer)


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


def not_modified(answer: Answer) -> Response | None:
    """304, with no body, when the client's ``If-None-Match`` holds the answer's entity tag."""
    if answer.etag is None or not request.if_none_match.contains_weak(answer.etag):
        return None
    if hasattr(answer.body, "close"):
        answer.body.close()  # pages never read
    return described(Response(status=304), answer)


def described(response: Response, answer: Answer) -> Response:
    """The answer's ``Age``, ``Cache-Status`` and ``ETag``; its freshness also in the request's
    scope, for the metrics."""
    freshness = g.scope.freshness = answer.freshness
    response.headers["Age"] = str(freshness.age)
    if freshness.ttl is None:
        response.headers["Cache-Status"] = f"{CACHE_NAME}; fwd=miss"
    else:
        response.headers["Cache-Status"] = f"{CACHE_NAME}; hit; ttl={freshness.ttl}"
    if answer.etag is not None:
        response.set_etag(answer.etag)
    return response


def json_array_response(pages: Iterator[str]) -> Response:
    """Pages of JSON text streamed as one array. The first page is read before the answer
    starts, so that the usual failures keep their status."""
    first_page = next(pages, "")
    return Response(stream_with_context(json_array(first_page, pages)), mimetype="application/json")


def json_array(first_page: str, pages: Iterator[str]) -> Iterator[str]:
    """The pages (JSON fragments) as one JSON array, a chunk per page.

    Should a page fail after the answer started, the stream stops without its closing bracket
    and the server drops the connection: the client cannot take it for a complete list.
    """
    yield "[" + first_page
    separator = "," if first_page else ""
    try:
        for page in pages:
            if page:
                yield separator + page
                separator = ","
    except APIError as error:
        log.error("member list cut off mid-stream: %s", error.reason)
        raise
    yield "]"


def wants_fresh_read(caller: Caller) -> bool:
    """``Cache-Control: no-cache`` asks for a fresh read, within the client's allowance."""
    if "no-cache" not in request.headers.get("Cache-Control", ""):  # spares most a parse
        return False
    return bool(request.cache_control.no_cache) and may_read_fresh(caller.client_id)


def directory() -> Directory:
    return current_app.extensions["directory"]
