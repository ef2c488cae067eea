"""Configuration: the proof-of-concept format works; every mistake is named at start-up."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tempfile

import pytest

from auth0_proxy import create_app
from auth0_proxy.core.auth0_api import PLANS, Limit
from auth0_proxy.core.config import (
    BudgetSchema,
    BudgetSettings,
    ClientGrantsSchema,
    ClientGrantsSettings,
    ClientLimits,
    ClientLimitsSchema,
    ConfigError,
    EventsSchema,
    EventsSettings,
    ProxySchema,
    RateLimits,
    WriteGrantSchema,
    load_config_file,
    load_settings,
)
from scripts.proxy_server import ROOT
from tests.test_defaults import filled_in

VALID = {
    "clients": {"edge-acme": "org_acme", "edge-reseller": ["org_acme", "org_globex"]},
    "auth0": {
        "domain": "tenant.eu.auth0.com",
        "mgmt_client_id": "proxy-mgmt-client",
        "mgmt_client_secret": "proxy-mgmt-secret",
        "management_audience": "https://tenant.eu.auth0.com/api/v2/",
        "api_audience": "https://m2m-proxy.example.com",
    },
}


@pytest.fixture(autouse=True)
def private_temp_dir(tmp_path, monkeypatch):
    """The default cache directory lives in the temp dir: use the test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def config_with(change) -> dict:
    config = copy.deepcopy(VALID)
    change(config)
    return config


def test_proof_of_concept_format_loads():
    settings = load_settings(VALID, environ={})
    assert settings.clients == {
        "edge-acme": ("org_acme",),
        "edge-reseller": ("org_acme", "org_globex"),
    }
    assert settings.auth0.issuer == "https://tenant.eu.auth0.com/"
    assert settings.auth0.mgmt_client_secret == "proxy-mgmt-secret"
    assert settings.proxy.page_size == 50


