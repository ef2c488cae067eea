"""The clients map from Auth0's own authorizations (client_grants.enabled): each edge client may
read the organizations its grant for the proxy's API is associated with, as the tenant says
now, on every worker of a deployment sharing one cache; the config's entries win; Auth0's
grants that would widen access are refused; a failing Auth0 never widens it either."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
import requests
from flask import Flask

from auth0_proxy import create_app, stop_background_work
from auth0_proxy.access.client_map import SETTLED_SECONDS, ClientMap
from auth0_proxy.core import metrics
from emulated_tenant.demo import (
    ACME_CLIENT_ID,
    ACME_ORG_ID,
    GLOBEX_ORG_ID,
    UNBOUNDED_BUDGET,
    edge_token,
)
from emulated_tenant.demo import API_AUDIENCE as PROXY_API
from emulated_tenant.ratelimit import UNLIMITED_REPORTED_LIMIT
from tests.support import assert_auth0_error, assert_refused, ids, proxy_config_for
from tests.test_event_stream import eventually
from tests.test_metrics import parse, total

NEWCO = "edge-newco"
NEWCO_SECRET = "edge-newco-secret"
REFRESH_SECONDS = 300
LOOKUP_SECONDS = 10
GRANT_ORGANIZATIONS = "GET /api/v2/client-grants/{id}/organizations"
ACME_MEMBER = "auth0|alice-acme"
# The whole Management API's limit as the unlimited tenant reports it (x-ratelimit-limit): the
# reads of the map, at the lowest rank, need three quarters of the proxy's share of it left.
TENANTS_BUDGET = {
    "limits": {
        **UNBOUNDED_BUDGET["limits"],
        "management": {"burst": UNLIMITED_REPORTED_LIMIT, "per_minute": 1_000_000},
    }
}


@pytest.fixture
def make_worker(tenant_server, tmp_path, monkeypatch, app_log) -> Iterator[Callable[..., Flask]]:
    """``make_worker(**client_grants)``: an app taking its clients map from Auth0 as well; the
    workers made share one cache (one deployment), and each stops following it afterwards."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_server.ca_bundle)
    monkeypatch.setattr(ClientMap, "sync_seconds", 0.05)  # each worker looks 20 times a second
    made: list[Flask] = []

    def make(cache: dict | None = None, clients: dict | None = None, **client_grants) -> Flask:
        config = proxy_config_for(
            tenant_server,
            budget=TENANTS_BUDGET,
            cache_ttl_seconds=30,
            **(cache or {"cache_dir": str(tmp_path / "c")}),
        )
        if clients is not None:
            config["clients"] = clients
        config["client_grants"] = {
            "enabled": True,
            "refresh_seconds": REFRESH_SECONDS,
            "lookup_interval_seconds": LOOKUP_SECONDS,
            **client_grants,
        }
        app = create_app(config)
        logging.getLogger("auth0_proxy").addHandler(app_log)
        made.append(app)
        return app

    yield make
    for app in made:
        stop_background_work(app)
        app.extensions["management"].upstream.session.close()


@pytest.fixture
def newco(tenant) -> Iterator:
    """A new customer's edge application in the tenant, with a grant for the proxy's API that
    requires an organization, associated with none yet; gone afterwards."""
    tenant.add_client(NEWCO, NEWCO_SECRET)
    grant = tenant.add_client_grant(NEWCO, PROXY_API, ["read:users"], organization_usage="require")
    yield grant
    tenant.delete_client_grant(grant.id)


def client_token(tenant_server, client_id: str, secret: str, organization: str | None = None):
    """A token as the client gets it from the tenant (client credentials over HTTPS)."""
    return edge_token(tenant_server.url, tenant_server.ca_bundle, client_id, secret, organization)


def metric(name: str, **labels) -> float:
    return total(parse(metrics.render()[0].decode()), name, **labels)


def map_read(*workers: Flask, since: float = 0.0) -> None:
    """Wait until a read of Auth0's map begun at ``since`` or later is stored, and every worker
    uses it (each looks at the stored version every ``sync_seconds``)."""
    store = workers[0].extensions["store"]

    def read() -> dict | None:
        head = store.get("client-grants:head")
        return head if head and head["read_at"] >= since else None

    assert eventually(lambda: read() is not None), "no read of Auth0's client grants"
    read_at = read()["read_at"]
    assert eventually(
        lambda: all(w.extensions["client_map"].read_at == read_at for w in workers)
    ), "a worker does not use the map read"


