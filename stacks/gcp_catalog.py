"""Facts about Google Cloud that the settings validate against (kept dependency-free).

GPU machine families and accelerator counts are from Compute Engine's GPU documentation
(https://cloud.google.com/compute/docs/gpus): L4 only on G2, A100 40GB on A2 high/mega, A100 80GB
on A2 ultra, H100 80GB on A3 high; T4, V100 and P4 attach to N1 machines in counts of 1, 2 or 4 (8 V100).
"""

from __future__ import annotations

import re

from stacks.aws_catalog import PoolProblem

GPU_DRIVER_VERSIONS = ("LATEST", "DEFAULT", "INSTALLATION_DISABLED")
MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9]*-[a-z]+(-[0-9]+g?)?$")

# Machine types with built-in GPUs: accelerator type and count are fixed by the machine type.
_G2 = {f"g2-standard-{n}": 1 for n in (4, 8, 12, 16, 32)} | {"g2-standard-24": 2, "g2-standard-48": 4,
                                                                "g2-standard-96": 8}
_A2_HIGH = {f"a2-highgpu-{n}g": n for n in (1, 2, 4, 8)} | {"a2-megagpu-16g": 16}
_A2_ULTRA = {f"a2-ultragpu-{n}g": n for n in (1, 2, 4, 8)}
_A3_HIGH = {f"a3-highgpu-{n}g": n for n in (1, 2, 4, 8)}
BUILT_IN_GPUS: dict[str, tuple[str, int]] = {
    **{m: ("nvidia-l4", n) for m, n in _G2.items()},
    **{m: ("nvidia-tesla-a100", n) for m, n in _A2_HIGH.items()},
    **{m: ("nvidia-a100-80gb", n) for m, n in _A2_ULTRA.items()},
    **{m: ("nvidia-h100-80gb", n) for m, n in _A3_HIGH.items()},
}
# Accelerators attached to N1 machines, with the counts a node may have.
N1_ACCELERATORS: dict[str, tuple[int, ...]] = {
    "nvidia-tesla-t4": (1, 2, 4), "nvidia-tesla-p4": (1, 2, 4), "nvidia-tesla-v100": (1, 2, 4, 8),
}
ACCELERATOR_FAMILIES = {"nvidia-l4": "G2 (g2-standard-*)", "nvidia-tesla-a100": "A2 (a2-highgpu-*, a2-megagpu-16g)",
                        "nvidia-a100-80gb": "A2 ultra (a2-ultragpu-*)", "nvidia-h100-80gb": "A3 (a3-highgpu-*)",
                        **{a: "N1 (n1-standard-*, n1-highmem-*)" for a in N1_ACCELERATORS}}
ACCELERATOR_TYPES = tuple(sorted(ACCELERATOR_FAMILIES))
GPU_FAMILY_PREFIXES = ("g2-", "a2-", "a3-")


def check_gcp_pool(pool) -> None:
    """Compute Engine rules for one pool (machine type, accelerator, GPU count); raises PoolProblem."""
    if len(pool.instance_types) != 1:
        raise PoolProblem("instanceTypes", pool.instance_types, "exactly one machine type on GKE")
    machine = pool.instance_types[0]
    if not MACHINE_TYPE.fullmatch(machine):
        raise PoolProblem("instanceTypes", machine, "a Compute Engine machine type such as n2-standard-4 "
                                                    "or g2-standard-8")
    for field, value in (("amiType", pool.ami_type), ("fastImagePull", pool.fast_image_pull),
                         ("rootVolumeThroughput", pool.root_volume_throughput)):
        if value is not None:
            raise PoolProblem(field, value, "unset on GKE (EKS only)")
    if pool.secondary_boot_disk_image and not pool.resolved_image_streaming:
        # A CONTAINER_IMAGE_CACHE secondary boot disk is read through image streaming (GKE "Use secondary
        # boot disks to preload data or container images"; terraform-google-kubernetes-engine README,
        # secondary_boot_disk: "gcfs_config must be enabled=true for this feature to work").
        raise PoolProblem("imageStreaming", pool.image_streaming,
                          "true (or unset on a GPU pool) when secondaryBootDiskImage is set")
    accelerator = pool.accelerator_type
    built_in = BUILT_IN_GPUS.get(machine)
    if machine.startswith(GPU_FAMILY_PREFIXES) and built_in is None:
        raise PoolProblem("instanceTypes", machine, "a known GPU machine type: " + ", ".join(sorted(BUILT_IN_GPUS)))
    if built_in:
        kind, count = built_in
        if accelerator is not None and accelerator != kind:
            raise PoolProblem("acceleratorType", accelerator,
                              f"{kind}, the GPU of {machine} ({accelerator} needs "
                              f"{ACCELERATOR_FAMILIES.get(accelerator, 'another machine family')})")
        if pool.gpus_per_node != count:
            raise PoolProblem("gpusPerNode", pool.gpus_per_node, f"{count}, the GPU count of {machine}")
        return
    if not pool.gpus_per_node:
        for field, value, unset in (("acceleratorType", accelerator, None),
                                    ("gpuDriverVersion", pool.gpu_driver_version, None),
                                    ("gpuTimeSlicing", pool.gpu_time_slicing, 1)):
            if value != unset:
                raise PoolProblem(field, value, f"unset on a CPU pool ({machine} has no GPU)")
        return
    if not machine.startswith("n1-"):
        raise PoolProblem("instanceTypes", machine, "a machine type with built-in GPUs (g2-, a2-, a3-) or an n1- "
                                                    "machine with acceleratorType: only N1 takes attached GPUs")
    if accelerator is None:
        if pool.gpus_per_node:
            raise PoolProblem("acceleratorType", None, f"one of {', '.join(N1_ACCELERATORS)} on {machine} "
                                                       "(or a G2/A2/A3 machine type with built-in GPUs)")
        return
    if accelerator not in ACCELERATOR_FAMILIES:
        raise PoolProblem("acceleratorType", accelerator, f"one of {', '.join(ACCELERATOR_TYPES)}")
    if accelerator not in N1_ACCELERATORS or not machine.startswith("n1-"):
        raise PoolProblem("acceleratorType", accelerator,
                          f"an accelerator {machine} can take: {accelerator} needs {ACCELERATOR_FAMILIES[accelerator]}")
    allowed = N1_ACCELERATORS[accelerator]
    if pool.gpus_per_node not in allowed:
        raise PoolProblem("gpusPerNode", pool.gpus_per_node,
                          f"one of {', '.join(map(str, allowed))} {accelerator} per node")


def accelerator_of(pool) -> str | None:
    """The accelerator type of a GKE pool (built into G2/A2/A3 machines, explicit on N1)."""
    built_in = BUILT_IN_GPUS.get(pool.instance_types[0])
    return built_in[0] if built_in else pool.accelerator_type
