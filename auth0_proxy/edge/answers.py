"""How both edge surfaces answer from the directory: the answer's freshness in ``Age`` and
``Cache-Status`` (RFC 9111, RFC 9211) and in the request's scope, its ``ETag`` and 304, and a
member list as one JSON array: streamed page by page, or sent whole when it comes from the cache
and is small."""

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
# A member list read from the cache (its pages in this process's memory or the store, none from
# Auth0) up to this size is sent as one body with its Content-Length: streaming it would cost
# the server a write per page and gain the client nothing. About 2,000 members.
WHOLE_LIST_BYTES = 256 * 1024


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
    that has none of them yet; its freshness also in the request's scope, for the metrics. A
    member list from the cache whose digest is its ``ETag`` is sent whole if it is small."""
    freshness = current_scope().freshness = answer.freshness
    headers = response.headers
    # Added, not set: setting one looks for others of its name first, in every header.
    headers.add("Age", str(freshness.age))
    if freshness.ttl is None:
        headers.add("Cache-Status", f"{CACHE_NAME}; fwd=miss")
    else:
        headers.add("Cache-Status", f"{CACHE_NAME}; hit; ttl={freshness.ttl}")
        if answer.etag is not None and isinstance(response, JSONArrayResponse):
            response.send_whole_if_small()
    if answer.etag is not None:
        headers.add("ETag", quote_etag(answer.etag))
    return response


def json_array_response(pages: Iterator[str]) -> Response:
    """Pages of JSON text streamed as one array. The first page is read before the answer
    starts, so that the usual failures keep their status."""
    return JSONArrayResponse(next(pages, ""), pages)


class JSONArrayResponse(Response):
    """Pages of JSON text (array items joined by commas) answered as one JSON array: streamed,
    with the request's context (the log line is written once the last page is sent), unless
    ``send_whole_if_small`` makes it one body."""

    def __init__(self, first_page: str, pages: Iterator[str]):
        self._first_page = first_page
        self._read_ahead: list[str] = []  # the pages after the first, read before the stream
        self._pages = pages
        self._failure: Exception | None = None
        stream = stream_with_context(json_array(first_page, self._rest()))
        super().__init__(stream, mimetype="application/json")

    def send_whole_if_small(self) -> None:
        """Read the pages while they fit in ``WHOLE_LIST_BYTES``; all read, send them as one
        body. Otherwise stream: those read, then the rest; a page that fails is raised where it
        would have been, after those before it were sent (the list is cut off, as it would be)."""
        if request.method == "HEAD":  # no body is sent
            return
        size = len(self._first_page)
        try:
            for page in self._pages:
                self._read_ahead.append(page)
                size += len(page)
                if size > WHOLE_LIST_BYTES:
                    return
        except Exception as failure:  # raised in the stream, in its turn
            self._failure = failure
            return
        self.response.close()  # the stream, not started: no context was pushed for it
        items = ",".join(page for page in [self._first_page, *self._read_ahead] if page)
        self.set_data(f"[{items}]".encode())

    def _rest(self) -> Iterator[str]:
        yield from self._read_ahead
        if self._failure is not None:
            raise self._failure
        yield from self._pages


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
