"""Offline structural diff of a stack between a git revision and the working tree.

Both sides are planned on the mock engine (the base in a temporary ``git worktree``), so a
pull request gets a reviewable diff without credentials or state: what would be created (``+``),
deleted (``-``), updated (``~``) or replaced (``+-``), with field-level input changes and the
cost delta. A field that forces a replacement on the real provider is marked as such from
:data:`REPLACE_ON_CHANGE`.
"""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.cost import CostEstimate, estimate

# Input paths (dotted, camelCase as recorded) whose change makes the provider replace the resource.
# Source: each property marked "Changes to this property will trigger replacement" in the Pulumi
# Registry API docs (generated from the Terraform providers' ForceNew schema attributes):
# https://www.pulumi.com/registry/packages/aws/api-docs/eks/nodegroup/ and the pages of each type below.
REPLACE_ON_CHANGE: dict[str, tuple[str, ...]] = {
    "aws:eks/nodeGroup:NodeGroup": ("instanceTypes", "amiType", "capacityType", "clusterName", "nodeGroupName",
                                    "nodeRoleArn", "subnetIds", "diskSize", "remoteAccess"),
    "aws:eks/cluster:Cluster": ("name", "roleArn", "kubernetesNetworkConfig", "bootstrapSelfManagedAddons",
                                "encryptionConfig", "accessConfig.bootstrapClusterCreatorAdminPermissions"),
    # objectLockEnabled: ForceNew in terraform-provider-aws (hashicorp/terraform-provider-aws#36529), so the
    # program enables Object Lock with BucketObjectLockConfiguration instead (components/aws/model_bucket.py).
    "aws:s3/bucket:Bucket": ("bucket", "bucketPrefix", "objectLockEnabled"),
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone", "vpcId"),
    "aws:ec2/natGateway:NatGateway": ("subnetId", "allocationId"),
    "aws:iam/role:Role": ("name", "namePrefix", "path"),
    "aws:kms/key:Key": ("customerMasterKeySpec", "keyUsage"),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "namePrefix"),
    "gcp:container/cluster:Cluster": ("name", "location", "project", "network", "subnetwork",
                                      "privateClusterConfig.masterIpv4CidrBlock", "ipAllocationPolicy"),
    # machineType, diskType and diskSizeGb are not ForceNew since terraform-provider-google v5.10.0
    # (GoogleCloudPlatform/magic-modules#9575): GKE migrates the pool's nodes in place, see ROLLS_NODES.
    "gcp:container/nodePool:NodePool": ("name", "cluster", "location", "project",
                                        "nodeConfig.guestAccelerators", "nodeConfig.spot",
                                        "nodeConfig.serviceAccount",
                                        # ForceNew (terraform-provider-google node_config.go, secondary_boot_disks)
                                        "nodeConfig.secondaryBootDisks",
                                        # ForceNew there too: reservation_affinity, flex_start, max_run_duration
                                        # (capacityType RESERVED / FLEX_START; a GPU pool's MIG partition size
                                        # and sharing sit under guestAccelerators, already listed)
                                        "nodeConfig.reservationAffinity", "nodeConfig.flexStart",
                                        "nodeConfig.maxRunDuration"),
    "gcp:storage/bucket:Bucket": ("name", "location", "project"),
    "gcp:compute/network:Network": ("name", "project", "autoCreateSubnetworks"),
    "gcp:compute/subnetwork:Subnetwork": ("name", "network", "region", "project"),
    "gcp:serviceaccount/account:Account": ("accountId", "project"),
}
# Input paths updated in place by replacing every node of the pool (a rolling upgrade): not a
# replacement of the resource, but the review must say that every node, and every pod on it, goes.
# GKE: UpdateNodePoolRequest "migrates the nodes in the node pool to the specified machine type / disk"
# (https://cloud.google.com/kubernetes-engine/docs/reference/rest/v1/projects.locations.clusters.nodePools/update).
# EKS: UpdateNodegroupVersion launches new nodes and drains the old ones
# (https://docs.aws.amazon.com/eks/latest/userguide/managed-node-update-behavior.html).
ROLLS_NODES: dict[str, tuple[str, ...]] = {
    "gcp:container/nodePool:NodePool": ("nodeConfig.machineType", "nodeConfig.diskType", "nodeConfig.diskSizeGb",
                                        "nodeConfig.imageType", "version",
                                        # an UpdateNodePoolRequest{GcfsConfig} (node_config.go). Whether GKE
                                        # recreates the nodes for it ("Manual changes that recreate the nodes")
                                        # could not be read offline here: marked as a rollout, the cautious
                                        # reading for a review
                                        "nodeConfig.gcfsConfig"),
    "aws:eks/nodeGroup:NodeGroup": ("version", "releaseVersion", "launchTemplate"),
}
# Kubernetes: an object's identity is its name and namespace; a Deployment's selector is immutable.
KUBERNETES_REPLACE = ("metadata.name", "metadata.namespace")
KUBERNETES_KIND_REPLACE = {"Deployment": ("spec.selector",), "Service": ("spec.clusterIP",)}

