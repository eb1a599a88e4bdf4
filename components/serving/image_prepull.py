"""Pulls a server's images onto a new node as soon as the node is Ready, before its serving pod can start.

Why it is faster: on a new GPU node the serving pod is bound only once the node advertises its GPUs (the
device plugin on EKS; on GKE after the driver installer), and then the kubelet works through the pod in
order: the sync image, the init container's model download, and only then TF Serving's image, several GB
for ``-gpu`` (the kubelet starts init containers one by one, pulling each image as it starts the
container, and pulls the app containers' images after the last init container: kubernetes
pkg/kubelet/kuberuntime/kuberuntime_manager.go ``SyncPod``, ``startContainer`` -> ``EnsureImageExists``).
A DaemonSet pod asks for no GPU, so the scheduler places it once the node is Ready, and its containers use
the server's images: the kubelet pulls them at once, in parallel with the GPU wait and the serving pod's
own steps (EKS AL2023 nodes pull in parallel: nodeadm's kubelet config sets ``serializeImagePulls:
false``, amazon-eks-ami nodeadm/internal/kubelet/config.go). When the serving pod gets to its TF Serving
container, the image is on the node (or half pulled: containerd downloads each layer once).

The pods only sleep: non-root, read-only root filesystem, every capability dropped, no GPU device
(:data:`NO_GPU`), no service account token, no network (the namespace's default deny holds; no policy admits them). They carry their own labels,
so no Service, NetworkPolicy, PodDisruptionBudget or ScaledObject of the server selects them, and neither
cluster-autoscaler nor Karpenter keeps a node up for a DaemonSet pod: a pool still scales to zero.

Creates: a ``DaemonSet`` ``<name>`` in the server's namespace, on the nodes the server's pods may use (its
node selector and tolerations), with one container per distinct image. ``pulumi up`` awaits its rollout
as it awaits the server's Deployment (``await_rollout``): until every node due a pod runs an up-to-date one
(pulumi-kubernetes provider/pkg/await/daemonset.go, kstatus, 10 min by default). After an image change that
includes the new image's pull, about a minute on a GPU node, which the serving rollout needs anyway. A
NotReady node carries the ``not-ready:NoSchedule`` taint: DaemonSet pods tolerate ``not-ready`` only as
``NoExecute`` (kubernetes pkg/controller/daemon/util/daemonset_util.go ``AddOrUpdateDaemonPodTolerations``)
and the controller skips nodes with an untolerated NoSchedule taint (daemon_controller.go ``predicates``), so
such a node is not due a pod and cannot hold the await.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.serving.model_server import RUN_AS, pull_policy, restricted, skip_await_annotations

COMPONENT = "image-prepull"
"""``app.kubernetes.io/component`` of the pre-pull pods (and how stacks/scale_up.py finds them)."""
SLEEP = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"
"""What each container runs: ``/bin/sh`` (TF Serving's image is Ubuntu, and its readiness probe already
needs bash; the sync images run ``/bin/sh`` scripts) sleeping, and leaving at once on SIGTERM (a shell as
PID 1 without a trap would ignore it and be killed at the end of the grace period)."""
NO_GPU = {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}
"""On every container. EKS's NVIDIA nodes make ``nvidia`` containerd's default runtime (amazon-eks-ami
nodeadm/internal/containerd/runtime_config_nvidia.go), and TF Serving's ``-gpu`` image inherits
``NVIDIA_VISIBLE_DEVICES=all`` from its nvidia/cuda base: without this, a container that asks for no GPU
would see every GPU of the node. ``void`` makes the NVIDIA runtime behave as runc (NVIDIA container
toolkit, "Environment variables")."""
SCAN_SKIPS = {
    "checkov.io/skip1": "CKV_K8S_8=the containers only sleep: there is nothing to probe for liveness",
    "checkov.io/skip2": "CKV_K8S_9=the containers only sleep and no Service selects them: no readiness",
}


@dataclass(frozen=True)
class ImagePrePullArgs:
    """Inputs of :class:`ImagePrePull`."""

    namespace: pulumi.Input[str]
    """The server's namespace (Pod Security ``restricted``: the pods meet it)."""
    server: str
    """The server whose images are pulled (a label of the pods, for ``kubectl get pods -l``)."""
    images: tuple[str, ...]
    """Images to pull, in order (duplicates are pulled once): TF Serving's and the sync image."""
    node_selector: dict[str, str]
    """The serving pods' node selector: the pre-pull runs exactly where they may."""
    tolerations: tuple[dict[str, str], ...] = ()
    """The serving pods' tolerations (a GPU pool's ``nvidia.com/gpu`` taint, a ComputeClass's)."""
    await_rollout: pulumi.Input[bool] = True
    """Let ``pulumi up`` wait for the rollout; the server's own setting (false only on a first up whose
    models cannot exist yet, when the serving Deployment is not awaited either)."""


class ImagePrePull(pulumi.ComponentResource):
    """A DaemonSet pulling a server's images onto each of its nodes once the node is Ready."""

    daemon_set_name: pulumi.Output[str]

    def __init__(self, name: str, args: ImagePrePullArgs, opts: pulumi.ResourceOptions | None = None):
        images = list(dict.fromkeys(args.images))
        if not images:  # refused before anything is registered
            raise ValueError(f"ImagePrePull {name}: images must not be empty")
        super().__init__("tfplatform:serving:ImagePrePull", name, None, opts)
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": COMPONENT,
                  "app.kubernetes.io/part-of": args.server}
        containers = [{
            "name": f"image-{index}", "image": image, "imagePullPolicy": pull_policy(image),
            "command": ["/bin/sh", "-c", SLEEP],
            "env": [NO_GPU],
            "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"cpu": "10m", "memory": "16Mi"}},
            "securityContext": restricted(),
        } for index, image in enumerate(images)]
        daemon_set = k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace, labels=labels,
                                                annotations=skip_await_annotations(args.await_rollout).apply(
                                                    lambda skip: {**(skip or {}), **SCAN_SKIPS})),
            spec={"selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                  # A new image is pulled on every node at once: the pods hold nothing.
                  "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "automountServiceAccountToken": False,
                      "enableServiceLinks": False,
                      "terminationGracePeriodSeconds": 5,
                      "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                          "seccompProfile": {"type": "RuntimeDefault"}},
                      "nodeSelector": dict(args.node_selector) or None,
                      "tolerations": list(args.tolerations) or None,
                      "containers": containers,
                  }}},
            opts=pulumi.ResourceOptions(parent=self))
        self.daemon_set_name = daemon_set.metadata.name
        self.register_outputs({"daemon_set_name": self.daemon_set_name})
