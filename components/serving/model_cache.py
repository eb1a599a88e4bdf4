"""The node-local model cache: a directory per server on each serving node, shared by its pods.

The sync containers of every TF Serving pod copy model versions from the bucket into the pod's own
``emptyDir`` (``model_sync.py``). With the cache, the first pod on a node downloads a version into
``/var/lib/tfplatform/model-cache/<namespace>/<server>`` on the node, and every later pod of that server
on that node (a second replica, a restarted pod, a rollout's new pod, the canary) copies it from there:
a version is pulled once per node, not once per pod. The script's rules (verified entries only, a lock
per version, pruning, degrading to direct copies) are in its header and in docs/model-cache.md.

How the pods get the directory. The serving namespace enforces Pod Security ``restricted``, which
forbids ``hostPath`` volumes in a pod but allows ``persistentVolumeClaim`` ones
(https://kubernetes.io/docs/concepts/security/pod-security-standards/, "Volume Types"). So, as KServe's
LocalModelCache does it (kserve/kserve pkg/controller/v1alpha1/localmodel/reconcilers/utils.go
``ReconcileForIsvcs``: a cluster-scoped PersistentVolume from the node group's ``persistentVolumeSpec``
plus a PVC in the workload's namespace whose ``spec.volumeName`` names it;
test/e2e/modelcache/test_localmodelcache.py: one ``ReadWriteOnce`` PV of a node-local path, used by pods
on several nodes), a cluster-scoped PersistentVolume of the node directory is pre-bound to a claim in the
serving namespace (``storageClassName: ""`` so no default class provisions anything, ``claimRef`` on the
volume and ``volumeName`` on the claim so nothing else binds either). Every node mounts its own
directory under the one claim: hostPath is not an attachable volume, so ``ReadWriteOnce`` is not held
to one node (the attach/detach controller enforces it for attachable volumes only). One volume per
namespace, each server's pods mounting their own ``subPath``: servers never see each other's cache, and
adding a server adds no PersistentVolume (a PVC without a storage class cannot be resized, so the claim
must never change: its capacity is nominal, see :data:`NOMINAL_CAPACITY`).

Who may write it. The kubelet creates a ``DirectoryOrCreate`` hostPath (and a missing ``subPath``) as
root, mode 0755, and applies no ``fsGroup`` to hostPath volumes, so the non-root sync containers could
not write it. The ``model-cache-prep`` DaemonSet (on the pools of the cached servers) makes each server's
directory and hands it to the sync UID: root with every capability dropped but ``CHOWN`` (chmod and
mkdir on root's own directories need none), read-only root filesystem, no network, no API token. It
mounts the node directory through a second pre-bound volume and claim in its own namespace, so that
namespace needs Pod Security ``baseline`` only (root and ``CHOWN`` are allowed there, hostPath volumes
are not, and it uses none), never ``privileged``. Until it has run on a node, the sync finds the
directory not writable and copies from the bucket (one log line a round).

Bounds. A hostPath has no size limit. Each server's pods keep in the cache what they select (the same
policy and grace as their own volume) and the sync refuses to grow a server's cache beyond
``MODEL_CACHE_MAX_BYTES`` (the composition passes the server's ``modelsVolumeSize``), so a node's cache
holds at most the sum of ``modelsVolumeSize`` of the cached servers running there; the prep deletes the
directories of servers the stack no longer runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.node_labels import GPU_TAINT_KEY, POOL_LABEL

COMPUTE_CLASS_LABEL = "cloud.google.com/compute-class"
"""GKE's label (and taint key) of nodes serving a ComputeClass."""
from components.pod_security import pod_security_labels
from components.serving.model_server import MODEL_CACHE_MOUNT, RUN_AS, pull_policy

