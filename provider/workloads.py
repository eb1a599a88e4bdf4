"""Workloads on an existing cluster: ``TfServing`` (components/serving/tfserving.py, in a namespace made by
components/serving/namespace.py) and ``ServingMonitoring`` (components/monitoring/serving_monitoring.py)."""

import json
from enum import Enum
from typing import NotRequired, TypedDict

import pulumi

from components.monitoring.alerts import AlertThresholds as Thresholds
from components.monitoring.serving_monitoring import ServingMonitoring as Monitoring
from components.monitoring.serving_monitoring import ServingMonitoringArgs as MonitoringArgs
from components.serving.batching import BatchingConfig
from components.serving.model_server import ModelServerArgs
from components.serving.namespace import ServingNamespace, ServingNamespaceArgs
from components.serving.tfserving import TfServing as Serving
from components.serving.tfserving import TfServingArgs as ServingArgs
from components.serving.tfserving_config import ServedModel
from provider.scale_to_zero import ScaleToZeroSpec, server_scale_to_zero
from provider.shared import depends_on_of, int_map, ints, kubernetes_options, plain, token, value_of


class VersionPolicy(Enum):
    """Which versions of a model TF Serving loads (``model_version_policy`` in model_server_config.proto)."""

    LATEST = "latest"
    """The newest ``latestVersions`` versions."""
    ALL = "all"
    """Every version in the model's directory."""
    SPECIFIC = "specific"
    """Exactly ``versions`` (plus ``canaryVersion`` on the canary pods)."""


class ServedModelSpec(TypedDict):
    """One model the server loads from ``<modelSourceUri>/<name>/<version>/``."""

    name: str
    """Model name (the REST path ``/v1/models/<name>``)."""
    version_policy: NotRequired[VersionPolicy]
    """Which versions to load; default ``latest``."""
    latest_versions: NotRequired[int]
    """With ``latest``: how many of the newest versions; default 1."""
    versions: NotRequired[list[int]]
    """With ``specific``: the versions to load."""
    labels: NotRequired[dict[str, int]]
    """Version labels (``stable``, ...) to version; clients call ``/v1/models/<name>/labels/<label>``."""
    canary_version: NotRequired[int]
    """With ``specific``: a newer version served by canary pods (labelled ``canary``) beside ``versions``."""


class BatchingSpec(TypedDict):
    """Server-side batching (TF Serving's ``BatchingParameters``): every request of the server goes
    through it."""

    max_batch_size: int
    """Largest batch."""
    batch_timeout_micros: int
    """How long a partial batch waits for more requests; 0 runs it as soon as a thread is free."""
    max_enqueued_batches: int
    """Queue length in batches; a full queue rejects requests (UNAVAILABLE)."""
    num_batch_threads: int
    """Threads running batches (about the CPU cores)."""
    allowed_batch_sizes: NotRequired[list[int]]
    """Sizes batches are padded up to, strictly increasing, the last equal to ``maxBatchSize``."""
    pad_variable_length_inputs: NotRequired[bool]
    """Pad variable-length inputs to the batch's longest."""


class ModelStore(Enum):
    """The object store the model sync reads (picks the sync image)."""

    S3 = "s3"
    """Amazon S3 (``s3://bucket/prefix``), read with the AWS CLI through IRSA."""
    GS = "gs"
    """Google Cloud Storage (``gs://bucket/prefix``), read with gcloud through Workload Identity."""


class Router(Enum):
    """How a canary version gets its share of the requests."""

    PROXY = "proxy"
    """An nginx router this component installs; the client Service selects it while a canary runs."""
    GATEWAY_API = "gateway-api"
    """An HTTPRoute on the Service (needs a mesh implementing GAMMA)."""
    ISTIO = "istio"
    """An Istio VirtualService (needs Istio)."""
    NONE = "none"
    """No router: canaries are refused."""


