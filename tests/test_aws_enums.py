"""Every AWS enum value the settings accept or the stacks use exists in botocore's service models."""

from __future__ import annotations

import typing

import botocore.session
import pytest

from stacks import aws_catalog
from stacks.config import parse_settings
from stacks.plan import ROOT
from stacks.stack_files import load_stack_config


@pytest.fixture(scope="module")
def eks_model():
    return botocore.session.get_session().get_service_model("eks")


@pytest.fixture(scope="module")
def ec2_instance_types() -> set[str]:
    return set(botocore.session.get_session().get_service_model("ec2").shape_for("InstanceType").enum)


@pytest.mark.parametrize("literal,shape", [
    (aws_catalog.CapacityType, "CapacityTypes"),
    (aws_catalog.TaintEffect, "TaintEffect"),
    (aws_catalog.ClusterLogType, "LogType"),
    (aws_catalog.AmiType, "AMITypes"),
])
def test_settings_enums_are_botocore_values(eks_model, literal, shape):
    allowed = set(eks_model.shape_for(shape).enum)
    assert set(typing.get_args(literal)) <= allowed


def test_gpu_catalog_instance_types_exist(ec2_instance_types):
    unknown = sorted(set(aws_catalog.GPU_COUNT) - ec2_instance_types)
    assert not unknown, unknown


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_values_are_botocore_values(stack, eks_model, ec2_instance_types):
    cfg = load_stack_config(ROOT / "Pulumi.yaml", ROOT / f"Pulumi.{stack}.yaml", stack)
    settings = parse_settings(cfg.config)
    amis, capacity = set(eks_model.shape_for("AMITypes").enum), set(eks_model.shape_for("CapacityTypes").enum)
    for name, pool in settings.node_pools.items():
        assert pool.resolved_ami_type in amis, name
        assert pool.capacity_type in capacity, name
        assert set(pool.instance_types) <= ec2_instance_types, name


def test_rendered_taint_effects_are_botocore_values(dev, eks_model):
    effects = set(eks_model.shape_for("TaintEffect").enum)
    for group in dev.of_type("aws:eks/nodeGroup:NodeGroup"):
        for taint in group.inputs["taints"]:
            assert taint["effect"] in effects


def test_capacity_catalogs_name_real_instance_types(ec2_instance_types):
    from components.aws.capacity_blocks import CAPACITY_BLOCK_INSTANCE_TYPES
    from components.gpu.mig import EC2_GPU_MODEL
    from stacks.cost import AWS_PRICES

    for table in (CAPACITY_BLOCK_INSTANCE_TYPES, EC2_GPU_MODEL, *AWS_PRICES.values()):
        unknown = sorted(set(table) - ec2_instance_types)
        assert not unknown, unknown


def test_the_karpenter_stack_names_real_instance_types(ec2_instance_types):
    # Every option, fallbacks included, and every type the rendered NodePools require.
    from stacks.capacity_settings import options_of
    from stacks.plan import plan_stack

    path = ROOT / "tests" / "stacks" / "Pulumi.capacity-eks.yaml"
    settings = parse_settings(load_stack_config(ROOT / "Pulumi.yaml", path, "capacity-eks").config)
    types = {t for pool in settings.node_pools.values() for option in options_of(pool) for t in option.instance_types}
    assert {"g5.xlarge", "g6.xlarge", "p4d.24xlarge", "m6i.large"} <= types
    assert types <= ec2_instance_types, sorted(types - ec2_instance_types)
    rendered = set()
    for node_pool in plan_stack("capacity-eks", path).of_type("kubernetes:karpenter.sh/v1:NodePool"):
        for requirement in node_pool.inputs["spec"]["template"]["spec"]["requirements"]:
            if requirement["key"] == "node.kubernetes.io/instance-type":
                rendered |= set(requirement["values"])
    assert rendered and rendered <= ec2_instance_types, sorted(rendered - ec2_instance_types)
