"""Move TF Serving version labels in a Pulumi stack file (``promote`` / ``rollback``).

The stack file is edited with ruamel.yaml's round-trip mode, so comments, key order and
flow-style lists survive. A label may only point at a version whose ``_COMPLETE`` marker is in
the bucket, and at a version the model's ``versionPolicy`` loads: TF Serving refuses labels on
versions that are not loaded, so with ``specific`` the version is added to ``versions``, and
``latest`` (whose loaded set changes with every publish) takes no labels at all, as the
platform's stack validation requires; ``--pin`` turns it into ``specific`` first.
"""

from __future__ import annotations

import io
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from model_tools.contract import check_label, check_model_name, check_version
from model_tools.errors import ToolError

PROJECT = "tfserving-platform"
MODELS_KEY = f"{PROJECT}:models"
POLICIES = ("latest", "all", "specific")
STACK_FILE_RE = re.compile(r"^Pulumi\.(?P<stack>[^/\\]+)\.ya?ml$")


@dataclass
class LabelChange:
    """What promote/rollback did to the stack file."""

    stack_file: str
    stack: str
    model: str
    label: str
    old_version: int | None
    new_version: int
    versions_added: list[int]
    changed: bool
    pinned: list[int] | None = None

    def apply_command(self) -> str:
        """The command that applies the change (``cd`` first when the file is elsewhere)."""
        cmd = f"pulumi up --stack {self.stack}"
        folder = os.path.dirname(os.path.abspath(self.stack_file))
        if folder != os.path.abspath(os.getcwd()):
            cmd = f"cd {folder} && {cmd}"
        return cmd

    def summary(self) -> str:
        old = "unset" if self.old_version is None else str(self.old_version)
        text = f"{self.model}: label '{self.label}' {old} -> {self.new_version} in {self.stack_file}"
        if self.pinned is not None:
            text += f" (versionPolicy latest -> specific, versions {self.pinned})"
        elif self.versions_added:
            text += f" (added {', '.join(map(str, self.versions_added))} to versions)"
        if not self.changed:
            text = (
                f"{self.model}: label '{self.label}' already points at version {self.new_version}; "
                "nothing to change"
            )
        return text


def stack_name(stack_file: str) -> str:
    """``Pulumi.dev.yaml`` -> ``dev``."""
    m = STACK_FILE_RE.match(os.path.basename(stack_file))
    if not m:
        raise ToolError(f"{stack_file} is not a stack file: expected a name like Pulumi.<stack>.yaml")
    return m.group("stack")


def _yaml():
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    return y


def guess_indent(text: str) -> tuple[int, int]:
    """(mapping indent, block-sequence dash offset) used by the file, so a rewrite keeps its style."""
    mapping = offset = None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for parent, child in itertools.pairwise(lines):
        head = parent.split(" #")[0].rstrip()
        if not head.endswith(":") or head.lstrip().startswith("- "):
            continue
        p_ind = len(parent) - len(parent.lstrip())
        c_ind = len(child) - len(child.lstrip())
        if child.lstrip().startswith("- "):
            offset = c_ind - p_ind if offset is None and c_ind >= p_ind else offset
        elif c_ind > p_ind and mapping is None:
            mapping = c_ind - p_ind
    return mapping or 2, offset or 0


def load_stack(stack_file: str):
    """Load a stack file round-trip; returns (yaml, data, original_text)."""
    from ruamel.yaml.error import YAMLError

    path = Path(stack_file)
    stack_name(stack_file)
    if not path.is_file():
        raise ToolError(f"stack file {stack_file} does not exist")
    text = path.read_text(encoding="utf-8")
    y = _yaml()
    try:
        mapping, offset = guess_indent(text)
        y.indent(mapping=mapping, sequence=offset + 2, offset=offset)
        data = y.load(text)
    except YAMLError as e:
        raise ToolError(f"cannot parse {stack_file}: {e}") from None
    return y, data, text


def model_config(data, stack_file: str, model: str):
    """The ``tfserving-platform:models.<model>`` mapping, or a ToolError explaining what is missing."""
    config = data.get("config") if hasattr(data, "get") else None
    models = None
    if hasattr(config, "get"):  # keys without a namespace belong to the project
        models = config.get(MODELS_KEY, config.get("models"))
    if not hasattr(models, "get"):
        raise ToolError(f"{stack_file} has no '{MODELS_KEY}' map under 'config'")
    entry = models.get(model)
    if not hasattr(entry, "get"):
        configured = ", ".join(map(str, models)) or "none"
        raise ToolError(
            f"model '{model}' is not configured in {stack_file} (configured: {configured}). Add it under "
            f"config.{MODELS_KEY} first, e.g.:\n    {model}:\n      versionPolicy: specific\n"
            f"      versions: [1]\n      labels:\n        stable: 1"
        )
    return entry


def _policy(entry, model: str) -> str:
    policy = str(entry.get("versionPolicy", "latest"))
    if policy not in POLICIES:
        raise ToolError(
            f"model '{model}' has unknown versionPolicy {policy!r} (expected one of {', '.join(POLICIES)})"
        )
    return policy


def _latest_loaded(entry, published: list[int]) -> list[int]:
    """The versions a ``latest`` policy loads: the newest ``latestVersions`` published ones."""
    return sorted(published)[-int(entry.get("latestVersions", 1)) :]


