"""One TF Serving server on any Kubernetes cluster: stable and canary Deployments, scaling, access."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pulumi

from components.serving.autoscaling import ServingAutoscaling, ServingAutoscalingArgs
from components.serving.canary_router import ROUTER_IMAGE, CanaryRouter, CanaryRouterArgs
from components.serving.model_server import (
    APP_LABEL,
    GRPC_PORT,
    REST_PORT,
    SERVER_LABEL,
    ModelServer,
    ModelServerArgs,
    pod_images,
    pod_tolerations,
    server_selector,
    SKIP_AWAIT,
    serving_service,
    skip_await_annotations,
)
from components.serving.image_prepull import ImagePrePull, ImagePrePullArgs
from components.serving.network_policy import InterceptorPeer, ServingNetworkPolicy, ServingNetworkPolicyArgs
from components.serving.routing import ExternalGateway, ServingRoute, ServingRouteArgs
from components.serving.scale_to_zero import (
    INTERCEPTOR_PODS,
    INTERCEPTOR_PORT,
    ScaleToZero,
    ScaleToZeroArgs,
    ServerScaleToZero,
    skip_service_await,
)


@dataclass(frozen=True)
class TfServingArgs:
    """Inputs of :class:`TfServing`: the model server's, plus autoscaling, canary and access."""

    server: ModelServerArgs
    """The stable Deployment; its ``replicas`` is the autoscaler's minimum. Models with an active
    ``canary_version`` get a canary Deployment built from the same arguments."""
    max_replicas: int = 3
    target_requests_per_second: float | None = None
    cpu_utilization: int = 70
    scale_down_stabilization_seconds: int = 300
    canary_weight: int = 10
    canary_replicas: int = 1
    router: str = "proxy"
    """``proxy`` (a :class:`CanaryRouter` this component installs), ``gateway-api`` (an HTTPRoute on the
    Service: needs a GAMMA mesh), ``istio`` (a VirtualService: needs Istio) or ``none`` (canaries refused)."""
    router_image: str = ROUTER_IMAGE
    """The nginx image of the ``proxy`` router (the composition pins it by digest when the lock has it)."""
    gateway: ExternalGateway | None = None
    allowed_namespaces: list[str] = field(default_factory=list)
    allowed_pod_labels: dict[str, str] = field(default_factory=dict)
    proxy_namespaces: list[str] = field(default_factory=list)
    proxy_cidrs: list[str] = field(default_factory=list)
    monitoring_namespace: str | None = "monitoring"
    gke_metadata_server: bool = False
    """Allow the GKE metadata server (Workload Identity credentials) in the network policy."""
    scale_to_zero: ServerScaleToZero | None = None
    """Scale both tracks to zero pods with KEDA instead of the HPA (``server.replicas`` 0); with
    ``hold_requests`` the router always runs and sends requests through KEDA's interceptor."""
    image_pre_pull: bool = False
    """Pull the server's images onto each of its nodes as soon as the node is Ready
    (:class:`ImagePrePull`), so a new GPU node's first pod does not pull TF Serving's image last."""


