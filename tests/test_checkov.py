"""checkov's Kubernetes checks on the rendered manifests of every stack.

The manifests come from the offline plan (``python -m stacks plan --manifests DIR``), exactly as
``make plan`` writes them; checkov runs from its own venv (``.venv-checkov``, made by
``scripts/ensure-tools.sh``). Skipped checks live in ``.checkov.yaml`` only, each with its reason.

Flags: ``--quiet`` is left out on purpose: with ``-o json`` it drops the passed (and skipped)
checks from the results and keeps only their counts, and the test needs the passed checks of each
Deployment to prove that checkov evaluated them. ``--compact`` leaves the code blocks out of the JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stacks.plan import ROOT

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CONFIG = ROOT / ".checkov.yaml"
STACKS = ["dev", "prod", "gke-dev"]
# checkov 3.3 runs about 88 checks on a Deployment (the TF Serving one passes 87): fewer passed
# than this means checkov did not really evaluate it.
MIN_PASSED_PER_DEPLOYMENT = 50


def checkov_command(directory: Path) -> list[str]:
    return [str(CHECKOV), "-d", str(directory), "--framework", "kubernetes", "--skip-download",
            "--compact", "-o", "json", "--config-file", str(CONFIG)]


@pytest.fixture(scope="module")
def checkov() -> Path:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV.relative_to(ROOT)} is missing: run scripts/ensure-tools.sh "
                    "(make test does)", pytrace=False)
    return CHECKOV


def render_manifests(stack: str, out_dir: Path) -> list[Path]:
    result = subprocess.run([sys.executable, "-m", "stacks", "plan", "--stack", stack,
                             "--manifests", str(out_dir), "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"plan of stack {stack} failed:\n{result.stdout}{result.stderr}"
    return sorted(out_dir.rglob("*.yaml"))


def run_checkov(directory: Path) -> dict:
    result = subprocess.run(checkov_command(directory), cwd=directory, capture_output=True, text=True,
                            timeout=300)
    # Exit 0: no failed check; 1: some failed check; anything else: checkov itself broke.
    assert result.returncode in (0, 1), (f"checkov exited {result.returncode}:\n"
                                         f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError as err:
        raise AssertionError(f"checkov printed no JSON ({err}):\n{result.stdout[-3000:]}"
                             f"{result.stderr[-3000:]}") from None
    # One framework gives one report; several give a list; nothing found gives a bare summary.
    reports = report if isinstance(report, list) else [report]
    kubernetes = [r for r in reports if r.get("check_type") == "kubernetes"]
    assert len(kubernetes) == 1, f"no kubernetes report from checkov (nothing scanned?): {report}"
    report = kubernetes[0]
    assert (result.returncode == 1) == bool(report["summary"]["failed"]), result.returncode
    return report


@pytest.fixture(scope="module", params=STACKS)
def scan(request, checkov, tmp_path_factory) -> tuple[str, list[Path], dict]:
    out_dir = tmp_path_factory.mktemp(f"manifests-{request.param}")
    files = render_manifests(request.param, out_dir)
    assert files, f"the plan of stack {request.param} wrote no manifests"
    return request.param, files, run_checkov(out_dir)


def test_no_check_fails(scan):
    stack, _, report = scan
    summary = report["summary"]
    print(f"checkov {summary['checkov_version']} on stack {stack}: passed {summary['passed']}, "
          f"failed {summary['failed']}, skipped {summary['skipped']}, "
          f"parsing errors {summary['parsing_errors']}, resources {summary['resource_count']}")
    failed = [f"{c['check_id']} {c['check_name']!r}: {c['resource']} in {c['file_path']}"
              for c in report["results"]["failed_checks"]]
    assert not failed, (f"stack {stack}: {len(failed)} failed checkov checks (fix the manifests, or "
                        "skip with a reason in .checkov.yaml):\n  " + "\n  ".join(failed))
    assert summary["parsing_errors"] == 0, report["results"].get("parsing_errors")


def test_checkov_evaluated_every_deployment(scan):
    # Guard against a vacuous pass: each Deployment of the plan got a full set of checks.
    stack, files, report = scan
    deployments = set()
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                meta = doc["metadata"]
                deployments.add(f"Deployment.{meta.get('namespace', 'default')}.{meta['name']}")
    assert deployments, f"stack {stack}: the plan has no Deployment"
    passed: dict[str, int] = {}
    for check in report["results"]["passed_checks"]:
        passed[check["resource"]] = passed.get(check["resource"], 0) + 1
    for name in sorted(deployments):
        assert passed.get(name, 0) >= MIN_PASSED_PER_DEPLOYMENT, (
            f"stack {stack}: checkov passed only {passed.get(name, 0)} checks on {name} "
            f"(want >= {MIN_PASSED_PER_DEPLOYMENT}); passed per resource: {passed}")


def test_every_skip_is_documented():
    # .checkov.yaml is the one place for skips (Kubernetes checks here, cloud checks of the
    # Terraform-plan scan in stacks/scan.py), and each one says why (a comment naming the check).
    # `CKV_X_n:<regex>` skips a check only in the files whose path matches the regex.
    text = CONFIG.read_text()
    config = yaml.safe_load(text) or {}
    assert set(config) <= {"skip-check"}, f"unexpected keys in .checkov.yaml: {sorted(config)}"
    skips = config.get("skip-check") or []
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for entry in skips:
        check_id, _, pattern = entry.partition(":")
        assert re.fullmatch(r"CKV2?_(K8S|AWS|GCP)_\d+", check_id), \
            f"not a Kubernetes, AWS or GCP check id: {entry}"
        if pattern:
            re.compile(pattern)
        assert re.search(rf"#\s*{check_id}\b.*\S", comments), f"{check_id} is skipped without a reason"


def test_no_inline_skips(scan):
    # The only other way to skip: a `checkov.io/skip<n>: CKV_K8S_<id>=reason` annotation in a
    # manifest. Skips from .checkov.yaml are not run at all, so they never count as skipped here.
    stack, _, report = scan
    inline = [f"{c['check_id']}: {c['resource']} in {c['file_path']}"
              for c in report["results"]["skipped_checks"]]
    assert not inline, (f"stack {stack}: checks skipped by annotations (move them to .checkov.yaml "
                        "with a reason):\n  " + "\n  ".join(inline))
