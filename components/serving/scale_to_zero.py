"""Scale to zero with KEDA: a ``ScaledObject`` per TF Serving Deployment, and KEDA itself.

A server that may run no pod at all cannot keep a ``HorizontalPodAutoscaler``: an HPA never goes below
one replica (``minReplicas`` >= 1 unless the alpha ``HPAScaleToZero`` gate is on). KEDA does it: its
operator moves a Deployment between 0 and 1 replicas itself ("activation") and creates an HPA for 1..N
from the same triggers (keda.sh/docs/2.20/concepts/scaling-deployments, kedacore/keda
controllers/keda/hpa.go ``newHPAForScaledObject``). So a ``ScaledObject`` *replaces* the platform's HPA
for that Deployment: two HPAs on one Deployment fight (each sets the replica count), and KEDA's admission
webhook refuses a ScaledObject whose target an HPA it does not own already scales
(kedacore/keda apis/keda/v1alpha1/scaledobject_webhook.go ``verifyHpas``: "the workload ... is already
managed by the hpa ...").

Triggers of the ScaledObject (:func:`scaled_object_spec`):

* ``cron``: the office-hours window keeps ``desiredReplicas`` pods between ``start`` and ``end`` in an IANA
  ``timezone`` (kedacore/keda pkg/scalers/cron_scaler.go: 5-field robfig/cron/v3 expressions, no seconds,
  no descriptors; ``start`` != ``end``; active while the next ``end`` comes before the next ``start``).
* ``prometheus``: the server's request rate per track from the platform's Prometheus, ``threshold`` =
  ``targetRequestsPerSecond`` per pod (the HPA divides the value by the replicas: metric type
  AverageValue), ``activationThreshold`` 0 (pkg/scalers/prometheus_scaler.go: active while the value is
  ``> activationThreshold``: one request in the rate window keeps the server up). It can only *keep* a
  server awake: at zero pods TF Serving counts nothing, so the series is empty (``ignoreNullValues``: 0).
* ``external-push`` to the HTTP add-on's scaler, when requests are held: the interceptor counts a request
  for a server at zero pods, the scaler streams "active" to KEDA, KEDA scales 0 -> 1, the interceptor
  forwards the held request once an endpoint is ready (keda.sh/http-add-on/0.15 concepts/scaling
  "Cold Starts"). This is the only trigger that wakes a server for a request outside its window.
* ``cpu`` (Utilization), only next to another trigger: KEDA refuses a ScaledObject with minReplicaCount 0
  whose triggers are all cpu/memory (scaledobject_webhook.go ``verifyCPUMemoryScalers``: "scale to zero
  doesn't work in this case"); :func:`scaled_object_spec` always has a waker (cron or external-push).

Holding requests (KEDA HTTP add-on 0.15): an ``InterceptorRoute`` (``http.keda.sh/v1beta1``, the add-on's
routing resource since 0.14; ``HTTPScaledObject`` is deprecated and logs so, CHANGELOG v0.14.0) per
protocol and track, matched on the ``Host`` header and path prefix, targets a *hold* Service of the track's
pods. The platform's own router (:mod:`components.serving.canary_router`) sends the server's REST and gRPC
calls to the interceptor with that Host. The ScaledObject is ours (the ``external-push`` trigger names the
route), created *after* the routes: before a route exists the add-on's scaler returns no metric spec and
KEDA falls back to a CPU metric (keda.sh/http-add-on/0.15 user-guide/autoscale-an-app, "Create the
ScaledObject after the InterceptorRoute").

gRPC: the 0.15 interceptor serves HTTP/1.1 and cleartext HTTP/2 on one port (pkg/http/server.go
``SetUnencryptedHTTP2``) and speaks h2c to a backend whose Service port has ``appProtocol:
kubernetes.io/h2c`` (interceptor/handler/upstream.go ``requiresHTTP2``), so gRPC is held too. The hold
Service exists for that ``appProtocol``: the tracks' own Services say ``grpc``, which the interceptor would
send HTTP/1.1 to.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import pulumi
import pulumi_kubernetes as k8s

from components.helm_charts import KEDA, KEDA_HTTP_ADD_ON, chart
from components.pod_security import pod_security_labels
from components.serving.autoscaling import hpa_behavior
from components.serving.metrics_adapter import REQUEST_COUNT_SERIES
from components.serving.model_server import APP_LABEL, GRPC_PORT, REST_PORT, SERVER_LABEL, SKIP_AWAIT, TRACK_LABEL

KEDA_API = "keda.sh/v1alpha1"
HTTP_ADD_ON_API = "http.keda.sh/v1beta1"
KEDA_NAMESPACE = "keda"
"""Namespace of KEDA and its HTTP add-on (the add-on's docs address its scaler as ``...external-scaler.keda``)."""
TRANSFER_HPA = "scaledobject.keda.sh/transfer-hpa-ownership"
"""With ``advanced.horizontalPodAutoscalerConfig.name`` set to an existing HPA's name, KEDA's webhook admits
the ScaledObject and its operator adopts that HPA (scaledobject_webhook.go ``verifyHpas``; hpa.go
``updateHPAIfNeeded`` sets the ScaledObject as controller). A server switched to scale-to-zero thus takes
over the platform's HPA in one ``pulumi up`` instead of being refused while Pulumi still holds it."""
H2C = "kubernetes.io/h2c"

# The HTTP add-on chart's objects (kedacore/charts keda-add-ons-http 0.15.0, templates/interceptor and
# templates/scaler): Services "{{ .Chart.Name }}-{{ .Values.interceptor.proxy.service }}" on
# interceptor.proxy.port and "{{ .Chart.Name }}-{{ .Values.scaler.service }}" on scaler.grpcPort.
INTERCEPTOR_SERVICE = "keda-add-ons-http-interceptor-proxy"
INTERCEPTOR_PORT = 8080
INTERCEPTOR_ADMIN_PORT = 9090
EXTERNAL_SCALER_SERVICE = "keda-add-ons-http-external-scaler"
EXTERNAL_SCALER_PORT = 9090
ADD_ON_NAME = {"app.kubernetes.io/name": "http-add-on"}
INTERCEPTOR_PODS = {**ADD_ON_NAME, "app.kubernetes.io/component": "interceptor"}
SCALER_PODS = {**ADD_ON_NAME, "app.kubernetes.io/component": "scaler"}
ADD_ON_OPERATOR_PODS = {**ADD_ON_NAME, "app.kubernetes.io/component": "operator"}
# The keda chart 2.20.2 (templates/manager, metrics-server, webhooks deployment.yaml): pods labelled
# app=<operator.name>, app=<operator.name>-metrics-apiserver, app=<webhooks.name>; the operator serves
# the metrics server on 9666 (manager/service.yaml), the metrics server listens on service.portHttpsTarget.
KEDA_OPERATOR_PODS = {"app": "keda-operator"}
KEDA_METRICS_PODS = {"app": "keda-operator-metrics-apiserver"}
KEDA_WEBHOOK_PODS = {"app": "keda-admission-webhooks"}
KEDA_OPERATOR_GRPC_PORT = 9666
# Prometheus pods of kube-prometheus-stack: the operator labels them app.kubernetes.io/name=prometheus
# (prometheus-operator pkg/prometheus/server/statefulset.go), and serves the web port 9090.
PROMETHEUS_PODS = {"app.kubernetes.io/name": "prometheus"}
PROMETHEUS_PORT = 9090
METADATA_CIDR = "169.254.169.254/32"

RATE_WINDOW = "2m"
"""Window of the request-rate query: four 30 s scrapes (TF Serving's ServiceMonitor scrapes every 15 s)."""
PREDICTION_SERVICES = ("/tensorflow.serving.PredictionService", "/tensorflow.serving.ModelService")
"""gRPC paths of TF Serving (``/<package>.<Service>/<Method>``, tensorflow_serving/apis/*_service.proto)."""
REST_PREFIX = "/v1"
"""Every REST path of TF Serving's API (``/v1/models/...``)."""


# --- cron ------------------------------------------------------------------------------------------

# robfig/cron v3.0.1 spec.go bounds; parser.go getRange/parseIntOrName. KEDA's cron scaler parses with
# cron.NewParser(Minute | Hour | Dom | Month | Dow): five fields, no seconds, no @descriptors.
_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                           "oct", "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
CRON_FIELDS = (("minute", 0, 59, None), ("hour", 0, 23, None), ("day of month", 1, 31, None),
               ("month", 1, 12, _MONTHS), ("day of week", 0, 6, _DAYS))


@dataclass(frozen=True)
class CronSpec:
    """A parsed 5-field cron expression: the matching values of each field, and whether day of month /
    day of week were ``*`` or ``?`` (robfig's starBit: with either one a star, a day must match both
    fields; otherwise either)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    dom_star: bool
    dow_star: bool

    def day_matches(self, day: date) -> bool:
        dom = day.day in self.days_of_month
        dow = (day.isoweekday() % 7) in self.days_of_week
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow


def _number(text: str, names: dict[str, int] | None, field: str) -> int:
    if names and text.lower() in names:
        return names[text.lower()]
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"{field}: {text!r} is not a number{' or a name' if names else ''}")
    return int(text)


def _field(expr: str, field: str, low: int, high: int, names: dict[str, int] | None) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for part in (p for p in expr.split(",") if p):
        range_and_step = part.split("/")
        if len(range_and_step) > 2:
            raise ValueError(f"{field}: too many slashes in {part!r}")
        bounds = range_and_step[0].split("-")
        single = len(bounds) == 1
        part_star = False
        if bounds[0] in ("*", "?"):
            if not single:
                raise ValueError(f"{field}: {part!r} mixes * with a range")
            start, end, part_star = low, high, True
        else:
            if len(bounds) > 2:
                raise ValueError(f"{field}: too many hyphens in {part!r}")
            start = _number(bounds[0], names, field)
            end = start if single else _number(bounds[1], names, field)
        step = 1
        if len(range_and_step) == 2:
            step = _number(range_and_step[1], None, field)
            if single:
                end = high  # "N/step" means N-max/step
            if step > 1:
                part_star = False
        if start < low:
            raise ValueError(f"{field}: {start} is below the minimum {low} in {part!r}")
        if end > high:
            raise ValueError(f"{field}: {end} is above the maximum {high} in {part!r}")
        if start > end:
            raise ValueError(f"{field}: range {part!r} starts after it ends")
        if step == 0:
            raise ValueError(f"{field}: the step of {part!r} must be positive")
        values.update(range(start, end + 1, step))
        star = star or part_star
    if not values:
        raise ValueError(f"{field}: empty")
    return frozenset(values), star


def parse_cron(spec: str) -> CronSpec:
    """Parse ``spec`` as KEDA's cron scaler does, or raise ValueError saying what is wrong."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("an empty schedule")
    if spec.startswith(("TZ=", "CRON_TZ=")):
        raise ValueError("a time zone prefix: set timezone instead")
    if spec.startswith("@"):
        raise ValueError("a descriptor (@daily, @every ...): KEDA's cron parser accepts five fields only")
    fields = spec.split()
    if len(fields) != 5:
        raise ValueError(f"expected exactly 5 fields (minute hour day-of-month month day-of-week), found "
                         f"{len(fields)}")
    parsed = [_field(expr, name, low, high, names) for expr, (name, low, high, names) in zip(fields, CRON_FIELDS)]
    return CronSpec(minutes=parsed[0][0], hours=parsed[1][0], days_of_month=parsed[2][0], months=parsed[3][0],
                    days_of_week=parsed[4][0], dom_star=parsed[2][1], dow_star=parsed[4][1])


def _occurrences(spec: CronSpec, tz: zoneinfo.ZoneInfo, first: date, days: int) -> list[datetime]:
    """Every UTC instant ``spec`` fires at, local wall-clock times of ``days`` days from ``first``. A local
    time that does not exist (the hour a DST change skips) is skipped."""
    out = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        if day.month not in spec.months or not spec.day_matches(day):
            continue
        for hour in sorted(spec.hours):
            for minute in sorted(spec.minutes):
                local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
                instant = local.astimezone(timezone.utc)
                if instant.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
                    out.append(instant)
    return out


def window_share(start: str, end: str, tz_name: str, first: date = date(2027, 1, 4), weeks: int = 52) -> float:
    """The share of time KEDA's cron trigger is active for ``start``/``end`` in ``tz_name``, over ``weeks``
    weeks from ``first`` (a Monday): active while the next ``end`` comes no later than the next ``start``
    (cron_scaler.go ``GetMetricsAndActivity``)."""
    tz = zoneinfo.ZoneInfo(tz_name)
    margin = 8  # days either side, so the first and last intervals know their next event
    events = sorted([(t, "start") for t in _occurrences(parse_cron(start), tz, first - timedelta(days=margin),
                                                        weeks * 7 + 2 * margin)]
                    + [(t, "end") for t in _occurrences(parse_cron(end), tz, first - timedelta(days=margin),
                                                        weeks * 7 + 2 * margin)])
    begin = datetime(first.year, first.month, first.day, tzinfo=tz).astimezone(timezone.utc)
    finish = begin + timedelta(weeks=weeks)
    inside, previous = 0.0, begin
    for index, (when, kind) in enumerate(events):
        if when <= begin:
            continue
        upto = min(when, finish)
        # The interval before an event is inside when that event is an end (or an end at the same instant).
        ends_here = kind == "end" or any(t == when and k == "end" for t, k in events[index:index + 2])
        if ends_here:
            inside += (upto - previous).total_seconds()
        previous = upto
        if when >= finish:
            break
    return inside / (finish - begin).total_seconds()


# --- triggers and the ScaledObject -----------------------------------------------------------------

@dataclass(frozen=True)
class OfficeHours:
    """A window during which a server keeps pods whatever its traffic (KEDA ``cron`` trigger)."""

    start: str
    """5-field cron expression (minute hour day-of-month month day-of-week) opening the window."""
    end: str
    """5-field cron expression closing it (not equal to ``start``)."""
    timezone: str = "UTC"
    """IANA time zone both expressions are read in."""
    replicas: int = 1
    """Pods kept during the window (``desiredReplicas``)."""


def request_rate_query(namespace: str, server: str, track: str) -> str:
    """Requests per second of one server's track, as TF Serving counts them: the ServiceMonitor copies the
    track Service's labels to ``server`` and ``track`` (components/monitoring/serving_monitoring.py)."""
    matchers = f'namespace="{namespace}",server="{server}",track="{track}"'
    return f"sum(rate({REQUEST_COUNT_SERIES}{{{matchers}}}[{RATE_WINDOW}]))"


def _quantity(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def interceptor_route_name(deployment: str, protocol: str) -> str:
    return f"{deployment}-{protocol}"


def hold_service_name(deployment: str) -> str:
    return f"{deployment}-hold"


def hold_host(deployment: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    """The ``Host`` the router sends a track's held requests with; the track's InterceptorRoutes match it."""
    return f"{hold_service_name(deployment)}.{namespace}.svc.{cluster_domain}"


def scaled_object_spec(deployment: str, max_replicas: int, *, idle_after_seconds: int,
                       schedule: OfficeHours | None = None, prometheus_url: str | None = None,
                       query: str | None = None, target_requests_per_second: float | None = None,
                       held_routes: list[str] | None = None, keda_namespace: str = KEDA_NAMESPACE,
                       cpu_utilization: int | None = None, scale_down_stabilization_seconds: int = 300,
                       hpa_name: str | None = None) -> dict:
    """The ``spec`` of a ScaledObject scaling ``deployment`` between 0 and ``max_replicas``.

    Raises ValueError for what could never wake the Deployment: no trigger that can activate it from zero
    pods (a schedule or held requests; the request rate is empty while no pod runs). That also keeps KEDA's
    webhook rule: a ScaledObject with minReplicaCount 0 needs a trigger other than cpu/memory."""
    if max_replicas < 1:
        raise ValueError(f"ScaledObject {deployment}: max_replicas {max_replicas} must be >= 1")
    if schedule is None and not held_routes:
        raise ValueError(f"ScaledObject {deployment}: nothing wakes it from zero pods: give a schedule or held "
                         "routes (the request rate of a server without pods is empty)")
    if (prometheus_url is None) != (query is None) or (query is not None and target_requests_per_second is None):
        raise ValueError(f"ScaledObject {deployment}: the request-rate trigger needs prometheus_url, query and "
                         "target_requests_per_second together")
    triggers: list[dict] = []
    if schedule is not None:
        parse_cron(schedule.start), parse_cron(schedule.end)
        if schedule.start == schedule.end:
            raise ValueError(f"ScaledObject {deployment}: schedule start and end are the same")
        if not 1 <= schedule.replicas <= max_replicas:
            raise ValueError(f"ScaledObject {deployment}: schedule replicas {schedule.replicas} outside "
                             f"1..{max_replicas}")
        zoneinfo.ZoneInfo(schedule.timezone)
        triggers.append({"type": "cron", "name": "office-hours", "metadata": {
            "timezone": schedule.timezone, "start": schedule.start, "end": schedule.end,
            "desiredReplicas": str(schedule.replicas)}})
    if query is not None:
        triggers.append({"type": "prometheus", "name": "requests-per-second", "metadata": {
            "serverAddress": prometheus_url, "query": query,
            "threshold": _quantity(target_requests_per_second),
            # Active while the rate is above 0: one request in the window keeps the pods.
            "activationThreshold": "0"}})
    for route in held_routes or []:
        triggers.append({"type": "external-push", "name": f"held-{route.rsplit('-', 1)[-1]}", "metadata": {
            "scalerAddress": f"{EXTERNAL_SCALER_SERVICE}.{keda_namespace}:{EXTERNAL_SCALER_PORT}",
            "interceptorRoute": route}})
    if cpu_utilization is not None:
        # Never alone: the waker above (cron or external-push) is a trigger other than cpu/memory.
        triggers.append({"type": "cpu", "name": "cpu", "metricType": "Utilization",
                         "metadata": {"value": str(cpu_utilization)}})
    spec: dict = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "minReplicaCount": 0,
        "maxReplicaCount": max_replicas,
        # cooldownPeriod: seconds after the last active trigger before 1 -> 0 (scale-downs above one pod
        # follow the HPA behaviour below).
        "cooldownPeriod": idle_after_seconds,
        "pollingInterval": 30,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": hpa_behavior(scale_down_stabilization_seconds)}},
        "triggers": triggers,
    }
    if hpa_name:
        spec["advanced"]["horizontalPodAutoscalerConfig"]["name"] = hpa_name
    return spec


def interceptor_route_spec(service: str, host: str, protocol: str, target_requests_per_second: float,
                           cold_start_timeout_seconds: int) -> dict:
    """An InterceptorRoute for one protocol of a track: REST (``/v1...`` to port 8501) or gRPC (TF Serving's
    services to port 8500). Routing keys are host + path prefix, whole segments
    (http-add-on pkg/routing/key.go ``NewKey``), so the two routes of one host never overlap."""
    if protocol == "rest":
        port, paths = REST_PORT, [REST_PREFIX]
    elif protocol == "grpc":
        port, paths = GRPC_PORT, list(PREDICTION_SERVICES)
    else:
        raise ValueError(f"InterceptorRoute: protocol {protocol!r}, expected rest or grpc")
    if cold_start_timeout_seconds < 1:
        raise ValueError("InterceptorRoute: cold_start_timeout_seconds must be >= 1")
    return {
        "target": {"service": service, "port": port},
        "rules": [{"hosts": [host], "paths": [{"value": p} for p in paths]}],
        # Reported to KEDA by the add-on's scaler next to our own triggers; int32 >= 1 in the CRD.
        "scalingMetric": {"requestRate": {"targetValue": max(1, math.ceil(target_requests_per_second)),
                                          "window": "1m", "granularity": "1s"}},
        # readiness: how long a request waits for the first ready endpoint (a cold start); the request
        # deadline stays off (0s) and the response-header timeout at the global 300 s.
        "timeouts": {"readiness": f"{cold_start_timeout_seconds}s", "request": "0s"},
    }


@dataclass(frozen=True)
class ServerScaleToZero:
    """How one server scales to zero, as :class:`components.serving.tfserving.TfServing` takes it."""

    schedule: OfficeHours | None = None
    """Office hours (``replicas`` is the stable track's; a canary keeps its canary replicas)."""
    idle_after_seconds: int = 900
    """KEDA ``cooldownPeriod`` of both tracks."""
    hold_requests: bool = True
    """Send the server's REST and gRPC calls through the interceptor (the router always runs then)."""
    cold_start_timeout_seconds: int = 600
    """How long a held request waits for the first pod."""
    prometheus_url: str | None = None
    """The Prometheus that scrapes TF Serving; None: no request-rate trigger (held traffic keeps it awake)."""
    keda_namespace: str = KEDA_NAMESPACE
    """Where KEDA and its HTTP add-on run."""
    keda_ready: tuple[pulumi.Resource, ...] = ()
    """KEDA's charts (:attr:`Keda.ready`): the CRDs, webhook and, for held requests, the interceptor."""
    cluster_domain: str = "cluster.local"
    """The cluster's DNS domain (the interceptor's and hold Services' hosts)."""

    @property
    def interceptor_host(self) -> str:
        return f"{INTERCEPTOR_SERVICE}.{self.keda_namespace}.svc.{self.cluster_domain}"


def skip_service_await() -> pulumi.ResourceTransformation:
    """A transformation marking every ``Service`` under a component ``pulumi.com/skipAwait``: pulumi-kubernetes
    waits for a ClusterIP Service with a selector until a selected pod is ready
    (provider/pkg/await/service.go ``checkAndLogStatus``), which never happens while the Deployment sleeps
    at zero pods, so any ``pulumi up`` that creates or changes it then would fail after its timeout. The
    Deployments stay awaited: a rollout at zero replicas completes at once, and one while awake is checked."""

    def transform(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
        if args.type_ != "kubernetes:core/v1:Service":
            return None
        meta = args.props.get("metadata")
        if not isinstance(meta, k8s.meta.v1.ObjectMetaArgs):
            raise TypeError(f"skip_service_await: Service {args.name} has no ObjectMetaArgs metadata")
        annotations = pulumi.Output.from_input(meta.annotations).apply(lambda a: {**(a or {}), SKIP_AWAIT: "true"})
        props = {**args.props, "metadata": k8s.meta.v1.ObjectMetaArgs(
            name=meta.name, namespace=meta.namespace, labels=meta.labels, annotations=annotations)}
        return pulumi.ResourceTransformationResult(props, args.opts)

    return transform


@dataclass(frozen=True)
class ScaleToZeroArgs:
    """Inputs of :class:`ScaleToZero` (one Deployment: a server's stable or canary track)."""

    namespace: pulumi.Input[str]
    """The serving namespace (the Deployment's, and the ScaledObject's, routes' and hold Service's)."""
    deployment_name: pulumi.Input[str]
    """The Deployment to scale; an Output of it makes the ScaledObject wait for the Deployment (KEDA's
    webhook reads it to check cpu requests)."""
    deployment: str
    """The Deployment's name as a plain string (for routes, hosts and the HPA name)."""
    server: str
    """The server's key (``tfplatform.io/server``; the request-rate query's ``server`` label)."""
    track: str
    """``stable`` or ``canary``."""
    selector: dict[str, str]
    """Pod labels of this track only (the hold Service selects them)."""
    max_replicas: int
    """``maxReplicaCount``: the stable track's maxReplicas, the canary's canaryReplicas."""
    idle_after_seconds: int = 900
    """KEDA ``cooldownPeriod``: no active trigger this long -> 0 pods."""
    schedule: OfficeHours | None = None
    target_requests_per_second: float | None = None
    """Per-pod request rate (the prometheus trigger's threshold); None: no request-rate trigger."""
    prometheus_url: str | None = None
    """Base URL of the Prometheus that scrapes TF Serving, e.g. ``http://kps-prometheus.monitoring.svc:9090``."""
    cpu_utilization: int | None = None
    """A cpu trigger at this utilisation (percent of the request); None: none."""
    scale_down_stabilization_seconds: int = 300
    """Scale-down window of KEDA's HPA (the same behaviour as the platform's HPA)."""
    hold_requests: bool = False
    """Route REST and gRPC through the HTTP add-on's interceptor (a hold Service and two InterceptorRoutes)."""
    cold_start_timeout_seconds: int = 600
    """How long the interceptor holds a request for a server at zero pods (InterceptorRoute readiness)."""
    keda_namespace: str = KEDA_NAMESPACE
    hpa_name: str | None = None
    """Name of KEDA's HPA (default the Deployment's, the name the platform's own HPA of a stable track has:
    KEDA takes that one over, :data:`TRANSFER_HPA`, and the alerts' ``tfserving-.+`` still match it)."""
    cluster_domain: str = "cluster.local"
    """The cluster's DNS domain, for the hold Service's host."""
    labels: dict[str, str] = field(default_factory=dict)
    """Extra labels on every object (server and track are added)."""


class ScaleToZero(pulumi.ComponentResource):
    """Creates, for one Deployment: with ``hold_requests`` a ClusterIP ``Service`` ``<deployment>-hold``
    (gRPC 8500 with ``appProtocol: kubernetes.io/h2c``, REST 8501; not awaited: it has no endpoint while
    the Deployment sleeps) and two ``InterceptorRoute`` objects ``<deployment>-rest`` / ``-grpc``; and a
    ``ScaledObject`` named like the Deployment (triggers: see :func:`scaled_object_spec`), after the routes.

    Pass KEDA's charts (and the Deployment's resources) in ``opts.depends_on``: the CRDs come with them.
    """

    scaled_object: k8s.apiextensions.CustomResource
    hold_service: k8s.core.v1.Service | None
    routes: list[k8s.apiextensions.CustomResource]
    hold_host: pulumi.Output[str] | None
    """With ``hold_requests``: the Host the router must send this track's requests with."""

    def __init__(self, name: str, args: ScaleToZeroArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ScaleToZero", name, None, opts)
        if args.track not in ("stable", "canary"):
            raise ValueError(f"ScaleToZero {name}: track {args.track!r}, expected stable or canary")
        if args.hold_requests and args.target_requests_per_second is None:
            raise ValueError(f"ScaleToZero {name}: held requests need target_requests_per_second (the routes' "
                             "request-rate target)")
        depends = list(opts.depends_on) if opts and isinstance(opts.depends_on, list) else []
        labels = {**args.labels, SERVER_LABEL: args.server, TRACK_LABEL: args.track}
        meta = lambda object_name, annotations=None: k8s.meta.v1.ObjectMetaArgs(  # noqa: E731
            name=object_name, namespace=args.namespace, labels=labels, annotations=annotations)
        self.hold_service, self.routes, self.hold_host = None, [], None
        if args.hold_requests:
            service_name = hold_service_name(args.deployment)
            # Not labelled app.kubernetes.io/name=tfserving: the ServiceMonitor would scrape the pods twice.
            self.hold_service = k8s.core.v1.Service(
                f"{name}-hold", metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=service_name, namespace=args.namespace, labels={**labels, APP_LABEL: "tfserving-hold"},
                    annotations={SKIP_AWAIT: "true"}),
                spec=k8s.core.v1.ServiceSpecArgs(type="ClusterIP", selector=dict(args.selector), ports=[
                    k8s.core.v1.ServicePortArgs(name="grpc", port=GRPC_PORT, target_port="grpc", app_protocol=H2C),
                    k8s.core.v1.ServicePortArgs(name="http", port=REST_PORT, target_port="http",
                                                app_protocol="http")]),
                opts=pulumi.ResourceOptions(parent=self))
            namespace_host = pulumi.Output.from_input(args.namespace).apply(
                lambda ns: hold_host(args.deployment, ns, args.cluster_domain))
            self.hold_host = namespace_host
            for protocol in ("rest", "grpc"):
                route = interceptor_route_name(args.deployment, protocol)
                spec = namespace_host.apply(lambda host, protocol=protocol: interceptor_route_spec(
                    service_name, host, protocol, args.target_requests_per_second, args.cold_start_timeout_seconds))
                self.routes.append(k8s.apiextensions.CustomResource(
                    f"{name}-{protocol}-route", api_version=HTTP_ADD_ON_API, kind="InterceptorRoute",
                    metadata=meta(route), spec=spec,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[*depends, self.hold_service])))
        rate = args.target_requests_per_second is not None and args.prometheus_url is not None

        def spec_of(deployment: str, namespace: str) -> dict:
            return scaled_object_spec(
                deployment, args.max_replicas, idle_after_seconds=args.idle_after_seconds, schedule=args.schedule,
                prometheus_url=args.prometheus_url if rate else None,
                query=request_rate_query(namespace, args.server, args.track) if rate else None,
                target_requests_per_second=args.target_requests_per_second if rate else None,
                held_routes=[interceptor_route_name(args.deployment, p) for p in ("rest", "grpc")]
                if args.hold_requests else None, keda_namespace=args.keda_namespace,
                cpu_utilization=args.cpu_utilization,
                scale_down_stabilization_seconds=args.scale_down_stabilization_seconds,
                hpa_name=args.hpa_name or args.deployment)

        # Checked now with plain values, so a bad combination fails before the ScaledObject is registered.
        spec_of(args.deployment, "namespace")
        spec = pulumi.Output.all(args.deployment_name, args.namespace).apply(lambda v: spec_of(v[0], v[1]))
        annotations = {TRANSFER_HPA: "true"}
        self.scaled_object = k8s.apiextensions.CustomResource(
            f"{name}-scaledobject", api_version=KEDA_API, kind="ScaledObject",
            metadata=meta(args.deployment, annotations), spec=spec,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*depends, *self.routes]))
        self.register_outputs({})


