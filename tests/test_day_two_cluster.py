"""Day-two cluster behaviour: metrics for the HPAs, autoscaler RBAC, GKE control-plane reach and GPU
metrics, what waits for GPU nodes, regional initial counts, node auto-repair (mock engine)."""

from __future__ import annotations

import pytest

from components.gcp.gke_cluster import GkeNodePoolSpec, control_plane_ports, initial_nodes_per_zone
from components.helm_charts import CLUSTER_AUTOSCALER, PROMETHEUS_ADAPTER
from stacks.mock_engine import Recording

CHART = "kubernetes:helm.sh/v4:Chart"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
NODE_POOL = "gcp:container/nodePool:NodePool"
SYSTEM_POOL = {"instanceTypes": ["e2-standard-4"], "minSize": 1, "desiredSize": 1, "maxSize": 3}
GPU_POOL = {"instanceTypes": ["g2-standard-8"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 1, "maxSize": 5}
REGIONAL = {"regionalCluster": True, "zones": ["us-central1-a", "us-central1-b", "us-central1-c"]}


def charts(rec: Recording) -> dict[str, dict]:
    return {r.inputs["chart"]: r.inputs for r in rec.of_type(CHART)}


def deployment(rec: Recording, name: str):
    (match,) = [r for r in rec.of_type("kubernetes:apps/v1:Deployment")
                if (r.inputs.get("metadata") or {}).get("name") == name]
    return match


def version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.lstrip("v").split("."))


# 1. metrics-server -----------------------------------------------------------------------------------

def test_eks_installs_metrics_server_after_the_nodes(dev: Recording):
    metrics = dev.one("aws:eks/addon:Addon", "eks-metrics-server")
    assert metrics.inputs["addonName"] == "metrics-server"
    assert metrics.inputs["resolveConflictsOnCreate"] == "OVERWRITE"
    # Like coredns, its pods need nodes.
    assert dev.one(NODE_GROUP, "eks-system").urn in metrics.dependencies


# 2. cluster-autoscaler chart RBAC and image -------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["dev", "prod"])
def test_autoscaler_chart_has_volumeattachments_rbac_and_matches_the_cluster_minor(fixture, request):
    rec: Recording = request.getfixturevalue(fixture)
    installed = charts(rec)["cluster-autoscaler"]
    # 9.46.3 added volumeattachments to the chart's ClusterRole (kubernetes/autoscaler#7904, #7663).
    assert version(installed["version"]) >= (9, 46, 3)
    cluster_minor = version(rec.one("aws:eks/cluster:Cluster", "eks-cluster").inputs["version"])[:2]
    image_minor = version(installed["values"]["image"]["tag"])[:2]
    chart_minor = version(CLUSTER_AUTOSCALER.app_version)[:2]
    # One autoscaler minor per Kubernetes minor; the chart's RBAC is written for its appVersion.
    assert image_minor == cluster_minor == chart_minor, (image_minor, cluster_minor, chart_minor)


# 3. GKE private control plane -> APIService / webhook ports ----------------------------------------------

def test_gke_control_plane_reaches_the_adapter_and_webhook_ports(gke: Recording):
    rule = gke.one("gcp:compute/firewall:Firewall", "gke-master-webhooks").inputs
    cluster = gke.one("gcp:container/cluster:Cluster", "gke-cluster").inputs
    assert rule["direction"] == "INGRESS"
    assert rule["sourceRanges"] == [cluster["privateClusterConfig"]["masterIpv4CidrBlock"]]
    (allow,) = rule["allows"]
    assert allow["protocol"] == "tcp" and "6443" in allow["ports"]
    # Only the nodes (their service account), above the network's deny-all.
    assert rule["targetServiceAccounts"] == [cluster["nodeConfig"]["serviceAccount"]]
    assert rule["priority"] < 65534
    # The adapter's APIService port is what the rule opens, whatever the base values say.
    adapter_port = str(charts(gke)["prometheus-adapter"]["values"].get("listenPort", 6443))
    assert adapter_port in control_plane_ports()
    assert "listenPort" not in PROMETHEUS_ADAPTER.base_values() or adapter_port == str(
        PROMETHEUS_ADAPTER.base_values()["listenPort"])


# 4. dcgm-exporter on GKE ---------------------------------------------------------------------------------

