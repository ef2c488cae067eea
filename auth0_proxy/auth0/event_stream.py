"""Auth0's Events API: ``GET /api/v2/events``, a Server-Sent Events stream read with the proxy's
management token (permission ``read:events``).

Each message's ``id`` is an offset to resume from (``Last-Event-ID``, and ``from``); an
``offset-only`` message is a heartbeat carrying one (kept like any); ``retry`` says how long to
wait before reconnecting. What a ``data`` line holds is not spelled out by Auth0's prose: its
examples show the CloudEvent, its SDKs type it as ``{"offset", "event": CloudEvent}``; both are
read. Messages are parsed as the SSE specification says (html.spec.whatwg.org,
"server-sent events").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import requests

from auth0_proxy.core.auth0_api import EVENTS, api_path
from auth0_proxy.core.errors import APIError, UpstreamFailed

from .management import ManagementClient

# A stream that sends nothing (not even a heartbeat) for this long is opened again.
READ_TIMEOUT_SECONDS = 30.0


class OffsetGone(APIError):
    """Auth0 no longer keeps the events after the offset (410): reconcile, start afresh."""

    status_code = 410
    error_code = "offset_gone"


@dataclass(frozen=True)
class Message:
    """One SSE message: its type (``event``), the offset it carries (``id``), its data (the
    CloudEvent, unwrapped), and the reconnection time it sets (``retry``, milliseconds)."""

    event: str = "message"
    id: str | None = None
    data: dict | None = None
    retry: int | None = None


def open_stream(
    management: ManagementClient,
    *,
    offset: str | None,
    since: float | None,
    types: Iterable[str],
    connect_timeout: float,
) -> requests.Response:
    """The stream, open: after ``offset``; without one, from the time ``since`` (a first
    start); without either, from the latest event.

    :raise OffsetGone: the offset is no longer kept (410).
    :raise APIError: Auth0 refused the stream (401/403: the token or ``read:events``; 429).
    """
    params: list[tuple[str, str]] = [("event_type", event_type) for event_type in types]
    headers = {"Accept": "text/event-stream"}
    if offset:
        params.append(("from", offset))
        headers["Last-Event-ID"] = offset
    elif since is not None:
        moment = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        params.append(("from_timestamp", moment.replace("+00:00", "Z")))
    response = management.stream(
        api_path(EVENTS),
        params=params,
        headers=headers,
        timeout=(connect_timeout, READ_TIMEOUT_SECONDS),
    )
    if response.status_code == 410:
        response.close()
        raise OffsetGone(reason=f"Auth0 no longer keeps the events after offset {offset}")
    if response.status_code != 200:
        response.close()
        raise UpstreamFailed(reason=f"Auth0 answered {response.status_code} on GET {EVENTS}")
    return response


def messages(lines: Iterable[str]) -> Iterator[Message]:
    """The SSE messages of a stream's lines (decoded, without their line ends)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if not line:  # a blank line ends a message
            if data or fields:
                yield _message(fields, data)
            fields, data = {}, []
            continue
        if line.startswith(":"):  # a comment (":connected")
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name in ("event", "id", "retry"):
            fields[name] = value


def _message(fields: dict[str, str], data: list[str]) -> Message:
    retry = fields.get("retry", "")
    return Message(
        event=fields.get("event") or "message",
        id=fields.get("id") or None,
        data=_cloud_event("\n".join(data)) if data else None,
        retry=int(retry) if retry.isdigit() else None,
    )


def _cloud_event(text: str) -> dict | None:
    """The CloudEvent of a ``data`` field, bare or wrapped as the SDKs type it."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("event"), dict):
        return value["event"]
    return value if isinstance(value, dict) else None
