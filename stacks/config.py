"""Turn raw Pulumi config (strings) into validated ``StackSettings``, or one clear error.

Pulumi hands a program every config value as a string (objects as JSON). This module reads
all keys of the project's namespace, decodes each according to the type the settings declare,
and validates them together, so a typo'd key is an error instead of a silently used default.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from stacks.settings import PROJECT, FieldProblem, StackSettings


class ConfigError(Exception):
    """Invalid stack configuration; ``str()`` is the message shown to the user (no traceback)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"invalid stack configuration ({len(problems)} {noun}):\n"
                         + "\n".join(f"  - {p}" for p in problems))


def _field(model: Any, alias: str) -> Any:
    """The pydantic field of ``model`` whose config key is ``alias``, or None."""
    return next((f for f in model.model_fields.values() if f.alias == alias), None)


def _is_plain_string(alias: str) -> bool:
    """Whether the settings declare this key as a string (then its raw text is the value)."""
    field = _field(StackSettings, alias)
    return field is not None and field.annotation is str


_YAML_SCALARS = ("null", "true", "false")
"""What the CLI hands over for an unquoted YAML ``null``, ``true`` or ``false``: never a name, so a string key
holding one is decoded (and refused as not a string) instead of naming a cluster or namespace "null"."""


def decode_config(raw: Mapping[str, str], namespace: str = PROJECT) -> dict[str, Any]:
    """Pick the keys of ``namespace`` out of ``raw`` (``ns:key -> str``) and decode their values.

    Strings declared as ``str`` stay as they are (``1.30`` is a version, not a float), except the texts
    null, true and false, which are YAML's null and booleans; anything else is parsed as JSON, and left
    as text when it is not JSON so validation reports its type.
    """
    values: dict[str, Any] = {}
    prefix = f"{namespace}:"
    for full_key, text in raw.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        if not isinstance(text, str) or (_is_plain_string(key) and text not in _YAML_SCALARS):
            values[key] = text
            continue
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def _format_value(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _problem(error: Any, namespace: str) -> str:
    loc = [str(part) for part in error["loc"]]
    value: Any = error.get("input")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblem):
        if not loc or loc[-1] != cause.field:
            loc.append(cause.field)
        value, allowed = cause.value, f"expected {cause.allowed}"
    elif error["type"] == "extra_forbidden":
        allowed = "unknown key; expected one of" + _known_keys(loc[:-1])
    elif error["type"] == "missing":
        value, allowed = None, "expected a value (this key is required)"
    elif error["type"] == "value_error":
        allowed = "expected " + error["msg"].removeprefix("Value error, ")
    elif error["type"] == "string_type" and (value is None or isinstance(value, bool)):
        allowed = ("expected a string (an unquoted YAML null, true or false is no name: set a name, or remove "
                   "the key for its default)")
    else:
        allowed = error["msg"]
    key = f"{namespace}:{'.'.join(loc)}" if loc else namespace
    return f"{key} = {_format_value(value)}: {allowed}"


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _known_keys(parent: list[str]) -> str:
    """Names the keys allowed beside an unknown one, so the fix is obvious.

    Walks ``parent`` (the error's location) through the types: a model field consumes its key; a map
    (``servers``, ``nodePools``) consumes one more element, its key, whatever it is called (a server named
    ``cpu`` is not the field ``cpu``); a list consumes an index.
    """
    current: Any = StackSettings
    parts = list(parent)
    while parts:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if origin is dict:
            parts.pop(0)
            current = typing.get_args(current)[1]
        elif origin is list:
            parts.pop(0)
            current = typing.get_args(current)[0]
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = _field(current, parts.pop(0))
            if field is None:
                return ""
            current = field.annotation
        else:
            return ""
    current = _unwrap(current)
    fields = getattr(current, "model_fields", None) if isinstance(current, type) else None
    if not fields:
        return ""
    return " " + ", ".join(sorted(f.alias or n for n, f in fields.items()))


def parse_settings(raw: Mapping[str, str], namespace: str = PROJECT) -> StackSettings:
    """Validate raw config; raise ``ConfigError`` naming every bad key, value and what is allowed."""
    values = decode_config(raw, namespace)
    try:
        return StackSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError([_problem(e, namespace) for e in exc.errors()]) from None


def load_settings() -> StackSettings:
    """Read the running Pulumi program's config (CLI or mock engine) and validate it."""
    from pulumi.runtime import config as runtime_config

    raw: dict[str, str] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    return parse_settings(raw)
