"""The config reference, derived from ``StackSettings`` (single source of truth).

``python -m stacks docs`` prints the README's config table; tests check that the README and
``Pulumi.yaml`` agree with it.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from stacks.monitoring_settings import AlertSettings, Monitoring
from stacks.serving_settings import Batching, Exposure
from stacks.settings import Model, NodePool, Server, StackSettings, Taint

_PULUMI_TYPES = {str: "string", bool: "boolean", int: "integer", list: "array"}


@dataclass(frozen=True)
class ConfigKey:
    key: str
    pulumi_type: str | None
    """``string``/``boolean``/``integer``/``array``, or None for objects (declared with ``value:``)."""
    item_type: str | None
    default: Any
    description: str
    required: bool = False


def _pulumi_type(annotation: Any) -> tuple[str | None, str | None]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if type(None) in typing.get_args(annotation) and len(args) == 1:  # Optional[X] -> X
        annotation = args[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "string", None
    if origin is list:
        (item,) = typing.get_args(annotation)
        item_origin = typing.get_origin(item)
        if item_origin is typing.Annotated:
            item = typing.get_args(item)[0]
        if typing.get_origin(item) is typing.Literal:
            return "array", "string"
        return "array", _PULUMI_TYPES.get(item)
    return _PULUMI_TYPES.get(annotation), None


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_defaults=True)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def config_keys(model: type[BaseModel] = StackSettings) -> list[ConfigKey]:
    keys = []
    for name, field in model.model_fields.items():
        pulumi_type, item_type = _pulumi_type(field.annotation)
        required = field.is_required()
        default = None if required else _jsonable(field.get_default(call_default_factory=True))
        keys.append(ConfigKey(field.alias or name, pulumi_type, item_type, default,
                              field.description or "", required))
    return keys


def markdown_table(model: type[BaseModel] = StackSettings) -> str:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key in config_keys(model):
        type_name = key.pulumi_type or "object"
        if key.item_type:
            type_name = f"array of {key.item_type}"
        default = "required" if key.required else f"`{json.dumps(key.default)}`"
        if len(default) > 60:
            default = "see `Pulumi.yaml`"
        rows.append(f"| `{key.key}` | {type_name} | {default} | {key.description.replace('|', '/')} |")
    return "\n".join(rows)


def reference_markdown() -> str:
    """The whole config reference section of the README."""
    return "\n\n".join([
        "Top-level keys (namespace `tfserving-platform:`):", markdown_table(StackSettings),
        "Each entry of `nodePools` (key = pool name):", markdown_table(NodePool),
        "Each entry of a pool's `taints`:", markdown_table(Taint),
        "Each entry of `servers` (key = server name; Kubernetes objects are named `tfserving-<key>`):",
        markdown_table(Server),
        "Each entry of a server's `models` (key = model name, unique across servers):", markdown_table(Model),
        "A server's `batching`:", markdown_table(Batching),
        "`exposure`:", markdown_table(Exposure),
        "`monitoring`:", markdown_table(Monitoring),
        "`monitoring.alerts`:", markdown_table(AlertSettings),
    ])


README_START = "Top-level keys (namespace `tfserving-platform:`):"
README_END = "Cross-field rules:"


def pulumi_yaml_config() -> dict[str, dict]:
    """The ``config:`` block of Pulumi.yaml: every key with type, description and default."""
    block: dict[str, dict] = {}
    for key in config_keys():
        if key.pulumi_type is None:  # objects: Pulumi has no object type, only `value:`
            block[key.key] = {"value": key.default}
            continue
        decl: dict = {"type": key.pulumi_type, "description": key.description, "default": key.default}
        if key.pulumi_type == "array":
            decl["items"] = {"type": key.item_type}
        block[key.key] = decl
    return block


def write_docs(root) -> list[str]:
    """Rewrite README's reference section and Pulumi.yaml's config block from the settings."""
    import yaml

    readme, project = root / "README.md", root / "Pulumi.yaml"
    text = readme.read_text()
    start, end = text.index(README_START), text.index(README_END)
    readme.write_text(text[:start] + reference_markdown() + "\n\n" + text[end:])
    head = project.read_text().partition("\nconfig:\n")[0]
    project.write_text(head + "\n" + yaml.safe_dump({"config": pulumi_yaml_config()}, sort_keys=False, width=110))
    return [str(readme), str(project)]
