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
    # The GPU server sleeps outside office hours (scale to zero); one replica while awake.
    default = s.servers["default"]
    assert default.replicas == 0 and default.scale_to_zero is not None and s.bucket_force_destroy and not s.protect
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


# Domain rules with their exact wording. Wrong types, enums, patterns and unknown keys in general are
# covered by tests/test_config_properties.py, which generates them from the schema.
BAD = [
    # (config, key named in the message, value shown, words of what is allowed)
    (raw(clusterNmae="x"), f"{NS}:clusterNmae", "'x'", "unknown key; expected one of"),
    (raw(nodePools={**GPU_POOLS, "system": {"instanceTypes": ["m6i.large"], "minSize": 3, "maxSize": 2}}),
     f"{NS}:nodePools.system.minSize", "3", "at most maxSize (2)"),
    (raw(nodePools={**GPU_POOLS, "gpu": {"instanceTypes": ["g5.xlarge"]}}),
     f"{NS}:nodePools.gpu.gpusPerNode", "0", "g5.xlarge is a GPU instance type"),
    (raw(nodePools={**GPU_POOLS, "gpu": {"instanceTypes": ["g5.12xlarge"], "gpusPerNode": 1}}),
     f"{NS}:nodePools.gpu.gpusPerNode", "1", "4, the GPU count of g5.12xlarge"),
    (raw(nodePools={**GPU_POOLS, "cpu": {"instanceTypes": ["m6i.large"], "gpusPerNode": 1}}),
     f"{NS}:nodePools.cpu.gpusPerNode", "1", "0 for CPU instance types"),
    (raw(nodePools={**GPU_POOLS, "gpu": {**GPU_POOLS["gpu"], "maxSizee": 3}}),
     f"{NS}:nodePools.gpu.maxSizee", "3", "unknown key; expected one of acceleratorType, amiType"),
    (raw(nodePools={"gpu": GPU_POOLS["gpu"]}), f"{NS}:nodePools", '["gpu"]', "a `system` pool"),
    (raw(zones=["eu-west-1a", "us-east-1b"]), f"{NS}:zones", "'eu-west-1a'", "a zone of region us-east-1"),
    (raw(zones=["us-east-1a"]), f"{NS}:zones", '["us-east-1a"]', "at least 2 zones"),
    (raw(protect=True, bucketForceDestroy=True), f"{NS}:bucketForceDestroy", "true", "false when protect"),
    (raw(clusterLogRetentionDays=8), f"{NS}:clusterLogRetentionDays", "8", "CloudWatch's retention periods"),
    (raw(vpcCidr="10.0.0.0/8"), f"{NS}:vpcCidr", "'10.0.0.0/8'", "/16 to /20"),
    (raw(publicAccessCidrs=["everyone"]), f"{NS}:publicAccessCidrs.0", "'everyone'", "IPv4 CIDR"),
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


# Issue 13: each finding, one explicit test (the property test finds the class; these keep the examples).
def dev_with(**values: object) -> dict[str, str]:
    """The dev stack's config with some keys replaced (values as the CLI hands them: JSON, str as is)."""
    config = stack_raw("dev")
    config.update(raw(**values))
    return config


def dev_server(**fields: object) -> dict[str, str]:
    servers = json.loads(stack_raw("dev")[f"{NS}:servers"])
    servers["default"].update(fields)
    return dev_with(servers=servers)


def dev_pool(pool: str = "gpu", **fields: object) -> dict[str, str]:
    pools = json.loads(stack_raw("dev")[f"{NS}:nodePools"])
    pools[pool].update(fields)
    return dev_with(nodePools=pools)


@pytest.mark.parametrize("rps", [float("inf"), float("nan")])
def test_infinite_request_rate_is_refused_up_front(rps):
    # .inf reached components/serving/autoscaling.py after ~80 resources and raised OverflowError there.
    assert_config_error(dev_server(targetRequestsPerSecond=rps), f"{NS}:servers.default.targetRequestsPerSecond",
                        json.dumps(rps), "finite number")


@pytest.mark.parametrize("rps,allowed", [(0.0001, "greater than or equal to 0.001"),
                                         (1e18, "less than or equal to 1000000")])
def test_request_rate_renders_a_positive_bounded_hpa_target(rps, allowed):
    # 0.0001 rendered averageValue "0m"; 1e18 was accepted.
    assert_config_error(dev_server(targetRequestsPerSecond=rps), f"{NS}:servers.default.targetRequestsPerSecond",
                        json.dumps(rps), allowed)
    assert parse_settings(dev_server(targetRequestsPerSecond=0.001)).servers["default"].target_requests_per_second


@pytest.mark.parametrize("key,config", [
    ("clusterLogRetentionDays", lambda: dev_with(clusterLogRetentionDays=True)),
    ("servers.default.models.digits.canaryVersion", lambda: dev_server(
        models={"digits": {"versionPolicy": "specific", "versions": [1], "canaryVersion": True}})),
    ("servers.default.gpus", lambda: dev_server(gpus=True)),
    ("servers.default.replicas", lambda: dev_server(replicas=True)),
    ("servers.default.canaryWeight", lambda: dev_server(canaryWeight=True)),
    ("nodePools.gpu.minSize", lambda: dev_pool(minSize=True)),
    ("nodePools.gpu.maxSize", lambda: dev_pool(maxSize=True)),
    ("servers.default.models.digits.versions.0", lambda: dev_server(
        models={"digits": {"versionPolicy": "specific", "versions": [True]}})),
])
def test_a_boolean_is_never_a_number(key, config):
    assert_config_error(config(), f"{NS}:{key}", "true", "valid integer")


def test_an_integer_is_still_a_float():
    assert parse_settings(dev_server(targetRequestsPerSecond=50)).servers["default"].target_requests_per_second == 50


@pytest.mark.parametrize("text", ["null", "true", "false"])
def test_yaml_null_and_booleans_are_no_names(text):
    # An unquoted `clusterName: null` arrives as the text "null": it must not build a cluster named "null".
    config = {**stack_raw("dev"), f"{NS}:clusterName": text}
    assert_config_error(config, f"{NS}:clusterName", text, "an unquoted YAML null, true or false is no name")
    assert decode_config({f"{NS}:clusterName": "nullify"})[f"{NS}:clusterName".split(":")[1]] == "nullify"


def test_names_with_a_trailing_newline_are_refused():
    # re.match's `$` accepted "serving\n" style values in the hand-written checks.
    config = dev_with(allowedPodLabels={"app": "client\n"})
    assert_config_error(config, f"{NS}:allowedPodLabels.app", repr("client\n"), "a Kubernetes label value")


@pytest.mark.parametrize("alias", ["clusterLogTypes", "allowedNamespaces", "publicAccessCidrs", "zones",
                                   "clusterPrerequisites"])
def test_duplicates_are_refused_with_the_key_named(alias):
    values = {"clusterLogTypes": ["api", "api"], "allowedNamespaces": ["apps", "apps"],
              "publicAccessCidrs": ["0.0.0.0/0", "0.0.0.0/0"], "zones": ["us-east-1a", "us-east-1a"],
              "clusterPrerequisites": ["istio", "istio"]}[alias]
    assert_config_error(dev_with(**{alias: values}), f"{NS}:{alias}.1", json.dumps(values[1]).replace('"', "'"),
                        "not already in the list")


def test_duplicate_instance_types_api_cidrs_and_admins_are_refused():
    assert_config_error(dev_pool(instanceTypes=["g5.xlarge", "g5.xlarge"]), f"{NS}:nodePools.gpu.instanceTypes.1",
                        "'g5.xlarge'", "not already in the list")
    assert_config_error(dev_with(apiAccessCidrs=["10.0.0.0/16", "10.0.0.0/16"]), f"{NS}:apiAccessCidrs.1",
                        "'10.0.0.0/16'", "not already in the list")
    # Distinct ARNs whose access-entry names (last 40 characters of the slug) coincide.
    a, b = (f"arn:aws:iam::{account}:role/platform/team/operators-with-long-names" for account in
            ("111111111111", "222222222222"))
    assert_config_error(dev_with(clusterAdminArns=[a, b]), f"{NS}:clusterAdminArns.1", repr(b), "both end in")


def test_taints_follow_the_eks_and_kubernetes_rules():
    def taints(*items):
        return dev_pool(taints=list(items))

    key = f"{NS}:nodePools.gpu.taints"
    assert_config_error(taints({"key": "", "effect": "NO_SCHEDULE"}), f"{key}.0.key", "''", "taint key")
    assert_config_error(taints({"key": "a b", "effect": "NO_SCHEDULE"}), f"{key}.0.key", "'a b'", "taint key")
    assert_config_error(taints({"key": "ü", "effect": "NO_SCHEDULE"}), f"{key}.0.key", "'ü'", "taint key")
    assert_config_error(taints({"key": "k", "value": "x" * 10_000, "effect": "NO_SCHEDULE"}), f"{key}.0.value",
                        repr("x" * 10_000)[:117] + "...", "taint value")
    long_key = "example.com/" + "k" * 60  # a valid Kubernetes key, over EKS's 63 characters
    assert_config_error(taints({"key": long_key, "effect": "NO_SCHEDULE"}), f"{key}.0.key", repr(long_key),
                        "at most 63 characters on EKS")
    assert_config_error(taints({"key": "k", "value": "a", "effect": "NO_SCHEDULE"},
                               {"key": "k", "value": "b", "effect": "NO_SCHEDULE"}), f"{key}.1",
                        '{"key": "k", "value": "b", "effect": "NO_SCHEDULE"}', "unique by key and effect")
    parse_settings(taints({"key": "k", "value": "a", "effect": "NO_SCHEDULE"},
                          {"key": "k", "value": "a", "effect": "NO_EXECUTE"}))


def test_node_labels_the_kubelet_or_the_platform_own_are_refused():
    key = f"{NS}:nodePools.gpu.labels"
    assert_config_error(dev_pool(labels={"kubernetes.io/role": "gpu"}), f"{key}.kubernetes.io/role",
                        "'kubernetes.io/role'", "the kubelet refuses")
    assert_config_error(dev_pool(labels={"tfplatform.io/node-pool": "x"}), f"{key}.tfplatform.io/node-pool",
                        "'tfplatform.io/node-pool'", "does not set itself")
    assert_config_error(dev_pool(labels={"team": ""}), f"{key}.team", "''", "non-empty label value on EKS")
    parse_settings(dev_pool(labels={"node.kubernetes.io/pool-kind": "gpu", "team.name": "a", "team-name": "b"}))


@pytest.mark.parametrize("config,key,value", [
    (dev_with(monitoringNamespace="serving"), "monitoringNamespace", "'serving'"),
    (dev_with(servingNamespace="nvidia"), "servingNamespace", "'nvidia'"),
    (dev_with(servingNamespace="kube-system"), "servingNamespace", "'kube-system'"),
    (dev_with(monitoringNamespace="default"), "monitoringNamespace", "'default'"),
])
def test_namespaces_the_stack_creates_never_collide(config, key, value):
    assert_config_error(config, f"{NS}:{key}", value, "namespace")


def test_eks_pool_names_fit_the_node_group_name():
    pools = json.loads(stack_raw("dev")[f"{NS}:nodePools"])
    pools["p" * 52] = pools.pop("gpu")
    servers = json.loads(stack_raw("dev")[f"{NS}:servers"])
    servers["default"]["nodePool"] = "p" * 52
    assert_config_error(dev_with(nodePools=pools, servers=servers), f"{NS}:nodePools.{'p' * 52}", repr("p" * 52),
                        "at most 63")


def test_unknown_key_under_a_map_key_named_like_a_field():
    # A server named `cpu` (also a Server field) used to leave "expected one of" empty.
    servers = json.loads(stack_raw("dev")[f"{NS}:servers"])
    servers["cpu"]["replicaz"] = 2
    assert_config_error(dev_with(servers=servers), f"{NS}:servers.cpu.replicaz", "2",
                        "unknown key; expected one of batching, canaryReplicas")
    servers = {"models": {"nodePool": "system", "gpus": 0, "models": {"models": {"versionPolicyy": "all"}}}}
    assert_config_error(dev_with(servers=servers), f"{NS}:servers.models.models.models.versionPolicyy", "'all'",
                        "unknown key; expected one of canaryVersion, labels")


def test_alert_thresholds_are_finite_and_consistent():
    assert_config_error(dev_with(monitoring={"alerts": {"p99LatencyMs": float("inf")}}),
                        f"{NS}:monitoring.alerts.p99LatencyMs", "Infinity", "finite number")
    assert_config_error(dev_with(monitoring={"alerts": {"gpuIdlePercent": 50, "gpuUtilHighPercent": 40}}),
                        f"{NS}:monitoring.alerts.gpuIdlePercent", "50.0", "below gpuUtilHighPercent (40.0)")
