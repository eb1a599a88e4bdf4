"""One TF Serving Deployment with its config and Service (cloud-agnostic)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.node_labels import GPU_RESOURCE, GPU_TAINT_KEY
from components.serving.batching import BATCHING_FILE, BatchingConfig, cpu_cores, render_batching_parameters
from components.serving.model_sync import (
    DEFAULT_SYNC_INTERVAL_SECONDS,
    SYNC_IMAGES,
    SYNC_SCRIPT,
    SYNC_SPEC_FILE,
    render_sync_spec,
)
from components.serving.readiness import (
    READY_SCRIPT,
    READY_SCRIPT_KEY,
    READY_SPEC_KEY,
    readiness_probe,
    render_readiness_spec,
)
from components.serving.tfserving_config import (
    CONFIG_DIR,
    MODEL_CONFIG_FILE,
    MODELS_DIR,
    MONITORING_CONFIG_FILE,
    ServedModel,
    render_model_config,
    render_monitoring_config,
)

GRPC_PORT = 8500
REST_PORT = 8501
RUN_AS = 65532  # non-root, above 10000 so it cannot collide with a host user
APP_LABEL = "app.kubernetes.io/name"
SERVER_LABEL = "tfplatform.io/server"
TRACK_LABEL = "tfplatform.io/track"
RESTART_CHECKSUM = "tfplatform.io/restart-checksum"
"""Pod annotation carrying a config checksum, for Deployments whose ConfigMap keeps its name (the router)."""
# Endpoints controllers and kube-proxy (or a mesh) need a few seconds to stop sending traffic to a
# terminating pod; TF Serving ignores SIGTERM (tensorflow/serving#1853), so the pod waits first.
PRE_STOP_SECONDS = 15
# After the pause TF Serving gets SIGTERM, ignores it, and in-flight requests finish; the kubelet
# then kills it. Bounded so a node drain never waits minutes per pod.
TERMINATION_GRACE_SECONDS = 45
STARTUP_PROBE_PERIOD = 2
"""Seconds between the startup probe's TCP connects to the REST port (which opens once the first models
are AVAILABLE: server_core.cc WaitUntilModelsAvailable). A connect is cheap, and the period is time a loaded
replica may sit unnoticed before the readiness probe takes over: 2 s instead of Kubernetes' usual 10 takes
up to 8 s off every start (stacks/scale_up.py counts it in "ready")."""
FILE_SYSTEM_POLL_SECONDS = 5
"""``--file_system_poll_wait_seconds``: how often TF Serving lists each model's base path for new or
removed versions (sources/storage_path/file_system_storage_path_source.cc). It lists the pod's local
``emptyDir``, where a listing costs a readdir, not a request: the 30-60 s advice of
tensorflow/serving#1916 is about remote file systems (GCS). A few seconds keeps publish-to-serving short
(``DEFAULT_SYNC_INTERVAL_SECONDS`` + copy + this + load; tests/test_publish_to_serving.py)."""
MODEL_CACHE_MOUNT = "/model-cache"
"""Where the sync containers mount their server's node cache directory (components/serving/model_cache.py)."""
SKIP_AWAIT = "pulumi.com/skipAwait"
"""pulumi-kubernetes skips its readiness await for an object carrying this annotation = "true"
(provider/pkg/metadata/annotations.go); any other value, or none, means the update waits."""