SYMBOLS = {"create": "+", "delete": "-", "update": "~", "replace": "+-"}


class SideFailed(RuntimeError):
    """One side of the diff could not be planned."""


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any
    replaces: bool
    rolls_nodes: bool = False
    """Updated in place, but by replacing every node of the pool (:data:`ROLLS_NODES`)."""


@dataclass(frozen=True)
class ResourceChange:
    op: str
    """create, delete, update or replace."""
    urn: str
    type: str
    name: str
    fields: tuple[FieldChange, ...] = ()


@dataclass
class StackDiff:
    stack: str
    base: str
    changes: list[ResourceChange] = field(default_factory=list)
    cost_before: CostEstimate = field(default_factory=CostEstimate)
    cost_after: CostEstimate = field(default_factory=CostEstimate)

    def counts(self) -> dict[str, int]:
        return {op: sum(1 for c in self.changes if c.op == op) for op in SYMBOLS}

    def cost_delta(self) -> tuple[float, float]:
        (b_low, b_high), (a_low, a_high) = self.cost_before.monthly, self.cost_after.monthly
        return round(a_low - b_low, 2), round(a_high - b_high, 2)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths of the leaves (lists indexed: ``taints[0].key``)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _replace_paths(resource: dict[str, Any]) -> tuple[str, ...]:
    if resource["type"].startswith("kubernetes:"):
        kind = resource["inputs"].get("kind", "")
        return KUBERNETES_REPLACE + KUBERNETES_KIND_REPLACE.get(kind, ())
    return REPLACE_ON_CHANGE.get(resource["type"], ())


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") or path.startswith(p + "[") for p in prefixes)


def diff_plans(before: dict[str, Any], after: dict[str, Any], stack: str, base: str) -> StackDiff:
    """Compare two plan JSONs resource by resource (matched by URN, as Pulumi does)."""
    old = {r["urn"]: r for r in before["resources"]}
    new = {r["urn"]: r for r in after["resources"]}
    result = StackDiff(stack=stack, base=base, cost_before=estimate(before), cost_after=estimate(after))
    for urn in sorted(old.keys() | new.keys()):
        if urn not in old:
            result.changes.append(ResourceChange("create", urn, new[urn]["type"], new[urn]["name"]))
        elif urn not in new:
            result.changes.append(ResourceChange("delete", urn, old[urn]["type"], old[urn]["name"]))
        else:
            a, b = flatten(old[urn]["inputs"]), flatten(new[urn]["inputs"])
            replace_paths = _replace_paths(new[urn])
            rolling = ROLLS_NODES.get(new[urn]["type"], ())
            fields = tuple(FieldChange(path, a.get(path), b.get(path), _under(path, replace_paths),
                                       _under(path, rolling))
                           for path in sorted(a.keys() | b.keys()) if a.get(path) != b.get(path))
            for flag in ("protect", "retainOnDelete", "ignoreChanges"):
                if old[urn].get(flag) != new[urn].get(flag):
                    fields += (FieldChange(f"[{flag}]", old[urn].get(flag), new[urn].get(flag), False),)
            if fields:
                op = "replace" if any(f.replaces for f in fields) else "update"
                result.changes.append(ResourceChange(op, urn, new[urn]["type"], new[urn]["name"], fields))
    return result


def _plan_error(text: str, stack: str, root: Path) -> str:
    """The planning subprocess's error, without what the diff's own message already says: its
    ``error: stack <stack>: `` prefix (else ``error: stack dev: working tree: error: stack dev: ...``)
    and the checkout's directory (a temporary worktree for the base: noise in a review comment)."""
    text = text.strip().replace(f"{root.resolve()}/", "").replace(f"{root}/", "")
    prefix = f"error: stack {stack}: "
    return "\n".join(line[len(prefix):] if line.startswith(prefix) else line for line in text.splitlines())


def plan_json(root: Path, stack: str, out: Path) -> dict[str, Any]:
    """Plan ``stack`` with the code and stack files under ``root`` (a subprocess: a clean import state)."""
    done = subprocess.run([sys.executable, "-m", "stacks", "plan", "--stack", stack, "--json", str(out), "--quiet"],
                          cwd=root, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SideFailed(_plan_error(done.stderr or done.stdout, stack, root))
    return json.loads(out.read_text())


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SideFailed("git is not installed (the diff plans the base in a `git worktree`)") from None


def _check_sides(stack: str, base: str, root: Path) -> str:
    """Fail in a second, with one line, on what would otherwise fail after a plan: a stack file missing
    on either side or a base that is not a commit. Returns the base's commit id."""
    stack_file = f"Pulumi.{stack}.yaml"
    if not (root / stack_file).is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise SideFailed(f"working tree: {stack_file}: no such file "
                         f"(stacks here: {', '.join(known) or 'none'})")
    # `--end-of-options`: a base such as `--output=x` is a revision to look up, never a git option.
    resolved = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{base}^{{commit}}")
    if resolved.returncode != 0:
        inside = _git(root, "rev-parse", "--git-dir")
        if inside.returncode != 0:
            raise SideFailed(f"base {base}: {root} is not in a git repository: {inside.stderr.strip()}")
        raise SideFailed(f"base {base}: not a commit in this repository (a branch, tag or commit id, "
                         "e.g. origin/main or HEAD~1)")
    commit = resolved.stdout.strip()
    # `<rev>:./path` is relative to the working directory (git-rev-parse(1), "SPECIFYING REVISIONS").
    if _git(root, "cat-file", "-e", f"{commit}:./{stack_file}").returncode != 0:
        raise SideFailed(f"base {base}: {stack_file} does not exist at that revision (a stack added since "
                         "has nothing to diff against; plan it with `python -m stacks plan`)")
    return commit


def diff_stack(stack: str, base: str, root: Path) -> StackDiff:
    """Plan ``stack`` at git revision ``base`` (temporary worktree) and in the working tree under ``root``."""
    commit = _check_sides(stack, base, root)
    with tempfile.TemporaryDirectory(prefix="tfplatform-diff-") as tmp:
        worktree = Path(tmp) / "base"
        added = _git(root, "worktree", "add", "--detach", str(worktree), commit)
        if added.returncode != 0:
            raise SideFailed(f"base {base}: {added.stderr.strip()}")
        try:
            try:
                before = plan_json(worktree, stack, Path(tmp) / "before.json")
            except SideFailed as error:
                raise SideFailed(f"base {base}: {error}") from None
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=root,
                           capture_output=True, check=False)
        try:
            after = plan_json(root, stack, Path(tmp) / "after.json")
        except SideFailed as error:
            raise SideFailed(f"working tree: {error}") from None
    return diff_plans(before, after, stack, base)


def _value(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _field_lines(change: ResourceChange) -> list[str]:
    lines = []
    for f in change.fields:
        mark = "  (forces replacement)" if f.replaces else "  (in place: replaces every node)" if f.rolls_nodes else ""
        if isinstance(f.old, str) and isinstance(f.new, str) and ("\n" in f.old or "\n" in f.new):
            # A mounted file (model config, script): show the changed lines, not two truncated blobs.
            lines.append(f"      {f.path}:{mark}")
            changed = difflib.unified_diff(f.old.splitlines(), f.new.splitlines(), lineterm="", n=0)
            lines += [f"        {line}" for line in changed if not line.startswith(("---", "+++", "@@"))]
            continue
        lines.append(f"      {f.path}: {_value(f.old)} => {_value(f.new)}{mark}")
    return lines


def _cost_line(d: StackDiff) -> str:
    low, high = d.cost_delta()
    return (f"cost: {d.cost_before.summary()} -> {d.cost_after.summary()}; "
            f"delta {low:+,.0f} to {high:+,.0f} USD/month")


def render_text(d: StackDiff) -> str:
    counts = d.counts()
    lines = [f"stack {d.stack}: working tree vs {d.base}"]
    for c in d.changes:
        lines.append(f"  {SYMBOLS[c.op]:>2} {c.type}  {c.name}")
        lines += _field_lines(c)
    lines.append("  " + ", ".join(f"{n} to {op}" for op, n in counts.items()) if d.changes else "  no changes")
    lines.append("  " + _cost_line(d))
    return "\n".join(lines)


def render_markdown(d: StackDiff) -> str:
    counts = d.counts()
    (b_low, b_high), (a_low, a_high) = d.cost_before.monthly, d.cost_after.monthly
    delta_low, delta_high = d.cost_delta()
    lines = [f"### Offline diff: `{d.stack}` vs `{d.base}`", "",
             "| + create | ~ update | +- replace | - delete | monthly cost (min-max) | delta |",
             "| ---: | ---: | ---: | ---: | --- | --- |",
             f"| {counts['create']} | {counts['update']} | {counts['replace']} | {counts['delete']} | "
             f"${b_low:,.0f}-${b_high:,.0f} -> ${a_low:,.0f}-${a_high:,.0f} | {delta_low:+,.0f} to {delta_high:+,.0f} |"]
    unknown = d.cost_after.unknown
    if unknown:
        lines += ["", "Unpriced: " + ", ".join(f"`{u.item}` ({u.detail})" for u in unknown)]
    replaced = [c for c in d.changes if c.op == "replace"]
    if replaced:
        lines += ["", "**Replacements:** " + ", ".join(f"`{c.name}`" for c in replaced)]
    rolled = [c for c in d.changes if c.op == "update" and any(f.rolls_nodes for f in c.fields)]
    if rolled:
        lines += ["", "**Node rollouts** (updated in place, every node replaced): "
                  + ", ".join(f"`{c.name}`" for c in rolled)]
    if d.changes:
        lines += ["", "<details><summary>Details</summary>", "", "```diff"]
        for c in d.changes:
            lines.append(f"{SYMBOLS[c.op]} {c.type}  {c.name}")
            lines += _field_lines(c)
        lines += ["```", "", "</details>"]
    else:
        lines += ["", "No changes."]
    lines += ["", f"<sub>Planned offline on Pulumi's mock engine; prices: list prices of the pinned table "
                  f"(`stacks/cost.py`).</sub>"]
    return "\n".join(lines) + "\n"


def render_json(d: StackDiff) -> str:
    return json.dumps({
        "stack": d.stack, "base": d.base, "counts": d.counts(),
        "changes": [{"op": c.op, "urn": c.urn, "type": c.type, "name": c.name,
                     "fields": [{"path": f.path, "old": f.old, "new": f.new, "replaces": f.replaces,
                                 "rolls_nodes": f.rolls_nodes}
                                for f in c.fields]} for c in d.changes],
        "cost": {"monthlyBefore": d.cost_before.monthly, "monthlyAfter": d.cost_after.monthly,
                 "monthlyDelta": d.cost_delta(),
                 "unknown": [u.item for u in d.cost_after.unknown]},
    }, indent=2) + "\n"