def _pin(entry, versions: list[int]) -> None:
    """Turn ``versionPolicy: latest`` into ``specific`` with ``versions`` (in the same place)."""
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq(versions)
    seq.fa.set_flow_style()
    keys = list(entry)
    if "latestVersions" in entry:
        del entry["latestVersions"]
    if "versionPolicy" in entry:
        entry["versionPolicy"] = "specific"
        entry.insert(keys.index("versionPolicy") + 1, "versions", seq)
    else:
        entry.insert(0, "versionPolicy", "specific")
        entry.insert(1, "versions", seq)


def _set_label(entry, model: str, label: str, version: int) -> tuple[int | None, list[int]]:
    """Point ``label`` at ``version``; for ``specific`` add the version to ``versions``."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    added: list[int] = []
    if _policy(entry, model) == "specific":
        versions = entry.get("versions")
        if versions is None:
            versions = CommentedSeq()
            versions.fa.set_flow_style()
            entry["versions"] = versions
        elif not isinstance(versions, list):
            raise ToolError(f"model '{model}': 'versions' must be a list of integers")
        if version not in [int(v) for v in versions]:
            pos = sum(1 for v in versions if int(v) < version)
            versions.insert(pos, version)
            added.append(version)
    labels = entry.get("labels")
    if labels is None:
        labels = CommentedMap()
        entry["labels"] = labels
    elif not hasattr(labels, "get"):
        raise ToolError(f"model '{model}': 'labels' must be a map of label -> version")
    old = labels.get(label)
    labels[label] = version
    return (None if old is None else int(old)), added


def _write(y, data, stack_file: str) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a stack file."""
    buf = io.StringIO()
    y.dump(data, buf)
    tmp = f"{stack_file}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    os.replace(tmp, stack_file)


def _published(bucket_uri: str, model: str, storage=None) -> list[int]:
    from model_tools.publish import published_versions
    from model_tools.storage import open_storage, parse_bucket_uri

    if storage is None:
        storage, base = open_storage(bucket_uri)
    else:
        base = parse_bucket_uri(bucket_uri)
    return published_versions(storage, base, model)


def promote(
    stack_file: str, model: str, version, label: str, bucket_uri: str, pin: bool = False, storage=None
) -> LabelChange:
    """Point ``label`` of ``model`` at a published ``version`` in ``stack_file``."""
    check_model_name(model)
    check_label(label)
    version = check_version(version)
    stack = stack_name(stack_file)
    y, data, _ = load_stack(stack_file)
    entry = model_config(data, stack_file, model)
    published = _published(bucket_uri, model, storage)
    if version not in published:
        shown = ", ".join(map(str, published)) or "none"
        raise ToolError(
            f"version {version} of model '{model}' is not published in {bucket_uri} (no _COMPLETE marker; "
            f"published versions: {shown}). Publish it first with `python -m model_tools publish`"
        )
    return _apply(y, data, stack_file, stack, entry, model, label, version, published, pin)


def rollback(
    stack_file: str,
    model: str,
    bucket_uri: str,
    label: str = "stable",
    to=None,
    pin: bool = False,
    storage=None,
) -> LabelChange:
    """Move ``label`` back to the previous published version (or to ``to``)."""
    check_model_name(model)
    check_label(label)
    stack = stack_name(stack_file)
    y, data, _ = load_stack(stack_file)
    entry = model_config(data, stack_file, model)
    labels = entry.get("labels") or {}
    current = labels.get(label) if hasattr(labels, "get") else None
    published = _published(bucket_uri, model, storage)
    if to is not None:
        target = check_version(to)
        if target not in published:
            shown = ", ".join(map(str, published)) or "none"
            raise ToolError(
                f"cannot roll back to version {target}: it is not published in {bucket_uri} "
                f"(published versions: {shown})"
            )
    else:
        if current is None:
            raise ToolError(f"model '{model}' has no '{label}' label in {stack_file}; use --to N to set one")
        earlier = [v for v in published if v < int(current)]
        if not earlier:
            raise ToolError(
                f"no published version of '{model}' older than {current} (published: "
                f"{', '.join(map(str, published)) or 'none'}); nothing to roll back to"
            )
        target = earlier[-1]
    return _apply(y, data, stack_file, stack, entry, model, label, target, published, pin)


def _apply(y, data, stack_file, stack, entry, model, label, version, published, pin) -> LabelChange:
    pinned = None
    if _policy(entry, model) == "latest":
        loaded = _latest_loaded(entry, published)
        if not pin:
            suggestion = sorted(set(loaded) | {version})
            raise ToolError(
                f"model '{model}' uses versionPolicy latest, which takes no labels (TF Serving only labels "
                f"loaded versions, and latest unloads them as new versions are published; the platform "
                f"refuses the stack). Pass --pin to switch it to versionPolicy: specific with versions "
                f"{suggestion} (what it loads now plus {version}), or edit the stack file"
            )
        pinned = sorted(set(loaded) | {version})
        _pin(entry, pinned)
    labels = entry.get("labels")
    current = labels.get(label) if hasattr(labels, "get") else None
    if pinned is None and current is not None and int(current) == version:
        return LabelChange(stack_file, stack, model, label, version, version, [], False)
    old, added = _set_label(entry, model, label, version)
    _write(y, data, stack_file)
    return LabelChange(stack_file, stack, model, label, old, version, added, True, pinned)
