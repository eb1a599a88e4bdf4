"""How long one more TF Serving replica takes to serve, from the plan: on a new node and on a warm one.

A replica the autoscaler adds goes through, in this order (the kubelet runs init containers before it
starts, and pulls the image of, the regular containers; so the steps add up rather than overlap):

1. **node** (only when no node is free): the cluster autoscaler notices the Pending pod, the cloud starts
   an instance, it joins and its GPUs are advertised;
2. **sync image**: the model-sync container's image (small);
3. **models**: the init container copies every served version, from the bucket (cold) or from the node's
   model cache (warm, components/serving/model_cache.py);
4. **serving image**: TF Serving's multi-GB GPU image, pulled whole, in parallel chunks (EKS
   ``FastImagePull``), streamed (GKE image streaming, Artifact Registry images only) or already on a
   secondary boot disk; nothing on a node that ran the server before;
5. **load**: TF Serving loads the versions (and, on a GPU, initialises CUDA);
6. **ready**: the startup probe's and the readiness probe's next period.

With an image pre-pull DaemonSet (``<deployment>-prepull``, components/serving/image_prepull.py) a new
node pulls the server's images from the moment it is Ready, while the serving pod still waits for the
node's GPUs, pulls the sync image and copies the models: steps 2 and 4 count only what is left of their
pull after what ran before them (this ignores that the overlapping steps share the node's network and disk).

A server that scales to zero (a KEDA ScaledObject with ``minReplicaCount: 0``) first waits for KEDA to
wake it: the HTTP add-on's push for a held request, else KEDA's next poll. Every figure is in :data:`FIGURES` with its source; those marked *estimate* are this
project's assumptions, stated so that a measurement can replace them. docs/cold-start.md explains them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.gcp.image_mirror import in_artifact_registry
from components.node_labels import POOL_LABEL
from components.serving.batching import cpu_cores
from components.serving.image_prepull import COMPONENT as PREPULL_COMPONENT
from components.serving.model_server import SERVER_LABEL, TRACK_LABEL, quantity_bytes
from stacks.config import parse_settings
from stacks.plan import ROOT
from stacks.settings import StackSettings
from stacks.stack_files import load_stack_config

GB = 1e9
GIB = 2 ** 30
MIB = 2 ** 20


@dataclass(frozen=True)
class Figure:
    value: float
    source: str


FIGURES: dict[str, Figure] = {
    # --- node -------------------------------------------------------------------------------------
    "autoscaler_scan_s": Figure(10, "cluster-autoscaler --scan-interval default 10s (kubernetes/autoscaler "
                                    "cluster-autoscaler/FAQ.md); GKE runs the same autoscaler"),
    "eks_node_s": Figure(60, "estimate: Auto Scaling group launch (~20 s) + AL2023 boot and nodeadm join (~40 s); "
                             "Linux EKS nodes are schedulable ~30 s after launch with Karpenter (public reports)"),
    "eks_gpu_ready_s": Figure(20, "estimate: the NVIDIA device plugin pod starts on the new node and advertises "
                                  "nvidia.com/gpu (the AL2023 NVIDIA AMI ships the driver)"),
    "gke_node_s": Figure(60, "estimate: Compute Engine VM create, COS boot and kubelet registration"),
    "gke_gpu_ready_s": Figure(90, "estimate: GKE's driver installer DaemonSet loads the NVIDIA driver "
                                  "(gpu_driver_version LATEST/DEFAULT) before the device plugin advertises GPUs"),
    # --- images -----------------------------------------------------------------------------------
    "pull_bytes_per_s": Figure(58e6, "AWS ML blog 'Reducing container cold start times using SOCI index on "
                                     "DLAMI and DLC': a standard pull of 15-20 GB takes 4-6 min (17.5 GB / "
                                     "300 s); containerd downloads and unpacks layers one stream at a time"),
    "parallel_pull_factor": Figure(0.68, "soci-snapshotter f1fcd05 (parallel_pull_as_fallback): parallel pull "
                                         "is 14-50 % faster than a standard pull; the midpoint, 32 %"),
    "parallel_pull_min_throughput": Figure(600, "amazon-eks-ami nodeadm/doc/examples.md: 'we recommend at "
                                                "least 600MiB/s throughput. Below that value, you may see "
                                                "longer image pull times with this flag'"),
    "stream_start_s": Figure(2, "GKE blog 'Introducing GKE image streaming' (2021): ImagePulling to Running "
                                "'in a couple of seconds (regardless of container size)'"),
    "stream_read_fraction": Figure(0.6, "estimate: TF Serving's GPU build dlopens cuDNN and the CUDA libraries "
                                        "(most of the image: tensorflow/serving Dockerfile.gpu) on its first "
                                        "model load, read on demand over the stream"),
    "stream_bytes_per_s": Figure(150e6, "estimate: on-demand reads from the image streaming backend"),
    # --- models -----------------------------------------------------------------------------------
    "sync_cpu_s_per_gib": Figure(4.3, "measured in this project: the AWS CLI spends ~4.3 CPU-seconds per GiB "
                                      "copied (serving setting syncCpu)"),
    "sha256_bytes_per_core_s": Figure(268e6, "measured here: sha256sum of 0.5 GiB in 2.0 s on one core "
                                             "(tests/test_model_sync.py's cache runs)"),
    "eks_root_volume_mib_s": Figure(125, "gp3 baseline throughput (EBS user guide, gp3 volumes)"),
    "gke_pd_balanced_mib_s": Figure(140, "estimate: pd-balanced read/write throughput of a 100 GB boot disk "
                                         "(Compute Engine 'Persistent Disk performance')"),
    # --- load and readiness -----------------------------------------------------------------------
    "load_fixed_gpu_s": Figure(10, "estimate: CUDA context and cuDNN initialisation on the first model load"),
    "load_fixed_cpu_s": Figure(2, "estimate: TF Serving start and session creation on CPU"),
    "load_bytes_per_s": Figure(500e6, "estimate: restoring SavedModel variables from a local, page-cached copy"),
    "keda_polling_s": Figure(30, "KEDA ScaledObject pollingInterval default 30 s (keda.sh docs, ScaledObject "
                                 "spec)"),
    "keda_push_s": Figure(0.7, "KEDA HTTP add-on: the scaler reads the interceptors' queues every 500 ms "
                               "(KEDA_HTTP_QUEUE_TICK_DURATION) and pushes to KEDA every 200 ms "
                               "(KEDA_HTTP_SCALER_STREAM_INTERVAL_MS), kedacore/http-add-on scaler/config.go"),
}

# Compressed image sizes (what a pull downloads). The registry's manifest has the exact figure; these are
# the defaults until images.lock.json records sizes. Matched by the first key contained in the reference.
IMAGE_BYTES: dict[str, Figure] = {
    "tensorflow/serving:": Figure(0.2 * GB, "estimate: Ubuntu base + tensorflow_model_server (CPU build)"),
    "-gpu": Figure(3.5 * GB, "estimate: nvidia/cuda:12.5.1-base + cuda-libraries-12-5 + libcudnn9-cuda-12 + "
                             "the server (tensorflow/serving tools/docker/Dockerfile.gpu)"),
    "aws-cli": Figure(0.14 * GB, "estimate: amazon/aws-cli 2.x (Amazon Linux 2 + the CLI)"),
    "google-cloud-cli": Figure(0.35 * GB, "estimate: google-cloud-cli -slim (Debian + gcloud)"),
}
DEFAULT_IMAGE_BYTES = Figure(0.2 * GB, "estimate: an image of unknown size")

# A node's network bandwidth, a ceiling on every pull and download. AWS's figure is the instance's
# *baseline* (the "up to" burst runs out during a multi-GB pull), which applies to inbound traffic too
# (EC2 User Guide, "Amazon EC2 instance network bandwidth"); GCP documents egress caps, used here for
# ingress as an estimate. With the defaults the per-stream pull rate stays below these, so they bind only
# on smaller types. Typed from the providers' instance tables: botocore's EC2 model has no bandwidths, so
# nothing here checks them (docs/known-gaps.md).
NODE_NETWORK_BYTES_PER_S: dict[str, Figure] = {
    "m6i.large": Figure(0.781e9 / 8, "EC2 general purpose network specifications: m6i.large baseline 0.781 Gbps"),
    "g5.xlarge": Figure(2.5e9 / 8, "EC2 accelerated computing network specifications: g5.xlarge baseline 2.5 Gbps"),
    "g6.xlarge": Figure(2.5e9 / 8, "EC2 accelerated computing network specifications: g6.xlarge baseline 2.5 Gbps"),
    "p4d.24xlarge": Figure(400e9 / 8, "EC2 accelerated computing network specifications: p4d.24xlarge 4 x 100 Gbps"),
    "e2-standard-4": Figure(8e9 / 8, "estimate: Compute Engine 'Network bandwidth': 2 Gbps egress per vCPU (4)"),
    "g2-standard-8": Figure(16e9 / 8, "estimate: Compute Engine G2 machine types: g2-standard-8 egress 16 Gbps"),
}
DEFAULT_NODE_NETWORK_BYTES_PER_S = Figure(0.5e9 / 8, "estimate: an instance type not in the table (below "
                                                     "every baseline listed)")


def f(key: str) -> float:
    return FIGURES[key].value


def image_bytes(reference: str) -> float:
    for key in ("-gpu", "tensorflow/serving:", "aws-cli", "google-cloud-cli"):
        if key in reference:
            return IMAGE_BYTES[key].value
    return DEFAULT_IMAGE_BYTES.value


@dataclass(frozen=True)
class Pool:
    """What the plan says about the nodes a server lands on."""

    cloud: str
    name: str
    machine: str
    gpu: bool
    fast_image_pull: bool = False
    root_volume_mib_s: float = 125
    image_streaming: bool = False
    image_cache_disk: bool = False

    @property
    def cloud_key(self) -> str:
        return "eks" if self.cloud == "aws" else "gke"

    @property
    def network_bytes_per_s(self) -> float:
        """The node's network bandwidth (:data:`NODE_NETWORK_BYTES_PER_S`)."""
        return NODE_NETWORK_BYTES_PER_S.get(self.machine, DEFAULT_NODE_NETWORK_BYTES_PER_S).value


