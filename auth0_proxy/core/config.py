"""Load and validate the proxy's configuration once, at start-up.

The file format of the proof of concept (a ``clients`` map and an ``auth0`` block) keeps working;
an optional ``proxy`` block tunes the service and an optional ``budget`` block sets the tenant's
Auth0 rate limits and the share of them the proxy may spend. Secrets may come from the
environment instead of the file, so a config file without secrets can be committed. A value left
from the example configs (a placeholder) is refused. This is the only module that reads
``os.environ`` for settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from . import config_env
from .auth0_api import DEFAULT_PLAN, GROUPS, PLANS, Limit

DEFAULT_CONFIG_PATH = "config.json"

# Auth0 organization ids are "org_" plus letters and digits; the Management API caps ids at 50.
ORG_ID = re.compile(r"^org_[A-Za-z0-9_-]{1,46}$")
# A host name with an optional port: what Auth0 calls the tenant "domain".
DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?$")

# The made-up values of config.json.example and config.writes.json.example. A config that still
# holds one was copied and not filled in: the proxy refuses it at start and on reload, and so
# does check-config (tests/test_defaults.py checks every value of both examples).
PLACEHOLDERS = frozenset(
    {
        "PROXY_MANAGEMENT_CLIENT_ID",
        "or leave this key out and set AUTH0_MGMT_CLIENT_SECRET",
        "https://m2m-proxy.your-company.example",
        "org_AcmeOrganizationId",
        "org_FirstCustomerId",
        "org_SecondCustomerId",
        "rol_AcmeViewerRoleId",
        "con_DatabaseConnectionId",
        "CUSTOMER_PORTAL_APPLICATION_ID",
    }
)
# Parts no real value holds: the examples' tenant (its domain, and every URL made of it) and
# their edge clients' ids.
PLACEHOLDER_PARTS = re.compile(r"your-tenant|^EDGE_CLIENT_ID_OF_")


class ConfigError(Exception):
    """The configuration is missing or invalid; the message names the key and the problem."""


@dataclass(frozen=True)
class Auth0Settings:
    domain: str
    mgmt_client_id: str
    mgmt_client_secret: str
    management_audience: str
    api_audience: str
    issuer: str

    @property
    def base_url(self) -> str:
        return f"https://{self.domain}"


@dataclass(frozen=True)
class BudgetSettings:
    plan: str = DEFAULT_PLAN
    share: float = 0.5
    limits: Mapping[str, Limit] = dataclasses.field(default_factory=lambda: PLANS[DEFAULT_PLAN])


@dataclass(frozen=True)
class WriteGrant:
    """The writes one client may make through /api/v2 (each also needs the permission in its
    token), and what they may touch: roles it may assign or remove, ``app_metadata`` keys it may
    change, connections it may create users or invite them in (by name for a user, by id for
    an invitation), applications an invitation may name for its login."""

    permissions: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    app_metadata_keys: frozenset[str] = frozenset()
    connections: frozenset[str] = frozenset()
    invitation_clients: frozenset[str] = frozenset()


# The default that keeps one client from spending a paid tenant's budget: it may reach Auth0
# about once a second, against the 250 a minute of the default budget's users group (half of
# Professional's 500). Its other requests have no limit by default: a warm answer costs the
# tenant nothing, and the proxy's own capacity is bounded by gunicorn's workers and threads.
CLIENT_UPSTREAM = Limit(burst=20, per_minute=60)


@dataclass(frozen=True)
class ClientLimits:
    """What one client may ask: requests of every kind (``requests``, none by default), and
    those of them that reach Auth0 (``upstream``: cold reads, unknown ids, ``no-cache``); None
    is no limit."""

    requests: Limit | None = None
    upstream: Limit | None = CLIENT_UPSTREAM


@dataclass(frozen=True)
class RateLimits:
    """The per-client limits (``client``, with overrides per client id in ``clients``) and the
    one limit on all clients' requests together (``total``, the config's ``global``; none by
    default: the budget already holds them all within the tenant's limits, and one bucket for
    a whole fleet would cap what more instances could serve); and the failed authentications
    one client address may make (``failed_auth``; none by default) before its requests are
    refused unread."""

    client: ClientLimits = ClientLimits()
    total: Limit | None = None
    failed_auth: Limit | None = None
    clients: Mapping[str, ClientLimits] = dataclasses.field(default_factory=dict)

    def of(self, client_id: str) -> ClientLimits:
        return self.clients.get(client_id, self.client)


@dataclass(frozen=True)
class Settings:
    clients: Mapping[str, tuple[str, ...]]
    auth0: Auth0Settings
    proxy: ProxySettings
    budget: BudgetSettings = BudgetSettings()
    writes: Mapping[str, WriteGrant] = dataclasses.field(default_factory=dict)
    rate_limits: RateLimits = RateLimits()
    # Its schema's defaults (EventsSettings is made from EventsSchema, below).
    events: EventsSettings = dataclasses.field(default_factory=lambda: EventsSettings())
    client_grants: ClientGrantsSettings = dataclasses.field(
        default_factory=lambda: ClientGrantsSettings()
    )


class OrgIds(fields.Field):
    """One organization id, or a non-empty list of them; loaded as a tuple."""

    default_error_messages = {  # noqa: RUF012 - marshmallow's documented extension point
        "invalid": "must be an Auth0 organization id such as 'org_abc123', or a list of them",
        "empty": "must name at least one organization",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        org_ids = [value] if isinstance(value, str) else value
        if not isinstance(org_ids, list):
            raise self.make_error("invalid")
        if not org_ids:
            raise self.make_error("empty")
        if not all(isinstance(org, str) and ORG_ID.match(org) for org in org_ids):
            raise self.make_error("invalid")
        return tuple(dict.fromkeys(org_ids))


def _validate_domain(value: str) -> None:
    if "://" in value or "/" in value:
        raise ValidationError(
            "give the bare tenant domain without 'https://' or a path, e.g. 'tenant.eu.auth0.com'"
        )
    if not DOMAIN.match(value):
        raise ValidationError("is not a valid host name, e.g. 'tenant.eu.auth0.com'")


def _validate_redis_url(value: str) -> None:
    """What the Redis client will parse in each worker: checked here, at start and on reload,
    so a bad URL is one error line, not workers that cannot boot."""
    from redis.connection import parse_url  # the client's own parser (redis is imported late)

    if not value.startswith(("redis://", "rediss://")):
        raise ValidationError("must be a redis:// or rediss:// URL")
    try:
        parse_url(value)
    except ValueError as error:
        raise ValidationError(str(error).rstrip(".")) from None


def host_and_port(address: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 host in brackets) as its parts.

    :raise ValueError: not of that shape.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(address)
    return host.strip("[]"), int(port)


def _validate_address(value: str) -> None:
    try:
        host_and_port(value)
    except ValueError:
        raise ValidationError("must be host:port, e.g. 'sentinel-0.sentinel:26379'") from None


def _validate_https_url(value: str) -> None:
    if not value.startswith("https://"):
        raise ValidationError("must be an https:// URL")


NON_EMPTY = validate.Length(min=1)
REDIS_MODES = ("standalone", "sentinel", "cluster")  # storage/redis_client.py connects each


class Auth0Schema(Schema):
    class Meta:
        unknown = RAISE

    domain = fields.String(required=True, validate=_validate_domain)
    mgmt_client_id = fields.String(required=True, validate=NON_EMPTY)
    mgmt_client_secret = fields.String(load_default=None, validate=NON_EMPTY)
    management_audience = fields.String(load_default=None, validate=_validate_https_url)
    api_audience = fields.String(required=True, validate=NON_EMPTY)
    issuer = fields.String(load_default=None, validate=_validate_https_url)

    @post_load
    def fill_defaults(self, data, **kwargs):
        base = f"https://{data['domain']}"
        data["management_audience"] = data["management_audience"] or f"{base}/api/v2/"
        data["issuer"] = data["issuer"] or f"{base}/"
        return data


def _integer(default: int, low: int, high: int) -> fields.Integer:
    return fields.Integer(load_default=default, validate=validate.Range(low, high), strict=True)


def _seconds(default: float, low: float, high: float) -> fields.Float:
    return fields.Float(load_default=default, validate=validate.Range(low, high))


class ProxySchema(Schema):
    """The ``proxy`` block: each setting declared once, its default and its range
    (``ProxySettings`` is made from it; docs/configuration.md is tested against it)."""

    class Meta:
        unknown = RAISE

    page_size = _integer(50, 1, 100)
    leeway_seconds = _integer(30, 0, 300)
    jwks_refetch_interval_seconds = _integer(10, 1, 3600)
    jwks_cache_seconds = _integer(600, 1, 86400)
    connect_timeout_seconds = _seconds(3.05, 0.1, 60)
    read_timeout_seconds = _seconds(10.0, 0.1, 120)
    retry_budget_seconds = _seconds(3.0, 0, 60)
    cache_ttl_seconds = _integer(30, 0, 3600)
    max_stale_seconds = _integer(600, 0, 86400)
    changes_retention_seconds = _integer(86400, 1, 30 * 86400)
    fresh_read_interval_seconds = _integer(10, 1, 3600)
    failure_cooldown_seconds = _integer(2, 0, 60)
    accept_user_tokens = fields.Boolean(load_default=False, truthy={True}, falsy={False})
    trust_forwarded_for = fields.Boolean(load_default=False, truthy={True}, falsy={False})
    metrics_per_client = fields.Boolean(load_default=False, truthy={True}, falsy={False})
    prewarm = fields.Boolean(load_default=True, truthy={True}, falsy={False})
    cache_type = fields.String(
        load_default="filesystem", validate=validate.OneOf(["filesystem", "redis", "simple"])
    )
    cache_dir = fields.String(load_default="", validate=NON_EMPTY)  # "": in the temp dir
    cache_redis_url = fields.String(
        load_default="redis://127.0.0.1:6379/0", validate=_validate_redis_url
    )
    cache_redis_mode = fields.String(
        load_default="standalone", validate=validate.OneOf(REDIS_MODES)
    )
    cache_redis_sentinels = fields.List(
        fields.String(validate=_validate_address), load_default=tuple
    )
    cache_redis_sentinel_service = fields.String(load_default="mymaster", validate=NON_EMPTY)
    cache_redis_sentinel_password = fields.String(load_default=None, validate=NON_EMPTY)
    # In a Redis key's hash tag (storage/store.py), which a brace would end early.
    cache_key_prefix = fields.String(
        load_default="auth0-m2m-proxy:",
        validate=validate.Regexp(r"^[^{}]*$", error="must not contain '{{' or '}}'"),
    )

    @validates_schema
    def sentinels_for_sentinel(self, data, **kwargs):
        if data.get("cache_redis_mode") == "sentinel" and not data.get("cache_redis_sentinels"):
            raise ValidationError(
                "give the sentinels' addresses (host:port) for cache_redis_mode sentinel",
                "cache_redis_sentinels",
            )

    @post_load
    def build(self, data, **kwargs):
        return ProxySettings(
            **{**data, "cache_redis_sentinels": tuple(data["cache_redis_sentinels"])}
        )


def settings_dataclass(name: str, schema: type[Schema]) -> type:
    """A frozen dataclass with a field for each of ``schema``'s, defaulting to its
    ``load_default``: the schema stays the one declaration of each setting."""
    python_types = {
        fields.Integer: int,
        fields.Float: float,
        fields.Boolean: bool,
        fields.List: tuple,
    }
    return dataclasses.make_dataclass(
        name,
        [
            (key, python_types.get(type(field), str), _default(field.load_default))
            for key, field in schema().fields.items()
        ],
        frozen=True,
    )


def _default(value: object) -> dataclasses.Field:
    return (
        dataclasses.field(default_factory=value)
        if callable(value)
        else dataclasses.field(default=value)
    )


ProxySettings = settings_dataclass("ProxySettings", ProxySchema)


EVENT_SOURCES = ("off", "events_api", "webhook")


class EventsSchema(Schema):
    """The ``events`` block: where Auth0's events come from (``off``: polling only, as before),
    the webhook's shared secret, and how often lists kept by events are re-read anyway."""

    class Meta:
        unknown = RAISE

    source = fields.String(load_default="off", validate=validate.OneOf(EVENT_SOURCES))
    webhook_token = fields.String(
        load_default=None, validate=validate.Length(min=32, error="must be at least 32 characters")
    )
    reconcile_seconds = _integer(900, 60, 86400)

    @validates_schema
    def token_for_webhook(self, data, **kwargs):
        if data.get("source") == "webhook" and not data.get("webhook_token"):
            raise ValidationError(
                "give the token Auth0's Event Stream sends (or set"
                " AUTH0_PROXY_EVENTS_WEBHOOK_TOKEN) for source webhook",
                "webhook_token",
            )

    @post_load
    def build(self, data, **kwargs):
        return EventsSettings(**data)


