"""The Management API operations the emulator implements, with Auth0's semantics.

Each function is a route handler: it gets the decoded path parameters and the query already
validated against the spec excerpt, and returns the JSON body (or raises Auth0Error).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import (
    Auth0Error,
    inexistent_client_grant,
    inexistent_organization,
    inexistent_user,
    query_error,
)
from .paging import (
    USERS_PAGING_LIMIT_MESSAGE,
    checkpoint_window,
    offset_window,
    select_fields,
)
from .records import MEMBER_FIELDS
from .routing import Call
from .search import parse_user_query

if TYPE_CHECKING:
    from .tenant import Tenant

MEMBERS_PAGING_LIMIT_MESSAGE = (
    "Requesting page {page} exceeds the allowed maximum of 1000 records. "
    "To fetch results beyond 1000, use the checkpoint pagination method."
)
CHECKPOINT_PARAMETERS = ("from", "take")
OFFSET_PARAMETERS = ("page", "per_page")


def organization_members(tenant: Tenant, call: Call) -> Any:
    """Members in user_id order: a plain array, an offset page, or a checkpoint page.

    :raise 404 inexistent_organization: unknown organization id.
    :raise 400: offset paging past 1,000 records, or offset and checkpoint parameters mixed.
    """
    query = call.query
    org_id = call.path_params["id"]
    member_ids = tenant.member_ids(org_id)
    if member_ids is None:
        raise inexistent_organization()
    if _uses_checkpoint(query):
        window = checkpoint_window(member_ids, query)
        return window.answer(
            "members", _project_members(tenant, org_id, window.of(member_ids), query)
        )
    window = offset_window(query, MEMBERS_PAGING_LIMIT_MESSAGE)
    members = _project_members(tenant, org_id, window.of(member_ids), query)
    return window.answer("members", members, len(member_ids), query)


def organization(tenant: Tenant, call: Call) -> Any:
    """The organization's id, name and display_name, with branding and metadata when set.

    :raise 404 inexistent_organization: unknown organization id.
    """
    details = tenant.organization_details(call.path_params["id"])
    if details is None:
        raise inexistent_organization()
    return details


def organization_member_roles(tenant: Tenant, call: Call) -> Any:
    """A member's roles in the organization, by name: an array or an offset page. A user who is
    not a member simply has none (the spec lists no 404 for it).

    :raise 404 inexistent_organization: unknown organization id.
    """
    roles = tenant.member_roles(call.path_params["id"], call.path_params["user_id"])
    if roles is None:
        raise inexistent_organization()
    window = offset_window(call.query)
    return window.answer("roles", list(window.of(roles)), len(roles), call.query)


def organization_invitations(tenant: Tenant, call: Call) -> Any:
    """The organization's invitations, newest first unless ``sort=created_at:1``; an array or
    an offset page, which has no ``total`` (Auth0 does not count invitations; the spec's page
    schema has none).

    :raise 404 inexistent_organization: unknown organization id.
    """
    query = call.query
    invitations = tenant.invitations(call.path_params["id"])
    if invitations is None:
        raise inexistent_organization()
    # Auth0's default order is created_at:-1.
    if query.get("sort", "created_at:-1") == "created_at:-1":
        invitations.reverse()
    window = offset_window(query)
    page = [select_fields(invitation, query) for invitation in window.of(invitations)]
    return window.answer("invitations", page, None, query)


def organization_invitation(tenant: Tenant, call: Call) -> Any:
    """One invitation of the organization.

    :raise 404 inexistent_organization: unknown organization id.
    :raise 404 inexistent_invitation: no such invitation in that organization.
    """
    org_id = call.path_params["id"]
    invitation = tenant.invitation(org_id, call.path_params["invitation_id"])
    if invitation is None:
        if tenant.organization_details(org_id) is None:
            raise inexistent_organization()
        # Auth0 does not publish this answer; worded like its other "does not exist" 404s.
        raise Auth0Error(404, "The invitation does not exist.", "inexistent_invitation")
    return select_fields(invitation, call.query)


def organization_enabled_connections(tenant: Tenant, call: Call) -> Any:
    """The connections the organization's members may log in with: an array or an offset page.

    :raise 404 inexistent_organization: unknown organization id.
    """
    connections = tenant.enabled_connections(call.path_params["id"])
    if connections is None:
        raise inexistent_organization()
    window = offset_window(call.query)
    page = list(window.of(connections))
    return window.answer("enabled_connections", page, len(connections), call.query)


def user(tenant: Tenant, call: Call) -> Any:
    """The full profile, immediately consistent.

    :raise 404 inexistent_user: unknown user id.
    """
    profile = tenant.user_profile(call.path_params["id"])
    if profile is None:
        raise inexistent_user()
    return select_fields(profile, call.query)


def user_organizations(tenant: Tenant, call: Call) -> Any:
    """The user's organizations in id order.

    :raise 404 inexistent_user: unknown user, if the tenant's ``unknown_user_organizations`` is
        "404"; by default an unknown user simply has none.
    """
    user_id = call.path_params["id"]
    # Auth0's docs do not say which, and the published spec lists no 404 for this operation.
    if tenant.unknown_user_organizations == "404" and tenant.user_profile(user_id) is None:
        raise inexistent_user()
    organizations = tenant.organizations_of(user_id)
    window = offset_window(call.query)
    page = list(window.of(organizations))
    return window.answer("organizations", page, len(organizations), call.query)


def users_by_email(tenant: Tenant, call: Call) -> Any:
    """Every user with exactly this email (case-sensitive, as Auth0 documents), full profiles.

    :raise 400 invalid_query_string: no ``email`` (checked against the spec).
    """
    return [
        select_fields(profile, call.query) for profile in tenant.users_by_email(call.query["email"])
    ]


def users(tenant: Tenant, call: Call) -> Any:
    """List or search users (search_engine v3 only; offset paging within the first 1,000).

    :raise 400: unsupported search engine or query syntax, or paging past 1,000 records.
    """
    query = call.query
    if query.get("search_engine", "v3") != "v3":
        raise query_error("The emulated tenant only implements search_engine=v3.")
    matched = _matching_profiles(tenant, query)
    window = offset_window(query, USERS_PAGING_LIMIT_MESSAGE)
    page = [select_fields(profile, query) for profile in window.of(matched)]
    return window.answer("users", page, len(matched), query, length=len(page))


def client_grants(tenant: Tenant, call: Call) -> Any:
    """Every application's client grants in id order, those the filters match: an array, an
    offset page or a checkpoint page.

    :raise 400: offset and checkpoint parameters mixed.
    """
    query = call.query
    grants = [grant for grant in tenant.client_grant_bodies() if _grant_matches(grant, query)]
    return _id_ordered_page("client_grants", grants, query)


def client_grant_organizations(tenant: Tenant, call: Call) -> Any:
    """The organizations the client grant is associated with, in id order: an array, an offset
    page or a checkpoint page.

    :raise 404 inexistent_client_grant: unknown grant (the spec lists no 404 for this operation,
        but Auth0 answers one rather than an empty list; its wording is not published).
    :raise 400: offset and checkpoint parameters mixed.
    """
    organizations = tenant.client_grant_organizations(call.path_params["id"])
    if organizations is None:
        raise inexistent_client_grant()
    return _id_ordered_page("organizations", organizations, call.query)


def organization_client_grants(tenant: Tenant, call: Call) -> Any:
    """The client grants associated with the organization, in id order, those the filters
    match: an array or an offset page (the spec offers no checkpoint paging here).

    :raise 404 inexistent_organization: unknown organization id.
    """
    query = call.query
    grants = tenant.organization_client_grants(call.path_params["id"])
    if grants is None:
        raise inexistent_organization()
    grants = [grant for grant in grants if _grant_matches(grant, query)]
    window = offset_window(query)
    return window.answer("client_grants", list(window.of(grants)), len(grants), query)


def _uses_checkpoint(query: dict[str, Any]) -> bool:
    """Whether the query pages by checkpoint (``from``/``take``) rather than by offset.

    :raise 400 invalid_query_string: both kinds of paging parameters at once.
    """
    uses_checkpoint = any(name in query for name in CHECKPOINT_PARAMETERS)
    if uses_checkpoint and any(name in query for name in OFFSET_PARAMETERS):
        raise query_error("Checkpoint paging (from/take) cannot be mixed with page/per_page.")
    return uses_checkpoint


def _id_ordered_page(name: str, records: list[dict[str, Any]], query: dict[str, Any]) -> Any:
    """``records`` (ordered by id) as Auth0 answers a listing with both paging styles.

    :raise 400: offset and checkpoint parameters mixed.
    """
    if _uses_checkpoint(query):
        window = checkpoint_window([record["id"] for record in records], query)
        return window.answer(name, list(window.of(records)))
    offset = offset_window(query)
    return offset.answer(name, list(offset.of(records)), len(records), query)


def _grant_matches(grant: dict[str, Any], query: dict[str, Any]) -> bool:
    """Whether a client grant passes the listing's filters: ``audience``, ``client_id`` and
    ``grant_ids`` exactly, ``allow_any_organization`` (only ``true`` is valid), ``subject_type``
    (every grant here is a client's), ``default_for`` (no grant here is a default one)."""
    if "grant_ids" in query and grant["id"] not in query["grant_ids"]:
        return False
    if query.get("allow_any_organization") and not grant["allow_any_organization"]:
        return False
    if "default_for" in query:
        return False
    filters = ("audience", "client_id", "subject_type")
    return all(grant[name] == query[name] for name in filters if name in query)


def _project_members(
    tenant: Tenant, org_id: str, member_ids: Sequence[str], query: dict[str, Any]
) -> list[dict[str, Any]]:
    """Members carry user_id, email, picture and name; ``roles`` (their roles in this
    organization, id and name) only when ``fields`` asks."""
    members = tenant.members(member_ids)
    if "roles" in select_fields({"roles": []}, query, default=MEMBER_FIELDS):
        for member in members:
            member["roles"] = tenant.member_role_summaries(org_id, member["user_id"])
    return [select_fields(member, query, default=MEMBER_FIELDS) for member in members]


def _matching_profiles(tenant: Tenant, query: dict[str, Any]) -> list[dict[str, Any]]:
    if "q" in query:
        user_query = parse_user_query(query["q"])
        if user_query.field == "user_id":
            profiles = [tenant.user_profile(user_id) for user_id in sorted(set(user_query.values))]
            matched = [profile for profile in profiles if profile is not None]
        else:
            matched = [p for p in tenant.user_profiles() if user_query.matches(p)]
    else:
        matched = tenant.user_profiles()
    if "connection" in query:
        matched = [p for p in matched if _connection(p) == query["connection"]]
    if "sort" in query:
        field, direction = query["sort"].rsplit(":", 1)
        matched.sort(key=lambda p: str(p.get(field, "")), reverse=direction == "-1")
    return matched


def _connection(profile: dict[str, Any]) -> str | None:
    identities = profile.get("identities") or [{}]
    return identities[0].get("connection")
