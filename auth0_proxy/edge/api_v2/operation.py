"""What one operation of the /api/v2 surface is: its rule (method, path template, permission,
organization rule, handler, query), and the call its handler gets. The table of rules is in
pipeline; the handlers (reads, writes) know only the ``Call``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from flask import Response
from marshmallow import Schema

from auth0_proxy.caching.entries import Entry
from auth0_proxy.core.auth0_api import api_path
from auth0_proxy.core.config import WriteGrant
from auth0_proxy.core.errors import APIError
from auth0_proxy.core.scope import Caller, WriteFacts

from .query import Query

READ_ANY = "read:users"  # grants every read of the surface, as it does on the users proxy


class Org(enum.Enum):
    """How a rule keeps the caller within its organization."""

    OWN = "the path's {id} is the caller's organization; any other is Auth0's 404"
    OWN_MEMBER = "as OWN, and {user_id} is a member of it (else Auth0's 404 for a user)"
    MEMBER = "the path's {id} is a user who is a member (else Auth0's 404 for a user)"
    MEMBERS_ONLY = "the answer holds the organization's members only"
    NEW_MEMBER = "the user created becomes a member, or is deleted again"


@dataclass(frozen=True)
class Call:
    """What an operation's handler gets: the caller, the path's decoded parameters, the checked
    query, for a write the client's grant and its audit facts (the handler records there what
    it targets and when it sends), and for a path naming a member its organizations."""

    caller: Caller
    template: str
    params: dict[str, str]
    query: Query
    grant: WriteGrant | None = None
    membership: Entry | None = None  # the path's user's organizations, once checked
    audit: WriteFacts | None = None  # a write's: the audit line reads the same object

    @property
    def upstream_path(self) -> str:
        """The Auth0 path this call addresses: its rule's template with its parameters."""
        return api_path(self.template, **self.params)


@dataclass(frozen=True)
class Rule:
    """One operation, and everything it needs: the request it matches, the Auth0 permission
    its token must grant, how it keeps to the organization, its handler and the query it
    takes; for a write, the body's schema (the fields an edge client may send), the refusals
    of Auth0's it passes on, those of its own beyond every write's, and the Management API
    permissions its calls need beyond its own. The OpenAPI document, check-config and the
    body checks are derived from it."""

    method: str
    template: str
    permission: str
    org: Org
    write: bool
    handler: Callable[[Call], Response]
    query: tuple[str, ...] = ()
    body: type[Schema] | None = None
    relays: tuple[int, ...] = ()  # Auth0's refusals passed on as Auth0 worded them
    refuses: tuple[type[APIError], ...] = ()
    upstream_permissions: tuple[str, ...] = ()

    @property
    def scopes(self) -> list[str]:
        """The token scopes any one of which lets a caller make this call: a write's own
        permission; for a read, also ``read:users``."""
        return [self.permission] if self.write else [READ_ANY, self.permission]

    def audit_facts(self, params: dict[str, str]) -> WriteFacts:
        """A write's audit facts before it runs: the operation, permission and path target."""
        target = params.get("user_id") or params.get("id")
        return WriteFacts(f"{self.method} {self.template}", self.permission, target)

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        """The decoded path parameters, if the request is this rule's."""
        expected = self.template.split("/")
        if method != self.method or len(expected) != len(segments):
            return None
        params = {}
        for want, got in zip(expected, segments, strict=True):
            if want.startswith("{"):
                if not got:
                    return None
                params[want[1:-1]] = unquote(got, errors="strict")
            elif want != got:
                return None
        return params
