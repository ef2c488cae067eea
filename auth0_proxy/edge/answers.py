"""How both edge surfaces answer from the directory: the answer's freshness in ``Age`` and
``Cache-Status`` (RFC 9111, RFC 9211) and in the request's scope, its ``ETag`` and 304, and a
member list as one JSON array: sent whole when the cache holds it so, else streamed page by
page."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Response, current_app, request, stream_with_context
from werkzeug.http import quote_etag

from auth0_proxy.core.errors import APIError
from auth0_proxy.core.scope import current_scope
from auth0_proxy.members.directory import Answer, Directory

log = logging.getLogger("auth0_proxy.users")

CACHE_NAME = "auth0-m2m-proxy"  # who answers, in Cache-Status


def not_modified(answer: Answer) -> Response | None:
    """304, with no body, when the client's ``If-None-Match`` holds the answer's entity tag."""
    if answer.etag is None or "HTTP_IF_NONE_MATCH" not in request._get_current_object().environ:
        return None  # (no header: nothing to parse)
    if not request.if_none_match.contains_weak(answer.etag):
        return None
    if hasattr(answer.body, "close"):
        answer.body.close()  # pages never read
    return described(Response(status=304), answer)


def described(response: Response, answer: Answer) -> Response:
    """The answer's ``Age``, ``Cache-Status`` and ``ETag`` added to ``response``, a new one
    that has none of them yet; its freshness also in the request's scope, for the metrics."""
    freshness = current_scope().freshness = answer.freshness
    headers = response.headers
    # Added, not set: setting one looks for others of its name first, in every header.
    headers.add("Age", str(freshness.age))
    if freshness.ttl is None:
        headers.add("Cache-Status", f"{CACHE_NAME}; fwd=miss")
    else:
        headers.add("Cache-Status", f"{CACHE_NAME}; hit; ttl={freshness.ttl}")
    if answer.etag is not None:
        headers.add("ETag", quote_etag(answer.etag))
    return response


def json_array_response(pages: Iterator[str]) -> Response:
    """Pages of JSON text streamed as one array. The first page is read before the answer
    starts, so that the usual failures keep their status."""
    first_page = next(pages, "")
    return Response(stream_with_context(json_array(first_page, pages)), mimetype="application/json")


def member_list_response(answer: Answer) -> Response:
    """The member list: one body with its length when the cache holds it whole, else streamed.
    ``HEAD`` streams nothing either way."""
    if answer.whole is not None:
        answer.body.close()  # its pages, never read
        return Response(answer.whole, mimetype="application/json")
    return json_array_response(answer.body)


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


def directory() -> Directory:
    return current_app._get_current_object().extensions["directory"]
