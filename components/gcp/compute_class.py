"""A custom ComputeClass per GKE GPU pool: GKE tries the pool's capacity options in order.

GKE docs, "About custom compute classes"
(https://cloud.google.com/kubernetes-engine/docs/concepts/about-custom-compute-classes): a
``cloud.google.com/v1`` ``ComputeClass`` lists ``priorities``; when pods that select the class
(``nodeSelector: {cloud.google.com/compute-class: <class>}``) are pending, the autoscaler scales up the
first priority it can satisfy. A priority either names existing node pools (``nodepools: [...]``) or
describes nodes (``machineType``, ``spot``, ``gpu``, ``storage``) that node auto-provisioning (NAP) may
create pools for (``nodePoolAutoCreation.enabled``).

The schema we validate against (npm ``@kubernetes-models/gke`` 4.6.2, generated from GKE's CRD) predates
the ``reservations``, ``flexStart`` and GPU partition/sharing fields of GKE's current ComputeClass. So an
option that needs one of those (a reservation, flex-start, MIG partitions, GPU sharing, a secondary boot
disk) is provisioned as a node pool of its own, created by :class:`components.gcp.gke_cluster.GkeCluster`
and referenced by name; a plain on-demand/spot option is a NAP priority. The pool's own option (``primary``)
stays the fixed node pool that holds ``min_size``, referenced first.

Pools that serve a class carry the label ``cloud.google.com/compute-class=<class>`` and the taint
``cloud.google.com/compute-class=<class>:NoSchedule`` (GKE docs, "About custom compute classes",
"Configure manually created node pools for compute class use": manually created pools need both; NAP
adds them to the pools it creates). Serving pods select the class and tolerate that taint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from components.capacity import CapacityOption

if TYPE_CHECKING:
    from components.gcp.gke_cluster import GkeNodePoolSpec

API_VERSION = "cloud.google.com/v1"
COMPUTE_CLASS_LABEL = "cloud.google.com/compute-class"
"""Node label and taint key of a class's nodes; the pod's node selector key."""
CLASS_PREFIX = "tfplatform-"
"""Class names start with it, so ours never collide with GKE's built-in classes (``autopilot``,
``autopilot-spot``, ``Accelerator``, ``Balanced``, ``Performance``, ``Scale-Out``) or a ``default`` class
(which GKE applies to every pod that selects none)."""
PRIMARY = "primary"
"""The option name of a pool's own capacity (:meth:`GkeNodePoolSpec.options`)."""
NAP_CAPACITY = ("on-demand", "spot")
"""Capacity the old ComputeClass schema expresses (``spot: true|false``)."""
GKE_POOL_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
"""GKE node pool names: lowercase letters, digits and dashes, at most 40 characters (Compute Engine
resource naming; the API refuses others)."""


def compute_class_name(pool: str) -> str:
    """The class of a pool: stable, derived from the pool's key only (never from its options)."""
    return f"{CLASS_PREFIX}{pool}"


def option_pool_name(pool: str, option: CapacityOption) -> str:
    """The GKE node pool of an option: the pool itself for ``primary``, ``<pool>-<option>`` otherwise
    (named after the option's stable name, so reordering options never renames or replaces a pool)."""
    name = pool if option.name == PRIMARY else f"{pool}-{option.name}"
    if not GKE_POOL_NAME.fullmatch(name):
        raise ValueError(f"node pool name {name!r} (pool {pool!r}, option {option.name!r}): GKE wants lowercase "
                         "letters, digits and dashes, at most 40 characters; shorten the pool or option name")
    return name


def auto_created(spec: "GkeNodePoolSpec", option: CapacityOption) -> bool:
    """True when NAP may create this option's nodes from a ``{machineType, spot, gpu, storage}`` priority;
    False when the option needs a node pool of its own (the pool's primary option always has one)."""
    return (option.name != PRIMARY and option.capacity in NAP_CAPACITY and option.reservation is None
            # Pool-wide features the old schema has no field for: every option of such a pool is a pool.
            and spec.mig_profile is None and spec.gpu_time_slicing == 1 and spec.secondary_boot_disk_image is None)


def pooled_options(spec: "GkeNodePoolSpec") -> tuple[CapacityOption, ...]:
    """The options that are node pools (the primary first), in priority order."""
    return tuple(o for o in spec.options() if not auto_created(spec, o))


def option_accelerator(spec: "GkeNodePoolSpec", option: CapacityOption) -> tuple[str | None, int]:
    """``(accelerator type, GPUs per node)`` of an option's machine: from ``fallback_accelerators`` when the
    option's machine differs from the pool's, else the pool's own."""
    if option.name != PRIMARY and option.name in spec.fallback_accelerators:
        return spec.fallback_accelerators[option.name]
    return spec.accelerator_type, spec.gpus_per_node


def class_node_labels(class_name: str) -> dict[str, str]:
    return {COMPUTE_CLASS_LABEL: class_name}


def class_taint(class_name: str) -> dict[str, str]:
    """The taint of a class's manually created pools, in the GKE API's spelling (``NO_SCHEDULE``)."""
    return {"key": COMPUTE_CLASS_LABEL, "value": class_name, "effect": "NO_SCHEDULE"}


def class_node_selector(class_name: str) -> dict[str, str]:
    """What a pod of the class selects: only the class (NAP-created nodes carry none of our own labels)."""
    return {COMPUTE_CLASS_LABEL: class_name}


def class_toleration(class_name: str) -> dict[str, str]:
    """The toleration of the class's taint (Kubernetes spelling). GKE adds it to pods that select a class;
    written out anyway so the pod spec says what it runs on whatever the admission path."""
    return {"key": COMPUTE_CLASS_LABEL, "operator": "Equal", "value": class_name, "effect": "NoSchedule"}


