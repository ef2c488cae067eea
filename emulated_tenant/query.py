"""Query and path validation driven by the excerpt of Auth0's published OpenAPI spec.

Auth0 validates every Management API request against that schema and answers 400
``invalid_query_string`` for unknown parameters, wrong types and out-of-range values. Reading the
rules from the spec (rather than restating them here) keeps the emulator exactly as strict as the
real API for the operations it implements. (Request bodies: payload.py, from the same excerpt.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .errors import Auth0Error, query_error
from .routing import HTTP_METHODS, MANAGEMENT_PREFIX

SPEC_PATH = Path(__file__).with_name("management_api_spec.json")
_INTEGER = re.compile(r"-?\d+")
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Operation:
    """What the spec says about one operation: its parameters, accepted scopes and (for a write)
    its JSON request body's schema, every ``$ref`` inlined."""

    endpoint: str
    path_schemas: dict[str, dict[str, Any]]
    query_schemas: dict[str, dict[str, Any]]
    scopes: tuple[str, ...]
    required_query: tuple[str, ...] = ()
    body_schema: dict[str, Any] | None = None


class SchemaViolation(Exception):
    """A value broke one rule of its schema; the message is Auth0's wording for that rule."""


@cache
def load_spec(spec_path: Path = SPEC_PATH) -> dict[str, Any]:
    """The excerpt, parsed once and shared: read it, never change it."""
    return json.loads(spec_path.read_text(encoding="utf-8"))


@cache
def operations(spec_path: Path = SPEC_PATH) -> dict[str, Operation]:
    """Every operation of the excerpt, keyed like ``"GET /api/v2/users/{id}"``."""
    spec = load_spec(spec_path)
    found = {}
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method.lower() in item:
                endpoint = f"{method} {MANAGEMENT_PREFIX}{path}"
                found[endpoint] = _operation(spec, endpoint, item[method.lower()])
    return found


def validate_path(operation: Operation, params: dict[str, str]) -> None:
    """:raise 400 invalid_uri: when a path parameter breaks its schema (e.g. org id > 50 chars)."""
    for name, value in params.items():
        try:
            _check(value, operation.path_schemas.get(name, {}))
        except SchemaViolation as violation:
            message = f"Path validation error: '{violation}' on property {name}."
            raise Auth0Error(400, message, "invalid_uri") from None


def validate_query(operation: Operation, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The query as typed values; an array parameter (``style: form``, exploded, as
    ``event_type=a&event_type=b``) as the list of its values.

    :raise 400 invalid_query_string: unknown or repeated parameter, wrong type, out of range,
        too long, pattern or enum mismatch, a required parameter missing.
    """
    values: dict[str, Any] = {}
    for name, raw in pairs:
        schema = operation.query_schemas.get(name)
        if schema is None:
            raise query_error(
                f"Query validation error: 'Additional properties not allowed: {name}'."
            )
        if schema.get("type") == "array":
            values.setdefault(name, []).append(_checked(name, raw, schema.get("items", {})))
            continue
        if name in values:
            expected = schema.get("type", "string")
            raise _violation(name, f"Expected type {expected} but found type array")
        values[name] = _checked(name, raw, schema)
    for name in operation.required_query:
        if name not in values:
            raise query_error(f"Query validation error: 'Missing required property: {name}'.")
    return values


def _checked(name: str, raw: str, schema: dict[str, Any]) -> Any:
    """:raise 400 invalid_query_string: ``raw`` breaks the parameter's schema."""
    try:
        return _check(raw, schema)
    except SchemaViolation as violation:
        raise _violation(name, str(violation)) from None


def _violation(name: str, rule: str) -> Auth0Error:
    return query_error(f"Query validation error: '{rule}' on property {name}.")


def _operation(spec: dict[str, Any], endpoint: str, details: dict[str, Any]) -> Operation:
    schemas: dict[str, dict[str, dict[str, Any]]] = {"path": {}, "query": {}}
    required = []
    for parameter in details.get("parameters", []):
        schemas[parameter["in"]][parameter["name"]] = inline_refs(spec, parameter.get("schema", {}))
        if parameter["in"] == "query" and parameter.get("required"):
            required.append(parameter["name"])
    scopes = tuple(
        scope
        for requirement in details.get("security", [])
        for scope in requirement.get("oAuth2ClientCredentials", [])
    )
    body = details.get("requestBody", {}).get("content", {}).get("application/json")
    body_schema = inline_refs(spec, body["schema"]) if body else None
    return Operation(
        endpoint, schemas["path"], schemas["query"], scopes, tuple(required), body_schema
    )


def inline_refs(spec: dict[str, Any], node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by its target (Auth0's schemas are acyclic)."""
    if isinstance(node, dict):
        return {key: inline_refs(spec, value) for key, value in _resolve(spec, node).items()}
    if isinstance(node, list):
        return [inline_refs(spec, item) for item in node]
    return node


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref``s such as ``#/components/schemas/SearchEngineVersionsEnum``."""
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _check(raw: str, schema: dict[str, Any]) -> Any:
    """Coerce a query-string value to the schema's type, then apply its constraints."""
    value = _coerce(raw, schema.get("type", "string"))
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaViolation(f"No enum match for: {json.dumps(value)}")
    if isinstance(value, str):
        check_string(value, schema)
    elif not isinstance(value, bool):
        check_number(value, schema)
    return value


def _coerce(raw: str, expected: str) -> Any:
    if expected == "integer" and _INTEGER.fullmatch(raw):
        return int(raw)
    if expected == "number" and _NUMBER.fullmatch(raw):
        return float(raw)
    if expected == "boolean" and raw in ("true", "false"):
        return raw == "true"
    if expected == "string":
        return raw
    raise SchemaViolation(f"Expected type {expected} but found type string")


def check_string(value: str, schema: dict[str, Any]) -> None:
    """:raise SchemaViolation: too long, too short, or not matching the pattern."""
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        maximum = schema["maxLength"]
        raise SchemaViolation(f"String is too long ({len(value)} chars), maximum {maximum}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        minimum = schema["minLength"]
        raise SchemaViolation(f"String is too short ({len(value)} chars), minimum {minimum}")
    pattern = schema.get("pattern")
    if pattern and not _ecma_pattern(pattern).search(value):
        raise SchemaViolation(f"String does not match pattern {pattern}: {value}")


def check_number(value: float, schema: dict[str, Any]) -> None:
    """:raise SchemaViolation: below the minimum or above the maximum."""
    if "minimum" in schema and value < schema["minimum"]:
        raise SchemaViolation(f"Value {value} is less than minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise SchemaViolation(f"Value {value} is greater than maximum {schema['maximum']}")


@cache
def _ecma_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a JSON-Schema (ECMA 262) pattern; its ``$`` does not match before a final newline."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)
