"""Limits on what a request may carry, enforced before any other work."""

from __future__ import annotations

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

# The proxy's endpoints take no body; anything large is at best a mistake.
MAX_BODY_BYTES = 1024 * 1024


def init_app(app: Flask) -> None:
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.before_request(refuse_oversized_body)


def refuse_oversized_body() -> None:
    """:raise 413: a body over 1 MiB, whether announced by Content-Length or sent chunked."""
    if request.content_length is not None:
        size = request.content_length
    elif request.headers.get("Transfer-Encoding"):
        # Werkzeug truncates a chunked body at MAX_CONTENT_LENGTH without a word: count it here.
        size = len(request.environ["wsgi.input"].read(MAX_BODY_BYTES + 1))
    else:
        return
    if size > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
