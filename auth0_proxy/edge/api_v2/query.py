"""The query strings of the /api/v2 operations, read as Auth0 reads them: the parameters each
operation takes, its paging and field selection, the ``q`` subset.

Parameters, types and ranges are the Management API's (its published spec); an operation takes
only the parameters its rule names, and anything else is Auth0's 400 before any upstream call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from marshmallow import fields, validate
from werkzeug.datastructures import MultiDict

from auth0_proxy.core.paging import (
    DEFAULT_PAGE_SIZE,
    CheckpointPaging,
    InvalidQuery,
    OffsetPaging,
    PagingSchema,
    checked,
    only_fields,
)

# What each operation accepts, by group (Management API spec); OFFSET is in core.paging.
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

    def paging(self) -> OffsetPaging | CheckpointPaging:
        """The page asked for: by checkpoint (``from``/``take``), else by number."""
        if "from" in self.sent or "take" in self.sent:
            return CheckpointPaging(self.get("take", DEFAULT_PAGE_SIZE), self.get("from"))
        return OffsetPaging(
            self.get("page", 0),
            self.get("per_page", DEFAULT_PAGE_SIZE),
            self.get("include_totals", False),
        )


def checked_query(args: MultiDict, accepted: Sequence[str]) -> Query:
    """:raise InvalidQuery: a parameter the operation does not take, given twice, or of the
    wrong type or range (400, in Auth0's words)."""
    for name in args:
        if name not in accepted:
            raise InvalidQuery(
                f"Query validation error: 'Additional properties not allowed: {name}'."
            )
    loaded = checked(QUERY_SCHEMA, args)
    values = {QUERY_SCHEMA.fields[key].data_key or key: value for key, value in loaded.items()}
    if "page" in args and "from" in args:
        raise InvalidQuery("Query validation error: use either page/per_page or from/take.")
    return Query(values, args.to_dict())


def selected(record: dict, query: Query, default: Sequence[str] | None = None) -> dict:
    """The record with the fields ``fields``/``include_fields`` select (``only_fields``)."""
    named = query.get("fields")
    return only_fields(
        record,
        named.split(",") if named else None,
        include=query.get("include_fields", True),
        default=default,
    )


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
