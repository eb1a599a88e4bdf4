"""NVIDIA Multi-Instance GPU (MIG) profiles: which partitions a GPU offers and how many fit.

Source: NVIDIA MIG user guide, "Supported MIG Profiles" (A100 PCIe/SXM4 40GB, A100 80GB, H100 80GB):
https://docs.nvidia.com/datacenter/tesla/mig-user-guide/index.html#supported-mig-profiles. ``profile_id`` is
the GPU instance profile id ``nvidia-smi mig -cgi`` takes. GKE offers a subset as ``gpu_partition_size``
(https://cloud.google.com/kubernetes-engine/docs/how-to/gpus-multi#partition-sizes).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MigProfile:
    name: str
    """``1g.5gb``: compute slices and memory."""
    profile_id: int
    """GPU instance profile id (``nvidia-smi mig -lgip``)."""
    per_gpu: int
    """Instances of this profile one GPU holds when partitioned uniformly."""


def _profiles(*rows: tuple[str, int, int]) -> dict[str, MigProfile]:
    return {name: MigProfile(name, profile_id, per_gpu) for name, profile_id, per_gpu in rows}


MIG_PROFILES: dict[str, dict[str, MigProfile]] = {
    "A100-40GB": _profiles(("1g.5gb", 19, 7), ("2g.10gb", 14, 3), ("3g.20gb", 9, 2), ("4g.20gb", 5, 1),
                           ("7g.40gb", 0, 1)),
    "A100-80GB": _profiles(("1g.10gb", 19, 7), ("1g.20gb", 15, 4), ("2g.20gb", 14, 3), ("3g.40gb", 9, 2),
                           ("4g.40gb", 5, 1), ("7g.80gb", 0, 1)),
    "H100-80GB": _profiles(("1g.10gb", 19, 7), ("1g.20gb", 15, 4), ("2g.20gb", 14, 3), ("3g.40gb", 9, 2),
                           ("4g.40gb", 5, 1), ("7g.80gb", 0, 1)),
}
"""GPU model -> its MIG profiles."""

GKE_PARTITION_SIZES: dict[str, tuple[str, ...]] = {
    "A100-40GB": ("1g.5gb", "2g.10gb", "3g.20gb", "7g.40gb"),
    "A100-80GB": ("1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"),
    "H100-80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "7g.80gb"),
}
"""The partition sizes GKE accepts per GPU model (a subset of the MIG profiles)."""

EC2_GPU_MODEL = {"p4d.24xlarge": "A100-40GB", "p4de.24xlarge": "A100-80GB", "p5.4xlarge": "H100-80GB",
                 "p5.48xlarge": "H100-80GB"}
"""EC2 instance types with MIG-capable GPUs (https://aws.amazon.com/ec2/instance-types/p4/, /p5/)."""
GKE_GPU_MODEL = {"nvidia-tesla-a100": "A100-40GB", "nvidia-a100-80gb": "A100-80GB", "nvidia-h100-80gb": "H100-80GB"}
"""GKE accelerator types with MIG-capable GPUs."""

MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
"""The device plugin's ``mixed`` strategy advertises each profile as ``nvidia.com/mig-<profile>``
(NVIDIA k8s-device-plugin README, "Configuration option details", ``MIG_STRATEGY``)."""
GKE_PARTITION_LABEL = "cloud.google.com/gke-gpu-partition-size"
"""GKE labels MIG nodes with their partition size; pods select it and request ``nvidia.com/gpu``."""


def mig_resource(profile: str) -> str:
    return f"{MIG_RESOURCE_PREFIX}{profile}"


def partitions_per_node(gpu_model: str, profile: str, gpus_per_node: int) -> int:
    """Schedulable partitions of a node whose GPUs are all split into ``profile``."""
    return MIG_PROFILES[gpu_model][profile].per_gpu * gpus_per_node