def requests_for(path: str, tenant) -> list[str]:
    """The requests the tenant answered for ``path`` (with any query)."""
    return [r["raw_uri"] for r in list(tenant.requests) if r["raw_uri"].startswith(path)]


def lookups(tenant) -> int:
    """Lookups of one client the tenant answered (the map's reads list every client)."""
    return sum(1 for uri in requests_for("/api/v2/client-grants?", tenant) if "client_id=" in uri)


def test_a_client_authorized_in_auth0_is_served_with_no_config_change(
    make_worker, newco, tenant, tenant_server, call, clock
):
    first, second = make_worker(), make_worker()
    map_read(first, second)  # at start: the new customer is not authorized yet
    tenant.associate_client_grant(ACME_ORG_ID, newco.id)  # the admin's one action in Auth0
    token = client_token(tenant_server, NEWCO, NEWCO_SECRET, organization=ACME_ORG_ID)

    answers = [call("/users", token, via=worker) for worker in (first, second, first)]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert ACME_MEMBER in ids(answers[0])
    assert lookups(tenant) == 1  # looked up once, for the whole deployment
    clock.advance(REFRESH_SECONDS)
    map_read(first, second, since=clock.now())
    assert call("/users", token, via=second).status_code == 200
    assert lookups(tenant) == 1  # in the map now


def test_a_dissociated_client_is_refused_within_the_interval_on_every_worker(
    make_worker, newco, tenant, tenant_server, call, clock, tmp_path
):
    workers = [make_worker({"cache_dir": str(tmp_path / "shared")}) for _ in range(2)]
    refused_after_dissociation(workers, newco, tenant, tenant_server, call, clock)


def test_the_same_with_workers_sharing_redis(
    redis_prefix, make_worker, newco, tenant, tenant_server, call, clock
):
    """(redis_prefix first: its keys are deleted after the workers stop writing them.)"""
    cache = {"cache_type": "redis", "cache_key_prefix": redis_prefix}
    workers = [make_worker(cache) for _ in range(2)]
    refused_after_dissociation(workers, newco, tenant, tenant_server, call, clock)


def refused_after_dissociation(workers, newco, tenant, tenant_server, call, clock) -> None:
    """Both workers serve the new customer, then refuse it (its token issued before) once a
    read begun after its dissociation is stored: one ``refresh_seconds`` later."""
    tenant.associate_client_grant(ACME_ORG_ID, newco.id)
    clock.advance(REFRESH_SECONDS)  # a read of the map with it, whatever was read at start
    map_read(*workers, since=clock.now())
    token = client_token(tenant_server, NEWCO, NEWCO_SECRET, organization=ACME_ORG_ID)
    assert [call("/users", token, via=w).status_code for w in workers] == [200, 200]
    removed = metric("auth0_proxy_client_grants_changes_total", change="removed")

    tenant.dissociate_client_grant(ACME_ORG_ID, newco.id)  # the token issued before lives on
    clock.advance(REFRESH_SECONDS)
    map_read(*workers, since=clock.now())

    for worker in workers:
        answer = call("/users", token, via=worker)
        assert_refused(answer, 403, "access_denied", "client is not in the clients map")
        assert ACME_MEMBER.encode() not in answer.body
    assert metric("auth0_proxy_client_grants_changes_total", change="removed") == removed + 1


def test_allow_any_organization_is_refused_unless_trusted(
    make_worker, newco, tenant, tenant_server, call
):
    tenant.update_client_grant(newco.id, allow_any_organization=True)
    worker = make_worker()
    map_read(worker)
    token = client_token(tenant_server, NEWCO, NEWCO_SECRET, organization=GLOBEX_ORG_ID)

    answer = call("/users", token, via=worker)

    assert_refused(answer, 403, "access_denied", "client is not in the clients map")
    assert lookups(tenant) == 1  # the lookup found the same: nothing
    assert metric("auth0_proxy_client_grants_lookups_total", outcome="not_found") >= 1


