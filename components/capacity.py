"""Where a GPU pool's nodes may come from: its capacity options, tried in order.

A pool's first option is its own ``instanceTypes`` / ``capacityType`` / ``reservation``; its ``fallback``
list adds more, each with a stable ``name`` (resources are named after it, so reordering the list changes
priorities, never resource names). The provisioners read the same options:

- Karpenter (EKS): one NodePool per option, weights descending in list order; see
  :mod:`components.aws.karpenter`.
- A custom ComputeClass (GKE): one ``priorities`` entry per option, in list order; see
  :mod:`components.gcp.compute_class`.
- Fixed node groups / node pools (cluster-autoscaler): the first option only (fallback is refused by
  the settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Capacity = Literal["on-demand", "spot", "reserved", "capacity-block", "flex-start"]
"""``reserved``: an EC2 on-demand capacity reservation (or a resource group of them) / a Compute Engine
reservation; ``capacity-block``: EC2 Capacity Blocks for ML (reserved GPU time, a reservation id);
``flex-start``: GKE flex-start VMs (wait for capacity, run at most 7 days)."""

CAPACITY_OF_CONFIG: dict[str, Capacity] = {"ON_DEMAND": "on-demand", "SPOT": "spot", "RESERVED": "reserved",
                                          "CAPACITY_BLOCK": "capacity-block", "FLEX_START": "flex-start"}
"""The config spelling (``capacityType``, EKS API style) -> the component spelling (Karpenter's)."""


@dataclass(frozen=True)
class CapacityOption:
    """One place a pool's nodes may come from."""

    name: str
    """Stable DNS-label name: ``primary`` for the pool's own option, the fallback entry's ``name`` otherwise."""
    instance_types: tuple[str, ...]
    """EC2 instance types, or on GKE exactly one machine type."""
    capacity: Capacity = "on-demand"
    reservation: str | None = None
    """``reserved``/``capacity-block`` on AWS: a reservation id ``cr-...`` or, for ``reserved`` only, a
    resource group ARN ``arn:aws:resource-groups:<region>:<account>:group/<name>``. On GCP: a reservation
    name (``<name>`` or ``projects/<p>/reservations/<name>``), or ``any`` (consume any matching one)."""
    hourly_price: float | None = None
    """USD per node-hour when no list price applies (a capacity block's price is set when it is bought)."""

    @property
    def is_reserved(self) -> bool:
        return self.capacity in ("reserved", "capacity-block")