@dataclass(frozen=True)
class ModelServerArgs:
    """Inputs of :class:`ModelServer`. Nothing here names a cloud."""

    namespace: pulumi.Input[str]
    server: str
    """The server this Deployment belongs to (a stable and a canary Deployment share it)."""
    models: list[ServedModel]
    model_source_uri: pulumi.Input[str]
    """``s3://bucket/prefix`` or ``gs://bucket/prefix`` holding ``<model>/<version>/``."""
    model_store: str
    """``s3`` or ``gs``: the URI's scheme, known before the bucket exists; picks the sync image."""
    service_account_name: pulumi.Input[str]
    """The identity that may read the bucket (IRSA / Workload Identity), see :class:`ServingNamespace`."""
    track: str = "stable"
    """``stable`` or ``canary``; the Service selects one track only."""
    image_version: str = "2.18.0"
    """``tensorflow/serving`` tag; ``-gpu`` is appended exactly when ``gpus`` > 0."""
    image: str | None = None
    """Full image reference overriding ``image_version`` (a mirror, or pinned by digest: the composition
    passes ``repo:tag@sha256:...`` when the image lock has the tag)."""
    sync_image: str | None = None
    """Image of the model-sync containers; None: the tag pinned for ``model_store`` (``SYNC_IMAGES``)."""
    replicas: int = 1
    """Replicas at creation; with ``autoscaled`` the autoscaler owns the count afterwards."""
    autoscaled: bool = False
    """An autoscaler changes ``spec.replicas``: ignore it on later updates so ``pulumi up`` does not fight it."""
    cpu: str = "2"
    """CPU request and limit (equal: Guaranteed QoS keeps latency steady)."""
    memory: str = "4Gi"
    gpus: int = 0
    """``gpu_resource`` request = limit per pod; > 0 adds the GPU image and toleration."""
    gpu_resource: str = GPU_RESOURCE
    """The extended resource ``gpus`` counts: ``nvidia.com/gpu``, or a MIG partition
    ``nvidia.com/mig-<profile>`` on EKS nodes whose device plugin runs the mixed strategy."""
    gpu_memory_fraction: float | None = None
    """``--per_process_gpu_memory_fraction`` when pods share a GPU (TF Serving takes all of it otherwise)."""
    batching: BatchingConfig | None = None
    """Server-side batching; None leaves ``--enable_batching`` off."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Pins the pods to a node pool (or a GKE ComputeClass)."""
    tolerations: tuple[dict[str, str], ...] = ()
    """More taints the pods tolerate (a ComputeClass's ``cloud.google.com/compute-class`` taint)."""
    sync_env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the sync containers (e.g. ``AWS_REGION``)."""
    sync_interval_seconds: int = DEFAULT_SYNC_INTERVAL_SECONDS
    """How often the sidecar looks for new versions (each look lists the bucket)."""
    model_cache_claim: pulumi.Input[str] | None = None
    """PersistentVolumeClaim of the node-local model cache (:class:`~components.serving.model_cache.ModelCache`),
    mounted by the sync containers with ``subPath`` = ``server``: versions are then downloaded once per node
    and copied from there into each pod's volume. None: every pod copies from the bucket."""
    startup_timeout_seconds: int = 600
    """Time the first model load may take before the kubelet restarts TF Serving."""
    models_volume_size: str = "20Gi"
    """Size limit of the ``emptyDir`` holding the synced models: every served version plus the one being
    copied. Above it the kubelet evicts the pod, so the sync (``MODELS_VOLUME_BYTES``) skips such a copy."""
    sync_cpu: str = "500m"
    """CPU request and limit of each sync container (the AWS CLI needs ~4.3 CPU-seconds per GiB)."""
    sync_memory: str = "512Mi"
    """Memory request and limit of each sync container."""
    await_rollout: pulumi.Input[bool] = True
    """Let ``pulumi up`` wait for the rollout (Deployment available, Service endpoints ready). False
    only where the models cannot exist yet: the first up of a stack that creates its bucket."""
    service_name: str | None = None
    """Name of this Deployment's own Service (default: the component name)."""


SERVER_CONTAINER = "tfserving"
"""The container answering clients: it parses untrusted requests and needs no cloud credentials."""
IRSA_SKIP_CONTAINERS = "eks.amazonaws.com/skip-containers"
"""Pod annotation of the EKS pod identity webhook: the containers it leaves without the web-identity
token volume and AWS_* variables (README "skip-containers"; pkg/handler/handler.go getContainersToSkip)."""


