"""Estimated list price of the compute a plan provisions, and the delta a change makes.

Works on the plan JSON (``stacks.plan.to_json``), so both sides of a diff are priced the same way.
Prices are a pinned table (below) with its date and source; a type or region not in the table is
reported as unknown, never guessed. Spot capacity is priced at the on-demand list price (an upper
bound: spot is usually cheaper but varies by hour and zone).

A Deployment a KEDA ``ScaledObject`` scales counts at its ``minReplicaCount`` (0 for a server that scales to
zero) in the floor. Its ``cron`` trigger (office hours) is priced too, as a *typical* month: the window's
share of the week (:func:`components.serving.scale_to_zero.window_share`) times the GPU nodes the window's
pods hold. Traffic outside the window, which wakes a held server for a while, is not priced (it depends on
load, not on the plan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from components.serving.scale_to_zero import window_share

POOL_LABEL = "tfplatform.io/node-pool"
GPU_RESOURCE = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
COMPUTE_CLASS_LABEL = "cloud.google.com/compute-class"
MIG_PROFILE_LABEL = "tfplatform.io/mig-profile"
SERVER_LABEL = "tfplatform.io/server"
TRACK_LABEL = "tfplatform.io/track"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
_GPU_TEMPLATE_TAG = f"k8s.io/cluster-autoscaler/node-template/resources/{GPU_RESOURCE}"
_MIG_TEMPLATE_TAG = f"k8s.io/cluster-autoscaler/node-template/resources/{MIG_PREFIX}"
_POOL_TEMPLATE_TAG = f"k8s.io/cluster-autoscaler/node-template/label/{POOL_LABEL}"

HOURS_PER_MONTH = 730
PRICES_AS_OF = "2025-06"
# USD per hour, on-demand, Linux. Source: https://aws.amazon.com/ec2/pricing/on-demand/ (us-east-1),
# https://aws.amazon.com/eks/pricing/ (cluster in standard support), https://aws.amazon.com/vpc/pricing/
# (NAT gateway, per gateway-hour, data processing not included).
AWS_PRICES: dict[str, dict[str, float]] = {
    "us-east-1": {
        "m6i.large": 0.096, "m6i.xlarge": 0.192, "m6i.2xlarge": 0.384,
        "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752,
        "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.12xlarge": 5.672,
        "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776,
        # Before AWS's June 2025 cut of P4/P5 on-demand prices (announced as up to 45 %): an upper bound.
        "p4d.24xlarge": 32.7726,
    },
}
AWS_EKS_CLUSTER_HOUR = 0.10
AWS_NAT_GATEWAY_HOUR = {"us-east-1": 0.045}
# Source: https://cloud.google.com/compute/vm-instance-pricing (us-central1; G2 prices include the
# L4 GPUs), https://cloud.google.com/kubernetes-engine/pricing (cluster management fee).
GCP_PRICES: dict[str, dict[str, float]] = {
    "us-central1": {
        "e2-standard-2": 0.067006, "e2-standard-4": 0.134012, "n2-standard-4": 0.194236,
        "n2-standard-8": 0.388472, "g2-standard-4": 0.706832, "g2-standard-8": 0.853624,
        "g2-standard-12": 1.000416, "a2-highgpu-1g": 3.673385,
    },
}
GKE_CLUSTER_HOUR = 0.10


@dataclass(frozen=True)
class CostLine:
    """One priced item: ``hourly_min``/``hourly_max`` are None when the price is unknown."""

    item: str
    detail: str
    hourly_min: float | None
    hourly_max: float | None
    held_by: str = ""
    """For a pool whose floor is above its minSize: the pods that keep those nodes up."""
    hourly_typical: float | None = None
    """Average price per hour over a week with the office-hours windows of scale-to-zero servers; None
    when the pool has none (then it is ``hourly_min``)."""
    asleep: str = ""
    """For a pool with scale-to-zero servers: who sleeps at the floor, and what their windows hold."""


@dataclass
class CostEstimate:
    lines: list[CostLine] = field(default_factory=list)

    @property
    def unknown(self) -> list[CostLine]:
        return [line for line in self.lines if line.hourly_min is None]

    @property
    def hourly(self) -> tuple[float, float]:
        known = [line for line in self.lines if line.hourly_min is not None]
        return (round(sum(line.hourly_min for line in known), 4), round(sum(line.hourly_max for line in known), 4))

    @property
    def monthly(self) -> tuple[float, float]:
        low, high = self.hourly
        return round(low * HOURS_PER_MONTH, 2), round(high * HOURS_PER_MONTH, 2)

    @property
    def monthly_typical(self) -> float | None:
        """A month with the office-hours windows priced; None when no line has one."""
        known = [line for line in self.lines if line.hourly_min is not None]
        if not any(line.hourly_typical is not None for line in known):
            return None
        hourly = sum(line.hourly_min if line.hourly_typical is None else line.hourly_typical for line in known)
        return round(hourly * HOURS_PER_MONTH, 2)

    def summary(self) -> str:
        (low, high), (mlow, mhigh) = self.hourly, self.monthly
        text = f"${low:.2f}-${high:.2f}/hour, ${mlow:,.0f}-${mhigh:,.0f}/month (list prices of {PRICES_AS_OF})"
        typical = self.monthly_typical
        if typical is not None:
            text += f"; typical ${typical:,.0f}/month with the office hours of servers that scale to zero"
        if self.unknown:
            text += "; unknown: " + ", ".join(f"{line.item} ({line.detail})" for line in self.unknown)
        return text

    def floor_notes(self) -> list[str]:
        """One line per pool priced above its minSize, naming what holds its nodes, and per pool whose
        servers scale to zero, what sleeps at the floor and what their windows cost."""
        return ([f"{line.item}: {line.held_by}" for line in self.lines if line.held_by]
                + [f"{line.item}: {line.asleep}" for line in self.lines if line.asleep])


def _region(resources: list[dict[str, Any]], provider_type: str) -> str | None:
    for r in resources:
        if r["type"] == provider_type:
            return r["inputs"].get("region")
    return None


def estimate(plan: dict[str, Any]) -> CostEstimate:
    """Price the node pools, cluster fees and NAT gateways of a plan.

    A pool's floor is its minSize, or more when the serving Deployments' minimum replicas (and canaries)
    keep GPU nodes up: ceil(GPUs requested on the pool / schedulable GPUs per node), at any hour of the
    day, whatever minSize says. A Deployment KEDA scales counts at its ScaledObject's minReplicaCount (0
    when it scales to zero). Its ceiling is maxSize.
    """
    from stacks.fallback import pools

    resources = plan["resources"]
    aws_region = _region(resources, "pulumi:providers:aws")
    gcp_region = _region(resources, "pulumi:providers:gcp")
    held, windows = _gpu_demand(resources)
    aws_gpus_per_node = _aws_schedulable_gpus(resources)
    cost = CostEstimate()
    # A pool with capacity options (Karpenter, a ComputeClass) is priced once, over all its options:
    # the floor at the first choice's price, the ceiling at the most expensive option's at the pool's size.
    elastic = {name: entry for name, entry in pools(plan).items() if entry.provisioner != "node-group"}
    priced_elsewhere = {resource for entry in elastic.values() for resource in entry.resources}
    for name, entry in elastic.items():
        cost.lines.append(_options_line(entry, held.get(name, []), windows.get(name, []), resources))
    for r in resources:
        inputs, kind = r["inputs"], r["type"]
        if r["name"] in priced_elsewhere:
            continue
        if kind == "aws:eks/nodeGroup:NodeGroup":
            types = inputs.get("instanceTypes") or []
            scaling = inputs.get("scalingConfig") or {}
            # Several types widen spot capacity; the first is the one priced.
            price = AWS_PRICES.get(aws_region or "", {}).get(types[0]) if types else None
            pool = (inputs.get("labels") or {}).get(POOL_LABEL, "")
            cost.lines.append(_pool(r["name"], f"{types[0] if types else '?'} x {scaling.get('minSize')}-"
                                    f"{scaling.get('maxSize')} {inputs.get('capacityType', 'ON_DEMAND')}",
                                    price, scaling.get("minSize", 0), scaling.get("maxSize", 0),
                                    held.get(pool, []), aws_gpus_per_node.get(pool, 0), windows.get(pool, [])))
        elif kind == "aws:eks/cluster:Cluster":
            cost.lines.append(CostLine(r["name"], "EKS control plane", AWS_EKS_CLUSTER_HOUR, AWS_EKS_CLUSTER_HOUR))
        elif kind == "aws:ec2/natGateway:NatGateway":
            hour = AWS_NAT_GATEWAY_HOUR.get(aws_region or "")
            cost.lines.append(CostLine(r["name"], f"NAT gateway in {aws_region}", hour, hour))
        elif kind == "gcp:container/nodePool:NodePool":
            node = inputs.get("nodeConfig") or {}
            auto = inputs.get("autoscaling") or {}
            machine = node.get("machineType", "?")
            price = GCP_PRICES.get(gcp_region or "", {}).get(machine)
            low, high = auto.get("totalMinNodeCount", 0), auto.get("totalMaxNodeCount", 0)
            spot = " SPOT" if node.get("spot") else ""
            pool = (node.get("labels") or {}).get(POOL_LABEL, "")
            cost.lines.append(_pool(r["name"], f"{machine} x {low}-{high}{spot}", price, low, high,
                                    held.get(pool, []), _gcp_schedulable_gpus(node), windows.get(pool, [])))
        elif kind == "gcp:container/cluster:Cluster":
            cost.lines.append(CostLine(r["name"], "GKE cluster management", GKE_CLUSTER_HOUR, GKE_CLUSTER_HOUR))
        elif kind == "gcp:compute/routerNat:RouterNat":
            # Cloud NAT is billed per VM-hour and per GB processed: it depends on load, not the plan.
            cost.lines.append(CostLine(r["name"], "Cloud NAT, billed per VM and GB", None, None))
    return cost


@dataclass(frozen=True)
class Window:
    """An office-hours window of a scale-to-zero Deployment on a pool."""

    who: str
    start: str
    end: str
    timezone: str
    gpus: int
    """GPUs the window's pods request (desiredReplicas x GPUs per pod)."""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.start, self.end, self.timezone


