"""gunicorn's threaded worker and logger, keeping the proxy's promises where the app is not asked.

gunicorn itself refuses requests that are not valid HTTP or exceed its limits (a request line
over ``limit_request_line``, too many or too large headers). Its answer is an HTML page and its
log line quotes the offending input, which may hold a token. Here the answer is Auth0-style JSON
that echoes nothing, and gunicorn's own lines (boot, workers, errors: master's and workers')
are written like the app's, JSON by default, through the same token redaction.
"""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from auth0_proxy.core.errors import error_body

from . import logs
from .logs import RedactingFormatter

MESSAGES = {
    400: "The request is not valid HTTP.",
    403: "The request is forbidden.",
    414: "The request line is too long.",
    417: "The expectation cannot be met.",
    431: "The request's header fields are too large.",
    501: "The request's transfer coding is not supported.",
}


class ProxyWorker(ThreadWorker):
    """``gthread`` with JSON error answers and redacted log lines."""

    def init_process(self) -> None:
        # gunicorn's handle_error calls util.write_error by module lookup; in this worker process
        # every such answer is ours.
        util.write_error = write_json_error
        super().init_process()


class ProxyLogger(Logger):
    """gunicorn's logger (``logger_class``), writing the app's JSON lines, or with
    ``LOG_FORMAT=text`` its own lines redacted."""

    def _set_handler(self, log, output, fmt, stream=None):
        fmt = logs.formatter("json") if logs.log_format() == "json" else RedactingFormatter(fmt)
        super()._set_handler(log, output, fmt, stream)


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Answer gunicorn's refusal like the app answers errors; ``mesg`` (the input) is dropped."""
    code = reason.lower().replace(" ", "_")
    message = MESSAGES.get(status_int, "The request cannot be processed.")
    body = json.dumps(error_body(status_int, message, code)).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + body)