HOST_ROOT = "/var/lib/tfplatform/model-cache"
"""Node directory holding ``<namespace>/<server>/`` cache directories (on the node's root disk: /var is
writable on EKS AL2023 and on GKE's Container-Optimized OS)."""
MOUNT_PATH = MODEL_CACHE_MOUNT
"""Where the sync containers mount their server's cache directory (``MODEL_CACHE_DIR``)."""
CLAIM_NAME = "model-cache"
"""The claim in the serving namespace."""
PREP_NAME = "model-cache-prep"
PREP_MOUNT = "/cache"
PREP_PERIOD_SECONDS = 60
"""The prep re-checks its directories this often (a directory the kubelet re-created as root, a server
added while its pod was down)."""
NOMINAL_CAPACITY = "1Gi"
"""Capacity of the volumes and request of the claims. Binding needs one, a hostPath enforces none, and a
claim without a storage class can never be resized, so it is a constant; the real bound is the sync's
``MODEL_CACHE_MAX_BYTES`` per server (module docstring)."""
SERVER_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
PREP_SCAN_SKIPS = {
    # checkov's per-resource skips (checkov/kubernetes/kubernetes_utils.py reads ``checkov.io/skip<n>:
    # <check>=<reason>`` from the object's annotations), so the three root checks stay on for every other
    # workload; a path-scoped skip in .checkov.yaml is not honoured for Kubernetes manifests.
    "checkov.io/skip1": "CKV_K8S_23=root only to chown the node cache directory to the sync UID",
    "checkov.io/skip2": "CKV_K8S_40=UID 0 only to chown the node cache directory to the sync UID",
    "checkov.io/skip3": "CKV_K8S_25=adds CHOWN alone after dropping ALL",
}
"""Scanner skips on the prep DaemonSet, each with its reason (the module docstring says why it is root)."""


@dataclass(frozen=True)
class ModelCacheArgs:
    """Inputs of :class:`ModelCache`."""

    namespace: pulumi.Input[str]
    """The serving namespace: the claim lives there, and it names the node directory
    (``HOST_ROOT/<namespace>``) and the cluster-scoped volumes."""
    servers: list[str]
    """Servers whose pods use the cache: one directory each (``<namespace>/<server>``), mounted by their
    pods as ``subPath``. Directories of servers not listed are deleted on every node the prep runs on."""
    node_pools: list[str]
    """Values of ``tfplatform.io/node-pool`` the cached servers run on: the prep runs there only."""
    image: str
    """Image of the prep container: a shell with coreutils (``stat``, ``chown``). The composition passes
    the sync image, already pulled on every serving node."""
    compute_classes: list[str] = field(default_factory=list)
    """GKE ComputeClasses the cached servers run on: nodes GKE auto-provisions for a class carry its
    ``cloud.google.com/compute-class`` label and taint, not the pool label; the prep runs there too."""
    owner_uid: int = RUN_AS
    """UID (and GID) of the sync containers, which must write the directories."""
    prep_namespace: str = "model-cache"
    """Namespace of the prep DaemonSet (Pod Security ``baseline``, default-deny network policy)."""
    tolerations: list[dict] = field(default_factory=lambda: [
        {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}])
    """Taints of the serving pools the prep must tolerate (GPU nodes: ``nvidia.com/gpu``)."""


PREP_SCRIPT = r"""
# model-cache-prep: makes this node's model cache directory of each server ($@) writable by the sync
# containers' UID, and deletes the directories of servers no longer listed. Runs as root with CAP_CHOWN
# only: mkdir and chmod in root's own directories need no capability, chown needs CHOWN.
set -u
root=__ROOT__
owner="__UID__:__GID__"
log() { echo "model-cache-prep: $*" >&2; }
listed() { lt_name="$1"; shift; for lt_server in "$@"; do [ "$lt_server" = "$lt_name" ] && return 0; done; return 1; }
prepare() {
  for server in "$@"; do
    dir="$root/$server"
    [ -d "$dir" ] || mkdir "$dir" || { log "cannot create $dir"; continue; }
    [ "$(stat -c %u:%g "$dir")" = "$owner" ] && continue
    chmod 0750 "$dir" 2> /dev/null  # while root owns it (made here, or by the kubelet for a subPath)
    if chown "$owner" "$dir"; then log "$dir is ready for $owner"; else log "cannot hand $dir to $owner"; fi
  done
  for dir in "$root"/*; do
    if [ ! -d "$dir" ] || listed "${dir##*/}" "$@"; then continue; fi
    # A server the stack no longer runs. Its files are the sync UID's: made root's first (no symlink is
    # followed), so root may delete them without CAP_DAC_OVERRIDE.
    if chown -R -h __RECLAIM__ "$dir" && rm -rf "$dir"; then log "deleted $dir: no such server any more"; fi
  done
}
trap 'exit 0' TERM INT
while :; do
  prepare "$@"
  sleep __PERIOD__ & wait $!
done
"""