def priorities(pool: str, spec: "GkeNodePoolSpec") -> list[dict]:
    """One ``priorities`` entry per option, in :meth:`GkeNodePoolSpec.options` order."""
    rules = []
    for option in spec.options():
        if not auto_created(spec, option):
            rules.append({"nodepools": [option_pool_name(pool, option)]})
            continue
        accelerator, count = option_accelerator(spec, option)
        rule: dict = {"machineType": option.instance_types[0], "spot": option.capacity == "spot"}
        if count:
            rule["gpu"] = {"type": accelerator, "count": count}
        # The same boot disk as the pool's own nodes (images and model copies live there).
        rule["storage"] = {"bootDiskSize": spec.disk_size_gb, "bootDiskType": "pd-balanced"}
        rules.append(rule)
    return rules


def compute_class_spec(pool: str, spec: "GkeNodePoolSpec", active_migration: bool = False) -> dict:
    rules = priorities(pool, spec)
    body: dict = {
        "priorities": rules,
        # No priority satisfiable -> pods stay Pending (visible, alertable) rather than GKE creating nodes of
        # its default machine family, which carry no GPU of the class's type: a GPU pod cannot run there,
        # and the node is paid for nothing, outside the pool's planned shapes and budget (GKE docs, "About
        # custom compute classes", whenUnsatisfiable: ScaleUpAnyway creates nodes from the cluster's
        # default configuration; DoNotScaleUp waits for a priority).
        "whenUnsatisfiable": "DoNotScaleUp",
        # Only moves pods to a higher priority when that capacity returns; see GpuComputeClassArgs.
        "activeMigration": {"optimizeRulePriority": active_migration},
    }
    if any("nodepools" not in r for r in rules):
        body["nodePoolAutoCreation"] = {"enabled": True}
    return body


def compute_class_manifest(pool: str, spec: "GkeNodePoolSpec", active_migration: bool = False,
                           labels: dict[str, str] | None = None) -> dict:
    """The ComputeClass object (cluster-scoped) as a manifest."""
    metadata: dict = {"name": compute_class_name(pool)}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": API_VERSION, "kind": "ComputeClass", "metadata": metadata,
            "spec": compute_class_spec(pool, spec, active_migration)}


@dataclass(frozen=True)
class GpuComputeClassArgs:
    """Inputs of :class:`GpuComputeClass`."""

    pool: str
    """The pool's stable key (``nodePools.<key>``); the class is named after it."""
    spec: "GkeNodePoolSpec"
    """The pool (``compute_class=True``): its :meth:`~GkeNodePoolSpec.options` become the priorities."""
    node_pools: tuple[pulumi.Resource, ...] = ()
    """The node pools that serve the class (``GkeCluster.pool_dependencies(pool)``): the class is applied
    after them, and serving workloads wait for them and the class (:attr:`GpuComputeClass.dependencies`)."""
    active_migration: bool = False
    """``activeMigration.optimizeRulePriority``: when a higher priority (spot, the primary pool) has capacity
    again, GKE replaces nodes of lower priorities and evicts their pods. Off by default for model serving:
    every move is a new GPU node plus a model download, load and warmup (minutes for large models) during
    which the Deployment runs one replica short, and a spot first choice can be preempted again right
    after, so the pods would bounce. Without it, fallback nodes stay until the autoscaler removes them
    once idle, and every scale-up tries the first choice again."""
    labels: dict[str, str] | None = None
    """Labels of the ComputeClass object."""


class GpuComputeClass(pulumi.ComponentResource):
    """Creates: one ``cloud.google.com/v1`` ``ComputeClass`` named :func:`compute_class_name` (cluster-
    scoped; GKE installs its CRD on 1.30.3-gke.1451000 and later) whose priorities are the pool's options
    in order: the pool's own node pool first, then per fallback either its own node pool (reservation,
    flex-start, MIG, GPU sharing) or a NAP priority (plain on-demand/spot). Give it the cluster's
    Kubernetes provider in ``opts``.
    """

    class_name: str
    node_selector: dict[str, str]
    """What serving pods of the pool must select (``cloud.google.com/compute-class: <class>``)."""
    tolerations: list[dict[str, str]]
    """The class taint's toleration (add to the GPU toleration the pods already have)."""
    compute_class: k8s.apiextensions.CustomResource
    dependencies: list[pulumi.Resource]
    """What serving Deployments on the pool wait for: its node pools and the ComputeClass object."""

    def __init__(self, name: str, args: GpuComputeClassArgs, opts: pulumi.ResourceOptions | None = None):
        # Checked before anything is registered.
        if not args.spec.compute_class:
            raise ValueError(f"GpuComputeClass {name}: pool {args.pool!r} is not provisioned through a compute "
                             "class (compute_class=False); its fixed node pool serves it alone")
        if not args.spec.gpus_per_node:
            raise ValueError(f"GpuComputeClass {name}: pool {args.pool!r} has no GPUs")
        manifest = compute_class_manifest(args.pool, args.spec, args.active_migration, args.labels)
        super().__init__("tfplatform:gcp:GpuComputeClass", name, None, opts)
        self.class_name = manifest["metadata"]["name"]
        self.node_selector = class_node_selector(self.class_name)
        self.tolerations = [class_toleration(self.class_name)]
        self.compute_class = k8s.apiextensions.CustomResource(
            f"{name}-class", api_version=API_VERSION, kind="ComputeClass",
            metadata=k8s.meta.v1.ObjectMetaArgs(**manifest["metadata"]), spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.node_pools)))
        self.dependencies = [*args.node_pools, self.compute_class]
        self.register_outputs({"class_name": self.class_name})
