"""Horizontal autoscaling and disruption budget for a TF Serving Deployment."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.serving.metrics_adapter import RPS_METRIC


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
    target_requests_per_second: float | None = None
    """Per-pod request rate to aim for, from prometheus-adapter's ``tfserving_requests_per_second``
    (see :mod:`components.serving.metrics_adapter`); None scales on CPU only."""
    scale_down_stabilization_seconds: int = 300
    """Scale-down looks at the highest recommendation over this window: no flapping after a burst."""
    hpa: bool = True
    """False: no HorizontalPodAutoscaler, only the disruption budget. For a Deployment a KEDA
    ``ScaledObject`` scales (:mod:`components.serving.scale_to_zero`): KEDA makes its own HPA, and two HPAs
    on one Deployment fight. ``min_replicas`` may then be 0."""


def hpa_behavior(scale_down_stabilization_seconds: int) -> dict:
    """``autoscaling/v2`` ``behavior``: scale up fast (double per minute), down slowly (one pod per two
    minutes after the stabilization window): model loads make new pods expensive. KEDA passes the same
    block to the HPA it creates (``advanced.horizontalPodAutoscalerConfig.behavior``)."""
    return {"scaleDown": {"stabilizationWindowSeconds": scale_down_stabilization_seconds,
                          "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]},
            "scaleUp": {"stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 60}]}}


class ServingAutoscaling(pulumi.ComponentResource):
    """Creates: an ``autoscaling/v2`` ``HorizontalPodAutoscaler`` on CPU and, when a target is set,
    requests per second (a ``Pods`` metric), and a ``policy/v1`` ``PodDisruptionBudget`` letting node
    drains evict one pod at a time. With ``hpa`` False only the budget: ``maxUnavailable: 1`` never blocks
    a scale to zero (scaling is not an eviction) and still lets a drain take one pod at a time.

    Memory is not a metric: TF Serving holds its models in memory whatever the load, so memory
    utilisation would only ever scale up.
    """

    def __init__(self, name: str, args: ServingAutoscalingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ServingAutoscaling", name, None, opts)
        floor = 1 if args.hpa else 0
        if not floor <= args.min_replicas <= args.max_replicas:
            raise ValueError(f"ServingAutoscaling {name}: need {floor} <= min_replicas ({args.min_replicas}) "
                             f"<= max_replicas ({args.max_replicas})")
        child = pulumi.ResourceOptions(parent=self)
        metadata = k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace, labels=args.selector)

        def utilization(resource: str, percent: int) -> dict:
            return {"type": "Resource", "resource": {
                "name": resource, "target": {"type": "Utilization", "averageUtilization": percent}}}

        metrics = [utilization("cpu", args.cpu_utilization)]
        if args.target_requests_per_second is not None:
            rps = float(args.target_requests_per_second)
            # A Kubernetes quantity: whole rates as is, fractions in milli-units (2.5 -> "2500m").
            target = str(int(rps)) if rps.is_integer() else f"{round(rps * 1000)}m"
            metrics.append({"type": "Pods", "pods": {
                "metric": {"name": RPS_METRIC},
                "target": {"type": "AverageValue", "averageValue": target}}})
        self.hpa = None if not args.hpa else k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa", metadata=metadata, spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": args.deployment_name},
                "minReplicas": args.min_replicas,
                "maxReplicas": args.max_replicas,
                "metrics": metrics,
                "behavior": hpa_behavior(args.scale_down_stabilization_seconds),
            }, opts=child)
        self.pdb = k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", metadata=metadata, spec={
            "maxUnavailable": 1,
            "selector": {"matchLabels": args.selector},
        }, opts=child)
        self.register_outputs({})