EventsSettings = settings_dataclass("EventsSettings", EventsSchema)


class ClientGrantsSchema(Schema):
    """The ``client_grants`` block: whether the ``clients`` map also comes from Auth0 (each
    client grant of the proxy's API and the organizations associated with it), how often
    that is read again, how often an unknown client may be looked up, and whether a grant
    that allows any organization is trusted."""

    class Meta:
        unknown = RAISE

    enabled = fields.Boolean(load_default=False, truthy={True}, falsy={False})
    refresh_seconds = _integer(300, 30, 86400)
    lookup_interval_seconds = _integer(10, 1, 3600)
    trust_allow_any_organization = fields.Boolean(load_default=False, truthy={True}, falsy={False})

    @post_load
    def build(self, data, **kwargs):
        return ClientGrantsSettings(**data)


ClientGrantsSettings = settings_dataclass("ClientGrantsSettings", ClientGrantsSchema)


class LimitSchema(Schema):
    class Meta:
        unknown = RAISE

    burst = fields.Integer(required=True, validate=validate.Range(1, 100_000), strict=True)
    per_minute = fields.Float(required=True, validate=validate.Range(1, 1_000_000))

    @post_load
    def build(self, data, **kwargs):
        return Limit(**data)


class BudgetSchema(Schema):
    """The plan's published limits, each group overridable (a tenant with a raised limit), and
    the share of them the proxy may spend."""

    class Meta:
        unknown = RAISE

    plan = fields.String(validate=validate.OneOf(sorted(PLANS)))
    share = fields.Float(validate=validate.Range(0.01, 1))
    limits = fields.Dict(
        keys=fields.String(validate=validate.OneOf(GROUPS)),
        values=fields.Nested(LimitSchema),
        load_default=dict,
    )

    @post_load
    def build(self, data, **kwargs):
        """What is not given is ``BudgetSettings``'s default (declared there only)."""
        defaults = BudgetSettings()
        plan, share = data.get("plan", defaults.plan), data.get("share", defaults.share)
        return BudgetSettings(plan=plan, share=share, limits={**PLANS[plan], **data["limits"]})