class TfServing(pulumi.ComponentResource):
    """Creates: the client ``Service`` named like the component (gRPC 8500, REST 8501), a stable
    :class:`ModelServer` (its own Service ``<name>-stable``), a canary :class:`ModelServer` while a
    model has an active canary version, with router ``proxy`` a :class:`CanaryRouter` the client Service
    then selects (so callers keep one address while the canary comes and goes), a
    :class:`ServingAutoscaling` (HPA on CPU and requests per second, PDB) for the stable Deployment,
    a :class:`ServingNetworkPolicy` and, for the mesh routers or exposure, a :class:`ServingRoute`.
    With ``image_pre_pull`` an :class:`ImagePrePull` DaemonSet on the server's nodes.
    With ``scale_to_zero``: a :class:`ScaleToZero` (KEDA ScaledObject; for held requests a hold Service
    and InterceptorRoutes) per track instead of the HPA, and, holding requests, the router even without
    a canary, sending every request through KEDA's interceptor.
    Pass the cluster's Kubernetes provider in ``opts.providers``; nothing here knows the cloud.
    """

    grpc_endpoint: pulumi.Output[str]
    rest_endpoint: pulumi.Output[str]
    canary_grpc_endpoint: pulumi.Output[str] | None
    canary_rest_endpoint: pulumi.Output[str] | None

    def __init__(self, name: str, args: TfServingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:TfServing", name, None, opts)
        server = args.server
        has_canary = any(m.canary_active for m in server.models)
        if has_canary and args.router == "none":
            raise ValueError(f"TfServing {name}: a canary needs router gateway-api or istio")
        stz = args.scale_to_zero
        if stz is not None and stz.hold_requests and args.router != "proxy":
            raise ValueError(f"TfServing {name}: held requests need router proxy (it sends them to the interceptor)")
        if stz is None and server.replicas < 1:
            raise ValueError(f"TfServing {name}: replicas 0 needs scale_to_zero")
        child = pulumi.ResourceOptions(parent=self)
        # A sleeping server's Services have no ready endpoint: they must not be awaited (skip_service_await).
        model_opts = child if stz is None else pulumi.ResourceOptions(parent=self,
                                                                      transformations=[skip_service_await()])

        # The HorizontalPodAutoscaler (or KEDA) owns the stable replica count once the Deployment exists.
        stable = ModelServer(name, dataclasses.replace(
            server, track="stable", autoscaled=True, service_name=f"{name}-stable",
            models=[m.stable_view() for m in server.models]), opts=model_opts)
        canary = None
        if has_canary:
            # Scaling to zero, KEDA owns the canary's count too (and it starts at zero pods).
            canary = ModelServer(f"{name}-canary", dataclasses.replace(
                server, track="canary", replicas=0 if stz else args.canary_replicas, autoscaled=stz is not None,
                models=[m.canary_view() for m in server.models]), opts=model_opts)
        if args.image_pre_pull:
            # Both tracks run the same images (the canary is the stable arguments with other models).
            ImagePrePull(f"{name}-prepull", ImagePrePullArgs(
                namespace=server.namespace, server=server.server, images=pod_images(server),
                node_selector=dict(server.node_selector or {}), tolerations=tuple(pod_tolerations(server)),
                await_rollout=server.await_rollout),
                opts=child)
        scalers = self._scale_to_zero(name, args, stable, canary)
        held = stz is not None and stz.hold_requests
        router = None
        if (canary is not None or held) and args.router == "proxy":
            # nginx resolves its upstream hosts once, at start: the backend Services (and, holding requests,
            # the interceptor's) must exist first.
            backends: list[pulumi.Resource] = [stable.service, *([canary.service] if canary else [])]
            hold_args: dict = {}
            if held:
                backends += [*(s.hold_service for s in scalers.values()), *stz.keda_ready]
                hold_args = {"interceptor_host": stz.interceptor_host,
                             "stable_hold_host": scalers["stable"].hold_host,
                             "canary_hold_host": scalers["canary"].hold_host if "canary" in scalers else None,
                             "hold_timeout_seconds": stz.cold_start_timeout_seconds}
            router = CanaryRouter(f"{name}-router", CanaryRouterArgs(
                namespace=server.namespace, server=server.server, models=server.models,
                stable_service=stable.service_name, canary_service=canary.service_name if canary else None,
                canary_weight=args.canary_weight, image=args.router_image, **hold_args),
                opts=pulumi.ResourceOptions(parent=self, depends_on=backends))
        # Not labelled app=tfserving: the ServiceMonitor selects the per-track Services, and scraping this
        # one too would count the stable pods twice (or scrape the router).
        client = serving_service(
            f"{name}-client", name, server.namespace,
            {APP_LABEL: "tfserving-endpoint", SERVER_LABEL: server.server},
            router.selector if router is not None else stable.selector,
            # Selecting the model pods of a server that sleeps: never awaited (see skip_service_await).
            {SKIP_AWAIT: "true"} if stz is not None and router is None else skip_await_annotations(server.await_rollout),
            pulumi.ResourceOptions(parent=self, depends_on=[router] if router is not None else None))

        # Scaling to zero, KEDA's ScaledObject replaces the HPA; the disruption budget stays.
        ServingAutoscaling(name, ServingAutoscalingArgs(
            namespace=server.namespace, deployment_name=stable.deployment_name, selector=stable.selector,
            min_replicas=server.replicas, max_replicas=args.max_replicas,
            cpu_utilization=args.cpu_utilization, target_requests_per_second=args.target_requests_per_second,
            scale_down_stabilization_seconds=args.scale_down_stabilization_seconds, hpa=stz is None), opts=child)
        ServingNetworkPolicy(name, ServingNetworkPolicyArgs(
            namespace=server.namespace, selector=server_selector(server.server),
            allowed_namespaces=args.allowed_namespaces, allowed_pod_labels=args.allowed_pod_labels,
            proxy_namespaces=args.proxy_namespaces if args.gateway else [],
            proxy_cidrs=args.proxy_cidrs if args.gateway else [],
            monitoring_namespace=args.monitoring_namespace, istio=args.router == "istio",
            router_selector=router.selector if router is not None else None,
            gke_metadata_server=args.gke_metadata_server,
            interceptor=InterceptorPeer(stz.keda_namespace, dict(INTERCEPTOR_PODS), INTERCEPTOR_PORT)
            if held else None), opts=child)
        mesh_canary = canary is not None and args.router in ("gateway-api", "istio")
        if mesh_canary or args.gateway is not None:
            # With the proxy router the client Service already splits: an external route just targets it.
            ServingRoute(name, ServingRouteArgs(
                namespace=server.namespace, models=server.models, stable_service=client.metadata.name,
                canary_service=canary.service_name if mesh_canary else None, canary_weight=args.canary_weight,
                router=args.router if mesh_canary else "gateway-api", gateway=args.gateway,
                labels=server_selector(server.server)), opts=child)

        host = pulumi.Output.all(client.metadata.name, server.namespace).apply(
            lambda a: f"{a[0]}.{a[1]}.svc.cluster.local")
        self.grpc_endpoint = host.apply(lambda h: f"{h}:{GRPC_PORT}")
        self.rest_endpoint = host.apply(lambda h: f"http://{h}:{REST_PORT}")
        self.canary_grpc_endpoint = canary.grpc_endpoint if canary else None
        self.canary_rest_endpoint = canary.rest_endpoint if canary else None
        self.register_outputs({"grpc_endpoint": self.grpc_endpoint, "rest_endpoint": self.rest_endpoint,
                               "canary_grpc_endpoint": self.canary_grpc_endpoint,
                               "canary_rest_endpoint": self.canary_rest_endpoint})

    def _scale_to_zero(self, name: str, args: TfServingArgs, stable: ModelServer,
                       canary: ModelServer | None) -> dict[str, ScaleToZero]:
        """A :class:`ScaleToZero` per track when the server scales to zero (the canary's window keeps
        ``canary_replicas``, its ceiling too: the canary never had an HPA, so no CPU trigger either)."""
        stz, server = args.scale_to_zero, args.server
        if stz is None:
            return {}
        tracks = [("stable", name, stable, args.max_replicas, stz.schedule)]
        if canary is not None:
            window = (dataclasses.replace(stz.schedule, replicas=args.canary_replicas)
                      if stz.schedule is not None else None)
            tracks.append(("canary", f"{name}-canary", canary, args.canary_replicas, window))
        return {track: ScaleToZero(deployment, ScaleToZeroArgs(
            namespace=server.namespace, deployment_name=model_server.deployment_name, deployment=deployment,
            server=server.server, track=track, selector=model_server.selector, max_replicas=most,
            idle_after_seconds=stz.idle_after_seconds, schedule=window,
            target_requests_per_second=args.target_requests_per_second, prometheus_url=stz.prometheus_url,
            cpu_utilization=args.cpu_utilization if track == "stable" else None,
            scale_down_stabilization_seconds=args.scale_down_stabilization_seconds,
            hold_requests=stz.hold_requests, cold_start_timeout_seconds=stz.cold_start_timeout_seconds,
            keda_namespace=stz.keda_namespace, cluster_domain=stz.cluster_domain),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(stz.keda_ready)))
            for track, deployment, model_server, most, window in tracks}
