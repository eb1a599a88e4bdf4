"""Monitoring and GPU add-ons on the mock engine: charts, scraping, rules, dashboards, autoscaler."""

from __future__ import annotations

import json
import pytest

from components.helm_charts import CHARTS
from components.serving.metrics_adapter import adapter_rule
from stacks.mock_engine import Recording
from stacks.plan import write_manifests
from tests.conftest import k8s_object, k8s_objects, run_promtool

CHART = "kubernetes:helm.sh/v4:Chart"


def charts(rec: Recording) -> dict[str, dict]:
    return {r.inputs["chart"]: r.inputs for r in rec.of_type(CHART)}


def test_prometheus_stack_and_adapter_are_pinned_charts(prod: Recording):
    installed = charts(prod)
    pinned = {c.chart: c for c in CHARTS}
    for name in ("kube-prometheus-stack", "prometheus-adapter"):
        assert installed[name]["version"] == pinned[name].version
        assert installed[name]["repositoryOpts"] == {"repo": pinned[name].repo}
        assert installed[name]["namespace"] == "monitoring"
    # Helm releases (v3) need a reachable cluster during preview; v4 charts render client-side.
    assert not prod.of_type("kubernetes:helm.sh/v3:Release")


def test_service_monitors_are_picked_up_without_the_release_label(prod: Recording):
    spec = charts(prod)["kube-prometheus-stack"]["values"]["prometheus"]["prometheusSpec"]
    for selector in ("serviceMonitorSelectorNilUsesHelmValues", "ruleSelectorNilUsesHelmValues",
                     "podMonitorSelectorNilUsesHelmValues"):
        assert spec[selector] is False, selector
    assert spec["externalLabels"] == {"environment": "prod"}


def test_grafana_admin_password_is_a_generated_secret(prod: Recording, plan_with):
    values = charts(prod)["kube-prometheus-stack"]["values"]["grafana"]
    assert values["enabled"] is True
    assert values["admin"]["existingSecret"] == "grafana-admin"
    secret = k8s_object(prod, "Secret", "grafana-admin")
    assert secret["stringData"] == {"admin-user": "[secret]", "admin-password": "[secret]"}
    assert prod.outputs["grafanaAdminPassword"] == "[secret]"
    no_grafana = plan_with(monitoring={"grafana": False})
    assert charts(no_grafana)["kube-prometheus-stack"]["values"]["grafana"]["enabled"] is False
    assert "grafanaAdminPassword" not in no_grafana.outputs


def test_adapter_serves_the_rps_rule_from_this_prometheus(dev: Recording):
    values = charts(dev)["prometheus-adapter"]["values"]
    assert values["rules"]["custom"] == [adapter_rule()]
    assert values["rules"]["default"] is False
    assert values["prometheus"]["url"] == "http://kps-prometheus.monitoring.svc"
    assert charts(dev)["kube-prometheus-stack"]["values"]["fullnameOverride"] == "kps"


def test_existing_prometheus_keeps_monitors_rules_and_dashboards(plan_with):
    rec = plan_with(monitoring={"install": False})
    assert "kube-prometheus-stack" not in charts(rec) and "prometheus-adapter" not in charts(rec)
    assert k8s_objects(rec, "ServiceMonitor") and k8s_objects(rec, "PrometheusRule")
    assert [c for c in k8s_objects(rec, "ConfigMap") if c["metadata"]["name"].startswith("dashboard-")]


def test_a_service_monitor_per_server_on_the_metrics_path(dev: Recording):
    monitors = {m["metadata"]["name"]: m for m in k8s_objects(dev, "ServiceMonitor")}
    assert {"tfserving-default", "tfserving-cpu"} <= set(monitors)
    spec = monitors["tfserving-default"]["spec"]
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "tfserving",
                                               "tfplatform.io/server": "default"}
    (endpoint,) = spec["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/monitoring/prometheus/metrics")
    targets = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert targets["environment"]["replacement"] == "dev"
    assert targets["server"]["sourceLabels"] == ["__meta_kubernetes_service_label_tfplatform_io_server"]
    assert endpoint["metricRelabelings"][0]["targetLabel"] == "model"
    # The Services it selects carry the labels it relabels from.
    service = k8s_object(dev, "Service", "tfserving-default")
    assert service["metadata"]["labels"]["tfplatform.io/server"] == "default"


def test_custom_resources_wait_for_their_crds(prod: Recording):
    stack = prod.one(CHART, "monitoring-kube-prometheus-stack")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        for res in prod.resources:
            if res.inputs.get("kind") == kind and res.inputs["metadata"]["namespace"] != "nvidia":
                assert stack.urn in res.dependencies, res.name
    adapter = prod.one(CHART, "monitoring-prometheus-adapter")
    assert stack.urn in adapter.dependencies


