"""The capacity each GPU server may land on, in the order its provisioner tries it, with list prices.

Read from the plan JSON (``stacks.plan.to_json``), like the cost estimate, so what is printed is what the
rendered objects say, not what the settings meant:

- a managed node group (cluster-autoscaler): one rank, its instance types and capacity type (and the
  capacity reservation its launch template targets);
- Karpenter: the pool's NodePools by descending ``weight`` (Karpenter tries higher weights first:
  karpenter.sh NodePool ``spec.weight``), each with its instance-type and capacity-type requirements;
- a GKE custom ComputeClass: its ``priorities`` in order, each a named node pool or a machine type that
  node auto-provisioning creates pools for.

Several instance types in one rank are alternatives the provisioner chooses between by price and
availability, not an order: they share the rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The cost estimate imports this module only inside estimate(), so the import goes one way at load time.
from stacks.cost import AWS_PRICES, COMPUTE_CLASS_LABEL, GCP_PRICES, POOL_LABEL, _region

PRICE_KEY = "tfplatform.io/hourly-price"
"""Tag (EKS) / annotation (Kubernetes objects) carrying a configured ``hourlyPrice`` (capacity blocks)."""
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
KARPENTER_NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
GKE_NODE_POOL = "gcp:container/nodePool:NodePool"
COMPUTE_CLASS = "kubernetes:cloud.google.com/v1:ComputeClass"
_EKS_CAPACITY = {"ON_DEMAND": "on-demand", "SPOT": "spot", "CAPACITY_BLOCK": "capacity-block"}


@dataclass(frozen=True)
class Landing:
    """One instance type at one rank of a pool's capacity order."""

    rank: int
    """1 is the first choice; instance types of one option share a rank."""
    option: str
    """What provides it: the node group, NodePool, node pool or ComputeClass priority."""
    instance_type: str
    capacity: str
    """on-demand, spot, reserved, capacity-block or flex-start."""
    hourly: float | None
    """List price per node-hour (spot: the on-demand price, an upper bound); None when unknown."""
    max_nodes: int | None = None
    """The most nodes this option may add (its node group's or pool's maxSize, or its GPU limit)."""


@dataclass
class PoolCapacity:
    pool: str
    provisioner: str
    """node-group, karpenter or compute-class."""
    landings: list[Landing] = field(default_factory=list)
    resources: set[str] = field(default_factory=set)
    """Names of the plan resources this pool's capacity comes from (the cost prices the pool once)."""

    @property
    def max_nodes(self) -> int:
        """The pool's size: its first choice's maxSize (Karpenter gives every option the same node limit;
        a ComputeClass's later options may reach more only up to the cluster's auto-provisioning limits,
        which are shared by every pool)."""
        return max((landing.max_nodes or 0 for landing in self.landings if landing.rank == 1), default=0)

    @property
    def first_price(self) -> float | None:
        first = [landing.hourly for landing in self.landings if landing.rank == 1]
        return None if not first or None in first else min(first)

    @property
    def highest_price(self) -> float | None:
        prices = [landing.hourly for landing in self.landings]
        return None if not prices or None in prices else max(prices)


def _price(instance_type: str, region: str | None, cloud: str, configured: Any = None) -> float | None:
    if configured not in (None, ""):
        return float(configured)
    table = AWS_PRICES if cloud == "aws" else GCP_PRICES
    return table.get(region or "", {}).get(instance_type)


