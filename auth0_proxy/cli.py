"""The ``auth0-m2m-proxy`` console script: ``check-config [PATH] [--online]``.

Offline it validates the configuration (the file, the environment over it) exactly as the proxy
does at start (``load_configuration``), summarizes it and prints each key's effective value and
where it came from. ``--online`` then checks the tenant with the proxy's own parts, built from
those settings by ``create_app``: the signing keys (KeyStore), the management token and the
organizations (ManagementClient). The check uses a cache of its own
(``simple``, in this process), so it fetches a token with the configured secret rather than
reading one a running proxy cached, and leaves the proxy's cache alone.

No secret and no token is printed: every line of the report is redacted as the proxy's log lines
are, and the management secret is removed from it besides.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from flask import Flask

from auth0_proxy.access.grants import Authorization, read_authorizations
from auth0_proxy.auth0.keys import JWKS_PATH, KeyStore
from auth0_proxy.auth0.management import ManagementClient
from auth0_proxy.core import clock, config_env
from auth0_proxy.core.auth0_api import ORGANIZATION, api_path
from auth0_proxy.core.config import (
    CONFIG_SCHEMA,
    ConfigError,
    Settings,
    config_path,
    read_config_file,
    with_environment,
)
from auth0_proxy.core.errors import APIError, OrganizationNotFound, TooManyRequests
from auth0_proxy.edge.api_v2.pipeline import RULES
from auth0_proxy.ops.logs import redact

from . import create_app, load_configuration

PROG = "auth0-m2m-proxy"
EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"

# What the proxy's own reads call (management.py): organization members (the member lists),
# users search and profiles, and users' organizations (every membership check, reads and writes).
PROXY_READS = ("read:organization_members", "read:users", "read:organizations")
# The reads of the /api/v2 surface (its rule table); those beyond PROXY_READS are optional: without
# one, only that operation fails (502).
SURFACE_READS = frozenset(rule.permission for rule in RULES if not rule.write)
# No real secret is shorter; the report removes the management secret wherever it appears.
MIN_SECRET_LENGTH = 8
# At most this many ids are listed on a line; the rest are counted.
LISTED = 10
# Waits for the budget (or Auth0's rate limit) when checking many organizations.
MAX_RATE_LIMIT_WAITS = 5

T = TypeVar("T")


@dataclass(frozen=True)
class Check:
    """One line of the online report."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}"


