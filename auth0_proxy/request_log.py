"""One log line per request, in JSON (or plain text for development).

The line carries who called (client and organization, from the verified token), what, the answer
and how many calls it cost upstream. It never carries a token, a secret or a header value: the
fields are chosen here, not copied from the request.
"""

from __future__ import annotations

import logging
import random
import re
import sys
import time

from flask import Flask, g, has_app_context, request

from .json_codec import ascii_dumps

log = logging.getLogger("auth0_proxy.request")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
REQUEST_FIELDS = (
    "request_id",
    "client_id",
    "org_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "upstream_calls",
    "reason",
)


# Anything shaped like a JWT or a credential. Separators may be percent-encoded ("%2E" for
# "."), as they are when a caller's URL is quoted back.
SECRET_PATTERN = re.compile(
    r"eyJ[A-Za-z0-9_-]*(?:\.|%2[Ee])[A-Za-z0-9_-]*(?:\.|%2[Ee])[A-Za-z0-9_-]*"  # a JWS or JWT
    r"|(?i:(?:bearer|basic)\s+)[A-Za-z0-9._~+/=%-]+"  # an Authorization credential
    r"|(?i:access(?:_|%5F)token|client(?:_|%5F)secret)(?:=|%3D)[^&\s'\"]+"  # in a query or form
)
# Every match of SECRET_PATTERN in ASCII text contains one of these, in lower case, so such a
# text without any (most log lines) needs no regular expression. The pattern's case-insensitive
# parts also match a few non-ASCII letters (U+017F for "s"), so other text always goes through it.
SECRET_MARKERS = ("eyj", "bearer", "basic", "token", "secret")


def redact(text: str) -> str:
    """The text with every secret-shaped part replaced by ``[redacted]``.

    The proxy never logs a token on purpose; this catches the accidents (a library quoting a
    request line, a traceback quoting a header, a caller's token in a path), so no log line
    can carry a usable secret.
    """
    if text.isascii() and not any(marker in text.lower() for marker in SECRET_MARKERS):
        return text
    return SECRET_PATTERN.sub("[redacted]", text)


class RedactingFormatter(logging.Formatter):
    """Wraps another formatter (gunicorn's) and redacts its whole output, tracebacks included."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


class JsonFormatter(logging.Formatter):
    """A JSON object per line: time, level, logger, worker pid, message, request fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        line.update({key: getattr(record, key) for key in REQUEST_FIELDS if hasattr(record, key)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # Every text is redacted (the path and the reason are caller input too) before it is
        # encoded: redacting encoded JSON could cut an escape in two, or miss a credential
        # whose separator the encoding escaped.
        return ascii_dumps({key: _redacted(value) for key, value in line.items()})


def _redacted(value):
    """A log field as it may be written: numbers as they are, anything else as redacted text."""
    if value is None or isinstance(value, int | float):
        return value
    return redact(str(value))


JsonFormatter.converter = time.gmtime


class TextFormatter(logging.Formatter):
    """Readable lines for ``flask run``: the message, then the request fields that are set."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={getattr(record, key)}" for key in REQUEST_FIELDS if hasattr(record, key)
        )
        return redact(f"{super().format(record)} {fields}".rstrip())


def configure_logging(level: str, fmt: str) -> None:
    """Send the proxy's logs to stderr, one line per record, in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "text":
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("auth0_proxy")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def count_upstream_call() -> None:
    """Called by the Upstream pool for each call to Auth0 made while serving a request."""
    if has_app_context():
        g.upstream_calls = g.get("upstream_calls", 0) + 1


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)


def _start() -> None:
    g.started = time.perf_counter()
    supplied = request.headers.get("X-Request-ID", "")
    # A caller's id is kept only if it is harmless in a log line and a header.
    g.request_id = supplied if REQUEST_ID.match(supplied) else new_request_id()
    g.upstream_calls = 0


def new_request_id() -> str:
    """128 random bits in hex, like a uuid4 but without a system call: an id to find a request
    by in the logs, not a secret (``random`` is reseeded in each forked worker)."""
    return f"{random.getrandbits(128):032x}"


def _finish(response):
    response.headers["X-Request-ID"] = g.request_id
    status = response.status_code
    # Refusals (401, 403, and the 404 that hides another organization's user) are warnings.
    level = logging.INFO
    if status >= 500:
        level = logging.ERROR
    elif status >= 400:
        level = logging.WARNING
    caller = g.get("caller")
    fields = {
        "request_id": g.request_id,
        "client_id": g.get("client_id"),
        "org_id": caller.org_id if caller is not None else None,
        "method": request.method,
        "path": request.path[:512],
        "status": status,
        "duration_ms": round((time.perf_counter() - g.started) * 1000, 1),
        "upstream_calls": g.upstream_calls,
    }
    if status >= 400:
        fields["reason"] = g.get("denial_reason")
    log.log(level, "request", extra=fields)
    return response
