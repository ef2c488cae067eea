"""Every error the proxy answers, in the shape the Auth0 Management API uses.

``{"statusCode": 401, "error": "Unauthorized", "message": "...", "errorCode": "invalid_token"}``.
The exceptions carry only what the caller may see; ``reason`` is for the log line alone.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from . import metrics
from .scope import request_scope

log = logging.getLogger("auth0_proxy.errors")

REALM = "auth0-m2m-proxy"


class APIError(Exception):
    """An answer for the caller: status, Auth0 ``errorCode`` and a message safe to show."""

    status_code = 500
    error_code = "internal_error"
    message = "The proxy could not complete the request."

    def __init__(self, message: str | None = None, *, reason: str | None = None, headers=None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.reason = reason or self.message
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return error_body(self.status_code, self.message, self.error_code)

    @property
    def metric_code(self) -> str:
        """How the refusals metric names it: its error code, unless a subclass says more."""
        return self.error_code


class BearerChallenge(APIError):
    """An error that tells the client how to authenticate (RFC 6750 section 3)."""

    def __init__(self, message: str | None = None, **kwargs):
        super().__init__(message, **kwargs)
        params = [f'realm="{REALM}"', *self.challenge_params()]
        self.headers.setdefault("WWW-Authenticate", "Bearer " + ", ".join(params))

    def challenge_params(self) -> list[str]:
        return [f'error="{self.error_code}"']


class TokenMissing(BearerChallenge):
    status_code = 401
    error_code = "invalid_token"
    message = "Missing bearer token: send 'Authorization: Bearer <access token>'."

    def challenge_params(self) -> list[str]:
        return []  # RFC 6750 section 3.1: no error code when the request lacks credentials


class TokenRejected(BearerChallenge):
    status_code = 401
    error_code = "invalid_token"
    message = "Invalid token."

    def challenge_params(self) -> list[str]:
        return [*super().challenge_params(), f'error_description="{_quoted(self.message)}"']


class TokenInQueryString(BearerChallenge):
    status_code = 400
    error_code = "invalid_request"
    message = (
        "Send the access token in the Authorization header, not in the URL (URLs end up in logs)."
    )


class InsufficientScope(BearerChallenge):
    status_code = 403
    error_code = "insufficient_scope"

    def __init__(self, scope: str, **kwargs):
        self.scope = scope
        super().__init__(f"Insufficient scope, expected: {scope}.", **kwargs)

    def challenge_params(self) -> list[str]:
        return [*super().challenge_params(), f'scope="{_quoted(self.scope)}"']


class OrganizationDenied(APIError):
    status_code = 403
    error_code = "access_denied"
    message = "This client may not access any organization through the proxy."


class UserNotFound(APIError):
    status_code = 404
    error_code = "inexistent_user"
    message = "The user does not exist."


class OrganizationNotFound(APIError):
    """Auth0's answer for an unknown organization: also what another organization's id gets,
    so a caller cannot learn that it exists."""

    status_code = 404
    error_code = "inexistent_organization"
    message = "No organization found by that id or name"


class OperationNotAllowed(APIError):
    """A Management API operation outside the proxy's rule table, or a write this client may
    not make: refused before Auth0 is asked."""

    status_code = 403
    error_code = "operation_not_allowed"
    message = "This operation is not available through the organization proxy."


class InvalidBody(APIError):
    status_code = 400
    error_code = "invalid_body"
    message = "Payload validation error: the body must be a JSON object."


class SharedUser(APIError):
    status_code = 409
    error_code = "user_in_other_organizations"
    message = (
        "The user also belongs to other organizations, so the proxy will not delete it; remove "
        "it from this organization with DELETE /api/v2/organizations/{id}/members instead."
    )


class Relayed(APIError):
    """Auth0's own refusal of a request the proxy made for the caller (a body Auth0 found
    invalid, an invitation it does not have), passed on as Auth0 worded it."""

    def __init__(self, status: int, body: dict, *, reason: str):
        self.status_code = status
        self.error_code = str(body.get("errorCode") or HTTP_STATUS_CODES.get(status, "error"))
        super().__init__(str(body.get("message") or HTTP_STATUS_CODES.get(status)), reason=reason)


class TooManyRequests(APIError):
    status_code = 429
    error_code = "too_many_requests"
    message = "Auth0 is rate limiting the proxy; retry after the time in Retry-After."


class InvalidCursor(APIError):
    status_code = 400
    error_code = "invalid_query_string"
    message = "The 'since' cursor is not one this proxy gave out; sync in full with GET /users."


class ChangesExpired(APIError):
    status_code = 410
    error_code = "cursor_expired"
    message = (
        "The changes since this cursor are no longer kept; sync in full with GET /users and "
        "start again from a new cursor."
    )


class UpstreamFailed(APIError):
    status_code = 502
    error_code = "bad_gateway"
    message = "Auth0 answered the proxy with an error."


class CachedPageMissing(UpstreamFailed):
    message = "The list expired while it was being read; ask again."


class UpstreamUnavailable(APIError):
    status_code = 503
    error_code = "temporarily_unavailable"
    message = "The proxy cannot reach Auth0 right now."


class UpstreamTimeout(APIError):
    status_code = 504
    error_code = "gateway_timeout"
    message = "Auth0 did not answer the proxy in time."


def error_body(status: int, message: str, error_code: str) -> dict:
    return {
        "statusCode": status,
        "error": HTTP_STATUS_CODES.get(status, "Error"),
        "message": message,
        "errorCode": error_code,
    }


def init_app(app: Flask) -> None:
    """Answer every error, ours or Werkzeug's, as Auth0-style JSON; never a traceback."""
    app.register_error_handler(APIError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)


def _handle_api_error(error: APIError):
    _record(error.reason, error.error_code)
    metrics.REFUSALS.labels(str(error.status_code), error.metric_code).inc()
    return jsonify(error.body()), error.status_code, error.headers


def _handle_http_exception(error: HTTPException):
    code = (HTTP_STATUS_CODES.get(error.code, "error")).lower().replace(" ", "_")
    _record(error.description, code)
    metrics.REFUSALS.labels(str(error.code), code).inc()
    body = error_body(error.code or 500, error.description or "", code)
    headers = [(name, value) for name, value in error.get_headers() if name == "Allow"]
    return jsonify(body), error.code, headers


def _handle_unexpected(error: Exception):
    log.exception("unexpected error")
    _record(f"unexpected {type(error).__name__}", APIError.error_code)
    metrics.REFUSALS.labels("500", APIError.error_code).inc()
    return jsonify(APIError().body()), 500


def _record(reason: str | None, error_code: str) -> None:
    """The refusal in the request's scope, for its log and audit lines."""
    scope = request_scope()
    if scope is not None:
        scope.denial_reason, scope.error_code = reason, error_code


def _quoted(text: str) -> str:
    """Make text safe inside a quoted-string of a WWW-Authenticate header."""
    return text.replace("\\", "").replace('"', "'")
