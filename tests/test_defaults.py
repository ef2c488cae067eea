"""What an operator gets without setting anything: the defaults of config.json.example.

Warm answers cost the tenant nothing, so a client may ask for them as often as it likes; what
reaches Auth0 is still held to the client's upstream allowance. Writes are granted only by a
``writes`` block, which config.json.example does not have (config.writes.json.example shows
one). Every made-up value of the examples is refused, so an example copied and not filled in
never starts.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from flask import Flask

from auth0_proxy import create_app, load_configuration
from auth0_proxy.core.config import CLIENT_UPSTREAM, ConfigError, load_config_file, load_settings
from auth0_proxy.edge.api_v2.pipeline import WRITE_PERMISSIONS
from tests.support import USER_ORGS, assert_refused, proxy_config_for, user_path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.json.example"
WRITES_EXAMPLE = ROOT / "config.writes.json.example"
EXAMPLES = [EXAMPLE, WRITES_EXAMPLE]

# What an operator puts in for each placeholder of the examples: values of a real tenant's shape.
FILLED_IN = {
    "EDGE_CLIENT_ID_OF_ACME": "u8Kx2hQmZ0AcmeEdgeClient",
    "EDGE_CLIENT_ID_OF_A_RESELLER": "p3Rr9LbT7ResellerEdgeClient",
    "org_AcmeOrganizationId": "org_k1Lm2Nn3Oo4Pp5Qq",
    "org_FirstCustomerId": "org_a1B2c3D4e5F6g7H8",
    "org_SecondCustomerId": "org_z9Y8x7W6v5U4t3S2",
    "your-tenant": "acme-prod",
    "PROXY_MANAGEMENT_CLIENT_ID": "Mg7tQ2ProxyManagementApp",
    "or leave this key out and set AUTH0_MGMT_CLIENT_SECRET": "s3cr3t-of-the-management-app-0123",
    "https://m2m-proxy.your-company.example": "https://m2m-proxy.acme.example",
    "rol_AcmeViewerRoleId": "rol_Vw1Er2Ty3Ui4",
    "con_DatabaseConnectionId": "con_Db1Xy2Zz3Ww4",
    "CUSTOMER_PORTAL_APPLICATION_ID": "Cp9Lk8PortalApplication",
}
# The examples' values that are real: a plan, permissions, a metadata key, Auth0's default
# database connection.
REAL_VALUES = {
    "professional",
    "update:users",
    "create:organization_invitations",
    "plan",
    "Username-Password-Authentication",
}
WARM_REQUESTS = 5_000
WARM_PROFILE_READS = 1_000


def filled_in(text: str) -> str:
    """An example's text with every placeholder replaced, as an operator fills it in."""
    for placeholder, value in FILLED_IN.items():
        text = text.replace(placeholder, value)
    return text


@pytest.fixture(autouse=True)
def private_temp_dir(tmp_path, monkeypatch):
    """The default cache directory lives in the temp dir: use the test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture
def default_app(tenant_server, tmp_path, monkeypatch, app_log) -> Iterator[Flask]:
    """The proxy in this process with config.json.example's ``rate_limits`` and ``budget``
    (none of the first: the defaults), for the tests' tenant; answers cached for a minute."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_server.ca_bundle)
    example = json.loads(EXAMPLE.read_text())
    config = proxy_config_for(tenant_server, cache_ttl_seconds=60, cache_dir=str(tmp_path / "c"))
    for block in ("rate_limits", "budget"):
        if block in example:
            config[block] = example[block]
        else:
            del config[block]
    app = create_app(config)
    logging.getLogger("auth0_proxy").addHandler(app_log)
    yield app
    app.extensions["management"].upstream.session.close()


def test_the_example_sets_no_rate_limits_so_the_defaults_apply():
    example = json.loads(EXAMPLE.read_text())
    assert "rate_limits" not in example
    defaults = load_settings(json.loads(filled_in(EXAMPLE.read_text())), environ={})
    assert defaults.rate_limits.client.requests is None
    assert defaults.rate_limits.client.upstream == CLIENT_UPSTREAM
    assert defaults.rate_limits.total is None


def test_a_client_reads_thousands_of_warm_answers_without_a_429(default_app, make_token, tenant):
    """A warm answer costs the tenant nothing: no request limit by default."""
    client = default_app.test_client()
    auth = {"Authorization": f"Bearer {make_token()}"}
    members = [user_path(user_id) for user_id in tenant.member_ids("org_acme")]

    def read(path: str) -> int:
        answer = client.get(path, headers=auth)
        answer.get_data()  # the whole answer: a list is cached once it has been streamed
        return answer.status_code

    for path in ["/users", *members]:  # cold: 7 calls of the upstream allowance's burst of 20
        assert read(path) == 200, path
    tenant.reset_counts()

    mixed = ["/users", *members]
    statuses = Counter(read(mixed[n % len(mixed)]) for n in range(WARM_REQUESTS))
    statuses += Counter(read(members[n % len(members)]) for n in range(WARM_PROFILE_READS))

    assert statuses == {200: WARM_REQUESTS + WARM_PROFILE_READS}
    answer = client.get(members[0], headers=auth)
    assert "x-ratelimit-limit" not in answer.headers  # no limit binds the client
    assert tenant.requests == []  # every one of them from the cache


