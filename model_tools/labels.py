"""Move TF Serving version labels in a Pulumi stack file (``promote`` / ``rollback``).

The stack file is edited with ruamel.yaml's round-trip mode, so comments, key order and
flow-style lists survive. A label may only point at a version whose ``_COMPLETE`` marker is in
the bucket, and at a version the model's ``versionPolicy`` loads: TF Serving refuses labels on
versions that are not loaded, so with ``specific`` the version is added to ``versions``, and
``latest`` (whose loaded set changes with every publish) takes no labels at all, as the
platform's stack validation requires; ``--pin`` turns it into ``specific`` first.

Models live in the servers of the stack: ``config.tfserving-platform:servers.<server>.models.<model>``
(model names are unique across servers, so the model name alone finds its server). While a model
has an active ``canaryVersion`` the platform manages its ``canary`` label, so that label is not
moved here, and no version above the canary is added to ``versions``.
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
SERVERS_KEY = f"{PROJECT}:servers"
OLD_MODELS_KEY = f"{PROJECT}:models"  # the layout before servers: a top-level map of models
STABLE_LABEL = "stable"
CANARY_LABEL = "canary"
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
    server: str | None = None
    old_implicit: bool = False  # old_version is the default stable label (highest of versions)
    canary_promoted: int | None = None  # canaryVersion that the change put into versions

    def apply_command(self) -> str:
        """The command that applies the change (``cd`` first when the file is elsewhere)."""
        cmd = f"pulumi up --stack {self.stack}"
        folder = os.path.dirname(os.path.abspath(self.stack_file))
        if folder != os.path.abspath(os.getcwd()):
            cmd = f"cd {folder} && {cmd}"
        return cmd

    def summary(self) -> str:
        default = " (by default: the highest of versions)" if self.old_implicit else ""
        if not self.changed:
            return (
                f"{self.model}: label '{self.label}' already points at version {self.new_version}{default}; "
                "nothing to change"
            )
        old = "unset" if self.old_version is None else f"{self.old_version}{default}"
        text = f"{self.model}: label '{self.label}' {old} -> {self.new_version} in {self.stack_file}"
        notes = [] if self.server is None else [f"server '{self.server}'"]
        if self.pinned is not None:
            notes.append(f"versionPolicy latest -> specific, versions {self.pinned}")
        elif self.versions_added:
            notes.append(f"added {', '.join(map(str, self.versions_added))} to versions")
        if self.canary_promoted is not None:
            notes.append(f"canaryVersion {self.canary_promoted} is now in versions: the canary is promoted")
        return text + (f" ({'; '.join(notes)})" if notes else "")


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


def _servers(data, stack_file: str):
    """The ``tfserving-platform:servers`` map (or un-namespaced ``servers``), and the key it is under."""
    config = data.get("config") if hasattr(data, "get") else None
    if hasattr(config, "get"):  # keys without a namespace belong to the project
        for key in (SERVERS_KEY, "servers"):
            if hasattr(config.get(key), "get"):
                return config[key], key
    hint = ""
    if hasattr(config, "get") and (OLD_MODELS_KEY in config or "models" in config):
        hint = (
            f"; its top-level '{OLD_MODELS_KEY}' map is the old layout: models now go under a server, "
            f"config.{SERVERS_KEY}.<server>.models"
        )
    raise ToolError(f"{stack_file} has no '{SERVERS_KEY}' map under 'config'{hint}")


def _server_models(server) -> dict:
    models = server.get("models") if hasattr(server, "get") else None
    return models if hasattr(models, "get") else {}


def find_model(data, stack_file: str, model: str):
    """(server name, the ``servers.<server>.models.<model>`` map), or a ToolError naming what is missing."""
    servers, key = _servers(data, stack_file)
    owners = [name for name, server in servers.items() if model in _server_models(server)]
    if len(owners) > 1:
        raise ToolError(
            f"model '{model}' is configured in several servers of {stack_file} "
            f"({', '.join(map(str, owners))}); "
            "model names must be unique across servers, so the platform refuses this stack. Keep one"
        )
    if not owners:
        configured = "; ".join(
            f"{name}: {', '.join(map(str, _server_models(server))) or 'no models'}"
            for name, server in servers.items()
        ) or "no servers"
        first = str(next(iter(servers), "default"))
        raise ToolError(
            f"model '{model}' is not configured in any server of {stack_file} (models per server: "
            f"{configured}). Add it to the models of one server first, e.g. under config.{key}:\n"
            f"    {first}:\n      models:\n        {model}:\n          versionPolicy: specific\n"
            f"          versions: [1]   # the stable label defaults to the highest version"
        )
    server = owners[0]
    entry = _server_models(servers[server])[model]
    if not hasattr(entry, "get"):
        raise ToolError(
            f"model '{model}' in server '{server}' of {stack_file} must be a map (versionPolicy, "
            "versions, labels, ...)"
        )
    return str(server), entry


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


def _versions(entry, model: str) -> list[int]:
    versions = entry.get("versions")
    if versions is None:
        return []
    if not isinstance(versions, list):
        raise ToolError(f"model '{model}': 'versions' must be a list of integers")
    return [int(v) for v in versions]


def _active_canary(entry, model: str) -> int | None:
    """The model's ``canaryVersion`` while it is active (not yet one of ``versions``), else None."""
    canary = entry.get("canaryVersion")
    if canary is None:
        return None
    canary = int(canary)
    return None if canary in _versions(entry, model) else canary


