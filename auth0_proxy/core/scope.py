"""The facts of one request, in one typed object: who called, what was decided, what it cost.

``request_log`` makes a ``RequestScope`` when a request starts and keeps it in ``g.scope``; each
step records on it what it decided (the caller, its quota, what it paid Auth0, the write, the
refusal, how fresh the answer is), and the log line, the audit line, the metrics and the quota
headers read it from there. Code running outside a request (a refresh in the background) finds
none. This module imports none of the proxy's others (the facts' small types are its own):
every layer may use it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

from flask import g, has_app_context


class Caller(NamedTuple):
    """The verified caller of a request: its client, the one organization it acts for, and the
    scopes its token grants."""

    client_id: str
    org_id: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class Quota:
    """One bucket as the ``x-ratelimit-*`` headers tell it: its burst, the whole calls left,
    and the UNIX second it is full again."""

    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset),
        }


@dataclass(frozen=True)
class Freshness:
    """How old an answer is (its ``Age``, RFC 9111) and for how many more seconds it is fresh
    (negative: served stale); ``ttl`` is None for an answer fetched for this request."""

    age: int
    ttl: int | None


FETCHED_NOW = Freshness(0, None)


@dataclass(eq=False, slots=True)
class WriteFacts:
    """A write's audit facts: its operation and permission, what it targets, and whether it
    was sent to Auth0 (from then on it may be done, whatever the answer)."""

    action: str
    permission: str
    target: str | None
    sent: bool = False


@dataclass(eq=False, slots=True)
class RequestScope:
    request_id: str  # the proxy's own
    caller_request_id: str | None  # the X-Request-ID the caller sent, if harmless
    started: float = field(default_factory=time.perf_counter)
    client_id: str | None = None  # a valid token's client, even when its organization is refused
    caller: Caller | None = None  # once its organization is known
    route: str | None = None  # an /api/v2 operation by its rule, for the metrics
    quota: Quota | None = None  # the client's quota its answer tells
    upstream_calls: int = 0
    upstream_paid: bool = False  # it paid for a call of its own already: further ones may wait
    upstream_credit: int = 0  # calls it paid ahead (a no-cache read, a listing's first page)
    freshness: Freshness | None = None  # of an answer made from the cache (or fetched for it)
    generations: dict[str, str] = field(default_factory=dict)  # cache generations read, by org
    write: WriteFacts | None = None
    denial_reason: str | None = None  # for the log only, never the caller
    error_code: str | None = None
    line: tuple[int, dict] | None = None  # the log line, written once the answer is sent
    # Flask tears a request down when its view returns and, for an answer streamed with its
    # context (``stream_with_context``), once more when the stream ends.
    teardowns_left: int = 1


def current_scope() -> RequestScope:
    """The scope of the request being answered. (Flask's ``g`` resolved once: each attribute
    read through a context-local proxy costs about half a microsecond, on every request.)"""
    return g._get_current_object().scope


def request_scope() -> RequestScope | None:
    """The current request's scope; None outside a request (a background refresh)."""
    return g._get_current_object().get("scope") if has_app_context() else None
