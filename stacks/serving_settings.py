"""Typed settings of the serving deployments: models, versions, labels, batching, canary, routing.

A stack runs one or more *servers* (``servers`` map, key = stable name); each is a TF Serving
Deployment with its own models, resources, node pool, autoscaling and optional canary.
Cross-server rules (model names unique, pools that exist) live in ``StackSettings``.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from components.model_contract import MODEL_NAME_PATTERN, VERSION_LABEL_PATTERN
from components.serving.batching import cpu_cores
from components.serving.model_sync import DEFAULT_SYNC_INTERVAL_SECONDS
from stacks.settings_base import DNS_LABEL, FieldProblem, Strict, check_cidrs, check_keys, check_quantity, check_unique

# TF Serving model versions are int64 (tensorflow_serving/config/model_server_config.proto, file_system_storage_path_source.proto).
MAX_VERSION = 2**63 - 1
# Highest per-pod request rate the HPA may aim for; far above what one TF Serving pod answers.
MAX_TARGET_RPS = 1_000_000
STABLE_LABEL = "stable"
CANARY_LABEL = "canary"


class Model(Strict):
    """One model TF Serving loads, keyed by model name in a server's ``models``."""

    version_policy: Literal["latest", "all", "specific"] = Field(
        "latest", description="Which versions TF Serving loads: the newest N, all, or a list.")
    latest_versions: int = Field(1, ge=1, le=100, description="N for versionPolicy latest.")
    versions: list[Annotated[int, Field(ge=1, le=MAX_VERSION)]] = Field(
        default_factory=list, description="Versions to load for versionPolicy specific; `stable` "
                                          "labels the highest unless `labels` sets it.")
    labels: dict[str, Annotated[int, Field(ge=1, le=MAX_VERSION)]] = Field(
        default_factory=dict, description="Version labels (`[a-zA-Z0-9_]+`) -> version, for clients "
                                          "that pick a version (`/v1/models/<m>/labels/<label>`).")
    canary_version: int | None = Field(
        None, ge=1, le=MAX_VERSION, description="A newer version served by the canary Deployment to the server's "
                                "canaryWeight share of traffic; a version already in `versions` "
                                "means promoted (no canary). Needs versionPolicy specific.")

    @model_validator(mode="after")
    def _policy_and_labels(self) -> Model:
        if self.version_policy == "specific" and not self.versions:
            raise FieldProblem("versions", [], "at least one version when versionPolicy is specific")
        if self.version_policy != "specific" and self.versions:
            raise FieldProblem("versions", self.versions, "empty unless versionPolicy is specific")
        try:
            check_unique(self.versions)
        except FieldProblem as problem:
            raise FieldProblem(f"versions.{problem.field}", problem.value, "a version not already in versions "
                                                                          "(distinct version numbers)") from None
        for label, version in self.labels.items():
            if not re.fullmatch(VERSION_LABEL_PATTERN, label):
                raise FieldProblem(f"labels.{label}", label, f"a label name matching {VERSION_LABEL_PATTERN}")
            if self.version_policy == "latest":
                raise FieldProblem(f"labels.{label}", version,
                                   "no labels with versionPolicy latest (TF Serving may only label "
                                   "loaded versions): use specific or all")
            if self.version_policy == "specific" and version not in self.versions:
                raise FieldProblem(f"labels.{label}", version,
                                   f"one of the loaded versions {sorted(self.versions)}")
        if self.canary_version is not None:
            if self.version_policy != "specific":
                raise FieldProblem("canaryVersion", self.canary_version,
                                   "unset unless versionPolicy is specific (with latest or all the "
                                   "stable pods would load the canary version themselves)")
            if CANARY_LABEL in self.labels and self.canary_active:
                raise FieldProblem(f"labels.{CANARY_LABEL}", self.labels[CANARY_LABEL],
                                   "unset while canaryVersion is active: the canary label is managed")
            if self.canary_active and self.canary_version < max(self.versions):
                raise FieldProblem("canaryVersion", self.canary_version,
                                   f"greater than every stable version ({max(self.versions)}), since TF "
                                   "Serving answers unlabelled requests from its highest version, or one "
                                   f"of versions {sorted(self.versions)} once promoted")
        return self

    @property
    def canary_active(self) -> bool:
        """A canary version the stable pods do not already serve."""
        return self.canary_version is not None and self.canary_version not in self.versions

    def stable_labels(self) -> dict[str, int]:
        """Labels of the stable pods: the configured ones, plus ``stable`` for specific policies."""
        labels = dict(self.labels)
        if self.version_policy == "specific":
            labels.setdefault(STABLE_LABEL, max(self.versions))
        return labels