def test_a_trusted_allow_any_organization_serves_the_organization_its_token_names(
    make_worker, newco, tenant, tenant_server, call
):
    tenant.update_client_grant(newco.id, allow_any_organization=True)
    worker = make_worker(trust_allow_any_organization=True)
    map_read(worker)

    for org_id in (ACME_ORG_ID, GLOBEX_ORG_ID):
        token = client_token(tenant_server, NEWCO, NEWCO_SECRET, organization=org_id)
        answer = call("/users", token, via=worker)
        assert answer.status_code == 200
        members = {member["user_id"] for member in answer.json()}
        assert members == set(tenant.member_ids(org_id))
    tenant.update_client_grant(newco.id, organization_usage="allow")
    orgless = client_token(tenant_server, NEWCO, NEWCO_SECRET)  # names no organization
    answer = call("/users", orgless, via=worker)
    assert_refused(
        answer,
        403,
        "access_denied",
        "client maps to several organizations and the token names none",
    )


def test_organization_usage_deny_maps_to_nothing(
    make_worker, newco, tenant, make_token, tenant_server, call
):
    tenant.associate_client_grant(ACME_ORG_ID, newco.id)
    tenant.update_client_grant(newco.id, organization_usage="deny")
    worker = make_worker()
    map_read(worker)
    assert not worker.extensions["client_map"].knows(NEWCO)

    plain = client_token(tenant_server, NEWCO, NEWCO_SECRET)  # Auth0 names no organization
    forged = make_token(NEWCO, ACME_ORG_ID)  # signed by the tenant, as if it had
    for token in (plain, forged):
        answer = call("/users", token, via=worker)
        assert_refused(answer, 403, "access_denied", "client is not in the clients map")


def test_an_unknown_client_flood_costs_one_lookup_per_interval(
    make_worker, tenant, make_token, call, clock
):
    """Twenty clients Auth0 issued tokens to (valid ones) yet authorized for no organization,
    over two workers: one lookup in the deployment each lookup interval."""
    workers = [make_worker(), make_worker()]
    map_read(*workers)
    tokens = [make_token(f"edge-unknown-{n}", ACME_ORG_ID) for n in range(20)]
    limited = metric("auth0_proxy_client_grants_lookups_total", outcome="limited")

    for _ in range(2):
        for n, token in enumerate(tokens):
            answer = call("/users", token, via=workers[n % 2])
            assert_refused(answer, 403, "access_denied", "client is not in the clients map")
    assert lookups(tenant) == 1
    # 40 requests: 1 lookup, 1 answered by its settled result (the same client again), 38 limited
    assert metric("auth0_proxy_client_grants_lookups_total", outcome="limited") == limited + 38

    clock.advance(LOOKUP_SECONDS)
    for n, token in enumerate(tokens):
        assert call("/users", token, via=workers[n % 2]).status_code == 403
    assert lookups(tenant) == 2


def test_a_client_authorized_for_nothing_takes_no_more_than_a_turn_a_minute(
    make_worker, newco, tenant, tenant_server, make_token, call, clock
):
    """A client Auth0 issued a token to (a grant of the proxy's API) but authorized for no
    organization keeps calling: its lookup's answer stands a minute, so the next interval's
    turn goes to a customer authorized meanwhile."""
    worker = make_worker()
    map_read(worker)
    stranger = make_token("edge-stranger", ACME_ORG_ID)
    assert call("/users", stranger, via=worker).status_code == 403
    assert lookups(tenant) == 1

    clock.advance(LOOKUP_SECONDS)
    assert call("/users", stranger, via=worker).status_code == 403  # settled: no lookup
    tenant.associate_client_grant(ACME_ORG_ID, newco.id)
    token = client_token(tenant_server, NEWCO, NEWCO_SECRET, organization=ACME_ORG_ID)
    assert call("/users", token, via=worker).status_code == 200
    assert lookups(tenant) == 2

    clock.advance(SETTLED_SECONDS)
    assert call("/users", stranger, via=worker).status_code == 403
    assert lookups(tenant) == 3  # looked up again once its answer no longer stands


