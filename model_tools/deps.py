"""Optional dependencies: which package a missing module comes from, and the command that installs it.

``make plan`` installs only requirements.txt (Pulumi); the model tooling's packages (TensorFlow, boto3,
the GCS client, ...) come from model_tools/requirements*.txt. A subcommand that reaches a missing one
says which package it needs and how to install it, instead of a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

from model_tools.errors import ToolError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REQUIREMENTS = HERE / "requirements.txt"
REQUIREMENTS_NODEPS = HERE / "requirements-nodeps.txt"

# Import name (a module or a package prefix) -> the distribution pinned in the requirements files.
# Longest prefix wins: `google.cloud.storage` is google-cloud-storage, `google.protobuf` is protobuf.
DISTRIBUTIONS = {
    "keras": "keras",
    "tensorflow": "tensorflow-cpu",  # provides the `tensorflow` modules (see requirements.txt)
    "tensorflow_serving": "tensorflow-serving-api",
    "sklearn": "scikit-learn",
    "scipy": "scipy",
    "numpy": "numpy",
    "boto3": "boto3",
    "botocore": "botocore",
    "google.cloud.storage": "google-cloud-storage",
    "google.cloud": "google-cloud-storage",
    "google.api_core": "google-api-core",
    "google.auth": "google-auth",
    "google.protobuf": "protobuf",
    "ruamel": "ruamel.yaml",
    "tqdm": "tqdm",
    "grpc": "grpcio",
}


class MissingDependency(ToolError):
    """A subcommand needs a package that is not installed."""


def distribution(module: str) -> str | None:
    """The pinned distribution a module comes from, or None if it is not a model-tooling dependency."""
    for prefix in sorted(DISTRIBUTIONS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return DISTRIBUTIONS[prefix]
    return None


def _pin(dist: str) -> tuple[str, Path] | None:
    for path in (REQUIREMENTS, REQUIREMENTS_NODEPS):
        for line in path.read_text().splitlines():
            requirement = line.split("#", 1)[0].strip()
            name = re.split(r"[\[=<>~! ]", requirement, maxsplit=1)[0]
            if name.lower() == dist.lower():
                return requirement, path
    return None


def _shown(path: Path | str) -> str:
    """A path as the user can type it from where they are: relative below the working directory."""
    text = os.path.abspath(path)
    cwd = os.getcwd()
    return os.path.relpath(text, cwd) if text.startswith(cwd + os.sep) else text


def install_command() -> str:
    """The exact command that installs the model tooling into the interpreter running this."""
    python = _shown(sys.executable)
    command = (f"{python} -m pip install -r {_shown(REQUIREMENTS)} && "
               f"{python} -m pip install --no-deps -r {_shown(REQUIREMENTS_NODEPS)}")
    # `make models` installs into the repository's .venv: only offer it to that interpreter.
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        where = "" if Path.cwd().resolve() == ROOT else f" in {ROOT}"
        return f"make models{where}\n  or: {command}"
    return command


def missing_message(command: str, module: str) -> str | None:
    """The error for `command` failing to import `module`, or None if that is not an optional dependency."""
    dist = distribution(module)
    if dist is None:
        return None
    pinned = _pin(dist)
    package = f"{pinned[0]} from {_shown(pinned[1])}" if pinned else dist
    return (f"`{command}` needs the Python package {dist} ({package}), which is not installed "
            f"for {_shown(sys.executable)} (no module named {module!r}). Install the model tooling with:\n"
            f"  {install_command()}")


def require(command: str, *modules: str) -> None:
    """Fail now, before any work, if one of ``modules`` cannot be found (nothing is imported)."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            raise MissingDependency(missing_message(command, module) or f"`{command}` needs {module}")
