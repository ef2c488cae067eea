"""Client grants and Machine-to-Machine Access for Organizations in the emulated tenant keep
Auth0's promises (auth0.com/docs/manage-users/organizations/organizations-for-m2m-applications):
an application has at most one grant per API; the grant's ``organization_usage``, its
``allow_any_organization`` and the organizations it is associated with decide which
organization a client-credentials token may carry; the Management API lists the grants and the
associations and changes the latter.

One tenant server serves the whole module (a server per test would cost most of the time); each
test builds an API, applications and organizations of its own under a name of its own, so no
test sees another's. Every call is real HTTPS with certificate verification on, and answers are
checked against the response schemas of the spec excerpt the tenant serves.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from emulated_tenant import MANAGEMENT_API, Tenant, TenantServer
from emulated_tenant.oauth import ORGANIZATION_NOT_ALLOWED, ORGANIZATION_REQUIRED
from emulated_tenant.payload import BodyViolation, check_value
from emulated_tenant.query import inline_refs, load_spec
from emulated_tenant.ratelimit import MANAGEMENT, endpoint_group
from emulated_tenant.records import ClientGrant
from emulated_tenant.routes import ENDPOINTS

GRANT_ID = re.compile(r"cgr_[A-Za-z0-9]+")
CLIENT_GRANTS = "/api/v2/client-grants"
ORGANIZATIONS = "/api/v2/organizations"
NOT_AUTHORIZED = 'Client is not authorized to access organization "{asked}".'
#: the scope each operation requires
OPERATION_SCOPES = {
    "GET /api/v2/client-grants": "read:client_grants",
    "GET /api/v2/client-grants/{id}/organizations": "read:organization_client_grants",
    "GET /api/v2/organizations/{id}/client-grants": "read:organization_client_grants",
    "POST /api/v2/organizations/{id}/client-grants": "create:organization_client_grants",
    "DELETE /api/v2/organizations/{id}/client-grants/{grant_id}": (
        "delete:organization_client_grants"
    ),
}
ADMIN_CLIENT_ID = "client-grants-admin"
_test_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def server() -> Iterator[TenantServer]:
    with TenantServer(Tenant()) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: TenantServer) -> Iterator[requests.Session]:
    """A session that verifies TLS against the tenant's throwaway CA."""
    with requests.Session() as session:
        session.trust_env = False  # else REQUESTS_CA_BUNDLE / proxy variables would override
        session.verify = server.ca_bundle
        yield session


@pytest.fixture(scope="module")
def admin_token(server: TenantServer) -> str:
    """A Management API token with every scope the client-grant operations require."""
    tenant = server.tenant
    scopes = sorted(set(OPERATION_SCOPES.values()))
    return tenant.issue_token(ADMIN_CLIENT_ID, tenant.management_audience, scope=scopes)


@dataclass(frozen=True)
class Scenario:
    """A test's own API, applications and organizations on the shared tenant, and calls to it."""

    server: TenantServer
    http: requests.Session
    admin_token: str
    name: str

    @property
    def tenant(self) -> Tenant:
        return self.server.tenant

    @property
    def audience(self) -> str:
        return f"https://{self.name}.api.example.com"

    def app(self, suffix: str = "app", **organization_rules: Any) -> ClientGrant:
        """A new application with a grant of ``read:things`` for the scenario's API, with
        ``organization_usage`` and ``allow_any_organization`` as given."""
        client_id = f"{self.name}-{suffix}"
        self.tenant.add_client(client_id, f"{client_id}-secret")
        return self.tenant.add_client_grant(
            client_id, self.audience, ["read:things"], **organization_rules
        )

    def organization(self, suffix: str) -> str:
        org_id = f"org_{self.name}_{suffix}"
        self.tenant.add_organization(org_id, f"{self.name}-{suffix}", f"{suffix.title()} Inc")
        return org_id

    def token(self, client_id: str, organization: str | None = None) -> requests.Response:
        """``POST /oauth/token`` (client credentials) for the scenario's API."""
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": f"{client_id}-secret",
            "audience": self.audience,
        }
        if organization is not None:
            form["organization"] = organization
        return self.http.post(f"{self.server.url}/oauth/token", data=form)

    def claims(self, access_token: str) -> dict[str, Any]:
        """The token's claims, once its signature checks out against the published keys."""
        keys = KeySet.import_key_set(
            self.http.get(f"{self.server.url}/.well-known/jwks.json").json()
        )
        return jwt.decode(access_token, keys, algorithms=["RS256"]).claims

    def mgmt(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        scope: str | None = None,
        **params: Any,
    ) -> requests.Response:
        """A Management API call with every client-grant scope, or only ``scope``."""
        token = self.admin_token
        if scope is not None:
            token = self.tenant.issue_token(
                ADMIN_CLIENT_ID, self.tenant.management_audience, scope=scope
            )
        return self.http.request(
            method,
            self.server.url + path,
            headers={"Authorization": f"Bearer {token}"},
            params=params or None,
            json=body,
        )

    def ids(self, path: str, **params: Any) -> list[str]:
        """The ids an array listing answers."""
        response = self.mgmt("GET", path, **params)
        assert response.status_code == 200, response.text
        return [record["id"] for record in response.json()]


