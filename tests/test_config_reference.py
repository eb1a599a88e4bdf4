"""Pulumi.yaml, the settings and the README's config reference must agree."""

from __future__ import annotations

import yaml

from stacks.plan import ROOT
from stacks.reference import config_keys, reference_markdown
from stacks.settings import PROJECT


def project_config() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]


def test_project_name_is_the_config_namespace():
    assert yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"] == PROJECT


def test_every_setting_is_declared_with_type_default_and_description():
    declared = project_config()
    keys = config_keys()
    assert set(declared) == {k.key for k in keys}
    for key in keys:
        decl = declared[key.key]
        if key.pulumi_type is None:  # objects: Pulumi has no object type, only `value:`
            assert decl == {"value": key.default}, key.key
            continue
        assert decl["type"] == key.pulumi_type, key.key
        assert decl["default"] == key.default, key.key
        assert decl["description"] == key.description and decl["description"], key.key
        if key.pulumi_type == "array":
            assert decl["items"] == {"type": key.item_type}, key.key


def test_project_declarations_use_only_pulumi_schema_fields():
    allowed = {"type", "description", "default", "items", "secret"}
    for key, decl in project_config().items():
        assert set(decl) == {"value"} or set(decl) <= allowed, key
        assert decl.get("type", "string") in {"string", "boolean", "integer", "array"}, key


def test_readme_reference_is_current():
    readme = (ROOT / "README.md").read_text()
    assert reference_markdown() in readme, "README config reference is stale: run `make docs` and paste it"


def test_stack_files_set_only_known_keys():
    known = {k.key for k in config_keys()}
    for stack in ("dev", "prod", "gke-dev"):
        data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        ours = {k.split(":", 1)[1] for k in data if k.startswith(f"{PROJECT}:")}
        assert ours <= known, (stack, ours - known)
