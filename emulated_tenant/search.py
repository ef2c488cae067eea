"""The subset of Auth0's Lucene user-search syntax (search_engine=v3) the emulator understands.

Accepted: ``field:value``, ``field:"quoted value"`` and ``field:(a OR b OR "c")`` for the fields
in SEARCHABLE_FIELDS. Anything else is answered 400 so an unsupported query cannot silently match
nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import Auth0Error

SEARCHABLE_FIELDS = ("user_id", "email", "name", "nickname")
_CLAUSE = re.compile(r"\s*(?P<field>[a-z_]+):(?P<rest>.*)\Z", re.DOTALL)
_TERM = re.compile(r'\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>(?:[^\s()"\\]|\\.)+))', re.DOTALL)


@dataclass(frozen=True)
class UserQuery:
    """``field`` equals any of ``values``."""

    field: str
    values: tuple[str, ...]

    def matches(self, profile: dict[str, object]) -> bool:
        return profile.get(self.field) in self.values


def parse_user_query(q: str) -> UserQuery:
    """:raise 400 invalid_query: for syntax outside the supported subset."""
    clause = _CLAUSE.match(q)
    if not clause or clause["field"] not in SEARCHABLE_FIELDS:
        raise _invalid(q)
    rest = clause["rest"].strip()
    if rest.startswith("(") and rest.endswith(")"):
        values = _alternatives(rest[1:-1], q)
    else:
        values = [_single_term(rest, q)]
    return UserQuery(clause["field"], tuple(values))


def _alternatives(inner: str, q: str) -> list[str]:
    values = []
    position = 0
    while True:
        term = _TERM.match(inner, position)
        if not term:
            raise _invalid(q)
        values.append(_unescape(term))
        position = term.end()
        separator = re.compile(r"\s+OR\s+|\s*\Z").match(inner, position)
        if not separator:
            raise _invalid(q)
        if separator.end() == len(inner):
            return values
        position = separator.end()


def _single_term(text: str, q: str) -> str:
    term = _TERM.match(text)
    if not term or term.end() != len(text):
        raise _invalid(q)
    return _unescape(term)


def _unescape(term: re.Match[str]) -> str:
    text = term["quoted"] if term["quoted"] is not None else term["bare"]
    if term["bare"] is not None and "*" in text.replace("\\*", ""):
        raise Auth0Error(400, "Wildcards are not supported by the emulated tenant", "invalid_query")
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def _invalid(q: str) -> Auth0Error:
    return Auth0Error(400, f"Invalid query: {q}", "invalid_query")
