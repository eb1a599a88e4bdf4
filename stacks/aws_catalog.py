"""Facts about AWS that the settings validate against.

The enum lists are checked against botocore's own EKS service model by
``tests/test_aws_enums.py``, so a value AWS does not accept cannot creep in.
Kept dependency-free: botocore is a test dependency, not a runtime one.
"""

from typing import Literal

# botocore eks model, shape ``CapacityTypes`` (CAPACITY_BLOCK with a reservation: stacks/capacity_settings.py).
CapacityType = Literal["ON_DEMAND", "SPOT", "CAPACITY_BLOCK"]
# botocore eks model, shape ``TaintEffect``.
TaintEffect = Literal["NO_SCHEDULE", "NO_EXECUTE", "PREFER_NO_SCHEDULE"]
# botocore eks model, shape ``LogType``.
ClusterLogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]
# botocore eks model, shape ``AMITypes`` (the AL2023 x86 images this platform supports).
AmiType = Literal["AL2023_x86_64_STANDARD", "AL2023_x86_64_NVIDIA"]

CPU_AMI_TYPE = "AL2023_x86_64_STANDARD"
# The AL2023 NVIDIA AMI ships the driver and container toolkit, not the device plugin
# (https://github.com/awslabs/amazon-eks-ami/issues/2342).
GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"

# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy, ``retentionInDays``).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                      1827, 2192, 2557, 2922, 3288, 3653)

# NVIDIA GPUs per instance, x86 families only (the NVIDIA AL2023 AMI is x86_64 here).
# Source: https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html
_G_SIZES = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1,
            "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}
GPU_COUNT: dict[str, int] = {
    "g4dn.xlarge": 1, "g4dn.2xlarge": 1, "g4dn.4xlarge": 1, "g4dn.8xlarge": 1,
    "g4dn.16xlarge": 1, "g4dn.12xlarge": 4, "g4dn.metal": 8,
    **{f"{family}.{size}": n for family in ("g5", "g6", "g6e") for size, n in _G_SIZES.items()},
    "p3.2xlarge": 1, "p3.8xlarge": 4, "p3.16xlarge": 8, "p3dn.24xlarge": 8,
    "p4d.24xlarge": 8, "p4de.24xlarge": 8,
    "p5.4xlarge": 1, "p5.48xlarge": 8, "p5e.48xlarge": 8, "p5en.48xlarge": 8,
}
GPU_FAMILIES = frozenset(t.split(".")[0] for t in GPU_COUNT)


def instance_family(instance_type: str) -> str:
    return instance_type.split(".", 1)[0]


# nodeadm turns the FastImagePull feature gate into the SOCI snapshotter's parallel pull and unpack only
# on nodes with at least 4 vCPUs and 7 GiB (awslabs/amazon-eks-ami nodeadm/internal/containerd/config.go,
# UseSOCISnapshotter); below that it silently pulls as before. Every current x86 family reaches 4 vCPUs
# at xlarge, and 7 GiB there too (c-family xlarge: 8 GiB), so these sizes are the ones it ignores.
FAST_PULL_TOO_SMALL = ("nano", "micro", "small", "medium", "large")
# "Ensure you've configured additional EBS throughput for your instance root volume. We recommend at
# least 600MiB/s" (amazon-eks-ami nodeadm/doc/examples.md, "Enabling fast image pull").
FAST_PULL_THROUGHPUT = 600


def is_gpu_instance(instance_type: str) -> bool:
    """True for the NVIDIA x86 families above (g4dn, g5, g6, g6e, p3, p4d, p5, ...)."""
    return instance_family(instance_type) in GPU_FAMILIES


class PoolProblem(ValueError):
    """A node pool value the cloud does not accept: ``field`` is the pool's key (e.g. ``gpusPerNode``)."""

    def __init__(self, field: str, value: object, allowed: str):
        super().__init__(allowed)
        self.field, self.value, self.allowed = field, value, allowed


def check_aws_pool(pool) -> None:
    """EC2 rules for one pool (instance types, GPU counts, AMI type); raises :class:`PoolProblem`."""
    for instance_type in pool.instance_types:
        if "." not in instance_type:
            raise PoolProblem("instanceTypes", instance_type, "an EC2 instance type such as m6i.large")
    gpu_types = [t for t in pool.instance_types if is_gpu_instance(t)]
    if gpu_types and len(gpu_types) != len(pool.instance_types):
        raise PoolProblem("instanceTypes", pool.instance_types,
                          "all GPU or all CPU instance types (the autoscaler needs one node shape)")
    if gpu_types and pool.gpus_per_node == 0:
        raise PoolProblem("gpusPerNode", 0, f"at least 1: {gpu_types[0]} is a GPU instance type")
    if pool.gpus_per_node and not gpu_types:
        raise PoolProblem("gpusPerNode", pool.gpus_per_node,
                          f"0 for CPU instance types {pool.instance_types}; GPU families are "
                          "g4dn, g5, g6, g6e, p3, p3dn, p4d, p4de, p5, p5e, p5en")
    for instance_type in gpu_types:
        count = GPU_COUNT.get(instance_type)
        if count is None:
            raise PoolProblem("instanceTypes", instance_type,
                              f"a known GPU instance type: {', '.join(sorted(GPU_COUNT))}")
        if count != pool.gpus_per_node:
            raise PoolProblem("gpusPerNode", pool.gpus_per_node, f"{count}, the GPU count of {instance_type}")
    if pool.ami_type and pool.gpus_per_node and pool.ami_type != GPU_AMI_TYPE:
        raise PoolProblem("amiType", pool.ami_type, f"{GPU_AMI_TYPE} for a GPU pool")
    if pool.ami_type and not pool.gpus_per_node and pool.ami_type != CPU_AMI_TYPE:
        raise PoolProblem("amiType", pool.ami_type, f"{CPU_AMI_TYPE} for a CPU pool")
    for field in ("acceleratorType", "gpuDriverVersion", "imageStreaming", "secondaryBootDiskImage"):
        if getattr(pool, _snake(field)) is not None:
            raise PoolProblem(field, getattr(pool, _snake(field)), "unset on AWS (GKE only)")
    if pool.fast_image_pull:
        small = [t for t in pool.instance_types if t.split(".", 1)[1] in FAST_PULL_TOO_SMALL]
        if small:
            raise PoolProblem("fastImagePull", True,
                              f"false (or unset) for {small[0]}: nodeadm applies FastImagePull only on nodes with "
                              "at least 4 vCPUs and 7 GiB (xlarge or larger)")
    # EKS CreateNodegroup limits beyond Kubernetes' own (botocore eks model: labelKey 1-63, labelValue 1-63,
    # taintKey 1-63, taintValue 0-63); each also becomes an Auto Scaling tag
    # k8s.io/cluster-autoscaler/node-template/{label,taint}/<key> (46 characters + key, EC2 tag keys <= 128).
    for key, value in pool.labels.items():
        if len(key) > 63:
            raise PoolProblem(f"labels.{key}", key, "a label key of at most 63 characters on EKS (prefix included)")
        if not value:
            raise PoolProblem(f"labels.{key}", value, "a non-empty label value on EKS (1-63 characters)")
    for index, taint in enumerate(pool.taints):
        if len(taint.key) > 63:
            raise PoolProblem(f"taints.{index}.key", taint.key, "a taint key of at most 63 characters on EKS "
                                                                "(prefix included)")


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
