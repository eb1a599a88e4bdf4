"""The Terraform-plan JSON of a stack (stacks/terraform_plan.py): a full ``configuration`` in
Terraform's format, byte-identical between runs; and the VPC flow logs it now carries."""

from __future__ import annotations

import json
import subprocess
import sys

import botocore.session
import pytest

from components.aws.network import (FLOW_LOG_DESTINATION_TYPE, FLOW_LOG_TRAFFIC_TYPE, flow_log_policy,
                                    flow_log_trust_policy)
from stacks.config import ConfigError, parse_settings
from stacks.plan import ROOT
from stacks.terraform_plan import configuration_expressions, to_terraform_plan

from tests.conftest import stack_file_with


def _by_address(plan: dict, section: str) -> dict[str, dict]:
    resources = (plan["configuration"]["root_module"]["resources"] if section == "configuration"
                 else plan["planned_values"]["root_module"]["resources"])
    return {r["address"]: r for r in resources}


_WRITE = """
import sys
from pathlib import Path
from stacks.plan import plan_stack
from stacks.terraform_plan import write_terraform_plan
write_terraform_plan(plan_stack(sys.argv[1]), Path(sys.argv[2]))
"""


def test_plan_file_is_byte_identical_between_runs(tmp_path):
    # Two processes: Pulumi's input and dependency order varies between runs, not only within one.
    paths = [tmp_path / "one.json", tmp_path / "two.json"]
    for path in paths:
        subprocess.run([sys.executable, "-c", _WRITE, "prod", str(path)], cwd=ROOT, check=True, timeout=300)
    first, second = (p.read_bytes() for p in paths)
    assert first == second
    assert b"aws_vpc_endpoint.network-s3" in first  # the resource whose references came out shuffled


def test_configuration_writes_nested_blocks_as_terraform_does(prod, gke):
    config = _by_address(to_terraform_plan(prod), "configuration")
    cluster = config["aws_eks_cluster.eks-cluster"]["expressions"]
    # A block of blocks: encryption_config { provider { key_arn = aws_kms_key.x.arn } resources = [..] }
    (encryption,) = cluster["encryption_config"]
    assert encryption["resources"] == {"constant_value": ["secrets"]}
    (provider,) = encryption["provider"]
    assert provider["key_arn"] == {"references": ["aws_kms_key.eks-secrets-key.arn",
                                                  "aws_kms_key.eks-secrets-key"]}
    assert cluster["name"] == {"constant_value": "tfserving-prod"}
    assert cluster["role_arn"]["references"][0] == "aws_iam_role.eks-cluster-role.arn"
    # Maps are attributes, not blocks; computed values (tags_all) are not configuration.
    assert set(cluster["tags"]) == {"constant_value"} and isinstance(cluster["tags"]["constant_value"], dict)
    assert "tags_all" not in cluster
    sse = config["aws_s3_bucket_server_side_encryption_configuration.models-sse"]["expressions"]
    (rule,) = sse["rule"]
    (default,) = rule["apply_server_side_encryption_by_default"]
    assert default["sse_algorithm"] == {"constant_value": "aws:kms"}
    assert default["kms_master_key_id"]["references"][0] == "aws_kms_key.models-key.arn"
    # Repeated blocks: one expressions object per block.
    gke_cluster = _by_address(to_terraform_plan(gke), "configuration")["google_container_cluster.gke-cluster"]
    (networks,) = gke_cluster["expressions"]["master_authorized_networks_config"]
    assert networks["cidr_blocks"] == [{"cidr_block": {"constant_value": "0.0.0.0/0"},
                                        "display_name": {"constant_value": "authorized-0"}}]


def test_every_planned_argument_is_in_the_configuration(dev, prod, gke):
    # Each key of planned_values (but what the provider computes) has its expression, and each
    # reference-valued top-level string is unknown in planned_values, as Terraform plans it.
    computed = {"tags_all", "effective_labels", "terraform_labels"}
    for recording in (dev, prod, gke):
        plan = to_terraform_plan(recording)
        config = _by_address(plan, "configuration")
        unknown = {c["address"]: c["change"]["after_unknown"] for c in plan["resource_changes"]}
        for address, resource in _by_address(plan, "planned_values").items():
            expressions = config[address]["expressions"]
            missing = set(resource["values"]) - set(expressions) - computed
            assert not missing, f"{recording.stack} {address}: no expression for {sorted(missing)}"
            for key in unknown[address]:
                assert "references" in expressions[key], (address, key)


def test_configuration_expressions_shapes():
    refs = {"vpc-id": ["aws_vpc.v.id", "aws_vpc.v"]}

    def references(value):
        values = value if isinstance(value, list) else [value]
        return [r for v in values if isinstance(v, str) for r in refs.get(v, [])]

    assert configuration_expressions({
        "vpc_id": "vpc-id", "count": 3, "tags": {"a": "b"}, "ids": ["x", "vpc-id"], "nothing": None,
        "empty": [], "route": [{"cidr_block": "0.0.0.0/0"}, {"cidr_block": "::/0", "vpc": "vpc-id"}],
    }, references) == {
        "vpc_id": {"references": ["aws_vpc.v.id", "aws_vpc.v"]},
        "count": {"constant_value": 3},
        "tags": {"constant_value": {"a": "b"}},
        "ids": {"references": ["aws_vpc.v.id", "aws_vpc.v"]},
        "empty": {"constant_value": []},
        "route": [{"cidr_block": {"constant_value": "0.0.0.0/0"}},
                  {"cidr_block": {"constant_value": "::/0"}, "vpc": {"references": ["aws_vpc.v.id", "aws_vpc.v"]}}],
    }


# --- VPC flow logs -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ec2_model():
    return botocore.session.get_session().get_service_model("ec2")


