"""Config validation, without Pulumi: good stacks parse, bad config names key, value and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stacks.config import ConfigError, decode_config, parse_settings
from stacks.plan import ROOT
from stacks.stack_files import load_stack_config

NS = "tfserving-platform"


def raw(**values: object) -> dict[str, str]:
    """Config as the Pulumi CLI passes it: strings, objects as JSON."""
    return {f"{NS}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def stack_raw(stack: str) -> dict[str, str]:
    return load_stack_config(ROOT / "Pulumi.yaml", ROOT / f"Pulumi.{stack}.yaml", stack).config


GPU_POOLS = {"system": {"instanceTypes": ["m6i.large"]},
             "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 0}}


def test_defaults_are_valid():
    settings = parse_settings({})
    assert settings.cloud == "aws"
    assert settings.node_pools["gpu"].is_gpu
    assert settings.node_pools["gpu"].resolved_ami_type == "AL2023_x86_64_NVIDIA"
    assert settings.node_pools["system"].resolved_ami_type == "AL2023_x86_64_STANDARD"


def test_dev_stack_is_small_and_destroyable():
    s = parse_settings(stack_raw("dev"))
    gpu = s.node_pools["gpu"]
    assert (gpu.capacity_type, gpu.min_size) == ("SPOT", 0)
    assert s.servers["default"].replicas == 1 and s.bucket_force_destroy and not s.protect
    assert len(s.zones) == 2 and s.single_nat_gateway


def test_prod_stack_is_protected_and_redundant():
    s = parse_settings(stack_raw("prod"))
    assert s.protect and not s.bucket_force_destroy
    # The API is reachable by the deploy runners only, never the world.
    assert s.endpoint_public_access and "0.0.0.0/0" not in s.public_access_cidrs
    assert len(s.zones) == 3 and not s.single_nat_gateway
    assert s.node_pools["gpu"].capacity_type == "ON_DEMAND"
    assert s.servers["default"].replicas >= 2


def test_versions_stay_strings():
    # "1.30" must not become the float 1.3 on its way through JSON decoding.
    assert decode_config(raw(kubernetesVersion="1.30"))["kubernetesVersion"] == "1.30"
    assert parse_settings(raw(kubernetesVersion="1.30")).kubernetes_version == "1.30"


BAD = [
    # (config, key named in the message, value shown, words of what is allowed)
    (raw(clusterNmae="x"), f"{NS}:clusterNmae", "'x'", "unknown key; expected one of"),
    (raw(cloud="azure"), f"{NS}:cloud", "'azure'", "'aws'"),
    (raw(nodePools={**GPU_POOLS, "system": {"instanceTypes": ["m6i.large"], "minSize": 3, "maxSize": 2}}),
     f"{NS}:nodePools.system.minSize", "3", "at most maxSize (2)"),
    (raw(nodePools={**GPU_POOLS, "gpu": {"instanceTypes": ["g5.xlarge"]}}),
     f"{NS}:nodePools.gpu.gpusPerNode", "0", "g5.xlarge is a GPU instance type"),
    (raw(nodePools={**GPU_POOLS, "gpu": {"instanceTypes": ["g5.12xlarge"], "gpusPerNode": 1}}),
     f"{NS}:nodePools.gpu.gpusPerNode", "1", "4, the GPU count of g5.12xlarge"),
    (raw(nodePools={**GPU_POOLS, "cpu": {"instanceTypes": ["m6i.large"], "gpusPerNode": 1}}),
     f"{NS}:nodePools.cpu.gpusPerNode", "1", "0 for CPU instance types"),
    (raw(nodePools={**GPU_POOLS, "gpu": {**GPU_POOLS["gpu"], "capacityType": "PREEMPTIBLE"}}),
     f"{NS}:nodePools.gpu.capacityType", "'PREEMPTIBLE'", "'ON_DEMAND' or 'SPOT'"),
    (raw(nodePools={**GPU_POOLS, "gpu": {**GPU_POOLS["gpu"], "taints": [
        {"key": "a", "value": "b", "effect": "NoSchedule"}]}}),
     f"{NS}:nodePools.gpu.taints.0.effect", "'NoSchedule'", "'NO_SCHEDULE'"),
    (raw(nodePools={**GPU_POOLS, "gpu": {**GPU_POOLS["gpu"], "maxSizee": 3}}),
     f"{NS}:nodePools.gpu.maxSizee", "3", "unknown key; expected one of acceleratorType, amiType"),
    (raw(nodePools={"gpu": GPU_POOLS["gpu"]}), f"{NS}:nodePools", '["gpu"]', "a `system` pool"),
    (raw(zones=["eu-west-1a", "us-east-1b"]), f"{NS}:zones", "'eu-west-1a'", "a zone of region us-east-1"),
    (raw(zones=["us-east-1a"]), f"{NS}:zones", '["us-east-1a"]', "at least 2 zones"),
    (raw(protect=True, bucketForceDestroy=True), f"{NS}:bucketForceDestroy", "true", "false when protect"),
    (raw(clusterLogRetentionDays=8), f"{NS}:clusterLogRetentionDays", "8", "CloudWatch's retention periods"),
    (raw(vpcCidr="10.0.0.0/8"), f"{NS}:vpcCidr", "'10.0.0.0/8'", "/16 to /20"),
    (raw(publicAccessCidrs=["everyone"]), f"{NS}:publicAccessCidrs.0", "'everyone'", "IPv4 CIDR"),
    (raw(clusterLogTypes=["api", "kubelet"]), f"{NS}:clusterLogTypes.1", "'kubelet'", "'controllerManager'"),
    (raw(clusterAdminArns=["admin"]), f"{NS}:clusterAdminArns.0", "'admin'", "should match pattern"),
]


@pytest.mark.parametrize("config,key,value,allowed", BAD, ids=[b[1].split(":")[1] + "-" + b[2] for b in BAD])
def test_bad_config_names_key_value_and_allowed(config, key, value, allowed):
    assert_config_error(config, key, value, allowed)


def assert_config_error(config: dict[str, str], key: str, value: str, allowed: str) -> None:
    """Parsing fails with a line ``<key> = <value>: ...<allowed>...``."""
    with pytest.raises(ConfigError) as caught:
        parse_settings(config)
    message = str(caught.value)
    line = next((ln for ln in message.splitlines() if f"{key} = " in ln), None)
    assert line is not None, message
    assert f"{key} = {value}:" in line, line
    assert allowed in line, line


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw(cloud="azure", vpcCidr="10.0.0.0/8"))
    assert len(caught.value.problems) == 2


def test_other_namespaces_are_ignored():
    # aws:region and friends belong to providers, not to the settings.
    assert parse_settings({"aws:region": "eu-west-1", "pulumi:tags": "{}"}).region == "us-east-1"


def test_stack_files_reject_secure_values_only_as_placeholders(tmp_path: Path):
    stack = tmp_path / "Pulumi.x.yaml"
    stack.write_text("config:\n  tfserving-platform:clusterName: {secure: AAABAD}\n")
    cfg = load_stack_config(ROOT / "Pulumi.yaml", stack, "x")
    assert f"{NS}:clusterName" in cfg.secret_keys
    assert cfg.config[f"{NS}:clusterName"] != "AAABAD"
