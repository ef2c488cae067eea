"""The query a client may send to GET /users (paging, fields), checked before any upstream call.

They are the Management API's own (GET /api/v2/organizations/{id}/members), with its limits:
offset paging with ``page``/``per_page`` (1-100) and ``include_totals`` reaches the first 1,000
members only; checkpoint paging with ``take`` (1-100) and ``from`` (the previous page's
``next``) reaches them all. Without either, GET /users returns the whole list.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from werkzeug.datastructures import MultiDict

from .errors import APIError

# Parameter names as loaded ("from" is a Python keyword, so it loads as "from_").
OFFSET = ("page", "per_page", "include_totals")
CHECKPOINT = ("from_", "take")
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


class InvalidQuery(APIError):
    status_code = 400
    error_code = "invalid_query_string"


class InvalidPaging(APIError):
    status_code = 400
    error_code = "invalid_paging"
    message = (
        "You can only page through the first 1000 records with page and per_page; "
        "use from and take beyond them."
    )


class PagingSchema(Schema):
    class Meta:
        unknown = RAISE

    page = fields.Integer(validate=validate.Range(min=0))
    per_page = fields.Integer(validate=validate.Range(1, 100))
    include_totals = fields.Boolean(truthy={"true"}, falsy={"false"})
    take = fields.Integer(validate=validate.Range(1, 100))
    from_ = fields.String(data_key="from", validate=validate.Length(1, 1024))
    fields_ = fields.String(data_key="fields", validate=validate.Length(1, 1000))
    include_fields = fields.Boolean(truthy={"true"}, falsy={"false"})

    @validates_schema
    def one_kind_of_paging(self, data, **kwargs):
        if any(name in data for name in OFFSET) and any(name in data for name in CHECKPOINT):
            raise ValidationError("use either page/per_page/include_totals or from/take")


PAGING_SCHEMA = PagingSchema()


def paging_params(args: MultiDict) -> dict | None:
    """The Management API query for the page the client asked for; None for the whole list.

    :raise InvalidQuery: an unknown parameter, a value out of range, or mixed paging (400).
    :raise InvalidPaging: a page past the first 1,000 records (400).
    """
    if any(len(args.getlist(name)) > 1 for name in args):
        raise InvalidQuery("Query validation error: each parameter may be given once.")
    try:
        query = PAGING_SCHEMA.load(dict(args))
    except ValidationError as error:
        raise InvalidQuery(f"Query validation error: {_describe(error.messages)}") from None
    query.pop("fields_", None)
    if query.pop("include_fields", True) is False:
        raise InvalidQuery("Query validation error: include_fields=false is not supported.")
    if any(name in query for name in CHECKPOINT):
        checkpoint = {"take": query.get("take", 50)}
        if "from_" in query:
            checkpoint["from"] = query["from_"]
        return checkpoint
    if not query:
        return None
    page, per_page = query.get("page", 0), query.get("per_page", 50)
    if (page + 1) * per_page > OFFSET_PAGING_LIMIT:
        raise InvalidPaging()
    return {
        "page": page,
        "per_page": per_page,
        "include_totals": query.get("include_totals", False),
    }


def requested_fields(args: MultiDict) -> list[str] | None:
    """The profile fields the client asked for with ``fields`` (``user_id`` always included).

    :raise InvalidQuery: a field the Management API does not know (400).
    """
    if not args.get("fields"):
        return None
    wanted = list(dict.fromkeys(["user_id", *args["fields"].split(",")]))
    unknown = [name for name in wanted if name not in PROFILE_FIELDS]
    if unknown:
        raise InvalidQuery(f"Query validation error: unknown fields {', '.join(unknown)}.")
    return wanted


def beyond_member_fields(wanted: list[str] | None) -> bool:
    """Whether the fields need full profiles rather than the organization's member list."""
    return wanted is not None and not set(wanted) <= set(MEMBER_FIELDS)


def _describe(messages: dict) -> str:
    return "; ".join(
        f"{'from' if name == 'from_' else name}: {' '.join(problems)}"
        if name != "_schema"
        else " ".join(problems)
        for name, problems in messages.items()
    )