class RateSchema(Schema):
    """A limit of the ``rate_limits`` block: ``per_minute`` 0 is none; ``burst`` defaults to ten
    seconds' worth."""

    class Meta:
        unknown = RAISE

    per_minute = fields.Float(required=True, validate=validate.Range(0, 10_000_000))
    burst = fields.Integer(load_default=None, validate=validate.Range(1, 1_000_000), strict=True)

    @post_load
    def build(self, data, **kwargs):
        if data["per_minute"] == 0:
            return None
        burst = data["burst"] or max(1, math.ceil(data["per_minute"] / 6))
        return Limit(burst=burst, per_minute=data["per_minute"])


class ClientLimitsSchema(Schema):
    class Meta:
        unknown = RAISE

    requests = fields.Nested(RateSchema, allow_none=False)
    upstream = fields.Nested(RateSchema, allow_none=False)


class RateLimitsSchema(Schema):
    class Meta:
        unknown = RAISE

    client = fields.Nested(ClientLimitsSchema, load_default=dict)
    total = fields.Nested(RateSchema, data_key="global")
    failed_auth = fields.Nested(RateSchema)
    clients = fields.Dict(
        keys=fields.String(validate=NON_EMPTY),
        values=fields.Nested(ClientLimitsSchema),
        load_default=dict,
    )

    @post_load
    def build(self, data, **kwargs):
        """Each client's overrides start from the ``client`` defaults, themselves from the
        built-in ones."""
        client = dataclasses.replace(ClientLimits(), **data["client"])
        clients = {
            name: dataclasses.replace(client, **over) for name, over in data["clients"].items()
        }
        extra = {name: data[name] for name in ("total", "failed_auth") if name in data}
        return RateLimits(client=client, clients=clients, **extra)