def token_annotations(model_store: str) -> dict[str, str] | None:
    """Keep the bucket role's token out of TF Serving.

    The pod mounts no Kubernetes API token (``automountServiceAccountToken: false``), but on EKS the
    IRSA webhook mounts the role's web-identity token and sets ``AWS_ROLE_ARN`` /
    ``AWS_WEB_IDENTITY_TOKEN_FILE`` in every container of a pod whose service account is annotated
    (https://github.com/aws/amazon-eks-pod-identity-webhook#usage); only the sync containers read the
    bucket. On GKE there is no per-container equivalent: the metadata server answers any container of
    the pod with the pod's Workload Identity, so there TF Serving's only limit is the read-only,
    prefix-scoped role (docs/components.md, "Secure defaults").
    """
    return {IRSA_SKIP_CONTAINERS: SERVER_CONTAINER} if model_store == "s3" else None


def serving_image(version: str, gpus: int) -> str:
    return f"docker.io/tensorflow/serving:{version}{'-gpu' if gpus else ''}"


def pod_images(args: ModelServerArgs) -> tuple[str, str]:
    """The images a server's pods run: TF Serving's, and the model sync's."""
    return (args.image or serving_image(args.image_version, args.gpus),
            args.sync_image or SYNC_IMAGES[args.model_store])


def pod_tolerations(args: ModelServerArgs) -> list[dict[str, str]]:
    """The taints a server's pods tolerate: a GPU pool's ``nvidia.com/gpu``, and ``args.tolerations``."""
    gpu = [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}] if args.gpus else []
    return [*gpu, *args.tolerations]


def pull_policy(image: str) -> str:
    """``IfNotPresent`` for an image pinned by digest, ``Always`` for a tag alone.

    A tag can be moved at the registry. ``Always`` makes the kubelet resolve the tag to a digest at every
    container start and reuse its cached image only when the digest is the same, so a pod never starts
    from a stale copy of a moved tag (and checkov CKV_K8S_15 asks for it). A digest cannot move, so that
    registry round trip only adds a dependency on the registry (an outage, Docker Hub's rate limit) to
    every pod start: ``IfNotPresent`` is exact and faster, and the Kubernetes default for a digest
    (https://kubernetes.io/docs/concepts/containers/images/#imagepullpolicy-defaulting; CKV_K8S_15
    passes with a digest too). Set explicitly, not left to the defaulting: for ``:latest@sha256:...``
    the API server still defaults to ``Always`` (the defaulting reads only the tag).
    """
    return "IfNotPresent" if "@sha256:" in image else "Always"


def server_args(batching: bool = False, gpu_memory_fraction: float | None = None) -> list[str]:
    """Flags of ``tensorflow_model_server`` (defaults in model_servers/server.h)."""
    args = [
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",
        f"--model_config_file={CONFIG_DIR}/{MODEL_CONFIG_FILE}",
        # No --model_config_file_poll_wait_seconds: the config is read once. Each revision of it is its own
        # immutable ConfigMap that only new pods mount, so a running pod never reloads a config whose label
        # moves onto a version it has not loaded (ReloadConfig would store that config, refuse the label
        # and never load the version: the model is then unloaded once the sync prunes the old one).
        # The sidecar renames complete versions into place; polling the local volume is cheap.
        f"--file_system_poll_wait_seconds={FILE_SYSTEM_POLL_SECONDS}",
        f"--monitoring_config_file={CONFIG_DIR}/{MONITORING_CONFIG_FILE}",
        # ServerCore::ReloadConfig (model_servers/server_core.cc) runs UpdateModelVersionLabelMap
        # before AddModelsViaModelConfigList: at startup no version is loaded yet, so without this
        # flag every version_labels entry is refused and the pod exits.
        "--allow_version_labels_for_unavailable_models=true",
    ]
    if batching:
        args += ["--enable_batching=true", f"--batching_parameters_file={CONFIG_DIR}/{BATCHING_FILE}"]
    if gpu_memory_fraction is not None:
        args.append(f"--per_process_gpu_memory_fraction={gpu_memory_fraction}")
    return args


_QUANTITY_FACTORS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9,
                     "T": 10**12}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory/storage quantity in bytes: ``"20Gi"`` -> 21474836480."""
    for suffix, factor in _QUANTITY_FACTORS.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))


def sync_threads(cpu: str) -> int:
    """gcloud storage threads for a sync container's CPU limit: 4 per core, at least 2."""
    return max(2, round(4 * cpu_cores(cpu)))


