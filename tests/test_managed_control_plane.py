"""Managed control planes (EKS, GKE): kube-prometheus-stack must not scrape, or alert on, components
the cloud provider hides.

EKS and GKE run kube-controller-manager, kube-scheduler and etcd out of reach of the cluster, and
kube-proxy's metrics listen on 127.0.0.1:10249 (the EKS add-on's default) or kube-proxy does not run
at all (GKE Dataplane V2). Chart 75.9.0 scrapes all four by default and ships rules on them
(KubeControllerManagerDown, KubeSchedulerDown, KubeProxyDown, etcd*, and TargetDown on a refused
scrape) that would fire forever.

The chart's facts below were read from prometheus-community/helm-charts at commit
``1d8188d680d1ef341343a18683154046e7fafef3`` (the commit that set ``version: 75.9.0``):
``charts/kube-prometheus-stack/values.yaml`` (defaults), ``templates/prometheus/rules-1.14/*.yaml``
(the ``{{- if and ... }}`` gate of each rule template, and every ``job=`` selector in it, with
``$kubeStateMetricsJob`` = kube-state-metrics and the ``kps-*`` self-monitoring jobs of
``fullnameOverride: kps``), and ``templates/exporters/*/service.yaml`` (``jobLabel``, the scrape
``job``). :func:`test_tables_match_the_chart_source` re-reads them when a checkout of the chart is
available (``KPS_CHART_GIT``, a git directory of helm-charts) and is skipped otherwise.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from components.helm_charts import KUBE_PROMETHEUS_STACK, merge
from stacks.mock_engine import Recording
from tests.conftest import run_promtool

CHART = "kubernetes:helm.sh/v4:Chart"
CHART_COMMIT = "1d8188d680d1ef341343a18683154046e7fafef3"
CHART_GIT = os.environ.get("KPS_CHART_GIT", "/work/.mirror/prometheus-community+helm-charts/repo")

RULE_KEYS = (
    "alertmanager etcd configReloaders general k8sContainerCpuUsageSecondsTotal k8sContainerMemoryCache "
    "k8sContainerMemoryRss k8sContainerMemorySwap k8sContainerResource k8sContainerMemoryWorkingSetBytes "
    "k8sPodOwner kubeApiserverAvailability kubeApiserverBurnrate kubeApiserverHistogram kubeApiserverSlos "
    "kubeControllerManager kubelet kubeProxy kubePrometheusGeneral kubePrometheusNodeRecording kubernetesApps "
    "kubernetesResources kubernetesStorage kubernetesSystem kubeSchedulerAlerting kubeSchedulerRecording "
    "kubeStateMetrics network node nodeExporterAlerting nodeExporterRecording prometheus prometheusOperator "
    "windows").split()
"""``defaultRules.rules`` of the chart's values.yaml, all ``true`` by default."""

CHART_DEFAULTS = {
    "defaultRules": {"create": True, "rules": {key: True for key in RULE_KEYS}},
    **{key: {"enabled": True} for key in (
        "kubeApiServer", "kubelet", "kubeControllerManager", "coreDns", "kubeEtcd", "kubeScheduler",
        "kubeProxy", "kubeStateMetrics", "nodeExporter", "alertmanager", "prometheus", "prometheusOperator")},
    "kubeDns": {"enabled": False},
    "windowsMonitoring": {"enabled": False},
}
"""The chart defaults the tests need (values.yaml)."""

SCRAPE_JOBS = {
    "kubeApiServer": "apiserver", "kubelet": "kubelet", "kubeControllerManager": "kube-controller-manager",
    "coreDns": "coredns", "kubeDns": "kube-dns", "kubeEtcd": "kube-etcd", "kubeScheduler": "kube-scheduler",
    "kubeProxy": "kube-proxy", "kubeStateMetrics": "kube-state-metrics", "nodeExporter": "node-exporter",
    "windowsMonitoring": "windows-exporter", "alertmanager": "kps-alertmanager",
    "prometheus": "kps-prometheus", "prometheusOperator": "kps-operator",
}
"""Values key whose ``enabled`` turns a scrape on -> the ``job`` label of its targets."""

