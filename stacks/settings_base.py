"""Building blocks of the settings models: strict base model, field-naming errors, syntax checks."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict


class FieldProblem(ValueError):
    """Raised by cross-field validators so the error names the exact key, not just its parent."""

    def __init__(self, field: str, value: object, allowed: str):
        super().__init__(allowed)
        self.field, self.value, self.allowed = field, value, allowed


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Strict(BaseModel):
    """Unknown keys are errors (a typo must never fall back to a default silently), and types are strict.

    ``strict``: a YAML ``true`` is not the number 1, ``2.0`` is not the integer 2 and ``5`` is not the
    string "5" (values arrive JSON-decoded, so a number is already a number; a float field still takes
    an int). ``allow_inf_nan=False``: ``.inf`` and ``.nan`` are refused wherever a float is read, before
    anything renders them (``float('inf')`` crashed the HPA rendering after resources were registered).
    """

    model_config = ConfigDict(extra="forbid", alias_generator=_camel, populate_by_name=True,
                              frozen=True, strict=True, allow_inf_nan=False)


_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                         r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def is_label_key(key: str) -> bool:
    """A Kubernetes qualified name: an optional DNS-subdomain prefix (at most 253) and ``/``, then a name
    of at most 63 (apimachinery validation.IsQualifiedName)."""
    prefix, _, name = key.rpartition("/")
    return bool(_LABEL_NAME.fullmatch(key)) and len(prefix) <= 253 and len(name) <= 63


def is_label_value(value: str) -> bool:
    """apimachinery validation.IsValidLabelValue: empty, or at most 63 alphanumerics, '-', '_', '.'."""
    return bool(_LABEL_VALUE.fullmatch(value))


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not is_label_key(key):
            raise FieldProblem(key, key, "a Kubernetes label key ([prefix/]name, name of at most 63 "
                                         "alphanumerics, '-', '_' or '.')")
        if not _LABEL_VALUE.fullmatch(value):
            raise FieldProblem(key, value, "a Kubernetes label value (at most 63 alphanumerics, "
                                           "'-', '_' or '.', starting and ending alphanumeric)")
    return labels


def check_quantity(quantity: str) -> str:
    if not QUANTITY.fullmatch(quantity):
        raise ValueError("a Kubernetes quantity such as 500m, 2, 512Mi or 4Gi")
    return quantity


def check_cidrs(cidrs: list[str]) -> list[str]:
    for index, cidr in enumerate(cidrs):
        try:
            ipaddress.IPv4Network(cidr)
        except ValueError:
            raise FieldProblem(str(index), cidr, "an IPv4 CIDR such as 203.0.113.0/24") from None
    return check_unique(cidrs)


def check_unique(items: list) -> list:
    """Lists whose items each become something (a rule, an entry, a resource) hold no duplicates: a
    repeated item is a mistake, and two resources of one name are a duplicate URN at ``pulumi up``."""
    seen: list = []
    for index, item in enumerate(items):
        if item in seen:
            raise FieldProblem(str(index), item, f"an item not already in the list (it repeats item "
                                                 f"{seen.index(item)})")
        seen.append(item)
    return items


NAME_KEY_ALLOWED = "a name of lowercase letters, digits, '-' or '_' (at most 63, starting and ending alphanumeric)"


def check_keys(mapping: dict, pattern: str, allowed: str = NAME_KEY_ALLOWED) -> dict:
    """Every key of a config map (pool, server or model name) matches ``pattern``; errors name the key."""
    for key in mapping:
        if not re.fullmatch(pattern, key):
            raise FieldProblem(key, key, allowed)
    return mapping


GPU_ADDONS_NAMESPACE = "nvidia"
"""The namespace the GPU add-ons create (components/gpu/addons.py ``GpuAddonsArgs.namespace``)."""


def reserved_namespace(namespace: str, cloud: str) -> str | None:
    """Why the stack may not create ``namespace``, or None.

    ``default`` and ``kube-*`` belong to Kubernetes (the API server creates default, kube-system,
    kube-public and kube-node-lease, and the ``kube-`` prefix is reserved for the system: Kubernetes docs,
    "Namespaces", https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/); on GKE,
    ``gke-*`` and ``gmp-*`` are GKE's own (gke-managed-*, gmp-system, gmp-public); ``nvidia`` is created by
    this stack's GPU add-ons.
    """
    if namespace == "default" or namespace.startswith("kube-"):
        return "a namespace Kubernetes creates or reserves (default, kube-*)"
    if cloud == "gcp" and namespace.startswith(("gke-", "gmp-")):
        return "a namespace GKE reserves (gke-*, gmp-*)"
    if namespace == GPU_ADDONS_NAMESPACE:
        return "nvidia, the GPU add-ons' namespace"
    return None


# The kubelet refuses to start when --node-labels (EKS and GKE pass a pool's labels that way) holds a label
# in the kubernetes.io or k8s.io namespaces other than these (kubelet's IsKubeletLabel,
# https://github.com/kubernetes/kubernetes/blob/master/staging/src/k8s.io/kubelet/pkg/apis/well_known_labels.go).
_KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type", "kubernetes.io/os",
    "kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/arch"})
_KUBELET_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
# Labels the program sets itself on every node or on GPU nodes (components/node_labels.py, the device
# plugin's config label in components/aws/node_group.py): a pool label would override them.
MANAGED_NODE_LABELS = frozenset({"tfplatform.io/node-pool", "nvidia.com/gpu.present",
                                 "nvidia.com/device-plugin.config"})


def _is_kubelet_label(key: str) -> bool:
    prefix = key.rpartition("/")[0]
    if key in _KUBELET_LABELS:
        return True
    return any(prefix == ns or prefix.endswith("." + ns) for ns in _KUBELET_NAMESPACES)


def check_node_labels(labels: dict[str, str]) -> dict[str, str]:
    """Node pool labels: not the program's own, and none the kubelet refuses."""
    for key in labels:
        prefix = key.rpartition("/")[0]
        if key in MANAGED_NODE_LABELS:
            raise FieldProblem(key, key, "a label the platform does not set itself (it sets "
                                         f"{', '.join(sorted(MANAGED_NODE_LABELS))})")
        restricted = any(prefix == ns or prefix.endswith("." + ns) for ns in ("kubernetes.io", "k8s.io"))
        if restricted and not _is_kubelet_label(key):
            raise FieldProblem(key, key, "a label outside the kubernetes.io and k8s.io namespaces (the kubelet "
                                         "refuses to start with those, except node.kubernetes.io/* and "
                                         "kubelet.kubernetes.io/*)")
    return labels


def raw_config(config: Any, project: str, keys: Iterable[str], json_keys: Iterable[str],
               error: type[Exception], expected: Callable[[str], str]) -> dict[str, object]:
    """The values ``config`` (a ``pulumi.Config`` of ``project``) holds for ``keys``, absent ones left out;
    ``json_keys`` are structured values, which Pulumi hands over as JSON text. One that is not JSON raises
    ``error`` naming the key, its value and ``expected(key)``: before any resource is registered."""
    structured = set(json_keys)
    raw: dict[str, object] = {}
    for key in keys:
        value = config.get(key)
        if value is None:
            continue
        try:
            raw[key] = json.loads(value) if key in structured else value
        except json.JSONDecodeError:
            raise error(f"{project}:{key}: {value!r} is not allowed: expected {expected(key)}") from None
    return raw
