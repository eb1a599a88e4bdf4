"""GCP (GKE) config validation, without Pulumi: machine types, GPUs, regions, zones and GCP-only keys.

Like tests/test_settings.py: good stacks parse, each bad value names its full key, the value and
what is allowed.
"""

from __future__ import annotations

import fnmatch
import re

import pytest

from stacks.aws_catalog import PoolProblem
from stacks.config import parse_settings
from stacks.gcp_catalog import (
    ACCELERATOR_FAMILIES,
    ACCELERATOR_TYPES,
    BUILT_IN_GPUS,
    N1_ACCELERATORS,
    accelerator_of,
    check_gcp_pool,
)
from stacks.settings import NodePool
from tests.test_settings import GPU_POOLS, NS, assert_config_error, raw

SYSTEM = {"instanceTypes": ["n2-standard-4"]}
# maxSize 4: the default server's peak (maxReplicas 3 + a rollout's surge pod).
L4 = {"instanceTypes": ["g2-standard-8"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 0, "maxSize": 4}
GKE = {"cloud": "gcp", "gcpProject": "my-project-123", "region": "us-central1", "zones": ["us-central1-a"],
       "nodePools": {"system": SYSTEM, "gpu": L4}}


def gke(**values: object) -> dict[str, str]:
    """A valid GKE stack with ``values`` replacing its keys."""
    return raw(**{**GKE, **values})


def gpu_pool(**pool: object) -> dict[str, str]:
    """A GKE stack whose `gpu` pool is ``pool`` (scaled to zero, so only the pool rules apply)."""
    return gke(nodePools={"system": SYSTEM, "gpu": {"minSize": 0, "desiredSize": 0, "maxSize": 4, **pool}})


def system_pool(**pool: object) -> dict[str, str]:
    return gke(nodePools={"system": pool, "gpu": L4})


def pool(**fields: object) -> NodePool:
    return NodePool.model_validate(fields)


def test_minimal_gke_stack_parses():
    s = parse_settings(raw(**GKE))
    assert (s.cloud, s.gcp_project, s.region, s.zones) == ("gcp", "my-project-123", "us-central1",
                                                           ["us-central1-a"])
    assert s.regional_cluster
    assert not s.node_pools["system"].is_gpu
    gpu = s.node_pools["gpu"]
    assert gpu.is_gpu and gpu.instance_types == ["g2-standard-8"] and gpu.accelerator_type is None
    assert accelerator_of(gpu) == "nvidia-l4"
    assert accelerator_of(s.node_pools["system"]) is None
    default = s.servers["default"]
    assert (default.node_pool, default.gpus) == ("gpu", 1)


def test_gke_gpu_pools_that_are_valid():
    # Explicit accelerator matching the built-in one, N1 with T4/V100, driver and time-slicing.
    s = parse_settings(gke(nodePools={
        "system": SYSTEM,
        "gpu": {**L4, "acceleratorType": "nvidia-l4", "gpuDriverVersion": "DEFAULT", "gpuTimeSlicing": 2},
        "t4": {"instanceTypes": ["n1-standard-8"], "acceleratorType": "nvidia-tesla-t4", "gpusPerNode": 4},
        "v100": {"instanceTypes": ["n1-highmem-16"], "acceleratorType": "nvidia-tesla-v100", "gpusPerNode": 8},
        "mega": {"instanceTypes": ["a2-megagpu-16g"], "gpusPerNode": 16, "minSize": 0, "desiredSize": 0},
    }))
    assert accelerator_of(s.node_pools["t4"]) == "nvidia-tesla-t4"
    assert accelerator_of(s.node_pools["mega"]) == "nvidia-tesla-a100"
    assert s.node_pools["gpu"].gpu_driver_version == "DEFAULT"


def test_zonal_gke_needs_one_zone_while_eks_needs_two():
    s = parse_settings(gke(regionalCluster=False, zones=["us-central1-b"]))
    assert not s.regional_cluster and s.zones == ["us-central1-b"]
    assert_config_error(raw(zones=["us-east-1a"]), f"{NS}:zones", '["us-east-1a"]', "at least 2 zones")


BAD = [
    # Network ranges: GKE wants a /28 control plane and disjoint ranges.
    (gke(masterCidr="172.16.0.0/24"), f"{NS}:masterCidr", "'172.16.0.0/24'", "a /28 range"),
    (gke(podCidr="10.0.0.0/14"), f"{NS}:podCidr", "'10.0.0.0/14'", "not overlapping vpcCidr (10.0.0.0/16)"),
    # A key of the other cloud is a mistake, not a silent no-op.
    (raw(gcpProject="my-project-123"), f"{NS}:gcpProject", "'my-project-123'", "unset on AWS (GCP only)"),
    (raw(regionalCluster=False), f"{NS}:regionalCluster", "false", "unset on AWS"),
    (gke(clusterAdminArns=["arn:aws:iam::123456789012:role/admin"]), f"{NS}:clusterAdminArns",
     '["arn:aws:iam::123456789012:role/admin"]', "unset on GCP (AWS only)"),
    (gpu_pool(instanceTypes=["n2-standard-8"], gpusPerNode=1), f"{NS}:nodePools.gpu.instanceTypes",
     "'n2-standard-8'", "only N1 takes attached GPUs"),
    (system_pool(**SYSTEM, gpuTimeSlicing=2), f"{NS}:nodePools.system.gpuTimeSlicing", "2", "unset on a CPU pool"),
    # (config, key named in the message, value shown, words of what is allowed)
    # Project, region and zones follow the cloud.
    ({k: v for k, v in gke().items() if k != f"{NS}:gcpProject"}, f"{NS}:gcpProject", "''",
     "a GCP project ID (6-30 lowercase letters"),
    (gke(gcpProject="My_Project"), f"{NS}:gcpProject", "'My_Project'", "when cloud is gcp"),
    (gke(gcpProject="proj"), f"{NS}:gcpProject", "'proj'", "6-30 lowercase letters"),
    (gke(region="us-east-1", zones=["us-east-1a"]), f"{NS}:region", "'us-east-1'",
     "a GCP region such as us-central1"),
    (raw(region="us-central1", zones=["us-central1a", "us-central1b"]), f"{NS}:region", "'us-central1'",
     "an AWS region such as us-east-1"),
    (gke(zones=["us-central1a"]), f"{NS}:zones", "'us-central1a'", "a zone of region us-central1 such as "
                                                                   "us-central1-a"),
    (raw(zones=["us-east-1-a", "us-east-1b"]), f"{NS}:zones", "'us-east-1-a'", "a zone of region us-east-1 "
                                                                               "such as us-east-1a"),
    (gke(zones=["us-central1-a", "us-east1-b"]), f"{NS}:zones", "'us-east1-b'", "a zone of region us-central1"),
    # Machine types.
    (system_pool(instanceTypes=["m6i.large"]), f"{NS}:nodePools.system.instanceTypes", "'m6i.large'",
     "a Compute Engine machine type such as n2-standard-4"),
    (system_pool(instanceTypes=["n2-standard-4", "n2d-standard-4"]), f"{NS}:nodePools.system.instanceTypes",
     '["n2-standard-4", "n2d-standard-4"]', "exactly one machine type on GKE"),
    (gpu_pool(instanceTypes=["g2-standard-6"], gpusPerNode=1), f"{NS}:nodePools.gpu.instanceTypes",
     "'g2-standard-6'", "a known GPU machine type: a2-highgpu-1g"),
    (system_pool(instanceTypes=["n2-standard-4"], amiType="AL2023_x86_64_STANDARD"),
     f"{NS}:nodePools.system.amiType", "'AL2023_x86_64_STANDARD'", "unset on GKE (EKS only)"),
    # Accelerators of the wrong machine family.
    (gpu_pool(instanceTypes=["a2-highgpu-1g"], acceleratorType="nvidia-l4", gpusPerNode=1),
     f"{NS}:nodePools.gpu.acceleratorType", "'nvidia-l4'",
     "nvidia-tesla-a100, the GPU of a2-highgpu-1g (nvidia-l4 needs G2 (g2-standard-*))"),
    (gpu_pool(instanceTypes=["n1-standard-8"], acceleratorType="nvidia-tesla-a100", gpusPerNode=1),
     f"{NS}:nodePools.gpu.acceleratorType", "'nvidia-tesla-a100'",
     "an accelerator n1-standard-8 can take: nvidia-tesla-a100 needs A2 (a2-highgpu-*"),
    (gpu_pool(instanceTypes=["g2-standard-8"], acceleratorType="nvidia-h100-80gb", gpusPerNode=1),
     f"{NS}:nodePools.gpu.acceleratorType", "'nvidia-h100-80gb'",
     "nvidia-l4, the GPU of g2-standard-8 (nvidia-h100-80gb needs A3 (a3-highgpu-*))"),
    (system_pool(instanceTypes=["n2-standard-4"], acceleratorType="nvidia-tesla-t4"),
     f"{NS}:nodePools.system.acceleratorType", "'nvidia-tesla-t4'", "unset on a CPU pool"),
    (gpu_pool(instanceTypes=["n1-standard-8"], acceleratorType="nvidia-tesla-k80", gpusPerNode=1),
     f"{NS}:nodePools.gpu.acceleratorType", "'nvidia-tesla-k80'", "one of nvidia-a100-80gb, nvidia-h100-80gb"),
    # GPU counts.
    (gpu_pool(instanceTypes=["n1-standard-8"], acceleratorType="nvidia-tesla-t4", gpusPerNode=3),
     f"{NS}:nodePools.gpu.gpusPerNode", "3", "one of 1, 2, 4 nvidia-tesla-t4 per node"),
    (gpu_pool(instanceTypes=["n1-standard-8"], acceleratorType="nvidia-tesla-v100", gpusPerNode=16),
     f"{NS}:nodePools.gpu.gpusPerNode", "16", "one of 1, 2, 4, 8 nvidia-tesla-v100 per node"),
    (gpu_pool(instanceTypes=["g2-standard-24"], gpusPerNode=1), f"{NS}:nodePools.gpu.gpusPerNode", "1",
     "2, the GPU count of g2-standard-24"),
    (gpu_pool(instanceTypes=["a3-highgpu-8g"], gpusPerNode=1), f"{NS}:nodePools.gpu.gpusPerNode", "1",
     "8, the GPU count of a3-highgpu-8g"),
    (system_pool(instanceTypes=["g2-standard-8"]), f"{NS}:nodePools.system.gpusPerNode", "0",
     "1, the GPU count of g2-standard-8"),
    (gpu_pool(instanceTypes=["n1-standard-8"], gpusPerNode=1), f"{NS}:nodePools.gpu.acceleratorType", "null",
     "one of nvidia-tesla-t4, nvidia-tesla-p4, nvidia-tesla-v100 on n1-standard-8"),
    # GKE-only pool keys on AWS, and their values.
    (raw(nodePools={**GPU_POOLS, "gpu": {**GPU_POOLS["gpu"], "acceleratorType": "nvidia-tesla-t4"}}),
     f"{NS}:nodePools.gpu.acceleratorType", "'nvidia-tesla-t4'", "unset on AWS (GKE only)"),
    (raw(nodePools={**GPU_POOLS, "gpu": {**GPU_POOLS["gpu"], "gpuDriverVersion": "LATEST"}}),
     f"{NS}:nodePools.gpu.gpuDriverVersion", "'LATEST'", "unset on AWS (GKE only)"),
    (gpu_pool(**L4, gpuDriverVersion="535"), f"{NS}:nodePools.gpu.gpuDriverVersion", "'535'",
     "'LATEST', 'DEFAULT' or 'INSTALLATION_DISABLED'"),
    # GCP-only stack keys.
    (gke(modelBucketKmsKey="my-key"), f"{NS}:modelBucketKmsKey", "'my-key'",
     "projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>"),
    (gke(modelBucketKmsKey="projects/p/locations/us/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"),
     f"{NS}:modelBucketKmsKey", "'projects/p/locations/us/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1'",
     "keyRings/<r>/cryptoKeys/<k>"),
    (gke(podCidr="10.16.0.0/33"), f"{NS}:podCidr", "'10.16.0.0/33'", "an IPv4 network such as 10.16.0.0/14"),
    (gke(podCidr="10.16.0.1/14"), f"{NS}:podCidr", "'10.16.0.1/14'", "an IPv4 network"),
    (gke(serviceCidr="services"), f"{NS}:serviceCidr", "'services'", "an IPv4 network"),
    (gke(releaseChannel="EXTENDED"), f"{NS}:releaseChannel", "'EXTENDED'", "'RAPID', 'REGULAR' or 'STABLE'"),
]


@pytest.mark.parametrize("config,key,value,allowed", BAD, ids=[b[1].split(":")[1] + "=" + b[2] for b in BAD])
def test_bad_gcp_config_names_key_value_and_allowed(config, key, value, allowed):
    assert_config_error(config, key, value, allowed)


def test_valid_kms_key_is_accepted():
    key = "projects/kms-proj/locations/us-central1/keyRings/platform/cryptoKeys/models"
    assert parse_settings(gke(modelBucketKmsKey=key)).model_bucket_kms_key == key


def _accepted(machine: str, accelerator: str) -> list[int]:
    """GPU counts a pool of ``machine`` with explicit ``accelerator`` is accepted with."""
    counts = []
    for count in range(1, 17):
        try:
            check_gcp_pool(pool(instanceTypes=[machine], acceleratorType=accelerator, gpusPerNode=count))
        except PoolProblem:
            continue
        counts.append(count)
    return counts


N1_MACHINES = ("n1-standard-8", "n1-highmem-16")


def test_every_accelerator_is_accepted_on_a_machine_of_its_documented_family():
    machines = (*BUILT_IN_GPUS, *N1_MACHINES, "n2-standard-8", "e2-standard-4")
    for accelerator in ACCELERATOR_TYPES:
        patterns = re.findall(r"[a-z0-9]+-[a-z0-9*-]+", ACCELERATOR_FAMILIES[accelerator])
        assert patterns, accelerator
        taking = [m for m in machines if _accepted(m, accelerator)]
        assert taking, f"no machine type accepts {accelerator}"
        for machine in taking:  # the family the error messages name is where it is accepted
            assert any(fnmatch.fnmatch(machine, p) for p in patterns), (accelerator, machine, patterns)
    assert set(N1_ACCELERATORS) | {kind for kind, _ in BUILT_IN_GPUS.values()} == set(ACCELERATOR_TYPES)


def test_n1_accelerators_take_exactly_their_counts():
    for accelerator, counts in N1_ACCELERATORS.items():
        for machine in N1_MACHINES:
            assert tuple(_accepted(machine, accelerator)) == counts, (machine, accelerator)


def test_built_in_gpu_counts_match_the_documentation():
    assert BUILT_IN_GPUS["g2-standard-24"] == ("nvidia-l4", 2)
    assert BUILT_IN_GPUS["a2-megagpu-16g"] == ("nvidia-tesla-a100", 16)
    assert BUILT_IN_GPUS["a3-highgpu-8g"] == ("nvidia-h100-80gb", 8)
    assert BUILT_IN_GPUS["a2-ultragpu-1g"] == ("nvidia-a100-80gb", 1)
    for machine, (kind, count) in BUILT_IN_GPUS.items():
        # Exactly the built-in count is accepted, with or without naming the accelerator.
        check_gcp_pool(pool(instanceTypes=[machine], gpusPerNode=count))
        check_gcp_pool(pool(instanceTypes=[machine], gpusPerNode=count, acceleratorType=kind))
        assert _accepted(machine, kind) == [count], machine


# Issue 13: names GKE (and the service account ids derived from them) would refuse.
@pytest.mark.parametrize("name", ["TFServing", "a" * 25, "t" * 29, "tfserving-", "1tfserving", "tf_serving"])
def test_gke_cluster_names_fit_gke_and_the_node_service_account(name):
    assert_config_error(gke(clusterName=name), f"{NS}:clusterName", repr(name), "1-24 lowercase letters")


def test_gke_cluster_name_of_24_characters_is_accepted():
    assert parse_settings(gke(clusterName="t" * 24)).cluster_name == "t" * 24


@pytest.mark.parametrize("name", ["gpu_l4", "1gpu", "g" * 41])
def test_gke_pool_names_follow_gke_rules(name):
    config = gke(nodePools={"system": SYSTEM, name: L4},
                 servers={"default": {"nodePool": name, "gpus": 1, "models": {"digits": {}}}})
    assert_config_error(config, f"{NS}:nodePools.{name}", repr(name), "GKE node pool name")


def test_regional_pool_must_start_within_its_size():
    # 3 zones, minSize 2, maxSize 2: GKE would start 0 per zone (capped by maxSize // zones); the component
    # raised ValueError after the cluster was registered.
    pools = {"system": {**SYSTEM, "minSize": 2, "desiredSize": 2, "maxSize": 2}, "gpu": L4}
    config = gke(regionalCluster=True, zones=["us-central1-a", "us-central1-b", "us-central1-c"], nodePools=pools)
    assert_config_error(config, f"{NS}:nodePools.system.maxSize", "2", "GKE starts the same number of nodes")
