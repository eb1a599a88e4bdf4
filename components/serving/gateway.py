"""External HTTPS entry for the models: a Gateway API ``Gateway`` (off unless configured)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.serving.routing import GATEWAY_API, ExternalGateway


@dataclass(frozen=True)
class ServingGatewayArgs:
    """Inputs of :class:`ServingGateway`."""

    namespace: pulumi.Input[str]
    gateway_class_name: str
    """GatewayClass of the installed controller (the controller provisions the load balancer)."""
    hostname: str
    tls_secret_name: str
    """``kubernetes.io/tls`` Secret in ``namespace`` (e.g. issued by cert-manager)."""


class ServingGateway(pulumi.ComponentResource):
    """Creates: a ``Gateway`` with one HTTPS listener (TLS terminated with the given certificate)
    that accepts routes from the serving namespace only. Plain HTTP is not offered.
    """

    listener: ExternalGateway

    def __init__(self, name: str, args: ServingGatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ServingGateway", name, None, opts)
        gateway = k8s.apiextensions.CustomResource(
            f"{name}-gateway", api_version=GATEWAY_API, kind="Gateway",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace),
            spec={"gatewayClassName": args.gateway_class_name,
                  "listeners": [{"name": "https", "protocol": "HTTPS", "port": 443, "hostname": args.hostname,
                                 "tls": {"mode": "Terminate",
                                         "certificateRefs": [{"kind": "Secret", "name": args.tls_secret_name}]},
                                 "allowedRoutes": {"namespaces": {"from": "Same"}}}]},
            opts=pulumi.ResourceOptions(parent=self))
        self.listener = ExternalGateway(name=gateway.metadata["name"], namespace=args.namespace,
                                        hostname=args.hostname)
        self.url = f"https://{args.hostname}"
        self.register_outputs({"url": self.url})