READY_SCRIPT = r"""for server in "$@"; do [ "$(stat -c %u:%g "__ROOT__/$server")" = "__UID__:__GID__" ] || exit 1; done"""
"""Readiness of a prep pod: every listed server's directory belongs to the sync UID (so the DaemonSet's
rollout, which ``pulumi up`` awaits, means: every serving node's cache is prepared)."""


def render_prep_script(owner_uid: int, owner_gid: int | None = None, root: str = PREP_MOUNT,
                       period: int = PREP_PERIOD_SECONDS, reclaim: str = "0:0") -> str:
    """The prep container's script (``sh -c <script> model-cache-prep <server>...``): directories go to
    ``owner_uid:owner_gid`` (gid default: the uid); a removed server's tree is first given to ``reclaim``
    (root, which then may delete it). ``root``, ``period`` and ``reclaim`` differ in tests only."""
    gid = owner_uid if owner_gid is None else owner_gid
    return PREP_SCRIPT.replace("__ROOT__", root).replace("__UID__", str(owner_uid)).replace("__GID__", str(gid)) \
        .replace("__PERIOD__", str(period)).replace("__RECLAIM__", reclaim).strip("\n") + "\n"


def render_ready_script(owner_uid: int, owner_gid: int | None = None, root: str = PREP_MOUNT) -> str:
    """The prep container's readiness check (``sh -c <script> ready <server>...``)."""
    gid = owner_uid if owner_gid is None else owner_gid
    return READY_SCRIPT.replace("__ROOT__", root).replace("__UID__", str(owner_uid)).replace("__GID__", str(gid))


