"""EC2 capacity reservations behind an EKS managed node group: On-Demand Capacity Reservations (ODCRs,
``RESERVED``) and Capacity Blocks for ML (``CAPACITY_BLOCK``).

What AWS requires, and where it says so:

- EKS node groups have no "reserved" capacity type: botocore's EKS model lists ``CapacityTypes`` =
  ``ON_DEMAND | SPOT | CAPACITY_BLOCK``. An ODCR is consumed by an ``ON_DEMAND`` group whose launch template
  targets it (``CapacityReservationSpecification.CapacityReservationTarget``: a reservation id or a
  resource group ARN of reservations; EC2 API ``LaunchTemplateCapacityReservationSpecificationRequest``:
  "You can specify only one option at a time", so the target is given without a preference).
- A Capacity Block group (EKS user guide, "Create a managed node group with Capacity Blocks for ML",
  https://docs.aws.amazon.com/eks/latest/userguide/capacity-blocks-mng.html): the node group's
  ``capacityType`` is ``CAPACITY_BLOCK``; its custom launch template has ``InstanceMarketOptions.MarketType
  = capacity-block``, ``CapacityReservationTarget.CapacityReservationId`` = the block, and ``InstanceType``
  (one type, on the launch template: terraform-aws-modules/terraform-aws-eks
  modules/eks-managed-node-group/main.tf sets ``instance_type`` on the template and ``instance_types = null``
  on the group for CAPACITY_BLOCK, and the EKS API refuses a group that names instance types both ways,
  CreateNodegroup ``instanceTypes``). Subnets must be in the block's Availability Zone only.
- Instance Capacity Blocks cannot be used through resource groups (only UltraServer blocks can; EC2 user
  guide, "Capacity Blocks for ML", Considerations): a block is targeted by its ``cr-`` id.
- Timing: a block is usable only between its start and end. Before it starts the Auto Scaling group's
  launches fail and are retried, and "whenever the reservation becomes active ... the ASG will be scaled up
  to the desiredSize" (EKS user guide, same page). EKS itself puts a scheduled action "Amazon EKS Node
  Group Capacity Scaledown Before Reservation End" on the group, 40 minutes before the end, because EC2
  starts terminating the block's instances 30 minutes before it ends (same page; EC2: termination starts
  at 11:00 UTC on the last day, blocks end at 11:30 UTC).

Scale-up decision (no ``aws.autoscaling.Schedule`` here): a scheduled action in the past is an error
("If you try to schedule your action in the past, Amazon EC2 Auto Scaling returns an error message",
PutScheduledUpdateGroupAction API reference), and a one-time action is gone once it has run, so a
Schedule pinned to the block's start would break every ``pulumi up`` (re-create, refresh) after the block
starts. Instead the group keeps the cluster-autoscaler's scale-from-zero tags: pods pending on the pool
during the block scale it up; outside the block the launch fails, the autoscaler backs the group off and
tries other groups (kubernetes/autoscaler cluster-autoscaler FAQ, "node group backoff"). For nodes right
at the start without pending pods, set ``desiredSize`` > 0 when the group is created (EKS keeps retrying
until the block is active) or scale by hand (``aws eks update-nodegroup-config``); docs/mig.md.
"""

from __future__ import annotations

import re

CAPACITY_BLOCK_INSTANCE_TYPES: dict[str, tuple[str, ...]] = {
    "p6-b300.48xlarge": ("us-west-2",),
    "p6-b200.48xlarge": ("us-east-1", "us-east-2", "us-west-2"),
    "p5.4xlarge": ("us-east-1", "us-east-2", "us-west-2", "eu-west-2", "ap-south-1", "ap-northeast-1",
                   "ap-southeast-2", "sa-east-1"),
    "p5.48xlarge": ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-north-1", "eu-west-2",
                    "sa-east-1", "ap-northeast-1", "ap-south-1", "ap-southeast-2", "ap-southeast-3"),
    "p5e.48xlarge": ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-north-1", "eu-west-2",
                     "eu-south-2", "sa-east-1", "ap-northeast-1", "ap-northeast-2", "ap-south-1",
                     "ap-southeast-3"),
    "p4d.24xlarge": ("us-east-1", "us-east-2", "us-west-2"),
    "p4de.24xlarge": ("us-east-1", "us-west-2"),
    "trn1.32xlarge": ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-north-1", "ap-south-1",
                      "ap-southeast-2", "ap-southeast-4"),
    "trn2.3xlarge": ("ap-southeast-4", "sa-east-1"),
    "trn2.48xlarge": ("us-east-2",),
}
"""Instance types offered as (instance) Capacity Blocks -> the Regions offering them. Source: EC2 user
guide, "Capacity Blocks for ML", "Supported instance types and Regions"
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-capacity-blocks.html#capacity-blocks-prerequisites,
read 2026-12; Local Zones and UltraServer blocks left out). AWS adds types over time: re-read it before
buying a block of a type missing here."""

