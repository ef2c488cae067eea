"""The configuration from the environment: every key as a variable over the file, secrets from
files (``*_FILE``), and a proxy configured with no file at all."""

from __future__ import annotations

import copy
import json
import os

import pytest
import requests

from auth0_proxy.cli import main
from auth0_proxy.core import config_env
from auth0_proxy.core.config import CONFIG_SCHEMA, ConfigError, load_config_file, load_settings
from scripts.proxy_server import ProxyServer
from tests.support import proxy_config_for
from tests.test_config import VALID

SECRET = "env-secret-0123456789"


def test_every_key_has_a_variable_of_its_own_named_after_its_path():
    variables = config_env.variables(CONFIG_SCHEMA)
    names = [variable.name for variable in variables]
    assert len(names) == len(set(names))
    by_key = {variable.key: variable.name for variable in variables}
    assert by_key["auth0.domain"] == "AUTH0_PROXY_AUTH0_DOMAIN"
    assert by_key["auth0.mgmt_client_secret"] == "AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET"
    assert by_key["proxy.cache_ttl_seconds"] == "AUTH0_PROXY_PROXY_CACHE_TTL_SECONDS"
    assert by_key["rate_limits.global.per_minute"] == "AUTH0_PROXY_RATE_LIMITS_GLOBAL_PER_MINUTE"
    assert by_key["clients"] == "AUTH0_PROXY_CLIENTS"
    assert "AUTH0_PROXY_CONFIG" not in names  # the file's path keeps its own variable


def test_the_environment_wins_over_the_file_key_by_key():
    environ = {
        "AUTH0_PROXY_PROXY_CACHE_TTL_SECONDS": "60",
        "AUTH0_PROXY_PROXY_ACCEPT_USER_TOKENS": "true",
        "AUTH0_PROXY_AUTH0_DOMAIN": "other.eu.auth0.com",
        "AUTH0_PROXY_CLIENTS": '{"edge-x": "org_xyz"}',
        "AUTH0_PROXY_RATE_LIMITS_CLIENT_UPSTREAM_PER_MINUTE": "30",
    }
    settings = load_settings({**VALID, "proxy": {"cache_ttl_seconds": 5, "page_size": 20}}, environ)
    assert settings.proxy.cache_ttl_seconds == 60 and settings.proxy.accept_user_tokens is True
    assert settings.proxy.page_size == 20  # the file's, where no variable says otherwise
    assert settings.auth0.domain == "other.eu.auth0.com"
    assert settings.auth0.issuer == "https://other.eu.auth0.com/"  # derived from the new domain
    assert dict(settings.clients) == {"edge-x": ("org_xyz",)}
    assert settings.rate_limits.client.upstream.per_minute == 30


def test_the_whole_configuration_can_come_from_the_environment(tmp_path):
    settings = load_config_file(tmp_path / "absent.json", environment_of(VALID))
    assert settings.auth0.domain == VALID["auth0"]["domain"]
    assert settings.clients["edge-reseller"] == ("org_acme", "org_globex")


def test_no_file_and_no_variable_is_still_an_error(tmp_path):
    for environ in ({"HOME": "/root"}, {"AUTH0_MGMT_CLIENT_SECRET": SECRET}):
        with pytest.raises(ConfigError, match="No such file or directory"):
            load_config_file(tmp_path / "absent.json", environ)


