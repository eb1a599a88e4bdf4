"""Issue 16's capacity stacks (tests/stacks/): Karpenter on EKS and ComputeClasses on GKE, each with spot ->
on-demand fallback and a MIG pool. They plan, pass every deploy rule, validate (built-in kinds strictly,
Karpenter and ComputeClass objects against their CRD schemas), scan clean, and the plan prints the ordered
capacity each GPU server may land on; the cost line prices it (floor at the first choice, ceiling at the most
expensive option for the pool's size)."""

from __future__ import annotations

import hashlib

import pytest

from stacks.cost import estimate
from stacks.deploy_rules import check
from stacks.fallback import pools
from stacks.mock_engine import Recording
from stacks.plan import ROOT, kubernetes_objects, plan_stack, to_json
from stacks.scan import scan_stack
from tests.conftest import k8s_object, k8s_objects
from tests.crd_validation import CRD_KINDS
from tests.test_manifests import validation_failures
from tests.test_plan_cli import main_result

STACKS = ROOT / "tests" / "stacks"
NAMES = ("capacity-eks", "capacity-gke")


def stack_file(name: str):
    return STACKS / f"Pulumi.{name}.yaml"


@pytest.fixture(scope="module")
def recordings() -> dict[str, Recording]:
    return {name: plan_stack(name, stack_file(name)) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_the_stack_passes_every_deploy_rule(recordings, name):
    assert check(recordings[name]) == []


@pytest.mark.parametrize("name", NAMES)
def test_every_object_validates(recordings, name):
    objects = [r.inputs for r in kubernetes_objects(recordings[name])]
    kinds = {o["kind"] for o in objects if o["kind"] in CRD_KINDS}
    assert kinds >= ({"NodePool", "EC2NodeClass"} if name == "capacity-eks" else {"ComputeClass"}), kinds
    failures = validation_failures(objects)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", NAMES)
def test_the_stack_scans_clean(name, tmp_path):
    result = scan_stack(name, tmp_path, stack_file=stack_file(name))
    failed = [f"{scanner} {c.check_id} {c.resource}" for scanner, frameworks in result.scanners.items()
              for fw in frameworks.values() for c in fw.failed_checks]
    assert not failed and not result.unmapped and not result.mapping_problems, result.to_markdown()
    assert sum(fw.passed for fw in result.frameworks.values()) > 300


EKS_CAPACITY = """\
  tfserving-default (pool gpu, karpenter):
    1. g6.xlarge spot: $0.805/h, up to 4 nodes (Karpenter NodePool gpu)
    1. g5.xlarge spot: $1.006/h, up to 4 nodes (Karpenter NodePool gpu)
    2. g6.xlarge on-demand: $0.805/h, up to 4 nodes (Karpenter NodePool gpu-on-demand)
    2. g5.xlarge on-demand: $1.006/h, up to 4 nodes (Karpenter NodePool gpu-on-demand)
    3. g5.xlarge reserved: $1.006/h, up to 4 nodes (Karpenter NodePool gpu-odcr)
  tfserving-small (pool mig, karpenter):
    1. p4d.24xlarge capacity-block: $14.500/h, up to 1 nodes (Karpenter NodePool mig)
    2. p4d.24xlarge on-demand: $32.773/h, up to 1 nodes (Karpenter NodePool mig-on-demand)
"""
GKE_CAPACITY = """\
  tfserving-default (pool tfplatform-gpu, compute-class):
    1. g2-standard-8 spot: $0.854/h, up to 4 nodes (node pool gpu)
    2. g2-standard-8 on-demand: $0.854/h, up to 6 nodes (ComputeClass tfplatform-gpu (auto-provisioned))
    3. g2-standard-12 on-demand: $1.000/h, up to 6 nodes (ComputeClass tfplatform-gpu (auto-provisioned))
    4. g2-standard-8 flex-start: $0.854/h, up to 4 nodes (node pool gpu-flex)
  tfserving-mps (pool tfplatform-shared, compute-class):
    1. g2-standard-8 on-demand: $0.854/h, up to 2 nodes (node pool shared)
  tfserving-small (pool tfplatform-mig, compute-class):
    1. a2-highgpu-1g reserved: $3.673/h, up to 2 nodes (node pool mig)
    2. a2-highgpu-1g on-demand: $3.673/h, up to 2 nodes (node pool mig-on-demand)
"""


@pytest.mark.parametrize("name,expected", [("capacity-eks", EKS_CAPACITY), ("capacity-gke", GKE_CAPACITY)])
def test_plan_prints_the_ordered_capacity_of_each_gpu_server(capsys, name, expected):
    code, out, _ = main_result(capsys, "plan", "--stack", name, "--config-file", str(stack_file(name)))
    assert code == 0
    section = out.split("GPU capacity, in the order each server's provisioner tries it")[1]
    assert section.split(":\n", 1)[1].split("deploy rules:")[0] == expected


def test_the_order_is_the_provisioners_own(recordings):
    # Karpenter tries NodePools by descending weight; GKE a ComputeClass's priorities in list order.
    weights = {o["metadata"]["name"]: o["spec"]["weight"] for o in k8s_objects(recordings["capacity-eks"], "NodePool")}
    assert weights["gpu"] > weights["gpu-on-demand"] > weights["gpu-odcr"]
    assert weights["mig"] > weights["mig-on-demand"]
    gpu_class = k8s_object(recordings["capacity-gke"], "ComputeClass", "tfplatform-gpu")
    assert [p.get("nodepools") or p.get("machineType") for p in gpu_class["spec"]["priorities"]] == [
        ["gpu"], "g2-standard-8", "g2-standard-12", ["gpu-flex"]]


def test_the_cost_line_prices_the_first_choice_and_the_dearest_fallback(recordings):
    lines = {line.item: line for line in estimate(to_json(recordings["capacity-eks"])).lines}
    gpu, mig = lines["karpenter gpu"], lines["karpenter mig"]
    # Floor: 1 node held by the default server's replica, at the cheapest first-choice type (g6 spot, priced at
    # most its on-demand list price); ceiling: maxSize 4 at the dearest option (g5).
    assert (gpu.hourly_min, gpu.hourly_max) == (0.8048, round(1.006 * 4, 4))
    # MIG: 2 replicas x 1 partition fit one p4d (56 partitions); the block's price, then on-demand at most.
    assert (mig.hourly_min, mig.hourly_max) == (14.5, 32.7726)
    assert "2 GPUs / 56 per node" in mig.held_by
    gke = {line.item: line for line in estimate(to_json(recordings["capacity-gke"])).lines}
    assert (gke["compute-class tfplatform-gpu"].hourly_min, gke["compute-class tfplatform-gpu"].hourly_max) == (
        round(0.853624, 4), round(1.000416 * 4, 4))
    assert "2 GPUs / 7 per node" in gke["compute-class tfplatform-mig"].held_by
    # Each pool is priced once: none of its NodePools or node pools has a line of its own.
    assert not [item for item in gke if item.startswith("gke-gpu") or item.startswith("gke-mig")]


def test_mig_servers_ask_for_their_partition(recordings):
    eks = k8s_object(recordings["capacity-eks"], "Deployment", "tfserving-small")
    limits = eks["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits.get("nvidia.com/mig-1g.5gb") == "1" and "nvidia.com/gpu" not in limits
    gke = k8s_object(recordings["capacity-gke"], "Deployment", "tfserving-small")
    pod = gke["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"cloud.google.com/compute-class": "tfplatform-mig",
                                   "cloud.google.com/gke-gpu-partition-size": "1g.5gb"}
    assert {"key": "cloud.google.com/compute-class", "operator": "Equal", "value": "tfplatform-mig",
            "effect": "NoSchedule"} in pod["tolerations"]
    mig_pools = [r.inputs for r in recordings["capacity-gke"].of_type("gcp:container/nodePool:NodePool")
                 if r.inputs.get("name", "").startswith("mig")]
    assert len(mig_pools) == 2
    for node_pool in mig_pools:
        assert node_pool["nodeConfig"]["guestAccelerators"][0]["gpuPartitionSize"] == "1g.5gb"


def test_the_model_cache_prep_reaches_compute_class_nodes(recordings):
    prep = k8s_object(recordings["capacity-gke"], "DaemonSet", "model-cache-prep")["spec"]["template"]["spec"]
    terms = prep["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "cloud.google.com/compute-class", "operator": "In",
            "values": ["tfplatform-gpu", "tfplatform-mig", "tfplatform-shared"]} in terms[1]["matchExpressions"]
    assert {"key": "cloud.google.com/compute-class", "operator": "Exists", "effect": "NoSchedule"} in prep["tolerations"]


def test_gpu_servers_on_karpenter_pools_wait_for_their_node_pools(recordings):
    rec = recordings["capacity-eks"]
    deployment = next(r for r in rec.resources if r.name == "tfserving-small-deployment")
    node_pools = {r.urn for r in rec.of_type("kubernetes:karpenter.sh/v1:NodePool") if r.name.startswith("karpenter-pools-mig")}
    assert node_pools and node_pools <= set(deployment.dependencies)
    # No managed node group is made for a pool Karpenter provisions.
    groups = {r.inputs["labels"]["tfplatform.io/node-pool"] for r in rec.of_type("aws:eks/nodeGroup:NodeGroup")}
    assert groups == {"system"}


def test_a_capacity_block_node_group_is_confined_to_its_zone(plan_with):
    block = {"instanceTypes": ["p5.48xlarge"], "gpusPerNode": 8, "minSize": 0, "desiredSize": 0, "maxSize": 1,
             "capacityType": "CAPACITY_BLOCK", "reservation": "cr-0123456789abcdef0", "zones": ["us-east-1b"]}
    rec = plan_with(nodePools={"system": {"instanceTypes": ["m6i.large"], "minSize": 2, "desiredSize": 2},
                               "gpu": {"instanceTypes": ["g5.xlarge"], "capacityType": "SPOT", "gpusPerNode": 1,
                                       "minSize": 0, "desiredSize": 0, "maxSize": 5},
                               "block": block})
    group = rec.one("aws:eks/nodeGroup:NodeGroup", "eks-block")
    subnet = hashlib.sha256(b"aws:ec2/subnet:Subnetnetwork-private-us-east-1b").hexdigest()[:17]
    assert group.inputs["subnetIds"] == [f"subnet-{subnet}"]
    assert group.inputs["capacityType"] == "CAPACITY_BLOCK"
    assert len(rec.one("aws:eks/nodeGroup:NodeGroup", "eks-gpu").inputs["subnetIds"]) == 2


@pytest.mark.parametrize("name, expected", [
    ("capacity-eks", {"tfserving-default-prepull", "tfserving-small-prepull"}),
    ("capacity-gke", set()),
])
def test_image_prepulls_run_where_their_servers_run(recordings, name, expected):
    """Karpenter's and ComputeClass nodes carry the serving pods' own labels and taints: a pre-pull placed by
    anything else would pull on nodes the server never uses, or miss its nodes. GKE streams the images (the
    Artifact Registry mirror), so it pre-pulls nothing by default."""
    from components.serving.image_prepull import COMPONENT

    prepulls = [d for d in k8s_objects(recordings[name], "DaemonSet")
                if d["metadata"]["labels"].get("app.kubernetes.io/component") == COMPONENT]
    assert {d["metadata"]["name"] for d in prepulls} == expected
    for daemon_set in prepulls:
        held = daemon_set["spec"]["template"]["spec"]
        pod = k8s_object(recordings[name], "Deployment", daemon_set["metadata"]["name"].removesuffix("-prepull"))
        pod = pod["spec"]["template"]["spec"]
        assert held["nodeSelector"] == pod["nodeSelector"] and held["tolerations"] == pod["tolerations"]
        images = {c["image"] for c in pod["containers"] + pod["initContainers"]}
        assert {c["image"] for c in held["containers"]} == images
