"""The checkov scan of a stack (stacks/scan.py) and the Pulumi -> Terraform-plan mapping
(stacks/terraform_plan.py) it feeds checkov's ``terraform_plan`` framework with.

checkov runs from ``.venv-checkov`` (``scripts/ensure-tools.sh checkov``); skipped checks live in
``.checkov.yaml`` only, each with its reason.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import pytest

from components.serving.image_prepull import SCAN_SKIPS as PREPULL_SCAN_SKIPS
from components.serving.model_cache import PREP_NAME, PREP_SCAN_SKIPS
from stacks import scan as scan_module
from stacks.mock_engine import Recording, RecordedResource
from stacks.plan import ROOT
from stacks.scan import (KUBERNETES, TERRAFORM_PLAN, ScanError, ScanResult, find_checkov, run_checkov,
                         scan_recording, scan_stack, skip_entries)
from stacks.terraform_plan import (ATTRIBUTE_RENAMES, PLURAL_NAMES_KEPT, TERRAFORM_TYPES, TYPE_EXCEPTIONS,
                                   general_rule, is_cloud_resource, terraform_values, to_terraform_plan)
from tests.conftest import stack_file_with


# Cloud checks that fail today and that the PROGRAM (or a stack's config) should fix, per stack:
# (check id, Terraform address) -> the fix. They are reported to the owner of the program, NOT
# skipped: the scan still reports them as failed. The test pins the exact set, so a new failure
# fails it and so does a fixed one (remove its entry). Once the owner decides, each entry either
# goes (the program is fixed) or moves to .checkov.yaml with its reason.
_AWS_BOTH = {
    ("CKV_AWS_158", "aws_cloudwatch_log_group.eks-logs"):
        "encrypt the control-plane log group: kms_key_id = a KMS key whose policy lets "
        "logs.<region>.amazonaws.com use it",
    ("CKV_AWS_355", "aws_iam_role_policy.cluster-autoscaler-scale"):
        "move eks:DescribeNodegroup out of the Resource \"*\" statement, scoped to "
        "arn:aws:eks:<region>:<account>:nodegroup/<cluster>/*/*",
    ("CKV_AWS_18", "aws_s3_bucket.models"):
        "server access logging (aws_s3_bucket_logging into a log bucket), or decide it is not wanted "
        "(CloudTrail data events) and skip it with that reason",
    ("CKV2_AWS_11", "aws_vpc.network-vpc"):
        "VPC flow logs: an aws_flow_log on the VPC (CloudWatch log group or S3), as the GKE subnet has",
    ("CKV2_AWS_12", "aws_vpc.network-vpc"):
        "adopt the VPC's default security group with no rules (aws.ec2.DefaultSecurityGroup "
        "without ingress/egress); EKS uses its own cluster security group",
    ("CKV2_AWS_64", "aws_kms_key.eks-secrets-key"):
        "an explicit key policy on the EKS secrets key (account root admin, the cluster role as user)",
    ("CKV2_AWS_64", "aws_kms_key.models-key"):
        "an explicit key policy on the model bucket key (account root admin, model-reader role decrypt)",
}
AWAITING_PROGRAM_FIX: dict[str, dict[tuple[str, str], str]] = {"dev": {}, "prod": {}, "gke-dev": {}}
"""Failed checks the program has not fixed yet, per stack: empty (every failure was fixed or is
skipped with its reason in .checkov.yaml). A new failure fails the test."""

# Resources checkov must have judged with at least this many passed checks (no vacuous pass).
MIN_PASSED_CLOUD = 30
MIN_PASSED_PER_RESOURCE = {
    "aws": {"aws_eks_cluster.eks-cluster": 2, "aws_s3_bucket.models": 6,
            "aws_launch_template.eks-gpu-lt": 4, "aws_launch_template.eks-system-lt": 4,
            "aws_s3_bucket_public_access_block.models-public-access": 4, "aws_kms_key.eks-secrets-key": 3},
    "gcp": {"google_container_cluster.gke-cluster": 12, "google_container_node_pool.gke-gpu": 5,
            "google_container_node_pool.gke-system": 5, "google_storage_bucket.models": 3},
}


def _cloud(stack: str) -> str:
    return "gcp" if stack.startswith("gke") else "aws"


# --- the three stacks -----------------------------------------------------------------------------

def test_kubernetes_has_no_failed_check(stack_scan):
    fw = stack_scan.frameworks[KUBERNETES]
    failed = [f"{c.check_id} {c.name!r}: {c.resource}" for c in fw.failed_checks]
    assert not failed, f"stack {stack_scan.stack}: kubernetes checks failed:\n  " + "\n  ".join(failed)
    assert fw.parsing_errors == 0
    assert fw.passed > 100, f"checkov passed only {fw.passed} kubernetes checks"


def test_cloud_failures_are_exactly_the_ones_awaiting_a_program_fix(stack_scan):
    fw = stack_scan.frameworks[TERRAFORM_PLAN]
    assert fw.parsing_errors == 0
    failed = {(c.check_id, c.resource) for c in fw.failed_checks}
    expected = set(AWAITING_PROGRAM_FIX[stack_scan.stack])
    new = sorted(failed - expected)
    fixed = sorted(expected - failed)
    assert not new, (f"stack {stack_scan.stack}: cloud checks fail (fix the program, or skip in "
                     ".checkov.yaml with a reason):\n" + stack_scan.to_markdown())
    assert not fixed, (f"stack {stack_scan.stack}: these pass now, remove them from "
                       f"AWAITING_PROGRAM_FIX: {fixed}")


def test_checkov_really_judged_the_cloud_resources(stack_scan):
    fw = stack_scan.frameworks[TERRAFORM_PLAN]
    assert fw.passed > MIN_PASSED_CLOUD, f"stack {stack_scan.stack}: only {fw.passed} cloud checks passed"
    passed = fw.passed_by_resource()
    for address, minimum in MIN_PASSED_PER_RESOURCE[_cloud(stack_scan.stack)].items():
        assert passed.get(address, 0) >= minimum, (
            f"stack {stack_scan.stack}: {address} passed {passed.get(address, 0)} checks (want >= "
            f"{minimum}); passed per resource: {passed}")


def test_every_cloud_resource_was_mapped(stack_scan):
    assert stack_scan.unmapped == {}, stack_scan.unmapped
    assert stack_scan.mapping_problems == [], stack_scan.mapping_problems
    assert stack_scan.frameworks[TERRAFORM_PLAN].resource_count > 15


# Inline skips: the model-cache prep DaemonSet's annotations (PREP_SCAN_SKIPS). checkov does not
# honour a path-scoped .checkov.yaml skip for Kubernetes manifests, and skipping its three root checks for
# every workload would hide a root container anywhere else.
INLINE_SKIPS = {(text.split("=")[0], f"DaemonSet.model-cache.{PREP_NAME}") for text in PREP_SCAN_SKIPS.values()}
# And the image pre-pull DaemonSets' two probe checks (their containers only sleep): one per GPU server whose
# images are pulled whole, so on the EKS stacks (tests/test_image_prepull.py says which servers get one).
PREPULLED = {"dev": ["tfserving-default-prepull"], "prod": ["tfserving-default-prepull"], "gke-dev": []}


def inline_skips(stack: str) -> set[tuple[str, str]]:
    return INLINE_SKIPS | {(text.split("=")[0], f"DaemonSet.serving.{name}")
                           for name in PREPULLED[stack] for text in PREPULL_SCAN_SKIPS.values()}


def test_skipped_checks_never_run(stack_scan):
    # Skips from .checkov.yaml are not run at all (so not even counted as skipped); inline skips are exactly
    # inline_skips(stack) (every stack caches models on its serving pools).
    skipped = {entry for entry in stack_scan.skip_config if ":" not in entry}
    for name, fw in stack_scan.frameworks.items():
        ran = {c.check_id for c in fw.passed_checks + fw.failed_checks}
        assert not ran & skipped, f"{name}: skipped checks ran: {sorted(ran & skipped)}"
        inline = {(c.check_id, c.resource) for c in fw.skipped_checks}
        assert inline == (inline_skips(stack_scan.stack) if name == KUBERNETES else set()), inline


def test_markdown_and_json_carry_the_counts(stack_scan):
    text = stack_scan.to_markdown()
    for name, fw in stack_scan.frameworks.items():
        assert f"| checkov | {name} | {fw.passed} | {fw.failed} | {fw.skipped} |" in text, text
    for check in stack_scan.frameworks[TERRAFORM_PLAN].failed_checks:
        assert check.check_id in text and check.resource in text
    data = json.loads(json.dumps(stack_scan.to_json()))
    assert data["stack"] == stack_scan.stack
    cloud = data["frameworks"][TERRAFORM_PLAN]
    assert cloud["failed"] == len(cloud["failed_checks"])
    assert data["checkov_version"].startswith("3.")


# --- the mapping --------------------------------------------------------------------------------

def test_type_table_covers_every_cloud_type_of_the_plans(dev, prod, gke):
    recorded = {r.type for rec in (dev, prod, gke) for r in rec.resources if is_cloud_resource(r)}
    missing = sorted(recorded - set(TERRAFORM_TYPES))
    assert not missing, f"add these Pulumi types to TERRAFORM_TYPES in stacks/terraform_plan.py: {missing}"
    for rec in (dev, prod, gke):
        plan = to_terraform_plan(rec)
        assert plan["pulumi"]["unmapped"] == {} and plan["pulumi"]["mapping_problems"] == []
        assert len(plan["planned_values"]["root_module"]["resources"]) == sum(
            1 for r in rec.resources if is_cloud_resource(r))


def test_type_table_follows_the_rule_or_a_listed_exception():
    for token, tf_type in TERRAFORM_TYPES.items():
        assert tf_type == TYPE_EXCEPTIONS.get(token, general_rule(token)), token
    for token, tf_type in TYPE_EXCEPTIONS.items():
        assert general_rule(token) != tf_type, f"{token} follows the rule: not an exception"
    assert general_rule("aws:eks/nodeGroup:NodeGroup") == "aws_eks_node_group"
    assert general_rule("gcp:storage/bucketIAMMember:BucketIAMMember") == "google_storage_bucket_iam_member"
    assert general_rule("gcp:projects/iAMMember:IAMMember") == "google_project_iam_member"


def test_attribute_shapes():
    values = terraform_values("aws_eks_cluster", {
        "vpcConfig": {"endpointPublicAccess": False, "subnetIds": ["a", "b"]},
        "tags": {"kubernetes.io/role/elb": "1", "Name": "x"},
        "encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn"}},
        "enabledClusterLogTypes": ["api"],
    })
    assert values == {
        "vpc_config": [{"endpoint_public_access": False, "subnet_ids": ["a", "b"]}],
        "tags": {"kubernetes.io/role/elb": "1", "Name": "x"},
        "encryption_config": [{"resources": ["secrets"], "provider": [{"key_arn": "arn"}]}],
        "enabled_cluster_log_types": ["api"],
    }
    pool = terraform_values("google_container_node_pool", {"nodeConfig": {
        "guestAccelerators": [{"type": "nvidia-l4",
                               "gpuDriverInstallationConfig": {"gpuDriverVersion": "LATEST"}}],
        "labels": {"tfplatform.io/node-pool": "gpu"}, "metadata": {"disable-legacy-endpoints": "true"},
        "masterIpv4CidrBlock": "x"}})
    assert pool == {"node_config": [{
        "guest_accelerator": [{"type": "nvidia-l4",
                               "gpu_driver_installation_config": [{"gpu_driver_version": "LATEST"}]}],
        "labels": {"tfplatform.io/node-pool": "gpu"}, "metadata": {"disable-legacy-endpoints": "true"},
        "master_ipv4_cidr_block": "x"}]}
    assert terraform_values("aws_eks_node_group", {"taints": [{"key": "k", "effect": "NO_SCHEDULE"}]}) == {
        "taint": [{"key": "k", "effect": "NO_SCHEDULE"}]}
    policy = json.dumps({"Statement": []})
    assert terraform_values("aws_iam_role", {"assumeRolePolicy": policy}) == {"assume_role_policy": policy}


def test_shapes_the_tables_do_not_cover_are_reported():
    problems: list[str] = []
    terraform_values("aws_made_up", {"widgets": [{"a": 1}], "annotations": {"example.com/x": "1"}}, problems)
    assert any("widgets" in p and "ATTRIBUTE_RENAMES" in p for p in problems), problems
    assert any("annotations" in p and "MAP_ATTRIBUTES" in p for p in problems), problems
    # Every reviewed plural is a real Pulumi path of that Terraform type's resources.
    assert set(ATTRIBUTE_RENAMES) | set(PLURAL_NAMES_KEPT) <= set(TERRAFORM_TYPES.values())


def _resource(token: str, name: str, inputs: dict, deps: list[str] | None = None) -> RecordedResource:
    return RecordedResource(urn=f"urn:pulumi:t::p::{token}::{name}", type=token, name=name, parent="",
                            custom=True, inputs=inputs, dependencies=deps or [], protect=False, provider="")


def test_unmapped_types_are_listed_not_dropped():
    rec = Recording(stack="t", project="p", resources=[
        _resource("aws:s3/bucket:Bucket", "models", {"forceDestroy": False}),
        _resource("aws:sagemaker/domain:Domain", "studio", {}),
        _resource("kubernetes:core/v1:Namespace", "ns", {"kind": "Namespace"}),
    ])
    plan = to_terraform_plan(rec)
    assert plan["pulumi"]["unmapped"] == {"aws:sagemaker/domain:Domain": ["studio"]}
    addresses = [r["address"] for r in plan["planned_values"]["root_module"]["resources"]]
    assert addresses == ["aws_s3_bucket.models"]
    result = ScanResult(stack="t", frameworks={}, unmapped=plan["pulumi"]["unmapped"])
    assert not result.ok
    assert "aws:sagemaker/domain:Domain" in result.to_markdown()


def test_references_become_terraform_references(prod):
    plan = to_terraform_plan(prod)
    config = {r["address"]: r for r in plan["configuration"]["root_module"]["resources"]}
    planned = {r["address"]: r for r in plan["planned_values"]["root_module"]["resources"]}
    block = "aws_s3_bucket_public_access_block.models-public-access"
    assert config[block]["expressions"]["bucket"]["references"][0] == "aws_s3_bucket.models.id"
    assert "bucket" not in planned[block]["values"]  # unknown until the bucket exists, as in Terraform
    changes = {r["address"]: r for r in plan["resource_changes"]}
    assert changes[block]["change"]["after_unknown"] == {"bucket": True}
    assert config["aws_eks_node_group.eks-gpu"]["expressions"]["cluster_name"]["references"][0] == \
        "aws_eks_cluster.eks-cluster.name"
    assert planned["aws_eks_cluster.eks-cluster"]["values"]["tags_all"]["Stack"] == "prod"


# --- the pipe catches insecure settings -------------------------------------------------------------

def test_a_public_prod_endpoint_fails(checkov, plan_with, tmp_path):
    # protect refuses a world-open endpoint as config; unprotected, the scanner still catches it.
    recording = plan_with("prod", protect=False, publicAccessCidrs=["0.0.0.0/0"])
    result = scan_recording(recording, tmp_path, frameworks=[TERRAFORM_PLAN], scanners=["checkov"])
    failed = {(c.check_id, c.resource): c for _, c in result.failed_checks}
    for check_id in ("CKV_AWS_38",):
        check = failed.get((check_id, "aws_eks_cluster.eks-cluster"))
        assert check, f"{check_id} did not fail on a public prod endpoint: {sorted(failed)}"
        assert check.pulumi_urn.endswith("aws:eks/cluster:Cluster::eks-cluster")
    assert not result.ok
    text = result.to_markdown()
    assert "CKV_AWS_38" in text
    assert f"| checkov | {TERRAFORM_PLAN} | {result.frameworks[TERRAFORM_PLAN].passed} |" in text


# (address, mutation, checks that must fail on it)
def _drop(key):
    return lambda values: values.pop(key)


def _set(path, value):
    def apply(values):
        target = values
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    return apply


MUTATIONS = [
    ("aws_eks_cluster.eks-cluster", _drop("encryption_config"), {"CKV_AWS_58"}),
    ("aws_s3_bucket_public_access_block.models-public-access", _set(["block_public_policy"], False),
     {"CKV_AWS_54"}),
    ("aws_launch_template.eks-gpu-lt", _set(["metadata_options", 0, "http_tokens"], "optional"),
     {"CKV_AWS_79"}),
    ("google_storage_bucket.models", _set(["public_access_prevention"], "inherited"), {"CKV_GCP_114"}),
    ("google_container_node_pool.gke-gpu", _set(["node_config", 0, "workload_metadata_config", 0, "mode"],
                                                "GCE_METADATA"), {"CKV_GCP_69"}),
    ("google_container_cluster.gke-cluster", _set(["enable_legacy_abac"], True), {"CKV_GCP_7"}),
]


def test_insecure_plan_changes_fail(checkov, prod, gke, tmp_path):
    # One Terraform plan holding prod's and gke-dev's resources, each mutation applied to it.
    plan = to_terraform_plan(prod)
    other = to_terraform_plan(gke)
    plan["planned_values"]["root_module"]["resources"] += other["planned_values"]["root_module"]["resources"]
    plan["resource_changes"] += other["resource_changes"]
    plan["configuration"]["root_module"]["resources"] += other["configuration"]["root_module"]["resources"]
    planned = {r["address"]: r for r in plan["planned_values"]["root_module"]["resources"]}
    baseline = copy.deepcopy(planned)
    for address, mutate, _ in MUTATIONS:
        mutate(planned[address]["values"])
        assert planned[address]["values"] != baseline[address]["values"]
    for change in plan["resource_changes"]:
        change["change"]["after"] = planned[change["address"]]["values"]
    (tmp_path / "plan-insecure.json").write_text(json.dumps(plan))
    result = run_checkov({TERRAFORM_PLAN: "plan-insecure.json"}, tmp_path)[TERRAFORM_PLAN]
    failed = {(c.check_id, c.resource) for c in result.failed_checks}
    for address, _, check_ids in MUTATIONS:
        for check_id in check_ids:
            assert (check_id, address) in failed, f"{check_id} did not fail on {address}: {sorted(failed)}"


# --- checkov itself -----------------------------------------------------------------------------

def test_missing_checkov_names_ensure_tools(monkeypatch, tmp_path):
    monkeypatch.delenv("CHECKOV", raising=False)
    monkeypatch.setattr(scan_module, "DEFAULT_CHECKOV", tmp_path / "no-checkov")
    with pytest.raises(ScanError, match="scripts/ensure-tools.sh"):
        find_checkov()
    with pytest.raises(ScanError, match="scripts/ensure-tools.sh"):
        scan_stack("dev", tmp_path)
    monkeypatch.setenv("CHECKOV", str(tmp_path / "elsewhere"))
    with pytest.raises(ScanError, match="CHECKOV="):
        find_checkov()


def test_checkov_env_overrides(monkeypatch, checkov):
    monkeypatch.setenv("CHECKOV", str(checkov))
    assert find_checkov() == checkov


def test_skip_file_lists_cloud_skips():
    entries = skip_entries(scan_module.DEFAULT_CONFIG)
    assert "CKV_K8S_43" in entries
    assert any(e.startswith(("CKV_AWS", "CKV2_AWS", "CKV_GCP", "CKV2_GCP")) for e in entries)


# --- the report formats and the CLI ---------------------------------------------------------------

def _sample_result() -> ScanResult:
    from stacks.scan import Check, FrameworkResult

    failed = Check("AWS-0041", "aws_eks_cluster.eks-cluster", "EKS cluster should not have open CIDR",
                   file="main.tf", guideline="https://avd.aquasec.com/misconfig/aws-0041",
                   message="Cluster allows access from a public CIDR: 0.0.0.0/0")
    return ScanResult(
        stack="dev", frameworks={KUBERNETES: FrameworkResult(KUBERNETES, passed=3, version="3.3.30")},
        skip_config=["CKV_K8S_43"],
        trivy={TERRAFORM_PLAN: FrameworkResult(TERRAFORM_PLAN, passed=80, failed=1, scanner="trivy",
                                               version="0.76.0", failed_checks=[failed])},
        trivy_ignores=[{"id": "AWS-0040", "stacks": ["dev", "prod"], "statement": "why"}])


def test_text_report_is_plain_text():
    result = _sample_result()
    text = result.to_text()
    for markdown in ("|", "`", "###", "**", "[AWS-0041]("):
        assert markdown not in text, f"markdown {markdown!r} in the text report:\n{text}"
    assert "Security scan of stack dev: 1 failed check (checkov 3.3.30, trivy 0.76.0)" in text
    assert re.search(r"^checkov\s+kubernetes\s+3\s+0\s+0\s+0\s+0$", text, re.M), text
    assert re.search(r"^trivy\s+terraform_plan\s+80\s+1\s+", text, re.M), text
    assert "AWS-0041  aws_eks_cluster.eks-cluster" in text and "public CIDR: 0.0.0.0/0" in text
    assert "AWS-0040 (dev, prod)" in text and "CKV_K8S_43" in text
    markdown = result.to_markdown()
    assert "| trivy | terraform_plan | 80 | 1 |" in markdown
    assert "[AWS-0041](https://avd.aquasec.com/misconfig/aws-0041)" in markdown


@pytest.mark.parametrize("fmt,marker", [("text", "Security scan of stack dev"),
                                        ("markdown", "### Security scan: stack `dev`"),
                                        ("json", '"trivy_version": "0.76.0"')])
def test_scan_cli_formats(monkeypatch, capsys, fmt, marker):
    from stacks.__main__ import main

    monkeypatch.setattr(scan_module, "scan_stack", lambda stack, workdir, **kwargs: _sample_result())
    assert main(["scan", "--stack", "dev", "--format", fmt]) == 1
    out = capsys.readouterr().out
    assert marker in out
    if fmt == "text":
        assert "|" not in out and "`" not in out


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stacks", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_scan_of_an_unknown_stack_is_one_error_line():
    done = _cli("scan", "--stack", "staging")
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --stack staging: no stack file Pulumi.staging.yaml (stacks: dev, gke-dev, prod); pass "
        "--config-file for a stack file elsewhere"]
    assert done.stdout == ""


def test_scan_of_a_bad_stack_config_is_an_error_not_a_traceback(tmp_path):
    bad = stack_file_with(tmp_path, "dev", vpcFlowLogRetentionDays=8)
    done = _cli("scan", "--stack", "dev", "--config-file", str(bad))
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: stack dev: "), done.stderr
    assert "vpcFlowLogRetentionDays = 8" in done.stderr and "365" in done.stderr, done.stderr
    missing = _cli("scan", "--stack", "dev", "--config-file", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [f"error: stack dev: {tmp_path / 'nope.yaml'}: no such file"]
