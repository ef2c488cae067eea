"""JSON encoding for everything the proxy writes: answers, member pages and log lines.

orjson, chosen by measuring it against the standard library and msgspec on exactly these
payloads (`python -m bench.json_encoders`, part of `make bench`). Keys keep their order, as
Auth0 sends them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from flask.json.provider import JSONProvider


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. Types neither encoder knows are written as their ``str``.

    What orjson refuses and Auth0 data may hold (an integer beyond 64 bits, a lone surrogate
    in a name, a non-string key) is encoded by the standard library instead, escaped to ASCII.
    """
    try:
        return orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:
        return json.dumps(_finite(value), default=str, separators=(",", ":")).encode()


def loads(data: str | bytes) -> Any:
    """Parse JSON, whatever :func:`dumps` wrote: orjson refuses the escaped lone surrogates the
    standard library writes (a name Auth0 cut mid-emoji), so such text is parsed by the
    standard library, which keeps them as they were."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as refused:
        try:
            return json.loads(data)
        except RecursionError:  # nested past orjson's limit: refused, as orjson refused it
            raise refused from None


def json_fragment(items: list) -> str:
    """Items as JSON joined by commas: a slice of an array, to be streamed page by page."""
    return dumps(items)[1:-1].decode()


def ascii_dumps(value: Any) -> str:
    """JSON as plain ASCII, every other character escaped: for log lines, which a reader must
    not be able to split or disguise with a line separator (U+2028) taken from a caller's path."""
    text = dumps(value).decode()
    return text if text.isascii() else json.dumps(value, default=str, separators=(",", ":"))


def _finite(value: Any) -> Any:
    """The value with NaN and infinities as null, as orjson writes them (json writes NaN, which
    is not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


class FastJSONProvider(JSONProvider):
    """Flask's ``jsonify`` (and so every answer and error body) through :func:`dumps`."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)

    def response(self, *args: Any, **kwargs: Any):
        body = dumps(self._prepare_response_obj(args, kwargs))
        return self._app.response_class(body, mimetype="application/json")
