"""TF Serving on any Kubernetes cluster: the namespace and the serving pieces composed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.serving.autoscaling import ServingAutoscaling, ServingAutoscalingArgs
from components.serving.model_server import ModelServer, ModelServerArgs
from components.serving.network_policy import ServingNetworkPolicy, ServingNetworkPolicyArgs


@dataclass(frozen=True)
class TfServingArgs:
    """Inputs of :class:`TfServing`: the model server's, plus autoscaling and access."""

    server: ModelServerArgs
    """The Deployment; its ``replicas`` is the autoscaler's minimum."""
    max_replicas: int = 3
    allowed_namespaces: list[str] = field(default_factory=list)
    """Namespaces allowed to call the models (NetworkPolicy); all others are denied."""
    monitoring_namespace: str | None = "monitoring"
    create_namespace: bool = True
    """Create ``server.namespace`` with Pod Security 'restricted' enforced."""


class TfServing(pulumi.ComponentResource):
    """Creates: a ``Namespace`` (Pod Security 'restricted'), a :class:`ModelServer`, a
    :class:`ServingAutoscaling` and a :class:`ServingNetworkPolicy`. Pass the cluster's Kubernetes
    provider in ``opts.providers``; nothing here knows which cloud it runs on.
    """

    grpc_endpoint: pulumi.Output[str]
    rest_endpoint: pulumi.Output[str]
    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: TfServingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:TfServing", name, None, opts)
        # The HorizontalPodAutoscaler below owns the replica count once the Deployment exists.
        server_args = dataclasses.replace(args.server, autoscaled=True)
        namespace: pulumi.Input[str] = server_args.namespace
        if args.create_namespace:
            ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(
                name=server_args.namespace,
                labels={"pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/warn": "restricted"}),
                opts=pulumi.ResourceOptions(parent=self))
            namespace = ns.metadata.name
            server_args = dataclasses.replace(server_args, namespace=namespace)
        child = pulumi.ResourceOptions(parent=self)

        server = ModelServer(name, server_args, opts=child)
        ServingAutoscaling(name, ServingAutoscalingArgs(
            namespace=namespace, deployment_name=server.deployment_name, selector=server.selector,
            min_replicas=server_args.replicas, max_replicas=args.max_replicas), opts=child)
        ServingNetworkPolicy(name, ServingNetworkPolicyArgs(
            namespace=namespace, selector=server.selector, allowed_namespaces=args.allowed_namespaces,
            monitoring_namespace=args.monitoring_namespace), opts=child)

        self.namespace = pulumi.Output.from_input(namespace)
        self.grpc_endpoint = server.grpc_endpoint
        self.rest_endpoint = server.rest_endpoint
        self.register_outputs({"namespace": self.namespace, "grpc_endpoint": self.grpc_endpoint,
                               "rest_endpoint": self.rest_endpoint})
