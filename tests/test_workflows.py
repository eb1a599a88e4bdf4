"""The GitHub Actions workflows (.github/workflows): linted by actionlint, and what they promise.

actionlint (``.venv/bin/actionlint``, from requirements-test.txt) checks the workflow syntax, the
expressions and their types, the inputs of known actions, the ``needs`` graph, untrusted input in
scripts and, through ShellCheck (Debian's ``shellcheck``, installed by scripts/ensure-tools.sh),
every ``run:`` block. Broken copies of the workflows prove the linter really fails on mistakes.

The structural tests pin down what the workflows are for: the PR runs the CI entry point, the
offline diff keeps one marked comment per stack, the cloud preview runs only where credentials are
configured, prod deploys only after dev and behind its environment, every action is pinned to a
major version, and every permission is declared and as small as the job allows.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stacks.plan import ROOT

WORKFLOWS_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml")) + sorted(WORKFLOWS_DIR.glob("*.yaml"))
PR = WORKFLOWS_DIR / "pr.yml"
DEPLOY = WORKFLOWS_DIR / "deploy.yml"
# Every stack with a stack file: the offline diff covers all of them, the cloud preview too.
STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
AWS_STACKS = ["dev", "prod"]
GCP_STACKS = ["gke-dev"]
MARKER = "<!-- tfplatform-offline-diff:${{ matrix.stack }} -->"
# owner/repo[/path]@vN: a major version tag, nothing floating (branch) or local.
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@v\d+$")


# --- actionlint ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shellcheck() -> str:
    path = shutil.which("shellcheck")
    if path is None:
        pytest.fail("shellcheck is not on PATH, so actionlint would skip the run: blocks: run "
                    "scripts/ensure-tools.sh (or apt-get install --no-install-recommends shellcheck)",
                    pytrace=False)
    return path


@pytest.fixture(scope="module")
def actionlint(shellcheck) -> list[str]:
    candidates = [Path(sys.executable).parent / "actionlint", ROOT / ".venv" / "bin" / "actionlint"]
    path = next((str(c) for c in candidates if c.exists()), None) or shutil.which("actionlint")
    if path is None:
        pytest.fail("actionlint is missing: pip install -r requirements-test.txt (make test does)",
                    pytrace=False)
    # -shellcheck names the binary so the check cannot silently fall back to "not found".
    return [path, "-no-color", "-oneline", "-shellcheck", shellcheck]


def lint(command: list[str], *files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *map(str, files)], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_there_are_workflows():
    assert {p.name for p in WORKFLOWS} >= {"pr.yml", "deploy.yml"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_passes(actionlint, workflow):
    result = lint(actionlint, workflow)
    assert result.returncode == 0, f"actionlint {workflow.name}:\n{result.stdout}{result.stderr}"


def test_actionlint_runs_shellcheck(actionlint):
    result = lint([*actionlint, "-verbose"], PR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Rule "shellcheck" was disabled' not in result.stderr, result.stderr


BROKEN_WORKFLOW = """\
on: push
permissions:
  contents: read
jobs:
  build:
    runs-on: ubuntu-latest
    {extra}
    steps:
      - uses: actions/checkout@v5
      - run: {run}