def _gpu_demand(resources: list[dict[str, Any]]) -> tuple[dict[str, list[tuple[str, int]]], dict[str, list[Window]]]:
    """``pool -> [(who, GPUs)]``: the GPUs each Deployment keeps requested at its minimum replicas; and
    ``pool -> [Window]``: the office hours of the Deployments KEDA scales."""
    minimum = {}
    keda: dict[str, dict] = {}
    for r in resources:
        if r["type"].startswith("kubernetes:autoscaling/") and r["type"].endswith(":HorizontalPodAutoscaler"):
            spec = r["inputs"].get("spec") or {}
            target = (spec.get("scaleTargetRef") or {}).get("name")
            if target:
                minimum[target] = spec.get("minReplicas", 1)
        elif r["type"] == SCALED_OBJECT:
            spec = r["inputs"].get("spec") or {}
            target = (spec.get("scaleTargetRef") or {}).get("name")
            if target:
                keda[target] = spec
    demand: dict[str, list[tuple[str, int]]] = {}
    windows: dict[str, list[Window]] = {}
    for r in resources:
        if not (r["type"].startswith("kubernetes:apps/") and r["type"].endswith(":Deployment")):
            continue
        inputs = r["inputs"]
        spec = inputs.get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") or {}
        selector = pod.get("nodeSelector") or {}
        pool = selector.get(POOL_LABEL) or selector.get(COMPUTE_CLASS_LABEL)
        per_pod = sum(_gpus(c) for c in pod.get("containers") or [])
        if not pool or not per_pod:
            continue
        meta = inputs.get("metadata") or {}
        labels = meta.get("labels") or {}
        who = (f"servers.{labels[SERVER_LABEL]}" + (f" {labels[TRACK_LABEL]}" if labels.get(TRACK_LABEL) else "")
               if labels.get(SERVER_LABEL) else meta.get("name") or r["name"])
        scaled = keda.get(meta.get("name", ""))
        if scaled is not None:
            # KEDA owns the count: its floor is minReplicaCount (default 0, keda.sh ScaledObject spec).
            replicas = scaled.get("minReplicaCount", 0)
            crons = [t.get("metadata") or {} for t in scaled.get("triggers") or [] if t.get("type") == "cron"]
            # No cron trigger: a Window without a schedule still names the Deployment as asleep at the floor.
            for data in crons or [{}]:
                windows.setdefault(pool, []).append(Window(
                    who, data.get("start", ""), data.get("end", ""), data.get("timezone", "UTC"),
                    int(data.get("desiredReplicas") or 0) * per_pod))
            if not replicas:
                continue
        else:
            replicas = max(spec.get("replicas", 1), minimum.get(meta.get("name", ""), 0))
        demand.setdefault(pool, []).append((f"{who} {replicas} x {per_pod} GPU", replicas * per_pod))
    return demand, windows