def test_example_config_file_is_valid_once_filled_in(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(filled_in((ROOT / "config.json.example").read_text()))
    settings = load_config_file(path, environ={})
    assert settings.auth0.domain == "acme-prod.eu.auth0.com"


def test_the_clients_map_may_come_from_auth0_alone():
    """With client_grants on, config.json may name no client: Auth0's grants map them."""
    settings = load_settings(
        config_with(lambda c: (c.pop("clients"), c.update(client_grants={"enabled": True}))),
        environ={},
    )
    assert settings.clients == {}
    assert settings.client_grants == ClientGrantsSettings(enabled=True)
    assert load_settings(config_with(lambda c: None), environ={}).client_grants.enabled is False


def test_client_grants_from_the_environment():
    environ = {
        "AUTH0_PROXY_CLIENT_GRANTS_ENABLED": "true",
        "AUTH0_PROXY_CLIENT_GRANTS_REFRESH_SECONDS": "120",
        "AUTH0_PROXY_CLIENT_GRANTS_TRUST_ALLOW_ANY_ORGANIZATION": "false",
    }
    grants = load_settings(config_with(lambda c: None), environ=environ).client_grants
    assert (grants.enabled, grants.refresh_seconds) == (True, 120)
    assert grants.trust_allow_any_organization is False


def test_secret_from_environment_replaces_the_file():
    config = config_with(lambda c: c["auth0"].pop("mgmt_client_secret"))
    settings = load_settings(config, environ={"AUTH0_MGMT_CLIENT_SECRET": "from-env"})
    assert settings.auth0.mgmt_client_secret == "from-env"


def test_the_budget_defaults_to_half_of_a_professional_plan_and_takes_overrides():
    default = load_settings(VALID, environ={}).budget
    assert (default.plan, default.share) == ("professional", 0.5)
    assert default.limits["organization_members"] == Limit(40, 500)
    raised = {"plan": "enterprise", "limits": {"users": {"burst": 80, "per_minute": 1000}}}
    budget = load_settings({**VALID, "budget": raised}, environ={}).budget
    assert budget.limits["users"] == Limit(80, 1000)
    assert budget.limits["management"] == PLANS["enterprise"]["management"]


def test_management_audience_and_issuer_default_from_domain():
    config = config_with(lambda c: c["auth0"].pop("management_audience"))
    settings = load_settings(config, environ={})
    assert settings.auth0.management_audience == "https://tenant.eu.auth0.com/api/v2/"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["auth0"].update(domain="https://tenant.eu.auth0.com"),
            "auth0.domain: give the bare tenant domain without 'https://'",
        ),
        (
            lambda c: c["auth0"].update(domain="tenant .auth0.com"),
            "auth0.domain: is not a valid host name",
        ),
        (lambda c: c["auth0"].update(domian="x"), "auth0.domian: unknown key"),
        (lambda c: c.update(extra={}), "extra: unknown key"),
        (lambda c: c["auth0"].pop("api_audience"), "auth0.api_audience: missing (required)"),
        (lambda c: c.pop("clients"), "clients: missing (required, unless client_grants.enabled"),
        (
            lambda c: c["auth0"].pop("mgmt_client_secret"),
            "auth0.mgmt_client_secret: missing; set it in the file or in AUTH0_MGMT_CLIENT_SECRET",
        ),
        (
            lambda c: c["clients"].update({"edge-x": 42}),
            "clients.edge-x: must be an Auth0 organization id",
        ),
        (
            lambda c: c["clients"].update({"edge-x": []}),
            "clients.edge-x: must name at least one organization",
        ),
        (
            lambda c: c["clients"].update({"edge-x": ["org_a", 7]}),
            "clients.edge-x: must be an Auth0 organization id",
        ),
        (
            lambda c: c["clients"].update({"edge-x": "acme"}),
            "clients.edge-x: must be an Auth0 organization id",
        ),
        (
            lambda c: c["auth0"].update(management_audience="http://x/"),
            "auth0.management_audience: must be an https:// URL",
        ),
        (
            lambda c: c.update(proxy={"page_size": 500}),
            "proxy.page_size: Must be greater than or equal to 1",
        ),
        (lambda c: c.update(proxy={"cache_type": "memcached"}), "proxy.cache_type: Must be one of"),
        (
            lambda c: c.update(proxy={"accept_user_tokens": "yes"}),
            "proxy.accept_user_tokens: Not a valid boolean",
        ),
        (lambda c: c.update(budget={"plan": "gold"}), "budget.plan: Must be one of: enterprise"),
        (lambda c: c.update(budget={"share": 0}), "budget.share: Must be greater than or equal"),
        (
            lambda c: c.update(budget={"limits": {"user": {"burst": 1, "per_minute": 1}}}),
            "budget.limits.user: Must be one of: organization_members",
        ),
        (
            lambda c: c.update(budget={"limits": {"users": {"burst": 10}}}),
            "budget.limits.users.per_minute: missing (required)",
        ),
        (
            lambda c: c.update(client_grants={"enable": True}),
            "client_grants.enable: unknown key",
        ),
        (
            lambda c: c.update(client_grants={"enabled": "yes"}),
            "client_grants.enabled: Not a valid boolean",
        ),
        (
            lambda c: c.update(client_grants={"refresh_seconds": 5}),
            "client_grants.refresh_seconds: Must be greater than or equal to 30",
        ),
        (
            lambda c: (c.pop("clients"), c.update(client_grants={"enabled": False})),
            "clients: missing (required, unless client_grants.enabled",
        ),
    ],
)
def test_invalid_config_names_the_key(change, message):
    with pytest.raises(ConfigError) as error:
        load_settings(config_with(change), environ={})
    assert message in str(error.value)


def test_jwks_cache_seconds_defaults_to_ten_minutes_and_is_bounded():
    assert load_settings(VALID, environ={}).proxy.jwks_cache_seconds == 600
    day = load_settings({**VALID, "proxy": {"jwks_cache_seconds": 86400}}, environ={})
    assert day.proxy.jwks_cache_seconds == 86400
    for wrong in (0, 86401, 60.5, "600"):
        with pytest.raises(ConfigError, match=r"^proxy\.jwks_cache_seconds: "):
            load_settings({**VALID, "proxy": {"jwks_cache_seconds": wrong}}, environ={})


def _set(config: dict, where: str, value) -> dict:
    """The config with ``value`` at the dotted path ``where``."""
    *parents, last = where.split(".")
    place = config
    for key in parents:
        place = place.setdefault(key, {})
    place[last] = value
    return config


SECRET_PLACEHOLDER = "or leave this key out and set AUTH0_MGMT_CLIENT_SECRET"