class ModelCache(pulumi.ComponentResource):
    """Creates: a ``PersistentVolume`` (hostPath ``HOST_ROOT/<namespace>``, ``DirectoryOrCreate``, Retain)
    pre-bound to the ``model-cache`` ``PersistentVolumeClaim`` in the serving namespace; the prep
    ``Namespace`` (Pod Security baseline) with a default-deny ``NetworkPolicy``, a second
    ``PersistentVolume`` of the same directory pre-bound to a claim there, and the ``model-cache-prep``
    ``DaemonSet`` on the cached servers' pools. ``claim_name`` is the claim the sync containers mount.
    """

    claim_name: pulumi.Output[str]

    def __init__(self, name: str, args: ModelCacheArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ModelCache", name, None, opts)
        if not args.servers:
            raise ValueError(f"ModelCache {name}: servers must not be empty")
        bad = [s for s in args.servers if not re.match(SERVER_NAME, s)]
        if bad:
            raise ValueError(f"ModelCache {name}: server names {bad} are not directory-safe DNS labels")
        if not args.node_pools:
            raise ValueError(f"ModelCache {name}: node_pools must not be empty")
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/name": PREP_NAME, "app.kubernetes.io/component": "model-cache"}
        namespace = pulumi.Output.from_input(args.namespace)
        host_dir = namespace.apply(lambda ns: f"{HOST_ROOT}/{ns}")

        def volume(suffix: str, pv_name: pulumi.Input[str], claim_namespace: pulumi.Input[str],
                   claim_name: str) -> k8s.core.v1.PersistentVolumeClaim:
            pv = k8s.core.v1.PersistentVolume(
                f"{name}-{suffix}-volume",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=pv_name, labels=labels),
                spec={"capacity": {"storage": NOMINAL_CAPACITY}, "accessModes": ["ReadWriteOnce"],
                      "volumeMode": "Filesystem",
                      # hostPath volumes cannot be deleted by the volume controller (only its test
                      # provisioner's /tmp paths): the directory outlives the volume object.
                      "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                      "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"},
                      "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                   "namespace": claim_namespace, "name": claim_name}},
                opts=child)
            # pulumi-kubernetes awaits a claim until Bound (provider/pkg/await/awaiters.go
            # untilCoreV1PersistentVolumeClaimReady) and a volume until Available or Bound: pre-bound both
            # ways, binding needs no node and no provisioner, so the first `pulumi up` completes.
            return k8s.core.v1.PersistentVolumeClaim(
                f"{name}-{suffix}-claim",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=claim_name, namespace=claim_namespace, labels=labels),
                spec={"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv.metadata.name,
                      "resources": {"requests": {"storage": NOMINAL_CAPACITY}}},
                opts=child)

        serving_claim = volume("serving", namespace.apply(lambda ns: f"{CLAIM_NAME}-{ns}"), namespace, CLAIM_NAME)

        prep_ns = k8s.core.v1.Namespace(f"{name}-prep-ns", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=args.prep_namespace, labels=pod_security_labels("baseline", warn="baseline")), opts=child)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-prep-default-deny",
            # Not "default-deny": that name is the serving namespace's, and names should find one object.
            metadata=k8s.meta.v1.ObjectMetaArgs(name="model-cache-default-deny", namespace=prep_ns.metadata.name),
            spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, opts=child)
        prep_claim = volume("prep", namespace.apply(lambda ns: f"{PREP_NAME}-{ns}"), prep_ns.metadata.name,
                            PREP_NAME)

        servers = sorted(set(args.servers))
        probe = {"exec": {"command": ["/bin/sh", "-c", render_ready_script(args.owner_uid), "ready", *servers]},
                 "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 5}
        container = {
            "name": "prep", "image": args.image, "imagePullPolicy": pull_policy(args.image),
            "command": ["/bin/sh", "-c", render_prep_script(args.owner_uid), PREP_NAME, *servers],
            "volumeMounts": [{"name": "cache", "mountPath": PREP_MOUNT}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
            "readinessProbe": probe,
            # A pod that lost its mount (the directory deleted under it) is restarted, which re-creates it.
            "livenessProbe": {"exec": {"command": ["/bin/sh", "-c", f"test -d {PREP_MOUNT}"]},
                              "periodSeconds": 30, "failureThreshold": 3, "timeoutSeconds": 5},
            # Root, for chown: every capability dropped but CHOWN; nothing else is possible for it.
            "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "privileged": False,
                                "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}},
        }
        class_tolerations = [{"key": COMPUTE_CLASS_LABEL, "operator": "Exists", "effect": "NoSchedule"}] \
            if args.compute_classes else []
        k8s.apps.v1.DaemonSet(
            f"{name}-prep",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=PREP_NAME, namespace=prep_ns.metadata.name, labels=labels,
                                                annotations=PREP_SCAN_SKIPS),
            spec={"selector": {"matchLabels": {"app.kubernetes.io/name": PREP_NAME}},
                  "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%"}},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "automountServiceAccountToken": False,
                      "terminationGracePeriodSeconds": 10,
                      "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                      # Terms are ORed: the pools' nodes, and the nodes of their ComputeClasses.
                      "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                          "nodeSelectorTerms": [{"matchExpressions": [
                              {"key": POOL_LABEL, "operator": "In", "values": sorted(set(args.node_pools))}]},
                              *([{"matchExpressions": [{"key": COMPUTE_CLASS_LABEL, "operator": "In",
                                                        "values": sorted(set(args.compute_classes))}]}]
                                if args.compute_classes else [])]}}},
                      "tolerations": [*args.tolerations, *class_tolerations] or None,
                      "containers": [container],
                      "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": prep_claim.metadata.name}}],
                  }}},
            opts=child)

        self.claim_name = serving_claim.metadata.name
        self.register_outputs({"claim_name": self.claim_name})