@dataclass
class Steps:
    """Seconds per step, in order; steps of 0 s are left out of the rendering."""

    parts: list[tuple[str, float]] = field(default_factory=list)

    def add(self, name: str, seconds: float) -> None:
        self.parts.append((name, seconds))

    @property
    def total(self) -> float:
        return sum(s for _, s in self.parts)

    def render(self) -> str:
        return " + ".join(f"{name} {seconds:.0f}s" for name, seconds in self.parts if round(seconds) > 0)


@dataclass(frozen=True)
class ServerEstimate:
    server: str
    pool: Pool
    cold_node: Steps
    warm_node: Steps
    notes: tuple[str, ...] = ()


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def render(estimates: list[ServerEstimate]) -> str:
    lines = ["scale-up of one more replica (figures and sources: docs/cold-start.md, stacks/scale_up.py):"]
    for e in estimates:
        pool = e.pool
        lines.append(f"  {e.server} on pool {pool.name} ({pool.machine}, {pool.cloud.upper()}):")
        lines.append(f"    no free node:      {_minutes(e.cold_node.total):>7} = {e.cold_node.render()}")
        lines.append(f"    warm node (free):  {_minutes(e.warm_node.total):>7} = {e.warm_node.render()}")
        lines.extend(f"    note: {note}" for note in e.notes)
    return "\n".join(lines)


