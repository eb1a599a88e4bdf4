"""Traffic routing of one server: canary weights and external exposure.

TF Serving answers an unlabelled request from its highest loaded version, so a canary is a second
Deployment (stable versions + the canary version) and a router sends ``canary_weight`` percent of
requests to it. Requests that name the canary (``/labels/canary``, ``/versions/<canary>``) always go
to the canary pods; every other label works on both tracks because both load the stable versions.

Routers: Gateway API ``HTTPRoute`` (east-west with the Service as parent, for meshes implementing
Gateway API for Services, and north-south through an exposure ``Gateway``), or an Istio
``VirtualService`` when the stack runs Istio. REST paths are routed by model; gRPC carries the model
name in the request body, so only the weighted split applies to it (Istio), and gRPC clients that
pick the ``canary`` label call the canary Service directly.

A server that scales to zero and holds requests (:mod:`components.serving.scale_to_zero`) runs the
platform's own router (``proxy``), which sends every request through KEDA's interceptor; its external
route therefore targets the client Service (the router), like any proxy-routed server. The mesh
routers here would send traffic straight to the track Services, past the interceptor: the settings
refuse them for such a server.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.serving.model_server import REST_PORT
from components.serving.tfserving_config import CANARY_LABEL, ServedModel

GATEWAY_API = "gateway.networking.k8s.io/v1"
ISTIO_API = "networking.istio.io/v1"
VERBS = ("predict", "classify", "regress")
MAX_MODELS = 16  # Gateway API allows 64 matches per rule: 4 paths per model.


@dataclass(frozen=True)
class ExternalGateway:
    """A Gateway API ``Gateway`` listener the REST API is published on."""

    name: pulumi.Input[str]
    namespace: pulumi.Input[str]
    hostname: str
    section_name: str = "https"


@dataclass(frozen=True)
class ServingRouteArgs:
    """Inputs of :class:`ServingRoute`."""

    namespace: pulumi.Input[str]
    models: list[ServedModel]
    stable_service: pulumi.Input[str]
    canary_service: pulumi.Input[str] | None = None
    """The canary Deployment's Service; None while no model has an active canary."""
    canary_weight: int = 10
    """Percent of the other requests sent to the canary."""
    router: str = "gateway-api"
    """``gateway-api`` or ``istio`` (east-west canary split)."""
    gateway: ExternalGateway | None = None
    """Publish the models' REST paths through this Gateway."""
    labels: dict[str, str] | None = None


def _paths(prefix: str, exact: bool) -> list[dict]:
    """Matches for TF Serving's REST paths under ``prefix``: ``<prefix>:predict`` and friends, the
    status path and ``<prefix>/metadata`` (Gateway API path prefixes match whole segments only)."""
    kind = "Exact" if exact else "PathPrefix"
    return ([{"path": {"type": "Exact", "value": f"{prefix}:{verb}"}} for verb in VERBS]
            + [{"path": {"type": kind, "value": prefix}}])


def canary_paths(model: ServedModel) -> list[str]:
    base = f"/v1/models/{model.name}"
    return [f"{base}/labels/{CANARY_LABEL}", f"{base}/versions/{model.canary_version}"]


class ServingRoute(pulumi.ComponentResource):
    """Creates, as needed: an ``HTTPRoute`` attached to the stable Service that splits requests
    between stable and canary (router ``gateway-api``), an Istio ``VirtualService`` doing the same
    for gRPC and REST (router ``istio``), and an ``HTTPRoute`` publishing the models' REST paths on
    an external ``Gateway``.
    """

    def __init__(self, name: str, args: ServingRouteArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ServingRoute", name, None, opts)
        if len(args.models) > MAX_MODELS:
            raise ValueError(f"ServingRoute {name}: at most {MAX_MODELS} models per server")
        if args.router not in ("gateway-api", "istio"):
            raise ValueError(f"ServingRoute {name}: router {args.router!r}, expected gateway-api or istio")
        child = pulumi.ResourceOptions(parent=self)
        canaries = [m for m in args.models if m.canary_active] if args.canary_service is not None else []
        metadata = lambda suffix: k8s.meta.v1.ObjectMetaArgs(  # noqa: E731
            name=f"{name}{suffix}", namespace=args.namespace, labels=args.labels)

        def backend(service: pulumi.Input[str], weight: int | None = None) -> dict:
            ref = {"kind": "Service", "name": service, "port": REST_PORT}
            return ref if weight is None else {**ref, "weight": weight}

        weighted = [backend(args.stable_service, 100 - args.canary_weight),
                    backend(args.canary_service, args.canary_weight)] if canaries else [backend(args.stable_service)]
        pinned = [{"matches": [match for m in canaries for p in canary_paths(m) for match in _paths(p, exact=False)],
                   "backendRefs": [backend(args.canary_service)]}] if canaries else []

        self.mesh_route = None
        if canaries and args.router == "gateway-api":
            self.mesh_route = k8s.apiextensions.CustomResource(
                f"{name}-canary-route", api_version=GATEWAY_API, kind="HTTPRoute", metadata=metadata("-canary"),
                spec={"parentRefs": [{"group": "", "kind": "Service", "name": args.stable_service,
                                      "port": REST_PORT}],
                      "rules": [*pinned, {"backendRefs": weighted}]}, opts=child)

        self.virtual_service = None
        if canaries and args.router == "istio":
            host = lambda service: pulumi.Output.all(service, args.namespace).apply(  # noqa: E731
                lambda a: f"{a[0]}.{a[1]}.svc.cluster.local")
            pinned_uris = [uri for m in canaries for p in canary_paths(m)
                           for uri in ({"exact": p}, {"prefix": f"{p}:"}, {"prefix": f"{p}/"})]
            self.virtual_service = k8s.apiextensions.CustomResource(
                f"{name}-canary-vs", api_version=ISTIO_API, kind="VirtualService", metadata=metadata("-canary"),
                spec={"hosts": [host(args.stable_service)],
                      "http": [{"name": "canary-pinned", "match": [{"uri": u} for u in pinned_uris],
                                "route": [{"destination": {"host": host(args.canary_service)}}]},
                               {"name": "weighted", "route": [
                                   {"destination": {"host": host(args.stable_service)},
                                    "weight": 100 - args.canary_weight},
                                   {"destination": {"host": host(args.canary_service)},
                                    "weight": args.canary_weight}]}]}, opts=child)

        self.external_route = None
        if args.gateway is not None:
            gw = args.gateway
            model_matches = [match for m in args.models for match in _paths(f"/v1/models/{m.name}", exact=False)]
            self.external_route = k8s.apiextensions.CustomResource(
                f"{name}-external-route", api_version=GATEWAY_API, kind="HTTPRoute", metadata=metadata("-external"),
                spec={"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gw.name,
                                      "namespace": gw.namespace, "sectionName": gw.section_name}],
                      "hostnames": [gw.hostname],
                      "rules": [*pinned, {"matches": model_matches, "backendRefs": weighted}]}, opts=child)
        self.register_outputs({})
