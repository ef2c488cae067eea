"""What a client may ask GET /users for, checked before any upstream call: a ``MemberQuery``.

The parameters are the Management API's own (GET /api/v2/organizations/{id}/members), with its
limits: offset paging with ``page``/``per_page`` (1-100) and ``include_totals`` reaches the first
1,000 members only; checkpoint paging with ``take`` (1-100) and ``from`` (the previous page's
``next``) reaches them all. Without either, GET /users returns the whole list.

A page is sliced from the organization's cached member list, on GET /users and on
GET /api/v2/organizations/{id}/members alike (``offset_page``, ``checkpoint_page``): the
checkpoint is the proxy's own, naming the last member given, so a member added or removed
meanwhile shifts no page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from werkzeug.datastructures import MultiDict

from .errors import APIError

DEFAULT_PAGE_SIZE = 50  # Auth0's, for both kinds of paging
OFFSET_PAGING_LIMIT = 1000  # records reachable by page/per_page (Management API)
MEMBER_FIELDS = ("user_id", "email", "name", "picture")
# The profile fields GET /api/v2/users accepts in `fields` (Management API spec, get_users_by_id).
PROFILE_FIELDS = frozenset(
    [
        "phone_number",
        "email",
        "email_verified",
        "picture",
        "username",
        "user_id",
        "name",
        "nickname",
        "created_at",
        "identities",
        "app_metadata",
        "user_metadata",
        "last_ip",
        "last_login",
        "logins_count",
        "updated_at",
        "blocked",
        "family_name",
        "given_name",
    ]
)
OFFSET = ("page", "per_page", "include_totals")


class InvalidQuery(APIError):
    status_code = 400
    error_code = "invalid_query_string"


class InvalidCheckpoint(InvalidQuery):
    message = "Invalid value for parameter 'from': not a checkpoint."


class InvalidPaging(APIError):
    status_code = 400
    error_code = "invalid_paging"
    message = (
        "You can only page through the first 1000 records with page and per_page; "
        "use from and take beyond them."
    )


@dataclass(frozen=True)
class OffsetPaging:
    """One page by number; Auth0 answers a bare array unless ``include_totals``."""

    page: int = 0
    per_page: int = DEFAULT_PAGE_SIZE
    include_totals: bool = False

    def params(self) -> dict[str, str | int]:
        """Auth0's query for this page, with totals: the proxy needs them to read the page."""
        return {"page": self.page, "per_page": self.per_page, "include_totals": "true"}


@dataclass(frozen=True)
class CheckpointPaging:
    """One page after ``checkpoint`` (the previous page's ``next``; None for the first)."""

    take: int = DEFAULT_PAGE_SIZE
    checkpoint: str | None = None

    def params(self) -> dict[str, str | int]:
        """Auth0's query for this page."""
        if self.checkpoint is None:
            return {"take": self.take}
        return {"take": self.take, "from": self.checkpoint}


@dataclass(frozen=True)
class MemberQuery:
    """A page of members or, with ``paging`` None, all of them; with every member field or,
    with ``fields``, just those (``user_id`` always among them)."""

    paging: OffsetPaging | CheckpointPaging | None = None
    fields: tuple[str, ...] | None = None

    @property
    def needs_profiles(self) -> bool:
        return self.fields is not None and needs_profiles(self.fields)


def needs_profiles(fields: tuple[str, ...]) -> bool:
    """Whether the fields are more than an organization's member list carries."""
    return not set(fields) <= set(MEMBER_FIELDS)


class PagingSchema(Schema):
    """The Management API's paging and field-selection parameters, with its types and ranges."""

    class Meta:
        unknown = RAISE

    page = fields.Integer(validate=validate.Range(min=0))
    per_page = fields.Integer(validate=validate.Range(1, 100))
    include_totals = fields.Boolean(truthy={"true"}, falsy={"false"})
    take = fields.Integer(validate=validate.Range(1, 100))
    checkpoint = fields.String(data_key="from", validate=validate.Length(1, 1024))
    fields_ = fields.String(data_key="fields", validate=validate.Length(1, 1000))
    include_fields = fields.Boolean(truthy={"true"}, falsy={"false"})


class MemberQuerySchema(PagingSchema):
    @validates_schema
    def one_kind_of_paging(self, data, **kwargs):
        offset = any(name in data for name in OFFSET)
        if offset and ("take" in data or "checkpoint" in data):
            raise ValidationError("use either page/per_page/include_totals or from/take")


MEMBER_QUERY_SCHEMA = MemberQuerySchema()


def member_query(args: MultiDict) -> MemberQuery:
    """The query a client sent GET /users, checked.

    :raise InvalidQuery: an unknown, repeated or out-of-range parameter, mixed paging, an
        unknown field, ``include_fields=false``, or profile fields with paging (400).
    :raise InvalidPaging: a page past the first 1,000 records (400).
    """
    if not args:  # the whole list, every member field: most requests
        return MemberQuery()
    loaded = checked(MEMBER_QUERY_SCHEMA, args)
    if loaded.get("include_fields", True) is False:
        raise InvalidQuery("Query validation error: include_fields=false is not supported.")
    query = MemberQuery(_paging(loaded), _fields(loaded.get("fields_")))
    if query.paging is not None and query.needs_profiles:
        raise InvalidQuery("Query validation error: profile fields need the whole list.")
    return query


class ChangesQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    since = fields.String(validate=validate.Length(1, 200))


CHANGES_QUERY_SCHEMA = ChangesQuerySchema()


def changes_cursor(args: MultiDict) -> str | None:
    """The ``since`` cursor a client sent GET /users/changes, if any.

    :raise InvalidQuery: an unknown or repeated parameter, or an empty cursor (400).
    """
    return checked(CHANGES_QUERY_SCHEMA, args).get("since")


def checked(schema: Schema, args: MultiDict) -> dict:
    """The query loaded by ``schema``, the one check of every query string the proxy takes.

    :raise InvalidQuery: a parameter given twice, unknown to the schema, or of the wrong type
        or range (400, in Auth0's words).
    """
    if any(len(args.getlist(name)) > 1 for name in args):
        raise InvalidQuery("Query validation error: each parameter may be given once.")
    try:
        return schema.load(args.to_dict())
    except ValidationError as error:
        raise InvalidQuery(f"Query validation error: {_describe(error.messages)}") from None


def _paging(loaded: dict) -> OffsetPaging | CheckpointPaging | None:
    if "take" in loaded or "checkpoint" in loaded:
        return CheckpointPaging(loaded.get("take", DEFAULT_PAGE_SIZE), loaded.get("checkpoint"))
    if not any(name in loaded for name in OFFSET):
        return None
    paging = OffsetPaging(**{name: loaded[name] for name in OFFSET if name in loaded})
    if (paging.page + 1) * paging.per_page > OFFSET_PAGING_LIMIT:
        raise InvalidPaging()
    return paging


def _fields(names: str | None) -> tuple[str, ...] | None:
    """:raise InvalidQuery: a field the Management API does not know (400)."""
    if not names:
        return None
    wanted = tuple(dict.fromkeys(["user_id", *names.split(",")]))
    unknown = [name for name in wanted if name not in PROFILE_FIELDS]
    if unknown:
        raise InvalidQuery(f"Query validation error: unknown fields {', '.join(unknown)}.")
    return wanted


def _describe(messages: dict) -> str:
    return "; ".join(
        " ".join(problems) if name == "_schema" else f"{name}: {' '.join(problems)}"
        for name, problems in messages.items()
    )


def offset_page(
    name: str,
    records: Sequence,
    paging: OffsetPaging,
    *,
    shown: Callable[[list], list] = list,
    length: bool = False,
):
    """The page ``paging`` asks for, its records ``shown`` as answered: a bare array, or with
    ``include_totals`` an object with the page under ``name``, ``start``, ``limit``
    (``length``) and ``total``, as Auth0 answers.

    :raise InvalidPaging: the page reaches past the first 1,000 records (400).
    """
    start = paging.page * paging.per_page
    if start + paging.per_page > OFFSET_PAGING_LIMIT:
        raise InvalidPaging()
    window = shown(list(records[start : start + paging.per_page]))
    if not paging.include_totals:
        return window
    answer = {name: window, "start": start, "limit": paging.per_page}
    if length:
        answer["length"] = len(window)
    return {**answer, "total": len(records)}


def checkpoint_page(
    members: Sequence[dict], paging: CheckpointPaging, *, shown: Callable[[list], list] = list
) -> dict:
    """The ``take`` members after the checkpoint (the previous page's ``next``), ``shown`` as
    answered, with ``next`` only if more follow, as Auth0 answers.

    :raise InvalidCheckpoint: a checkpoint this proxy never gave (400).
    """
    start = 0
    if paging.checkpoint is not None:
        after = _decode_checkpoint(paging.checkpoint)
        start = next((i for i, m in enumerate(members) if m["user_id"] > after), len(members))
    window = list(members[start : start + paging.take])
    answer: dict = {"members": shown(window)}
    if window and start + paging.take < len(members):
        answer["next"] = base64.urlsafe_b64encode(window[-1]["user_id"].encode()).decode()
    return answer


def members_page(
    members: Sequence[dict],
    paging: OffsetPaging | CheckpointPaging,
    *,
    shown: Callable[[list], list] = list,
):
    """The page of members ``paging`` asks for, by checkpoint or by number, as Auth0 answers
    it: the one answer to a page of members on both surfaces."""
    if isinstance(paging, CheckpointPaging):
        return checkpoint_page(members, paging, shown=shown)
    return offset_page("members", members, paging, shown=shown)


def _decode_checkpoint(checkpoint: str) -> str:
    try:
        return base64.b64decode(checkpoint.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidCheckpoint() from None


def only_fields(
    record: dict,
    fields: Collection[str] | None,
    *,
    include: bool = True,
    default: Sequence[str] | None = None,
) -> dict:
    """The record with the fields selected as Auth0's ``fields`` and ``include_fields`` select
    them: only those named, or (``include`` false) all but those; without ``fields``, the
    ``default`` ones (or all). The one field selector of both surfaces."""
    names = list(default) if default is not None else list(record)
    if fields:
        named = set(fields)
        names = (
            [n for n in record if n in named] if include else [n for n in names if n not in named]
        )
    return {name: record[name] for name in names if name in record}
