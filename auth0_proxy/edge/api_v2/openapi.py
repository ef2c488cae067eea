"""GET /openapi.json: the proxy's OpenAPI 3.1 document, made from what the proxy already declares.

Paths and methods come from the app's routes and from the /api/v2 rule table, query parameters
from the marshmallow schemas that check queries, bodies from the schemas that shape answers,
error codes from errors.py. On /api/v2 the proxy answers as Auth0 does, so its answers are
described by Auth0's own published schemas (copied in auth0_response_schemas.json).

apispec's MarshmallowPlugin turns the schemas into the document. Not flask-smorest: it would
take over the views' argument parsing and answers, and the proxy's views are plain Flask
blueprints that only need describing. The document is built once per app, at its first request,
and is served without a token: it holds nothing the docs do not say.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources

import orjson
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app
from marshmallow import Schema
from werkzeug.http import HTTP_STATUS_CODES

from auth0_proxy.core.auth0_api import PREFIX
from auth0_proxy.core.errors import (
    APIError,
    ChangesExpired,
    InsufficientScope,
    InvalidBody,
    InvalidCursor,
    OperationNotAllowed,
    OrganizationDenied,
    OrganizationNotFound,
    SharedUser,
    TokenInQueryString,
    TokenRejected,
    TooManyRequests,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
    UserNotFound,
)
from auth0_proxy.core.paging import (
    ChangesQuerySchema,
    InvalidPaging,
    InvalidQuery,
    MemberQuerySchema,
)
from auth0_proxy.core.schemas import (
    ErrorSchema,
    HealthSchema,
    MemberChangesSchema,
    MemberSchema,
    MembersOffsetPageSchema,
    MembersPageSchema,
    ReadinessSchema,
)
from auth0_proxy.core.version import __version__

from .operation import READ_ANY, Org, Rule
from .pipeline import RULES
from .query import EMAIL, QUERY_SCHEMA, QuerySchema

bp = Blueprint("openapi", __name__)

SECURITY_SCHEME = "bearerAuth"
JSON = "application/json"


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """This document. No token needed."""
    document = current_app.extensions.get("openapi")
    if document is None:  # built once per app (two first requests at once build it alike)
        document = current_app.extensions["openapi"] = orjson.dumps(build_document(current_app))
    return Response(document, mimetype=JSON)


# Response headers: components, each as required as it is wherever it is named.


def header(description: str, schema: dict, *, required: bool = False) -> dict:
    return {"description": description, "required": required, "schema": schema}


INTEGER = {"type": "integer", "minimum": 0}
STRING = {"type": "string"}
HEADERS = {
    "X-Request-ID": header(
        "The request's id (the caller's X-Request-ID if it is a safe token), also in the log line.",
        STRING,
        required=True,
    ),
    "Age": header("Seconds since the proxy read the answer from Auth0.", INTEGER, required=True),
    "Cache-Status": header(
        "RFC 9211: `auth0-m2m-proxy; hit; ttl=N` (negative N: served stale) or "
        "`auth0-m2m-proxy; fwd=miss` (read from Auth0 for this request).",
        STRING,
        required=True,
    ),
    "ETag": header(
        "A strong entity tag, when the answer came from the cache; send it back in If-None-Match.",
        STRING,
    ),
    "x-ratelimit-limit": header("The client's request limit: its burst.", INTEGER),
    "x-ratelimit-remaining": header("Requests the client has left now.", INTEGER),
    "x-ratelimit-reset": header(
        "The UNIX time (seconds) the client's limit is full again.", INTEGER
    ),
}
RATE_LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
FRESHNESS = ("Age", "Cache-Status")
# Headers some refusals of a status carry and others not: described inline, per response.
WWW_AUTHENTICATE = "WWW-Authenticate"
RETRY_AFTER = "Retry-After"
INLINE_HEADERS = {
    WWW_AUTHENTICATE: ("An RFC 6750 Bearer challenge.", STRING),
    RETRY_AFTER: ("Seconds to wait before asking again.", INTEGER),
}


def header_refs(names) -> dict:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


# Errors: what each refusal is, from errors.py where the proxy raises it.


@dataclass(frozen=True, eq=False)
class Refusal:
    status: int
    code: str
    when: str
    headers: dict[str, bool] = field(default_factory=dict)  # inline header -> always sent?
    by_app: bool = True  # False: gunicorn answers it, before the app (no X-Request-ID)


def refusal(error: type[APIError], when: str, headers: dict[str, bool] | None = None) -> Refusal:
    return Refusal(error.status_code, error.error_code, when, headers or {})


TOKEN_IN_QUERY = refusal(
    TokenInQueryString, "an `access_token` in the query string", {WWW_AUTHENTICATE: True}
)
INVALID_TOKEN = refusal(
    TokenRejected,
    "no token, or one that is malformed, expired, not yet valid, for another audience or "
    "issuer, not signed RS256 by the tenant, or not a client-credentials token",
    {WWW_AUTHENTICATE: True},
)
INSUFFICIENT_SCOPE = refusal(
    InsufficientScope,
    "the token grants none of the permissions the operation takes",
    {WWW_AUTHENTICATE: True},
)
ACCESS_DENIED = refusal(
    OrganizationDenied,
    "the client is not in the proxy's clients, its token's org_id is not one of its "
    "organizations, or it has several and the token names none",
)
INVALID_QUERY = refusal(
    InvalidQuery, "an unknown, repeated, malformed or out-of-range query parameter"
)
INVALID_PAGING = refusal(InvalidPaging, "a page past the first 1,000 records (page and per_page)")
INVALID_CURSOR = refusal(InvalidCursor, "`since` is not a cursor this proxy gave out")
CURSOR_EXPIRED = refusal(
    ChangesExpired, "the changes since the cursor are no longer kept: sync in full with GET /users"
)
USER_NOT_FOUND = refusal(
    UserNotFound,
    "the user does not exist, was deleted, or is not a member of the caller's organization "
    "(the same answer, so other organizations cannot be probed)",
)
ORG_NOT_FOUND = refusal(
    OrganizationNotFound, "another organization's id (the same answer as for an unknown one)"
)
NO_SUCH_OPERATION = refusal(
    OperationNotAllowed,
    "a path parameter that is empty or a dot-segment, so the path names no operation of the proxy",
)
WRITE_NOT_GRANTED = refusal(
    OperationNotAllowed,
    "the config's `writes` do not grant this client the write, or a role, connection or "
    "application the body names",
)
INVALID_BODY = refusal(
    InvalidBody,
    "a body that is not a JSON object, a field edge clients may not set (named), or an "
    "`app_metadata` key the client's grant does not list",
)
SHARED_USER = refusal(SharedUser, "the user also belongs to another organization")
RATE_LIMITED = refusal(
    TooManyRequests,
    "the client is over its rate limit (x-ratelimit-* say which), or the request needs a call "
    "to Auth0 and the proxy's share of the tenant's rate limit is spent",
    {RETRY_AFTER: True},
)
BAD_GATEWAY = refusal(
    UpstreamFailed,
    "Auth0 answered with an error or in an unexpected shape, or could not be reached; or a "
    "cached list expired while it was read (ask again)",
)
UNAVAILABLE = refusal(
    UpstreamUnavailable,
    "the proxy cannot obtain its management token or the tenant's signing keys (Retry-After "
    "while it waits before asking Auth0 again), or the change feed is not available",
    {RETRY_AFTER: False},
)
TIMEOUT = refusal(UpstreamTimeout, "Auth0 did not answer within the read timeout")
INTERNAL = refusal(APIError, "an unexpected failure of the proxy; the body says no more")
LENGTH_REQUIRED = Refusal(411, "length_required", "a chunked request body (send Content-Length)")
TOO_LARGE = Refusal(413, "request_entity_too_large", "a request body over 1 MiB")
URI_TOO_LONG = Refusal(414, "uri_too_long", "a request line over 4094 bytes", by_app=False)
HEADERS_TOO_LARGE = Refusal(
    431, "request_header_fields_too_large", "header fields over 8190 bytes", by_app=False
)
NOT_FOUND = Refusal(
    404, "not_found", "an id that is empty or a dot-segment, so the path names no route"
)
RELAYED = {
    status: Refusal(
        status,
        "Auth0's",
        "Auth0 refused the request the proxy made for the caller: its answer, as Auth0 worded it",
    )
    for status in (400, 404, 409)
}

ANY_REQUEST = (LENGTH_REQUIRED, TOO_LARGE, URI_TOO_LONG, HEADERS_TOO_LARGE, INTERNAL)
UPSTREAM = (BAD_GATEWAY, UNAVAILABLE, TIMEOUT)
AUTHENTICATED = (
    *ANY_REQUEST,
    TOKEN_IN_QUERY,
    INVALID_TOKEN,
    INSUFFICIENT_SCOPE,
    ACCESS_DENIED,
    RATE_LIMITED,
    *UPSTREAM,
)


# The proxy's own endpoints, by Flask endpoint: paths, methods and path parameters come from
# the app's url_map, descriptions from the views' docstrings.


def answer(description: str, schema: object = None, headers=(), inline=None) -> dict:
    """A success response: its body's schema (marshmallow or JSON Schema), if it has a body,
    and its headers (components named, besides X-Request-ID, and ``inline`` ones)."""
    response: dict = {
        "description": description,
        "headers": {**header_refs(("X-Request-ID", *headers)), **(inline or {})},
    }
    if schema is not None:
        response["content"] = {JSON: {"schema": schema}}
    return response


def auth0_schema(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass(frozen=True)
class Endpoint:
    tag: str
    summary: str
    answers: dict[int, dict]
    refusals: tuple[Refusal, ...]
    query: Schema | None = None
    headers: tuple[dict, ...] = ()
    authenticated: bool = True


IF_NONE_MATCH = {
    "in": "header",
    "name": "If-None-Match",
    "description": "The ETag of the copy the client holds: 304 with no body if it is current.",
    "schema": STRING,
}
CACHE_CONTROL = {
    "in": "header",
    "name": "Cache-Control",
    "description": "`no-cache` asks for a fresh read from Auth0, honoured once per "
    "fresh_read_interval_seconds per client; otherwise the cache answers.",
    "schema": STRING,
}
NOT_MODIFIED = answer(
    "The copy the client holds (If-None-Match) is current: no body, no call to Auth0.",
    headers=FRESHNESS,
    inline={"ETag": header("The answer's entity tag.", STRING, required=True)},
)
READ_HEADERS = (*FRESHNESS, "ETag")
MEMBERS = {
    "anyOf": [
        {"type": "array", "items": MemberSchema},
        MembersOffsetPageSchema,
        MembersPageSchema,
    ]
}
ENDPOINTS = {
    "users.list_users": Endpoint(
        "users",
        "The organization's members",
        {
            200: answer(
                "Without paging: every member (user_id, email, name, picture, or the profile "
                "fields named in `fields`), streamed as one array. With page/per_page: one "
                "page, a bare array or with include_totals `{members, start, limit, total}`; "
                "with take/from: `{members, next}`, `next` absent on the last page.",
                MEMBERS,
                READ_HEADERS,
            ),
            304: NOT_MODIFIED,
        },
        (*AUTHENTICATED, INVALID_QUERY, INVALID_PAGING),
        query=MemberQuerySchema(),
        headers=(IF_NONE_MATCH, CACHE_CONTROL),
    ),
    "users.list_changes": Endpoint(
        "users",
        "Changes to the members since a cursor",
        {200: answer("The changes and the next cursor.", MemberChangesSchema, READ_HEADERS)},
        (*AUTHENTICATED, INVALID_QUERY, INVALID_CURSOR, CURSOR_EXPIRED),
        query=ChangesQuerySchema(),
    ),
    "users.get_user": Endpoint(
        "users",
        "A member's profile",
        {
            200: answer(
                "The member's Auth0 profile, identity-provider tokens removed.",
                auth0_schema("GetUserResponseContent"),
                READ_HEADERS,
            ),
            304: NOT_MODIFIED,
        },
        (*AUTHENTICATED, USER_NOT_FOUND, NOT_FOUND),
        headers=(IF_NONE_MATCH, CACHE_CONTROL),
    ),
    "health.healthz": Endpoint(
        "health",
        "Liveness",
        {200: answer("Alive.", HealthSchema)},
        ANY_REQUEST,
        authenticated=False,
    ),
    "health.readyz": Endpoint(
        "health",
        "Readiness",
        {200: answer("Ready.", ReadinessSchema)},
        (*ANY_REQUEST, RATE_LIMITED, *UPSTREAM),
        authenticated=False,
    ),
    "openapi.openapi_json": Endpoint(
        "meta",
        "This OpenAPI document",
        {200: answer("The OpenAPI 3.1 document.", {"type": "object"})},
        ANY_REQUEST,
        authenticated=False,
    ),
}
TAGS = [
    {"name": "users", "description": "The members of the caller's organization."},
    {
        "name": "management-api",
        "description": "A part of Auth0's Management API, for the caller's organization only, "
        "so edge servers keep their Auth0 SDK. Any other method or path under /api/v2 is 403 "
        "`operation_not_allowed`, answered before the token is read.",
    },
    {"name": "health", "description": "Probes for load balancers; no token."},
    {"name": "meta", "description": "This document; no token."},
]
USER_ID = "A member's user id (URL-encoded: Auth0 ids hold `|`)."


# The /api/v2 surface: one operation per rule of pipeline.RULES.

# What an operation's own refusals (a rule's ``refuses``) mean, by error.
OPERATION_REFUSALS = {SharedUser: SHARED_USER}
PATH_PARAMETERS = {
    "id": "The caller's organization id.",
    "user_id": USER_ID,
    "invitation_id": "An invitation of the caller's organization.",
}
QUERY_PARAMETERS = {
    "page": "Offset paging: the page, from 0 (offset paging reaches the first 1,000 records).",
    "per_page": "Offset paging: records per page (default 50).",
    "include_totals": "Offset paging: answer an object with the page and its start, limit and "
    "total instead of a bare array.",
    "take": "Checkpoint paging: records per page (default 50).",
    "from": "Checkpoint paging: the previous page's `next`.",
    "fields": "The fields to include, comma-separated (Auth0's field names).",
    "include_fields": "Whether `fields` names the fields to include (true) or to leave out.",
    "q": "`email:` and `user_id:` terms (quoted or not) joined by OR; no other search.",
    "search_engine": "Auth0's search engine: v3.",
    "email": "The email, exactly (case-sensitive).",
    "sort": "Auth0's sort, e.g. `created_at:1`.",
    "since": "The `cursor` of the last answer; leave it out for the cursor to start from.",
}


def api_operation(rule: Rule, converter) -> tuple[str, str, dict]:
    """The path, method and operation of one rule."""
    auth0 = auth0_spec()["operations"][f"{rule.method} {rule.template}"]
    parameters = [
        path_parameter(name, USER_ID if rule.org is Org.MEMBER else PATH_PARAMETERS[name])
        for name in re.findall(r"{(\w+)}", rule.template)
    ]
    parameters += query_parameters(converter, api_query_schema(rule.query))
    permissions = rule.scopes
    answers = {
        int(status): answer(
            "Auth0's answer." if schema is not None else "Done.",
            schema,
            () if rule.write else FRESHNESS,
        )
        for status, schema in auth0["responses"].items()
    }
    grant = "A write, only for a client the config's `writes` grants it (an audit line each). "
    operation = {
        "tags": ["management-api"],
        "operationId": auth0["operationId"],
        "summary": auth0["summary"],
        "description": f"{first_paragraph(rule.handler)} Organization: {org_rule(rule.org)}. "
        + (grant if rule.write else "")
        + "Needs "
        + " or ".join(f"`{p}`" for p in dict.fromkeys(permissions))
        + " in the token.",
        "parameters": parameters,
        "responses": responses(answers, api_refusals(rule), authenticated=True),
        "security": [{SECURITY_SCHEME: [p]} for p in dict.fromkeys(permissions)],
        "x-permission": rule.permission,
        "x-writes": rule.write,
    }
    if rule.body is not None:
        body = {JSON: {"schema": rule.body}}
        operation["requestBody"] = {"required": True, "content": body}
    return PREFIX + rule.template, rule.method.lower(), operation


def api_refusals(rule: Rule) -> tuple[Refusal, ...]:
    """What an /api/v2 operation may refuse, from its rule."""
    found = [*AUTHENTICATED, INVALID_QUERY, NO_SUCH_OPERATION]
    if "page" in rule.query:
        found.append(INVALID_PAGING)
    if rule.org in (Org.OWN, Org.OWN_MEMBER):
        found.append(ORG_NOT_FOUND)
    if rule.org in (Org.OWN_MEMBER, Org.MEMBER):
        found.append(USER_NOT_FOUND)
    if rule.write:
        found.append(WRITE_NOT_GRANTED)
    if rule.body is not None:
        found.append(INVALID_BODY)
    found += [OPERATION_REFUSALS[error] for error in rule.refuses]
    found += [RELAYED[status] for status in rule.relays]
    return tuple(found)


def org_rule(org: Org) -> str:
    """How the rule keeps the caller within its organization, in words."""
    return org.value.replace("as OWN", Org.OWN.value)


def api_query_schema(names: tuple[str, ...]) -> Schema | None:
    """The part of the /api/v2 query schema an operation takes."""
    if not names:
        return None
    attributes = {field.data_key or name: name for name, field in QUERY_SCHEMA.fields.items()}
    return QuerySchema(only=[attributes[name] for name in names])


# Assembly.


def build_document(app: Flask) -> dict:
    """The OpenAPI document of ``app``: its own endpoints, then one operation per /api/v2 rule."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="auth0-m2m-proxy",
        version=__version__,
        openapi_version="3.1.0",
        plugins=[plugin],
        info={
            "description": "Lets each edge client read only the users of its own Auth0 "
            "Organization: the proxy's own /users endpoints, and a part of Auth0's Management "
            "API at /api/v2 for the caller's organization only. Every error is JSON in the "
            "Management API's shape (the Error schema).",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        tags=TAGS,
    )
    audience = app.config["SETTINGS"].auth0.api_audience
    spec.components.security_scheme(
        SECURITY_SCHEME,
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token the tenant issued for the proxy's API (audience "
            f"`{audience}`) by the client-credentials grant: RS256, granting `read:users` or "
            "the operation's own permission (the roles of each security requirement).",
        },
    )
    for name, definition in HEADERS.items():
        spec.components.header(name, definition)
    spec.components.schema("Error", schema=ErrorSchema)
    for name, schema in auth0_spec()["schemas"].items():
        spec.components.schema(name, schema)
    for rule in app.url_map.iter_rules():
        endpoint = ENDPOINTS.get(rule.endpoint)
        if endpoint is None:  # /api/v2 (below), or a route without docs: tests/test_openapi.py
            continue
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        operation = proxy_operation(app, rule.endpoint, endpoint, rule.arguments, plugin.converter)
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        spec.path(path=path, operations={method.lower(): operation for method in methods})
    for rule in RULES:
        path, method, operation = api_operation(rule, plugin.converter)
        spec.path(path=path, operations={method: operation})
    return shared_responses(spec.to_dict())


