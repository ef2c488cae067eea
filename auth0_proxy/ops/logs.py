"""How the proxy's log lines are written: JSON (or text for development), redacted, one write each.

Every line of the proxy's loggers passes through ``redact`` (and gunicorn's, through the proxy's
worker), so no line can carry a usable token or secret. A line is written with a single
``write``, so the lines of the threads and workers sharing one log do not mix.
"""

from __future__ import annotations

import io
import logging
import os
import re
import select
import sys
import time

import orjson

from auth0_proxy.core.json_codec import ascii_dumps

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
# Every character that ends a line somewhere (str.splitlines, a terminal, a log viewer) or
# controls a terminal: C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def redact(text: str) -> str:
    """The text with every secret-shaped part replaced by ``[redacted]``.

    The proxy never logs a token on purpose; this catches the accidents (a library quoting a
    request line, a traceback quoting a header, a caller's token in a path).
    """
    if _plainly_safe(text):
        return text
    return SECRET_PATTERN.sub("[redacted]", text)


def escape_controls(text: str) -> str:
    """The text with each control character written as Python writes it in a string: ``\\n``,
    ``\\x1b``, ``\\u2028``."""
    return CONTROLS.sub(lambda match: repr(match.group())[1:-1], text)


def _plainly_safe(text: str) -> bool:
    lowered = text.lower()
    return text.isascii() and not any(marker in lowered for marker in SECRET_MARKERS)


class JsonFormatter(logging.Formatter):
    """A JSON object per line: time, level, logger, pid, message, and the record's ``fields``
    (the request's, on an access line)."""

    def __init__(self):
        super().__init__()
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(
            record.created, record.levelname, record.name, record.getMessage(), record.process
        )
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self.encode(line)

    def line(self, created: float, level: str, logger: str, message: str, pid: int | None) -> dict:
        """The fields every line starts with."""
        return {
            "time": self._time(created),
            "level": level,
            "logger": logger,
            "pid": pid or os.getpid(),
            "message": message,
        }

    def encode(self, line: dict) -> str:
        """The line as JSON, ASCII, every text in it redacted."""
        encoded = _orjson_or_none(line)
        # Encoding copies letters as they are, so a text holding a marker shows it in the JSON
        # too: the JSON is checked whole, as text (faster to search than bytes).
        text = encoded.decode() if encoded is not None else None
        if text is not None and _plainly_safe(text):
            return text  # plain ASCII, nothing secret-shaped: most lines
        # Every text is redacted (the path and the reason are caller input too) before it is
        # encoded: redacting encoded JSON could cut an escape in two, or miss a credential
        # whose separator the encoding escaped.
        return ascii_dumps({key: _redacted(value) for key, value in line.items()})

    def _time(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond; the part to the second is made once a second."""
        second, text = self._second
        if int(created) != second:
            second = int(created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int((created - second) * 1000):03d}Z"


def _orjson_or_none(line: dict) -> bytes | None:
    """orjson's encoding, which keeps non-ASCII text as it is (so it fails ``isascii``), or None
    where orjson refuses a value (``ascii_dumps`` then escapes, after redaction)."""
    try:
        return orjson.dumps(line, default=str)
    except orjson.JSONEncodeError:
        return None


def _redacted(value):
    if value is None or isinstance(value, int | float):
        return value
    return redact(str(value))


class TextFormatter(logging.Formatter):
    """Readable lines for ``flask run``: the message, then the record's fields that are set.

    A record is one line: a line break or other control character in the message or a field (a
    caller's path may hold one) is escaped, so no caller can forge a line. A traceback follows
    on lines of its own, each indented, so none of them can pass for a record either.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        fields = getattr(record, "fields", None) or {}
        text = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        # Redacted before it is escaped: the pattern's separators include line breaks.
        line = escape_controls(redact(f"{self.formatMessage(record)} {text}".rstrip()))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        details = [part for part in (record.exc_text, record.stack_info) if part]
        for detail in details:
            line += "".join(
                f"\n    {escape_controls(part)}" for part in redact(detail).splitlines()
            )
        return line


class RedactingFormatter(logging.Formatter):
    """Wraps another formatter (gunicorn's) and redacts its whole output, tracebacks included."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


class LineHandler(logging.Handler):
    """Writes each formatted record as one line with a single ``write`` to ``fd``.

    A write of at most ``PIPE_BUF`` bytes reaches a pipe or an appended file whole, so such
    lines need no lock: threads do not queue for one on every request. Longer lines (a
    traceback) are written one at a time under the handler's lock; on a pipe, a short line of
    another thread or process may still land between the pieces of one that takes more than one
    write.
    """

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record))
        except Exception:
            self.handleError(record)

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        written = os.write(self.fd, data) if len(data) <= select.PIPE_BUF else 0
        if written < len(data):
            with self.lock:
                data = data[written:]
                while data:
                    data = data[os.write(self.fd, data) :]


def json_line_handler(logger: logging.Logger, level: int) -> LineHandler | None:
    """The handler that alone writes ``logger``'s lines of ``level``, if it is the proxy's JSON
    one as ``configure_logging`` sets it up, with no filter on the way: such a line can be
    given to it directly, as it would format it. None in any other setup (a handler added, text
    lines): lines then go through logging."""
    parent = logger.parent
    if (
        logger.handlers
        or logger.filters
        or logger.disabled
        or not logger.propagate
        or parent is None
        or parent.filters
        or parent.propagate
        or len(parent.handlers) != 1
    ):
        return None
    handler = parent.handlers[0]
    if (
        type(handler) is not LineHandler
        or handler.filters
        or level < handler.level
        or type(handler.formatter) is not JsonFormatter
    ):
        return None
    return handler


def log_format() -> str:
    """``json`` (the default), or ``text`` where ``LOG_FORMAT`` says so."""
    return "text" if os.environ.get("LOG_FORMAT", "json") == "text" else "json"


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of every line, the proxy's and gunicorn's: both redact."""
    if fmt == "text":
        return TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return JsonFormatter()


def configure_logging(level: str, fmt: str) -> None:
    """Send the proxy's logs to stderr, one line per record, in the chosen format."""
    try:
        handler: logging.Handler = LineHandler(sys.stderr.fileno())
    except (AttributeError, io.UnsupportedOperation):  # stderr replaced by a stream (a REPL)
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    logger = logging.getLogger("auth0_proxy")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
