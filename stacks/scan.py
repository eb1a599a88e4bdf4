"""checkov on a stack's offline plan: the Kubernetes manifests and the cloud resources.

:func:`scan_stack` plans a stack on the mock engine (:func:`stacks.plan.plan_stack`), writes

* ``<workdir>/manifests/``: every Kubernetes object (:func:`stacks.plan.write_manifests`), and
* ``<workdir>/plan-<stack>.json``: the AWS/GCP resources as a Terraform-plan JSON
  (:func:`stacks.terraform_plan.to_terraform_plan`),

and runs checkov on both, side by side::

    checkov -d manifests --framework kubernetes --skip-download --compact -o json --config-file .checkov.yaml
    checkov -f plan-<stack>.json --framework terraform_plan --skip-download --compact -o json \
        --config-file .checkov.yaml

``.checkov.yaml`` is the one file of skipped checks, each with its reason. An entry
``CKV_X_1:<regex>`` skips a check only where the scanned file's path matches the regex: the plan
file carries the stack's name so that a skip can be scoped to one stack (``plan-dev\\.json$``).

checkov comes from ``.venv-checkov/bin/checkov`` (made by ``scripts/ensure-tools.sh``), or from the
environment variable ``CHECKOV``. ``--quiet`` is left out on purpose: with ``-o json`` it drops the
passed checks, which tell how much checkov really evaluated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from stacks.mock_engine import Recording

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
DEFAULT_CONFIG = ROOT / ".checkov.yaml"
KUBERNETES = "kubernetes"
TERRAFORM_PLAN = "terraform_plan"
FRAMEWORKS = (KUBERNETES, TERRAFORM_PLAN)
CHECKOV_TIMEOUT = 300


class ScanError(RuntimeError):
    """checkov is missing, broke, or printed no report."""


@dataclass(frozen=True)
class Check:
    """One checkov result: the check, the resource it judged, and (cloud) the Pulumi resource."""

    check_id: str
    resource: str
    name: str
    file: str = ""
    guideline: str = ""
    pulumi_urn: str = ""

    def to_json(self) -> dict[str, str]:
        data = {"id": self.check_id, "resource": self.resource, "name": self.name, "file": self.file}
        if self.guideline:
            data["guideline"] = self.guideline
        if self.pulumi_urn:
            data["pulumi_urn"] = self.pulumi_urn
        return data


@dataclass
class FrameworkResult:
    """checkov's counts and results for one framework (``kubernetes`` or ``terraform_plan``)."""

    framework: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    parsing_errors: int = 0
    resource_count: int = 0
    checkov_version: str = ""
    failed_checks: list[Check] = field(default_factory=list)
    passed_checks: list[Check] = field(default_factory=list)
    skipped_checks: list[Check] = field(default_factory=list)

    def passed_by_resource(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for check in self.passed_checks:
            counts[check.resource] = counts.get(check.resource, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "skipped": self.skipped,
                "parsing_errors": self.parsing_errors, "resource_count": self.resource_count,
                "failed_checks": [c.to_json() for c in self.failed_checks]}


@dataclass
class ScanResult:
    """The scan of one stack: per framework counts and failed checks, plus what was not mapped."""

    stack: str
    frameworks: dict[str, FrameworkResult]
    config_file: Path | None = None
    skip_config: list[str] = field(default_factory=list)
    unmapped: dict[str, list[str]] = field(default_factory=dict)
    mapping_problems: list[str] = field(default_factory=list)
    workdir: Path | None = None

    @property
    def checkov_version(self) -> str:
        return next((f.checkov_version for f in self.frameworks.values() if f.checkov_version), "")

    @property
    def failed_checks(self) -> list[tuple[str, Check]]:
        return [(name, check) for name, fw in self.frameworks.items() for check in fw.failed_checks]

    @property
    def ok(self) -> bool:
        """No failed check, no parsing error, and every cloud resource mapped (so judged)."""
        return (not self.failed_checks and not self.unmapped and not self.mapping_problems
                and all(fw.parsing_errors == 0 for fw in self.frameworks.values()))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``json.dumps(result.to_json())``)."""
        return {
            "stack": self.stack,
            "checkov_version": self.checkov_version,
            "ok": self.ok,
            "config_file": str(self.config_file) if self.config_file else None,
            "skip_config": list(self.skip_config),
            "frameworks": {name: fw.to_json() for name, fw in self.frameworks.items()},
            "unmapped_types": self.unmapped,
            "mapping_problems": list(self.mapping_problems),
        }

    def to_markdown(self) -> str:
        """A compact summary for a PR comment: a table of counts, then every failed check."""
        failed = self.failed_checks
        version = f" (checkov {self.checkov_version})" if self.checkov_version else ""
        verdict = "no failed checks" if self.ok else (
            f"{len(failed)} failed check{'s' if len(failed) != 1 else ''}" if failed else "problems")
        lines = [f"### checkov: stack `{self.stack}`: {verdict}{version}", "",
                 "| framework | passed | failed | skipped | resources | parsing errors |",
                 "|---|---:|---:|---:|---:|---:|"]
        for name, fw in self.frameworks.items():
            lines.append(f"| {name} | {fw.passed} | {fw.failed} | {fw.skipped} | {fw.resource_count} "
                         f"| {fw.parsing_errors} |")
        if self.skip_config:
            config = self.config_file.name if self.config_file else "the config file"
            lines += ["", f"Not run (skipped in `{config}`, reasons there): "
                      + ", ".join(f"`{s}`" for s in self.skip_config)]
        if self.unmapped:
            lines += ["", "**Cloud resources not judged** (no Terraform type in "
                      "`stacks/terraform_plan.py`): "
                      + "; ".join(f"`{t}` ({', '.join(names)})" for t, names in self.unmapped.items())]
        if self.mapping_problems:
            lines += ["", "**Mapping problems:**"] + [f"- {p}" for p in self.mapping_problems]
        if failed:
            lines += ["", "| framework | check | resource | name |", "|---|---|---|---|"]
            for name, check in failed:
                check_cell = (f"[{check.check_id}]({check.guideline})" if check.guideline
                              else check.check_id)
                lines.append(f"| {name} | {check_cell} | `{_cell(check.resource)}` | {_cell(check.name)} |")
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def find_checkov() -> Path:
    """The checkov binary: ``$CHECKOV`` (a path or a command on PATH), else ``.venv-checkov``."""
    configured = os.environ.get("CHECKOV")
    if configured:
        found = Path(configured) if Path(configured).exists() else (
            Path(shutil.which(configured)) if shutil.which(configured) else None)
        if found is None:
            raise ScanError(f"CHECKOV={configured} is not a file nor a command on PATH")
        return found
    if not DEFAULT_CHECKOV.exists():
        raise ScanError(f"checkov is missing: {DEFAULT_CHECKOV} does not exist. Run "
                        "scripts/ensure-tools.sh checkov (make test does), or set CHECKOV to a "
                        "checkov 3.3 binary")
    return DEFAULT_CHECKOV


def skip_entries(config_file: Path | None) -> list[str]:
    """The ``skip-check`` entries of a checkov config file."""
    if config_file is None or not config_file.exists():
        return []
    config = yaml.safe_load(config_file.read_text()) or {}
    return [str(s) for s in config.get("skip-check") or []]


def checkov_command(checkov: Path, framework: str, target: str, config_file: Path | None) -> list[str]:
    flag = "-d" if framework == KUBERNETES else "-f"
    command = [str(checkov), flag, target, "--framework", framework, "--skip-download", "--compact",
               "-o", "json"]
    if config_file is not None:
        command += ["--config-file", str(config_file)]
    return command


def _parse_report(framework: str, stdout: str, returncode: int, stderr: str,
                  addresses: dict[str, str] | None = None) -> FrameworkResult:
    # Exit 0: no failed check; 1: some failed check; anything else: checkov itself broke.
    if returncode not in (0, 1):
        raise ScanError(f"checkov ({framework}) exited {returncode}:\n{stdout[-3000:]}{stderr[-3000:]}")
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError as err:
        raise ScanError(f"checkov ({framework}) printed no JSON ({err}):\n{stdout[-3000:]}"
                        f"{stderr[-3000:]}") from None
    # One framework gives one report; several give a list; nothing found gives a bare summary.
    reports = report if isinstance(report, list) else [report]
    matching = [r for r in reports if isinstance(r, dict) and r.get("check_type") == framework]
    if not matching:
        summary = report if isinstance(report, dict) else {}
        return FrameworkResult(framework, passed=int(summary.get("passed", 0)),
                               failed=int(summary.get("failed", 0)),
                               skipped=int(summary.get("skipped", 0)),
                               parsing_errors=int(summary.get("parsing_errors", 0)),
                               resource_count=int(summary.get("resource_count", 0)),
                               checkov_version=str(summary.get("checkov_version", "")))
    found = matching[0]
    summary, results = found["summary"], found.get("results") or {}
    if (returncode == 1) != bool(summary.get("failed")):
        raise ScanError(f"checkov ({framework}) exited {returncode} with "
                        f"{summary.get('failed')} failed checks")
    addresses = addresses or {}

    def checks(key: str) -> list[Check]:
        return [Check(check_id=c["check_id"], resource=c.get("resource", ""),
                      name=c.get("check_name", ""), file=c.get("file_path", ""),
                      guideline=c.get("guideline") or "",
                      pulumi_urn=addresses.get(c.get("resource", ""), ""))
                for c in results.get(key) or []]

    return FrameworkResult(
        framework, passed=summary["passed"], failed=summary["failed"], skipped=summary["skipped"],
        parsing_errors=summary.get("parsing_errors", 0), resource_count=summary.get("resource_count", 0),
        checkov_version=summary.get("checkov_version", ""), failed_checks=checks("failed_checks"),
        passed_checks=checks("passed_checks"), skipped_checks=checks("skipped_checks"))


def run_checkov(targets: dict[str, str], cwd: Path, config_file: Path | None = DEFAULT_CONFIG,
                addresses: dict[str, str] | None = None) -> dict[str, FrameworkResult]:
    """Run checkov once per framework (``{framework: target}``), all at the same time, in ``cwd``."""
    checkov = find_checkov()
    running = {framework: subprocess.Popen(checkov_command(checkov, framework, target, config_file),
                                           cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True)
               for framework, target in targets.items()}
    results: dict[str, FrameworkResult] = {}
    try:
        for framework, process in running.items():
            try:
                stdout, stderr = process.communicate(timeout=CHECKOV_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise ScanError(f"checkov ({framework}) took more than {CHECKOV_TIMEOUT}s") from None
            results[framework] = _parse_report(framework, stdout, process.returncode, stderr, addresses)
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def plan_file_name(stack: str) -> str:
    return f"plan-{stack}.json"


def scan_recording(recording: Recording, workdir: Path, *, config_file: Path | None = DEFAULT_CONFIG,
                   frameworks: Iterable[str] = FRAMEWORKS) -> ScanResult:
    """Write a recording's manifests and Terraform plan under ``workdir`` and run checkov on them.

    ``<workdir>/manifests`` is emptied first, so files of an earlier scan do not linger.
    """
    from stacks.plan import write_manifests
    from stacks.terraform_plan import write_terraform_plan

    frameworks = tuple(frameworks)
    unknown = set(frameworks) - set(FRAMEWORKS)
    if unknown:
        raise ValueError(f"unknown frameworks {sorted(unknown)} (known: {', '.join(FRAMEWORKS)})")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    targets: dict[str, str] = {}
    plan: dict[str, Any] = {}
    if KUBERNETES in frameworks:
        manifests = workdir / "manifests"
        if manifests.exists():
            shutil.rmtree(manifests)
        manifests.mkdir()
        write_manifests(recording, manifests)
        targets[KUBERNETES] = "manifests"
    if TERRAFORM_PLAN in frameworks:
        plan = write_terraform_plan(recording, workdir / plan_file_name(recording.stack))
        targets[TERRAFORM_PLAN] = plan_file_name(recording.stack)
    pulumi_info = plan.get("pulumi", {})
    results = run_checkov(targets, workdir, config_file, pulumi_info.get("addresses"))
    return ScanResult(stack=recording.stack, frameworks={f: results[f] for f in frameworks},
                      config_file=config_file, skip_config=skip_entries(config_file),
                      unmapped=pulumi_info.get("unmapped", {}),
                      mapping_problems=pulumi_info.get("mapping_problems", []), workdir=workdir)


def scan_stack(stack: str, workdir: Path, *, config_file: Path | None = DEFAULT_CONFIG,
               stack_file: Path | None = None, frameworks: Iterable[str] = FRAMEWORKS) -> ScanResult:
    """Plan ``stack`` offline (``Pulumi.<stack>.yaml``, or ``stack_file``) and scan it with checkov.

    Raises :class:`ScanError` when checkov is missing or breaks, and whatever
    :func:`stacks.plan.plan_stack` raises when the stack does not plan.
    """
    from stacks.plan import plan_stack

    find_checkov()  # fail before the (slower) plan when checkov is missing
    recording = plan_stack(stack, stack_file)
    return scan_recording(recording, workdir, config_file=config_file, frameworks=frameworks)
