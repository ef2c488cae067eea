"""Match requests on the raw URI, because Auth0 user ids carry ``|`` and may carry an encoded ``/``.

Flask's router decodes ``%2F`` before matching, which would split ``auth0|a%2Fb`` into two path
segments. Here the path is split on literal ``/`` first and each segment decoded afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

MANAGEMENT_PREFIX = "/api/v2"

OAUTH_TOKEN = "POST /oauth/token"
JWKS = "GET /.well-known/jwks.json"
OPENID_CONFIGURATION = "GET /.well-known/openid-configuration"
ORGANIZATION_MEMBERS = "GET /api/v2/organizations/{id}/members"
USER = "GET /api/v2/users/{id}"
USER_ORGANIZATIONS = "GET /api/v2/users/{id}/organizations"
USERS = "GET /api/v2/users"

ENDPOINTS = (
    OAUTH_TOKEN,
    JWKS,
    OPENID_CONFIGURATION,
    ORGANIZATION_MEMBERS,
    USER,
    USER_ORGANIZATIONS,
    USERS,
)


@dataclass(frozen=True)
class RouteMatch:
    """An endpoint key such as ``"GET /api/v2/users/{id}"`` and its decoded path parameters."""

    endpoint: str
    params: dict[str, str]


def raw_request_uri(environ: Mapping[str, object]) -> str:
    """The request target exactly as the client sent it (percent-encoding intact).

    cheroot and werkzeug provide ``REQUEST_URI`` (werkzeug also ``RAW_URI``); other servers
    (or the test client) may not, so fall back to re-encoding the decoded path.
    """
    for key in ("REQUEST_URI", "RAW_URI"):
        value = environ.get(key)
        if isinstance(value, str) and value:
            return value
    path = quote(str(environ.get("PATH_INFO", "")), safe="/|:@!$&'()*+,;=")
    query = str(environ.get("QUERY_STRING", ""))
    return f"{path}?{query}" if query else path


def split_raw_uri(raw_uri: str) -> tuple[str, str]:
    """Split a request target (origin- or absolute-form) into raw path and raw query string."""
    parts = urlsplit(raw_uri)
    return parts.path, parts.query


def is_management_path(raw_path: str) -> bool:
    """Whether the request falls under the Management API (rate limited, bearer protected)."""
    return raw_path == MANAGEMENT_PREFIX or raw_path.startswith(MANAGEMENT_PREFIX + "/")


def match_endpoint(method: str, raw_path: str) -> RouteMatch | None:
    """The endpoint this request addresses exactly, or None (answered 404)."""
    segments = raw_path.split("/")
    for endpoint in ENDPOINTS:
        endpoint_method, template = endpoint.split(" ", 1)
        if endpoint_method != method:
            continue
        params = _match_template(template.split("/"), segments)
        if params is not None:
            return RouteMatch(endpoint, params)
    return None


def _match_template(template: list[str], segments: list[str]) -> dict[str, str] | None:
    """Decoded parameters when ``segments`` fits ``template`` segment by segment."""
    if len(template) != len(segments):
        return None
    params: dict[str, str] = {}
    for expected, actual in zip(template, segments, strict=True):
        if expected.startswith("{") and expected.endswith("}"):
            if not actual:
                return None
            params[expected[1:-1]] = unquote(actual, errors="replace")
        elif expected != actual:
            return None
    return params