def _gpus(container: dict[str, Any]) -> int:
    """GPUs, or MIG partitions, a container asks for (the units its pool's nodes advertise)."""
    limits = (container.get("resources") or {}).get("limits") or {}
    value = next((v for key, v in limits.items() if key == GPU_RESOURCE or key.startswith(MIG_PREFIX)), 0)
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _options_line(entry, held: list[tuple[str, int]], windows: list[Window],
                  resources: list[dict[str, Any]]) -> CostLine:
    """One line for a pool with capacity options: its floor priced at the first choice, its ceiling at the
    most expensive option for the pool's most nodes."""
    first = [landing for landing in entry.landings if landing.rank == 1]
    ranks = max((landing.rank for landing in entry.landings), default=0)
    detail = (f"{'/'.join(sorted({l.instance_type for l in first}))} {first[0].capacity if first else '?'}"
              f" first of {ranks} option(s) ({entry.provisioner}) x 0-{entry.max_nodes}")
    units = _units_per_node(entry, resources)
    low = _floor_nodes(entry, resources)
    line = _pool(f"{entry.provisioner} {entry.pool}", detail, entry.first_price, low, entry.max_nodes, held, units,
                 windows, high_price=entry.highest_price)
    return line


def _floor_nodes(entry, resources: list[dict[str, Any]]) -> int:
    """Nodes the pool keeps whatever the load: the minSize of the node pool a ComputeClass names first
    (Karpenter has no minimum)."""
    for r in resources:
        if r["name"] in entry.resources and r["type"] == "gcp:container/nodePool:NodePool":
            first = [l for l in entry.landings if l.rank == 1]
            if first and first[0].option == f"node pool {r['inputs'].get('name') or r['name']}":
                return (r["inputs"].get("autoscaling") or {}).get("totalMinNodeCount", 0)
    return 0


