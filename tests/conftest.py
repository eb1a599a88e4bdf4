"""Shared fixtures: the real program run on Pulumi's mock engine, once per stack and session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

# Before anything imports grpc (Pulumi's mock engine runs on it): no gRPC fork handlers. Tests fork real
# servers (nginx, the AWS CLI, sh) from a process whose gRPC threads may be busy; gRPC's atfork child handler
# then skips or crashes ("fork_posix.cc: Other threads are currently calling into gRPC, skipping fork()
# handlers"), and under pytest-xdist a forked nginx died with SIGSEGV. The children exec at once and never
# use gRPC, so the handlers are not needed (grpc/grpc doc/fork_support.md: GRPC_ENABLE_FORK_SUPPORT).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest
import yaml

from stacks.mock_engine import Recording, run_program
from stacks.plan import ROOT, plan_stack
from stacks.stack_files import load_stack_config


@pytest.fixture(scope="session")
def dev() -> Recording:
    return plan_stack("dev")


@pytest.fixture(scope="session")
def prod() -> Recording:
    return plan_stack("prod")


@pytest.fixture(scope="session")
def gke() -> Recording:
    return plan_stack("gke-dev")


def stack_file_with(tmp_path: Path, base: str = "dev", **overrides: object) -> Path:
    """A copy of ``Pulumi.<base>.yaml`` with some project keys replaced (key without namespace)."""
    data = yaml.safe_load((ROOT / f"Pulumi.{base}.yaml").read_text())
    for key, value in overrides.items():
        data["config"][f"tfserving-platform:{key}"] = value
    path = tmp_path / f"Pulumi.{base}-variant.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def plan_with(tmp_path):
    """Plan the dev stack with some keys overridden: ``plan_with(servingGpus=0, ...)``."""

    def run(base: str = "dev", **overrides: object) -> Recording:
        path = stack_file_with(tmp_path, base, **overrides)
        cfg = load_stack_config(ROOT / "Pulumi.yaml", path, base)
        return run_program(ROOT / "__main__.py", base, cfg.project, cfg.config, cfg.secret_keys)

    return run


def k8s_objects(recording: Recording, kind: str) -> list[dict]:
    """The inputs (manifests) of every Kubernetes object of a kind."""
    return [r.inputs for r in recording.resources if r.inputs.get("kind") == kind]


def k8s_object(recording: Recording, kind: str, name: str) -> dict:
    """The inputs (manifest) of one Kubernetes object by kind and metadata.name."""
    matches = [o for o in k8s_objects(recording, kind) if (o.get("metadata") or {}).get("name") == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def config_volume_name(deployment: dict) -> str:
    """The ConfigMap a Deployment manifest mounts as its ``config`` volume (one immutable ConfigMap per
    revision, named ``<server>-config-<content hash>``)."""
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    return volume["configMap"]["name"]


def mounted_config(recording: Recording, deployment: str) -> dict[str, str]:
    """The data of the ConfigMap a Deployment mounts as its ``config`` volume."""
    name = config_volume_name(k8s_object(recording, "Deployment", deployment))
    return k8s_object(recording, "ConfigMap", name)["data"]


def policy(text: str) -> dict:
    return json.loads(text)


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (Debian's prometheus package, installed by scripts/ensure-tools.sh)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: run scripts/ensure-tools.sh "
                    "(or apt-get install --no-install-recommends prometheus)", pytrace=False)
    return path


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


SCANNED_STACKS = ["dev", "prod", "gke-dev"]


@pytest.fixture(scope="session")
def checkov() -> Path:
    """checkov in .venv-checkov (scripts/ensure-tools.sh); a failure, not a skip, when missing."""
    from stacks.scan import ScanError, find_checkov

    try:
        return find_checkov()
    except ScanError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session", params=SCANNED_STACKS)
def stack_scan(request, checkov, tmp_path_factory):
    """One checkov scan per stack (manifests and cloud resources), shared by every test that judges it."""
    from stacks.scan import scan_stack

    return scan_stack(request.param, tmp_path_factory.mktemp(f"scan-{request.param}"))
