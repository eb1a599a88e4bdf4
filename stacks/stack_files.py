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


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StackFileError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise StackFileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise StackFileError(f"{path}: expected a mapping at the top level")
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
    stack_data = _read_yaml(stack_file)
    secret_keys: list[str] = []
    for key, value in (stack_data.get("config") or {}).items():
        full_key = _qualify(project, key)
        if isinstance(value, dict) and set(value) == {"secure"}:
            value = SECRET_PLACEHOLDER
            secret_keys.append(full_key)
        merged[full_key] = value
    return StackConfig(project=project, stack=stack,
                       config={k: _as_config_string(v) for k, v in merged.items()},
                       secret_keys=secret_keys)