RESERVATION_ID = re.compile(r"cr-[0-9a-f]{8}([0-9a-f]{9})?")
"""A capacity reservation id (EC2 ids: the prefix, then 8 or 17 hex digits)."""
RESOURCE_GROUP_ARN = re.compile(r"arn:aws[a-z-]*:resource-groups:[a-z0-9-]+:\d{12}:group/[A-Za-z0-9._-]+")
"""A resource group ARN (a Capacity Reservation group: AWS::EC2::CapacityReservationPool)."""

EKS_CAPACITY_TYPE = {"ON_DEMAND": "ON_DEMAND", "SPOT": "SPOT", "RESERVED": "ON_DEMAND",
                     "CAPACITY_BLOCK": "CAPACITY_BLOCK"}
"""Pool capacity type -> the node group's ``capacityType`` (EKS ``CapacityTypes``: an ODCR is on-demand)."""


def reservation_target(capacity_type: str, reservation: str | None) -> dict[str, str] | None:
    """The launch template's ``capacity_reservation_target`` fields (snake case, pulumi_aws) for a pool,
    or None when the pool consumes no reservation. Raises ValueError on a reservation the capacity type
    cannot use."""
    if capacity_type not in EKS_CAPACITY_TYPE:
        raise ValueError(f"capacity type {capacity_type!r} is not available to EKS managed node groups; "
                         f"allowed: {', '.join(EKS_CAPACITY_TYPE)}")
    if capacity_type in ("ON_DEMAND", "SPOT"):
        if reservation:
            raise ValueError(f"reservation {reservation!r} is only used with capacity type RESERVED or "
                             f"CAPACITY_BLOCK, not {capacity_type}")
        return None
    if not reservation:
        what = "or a resource group ARN" if capacity_type == "RESERVED" else "(the block's)"
        raise ValueError(f"capacity type {capacity_type} needs a reservation: a capacity reservation id "
                         f"cr-... {what}")
    if RESERVATION_ID.fullmatch(reservation):
        return {"capacity_reservation_id": reservation}
    if capacity_type == "RESERVED" and RESOURCE_GROUP_ARN.fullmatch(reservation):
        return {"capacity_reservation_resource_group_arn": reservation}
    if capacity_type == "CAPACITY_BLOCK" and RESOURCE_GROUP_ARN.fullmatch(reservation):
        raise ValueError(f"capacity block reservation {reservation!r} is a resource group: instance "
                         "Capacity Blocks are targeted by their cr-... id (only UltraServer blocks use "
                         "resource groups)")
    allowed = "cr-<8 or 17 hex digits>" + (
        " or arn:aws:resource-groups:<region>:<account>:group/<name>" if capacity_type == "RESERVED" else "")
    raise ValueError(f"reservation {reservation!r} is not a capacity reservation; allowed: {allowed}")


def check_capacity_block(instance_types: list[str] | tuple[str, ...], region: str | None = None) -> str:
    """The one instance type of a Capacity Block pool; ValueError if there are several or it (or the
    Region, when given) is not offered as a Capacity Block."""
    if len(instance_types) != 1:
        raise ValueError(f"a CAPACITY_BLOCK pool has exactly one instance type (the block's), got "
                         f"{list(instance_types)}")
    (instance_type,) = instance_types
    if instance_type not in CAPACITY_BLOCK_INSTANCE_TYPES:
        raise ValueError(f"instance type {instance_type!r} is not offered as a Capacity Block; allowed: "
                         f"{', '.join(CAPACITY_BLOCK_INSTANCE_TYPES)}")
    if region is not None and region not in CAPACITY_BLOCK_INSTANCE_TYPES[instance_type]:
        raise ValueError(f"Capacity Blocks of {instance_type} are not offered in {region}; allowed: "
                         f"{', '.join(CAPACITY_BLOCK_INSTANCE_TYPES[instance_type])}")
    return instance_type