@pytest.mark.parametrize(
    ("where", "value", "named"),
    [
        # the examples' tenant, wherever it is named
        ("auth0.domain", "your-tenant.eu.auth0.com", "auth0.domain: 'your-tenant.eu.auth0.com'"),
        (
            "auth0.management_audience",
            "https://your-tenant.eu.auth0.com/api/v2/",
            "auth0.management_audience: 'https://your-tenant.eu.auth0.com/api/v2/'",
        ),
        (
            "auth0.issuer",
            "https://your-tenant.us.auth0.com/",
            "auth0.issuer: 'https://your-tenant.us.auth0.com/'",
        ),
        # the examples' made-up values
        (
            "auth0.api_audience",
            "https://m2m-proxy.your-company.example",
            "auth0.api_audience: 'https://m2m-proxy.your-company.example'",
        ),
        (
            "auth0.mgmt_client_id",
            "PROXY_MANAGEMENT_CLIENT_ID",
            "auth0.mgmt_client_id: 'PROXY_MANAGEMENT_CLIENT_ID'",
        ),
        (
            "auth0.mgmt_client_secret",
            SECRET_PLACEHOLDER,
            f"auth0.mgmt_client_secret: {SECRET_PLACEHOLDER!r}",
        ),
        ("clients.edge-x", "org_AcmeOrganizationId", "clients.edge-x: 'org_AcmeOrganizationId'"),
        (
            "clients.edge-reseller",
            ["org_acme", "org_SecondCustomerId"],
            "clients.edge-reseller: 'org_SecondCustomerId'",
        ),
        (
            "writes.edge-acme.roles",
            ["rol_AcmeViewerRoleId"],
            "writes.edge-acme.roles: 'rol_AcmeViewerRoleId'",
        ),
        (
            "writes.edge-acme.connections",
            ["Username-Password-Authentication", "con_DatabaseConnectionId"],
            "writes.edge-acme.connections: 'con_DatabaseConnectionId'",
        ),
        (
            "writes.edge-acme.invitation_clients",
            ["CUSTOMER_PORTAL_APPLICATION_ID"],
            "writes.edge-acme.invitation_clients: 'CUSTOMER_PORTAL_APPLICATION_ID'",
        ),
        # the examples' edge client ids, as keys: any of that shape
        ("clients.EDGE_CLIENT_ID_OF_GLOBEX", "org_globex", "clients: 'EDGE_CLIENT_ID_OF_GLOBEX'"),
        (
            "rate_limits.clients.EDGE_CLIENT_ID_OF_ACME",
            {},
            "rate_limits.clients: 'EDGE_CLIENT_ID_OF_ACME'",
        ),
    ],
)
def test_a_placeholder_of_the_examples_is_refused_naming_its_key(where, value, named):
    """Refused even where the rest is valid, or the environment holds the secret: a config that
    holds one was copied from an example and not filled in."""
    config = _set(copy.deepcopy(VALID), where, value)
    with pytest.raises(ConfigError) as refused:
        load_settings(config, environ={"AUTH0_MGMT_CLIENT_SECRET": "from-the-environment"})
    assert str(refused.value) == f"{named} is the example's placeholder; fill in your own value"


def test_values_like_the_placeholders_are_not_refused():
    config = _set(copy.deepcopy(VALID), "clients.EDGE-CLIENT-ID-OF-ACME", "org_AcmeOrganization")
    config["auth0"]["api_audience"] = "https://m2m-proxy.example.com"  # the emulated tenant's
    assert "EDGE-CLIENT-ID-OF-ACME" in load_settings(config, environ={}).clients


