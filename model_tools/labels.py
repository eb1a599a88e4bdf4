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

Rollback history: ``rollback`` must return to the version that was stable *before the promotion*,
not to the highest published version below the current one (that can be a rejected canary). The
stack schema is strict (no room for a ``previousStable`` key), so ``promote`` records the versions
a label replaced in a comment on the label's own line, newest first::

    stable: 3   # model_tools history: 3 <- 1

``rollback`` reads it, moves the label to the next entry and drops the first. The record lives in
the file it describes, so it is per stack, reviewed with the change, and reverted with it (a
record in the bucket would be shared by every stack and outlive a discarded edit). It only counts
while its first entry is where the label points: a label edited by hand leaves a stale record,
and ``rollback`` then refuses (as it does without a record) unless given ``--to N`` or
``--previous-published`` (the old rule: the highest published version below the current one).

``check`` lists every version a stack file needs from the bucket (see :func:`check_stack`).
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
HISTORY_TAG = "model_tools history:"
HISTORY_LIMIT = 10
"""At most this many versions (the current one included) are kept in a label's history comment."""
_HISTORY_RE = re.compile(r"(?:\s*#)?\s*model_tools history:\s*(\d+(?:\s*<-\s*\d+)*)")


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
    note: str | None = None  # why this version (rollback: where the target came from)

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
        if self.note:
            notes.append(self.note)
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


def _history_token(labels, label: str):
    """The comment token after ``label``'s value (its end-of-line comment, plus any comment lines below)."""
    items = labels.ca.items.get(label) if hasattr(labels, "ca") else None
    return items[2] if items and len(items) > 2 else None


def read_history(entry, label: str) -> list[int]:
    """Versions ``label`` pointed at, newest (where promote/rollback left it) first; [] if none recorded."""
    labels = entry.get("labels")
    if not hasattr(labels, "get") or label not in labels:
        return []
    token = _history_token(labels, label)
    if token is None:
        return []
    found = _HISTORY_RE.search(token.value.split("\n", 1)[0])
    return [int(v) for v in re.findall(r"\d+", found.group(1))] if found else []


def _write_history(entry, label: str, history: list[int]) -> None:
    """Record ``history`` in the comment on ``label``'s line, keeping any other comment there.

    Fewer than two versions record nothing (there is nothing to roll back to), and an old record
    is removed. A flow-style ``labels`` map becomes block style so the label has a line of its own.
    """
    labels = entry["labels"]
    history = history[:HISTORY_LIMIT]
    text = f"# {HISTORY_TAG} " + " <- ".join(map(str, history)) if len(history) > 1 else ""
    token = _history_token(labels, label)
    if token is None:
        if text:
            if labels.fa.flow_style():
                labels.fa.set_block_style()
            labels.yaml_add_eol_comment(text, label)
        return
    first, newline, rest = token.value.partition("\n")
    kept = _HISTORY_RE.sub("", first).rstrip()
    if kept and text:
        first = f"{kept}  {text}"
    elif kept:
        first = kept
    elif text:
        first = f" {text}"  # the line had no comment of its own: keep a gap after the value
    elif not rest:
        labels.ca.items[label][2] = None
        return
    else:
        first = ""
    token.value = first + (newline or "\n") + rest


def _after_move(history: list[int], current: int | None, version: int) -> list[int]:
    """The history once promote moves the label from ``current`` to ``version``: the new version
    first, then what it replaced (continuing the recorded history only if it is not stale)."""
    if current is None:
        return [version]
    if current == version:
        return history
    base = history if history and history[0] == current else [current]
    return [version, *base]


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
    current, _ = _current(entry, model, label)
    history = _after_move(read_history(entry, label), current, version)
    return _apply(y, data, stack_file, stack, server, entry, model, label, version, published, pin, history)


