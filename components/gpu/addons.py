"""GPU add-ons: the NVIDIA device plugin (EKS) and the DCGM exporter, on GPU nodes only."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.helm_charts import DCGM_EXPORTER, NVIDIA_DEVICE_PLUGIN, chart
from components.node_labels import GPU_NODE_LABEL
from components.pod_security import privileged_namespace

GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
"""GKE labels its GPU nodes with the accelerator type (it sets no ``nvidia.com/gpu.present``)."""
GKE_NVIDIA_HOST_DIR = "/home/kubernetes/bin/nvidia"
"""Where GKE installs the NVIDIA driver and libraries on COS nodes."""


def dcgm_exporter_values(gke: bool) -> dict:
    """Node selection and, on GKE, the driver libraries: GKE's containerd runtime injects the driver
    only into pods requesting ``nvidia.com/gpu``, which the exporter does not, so it mounts the host's
    install directory at ``/usr/local/nvidia`` and loads NVML from there (GKE's DCGM guide and
    NVIDIA/dcgm-exporter#59); privileged for the ``/dev/nvidia*`` devices."""
    if not gke:
        return {"nodeSelector": {GPU_NODE_LABEL: "true"}}
    return {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": GKE_ACCELERATOR_LABEL, "operator": "Exists"}]}]}}},
        "extraHostVolumes": [
            {"name": "nvidia-install-dir-host", "hostPath": GKE_NVIDIA_HOST_DIR},
            {"name": "vulkan-icd-mount", "hostPath": f"{GKE_NVIDIA_HOST_DIR}/vulkan/icd.d"}],
        "extraVolumeMounts": [
            {"name": "nvidia-install-dir-host", "mountPath": "/usr/local/nvidia", "readOnly": True},
            {"name": "vulkan-icd-mount", "mountPath": "/etc/vulkan/icd.d", "readOnly": True}],
        "extraEnv": [{"name": "LD_LIBRARY_PATH", "value": "/usr/local/nvidia/lib64"}],
        "securityContext": {"privileged": True},
    }


def time_slicing_config(slices: list[int]) -> dict:
    """Device-plugin configs a node selects with ``nvidia.com/device-plugin.config=time-slicing-<N>``."""
    configs = {"default": "version: v1\n"}
    for n in sorted(set(slices)):
        if n > 1:
            configs[f"time-slicing-{n}"] = (
                "version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
                f"    - name: nvidia.com/gpu\n      replicas: {n}\n")
    return {"map": configs, "default": "default"}


MIG_MIXED_CONFIG = "mig-mixed"
"""Device-plugin config of MIG nodes (node label ``nvidia.com/device-plugin.config=mig-mixed``)."""


def device_plugin_config(slices: list[int], mig: bool = False) -> dict:
    """The chart's ``config`` value: :func:`time_slicing_config`, plus the ``mig-mixed`` config when a pool
    uses MIG.

    ``mig-mixed`` sets ``flags.migStrategy: mixed`` (NVIDIA/k8s-device-plugin v0.17.1 api/config/v1/flags.go
    ``CommandLineFlags.MigStrategy``, values in consts.go: none, single, mixed; README "Multiple Config File
    Example"). With it each MIG profile is its own resource ``nvidia.com/mig-<profile>`` (internal/rm/rm.go
    ``AddDefaultResourcesToConfig``: ``"mig-" + profile``, for profiles whose compute instance spans the GPU
    instance) and a MIG-enabled GPU is no longer offered as ``nvidia.com/gpu`` (internal/rm/device_map.go).
    It needs only NVML, which the plugin has on these nodes: GPU feature discovery is not involved (its
    ``nvidia.com/mig.strategy`` and ``nvidia.com/mig-<profile>.*`` labels, internal/lm/mig-strategy.go,
    only describe nodes; the chart's ``gfd.enabled`` stays false). A config map in the chart already makes
    the chart add ``SYS_ADMIN`` and ``NVIDIA_MIG_MONITOR_DEVICES=all`` to the plugin (templates/_helpers.tpl
    ``allPossibleMigStrategiesAreNone`` is false with a config map), so nothing else changes. MPS sharing
    is refused with ``mixed`` (cmd/nvidia-device-plugin/main.go) and the time-slicing configs replicate
    ``nvidia.com/gpu`` only, so the MIG config shares nothing."""
    config = time_slicing_config(slices)
    if mig:
        config["map"][MIG_MIXED_CONFIG] = "version: v1\nflags:\n  migStrategy: mixed\n"
    return config


@dataclass(frozen=True)
class GpuAddonsArgs:
    """Inputs of :class:`GpuAddons`."""

    namespace: str = "nvidia"
    device_plugin: bool = True
    """False on GKE, which installs and manages its own."""
    time_slicing: list[int] = field(default_factory=list)
    """``gpuTimeSlicing`` of each GPU pool (configs for the values > 1)."""
    dcgm_exporter: bool = True
    monitoring_ready: list[pulumi.Resource] = field(default_factory=list)
    """The Prometheus stack (ServiceMonitor CRD); empty when monitoring is not installed here."""
    gke: bool = False
    """GKE nodes: select them by ``cloud.google.com/gke-accelerator`` and mount GKE's driver directory."""
    gpu_nodes: list[pulumi.Resource] = field(default_factory=list)
    """The GPU node groups / pools: the charts (DaemonSets on those nodes) wait for them."""
    mig: bool = False
    """True when any EKS pool splits its GPUs with MIG (``migProfile``): adds the device plugin's
    ``mig-mixed`` config, which those nodes select by label. GKE partitions GPUs itself (ignored there)."""


class GpuAddons(pulumi.ComponentResource):
    """Creates: a ``Namespace`` (Pod Security 'privileged': both need host paths), the
    nvidia-device-plugin chart and the dcgm-exporter chart, each scheduled only on GPU nodes (labelled
    ``nvidia.com/gpu.present=true`` on EKS, ``cloud.google.com/gke-accelerator`` on GKE) and tolerating
    the GPU taint, and a ``ServiceMonitor`` for DCGM. The charts wait for the GPU node groups.
    """

    def __init__(self, name: str, args: GpuAddonsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:gpu:GpuAddons", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Its own namespace (never the monitoring one): only these host-level DaemonSets run privileged.
        labels, annotations = privileged_namespace("gpu-addons")
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=args.namespace, labels=labels, annotations=annotations), opts=child)
        after_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns, *args.gpu_nodes])
        if args.device_plugin:
            chart(f"{name}-device-plugin", NVIDIA_DEVICE_PLUGIN, ns.metadata.name,
                  {"config": device_plugin_config(args.time_slicing, args.mig)}, opts=after_ns)
        if args.dcgm_exporter:
            exporter = chart(f"{name}-dcgm-exporter", DCGM_EXPORTER, ns.metadata.name,
                             dcgm_exporter_values(args.gke), opts=after_ns)
            k8s.apiextensions.CustomResource(
                f"{name}-dcgm-monitor", api_version="monitoring.coreos.com/v1", kind="ServiceMonitor",
                metadata=k8s.meta.v1.ObjectMetaArgs(name="dcgm-exporter", namespace=ns.metadata.name),
                spec={"selector": {"matchLabels": {"app.kubernetes.io/name": "dcgm-exporter"}},
                      "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s",
                                     # Keep dcgm-exporter's pod/namespace labels (the GPU's workload).
                                     "honorLabels": True}]},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[exporter, *args.monitoring_ready]))
        self.register_outputs({})