"""


@pytest.mark.parametrize(("extra", "run", "rule", "message"), [
    # An expression that does not parse.
    ("if: ${{ github.event_name == 'push' && ( }}", "echo ok", "expression", ""),
    # A key GitHub does not know.
    ("timeout-minute: 5", "echo ok", "syntax-check", "timeout-minute"),
    # A context property that does not exist.
    ("", "echo ${{ github.nonexistent_property }}", "expression", "nonexistent_property"),
    # Untrusted input pasted into a script (script injection).
    ("", 'echo "${{ github.event.pull_request.title }}"', "expression", "untrusted"),
    # ShellCheck: an unquoted variable (SC2086).
    ("", "ls $HOME/*.txt", "shellcheck", "SC2086"),
], ids=["bad-expression", "unknown-key", "unknown-property", "script-injection", "shellcheck"])
def test_actionlint_fails_on_a_broken_workflow(actionlint, tmp_path, extra, run, rule, message):
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    broken = workflows / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW.format(extra=extra, run=run))
    result = lint(actionlint, broken, cwd=tmp_path)
    assert result.returncode == 1, f"actionlint accepted a broken workflow:\n{result.stdout}{result.stderr}"
    assert f"[{rule}]" in result.stdout and message in result.stdout, result.stdout


@pytest.mark.parametrize(("workflow", "old", "new", "expected"), [
    ("pr.yml", "contents: read", "contents: reed", "permission"),
    ("pr.yml", "steps.diff.outputs.status", "steps.dif.outputs.status", "dif"),
    ("pr.yml", "role-to-assume:", "role-to-asume:", "role-to-asume"),
    ("deploy.yml", "needs: dev", "needs: staging", "staging"),
    ("deploy.yml", "cancel-in-progress: false", "cancel-in-progres: false", "cancel-in-progres"),
], ids=["bad-permission", "unknown-step-id", "unknown-action-input", "unknown-needs", "typo-key"])
def test_actionlint_fails_on_a_broken_copy(actionlint, tmp_path, workflow, old, new, expected):
    # The real workflows with one mistake each: the linter checks these files, not just toys.
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    text = (WORKFLOWS_DIR / workflow).read_text()
    assert old in text
    copy = workflows / workflow
    copy.write_text(text.replace(old, new, 1))
    result = lint(actionlint, copy, cwd=tmp_path)
    assert result.returncode == 1, f"actionlint accepted {workflow} with {new!r}:\n{result.stdout}"
    assert expected in result.stdout, result.stdout


# --- structure -------------------------------------------------------------------------------

def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    if True in data:  # YAML 1.1 reads the key `on` as true
        data["on"] = data.pop(True)
    return data


def steps(job: dict) -> list[dict]:
    return job.get("steps") or []


def uses(job: dict, action: str) -> list[dict]:
    return [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]


def one(job: dict, action: str) -> dict:
    found = uses(job, action)
    assert len(found) == 1, f"{len(found)} steps use {action}"
    return found[0]


def runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in steps(job))


def index(job: dict, predicate) -> int:
    matches = [i for i, s in enumerate(steps(job)) if predicate(s)]
    assert matches, "no such step"
    return matches[0]


@pytest.fixture(scope="module")
def pr() -> dict:
    return load(PR)


@pytest.fixture(scope="module")
def deploy() -> dict:
    return load(DEPLOY)


def test_stacks_are_the_expected_three():
    assert STACKS == sorted(AWS_STACKS + GCP_STACKS) == ["dev", "gke-dev", "prod"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_no_pull_request_target(workflow):
    # pull_request_target runs with a write token and secrets on code from forks.
    assert "pull_request_target" not in workflow.read_text()
    assert "pull_request_target" not in load(workflow)["on"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_major_version(workflow):
    data = load(workflow)
    refs = [s["uses"] for job in data["jobs"].values() for s in steps(job) if "uses" in s]
    refs += [job["uses"] for job in data["jobs"].values() if "uses" in job]
    assert refs
    unpinned = [r for r in refs if not PINNED.match(r)]
    assert not unpinned, f"{workflow.name}: not pinned to a vN tag: {unpinned}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_declared_and_read_only_by_default(workflow):
    data = load(workflow)
    assert "permissions" in data, f"{workflow.name}: no workflow-level permissions"
    assert isinstance(data["permissions"], dict), "no read-all/write-all"
    assert "write" not in data["permissions"].values(), f"{workflow.name}: workflow-level write"
    for name, job in data["jobs"].items():
        assert isinstance(job.get("permissions"), dict), \
            f"{workflow.name}: job {name} declares no permissions"


# The write scopes each job needs, and no more.
WRITES = {
    ("pr.yml", "test"): set(),
    ("pr.yml", "offline-diff"): {"pull-requests"},
    ("pr.yml", "preview-aws"): {"id-token", "pull-requests"},
    ("pr.yml", "preview-gcp"): {"id-token", "pull-requests"},
    ("deploy.yml", "dev"): {"id-token"},
    ("deploy.yml", "smoke-dev"): {"id-token"},
    ("deploy.yml", "prod"): {"id-token"},
    ("image-digests.yml", "refresh"): set(),
}


def test_write_permissions_are_least_privilege():
    found = {}
    for workflow in WORKFLOWS:
        for name, job in load(workflow)["jobs"].items():
            found[(workflow.name, name)] = {k for k, v in job["permissions"].items() if v == "write"}
            assert set(job["permissions"].values()) <= {"read", "write", "none"}
    assert found == WRITES


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_secrets_reach_scripts_only_through_env(workflow):
    for name, job in load(workflow)["jobs"].items():
        assert "secrets." not in runs(job), f"{workflow.name}: job {name} pastes a secret into a script"


def test_pr_runs_the_ci_entry_point(pr):
    assert "pull_request" in pr["on"]
    job = pr["jobs"]["test"]
    assert re.search(r"(^|\s)(bash )?\.ci/run\b|make test", runs(job)), runs(job)
    assert (ROOT / ".ci" / "run").exists()
    assert str(one(job, "actions/setup-python")["with"]["python-version"]) == "3.11"
    assert index(job, lambda s: "actions/checkout" in s.get("uses", "")) == 0


def test_offline_diff_covers_every_stack_with_one_comment_each(pr):
    job = pr["jobs"]["offline-diff"]
    assert job["strategy"]["matrix"]["stack"] == ["dev", "prod", "gke-dev"]
    assert sorted(job["strategy"]["matrix"]["stack"]) == STACKS
    assert job["strategy"].get("fail-fast") is False
    assert one(job, "actions/checkout")["with"]["fetch-depth"] == 0
    assert job["env"]["MARKER"] == MARKER
    assert job["env"]["BASE_REF"] == "${{ github.base_ref }}"
    assert job["env"]["STACK"] == "${{ matrix.stack }}"
    script = runs(job)
    assert re.search(r'-m stacks diff --stack "\$STACK" --base "origin/\$BASE_REF"', script)
    assert re.search(r'-m stacks scan --stack "\$STACK"', script)
    assert script.count("--format markdown") == 2
    assert '"$MARKER"' in script  # the comment body starts with it
    comment = one(job, "actions/github-script")
    body = comment["with"]["script"]
    for call in ("listComments", "updateComment", "createComment", "process.env.MARKER", "paginate"):
        assert call in body, call
    # Forks get a read-only token: no comment attempt for them.
    assert "head.repo.full_name == github.repository" in comment["if"]
    # The comment is written even when the diff or the scan failed; the job fails after it.
    assert "!cancelled()" in comment["if"]
    assert index(job, lambda s: "github-script" in s.get("uses", "")) < len(steps(job)) - 1
    assert "exit 1" in steps(job)[-1]["run"]


def pulumi_step(job: dict) -> dict:
    return one(job, "pulumi/actions")


def test_preview_runs_only_with_credentials(pr):
    aws, gcp = pr["jobs"]["preview-aws"], pr["jobs"]["preview-gcp"]
    assert "vars.AWS_PREVIEW_ROLE_ARN != ''" in aws["if"]
    assert "vars.GCP_WORKLOAD_IDENTITY_PROVIDER != ''" in gcp["if"]
    assert aws["strategy"]["matrix"]["stack"] == AWS_STACKS
    assert aws["runs-on"] == "${{ matrix.stack == 'prod' && vars.PROD_RUNNER || 'ubuntu-latest' }}"
    assert pulumi_step(gcp)["with"]["stack-name"] == "gke-dev"
    assert sorted(AWS_STACKS + [pulumi_step(gcp)["with"]["stack-name"]]) == STACKS

    creds = one(aws, "aws-actions/configure-aws-credentials")["with"]
    assert creds["role-to-assume"] == "${{ vars.AWS_PREVIEW_ROLE_ARN }}"
    assert pulumi_step(aws)["with"]["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
    auth = one(gcp, "google-github-actions/auth")["with"]
    assert auth["workload_identity_provider"] == "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}"
    assert auth["service_account"].startswith("${{ vars.")

    backends = {"${{ vars.PULUMI_BACKEND_URL }}", "${{ vars.PULUMI_GCP_BACKEND_URL || vars.PULUMI_BACKEND_URL }}"}
    for job, stack, login in ((aws, "${{ matrix.stack }}", "aws-actions/configure-aws-credentials"),
                              (gcp, "gke-dev", "google-github-actions/auth")):
        assert "head.repo.full_name == github.repository" in job["if"]  # forks get no OIDC token
        assert job["permissions"]["id-token"] == "write"
        step = pulumi_step(job)
        assert step["with"]["command"] == "preview"
        assert step["with"]["stack-name"] == stack
        assert step["with"]["comment-on-pr"] is True
        assert step["with"]["diff"] is True
        assert step["with"]["cloud-url"] in backends
        assert step["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
        # venv and credentials before Pulumi runs the program.
        venv = index(job, lambda s: "make .venv/.runtime" in s.get("run", ""))
        creds_at = index(job, lambda s: s.get("uses", "").startswith(login + "@"))
        pulumi_at = index(job, lambda s: s.get("uses", "").startswith("pulumi/actions@"))
        assert venv < pulumi_at and creds_at < pulumi_at


def test_offline_jobs_use_no_credentials(pr):
    for name in ("test", "offline-diff"):
        text = yaml.safe_dump(pr["jobs"][name])
        assert "secrets." not in text and "id-token" not in text, name


def test_deploy_dev_then_prod_behind_its_environment(deploy):
    assert deploy["on"] == {"push": {"branches": ["main"]}}
    dev, prod = deploy["jobs"]["dev"], deploy["jobs"]["prod"]
    assert dev["environment"] == "dev"
    assert prod["environment"] == "prod"
    # prod moves only after dev served: the smoke job needs dev, prod needs the smoke job.
    smoke = deploy["jobs"]["smoke-dev"]
    assert smoke["needs"] in ("dev", ["dev"]) and prod["needs"] in ("smoke-dev", ["smoke-dev"])
    assert smoke["environment"] == "dev" and smoke["concurrency"]["group"] == dev["concurrency"]["group"]
    assert "bash scripts/smoke-stack.sh dev" in runs(smoke)
    assert "make .venv/.runtime .venv/.models" in runs(smoke)
    # prod refuses to start on a runner its API cannot admit.
    guard = prod["steps"][0]
    assert guard["if"] == "vars.PROD_RUNNER == ''" and "exit 1" in guard["run"]
    for job, stack in ((dev, "dev"), (prod, "prod")):
        step = pulumi_step(job)
        assert step["with"]["command"] == "up"
        assert step["with"]["stack-name"] == stack
        assert step["with"]["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
        assert step["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
        assert job["permissions"]["id-token"] == "write"
        creds = one(job, "aws-actions/configure-aws-credentials")["with"]
        assert creds["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
        # One update per stack at a time, and a running `pulumi up` is never cancelled.
        assert job["concurrency"]["cancel-in-progress"] is False
        assert stack in job["concurrency"]["group"]
    assert dev["concurrency"]["group"] != prod["concurrency"]["group"]
    # prod's API endpoint is private (Pulumi.prod.yaml): its runner can be one inside the VPC.
    assert "vars.PROD_RUNNER" in prod["runs-on"] and "vars.PROD_RUNNER" not in dev["runs-on"]
    assert "concurrency" not in deploy  # a workflow-wide group would serialise dev behind prod


def test_pulumi_cli_matches_the_sdk(pr, deploy):
    pin = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    for data in (pr, deploy):
        assert data["env"]["PULUMI_VERSION"] == pin
        for name, job in data["jobs"].items():
            for step in uses(job, "pulumi/actions"):
                assert step["with"]["pulumi-version"] == "${{ env.PULUMI_VERSION }}", name


# --- the comment script, run by node against a stand-in of the GitHub API -----------------------

COMMENT_HARNESS = r"""
const fs = require('fs');
const [script, cases] = [fs.readFileSync(process.argv[2], 'utf8'), JSON.parse(fs.readFileSync(process.argv[3], 'utf8'))];
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
const run = new AsyncFunction('github', 'context', 'core', 'require', script);
(async () => {
  const results = [];
  for (const c of cases) {
    fs.writeFileSync(c.report, c.body);
    Object.assign(process.env, { MARKER: c.marker, REPORT: c.report });
    const calls = [];
    const github = {
      paginate: async (method, args) => { calls.push(['list', args.issue_number, args.per_page]); return c.existing; },
      rest: { issues: {
        listComments: 'listComments',
        createComment: async (a) => { calls.push(['create', a.issue_number, a.body]); return { data: { html_url: 'new' } }; },
        updateComment: async (a) => { calls.push(['update', a.comment_id, a.body]); },
        deleteComment: async (a) => { calls.push(['delete', a.comment_id]); },
      } },
    };
    const context = { repo: { owner: 'o', repo: 'r' }, issue: { number: 7 } };
    await run(github, context, { info: () => {} }, require);
    results.push(calls);
  }
  console.log(JSON.stringify(results));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_comment_script_keeps_one_comment_per_stack(pr, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH (the CRD validator needs it too)", pytrace=False)
    job = pr["jobs"]["offline-diff"]
    script = tmp_path / "script.js"
    script.write_text(one(job, "actions/github-script")["with"]["script"])
    dev = MARKER.replace("${{ matrix.stack }}", "dev")
    gke = MARKER.replace("${{ matrix.stack }}", "gke-dev")
    report = str(tmp_path / "report.md")
    body = f"{dev}\n### Offline diff\n"
    bot = {"type": "Bot"}
    cases = [
        # first run: a person quoting the marker does not count; a comment is created
        {"existing": [{"id": 1, "user": {"type": "User"}, "body": f"quote {dev}"}]},
        # later runs: this stack's comment is updated in place; another stack's is left alone
        {"existing": [{"id": 2, "user": bot, "body": gke}, {"id": 3, "user": bot, "body": f"{dev} old"}]},
        # duplicates (e.g. two racing runs): the first is updated, the rest deleted
        {"existing": [{"id": 4, "user": bot, "body": dev}, {"id": 5, "user": bot, "body": dev}]},
        # over GitHub's 65536-character limit: cut, marker kept
        {"existing": [], "body": dev + "x" * 70_000},
    ]
    for case in cases:
        case.update(marker=dev, report=report, body=case.get("body", body))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    harness = tmp_path / "harness.cjs"
    harness.write_text(COMMENT_HARNESS)
    result = subprocess.run([node, str(harness), str(script), str(tmp_path / "cases.json")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first, update, dupes, big = json.loads(result.stdout)
    assert first == [["list", 7, 100], ["create", 7, body]]
    assert update == [["list", 7, 100], ["update", 3, body]]
    assert dupes == [["list", 7, 100], ["update", 4, body], ["delete", 5]]
    (_, (op, _, text)) = big
    assert op == "create" and text.startswith(dev) and len(text) <= 65536