def rollback(
    stack_file: str,
    model: str,
    bucket_uri: str,
    label: str = "stable",
    to=None,
    pin: bool = False,
    storage=None,
    previous_published: bool = False,
) -> LabelChange:
    """Move ``label`` back to the version it had before ``promote`` last moved it (or to ``to``).

    The previous versions come from the history comment ``promote`` writes on the label's line.
    Without a usable history this refuses, unless ``previous_published`` asks for the old rule
    (the highest published version below the current one, which may be a rejected canary).
    """
    check_model_name(model)
    check_label(label)
    if to is not None and previous_published:
        raise ToolError("pass either --to or --previous-published, not both")
    stack = stack_name(stack_file)
    y, data, _ = load_stack(stack_file)
    server, entry = find_model(data, stack_file, model)
    _refuse_managed_canary(entry, server, model, label)
    current, _ = _current(entry, model, label)
    published = _published(bucket_uri, model, storage)
    shown = ", ".join(map(str, published)) or "none"
    history = read_history(entry, label)
    recorded = len(history) > 1 and history[0] == current
    note = None
    if to is not None:
        target = check_version(to)
        if target not in published:
            raise ToolError(
                f"cannot roll back to version {target}: it is not published in {bucket_uri} "
                f"(published versions: {shown})"
            )
        # Back to a recorded version: drop what came after it. Elsewhere: nothing known before it.
        after = history[history.index(target, 1):] if recorded and target in history[1:] else [target]
    elif current is None:
        raise ToolError(f"model '{model}' has no '{label}' label in {stack_file}; use --to N to set one")
    elif recorded:
        target, after = history[1], history[1:]
        note = f"the version '{label}' had before {current} was promoted, recorded in the stack file"
        if target not in published:
            raise ToolError(
                f"the rollback history of '{label}' of model '{model}' in {stack_file} "
                f"({_history_text(history)}) says {target} came before {current}, but version {target} "
                f"is no longer published in {bucket_uri} (published versions: {shown}). Publish it "
                f"again, or pick another version with --to N"
            )
    else:
        earlier = [v for v in published if v < current]
        if not previous_published:
            guess = (
                f"version {earlier[-1]}, which may be a rejected canary"
                if earlier else "there is none"
            )
            raise ToolError(
                f"{_no_history_reason(history, current, label, model, stack_file)}, so the version "
                f"'{label}' had before {current} is unknown. Pass --to N to choose it, or "
                f"--previous-published to take the highest published version below {current} ({guess})"
            )
        if not earlier:
            raise ToolError(
                f"no published version of '{model}' older than {current} (published: "
                f"{shown}); nothing to roll back to"
            )
        target, after = earlier[-1], [earlier[-1]]
        note = f"--previous-published: the highest published version below {current}"
    return _apply(
        y, data, stack_file, stack, server, entry, model, label, target, published, pin, after, note
    )


def _history_text(history: list[int]) -> str:
    return f"{HISTORY_TAG} " + " <- ".join(map(str, history))


def _no_history_reason(history: list[int], current: int, label: str, model: str, stack_file: str) -> str:
    if history and history[0] != current:
        return (
            f"the rollback history of '{label}' of model '{model}' in {stack_file} "
            f"({_history_text(history)}) was recorded when the label pointed at {history[0]}, but it "
            f"points at {current} now (changed by hand?)"
        )
    return (
        f"no earlier '{label}' version of model '{model}' is recorded in {stack_file}: promote records "
        f"the version it replaces in a '# {HISTORY_TAG} ...' comment on the label's line, and this "
        f"label has none (set by hand, already rolled back to its oldest recorded version, or the "
        f"comment was removed)"
    )


def _apply(
    y, data, stack_file, stack, server, entry, model, label, version, published, pin, history, note=None
) -> LabelChange:
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
    _write_history(entry, label, history)
    _write(y, data, stack_file)
    if old is None and implicit:
        old = current
    return LabelChange(
        stack_file, stack, model, label, old, version, added, True, pinned, server, implicit, promoted, note
    )


@dataclass
class Need:
    """One thing a stack file needs from the bucket: a version, or any version (latest / all)."""

    server: str
    model: str
    version: int | None  # None: any published version (versionPolicy latest or all)
    why: str  # "versions, label stable", "canaryVersion", "latest 2", "all"
    status: str = ""  # "published", or why it is missing
    ok: bool = False

    @property
    def needs(self) -> str:
        if self.version is None:
            return f"a published version ({self.why})"
        return f"version {self.version} ({self.why})"