def config_revision(data: dict[str, str]) -> str:
    """A short hash of a ConfigMap's data: its name changes exactly when its content does."""
    text = "\n".join(f"{key}\0{data[key]}" for key in sorted(data))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def skip_await_annotations(await_rollout: pulumi.Input[bool]) -> pulumi.Output[dict[str, str] | None]:
    """``{pulumi.com/skipAwait: "true"}`` when the rollout must not be awaited, else no annotation."""
    return pulumi.Output.from_input(await_rollout).apply(lambda wait: None if wait else {SKIP_AWAIT: "true"})


def serving_service(resource_name: str, name: str, namespace: pulumi.Input[str], labels: dict[str, str],
                    selector: pulumi.Input[dict[str, str]], annotations: pulumi.Input[dict[str, str] | None],
                    opts: pulumi.ResourceOptions) -> k8s.core.v1.Service:
    """A ClusterIP Service with TF Serving's two ports (gRPC 8500, REST 8501) for ``selector``."""
    return k8s.core.v1.Service(resource_name, metadata=k8s.meta.v1.ObjectMetaArgs(
        name=name, namespace=namespace, labels=labels, annotations=annotations), spec=k8s.core.v1.ServiceSpecArgs(
        type="ClusterIP", selector=selector,
        ports=[k8s.core.v1.ServicePortArgs(name="grpc", port=GRPC_PORT, target_port="grpc", app_protocol="grpc"),
               k8s.core.v1.ServicePortArgs(name="http", port=REST_PORT, target_port="http", app_protocol="http")]),
        opts=opts)