def _names(pattern: str = r"^\S+$", example: str = "a name") -> fields.List:
    item = fields.String(validate=validate.Regexp(pattern, error=f"must be {example}"))
    return fields.List(item, load_default=list)


class WriteGrantSchema(Schema):
    class Meta:
        unknown = RAISE

    permissions = _names(r"^(create|update|delete):[a-z_]+$", "a permission such as 'update:users'")
    roles = _names(r"^rol_[A-Za-z0-9]+$", "a role id such as 'rol_abc123'")
    app_metadata_keys = _names()
    connections = _names()
    invitation_clients = _names()

    @post_load
    def build(self, data, **kwargs):
        return WriteGrant(**{name: frozenset(values) for name, values in data.items()})


class ConfigSchema(Schema):
    class Meta:
        unknown = RAISE

    # Required unless client_grants.enabled (checked below: a missing map is a typo otherwise).
    clients = fields.Dict(keys=fields.String(validate=NON_EMPTY), values=OrgIds())
    auth0 = fields.Nested(Auth0Schema, required=True)
    proxy = fields.Nested(ProxySchema, load_default=None)
    budget = fields.Nested(BudgetSchema, load_default=None)
    writes = fields.Dict(
        keys=fields.String(validate=NON_EMPTY),
        values=fields.Nested(WriteGrantSchema),
        load_default=dict,
    )
    rate_limits = fields.Nested(RateLimitsSchema, load_default=None)
    events = fields.Nested(EventsSchema, load_default=None)
    client_grants = fields.Nested(ClientGrantsSchema, load_default=None)

    @validates_schema
    def clients_or_client_grants(self, data, **kwargs):
        grants = data.get("client_grants")
        if "clients" not in data and not (grants and grants.enabled):
            raise ValidationError(
                "missing (required, unless client_grants.enabled takes it from Auth0)", "clients"
            )

    @validates_schema
    def named_clients_are_clients(self, data, **kwargs):
        """Writes and rate-limit overrides name clients of the clients map: a typo would
        otherwise be a grant or a limit that applies to no one."""
        clients = data.get("clients", {})
        overrides = (data.get("rate_limits") or RateLimits()).clients
        errors = {}
        if unknown := _not_clients(data.get("writes", {}), clients):
            errors["writes"] = unknown
        if unknown := _not_clients(overrides, clients):
            errors["rate_limits"] = {"clients": unknown}
        if errors:
            raise ValidationError(errors)