@pytest.fixture
def scenario(server: TenantServer, http: requests.Session, admin_token: str) -> Scenario:
    scenario = Scenario(server, http, admin_token, f"t{next(_test_numbers):03d}")
    scenario.tenant.add_api(scenario.audience, scopes=["read:things", "write:things"])
    return scenario


def assert_conforms(body: Any, endpoint: str, status: str = "200") -> None:
    """``body`` fits the answer schema the spec excerpt gives ``"GET /client-grants"``."""
    method, path = endpoint.split(" ", 1)
    spec = load_spec()
    response = spec["paths"][path][method.lower()]["responses"][status]
    try:
        check_value(body, inline_refs(spec, response["content"]["application/json"]["schema"]))
    except BodyViolation as violation:
        pytest.fail(f"{endpoint} answer breaks its schema at {violation.path!r}: {violation}")


def component_schema(name: str) -> dict[str, Any]:
    """A schema of the spec excerpt, refs inlined."""
    spec = load_spec()
    return inline_refs(spec, spec["components"]["schemas"][name])


def walk_checkpoints(scenario: Scenario, path: str, name: str, **params: Any) -> list[list[str]]:
    """The ids of every ``from``/``take`` page, following ``next`` until it is absent."""
    pages = []
    while True:
        response = scenario.mgmt("GET", path, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) <= {name, "next"}
        pages.append([record["id"] for record in body[name]])
        if "next" not in body:
            return pages
        params["from"] = body["next"]


# --- the Python API --------------------------------------------------------------------------


def test_add_clients_organizations_become_allow_grants_associated_with_them(
    scenario: Scenario,
) -> None:
    acme, globex = scenario.organization("acme"), scenario.organization("globex")
    client_id = f"{scenario.name}-legacy"
    grants = {scenario.audience: ["read:things"], MANAGEMENT_API: ["read:users"]}
    scenario.tenant.add_client(client_id, "secret", grants=grants, organizations=[acme, globex])

    api = scenario.tenant.client_grant_for(client_id, scenario.audience)
    assert api is not None
    assert (api.scope, api.organization_usage, api.allow_any_organization) == (
        ["read:things"],
        "allow",
        False,
    )
    assert api.organization_ids == {acme, globex}
    management = scenario.tenant.client_grant_for(client_id, scenario.tenant.management_audience)
    assert management is scenario.tenant.client_grant_for(client_id, MANAGEMENT_API)
    assert management is not None
    assert (management.scope, management.organization_usage) == (["read:users"], "deny")
    assert management.organization_ids == set()


def test_a_client_without_organizations_gets_deny_grants(scenario: Scenario) -> None:
    client_id = f"{scenario.name}-plain"
    scenario.tenant.add_client(client_id, "secret", grants={scenario.audience: ["read:things"]})
    grant = scenario.tenant.client_grant_for(client_id, scenario.audience)
    assert grant is not None and grant.organization_usage == "deny"
    assert not grant.allow_any_organization and not grant.organization_ids