class TfServingArgs(TypedDict):
    """Inputs of ``TfServing``."""

    namespace: str
    """Namespace of the server (created with Pod Security ``restricted`` and a default-deny NetworkPolicy
    unless ``createNamespace`` is false)."""
    server: str
    """The server's key: labels its pods and Services (``ServingMonitoring.servers`` lists it)."""
    models: list[ServedModelSpec]
    """The models the server loads."""
    model_source_uri: pulumi.Input[str]
    """``s3://bucket/prefix`` or ``gs://bucket/prefix`` holding ``<model>/<version>/``
    (``ModelBucket.modelsUri``)."""
    model_store: NotRequired[ModelStore]
    """The URI's store; default the scheme of ``modelSourceUri`` (required when that is an output)."""
    kubeconfig: NotRequired[pulumi.Input[str]]
    """Kubeconfig of the cluster (``EksPlatform.kubeconfig``); default the Kubernetes provider passed to the
    component, or the ambient one."""
    create_namespace: NotRequired[bool]
    """Create the namespace and its service account; default true (false: both must exist)."""
    service_account: NotRequired[str]
    """The service account the pods run as (the identity that may read the bucket); default ``tfserving``."""
    service_account_annotations: NotRequired[pulumi.Input[dict[str, str]]]
    """Identity binding on the service account: ``eks.amazonaws.com/role-arn`` (``ModelReader``) or
    ``iam.gke.io/gcp-service-account``."""
    image_version: NotRequired[str]
    """``tensorflow/serving`` tag (``-gpu`` is appended when ``gpus`` > 0); default ``2.18.0``."""
    image: NotRequired[str]
    """Full image reference overriding ``imageVersion`` (a mirror, or pinned by digest)."""
    replicas: NotRequired[int]
    """Replicas at creation, the autoscaler's minimum; default 1."""
    max_replicas: NotRequired[int]
    """The autoscaler's maximum; default 3."""
    cpu: NotRequired[str]
    """CPU request and limit of TF Serving; default ``2``."""
    memory: NotRequired[str]
    """Memory request and limit of TF Serving; default ``4Gi``."""
    gpus: NotRequired[int]
    """GPUs per pod (GPU image, toleration); default 0."""
    gpu_memory_fraction: NotRequired[float]
    """``--per_process_gpu_memory_fraction`` when pods share a GPU."""
    batching: NotRequired[BatchingSpec]
    """Server-side batching; default off."""
    node_selector: NotRequired[dict[str, str]]
    """Pins the pods to a node pool, e.g. ``tfplatform.io/node-pool: gpu``."""
    sync_env: NotRequired[dict[str, str]]
    """Extra environment of the model-sync containers (on EKS ``AWS_REGION``: the bucket's region)."""
    target_requests_per_second: NotRequired[float]
    """Requests per second per pod the autoscaler aims at (needs prometheus-adapter); default CPU only."""
    cpu_utilization: NotRequired[int]
    """CPU utilisation (percent of the request) the autoscaler aims at; default 70."""
    canary_weight: NotRequired[int]
    """Percent of requests sent to a canary version; default 10."""
    canary_replicas: NotRequired[int]
    """Pods of the canary Deployment; default 1."""
    router: NotRequired[Router]
    """How canary requests are routed; default ``proxy``."""
    allowed_namespaces: NotRequired[list[str]]
    """Namespaces whose pods may call the server (the NetworkPolicy denies all others)."""
    allowed_pod_labels: NotRequired[dict[str, str]]
    """Pod labels (in the allowed namespaces) that may call the server."""
    monitoring_namespace: NotRequired[str]
    """Namespace of Prometheus, allowed to scrape the server; default ``monitoring``."""
    gke_metadata_server: NotRequired[bool]
    """Allow the GKE metadata server (Workload Identity) in the NetworkPolicy; default false."""
    await_rollout: NotRequired[bool]
    """Let ``pulumi up`` wait for the rollout (false only where the models cannot exist yet); default true."""
    scale_to_zero: NotRequired[ScaleToZeroSpec]
    """Scale to zero pods with KEDA instead of an HPA (``replicas`` then 0); pass the ``Keda`` component in
    ``dependsOn``. Default: an HPA between ``replicas`` and ``maxReplicas``."""
    image_pre_pull: NotRequired[bool]
    """Pull the server's images onto each of its nodes as soon as the node is Ready (a DaemonSet
    ``<name>-prepull`` whose containers only sleep), so a new GPU node does not pull TF Serving's image
    after the models; default false (the platform's stacks turn it on for GPU servers)."""


