"""GKE custom ComputeClasses per GPU pool (components/gcp/compute_class.py) and the node pools, reservations,
flex-start, MIG/MPS and node auto-provisioning behind them (components/gcp/gke_cluster.py), on the mock engine.

The components run on their own (no stack settings): :func:`build` registers a cluster with the pools below
and one ``GpuComputeClass`` per compute-class pool, as stacks/platform.py composes them.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pulumi
import pytest

from components.capacity import CapacityOption
from components.gcp.compute_class import (COMPUTE_CLASS_LABEL, GpuComputeClass, GpuComputeClassArgs,
                                          auto_created, class_toleration, compute_class_manifest,
                                          compute_class_name, option_pool_name)
from components.gcp.gke_cluster import (FLEX_START_MAX_RUN, RESERVATION_NAME_KEY, GkeCluster, GkeClusterArgs,
                                        GkeNodePoolSpec, gpu_resource_limits)
from components.node_labels import GPU_TAINT_KEY, POOL_LABEL
from stacks.mock_engine import Recording, run_program
from tests.crd_validation import VALIDATOR, validate_custom_resources

CLUSTER, NODE_POOL = "gcp:container/cluster:Cluster", "gcp:container/nodePool:NodePool"
COMPUTE_CLASS = "kubernetes:cloud.google.com/v1:ComputeClass"
RESERVATION = "projects/example-project/reservations/l4-serving"
GKE_GPU_TAINT = {"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"}
"""GKE taints every GPU node itself (reference: GKE GPU node pools); serving pods already tolerate it."""
SERVING_GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}

SYSTEM = GkeNodePoolSpec(machine_type="e2-standard-4", min_size=1, desired_size=2, max_size=3)
L4 = GkeNodePoolSpec(
    machine_type="g2-standard-8", spot=True, min_size=1, desired_size=1, max_size=4, gpus_per_node=1,
    accelerator_type="nvidia-l4", image_streaming=True, compute_class=True, fallback=(
        CapacityOption("on-demand", ("g2-standard-8",), "on-demand"),
        CapacityOption("bigger", ("g2-standard-12",), "on-demand"),
        CapacityOption("reserved", ("g2-standard-8",), "reserved", RESERVATION),
        CapacityOption("flex", ("g2-standard-8",), "flex-start")))
MIG = GkeNodePoolSpec(
    machine_type="a2-highgpu-1g", min_size=0, desired_size=0, max_size=2, gpus_per_node=1,
    accelerator_type="nvidia-tesla-a100", mig_profile="1g.5gb", compute_class=True,
    fallback=(CapacityOption("spot", ("a2-highgpu-1g",), "spot"),))
MPS = GkeNodePoolSpec(
    machine_type="g2-standard-8", min_size=0, desired_size=0, max_size=3, gpus_per_node=1,
    accelerator_type="nvidia-l4", gpu_time_slicing=4, gpu_sharing_strategy="MPS", compute_class=True,
    fallback=(CapacityOption("any-reservation", ("g2-standard-8",), "reserved", "any"),
              CapacityOption("on-demand", ("g2-standard-8",), "on-demand")))
T4 = GkeNodePoolSpec(
    machine_type="n1-standard-8", min_size=0, desired_size=0, max_size=2, gpus_per_node=2,
    accelerator_type="nvidia-tesla-t4",
    # A fallback on a pool without a compute class is ignored: the fixed pool serves it alone.
    fallback=(CapacityOption("spot", ("n1-standard-8",), "spot"),))
POOLS = {"system": SYSTEM, "l4": L4, "mig": MIG, "mps": MPS, "t4": T4}
CLASS_POOLS = ("l4", "mig", "mps")

BUILT: dict[str, object] = {}
"""What the last :func:`build` made (components are Python objects; the recording has only their inputs)."""
PLAN: dict[str, object] = {"pools": POOLS}


def build() -> None:
    """The program the mock engine runs: the cluster, then a class per compute-class pool."""
    pools = PLAN["pools"]
    cluster = GkeCluster("gke", GkeClusterArgs(
        cluster_name="tfserving-gke-test", project="example-project", region="us-central1",
        zones=["us-central1-a"], network_id="network-id", subnetwork_id="subnetwork-id", node_pools=pools,
        regional=False, auto_provisioning_cpu=96, auto_provisioning_memory_gb=384))
    BUILT["cluster"] = cluster
    BUILT["classes"] = {pool: GpuComputeClass(f"{pool}-class", GpuComputeClassArgs(
        pool=pool, spec=spec, node_pools=tuple(cluster.pool_dependencies(pool))),
        opts=pulumi.ResourceOptions(provider=cluster.provider))
        for pool, spec in pools.items() if spec.compute_class}


def plan(tmp_path: Path, pools: dict[str, GkeNodePoolSpec] = POOLS) -> Recording:
    program = tmp_path / "__main__.py"
    program.write_text("from tests.test_compute_class import build\nbuild()\n")
    PLAN["pools"] = pools
    try:
        return run_program(program, "test", "tfserving-platform", {}, [])
    finally:
        PLAN["pools"] = POOLS


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Recording:
    return plan(tmp_path_factory.mktemp("compute-class"))


def node_pool(rec: Recording, gke_name: str) -> dict:
    (pool,) = [r.inputs for r in rec.of_type(NODE_POOL) if r.inputs["name"] == gke_name]
    return pool


def compute_class(rec: Recording, pool: str) -> dict:
    (obj,) = [r.inputs for r in rec.of_type(COMPUTE_CLASS) if r.inputs["metadata"]["name"] == compute_class_name(pool)]
    return obj


# --- The ComputeClass objects ---------------------------------------------------------------------------

def declared_fields() -> set[str]:
    """Every property name the @kubernetes-models/gke ComputeClass model declares, at any depth."""
    typings = VALIDATOR / "node_modules/@kubernetes-models/gke/cloud.google.com/v1/ComputeClass.d.ts"
    return set(re.findall(r'^\s*"([A-Za-z]+)"\??:', typings.read_text(), re.MULTILINE))


def keys_of(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()


def test_every_class_passes_the_gke_schema(rec: Recording):
    classes = [r.inputs for r in rec.of_type(COMPUTE_CLASS)]
    assert sorted(c["metadata"]["name"] for c in classes) == sorted(map(compute_class_name, CLASS_POOLS))
    assert validate_custom_resources(classes) == [None] * len(classes)
    # The generated schema lets unknown fields through; the API server would drop them (or refuse them
    # with strict field validation), so every field used must be one the model declares.
    assert {k for c in classes for k in keys_of(c["spec"])} <= declared_fields()
    # The validator is live: a value outside the schema's enum is refused.
    broken = {**classes[0], "spec": {**classes[0]["spec"], "whenUnsatisfiable": "ScaleUpSometimes"}}
    assert "whenUnsatisfiable" in validate_custom_resources([broken])[0]


def test_priorities_follow_the_options_in_order(rec: Recording):
    spec = compute_class(rec, "l4")["spec"]
    disk = {"bootDiskSize": 100, "bootDiskType": "pd-balanced"}
    assert spec["priorities"] == [
        {"nodepools": ["l4"]},  # the pool's own spot pool, which holds minSize
        {"machineType": "g2-standard-8", "spot": False, "gpu": {"type": "nvidia-l4", "count": 1}, "storage": disk},
        {"machineType": "g2-standard-12", "spot": False, "gpu": {"type": "nvidia-l4", "count": 1}, "storage": disk},
        {"nodepools": ["l4-reserved"]},
        {"nodepools": ["l4-flex"]},
    ]
    # NAP creates pools for the two plain priorities; GPU pods never land on the default machine family;
    # pods are not moved back to spot when it returns (a model reload per move).
    assert spec["nodePoolAutoCreation"] == {"enabled": True}
    assert spec["whenUnsatisfiable"] == "DoNotScaleUp"
    assert spec["activeMigration"] == {"optimizeRulePriority": False}


def test_mig_and_mps_classes_use_only_their_own_pools(rec: Recording):
    # The old schema has no partition or sharing field: NAP would create whole, unshared GPUs.
    assert compute_class(rec, "mig")["spec"]["priorities"] == [{"nodepools": ["mig"]}, {"nodepools": ["mig-spot"]}]
    assert compute_class(rec, "mps")["spec"]["priorities"] == [
        {"nodepools": ["mps"]}, {"nodepools": ["mps-any-reservation"]}, {"nodepools": ["mps-on-demand"]}]
    for pool in ("mig", "mps"):
        assert "nodePoolAutoCreation" not in compute_class(rec, pool)["spec"]


def test_reordering_options_keeps_names_and_moves_priorities():
    swapped = replace(L4, fallback=(L4.fallback[2], *L4.fallback[:2], L4.fallback[3]))
    rules = compute_class_manifest("l4", swapped)["spec"]["priorities"]
    assert rules[1] == {"nodepools": ["l4-reserved"]}
    assert [option_pool_name("l4", o) for o in swapped.options() if not auto_created(swapped, o)] == [
        "l4", "l4-reserved", "l4-flex"]
    assert compute_class_manifest("l4", swapped)["metadata"]["name"] == compute_class_name("l4") == "tfplatform-l4"


# --- What serving pods select, and what the pools carry ----------------------------------------------------

def schedulable(pod_selector: dict, tolerations: list[dict], labels: dict, taints: list[dict]) -> bool:
    """Kubernetes' NodeSelector and TaintToleration filters: every selected label on the node, every
    NoSchedule taint tolerated (``Exists`` matches any value, ``Equal`` the same value)."""
    def tolerated(taint: dict) -> bool:
        return any(t["key"] == taint["key"] and t["effect"] == taint["effect"]
                   and (t["operator"] == "Exists" or t.get("value") == taint["value"]) for t in tolerations)
    return all(labels.get(k) == v for k, v in pod_selector.items()) and all(map(tolerated, taints))


def node_taints(pool: dict) -> list[dict]:
    effects = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
    own = [{**t, "effect": effects[t["effect"]]} for t in pool["nodeConfig"].get("taints", [])]
    return own + ([GKE_GPU_TAINT] if pool["nodeConfig"].get("guestAccelerators") else [])


def test_serving_pods_of_a_class_fit_its_pools_and_only_them(rec: Recording):
    classes = BUILT["classes"]
    gke_pools = {r.inputs["name"]: r.inputs for r in rec.of_type(NODE_POOL)}
    for pool in CLASS_POOLS:
        klass = classes[pool]
        assert klass.class_name == compute_class_name(pool)
        assert klass.node_selector == {COMPUTE_CLASS_LABEL: klass.class_name}
        tolerations = [SERVING_GPU_TOLERATION, *klass.tolerations]
        served = {name for rule in compute_class(rec, pool)["spec"]["priorities"] for name in rule.get("nodepools", [])}
        assert served and served <= set(gke_pools)
        for name, inputs in gke_pools.items():
            labels, taints = inputs["nodeConfig"]["labels"], node_taints(inputs)
            # The class's pods run on every pool the class names, and on no other pool.
            assert schedulable(klass.node_selector, tolerations, labels, taints) == (name in served), name
            if name in served:
                # Pods of other GPU workloads (no class toleration) stay off the class's pools.
                assert not schedulable({}, [SERVING_GPU_TOLERATION], labels, taints), name


def test_pools_without_a_class_carry_no_class_label_or_taint(rec: Recording):
    for name in ("system", "t4"):
        config = node_pool(rec, name)["nodeConfig"]
        assert COMPUTE_CLASS_LABEL not in config["labels"] and "taints" not in config
    # The t4 pool's fallback is ignored without a compute class: no pool for it.
    assert not [r for r in rec.of_type(NODE_POOL) if r.inputs["name"].startswith("t4-")]


def test_the_class_waits_for_its_pools_and_serving_waits_for_both(rec: Recording):
    cluster, classes = BUILT["cluster"], BUILT["classes"]
    by_name = {r.name: r for r in rec.resources}
    for pool in CLASS_POOLS:
        obj = by_name[f"{pool}-class-class"]
        pool_urns = {by_name[n].urn for n in by_name if n == f"gke-{pool}" or n.startswith(f"gke-{pool}-")
                     and by_name[n].type == NODE_POOL}
        assert pool_urns and pool_urns <= set(obj.dependencies)
        assert obj.provider.startswith(by_name["gke-k8s"].urn)
        assert classes[pool].dependencies == [*cluster.pool_dependencies(pool), classes[pool].compute_class]
    assert len(cluster.pool_dependencies("l4")) == 3  # l4, l4-reserved, l4-flex; NAP makes the rest


# --- Node pools per option -------------------------------------------------------------------------------

def test_the_primary_pool_keeps_min_size_and_fallback_pools_start_empty(rec: Recording):
    primary = node_pool(rec, "l4")
    assert primary["autoscaling"] == {"totalMinNodeCount": 1, "totalMaxNodeCount": 4, "locationPolicy": "ANY"}
    assert primary["initialNodeCount"] == 1 and primary["nodeConfig"]["spot"] is True
    for name in ("l4-reserved", "l4-flex", "mig-spot", "mps-any-reservation", "mps-on-demand"):
        pool = node_pool(rec, name)
        assert pool["initialNodeCount"] == 0 and pool["autoscaling"]["totalMinNodeCount"] == 0, name
        assert pool["autoscaling"]["totalMaxNodeCount"] == POOLS[name.split("-")[0]].max_size, name


def test_reservation_pools_consume_their_reservation(rec: Recording):
    reserved = node_pool(rec, "l4-reserved")
    assert reserved["nodeConfig"]["reservationAffinity"] == {
        "consumeReservationType": "SPECIFIC_RESERVATION", "key": RESERVATION_NAME_KEY, "values": [RESERVATION]}
    assert reserved["nodeConfig"]["spot"] is False and "flexStart" not in reserved["nodeConfig"]
    # ANY favours zones with unused reservations (provider docs, autoscaling.location_policy).
    assert reserved["autoscaling"]["locationPolicy"] == "ANY"
    assert node_pool(rec, "mps-any-reservation")["nodeConfig"]["reservationAffinity"] == {
        "consumeReservationType": "ANY_RESERVATION"}
    for name in ("l4", "mig", "mps", "system", "t4"):
        assert "reservationAffinity" not in node_pool(rec, name)["nodeConfig"], name


def test_flex_start_pool_is_neither_spot_nor_reserved_and_runs_at_most_seven_days(rec: Recording):
    config = node_pool(rec, "l4-flex")["nodeConfig"]
    assert config["flexStart"] is True and config["maxRunDuration"] == FLEX_START_MAX_RUN == f"{7 * 24 * 3600}s"
    assert config["spot"] is False
    assert config["reservationAffinity"] == {"consumeReservationType": "NO_RESERVATION"}
    assert node_pool(rec, "l4-flex")["autoscaling"]["locationPolicy"] == "ANY"
    assert not [r for r in rec.of_type(NODE_POOL) if r.inputs["name"] != "l4-flex"
                and ("flexStart" in r.inputs["nodeConfig"] or "maxRunDuration" in r.inputs["nodeConfig"])]


def test_mig_pools_partition_every_gpu(rec: Recording):
    for name in ("mig", "mig-spot"):
        (accelerator,) = node_pool(rec, name)["nodeConfig"]["guestAccelerators"]
        assert accelerator["type"] == "nvidia-tesla-a100" and accelerator["gpuPartitionSize"] == "1g.5gb"
    assert node_pool(rec, "mig-spot")["nodeConfig"]["spot"] is True
    assert not [r for r in rec.of_type(NODE_POOL) if not r.inputs["name"].startswith("mig")
                and "gpuPartitionSize" in str(r.inputs)]


def test_mps_pools_share_each_gpu_among_the_slicing_count(rec: Recording):
    for name in ("mps", "mps-any-reservation", "mps-on-demand"):
        (accelerator,) = node_pool(rec, name)["nodeConfig"]["guestAccelerators"]
        assert accelerator["gpuSharingConfig"] == {"gpuSharingStrategy": "MPS", "maxSharedClientsPerGpu": 4}
    (l4,) = node_pool(rec, "l4")["nodeConfig"]["guestAccelerators"]
    assert "gpuSharingConfig" not in l4


@pytest.mark.parametrize("spec, message", [
    (replace(MIG, mig_profile="1g.10gb"), "not '1g.10gb'"),  # an A100 80GB size on an A100 40GB
    (replace(L4, mig_profile="1g.5gb"), "needs a MIG-capable GPU"),
    (replace(MPS, gpu_sharing_strategy="SPACE_SHARING"), "expected TIME_SHARING or MPS"),
    (replace(L4, fallback=(CapacityOption("flex", ("g2-standard-8",), "flex-start", "any"),)), "consume no reservation"),
    (replace(L4, fallback=(CapacityOption("block", ("g2-standard-8",), "capacity-block", "cr-1"),)), "does not exist on GKE"),
    (replace(L4, fallback=(CapacityOption("a-fallback-name-long-enough-to-overflow", ("g2-standard-8",), "reserved",
                                          RESERVATION),)), "at most 40 characters"),
])
def test_gke_refuses_what_the_pools_cannot_be(tmp_path, spec, message):
    with pytest.raises(Exception, match=re.escape(message)):
        plan(tmp_path, {"system": SYSTEM, "l4": spec})


# --- Node auto-provisioning ------------------------------------------------------------------------------

def test_nap_limits_cover_every_pool_and_defaults_use_our_service_account(rec: Recording):
    autoscaling = rec.one(CLUSTER, "gke-cluster").inputs["clusterAutoscaling"]
    assert autoscaling["enabled"] is True
    limits = {l["resourceType"]: (l.get("minimum"), l["maximum"]) for l in autoscaling["resourceLimits"]}
    # l4: 4 nodes x 1 + mps: 3 x 1; a100: 2 x 1; the t4 pool has no class but counts (the limits are
    # cluster-wide): 2 nodes x 2.
    assert limits == {"cpu": (0, 96), "memory": (0, 384), "nvidia-l4": (0, 7), "nvidia-tesla-a100": (0, 2),
                      "nvidia-tesla-t4": (0, 4)}
    defaults = autoscaling["autoProvisioningDefaults"]
    email = rec.one("gcp:serviceaccount/account:Account", "gke-nodes").inputs["accountId"]
    assert defaults["serviceAccount"] == f"{email}@example-project.iam.gserviceaccount.com"
    assert defaults["oauthScopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    assert defaults["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}
    assert defaults["management"] == {"autoRepair": True, "autoUpgrade": True}
    assert "bootDiskKmsKey" not in defaults  # the one ForceNew field of cluster_autoscaling
    # NAP's pools stream images like the class's own (the L4 pool has image streaming on); pools that do
    # not stream say so, or they would inherit the cluster default.
    assert rec.one(CLUSTER, "gke-cluster").inputs["nodePoolDefaults"] == {
        "nodeConfigDefaults": {"gcfsConfig": {"enabled": True}}}
    streaming = {r.inputs["name"]: r.inputs["nodeConfig"]["gcfsConfig"]["enabled"] for r in rec.of_type(NODE_POOL)}
    assert streaming == {"system": False, "l4": True, "l4-reserved": True, "l4-flex": True, "mig": False,
                         "mig-spot": False, "mps": False, "mps-any-reservation": False, "mps-on-demand": False,
                         "t4": False}


def test_gpu_limits_count_the_most_gpus_any_option_has():
    wide = replace(L4, fallback=(CapacityOption("wide", ("g2-standard-24",), "on-demand"),),
                   fallback_accelerators={"wide": ("nvidia-l4", 2)})
    assert gpu_resource_limits({"l4": wide}) == {"nvidia-l4": 8}
    rules = compute_class_manifest("l4", wide)["spec"]["priorities"]
    assert rules[1]["gpu"] == {"type": "nvidia-l4", "count": 2}
    # Without a compute class only the pool's own machine counts.
    assert gpu_resource_limits({"l4": replace(wide, compute_class=False)}) == {"nvidia-l4": 4}


PREVIOUS_GPU_POOL = {
    "autoscaling": {"locationPolicy": "ANY", "totalMaxNodeCount": 4, "totalMinNodeCount": 1}, "initialNodeCount": 1,
    "location": "us-central1-a", "management": {"autoRepair": True, "autoUpgrade": True}, "name": "l4",
    "nodeConfig": {"diskSizeGb": 100, "diskType": "pd-balanced", "gcfsConfig": {"enabled": True},
                   "guestAccelerators": [{"count": 1, "gpuDriverInstallationConfig": {"gpuDriverVersion": "LATEST"},
                                          "type": "nvidia-l4"}],
                   "imageType": "COS_CONTAINERD", "labels": {POOL_LABEL: "l4"}, "machineType": "g2-standard-8",
                   "metadata": {"disable-legacy-endpoints": "true"},
                   "oauthScopes": ["https://www.googleapis.com/auth/cloud-platform"],
                   "serviceAccount": "tfserving-gke-test-nodes@example-project.iam.gserviceaccount.com",
                   "shieldedInstanceConfig": {"enableIntegrityMonitoring": True, "enableSecureBoot": True},
                   "spot": True, "workloadMetadataConfig": {"mode": "GKE_METADATA"}},
    "project": "example-project", "upgradeSettings": {"maxSurge": 1, "maxUnavailable": 0}}
"""The GPU pool's inputs before compute classes existed (tests/snapshots/plan-gke-dev.json, gke-gpu, at
commit ce78876), with this test's pool name and sizes."""


def test_without_a_compute_class_nothing_changes(tmp_path):
    rec = plan(tmp_path, {"system": SYSTEM, "l4": replace(L4, compute_class=False)})
    inputs = {k: v for k, v in node_pool(rec, "l4").items() if k != "cluster"}
    assert inputs == PREVIOUS_GPU_POOL
    cluster = rec.one(CLUSTER, "gke-cluster").inputs
    assert "clusterAutoscaling" not in cluster and "nodePoolDefaults" not in cluster
    assert sorted(r.name for r in rec.of_type(NODE_POOL)) == ["gke-l4", "gke-system"]
    assert not rec.of_type(COMPUTE_CLASS)


def test_a_class_needs_a_gpu_pool_with_compute_class():
    with pytest.raises(ValueError, match="not provisioned through a compute class"):
        GpuComputeClass("x", GpuComputeClassArgs(pool="t4", spec=T4))


def test_the_class_toleration_matches_the_pool_taint():
    klass = compute_class_name("l4")
    assert class_toleration(klass) == {"key": COMPUTE_CLASS_LABEL, "operator": "Equal", "value": klass,
                                       "effect": "NoSchedule"}
