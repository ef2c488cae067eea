"""The shapes the proxy relies on: Auth0's answers as it reads them, and what it returns.

Auth0's pages are loaded through these schemas, so an answer of an unexpected shape is a clear
502 instead of a crash, and a member carries exactly the fields the Management API documents.
Answers are shaped here too, as Auth0 shapes them, and nowhere else.
"""

from __future__ import annotations

from marshmallow import (
    EXCLUDE,
    INCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

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


class ClientGrantSchema(Schema):
    """A client grant (GET /api/v2/client-grants): what organizations its client may use for
    its audience is ``organization_usage`` (``deny``, Auth0's default, when absent) and
    ``allow_any_organization``, with the organizations associated with it."""

    class Meta:
        unknown = EXCLUDE

    id = fields.String(required=True, validate=validate.Length(min=1))
    client_id = fields.String(required=True, validate=validate.Length(min=1))
    audience = fields.String(required=True)
    organization_usage = fields.String(load_default="deny")
    allow_any_organization = fields.Boolean(load_default=False)
    subject_type = fields.String(load_default="client")


class ClientGrantsPageSchema(Schema):
    """One checkpoint page of client grants: ``next`` is absent on the last page."""

    class Meta:
        unknown = EXCLUDE

    client_grants = fields.List(fields.Nested(ClientGrantSchema), required=True)
    next = fields.String(allow_none=True)


class GrantOrganizationsPageSchema(Schema):
    """One checkpoint page of the organizations associated with a client grant."""

    class Meta:
        unknown = EXCLUDE

    organizations = fields.List(fields.Nested(OrganizationRefSchema), required=True)
    next = fields.String(allow_none=True)


# Auth0's event types the proxy applies (its Events API stream is filtered to them).
MEMBER_EVENTS = ("organization.member.added", "organization.member.deleted")
ROLE_EVENTS = ("organization.member.role.assigned", "organization.member.role.deleted")
MEMBERSHIP_EVENTS = (*MEMBER_EVENTS, *ROLE_EVENTS)  # each names an organization and a user
EVENT_TYPES = (*MEMBERSHIP_EVENTS, "organization.deleted", "user.updated", "user.deleted")


class UserRefSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    user_id = fields.String(required=True, validate=validate.Length(1, 512))


class EventObjectSchema(Schema):
    """``data.object``: a membership (``organization`` and ``user``), an organization (its
    ``id``), or a user (its ``user_id``), by the event's type."""

    class Meta:
        unknown = EXCLUDE

    organization = fields.Nested(OrganizationRefSchema)
    user = fields.Nested(UserRefSchema)
    id = fields.String(validate=validate.Length(1, 512))
    user_id = fields.String(validate=validate.Length(1, 512))


class EventDataSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    object = fields.Nested(EventObjectSchema, required=True)


class CloudEventSchema(Schema):
    """An Auth0 event (CloudEvents 1.0) of a type the proxy applies, with what that type needs."""

    class Meta:
        unknown = EXCLUDE

    specversion = fields.String(required=True, validate=validate.Equal("1.0"))
    id = fields.String(required=True, validate=validate.Length(1, 256))
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    source = fields.String(required=True)
    time = fields.AwareDateTime(required=True)
    data = fields.Nested(EventDataSchema, required=True)

    @validates_schema
    def names_what_it_is_about(self, event, **kwargs):
        about = event.get("data", {}).get("object", {})
        kind = event.get("type", "")
        needs = (
            ("organization", "user")
            if kind in MEMBERSHIP_EVENTS
            else ("id",)
            if kind == "organization.deleted"
            else ("user_id",)
        )
        missing = [name for name in needs if name not in about]
        if missing:
            raise ValidationError({"data": {"object": {name: ["required"] for name in missing}}})


member_entry = MemberSchema()
members_page = MembersPageSchema()
users_page = UsersPageSchema()
user_organizations_page = UserOrganizationsPageSchema()
client_grants_page = ClientGrantsPageSchema()
grant_organizations_page = GrantOrganizationsPageSchema()
cloud_event = CloudEventSchema()


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


class ErrorSchema(Schema):
    """Every error the proxy answers, in the Management API's shape (``errors.error_body``)."""

    class Meta:
        unknown = RAISE

    status_code = fields.Integer(
        required=True, data_key="statusCode", metadata={"description": "The HTTP status."}
    )
    error = fields.String(
        required=True, metadata={"description": "The status's reason phrase, e.g. Unauthorized."}
    )
    message = fields.String(required=True, metadata={"description": "What went wrong, in words."})
    error_code = fields.String(
        required=True,
        data_key="errorCode",
        metadata={
            "description": "What went wrong, for programs: Auth0's code, e.g. invalid_token."
        },
    )


class MemberChangesSchema(Schema):
    """GET /users/changes: the members added, removed (ids) and updated since the cursor, and
    the cursor to ask with next; without a cursor, empty lists and the cursor to start from."""

    class Meta:
        unknown = RAISE

    added = fields.List(fields.Nested(MemberSchema), required=True)
    removed = fields.List(fields.String(), required=True)
    updated = fields.List(fields.Nested(MemberSchema), required=True)
    cursor = fields.String(required=True)


class HealthSchema(Schema):
    """GET /healthz: the process answers, and which version it is."""

    class Meta:
        unknown = RAISE

    status = fields.String(required=True, validate=validate.OneOf(["ok"]))
    version = fields.String(required=True)


class ReadinessSchema(Schema):
    """GET /readyz: the signing keys and a management token are at hand; whether the shared
    store answers (``unavailable``: the proxy serves without it, from Auth0 directly)."""

    class Meta:
        unknown = RAISE

    status = fields.String(required=True, validate=validate.OneOf(["ready"]))
    store = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))