def _cpu_cores(quantity: str | None) -> float:
    """Cores of a container's CPU limit (one core when it has none)."""
    return cpu_cores(quantity) if quantity else 1.0


def _pools(resources: list[dict[str, Any]]) -> dict[str, Pool]:
    """Pool name -> what its node group (EKS, with its launch template) or node pool (GKE) says."""
    by_name = {r["name"]: r for r in resources if r["custom"]}
    pools: dict[str, Pool] = {}
    for r in resources:
        inputs = r.get("inputs") or {}
        if r["type"] == "aws:eks/nodeGroup:NodeGroup":
            name = (inputs.get("labels") or {}).get(POOL_LABEL)
            template = (by_name.get(f"{r['name']}-lt") or {}).get("inputs") or {}
            ebs = (template.get("blockDeviceMappings") or [{}])[0].get("ebs") or {}
            user_data = base64.b64decode(template.get("userData") or "").decode()
            pools[name] = Pool("aws", name, (inputs.get("instanceTypes") or ["?"])[0],
                               gpu=str(inputs.get("amiType", "")).endswith("NVIDIA"),
                               fast_image_pull="FastImagePull: true" in user_data,
                               root_volume_mib_s=float(ebs.get("throughput") or f("eks_root_volume_mib_s")))
        elif r["type"] == "gcp:container/nodePool:NodePool":
            config = inputs.get("nodeConfig") or {}
            name = (config.get("labels") or {}).get(POOL_LABEL)
            disks = config.get("secondaryBootDisks") or []
            pools[name] = Pool("gcp", name, config.get("machineType", "?"),
                               gpu=bool(config.get("guestAccelerators")),
                               root_volume_mib_s=f("gke_pd_balanced_mib_s"),
                               image_streaming=bool((config.get("gcfsConfig") or {}).get("enabled")),
                               image_cache_disk=any(d.get("mode") == "CONTAINER_IMAGE_CACHE" for d in disks))
    return pools