def main(argv: list[str] | None = None) -> int:
    """Run the console script; its exit status: 0 fine, 1 a problem found, 2 a usage error."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse's --help (0) and usage errors (2)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Tools for the auth0-m2m-proxy deployment."
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check-config",
        help="validate the config file, and with --online the Auth0 tenant it names",
        description=(
            "Validate the config file as the proxy does at start and summarize it. With "
            "--online, also check the tenant: its signing keys (JWKS), the management token, "
            "the token's permissions and the mapped organizations. Exit status: 0 all is well, "
            "1 a problem was found, 2 a usage error."
        ),
    )
    check.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="the config file (default: $AUTH0_PROXY_CONFIG, else ./config.json)",
    )
    check.add_argument(
        "--online", action="store_true", help="also check the tenant with the management client"
    )
    check.set_defaults(run=check_config)
    return parser


def check_config(args: argparse.Namespace) -> int:
    path = args.path or config_path()
    try:
        settings = load_configuration(path=path)
    except ConfigError as error:
        print(f"{PROG}: configuration error: {redact(str(error))}", file=sys.stderr)
        return EXIT_PROBLEM
    secret = settings.auth0.mgmt_client_secret

    def show(line: str) -> None:
        line = redact(line)
        if len(secret) >= MIN_SECRET_LENGTH:  # a shorter one would cut letters out of words
            line = line.replace(secret, "[redacted]")
        print(f"  {line}")

    print(f"{path}: OK")
    for line in summary(settings):
        show(line)
    print("effective configuration (environment over file; secrets hidden):")
    for line in effective_configuration(path, os.environ):
        show(line)
    if not args.online:
        return EXIT_OK
    print(f"online checks of {settings.auth0.domain}:")
    checks = online_checks(settings)
    for check in checks:
        show(check.line())
    return EXIT_PROBLEM if any(check.status == FAIL for check in checks) else EXIT_OK


def summary(settings: Settings) -> list[str]:
    """What the configuration says, in a few lines (no secret)."""
    auth0, proxy = settings.auth0, settings.proxy
    org_ids = _mapped_organizations(settings)
    cache = {
        "filesystem": f"filesystem ({proxy.cache_dir})",
        "redis": f"redis ({_without_credentials(proxy.cache_redis_url)})",
    }.get(proxy.cache_type, proxy.cache_type)
    lines = [
        f"tenant: {auth0.domain}",
        f"management application: {auth0.mgmt_client_id} (audience {auth0.management_audience})",
        f"edge tokens: audience {auth0.api_audience}, issuer {auth0.issuer}",
        f"clients: {len(settings.clients)}; organizations mapped: {len(org_ids)} "
        f"({_listed(org_ids)})",
        *_client_grants_summary(settings),
        f"cache: {cache}",
        f"budget: {settings.budget.plan} plan, share {settings.budget.share:g}",
    ]
    writers = {client: grant for client, grant in settings.writes.items() if grant.permissions}
    if not writers:
        lines.append("writes: none granted")
    for client_id, grant in sorted(writers.items()):
        lines.append(f"writes: {client_id}: {', '.join(sorted(grant.permissions))}")
    return lines


def _client_grants_summary(settings: Settings) -> list[str]:
    grants = settings.client_grants
    if not grants.enabled:
        return []
    trusted = "trusted" if grants.trust_allow_any_organization else "refused"
    return [
        f"client grants: Auth0's also map clients (config entries win), read every "
        f"{grants.refresh_seconds} s, an unknown client looked up at most every "
        f"{grants.lookup_interval_seconds} s; allow_any_organization {trusted}"
    ]


def effective_configuration(path: str, environ: Mapping[str, str]) -> list[str]:
    """Each key that is set or has a default: its value and where it came from (the variable
    that set it, the file, or the default); secrets hidden."""
    data, origins = with_environment(read_config_file(path, environ) or {}, environ)
    lines = []
    for variable in config_env.variables(CONFIG_SCHEMA):
        value = data
        for key in variable.path:
            value = value.get(key) if isinstance(value, dict) else None
        source = origins.get(variable.key, "file")
        if value is None:
            value, source = variable.default, "default"
        if value is None:
            continue
        lines.append(f"{variable.key} = {_shown(variable.path, value)}  ({source})")
    return lines


def _shown(path: tuple[str, ...], value: object) -> str:
    if path in config_env.SECRETS:
        return "[hidden]"
    if path == ("proxy", "cache_redis_url") and isinstance(value, str):
        return _without_credentials(value)
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 200 else text[:200] + "…"


def online_checks(settings: Settings) -> list[Check]:
    """Check the tenant with the proxy's own key store and management client."""
    app = _checking_app(settings)
    keys: KeyStore = app.extensions["keys"]
    management: ManagementClient = app.extensions["management"]
    try:
        with app.app_context(), _quiet_proxy_logs():
            checks = [check_jwks(keys)]
            token_check, token = check_management_token(management)
            checks.append(token_check)
            if token is None:
                why = "no management token"
                checks.append(Check("management permissions", SKIP, why))
                checks.append(Check("organizations", SKIP, why))
                checks.append(Check("clients map", SKIP, why))
            else:
                checks.append(check_permissions(settings, token))
                checks.append(check_organizations(settings, management))
                checks.extend(check_client_map(settings, management))
    finally:
        management.upstream.session.close()
    return checks


def check_jwks(keys: KeyStore) -> Check:
    """(1) The JWKS answers and holds an RS256 signing key (the only kind the proxy keeps)."""
    url = keys.upstream.base_url + JWKS_PATH
    try:
        key_set = keys.key_set()
    except APIError as error:
        return Check("JWKS", FAIL, f"{url}: {_why(error)}")
    kids = [key.kid for key in key_set.keys]
    if not kids:
        return Check("JWKS", FAIL, f"{url}: holds no RS256 signing key")
    return Check("JWKS", OK, f"{url}: {len(kids)} RS256 signing key(s) ({_listed(kids)})")


