"""The network flows one TF Serving server needs, on top of the namespace's default deny."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.serving.model_server import GRPC_PORT, REST_PORT

# Instance metadata: pods must get cloud credentials from IRSA / Workload Identity, never the node's.
METADATA_CIDR = "169.254.169.254/32"
GKE_DPV2_METADATA_CIDR = "169.254.169.252/32"
ISTIOD_XDS_PORT = 15012


@dataclass(frozen=True)
class ServingNetworkPolicyArgs:
    """Inputs of :class:`ServingNetworkPolicy`."""

    namespace: pulumi.Input[str]
    selector: dict[str, str]
    """Pod labels of the server's pods (stable and canary)."""
    allowed_namespaces: list[str] = field(default_factory=list)
    """Namespaces whose pods may call gRPC and REST; empty: nobody outside the namespace."""
    allowed_pod_labels: dict[str, str] = field(default_factory=dict)
    """When set, only pods carrying these labels (in ``allowed_namespaces``) may call."""
    proxy_namespaces: list[str] = field(default_factory=list)
    """Namespaces of an external Gateway's proxies, admitted to the REST port only."""
    proxy_cidrs: list[str] = field(default_factory=list)
    """Source ranges of a load balancer outside the cluster, admitted to the REST port only."""
    monitoring_namespace: str | None = "monitoring"
    """Namespace allowed to scrape the REST port's metrics path."""
    istio: bool = False
    """Sidecars need istiod (xDS on 15012) to start."""
    router_selector: dict[str, str] | None = None
    """Pod labels of the server's canary router (``trafficRouter: proxy`` while a canary is active): the
    callers' rules then apply to the router too, which alone may reach the model pods besides them."""
    gke_metadata_server: bool = False
    """GKE Workload Identity: credentials come from the GKE metadata server at 169.254.169.254:80
    (with Dataplane V2 also 169.254.169.252:988), so that address is allowed instead of blocked."""
    interceptor: InterceptorPeer | None = None
    """KEDA's HTTP add-on interceptor, for a server that holds requests while it scales from zero: it may
    call the model pods (gRPC and REST), and the router may call it."""


@dataclass(frozen=True)
class InterceptorPeer:
    """Where KEDA's interceptor pods run, and the port its proxy listens on."""

    namespace: str
    """KEDA's namespace."""
    pods: dict[str, str]
    """Labels of the interceptor pods."""
    port: int = 8080
    """The interceptor's proxy port (the router's upstream)."""


def namespaces_peer(names: list[str], pod_labels: dict[str, str] | None = None) -> dict:
    peer: dict = {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(names)}]}}
    if pod_labels:
        peer["podSelector"] = {"matchLabels": dict(pod_labels)}
    return peer


class ServingNetworkPolicy(pulumi.ComponentResource):
    """Creates: a ``NetworkPolicy`` allowing model calls from the allowed namespaces (and pod labels),
    the gateway proxies and monitoring (and KEDA's interceptor for a server that holds requests), and
    egress only to cluster DNS and HTTPS (the bucket, STS), never the instance metadata endpoint; with a
    router, one letting the router in like the callers and out to the model pods (and the interceptor).
    The namespace's default deny covers everything else.
    """

    def __init__(self, name: str, args: ServingNetworkPolicyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ServingNetworkPolicy", name, None, opts)
        if args.allowed_pod_labels and not args.allowed_namespaces:
            raise ValueError(f"ServingNetworkPolicy {name}: allowed_pod_labels needs allowed_namespaces")
        both_ports = [{"protocol": "TCP", "port": GRPC_PORT}, {"protocol": "TCP", "port": REST_PORT}]
        rest_port = [{"protocol": "TCP", "port": REST_PORT}]
        ingress = []
        if args.allowed_namespaces:
            ingress.append({"from": [namespaces_peer(args.allowed_namespaces, args.allowed_pod_labels)],
                            "ports": both_ports})
        if args.proxy_namespaces:
            ingress.append({"from": [namespaces_peer(args.proxy_namespaces)], "ports": rest_port})
        if args.proxy_cidrs:
            ingress.append({"from": [{"ipBlock": {"cidr": c}} for c in args.proxy_cidrs], "ports": rest_port})
        callers = list(ingress)
        if args.monitoring_namespace:
            ingress.append({"from": [namespaces_peer([args.monitoring_namespace])], "ports": rest_port})
        if args.router_selector:
            ingress.append({"from": [{"podSelector": {"matchLabels": dict(args.router_selector)}}],
                            "ports": both_ports})
        if args.interceptor is not None:
            ingress.append({"from": [namespaces_peer([args.interceptor.namespace], args.interceptor.pods)],
                            "ports": both_ports})
        dns = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                       "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
               "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
        egress = [
            dns,
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [METADATA_CIDR]}}],
             "ports": [{"protocol": "TCP", "port": 443}]},
        ]
        if args.gke_metadata_server:
            # https://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity#network-policy
            egress.append({"to": [{"ipBlock": {"cidr": METADATA_CIDR}}],
                           "ports": [{"protocol": "TCP", "port": 80}]})
            egress.append({"to": [{"ipBlock": {"cidr": GKE_DPV2_METADATA_CIDR}}],
                           "ports": [{"protocol": "TCP", "port": 988}]})
        if args.istio:
            egress.append({"to": [namespaces_peer(["istio-system"])],
                           "ports": [{"protocol": "TCP", "port": ISTIOD_XDS_PORT}]})
        self.allow = k8s.networking.v1.NetworkPolicy(
            f"{name}-allow",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{name}-allow", namespace=args.namespace,
                                                labels=args.selector),
            spec={"podSelector": {"matchLabels": args.selector}, "policyTypes": ["Ingress", "Egress"],
                  "ingress": ingress, "egress": egress}, opts=pulumi.ResourceOptions(parent=self))
        self.router_allow = None
        if args.router_selector:
            # The router takes the callers' place: the same sources in, only DNS and the model pods out.
            self.router_allow = k8s.networking.v1.NetworkPolicy(
                f"{name}-router-allow",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{name}-router-allow", namespace=args.namespace,
                                                    labels=args.router_selector),
                spec={"podSelector": {"matchLabels": dict(args.router_selector)},
                      "policyTypes": ["Ingress", "Egress"], "ingress": callers,
                      "egress": [dns, {"to": [{"podSelector": {"matchLabels": dict(args.selector)}}],
                                       "ports": both_ports},
                                 *([{"to": [namespaces_peer([args.interceptor.namespace], args.interceptor.pods)],
                                     "ports": [{"protocol": "TCP", "port": args.interceptor.port}]}]
                                   if args.interceptor is not None else [])]},
                opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({})
