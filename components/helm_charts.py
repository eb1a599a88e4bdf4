"""Pinned Helm charts of the add-ons and their base values (``components/helm_values/*.yaml``).

Charts are deployed with ``kubernetes.helm.v4.Chart``: it renders templates on the client, so a
preview of a stack whose cluster does not exist yet still works (a ``helm.v3.Release`` needs a
reachable cluster during preview: pulumi/pulumi-kubernetes#2236), and its objects are ordinary
Pulumi resources that ``depends_on`` can order (CRDs before the custom resources that use them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

VALUES_DIR = Path(__file__).parent / "helm_values"


@dataclass(frozen=True)
class HelmChart:
    """A chart pinned by repository and version; ``values`` names its base values file."""

    chart: str
    version: str
    repo: str
    values: str
    app_version: str | None = None
    """The chart's ``appVersion`` (where the platform relies on it: the autoscaler's Kubernetes minor)."""

    @property
    def oci_ref(self) -> str:
        """``oci://<registry>/<path>/<chart>``: how an OCI chart is named (``helm install <ref> --version``)."""
        return f"{self.repo}/{self.chart}"

    def base_values(self) -> dict[str, Any]:
        return yaml.safe_load((VALUES_DIR / self.values).read_text()) or {}


KUBE_PROMETHEUS_STACK = HelmChart("kube-prometheus-stack", "75.9.0",
                                  "https://prometheus-community.github.io/helm-charts", "kube-prometheus-stack.yaml")
PROMETHEUS_ADAPTER = HelmChart("prometheus-adapter", "4.11.0",
                               "https://prometheus-community.github.io/helm-charts", "prometheus-adapter.yaml")
NVIDIA_DEVICE_PLUGIN = HelmChart("nvidia-device-plugin", "0.17.1", "https://nvidia.github.io/k8s-device-plugin",
                                 "nvidia-device-plugin.yaml")
DCGM_EXPORTER = HelmChart("dcgm-exporter", "3.4.0", "https://nvidia.github.io/dcgm-exporter/helm-charts",
                          "dcgm-exporter.yaml")
# >= 9.46.3: its ClusterRole lists volumeattachments, which the 1.32+ autoscaler watches
# (kubernetes/autoscaler#7663, fixed by #7904 in 9.46.3); 9.51.0 is the last chart of appVersion 1.33.
CLUSTER_AUTOSCALER = HelmChart("cluster-autoscaler", "9.51.0", "https://kubernetes.github.io/autoscaler",
                               "cluster-autoscaler.yaml", app_version="1.33.0")
# KEDA and its HTTP add-on (https://kedacore.github.io/charts index.yaml: keda-2.20.2.tgz sha256 db60b1fa...c4c,
# keda-add-ons-http-0.15.0.tgz sha256 dddb21bd...001); appVersion = chart version for both.
KEDA = HelmChart("keda", "2.20.2", "https://kedacore.github.io/charts", "keda.yaml", app_version="2.20.2")
KEDA_HTTP_ADD_ON = HelmChart("keda-add-ons-http", "0.15.0", "https://kedacore.github.io/charts",
                             "keda-add-ons-http.yaml", app_version="0.15.0")
# Karpenter is published as an OCI chart only (aws/karpenter-provider-aws charts/karpenter/Chart.yaml 1.14.1;
# its crds/ holds the NodePool, NodeClaim, EC2NodeClass, NodeOverlay and CapacityBuffer CRDs).
KARPENTER = HelmChart("karpenter", "1.14.1", "oci://public.ecr.aws/karpenter", "karpenter.yaml", app_version="1.14.1")
CHARTS = (KUBE_PROMETHEUS_STACK, PROMETHEUS_ADAPTER, NVIDIA_DEVICE_PLUGIN, DCGM_EXPORTER, CLUSTER_AUTOSCALER, KEDA,
          KEDA_HTTP_ADD_ON, KARPENTER)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (maps merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def chart(name: str, spec: HelmChart, namespace: pulumi.Input[str], values: dict[str, Any] | None = None,
          opts: pulumi.ResourceOptions | None = None) -> k8s.helm.v4.Chart:
    """Register ``spec`` as a v4 Chart (release name = chart name) with its base values merged with ``values``.
    An ``oci://`` repository is not a Helm repository (no index.yaml): the chart is its full reference."""
    oci = spec.repo.startswith("oci://")
    return k8s.helm.v4.Chart(
        name, name=spec.chart, chart=spec.oci_ref if oci else spec.chart, version=spec.version, namespace=namespace,
        repository_opts=None if oci else k8s.helm.v4.RepositoryOptsArgs(repo=spec.repo),
        values=merge(spec.base_values(), values or {}), opts=opts)
