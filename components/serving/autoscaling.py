"""Horizontal autoscaling and disruption budget for a TF Serving Deployment."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s


@dataclass(frozen=True)
class ServingAutoscalingArgs:
    """Inputs of :class:`ServingAutoscaling`."""

    namespace: pulumi.Input[str]
    deployment_name: pulumi.Input[str]
    selector: dict[str, str]
    """Pod labels of the Deployment (for the disruption budget)."""
    min_replicas: int = 1
    max_replicas: int = 3
    cpu_utilization: int = 70
    """Target average CPU utilisation, percent of the request."""
    memory_utilization: int = 80
    """Target average memory utilisation, percent of the request."""


class ServingAutoscaling(pulumi.ComponentResource):
    """Creates: an ``autoscaling/v2`` ``HorizontalPodAutoscaler`` on CPU and memory, and a
    ``policy/v1`` ``PodDisruptionBudget`` letting node drains evict one pod at a time.
    """

    def __init__(self, name: str, args: ServingAutoscalingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ServingAutoscaling", name, None, opts)
        if not 1 <= args.min_replicas <= args.max_replicas:
            raise ValueError(f"ServingAutoscaling {name}: need 1 <= min_replicas ({args.min_replicas}) "
                             f"<= max_replicas ({args.max_replicas})")
        child = pulumi.ResourceOptions(parent=self)
        metadata = k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace, labels=args.selector)

        def utilization(resource: str, percent: int) -> dict:
            return {"type": "Resource", "resource": {
                "name": resource, "target": {"type": "Utilization", "averageUtilization": percent}}}

        self.hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(f"{name}-hpa", metadata=metadata, spec={
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": args.deployment_name},
            "minReplicas": args.min_replicas,
            "maxReplicas": args.max_replicas,
            "metrics": [utilization("cpu", args.cpu_utilization),
                        utilization("memory", args.memory_utilization)],
            # Scale up fast, down slowly: model loads make new pods expensive.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}},
        }, opts=child)
        self.pdb = k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", metadata=metadata, spec={
            "maxUnavailable": 1,
            "selector": {"matchLabels": args.selector},
        }, opts=child)
        self.register_outputs({})