def served_model(spec: ServedModelSpec) -> ServedModel:
    component = f"TfServing model {spec.get('name')!r}"
    optional = {}
    if spec.get("version_policy") is not None:
        optional["version_policy"] = value_of(spec["version_policy"])
    if spec.get("latest_versions") is not None:
        optional["latest_versions"] = int(spec["latest_versions"])
    if spec.get("canary_version") is not None:
        (optional["canary_version"],) = ints([spec["canary_version"]], "canaryVersion", component)
    return ServedModel(name=plain(spec["name"], "name", component),
                       versions=ints(spec.get("versions"), "versions", component),
                       labels=int_map(spec.get("labels"), "labels", component), **optional)


def batching_config(spec: BatchingSpec | None) -> BatchingConfig | None:
    if spec is None:
        return None
    component = "TfServing batching"
    return BatchingConfig(
        **{key: int(plain(spec[key], key, component))
           for key in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                       "num_batch_threads")},
        allowed_batch_sizes=ints(spec.get("allowed_batch_sizes"), "allowedBatchSizes", component),
        pad_variable_length_inputs=bool(spec.get("pad_variable_length_inputs", False)))


def model_store_of(args: TfServingArgs) -> str:
    """The store: given, or the scheme of a URI known now (it picks the sync image, so it cannot wait)."""
    if args.get("model_store") is not None:
        return value_of(args["model_store"])
    uri = args["model_source_uri"]
    if isinstance(uri, str) and uri.split("://")[0] in {s.value for s in ModelStore}:
        return uri.split("://")[0]
    raise ValueError("TfServing: set modelStore (s3 or gs) when modelSourceUri is not a literal s3:// or "
                     f"gs:// URI (got {uri if isinstance(uri, str) else 'an output'})")