def test_grant_ids_have_auth0s_shape_and_find_their_grant(scenario: Scenario) -> None:
    first, second = scenario.app("first"), scenario.app("second")
    assert GRANT_ID.fullmatch(first.id) and GRANT_ID.fullmatch(second.id)
    assert first.id != second.id
    assert scenario.tenant.client_grant(first.id) is first
    assert scenario.tenant.client_grant("cgr_missing") is None
    assert scenario.tenant.client_grant_for(first.client_id, "https://other.example.com") is None


def test_one_grant_per_application_and_api(scenario: Scenario) -> None:
    grant = scenario.app()
    with pytest.raises(ValueError, match="grant for"):
        scenario.tenant.add_client_grant(grant.client_id, scenario.audience, ["write:things"])
    with pytest.raises(ValueError, match="no client"):
        scenario.tenant.add_client_grant(f"{scenario.name}-nobody", scenario.audience)
    with pytest.raises(ValueError, match="organization_usage"):
        scenario.tenant.add_client_grant(
            grant.client_id, "https://other.example.com", organization_usage="sometimes"
        )


def test_unknown_ids_raise_key_error_and_a_second_association_value_error(
    scenario: Scenario,
) -> None:
    tenant, grant, acme = scenario.tenant, scenario.app(), scenario.organization("acme")
    refused = [
        lambda: tenant.associate_client_grant("org_missing", grant.id),
        lambda: tenant.associate_client_grant(acme, "cgr_missing"),
        lambda: tenant.dissociate_client_grant(acme, grant.id),  # not associated
        lambda: tenant.dissociate_client_grant("org_missing", grant.id),
        lambda: tenant.update_client_grant("cgr_missing", organization_usage="allow"),
        lambda: tenant.delete_client_grant("cgr_missing"),
    ]
    for call in refused:
        with pytest.raises(KeyError):
            call()
    tenant.associate_client_grant(acme, grant.id)
    with pytest.raises(ValueError, match="already associated"):
        tenant.associate_client_grant(acme, grant.id)


def test_updating_a_grant_changes_only_what_is_given(scenario: Scenario) -> None:
    grant, acme = scenario.app(), scenario.organization("acme")
    scenario.tenant.associate_client_grant(acme, grant.id)
    scenario.tenant.update_client_grant(grant.id, organization_usage="require")
    assert (grant.organization_usage, grant.allow_any_organization) == ("require", False)
    assert grant.scope == ["read:things"] and grant.organization_ids == {acme}
    scenario.tenant.update_client_grant(grant.id, allow_any_organization=True, scopes=[])
    assert (grant.organization_usage, grant.allow_any_organization) == ("require", True)
    assert grant.scope == []
    with pytest.raises(ValueError):
        scenario.tenant.update_client_grant(grant.id, organization_usage="always")


def test_deleting_an_organization_drops_its_associations(scenario: Scenario) -> None:
    grant = scenario.app(organization_usage="allow")
    acme, globex = scenario.organization("acme"), scenario.organization("globex")
    scenario.tenant.associate_client_grant(acme, grant.id)
    scenario.tenant.associate_client_grant(globex, grant.id)
    scenario.tenant.delete_organization(acme)
    assert grant.organization_ids == {globex}
    assert scenario.ids(f"{CLIENT_GRANTS}/{grant.id}/organizations") == [globex]
    # An organization created again under that id starts without the association.
    scenario.tenant.add_organization(acme, f"{scenario.name}-acme-again")
    assert scenario.token(grant.client_id, acme).status_code == 400