def pull_seconds(image: str, pool: Pool) -> tuple[float, str | None]:
    """Seconds to pull ``image`` onto a new node of ``pool``, and a note when a feature does not apply."""
    size = image_bytes(image)
    if pool.image_cache_disk:
        return 0.0, None
    network = pool.network_bytes_per_s
    if pool.image_streaming:
        if in_artifact_registry(image):
            return (f("stream_start_s")
                    + size * f("stream_read_fraction") / min(f("stream_bytes_per_s"), network)), None
        note = f"image streaming is on, but {image.split('@')[0]} is not in Artifact Registry: pulled whole"
        return size / min(f("pull_bytes_per_s"), network), note
    seconds = size / min(f("pull_bytes_per_s"), network)
    if pool.fast_image_pull:
        if pool.root_volume_mib_s >= f("parallel_pull_min_throughput"):
            return max(seconds * f("parallel_pull_factor"), size / network), None
        return seconds, (f"fastImagePull with a {pool.root_volume_mib_s:.0f} MiB/s root volume: no faster "
                         f"(nodeadm advises {f('parallel_pull_min_throughput'):.0f})")
    return seconds, None


def _container(spec: dict, name: str) -> dict:
    return next((c for c in spec.get("containers") or [] if c.get("name") == name), {})


def estimate_server(server: str, deployment: dict, pool: Pool, model_bytes: float,
                    scales_from_zero: float | None, prepulled: frozenset[str] = frozenset()) -> ServerEstimate:
    spec = deployment["spec"]["template"]["spec"]
    serving = _container(spec, "tfserving")
    sync = next((c for c in spec.get("initContainers") or [] if c.get("image")), {})
    sync_cores = _cpu_cores(((sync.get("resources") or {}).get("limits") or {}).get("cpu"))
    cached = any(e.get("name") == "MODEL_CACHE_DIR" for e in sync.get("env") or [])
    notes: list[str] = []

    # The AWS CLI's CPU bounds a download (10 concurrent requests: far below S3's per-prefix request
    # rates), unless the node's network is slower.
    bucket_copy = max(model_bytes / GIB * f("sync_cpu_s_per_gib") / sync_cores, model_bytes / pool.network_bytes_per_s)
    verify = model_bytes / (f("sha256_bytes_per_core_s") * sync_cores)
    local_copy = model_bytes / (pool.root_volume_mib_s * MIB / 2)  # read and write on the same disk
    load = (f("load_fixed_gpu_s") if pool.gpu else f("load_fixed_cpu_s")) + model_bytes / f("load_bytes_per_s")
    probes = [(serving.get(p) or {}).get("periodSeconds", 0) for p in ("startupProbe", "readinessProbe")]
    ready = float(sum(probes))

    def steps(new_node: bool) -> Steps:
        out = Steps()
        if scales_from_zero is not None:
            out.add("wake from zero", scales_from_zero)
        # Seconds a pre-pull has been running when the serving pod needs an image: from node Ready, while
        # the pod waits for the GPUs, then through the steps before that image's.
        head_start = f(f"{pool.cloud_key}_gpu_ready_s") if pool.gpu else 0.0
        if new_node:
            out.add("node", f("autoscaler_scan_s") + f(f"{pool.cloud_key}_node_s") + head_start)
            sync_pull, note = pull_seconds(sync.get("image", ""), pool)
            if sync.get("image") in prepulled:
                sync_pull = max(0.0, sync_pull - head_start)
            out.add("sync image", sync_pull)
            head_start += sync_pull
        # With the cache, a new node's first pod downloads into the cache (checked in full) and copies from
        # there (sizes checked); a warm node's pod copies the cached entry and checks it in full
        # (components/serving/model_sync.py, docs/model-cache.md).
        if not cached:
            models = bucket_copy + verify
        elif new_node:
            models = bucket_copy + verify + local_copy
        else:
            models = local_copy + verify
        out.add("models", models)
        if new_node:
            serving_pull, note = pull_seconds(serving.get("image", ""), pool)
            if note:
                notes.append(note)
            if serving.get("image") in prepulled:
                serving_pull = max(0.0, serving_pull - head_start - models)
            out.add("serving image", serving_pull)
        out.add("load", load)
        out.add("ready", ready)
        return out

    cold, warm = steps(True), steps(False)
    if not cached:
        notes.append("no node-local model cache: a pod on a warm node copies every version from the bucket again")
    return ServerEstimate(server, pool, cold, warm, tuple(dict.fromkeys(notes)))


