"""One log line per request: who called, what, the answer, and what it cost upstream.

Its facts are the request's scope (``scope.RequestScope``, made here for each request): who
called comes from the verified token (``access`` records the caller); the line never carries a
token, a secret or a header value: its fields are chosen here, not copied from the request.
Each request gets an id of the proxy's own, told in ``X-Request-ID``; the id a caller sent is
logged beside it (``caller_request_id``), never in its place.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time

from flask import Flask, Request, Response, current_app, g, request

from auth0_proxy.core import metrics
from auth0_proxy.core.scope import RequestScope, current_scope, request_scope
from auth0_proxy.ops import logs
from auth0_proxy.ops.health import PROBES

log = logging.getLogger("auth0_proxy.request")
STARTED = time.time()  # for records' relativeCreated, about when logging started

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def init_app(app: Flask) -> None:
    app.before_request(start)
    app.after_request(finish)
    app.teardown_request(end)


def start() -> None:
    """The request's scope, with its id."""
    supplied = request._get_current_object().environ.get("HTTP_X_REQUEST_ID")
    # The caller's id is logged beside the proxy's own, if it is harmless in a log line; it
    # never stands for the proxy's (a caller could give two requests the same).
    caller_id = supplied if supplied and REQUEST_ID.match(supplied) else None
    g._get_current_object().scope = RequestScope(new_request_id(), caller_id)
    metrics.IN_FLIGHT.inc()


def end(error: BaseException | None) -> None:
    """The request is over, its streamed body included (the context outlives the stream):
    its line is written now, with every upstream call it made."""
    request_globals = g._get_current_object()  # the context-local proxy resolved once
    scope = request_globals.get("scope")
    if scope is None:
        return
    scope.teardowns_left -= 1
    if scope.teardowns_left > 0:
        return  # a streamed answer, still to be sent
    del request_globals.scope
    metrics.IN_FLIGHT.dec()
    if scope.line is not None:
        level, fields = scope.line
        fields["duration_ms"] = round((time.perf_counter() - scope.started) * 1000, 1)
        fields["upstream_calls"] = scope.upstream_calls
        write_line(level, fields)


def write_line(level: int, fields: dict) -> None:
    """The request's line: given straight to the proxy's JSON handler when it alone writes it
    (the same line, without a record and the walk through the loggers), else through logging."""
    handler = logs.json_line_handler(log, level)
    if handler is None:
        log.handle(AccessRecord(level, fields))
        return
    formatter: logs.JsonFormatter = handler.formatter
    try:
        line = formatter.line(time.time(), logging.getLevelName(level), log.name, "request", None)
        line.update(fields)
        handler.write(formatter.encode(line))
    except Exception:
        handler.handleError(AccessRecord(level, fields))


def new_request_id() -> str:
    """128 random bits in hex, like a uuid4 but without a system call: an id to find a request
    by in the logs, not a secret (``random`` is reseeded in each forked worker)."""
    return f"{random.getrandbits(128):032x}"


def count_upstream_call() -> None:
    """Called by the Upstream pool for each call to Auth0, so a request's line can count them
    (a refresh in the background, outside any request, is counted by none)."""
    scope = request_scope()
    if scope is not None:
        scope.upstream_calls += 1


def finish(response: Response) -> Response:
    """Tell the request id, and make the line (written once the answer is finished, by
    ``end``): refusals (401, 403, and the 404 that hides another organization's user) as
    warnings, failures as errors, a probe's success (``/healthz``, ``/readyz``) as debug."""
    scope = current_scope()
    req = request._get_current_object()  # the context-local proxies resolved once each
    response.headers["X-Request-ID"] = scope.request_id
    status = response.status_code
    if status >= 500:
        level = logging.ERROR
    elif status >= 400:
        level = logging.WARNING
    elif status < 300 and req.endpoint in PROBES:
        level = logging.DEBUG
    else:
        level = logging.INFO
    if log.isEnabledFor(level):
        scope.line = (level, _fields(scope, req, status))
    if response.is_streamed and req.method != "HEAD":  # WSGI sends no body for HEAD
        scope.teardowns_left = 2
    _measure(scope, req, status)
    return response


def _measure(scope: RequestScope, req: Request, status: int) -> None:
    """The answer in the metrics: by route (an /api/v2 operation by its rule), status and,
    with ``proxy.metrics_per_client``, client; from the cache or not, by its freshness."""
    route = scope.route or (req.url_rule.rule if req.url_rule else "unmatched")
    app = current_app._get_current_object()
    client_id = scope.client_id if app.config["SETTINGS"].proxy.metrics_per_client else None
    if client_id is not None and not app.extensions["client_map"].knows(client_id):
        client_id = "other"  # bounded: only the mapped clients are labels of their own
    seconds = time.perf_counter() - scope.started
    metrics.observe_answer(route, req.method, status, client_id or "", seconds)
    metrics.observe_cache(scope.freshness, status)


class AccessRecord(logging.LogRecord):
    """The record of a request's line, when it goes through logging. What ``LogRecord`` works
    out for each record and no formatter of the proxy reads (the caller's file and line, the
    thread, the process name) is set to constants instead, all of it, as a formatter reads any
    attribute from ``__dict__``."""

    CONSTANT = {  # noqa: RUF012 - copied into each record, never changed
        "name": log.name,
        "msg": "request",
        "args": (),
        "pathname": __file__,
        "filename": "request_log.py",
        "module": "request_log",
        "lineno": 0,
        "funcName": "finish",
        "exc_info": None,
        "exc_text": None,
        "stack_info": None,
        "thread": None,
        "threadName": None,
        "processName": None,
        "taskName": None,
    }

    def __init__(self, level: int, fields: dict):
        self.__dict__.update(self.CONSTANT)
        self.created = time.time()
        self.msecs = (self.created - int(self.created)) * 1000
        self.relativeCreated = (self.created - STARTED) * 1000
        self.levelno = level
        self.levelname = logging.getLevelName(level)
        self.process = os.getpid()
        self.fields = fields


def _fields(scope: RequestScope, req: Request, status: int) -> dict:
    caller = scope.caller
    fields = {
        "request_id": scope.request_id,
        "caller_request_id": scope.caller_request_id,
        "client_id": scope.client_id,
        "org_id": caller.org_id if caller is not None else None,
        "method": req.method,
        "path": req.path[:512],
        "status": status,
        "duration_ms": None,  # both set by ``end``, once the answer is sent
        "upstream_calls": None,
    }
    if status >= 400:
        fields["reason"] = scope.denial_reason
    return fields
