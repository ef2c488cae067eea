"""``POST /events/auth0``: where Auth0's Event Streams deliver events (``events.source``
``webhook``), authenticated with the token the stream was configured with.

Auth0 sends ``Authorization: Bearer <token>`` or basic credentials; either way the token (the
password) is compared in constant time, and anything else is a 401 that changes nothing. A
body is one CloudEvent or an array of them: all are checked before any is applied, so a
malformed one (400) applies none. The answer is 2xx only once every event is applied to the
shared cache; otherwise (Auth0 or the shared store failing) a 5xx or 429 has Auth0 deliver the
batch again, and the events already applied are dropped then as duplicates.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json

from flask import Blueprint, current_app, jsonify, request

from auth0_proxy.core.errors import InvalidBody, TokenRejected
from auth0_proxy.members.events import Event, Events, InvalidEvent, parse_event

bp = Blueprint("events", __name__)

MAX_EVENTS = 1000  # in one delivery (bodies are at most 1 MiB anyway)


@bp.post("/events/auth0")
def receive_events():
    """Apply the delivered events; how many were new and how many seen before."""
    _authenticate(current_app.config["SETTINGS"].events.webhook_token)
    events = _events(request.get_json(silent=True))
    receiver: Events = current_app.extensions["events"]
    applied = sum(receiver.apply(event) for event in events)
    return jsonify(received=len(events), applied=applied, duplicates=len(events) - applied)


def _authenticate(token: str) -> None:
    """:raise TokenRejected: no bearer token or basic password equal to ``token`` (401)."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    offered = credentials.strip()
    if scheme.lower() == "basic":
        try:
            offered = base64.b64decode(offered, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            offered = ""
    elif scheme.lower() != "bearer":
        offered = ""
    if not hmac.compare_digest(offered.encode(), token.encode()):
        raise TokenRejected("Invalid credentials for the events endpoint.")


def _events(body: object) -> list[Event]:
    """:raise InvalidBody: not one CloudEvent of a known type, nor an array of them (400)."""
    items = body if isinstance(body, list) else [body]
    if body is None or not items or len(items) > MAX_EVENTS:
        raise InvalidBody(f"Send one Auth0 event (a CloudEvent) or an array of 1 to {MAX_EVENTS}.")
    events = []
    for number, item in enumerate(items):
        try:
            events.append(parse_event(item))
        except InvalidEvent as invalid:
            problems = json.dumps(invalid.messages, sort_keys=True)
            message = f"Event {number} is not an Auth0 event this proxy applies: {problems}"
            raise InvalidBody(message) from None
    return events
