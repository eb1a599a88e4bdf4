"""Read ``Pulumi.yaml`` and ``Pulumi.<stack>.yaml`` the way the Pulumi CLI hands them to a program.

The SDK never reads these files (the CLI does), so the offline plan merges them itself: project
defaults first, then the stack's values; keys without a namespace belong to the project; values
become strings (objects as JSON); ``secure:`` values, which cannot be decrypted offline, become
placeholder secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SECRET_PLACEHOLDER = "offline-placeholder-secret"


class StackFileError(Exception):
    """A project or stack file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    config: dict[str, str]
    secret_keys: list[str]


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: PyYAML's str() spans several lines (context, a caret picture)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _read_yaml(path: Path, empty_ok: bool = False) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StackFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise StackFileError(f"{path}: is a directory, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise StackFileError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:  # permissions, a dangling link, ...
        raise StackFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StackFileError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        found = "nothing (an empty file)" if data is None else _kind(data)
        raise StackFileError(f"{path}: expected a mapping at the top level, found {found}")
    return data


def _as_config_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _qualify(project: str, key: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def project_defaults(project_file: Path) -> tuple[str, dict[str, Any]]:
    """The project name and its config defaults (``default:`` of a schema, or ``value:``)."""
    data = _read_yaml(project_file)
    project = data.get("name")
    if not isinstance(project, str):
        raise StackFileError(f"{project_file}: missing project `name`")
    defaults: dict[str, Any] = {}
    for key, declaration in (data.get("config") or {}).items():
        if isinstance(declaration, dict) and "value" in declaration:
            defaults[_qualify(project, key)] = declaration["value"]
        elif isinstance(declaration, dict) and "default" in declaration:
            defaults[_qualify(project, key)] = declaration["default"]
        elif not isinstance(declaration, dict):
            defaults[_qualify(project, key)] = declaration
    return project, defaults


def load_stack_config(project_file: Path, stack_file: Path, stack: str) -> StackConfig:
    """Merge project defaults with a stack file into the string map a Pulumi program receives."""
    project, merged = project_defaults(project_file)
    # An empty stack file is a stack without config, as for the Pulumi CLI ("for example when reading
    # an empty stack file": https://github.com/pulumi/pulumi/blob/master/sdk/go/common/workspace/loaders.go).
    stack_data = _read_yaml(stack_file, empty_ok=True)
    config = stack_data.get("config") or {}
    if not isinstance(config, dict):
        raise StackFileError(f"{stack_file}: `config` must be a mapping of key: value, found {_kind(config)}")
    secret_keys: list[str] = []
    for key, value in config.items():
        if not isinstance(key, str):
            raise StackFileError(f"{stack_file}: config key {key!r} must be a string such as "
                                 f"`{project}:servingReplicas`, found {_kind(key)}")
        full_key = _qualify(project, key)
        if isinstance(value, dict) and set(value) == {"secure"}:
            value = SECRET_PLACEHOLDER
            secret_keys.append(full_key)
        merged[full_key] = value
    return StackConfig(project=project, stack=stack,
                       config={k: _as_config_string(v) for k, v in merged.items()},
                       secret_keys=secret_keys)
