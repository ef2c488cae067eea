"""Request-body validation driven by the operation's ``requestBody`` schema in the spec excerpt.

Auth0 checks a write's JSON body against its published schema before anything else, and answers
400 ``invalid_body`` with the first rule broken, worded as its validator words it: ``Payload
validation error: 'Missing required property: roles'.`` at the top level, ``... on property
invitee.`` (or ``invitee.email``) below it. Like query.py, the rules come from the spec; only the
JSON Schema keywords Auth0's schemas use are understood.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from flask import Request

from .errors import invalid_body, payload_error
from .query import Operation, SchemaViolation, check_number, check_string

# Auth0's own formats (client-id, role-id, user-id-with-max-length, ...) are not published, so
# only the standard one its write schemas use is checked.
_FORMATS = {"email": re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")}


class BodyViolation(Exception):
    """A body broke one rule of its schema at ``path`` (``""`` for the body itself)."""

    def __init__(self, rule: str, path: str = "") -> None:
        super().__init__(rule)
        self.rule = rule
        self.path = path


def request_body(request: Request) -> Any:
    """The decoded body: JSON, or a form (the spec allows both); None when there is none.

    :raise 400 invalid_body: a body that is not JSON (hapi's message, which Auth0 passes on).
    """
    raw = request.get_data(cache=True)
    if not raw.strip():
        return None
    if request.mimetype == "application/x-www-form-urlencoded":
        return request.form.to_dict()
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid_body("Invalid request payload JSON format") from None


def validate_body(operation: Operation, body: Any) -> Any:
    """``body`` unchanged if it satisfies the operation's request schema.

    :raise 400 invalid_body: the first rule it breaks.
    """
    if operation.body_schema is None:
        return body
    try:
        check_value(body, operation.body_schema)
    except BodyViolation as violation:
        raise payload_error(violation.rule, violation.path) from None
    return body


def check_value(value: Any, schema: Mapping[str, Any], path: str = "") -> None:
    """:raise BodyViolation: the first rule of ``schema`` (refs inlined) that ``value`` breaks."""
    if "oneOf" in schema:
        _check_one_of(value, schema["oneOf"], path)
    if "type" in schema:
        _check_type(value, schema["type"], path)
    if "enum" in schema and value not in schema["enum"]:
        raise BodyViolation(f"No enum match for: {json.dumps(value)}", path)
    if isinstance(value, dict):
        _check_object(value, schema, path)
    elif isinstance(value, list):
        _check_array(value, schema, path)
    elif isinstance(value, str):
        _check_string(value, schema, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_scalar(check_number, value, schema, path)


def json_type(value: Any) -> str:
    """The JSON type name Auth0's messages use (an integral number is an ``integer``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    names = {float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "object")


def _check_type(value: Any, expected: str | list[str], path: str) -> None:
    allowed = [expected] if isinstance(expected, str) else list(expected)
    found = json_type(value)
    if found in allowed or (found == "integer" and "number" in allowed):
        return
    raise BodyViolation(f"Expected type {','.join(allowed)} but found type {found}", path)


def _check_object(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> None:
    for name in schema.get("required", []):
        if name not in value:
            raise BodyViolation(f"Missing required property: {name}", path)
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    unknown = [name for name in value if name not in properties]
    if extra is False and unknown:
        raise BodyViolation(f"Additional properties not allowed: {','.join(unknown)}", path)
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        maximum = schema["maxProperties"]
        raise BodyViolation(f"Too many properties defined ({len(value)}), maximum {maximum}", path)
    for name, item in value.items():
        item_schema = properties.get(name, extra if isinstance(extra, dict) else {})
        check_value(item, item_schema, f"{path}.{name}" if path else name)


def _check_array(value: list[Any], schema: Mapping[str, Any], path: str) -> None:
    length = len(value)
    if "minItems" in schema and length < schema["minItems"]:
        raise BodyViolation(f"Array is too short ({length}), minimum {schema['minItems']}", path)
    if "maxItems" in schema and length > schema["maxItems"]:
        raise BodyViolation(f"Array is too long ({length}), maximum {schema['maxItems']}", path)
    for index, item in enumerate(value):
        check_value(item, schema.get("items", {}), f"{path}[{index}]")


def _check_string(value: str, schema: Mapping[str, Any], path: str) -> None:
    _check_scalar(check_string, value, schema, path)
    pattern = _FORMATS.get(schema.get("format", ""))
    if pattern is not None and not pattern.fullmatch(value):
        raise BodyViolation(
            f"Object didn't pass validation for format {schema['format']}: {value}", path
        )


def _check_scalar(check: Any, value: Any, schema: Mapping[str, Any], path: str) -> None:
    try:
        check(value, schema)
    except SchemaViolation as violation:
        raise BodyViolation(str(violation), path) from None


def _check_one_of(value: Any, branches: list[Mapping[str, Any]], path: str) -> None:
    matches = 0
    for branch in branches:
        try:
            check_value(value, branch, path)
        except BodyViolation:
            continue
        matches += 1
    if matches != 1:
        raise BodyViolation(f"Data matches {matches} schemas of oneOf, expected exactly 1", path)
