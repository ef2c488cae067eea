"""The route table's parts (Route, RouteTable, the Call a handler gets) and raw-URI matching.

Requests are matched on the raw URI because Auth0 user ids carry ``|`` and may carry an encoded
``/``: Flask's router decodes ``%2F`` before matching, which would split ``auth0|a%2Fb`` into two
path segments. Here the path is split on literal ``/`` first and each segment decoded afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from .tenant import Tenant

MANAGEMENT_PREFIX = "/api/v2"
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Call:
    """What a handler gets from one request, already decoded and (for /api/v2) validated."""

    path_params: dict[str, str]
    #: typed and validated against the spec for Management routes; as sent for the others
    query: dict[str, Any] = field(default_factory=dict)
    #: /oauth/token: its form or JSON string parameters; a Management write: its JSON body,
    #: validated against the operation's request schema
    body: Any = field(default_factory=dict)
    #: the request's headers (case-insensitive), for the few operations that read one
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[["Tenant", Call], Any]


class MissingOperation(Exception):
    """A Management route has no operation in the spec excerpt, so it could not be validated."""


@dataclass(frozen=True)
class Route:
    """One row of the route table: ``"GET /api/v2/users/{id}"`` answered by ``handler`` with
    ``status`` (204: no body, whatever the handler returns).

    The endpoint string is also the key tests use for faults, counts and the request log.
    """

    endpoint: str
    handler: Handler
    status: int = 200

    def __post_init__(self) -> None:
        method, _, template = self.endpoint.partition(" ")
        if method not in HTTP_METHODS or not template.startswith("/"):
            raise ValueError(f"route {self.endpoint!r} is not 'METHOD /path/{{param}}'")

    @property
    def method(self) -> str:
        return self.endpoint.partition(" ")[0]

    @property
    def template(self) -> str:
        return self.endpoint.partition(" ")[2]

    @property
    def is_management(self) -> bool:
        """Management API routes are bearer-protected, rate limited and spec-validated."""
        return is_management_path(self.template)


@dataclass(frozen=True)
class RouteMatch:
    """The route a request addresses and its decoded path parameters."""

    route: Route
    params: dict[str, str]

    @property
    def endpoint(self) -> str:
        return self.route.endpoint


class RouteTable:
    """Routes tried in order; the first whose method and template fit the raw path answers."""

    def __init__(self, routes: Iterable[Route], spec_operations: Container[str]) -> None:
        """:raise MissingOperation: a Management route without its operation in the excerpt."""
        self.routes = tuple(routes)
        for route in self.routes:
            if route.is_management and route.endpoint not in spec_operations:
                raise MissingOperation(
                    f"Management route {route.endpoint!r} has no operation in the spec excerpt "
                    "management_api_spec.json: copy it there from Auth0's published spec"
                )

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(route.endpoint for route in self.routes)

    def match(self, method: str, raw_path: str) -> RouteMatch | None:
        """The route this request addresses exactly, or None (answered 404)."""
        segments = raw_path.split("/")
        for route in self.routes:
            if route.method != method:
                continue
            params = _match_template(route.template.split("/"), segments)
            if params is not None:
                return RouteMatch(route, params)
        return None


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
