"""Capacity config (issue 16), without Pulumi: provisioner per cloud, fallback options, reservations,
capacity blocks, flex-start, MIG and MPS. Each bad value names its full key, the value and what is allowed."""

from __future__ import annotations

import pytest

from stacks.capacity_settings import options_of, partitions_per_gpu
from stacks.config import parse_settings
from tests.test_gcp_settings import GKE, SYSTEM as GKE_SYSTEM
from tests.test_settings import assert_config_error, raw

SYSTEM = {"instanceTypes": ["m6i.large"]}
G5 = {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 0, "maxSize": 4}
P4D = {"instanceTypes": ["p4d.24xlarge"], "gpusPerNode": 8, "minSize": 0, "desiredSize": 0, "maxSize": 1,
       "migProfile": "1g.5gb"}
A2 = {"instanceTypes": ["a2-highgpu-1g"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 0, "maxSize": 2,
      "migProfile": "1g.5gb"}
SMALL = {"nodePool": "mig", "gpus": 1, "gpuPartition": "1g.5gb", "maxReplicas": 3,
         "models": {"small": {"versionPolicy": "latest"}}}


def eks(gpu: dict | None = None, provisioner: str = "karpenter", **values: object) -> dict[str, str]:
    pools = {"system": SYSTEM, "gpu": {**G5, **(gpu or {})}}
    return raw(gpuProvisioner=provisioner, nodePools=pools, **values)


def gke(gpu: dict | None = None, provisioner: str = "compute-class", **values: object) -> dict[str, str]:
    l4 = {"instanceTypes": ["g2-standard-8"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 0, "maxSize": 4}
    return raw(**{**GKE, "gpuProvisioner": provisioner,
                  "nodePools": {"system": GKE_SYSTEM, "gpu": {**l4, **(gpu or {})}}, **values})


def test_karpenter_stack_with_fallbacks_parses_in_order():
    s = parse_settings(eks({"capacityType": "SPOT", "fallback": [
        {"name": "on-demand", "capacityType": "ON_DEMAND"},
        {"name": "g6", "instanceTypes": ["g6.xlarge"], "capacityType": "ON_DEMAND"},
        {"name": "odcr", "capacityType": "RESERVED", "reservation": "cr-0123456789abcdef0"}]}))
    options = options_of(s.node_pools["gpu"])
    assert [(o.name, o.instance_types, o.capacity) for o in options] == [
        ("primary", ("g5.xlarge",), "spot"), ("on-demand", ("g5.xlarge",), "on-demand"),
        ("g6", ("g6.xlarge",), "on-demand"), ("odcr", ("g5.xlarge",), "reserved")]
    assert options[3].reservation == "cr-0123456789abcdef0"


@pytest.mark.parametrize("config,key,value,allowed", [
    (eks(provisioner="compute-class"), "gpuProvisioner", "'compute-class'", "node-groups or karpenter on aws"),
    (gke(provisioner="karpenter"), "gpuProvisioner", "'karpenter'", "node-groups or compute-class on gcp"),
    (eks({"fallback": [{"name": "od", "capacityType": "ON_DEMAND"}]}, provisioner="node-groups"),
     "nodePools.gpu.fallback", '["od"]', "gpuProvisioner is karpenter (EKS) or compute-class (GKE)"),
    (eks({"minSize": 1, "desiredSize": 1}), "nodePools.gpu.minSize", "1", "Karpenter creates nodes for pending pods"),
    (eks({"fallback": [{"name": "primary", "capacityType": "ON_DEMAND"}]}), "nodePools.gpu.fallback.0.name",
     "'primary'", "not 'primary'"),
    (eks({"fallback": [{"name": "a", "capacityType": "SPOT"}, {"name": "a", "capacityType": "ON_DEMAND"}]}),
     "nodePools.gpu.fallback.1.name", "'a'", "a name not used by another entry"),
    (eks({"fallback": [{"name": "same", "capacityType": "ON_DEMAND"}]}), "nodePools.gpu.fallback",
     '["same"]', "'same' repeats 'primary'"),
    (eks({"fallback": [{"name": "big", "instanceTypes": ["g5.12xlarge"], "capacityType": "ON_DEMAND"}]}),
     "nodePools.gpu.fallback.0.instanceTypes", '["g5.12xlarge"]', "keep the pool's gpusPerNode 1"),
    (eks({"capacityType": "RESERVED"}), "nodePools.gpu.reservation", "null", "a capacity reservation id cr-"),
    (eks({"capacityType": "RESERVED", "reservation": "odcr-1"}), "nodePools.gpu.reservation", "'odcr-1'",
     "cr- and 17 hex digits"),
    (eks({"reservation": "cr-0123456789abcdef0"}), "nodePools.gpu.reservation", "'cr-0123456789abcdef0'",
     "unset unless capacityType is RESERVED or CAPACITY_BLOCK"),
    (eks({"capacityType": "FLEX_START"}), "nodePools.gpu.capacityType", "'FLEX_START'", "flex-start is a GKE feature"),
    (gke({"capacityType": "CAPACITY_BLOCK", "reservation": "r"}), "nodePools.gpu.capacityType", "'CAPACITY_BLOCK'",
     "capacity blocks are an EC2 feature"),
    (gke({"capacityType": "FLEX_START", "minSize": 1, "desiredSize": 1}), "nodePools.gpu.minSize", "1",
     "no floor can be held"),
    (gke({"capacityType": "RESERVED", "reservation": "Bad_Name"}), "nodePools.gpu.reservation", "'Bad_Name'",
     "a Compute Engine reservation name"),
    (eks({"gpuSharingStrategy": "MPS", "gpuTimeSlicing": 2}), "nodePools.gpu.gpuSharingStrategy", "'MPS'",
     "TIME_SHARING on EKS"),
    (gke({"gpuSharingStrategy": "MPS"}), "nodePools.gpu.gpuTimeSlicing", "1", "2-48 with gpuSharingStrategy MPS"),
    (eks({"migProfile": "1g.5gb"}), "nodePools.gpu.migProfile", "'1g.5gb'", "g5.xlarge has no MIG-capable GPU"),
    (gke({"migProfile": "1g.5gb"}), "nodePools.gpu.migProfile", "'1g.5gb'", "g2-standard-8 has no MIG-capable GPU"),
])
def test_bad_capacity_values_name_their_key(config, key, value, allowed):
    assert_config_error(config, key, value, allowed)


def test_mig_profiles_are_checked_against_the_gpu():
    # p4d's A100 40GB has no 1g.10gb (that is the 80GB card's smallest); GKE does not offer 4g.20gb at all.
    pools = {"system": SYSTEM, "gpu": G5, "mig": {**P4D, "migProfile": "1g.10gb"}}
    assert_config_error(raw(nodePools=pools), "nodePools.mig.migProfile", "'1g.10gb'",
                        "a partition p4d.24xlarge offers: 1g.5gb, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb")
    gke_pools = {"system": GKE_SYSTEM, "gpu": {**A2, "migProfile": "4g.20gb"}}
    assert_config_error(raw(**{**GKE, "nodePools": gke_pools}), "nodePools.gpu.migProfile", "'4g.20gb'",
                        "1g.5gb, 2g.10gb, 3g.20gb, 7g.40gb")


def test_a_mig_pool_counts_partitions_and_its_servers_ask_for_one():
    pools = {"system": SYSTEM, "gpu": G5, "mig": P4D}
    servers = {"small": SMALL, "cpu": {"nodePool": "system", "gpus": 0, "models": {"c": {"versionPolicy": "latest"}}}}
    s = parse_settings(raw(nodePools=pools, servers=servers))
    assert partitions_per_gpu(s.node_pools["mig"], aws=True) == 7
    # 56 partitions on one node: enough for a server that needs 4 at peak.
    assert_config_error(raw(nodePools=pools, servers={**servers, "small": {**SMALL, "gpuPartition": None}}),
                        "servers.small.gpuPartition", "null", "'1g.5gb', the migProfile of pool 'mig'")
    assert_config_error(raw(nodePools=pools, servers={**servers, "small": {**SMALL, "gpus": 2}}),
                        "servers.small.gpus", "2", "a CUDA process uses one MIG instance")
    assert_config_error(raw(nodePools=pools, servers={**servers, "cpu": {
        "nodePool": "gpu", "gpus": 1, "gpuPartition": "1g.5gb", "models": {"c": {"versionPolicy": "latest"}}}}),
        "servers.cpu.gpuPartition", "'1g.5gb'", "pool 'gpu' has no migProfile")


def test_the_peak_check_counts_mig_partitions():
    pools = {"system": SYSTEM, "gpu": G5, "mig": {**A2, "instanceTypes": ["p4d.24xlarge"], "gpusPerNode": 8,
                                                  "maxSize": 1}}
    servers = {"small": {**SMALL, "maxReplicas": 60}}
    # 61 pods at peak (maxReplicas 60 + 1 surge) > 56 partitions on the one node maxSize allows.
    assert_config_error(raw(nodePools=pools, servers=servers), "nodePools.mig.maxSize", "1",
                        "8 GPUs per node x 7 1g.5gb partitions")


def test_capacity_block_needs_a_block_capable_type_and_an_id():
    pools = {"system": SYSTEM, "gpu": G5, "block": {
        "instanceTypes": ["p5.48xlarge"], "gpusPerNode": 8, "minSize": 0, "desiredSize": 0, "maxSize": 1,
        "capacityType": "CAPACITY_BLOCK", "reservation": "cr-0123456789abcdef0", "hourlyPrice": 31.464,
        "zones": ["us-east-1b"]}}
    s = parse_settings(raw(nodePools=pools))
    assert options_of(s.node_pools["block"])[0].capacity == "capacity-block"
    assert options_of(s.node_pools["block"])[0].hourly_price == 31.464
    group = "arn:aws:resource-groups:us-east-1:123456789012:group/gpus"
    assert_config_error(raw(nodePools={**pools, "block": {**pools["block"], "reservation": group}}),
                        "nodePools.block.reservation", repr(group), "capacity blocks are targeted by id")
    assert_config_error(raw(nodePools={**pools, "block": {**pools["block"], "instanceTypes": ["g5.xlarge"],
                                                              "gpusPerNode": 1}}),
                        "nodePools.block.instanceTypes", '["g5.xlarge"]', "not offered as a Capacity Block")


def test_a_reservation_by_resource_group_is_accepted_for_reserved_capacity():
    group = "arn:aws:resource-groups:us-east-1:123456789012:group/gpus"
    s = parse_settings(eks({"capacityType": "RESERVED", "reservation": group}, provisioner="node-groups"))
    assert options_of(s.node_pools["gpu"])[0].reservation == group


def test_gke_compute_class_with_flex_start_and_reservation_fallbacks_parses():
    s = parse_settings(gke({"capacityType": "SPOT", "fallback": [
        {"name": "on-demand", "capacityType": "ON_DEMAND"},
        {"name": "g2-12", "instanceTypes": ["g2-standard-12"], "capacityType": "ON_DEMAND"},
        {"name": "reserved", "capacityType": "RESERVED", "reservation": "projects/other-proj/reservations/l4"},
        {"name": "flex", "capacityType": "FLEX_START"}]}))
    assert [o.capacity for o in options_of(s.node_pools["gpu"])] == [
        "spot", "on-demand", "on-demand", "reserved", "flex-start"]
    assert_config_error(gke({"fallback": [{"name": "g2-24", "instanceTypes": ["g2-standard-24"],
                                           "capacityType": "ON_DEMAND"}]}),
                        "nodePools.gpu.fallback.0.instanceTypes", '["g2-standard-24"]', "2, the GPU count")


def test_auto_provisioning_limits_are_gcp_only():
    assert_config_error(eks(autoProvisioningLimits={"cpu": 10}), "autoProvisioningLimits",
                        '{"cpu": 10, "memoryGb": 768}', "unset on AWS")


def test_a_reserved_node_group_names_its_reservations_zone():
    block = {"instanceTypes": ["p5.48xlarge"], "gpusPerNode": 8, "minSize": 0, "desiredSize": 0, "maxSize": 1,
             "capacityType": "CAPACITY_BLOCK", "reservation": "cr-0123456789abcdef0"}
    assert_config_error(raw(nodePools={"system": SYSTEM, "gpu": G5, "block": block}), "nodePools.block.zones",
                        "null", "the one zone of reservation cr-0123456789abcdef0")
    assert_config_error(raw(nodePools={"system": SYSTEM, "gpu": G5, "block": {**block, "zones": ["us-east-1c"]}}),
                        "nodePools.block.zones", '["us-east-1c"]', "zones of the stack's zones")
    odcr = {**G5, "capacityType": "RESERVED", "reservation": "cr-0123456789abcdef0"}
    assert_config_error(eks(odcr, provisioner="node-groups"), "nodePools.gpu.zones", "null", "the one zone")
    # Karpenter reads the reservation's zone itself; a resource group may span zones.
    parse_settings(eks(odcr))
    parse_settings(eks({**odcr, "reservation": "arn:aws:resource-groups:us-east-1:123456789012:group/g"},
                       provisioner="node-groups"))
    assert_config_error(gke({"zones": ["us-central1-a"]}), "nodePools.gpu.zones", '["us-central1-a"]', "unset on GKE")


def test_names_made_from_pool_and_fallback_keys_fit_their_apis():
    long_pool = "g" * 45
    pools = {"system": SYSTEM, long_pool: {**G5, "fallback": [{"name": "on-demand-fallback", "capacityType": "ON_DEMAND"}]}}
    servers = {"default": {"nodePool": long_pool, "gpus": 1, "models": {"m": {"versionPolicy": "latest"}}}}
    assert_config_error(raw(gpuProvisioner="karpenter", nodePools=pools, servers=servers),
                        f"nodePools.{long_pool}.fallback.0.name", "'on-demand-fallback'",
                        "at most 17 characters")
    l4 = {"instanceTypes": ["g2-standard-8"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 0, "maxSize": 4,
          "fallback": [{"name": "on-demand-fallback", "capacityType": "ON_DEMAND"}]}
    pool = "tenant-a-l4-serving-pool1"
    assert_config_error(raw(**{**GKE, "gpuProvisioner": "compute-class", "nodePools": {"system": GKE_SYSTEM, pool: l4},
                               "servers": {"default": {**servers["default"], "nodePool": pool}}}),
                        f"nodePools.{pool}.fallback.0.name", "'on-demand-fallback'", "a GKE node pool (at most 40)")
    assert_config_error(eks(clusterName="c" * 71), "clusterName", "'" + "c" * 71 + "'", "SQS queue names are at most 80")


def test_karpenter_cannot_select_a_reservation_by_resource_group():
    group = "arn:aws:resource-groups:us-east-1:123456789012:group/gpus"
    assert_config_error(eks({"fallback": [{"name": "odcr", "capacityType": "RESERVED", "reservation": group}]}),
                        "nodePools.gpu.fallback.0.reservation", repr(group), "selects reservations by id")


def test_a_mig_pool_keeps_one_gpu_model():
    mixed = {**P4D, "instanceTypes": ["p4de.24xlarge"], "migProfile": "1g.10gb",
             "fallback": [{"name": "h100", "instanceTypes": ["p5.48xlarge"], "capacityType": "ON_DEMAND"}]}
    pools = {"system": SYSTEM, "gpu": G5, "mig": mixed}
    assert_config_error(raw(gpuProvisioner="karpenter", nodePools=pools), "nodePools.mig.instanceTypes",
                        '["p4de.24xlarge"]', "mix A100-80GB, H100-80GB")
