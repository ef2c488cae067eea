"""Limits on what a request may carry, enforced before any other work."""

from __future__ import annotations

from flask import Flask, request
from werkzeug.exceptions import LengthRequired, RequestEntityTooLarge

# The largest body a write of the Management API surface needs is a few kilobytes.
MAX_BODY_BYTES = 1024 * 1024


def init_app(app: Flask) -> None:
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.before_request(refuse_unwanted_body)


def refuse_unwanted_body() -> None:
    """:raise 413: a body over 1 MiB.
    :raise 411: a chunked body: its size is unknown until read, and reading it would let a
        client that never finishes hold a thread.
    """
    environ = request._get_current_object().environ
    if environ.get("HTTP_TRANSFER_ENCODING"):
        raise LengthRequired("Send the request body with Content-Length.")
    if environ.get("CONTENT_LENGTH") and (request.content_length or 0) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
