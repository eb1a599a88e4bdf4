"""The offline diff and cost delta, on real commits of a clone of this repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stacks.cost import AWS_PRICES, estimate
from stacks.diff import diff_plans, flatten, render_markdown
from stacks.plan import ROOT, to_json

GPU_POOL_KEY = "tfserving-platform:nodePools"
SERVERS_KEY = "tfserving-platform:servers"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def stacks_cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stacks", *args], cwd=repo, capture_output=True, text=True,
                          timeout=600)


def edit_dev(repo: Path, change) -> None:
    path = repo / "Pulumi.dev.yaml"
    data = yaml.safe_load(path.read_text())
    change(data["config"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def two_commits(tmp_path_factory) -> Path:
    """A clone with two commits on top: a GPU pool's instance type, then a model's label."""
    repo = tmp_path_factory.mktemp("repo") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    # The code under test is this working tree (committed or not): it becomes the clone's first commit.
    for name in git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard").splitlines():
        source, target = ROOT / name, repo / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "working tree", "--allow-empty")
    edit_dev(repo, lambda c: c[GPU_POOL_KEY]["gpu"].update(instanceTypes=["g5.2xlarge"]))
    git(repo, "commit", "-qam", "GPU pool: g5.2xlarge")
    edit_dev(repo, lambda c: c[SERVERS_KEY]["default"]["models"]["digits"].update(labels={"stable": 1, "beta": 1}))
    git(repo, "commit", "-qam", "digits: beta label")
    return repo


def test_instance_type_change_is_a_replacement_with_a_cost_delta(two_commits: Path):
    git(two_commits, "checkout", "-q", "HEAD~1")
    try:
        done = stacks_cli(two_commits, "diff", "--stack", "dev", "--base", "HEAD~1", "--format", "json")
    finally:
        git(two_commits, "checkout", "-q", "-")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    changes = {c["name"]: c for c in result["changes"]}
    group = changes["eks-gpu"]
    assert group["op"] == "replace"
    assert any(f["path"] == "instanceTypes" and f["replaces"] and f["new"] == ["g5.2xlarge"] for f in group["fields"])
    # g5.xlarge (1.006/h) -> g5.2xlarge (1.212/h) on a 0-5 node pool whose floor is 0 nodes (dev's GPU server
    # scales to zero): nothing at the floor, +5 x 0.206 x 730 at max.
    low, high = result["cost"]["monthlyDelta"]
    assert low == 0
    assert high == pytest.approx(5 * (1.212 - 1.006) * 730, abs=0.05)
    assert all(c["op"] != "delete" for c in result["changes"])


def test_label_change_is_a_new_config_revision_and_a_rollout(two_commits: Path):
    done = stacks_cli(two_commits, "diff", "--stack", "dev", "--base", "HEAD~1", "--format", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # A new config is a new immutable ConfigMap (the old one stays for the old pods until the rollout is
    # done), and the Deployment rolls onto it: nothing else is replaced.
    replaced = {c["name"] for c in result["changes"] if c["op"] == "replace"}
    assert replaced == {"tfserving-default-config", "tfserving-default-canary-config"}, replaced
    config = next(c for c in result["changes"] if c["name"] == "tfserving-default-config")
    assert any(f["path"] == "data.models.config" and 'key: "beta"' in f["new"] for f in config["fields"])
    assert any(f["path"] == "metadata.name" and f["replaces"] for f in config["fields"])
    deployment = next(c for c in result["changes"] if c["name"] == "tfserving-default-deployment")
    assert deployment["op"] == "update"
    assert result["cost"]["monthlyDelta"] == [0, 0]


def test_markdown_comment_has_counts_first_and_details_folded(two_commits: Path):
    done = stacks_cli(two_commits, "diff", "--stack", "dev", "--base", "HEAD~2", "--format", "markdown")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.index("| + create |") < text.index("<details>")
    assert "**Replacements:** `eks-gpu`" in text
    assert "+- aws:eks/nodeGroup:NodeGroup  eks-gpu" in text


def test_a_side_that_fails_to_plan_is_an_error(two_commits: Path):
    done = stacks_cli(two_commits, "diff", "--stack", "dev", "--base", "no-such-ref")
    assert done.returncode == 2 and "base no-such-ref" in done.stderr
    bad = two_commits / "Pulumi.dev.yaml"
    original = bad.read_text()
    try:
        bad.write_text(original.replace("tfserving-platform:region: us-east-1", "tfserving-platform:region: mars"))
        done = stacks_cli(two_commits, "diff", "--stack", "dev", "--base", "HEAD")
        assert done.returncode == 2 and "working tree" in done.stderr and "region" in done.stderr
    finally:
        bad.write_text(original)


def test_no_change_is_no_diff(dev):
    plan = to_json(dev)
    result = diff_plans(plan, plan, "dev", "HEAD")
    assert result.changes == [] and result.cost_delta() == (0, 0)
    assert "No changes." in render_markdown(result)


NODE_POOL = "gcp:container/nodePool:NodePool"


def _pools_with(**gpu_pool: object) -> dict:
    pools = yaml.safe_load((ROOT / "Pulumi.gke-dev.yaml").read_text())["config"][GPU_POOL_KEY]
    pools["gpu"].update(gpu_pool)
    return pools


def gke_gpu_pool_change(gke, plan_with, **gpu_pool: object):
    """The one node pool change between the gke-dev plan and one whose `gpu` pool has some keys replaced."""
    result = diff_plans(to_json(gke), to_json(plan_with("gke-dev", nodePools=_pools_with(**gpu_pool))),
                        "gke-dev", "HEAD")
    changed = [c for c in result.changes if c.type == NODE_POOL]
    assert [c.name for c in changed] == ["gke-gpu"], f"expected only the GPU pool to change: {changed}"
    return changed[0], {f.path: (f.old, f.new, f.replaces) for f in changed[0].fields}


def test_gke_gpu_pool_replacement_and_in_place_update(gke, plan_with):
    # Which NodePool inputs force a replacement is terraform-provider-google's ForceNew schema (pulumi-gcp
    # is bridged from it): google/services/container/node_config.go has `spot` ForceNew: true, while the
    # autoscaling limits of resource_container_node_pool.go are updated in place.
    pool, fields = gke_gpu_pool_change(gke, plan_with, capacityType="ON_DEMAND")
    forcing = {path: change[:2] for path, change in fields.items() if change[2]}
    assert (pool.op, forcing) == ("replace", {"nodeConfig.spot": (True, False)}), (
        f"spot -> on-demand GKE GPU pool shows as {pool.op} {fields}: the provider recreates the pool (its "
        "GPU nodes go away), so the review diff must say replace and name nodeConfig.spot as the cause")
    pool, fields = gke_gpu_pool_change(gke, plan_with, maxSize=6)
    assert (pool.op, fields) == ("update", {"autoscaling.totalMaxNodeCount": (5, 6, False)}), (
        f"a larger autoscaling max shows as {pool.op} {fields}: GKE changes it in place, a 'replace' in the "
        "review diff would be a false alarm")


def test_gke_gpu_pool_reservation_change_is_a_replacement(gke, plan_with):
    # reservation_affinity is ForceNew in terraform-provider-google node_config.go (as are flex_start and
    # max_run_duration): turning a GPU pool onto a reservation recreates the pool and its GPU nodes.
    pool, fields = gke_gpu_pool_change(gke, plan_with, capacityType="RESERVED", reservation="l4-serving")
    forcing = {path.split(".")[1] for path, change in fields.items() if change[2]}
    assert pool.op == "replace" and "reservationAffinity" in forcing, (pool.op, fields)


def test_gke_gpu_pool_machine_type_change_is_an_in_place_node_rollout(gke, plan_with):
    # terraform-provider-google updates machineType in place since v5.10.0 (hashicorp/terraform-provider-
    # google#16724, GoogleCloudPlatform/magic-modules#9575: UpdateNodePoolRequest.machine_type migrates the
    # nodes); the pinned pulumi-gcp 10.2.0 is bridged from a later provider. Not a replacement, but the
    # review must still say that every GPU node (and the model pods on it) is replaced.
    pool, fields = gke_gpu_pool_change(gke, plan_with, instanceTypes=["g2-standard-12"])
    expected = {"nodeConfig.machineType": ("g2-standard-8", "g2-standard-12", False)}
    assert (pool.op, fields) == ("update", expected), (
        f"a GKE machine type change shows as {pool.op} {fields}: the provider migrates the nodes in place")
    assert pool.fields[0].rolls_nodes, "a machine type change replaces every node: the diff must say so"
    bigger = plan_with("gke-dev", nodePools=_pools_with(instanceTypes=["g2-standard-12"]))
    text = render_markdown(diff_plans(to_json(gke), to_json(bigger), "gke-dev", "HEAD"))
    assert "**Node rollouts** (updated in place, every node replaced): `gke-gpu`" in text
    assert "nodeConfig.machineType: g2-standard-8 => g2-standard-12  (in place: replaces every node)" in text


def test_flatten_paths():
    assert flatten({"a": {"b": 1, "c": [{"d": 2}]}, "e": [1, 2]}) == {"a.b": 1, "a.c[0].d": 2, "e": [1, 2]}


def test_cost_prices_pools_at_min_and_max_and_says_unknown(prod, gke):
    cost = estimate(to_json(prod))
    gpu = next(line for line in cost.lines if line.item == "eks-gpu")
    # minSize 2, but 2 stable replicas + 1 canary of 1 GPU keep 3 nodes up; maxSize 9.
    assert (gpu.hourly_min, gpu.hourly_max) == (round(3 * AWS_PRICES["us-east-1"]["g5.xlarge"], 4),
                                               round(9 * AWS_PRICES["us-east-1"]["g5.xlarge"], 4))
    assert "servers.default stable 2 x 1 GPU" in gpu.held_by and "servers.default canary 1 x 1 GPU" in gpu.held_by
    assert any(line.detail == "EKS control plane" for line in cost.lines)
    assert sum(1 for line in cost.lines if line.detail.startswith("NAT gateway")) == 3
    assert not cost.unknown
    gke_cost = estimate(to_json(gke))
    assert [u.item for u in gke_cost.unknown] == ["network-nat"]
    unknown = estimate({"resources": [{"type": "pulumi:providers:aws", "name": "aws", "inputs": {"region": "us-east-1"}},
                                      {"type": "aws:eks/nodeGroup:NodeGroup", "name": "x",
                                       "inputs": {"instanceTypes": ["p5.48xlarge"],
                                                  "scalingConfig": {"minSize": 1, "maxSize": 2}}}]})
    assert unknown.hourly == (0, 0) and "price unknown" in unknown.unknown[0].detail


def test_a_side_that_fails_says_which_once(two_commits: Path):
    """The planning subprocess's own `error: stack dev: ` prefix and checkout path are not repeated."""
    stack_file = two_commits / "Pulumi.dev.yaml"
    original = stack_file.read_text()
    try:
        stack_file.write_text("config:\n  - a list\n")
        done = stacks_cli(two_commits, "diff", "--stack", "dev", "--base", "HEAD")
    finally:
        stack_file.write_text(original)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("error: stack dev: working tree: Pulumi.dev.yaml: `config` must be a mapping of "
                           "key: value, found a list\n")
    # The same on the base side (a commit on a side branch), whose checkout is a temporary worktree.
    git(two_commits, "checkout", "-q", "-b", "broken-base")
    try:
        stack_file.write_text("config: [unclosed\n")
        git(two_commits, "commit", "-qam", "broken stack file")
    finally:
        git(two_commits, "checkout", "-q", "-")
    done = stacks_cli(two_commits, "diff", "--stack", "dev", "--base", "broken-base")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("error: stack dev: base broken-base: Pulumi.dev.yaml: not valid YAML: line 2, "
                           "column 1: expected ',' or ']', but got '<stream end>'\n")