class Batching(Strict):
    """Server-side batching (``--enable_batching`` and ``--batching_parameters_file``).

    Unset numbers are derived from the container's CPU request and GPUs following TF Serving's
    batching guide (tensorflow_serving/batching/README.md).
    """

    enabled: bool = Field(False, description="Turn on server-side batching.")
    max_batch_size: int | None = Field(None, ge=1, le=65536,
                                       description="Largest batch (default 32; tune by measuring).")
    batch_timeout_micros: int | None = Field(None, ge=0, le=10_000_000,
                                             description="Wait to fill a batch (default 0 on CPU, "
                                                         "1000 with GPUs).")
    max_enqueued_batches: int | None = Field(None, ge=1, le=100_000,
                                             description="Queue bound (default numBatchThreads: short "
                                                         "queues behind a load balancer).")
    num_batch_threads: int | None = Field(None, ge=1, le=1024,
                                          description="Batches processed in parallel (default the CPU "
                                                      "request, rounded up).")
    allowed_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="Sizes batches are padded to: strictly increasing, the last "
                                          "equal to maxBatchSize.")
    pad_variable_length_inputs: bool = Field(False, description="Pad variable-length inputs to batch them.")

    @model_validator(mode="after")
    def _sizes(self) -> Batching:
        sizes = self.allowed_batch_sizes
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise FieldProblem("allowedBatchSizes", sizes, "strictly increasing sizes")
        if sizes and self.max_batch_size is not None and sizes[-1] != self.max_batch_size:
            raise FieldProblem("allowedBatchSizes", sizes,
                               f"a list ending with maxBatchSize ({self.max_batch_size})")
        if sizes and self.max_batch_size is None:
            raise FieldProblem("maxBatchSize", None, f"set to {sizes[-1]}, the last allowedBatchSizes")
        return self


class OfficeHours(Strict):
    """A window in which a scale-to-zero server keeps pods whatever its traffic (KEDA's cron trigger)."""

    timezone: str = Field("UTC", description="IANA time zone of start and end, e.g. Europe/Berlin.")
    start: str = Field(description="Cron expression opening the window: 5 fields, minute hour day-of-month "
                                   "month day-of-week, e.g. `0 8 * * 1-5` (KEDA's parser: no seconds, no @daily).")
    end: str = Field(description="Cron expression closing the window, e.g. `0 19 * * 1-5`; not equal to start.")
    replicas: int = Field(1, ge=1, le=100, description="Stable pods kept inside the window (at most maxReplicas); "
                                                       "a canary keeps canaryReplicas.")

    @field_validator("start", "end")
    @classmethod
    def _cron(cls, spec: str) -> str:
        from components.serving.scale_to_zero import parse_cron  # the component's parser (imports Pulumi)

        try:
            parse_cron(spec)
        except ValueError as error:
            raise ValueError(f"a 5-field cron expression (minute hour day-of-month month day-of-week, as KEDA's "
                             f"cron scaler parses it): {error}") from None
        return spec

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        # KEDA loads it with Go's time.LoadLocation: an IANA name. "Local" would be the operator pod's zone.
        if name == "Local" or not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name):
            raise ValueError("an IANA time zone name such as Europe/Berlin or UTC")
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("an IANA time zone name such as Europe/Berlin or UTC (not in the tz database)") from None
        return name

    @model_validator(mode="after")
    def _distinct(self) -> OfficeHours:
        from components.serving.scale_to_zero import parse_cron

        # KEDA refuses equal strings; an equal schedule spelt otherwise (1-5 and MON-FRI) it accepts, and its
        # window never closes (the next start and end coincide: cron_scaler.go counts that as inside).
        if parse_cron(self.start) == parse_cron(self.end):
            raise FieldProblem("end", self.end, f"a schedule other than start ({self.start!r}): equal times open "
                                                "a window that never closes (KEDA refuses identical strings)")
        return self