MANAGED_HIDDEN = {"kube-controller-manager", "kube-scheduler", "kube-etcd", "kube-proxy"}
"""Jobs with no reachable target on EKS / GKE."""

RULE_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # template: (values keys that must all be true besides defaultRules.create, job selectors)
    'alertmanager.rules.yaml': (('defaultRules.rules.alertmanager',), ('kps-alertmanager',)),
    'config-reloaders.yaml': (('defaultRules.rules.configReloaders',), ()),
    'etcd.yaml': (('kubeEtcd.enabled', 'defaultRules.rules.etcd'), ('.*etcd.*',)),
    'general.rules.yaml': (('defaultRules.rules.general',), ()),
    'k8s.rules.container_cpu_limits.yaml': (('defaultRules.rules.k8sContainerCpuLimits',), ('kube-state-metrics',)),
    'k8s.rules.container_cpu_requests.yaml': (('defaultRules.rules.k8sContainerCpuRequests',), ('kube-state-metrics',)),
    'k8s.rules.container_cpu_usage_seconds_total.yaml': (('defaultRules.rules.k8sContainerCpuUsageSecondsTotal',), ('kubelet',)),
    'k8s.rules.container_memory_cache.yaml': (('defaultRules.rules.k8sContainerMemoryCache',), ('kubelet',)),
    'k8s.rules.container_memory_limits.yaml': (('defaultRules.rules.k8sContainerMemoryLimits',), ('kube-state-metrics',)),
    'k8s.rules.container_memory_requests.yaml': (('defaultRules.rules.k8sContainerMemoryRequests',), ('kube-state-metrics',)),
    'k8s.rules.container_memory_rss.yaml': (('defaultRules.rules.k8sContainerMemoryRss',), ('kubelet',)),
    'k8s.rules.container_memory_swap.yaml': (('defaultRules.rules.k8sContainerMemorySwap',), ('kubelet',)),
    'k8s.rules.container_memory_working_set_bytes.yaml': (('defaultRules.rules.k8sContainerMemoryWorkingSetBytes',), ('kubelet',)),
    'k8s.rules.container_resource.yaml': (('defaultRules.rules.k8sContainerResource',), ('kube-state-metrics',)),
    'k8s.rules.pod_owner.yaml': (('defaultRules.rules.k8sPodOwner',), ('kube-state-metrics',)),
    'kube-apiserver-availability.rules.yaml': (('kubeApiServer.enabled', 'defaultRules.rules.kubeApiserverAvailability'), ('apiserver',)),
    'kube-apiserver-burnrate.rules.yaml': (('kubeApiServer.enabled', 'defaultRules.rules.kubeApiserverBurnrate'), ('apiserver',)),
    'kube-apiserver-histogram.rules.yaml': (('kubeApiServer.enabled', 'defaultRules.rules.kubeApiserverHistogram'), ('apiserver',)),
    'kube-apiserver-slos.yaml': (('kubeApiServer.enabled', 'defaultRules.rules.kubeApiserverSlos'), ()),
    'kube-prometheus-general.rules.yaml': (('defaultRules.rules.kubePrometheusGeneral',), ()),
    'kube-prometheus-node-recording.rules.yaml': (('defaultRules.rules.kubePrometheusNodeRecording',), ()),
    'kube-scheduler.rules.yaml': (('kubeScheduler.enabled', 'defaultRules.rules.kubeSchedulerRecording'), ('kube-scheduler',)),
    'kube-state-metrics.yaml': (('defaultRules.rules.kubeStateMetrics',), ('kube-state-metrics',)),
    'kubelet.rules.yaml': (('kubelet.enabled', 'defaultRules.rules.kubelet'), ('kubelet',)),
    'kubernetes-apps.yaml': (('defaultRules.rules.kubernetesApps',), ('kube-state-metrics',)),
    'kubernetes-resources.yaml': (('defaultRules.rules.kubernetesResources',), ('kube-state-metrics', 'kubelet')),
    'kubernetes-storage.yaml': (('defaultRules.rules.kubernetesStorage',), ('kube-state-metrics', 'kubelet')),
    'kubernetes-system-apiserver.yaml': (('defaultRules.rules.kubernetesSystem',), ('apiserver',)),
    'kubernetes-system-controller-manager.yaml': (('kubeControllerManager.enabled', 'defaultRules.rules.kubeControllerManager'), ('kube-controller-manager',)),
    'kubernetes-system-kube-proxy.yaml': (('kubeProxy.enabled', 'defaultRules.rules.kubeProxy'), ('kube-proxy',)),
    'kubernetes-system-kubelet.yaml': (('defaultRules.rules.kubernetesSystem',), ('kube-state-metrics', 'kubelet')),
    'kubernetes-system-scheduler.yaml': (('kubeScheduler.enabled', 'defaultRules.rules.kubeSchedulerAlerting'), ('kube-scheduler',)),
    'kubernetes-system.yaml': (('defaultRules.rules.kubernetesSystem',), ('apiserver',)),
    'node-exporter.rules.yaml': (('defaultRules.rules.nodeExporterRecording',), ('node-exporter',)),
    'node-exporter.yaml': (('defaultRules.rules.nodeExporterAlerting',), ('node-exporter',)),
    'node-network.yaml': (('defaultRules.rules.network',), ('node-exporter',)),
    'node.rules.yaml': (('defaultRules.rules.node',), ('kube-state-metrics', 'node-exporter')),
    'prometheus-operator.yaml': (('defaultRules.rules.prometheusOperator',), ('kps-operator',)),
    'prometheus.yaml': (('defaultRules.rules.prometheus',), ('kps-prometheus',)),
    'windows.node.rules.yaml': (('windowsMonitoring.enabled', 'defaultRules.rules.windows'), ('windows-exporter',)),
    'windows.pod.rules.yaml': (('windowsMonitoring.enabled', 'defaultRules.rules.windows'), ('kube-state-metrics', 'windows-exporter')),
}

