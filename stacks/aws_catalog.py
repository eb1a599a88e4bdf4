"""Facts about AWS that the settings validate against.

The enum lists are checked against botocore's own EKS service model by
``tests/test_aws_enums.py``, so a value AWS does not accept cannot creep in.
Kept dependency-free: botocore is a test dependency, not a runtime one.
"""

from typing import Literal

# botocore eks model, shape ``CapacityTypes`` (CAPACITY_BLOCK left out: it needs a reservation).
CapacityType = Literal["ON_DEMAND", "SPOT"]
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


def is_gpu_instance(instance_type: str) -> bool:
    """True for the NVIDIA x86 families above (g4dn, g5, g6, g6e, p3, p4d, p5, ...)."""
    return instance_family(instance_type) in GPU_FAMILIES
