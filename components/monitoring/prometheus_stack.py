"""Prometheus, Grafana and prometheus-adapter (the custom-metrics API the RPS autoscaler reads)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.helm_charts import KUBE_PROMETHEUS_STACK, PROMETHEUS_ADAPTER, chart
from components.pod_security import pod_security_labels, privileged_namespace
from components.serving.metrics_adapter import adapter_rule

FULLNAME = "kps"
"""``fullnameOverride`` of kube-prometheus-stack: the Prometheus Service is ``kps-prometheus``."""


def node_exporter_namespace(monitoring_namespace: str) -> str:
    """The privileged namespace of node-exporter, next to the monitoring one."""
    return f"{monitoring_namespace}-node-exporter"


def grafana_values(enabled: bool, namespace: str) -> dict:
    """Grafana reads ConfigMaps and Secrets of its own namespace only.

    The grafana chart (9.2.10, the subchart of kube-prometheus-stack 75.9.0) grants its sidecars
    get/list/watch on configmaps and secrets through a ClusterRole unless ``rbac.namespaced`` is true,
    then through a Role in its namespace (templates/clusterrole.yaml, templates/role.yaml); and
    kube-prometheus-stack sets the dashboard sidecar's ``searchNamespace: ALL``. The platform's
    dashboard ConfigMaps (ServingMonitoring) and the chart's own dashboards and datasource are all in
    the monitoring namespace, so the sidecars search that namespace alone (a Role cannot grant more).
    """
    own = [namespace]
    return {"enabled": enabled, "rbac": {"namespaced": True},
            "sidecar": {"dashboards": {"searchNamespace": own}, "datasources": {"searchNamespace": own}}}


@dataclass(frozen=True)
class PrometheusStackArgs:
    """Inputs of :class:`PrometheusStack`."""

    namespace: str = "monitoring"
    grafana: bool = True
    environment: str = "dev"
    """Added to every series as the external label ``environment``."""


class PrometheusStack(pulumi.ComponentResource):
    """Creates: the monitoring ``Namespace`` (Pod Security 'baseline'), node-exporter's own ``Namespace``
    (privileged, see :mod:`components.pod_security`), a generated Grafana admin password (``RandomPassword``,
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
        # Prometheus, Alertmanager, the operator, kube-state-metrics, Grafana and prometheus-adapter use
        # no host namespaces, hostPath or privilege: 'baseline' is enforced (warn/audit 'restricted').
        # node-exporter needs hostNetwork/hostPID/hostPath, so it gets its own privileged namespace
        # (the chart's prometheus-node-exporter.namespaceOverride): no other pod shares the node's
        # network, and with it the node's IMDS credentials.
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=args.namespace, labels=pod_security_labels("baseline")), opts=child)
        node_labels, node_annotations = privileged_namespace("node-exporter")
        node_ns = k8s.core.v1.Namespace(f"{name}-node-exporter-ns", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=node_exporter_namespace(args.namespace), labels=node_labels, annotations=node_annotations),
            opts=child)
        values: dict = {"fullnameOverride": FULLNAME,
                        "prometheus": {"prometheusSpec": {"externalLabels": {"environment": args.environment}}},
                        "prometheus-node-exporter": {"namespaceOverride": node_ns.metadata.name},
                        "grafana": grafana_values(args.grafana, args.namespace)}
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
                      opts=pulumi.ResourceOptions(parent=self, depends_on=[ns, node_ns]))
        prometheus_url = ns.metadata.name.apply(
            lambda n: f"http://{FULLNAME}-prometheus.{n}.svc")
        adapter = chart(f"{name}-prometheus-adapter", PROMETHEUS_ADAPTER, ns.metadata.name,
                        {"prometheus": {"url": prometheus_url, "port": 9090},
                         "rules": {"custom": [adapter_rule()]}},
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[stack]))
        self.namespace = ns.metadata.name
        self.ready = [stack, adapter]
        self.register_outputs({"namespace": self.namespace})