def restricted(extra: dict | None = None) -> dict:
    """Container security context meeting the Pod Security 'restricted' profile."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, **(extra or {})}


def server_selector(server: str) -> dict[str, str]:
    """Labels every pod of a server carries, whatever its track (network policy, monitoring)."""
    return {APP_LABEL: "tfserving", SERVER_LABEL: server}


class ModelServer(pulumi.ComponentResource):
    """TF Serving for a set of models.

    Creates: a ``ConfigMap`` (model config list, monitoring config, batching parameters, sync and
    readiness scripts), a ``Deployment`` (waiting init sync + sync sidecar + TF Serving, the node's model
    cache mounted by the sync containers when ``model_cache_claim`` is set, startup /
    model-aware readiness / liveness probes, preStop pause, restricted security context, spread
    across zones and nodes, zero-downtime rolling updates) and a ``Service`` (gRPC 8500, REST 8501)
    selecting this Deployment's pods only.
    """

    deployment_name: pulumi.Output[str]
    service: k8s.core.v1.Service
    service_name: pulumi.Output[str]
    selector: dict[str, str]
    grpc_endpoint: pulumi.Output[str]
    rest_endpoint: pulumi.Output[str]

    def __init__(self, name: str, args: ModelServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ModelServer", name, None, opts)
        if not args.models:
            raise ValueError(f"ModelServer {name}: models must not be empty")
        if args.model_store not in SYNC_IMAGES:
            raise ValueError(f"ModelServer {name}: model_store {args.model_store!r}, expected one of "
                             f"{sorted(SYNC_IMAGES)}")
        if args.track not in ("stable", "canary"):
            raise ValueError(f"ModelServer {name}: track {args.track!r}, expected stable or canary")
        child = pulumi.ResourceOptions(parent=self)
        self.selector = {APP_LABEL: "tfserving", "app.kubernetes.io/instance": name}
        labels = {**server_selector(args.server), **self.selector, TRACK_LABEL: args.track,
                  "app.kubernetes.io/component": "model-server"}
        meta = lambda suffix="", annotations=None: k8s.meta.v1.ObjectMetaArgs(  # noqa: E731
            name=f"{name}{suffix}", namespace=args.namespace, labels=labels, annotations=annotations)
        # Both are awaited by pulumi-kubernetes: the Deployment until available, the Service until
        # no selected pod is unready (provider/pkg/await/service.go checkAndLogStatus).
        skip_await = skip_await_annotations(args.await_rollout)

        data = {
            MODEL_CONFIG_FILE: render_model_config(args.models),
            MONITORING_CONFIG_FILE: render_monitoring_config(),
            SYNC_SPEC_FILE: render_sync_spec(args.models),
            "sync.sh": SYNC_SCRIPT,
            READY_SCRIPT_KEY: READY_SCRIPT,
            # Ready means every listed version AVAILABLE and every label resolving, not just any version.
            READY_SPEC_KEY: render_readiness_spec(args.models),
        }
        if args.batching:
            data[BATCHING_FILE] = render_batching_parameters(args.batching)
        # One immutable ConfigMap per revision, named by its content: new config reaches new pods only
        # (the name in the pod template changes, so the Deployment rolls), old pods keep reading theirs
        # until they are gone. Pulumi creates the new one first and deletes the old one at the end of the
        # update, after the Deployment's rollout was awaited.
        revision = config_revision(data)
        config = k8s.core.v1.ConfigMap(f"{name}-config", metadata=meta(f"-config-{revision}"), data=data,
                                       immutable=True, opts=child)

        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=meta(annotations=skip_await),
            spec=self._deployment_spec(args, labels, config),
            opts=pulumi.ResourceOptions(parent=self,
                                        ignore_changes=["spec.replicas"] if args.autoscaled else None))

        service = serving_service(f"{name}-service", args.service_name or name, args.namespace, labels,
                                  self.selector, skip_await, child)
        self.service = service

        self.deployment_name = deployment.metadata.name
        self.service_name = service.metadata.name
        host = pulumi.Output.all(service.metadata.name, args.namespace).apply(
            lambda a: f"{a[0]}.{a[1]}.svc.cluster.local")
        self.grpc_endpoint = host.apply(lambda h: f"{h}:{GRPC_PORT}")
        self.rest_endpoint = host.apply(lambda h: f"http://{h}:{REST_PORT}")
        self.register_outputs({"deployment_name": self.deployment_name, "service_name": self.service_name,
                               "grpc_endpoint": self.grpc_endpoint, "rest_endpoint": self.rest_endpoint})

    def _deployment_spec(self, args: ModelServerArgs, labels: dict[str, str], config: k8s.core.v1.ConfigMap) -> dict:
        sync_env = [{"name": "MODEL_SOURCE_URI", "value": args.model_source_uri},
                    {"name": "MODEL_DIR", "value": MODELS_DIR},
                    {"name": "MODEL_SPEC_FILE", "value": f"{CONFIG_DIR}/{SYNC_SPEC_FILE}"},
                    {"name": "SYNC_INTERVAL_SECONDS", "value": str(args.sync_interval_seconds)},
                    # The CLIs write caches under $HOME; the root filesystem is read-only.
                    {"name": "HOME", "value": "/tmp"},
                    # A copy that would overflow the volume's sizeLimit is skipped, not evicted.
                    {"name": "MODELS_VOLUME_BYTES", "value": str(quantity_bytes(args.models_volume_size))},
                    # gcloud storage sizes its pools from the node's CPUs, not the container's limit.
                    {"name": "CLOUDSDK_STORAGE_PROCESS_COUNT", "value": "1"},
                    {"name": "CLOUDSDK_STORAGE_THREAD_COUNT", "value": str(sync_threads(args.sync_cpu))},
                    *({"name": k, "value": v} for k, v in sorted(args.sync_env.items()))]
        sync_mounts = [{"name": "models", "mountPath": MODELS_DIR},
                       {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                       {"name": "tmp", "mountPath": "/tmp"}]
        cache_volumes = []
        if args.model_cache_claim is not None:
            # The node's cache directory of this server (stable and canary pods share it). Bounded like
            # the pod's volume: it holds what the server's pods select, at most modelsVolumeSize.
            sync_env += [{"name": "MODEL_CACHE_DIR", "value": MODEL_CACHE_MOUNT},
                         {"name": "MODEL_CACHE_MAX_BYTES", "value": str(quantity_bytes(args.models_volume_size))}]
            sync_mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT, "subPath": args.server})
            cache_volumes.append({"name": "model-cache",
                                  "persistentVolumeClaim": {"claimName": args.model_cache_claim}})
        sync_resources = {"requests": {"cpu": args.sync_cpu, "memory": args.sync_memory},
                          "limits": {"cpu": args.sync_cpu, "memory": args.sync_memory}}
        _, sync_image = pod_images(args)

        def sync_container(container_name: str, mode: str) -> dict:
            return {"name": container_name, "image": sync_image, "imagePullPolicy": pull_policy(sync_image),
                    "command": ["/bin/sh", f"{CONFIG_DIR}/sync.sh", mode], "env": sync_env,
                    "volumeMounts": sync_mounts, "resources": sync_resources,
                    "securityContext": restricted()}

        server_resources = {"requests": {"cpu": args.cpu, "memory": args.memory},
                            "limits": {"cpu": args.cpu, "memory": args.memory}}
        if args.gpus:
            # Extended resources: request must equal limit.
            server_resources["requests"][args.gpu_resource] = str(args.gpus)
            server_resources["limits"][args.gpu_resource] = str(args.gpus)
        server_image, _ = pod_images(args)
        server = {
            "name": SERVER_CONTAINER,
            "image": server_image,
            "imagePullPolicy": pull_policy(server_image),
            "command": ["tensorflow_model_server"],
            "args": server_args(args.batching is not None, args.gpu_memory_fraction),
            "ports": [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                      {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"}],
            "env": [{"name": "REST_PORT", "value": str(REST_PORT)},
                    {"name": "MODEL_SPEC_FILE", "value": f"{CONFIG_DIR}/{SYNC_SPEC_FILE}"}],
            "resources": server_resources,
            # The REST port opens only after the first models load (server_core.cc
            # WaitUntilModelsAvailable): the startup probe gives large models time, and liveness
            # and readiness start only after it passed, so a loading pod is never killed.
            "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": STARTUP_PROBE_PERIOD,
                             "failureThreshold": -(-args.startup_timeout_seconds // STARTUP_PROBE_PERIOD)},
            # /v1/models/<m> answers 200 even when no version is AVAILABLE: the script checks the
            # state of every configured model.
            "readinessProbe": readiness_probe(CONFIG_DIR),
            # The gRPC port stays open while new versions load; only a hung process fails this.
            "livenessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 20, "failureThreshold": 3},
            "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
            "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
                             {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": restricted(),
        }
        # The init container waits (never fails) until every model has its versions, so an empty
        # or unreachable bucket leaves the pod in Init with a clear log line, not crash-looping.
        # The native sidecar (init container with restartPolicy Always, Kubernetes >= 1.29) then
        # keeps syncing beside TF Serving and stops after it.
        sidecar = {**sync_container("model-sync", "loop"), "restartPolicy": "Always"}
        spread = {"maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway",
                  "labelSelector": {"matchLabels": self.selector}}
        pod_spec = {
            "serviceAccountName": args.service_account_name,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [sync_container("model-sync-init", "wait"), sidecar],
            "containers": [server],
            "volumes": [{"name": "models", "emptyDir": {"sizeLimit": args.models_volume_size}},
                        {"name": "config", "configMap": {"name": config.metadata.name}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}, *cache_volumes],
            "nodeSelector": args.node_selector or None,
            "tolerations": pod_tolerations(args) or None,
            # Zones first (a zone outage), then nodes (a node drain); ScheduleAnyway so a scale-up
            # is never blocked when a zone has no GPU capacity.
            "topologySpreadConstraints": [{**spread, "topologyKey": "topology.kubernetes.io/zone"},
                                          {**spread, "topologyKey": "kubernetes.io/hostname"}],
        }
        return {
            "replicas": args.replicas,
            "selector": {"matchLabels": self.selector},
            # Never fewer ready pods than desired during a rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels, "annotations": token_annotations(args.model_store)},
                         "spec": pod_spec},
        }
