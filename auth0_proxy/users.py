"""The proxy's resource: the users of the caller's organization, and nothing else."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from werkzeug.routing import BaseConverter

from .access import Caller, require_organization
from .directory import Directory
from .errors import APIError
from .json_codec import json_fragment
from .paging import member_query
from .policy import ClientPolicy
from .schemas import member_page_answer, only_fields

log = logging.getLogger(__name__)

bp = Blueprint("users", __name__)


class IdConverter(BaseConverter):
    """An Auth0 id in a path: any non-empty text, slashes included ("%2F0" arrives decoded as
    "/0", which Werkzeug's ``path`` converter would not take)."""

    regex = ".+"
    part_isolating = False  # may span path segments


bp.record_once(lambda state: state.app.url_map.converters.setdefault("id", IdConverter))


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
        return jsonify(member_page_answer(page, query))
    fresh = wants_fresh_read(caller)
    if query.fields is None:
        return json_array_response(directory().member_list_json(caller.org_id, fresh=fresh))
    pages = directory().member_profiles(caller.org_id, query.fields, fresh=fresh)
    fields = query.fields
    return json_array_response(
        json_fragment([only_fields(member, fields) for member in page]) for page in pages
    )


@bp.get("/users/<id:user_id>")
@require_organization("read:users")
def get_user(caller: Caller, user_id: str):
    """A member's full profile; 404 for anyone else."""
    profile = directory().member_profile_json(
        caller.org_id, user_id, fresh=wants_fresh_read(caller)
    )
    return Response(profile, content_type="application/json")


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
    return bool(request.cache_control.no_cache) and policy().may_read_fresh(caller.client_id)


def directory() -> Directory:
    return current_app.extensions["directory"]


def policy() -> ClientPolicy:
    return current_app.extensions["policy"]