def test_flow_log_enums_are_botocore_values(ec2_model):
    assert FLOW_LOG_TRAFFIC_TYPE in ec2_model.shape_for("TrafficType").enum
    assert FLOW_LOG_DESTINATION_TYPE in ec2_model.shape_for("LogDestinationType").enum


@pytest.mark.parametrize("stack,retention", [("dev", 14), ("prod", 365)])
def test_aws_stacks_log_their_vpc_traffic(stack, retention, dev, prod, ec2_model):
    recording = {"dev": dev, "prod": prod}[stack]
    (flow,) = recording.of_type("aws:ec2/flowLog:FlowLog")
    (vpc,) = recording.of_type("aws:ec2/vpc:Vpc")
    assert flow.inputs["trafficType"] in ec2_model.shape_for("TrafficType").enum
    assert flow.inputs["logDestinationType"] in ec2_model.shape_for("LogDestinationType").enum
    assert vpc.urn in flow.dependencies
    groups = {g.inputs["name"]: g for g in recording.of_type("aws:cloudwatch/logGroup:LogGroup")}
    group = groups[f"/aws/vpc/tfserving-{stack}/flow-logs"]
    assert group.inputs["retentionInDays"] == retention
    plan = to_terraform_plan(recording)
    config = _by_address(plan, "configuration")["aws_flow_log.network-flow-logs"]["expressions"]
    assert config["vpc_id"]["references"][0] == "aws_vpc.network-vpc.id"
    assert config["log_destination"]["references"][0] == "aws_cloudwatch_log_group.network-flow-logs.arn"
    assert config["iam_role_arn"]["references"][0] == "aws_iam_role.network-flow-logs.arn"


def test_flow_log_role_trusts_only_this_accounts_flow_logs(prod):
    (role,) = [r for r in prod.of_type("aws:iam/role:Role") if r.name == "network-flow-logs"]
    (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert statement["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    account = statement["Condition"]["StringEquals"]["aws:SourceAccount"]
    assert account.isdigit() and len(account) == 12
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == \
        f"arn:aws:ec2:us-east-1:{account}:vpc-flow-log/*"
    assert flow_log_trust_policy("111122223333", "cn-north-1").count("arn:aws-cn:ec2:cn-north-1:111122223333:") == 1


def test_flow_log_policy_is_limited_to_its_log_group(prod):
    (policy,) = [r for r in prod.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "network-flow-logs"]
    statements = json.loads(policy.inputs["policy"])["Statement"]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams",
                       "logs:DescribeLogGroups"}
    resources = [r for s in statements for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])]
    assert "*" not in resources
    write = next(s for s in statements if "logs:PutLogEvents" in s["Action"])
    group = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/vpc/tfserving-prod/flow-logs"
    assert write["Resource"] == [group, f"{group}:log-stream:*"]
    rendered = json.loads(flow_log_policy("g", "1", "us-gov-west-1"))
    assert rendered["Statement"][1]["Resource"] == "arn:aws-us-gov:logs:us-gov-west-1:1:log-group:*"


def test_flow_logs_can_be_turned_off(plan_with):
    recording = plan_with("dev", vpcFlowLogs=False)
    assert recording.of_type("aws:ec2/flowLog:FlowLog") == []
    assert not [r for r in recording.resources if r.name == "network-flow-logs"]


@pytest.mark.parametrize("value", [8, 0, 366])
def test_flow_log_retention_must_be_a_cloudwatch_period(tmp_path, value):
    path = stack_file_with(tmp_path, "dev", vpcFlowLogRetentionDays=value)
    from stacks.stack_files import load_stack_config

    cfg = load_stack_config(ROOT / "Pulumi.yaml", path, "dev")
    with pytest.raises(ConfigError) as error:
        parse_settings(cfg.config)
    message = str(error.value)
    assert "vpcFlowLogRetentionDays" in message and "365" in message and "14" in message, message


# Survivors of the sampled mutation run (issue 20): the shape checkov reads, asserted where it is made.

def test_every_change_is_a_create_in_terraforms_shape(dev, gke):
    for rec in (dev, gke):
        plan = to_terraform_plan(rec)
        assert sorted(plan) == ["configuration", "format_version", "planned_values", "pulumi", "resource_changes",
                                "terraform_version"]
        for rc in plan["resource_changes"]:
            assert sorted(rc) == ["address", "change", "mode", "name", "provider_name", "type"], rc["address"]
            change = rc["change"]
            assert sorted(change) == ["actions", "after", "after_sensitive", "after_unknown", "before",
                                      "before_sensitive"], rc["address"]
            assert (change["actions"], change["before"]) == (["create"], None), rc["address"]


def test_provider_config_and_default_tags_and_labels(dev, gke):
    dev_plan = to_terraform_plan(dev)
    assert dev_plan["configuration"]["provider_config"] == {"aws.aws": {
        "name": "aws", "full_name": "registry.terraform.io/hashicorp/aws", "alias": "aws",
        "expressions": {"region": {"constant_value": "us-east-1"}}}}
    resources = {r["address"]: r["values"] for r in dev_plan["planned_values"]["root_module"]["resources"]}
    # The provider's default tags reach every resource's tags_all, as Terraform's plan shows them.
    assert resources["aws_s3_bucket.models"]["tags_all"] == {"Project": "tfserving-platform", "Stack": "dev",
                                                            "ManagedBy": "pulumi"}
    gke_resources = {r["address"]: r["values"]
                     for r in to_terraform_plan(gke)["planned_values"]["root_module"]["resources"]}
    assert gke_resources["google_storage_bucket.models"]["effective_labels"] == {
        "project": "tfserving-platform", "stack": "gke-dev", "managed-by": "pulumi"}
