"""What Auth0's client grants authorize: the organizations each client may act for, read from
the grants of the proxy's own API (``client_grants.enabled``). The one place that rule lives.

Auth0 issues a client a token for an organization (Organizations for M2M) when the client's
grant for the API has ``organization_usage`` allow or require and is associated with that
organization, or has ``allow_any_organization``. The proxy follows it, narrower where it must:

- a grant whose ``organization_usage`` is deny (Auth0's default) maps to nothing: its client
  uses no organization, so it acts for none;
- a grant with ``allow_any_organization`` maps to nothing unless
  ``client_grants.trust_allow_any_organization``: it would let that one client read the users
  of every organization of the tenant, every customer's, with a token naming any of them;
- otherwise, the organizations associated with the grant.

(auth0.com/docs/manage-users/organizations/organizations-for-m2m-applications)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from auth0_proxy.auth0.management import ManagementClient

# Among a client's organizations: any one its token names (a trusted allow_any_organization).
ANY_ORGANIZATION = "*"
USES_ORGANIZATIONS = ("allow", "require")


@dataclass(frozen=True)
class Authorization:
    """What one grant lets its client act for: ``organizations`` (none when ``refused``)."""

    client_id: str
    grant_id: str
    organizations: tuple[str, ...] = ()
    refused: str = ""


def read_authorizations(
    management: ManagementClient,
    audience: str,
    *,
    trust_any: bool,
    client_id: str | None = None,
    patient: bool = False,
    progress: Callable[[], None] = lambda: None,
) -> list[Authorization]:
    """Each client grant of ``audience`` (``client_id``'s only, if given) with what it
    authorizes; ``progress`` is told of each grant listed and before each grant's organizations
    are read (it may end the read by raising). A ``patient`` reader waits its turn at the
    budget (see ``ManagementClient.client_grants``).

    :raise APIError: Auth0 failed or the budget refused a call: nothing is returned, never a
        part of the grants.
    """
    grants = []
    for grant in management.client_grants(audience, client_id, patient=patient):
        progress()
        if _applies(grant, audience, client_id):
            grants.append(grant)
    found = []
    for grant in grants:
        progress()
        found.append(authorize(grant, management, trust_any=trust_any, patient=patient))
    return found


def _applies(grant: dict, audience: str, client_id: str | None) -> bool:
    """A client's grant for ``audience`` (``client_id``'s), whatever filters Auth0 applied; a
    user-access grant issues no client tokens."""
    if client_id is not None and grant["client_id"] != client_id:
        return False
    return grant["audience"] == audience and grant["subject_type"] == "client"


def authorize(
    grant: dict, management: ManagementClient, *, trust_any: bool, patient: bool = False
) -> Authorization:
    """What ``grant`` authorizes; its associated organizations are read only when they
    decide it."""
    client_id, grant_id = grant["client_id"], grant["id"]
    usage = grant["organization_usage"]
    if usage not in USES_ORGANIZATIONS:
        why = f"organization_usage {usage}: its tokens name no organization"
        return Authorization(client_id, grant_id, refused=why)
    if grant["allow_any_organization"]:
        if trust_any:
            return Authorization(client_id, grant_id, (ANY_ORGANIZATION,))
        why = "allow_any_organization, not trusted (client_grants.trust_allow_any_organization)"
        return Authorization(client_id, grant_id, refused=why)
    org_ids = tuple(sorted(set(management.grant_organization_ids(grant_id, patient=patient))))
    return Authorization(
        client_id, grant_id, org_ids, "" if org_ids else "associated with no organization"
    )


def covers(organizations: tuple[str, ...], org_id: str | None) -> bool:
    """Whether ``organizations`` decide a token naming ``org_id`` (or none): a client with
    none is unknown, and so is an organization not among them."""
    if not organizations:
        return False
    return org_id is None or org_id in organizations or ANY_ORGANIZATION in organizations
