"""What the platform adds to any Prometheus: scraping of TF Serving, alert rules, dashboards."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.monitoring.alerts import AlertThresholds, serving_alert_rules
from components.monitoring.dashboard_files import DASHBOARD_LABEL, load_dashboards
from components.serving.model_server import APP_LABEL, SERVER_LABEL, TRACK_LABEL
from components.serving.tfserving_config import METRICS_PATH

MONITORING_API = "monitoring.coreos.com/v1"


@dataclass(frozen=True)
class ServingMonitoringArgs:
    """Inputs of :class:`ServingMonitoring`."""

    serving_namespace: str
    """Namespace of the serving Deployments (pass ``depends_on`` on it through ``opts``)."""
    monitoring_namespace: pulumi.Input[str]
    servers: list[str]
    """Server keys; each has Services ``tfserving-<key>`` (and ``-canary``) labelled with the key."""
    environment: str
    thresholds: AlertThresholds = field(default_factory=AlertThresholds)
    monitoring_ready: list[pulumi.Resource] = field(default_factory=list)
    """Resources that install the ServiceMonitor/PrometheusRule CRDs (the Prometheus stack)."""


class ServingMonitoring(pulumi.ComponentResource):
    """Creates: a ``ServiceMonitor`` per server (REST port, ``/monitoring/prometheus/metrics``, every
    series labelled with server, track and environment, ``model_name`` copied to ``model``), a
    ``PrometheusRule`` with the serving and GPU alerts, and one ``ConfigMap`` per Grafana dashboard
    carrying the sidecar label.
    """

    rules: dict
    """The rule groups (the PrometheusRule's ``spec``), for promtool."""

    def __init__(self, name: str, args: ServingMonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:monitoring:ServingMonitoring", name, None, opts)
        after_crds = pulumi.ResourceOptions(parent=self, depends_on=args.monitoring_ready)
        for server in args.servers:
            k8s.apiextensions.CustomResource(
                f"{name}-{server}", api_version=MONITORING_API, kind="ServiceMonitor",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=f"tfserving-{server}", namespace=args.serving_namespace),
                spec={"selector": {"matchLabels": {APP_LABEL: "tfserving", SERVER_LABEL: server}},
                      "endpoints": [{
                          "port": "http", "path": METRICS_PATH, "interval": "15s",
                          "relabelings": [
                              {"sourceLabels": [f"__meta_kubernetes_service_label_{_label_name(SERVER_LABEL)}"],
                               "targetLabel": "server"},
                              {"sourceLabels": [f"__meta_kubernetes_service_label_{_label_name(TRACK_LABEL)}"],
                               "targetLabel": "track"},
                              {"targetLabel": "environment", "replacement": args.environment}],
                          "metricRelabelings": [
                              {"sourceLabels": ["model_name"], "targetLabel": "model", "regex": "(.+)"}]}]},
                opts=after_crds)
        self.rules = serving_alert_rules(args.serving_namespace, args.environment, args.thresholds)
        k8s.apiextensions.CustomResource(
            f"{name}-alerts", api_version=MONITORING_API, kind="PrometheusRule",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="tfserving-alerts", namespace=args.monitoring_namespace),
            spec=self.rules, opts=after_crds)
        for key, dashboard in load_dashboards().items():
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{key}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=f"dashboard-{key}", namespace=args.monitoring_namespace,
                                                    labels=DASHBOARD_LABEL),
                data={f"{key}.json": json.dumps(dashboard, indent=1, sort_keys=True)},
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.monitoring_ready))
        self.register_outputs({})


def _label_name(label: str) -> str:
    """Prometheus' spelling of a Kubernetes label in ``__meta_kubernetes_*_label_<name>``."""
    return "".join(c if c.isalnum() else "_" for c in label)
