"""Publish SavedModel versions to a bucket, and list them.

Layout (``components.model_contract``): ``<prefix>/<model>/<version>/...`` with
``<prefix>/<model>/<version>/_COMPLETE`` written last. Readers treat a version without the
marker as not published, so an interrupted upload is never served.

A publish first claims its version number by creating ``_PUBLISHING`` in the version directory
only if it does not exist, and writes the marker the same conditional way, so two concurrent
publishers never share a number and a published version is never overwritten: the loser fails
with a message to publish again. ``--force`` only cleans up an incomplete version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from model_tools import __version__
from model_tools.contract import COMPLETION_MARKER, check_model_name, check_version
from model_tools.errors import ToolError
from model_tools.storage import BucketURI, ObjectExists, Storage, StorageError, open_storage, parse_bucket_uri

# After model_tools.contract, which puts the repository root on sys.path when needed.
from components.model_contract import (  # isort: skip
    MARKER_PATH_PATTERN,
    PUBLISH_CLAIM,
    RESERVED_NAMES,
    marker_document,
    render_marker,
)

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
        elif rest == PUBLISH_CLAIM:
            pass  # an upload in progress (or one that failed): the version exists, the claim is no file
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
        if rel in RESERVED_NAMES:
            raise ToolError(f"{saved_model_dir} contains a file named {rel}, a name the bucket layout "
                            "reserves; remove it first")
        if not re.fullmatch(MARKER_PATH_PATTERN, rel):
            raise ToolError(
                f"{saved_model_dir} contains a file the serving sync cannot handle: {rel!r}. File names "
                "must be printable ASCII without '\"' or '\\' and without leading or trailing blanks "
                "(components/model_contract.py MARKER_PATH_PATTERN); rename it"
            )
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


def _publisher() -> str:
    return f"model_tools {__version__} on {socket.gethostname()} (pid {os.getpid()})"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _published_refusal(model: str, version: int, target: str, next_free: int) -> ToolError:
    return ToolError(
        f"version {version} of model '{model}' already exists at {target} and is published (its "
        f"{COMPLETION_MARKER} marker exists). Published versions are immutable: pods that copied it "
        f"keep its old bytes, so it is never overwritten, not even with --force. Publish the new model "
        f"as a new version instead (omit --version to publish it as version {next_free})"
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
    """Upload ``saved_model_dir`` as ``<bucket_uri>/<model>/<version>/`` and write the marker last.

    The version number is claimed first (``_PUBLISHING``, created only if absent) and the marker
    is created only if absent, so a concurrent publisher of the same number fails instead of
    mixing its files into this one. ``force`` cleans up an *incomplete* version first; a published
    one is never replaced.
    """
    check_model_name(model)
    if version is not None:
        version = check_version(version)
    base = parse_bucket_uri(bucket_uri)
    files = collect_files(saved_model_dir)
    if storage is None:
        storage, base = open_storage(base)

    existing = {v.version: v for v in scan_versions(storage, base, model)}
    next_free = next_version(list(existing.values()))
    if version is None:
        version = next_free
    target = base.uri(model, version) + "/"
    prefix = _version_prefix(base, model, version)
    marker_key = prefix + COMPLETION_MARKER
    claim_key = prefix + PUBLISH_CLAIM
    replaced = version in existing
    if replaced and existing[version].complete:
        raise _published_refusal(model, version, target, next_free)
    if replaced and not force:
        raise ToolError(
            f"version {version} of model '{model}' already exists at {target} (incomplete: no "
            f"{COMPLETION_MARKER} marker, a failed upload or one still running); refusing to touch it. "
            f"Pass --force to clean it up and upload it again (only when no other publish of it is "
            f"running), or omit --version to publish as version {next_free}"
        )
    total = sum(f.size for f in files)
    done = 0
    again = f"python -m model_tools publish {saved_model_dir} --bucket-uri {base} --model {model}"
    rerun = f"{again} --version {version} --force"

    def lost_race(what: str) -> ToolError:
        return ToolError(
            f"another publish took version {version} of model '{model}' first ({what} at {target} already "
            f"exists): this publish stopped and published nothing. Publish again to get a new version "
            f"number:\n  {again}",
            exit_code=1,
        )

    try:
        if replaced:
            if storage.get_bytes(marker_key) is not None:  # published since the listing above
                raise _published_refusal(model, version, target, next_free + 1)
            log(f"cleaning up incomplete version {version} at {target} (--force)")
            storage.delete(sorted(storage.list(prefix)))
        claim = {"model": model, "version": version, "claimed_at": _now(), "claimed_by": _publisher()}
        try:
            storage.create_exclusive(claim_key, render_marker(claim), "application/json")
        except ObjectExists:
            raise lost_race(f"its {PUBLISH_CLAIM} claim") from None
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
        ours = {prefix + f.rel for f in files} | {claim_key}
        extra = sorted(k[len(prefix) :] for k in remote if k not in ours)
        if extra:
            raise StorageError(
                f"after upload the version holds objects that are not part of it: {', '.join(extra)} "
                "(another upload into the same version?)"
            )
        # The claim goes before the marker: a complete version holds exactly the marker's files.
        storage.delete([claim_key])
    except ToolError as e:
        if isinstance(e, StorageError):
            raise _upload_failed(model, version, done, len(files), str(e), rerun, 1) from None
        raise
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - any failure must leave a clear message
        raise _upload_failed(
            model, version, done, len(files), f"{type(e).__name__}: {e}", rerun,
            130 if isinstance(e, KeyboardInterrupt) else 1,
        ) from None

    marker = marker_document(
        model, version, {f.rel: (f.size, f.sha256) for f in files}, _now(), f"model_tools {__version__}"
    )
    try:
        storage.create_exclusive(marker_key, render_marker(marker), "application/json")
    except ObjectExists:
        raise ToolError(
            f"another publish wrote the {COMPLETION_MARKER} marker of version {version} of model "
            f"'{model}' at {target} first: this upload is NOT published, and the files it uploaded may "
            f"have replaced some of that version's (the serving sync refuses a version whose files do not "
            f"match its marker; check `python -m model_tools list`). Publish again to get a new version "
            f"number:\n  {again}",
            exit_code=1,
        ) from None
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        raise ToolError(
            f"all files of {model} version {version} were uploaded but writing {COMPLETION_MARKER} "
            f"failed: {e}\n"
            f"The version is NOT published. Re-run:\n  {rerun}",
            exit_code=1,
        ) from None
    log(f"published {target} (marker {COMPLETION_MARKER} written last)")
    return PublishResult(model, version, target, files, marker, replaced)


def _upload_failed(model: str, version: int, done: int, count: int, reason: str, rerun: str,
                   exit_code: int) -> ToolError:
    return ToolError(
        f"publishing {model} version {version} failed after {done}/{count} files: {reason}\n"
        f"No {COMPLETION_MARKER} marker was written, so version {version} is NOT published and the "
        f"serving sync ignores it.\nTo finish it, fix the cause and re-run:\n  {rerun}",
        exit_code=exit_code,
    )


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


def publish_to_all(
    saved_model_dir: str,
    bucket_uris: list[str],
    model: str,
    version: int | None = None,
    force: bool = False,
    progress: bool | None = None,
    storages: list[Storage | None] | None = None,
    log=print,
) -> list[PublishResult]:
    """Publish one version to several buckets (one per region, docs/multi-region.md), each with its own
    ``_COMPLETE`` written last in that bucket, under one version number in all of them.

    Why not S3 replication: replication does not keep the order of writes, so a replica can hold the
    marker before the files it lists; the serving sync does verify a copy against the marker before it
    uses it (components/serving/model_sync.py, sync.sh ``download_verified`` -> ``check_copy ... full``:
    a missing or different file discards the copy, "retrying next round"), so nothing incomplete is
    served, but the listing calls the version complete early and every pod of that region downloads and
    discards it each round until the files arrive. Writing each bucket
    directly keeps the marker's meaning in every region: present means complete.

    The number: ``version``, else the highest next free number over all buckets, so a stack file's
    ``versions: [N]`` means the same model in every region. Every bucket is checked before anything is
    uploaded (a version published in one of them is refused, as by :func:`publish`). Buckets are written
    one after the other; when one fails, the error names the buckets already published and the command
    that finishes the others with the same number.
    """
    if not bucket_uris:
        raise ToolError("give at least one --bucket-uri")
    bases = [parse_bucket_uri(uri) for uri in bucket_uris]
    seen: set[str] = set()
    for base in bases:
        if str(base) in seen:
            raise ToolError(f"--bucket-uri {base} is given twice: each bucket once")
        seen.add(str(base))
    storages = list(storages) if storages is not None else [None] * len(bases)
    if len(storages) != len(bases):
        raise ToolError(f"{len(storages)} storages for {len(bases)} bucket URIs")
    opened = []
    for base, storage in zip(bases, storages):
        opened.append((storage, base) if storage is not None else open_storage(base))
    check_model_name(model)
    if version is not None:
        version = check_version(version)
    existing = [{v.version: v for v in scan_versions(s, b, model)} for s, b in opened]
    if version is None:
        version = max(next_version(list(e.values())) for e in existing)
    for (storage, base), versions in zip(opened, existing):
        if version in versions and versions[version].complete:
            highest = max(next_version(list(e.values())) for e in existing)
            raise _published_refusal(model, version, base.uri(model, version) + "/", max(highest, version + 1))
    results: list[PublishResult] = []
    for index, (storage, base) in enumerate(opened):
        try:
            results.append(publish(saved_model_dir, str(base), model, version=version, force=force,
                                   progress=progress, storage=storage, log=log))
        except ToolError as error:
            done = ", ".join(r.uri for r in results) or "none"
            rest = " ".join(f"--bucket-uri {b}" for _, b in opened[index:])
            raise ToolError(
                f"{error}\nBuckets published with version {version} before this one: {done}. Finish the "
                f"others with the same number (a region must not serve another model under it):\n"
                f"  python -m model_tools publish {saved_model_dir} {rest} --model {model} --version {version}\n"
                "(with --force only where the error above asks for it: it cleans up an incomplete upload)",
                exit_code=error.exit_code,
            ) from None
    return results
