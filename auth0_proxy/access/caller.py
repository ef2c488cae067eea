"""Who is calling, and which organization it may see: the one place that rule lives.

The client id comes from the verified token; the organizations it may reach come from the
``clients`` map of the config, or Auth0's client grants (client_map.py). A token's ``org_id``
claim (Organizations for M2M) narrows that to one; without it the client must map to exactly
one. Auth0: "API servers must consider and enforce this claim"
(auth0.com/docs/manage-users/organizations/organizations-for-m2m-applications).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import current_app

from auth0_proxy.core.errors import OrganizationDenied
from auth0_proxy.core.scope import Caller, current_scope
from auth0_proxy.spending.policy import admit_request

from .client_map import ClientMap
from .grants import ANY_ORGANIZATION
from .tokens import AccessToken, require_oauth


def require_organization(*scopes: str) -> Callable[[Callable], Callable]:
    """Run the view only for a valid token granting one of ``scopes`` (each a space-separated
    set, as Authlib reads them), of a client acting for one organization; the view gets the
    ``Caller`` as its first argument.

    :raise TokenMissing, TokenRejected: no valid access token (401).
    :raise TokenInQueryString: the token came in the URL (400).
    :raise InsufficientScope: the token grants none of ``scopes`` (403).
    :raise OrganizationDenied: the client may not act for any one organization (403).
    :raise ClientRateLimited: the client is over its rate limit (429).
    """

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            return view(identify_caller(list(scopes)), *args, **kwargs)

        return guarded

    return decorate


def identify_caller(scopes: list[str]) -> Caller:
    """The request's caller, also kept in its scope for the log and audit lines."""
    token = require_oauth.acquire_token(scopes)
    scope = current_scope()
    scope.client_id = token.client_id  # logged even when its organization is refused
    admit_request(token.client_id)
    client_map: ClientMap = current_app._get_current_object().extensions["client_map"]
    org_id = org_for_token(token, client_map.allowed(token.client_id, token.org_id))
    scope.caller = caller = Caller(token.client_id, org_id, token.scopes)
    return caller


def org_for_token(token: AccessToken, allowed: tuple[str, ...]) -> str:
    """The organization this token may act for, of those its client may (``allowed``).

    :raise OrganizationDenied: a client of no organization, an ``org_id`` not allowed to the
        client, or a client of several organizations whose token does not name one (403).
    """
    if not allowed:
        raise OrganizationDenied(reason="client is not in the clients map")
    if token.org_id is not None:
        if token.org_id not in allowed and ANY_ORGANIZATION not in allowed:
            raise OrganizationDenied(
                "The token's organization is not one this client may access.",
                reason="org_id claim not allowed for client",
            )
        return token.org_id
    if len(allowed) > 1 or ANY_ORGANIZATION in allowed:
        raise OrganizationDenied(
            "This client serves several organizations: request its token with the "
            "'organization' parameter.",
            reason="client maps to several organizations and the token names none",
        )
    return allowed[0]
