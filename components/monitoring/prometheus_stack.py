"""Prometheus, Grafana and prometheus-adapter (the custom-metrics API the RPS autoscaler reads)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.helm_charts import KUBE_PROMETHEUS_STACK, PROMETHEUS_ADAPTER, chart
from components.serving.metrics_adapter import adapter_rule

FULLNAME = "kps"
"""``fullnameOverride`` of kube-prometheus-stack: the Prometheus Service is ``kps-prometheus``."""


@dataclass(frozen=True)
class PrometheusStackArgs:
    """Inputs of :class:`PrometheusStack`."""

    namespace: str = "monitoring"
    grafana: bool = True
    environment: str = "dev"
    """Added to every series as the external label ``environment``."""


class PrometheusStack(pulumi.ComponentResource):
    """Creates: the monitoring ``Namespace``, a generated Grafana admin password (``RandomPassword``,
    a secret) in a ``Secret``, the kube-prometheus-stack chart (Prometheus operator and CRDs,
    Prometheus selecting every ServiceMonitor and PrometheusRule, Alertmanager, kube-state-metrics,
    node-exporter, Grafana with the dashboard sidecar) and the prometheus-adapter chart serving
    ``tfserving_requests_per_second`` to HorizontalPodAutoscalers.
    """

    namespace: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str] | None
    ready: list[pulumi.Resource]
    """Depend on these before creating ServiceMonitors or PrometheusRules (their CRDs come with the chart)."""

    def __init__(self, name: str, args: PrometheusStackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:monitoring:PrometheusStack", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # node-exporter needs the host's network, PIDs and filesystem: this namespace cannot be
        # 'restricted'; warn on anything beyond 'baseline' so other workloads stay visible.
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=args.namespace, labels={"pod-security.kubernetes.io/enforce": "privileged",
                                         "pod-security.kubernetes.io/warn": "baseline"}), opts=child)
        values: dict = {"fullnameOverride": FULLNAME,
                        "prometheus": {"prometheusSpec": {"externalLabels": {"environment": args.environment}}},
                        "grafana": {"enabled": args.grafana}}
        self.grafana_admin_password = None
        if args.grafana:
            password = random.RandomPassword(f"{name}-grafana-admin", length=32, special=False, opts=child)
            k8s.core.v1.Secret(f"{name}-grafana-admin", metadata=k8s.meta.v1.ObjectMetaArgs(
                name="grafana-admin", namespace=ns.metadata.name),
                string_data={"admin-user": "admin", "admin-password": password.result}, opts=child)
            values["grafana"]["admin"] = {"existingSecret": "grafana-admin", "userKey": "admin-user",
                                          "passwordKey": "admin-password"}
            self.grafana_admin_password = pulumi.Output.secret(password.result)
        stack = chart(f"{name}-kube-prometheus-stack", KUBE_PROMETHEUS_STACK, ns.metadata.name, values,
                      opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        prometheus_url = ns.metadata.name.apply(
            lambda n: f"http://{FULLNAME}-prometheus.{n}.svc")
        adapter = chart(f"{name}-prometheus-adapter", PROMETHEUS_ADAPTER, ns.metadata.name,
                        {"prometheus": {"url": prometheus_url, "port": 9090},
                         "rules": {"custom": [adapter_rule()]}},
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[stack]))
        self.namespace = ns.metadata.name
        self.ready = [stack, adapter]
        self.register_outputs({"namespace": self.namespace})
