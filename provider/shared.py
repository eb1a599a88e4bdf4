"""What the wrappers share: the taint type of both clouds' node pools, and turning engine values into the
plain Python values the components take."""

from enum import Enum
from typing import Any, TypedDict

import pulumi
import pulumi_kubernetes as k8s

PACKAGE = "tfplatform"


def token(component: str) -> str:
    """A wrapper's type token. The host serves only module ``index`` and maps a token back to the class of
    that name (``ComponentProvider.validate_resource_type`` and ``construct`` in
    pulumi/provider/experimental/component.py), so the wrapper must register exactly this type."""
    return f"{PACKAGE}:index:{component}"


class TaintEffect(Enum):
    """A node taint's effect, spelled as the EKS and GKE APIs spell it."""

    NO_SCHEDULE = "NO_SCHEDULE"
    """Pods without a matching toleration are not scheduled on the node."""
    PREFER_NO_SCHEDULE = "PREFER_NO_SCHEDULE"
    """The scheduler avoids the node for pods without a matching toleration."""
    NO_EXECUTE = "NO_EXECUTE"
    """Pods without a matching toleration are evicted from the node."""


class NodeTaint(TypedDict):
    """A taint on every node of a pool (the GPU taint is added by the platform itself)."""

    key: str
    """Taint key, e.g. ``dedicated``."""
    value: str
    """Taint value."""
    effect: TaintEffect
    """What the taint does to pods that do not tolerate it."""


def value_of(value: Any) -> Any:
    """An enum member's value (the host passes enum members; Python callers may pass either)."""
    return value.value if isinstance(value, Enum) else value


def plain(value: Any, field: str, component: str) -> Any:
    """``value``, refusing an Output: the field decides names or how many resources there are, so it must be
    known when the component is built. The schema marks such fields ``plain``, but the engine still sends a
    value as an Output when it depends on another resource (``ProviderServicer._select_value`` in
    pulumi/provider/server.py)."""
    if isinstance(value, pulumi.Output):
        raise TypeError(f"{component}: input {field!r} must be a plain value known before deployment, "
                        f"not an output of another resource")
    return value


def ints(values: Any, field: str, component: str) -> tuple[int, ...]:
    """Integers of a list input. Numbers cross the wire as floats and the host turns only integer
    *properties* back into int, not list items or map values (``map_input_properties`` in
    pulumi/provider/experimental/component.py), so ``42.0`` arrives for ``42``."""
    out = []
    for v in plain(values, field, component) or ():
        if isinstance(v, bool) or not float(v).is_integer():
            raise ValueError(f"{component}: {field} must hold integers, got {v!r}")
        out.append(int(v))
    return tuple(out)


def int_map(values: Any, field: str, component: str) -> dict[str, int]:
    """Integers of a map input (see :func:`ints`)."""
    values = plain(values, field, component) or {}
    return dict(zip(values, ints(list(values.values()), field, component)))


def taints(values: list[NodeTaint] | None, component: str) -> list[dict[str, str]]:
    """Taints as the node-pool components take them: ``{key, value, effect}`` with the API's effect."""
    return [{"key": t["key"], "value": t["value"], "effect": value_of(t["effect"])}
            for t in plain(values, "taints", component) or []]


def kubernetes_options(parent: pulumi.Resource, name: str,
                       kubeconfig: pulumi.Input[str] | None) -> pulumi.ResourceOptions:
    """Options of the Kubernetes children: an explicit provider from ``kubeconfig``, or none, so the
    children inherit the provider passed to the component (``providers``) or the ambient one."""
    if kubeconfig is None:
        return pulumi.ResourceOptions(parent=parent)
    # enable_config_map_mutable as the platform's own providers (components/aws/eks_cluster.py): named
    # ConfigMaps (the canary router's, dashboards) are updated in place, not replaced under running pods.
    provider = k8s.Provider(f"{name}-k8s", kubeconfig=pulumi.Output.secret(kubeconfig),
                            enable_config_map_mutable=True, opts=pulumi.ResourceOptions(parent=parent))
    return pulumi.ResourceOptions(parent=parent, providers={"kubernetes": provider})


def depends_on_of(opts: pulumi.ResourceOptions | None) -> list[pulumi.Resource]:
    """The resources a component was given in ``dependsOn``. Children do not inherit a component's
    ``dependsOn`` (pulumi/resource.py, Resource.__init__ copies only protect and providers from the parent),
    so a wrapper hands them down to the inner components that must wait for them."""
    depends_on = opts.depends_on if opts is not None else None
    return [depends_on] if isinstance(depends_on, pulumi.Resource) else list(depends_on or [])