def test_bad_diff_arguments_fail_at_once_with_one_line(two_commits: Path, tmp_path: Path):
    new_stack = two_commits / "Pulumi.new.yaml"
    shutil.copy(two_commits / "Pulumi.dev.yaml", new_stack)  # in the working tree only
    known = ", ".join(sorted(p.name.split(".")[1] for p in two_commits.glob("Pulumi.*.yaml")))
    not_a_commit = "not a commit in this repository (a branch, tag or commit id, e.g. origin/main or HEAD~1)"
    cases = {
        ("--stack", "nosuch", "--base", "HEAD"):
            f"stack nosuch: working tree: Pulumi.nosuch.yaml: no such file (stacks here: {known})",
        ("--stack", "dev", "--base", "no-such-ref"): f"stack dev: base no-such-ref: {not_a_commit}",
        # Looked up as a revision, never passed to git as an option.
        ("--stack", "dev", "--base=--output=x"): f"stack dev: base --output=x: {not_a_commit}",
        ("--stack", "new", "--base", "HEAD"):
            "stack new: base HEAD: Pulumi.new.yaml does not exist at that revision (a stack added since has "
            "nothing to diff against; plan it with `python -m stacks plan`)",
        ("--stack", "dev", "--base", "HEAD", "--out", str(tmp_path)): f"--out {tmp_path}: is a directory; give a file path",
    }
    try:
        for args, message in cases.items():
            done = stacks_cli(two_commits, "diff", *args)
            assert (done.returncode, done.stdout, done.stderr) == (2, "", f"error: {message}\n"), args
    finally:
        new_stack.unlink()
    assert not (two_commits / "x").exists()
