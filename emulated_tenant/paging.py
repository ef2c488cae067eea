"""Auth0's two paging styles and its ``fields``/``include_fields`` projection."""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import Auth0Error, query_error

DEFAULT_PER_PAGE = 50
OFFSET_RECORD_LIMIT = 1000
USERS_PAGING_LIMIT_MESSAGE = (
    "You can only page through the first 1000 records. "
    "See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation"
)


@dataclass(frozen=True)
class OffsetWindow:
    """One ``page``/``per_page`` slice: ``records[start:start + limit]``."""

    page: int
    start: int
    limit: int

    def of(self, records: Sequence[Any]) -> Sequence[Any]:
        return records[self.start : self.start + self.limit]

    def answer(
        self, name: str, page: list, total: int | None, query: dict[str, Any], **extra
    ) -> Any:
        """Auth0's answer with this page: the bare array, or with ``include_totals`` the page
        under ``name`` with ``start``, ``limit`` (and ``extra``) and ``total`` (left out when
        None: Auth0 counts no total for some listings, e.g. invitations)."""
        if not query.get("include_totals"):
            return page
        body = {name: page, "start": self.start, "limit": self.limit, **extra}
        if total is not None:
            body["total"] = total
        return body


def offset_window(query: dict[str, Any], limit_message: str | None = None) -> OffsetWindow:
    """The slice a ``page``/``per_page`` query asks for (defaults: page 0, 50 per page).

    :raise 400 invalid_paging: when ``limit_message`` is given and the page reaches past the first
        1,000 records, as Auth0 refuses for offset paging of members and user search.
    """
    page = query.get("page", 0)
    per_page = query.get("per_page", DEFAULT_PER_PAGE)
    window = OffsetWindow(page=page, start=page * per_page, limit=per_page)
    if limit_message and window.start + window.limit > OFFSET_RECORD_LIMIT:
        raise Auth0Error(400, limit_message.format(page=page), "invalid_paging")
    return window


@dataclass(frozen=True)
class CheckpointWindow:
    """One ``from``/``take`` slice of records in key order, and the checkpoint after it."""

    start: int
    stop: int
    next: str | None

    def of(self, records: Sequence[Any]) -> Sequence[Any]:
        return records[self.start : self.stop]

    def answer(self, name: str, page: list) -> dict[str, Any]:
        """``{name: page, "next": ...}``; ``next`` is left out on the last page, which is how
        callers stop."""
        body: dict[str, Any] = {name: page}
        if self.next is not None:
            body["next"] = self.next
        return body


def checkpoint_window(keys: Sequence[str], query: dict[str, Any]) -> CheckpointWindow:
    """The slice a ``from``/``take`` query asks of records whose sorted keys are ``keys``: ``take``
    (default 50) records after the key ``from`` encodes.

    :raise 400 invalid_query_string: a ``from`` this tenant never returned.
    """
    take = query.get("take", DEFAULT_PER_PAGE)
    start = bisect.bisect_right(keys, decode_checkpoint(query["from"])) if "from" in query else 0
    stop = min(start + take, len(keys))
    following = encode_checkpoint(keys[stop - 1]) if stop < len(keys) else None
    return CheckpointWindow(start, stop, following)


def encode_checkpoint(last_key: str) -> str:
    """The opaque ``next`` value: where the following page starts (after this record key)."""
    return base64.urlsafe_b64encode(last_key.encode()).decode().rstrip("=")


def decode_checkpoint(checkpoint: str) -> str:
    """:raise 400 invalid_query_string: for a ``from`` value this tenant never returned."""
    try:
        padded = checkpoint + "=" * (-len(checkpoint) % 4)
        return base64.urlsafe_b64decode(padded.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise query_error("Invalid value for parameter 'from': not a checkpoint.") from None


def select_fields(
    record: dict[str, Any], query: dict[str, Any], default: Sequence[str] | None = None
) -> dict[str, Any]:
    """Project ``record`` as ``fields`` and ``include_fields`` (default true) ask.

    Without ``fields`` the ``default`` names (else every field) are returned; with
    ``include_fields=false`` the listed fields are removed from that default instead.
    """
    default_names = list(default) if default is not None else list(record)
    if "fields" not in query:
        chosen = default_names
    elif query.get("include_fields", True):
        requested = set(query["fields"].split(","))
        chosen = [name for name in record if name in requested]
    else:
        excluded = set(query["fields"].split(","))
        chosen = [name for name in default_names if name not in excluded]
    return {name: record[name] for name in chosen if name in record}