DOWN_ALERTS = {
    # The chart's target-down / absent alerts: (template, for, expr with no additionalAggregationLabels).
    'etcdMembersDown': ('etcd.yaml', '20m', 'max without (endpoint) ( sum without (instance, pod) (up{job=~".*etcd.*"} == bool 0) or count without (To) ( sum without (instance, pod) (rate(etcd_network_peer_sent_failures_total{job=~".*etcd.*"}[120s])) > 0.01 ) ) > 0'),
    'etcdInsufficientMembers': ('etcd.yaml', '3m', 'sum(up{job=~".*etcd.*"} == bool 1) without (instance, pod) < ((count(up{job=~".*etcd.*"}) without (instance, pod) + 1) / 2)'),
    'TargetDown': ('general.rules.yaml', '10m', '100 * (count(up == 0) BY (cluster, job, namespace, service) / count(up) BY (cluster, job, namespace, service)) > 10'),
    'KubeAPIDown': ('kubernetes-system-apiserver.yaml', '15m', 'absent(up{job="apiserver"} == 1)'),
    'KubeControllerManagerDown': ('kubernetes-system-controller-manager.yaml', '15m', 'absent(up{job="kube-controller-manager"} == 1)'),
    'KubeProxyDown': ('kubernetes-system-kube-proxy.yaml', '15m', 'absent(up{job="kube-proxy"} == 1)'),
    'KubeletDown': ('kubernetes-system-kubelet.yaml', '15m', 'absent(up{job="kubelet", metrics_path="/metrics"} == 1)'),
    'KubeSchedulerDown': ('kubernetes-system-scheduler.yaml', '15m', 'absent(up{job="kube-scheduler"} == 1)'),
}


def chart_values(rec: Recording) -> dict:
    """The values the program gives kube-prometheus-stack, over the chart defaults above."""
    (kps,) = [r.inputs for r in rec.of_type(CHART) if r.inputs["chart"] == "kube-prometheus-stack"]
    return merge(CHART_DEFAULTS, kps["values"])


