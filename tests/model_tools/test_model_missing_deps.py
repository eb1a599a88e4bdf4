"""`python -m model_tools` where the model tooling is not installed (after `make plan` only): each
subcommand names the missing package and the command that installs it, exit 2, no traceback.

The import really fails: a meta-path finder in a sitecustomize blocks the modules (the way they are
absent from a venv made by `make plan`), nothing about the message is mocked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model_tools.deps import DISTRIBUTIONS, REQUIREMENTS, REQUIREMENTS_NODEPS

REPO = Path(__file__).resolve().parents[2]
# What model_tools/requirements*.txt add to a venv that has requirements.txt (Pulumi brings grpcio,
# protobuf and PyYAML, so those stay importable).
NOT_AFTER_MAKE_PLAN = ("keras", "tensorflow", "tensorflow_serving", "sklearn", "scipy", "numpy", "boto3",
                       "botocore", "google.cloud", "google.api_core", "google.auth", "ruamel", "tqdm")

BLOCKER = textwrap.dedent("""
    import os, sys

    BLOCKED = [m for m in os.environ["BLOCK_MODULES"].split(",") if m]

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == m or name.startswith(m + ".") for m in BLOCKED):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
""")


def pin(distribution: str) -> tuple[str, str]:
    for path in (REQUIREMENTS, REQUIREMENTS_NODEPS):
        for line in path.read_text().splitlines():
            if re.match(rf"{re.escape(distribution)}(\[|==)", line):
                return line.strip(), path.relative_to(REPO).as_posix()
    raise AssertionError(f"{distribution} is not pinned")


def run_without(tmp_path: Path, blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}", "BLOCK_MODULES": ",".join(blocked),
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run([sys.executable, "-m", "model_tools", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, str]:
    saved_model = tmp_path / "sm"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"x")
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text((REPO / "Pulumi.dev.yaml").read_text())
    return {"sm": str(saved_model), "stack": str(stack_file), "out": str(tmp_path / "out")}


# subcommand arguments, the module it reaches first, and the distribution that provides it
CASES = {
    "export": (["export", "--out", "{out}"], "keras", "keras"),
    "inspect": (["inspect", "{sm}"], "tensorflow", "tensorflow-cpu"),
    "publish-s3": (["publish", "{sm}", "--bucket-uri", "s3://b/models", "--model", "digits"], "boto3", "boto3"),
    "publish-gs": (["publish", "{sm}", "--bucket-uri", "gs://b/models", "--model", "digits"],
                   "google.api_core", "google-api-core"),
    "list": (["list", "--bucket-uri", "s3://b/models"], "boto3", "boto3"),
    "promote": (["promote", "--stack-file", "{stack}", "--model", "digits", "--version", "2",
                 "--bucket-uri", "s3://b/models"], "ruamel", "ruamel.yaml"),
    "rollback": (["rollback", "--stack-file", "{stack}", "--model", "digits", "--bucket-uri", "s3://b/models"],
                 "ruamel", "ruamel.yaml"),
    "check": (["check", "--stack-file", "{stack}", "--bucket-uri", "s3://b/models"], "ruamel", "ruamel.yaml"),
    "smoke": (["smoke", "--rest-url", "http://127.0.0.1:9", "--model", "digits", "--grpc-target", "127.0.0.1:9"],
              "numpy", "numpy"),
    "tflite": (["tflite", "{sm}", "--out", "{out}.tflite"], "tensorflow", "tensorflow-cpu"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_subcommand_without_its_packages_says_what_to_install(case, tmp_path, inputs):
    args, module, distribution = CASES[case]
    done = run_without(tmp_path, NOT_AFTER_MAKE_PLAN, *[a.format(**inputs) for a in args])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    requirement, path = pin(distribution)
    command = "smoke --grpc-target" if args[0] == "smoke" else args[0]
    first, *rest = done.stderr.splitlines()
    assert first.startswith(f"error: `{command}` needs the Python package {distribution} ({requirement} from "
                            f"{path}), which is not installed for ")
    assert first.endswith(f"(no module named {module!r}). Install the model tooling with:")
    python = os.path.relpath(sys.executable, REPO) if sys.executable.startswith(f"{REPO}{os.sep}") else sys.executable
    pip = (f"{python} -m pip install -r model_tools/requirements.txt && "
           f"{python} -m pip install --no-deps -r model_tools/requirements-nodeps.txt")
    in_repo_venv = Path(sys.prefix).resolve() == (REPO / ".venv").resolve()
    assert rest == (["  make models", f"  or: {pip}"] if in_repo_venv else [f"  {pip}"])
    # Nothing was sent or written before the check.
    assert done.stdout == "" and not Path(inputs["out"]).exists()


def test_grpc_smoke_names_the_nodeps_package(tmp_path):
    """tensorflow-serving-api is installed with --no-deps from its own file: the message says which."""
    done = run_without(tmp_path, ("tensorflow_serving",), "smoke", "--rest-url", "http://127.0.0.1:9",
                       "--model", "digits", "--grpc-target", "127.0.0.1:9")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    requirement, path = pin("tensorflow-serving-api")
    assert path == "model_tools/requirements-nodeps.txt"
    assert f"needs the Python package tensorflow-serving-api ({requirement} from {path})" in done.stderr


def test_a_missing_module_that_is_not_a_dependency_is_not_hidden(tmp_path, inputs):
    """Only the packages of model_tools/requirements*.txt get the install hint; any other missing module
    is a bug and keeps its traceback."""
    done = run_without(tmp_path, ("model_tools.publish",), "publish", inputs["sm"], "--bucket-uri", "s3://b/m",
                       "--model", "digits")
    assert done.returncode == 1 and "ModuleNotFoundError: No module named 'model_tools.publish'" in done.stderr


def test_every_known_distribution_is_pinned_in_the_requirements():
    for distribution in set(DISTRIBUTIONS.values()):
        requirement, _ = pin(distribution)
        assert "==" in requirement, requirement


def test_ship_requirements_pin_what_the_test_requirements_pin():
    """`make ship-offline` installs model_tools/requirements-ship.txt, `make test` requirements-test.txt:
    the same moto and AWS CLI, so the ship path runs with what the tests run with."""
    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            match = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", line)
            if match:
                found[match.group(1).lower()] = line.strip()
        return found

    ship, test = pins(REPO / "model_tools" / "requirements-ship.txt"), pins(REPO / "requirements-test.txt")
    assert ship and all(test.get(name) == line for name, line in ship.items()), (ship, test)
