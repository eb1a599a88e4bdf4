"""The serving namespace: Pod Security, the serving identity and the default-deny policy."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s


@dataclass(frozen=True)
class ServingNamespaceArgs:
    """Inputs of :class:`ServingNamespace`."""

    name: str = "serving"
    service_account: str = "tfserving"
    """Name of the service account every model server runs as (the cloud identity trusts it)."""
    service_account_annotations: pulumi.Input[dict[str, str]] = field(default_factory=dict)
    """Identity binding, e.g. ``eks.amazonaws.com/role-arn`` or ``iam.gke.io/gcp-service-account``."""
    istio_injection: bool = False
    """Label the namespace for Istio sidecar injection (needs istio-cni under Pod Security 'restricted')."""


class ServingNamespace(pulumi.ComponentResource):
    """Creates: a ``Namespace`` with Pod Security 'restricted' enforced, a ``ServiceAccount`` (token
    not mounted: TF Serving never calls the Kubernetes API) and a ``NetworkPolicy`` denying all
    ingress and egress that no other policy allows.
    """

    namespace: pulumi.Output[str]
    service_account_name: pulumi.Output[str]

    def __init__(self, name: str, args: ServingNamespaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ServingNamespace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {"pod-security.kubernetes.io/enforce": "restricted",
                  "pod-security.kubernetes.io/warn": "restricted"}
        if args.istio_injection:
            labels["istio-injection"] = "enabled"
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=args.name, labels=labels), opts=child)
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.service_account, namespace=ns.metadata.name,
                annotations=args.service_account_annotations),
            automount_service_account_token=False, opts=child)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-default-deny",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="default-deny", namespace=ns.metadata.name),
            spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, opts=child)
        self.namespace = ns.metadata.name
        self.service_account_name = account.metadata.name
        self.register_outputs({"namespace": self.namespace,
                               "service_account_name": self.service_account_name})