def test_a_deleted_grant_gets_no_more_tokens_for_its_api(scenario: Scenario) -> None:
    grant, acme = scenario.app(organization_usage="allow"), scenario.organization("acme")
    scenario.tenant.associate_client_grant(acme, grant.id)
    assert scenario.token(grant.client_id).status_code == 200
    scenario.tenant.delete_client_grant(grant.id)

    refused = scenario.token(grant.client_id)
    assert refused.status_code == 403
    assert refused.json()["error"] == "access_denied"
    assert f'access "{scenario.audience}"' in refused.json()["error_description"]
    assert scenario.tenant.client_grant(grant.id) is None
    assert scenario.tenant.client_grant_for(grant.client_id, scenario.audience) is None
    assert scenario.ids(f"{ORGANIZATIONS}/{acme}/client-grants") == []
    again = scenario.tenant.add_client_grant(grant.client_id, scenario.audience, ["read:things"])
    assert again.id != grant.id and not again.organization_ids


# --- the token endpoint's organization rules -------------------------------------------------


@dataclass(frozen=True)
class TokenCase:
    """A grant's organization rules, whether it is associated with Acme, the ``organization``
    asked for (Acme's ``id`` or ``name``, an ``unknown`` one, or none) and the 400's
    ``error_description``, if the request is refused."""

    usage: str
    allow_any: bool
    associated: bool
    asks: str | None
    refusal: str | None = None


TOKEN_CASES = {
    "deny, none asked: a token without org_id": TokenCase("deny", False, False, None),
    "deny refuses an organization, associated or not": TokenCase(
        "deny", False, True, "id", ORGANIZATION_NOT_ALLOWED
    ),
    "deny refuses one even with allow_any": TokenCase(
        "deny", True, False, "id", ORGANIZATION_NOT_ALLOWED
    ),
    "allow, none asked: a token without org_id": TokenCase("allow", False, True, None),
    "allow, associated: org_id": TokenCase("allow", False, True, "id"),
    "allow, associated, asked by name: org_id": TokenCase("allow", False, True, "name"),
    "allow, not associated: refused": TokenCase("allow", False, False, "id", NOT_AUTHORIZED),
    "allow any organization: org_id without association": TokenCase("allow", True, False, "id"),
    "an unknown organization: refused even with allow_any": TokenCase(
        "allow", True, False, "unknown", NOT_AUTHORIZED
    ),
    "require, none asked: refused": TokenCase("require", False, True, None, ORGANIZATION_REQUIRED),
    "require, associated: org_id": TokenCase("require", False, True, "id"),
    "require, not associated: refused": TokenCase("require", False, False, "id", NOT_AUTHORIZED),
    "require any organization: org_id without association": TokenCase("require", True, False, "id"),
}


@pytest.mark.parametrize("case", TOKEN_CASES.values(), ids=TOKEN_CASES.keys())
def test_the_grants_organization_rules_decide_the_tokens_org_id(
    scenario: Scenario, case: TokenCase
) -> None:
    grant = scenario.app(organization_usage=case.usage, allow_any_organization=case.allow_any)
    acme, globex = scenario.organization("acme"), scenario.organization("globex")
    scenario.tenant.associate_client_grant(globex, grant.id)  # never the one asked for
    if case.associated:
        scenario.tenant.associate_client_grant(acme, grant.id)
    asked = {"id": acme, "name": f"{scenario.name}-acme", "unknown": "org_missing", None: None}[
        case.asks
    ]

    response = scenario.token(grant.client_id, asked)

    if case.refusal is not None:
        assert response.status_code == 400
        assert response.json() == {
            "error": "invalid_request",
            "error_description": case.refusal.format(asked=asked),
        }
        return
    assert response.status_code == 200, response.text
    claims = scenario.claims(response.json()["access_token"])
    assert claims.get("org_id") == (acme if asked else None)
    assert claims["scope"] == "read:things"