class ScaleToZero(Strict):
    """Run no pod while a server is idle (KEDA ScaledObject, minReplicaCount 0), with ``replicas: 0``."""

    schedule: OfficeHours | None = Field(None, description="Office hours: pods kept inside the window; outside, "
                                                           "the server scales to zero once idle.")
    idle_after_seconds: int = Field(900, ge=60, le=86_400,
                                    description="Seconds without traffic (and outside the schedule) before "
                                                "the last pod goes (KEDA cooldownPeriod).")
    hold_requests: bool = Field(True, description="Hold a request for a server at zero pods until a pod is "
                                                  "ready (KEDA HTTP add-on interceptor, REST and gRPC, behind "
                                                  "trafficRouter proxy); false: requests fail until the schedule "
                                                  "or traffic wakes it.")
    cold_start_timeout_seconds: int = Field(
        600, ge=60, le=3600, description="How long a held request waits for the first pod before a 504: a GPU "
                                         "node from zero, the images and the model load (`plan --timing` "
                                         "estimates about 3.5 min for dev's GPU server), with room for a slow "
                                         "spot launch. Clients must allow as long.")

    @model_validator(mode="after")
    def _wakes(self) -> ScaleToZero:
        if self.schedule is None and not self.hold_requests:
            raise FieldProblem("holdRequests", False, "true, or a schedule: with neither nothing wakes the server "
                                                      "from zero pods (its request rate is empty while no pod runs)")
        return self