@pytest.fixture(scope="module")
def prod_manifests(prod: Recording, tmp_path_factory):
    out = tmp_path_factory.mktemp("prod-manifests")
    write_manifests(prod, out)
    return out


def test_plan_writes_the_rule_files_and_promtool_accepts_them(prod_manifests, promtool):
    files = sorted((prod_manifests / "rules").glob("*.yaml"))
    assert [f.name for f in files] == ["monitoring-tfserving-alerts.yaml"]
    done = run_promtool(promtool, "check", "rules", *map(str, files), cwd=prod_manifests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_dashboards_ship_as_sidecar_config_maps(prod: Recording, prod_manifests):
    dashboards = [c for c in k8s_objects(prod, "ConfigMap") if c["metadata"]["name"].startswith("dashboard-")]
    assert {c["metadata"]["name"] for c in dashboards} >= {"dashboard-tfserving", "dashboard-gpu"}
    for cm in dashboards:
        assert cm["metadata"]["labels"] == {"grafana_dashboard": "1"}
        (body,) = cm["data"].values()
        assert json.loads(body)["panels"]
    assert (prod_manifests / "files" / "monitoring" / "dashboard-gpu" / "gpu.json").exists()


def test_device_plugin_only_on_gpu_nodes_on_eks(prod: Recording, gke: Recording):
    plugin = charts(prod)["nvidia-device-plugin"]
    assert plugin["values"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in plugin["values"]["tolerations"]
    assert plugin["namespace"] == "nvidia"
    # The label it selects is on the GPU node group only.
    groups = {r.name: r.inputs["labels"] for r in prod.of_type("aws:eks/nodeGroup:NodeGroup")}
    assert groups["eks-gpu"]["nvidia.com/gpu.present"] == "true"
    assert "nvidia.com/gpu.present" not in groups["eks-system"]
    # GKE installs and manages its own device plugin.
    assert "nvidia-device-plugin" not in charts(gke)


def test_time_sliced_pools_get_a_device_plugin_config(plan_with):
    rec = plan_with(nodePools={"system": {"instanceTypes": ["m6i.large"], "minSize": 2, "desiredSize": 2},
                               "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1, "gpuTimeSlicing": 4,
                                       "minSize": 0, "desiredSize": 0, "maxSize": 2}})
    config = charts(rec)["nvidia-device-plugin"]["values"]["config"]
    assert "replicas: 4" in config["map"]["time-slicing-4"] and config["default"] == "default"


def test_dcgm_exporter_with_its_service_monitor_by_config(prod: Recording, plan_with):
    exporter = charts(prod)["dcgm-exporter"]
    assert exporter["values"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    monitor = k8s_object(prod, "ServiceMonitor", "dcgm-exporter")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "dcgm-exporter"}
    managed = plan_with("gke-dev", monitoring={"gpuMetrics": "managed"})
    assert "dcgm-exporter" not in charts(managed)
    assert not [m for m in k8s_objects(managed, "ServiceMonitor") if m["metadata"]["name"] == "dcgm-exporter"]


def test_cluster_autoscaler_has_its_own_least_privilege_identity(prod: Recording):
    role = prod.one("aws:iam/role:Role", "cluster-autoscaler-role")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    condition = trust["Statement"][0]["Condition"]["StringEquals"]
    assert any(v == "system:serviceaccount:kube-system:cluster-autoscaler" for v in condition.values())
    policy = json.loads(prod.one("aws:iam/rolePolicy:RolePolicy", "cluster-autoscaler-scale").inputs["policy"])
    discover, nodegroups, scale = policy["Statement"]
    assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in discover["Action"])
    assert nodegroups["Resource"] == "arn:aws:eks:us-east-1:*:nodegroup/tfserving-prod/*/*"
    assert scale["Condition"]["StringEquals"] == {
        "aws:ResourceTag/k8s.io/cluster-autoscaler/tfserving-prod": "owned"}
    values = charts(prod)["cluster-autoscaler"]["values"]
    assert values["autoDiscovery"] == {"clusterName": "tfserving-prod"}
    assert values["image"]["tag"] == "v1.33.0"
    annotation = values["rbac"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert annotation.startswith("arn:aws:iam::123456789012:role/cluster-autoscaler-role-")
    assert role.urn in prod.one(CHART, "cluster-autoscaler-chart").dependencies


def test_no_cluster_autoscaler_on_gke(gke: Recording):
    assert "cluster-autoscaler" not in charts(gke)
    assert not [r for r in gke.resources if r.type.startswith("aws:")]
