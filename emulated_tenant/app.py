"""The tenant's HTTP face: one dispatcher in front of Flask's router, and Auth0-shaped errors.

Every request walks one way: raw URI → route (routes.ROUTES) → latency → rate limits (/api/v2:
its endpoint group's bucket, the whole API's, set_rate_limit's) → injected fault → bearer token
and scope → path, query and body validation (/api/v2) → handler → JSON with the route's status
(or the handler's own Response: the Events API's stream).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import http_date

from . import routing
from .errors import Auth0Error, OAuthError, insufficient_scope, invalid_token, not_found
from .payload import request_body, validate_body
from .query import Operation, operations, validate_path, validate_query
from .ratelimit import endpoint_group, throttled_decision, unlimited_decision
from .routes import ROUTES
from .routing import Call, RouteMatch
from .tenant import Tenant
from .tokens import TokenRejected

EXTENSION_KEY = "emulated_tenant"


def create_app(tenant: Tenant) -> Flask:
    """A Flask app serving ``tenant``; every answer, errors included, is JSON (but for the
    Events API's stream)."""
    app = Flask(__name__)
    app.extensions[EXTENSION_KEY] = tenant
    app.json.sort_keys = False  # type: ignore[attr-defined]
    register_dispatcher(app)
    register_error_handlers(app)
    register_request_log(app)
    return app


def register_dispatcher(app: Flask) -> None:
    """Answer from ``before_request`` so Flask's decoding router never sees the ids."""
    app.before_request(dispatch)


def register_error_handlers(app: Flask) -> None:
    """Auth0-shaped JSON for every failure; never an HTML page or a traceback."""
    app.register_error_handler(Auth0Error, _auth0_error_response)
    app.register_error_handler(OAuthError, _oauth_error_response)
    app.register_error_handler(HTTPException, _http_exception_response)
    app.register_error_handler(Exception, _unexpected_error_response)


def register_request_log(app: Flask) -> None:
    """Rate-limit headers on /api/v2 answers, and the tenant's request counters."""
    app.after_request(finish_response)
    app.teardown_request(lambda error: _tenant().request_ended())


def dispatch() -> Response:
    """Answer any request; unknown routes are a JSON 404, never Flask's HTML one."""
    tenant = _tenant()
    tenant.request_started()
    raw_uri = routing.raw_request_uri(request.environ)
    raw_path, raw_query = routing.split_raw_uri(raw_uri)
    match = ROUTES.match(request.method, raw_path)
    g.raw_uri = raw_uri
    g.endpoint = match.endpoint if match else None
    if tenant.latency > 0:
        time.sleep(tenant.latency)
    if routing.is_management_path(raw_path):
        g.group = endpoint_group(request.method, raw_path)
        g.rate_limit = tenant.take_rate_limit_token(g.group)
        if not g.rate_limit.allowed:
            # The body a real tenant sends (auth0-extensions/auth0-reset-tenant#31); Auth0
            # publishes no other body for an endpoint group's bucket, so every bucket sends it.
            raise Auth0Error(429, "Global limit has been reached", "too_many_requests")
    if match is None:
        raise not_found()
    fault_response = _injected_fault(tenant, match.endpoint)
    if fault_response is not None:
        return fault_response
    if match.route.is_management:
        call = _management_call(tenant, match, raw_query)
    else:
        call = Call(match.params, dict(parse_qsl(raw_query)), _body_params())
    return _answer(match.route.handler(tenant, call), match.route.status)


def finish_response(response: Response) -> Response:
    """Add rate-limit headers and record the request with its final status."""
    decision = g.get("rate_limit")
    if decision is not None:
        response.headers.update(decision.headers())
    response.headers["Date"] = http_date()
    response.headers.update(g.get("fault_headers") or {})
    raw_uri = g.get("raw_uri") or routing.raw_request_uri(request.environ)
    _tenant().record_request(
        request.method,
        raw_uri,
        g.get("endpoint"),
        response.status_code,
        g.get("group"),
        user_agent=request.headers.get("User-Agent"),
    )
    return response


def _management_call(tenant: Tenant, match: RouteMatch, raw_query: str) -> Call:
    """The call a Management handler gets, once token, path, query and body satisfy its
    operation (an operation without a request body ignores any body sent)."""
    operation = operations()[match.endpoint]
    _authorize(tenant, operation)
    validate_path(operation, match.params)
    pairs = parse_qsl(raw_query, keep_blank_values=True, errors="replace")
    query = validate_query(operation, pairs)
    if operation.body_schema is None:
        return Call(match.params, query, headers=request.headers)
    body = validate_body(operation, request_body(request))
    return Call(match.params, query, body, request.headers)


def _answer(body: Any, status: int) -> Response:
    """The handler's body as JSON, or for 204 nothing at all (no body, no content type); a
    Response of the handler's own (a stream) as it is."""
    if isinstance(body, Response):
        return body
    if status == 204:
        response = Response(status=204)
        del response.headers["Content-Type"]
        return response
    return _json_response(body, status)


def _authorize(tenant: Tenant, operation: Operation) -> None:
    """:raise 401: no, malformed, forged, expired or revoked token. :raise 403: missing scope."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise Auth0Error(401, "Missing authentication")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise invalid_token()
    try:
        claims = tenant.authenticate_management_token(token.strip())
    except TokenRejected as rejection:
        raise invalid_token(str(rejection)) from None
    granted = set(str(claims.get("scope", "")).split())
    if not granted.intersection(operation.scopes):
        raise insufficient_scope(operation.scopes)


def _body_params() -> dict[str, str]:
    """Form or JSON body; client credentials may also come as HTTP Basic (client_secret_basic)."""
    if request.is_json:
        body = request.get_json(silent=True)
        source = body if isinstance(body, dict) else {}
    else:
        source = request.form.to_dict()
    params = {name: value for name, value in source.items() if isinstance(value, str)}
    if request.authorization and request.authorization.type == "basic":
        params.setdefault("client_id", request.authorization.username or "")
        params.setdefault("client_secret", request.authorization.password or "")
    return params


def _injected_fault(tenant: Tenant, endpoint: str) -> Response | None:
    """The injected answer for this call, after its delay; None lets the call proceed."""
    fault = tenant.take_fault(endpoint)
    if fault is None:
        return None
    if fault.delay > 0:
        time.sleep(fault.delay)
    if fault.status is None:
        return None
    if fault.status == 429:
        current = g.get("rate_limit") or unlimited_decision()
        g.rate_limit = throttled_decision(current.limit)
    response = jsonify(fault.error_body())
    response.status_code = fault.status
    g.fault_headers = fault.headers
    return response


def _tenant() -> Tenant:
    return current_app.extensions[EXTENSION_KEY]


def _json_response(body: Any, status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _auth0_error_response(error: Auth0Error) -> Response:
    return _json_response(error.body(), error.status)


def _oauth_error_response(error: OAuthError) -> Response:
    return _json_response(error.body(), error.status)


def _http_exception_response(error: HTTPException) -> Response:
    error_code = error.name.lower().replace(" ", "_")
    return _auth0_error_response(Auth0Error(error.code or 500, error.name, error_code))


def _unexpected_error_response(error: Exception) -> Response:
    current_app.logger.debug("emulated tenant failed", exc_info=error)
    return _auth0_error_response(Auth0Error(500, "Internal Server Error", "internal_error"))