def test_while_the_store_is_out_each_process_shares_the_one_lookup_per_interval(
    make_worker, tenant, make_token, call, clock
):
    """The store cannot say which process had the turn: each takes one per interval times the
    processes last counted (three here), so the deployment still makes one per interval."""
    worker = make_worker({"cache_type": "redis", "cache_redis_url": "redis://127.0.0.1:1/0"})
    store = worker.extensions["store"]
    store.processes = 3  # as the heartbeat last counted them, before the outage
    tokens = [make_token(f"edge-unknown-{n}", ACME_ORG_ID) for n in range(10)]

    for token in tokens:
        assert call("/users", token, via=worker).status_code == 403
    assert store.failing
    assert lookups(tenant) == 1
    clock.advance(2 * LOOKUP_SECONDS)
    for token in tokens:
        assert call("/users", token, via=worker).status_code == 403
    assert lookups(tenant) == 1  # its next turn is 3 intervals after its last
    clock.advance(LOOKUP_SECONDS)
    for token in tokens:
        assert call("/users", token, via=worker).status_code == 403
    assert lookups(tenant) == 2


def test_a_worker_never_goes_back_to_an_older_map(make_worker, newco, make_token, call):
    """A read that began earlier but was stored later (its writes were slow, or failed and
    came back) authorized the new customer; the map in use, read after it, does not: it
    stays."""
    worker = make_worker()
    map_read(worker)
    client_map = worker.extensions["client_map"]
    store = worker.extensions["store"]
    older = {"version": "an-older-read", "read_at": client_map.read_at - 100, "clients": 1}
    store.set(
        "client-grants:map", {"version": older["version"], "clients": {NEWCO: ["org_acme"]}}, 60
    )
    store.set("client-grants:head", older, 60)

    client_map.sync()

    token = make_token(NEWCO, ACME_ORG_ID)  # issued while the older read's authorization held
    answer = call("/users", token, via=worker)
    assert_refused(answer, 403, "access_denied", "client is not in the clients map")
    assert not client_map.knows(NEWCO)


def test_a_read_never_stores_over_one_begun_after_it(make_worker, newco, tenant, make_token, call):
    """A read that ends after a later-begun one (stored first) leaves that one standing: what it
    found (here, the new customer authorized in between) is not stored over it."""
    worker = make_worker()
    map_read(worker)
    client_map, store = worker.extensions["client_map"], worker.extensions["store"]
    later = {**store.get("client-grants:head"), "read_at": client_map.read_at + 3600}
    store.set("client-grants:head", later, 60)
    tenant.associate_client_grant(ACME_ORG_ID, newco.id)

    client_map.refresh()

    assert store.get("client-grants:head") == later
    assert not client_map.knows(NEWCO)


def test_a_static_entry_wins_over_auth0s(make_worker, tenant, tenant_server, call):
    """edge-acme is Acme's in config.json: Auth0 authorizing it for Globex as well, or no
    longer for Acme, changes nothing."""
    grant = tenant.client_grant_for(ACME_CLIENT_ID, PROXY_API)
    tenant.associate_client_grant(GLOBEX_ORG_ID, grant.id)
    tenant.dissociate_client_grant(ACME_ORG_ID, grant.id)
    try:
        worker = make_worker()
        map_read(worker)
        acme = client_token(tenant_server, ACME_CLIENT_ID, "edge-acme-secret")
        globex = client_token(
            tenant_server, ACME_CLIENT_ID, "edge-acme-secret", organization=GLOBEX_ORG_ID
        )

        assert call("/users", acme, via=worker).status_code == 200
        answer = call("/users", globex, via=worker)
        assert_refused(answer, 403, "access_denied", "org_id claim not allowed for client")
        assert lookups(tenant) == 0
    finally:
        tenant.associate_client_grant(ACME_ORG_ID, grant.id)
        tenant.dissociate_client_grant(GLOBEX_ORG_ID, grant.id)