def test_the_upstream_allowance_still_stops_one_clients_cold_flood(
    default_app, call, make_token, tenant
):
    """Each unknown id costs an Auth0 call: after the allowance's burst, 429 and no call, but
    for the allowance's refill (one a second)."""
    token = make_token()

    def unknown(n: int):
        return call(f"/users/{quote(f'auth0|nobody-{n}')}", token, via=default_app)

    started = time.monotonic()
    answers = []
    while not answers or answers[-1].status_code != 429:
        answers.append(unknown(len(answers)))
        assert len(answers) <= 2 * CLIENT_UPSTREAM.burst, "the flood was never refused"
    refused_at, refused = time.time(), answers[-1]
    refills = int((time.monotonic() - started) * CLIENT_UPSTREAM.per_minute / 60)
    assert [a.status_code for a in answers[:-1]] == [404] * (len(answers) - 1)
    assert CLIENT_UPSTREAM.burst <= len(answers) - 1 <= CLIENT_UPSTREAM.burst + refills
    assert_refused(refused, 429, "too_many_requests", "rate limit: upstream")
    assert refused.headers["x-ratelimit-limit"] == str(CLIENT_UPSTREAM.burst)

    later = [unknown(len(answers) + n) for n in range(CLIENT_UPSTREAM.burst)]
    elapsed = time.time() - refused_at
    admitted = [a for a in later if a.status_code != 429]
    assert len(admitted) <= 1 + elapsed * CLIENT_UPSTREAM.per_minute / 60  # the refill only
    assert all(a.status_code == 404 for a in admitted)
    calls = [r for r in tenant.requests if r["time"] > refused_at]
    assert [r["endpoint"] for r in calls] == [USER_ORGS] * len(admitted)


def test_the_example_config_grants_no_writes():
    example = json.loads(EXAMPLE.read_text())
    assert "writes" not in example
    assert load_settings(json.loads(filled_in(EXAMPLE.read_text())), environ={}).writes == {}


def test_the_example_config_grants_writes_of_the_table():
    """config.writes.json.example, filled in: its grant is of writes the proxy has."""
    example = json.loads(filled_in(WRITES_EXAMPLE.read_text()))
    grant = load_configuration(example).writes[FILLED_IN["EDGE_CLIENT_ID_OF_ACME"]]
    assert grant.permissions <= WRITE_PERMISSIONS
    assert grant.roles and grant.connections and grant.invitation_clients


def test_the_two_examples_differ_only_by_the_writes_block():
    plain, writes = (json.loads(path.read_text()) for path in EXAMPLES)
    assert {key: value for key, value in writes.items() if key != "writes"} == plain


def _made_up_values(data: dict) -> set[str]:
    """Every string of an example but the real ones: its values, and its client ids (keys)."""
    found: set[str] = set()

    def walk(value) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.add(value)

    walk(data)
    found.update(data["clients"], data.get("writes", {}))
    return found - REAL_VALUES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_every_made_up_value_of_the_examples_is_refused(example):
    data = json.loads(example.read_text())
    with pytest.raises(ConfigError) as refused:
        load_settings(data, environ={"AUTH0_MGMT_CLIENT_SECRET": "from-the-environment"})
    for value in sorted(_made_up_values(data)):
        assert repr(value) in str(refused.value), value


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_an_example_is_refused_until_each_placeholder_is_filled_in(example, tmp_path):
    """Each load names the first placeholder left, by key and value; once every one is filled
    in, the example is a valid config."""
    text = example.read_text()
    path = tmp_path / "config.json"
    for placeholder in sorted((p for p in FILLED_IN if p in text), key=text.find):
        path.write_text(text)
        with pytest.raises(ConfigError) as refused:
            load_config_file(path, environ={})
        first = str(refused.value).removeprefix(f"config file {str(path)!r}: ")
        pattern = rf"[\w.]+: '[^']*{re.escape(placeholder)}[^']*' is the example's placeholder"
        assert re.match(pattern, first), first
        text = text.replace(placeholder, FILLED_IN[placeholder])
    path.write_text(text)
    settings = load_configuration(path=str(path))
    assert settings.auth0.domain == "acme-prod.eu.auth0.com"