CONFIG_SCHEMA = ConfigSchema()


def _not_clients(named: Mapping, clients: Mapping) -> dict[str, list[str]]:
    return {name: ["not a client of the clients map"] for name in named if name not in clients}


def load_settings(data: object, environ: Mapping[str, str] | None = None) -> Settings:
    """Validate a parsed config mapping; secrets from ``environ`` take precedence over the file.

    :raise ConfigError: naming each placeholder of the examples left in it, else each bad key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("must be a JSON object with the keys 'clients' and 'auth0'")
    # The file's placeholders are refused even where the environment sets the key: a file that
    # holds one was copied from an example and not filled in.
    file_placeholders = list(example_placeholders(data))
    data, origins = with_environment(data, environ)
    if placeholders := file_placeholders or list(example_placeholders(data)):
        raise ConfigError(_describe_placeholders(placeholders))
    try:
        loaded = CONFIG_SCHEMA.load(data)
    except ValidationError as error:
        raise ConfigError(_describe(error.messages, origins=origins)) from None
    auth0 = loaded["auth0"]
    if not auth0["mgmt_client_secret"]:
        raise ConfigError(
            "auth0.mgmt_client_secret: missing; set it in the file or in AUTH0_MGMT_CLIENT_SECRET"
            " (or AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET, or a file named by"
            " AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET_FILE)"
        )
    proxy = loaded["proxy"] or ProxySchema().load({})
    if not proxy.cache_dir:
        default_dir = Path(tempfile.gettempdir()) / f"auth0-m2m-proxy-{os.getuid()}"
        proxy = dataclasses.replace(proxy, cache_dir=str(default_dir))
    return Settings(
        clients=loaded.get("clients", {}),
        auth0=Auth0Settings(**auth0),
        proxy=proxy,
        budget=loaded["budget"] or BudgetSettings(),
        writes=loaded["writes"],
        rate_limits=loaded["rate_limits"] or RateLimits(),
        events=loaded["events"] or EventsSettings(),
        client_grants=loaded["client_grants"] or ClientGrantsSettings(),
    )


def with_environment(
    data: Mapping, environ: Mapping[str, str] | None = None
) -> tuple[dict, dict[str, str]]:
    """The file's data with what the environment sets over it, and where each of those keys
    came from (see ``config_env``).

    :raise ConfigError: a variable's file cannot be read, or it is set twice.
    """
    environ = os.environ if environ is None else environ
    try:
        return config_env.overlay(data, environ, CONFIG_SCHEMA)
    except config_env.VariableError as error:
        raise ConfigError(str(error)) from None


def example_placeholders(data: object, key: str = "") -> Iterator[tuple[str, str]]:
    """Each placeholder of the example configs left in parsed config data, as (key, value), in
    the file's order; one that is a key itself (a client id) is named by its map's key."""
    if isinstance(data, Mapping):
        for name, value in data.items():
            yield from example_placeholders(name, key or "the top level")
            yield from example_placeholders(value, f"{key}.{name}" if key else str(name))
    elif isinstance(data, list):
        for item in data:
            yield from example_placeholders(item, key)
    elif isinstance(data, str) and (data in PLACEHOLDERS or PLACEHOLDER_PARTS.search(data)):
        yield key, data


def _describe_placeholders(placeholders: list[tuple[str, str]]) -> str:
    """The first placeholder, by key and value; the others after it, if there are others."""
    (key, value), others = placeholders[0], placeholders[1:]
    if not others:
        return f"{key}: {value!r} is the example's placeholder; fill in your own value"
    listed = ", ".join(f"{other} {text!r}" for other, text in others)
    return (
        f"{key}: {value!r} is the example's placeholder, and so are {len(others)} more "
        f"({listed}); fill in your own values"
    )


def load_config_file(path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config.json, with the environment over it (or, with no file, the
    environment alone).

    :raise ConfigError: the file is missing, not JSON, has duplicate keys, or is invalid.
    """
    environ = os.environ if environ is None else environ
    data = read_config_file(path, environ)
    if data is None:  # the whole configuration from the environment
        return load_settings({}, environ)
    try:
        return load_settings(data, environ)
    except ConfigError as error:
        raise ConfigError(f"config file {str(path)!r}: {error}") from None