def test_a_secret_comes_from_the_file_its_variable_names(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")  # as a mounted secret often ends
    config = copy.deepcopy(VALID)
    del config["auth0"]["mgmt_client_secret"]
    environ = {"AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET_FILE": str(secret_file)}
    assert load_settings(config, environ).auth0.mgmt_client_secret == SECRET


def test_the_new_secret_variable_wins_over_the_older_name_which_wins_over_the_file():
    environ = {"AUTH0_MGMT_CLIENT_SECRET": "older-name"}
    assert load_settings(VALID, environ).auth0.mgmt_client_secret == "older-name"
    environ["AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET"] = "new-name"
    assert load_settings(VALID, environ).auth0.mgmt_client_secret == "new-name"


def test_a_variable_and_its_file_both_set_are_refused(tmp_path):
    (tmp_path / "secret").write_text(SECRET)
    environ = {
        "AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET": SECRET,
        "AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
    }
    with pytest.raises(ConfigError, match=r"_SECRET and .*_SECRET_FILE are both set") as refused:
        load_settings(VALID, environ)
    assert SECRET not in str(refused.value)


def test_an_unreadable_secret_file_is_named_and_nothing_of_it_shown(tmp_path):
    environ = {"AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET_FILE": str(tmp_path / "missing")}
    with pytest.raises(ConfigError, match=r"MGMT_CLIENT_SECRET_FILE: cannot read .*missing"):
        load_settings(VALID, environ)


def test_a_bad_value_names_its_key_and_the_variable_it_came_from():
    environ = {"AUTH0_PROXY_PROXY_CACHE_TTL_SECONDS": "soon", "AUTH0_PROXY_CLIENTS": '{"e": 42}'}
    with pytest.raises(ConfigError) as refused:
        load_settings(VALID, environ)
    message = str(refused.value)
    assert "proxy.cache_ttl_seconds: " in message
    assert "(from AUTH0_PROXY_PROXY_CACHE_TTL_SECONDS)" in message
    assert "clients.e: must be an Auth0 organization id" in message
    assert "(from AUTH0_PROXY_CLIENTS)" in message


def test_a_placeholder_in_the_environment_is_refused_too():
    environ = {"AUTH0_PROXY_AUTH0_DOMAIN": "your-tenant.eu.auth0.com"}
    with pytest.raises(
        ConfigError, match=r"auth0\.domain: 'your-tenant\.eu\.auth0\.com' is the ex"
    ):
        load_settings(VALID, environ)


def test_gunicorn_serves_with_no_config_file_at_all(tenant_server, make_token, tmp_path):
    """The proxy as a container would run it with its configuration in the environment."""
    config = proxy_config_for(tenant_server)
    config["proxy"] = {"cache_dir": str(tmp_path / "cache")}
    env = {**environment_of(config), "AUTH0_PROXY_CONFIG": str(tmp_path / "absent.json")}
    server = ProxyServer({}, ca_bundle=tenant_server.ca_bundle, workers=1, env=env).start()
    try:
        answer = requests.get(
            f"{server.url}/users",
            headers={"Authorization": f"Bearer {make_token('edge-acme')}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert {m["user_id"] for m in answer.json()} == set(
            tenant_server.tenant.member_ids("org_acme")
        )
    finally:
        server.stop()


def environment_of(config: dict) -> dict[str, str]:
    """The config's keys as the variables that set them (maps as JSON, as documented)."""
    environ = {}
    for variable in config_env.variables(CONFIG_SCHEMA):
        value = config
        for key in variable.path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            environ[variable.name] = value if isinstance(value, str) else json.dumps(value)
    return environ


def test_check_config_prints_each_value_with_its_source_and_hides_secrets(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**VALID, "proxy": {"page_size": 20}}))
    for name in list(os.environ):
        if name.startswith("AUTH0_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AUTH0_PROXY_PROXY_CACHE_TTL_SECONDS", "60")
    monkeypatch.setenv("AUTH0_PROXY_PROXY_CACHE_REDIS_URL", "redis://:hunter2-pw@redis:6379/0")
    monkeypatch.setenv("AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET", SECRET)
    sentinel_password = tmp_path / "sentinel-password"
    sentinel_password.write_text("sentinel-hunter3\n")
    monkeypatch.setenv(
        "AUTH0_PROXY_PROXY_CACHE_REDIS_SENTINEL_PASSWORD_FILE", str(sentinel_password)
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "  proxy.cache_redis_sentinel_password = [hidden]"
        "  (AUTH0_PROXY_PROXY_CACHE_REDIS_SENTINEL_PASSWORD_FILE)" in out
    )
    assert "sentinel-hunter3" not in out
    assert "  proxy.cache_ttl_seconds = 60  (AUTH0_PROXY_PROXY_CACHE_TTL_SECONDS)" in out
    assert "  proxy.page_size = 20  (file)" in out
    assert "  proxy.failure_cooldown_seconds = 2  (default)" in out
    assert "  auth0.mgmt_client_secret = [hidden]  (AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET)" in out
    assert (
        "  proxy.cache_redis_url = redis://redis:6379/0  (AUTH0_PROXY_PROXY_CACHE_REDIS_URL)" in out
    )
    assert SECRET not in out and "hunter2-pw" not in out