class Server(Strict):
    """One TF Serving Deployment (plus its canary), keyed by a stable name in ``servers``."""

    models: dict[str, Model] = Field(description="Models to serve, keyed by model name.")
    node_pool: str = Field("gpu", description="Node pool (key of nodePools) the pods run on.")
    gpus: int = Field(1, ge=0, le=16, description="GPUs per pod; > 0 runs the `-gpu` image, 0 the CPU image.")
    gpu_partition: str | None = Field(
        None, pattern=r"^[1-7]g\.[0-9]+gb$",
        description="The MIG partition each pod asks for (e.g. `1g.10gb`): must be its pool's `migProfile`, "
                    "with `gpus: 1`. EKS pods request `nvidia.com/mig-<partition>`, GKE pods `nvidia.com/gpu` "
                    "on nodes of that partition size.")
    gpu_memory_fraction: float | None = Field(
        None, gt=0, le=1, description="`--per_process_gpu_memory_fraction`; default 0.9 / pods per GPU "
                                      "on a time-sliced pool, unset otherwise (TF takes all GPU memory).")
    cpu: str = Field("2", description="CPU request and limit per pod (Kubernetes quantity).")
    memory: str = Field("4Gi", description="Memory request and limit per pod (Kubernetes quantity).")
    image: str | None = Field(None, description="Full TF Serving image (mirror or digest); its tag must "
                                                "contain `-gpu` exactly when gpus > 0. Default "
                                                "docker.io/tensorflow/serving:<servingImageVersion>[-gpu].")
    replicas: int = Field(1, ge=0, le=100, description="Minimum pods (the autoscaler's floor); 0 only with "
                                                       "scaleToZero.")
    max_replicas: int = Field(3, ge=1, le=100, description="Maximum pods the autoscaler may reach.")
    target_requests_per_second: float | None = Field(
        50, ge=0.001, le=MAX_TARGET_RPS,
        # The HPA's averageValue is a quantity in milli-units at best: below 0.001 it renders 0m, a target the
        # HPA cannot aim for (components/serving/autoscaling.py).
        description="Per-pod request rate the HPA aims for (Pods metric from prometheus-adapter; 0.001 to "
                    "1000000); null scales on CPU only.")
    cpu_utilization: int = Field(70, ge=10, le=100, description="Per-pod CPU utilisation (% of request) "
                                                                "the HPA aims for.")
    scale_down_stabilization_seconds: int = Field(300, ge=0, le=3600,
                                                  description="HPA scale-down stabilization window.")
    batching: Batching = Field(default_factory=Batching, description="Server-side batching.")
    sync_interval_seconds: int = Field(DEFAULT_SYNC_INTERVAL_SECONDS, ge=10, le=3600,
                                       description="How often the sync sidecar lists the bucket (each look "
                                                   "costs a LIST request per model: 5760 a day per pod and "
                                                   "model at 15 s). A new version serves within this plus "
                                                   "the copy, TF Serving's 5 s poll and the load "
                                                   "(docs/model-cache.md).")
    model_cache: bool = Field(True, description="Share a node-local cache of model versions among the server's "
                                                "pods on a node (hostPath /var/lib/tfplatform/model-cache, made "
                                                "writable by the model-cache-prep DaemonSet): a version is "
                                                "downloaded once per node, and a second or restarted pod on a "
                                                "warm node starts without a bucket request. It holds at most "
                                                "modelsVolumeSize per node: count it into the node's disk "
                                                "(docs/model-cache.md).")
    image_pre_pull: bool | None = Field(
        None, description="Pull the server's images (TF Serving's, the sync image) onto each of its nodes as "
                          "soon as the node is Ready, by a DaemonSet that only sleeps: a new GPU node pulls "
                          "TF Serving's image while it waits for its GPUs and the models download, instead of "
                          "after (docs/cold-start.md). Default on for GPU servers whose images the pool pulls "
                          "whole (not streamed from Artifact Registry, no secondary boot disk).")
    startup_timeout_seconds: int = Field(600, ge=30, le=7200,
                                         description="Time allowed for the first model load before "
                                                     "the pod is restarted.")
    canary_weight: int = Field(10, ge=1, le=99, description="Percent of unlabelled traffic sent to the "
                                                            "canary while a model has an active canaryVersion.")
    canary_replicas: int = Field(1, ge=1, le=20, description="Pods of the canary Deployment (with scaleToZero: "
                                                             "while the server is awake).")
    scale_to_zero: ScaleToZero | None = Field(None, description="Scale the server (stable and canary) to zero "
                                                                "pods when idle; needs replicas 0 "
                                                                "(docs/scale-to-zero.md).")
    models_volume_size: str = Field(
        "20Gi", description="Size limit of the pod's models volume (emptyDir). It must hold every version the "
                            "pod serves plus the one being copied (N+1 times the model size); above it the "
                            "kubelet evicts the pod, so the sync skips a copy that would not fit.")
    sync_cpu: str = Field("500m", description="CPU request and limit of each model-sync container. The AWS CLI "
                                              "spends about 4.3 CPU-seconds per GiB copied: 500m copies 1 GiB "
                                              "in about 9 s, 100m in about 45 s.")
    sync_memory: str = Field("512Mi", description="Memory request and limit of each model-sync container.")
    expected_model_size: str = Field(
        "1Gi", description="Bytes one pod copies and loads at start (every served version of every model; "
                           "Kubernetes quantity). Only the scale-up estimate of `plan --timing` uses it.")

    @field_validator("cpu", "memory", "sync_cpu", "sync_memory", "models_volume_size", "expected_model_size")
    @classmethod
    def _quantity(cls, quantity: str) -> str:
        return check_quantity(quantity)

    @field_validator("models")
    @classmethod
    def _model_names(cls, models: dict[str, Model]) -> dict[str, Model]:
        if not models:
            raise ValueError("at least one model")
        return check_keys(models, MODEL_NAME_PATTERN)

    @field_validator("image")
    @classmethod
    def _image(cls, image: str | None) -> str | None:
        if image is not None and not re.fullmatch(r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+)?"
                                              r"(@sha256:[0-9a-f]{64})?$", image):
            raise ValueError("an image reference registry/repository:tag[@sha256:digest]")
        return image

    @model_validator(mode="after")
    def _server(self) -> Server:
        if self.max_replicas < self.replicas:
            raise FieldProblem("maxReplicas", self.max_replicas, f"at least replicas ({self.replicas})")
        if self.image is not None:
            tag = self.image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]
            if ("-gpu" in tag) != (self.gpus > 0):
                raise FieldProblem("image", self.image,
                                   "a tag with -gpu when gpus > 0 and without it when gpus is 0 (the "
                                   "CPU build cannot use a GPU; the GPU build wastes one otherwise)"
                                   if tag else "an image with a tag (…:2.18.0 or …:2.18.0-gpu)")
        if self.gpu_memory_fraction is not None and not self.gpus:
            raise FieldProblem("gpuMemoryFraction", self.gpu_memory_fraction, "unset when gpus is 0")
        self._check_scale_to_zero()
        return self

    def _check_scale_to_zero(self) -> None:
        stz = self.scale_to_zero
        if self.replicas == 0 and stz is None:
            raise FieldProblem("replicas", 0, "at least 1, or 0 together with a scaleToZero block")
        if stz is None:
            return
        if self.replicas != 0:
            raise FieldProblem("scaleToZero", stz.model_dump(by_alias=True),
                               f"unset, or replicas 0 (not {self.replicas}): the scaleToZero block is what lets "
                               "the floor be 0")
        if self.target_requests_per_second is None:
            raise FieldProblem("targetRequestsPerSecond", None,
                               "a per-pod rate with scaleToZero: the request-rate trigger keeps a busy server "
                               "awake (CPU alone cannot: KEDA scales to zero on other triggers only)")
        if stz.schedule is not None and stz.schedule.replicas > self.max_replicas:
            raise FieldProblem("scaleToZero.schedule.replicas", stz.schedule.replicas,
                               f"at most maxReplicas ({self.max_replicas})")

    @property
    def has_canary(self) -> bool:
        return any(m.canary_active for m in self.models.values())

    @property
    def cpu_cores(self) -> float:
        return cpu_cores(self.cpu)


