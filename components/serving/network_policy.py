"""Default-deny network policy for the serving namespace, and the few flows TF Serving needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.serving.model_server import GRPC_PORT, REST_PORT

# Instance metadata: pods must get cloud credentials from IRSA / Workload Identity, never the node's.
METADATA_CIDR = "169.254.169.254/32"


@dataclass(frozen=True)
class ServingNetworkPolicyArgs:
    """Inputs of :class:`ServingNetworkPolicy`."""

    namespace: pulumi.Input[str]
    selector: dict[str, str]
    """Pod labels of the model servers."""
    allowed_namespaces: list[str] = field(default_factory=list)
    """Namespaces whose pods may call gRPC and REST; empty: nobody outside the namespace."""
    monitoring_namespace: str | None = "monitoring"
    """Namespace allowed to scrape the REST port's metrics path."""


def _namespaces(names: list[str]) -> dict:
    return {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(names)}]}}


class ServingNetworkPolicy(pulumi.ComponentResource):
    """Creates: a ``NetworkPolicy`` denying all ingress and egress in the namespace, and one
    allowing model calls from the allowed namespaces, scrapes from monitoring, and egress only
    to cluster DNS and HTTPS (the bucket, STS), never the instance metadata endpoint.
    """

    def __init__(self, name: str, args: ServingNetworkPolicyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ServingNetworkPolicy", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.default_deny = k8s.networking.v1.NetworkPolicy(
            f"{name}-default-deny",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="default-deny", namespace=args.namespace),
            spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, opts=child)

        ingress = []
        if args.allowed_namespaces:
            ingress.append({"from": [_namespaces(args.allowed_namespaces)],
                            "ports": [{"protocol": "TCP", "port": GRPC_PORT},
                                      {"protocol": "TCP", "port": REST_PORT}]})
        if args.monitoring_namespace:
            ingress.append({"from": [_namespaces([args.monitoring_namespace])],
                            "ports": [{"protocol": "TCP", "port": REST_PORT}]})
        egress = [
            {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                     "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [METADATA_CIDR]}}],
             "ports": [{"protocol": "TCP", "port": 443}]},
        ]
        self.allow = k8s.networking.v1.NetworkPolicy(
            f"{name}-allow",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{name}-allow", namespace=args.namespace,
                                                labels=args.selector),
            spec={"podSelector": {"matchLabels": args.selector}, "policyTypes": ["Ingress", "Egress"],
                  "ingress": ingress, "egress": egress}, opts=child)
        self.register_outputs({})