def _units_per_node(entry, resources: list[dict[str, Any]]) -> int:
    """Schedulable GPUs (time slices, MIG partitions) per node of a pool's first choice."""
    from components.gpu.mig import EC2_GPU_MODEL, MIG_PROFILES
    from stacks.aws_catalog import GPU_COUNT

    for r in resources:
        if r["name"] not in entry.resources:
            continue
        if r["type"] == "gcp:container/nodePool:NodePool":
            return _gcp_schedulable_gpus(r["inputs"].get("nodeConfig") or {})
        if r["type"] == "kubernetes:karpenter.sh/v1:NodePool":
            template = (r["inputs"].get("spec") or {}).get("template") or {}
            labels = (template.get("metadata") or {}).get("labels") or {}
            first = entry.landings[0].instance_type if entry.landings else ""
            gpus = GPU_COUNT.get(first, 0)
            config = labels.get("nvidia.com/device-plugin.config", "")
            if config.startswith("time-slicing-"):
                return gpus * int(config.removeprefix("time-slicing-"))
            profile = labels.get(MIG_PROFILE_LABEL)
            if profile and EC2_GPU_MODEL.get(first):
                return gpus * MIG_PROFILES[EC2_GPU_MODEL[first]][profile].per_gpu
            return gpus
    return 0