def test_auth0_failing_during_a_read_keeps_the_last_map_without_widening_it(
    make_worker, newco, tenant, tenant_server, call, clock, tmp_path
):
    tenant.associate_client_grant(ACME_ORG_ID, newco.id)
    worker = make_worker(cache={"cache_dir": str(tmp_path / "c"), "retry_budget_seconds": 0})
    map_read(worker)
    acme = client_token(tenant_server, NEWCO, NEWCO_SECRET, organization=ACME_ORG_ID)
    assert call("/users", acme, via=worker).status_code == 200
    # Auth0 now authorizes Globex too, and fails on the read's second grant and after.
    tenant.associate_client_grant(GLOBEX_ORG_ID, newco.id)
    tenant.inject_fault(GRANT_ORGANIZATIONS, 503, times=1000, after=1)
    failed = metric("auth0_proxy_client_grants_refreshes_total", outcome="failed")

    clock.advance(REFRESH_SECONDS)
    assert eventually(
        lambda: metric("auth0_proxy_client_grants_refreshes_total", outcome="failed") > failed
    )

    assert call("/users", acme, via=worker).status_code == 200  # the last map
    globex = client_token(tenant_server, NEWCO, NEWCO_SECRET, organization=GLOBEX_ORG_ID)
    answer = call("/users", globex, via=worker)  # looked up: Auth0 fails, nothing is widened
    assert answer.status_code >= 500
    assert_auth0_error(answer, answer.status_code, answer.json()["errorCode"])
    assert not any(user_id.encode() in answer.body for user_id in tenant.member_ids(GLOBEX_ORG_ID))
    assert metric("auth0_proxy_client_grants_age_seconds") >= REFRESH_SECONDS


def test_prewarming_lists_the_organizations_auth0s_grants_map(
    make_worker, newco, tenant, tenant_server, call, tmp_path
):
    """A cold start lists the organizations of Auth0's map ahead of demand, as the config's."""
    tenant.add_organization("org_initrode", "initrode", "Initrode")
    tenant.seed_organization("org_initrode", 3, prefix="initrode")
    tenant.associate_client_grant("org_initrode", newco.id)
    try:
        worker = make_worker(cache={"cache_dir": str(tmp_path / "warm"), "prewarm": True})
        map_read(worker)
        directory = worker.extensions["directory"]
        assert eventually(lambda: directory.has_list("org_initrode")), "not prewarmed"
        token = client_token(tenant_server, NEWCO, NEWCO_SECRET, organization="org_initrode")
        listed = len(requests_for("/api/v2/organizations/org_initrode/members", tenant))
        answer = call("/users", token, via=worker)
        assert answer.status_code == 200
        assert len(answer.json()) == 3
        assert len(requests_for("/api/v2/organizations/org_initrode/members", tenant)) == listed
        organizations = worker.extensions["client_map"].organizations
        assert eventually(lambda: all(map(directory.has_list, organizations())))  # all warm now
    finally:
        tenant.delete_organization("org_initrode")


def test_under_gunicorn_one_read_serves_every_worker_and_a_new_client_is_served(
    start_proxy, newco, tenant, tenant_server
):
    """Two gunicorn workers: one read of Auth0's map at start for both (the lease), and a
    client authorized afterwards is served over HTTP, looked up once for the deployment."""
    proxy = start_proxy(env={"AUTH0_PROXY_CLIENT_GRANTS_ENABLED": "true"})

    def reads() -> list[dict]:
        message = "read Auth0's client grants in"
        return [r for r in proxy.log_records() if str(r.get("message", "")).startswith(message)]

    assert eventually(lambda: len(reads()) == 1), "no read of Auth0's client grants"
    tenant.associate_client_grant(ACME_ORG_ID, newco.id)
    token = client_token(tenant_server, NEWCO, NEWCO_SECRET, organization=ACME_ORG_ID)

    def serving_workers() -> set[int]:
        return {r["pid"] for r in proxy.log_records() if r.get("client_id") == NEWCO}

    statuses = []
    while len(serving_workers()) < 2 and len(statuses) < 40:  # a connection each: spread
        with requests.Session() as session:
            answer = session.get(
                f"{proxy.url}/users", headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
        statuses.append(answer.status_code)

    assert set(statuses) == {200}
    assert len(serving_workers()) == 2  # both workers served it
    assert lookups(tenant) == 1
    assert len(reads()) == 1  # the other worker followed the stored map