def default_gpu_fraction(pods_per_gpu: int) -> float:
    """Share of GPU memory per TF Serving process when pods share a GPU, with 10% headroom."""
    return math.floor(90 / pods_per_gpu) / 100


JWT_IMPLEMENTATIONS = ("envoy-gateway", "istio")


class JwtAuthentication(Strict):
    """The token issuer whose JWTs the gateway accepts (``exposure.jwt``)."""

    issuer: str = Field(description="Expected `iss` claim, e.g. https://issuer.example.com.")
    jwks_uri: str = Field(description="HTTPS URL of the issuer's JSON Web Key Set.")
    audiences: list[str] = Field(min_length=1, max_length=8, description="Accepted `aud` values (at least one: "
                                                                         "without, any token of the issuer "
                                                                         "passes, whatever it was issued for).")

    @field_validator("jwks_uri")
    @classmethod
    def _https(cls, uri: str) -> str:
        if not re.fullmatch(r"^https://[^\s/]+(/\S*)?$", uri) or len(uri) > 253:
            raise ValueError("an https:// URL of at most 253 characters (keys fetched in clear could be forged)")
        return uri

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, issuer: str) -> str:
        if not issuer.strip() or len(issuer) > 253:
            raise ValueError("the issuer's `iss` value (1-253 characters)")
        return issuer

    @field_validator("audiences")
    @classmethod
    def _audiences(cls, audiences: list[str]) -> list[str]:
        for index, audience in enumerate(audiences):
            if not audience.strip():
                raise FieldProblem(str(index), audience, "a non-empty audience")
        return check_unique(audiences)


