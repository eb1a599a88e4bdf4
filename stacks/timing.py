"""How long ``pulumi up`` of a fresh stack takes, from the plan's dependency graph.

Pulumi creates a resource as soon as everything it depends on exists (its inputs' resources, its
``depends_on``, its provider), so the time of a fresh ``up`` is the critical path of that graph,
weighted with how long each resource type typically takes to create (:data:`TYPICAL_SECONDS`).
The lower bound is the chain no ordering can avoid: network -> cluster -> node group -> workloads
(:data:`UNAVOIDABLE`); anything else on the critical path is serialization to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Typical creation time in seconds, by type token (prefix match for the "*" entries).
TYPICAL_SECONDS: dict[str, float] = {
    # "Cluster creation takes several minutes" (EKS user guide, create-cluster); observed 9-12 min.
    "aws:eks/cluster:Cluster": 600,
    # Managed node group: instances launch and join, 3-5 min (EKS user guide, create-managed-node-group).
    "aws:eks/nodeGroup:NodeGroup": 240,
    # NAT gateway: pending -> available in 1-2 min (VPC user guide, nat-gateway-working-with).
    "aws:ec2/natGateway:NatGateway": 120,
    # EKS add-ons report ACTIVE after their pods roll out, about a minute.
    "aws:eks/addon:Addon": 60,
    # GKE: a regional cluster takes 5-10 min, node pools 2-4 min (GKE docs, creating a cluster).
    "gcp:container/cluster:Cluster": 420,
    "gcp:container/nodePool:NodePool": 180,
    "gcp:compute/routerNat:RouterNat": 30,
    # A chart's objects plus the readiness Pulumi awaits (operators, CRDs, webhooks): 1-3 min.
    "kubernetes:helm.sh/v4:Chart": 120,
    # A serving rollout: image pull (TF Serving GPU image ~ several GB), model sync, first load.
    "kubernetes:apps/v1:Deployment": 240,
    # Other Kubernetes objects are applied in about a second; cloud API objects in a few seconds.
    "kubernetes:*": 1,
    "aws:*": 5,
    "gcp:*": 10,
    "random:*": 0,
}

# Kinds of resource on the unavoidable chain network -> cluster -> node group -> workloads.
# Add-ons belong to the cluster: nodes need the CNI add-on to become Ready.
UNAVOIDABLE = ("aws:ec2/", "gcp:compute/", "aws:eks/cluster:Cluster", "gcp:container/cluster:Cluster",
               "aws:eks/addon:Addon", "aws:eks/nodeGroup:NodeGroup", "gcp:container/nodePool:NodePool",
               "kubernetes:apps/v1:Deployment")


# A Deployment of a small image (nginx router, exporters): pull in seconds, ready within a minute.
SMALL_ROLLOUT_SECONDS = 60.0


def resource_seconds(resource: dict[str, Any]) -> float:
    """A resource's typical time, as Pulumi experiences it: a Kubernetes object whose await is skipped
    (``pulumi.com/skipAwait``) is done once applied; only TF Serving's rollout pulls a multi-GB image."""
    inputs = resource.get("inputs") or {}
    if resource["type"].startswith("kubernetes:"):
        if ((inputs.get("metadata") or {}).get("annotations") or {}).get("pulumi.com/skipAwait") == "true":
            return TYPICAL_SECONDS["kubernetes:*"]
        if resource["type"] == "kubernetes:apps/v1:Deployment":
            containers = (((inputs.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
            if not any("tensorflow/serving" in str(c.get("image", "")) for c in containers):
                return SMALL_ROLLOUT_SECONDS
    return typical_seconds(resource["type"])


def typical_seconds(type_token: str) -> float:
    if type_token in TYPICAL_SECONDS:
        return TYPICAL_SECONDS[type_token]
    if type_token.startswith("pulumi:providers:"):
        return 0
    prefix = type_token.split(":", 1)[0] + ":*"
    return TYPICAL_SECONDS.get(prefix, 5)


@dataclass(frozen=True)
class Step:
    name: str
    type: str
    start: float
    seconds: float


@dataclass(frozen=True)
class Timing:
    total: float
    path: list[Step]
    lower_bound: float
    lower_path: list[Step]

    def render(self) -> str:
        def chain(steps: list[Step]) -> str:
            return " -> ".join(f"{s.name} ({s.seconds:.0f}s)" for s in steps if s.seconds >= 1)

        return (f"estimated `pulumi up` of a fresh stack: {self.total / 60:.1f} min\n"
                f"  critical path: {chain(self.path)}\n"
                f"  lower bound (network -> cluster -> node group -> workloads): {self.lower_bound / 60:.1f} min\n"
                f"  unavoidable chain: {chain(self.lower_path)}")


def _graph(plan: dict[str, Any]) -> dict[str, tuple[dict, set[str]]]:
    """URN -> (resource, URNs it waits for): its dependencies and its provider."""
    resources = {r["urn"]: r for r in plan["resources"] if r["custom"]}
    graph: dict[str, tuple[dict, set[str]]] = {}
    for urn, r in resources.items():
        waits = {d for d in r["dependencies"] if d in resources and d != urn}
        provider = (r.get("provider") or "").rsplit("::", 1)[0]
        if provider in resources:
            waits.add(provider)
        graph[urn] = (r, waits)
    return graph


def _longest(graph: dict[str, tuple[dict, set[str]]], weight) -> tuple[float, list[Step]]:
    finish: dict[str, float] = {}
    best_parent: dict[str, str | None] = {}

    def visit(urn: str, stack: frozenset[str] = frozenset()) -> float:
        if urn in finish:
            return finish[urn]
        if urn in stack:
            raise ValueError(f"dependency cycle through {urn}")
        resource, waits = graph[urn]
        start, parent = 0.0, None
        for dep in waits:
            end = visit(dep, stack | {urn})
            if end > start:
                start, parent = end, dep
        finish[urn] = start + weight(resource)
        best_parent[urn] = parent
        return finish[urn]

    for urn in graph:
        visit(urn)
    last = max(finish, key=finish.get)
    path: list[Step] = []
    node: str | None = last
    while node is not None:
        r = graph[node][0]
        path.append(Step(r["name"], r["type"], finish[node] - weight(r), weight(r)))
        node = best_parent[node]
    return finish[last], list(reversed(path))


def estimate(plan: dict[str, Any]) -> Timing:
    """Critical path of a fresh ``up`` and the unavoidable lower bound, from a plan JSON."""
    graph = _graph(plan)
    total, path = _longest(graph, resource_seconds)
    lower, lower_path = _longest(graph, lambda r: resource_seconds(r) if r["type"].startswith(UNAVOIDABLE) else 0.0)
    return Timing(total, path, lower, lower_path)
