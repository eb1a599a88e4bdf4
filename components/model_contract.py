"""The contract between the model tooling (``model_tools``) and the serving sync container.

Both sides import these names, so a publisher and a reader can never disagree on the layout.
This module has no dependencies: the model tooling imports it without Pulumi installed.

Layout of a model bucket::

    <scheme>://<bucket>/<prefix>/<model>/<version>/_PUBLISHING    <- while an upload runs (a claim)
    <scheme>://<bucket>/<prefix>/<model>/<version>/saved_model.pb
    <scheme>://<bucket>/<prefix>/<model>/<version>/variables/...
    <scheme>://<bucket>/<prefix>/<model>/<version>/_COMPLETE      <- written last

A version directory is *published* only once ``_COMPLETE`` exists in it. The sync container
copies published versions only, so TF Serving never sees half an upload.

Rules both sides rely on:

* **Claim.** A publisher first creates ``_PUBLISHING`` in the version directory *only if it does
  not exist* (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``), so two publishers can never
  upload into the same version number; it deletes the claim just before writing the marker.
* **Marker.** ``_COMPLETE`` is created the same conditional way, so it is written once: a second
  writer fails instead of replacing it. It is exactly ``render_marker(marker_document(...))``:
  JSON with ``indent=2, sort_keys=True``, listing every file of the version with its size and
  sha256. The sync script (``components/serving/model_sync.py``) reads this layout line by line
  with awk (the sync images have no JSON parser) and refuses any other layout, so the layout is
  part of the contract: change it on both sides at once.
* **File names** in a version are printable ASCII without ``"`` or ``\\`` and without leading or
  trailing blanks (``MARKER_PATH_PATTERN``), so they appear unescaped in the marker, and
  ``RESERVED_NAMES`` are never published as files.
* **Immutable versions.** A published version never gets new bytes under the same number
  (``publish --force`` only cleans up an incomplete one). The sync verifies each copy against the
  marker before TF Serving can see it, keeps a copy of the marker in the local version directory
  and reports, without replacing what it serves, a version whose marker changed in the bucket.
"""

from __future__ import annotations

import json

COMPLETION_MARKER = "_COMPLETE"
"""Object name written last into ``<prefix>/<model>/<version>/`` when a version is fully uploaded."""

PUBLISH_CLAIM = "_PUBLISHING"
"""Object a publisher creates (only if absent) in the version directory before uploading into it,
and deletes just before writing the marker: two publishers never share a version number."""

SYNC_STATE_FILE = ".model-sync"
"""File the sync script keeps in each local version directory next to its copy of the marker: the
marker's identity in the bucket listing (S3 ETag, GCS size and creation time) when it was copied."""

RESERVED_NAMES = (COMPLETION_MARKER, PUBLISH_CLAIM, SYNC_STATE_FILE)
"""Top-level names in a version directory that are never a published file."""

MARKER_PATH_PATTERN = r"^[!#-\[\]-~]([ !#-\[\]-~]*[!#-\[\]-~])?$"
"""Relative paths of published files: printable ASCII except ``"`` and ``\\``, no leading or trailing
blank (JSON writes them unescaped, and the sync's awk and ``read`` keep them intact)."""

DEFAULT_MODELS_PREFIX = "models"
"""Key prefix under which models live in the bucket (config key ``modelBucketPrefix``)."""

MODEL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
"""Allowed model names: usable in a URL path, a bucket key and a Kubernetes label value."""

VERSION_LABEL_PATTERN = r"^[a-zA-Z0-9_]+$"
"""TF Serving's rule for version label names (model_server_config.proto)."""


def marker_document(model: str, version: int, files: dict[str, tuple[int, str]], published_at: str,
                    published_by: str) -> dict:
    """The marker's content: ``files`` maps each relative path to ``(size, sha256 hex)``."""
    return {
        "model": model,
        "version": version,
        "file_count": len(files),
        "total_bytes": sum(size for size, _ in files.values()),
        "files": {rel: {"size": size, "sha256": sha256} for rel, (size, sha256) in files.items()},
        "published_at": published_at,
        "published_by": published_by,
    }


def render_marker(marker: dict) -> bytes:
    """The marker's bytes, in the one layout the sync script reads (see the module docstring)."""
    return json.dumps(marker, indent=2, sort_keys=True).encode()