class Exposure(Strict):
    """External access to the REST API through a Gateway API ``Gateway`` with TLS (off by default)."""

    enabled: bool = Field(False, description="Publish the models' REST paths through a Gateway.")
    gateway_class_name: str = Field("", description="GatewayClass of the installed controller (e.g. "
                                                    "`amazon-vpc-lattice`, `gke-l7-global-external-managed`).")
    hostname: str = Field("", description="DNS name clients use.")
    tls_secret_name: str = Field("", description="Secret (type kubernetes.io/tls) in the serving namespace "
                                                 "holding the certificate, e.g. from cert-manager.")
    proxy_namespaces: list[Annotated[str, Field(pattern=DNS_LABEL)]] = Field(
        default_factory=list, description="Namespaces of the gateway's proxy pods (Envoy Gateway, Istio, "
                                          "NGINX...), admitted to the REST port by the network policy.")
    proxy_cidrs: list[str] = Field(default_factory=list, description="Source ranges of a load balancer "
                                   "outside the cluster, admitted to the REST port: on EKS the public subnets' "
                                   "CIDRs (where an ALB in IP mode runs), on GKE Google's front-end ranges "
                                   "35.191.0.0/16 and 130.211.0.0/22. Ranges overlapping the nodes' or pods' "
                                   "addresses (the VPC CIDR, the private subnets, podCidr) are refused: they "
                                   "would admit every pod.")
    authentication: Literal["none", "jwt", "client-certificate"] = Field(
        "none", description="What the gateway requires of every request: `jwt` (a bearer token from "
                            "`jwt.issuer`, checked against its JWKS; gatewayImplementation envoy-gateway or "
                            "istio), `client-certificate` (mutual TLS against the CA certificates of "
                            "clientCaConfigMap, Gateway API's standard frontend validation; not gke) or "
                            "`none`. Required (not none) when protect is true, unless allowAnonymous.")
    gateway_implementation: Literal["envoy-gateway", "istio", "gke", "other"] = Field(
        "other", description="Controller behind gatewayClassName, which decides how authentication is "
                             "rendered: `envoy-gateway` (SecurityPolicy), `istio` (RequestAuthentication and "
                             "AuthorizationPolicy), `gke` or `other` (Gateway API fields only).")
    jwt: JwtAuthentication | None = Field(None, description="Token issuer for authentication jwt.")
    client_ca_config_map: str = Field("", description="ConfigMap in the serving namespace whose `ca.crt` "
                                                      "holds the CA certificates client certificates must "
                                                      "chain to (authentication client-certificate).")
    allow_anonymous: bool = Field(False, description="Opt out of authentication on a protected stack: the API "
                                                     "answers anyone who reaches the hostname. Needs "
                                                     "anonymousReason.")
    anonymous_reason: str = Field("", description="Why the protected stack's API may be called anonymously "
                                                  "(recorded in the stack's config, required with allowAnonymous).")

    @field_validator("proxy_cidrs")
    @classmethod
    def _cidrs(cls, cidrs: list[str]) -> list[str]:
        return check_cidrs(cidrs)

    @field_validator("proxy_namespaces")
    @classmethod
    def _distinct(cls, namespaces: list[str]) -> list[str]:
        return check_unique(namespaces)

    @model_validator(mode="after")
    def _complete(self) -> Exposure:
        if not self.enabled:
            return self
        if not re.fullmatch(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", self.gateway_class_name):
            raise FieldProblem("gatewayClassName", self.gateway_class_name,
                               "the name of an installed GatewayClass when enabled")
        if not re.fullmatch(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$", self.hostname):
            raise FieldProblem("hostname", self.hostname, "a DNS name such as models.example.com when enabled")
        if not re.fullmatch(DNS_LABEL.replace("{0,61}", "{0,251}"), self.tls_secret_name):
            raise FieldProblem("tlsSecretName", self.tls_secret_name,
                               "the name of a kubernetes.io/tls Secret when enabled (TLS is not optional)")
        self._check_authentication()
        return self

    def _check_authentication(self) -> None:
        if self.authentication != "jwt" and self.jwt is not None:
            raise FieldProblem("jwt", self.jwt.model_dump(by_alias=True), "unset unless authentication is jwt")
        if self.authentication != "client-certificate" and self.client_ca_config_map:
            raise FieldProblem("clientCaConfigMap", self.client_ca_config_map,
                               "unset unless authentication is client-certificate")
        if self.allow_anonymous and self.authentication != "none":
            raise FieldProblem("allowAnonymous", True, f"false: authentication is {self.authentication}")
        if self.allow_anonymous and not self.anonymous_reason.strip():
            raise FieldProblem("anonymousReason", self.anonymous_reason,
                               "a sentence saying why anyone may call the models when allowAnonymous is true")
        if self.authentication == "jwt":
            if self.jwt is None:
                raise FieldProblem("jwt", None, "issuer, jwksUri and audiences when authentication is jwt")
            if self.gateway_implementation not in JWT_IMPLEMENTATIONS:
                # Gateway API has no authentication of its own: JWT validation is a controller's policy CRD.
                raise FieldProblem("gatewayImplementation", self.gateway_implementation,
                                   f"one of {list(JWT_IMPLEMENTATIONS)} for authentication jwt (Gateway API "
                                   "defines no JWT validation; GKE's Gateway offers IAP instead), or "
                                   "authentication client-certificate")
        if self.authentication == "client-certificate":
            if not re.fullmatch(DNS_LABEL.replace("{0,61}", "{0,251}"), self.client_ca_config_map):
                raise FieldProblem("clientCaConfigMap", self.client_ca_config_map,
                                   "the name of a ConfigMap with key ca.crt when authentication is "
                                   "client-certificate")
            if self.gateway_implementation == "gke":
                # GKE's load balancers validate client certificates through a ServerTlsPolicy and a
                # Certificate Manager TrustConfig on the target HTTPS proxy, not the Gateway's tls.frontend:
                # https://cloud.google.com/load-balancing/docs/reference/network-security/rest/v1/projects.locations.serverTlsPolicies
                raise FieldProblem("gatewayImplementation", "gke",
                                   "envoy-gateway, istio or other with authentication client-certificate "
                                   "(GKE's Gateway validates client certificates outside Gateway API)")

    @property
    def requires_authentication(self) -> bool:
        return self.authentication != "none"


RouterKind = Literal["proxy", "gateway-api", "istio", "none"]