# --- KEDA itself -----------------------------------------------------------------------------------

def _dns_egress() -> dict:
    return {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def _api_server_egress() -> dict:
    # The API server is not a pod: EKS serves it from ENIs in the VPC, GKE from the control plane's range,
    # both on 443 (the kubernetes Service's endpoints). Any address but instance metadata.
    return {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [METADATA_CIDR]}}],
            "ports": [{"protocol": "TCP", "port": 443}]}


def _namespace_peer(namespace: str, pods: dict[str, str]) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "podSelector": {"matchLabels": dict(pods)}}


def keda_network_policies(namespace: str, monitoring_namespace: str, serving_namespace: str,
                          router_pods: dict[str, str], serving_pods: dict[str, str], metrics_port: int,
                          webhook_port: int, http_add_on: bool) -> dict[str, dict]:
    """Name -> NetworkPolicy ``spec`` of every KEDA pod, on top of the namespace's default deny.

    The API server calls the metrics server (``external.metrics.k8s.io``) and the admission webhooks from
    the control plane, whose address the cluster does not expose as pods: those two ports admit any source
    (TLS and the API server's authentication protect them)."""
    tcp = lambda *ports: [{"protocol": "TCP", "port": p} for p in ports]  # noqa: E731
    same_ns = lambda pods: {"podSelector": {"matchLabels": dict(pods)}}  # noqa: E731
    operator_egress = [_dns_egress(), _api_server_egress(),
                       {"to": [_namespace_peer(monitoring_namespace, PROMETHEUS_PODS)], "ports": tcp(PROMETHEUS_PORT)}]
    if http_add_on:
        operator_egress.append({"to": [same_ns(SCALER_PODS)], "ports": tcp(EXTERNAL_SCALER_PORT)})
    policies = {
        "keda-operator": {"podSelector": {"matchLabels": KEDA_OPERATOR_PODS}, "policyTypes": ["Ingress", "Egress"],
                          "ingress": [{"from": [same_ns(KEDA_METRICS_PODS)], "ports": tcp(KEDA_OPERATOR_GRPC_PORT)}],
                          "egress": operator_egress},
        "keda-metrics-apiserver": {
            "podSelector": {"matchLabels": KEDA_METRICS_PODS}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": tcp(metrics_port)}],
            "egress": [_dns_egress(), _api_server_egress(),
                       {"to": [same_ns(KEDA_OPERATOR_PODS)], "ports": tcp(KEDA_OPERATOR_GRPC_PORT)}]},
        "keda-admission-webhooks": {
            "podSelector": {"matchLabels": KEDA_WEBHOOK_PODS}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": tcp(webhook_port)}], "egress": [_dns_egress(), _api_server_egress()]},
    }
    if http_add_on:
        policies["http-add-on-interceptor"] = {
            "podSelector": {"matchLabels": INTERCEPTOR_PODS}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [_namespace_peer(serving_namespace, router_pods)], "ports": tcp(INTERCEPTOR_PORT)},
                        {"from": [same_ns(SCALER_PODS)], "ports": tcp(INTERCEPTOR_ADMIN_PORT)}],
            "egress": [_dns_egress(), _api_server_egress(),
                       {"to": [_namespace_peer(serving_namespace, serving_pods)], "ports": tcp(GRPC_PORT, REST_PORT)}]}
        policies["http-add-on-scaler"] = {
            "podSelector": {"matchLabels": SCALER_PODS}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [same_ns(KEDA_OPERATOR_PODS)], "ports": tcp(EXTERNAL_SCALER_PORT)}],
            "egress": [_dns_egress(), _api_server_egress(),
                       {"to": [same_ns(INTERCEPTOR_PODS)], "ports": tcp(INTERCEPTOR_ADMIN_PORT)}]}
        policies["http-add-on-operator"] = {
            "podSelector": {"matchLabels": ADD_ON_OPERATOR_PODS}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [], "egress": [_dns_egress(), _api_server_egress()]}
    return policies


