"""Publish SavedModel versions to a bucket, and list them.

Layout (``components.model_contract``): ``<prefix>/<model>/<version>/...`` with
``<prefix>/<model>/<version>/_COMPLETE`` written last. Readers treat a version without the
marker as not published, so an interrupted upload is never served.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from model_tools import __version__
from model_tools.contract import COMPLETION_MARKER, check_model_name, check_version
from model_tools.errors import ToolError
from model_tools.storage import BucketURI, Storage, StorageError, open_storage, parse_bucket_uri

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass
class VersionInfo:
    """One numeric version directory in the bucket."""

    version: int
    complete: bool
    files: int = 0
    bytes: int = 0
    marker: dict | None = None


@dataclass
class LocalFile:
    rel: str
    path: str
    size: int
    sha256: str = ""


@dataclass
class PublishResult:
    model: str
    version: int
    uri: str
    files: list[LocalFile] = field(default_factory=list)
    marker: dict = field(default_factory=dict)
    replaced: bool = False


def _model_prefix(base: BucketURI, model: str) -> str:
    return base.key(model) + "/"


def _version_prefix(base: BucketURI, model: str, version: int) -> str:
    return base.key(model, version) + "/"


def scan_versions(
    storage: Storage, base: BucketURI, model: str, read_markers: bool = False
) -> list[VersionInfo]:
    """All numeric version directories of ``model`` (complete or not), sorted by version."""
    prefix = _model_prefix(base, model)
    found: dict[int, VersionInfo] = {}
    for key, size in storage.list(prefix).items():
        first, _, rest = key[len(prefix) :].partition("/")
        if not first.isdigit() or not rest or int(first) < 1:
            continue
        info = found.setdefault(int(first), VersionInfo(int(first), False))
        if rest == COMPLETION_MARKER:
            info.complete = True
        else:
            info.files += 1
            info.bytes += size
    versions = sorted(found.values(), key=lambda v: v.version)
    if read_markers:
        for v in versions:
            if v.complete:
                raw = storage.get_bytes(_version_prefix(base, model, v.version) + COMPLETION_MARKER)
                try:
                    v.marker = json.loads(raw) if raw else None
                except ValueError:
                    v.marker = None
    return versions


def published_versions(storage: Storage, base: BucketURI, model: str) -> list[int]:
    """Versions of ``model`` whose completion marker exists, ascending."""
    return [v.version for v in scan_versions(storage, base, model) if v.complete]


def list_models(storage: Storage, base: BucketURI) -> list[str]:
    """Model names that have at least one object under the prefix."""
    prefix = base.key() + "/" if base.prefix else ""
    names = {key[len(prefix) :].split("/", 1)[0] for key in storage.list(prefix)}
    return sorted(n for n in names if n and "/" not in n)


def next_version(versions: list[VersionInfo]) -> int:
    """One more than the highest version directory present (complete or not), or 1."""
    return max((v.version for v in versions), default=0) + 1


def collect_files(saved_model_dir: str) -> list[LocalFile]:
    """Files of a SavedModel directory with sizes and sha256s; refuses non-SavedModel dirs."""
    root = Path(saved_model_dir)
    if not root.exists():
        raise ToolError(f"SavedModel directory {saved_model_dir} does not exist")
    if not root.is_dir():
        raise ToolError(f"{saved_model_dir} is not a directory (pass the SavedModel directory)")
    if not any((root / name).is_file() for name in SAVED_MODEL_FILES):
        raise ToolError(
            f"{saved_model_dir} is not a SavedModel directory: no saved_model.pb in it "
            "(pass the directory that `export` or tf.saved_model.save wrote)"
        )
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == COMPLETION_MARKER:
            raise ToolError(f"{saved_model_dir} contains a file named {COMPLETION_MARKER}; remove it first")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        files.append(LocalFile(rel, str(path), path.stat().st_size, digest.hexdigest()))
    return files


def _progress_bar(total: int, enabled: bool | None, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=(None if enabled is None else not enabled),
        file=sys.stderr,
        leave=True,
    )


def publish(
    saved_model_dir: str,
    bucket_uri: str,
    model: str,
    version: int | None = None,
    force: bool = False,
    progress: bool | None = None,
    storage: Storage | None = None,
    log=print,
) -> PublishResult:
    """Upload ``saved_model_dir`` as ``<bucket_uri>/<model>/<version>/`` and write the marker last."""
    check_model_name(model)
    if version is not None:
        version = check_version(version)
    base = parse_bucket_uri(bucket_uri)
    files = collect_files(saved_model_dir)
    if storage is None:
        storage, base = open_storage(base)

    existing = {v.version: v for v in scan_versions(storage, base, model)}
    if version is None:
        version = next_version(list(existing.values()))
    target = base.uri(model, version) + "/"
    prefix = _version_prefix(base, model, version)
    marker_key = prefix + COMPLETION_MARKER
    replaced = version in existing
    if replaced and not force:
        state = "published" if existing[version].complete else "incomplete (no marker)"
        raise ToolError(
            f"version {version} of model '{model}' already exists at {target} ({state}); refusing to "
            f"overwrite it. Pass --force to replace it, or omit --version to publish as version "
            f"{next_version(list(existing.values()))}"
        )
    total = sum(f.size for f in files)
    done = 0
    rerun = (
        f"python -m model_tools publish {saved_model_dir} --bucket-uri {base} --model {model} "
        f"--version {version} --force"
    )
    try:
        if replaced:
            # Unpublish first (the marker goes before the files), then clear stale files.
            log(f"replacing existing version {version} at {target} (--force)")
            storage.delete([marker_key])
            storage.delete(sorted(storage.list(prefix)))
        log(f"publishing {saved_model_dir} -> {target} ({len(files)} files, {total} bytes)")
        with _progress_bar(total, progress, f"{model}/{version}") as bar:
            for f in files:
                storage.upload_file(f.path, prefix + f.rel, bar.update)
                done += 1
        remote = storage.list(prefix)
        bad = [f.rel for f in files if remote.get(prefix + f.rel) != f.size]
        if bad:
            raise StorageError(
                f"after upload these objects are missing or have the wrong size: {', '.join(bad)}"
            )
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - any failure must leave a clear message
        reason = str(e) if isinstance(e, StorageError) else f"{type(e).__name__}: {e}"
        raise ToolError(
            f"publishing {model} version {version} failed after {done}/{len(files)} files: {reason}\n"
            f"No {COMPLETION_MARKER} marker was written, so version {version} is NOT published and the "
            f"serving sync ignores it.\nTo finish it, fix the cause and re-run:\n  {rerun}",
            exit_code=130 if isinstance(e, KeyboardInterrupt) else 1,
        ) from None

    marker = {
        "model": model,
        "version": version,
        "file_count": len(files),
        "total_bytes": total,
        "files": {f.rel: {"size": f.size, "sha256": f.sha256} for f in files},
        "published_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "published_by": f"model_tools {__version__}",
    }
    try:
        storage.put_bytes(
            marker_key, json.dumps(marker, indent=2, sort_keys=True).encode(), "application/json"
        )
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        raise ToolError(
            f"all files of {model} version {version} were uploaded but writing {COMPLETION_MARKER} "
            f"failed: {e}\n"
            f"The version is NOT published. Re-run:\n  {rerun}",
            exit_code=1,
        ) from None
    log(f"published {target} (marker {COMPLETION_MARKER} written last)")
    return PublishResult(model, version, target, files, marker, replaced)


def format_versions(model: str, versions: list[VersionInfo]) -> str:
    """A table of versions for ``list``."""
    if not versions:
        return f"{model}: no versions"
    lines = [f"{model}:", f"  {'VERSION':>7}  {'STATUS':<10}  {'FILES':>5}  {'BYTES':>10}  PUBLISHED_AT"]
    for v in versions:
        status = "complete" if v.complete else "incomplete"
        when = (v.marker or {}).get("published_at", "-") if v.complete else "- (no marker)"
        lines.append(f"  {v.version:>7}  {status:<10}  {v.files:>5}  {v.bytes:>10}  {when}")
    return "\n".join(lines)