def start_gunicorn(tmp_path, config_text: str) -> subprocess.CompletedProcess:
    """gunicorn started as deployed with this config file, until it exits."""
    path = tmp_path / "config.json"
    path.write_text(config_text)
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env={"AUTH0_PROXY_CONFIG": str(path), "PORT": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gunicorn_refuses_to_start_with_a_placeholder(tmp_path):
    result = start_gunicorn(tmp_path, (ROOT / "config.json.example").read_text())
    assert result.returncode != 0
    assert "auth0.domain 'your-tenant.eu.auth0.com'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_duplicate_client_id_is_refused(tmp_path):
    path = tmp_path / "config.json"
    text = json.dumps(VALID).replace('"clients": {', '"clients": {"edge-acme": "org_globex", ', 1)
    path.write_text(text)
    with pytest.raises(ConfigError, match="duplicate key 'edge-acme'"):
        load_config_file(path, environ={})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.json"):
        load_config_file(tmp_path / "nope.json", environ={})


def test_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{clients: }")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config_file(path, environ={})


def test_gunicorn_refuses_to_start_with_one_clear_message(tmp_path):
    config = config_with(lambda c: c["auth0"].update(domain="https://x.auth0.com"))
    result = start_gunicorn(tmp_path, json.dumps(config))
    assert result.returncode != 0
    assert "configuration error" in result.stderr and "auth0.domain" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_loading_the_configuration_changes_nothing_on_disk(tmp_path):
    cache_dir = tmp_path / "cache"
    load_settings(config_with(lambda c: c.update(proxy={"cache_dir": str(cache_dir)})), environ={})
    assert not cache_dir.exists()


def test_cache_directory_is_created_private(tmp_path):
    cache_dir = tmp_path / "cache"
    config = config_with(lambda c: c.update(proxy={"cache_dir": str(cache_dir)}))
    create_app(settings=load_settings(config, environ={}))
    assert cache_dir.stat().st_mode & 0o777 == 0o700


def test_cache_directory_others_can_write_is_refused(tmp_path):
    cache_dir = tmp_path / "shared"
    cache_dir.mkdir()
    cache_dir.chmod(0o777)
    config = config_with(lambda c: c.update(proxy={"cache_dir": str(cache_dir)}))
    with pytest.raises(ConfigError, match=r"proxy.cache_dir: .* must belong to the proxy's user"):
        create_app(settings=load_settings(config, environ={}))


def test_each_worker_checks_the_cache_directory_again(tmp_path):
    """Workers build from the configuration the master accepted: a directory made open to
    others since (or replaced by another user's) is refused when the app is built."""
    cache_dir = tmp_path / "cache"
    config = config_with(lambda c: c.update(proxy={"cache_dir": str(cache_dir)}))
    settings = load_settings(config, environ={"AUTH0_MGMT_CLIENT_SECRET": "s3cret-value"})
    create_app(settings=settings)  # the master's: the directory made, private
    cache_dir.chmod(0o777)
    with pytest.raises(ConfigError, match=r"proxy.cache_dir: .* must belong to the proxy's user"):
        create_app(settings=settings)


def test_the_configuration_reference_names_every_proxy_setting_with_its_default():
    """docs/configuration.md's table against the schema, the one declaration of each setting:
    a row for each key of the proxy block and none for a key it does not take, and each
    number's default as the schema's."""
    reference = (ROOT / "docs" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `proxy\.(\w+)` \| [^|]+ \| (.*) \|$", reference, re.M))
    declared = ProxySchema().fields
    assert set(rows) == set(declared)
    for key, field in declared.items():
        if isinstance(field.load_default, int | float) and not isinstance(field.load_default, bool):
            assert f"default {field.load_default:g}" in rows[key], key


def test_the_configuration_reference_names_every_other_block_setting_with_its_default():
    """The budget, writes and rate_limits rows against their schemas and defaults, so the
    reference cannot drift from the one declaration of each (the dataclasses' defaults)."""
    reference = (ROOT / "docs" / "configuration.md").read_text()
    rows = dict(
        re.findall(
            r"^\| `((?:budget|writes|rate_limits|events|client_grants)\.[^`]+)`"
            r" \| [^|]+ \| (.*) \|$",
            reference,
            re.M,
        )
    )
    declared = {f"budget.{key}" for key in BudgetSchema().fields}
    declared |= {f"writes.<client>.{key}" for key in WriteGrantSchema().fields}
    declared |= {f"rate_limits.client.{key}" for key in ClientLimitsSchema().fields}
    declared |= {"rate_limits.global", "rate_limits.failed_auth", "rate_limits.clients.<client>"}
    declared |= {f"events.{key}" for key in EventsSchema().fields}
    declared |= {f"client_grants.{key}" for key in ClientGrantsSchema().fields}
    assert set(rows) == declared
    grants = ClientGrantsSettings()
    assert "`false` (default)" in rows["client_grants.enabled"]
    assert f"default {grants.refresh_seconds}" in rows["client_grants.refresh_seconds"]
    assert (
        f"default {grants.lookup_interval_seconds}" in rows["client_grants.lookup_interval_seconds"]
    )
    events = EventsSettings()
    assert f"`{events.source}` (default)" in rows["events.source"]
    assert f"default {events.reconcile_seconds}" in rows["events.reconcile_seconds"]
    budget = BudgetSettings()
    assert f"`{budget.plan}` (default)" in rows["budget.plan"]
    assert f"default {budget.share:g}" in rows["budget.share"]
    upstream = ClientLimits().upstream
    assert (
        f"default {upstream.per_minute:g} a minute, burst {upstream.burst}"
        in rows["rate_limits.client.upstream"]
    )
    assert ClientLimits().requests is None and "default none" in rows["rate_limits.client.requests"]
    assert RateLimits().total is None and "default none" in rows["rate_limits.global"]