def _aws_schedulable_gpus(resources: list[dict[str, Any]]) -> dict[str, int]:
    """``pool -> nvidia.com/gpu (or MIG partitions) per node`` from the cluster-autoscaler node-template tags
    of each group."""
    pools: dict[str, str] = {}
    gpus: dict[str, int] = {}
    for r in resources:
        if r["type"] != "aws:autoscaling/tag:Tag":
            continue
        group, tag = r["inputs"].get("autoscalingGroupName"), r["inputs"].get("tag") or {}
        if tag.get("key") == _POOL_TEMPLATE_TAG:
            pools[group] = tag.get("value")
        elif tag.get("key") == _GPU_TEMPLATE_TAG or (tag.get("key") or "").startswith(_MIG_TEMPLATE_TAG):
            gpus[group] = int(tag.get("value") or 0)
    return {pool: gpus[group] for group, pool in pools.items() if group in gpus}


def _gcp_schedulable_gpus(node: dict[str, Any]) -> int:
    """nvidia.com/gpu a GKE node advertises: GPUs x clients per GPU (sharing) or x MIG partitions."""
    from components.gpu.mig import GKE_GPU_MODEL, MIG_PROFILES

    total = 0
    for accelerator in node.get("guestAccelerators") or []:
        sharing = accelerator.get("gpuSharingConfig") or {}
        per_gpu = sharing.get("maxSharedClientsPerGpu") or 1
        partition = accelerator.get("gpuPartitionSize")
        model = GKE_GPU_MODEL.get(accelerator.get("type", ""))
        if partition and model and partition in MIG_PROFILES[model]:
            per_gpu = MIG_PROFILES[model][partition].per_gpu
        total += accelerator.get("count", 0) * per_gpu
    return total


def _pool(name: str, detail: str, price: float | None, low: int, high: int,
          held: list[tuple[str, int]] | None = None, gpus_per_node: int = 0,
          windows: list[Window] | None = None, high_price: float | None = None) -> CostLine:
    """A pool's line: ``low`` nodes (raised to what the serving floor holds) at ``price``, ``high`` nodes at
    ``high_price`` (default ``price``)."""
    held_by = ""
    gpus = sum(n for _, n in held or [])
    if held and gpus_per_node:
        nodes = min(math.ceil(gpus / gpus_per_node), high)
        if nodes > low:
            low = nodes
            held_by = (f"{nodes} node(s) held by {', '.join(who for who, _ in held)} "
                       f"({gpus} GPUs / {gpus_per_node} per node)")
            detail += f", floor {nodes} held by the serving replicas"
    typical, asleep = _office_hours(low, high, gpus, gpus_per_node, windows or [], price)
    top = price if high_price is None else high_price
    if price is None or top is None:
        return CostLine(name, detail + ": price unknown", None, None, held_by, None, asleep)
    return CostLine(name, detail, round(price * low, 4), round(top * high, 4), held_by, typical, asleep)


def _office_hours(floor: int, high: int, floor_gpus: int, gpus_per_node: int, windows: list[Window],
                  price: float | None) -> tuple[float | None, str]:
    """The pool's average hourly price with its scale-to-zero Deployments' windows, and a note naming them.
    Windows with the same schedule add up; different schedules are priced as if they never overlap (an
    upper bound when they do)."""
    if not windows or not gpus_per_node:
        return None, ""
    by_schedule: dict[tuple[str, str, str], list[Window]] = {}
    for window in windows:
        if window.start:
            by_schedule.setdefault(window.key, []).append(window)
    extra_node_hours, parts = 0.0, []
    for (start, end, tz), group in by_schedule.items():
        gpus = sum(w.gpus for w in group)
        nodes = min(math.ceil((floor_gpus + gpus) / gpus_per_node), high) - floor
        share = window_share(start, end, tz)
        extra_node_hours += max(nodes, 0) * share
        parts.append(f"{', '.join(w.who for w in group)} {start!r} to {end!r} {tz} ({share:.1%} of the time) "
                     f"hold {max(nodes, 0)} more node(s)")
    sleepers = sorted({w.who for w in windows})
    note = f"{floor} node(s) at the floor: {', '.join(sleepers)} scale to zero (KEDA minReplicaCount 0)"
    if not parts:
        return None, note + "; no office hours (woken by held requests only)"
    note += f"; office hours: {'; '.join(parts)}"
    if price is None:
        return None, note
    typical = round(price * (floor + extra_node_hours), 4)
    return typical, note + f"; typical ${typical * HOURS_PER_MONTH:,.0f}/month"
