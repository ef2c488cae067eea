"""The configuration from the environment: every key of config.json is also an environment
variable, which wins over the file, and can be read from a file the variable ``<NAME>_FILE``
names (a secret mounted from a Kubernetes or Docker secret).

A key's variable is ``AUTH0_PROXY_`` and its path in config.json, upper-cased and joined by
``_``: ``auth0.domain`` is ``AUTH0_PROXY_AUTH0_DOMAIN``, ``proxy.cache_ttl_seconds`` is
``AUTH0_PROXY_PROXY_CACHE_TTL_SECONDS``. A map (``clients``, ``writes``, ``budget.limits``,
``rate_limits.clients``) is one variable holding its JSON. The names are made from the schema,
so every key has one and no two keys share one. ``AUTH0_MGMT_CLIENT_SECRET``, the older name
of the management secret, still works below the new one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from marshmallow import Schema, fields, missing

PREFIX = "AUTH0_PROXY_"
FILE_SUFFIX = "_FILE"
# Older names, weaker than the key's own variable.
ALIASES = {"AUTH0_MGMT_CLIENT_SECRET": ("auth0", "mgmt_client_secret")}
# Never shown, wherever they come from (the Redis URL is shown without its credentials).
SECRETS = frozenset(
    {
        ("auth0", "mgmt_client_secret"),
        ("proxy", "cache_redis_sentinel_password"),
        ("events", "webhook_token"),
    }
)


class VariableError(ValueError):
    """A variable that cannot be read: its file is missing, or it is set twice."""


@dataclass(frozen=True)
class Variable:
    """The environment variable of one key of config.json: its name, the key's path, and
    whether its value is JSON (a number, a boolean, a map) or text."""

    name: str
    path: tuple[str, ...]
    json: bool
    default: object = None  # the schema's, where it is a plain value

    @property
    def key(self) -> str:
        return ".".join(self.path)


def variables(schema: Schema) -> list[Variable]:
    """A variable for each key of the configuration, in the schema's order."""
    return list(_walk(schema, ()))


def _walk(schema: Schema, path: tuple[str, ...]) -> Iterator[Variable]:
    for name, field in schema.fields.items():
        here = (*path, field.data_key or name)
        if isinstance(field, fields.Nested) and not field.many:
            yield from _walk(field.schema, here)
        else:
            text = isinstance(field, fields.String)
            default = field.load_default
            plain = default is not missing and not callable(default)
            yield Variable(
                PREFIX + "_".join(here).upper(), here, not text, default if plain else None
            )


def overlay(
    data: Mapping, environ: Mapping[str, str], schema: Schema
) -> tuple[dict, dict[str, str]]:
    """``data`` (the file's) with every key the environment sets put in, and where each of
    those came from (key: variable name).

    :raise VariableError: a variable's file cannot be read, or both it and its file are set.
    """
    merged, origins = copy.deepcopy(dict(data)), {}
    aliased = [Variable(name, path, json=False) for name, path in ALIASES.items()]
    for variable in [*aliased, *variables(schema)]:
        found = _read(variable.name, environ)
        if found is None:
            continue
        text, origin = found
        _put(merged, variable.path, _parsed(text) if variable.json else text)
        origins[variable.key] = origin
    return merged, origins


def configured(environ: Mapping[str, str], schema: Schema) -> bool:
    """Whether the environment sets any key by its own variable (so no config file is
    needed; the older secret variable alone is not a configuration)."""
    names = [variable.name for variable in variables(schema)]
    return any(name in environ or name + FILE_SUFFIX in environ for name in names)


def _read(name: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    path = environ.get(name + FILE_SUFFIX)
    if path is None:
        return (environ[name], name) if name in environ else None
    if name in environ:
        raise VariableError(f"{name} and {name}{FILE_SUFFIX} are both set; set one")
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n"), name + FILE_SUFFIX
    except OSError as error:
        raise VariableError(
            f"{name}{FILE_SUFFIX}: cannot read {path!r}: {error.strerror}"
        ) from None


def _parsed(text: str) -> object:
    """JSON where it is JSON; else the text, for the schema to refuse in its own words."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _put(data: dict, path: tuple[str, ...], value: object) -> None:
    for key in path[:-1]:
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data = data[key]
    data[path[-1]] = value