def estimate(plan: dict[str, Any], model_bytes: dict[str, float]) -> list[ServerEstimate]:
    """Per server (its stable track): one more replica on a new node and on a warm, free one.
    ``model_bytes`` is each server's expected model size (settings: ``expectedModelSize``)."""
    resources = plan["resources"]
    pools = _pools(resources)
    zero = {}
    for r in resources:
        if r["type"].endswith(":ScaledObject"):
            spec = (r.get("inputs") or {}).get("spec") or {}
            if spec.get("minReplicaCount", 1) == 0:
                # A held request wakes the server through the add-on's push; otherwise the next poll.
                pushed = any(t.get("type") == "external-push" for t in spec.get("triggers") or [])
                zero[(spec.get("scaleTargetRef") or {}).get("name")] = (
                    f("keda_push_s") if pushed else float(spec.get("pollingInterval", f("keda_polling_s"))))
    # Images each pre-pull DaemonSet pulls, by its name (``<deployment>-prepull``).
    prepull = {((r.get("inputs") or {}).get("metadata") or {}).get("name"):
               frozenset(c.get("image") for c in r["inputs"]["spec"]["template"]["spec"].get("containers") or [])
               for r in resources if r["type"] == "kubernetes:apps/v1:DaemonSet"
               and (((r.get("inputs") or {}).get("metadata") or {}).get("labels") or {}).get(
                   "app.kubernetes.io/component") == PREPULL_COMPONENT}
    estimates = []
    for r in resources:
        if r["type"] != "kubernetes:apps/v1:Deployment":
            continue
        inputs = r.get("inputs") or {}
        template = inputs["spec"]["template"]
        labels = (template.get("metadata") or {}).get("labels") or {}
        if labels.get(TRACK_LABEL) != "stable" or not _container(template["spec"], "tfserving"):
            continue
        server = labels[SERVER_LABEL]
        pool = pools.get((template["spec"].get("nodeSelector") or {}).get(POOL_LABEL))
        if pool is None:
            continue
        name = (inputs.get("metadata") or {}).get("name")
        estimates.append(estimate_server(server, inputs, pool, model_bytes.get(server, GIB), zero.get(name),
                                         prepull.get(f"{name}-prepull", frozenset())))
    return sorted(estimates, key=lambda e: e.server)


def stack_settings(stack: str, config_file: Path | None = None, root: Path = ROOT) -> StackSettings:
    """The settings ``plan`` planned with (the stack file, or ``--config-file``)."""
    cfg = load_stack_config(root / "Pulumi.yaml", config_file or root / f"Pulumi.{stack}.yaml", stack)
    return parse_settings(cfg.config)


def model_bytes(settings: StackSettings) -> dict[str, float]:
    """Server -> its ``expectedModelSize`` in bytes."""
    return {key: float(quantity_bytes(server.expected_model_size)) for key, server in settings.servers.items()}