def pools(plan: dict[str, Any]) -> dict[str, PoolCapacity]:
    """``pool -> PoolCapacity`` for every pool (or compute class) the plan provisions."""
    resources = plan["resources"]
    aws_region = _region(resources, "pulumi:providers:aws")
    gcp_region = _region(resources, "pulumi:providers:gcp")
    found: dict[str, PoolCapacity] = {}
    templates = {r["name"]: r["inputs"] for r in resources if r["type"] == LAUNCH_TEMPLATE}
    karpenter: dict[str, list[dict[str, Any]]] = {}
    gke_pools: dict[str, dict[str, Any]] = {}
    for r in resources:
        inputs, kind = r["inputs"], r["type"]
        if kind == NODE_GROUP:
            pool = (inputs.get("labels") or {}).get(POOL_LABEL, r["name"])
            template = templates.get(f"{r['name']}-lt") or {}
            target = ((template.get("capacityReservationSpecification") or {})
                      .get("capacityReservationTarget") or {})
            capacity = _EKS_CAPACITY.get(inputs.get("capacityType", "ON_DEMAND"), "on-demand")
            if capacity == "on-demand" and target:
                capacity = "reserved"
            price = (inputs.get("tags") or {}).get(PRICE_KEY)
            scaling = inputs.get("scalingConfig") or {}
            entry = found.setdefault(pool, PoolCapacity(pool, "node-group"))
            entry.resources.add(r["name"])
            entry.landings += [Landing(1, f"node group {r['name']}", t, capacity,
                                       _price(t, aws_region, "aws", price), scaling.get("maxSize"))
                               for t in inputs.get("instanceTypes") or []]
        elif kind == KARPENTER_NODE_POOL:
            template = ((inputs.get("spec") or {}).get("template") or {})
            pool = ((template.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL)
            if pool:
                karpenter.setdefault(pool, []).append(r)
        elif kind == GKE_NODE_POOL:
            gke_pools[inputs.get("name") or r["name"]] = r
    for pool, node_pools in karpenter.items():
        entry = found.setdefault(pool, PoolCapacity(pool, "karpenter"))
        ordered = sorted(node_pools, key=lambda r: -((r["inputs"].get("spec") or {}).get("weight") or 0))
        for rank, r in enumerate(ordered, start=1):
            entry.resources.add(r["name"])
            entry.landings += _karpenter_landings(rank, r, aws_region)
    classes = {(r["inputs"].get("metadata") or {}).get("name"): r for r in resources if r["type"] == COMPUTE_CLASS}
    claimed: set[str] = set()
    for name, r in classes.items():
        entry = found.setdefault(name, PoolCapacity(name, "compute-class"))
        entry.resources.add(r["name"])
        for rank, priority in enumerate((r["inputs"].get("spec") or {}).get("priorities") or [], start=1):
            for pool_name in priority.get("nodepools") or []:
                node_pool = gke_pools.get(pool_name)
                if node_pool is None:
                    entry.landings.append(Landing(rank, f"node pool {pool_name} (not in this plan)", "?", "?", None))
                    continue
                claimed.add(pool_name)
                entry.resources.add(node_pool["name"])
                entry.landings.append(_gke_landing(rank, f"node pool {pool_name}", node_pool["inputs"], gcp_region))
            if priority.get("machineType"):
                machine = priority["machineType"]
                gpu = priority.get("gpu") or {}
                entry.landings.append(Landing(
                    rank, f"ComputeClass {name} (auto-provisioned)", machine,
                    "spot" if priority.get("spot") else "on-demand", _price(machine, gcp_region, "gcp"),
                    _nap_max_nodes(resources, gpu)))
    for pool_name, r in gke_pools.items():
        if pool_name in claimed:
            continue
        labels = ((r["inputs"].get("nodeConfig") or {}).get("labels") or {})
        pool = labels.get(POOL_LABEL, pool_name)
        entry = found.setdefault(pool, PoolCapacity(pool, "node-group"))
        entry.resources.add(r["name"])
        entry.landings.append(_gke_landing(1, f"node pool {pool_name}", r["inputs"], gcp_region))
    return found


def _karpenter_landings(rank: int, r: dict[str, Any], region: str | None) -> list[Landing]:
    spec = r["inputs"].get("spec") or {}
    requirements = {q.get("key"): q for q in ((spec.get("template") or {}).get("spec") or {}).get("requirements") or []}
    types = (requirements.get("node.kubernetes.io/instance-type") or {}).get("values") or ["?"]
    capacities = (requirements.get("karpenter.sh/capacity-type") or {}).get("values") or ["?"]
    reservation_types = (requirements.get("karpenter.k8s.aws/capacity-reservation-type") or {}).get("values") or []
    capacity = "/".join(capacities)
    if capacities == ["reserved"] and reservation_types == ["capacity-block"]:
        capacity = "capacity-block"
    price = ((r["inputs"].get("metadata") or {}).get("annotations") or {}).get(PRICE_KEY)
    gpus = _karpenter_gpus_per_node(requirements)
    limits = spec.get("limits") or {}
    by_gpus = int(limits["nvidia.com/gpu"]) // gpus if limits.get("nvidia.com/gpu") and gpus else None
    by_nodes = int(limits["nodes"]) if limits.get("nodes") else None
    max_nodes = by_nodes if by_nodes is not None else by_gpus
    name = (r["inputs"].get("metadata") or {}).get("name", r["name"])
    return [Landing(rank, f"Karpenter NodePool {name}", t, capacity, _price(t, region, "aws", price), max_nodes)
            for t in types]


def _karpenter_gpus_per_node(requirements: dict[str, dict]) -> int:
    from stacks.aws_catalog import GPU_COUNT

    count = (requirements.get("karpenter.k8s.aws/instance-gpu-count") or {}).get("values") or []
    if count:
        return int(count[0])
    types = (requirements.get("node.kubernetes.io/instance-type") or {}).get("values") or []
    return GPU_COUNT.get(types[0], 0) if types else 0


def _gke_landing(rank: int, option: str, inputs: dict[str, Any], region: str | None) -> Landing:
    node = inputs.get("nodeConfig") or {}
    machine = node.get("machineType", "?")
    affinity = (node.get("reservationAffinity") or {}).get("consumeReservationType", "")
    capacity = ("flex-start" if node.get("flexStart") else "spot" if node.get("spot")
                else "reserved" if affinity in ("SPECIFIC_RESERVATION", "ANY_RESERVATION") else "on-demand")
    price = (node.get("resourceLabels") or {}).get("tfplatform-hourly-price")
    auto = inputs.get("autoscaling") or {}
    return Landing(rank, option, machine, capacity, _price(machine, region, "gcp", price),
                   auto.get("totalMaxNodeCount"))


def _nap_max_nodes(resources: list[dict[str, Any]], gpu: dict[str, Any]) -> int | None:
    """Nodes node auto-provisioning may add for a priority: its GPU type's cluster limit / GPUs per node."""
    count = gpu.get("count")
    if not count:
        return None
    for r in resources:
        if r["type"] != "gcp:container/cluster:Cluster":
            continue
        limits = (r["inputs"].get("clusterAutoscaling") or {}).get("resourceLimits") or []
        for limit in limits:
            if limit.get("resourceType") == gpu.get("type"):
                return int(limit.get("maximum", 0)) // int(count)
    return None


def server_pools(plan: dict[str, Any]) -> dict[str, str]:
    """``Deployment name -> pool (or compute class)`` of every GPU serving Deployment."""
    found = {}
    for r in plan["resources"]:
        if not r["type"].endswith(":Deployment") or not r["type"].startswith("kubernetes:apps/"):
            continue
        pod = (((r["inputs"].get("spec") or {}).get("template") or {}).get("spec") or {})
        gpus = any(key.startswith("nvidia.com/") for c in pod.get("containers") or []
                   for key in ((c.get("resources") or {}).get("limits") or {}))
        selector = pod.get("nodeSelector") or {}
        pool = selector.get(COMPUTE_CLASS_LABEL) or selector.get(POOL_LABEL)
        if gpus and pool:
            found[(r["inputs"].get("metadata") or {}).get("name", r["name"])] = pool
    return found


def render(plan: dict[str, Any]) -> str:
    """The plan's "GPU capacity" section: per GPU server, where its pods may land, in order."""
    capacity = pools(plan)
    lines = ["GPU capacity, in the order each server's provisioner tries it (list price per node-hour; "
             "spot at most the on-demand price):"]
    for deployment, pool in sorted(server_pools(plan).items()):
        entry = capacity.get(pool)
        if entry is None:
            lines.append(f"  {deployment}: pool {pool}: no capacity in this plan")
            continue
        lines.append(f"  {deployment} (pool {pool}, {entry.provisioner}):")
        for landing in entry.landings:
            price = "price unknown" if landing.hourly is None else f"${landing.hourly:.3f}/h"
            limit = "" if landing.max_nodes is None else f", up to {landing.max_nodes} nodes"
            lines.append(f"    {landing.rank}. {landing.instance_type} {landing.capacity}: {price}{limit} "
                         f"({landing.option})")
    return "\n".join(lines)
