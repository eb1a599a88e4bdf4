"""TF Serving Deployment, its config, identity and Service (cloud-agnostic)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.serving.model_sync import SYNC_IMAGES, SYNC_SCRIPT
from components.serving.tfserving_config import (
    CONFIG_DIR,
    METRICS_PATH,
    MODEL_CONFIG_FILE,
    MODELS_DIR,
    MONITORING_CONFIG_FILE,
    ServedModel,
    render_model_config,
    render_monitoring_config,
)

GRPC_PORT = 8500
REST_PORT = 8501
GPU_RESOURCE = "nvidia.com/gpu"
RUN_AS = 65532  # non-root, above 10000 so it cannot collide with a host user


@dataclass(frozen=True)
class ModelServerArgs:
    """Inputs of :class:`ModelServer`. Nothing here names a cloud."""

    namespace: pulumi.Input[str]
    models: list[ServedModel]
    """Models to serve; the first one backs the readiness check."""
    model_source_uri: pulumi.Input[str]
    """``s3://bucket/prefix`` or ``gs://bucket/prefix`` holding ``<model>/<version>/``."""
    model_store: str
    """``s3`` or ``gs``: the URI's scheme, known before the bucket exists; picks the sync image."""
    service_account_annotations: pulumi.Input[dict[str, str]] = field(default_factory=dict)
    """Identity binding, e.g. ``eks.amazonaws.com/role-arn`` or ``iam.gke.io/gcp-service-account``."""
    image_version: str = "2.18.0"
    """``tensorflow/serving`` tag; ``-gpu`` is appended exactly when ``gpus`` > 0."""
    replicas: int = 1
    """Replicas at creation; with ``autoscaled`` the autoscaler owns the count afterwards."""
    autoscaled: bool = False
    """An autoscaler changes ``spec.replicas``: ignore it on later updates so ``pulumi up`` does not fight it."""
    cpu: str = "2"
    """CPU request and limit (equal: Guaranteed QoS keeps latency steady)."""
    memory: str = "4Gi"
    gpus: int = 0
    """``nvidia.com/gpu`` per replica; > 0 adds the GPU toleration."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Pins the pods to a node pool."""
    sync_env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the sync containers (e.g. ``AWS_REGION``)."""
    sync_interval_seconds: int = 45
    """How often the sidecar looks for new versions (each look lists the bucket)."""
    models_volume_size: str = "20Gi"
    """Size limit of the ``emptyDir`` holding the synced models."""
    labels: dict[str, str] = field(default_factory=dict)


def serving_image(version: str, gpus: int) -> str:
    return f"docker.io/tensorflow/serving:{version}{'-gpu' if gpus else ''}"


def server_args() -> list[str]:
    """Flags of ``tensorflow_model_server`` (defaults in model_servers/server.h)."""
    return [
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",
        f"--model_config_file={CONFIG_DIR}/{MODEL_CONFIG_FILE}",
        # Re-read the config (mounted ConfigMap) so label and version changes need no restart.
        "--model_config_file_poll_wait_seconds=60",
        # Default is 1 s; the directory is local here, but a long poll spares the CPU.
        "--file_system_poll_wait_seconds=30",
        f"--monitoring_config_file={CONFIG_DIR}/{MONITORING_CONFIG_FILE}",
    ]


def _restricted(extra: dict | None = None) -> dict:
    """Container security context meeting the Pod Security 'restricted' profile."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, **(extra or {})}