def _current(entry, model: str, label: str) -> tuple[int | None, bool]:
    """Where ``label`` points now, and whether that is the implicit ``stable`` of a specific policy."""
    labels = entry.get("labels")
    current = labels.get(label) if hasattr(labels, "get") else None
    if current is not None:
        return int(current), False
    if label == STABLE_LABEL and _policy(entry, model) == "specific" and _versions(entry, model):
        return max(_versions(entry, model)), True
    return None, False


def _refuse_managed_canary(entry, server: str, model: str, label: str) -> None:
    canary = _active_canary(entry, model)
    if label == CANARY_LABEL and canary is not None:
        raise ToolError(
            f"model '{model}' (server '{server}') has an active canaryVersion {canary}: the platform "
            f"manages its '{CANARY_LABEL}' label while the canary runs, so it is not moved here. Change "
            f"canaryVersion in the stack file instead (a newer version to canary it, add {canary} to "
            "versions to promote it, or remove canaryVersion to roll the canary back)"
        )


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
    server, entry = find_model(data, stack_file, model)
    _refuse_managed_canary(entry, server, model, label)
    published = _published(bucket_uri, model, storage)
    if version not in published:
        shown = ", ".join(map(str, published)) or "none"
        raise ToolError(
            f"version {version} of model '{model}' is not published in {bucket_uri} (no _COMPLETE marker; "
            f"published versions: {shown}). Publish it first with `python -m model_tools publish`"
        )
    return _apply(y, data, stack_file, stack, server, entry, model, label, version, published, pin)


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
    server, entry = find_model(data, stack_file, model)
    _refuse_managed_canary(entry, server, model, label)
    current, _ = _current(entry, model, label)
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
        earlier = [v for v in published if v < current]
        if not earlier:
            raise ToolError(
                f"no published version of '{model}' older than {current} (published: "
                f"{', '.join(map(str, published)) or 'none'}); nothing to roll back to"
            )
        target = earlier[-1]
    return _apply(y, data, stack_file, stack, server, entry, model, label, target, published, pin)


def _apply(y, data, stack_file, stack, server, entry, model, label, version, published, pin) -> LabelChange:
    pinned = None
    current, implicit = _current(entry, model, label)
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
    if pinned is None and current == version:
        return LabelChange(
            stack_file, stack, model, label, version, version, [], False, None, server, implicit
        )
    canary = _active_canary(entry, model)
    promoted = None
    if canary is not None and _policy(entry, model) == "specific" and version not in _versions(entry, model):
        if version > canary:
            raise ToolError(
                f"model '{model}' (server '{server}') has an active canaryVersion {canary}; labelling "
                f"version {version} would add it to versions, above the canary (TF Serving answers "
                f"unlabelled requests from its highest version, and the platform requires canaryVersion "
                f"to be greater than every version). Promote or remove the canary first (add {canary} to "
                f"versions, or remove canaryVersion), or canary {version} instead (canaryVersion: {version})"
            )
        promoted = canary if version == canary else None
    old, added = _set_label(entry, model, label, version)
    _write(y, data, stack_file)
    if old is None and implicit:
        old = current
    return LabelChange(
        stack_file, stack, model, label, old, version, added, True, pinned, server, implicit, promoted
    )
