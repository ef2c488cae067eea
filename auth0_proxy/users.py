"""The proxy's resource: the users of the caller's organization, and nothing else."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from .errors import UserNotFound
from .extensions import require_oauth
from .management import ManagementClient
from .organization import with_organization
from .schemas import public_profile

bp = Blueprint("users", __name__)


@bp.get("/users")
@require_oauth("read:users")
@with_organization
def list_users(org_id: str):
    """All members of the caller's organization, every page of them."""
    return jsonify(list(management().iter_members(org_id)))


@bp.get("/users/<path:user_id>")
@require_oauth("read:users")
@with_organization
def get_user(org_id: str, user_id: str):
    """A member's full profile."""
    return jsonify(public_profile(get_member(org_id, user_id)))


def get_member(org_id: str, user_id: str) -> dict:
    """The profile of a user who belongs to the organization.

    :raise 404: the user does not exist, or is not a member: the same answer for both, so a
        caller cannot learn that a user exists in another organization.
    """
    client = management()
    if not client.is_member(org_id, user_id):
        raise UserNotFound(reason="user is not a member of the caller's organization")
    return client.get_user(user_id)


def management() -> ManagementClient:
    return current_app.extensions["management"]
