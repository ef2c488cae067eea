"""Which organization a caller may see: the one place that rule lives.

The client id comes from the verified token; the organizations it may reach come from the
``clients`` map of the config. A token's ``org_id`` claim (Organizations for M2M) narrows that
to one; without it the client must map to exactly one. Auth0: "API servers must consider and
enforce this claim" (auth0.com/docs/manage-users/organizations/organizations-for-m2m-applications).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from authlib.integrations.flask_oauth2 import current_token
from flask import current_app, g

from .auth import AccessToken
from .errors import OrganizationDenied


def org_for_token(token: AccessToken, client_orgs: Mapping[str, tuple[str, ...]]) -> str:
    """The organization this token may act for.

    :raise OrganizationDenied: unmapped client, an ``org_id`` not allowed to the client, or a
        client of several organizations whose token does not name one (403).
    """
    allowed = client_orgs.get(token.client_id)
    if not allowed:
        raise OrganizationDenied(reason="client is not in the clients map")
    if token.org_id is not None:
        if token.org_id not in allowed:
            raise OrganizationDenied(
                "The token's organization is not one this client may access.",
                reason="org_id claim not allowed for client",
            )
        return token.org_id
    if len(allowed) > 1:
        raise OrganizationDenied(
            "This client serves several organizations: request its token with the "
            "'organization' parameter.",
            reason="client maps to several organizations and the token names none",
        )
    return allowed[0]


def with_organization(view: Callable) -> Callable:
    """Pass the caller's organization to the view as ``org_id``; use below ``require_oauth``."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        g.org_id = org_for_token(current_token, current_app.config["SETTINGS"].clients)
        return view(*args, org_id=g.org_id, **kwargs)

    return wrapper
