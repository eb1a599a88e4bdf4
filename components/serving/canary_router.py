"""A canary router the stack runs itself: nginx in front of a server's stable and canary Services.

Gateway API routes attached to a Service (GAMMA) and Istio ``VirtualService`` objects act only in a
mesh proxy of the caller, and a plain EKS cluster has neither the CRDs nor a mesh. This router is an
ordinary Deployment: clients call its Service (the same ports as TF Serving, gRPC 8500 and REST
8501) and nginx forwards each request to the stable or the canary Service.

Routing (the same rules as :mod:`components.serving.routing`):

* REST requests that name the canary of a model, ``/v1/models/<m>/labels/canary`` and
  ``/v1/models/<m>/versions/<canaryVersion>``, exactly or followed by ``:<verb>`` (``:predict``...)
  or ``/<suffix>`` (``/metadata``), always go to the canary. nginx matches the normalised path
  (percent-decoded, duplicate slashes merged), so an encoded ``%3Apredict`` is pinned too; the
  request is forwarded with its original URI.
* Every other REST request, and every gRPC call (gRPC names the model in the body, so only the
  weighted split applies), goes to the canary with probability ``canary_weight`` percent:
  ``split_clients`` hashes nginx's random per-request ``$request_id``.

Constraints:

* The upstream hosts are static names (``<svc>.<ns>.svc.cluster.local``): nginx resolves them once,
  when it starts (and on ``nginx -t``), and fails to start ("host not found in upstream") while a
  Service does not exist. Create the router after the Services it points at (``opts.depends_on``);
  it needs DNS (kube-dns, UDP/TCP 53) at start. A ClusterIP never changes during a Service's life,
  but a Service that is deleted and created again gets a new one: roll the router pods then (a
  changed Service *name* changes the config and so rolls them by itself).
* The router pods connect to the TF Serving pods on 8500 and 8501 (through the Services'
  ClusterIPs): a default-deny network policy must admit them there, and let them reach DNS.
* nginx keeps connections to each Service open (kube-proxy balances per connection) and recycles
  them after ``keepalive_time`` or 1000 requests, so pods added by the autoscaler get traffic soon.

Holding requests (a server that scales to zero, :mod:`components.serving.scale_to_zero`): with a
:class:`HoldRouting` every upstream is KEDA's HTTP add-on interceptor instead of the track Services, and
each request carries the ``Host`` of its track's hold Service (the interceptor routes on it and holds
the request until that track has a ready pod). REST and gRPC alike: the interceptor serves cleartext
HTTP/2, and nginx sends ``grpc_set_header Host`` as the request's host (ngx_http_grpc_module: with the
header set, no ``:authority`` is generated; Go's HTTP/2 server then takes the host from ``Host``,
golang.org/x/net/http2 server.go ``newWriterAndRequest``). The read and send timeouts grow by the cold
start the interceptor may hold a request for.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.model_contract import MODEL_NAME_PATTERN
from components.serving.model_server import (
    APP_LABEL,
    GRPC_PORT,
    REST_PORT,
    RESTART_CHECKSUM,
    SERVER_LABEL,
    pull_policy,
    restricted,
)
from components.serving.tfserving_config import CANARY_LABEL, ServedModel

# 1.28 is a *stable* branch of nginx (even minor: only security and crash fixes after its .0) and
# 1.28.3 (April 2026) its newest patch release; a mainline 1.27 build would carry feature churn and
# no further fixes. nginx's stable has since moved on to 1.30: a later bump needs only this line and
# the tests. The unprivileged image runs as UID 101, stops with SIGQUIT (graceful), and still
# accepts ``listen ... http2`` (deprecated since 1.25.1, a warning only), which Debian bookworm's
# nginx 1.22, the one the tests run, needs. Alpine keeps the image small.
ROUTER_IMAGE = "docker.io/nginxinc/nginx-unprivileged:1.28.3-alpine"
ROUTER_UID = 65532  # not the image's 101: above 10000 (CKV_K8S_40); nginx needs no file it owns
HEALTH_PORT = 8080
CONFIG_PATH = "/etc/nginx/nginx.conf"
CONFIG_KEY = "nginx.conf"
HEALTH_PATH = "/healthz"
# TF Serving's REST API gives up after --rest_api_timeout_in_ms (30 s): wait a little longer so its
# own error reaches the client instead of nginx's 504.
REST_TIMEOUT_SECONDS = 35
# gRPC clients set their own deadlines; this only bounds a call that never answers.
GRPC_TIMEOUT_SECONDS = 60
MAX_BODY = "32m"
# Endpoint controllers and kube-proxy need a few seconds to stop sending to a terminating pod; then
# SIGQUIT makes nginx finish in-flight requests (at most WORKER_SHUTDOWN_SECONDS).
PRE_STOP_SECONDS = 10
WORKER_SHUTDOWN_SECONDS = REST_TIMEOUT_SECONDS + 5
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + WORKER_SHUTDOWN_SECONDS + 10
ROUTER_APP = "tfserving-router"
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def pinned_canary_paths(models: list[ServedModel]) -> list[str]:
    """The REST paths that name a canary: ``/labels/canary`` and ``/versions/<canary>`` per model with
    an active canary. Each is routed exactly, followed by ``:<verb>`` and followed by ``/...``."""
    return [path for m in models if m.canary_active
            for path in (f"/v1/models/{m.name}/labels/{CANARY_LABEL}",
                         f"/v1/models/{m.name}/versions/{m.canary_version}")]


def service_host(service: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    return f"{service}.{namespace}.svc.{cluster_domain}"


def _check(models: list[ServedModel], hosts: list[str], canary_weight: int, ports: list[int]) -> None:
    for m in models:
        if not re.fullmatch(MODEL_NAME_PATTERN, m.name):
            raise ValueError(f"canary router: model name {m.name!r} does not match {MODEL_NAME_PATTERN}")
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise ValueError(f"canary router: upstream host {host!r} is not a DNS name or IPv4 address")
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary router: canary_weight {canary_weight}, expected 0..100")
    if len(set(ports)) != len(ports) or not all(0 < p < 65536 for p in ports):
        raise ValueError(f"canary router: ports {ports} must be distinct TCP ports")


@dataclass(frozen=True)
class HoldRouting:
    """Send every request through KEDA's HTTP add-on interceptor, which holds it while its track has no pod."""

    interceptor_host: str
    """The interceptor's proxy Service (``keda-add-ons-http-interceptor-proxy.<keda ns>.svc.<domain>``)."""
    stable_host: str
    """``Host`` of the stable track's requests (its hold Service's name; the InterceptorRoutes match it)."""
    canary_host: str
    """``Host`` of the canary track's requests (the stable one's while no canary runs)."""
    timeout_seconds: int
    """The longest hold (the routes' readiness timeout): added to nginx's read and send timeouts."""
    interceptor_port: int = 8080