def check_management_token(management: ManagementClient) -> tuple[Check, str | None]:
    """(2) A management token by client credentials; Auth0's refusal if not."""
    auth0 = management.auth0
    name = "management token"
    where = f"client {auth0.mgmt_client_id}, audience {auth0.management_audience}"
    try:
        token = management.token()
    except APIError as error:
        return Check(name, FAIL, f"{where}: {_why(error)}"), None
    claims = unverified_claims(token)
    expires = claims.get("exp") if claims else None
    lifetime = (
        f", valid for {math.floor(expires - clock.now())} s"
        if isinstance(expires, int | float)
        else ""
    )
    return Check(name, OK, f"obtained ({where}{lifetime})"), token


def check_permissions(settings: Settings, token: str) -> Check:
    """(3) The token's ``scope`` (read without verifying it) holds what the proxy's reads and the
    granted writes call; the optional reads of the /api/v2 surface are a warning."""
    name = "management permissions"
    claims = unverified_claims(token)
    if claims is None:
        return Check(name, FAIL, "the management token is not a JWT; cannot read its scope")
    granted = set(str(claims.get("scope") or "").split())
    needed = required_permissions(settings)
    missing = [f"{p} ({', '.join(sorted(needed[p]))})" for p in sorted(needed) if p not in granted]
    optional = sorted(SURFACE_READS - granted - set(needed))
    optional_note = (
        f"lacks {', '.join(optional)}: those /api/v2 reads would answer 502" if optional else ""
    )
    if missing:
        detail = f"the token lacks {'; '.join(missing)}"
        return Check(name, FAIL, f"{detail}; also {optional_note}" if optional else detail)
    has_needed = f"has the {len(needed)} needed ({_listed(sorted(needed))})"
    if optional:
        return Check(name, WARN, f"{has_needed}; {optional_note}")
    detail = f"{has_needed} and the /api/v2 surface's reads"
    if surplus := sorted(granted - set(needed) - SURFACE_READS):
        detail += f"; not needed, could be removed: {', '.join(surplus)}"
    return Check(name, OK, detail)


def required_permissions(settings: Settings) -> dict[str, set[str]]:
    """Each Management API permission the proxy needs, and what needs it: its reads, the
    Events API's with ``events.source`` events_api, the client grants' with
    ``client_grants.enabled``, and for each write the ``writes`` block
    grants, what that write's rule calls."""
    needed: dict[str, set[str]] = {permission: {"the proxy's reads"} for permission in PROXY_READS}
    if settings.events.source == "events_api":
        needed["read:events"] = {"events.source events_api"}
    if settings.client_grants.enabled:
        for permission in ("read:client_grants", "read:organization_client_grants"):
            needed[permission] = {"client_grants.enabled"}
    for client_id, grant in settings.writes.items():
        for rule in RULES:
            if rule.write and rule.permission in grant.permissions:
                for permission in (rule.permission, *rule.upstream_permissions):
                    needed.setdefault(permission, set()).add(
                        f"writes.{client_id}: {rule.permission}"
                    )
    return needed


def check_organizations(settings: Settings, management: ManagementClient) -> Check:
    """(4) Every organization of the ``clients`` map exists (GET /organizations/{id})."""
    name = "organizations"
    org_ids = _mapped_organizations(settings)
    missing = []
    for org_id in org_ids:
        path = api_path(ORGANIZATION, id=org_id)
        try:
            _paced(lambda path=path: management.get_json(path, missing=OrganizationNotFound))
        except OrganizationNotFound:
            missing.append(org_id)
        except APIError as error:
            return Check(name, FAIL, f"cannot read {org_id}: {_why(error)}")
    if missing:
        mapped_by = {
            org_id: ", ".join(
                f"clients.{c}" for c, orgs in settings.clients.items() if org_id in orgs
            )
            for org_id in missing
        }
        listed = ", ".join(f"{org_id} ({mapped_by[org_id]})" for org_id in missing)
        return Check(
            name,
            FAIL,
            f"{len(missing)} of {len(org_ids)} mapped organization(s) do not exist: {listed}",
        )
    return Check(name, OK, f"all {len(org_ids)} mapped organization(s) exist ({_listed(org_ids)})")