def read_config_file(path: str | os.PathLike, environ: Mapping[str, str]) -> dict | None:
    """The file's data, unchecked; None where there is no file and the environment configures
    the proxy instead.

    :raise ConfigError: the file is missing (and no variable sets the configuration), not
        JSON, or has duplicate keys.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        if config_env.configured(environ, CONFIG_SCHEMA):
            return None
        raise ConfigError(
            f"cannot read config file {str(path)!r}: No such file or directory (and no "
            "AUTH0_PROXY_ variable sets the configuration instead)"
        ) from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except ValueError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid JSON: {error}") from None


def config_path(environ: Mapping[str, str] | None = None) -> str:
    """Where the config file is: ``AUTH0_PROXY_CONFIG``, else ``./config.json``."""
    environ = os.environ if environ is None else environ
    return environ.get("AUTH0_PROXY_CONFIG") or DEFAULT_CONFIG_PATH


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    # json.loads would silently keep the last of two equal keys, e.g. a client id mapped twice.
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def ensure_private_directory(path: str) -> None:
    """Create the cache directory for this user alone, or refuse one that others can touch.

    It holds the management token, and cachelib unpickles its files: a directory another user
    could write to (e.g. made in /tmp beforehand) would let them run code as the proxy.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError as error:
        raise ConfigError(f"proxy.cache_dir: cannot create {path!r}: {error.strerror}") from None
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"proxy.cache_dir: {path!r} must belong to the proxy's user and be private to it "
            "(chmod 700), because it holds the management token"
        )


def _describe(messages: object, prefix: str = "", origins: Mapping[str, str] | None = None) -> str:
    """Flatten marshmallow's nested messages into 'a.b: problem' lines, naming the variable a
    key came from if the environment set it."""
    if isinstance(messages, Mapping):
        lines = []
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping) and set(value) <= {"key", "value"}:
                # marshmallow's shape for an error in a Dict's key or value (a nested schema's
                # errors, by field, for a value that is one)
                nested = value.get("value")
                if isinstance(nested, Mapping):
                    value = nested
                else:
                    value = [message for part in value.values() for message in part]
            lines.append(_describe(value, name, origins))
        return "; ".join(lines)
    if isinstance(messages, list):
        text = _friendly(" ".join(str(m).rstrip(".") for m in messages))
    else:
        text = str(messages)
    source = _origin(prefix, origins or {})
    text += f" (from {source})" if source else ""
    return f"{prefix}: {text}" if prefix else text


def _origin(key: str, origins: Mapping[str, str]) -> str | None:
    """The variable that set ``key``, or the map holding it."""
    while key:
        if key in origins:
            return origins[key]
        key = key.rpartition(".")[0]
    return None


def _friendly(text: str) -> str:
    return {
        "Unknown field": "unknown key (check its spelling)",
        "Missing data for required field": "missing (required)",
        "Not a valid mapping type": "must be a JSON object",
    }.get(text, text)