def keda_ports() -> dict[str, int]:
    """The ports the control plane calls on KEDA's pods: the metrics server (``service.portHttpsTarget``,
    chart default 6443) and the admission webhooks (``webhooks.port``, chart default 9443), from the base
    values where set. On GKE they must be among the ports its control-plane firewall rule opens."""
    values = KEDA.base_values()
    return {"metrics": int((values.get("service") or {}).get("portHttpsTarget") or 6443),
            "webhooks": int((values.get("webhooks") or {}).get("port") or 9443)}


@dataclass(frozen=True)
class KedaArgs:
    """Inputs of :class:`Keda`."""

    namespace: str = KEDA_NAMESPACE
    """KEDA's own namespace (created here)."""
    http_add_on: bool = False
    """Also install the HTTP add-on (interceptor, scaler, operator): some server holds requests."""
    monitoring_namespace: str = "monitoring"
    """Where the Prometheus the operator queries runs."""
    serving_namespace: str = "serving"
    """Where the routers and TF Serving pods run."""
    router_pods: dict[str, str] = field(default_factory=dict)
    """Labels of the serving routers, the only pods that may call the interceptor."""
    serving_pods: dict[str, str] = field(default_factory=dict)
    """Labels of the TF Serving pods the interceptor forwards to."""


class Keda(pulumi.ComponentResource):
    """Creates: the ``Namespace`` (Pod Security 'restricted' enforced), the kedacore ``keda`` chart (operator,
    metrics API server registering ``external.metrics.k8s.io``, admission webhooks, the CRDs), with
    ``http_add_on`` the ``keda-add-ons-http`` chart (interceptor, external scaler, operator, its CRDs) after
    it (the add-on's chart renders a ScaledObject for its interceptor), a default-deny ``NetworkPolicy`` and
    one allowing each KEDA pod's flows (:func:`keda_network_policies`).

    ``ready`` holds the charts: ScaledObjects and InterceptorRoutes depend on them (their CRDs and the
    webhook come with them).
    """

    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: KedaArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:Keda", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=args.namespace, labels=pod_security_labels("restricted")), opts=child)
        after_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        keda = chart(f"{name}-chart", KEDA, ns.metadata.name, opts=after_ns)
        self.ready = [keda]
        if args.http_add_on:
            self.ready.append(chart(f"{name}-http-add-on", KEDA_HTTP_ADD_ON, ns.metadata.name,
                                    opts=pulumi.ResourceOptions(parent=self, depends_on=[ns, keda])))
        k8s.networking.v1.NetworkPolicy(
            f"{name}-default-deny", metadata=k8s.meta.v1.ObjectMetaArgs(name="default-deny", namespace=ns.metadata.name),
            spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, opts=child)
        ports = keda_ports()
        for policy, spec in keda_network_policies(
                args.namespace, args.monitoring_namespace, args.serving_namespace, args.router_pods,
                args.serving_pods, ports["metrics"], ports["webhooks"], args.http_add_on).items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy}", metadata=k8s.meta.v1.ObjectMetaArgs(name=policy, namespace=ns.metadata.name),
                spec=spec, opts=child)
        self.namespace = ns.metadata.name
        self.register_outputs({"namespace": self.namespace})