def test_a_dissociated_grant_gets_no_more_org_tokens_but_issued_ones_stay_tokens(
    scenario: Scenario,
) -> None:
    grant, acme = scenario.app(organization_usage="allow"), scenario.organization("acme")
    scenario.tenant.associate_client_grant(acme, grant.id)
    issued = scenario.token(grant.client_id, acme).json()["access_token"]

    dissociated = scenario.mgmt("DELETE", f"{ORGANIZATIONS}/{acme}/client-grants/{grant.id}")
    assert dissociated.status_code == 204

    refused = scenario.token(grant.client_id, acme)
    assert refused.status_code == 400
    assert refused.json()["error_description"] == NOT_AUTHORIZED.format(asked=acme)
    # Auth0 does not revoke access tokens: the one issued is still signed, unexpired, Acme's.
    claims = scenario.claims(issued)
    assert claims["org_id"] == acme and claims["exp"] > time.time()
    assert scenario.token(grant.client_id).status_code == 200  # allow: none asked is fine


# --- GET /api/v2/client-grants -----------------------------------------------------------------


def test_client_grants_are_listed_in_auth0s_shape(scenario: Scenario) -> None:
    grant = scenario.app(organization_usage="require", allow_any_organization=True)
    response = scenario.mgmt("GET", CLIENT_GRANTS, client_id=grant.client_id)
    assert response.status_code == 200
    assert response.json() == [
        {
            "id": grant.id,
            "client_id": grant.client_id,
            "audience": scenario.audience,
            "scope": ["read:things"],
            "organization_usage": "require",
            "allow_any_organization": True,
            "is_system": False,
            "subject_type": "client",
        }
    ]
    everything = scenario.mgmt("GET", CLIENT_GRANTS).json()
    assert_conforms(everything, "GET /client-grants")
    assert [grant["id"] for grant in everything] == sorted(grant["id"] for grant in everything)


def test_a_management_api_grant_shows_the_management_audience(scenario: Scenario) -> None:
    client_id = f"{scenario.name}-mgmt"
    scenario.tenant.add_client(client_id, "secret", grants={MANAGEMENT_API: ["read:users"]})
    [listed] = scenario.mgmt("GET", CLIENT_GRANTS, client_id=client_id).json()
    assert listed["audience"] == scenario.tenant.management_audience
    audience = scenario.tenant.management_audience
    assert listed["id"] in scenario.ids(CLIENT_GRANTS, audience=audience)


def test_client_grants_are_filtered(scenario: Scenario) -> None:
    plain = scenario.app("plain")
    anywhere = scenario.app("anywhere", organization_usage="allow", allow_any_organization=True)
    other_api = f"https://{scenario.name}.other.example.com"
    elsewhere = scenario.tenant.add_client_grant(plain.client_id, other_api, ["x"])
    mine = scenario.audience

    assert scenario.ids(CLIENT_GRANTS, audience=mine) == [plain.id, anywhere.id]
    assert scenario.ids(CLIENT_GRANTS, client_id=plain.client_id) == [plain.id, elsewhere.id]
    assert scenario.ids(CLIENT_GRANTS, audience=mine, allow_any_organization="true") == [
        anywhere.id
    ]
    assert scenario.ids(CLIENT_GRANTS, audience=mine, subject_type="client") == [
        plain.id,
        anywhere.id,
    ]
    assert scenario.ids(CLIENT_GRANTS, audience=mine, subject_type="user") == []
    assert scenario.ids(CLIENT_GRANTS, audience=mine, default_for="third_party_clients") == []
    # The spec's enum for allow_any_organization has only true.
    refused = scenario.mgmt("GET", CLIENT_GRANTS, allow_any_organization="false")
    assert refused.status_code == 400
    assert refused.json()["errorCode"] == "invalid_query_string"


def test_client_grants_page_by_offset(scenario: Scenario) -> None:
    ids = [scenario.app(f"app{number}").id for number in range(5)]
    paged = scenario.mgmt(
        "GET", CLIENT_GRANTS, audience=scenario.audience, page=1, per_page=2, include_totals="true"
    )
    assert paged.status_code == 200
    body = paged.json()
    assert_conforms(body, "GET /client-grants")
    assert [grant["id"] for grant in body.pop("client_grants")] == ids[2:4]
    assert body == {"start": 2, "limit": 2, "total": 5}
    # Without include_totals a page is a bare array.
    assert scenario.ids(CLIENT_GRANTS, audience=scenario.audience, page=2, per_page=2) == ids[4:]


