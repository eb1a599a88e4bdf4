"""The resource graph of a plan as Graphviz DOT: components as clusters, dependencies as edges."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from stacks.mock_engine import Recording, RecordedResource


def _id(urn: str) -> str:
    return '"' + urn.replace('"', r"\"") + '"'


def _label(r: RecordedResource) -> str:
    kind = r.inputs.get("kind") if r.type.startswith("kubernetes:") else r.type.split(":")[-1]
    return f"{kind}\\n{r.name}".replace('"', r"\"")


def to_dot(recording: Recording) -> str:
    """Components are nested clusters; solid edges are dependencies (``depends_on`` and inputs)."""
    children: dict[str, list[RecordedResource]] = {}
    for r in recording.resources:
        children.setdefault(r.parent or recording.stack_urn, []).append(r)
    lines = [f'digraph "{recording.project}-{recording.stack}" {{', "  rankdir=LR;", "  compound=true;",
             '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=10];']

    def emit(parent: str, indent: str) -> None:
        for r in sorted(children.get(parent, []), key=lambda x: x.name):
            if r.custom:
                lines.append(f'{indent}{_id(r.urn)} [label="{_label(r)}"];')
            else:
                lines.append(f'{indent}subgraph "cluster_{r.urn}" {{')
                lines.append(f'{indent}  label="{r.type.split(":")[-1]} {r.name}"; style=rounded; color="#7a8aa6";')
                lines.append(f'{indent}  {_id(r.urn)} [label="{r.name}", shape=point];')
                emit(r.urn, indent + "  ")
                lines.append(f"{indent}}}")

    emit(recording.stack_urn, "  ")
    known = {r.urn for r in recording.resources}
    for r in recording.resources:
        for dep in sorted(set(r.dependencies)):
            if dep in known and dep != r.urn:
                lines.append(f"  {_id(dep)} -> {_id(r.urn)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(recording: Recording, path: Path) -> list[Path]:
    """Write DOT to ``path``; with Graphviz installed also ``path`` + ``.svg``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_dot(recording))
    written = [path]
    dot = shutil.which("dot")
    if dot:
        svg = path.with_name(path.name + ".svg")
        subprocess.run([dot, "-Tsvg", str(path), "-o", str(svg)], check=True, capture_output=True, timeout=120)
        written.append(svg)
    return written
