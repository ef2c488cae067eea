"""The query strings of the /api/v2 operations, read as Auth0 reads them, and the answers'
shapes that follow from them: field selection, offset and checkpoint pages, the ``q`` subset.

Parameters, types and ranges are the Management API's (its published spec); an operation takes
only the parameters its rule names, and anything else is Auth0's 400 before any upstream call.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from marshmallow import ValidationError, fields, validate
from werkzeug.datastructures import MultiDict

from auth0_proxy.core.paging import (
    DEFAULT_PAGE_SIZE,
    OFFSET_PAGING_LIMIT,
    InvalidPaging,
    InvalidQuery,
    PagingSchema,
)

# What each operation accepts, by group (Management API spec).
OFFSET = ("page", "per_page", "include_totals")
CHECKPOINT = ("from", "take")
FIELDS = ("fields", "include_fields")
SEARCH = ("q", "search_engine")
EMAIL = ("email",)
SORT = ("sort",)

SUPPORTED_SEARCH = (
    "Only email: and user_id: terms (quoted or not, joined by OR) are supported in q through "
    'the organization proxy, e.g. q=email:"a@example.com" OR user_id:"auth0|123".'
)
_TERM = re.compile(r'\s*(email|user_id):(?:"((?:[^"\\]|\\.)*)"|([^\s"()]+))\s*', re.DOTALL)
_OR = re.compile(r"\s+OR\s+")


class QuerySchema(PagingSchema):
    """Every parameter any operation of the surface takes, with the spec's types and ranges."""

    q = fields.String(validate=validate.Length(max=2000))
    search_engine = fields.String(validate=validate.OneOf(["v3"]))
    email = fields.String(validate=validate.Length(1, 320))
    sort = fields.String(validate=validate.Length(1, 100))


QUERY_SCHEMA = QuerySchema()


@dataclass(frozen=True)
class Query:
    """A checked query: the typed values, and the text as sent (for Auth0, when relayed)."""

    values: dict
    sent: dict[str, str]

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def uses_checkpoint(self) -> bool:
        return "from" in self.sent or "take" in self.sent


def checked_query(args: MultiDict, accepted: Sequence[str]) -> Query:
    """:raise InvalidQuery: a parameter the operation does not take, given twice, or of the
    wrong type or range (400, in Auth0's words)."""
    for name in args:
        if name not in accepted:
            raise InvalidQuery(
                f"Query validation error: 'Additional properties not allowed: {name}'."
            )
        if len(args.getlist(name)) > 1:
            raise InvalidQuery(f"Query validation error: '{name}' may be given once.")
    sent = args.to_dict()
    try:
        loaded = QUERY_SCHEMA.load(sent)
    except ValidationError as error:
        problems = "; ".join(f"{name}: {' '.join(text)}" for name, text in error.messages.items())
        raise InvalidQuery(f"Query validation error: {problems}") from None
    values = {QUERY_SCHEMA.fields[key].data_key or key: value for key, value in loaded.items()}
    if "page" in sent and "from" in sent:
        raise InvalidQuery("Query validation error: use either page/per_page or from/take.")
    return Query(values, sent)


def selected(record: dict, query: Query, default: Sequence[str] | None = None) -> dict:
    """The record with the fields ``fields``/``include_fields`` select, as Auth0 selects them:
    only those named, or (``include_fields=false``) all but those; without ``fields``, the
    ``default`` ones (or all)."""
    names = list(default) if default is not None else list(record)
    if query.get("fields"):
        named = set(query.get("fields").split(","))
        if query.get("include_fields", True):
            names = [name for name in record if name in named]
        else:
            names = [name for name in names if name not in named]
    return {name: record[name] for name in names if name in record}


def offset_page(
    name: str,
    records: Sequence,
    query: Query,
    *,
    shown: Callable[[list], list] = list,
    length: bool = False,
):
    """The page ``page``/``per_page`` asks for, its records ``shown`` as answered: a bare
    array, or with ``include_totals`` an object with the page under ``name``, ``start``,
    ``limit`` (``length``) and ``total``.

    :raise InvalidPaging: the page reaches past the first 1,000 records (400).
    """
    page, per_page = query.get("page", 0), query.get("per_page", DEFAULT_PAGE_SIZE)
    start = page * per_page
    if start + per_page > OFFSET_PAGING_LIMIT:
        raise InvalidPaging()
    window = shown(list(records[start : start + per_page]))
    if not query.get("include_totals"):
        return window
    answer = {name: window, "start": start, "limit": per_page}
    if length:
        answer["length"] = len(window)
    return {**answer, "total": len(records)}


def checkpoint_page(members: Sequence[dict], query: Query) -> dict:
    """The ``take`` members after the checkpoint ``from`` (the previous page's ``next``), with
    ``next`` only if more follow. The checkpoint names the last member given, so a member added
    or removed meanwhile shifts no page.

    :raise InvalidQuery: ``from`` is not a checkpoint of this proxy (400).
    """
    take = query.get("take", DEFAULT_PAGE_SIZE)
    start = 0
    if query.get("from"):
        after = _decode_checkpoint(query.get("from"))
        start = next((i for i, m in enumerate(members) if m["user_id"] > after), len(members))
    window = list(members[start : start + take])
    answer: dict = {"members": window}
    if window and start + take < len(members):
        answer["next"] = base64.urlsafe_b64encode(window[-1]["user_id"].encode()).decode()
    return answer


def search_terms(q: str) -> tuple[set[str], set[str]]:
    """The emails (lower-cased) and user ids a ``q`` of ``email:``/``user_id:`` terms joined by
    OR asks for.

    :raise InvalidQuery: any other query (400, naming what is supported).
    """
    emails: set[str] = set()
    user_ids: set[str] = set()
    for clause in _OR.split(q.strip()):
        term = _TERM.fullmatch(clause)
        if term is None:
            raise InvalidQuery(SUPPORTED_SEARCH)
        field, quoted, bare = term.groups()
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        (emails if field == "email" else user_ids).add(value.lower() if field == "email" else value)
    return emails, user_ids


def _decode_checkpoint(checkpoint: str) -> str:
    try:
        return base64.b64decode(checkpoint.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidQuery("Invalid value for parameter 'from': not a checkpoint.") from None