def test_client_grants_page_by_checkpoint_to_the_end(scenario: Scenario) -> None:
    ids = [scenario.app(f"app{number}").id for number in range(5)]
    pages = walk_checkpoints(
        scenario, CLIENT_GRANTS, "client_grants", audience=scenario.audience, take=2
    )
    assert pages == [ids[0:2], ids[2:4], ids[4:]]
    first = scenario.mgmt("GET", CLIENT_GRANTS, audience=scenario.audience, take=2).json()
    assert_conforms(first, "GET /client-grants")
    # A last page ({"client_grants": [...]}) fits the offset page's schema as well as the
    # checkpoint page's (neither requires a property), so the spec's oneOf cannot take it:
    # it is checked against the checkpoint page's schema alone.
    last = scenario.mgmt("GET", CLIENT_GRANTS, audience=scenario.audience, take=5).json()
    check_value(last, component_schema("ListClientGrantPaginatedResponseContent"))
    assert "next" not in last and len(last["client_grants"]) == 5


@pytest.mark.parametrize("path", [CLIENT_GRANTS, CLIENT_GRANTS + "/{grant}/organizations"])
def test_mixing_offset_and_checkpoint_paging_is_400(scenario: Scenario, path: str) -> None:
    grant = scenario.app()
    response = scenario.mgmt("GET", path.format(grant=grant.id), take=2, page=0)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_query_string"


# --- GET /api/v2/client-grants/{id}/organizations ----------------------------------------------


def test_a_grants_organizations_in_all_three_shapes(scenario: Scenario) -> None:
    grant = scenario.app(organization_usage="allow")
    org_ids = [scenario.organization(f"o{number}") for number in range(5)]
    for org_id in reversed(org_ids):  # listed by id, not by when they were associated
        scenario.tenant.associate_client_grant(org_id, grant.id)
    path = f"{CLIENT_GRANTS}/{grant.id}/organizations"
    endpoint = "GET /client-grants/{id}/organizations"

    plain = scenario.mgmt("GET", path).json()
    assert_conforms(plain, endpoint)
    assert plain[0] == {"id": org_ids[0], "name": f"{scenario.name}-o0", "display_name": "O0 Inc"}
    assert [org["id"] for org in plain] == org_ids

    paged = scenario.mgmt("GET", path, page=0, per_page=3, include_totals="true").json()
    assert_conforms(paged, endpoint)
    assert [org["id"] for org in paged.pop("organizations")] == org_ids[:3]
    assert paged == {"start": 0, "limit": 3, "total": 5}
    assert scenario.ids(path, page=1, per_page=3) == org_ids[3:]

    assert walk_checkpoints(scenario, path, "organizations", take=2) == [
        org_ids[0:2],
        org_ids[2:4],
        org_ids[4:],
    ]
    assert_conforms(scenario.mgmt("GET", path, take=2).json(), endpoint)


# --- GET /api/v2/organizations/{id}/client-grants ----------------------------------------------


def test_an_organizations_client_grants_are_filtered_and_paged_by_offset(
    scenario: Scenario,
) -> None:
    acme = scenario.organization("acme")
    grants = [scenario.app(f"app{number}", organization_usage="allow") for number in range(3)]
    other_api = f"https://{scenario.name}.other.example.com"
    elsewhere = scenario.tenant.add_client_grant(grants[0].client_id, other_api, ["x"])
    unassociated = scenario.app("unassociated", organization_usage="allow")
    for grant in [*grants, elsewhere]:
        scenario.tenant.associate_client_grant(acme, grant.id)
    path = f"{ORGANIZATIONS}/{acme}/client-grants"
    endpoint = "GET /organizations/{id}/client-grants"
    ids = [grant.id for grant in [*grants, elsewhere]]

    listed = scenario.mgmt("GET", path).json()
    assert_conforms(listed, endpoint)
    assert [grant["id"] for grant in listed] == ids
    assert unassociated.id not in ids
    assert listed[0] == {
        "id": grants[0].id,
        "client_id": grants[0].client_id,
        "audience": scenario.audience,
        "scope": ["read:things"],
        "organization_usage": "allow",
        "allow_any_organization": False,
    }
    assert scenario.ids(path, audience=other_api) == [elsewhere.id]
    assert scenario.ids(path, client_id=grants[0].client_id) == [grants[0].id, elsewhere.id]
    assert scenario.ids(path, grant_ids=[grants[2].id, elsewhere.id]) == [
        grants[2].id,
        elsewhere.id,
    ]

    paged = scenario.mgmt("GET", path, page=1, per_page=2, include_totals="true").json()
    assert_conforms(paged, endpoint)
    assert [grant["id"] for grant in paged.pop("client_grants")] == ids[2:]
    assert paged == {"start": 2, "limit": 2, "total": 4}
    # The spec offers this listing no checkpoint paging.
    refused = scenario.mgmt("GET", path, take=2)
    assert refused.status_code == 400
    assert refused.json()["errorCode"] == "invalid_query_string"


