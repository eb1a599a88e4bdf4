"""Pod Security Standards labels of the namespaces the platform creates, and why any is privileged.

Every namespace is ``baseline`` or ``restricted`` unless it is listed in :data:`PRIVILEGED_REASONS`:
the Pod Security admission levels are documented at
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline forbids hostNetwork,
hostPID, hostPath volumes and privileged containers, so the DaemonSets below cannot run under it).
"""

from __future__ import annotations

REASON_ANNOTATION = "tfplatform.io/pod-security-reason"
"""On a privileged namespace: why it has to be (the entry of :data:`PRIVILEGED_REASONS`)."""

PRIVILEGED_REASONS = {
    "node-exporter": (
        "prometheus-node-exporter reads the host's metrics: hostNetwork, hostPID and hostPath / mounted "
        "read-only (prometheus-node-exporter chart values hostNetwork/hostPID/hostRootFsMount); nothing "
        "else runs here, so no other pod shares the host network (and the node's IMDS credentials)"),
    "gpu-addons": (
        "nvidia-device-plugin registers with the kubelet through hostPath /var/lib/kubelet/device-plugins "
        "and dcgm-exporter opens /dev/nvidia* (privileged on GKE, SYS_ADMIN capability by its chart's "
        "default securityContext); only these two DaemonSets run here"),
}
"""Purpose of a privileged namespace -> why it cannot be baseline. A namespace not listed here is never
privileged (tests/test_trust_cluster.py checks every Namespace of every stack)."""


def pod_security_labels(level: str, warn: str = "restricted") -> dict[str, str]:
    """``enforce`` ``level`` (``baseline`` or ``restricted``), and warn/audit at ``warn``."""
    if level not in ("baseline", "restricted"):
        raise ValueError(f"pod security level {level!r}: a privileged namespace needs privileged_namespace()")
    return {"pod-security.kubernetes.io/enforce": level, "pod-security.kubernetes.io/warn": warn,
            "pod-security.kubernetes.io/audit": warn}


def privileged_namespace(purpose: str) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations of a namespace enforcing ``privileged`` for a purpose listed in
    :data:`PRIVILEGED_REASONS` (the reason goes on the namespace, so ``kubectl describe`` shows it)."""
    reason = PRIVILEGED_REASONS[purpose]
    return ({"pod-security.kubernetes.io/enforce": "privileged"}, {REASON_ANNOTATION: reason})