@dataclass
class CheckReport:
    """What ``check`` found: every need of a stack file and whether the bucket satisfies it."""

    stack_file: str
    bucket_uri: str
    needs: list[Need]

    @property
    def missing(self) -> list[Need]:
        return [n for n in self.needs if not n.ok]

    def render(self) -> str:
        rows = [("SERVER", "MODEL", "NEEDS", "STATUS")]
        rows += [
            (n.server, n.model, n.needs, n.status if n.ok else f"MISSING: {n.status}") for n in self.needs
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{self.stack_file} needs from {self.bucket_uri}:"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3] for r in rows]
        if not self.missing:
            lines.append(f"ok: all {len(self.needs)} are published")
        return "\n".join(lines)

    def raise_if_missing(self) -> None:
        missing = self.missing
        if not missing:
            return
        names = ", ".join(
            f"{n.server}/{n.model} "
            + ("(no published version)" if n.version is None else f"version {n.version}")
            for n in missing
        )
        raise ToolError(
            f"{len(missing)} of {len(self.needs)} model versions {self.stack_file} needs are not "
            f"published in {self.bucket_uri}: {names}. New TF Serving pods would wait in Init "
            "(model-sync-init) for them. Publish them (python -m model_tools publish ... --version N), "
            "or change the stack file, before `pulumi up`",
            exit_code=1,
        )


def stack_needs(stack_file: str) -> list[Need]:
    """Every version the stack file's servers need from the bucket, in file order.

    ``specific``: each of ``versions``; any policy: ``canaryVersion`` (the canary pods load it) and
    every labelled version (TF Serving only labels loaded versions). ``latest`` and ``all`` also
    need at least one published version: the model-sync init container waits for one.
    """
    _, data, _ = load_stack(stack_file)
    servers, _ = _servers(data, stack_file)
    needs: list[Need] = []
    for server_name, server in servers.items():
        for model, entry in _server_models(server).items():
            if not hasattr(entry, "get"):
                raise ToolError(f"model '{model}' in server '{server_name}' of {stack_file} must be a map")
            policy = _policy(entry, model)
            reasons: dict[int, list[str]] = {}
            for v in _versions(entry, model) if policy == "specific" else []:
                reasons.setdefault(v, []).append("versions")
            where = f"model '{model}' in server '{server_name}' of {stack_file}"
            if entry.get("canaryVersion") is not None:
                reasons.setdefault(_need_version(entry["canaryVersion"], where), []).append("canaryVersion")
            labels = entry.get("labels")
            for label, v in labels.items() if hasattr(labels, "items") else []:
                reasons.setdefault(_need_version(v, where), []).append(f"label {label}")
            if policy != "specific":
                why = f"latest {int(entry.get('latestVersions', 1))}" if policy == "latest" else "all"
                needs.append(Need(str(server_name), str(model), None, why))
            needs += [
                Need(str(server_name), str(model), v, ", ".join(reasons[v])) for v in sorted(reasons)
            ]
    return needs


def _need_version(value, where: str) -> int:
    try:
        return check_version(value)
    except ToolError as e:
        raise ToolError(f"{where}: {e}") from None


def check_stack(stack_file: str, bucket_uri: str, storage=None) -> CheckReport:
    """Check every need of ``stack_file`` against the bucket (complete = has the ``_COMPLETE`` marker)."""
    from model_tools.contract import COMPLETION_MARKER
    from model_tools.publish import scan_versions
    from model_tools.storage import open_storage, parse_bucket_uri

    needs = stack_needs(stack_file)
    if storage is None:
        storage, base = open_storage(bucket_uri)
    else:
        base = parse_bucket_uri(bucket_uri)
    found = {m: {v.version: v for v in scan_versions(storage, base, m)} for m in {n.model for n in needs}}
    for need in needs:
        versions = found[need.model]
        complete = sorted(v for v, info in versions.items() if info.complete)
        if need.version is None:
            need.ok = bool(complete)
            need.status = (
                f"published: {', '.join(map(str, complete))}" if complete
                else f"no published version under {base.uri(need.model)}/"
            )
        elif need.version in complete:
            need.ok, need.status = True, "published"
        else:
            state = (
                f"incomplete upload, no {COMPLETION_MARKER} marker" if need.version in versions
                else "not in the bucket"
            )
            need.status = f"{state} (published: {', '.join(map(str, complete)) or 'none'})"
    return CheckReport(stack_file, str(base), needs)