def lookup(values: dict, dotted: str):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None  # a missing key is nil: false in the template's `and`
        node = node[part]
    return node


def enabled_templates(values: dict) -> list[str]:
    if not lookup(values, "defaultRules.create"):
        return []
    return [t for t, (gates, _) in RULE_TEMPLATES.items() if all(lookup(values, g) for g in gates)]


def scraped_jobs(values: dict) -> set[str]:
    return {job for key, job in SCRAPE_JOBS.items() if lookup(values, f"{key}.enabled")}


def managed_cluster_series(values: dict) -> list[dict]:
    """``up`` of a healthy managed cluster: 1 for reachable targets; 0 for kube-proxy if scraped (its
    pods exist on EKS, the scrape of podIP:10249 is refused); hidden components have no target."""
    series = []
    for job in sorted(scraped_jobs(values)):
        if job in MANAGED_HIDDEN and job != "kube-proxy":
            continue
        value = "0x40" if job == "kube-proxy" else "1x40"
        for i in range(2):
            labels = {"job": job, "instance": f"10.0.0.{i}:9100", "namespace": "kube-system", "service": job}
            if job == "kubelet":
                labels["metrics_path"] = "/metrics"
            inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
            series.append({"series": f"up{{{inner}}}", "values": value})
    return series


def run_down_alerts(promtool: str, tmp_path: Path, values: dict):
    templates = set(enabled_templates(values))
    alerts = {name: spec for name, spec in DOWN_ALERTS.items() if spec[0] in templates}
    rules = {"groups": [{"name": "kube-prometheus-stack-down", "rules": [
        {"alert": name, "expr": expr, "for": for_} for name, (_, for_, expr) in alerts.items()]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "name": "healthy managed cluster", "interval": "1m", "input_series": managed_cluster_series(values),
        "alert_rule_test": [{"eval_time": "35m", "alertname": name, "exp_alerts": []} for name in alerts]}]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    return alerts, run_promtool(promtool, "test", "rules", "test.yaml", cwd=tmp_path)


@pytest.fixture(params=["prod", "gke"])
def values(request) -> dict:
    """kube-prometheus-stack values of an EKS (prod) and a GKE (gke-dev) stack."""
    return chart_values(request.getfixturevalue(request.param))


def test_hidden_control_plane_components_are_not_scraped(values):
    for key in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[key]["enabled"] is False, key
    rules = values["defaultRules"]["rules"]
    for key in ("etcd", "kubeControllerManager", "kubeProxy", "kubeSchedulerAlerting", "kubeSchedulerRecording"):
        assert rules[key] is False, key
    # Everything else keeps its rules: only the hidden components lose theirs.
    assert all(rules[key] for key in RULE_KEYS if key not in
               {"etcd", "kubeControllerManager", "kubeProxy", "kubeSchedulerAlerting", "kubeSchedulerRecording"})
    assert scraped_jobs(values).isdisjoint(MANAGED_HIDDEN)


def test_no_enabled_default_rule_selects_a_job_without_targets(values):
    reachable = scraped_jobs(values) - MANAGED_HIDDEN
    enabled = enabled_templates(values)
    assert "kubernetes-system-kubelet.yaml" in enabled and "node-exporter.yaml" in enabled
    for template in enabled:
        for selector in RULE_TEMPLATES[template][1]:
            assert any(re.fullmatch(selector, job) for job in reachable), (template, selector, sorted(reachable))


def test_no_down_alert_fires_on_a_healthy_managed_cluster(values, promtool, tmp_path):
    alerts, result = run_down_alerts(promtool, tmp_path, values)
    assert {"TargetDown", "KubeAPIDown", "KubeletDown"} <= set(alerts)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_chart_defaults_would_fire_on_a_managed_cluster(promtool, tmp_path):
    # The check above bites: the chart's own defaults fire the control-plane alerts.
    _, result = run_down_alerts(promtool, tmp_path, copy.deepcopy(CHART_DEFAULTS))
    assert result.returncode != 0
    out = result.stdout + result.stderr
    for name in ("KubeControllerManagerDown", "KubeSchedulerDown", "KubeProxyDown", "TargetDown"):
        assert f"alertname: {name}" in out or name in out, (name, out)
    assert "KubeletDown" not in out and "KubeAPIDown" not in out, out


def test_base_values_file_disables_them():
    values = KUBE_PROMETHEUS_STACK.base_values()
    assert KUBE_PROMETHEUS_STACK.version == "75.9.0"  # the tables above are of this version
    for key in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[key] == {"enabled": False}, key


def git_show(path: str) -> str:
    return subprocess.run(["git", "-C", CHART_GIT, "show", f"{CHART_COMMIT}:{path}"],
                          capture_output=True, text=True, check=True).stdout


def verify_tables_against_the_chart() -> None:
    """Re-read the tables above from a prometheus-community/helm-charts checkout (``KPS_CHART_GIT``):
    run by hand after a chart bump (no checkout exists offline or in CI, so it is not a test):
    ``KPS_CHART_GIT=/path/to/helm-charts/.git python -m tests.test_managed_control_plane``."""
    base = "charts/kube-prometheus-stack"
    assert re.search(r"^version: 75\.9\.0$", git_show(f"{base}/Chart.yaml"), re.M)
    defaults = yaml.safe_load(git_show(f"{base}/values.yaml"))
    assert defaults["defaultRules"]["create"] is True
    assert defaults["defaultRules"]["rules"] == {key: True for key in RULE_KEYS}
    for key, job in SCRAPE_JOBS.items():
        if key in CHART_DEFAULTS:
            assert lookup(defaults, f"{key}.enabled") == CHART_DEFAULTS[key]["enabled"], key
    subs = {"$kubeStateMetricsJob": "kube-state-metrics", "$alertmanagerJob": "kps-alertmanager",
            "$operatorJob": "kps-operator", "$prometheusJob": "kps-prometheus"}
    listing = subprocess.run(["git", "-C", CHART_GIT, "ls-tree", "--name-only", CHART_COMMIT,
                              f"{base}/templates/prometheus/rules-1.14/"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert sorted(Path(p).name for p in listing) == sorted(RULE_TEMPLATES)
    for path in listing:
        text = git_show(path)
        for var, job in subs.items():
            text = text.replace("{{ " + var + " }}", job)
        gate = re.search(r"^\{\{- if and \(semverCompare[^)]*\) \(semverCompare[^)]*\) (.*?) \}\}", text, re.M)
        gates = tuple(g for g in re.findall(r"\.Values\.([\w.]+)", gate.group(1)) if g != "defaultRules.create")
        jobs = tuple(sorted(set(re.findall(r'job=~?"([^"]*)"', text))))
        assert RULE_TEMPLATES[Path(path).name] == (gates, jobs), path
    for name, (template, for_, expr) in DOWN_ALERTS.items():
        text = git_show(f"{base}/templates/prometheus/rules-1.14/{template}")
        assert f"- alert: {name}\n" in text and f'dig "{name}" "for" "{for_}"' in text, name
        flat = " ".join(re.sub(r"\{\{ range \$\.Values\.defaultRules\.additionalAggregationLabels \}\}"
                               r"\{\{ \. \}\},\{\{ end \}\}", "", text).split())
        assert expr in flat.replace('"{{ $namespace }}"', ""), name
    for key, job in SCRAPE_JOBS.items():
        folder = {"kubeControllerManager": "kube-controller-manager", "kubeScheduler": "kube-scheduler",
                  "kubeEtcd": "kube-etcd", "kubeProxy": "kube-proxy", "coreDns": "core-dns",
                  "kubeDns": "kube-dns"}.get(key)
        if folder:
            assert f"jobLabel: {job}" in git_show(f"{base}/templates/exporters/{folder}/service.yaml"), key


if __name__ == "__main__":
    verify_tables_against_the_chart()
    print(f"tables match {CHART_GIT} at {CHART_COMMIT}")