def proxy_operation(app: Flask, name: str, endpoint: Endpoint, arguments, converter) -> dict:
    parameters = [path_parameter(argument, USER_ID) for argument in sorted(arguments)]
    parameters += query_parameters(converter, endpoint.query)
    operation = {
        "tags": [endpoint.tag],
        "operationId": name.replace(".", "_"),
        "summary": endpoint.summary,
        "description": first_paragraph(app.view_functions[name]),
        "parameters": [*parameters, *endpoint.headers],
        "responses": responses(endpoint.answers, endpoint.refusals, endpoint.authenticated),
        "security": [{SECURITY_SCHEME: [READ_ANY]}] if endpoint.authenticated else [],
    }
    if endpoint.authenticated:
        operation["x-permission"] = READ_ANY
    return operation


def path_parameter(name: str, description: str) -> dict:
    return {
        "in": "path",
        "name": name,
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


def query_parameters(converter, schema: Schema | None) -> list[dict]:
    if schema is None:
        return []
    parameters = converter.schema2parameters(schema, location="query")
    for parameter in parameters:
        parameter["description"] = QUERY_PARAMETERS[parameter["name"]]
        if parameter["name"] in EMAIL:  # GET /users-by-email: the handler needs it
            parameter["required"] = True
    return parameters


def responses(answers: dict[int, dict], refusals: tuple[Refusal, ...], authenticated: bool) -> dict:
    """The operation's answers and, per status, the refusals it may give, in one response:
    codes and when in its description, the Error schema its body. Once the token has named its
    client, any answer may carry the client's rate limit headers."""
    limits = header_refs(RATE_LIMIT_HEADERS) if authenticated else {}
    found = {
        str(status): {**response, "headers": {**response["headers"], **limits}}
        for status, response in answers.items()
    }
    by_status: dict[int, list[Refusal]] = {}
    for refused in refusals:
        group = by_status.setdefault(refused.status, [])
        if refused not in group:
            group.append(refused)
    for status, group in by_status.items():
        inline = {}
        for name in dict.fromkeys(name for refused in group for name in refused.headers):
            description, schema = INLINE_HEADERS[name]
            always = all(refused.headers.get(name) for refused in group)
            inline[name] = header(description, schema, required=always)
        by_app = all(refused.by_app for refused in group)
        lines = dict.fromkeys(f"`{refused.code}`: {refused.when}" for refused in group)
        found[str(status)] = {
            "description": f"{HTTP_STATUS_CODES[status]}. " + "; ".join(lines) + ".",
            "headers": {**(header_refs(["X-Request-ID"]) | limits if by_app else {}), **inline},
            "content": {JSON: {"schema": auth0_schema("Error")}},
        }
    return dict(sorted(found.items()))


def shared_responses(document: dict) -> dict:
    """The document with each response that several operations give alike moved to
    components.responses, named for its status."""
    operations = [op for item in document["paths"].values() for op in item.values()]
    seen = Counter(_canonical(r) for op in operations for r in op["responses"].values())
    names: dict[str, str] = {}
    shared: dict[str, dict] = {}
    for op in operations:
        for status, response in op["responses"].items():
            key = _canonical(response)
            if seen[key] < 2:
                continue
            if key not in names:
                base = HTTP_STATUS_CODES[int(status)].title().replace(" ", "").replace("'", "")
                name, n = base, 1
                while name in shared:
                    n += 1
                    name = f"{base}{n}"
                names[key], shared[name] = name, response
            op["responses"][status] = {"$ref": f"#/components/responses/{names[key]}"}
    document["components"]["responses"] = dict(sorted(shared.items()))
    return document


@functools.cache
def auth0_spec() -> dict:
    """What the document takes from Auth0's published spec (see the file's $comment)."""
    text = resources.files(__package__).joinpath("auth0_response_schemas.json").read_text("utf-8")
    return json.loads(text)


def first_paragraph(function) -> str:
    """A docstring's first paragraph, on one line, in Markdown."""
    text = (inspect.getdoc(function) or "").split("\n\n")[0]
    return " ".join(text.split()).replace("``", "`")


def _canonical(response: dict) -> str:
    return json.dumps(response, sort_keys=True)