class TfServing(pulumi.ComponentResource):
    """A TensorFlow Serving server on an existing Kubernetes cluster: a hardened namespace and service
    account, the stable Deployment (model sync sidecar, non-root, read-only root filesystem, capabilities
    dropped, RuntimeDefault seccomp), a canary Deployment while a model has a canary version, the client
    Service named like this resource (gRPC 8500, REST 8501), an HPA and a PodDisruptionBudget, and a
    NetworkPolicy admitting only the allowed callers and the monitoring namespace."""

    grpc_endpoint: pulumi.Output[str]
    """In-cluster gRPC address ``<service>.<namespace>.svc.cluster.local:8500``."""
    rest_endpoint: pulumi.Output[str]
    """In-cluster REST URL ``http://<service>.<namespace>.svc.cluster.local:8501``."""
    canary_grpc_endpoint: pulumi.Output[str] | None
    """The canary Deployment's own gRPC address, while a model has a canary version."""
    canary_rest_endpoint: pulumi.Output[str] | None
    """The canary Deployment's own REST URL, while a model has a canary version."""
    namespace: pulumi.Output[str]
    """The server's namespace."""
    service_account: pulumi.Output[str]
    """The service account the pods run as (``ModelReader.serviceAccount``)."""

    def __init__(self, name: str, args: TfServingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(token("TfServing"), name, None, opts)
        component = "TfServing"
        k8s_opts = kubernetes_options(self, name, args.get("kubeconfig"))
        namespace_name = plain(args["namespace"], "namespace", component)
        account = plain(args.get("service_account") or "tfserving", "serviceAccount", component)
        if args.get("create_namespace", True):
            created = ServingNamespace(f"{name}-namespace", ServingNamespaceArgs(
                name=namespace_name, service_account=account,
                service_account_annotations=args.get("service_account_annotations") or {},
                istio_injection=value_of(args.get("router")) == Router.ISTIO.value), opts=k8s_opts)
            namespace, service_account = created.namespace, created.service_account_name
        else:
            if args.get("service_account_annotations") is not None:
                # They belong on a service account this component would create: silently dropping the
                # identity binding would leave the sync without bucket access.
                raise ValueError("TfServing: serviceAccountAnnotations needs createNamespace true (annotate "
                                 "the existing service account instead)")
            namespace = pulumi.Output.from_input(namespace_name)
            service_account = pulumi.Output.from_input(account)

        server_optional = {}
        for key, convert in (("image_version", str), ("image", str), ("replicas", int), ("cpu", str),
                             ("memory", str), ("gpus", int), ("gpu_memory_fraction", float),
                             ("node_selector", dict), ("sync_env", dict), ("await_rollout", bool)):
            if args.get(key) is not None:
                server_optional[key] = convert(plain(args[key], key, component))
        serving_optional = {}
        for key, convert in (("max_replicas", int), ("target_requests_per_second", float),
                             ("cpu_utilization", int), ("canary_weight", int), ("canary_replicas", int),
                             ("router", value_of), ("allowed_namespaces", list), ("allowed_pod_labels", dict),
                             ("monitoring_namespace", str), ("gke_metadata_server", bool),
                             ("image_pre_pull", bool)):
            if args.get(key) is not None:
                serving_optional[key] = convert(plain(args[key], key, component))
        stz = None
        if args.get("scale_to_zero") is not None:
            if server_optional.get("replicas", 0) != 0:
                raise ValueError(f"TfServing: replicas {server_optional['replicas']} with scaleToZero: leave it out "
                                 "or set 0 (KEDA keeps the pods, between 0 and maxReplicas)")
            # The ScaledObjects and InterceptorRoutes wait for KEDA's charts (CRDs, webhook): dependsOn.
            stz = server_scale_to_zero(args["scale_to_zero"], tuple(depends_on_of(opts)))
            server_optional["replicas"] = 0
        serving = Serving(name, ServingArgs(
            server=ModelServerArgs(
                namespace=namespace, server=plain(args["server"], "server", component),
                models=[served_model(m) for m in plain(args["models"], "models", component)],
                model_source_uri=args["model_source_uri"], model_store=model_store_of(args),
                service_account_name=service_account, batching=batching_config(args.get("batching")),
                **server_optional),
            scale_to_zero=stz, **serving_optional), opts=k8s_opts)

        self.grpc_endpoint = serving.grpc_endpoint
        self.rest_endpoint = serving.rest_endpoint
        self.canary_grpc_endpoint = serving.canary_grpc_endpoint
        self.canary_rest_endpoint = serving.canary_rest_endpoint
        self.namespace = namespace
        self.service_account = service_account
        self.register_outputs({"grpc_endpoint": self.grpc_endpoint, "rest_endpoint": self.rest_endpoint,
                               "canary_grpc_endpoint": self.canary_grpc_endpoint,
                               "canary_rest_endpoint": self.canary_rest_endpoint,
                               "namespace": self.namespace, "service_account": self.service_account})


class AlertThresholds(TypedDict):
    """Thresholds of the serving and GPU alerts; every one left out keeps the platform's default."""

    error_ratio: NotRequired[float]
    """Share of a model's requests with a status other than OK (over 5 minutes) that alerts; default 0.05."""
    p99_latency_ms: NotRequired[float]
    """p99 request latency SLO per model in milliseconds; default 500."""
    hpa_maxed_minutes: NotRequired[int]
    """Minutes an HPA may run at its maximum before alerting; default 30."""
    restarts_per_30m: NotRequired[int]
    """Container restarts within 30 minutes that alert; default 3."""
    cpu_limit_ratio: NotRequired[float]
    """CPU use / CPU limit of a container that alerts; default 0.9."""
    memory_limit_ratio: NotRequired[float]
    """Memory working set / memory limit of a container that alerts; default 0.9."""
    gpu_util_high_percent: NotRequired[float]
    """GPU utilisation (percent) above which a GPU counts as saturated; default 90."""
    gpu_high_minutes: NotRequired[int]
    """Minutes of saturation before alerting; default 30."""
    gpu_idle_percent: NotRequired[float]
    """GPU utilisation (percent) below which an allocated GPU counts as idle (0 disables); default 5."""
    gpu_idle_minutes: NotRequired[int]
    """Minutes an allocated GPU may idle before alerting; default 60."""
    runbook_base_url: NotRequired[str]
    """Absolute URL of the published runbook page; each alert links to its section."""


_INT_THRESHOLDS = {"hpa_maxed_minutes", "restarts_per_30m", "gpu_high_minutes", "gpu_idle_minutes"}


class ServingMonitoringArgs(TypedDict):
    """Inputs of ``ServingMonitoring``."""

    serving_namespace: str
    """Namespace of the ``TfServing`` servers."""
    servers: list[str]
    """Server keys (``TfServing.server``); each server's Services are named ``tfserving-<key>`` (name the
    ``TfServing`` resource so) and labelled with the key."""
    environment: str
    """The ``environment`` label on every scraped series and alert, e.g. ``prod``."""
    monitoring_namespace: NotRequired[str]
    """Namespace of Prometheus and Grafana (rules and dashboards go there); default ``monitoring``."""
    thresholds: NotRequired[AlertThresholds]
    """Alert thresholds."""
    kubeconfig: NotRequired[pulumi.Input[str]]
    """Kubeconfig of the cluster; default the Kubernetes provider passed to the component, or the ambient
    one."""


class ServingMonitoring(pulumi.ComponentResource):
    """What the platform adds to a Prometheus Operator stack: a ServiceMonitor per server (scraping TF
    Serving's Prometheus endpoint), a PrometheusRule with the serving and GPU alerts, and the Grafana
    dashboards as ConfigMaps. The ServiceMonitor and PrometheusRule CRDs must exist: pass the resource
    installing them in ``dependsOn``."""

    alert_rules: pulumi.Output[str]
    """The PrometheusRule's rule groups as JSON (``promtool check rules`` reads it as YAML)."""
    service_monitors: pulumi.Output[list[str]]
    """Names of the ServiceMonitors, one per server."""

    def __init__(self, name: str, args: ServingMonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(token("ServingMonitoring"), name, None, opts)
        component = "ServingMonitoring"
        k8s_opts = kubernetes_options(self, name, args.get("kubeconfig"))
        thresholds = {key: (int(v) if key in _INT_THRESHOLDS else v)
                      for key, v in plain(args.get("thresholds") or {}, "thresholds", component).items()
                      if v is not None}
        servers = [plain(s, "servers", component) for s in plain(args["servers"], "servers", component)]
        # The custom resources must wait for their CRDs: dependsOn is handed down as the inner component's
        # monitoring_ready, what its ServiceMonitors, PrometheusRule and dashboards wait for.
        ready = depends_on_of(opts)
        inner = Monitoring(name, MonitoringArgs(
            serving_namespace=plain(args["serving_namespace"], "servingNamespace", component),
            monitoring_namespace=plain(args.get("monitoring_namespace") or "monitoring",
                                       "monitoringNamespace", component),
            servers=servers, environment=plain(args["environment"], "environment", component),
            thresholds=Thresholds(**thresholds), monitoring_ready=ready), opts=k8s_opts)
        self.alert_rules = pulumi.Output.from_input(json.dumps(inner.rules, sort_keys=True))
        self.service_monitors = pulumi.Output.from_input([f"tfserving-{s}" for s in servers])
        self.register_outputs({"alert_rules": self.alert_rules, "service_monitors": self.service_monitors})