class ModelServer(pulumi.ComponentResource):
    """TF Serving for a set of models.

    Creates: a ``ServiceAccount`` (token not mounted), a ``ConfigMap`` (model config list,
    monitoring config, sync script), a ``Deployment`` (init sync + sync sidecar + TF Serving,
    probes, restricted security context, zero-downtime rolling updates) and a ``Service``
    (gRPC 8500, REST 8501).
    """

    deployment_name: pulumi.Output[str]
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
        child = pulumi.ResourceOptions(parent=self)
        self.selector = {"app.kubernetes.io/name": "tfserving", "app.kubernetes.io/instance": name}
        labels = {**args.labels, **self.selector, "app.kubernetes.io/component": "model-server"}
        meta = lambda suffix="": k8s.meta.v1.ObjectMetaArgs(  # noqa: E731
            name=f"{name}{suffix}", namespace=args.namespace, labels=labels)

        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace, labels=labels,
                                                annotations=args.service_account_annotations),
            automount_service_account_token=False, opts=child)

        config = k8s.core.v1.ConfigMap(f"{name}-config", metadata=meta("-config"), data={
            MODEL_CONFIG_FILE: render_model_config(args.models),
            MONITORING_CONFIG_FILE: render_monitoring_config(),
            "sync.sh": SYNC_SCRIPT,
        }, opts=child)

        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=meta(),
            spec=self._deployment_spec(name, args, labels, account, config),
            opts=pulumi.ResourceOptions(parent=self,
                                        ignore_changes=["spec.replicas"] if args.autoscaled else None))

        service = k8s.core.v1.Service(f"{name}-service", metadata=meta(), spec=k8s.core.v1.ServiceSpecArgs(
            type="ClusterIP", selector=self.selector,
            ports=[k8s.core.v1.ServicePortArgs(name="grpc", port=GRPC_PORT, target_port="grpc",
                                               app_protocol="grpc"),
                   k8s.core.v1.ServicePortArgs(name="http", port=REST_PORT, target_port="http",
                                               app_protocol="http")]), opts=child)

        self.deployment_name = deployment.metadata.name
        self.service_name = service.metadata.name
        host = pulumi.Output.all(service.metadata.name, args.namespace).apply(
            lambda a: f"{a[0]}.{a[1]}.svc.cluster.local")
        self.grpc_endpoint = host.apply(lambda h: f"{h}:{GRPC_PORT}")
        self.rest_endpoint = host.apply(lambda h: f"http://{h}:{REST_PORT}")
        self.register_outputs({"deployment_name": self.deployment_name, "service_name": self.service_name,
                               "grpc_endpoint": self.grpc_endpoint, "rest_endpoint": self.rest_endpoint})

    def _deployment_spec(self, name: str, args: ModelServerArgs, labels: dict[str, str],
                         account: k8s.core.v1.ServiceAccount, config: k8s.core.v1.ConfigMap) -> dict:
        sync_env = [{"name": "MODEL_SOURCE_URI", "value": args.model_source_uri},
                    {"name": "MODEL_DIR", "value": MODELS_DIR},
                    {"name": "MODEL_NAMES", "value": " ".join(m.name for m in args.models)},
                    {"name": "SYNC_INTERVAL_SECONDS", "value": str(args.sync_interval_seconds)},
                    # The CLIs write caches under $HOME; the root filesystem is read-only.
                    {"name": "HOME", "value": "/tmp"},
                    *({"name": k, "value": v} for k, v in sorted(args.sync_env.items()))]
        sync_mounts = [{"name": "models", "mountPath": MODELS_DIR},
                       {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                       {"name": "tmp", "mountPath": "/tmp"}]
        sync_resources = {"requests": {"cpu": "100m", "memory": "256Mi"},
                          "limits": {"cpu": "100m", "memory": "256Mi"}}
        sync_image = SYNC_IMAGES[args.model_store]

        def sync_container(container_name: str, mode: str) -> dict:
            return {"name": container_name, "image": sync_image, "imagePullPolicy": "Always",
                    "command": ["/bin/sh", f"{CONFIG_DIR}/sync.sh", mode], "env": sync_env,
                    "volumeMounts": sync_mounts, "resources": sync_resources,
                    "securityContext": _restricted()}

        server_resources = {"requests": {"cpu": args.cpu, "memory": args.memory},
                            "limits": {"cpu": args.cpu, "memory": args.memory}}
        if args.gpus:
            server_resources["requests"][GPU_RESOURCE] = str(args.gpus)
            server_resources["limits"][GPU_RESOURCE] = str(args.gpus)
        first_model = args.models[0].name
        server = {
            "name": "tfserving",
            "image": serving_image(args.image_version, args.gpus),
            "imagePullPolicy": "Always",
            "command": ["tensorflow_model_server"],
            "args": server_args(),
            "ports": [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                      {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"}],
            "resources": server_resources,
            # The REST port opens only after the first models load (server_core.cc): the startup
            # probe allows 10 minutes for large models before liveness takes over.
            "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10, "failureThreshold": 60},
            "readinessProbe": {"httpGet": {"path": f"/v1/models/{first_model}", "port": "http"},
                               "periodSeconds": 10, "failureThreshold": 3},
            "livenessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 20, "failureThreshold": 3},
            # TF Serving ignores SIGTERM (tensorflow/serving#1853): wait for endpoints to drain.
            "lifecycle": {"preStop": {"sleep": {"seconds": 15}}},
            "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
                             {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": _restricted(),
        }
        # A native sidecar (init container with restartPolicy Always, Kubernetes >= 1.29) runs
        # beside TF Serving and stops after it.
        sidecar = {**sync_container("model-sync", "loop"), "restartPolicy": "Always"}
        pod_spec = {
            "serviceAccountName": account.metadata.name,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 45,
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [sync_container("model-sync-init", "once"), sidecar],
            "containers": [server],
            "volumes": [{"name": "models", "emptyDir": {"sizeLimit": args.models_volume_size}},
                        {"name": "config", "configMap": {"name": config.metadata.name}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
            "nodeSelector": args.node_selector or None,
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
            if args.gpus else None,
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": self.selector}}
                for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")],
        }
        return {
            "replicas": args.replicas,
            "selector": {"matchLabels": self.selector},
            # Never fewer ready pods than desired during a rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        }

