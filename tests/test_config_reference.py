"""Pulumi.yaml, the settings and docs/configuration.md must agree; `make docs` says what it changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from stacks.plan import ROOT
from stacks.reference import (
    REFERENCE_DOC,
    _literal_type,
    config_keys,
    generated_text,
    main,
    reference_markdown,
    write_docs,
)
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


def test_configuration_reference_is_current():
    doc = (ROOT / REFERENCE_DOC).read_text()
    assert generated_text(doc, str(REFERENCE_DOC)) == doc, f"{REFERENCE_DOC} is stale: run `make docs`"
    assert reference_markdown() in doc


def _docs_tree(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / REFERENCE_DOC, tmp_path / REFERENCE_DOC)
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    return tmp_path


def test_make_docs_says_wrote_only_for_files_it_changed(tmp_path, capsys):
    root = _docs_tree(tmp_path)
    main([str(root)])  # bring the copies up to date, whatever the working tree holds
    capsys.readouterr()
    doc = root / REFERENCE_DOC
    before = {p: p.stat().st_mtime_ns for p in (doc, root / "Pulumi.yaml")}
    assert main([str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"unchanged: {REFERENCE_DOC}", "unchanged: Pulumi.yaml"]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # not even rewritten
    # A stale table: only that file is written, and it is current afterwards.
    doc.write_text(doc.read_text().replace("| `cloud` | string |", "| `cloud` | boolean |"))
    assert write_docs(root) == [(str(REFERENCE_DOC), True), ("Pulumi.yaml", False)]
    assert generated_text(doc.read_text(), "x") == doc.read_text()
    # Hand-written text around the markers is kept.
    assert doc.read_text().startswith("# Configuration reference") and "Cross-field rules:" in doc.read_text()


def test_make_docs_without_markers_is_one_clear_error(tmp_path, capsys):
    root = _docs_tree(tmp_path)
    (root / REFERENCE_DOC).write_text("# Configuration reference\n\nno markers\n")
    assert main([str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {REFERENCE_DOC}: the markers") and "Traceback" not in err


def test_literal_keys_take_the_type_of_their_values():
    from typing import Literal

    assert _literal_type(Literal[1, 3, 365]) == "integer"
    assert _literal_type(Literal["aws", "gcp"]) == "string"
    with pytest.raises(TypeError, match="one type"):
        _literal_type(Literal["a", 1])


def test_stack_files_set_only_known_keys():
    known = {k.key for k in config_keys()}
    for stack in ("dev", "prod", "gke-dev"):
        data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        ours = {k.split(":", 1)[1] for k in data if k.startswith(f"{PROJECT}:")}
        assert ours <= known, (stack, ours - known)
