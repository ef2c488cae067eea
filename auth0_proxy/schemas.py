"""The shapes the proxy relies on: Auth0's answers as it reads them, and what it returns.

Auth0's pages are loaded through these schemas, so an answer of an unexpected shape is a clear
502 instead of a crash, and a member carries exactly the fields the Management API documents.
Answers are shaped here too, as Auth0 shapes them, and nowhere else.
"""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields

from .paging import CheckpointPaging, MemberQuery

# Identity-provider tokens Auth0 adds to identities when the management client holds
# read:user_idp_tokens; an edge client must never receive them.
IDP_SECRETS = ("access_token", "access_token_secret", "refresh_token")


class MemberSchema(Schema):
    """An organization member as the Management API lists it (and as the proxy returns it)."""

    class Meta:
        unknown = EXCLUDE

    user_id = fields.String(required=True)
    email = fields.String()
    name = fields.String()
    picture = fields.String()


class MembersPageSchema(Schema):
    """One page of checkpoint pagination: ``next`` is absent on the last page."""

    class Meta:
        unknown = EXCLUDE

    members = fields.List(fields.Nested(MemberSchema), required=True)
    next = fields.String(allow_none=True)


class MembersOffsetPageSchema(Schema):
    """One page of offset pagination with ``include_totals``."""

    class Meta:
        unknown = EXCLUDE

    members = fields.List(fields.Nested(MemberSchema), required=True)
    start = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    total = fields.Integer(required=True)


class UsersPageSchema(Schema):
    """One page of the users search (``include_totals=true``); profiles kept as Auth0 sent them."""

    class Meta:
        unknown = EXCLUDE

    users = fields.List(fields.Dict(), required=True)


class OrganizationRefSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    id = fields.String(required=True)


class UserOrganizationsPageSchema(Schema):
    """One page of a user's organizations, offset paging with ``include_totals``."""

    class Meta:
        unknown = EXCLUDE

    organizations = fields.List(fields.Nested(OrganizationRefSchema), required=True)
    start = fields.Integer(required=True, strict=True)
    total = fields.Integer(required=True, strict=True)


members_page = MembersPageSchema()
members_offset_page = MembersOffsetPageSchema()
users_page = UsersPageSchema()
user_organizations_page = UserOrganizationsPageSchema()


def member_page_answer(page: dict, query: MemberQuery) -> dict | list:
    """A page of members as Auth0 answers it: a bare array unless totals or a checkpoint were
    asked for; ``next`` only where there is a next page."""
    members = page["members"]
    if query.fields is not None:
        members = [only_fields(member, query.fields) for member in members]
    if isinstance(query.paging, CheckpointPaging):
        return {"members": members, **({"next": page["next"]} if page.get("next") else {})}
    if query.paging.include_totals:
        return {**page, "members": members}
    return members


def only_fields(record: dict, fields: tuple[str, ...]) -> dict:
    """The record with just the fields asked for, those it has, as Auth0's ``fields`` gives."""
    return {name: record[name] for name in fields if name in record}


def public_profile(user: dict) -> dict:
    """The Auth0 profile as Auth0 returns it, without identity-provider tokens."""
    identities = user.get("identities")
    if not isinstance(identities, list):
        return dict(user)
    return {
        **user,
        "identities": [
            {key: value for key, value in identity.items() if key not in IDP_SECRETS}
            for identity in identities
            if isinstance(identity, dict)
        ],
    }