def test_dcgm_exporter_selects_gke_gpu_nodes_and_mounts_the_cos_driver(gke: Recording, prod: Recording):
    values = charts(gke)["dcgm-exporter"]["values"]
    # GKE GPU nodes carry cloud.google.com/gke-accelerator, not nvidia.com/gpu.present.
    assert "nvidia.com/gpu.present" not in (values.get("nodeSelector") or {})
    (term,) = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "cloud.google.com/gke-accelerator", "operator": "Exists"}]
    volumes = {v["name"]: v["hostPath"] for v in values["extraHostVolumes"]}
    mounts = {m["name"]: m["mountPath"] for m in values["extraVolumeMounts"]}
    assert volumes["nvidia-install-dir-host"] == "/home/kubernetes/bin/nvidia"
    assert mounts["nvidia-install-dir-host"] == "/usr/local/nvidia"
    assert {"name": "LD_LIBRARY_PATH", "value": "/usr/local/nvidia/lib64"} in values["extraEnv"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]
    # EKS keeps selecting the label its GPU node groups carry, without GKE's mounts.
    eks = charts(prod)["dcgm-exporter"]["values"]
    assert eks["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "extraHostVolumes" not in eks and "affinity" not in eks


# 5. only GPU workloads wait for GPU nodes ----------------------------------------------------------------

def test_eks_provider_waits_for_the_system_group_and_gpu_workloads_for_theirs(dev: Recording):
    system, gpu = dev.one(NODE_GROUP, "eks-system").urn, dev.one(NODE_GROUP, "eks-gpu").urn
    provider = dev.one("pulumi:providers:kubernetes", "eks-k8s")
    assert system in provider.dependencies and gpu not in provider.dependencies
    # The GPU server's Deployment waits for the GPU group; the CPU server's does not.
    assert gpu in deployment(dev, "tfserving-default").dependencies
    cpu_servers = [r for r in dev.of_type("kubernetes:apps/v1:Deployment")
                   if r.inputs["spec"]["template"]["spec"].get("nodeSelector") == {"tfplatform.io/node-pool": "system"}]
    assert cpu_servers and all(gpu not in d.dependencies for d in cpu_servers)
    # The GPU add-ons (DaemonSets on GPU nodes) wait for the GPU group too.
    for name in ("gpu-device-plugin", "gpu-dcgm-exporter"):
        assert gpu in dev.one(CHART, name).dependencies, name


def test_gke_provider_waits_for_the_system_pool_and_gpu_workloads_for_theirs(gke: Recording):
    system, gpu = gke.one(NODE_POOL, "gke-system").urn, gke.one(NODE_POOL, "gke-gpu").urn
    provider = gke.one("pulumi:providers:kubernetes", "gke-k8s")
    assert system in provider.dependencies and gpu not in provider.dependencies
    assert gpu in deployment(gke, "tfserving-default").dependencies
    assert gpu in gke.one(CHART, "gpu-dcgm-exporter").dependencies


# 6. regional GKE initial node counts ---------------------------------------------------------------------

@pytest.mark.parametrize(("desired", "maximum", "zones", "per_zone"), [
    (1, 3, 3, 1),   # the smallest multiple of the zones reaching desired
    (2, 2, 3, 0),   # ... but never beyond max (3 nodes > 2)
    (4, 9, 3, 2),
    (4, 5, 3, 1),
    (0, 5, 3, 0),
    (2, 3, 1, 2),   # zonal: the count is the total
])
def test_initial_nodes_per_zone_respects_desired_and_max(desired, maximum, zones, per_zone):
    spec = GkeNodePoolSpec(machine_type="e2-standard-4", min_size=0, desired_size=desired, max_size=maximum)
    assert initial_nodes_per_zone(spec, zones) == per_zone
    assert per_zone * zones <= maximum


def test_regional_pool_never_starts_above_its_max(plan_with):
    rec = plan_with("gke-dev", **REGIONAL, nodePools={
        "system": SYSTEM_POOL, "gpu": {**GPU_POOL, "desiredSize": 2, "maxSize": 5}})
    assert rec.one(NODE_POOL, "gke-system").inputs["initialNodeCount"] == 1  # 3 nodes, max 3
    assert rec.one(NODE_POOL, "gke-gpu").inputs["initialNodeCount"] == 1  # 3 nodes (2 rounded up), max 5
    # 4 rounds up to 6 > max 5: one per zone.
    capped = plan_with("gke-dev", **REGIONAL, nodePools={"system": SYSTEM_POOL, "gpu": {**GPU_POOL, "desiredSize": 4}})
    assert capped.one(NODE_POOL, "gke-gpu").inputs["initialNodeCount"] == 1


def test_a_regional_pool_whose_min_cannot_fit_under_its_max_is_refused(plan_with):
    # A settings error now (before any resource), naming the key: it used to raise in gke_cluster.py.
    with pytest.raises(Exception, match=r"nodePools\.system\.maxSize = 2: expected a multiple of the 3 zones"):
        plan_with("gke-dev", **REGIONAL, nodePools={
            "system": {**SYSTEM_POOL, "minSize": 2, "desiredSize": 2, "maxSize": 2}, "gpu": GPU_POOL})


# 7. EKS node auto-repair ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["dev", "prod"])
def test_every_managed_node_group_repairs_its_nodes(fixture, request):
    rec: Recording = request.getfixturevalue(fixture)
    groups = rec.of_type(NODE_GROUP)
    assert groups
    for group in groups:
        assert group.inputs["nodeRepairConfig"] == {"enabled": True}, group.name
