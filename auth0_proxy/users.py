"""The proxy's resource: the users of the caller's organization, and nothing else."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from authlib.integrations.flask_oauth2 import current_token
from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from .directory import Directory
from .errors import APIError
from .extensions import require_oauth
from .organization import with_organization
from .paging import InvalidQuery, beyond_member_fields, paging_params, requested_fields
from .schemas import only_fields, public_profile

log = logging.getLogger(__name__)

bp = Blueprint("users", __name__)


@bp.get("/users")
@require_oauth("read:users")
@with_organization
def list_users(org_id: str):
    """All members of the caller's organization, streamed as one JSON array (with just the
    fields named in ``fields``, if any); or one page of them, when the client asks with Auth0's
    paging parameters (answered as Auth0 would). The query is checked before Auth0 is asked.

    The first page is read before the answer starts, so the usual failures keep their status.
    """
    paging, fields = paging_params(request.args), requested_fields(request.args)
    if paging is not None:
        if beyond_member_fields(fields):
            raise InvalidQuery("Query validation error: profile fields need the whole list.")
        return jsonify(member_page(org_id, paging, fields))
    if fields is None:
        pages = directory().member_pages(org_id, fresh=wants_fresh_read())
    else:
        pages = directory().member_fields_pages(org_id, fields, fresh=wants_fresh_read())
    first_page = next(pages, "")
    body = stream_with_context(json_array([first_page], pages))
    return Response(body, mimetype="application/json")


@bp.get("/users/<path:user_id>")
@require_oauth("read:users")
@with_organization
def get_user(org_id: str, user_id: str):
    """A member's full profile; 404 for anyone else."""
    profile = directory().member_profile(org_id, user_id, fresh=wants_fresh_read())
    return jsonify(public_profile(profile))


def member_page(org_id: str, paging: dict, fields: list[str] | None) -> dict | list:
    """One page in Auth0's shape: a bare array unless totals or a checkpoint were asked for."""
    include_totals = paging.pop("include_totals", False)
    page = directory().member_page(org_id, paging)
    if fields is not None:
        page["members"] = [only_fields(member, fields) for member in page["members"]]
    if "take" in paging or include_totals:
        return page
    return page["members"]


def json_array(*page_sources: Iterable[str]) -> Iterator[str]:
    """The members as one JSON array, a chunk per page (pages come as JSON fragments).

    Should a page fail after the answer started, the stream stops without its closing bracket
    and the server drops the connection: the client cannot take it for a complete list.
    """
    separator = ""
    yield "["
    try:
        for pages in page_sources:
            for fragment in pages:
                if fragment:
                    yield separator + fragment
                    separator = ","
    except APIError as error:
        log.error("member list cut off mid-stream: %s", error.reason)
        raise
    yield "]"


def wants_fresh_read() -> bool:
    """``Cache-Control: no-cache`` asks for a fresh read; honoured once per interval per client."""
    return bool(request.cache_control.no_cache) and directory().may_read_fresh(
        current_token.client_id
    )


def directory() -> Directory:
    return current_app.extensions["directory"]