# The bodies the /api/v2 writes take, as /openapi.json describes them (the writes check them,
# field by field, as Auth0 words its refusals). Field names and limits are the Management API's.


class InviterSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(1, 300))


class InviteeSchema(Schema):
    class Meta:
        unknown = RAISE

    email = fields.Email(required=True)


class InvitationRequestSchema(Schema):
    """POST /api/v2/organizations/{id}/invitations: ``client_id`` (the application the invitee
    logs in to), ``roles`` and ``connection_id`` must be ones the client's grant lists; the
    proxy requires the connection, which Auth0 leaves optional (see writes.invite)."""

    class Meta:
        unknown = RAISE

    inviter = fields.Nested(InviterSchema, required=True)
    invitee = fields.Nested(InviteeSchema, required=True)
    client_id = fields.String(required=True)
    connection_id = fields.String(required=True)
    app_metadata = fields.Dict()
    user_metadata = fields.Dict()
    ttl_sec = fields.Integer(validate=validate.Range(0, 2_592_000))
    roles = fields.List(fields.String(), validate=validate.Length(min=1))
    send_invitation_email = fields.Boolean()


class MembersRequestSchema(Schema):
    """DELETE /api/v2/organizations/{id}/members: the user ids to remove."""

    class Meta:
        unknown = INCLUDE  # Auth0 takes other fields too

    members = fields.List(fields.String(), required=True, validate=validate.Length(min=1))


class MemberRolesRequestSchema(Schema):
    """POST and DELETE /api/v2/organizations/{id}/members/{user_id}/roles: role ids the
    client's grant lists."""

    class Meta:
        unknown = RAISE

    roles = fields.List(fields.String(), required=True, validate=validate.Length(min=1))


class UserUpdateRequestSchema(Schema):
    """PATCH /api/v2/users/{id}: ``user_metadata``, and ``app_metadata`` keys the client's grant
    lists; any other field is refused (400)."""

    class Meta:
        unknown = RAISE

    user_metadata = fields.Dict()
    app_metadata = fields.Dict()


class UserCreateRequestSchema(Schema):
    """POST /api/v2/users: a user in a connection the client's grant lists, made a member of the
    caller's organization; any other field (``email_verified``, ``blocked``, ``user_id``...) is
    refused (400)."""

    class Meta:
        unknown = RAISE

    connection = fields.String(required=True)
    email = fields.Email()
    password = fields.String()
    name = fields.String()
    given_name = fields.String()
    family_name = fields.String()
    nickname = fields.String()
    picture = fields.String()
    username = fields.String()
    phone_number = fields.String()
    verify_email = fields.Boolean()
    user_metadata = fields.Dict()
    app_metadata = fields.Dict()