def check_client_map(settings: Settings, management: ManagementClient) -> list[Check]:
    """(5) The effective clients map: a line per client, with where its organizations come
    from; a config entry wins over Auth0's grant for the same client (said on its line), and a
    grant of the proxy's API that maps to nothing is a warning, with why."""
    found: list[Authorization] = []
    grants = settings.client_grants
    if grants.enabled:
        try:
            found = _paced(
                lambda: read_authorizations(
                    management,
                    settings.auth0.api_audience,
                    trust_any=grants.trust_allow_any_organization,
                )
            )
        except APIError as error:
            return [Check("clients map", FAIL, f"cannot read Auth0's client grants: {_why(error)}")]
    lines = []
    for client_id, org_ids in sorted(settings.clients.items()):
        shadowed = "".join(
            f"; wins over Auth0's grant {grant.grant_id} ({_granted(grant)})"
            for grant in found
            if grant.client_id == client_id
        )
        lines.append(Check(f"client {client_id}", OK, f"{', '.join(org_ids)} (config{shadowed})"))
    from_auth0 = [grant for grant in found if grant.client_id not in settings.clients]
    for grant in sorted(from_auth0, key=lambda grant: grant.client_id):
        status = OK if grant.organizations else WARN
        lines.append(
            Check(
                f"client {grant.client_id}",
                status,
                f"{_granted(grant)} (Auth0's grant {grant.grant_id})",
            )
        )
    mapped = sum(1 for grant in from_auth0 if grant.organizations)
    source = f"; Auth0's client grants: {mapped}" if grants.enabled else ""
    summary = Check(
        "clients map",
        OK,
        f"{len(settings.clients) + mapped} client(s): config: {len(settings.clients)}{source}",
    )
    return [summary, *lines]


def _granted(grant: Authorization) -> str:
    return ", ".join(grant.organizations) if grant.organizations else f"nothing: {grant.refused}"


def unverified_claims(token: str) -> dict | None:
    """A JWT's claims, decoded without verifying it (for this report only), or None."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _checking_app(settings: Settings) -> Flask:
    """The proxy's app, as ``create_app`` builds it, on a cache of this process."""
    private = dataclasses.replace(
        settings, proxy=dataclasses.replace(settings.proxy, cache_type="simple")
    )
    return create_app(settings=private, serving=False)


@contextlib.contextmanager
def _quiet_proxy_logs() -> Iterator[None]:
    """The proxy's own log lines (warnings about Auth0) stay out of the report: each check's
    line gives the reason."""
    logger = logging.getLogger("auth0_proxy")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _paced(call: Callable[[], T]) -> T:
    """``call``, waiting out the budget (or Auth0's rate limit) a few times if it is spent."""
    for _ in range(MAX_RATE_LIMIT_WAITS):
        try:
            return call()
        except TooManyRequests as error:
            time.sleep(min(float(error.headers.get("Retry-After", 1)), 60))
    return call()


def _why(error: APIError) -> str:
    """The reason the proxy would log, with a hint for a TLS failure."""
    reason = error.reason if error.reason != error.message else error.message
    if "SSLError" in reason:
        reason += " (a private or TLS-inspecting CA? set REQUESTS_CA_BUNDLE to its bundle)"
    return reason


def _mapped_organizations(settings: Settings) -> list[str]:
    return sorted({org_id for org_ids in settings.clients.values() for org_id in org_ids})


def _listed(values: Iterable[str]) -> str:
    values = list(values)
    shown = ", ".join(values[:LISTED])
    return f"{shown}, and {len(values) - LISTED} more" if len(values) > LISTED else shown


def _without_credentials(url: str) -> str:
    """The URL without its user info and query (either may hold a password)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host, query=""))


if __name__ == "__main__":
    sys.exit(main())
