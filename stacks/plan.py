"""The offline plan: what ``pulumi up`` would create, from the mock engine's recording."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from stacks.mock_engine import Recording, RecordedResource, run_program
from stacks.stack_files import StackFileError, load_stack_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOYED_OUTPUTS = {"stackDeployed": True}
"""The outputs a stack's last successful ``pulumi up`` leaves, as far as the program reads them back."""


def plan_stack(stack: str, config_file: Path | None = None, root: Path = ROOT,
               previous_outputs: dict[str, Any] | None = None) -> Recording:
    """Run ``__main__.py`` for a stack on the mock engine (no CLI, no credentials): its first ``pulumi up``,
    or a later one when ``previous_outputs`` (the outputs the last up left) are given."""
    stack_file = config_file or root / f"Pulumi.{stack}.yaml"
    if config_file is None and not stack_file.exists():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise StackFileError(f"{stack_file}: no such file (stacks here: {', '.join(known) or 'none'}; "
                             "or give one with --config-file)")
    cfg = load_stack_config(root / "Pulumi.yaml", stack_file, stack)
    return run_program(root / "__main__.py", stack, cfg.project, cfg.config, cfg.secret_keys,
                       previous_outputs=previous_outputs)


def to_json(recording: Recording) -> dict[str, Any]:
    return {
        "stack": recording.stack,
        "project": recording.project,
        "resources": [{"urn": r.urn, "type": r.type, "name": r.name, "parent": r.parent or None,
                       "custom": r.custom, "protect": r.protect, "retainOnDelete": r.retain_on_delete,
                       "ignoreChanges": r.ignore_changes, "provider": r.provider or None, "inputs": r.inputs,
                       "dependencies": sorted(r.dependencies)}
                      for r in sorted(recording.resources, key=lambda r: r.urn)],
        "outputs": recording.outputs,
    }


def summary_counts(recording: Recording) -> Counter:
    counts: Counter = Counter()
    for r in recording.resources:
        if r.type.startswith("pulumi:providers:"):
            counts["providers"] += 1
        elif not r.custom:
            counts["components"] += 1
        else:
            counts["resources"] += 1
    return counts


def render_tree(recording: Recording) -> str:
    """An indented tree like ``pulumi preview``'s: type, name, children under their parent."""
    children: dict[str, list[RecordedResource]] = defaultdict(list)
    for r in sorted(recording.resources, key=lambda r: (r.name, r.type)):
        children[r.parent or recording.stack_urn].append(r)
    lines = [f"pulumi:pulumi:Stack  {recording.project}-{recording.stack}"]

    def walk(parent: str, prefix: str) -> None:
        kids = children.get(parent, [])
        for i, r in enumerate(kids):
            last = i == len(kids) - 1
            flag = "  [protected]" if r.protect else ""
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{r.type}  {r.name}{flag}")
            walk(r.urn, prefix + ("   " if last else "│  "))

    walk(recording.stack_urn, "")
    counts = summary_counts(recording)
    lines.append("")
    lines.append(f"{len(recording.resources)} to create: {counts['resources']} resources, "
                 f"{counts['components']} components, {counts['providers']} providers")
    return "\n".join(lines)


def kubernetes_objects(recording: Recording) -> list[RecordedResource]:
    return [r for r in recording.resources
            if r.custom and r.type.startswith("kubernetes:") and "kind" in r.inputs]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_manifests(recording: Recording, out_dir: Path) -> list[Path]:
    """One YAML file per Kubernetes object, plus every ConfigMap key as the file it mounts as.

    Layout: ``<dir>/<namespace|_cluster>/<kind>-<name>.yaml``,
    ``<dir>/files/<namespace>/<configmap>/<key>`` (e.g. TF Serving's ``models.config``), and each
    PrometheusRule's groups as ``<dir>/rules/<namespace>-<name>.yaml`` (``promtool check rules``).
    """
    written: list[Path] = []
    for r in kubernetes_objects(recording):
        meta = r.inputs.get("metadata") or {}
        namespace = meta.get("namespace") or "_cluster"
        path = out_dir / _safe(namespace) / f"{r.inputs['kind'].lower()}-{_safe(meta.get('name', r.name))}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(r.inputs, sort_keys=True))
        written.append(path)
        if r.inputs["kind"] == "PrometheusRule":
            file = out_dir / "rules" / f"{_safe(namespace)}-{_safe(meta['name'])}.yaml"
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(yaml.safe_dump(r.inputs["spec"], sort_keys=False))
            written.append(file)
        if r.inputs["kind"] == "ConfigMap":
            for key, text in (r.inputs.get("data") or {}).items():
                file = out_dir / "files" / _safe(namespace) / _safe(meta["name"]) / _safe(key)
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(text)
                written.append(file)
    return written


def write_json(plan_json: dict[str, Any], path: Path) -> None:
    """Write a plan as made by :func:`to_json`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan_json, indent=2, sort_keys=False) + "\n")
