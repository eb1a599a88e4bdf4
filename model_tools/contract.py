"""Re-exports the bucket/label contract from ``components.model_contract`` (never redefined here).

``components`` lives at the repository root. When the tool runs from another directory the
root is not on ``sys.path``, so it is added once; ``components`` itself needs no Pulumi.
"""

import re
import sys
from pathlib import Path

try:
    from components.model_contract import (
        COMPLETION_MARKER,
        DEFAULT_MODELS_PREFIX,
        MODEL_NAME_PATTERN,
        VERSION_LABEL_PATTERN,
    )
except ImportError:  # pragma: no cover - depends on the caller's working directory
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from components.model_contract import (
        COMPLETION_MARKER,
        DEFAULT_MODELS_PREFIX,
        MODEL_NAME_PATTERN,
        VERSION_LABEL_PATTERN,
    )

from model_tools.errors import ToolError

__all__ = [
    "COMPLETION_MARKER",
    "DEFAULT_MODELS_PREFIX",
    "MODEL_NAME_PATTERN",
    "VERSION_LABEL_PATTERN",
    "check_label",
    "check_model_name",
    "check_version",
]


def check_model_name(name: str) -> str:
    """Return ``name`` if it matches MODEL_NAME_PATTERN, else raise ToolError."""
    if not re.match(MODEL_NAME_PATTERN, name or ""):
        raise ToolError(
            f"invalid model name {name!r}: must match {MODEL_NAME_PATTERN} "
            "(lower-case letters, digits, '-' and '_', at most 63 characters)"
        )
    return name


def check_label(label: str) -> str:
    """Return ``label`` if TF Serving accepts it as a version label, else raise ToolError."""
    if not re.match(VERSION_LABEL_PATTERN, label or ""):
        raise ToolError(f"invalid version label {label!r}: must match {VERSION_LABEL_PATTERN}")
    return label


def check_version(version) -> int:
    """Return ``version`` as a positive int (TF Serving versions are positive integers)."""
    if isinstance(version, bool):
        raise ToolError(f"invalid version {version!r}: must be a positive integer")
    if isinstance(version, int):
        value = version
    elif isinstance(version, str) and version.strip().isdigit():
        value = int(version.strip())
    else:
        raise ToolError(f"invalid version {version!r}: must be a positive integer")
    if value < 1:
        raise ToolError(f"invalid version {version!r}: must be a positive integer")
    return value