# --- POST and DELETE /api/v2/organizations/{id}/client-grants ------------------------------------


def test_associating_and_dissociating_show_in_both_listings(scenario: Scenario) -> None:
    grant = scenario.app(organization_usage="require")
    acme = scenario.organization("acme")
    org_grants = f"{ORGANIZATIONS}/{acme}/client-grants"
    grant_orgs = f"{CLIENT_GRANTS}/{grant.id}/organizations"

    created = scenario.mgmt("POST", org_grants, {"grant_id": grant.id})
    assert created.status_code == 201
    assert_conforms(created.json(), "POST /organizations/{id}/client-grants", "201")
    assert created.json() == {
        "id": grant.id,
        "client_id": grant.client_id,
        "audience": scenario.audience,
        "scope": ["read:things"],
        "organization_usage": "require",
        "allow_any_organization": False,
    }
    assert scenario.ids(org_grants) == [grant.id]
    assert scenario.ids(grant_orgs) == [acme]
    assert scenario.token(grant.client_id, acme).status_code == 200

    removed = scenario.mgmt("DELETE", f"{org_grants}/{grant.id}")
    assert removed.status_code == 204 and removed.content == b""
    assert scenario.ids(org_grants) == []
    assert scenario.ids(grant_orgs) == []


def test_associating_twice_is_409(scenario: Scenario) -> None:
    grant, acme = scenario.app(), scenario.organization("acme")
    path = f"{ORGANIZATIONS}/{acme}/client-grants"
    assert scenario.mgmt("POST", path, {"grant_id": grant.id}).status_code == 201
    again = scenario.mgmt("POST", path, {"grant_id": grant.id})
    assert again.status_code == 409
    assert again.json() == {
        "statusCode": 409,
        "error": "Conflict",
        "message": "The client grant is already associated with this organization.",
        "errorCode": "conflict",
    }
    assert scenario.ids(path) == [grant.id]


def test_an_association_needs_a_grant_id(scenario: Scenario) -> None:
    acme = scenario.organization("acme")
    response = scenario.mgmt("POST", f"{ORGANIZATIONS}/{acme}/client-grants", {})
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_body"
    assert response.json()["message"] == (
        "Payload validation error: 'Missing required property: grant_id'."
    )