def render_router_config(models: list[ServedModel], stable_host: str, canary_host: str, canary_weight: int,
                         rest_port: int = REST_PORT, grpc_port: int = GRPC_PORT,
                         health_port: int = HEALTH_PORT, *, listen_address: str = "", tmp_dir: str = "/tmp",
                         worker_processes: int = 1, hold: HoldRouting | None = None,
                         upstream_port: dict[str, int] | None = None) -> str:
    """A complete ``nginx.conf`` for the nginx-unprivileged image on a read-only root filesystem.

    The router listens on ``rest_port`` (REST, HTTP/1.1), ``grpc_port`` (gRPC, cleartext HTTP/2)
    and ``health_port`` (``GET /healthz``); the backends are ``<host>:rest_port`` and
    ``<host>:grpc_port``, the ports TF Serving's Services expose. ``canary_weight`` percent of the
    requests not pinned to the canary go to ``canary_host`` (0 and 100 are accepted). Models without
    an active canary pin nothing. The pid file and every temporary path are under ``tmp_dir`` (an
    ``emptyDir``); the error log goes to stderr, the access log (JSON lines) to stdout.

    ``listen_address`` binds one address (tests; empty: every address) and ``tmp_dir`` moves the
    writable paths (tests run several routers at once).

    Constraint: ``stable_host`` and ``canary_host`` are static names that nginx resolves once, when
    it starts (and on ``nginx -t``); an unresolvable one stops it from starting. So the router must be
    created after the Services it points at exist, and restarted if one is deleted and re-created.

    ``hold`` sends everything to the interceptor instead (see the module docstring): ``stable_host`` and
    ``canary_host`` are then not contacted. ``upstream_port`` (tests, whose stand-ins serve one protocol a
    port) overrides the upstream port by protocol (``{"rest": ..., "grpc": ...}``).
    """
    _check(models, [stable_host, canary_host], canary_weight, [rest_port, grpc_port, health_port])
    if hold is not None:
        _check([], [hold.interceptor_host, hold.stable_host, hold.canary_host], canary_weight,
               [hold.interceptor_port])
        if hold.timeout_seconds < 1:
            raise ValueError(f"canary router: hold timeout {hold.timeout_seconds}, expected >= 1 s")
    ports = {"rest": rest_port, "grpc": grpc_port, **(upstream_port or {})}
    listen = (lambda port: f"{listen_address}:{port}") if listen_address else str
    def split_clients(variable: str, protocol: str) -> list[str]:
        canary, stable = f"tfs_canary_{protocol}", f"tfs_stable_{protocol}"
        if canary_weight == 0:
            entries = [f"*   {stable};"]
        elif canary_weight == 100:
            entries = [f"*   {canary};"]
        else:
            entries = [f"{canary_weight}% {canary};", f"*   {stable};"]
        return [f'split_clients "$request_id" ${variable} {{', *(f"    {e}" for e in entries), "}"]

    def upstream(track: str, protocol: str, host: str, port: int) -> list[str]:
        if hold is not None:
            host, port = hold.interceptor_host, (upstream_port or {}).get(protocol, hold.interceptor_port)
        else:
            port = ports[protocol]
        return [f"upstream tfs_{track}_{protocol} {{",
                f"    server {host}:{port};",
                # Reused connections, recycled so new TF Serving pods behind the ClusterIP get traffic;
                # closed before TF Serving would close them idle.
                "    keepalive 16;",
                "    keepalive_requests 1000;",
                "    keepalive_time 1m;",
                "    keepalive_timeout 20s;",
                "}"]

    def rest_headers(host: str) -> list[str]:
        return ['proxy_set_header Connection "";', f"proxy_set_header Host {host};",
                "proxy_set_header X-Request-Id $router_request_id;",
                "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"]

    # A location's own proxy_set_header replaces every inherited one: held pinned paths repeat them all.
    pinned_headers = " ".join(rest_headers(hold.canary_host)) + " " if hold is not None else ""
    pinned = []
    for path in pinned_canary_paths(models):
        pinned += [f"location = {path} {{ {pinned_headers}proxy_pass http://tfs_canary_rest; }}",
                   f"location ^~ {path}: {{ {pinned_headers}proxy_pass http://tfs_canary_rest; }}",
                   f"location ^~ {path}/ {{ {pinned_headers}proxy_pass http://tfs_canary_rest; }}"]
    rest_timeout = REST_TIMEOUT_SECONDS + (hold.timeout_seconds if hold is not None else 0)
    grpc_timeout = GRPC_TIMEOUT_SECONDS + (hold.timeout_seconds if hold is not None else 0)
    held: list[str] = []
    if hold is not None:
        held = ["# Held requests: each carries its track's hold Service as Host (the interceptor routes on it).",
                "map $rest_backend $tfs_rest_host {",
                f"    tfs_canary_rest {hold.canary_host};",
                f"    default         {hold.stable_host};",
                "}",
                "map $grpc_backend $tfs_grpc_host {",
                f"    tfs_canary_grpc {hold.canary_host};",
                f"    default         {hold.stable_host};",
                "}",
                ""]

    http = [
        "default_type application/octet-stream;",
        "server_tokens off;",
        f"client_body_temp_path {tmp_dir}/client_temp;",
        f"proxy_temp_path {tmp_dir}/proxy_temp;",
        f"fastcgi_temp_path {tmp_dir}/fastcgi_temp;",
        f"uwsgi_temp_path {tmp_dir}/uwsgi_temp;",
        f"scgi_temp_path {tmp_dir}/scgi_temp;",
        "",
        "# A caller's X-Request-Id is kept; otherwise nginx's random id is used.",
        "map $http_x_request_id $router_request_id {",
        '    ""      $request_id;',
        "    default $http_x_request_id;",
        "}",
        "log_format router escape=json '{\"time\":\"$time_iso8601\",\"request_id\":\"$router_request_id\",'",
        "    '\"port\":\"$server_port\",\"method\":\"$request_method\",\"uri\":\"$request_uri\",'",
        "    '\"status\":\"$status\",\"grpc_status\":\"$sent_trailer_grpc_status\",'",
        "    '\"upstream\":\"$upstream_addr\",\"upstream_status\":\"$upstream_status\",'",
        "    '\"request_time\":\"$request_time\",\"upstream_time\":\"$upstream_response_time\",'",
        "    '\"bytes_in\":\"$request_length\",\"bytes_out\":\"$bytes_sent\"}';",
        "access_log /dev/stdout router;",
        "",
        f"client_max_body_size {MAX_BODY};",
        "keepalive_timeout 65s;",
        "keepalive_requests 1000;",
        "",
        "# One random draw per request: canary_weight percent to the canary.",
        *split_clients("rest_backend", "rest"),
        *split_clients("grpc_backend", "grpc"),
        "",
        *held,
        *upstream("stable", "rest", stable_host, rest_port),
        *upstream("canary", "rest", canary_host, rest_port),
        *upstream("stable", "grpc", stable_host, grpc_port),
        *upstream("canary", "grpc", canary_host, grpc_port),
        "",
        "# REST: paths naming the canary always go to it, the rest is split.",
        "server {",
        f"    listen {listen(rest_port)} default_server;",
        "    proxy_http_version 1.1;",
        *(f"    {line}" for line in rest_headers("$host" if hold is None else "$tfs_rest_host")),
        "    proxy_connect_timeout 5s;",
        f"    proxy_send_timeout {rest_timeout}s;",
        f"    proxy_read_timeout {rest_timeout}s;",
        "    # Stream predict payloads to TF Serving instead of spooling them to disk first.",
        "    proxy_request_buffering off;",
        "    add_header X-Request-Id $router_request_id always;",
        *(f"    {line}" for line in pinned),
        "    location / { proxy_pass http://$rest_backend; }",
        "}",
        "",
        "# gRPC (cleartext HTTP/2): the model is in the body, only the weighted split applies.",
        "server {",
        # `listen ... http2`: nginx 1.22 has no `http2 on;` (1.25.1+ accepts both, warns on this one).
        f"    listen {listen(grpc_port)} http2 default_server;",
        *(["    grpc_set_header Host $tfs_grpc_host;"] if hold is not None else []),
        "    grpc_set_header X-Request-Id $router_request_id;",
        "    grpc_connect_timeout 5s;",
        f"    grpc_send_timeout {grpc_timeout}s;",
        f"    grpc_read_timeout {grpc_timeout}s;",
        "    location / { grpc_pass grpc://$grpc_backend; }",
        "}",
        "",
        "# Probes only.",
        "server {",
        f"    listen {listen(health_port)} default_server;",
        "    access_log off;",
        f'    location = {HEALTH_PATH} {{ default_type text/plain; return 200 "ok\\n"; }}',
        "    location / { return 404; }",
        "}",
    ]
    lines = [
        "# Rendered by components/serving/canary_router.py.",
        f"worker_processes {worker_processes};",
        f"pid {tmp_dir}/nginx.pid;",
        "error_log stderr warn;",
        f"worker_shutdown_timeout {WORKER_SHUTDOWN_SECONDS}s;",
        "",
        "events {",
        "    worker_connections 4096;",
        "}",
        "",
        "http {",
        *(f"    {line}" if line else "" for line in http),
        "}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CanaryRouterArgs:
    """Inputs of :class:`CanaryRouter`."""

    namespace: pulumi.Input[str]
    """Namespace of the router and of both Services."""
    server: str
    """The server the router fronts (``tfplatform.io/server`` label)."""
    models: list[ServedModel]
    """The server's models; those with an active canary get pinned REST paths."""
    stable_service: pulumi.Input[str]
    """Name of the stable Deployment's Service."""
    canary_service: pulumi.Input[str] | None = None
    """Name of the canary Deployment's Service; None sends everything to the stable one (the router
    can stay as the clients' address between canaries)."""
    canary_weight: int = 10
    """Percent of the requests not pinned to the canary sent to it (0..100)."""
    replicas: int = 2
    """Router pods; two so a node drain or a rollout never leaves the server unreachable."""
    image: str = ROUTER_IMAGE
    """nginx image: non-root, with the http_v2 and grpc modules (nginx-unprivileged has both). The
    composition passes ``ROUTER_IMAGE@sha256:...`` when the image lock has it."""
    cpu: str = "250m"
    """CPU request and limit of the router container."""
    memory: str = "128Mi"
    """Memory request and limit of the router container."""
    worker_processes: int = 1
    """nginx workers; one per whole CPU of the limit."""
    run_as_user: int = ROUTER_UID
    """UID (and GID) of nginx: 65532 (the image's own user is 101, below the 10000 a restricted UID should be). The config needs no file owned by it (the
    tests run nginx as 65534), so a high UID (checkov CKV_K8S_40) works as well."""
    cluster_domain: str = "cluster.local"
    """The cluster's DNS domain, for the Services' fully qualified names."""
    labels: dict[str, str] = field(default_factory=dict)
    """Extra labels on every object; the router's own (``app.kubernetes.io/name: tfserving-router``...)
    win, so a server's TF Serving selectors never match the router."""
    interceptor_host: str | None = None
    """Hold mode (a server that scales to zero): KEDA's interceptor Service, every request's upstream
    (:class:`HoldRouting`); None forwards to the track Services."""
    stable_hold_host: pulumi.Input[str] | None = None
    """Hold mode: ``Host`` of the stable track's requests."""
    canary_hold_host: pulumi.Input[str] | None = None
    """Hold mode: ``Host`` of the canary track's requests (the stable one's while no canary runs)."""
    hold_timeout_seconds: int = 600
    """Hold mode: the longest hold, added to nginx's timeouts."""


class CanaryRouter(pulumi.ComponentResource):
    """nginx splitting a server's traffic between its stable and canary Services (or, holding requests
    for a server that scales to zero, sending both tracks through KEDA's interceptor).

    Creates: a ``ConfigMap`` ``<name>-config`` with ``nginx.conf`` (see :func:`render_router_config`),
    a ``Deployment`` ``<name>`` (container ``router``: the config at ``/etc/nginx/nginx.conf``, an
    ``emptyDir`` at ``/tmp``, read-only root filesystem, UID 65532 by default, ``/healthz`` probes, a
    preStop pause so endpoints drain, spread across zones and nodes, a config checksum annotation so a
    new config rolls the pods), a ``ClusterIP`` ``Service`` ``<name>`` (gRPC 8500, REST 8501) selecting the
    router pods only, and a ``PodDisruptionBudget`` letting one pod go at a time.

    nginx resolves the Services' names when it starts: pass the Services (or the resources that create
    them) in ``opts.depends_on``; the Deployment waits for them.
    """

    selector: dict[str, str]
    service_name: pulumi.Output[str]
    grpc_endpoint: pulumi.Output[str]
    rest_endpoint: pulumi.Output[str]

    def __init__(self, name: str, args: CanaryRouterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:CanaryRouter", name, None, opts)
        if args.replicas < 1:
            raise ValueError(f"CanaryRouter {name}: replicas must be >= 1")
        if not 0 <= args.canary_weight <= 100:
            raise ValueError(f"CanaryRouter {name}: canary_weight {args.canary_weight}, expected 0..100")
        child = pulumi.ResourceOptions(parent=self)
        self.selector = {APP_LABEL: ROUTER_APP, "app.kubernetes.io/instance": name}
        labels = {**args.labels, **self.selector, SERVER_LABEL: args.server,
                  "app.kubernetes.io/component": "canary-router"}

        def meta(suffix: str = "") -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=f"{name}{suffix}", namespace=args.namespace, labels=labels)

        has_canary = args.canary_service is not None
        models = list(args.models) if has_canary else []
        weight = args.canary_weight if has_canary else 0

        def render(values: list) -> str:
            namespace, stable, canary, stable_hold, canary_hold = values
            hold = None if args.interceptor_host is None else HoldRouting(
                args.interceptor_host, stable_hold, canary_hold if has_canary else stable_hold,
                args.hold_timeout_seconds)
            return render_router_config(models, service_host(stable, namespace, args.cluster_domain),
                                        service_host(canary, namespace, args.cluster_domain), weight,
                                        worker_processes=args.worker_processes, hold=hold)

        if args.interceptor_host is not None and (args.stable_hold_host is None
                                                  or (has_canary and args.canary_hold_host is None)):
            raise ValueError(f"CanaryRouter {name}: hold mode needs the hold hosts of every track")
        canary_service = args.canary_service if has_canary else args.stable_service
        nginx_conf = pulumi.Output.all(args.namespace, args.stable_service, canary_service, args.stable_hold_host,
                                       args.canary_hold_host).apply(render)
        checksum = nginx_conf.apply(lambda text: hashlib.sha256(text.encode()).hexdigest()[:16])
        config = k8s.core.v1.ConfigMap(f"{name}-config", metadata=meta("-config"),
                                       data={CONFIG_KEY: nginx_conf}, opts=child)

        # The component's depends_on (the backend Services) is repeated on the Deployment, since a
        # component's children do not inherit it: nginx must not start before the names it resolves
        # exist. (The ConfigMap, and the backends' names when they are Outputs, are dependencies too.)
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=meta(),
            spec=router_deployment_spec(args, labels, self.selector, config.metadata.name, checksum),
            opts=pulumi.ResourceOptions(parent=self, depends_on=opts.depends_on if opts else None))

        service = k8s.core.v1.Service(f"{name}-service", metadata=meta(), spec=k8s.core.v1.ServiceSpecArgs(
            type="ClusterIP", selector=self.selector,
            ports=[k8s.core.v1.ServicePortArgs(name="grpc", port=GRPC_PORT, target_port="grpc",
                                               app_protocol="grpc"),
                   k8s.core.v1.ServicePortArgs(name="http", port=REST_PORT, target_port="http",
                                               app_protocol="http")]), opts=child)

        self.pdb = k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", metadata=meta(), spec={
            "maxUnavailable": 1, "selector": {"matchLabels": self.selector}}, opts=child)

        self.deployment_name = deployment.metadata.name
        self.service_name = service.metadata.name
        host = pulumi.Output.all(service.metadata.name, args.namespace).apply(
            lambda a: service_host(a[0], a[1], args.cluster_domain))
        self.grpc_endpoint = host.apply(lambda h: f"{h}:{GRPC_PORT}")
        self.rest_endpoint = host.apply(lambda h: f"http://{h}:{REST_PORT}")
        self.register_outputs({"selector": self.selector, "service_name": self.service_name,
                               "grpc_endpoint": self.grpc_endpoint, "rest_endpoint": self.rest_endpoint})


