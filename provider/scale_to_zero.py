"""Scale to zero with KEDA: the ``Keda`` component (KEDA and its HTTP add-on on an existing cluster,
components/serving/scale_to_zero.py ``Keda``) and the ``ScaleToZeroSpec`` a ``TfServing`` takes."""

from typing import NotRequired, TypedDict

import pulumi

from components.serving.canary_router import ROUTER_APP
from components.serving.model_server import APP_LABEL
from components.serving.scale_to_zero import OfficeHours, ServerScaleToZero
from components.serving.scale_to_zero import Keda as Inner
from components.serving.scale_to_zero import KedaArgs as InnerArgs
from provider.shared import kubernetes_options, plain, token


class OfficeHoursSpec(TypedDict):
    """A window during which the server keeps pods whatever its traffic (KEDA's ``cron`` trigger)."""

    start: str
    """Five-field cron expression opening the window, as KEDA parses it (robfig/cron v3, no seconds, no
    ``@daily`` descriptors), e.g. ``0 8 * * 1-5``."""
    end: str
    """Five-field cron expression closing it (not equal to ``start``), e.g. ``0 19 * * 1-5``."""
    timezone: NotRequired[str]
    """IANA time zone both expressions are read in; default ``UTC``."""
    replicas: NotRequired[int]
    """Pods kept during the window; default 1."""


class ScaleToZeroSpec(TypedDict):
    """Scale the server (both tracks) between zero pods and ``maxReplicas`` with KEDA instead of an HPA. KEDA
    must run in the cluster: pass the ``Keda`` component in ``dependsOn`` (its CRDs and webhook)."""

    schedule: NotRequired[OfficeHoursSpec]
    """Office hours with pods; outside them the server sleeps once idle. Without: it sleeps whenever idle."""
    idle_after_seconds: NotRequired[int]
    """Seconds without requests (and outside the window) before the last pod goes; default 900."""
    hold_requests: NotRequired[bool]
    """Hold a REST or gRPC call while no pod runs, until one is ready (KEDA's HTTP add-on interceptor,
    needs ``Keda.httpAddOn`` and the server's ``targetRequestsPerSecond``), instead of failing it; default
    true."""
    cold_start_timeout_seconds: NotRequired[int]
    """How long a held call waits for the first pod; default 600."""
    prometheus_url: NotRequired[str]
    """The Prometheus scraping TF Serving (its request rate keeps the server awake); default none: only
    held requests and the schedule wake it."""
    keda_namespace: NotRequired[str]
    """Namespace of KEDA and its HTTP add-on (``Keda.namespace``); default ``keda``."""


def server_scale_to_zero(spec: ScaleToZeroSpec, keda_ready: tuple[pulumi.Resource, ...]) -> ServerScaleToZero:
    """The component's scale-to-zero settings from the package's spec; every field left out keeps its default."""
    component = "TfServing scaleToZero"
    optional = {key: convert(plain(spec[key], key, component))
                for key, convert in (("idle_after_seconds", int), ("hold_requests", bool),
                                     ("cold_start_timeout_seconds", int), ("prometheus_url", str),
                                     ("keda_namespace", str)) if spec.get(key) is not None}
    schedule = None
    if spec.get("schedule") is not None:
        window = plain(spec["schedule"], "schedule", component)
        schedule = OfficeHours(start=plain(window["start"], "schedule.start", component),
                               end=plain(window["end"], "schedule.end", component),
                               timezone=plain(window.get("timezone") or "UTC", "schedule.timezone", component),
                               replicas=int(plain(window.get("replicas", 1), "schedule.replicas", component)))
    return ServerScaleToZero(schedule=schedule, keda_ready=keda_ready, **optional)


class KedaArgs(TypedDict):
    """Inputs of ``Keda``."""

    http_add_on: NotRequired[bool]
    """Also install KEDA's HTTP add-on (interceptor, scaler, operator): servers that hold requests need it;
    default false."""
    namespace: NotRequired[str]
    """KEDA's namespace (created, Pod Security ``restricted``, default deny); default ``keda``."""
    monitoring_namespace: NotRequired[str]
    """Namespace of the Prometheus the operator queries; default ``monitoring``."""
    serving_namespace: NotRequired[str]
    """Namespace of the ``TfServing`` servers (their routers call the interceptor); default ``serving``."""
    kubeconfig: NotRequired[pulumi.Input[str]]
    """Kubeconfig of the cluster; default the Kubernetes provider passed to the component, or the ambient
    one."""


class Keda(pulumi.ComponentResource):
    """KEDA for servers that scale to zero: its namespace, the kedacore ``keda`` chart (operator, metrics API
    server, admission webhooks, CRDs), optionally the ``keda-add-ons-http`` chart, and network policies
    admitting only each KEDA pod's own flows. Pass it in a ``TfServing``'s ``dependsOn``."""

    namespace: pulumi.Output[str]
    """KEDA's namespace (``ScaleToZeroSpec.kedaNamespace``)."""

    def __init__(self, name: str, args: KedaArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(token("Keda"), name, None, opts)
        component = "Keda"
        optional = {key: plain(args[key], key, component)
                    for key in ("http_add_on", "namespace", "monitoring_namespace", "serving_namespace")
                    if args.get(key) is not None}
        inner = Inner(name, InnerArgs(router_pods={APP_LABEL: ROUTER_APP}, serving_pods={APP_LABEL: "tfserving"},
                                      **optional), opts=kubernetes_options(self, name, args.get("kubeconfig")))
        self.namespace = inner.namespace
        self.register_outputs({"namespace": self.namespace})

