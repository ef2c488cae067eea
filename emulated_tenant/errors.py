"""Error responses shaped like Auth0's, so clients parse them as they would in production."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class Auth0Error(Exception):
    """A Management API error: answered as ``{"statusCode", "error", "message", "errorCode"}``."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        *,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.attributes = attributes

    def body(self) -> dict[str, Any]:
        """The JSON body Auth0 sends for this error."""
        body: dict[str, Any] = {
            "statusCode": self.status,
            "error": HTTPStatus(self.status).phrase,
            "message": self.message,
        }
        if self.error_code:
            body["errorCode"] = self.error_code
        if self.attributes:
            body["attributes"] = self.attributes
        return body


class NotFound(Auth0Error, KeyError):
    """A 404 for an id the tenant does not have. In-process callers catch it as the KeyError the
    tenant's methods raise for unknown ids; over HTTP it is answered as Auth0 answers."""

    def __str__(self) -> str:
        return self.message  # not KeyError's quoted repr


class Conflict(Auth0Error, ValueError):
    """A 409 for a write that would duplicate what exists; in-process callers catch it as a
    ValueError."""


class OAuthError(Exception):
    """An Authentication API error, answered as ``{"error", "error_description"}`` (RFC 6749)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        """The JSON body Auth0's /oauth/token sends for this error."""
        return {"error": self.error, "error_description": self.description}


def not_found() -> Auth0Error:
    """What Auth0 answers for a route it does not have."""
    return Auth0Error(404, "Not Found", "not_found")


def inexistent_user() -> Auth0Error:
    """404 for a user id the tenant does not have."""
    return Auth0Error(404, "The user does not exist.", "inexistent_user")


def inexistent_organization() -> NotFound:
    """404 for an organization id the tenant does not have."""
    return NotFound(404, "No organization found by that id or name", "inexistent_organization")


# Auth0 publishes no wording for the client-grant answers below: the messages and the codes are
# the emulator's, worded like its other "does not exist" 404s (inexistent_client, inexistent_user).
def inexistent_client_grant() -> NotFound:
    """404 for a client grant id the tenant does not have."""
    return NotFound(404, "The client grant does not exist.", "inexistent_client_grant")


def client_grant_not_associated() -> NotFound:
    """404 for removing a client grant from an organization it is not associated with."""
    return NotFound(
        404, "The client grant is not associated with this organization.", "inexistent_client_grant"
    )


def client_grant_already_associated() -> Conflict:
    """409 for associating a client grant with an organization a second time."""
    return Conflict(
        409, "The client grant is already associated with this organization.", "conflict"
    )


def invalid_body(message: str) -> Auth0Error:
    """400 for a request body Auth0 refuses; Auth0's docs list ``invalid_body`` for every such
    refusal ("The message will vary depending on the cause")."""
    return Auth0Error(400, message, "invalid_body")


def payload_error(rule: str, path: str) -> Auth0Error:
    """400 for a body that breaks its operation's schema, worded as Auth0 words it, e.g.
    ``Payload validation error: 'Additional properties not allowed: x' on property options.``"""
    where = f" on property {path}" if path else ""
    return invalid_body(f"Payload validation error: '{rule}'{where}.")


def invalid_token(message: str = "Invalid token") -> Auth0Error:
    """401 for a bearer token the Management API will not accept."""
    return Auth0Error(401, message, attributes={"error": message})


def insufficient_scope(accepted_scopes: tuple[str, ...]) -> Auth0Error:
    """403 when the token lacks every scope the operation accepts."""
    expected = ",".join(accepted_scopes)
    return Auth0Error(403, f"Insufficient scope, expected any of: {expected}", "insufficient_scope")


def query_error(message: str) -> Auth0Error:
    """400 for a query string the published spec does not allow."""
    return Auth0Error(400, message, "invalid_query_string")


def generic_error(status: int) -> Auth0Error:
    """An Auth0-shaped error for an arbitrary status (used by fault injection)."""
    phrase = HTTPStatus(status).phrase
    return Auth0Error(status, phrase, phrase.lower().replace(" ", "_"))


# The Events API's refusals of an offset: the codes are the spec's
# (EventStreamCloudEventErrorCodeEnum); Auth0 publishes no wording, so the messages are ours.
def invalid_cursor() -> Auth0Error:
    """400 for a ``from`` or ``Last-Event-ID`` that is not an offset of this tenant's events."""
    return Auth0Error(400, "The offset is not one of this tenant's events.", "invalid_cursor")


def cursor_expired() -> Auth0Error:
    """410 for an offset whose following events are no longer kept: reconcile, then resume
    from a newer offset."""
    return Auth0Error(410, "The events after this offset are no longer kept.", "cursor_expired")