NO_ORGANIZATION = ("No organization found by that id or name", "inexistent_organization")
NO_GRANT = ("The client grant does not exist.", "inexistent_client_grant")
NOT_ASSOCIATED = (
    "The client grant is not associated with this organization.",
    "inexistent_client_grant",
)
# (method, path with {org} and {grant}, body, the 404's message and errorCode)
UNKNOWN_IDS = {
    "associate, unknown organization": (
        "POST",
        "/api/v2/organizations/org_missing/client-grants",
        {"grant_id": "{grant}"},
        NO_ORGANIZATION,
    ),
    "associate, unknown grant": (
        "POST",
        "/api/v2/organizations/{org}/client-grants",
        {"grant_id": "cgr_missing"},
        NO_GRANT,
    ),
    "dissociate, unknown organization": (
        "DELETE",
        "/api/v2/organizations/org_missing/client-grants/{grant}",
        None,
        NO_ORGANIZATION,
    ),
    "dissociate, unknown grant": (
        "DELETE",
        "/api/v2/organizations/{org}/client-grants/cgr_missing",
        None,
        NO_GRANT,
    ),
    "dissociate, not associated": (
        "DELETE",
        "/api/v2/organizations/{org}/client-grants/{grant}",
        None,
        NOT_ASSOCIATED,
    ),
    "an unknown organization's grants": (
        "GET",
        "/api/v2/organizations/org_missing/client-grants",
        None,
        NO_ORGANIZATION,
    ),
    "an unknown grant's organizations": (
        "GET",
        "/api/v2/client-grants/cgr_missing/organizations",
        None,
        NO_GRANT,
    ),
}


@pytest.mark.parametrize(
    ("method", "path", "body", "answer"), UNKNOWN_IDS.values(), ids=UNKNOWN_IDS
)
def test_unknown_ids_are_404(
    scenario: Scenario, method: str, path: str, body: Any, answer: tuple[str, str]
) -> None:
    grant, acme = scenario.app(), scenario.organization("acme")
    body = {"grant_id": body["grant_id"].format(grant=grant.id)} if body else None
    response = scenario.mgmt(method, path.format(org=acme, grant=grant.id), body)
    message, error_code = answer
    assert response.status_code == 404
    assert response.json() == {
        "statusCode": 404,
        "error": "Not Found",
        "message": message,
        "errorCode": error_code,
    }
    assert grant.organization_ids == set()


# --- permissions, routes and rate limits -------------------------------------------------------


def _operation_call(endpoint: str, grant: ClientGrant, org_id: str) -> tuple[str, str, Any]:
    """A request for ``endpoint`` that succeeds once the grant is associated (for a DELETE) or
    not (for a POST)."""
    method, template = endpoint.split(" ", 1)
    path = template.replace("{grant_id}", grant.id)
    path = path.replace("organizations/{id}", f"organizations/{org_id}").replace("{id}", grant.id)
    return method, path, {"grant_id": grant.id} if method == "POST" else None


@pytest.mark.parametrize(("endpoint", "scope"), OPERATION_SCOPES.items(), ids=OPERATION_SCOPES)
def test_each_operation_requires_its_scope(scenario: Scenario, endpoint: str, scope: str) -> None:
    grant, acme = scenario.app(organization_usage="allow"), scenario.organization("acme")
    if endpoint.startswith("DELETE"):
        scenario.tenant.associate_client_grant(acme, grant.id)
    associated = set(grant.organization_ids)
    method, path, body = _operation_call(endpoint, grant, acme)

    refused = scenario.mgmt(method, path, body, scope="read:clients")
    assert refused.status_code == 403
    assert refused.json()["errorCode"] == "insufficient_scope"
    assert refused.json()["message"] == f"Insufficient scope, expected any of: {scope}"
    assert grant.organization_ids == associated
    assert scenario.mgmt(method, path, body, scope=scope).status_code in (200, 201, 204)


def test_each_operation_is_routed(scenario: Scenario) -> None:
    assert set(OPERATION_SCOPES) <= set(ENDPOINTS)


@pytest.mark.parametrize("endpoint", OPERATION_SCOPES)
def test_client_grant_calls_count_against_the_whole_api_only(endpoint: str) -> None:
    method, path = endpoint.split(" ", 1)
    assert endpoint_group(method, path) == MANAGEMENT


def test_client_grant_calls_are_counted_in_the_management_group(scenario: Scenario) -> None:
    acme = scenario.organization("acme")
    scenario.mgmt("GET", f"{ORGANIZATIONS}/{acme}/client-grants")
    [logged] = [r for r in scenario.tenant.requests if acme in r["raw_uri"]]
    assert (logged["endpoint"], logged["status"], logged["group"]) == (
        "GET /api/v2/organizations/{id}/client-grants",
        200,
        MANAGEMENT,
    )