def router_deployment_spec(args: CanaryRouterArgs, labels: dict[str, str], selector: dict[str, str],
                           config_map: pulumi.Input[str], checksum: pulumi.Input[str]) -> dict:
    """The router Deployment's ``spec`` (plain data but for the ConfigMap name and the checksum)."""
    resources = {"cpu": args.cpu, "memory": args.memory}
    probe = {"httpGet": {"path": HEALTH_PATH, "port": "health"}, "periodSeconds": 5, "timeoutSeconds": 2}
    router = {
        "name": "router",
        "image": args.image,
        # Always for a tag (it can move), IfNotPresent for a digest: see pull_policy.
        "imagePullPolicy": pull_policy(args.image),
        # nginx directly: the image's entrypoint scripts only edit a default config we do not use.
        "command": ["nginx"],
        "args": ["-c", CONFIG_PATH, "-g", "daemon off;"],
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
                  {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "resources": {"requests": resources, "limits": dict(resources)},
        "readinessProbe": {**probe, "failureThreshold": 2},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        # The image's STOPSIGNAL is SIGQUIT: after the pause nginx finishes in-flight requests.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_PATH, "subPath": CONFIG_KEY, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": restricted({"runAsUser": args.run_as_user, "runAsGroup": args.run_as_user}),
    }
    spread = {"maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}}
    return {
        "replicas": args.replicas,
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            # subPath mounts never see ConfigMap updates: a new config rolls the pods instead.
            "metadata": {"labels": labels, "annotations": {RESTART_CHECKSUM: checksum}},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                "securityContext": {"runAsNonRoot": True, "runAsUser": args.run_as_user,
                                    "runAsGroup": args.run_as_user, "fsGroup": args.run_as_user,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [router],
                "volumes": [{"name": "config", "configMap": {"name": config_map}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                "topologySpreadConstraints": [{**spread, "topologyKey": "topology.kubernetes.io/zone"},
                                              {**spread, "topologyKey": "kubernetes.io/hostname"}],
            },
        },
    }
