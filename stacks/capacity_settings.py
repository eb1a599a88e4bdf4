"""Capacity settings: which provisioner makes GPU nodes, where they may come from, and GPU partitioning.

The keys (docs/capacity.md explains them with examples):

- ``gpuProvisioner`` (stack): ``node-groups`` (fixed node groups / node pools scaled by the cluster
  autoscaler), ``karpenter`` (EKS) or ``compute-class`` (GKE custom ComputeClasses).
- per pool: ``capacityType`` (``ON_DEMAND``, ``SPOT``, ``RESERVED``, ``CAPACITY_BLOCK`` on EKS,
  ``FLEX_START`` on GKE), ``reservation``, ``hourlyPrice``, ``fallback`` (more options, in order),
  ``migProfile``, ``gpuSharingStrategy``.
- per server: ``gpuPartition`` (the MIG partition each replica asks for).

Every rule raises :class:`FieldProblem` naming the key before any resource exists.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from components.capacity import CAPACITY_OF_CONFIG, CapacityOption
from components.gpu.mig import EC2_GPU_MODEL, GKE_GPU_MODEL, GKE_PARTITION_SIZES, MIG_PROFILES
from stacks.settings_base import DNS_LABEL, FieldProblem, Strict

GpuProvisioner = Literal["node-groups", "karpenter", "compute-class"]
PoolCapacityType = Literal["ON_DEMAND", "SPOT", "RESERVED", "CAPACITY_BLOCK", "FLEX_START"]
GpuSharingStrategy = Literal["TIME_SHARING", "MPS"]

AWS_RESERVATION_ID = r"^cr-[0-9a-f]{8}([0-9a-f]{9})?$"
"""EC2 capacity reservation ids (``cr-`` and 8 or 17 hex digits; Karpenter's CRD: ``^cr-[0-9a-z]+$``)."""
AWS_RESERVATION_GROUP = r"^arn:aws[a-z-]*:resource-groups:[a-z0-9-]+:[0-9]{12}:group/[A-Za-z0-9._-]{1,128}$"
GCP_RESERVATION = r"^(any|(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/reservations/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?)$"
PROVISIONER_CLOUD = {"karpenter": "aws", "compute-class": "gcp"}
KARPENTER_MAX_OPTIONS = 10
"""Karpenter NodePool weights run 1-100 (karpenter.sh NodePool CRD: ``weight`` minimum 1, maximum 100):
options get 100, 90, 80, ..."""


class CapacityFallback(Strict):
    """One more place a GPU pool's nodes may come from, tried after the pool's own and the entries before it."""

    name: str = Field(pattern=DNS_LABEL, max_length=20,
                      description="Stable name (resources are named after it; reordering keeps them).")
    instance_types: list[str] | None = Field(
        None, min_length=1, description="Instance types (EKS) or one machine type (GKE); default: the pool's.")
    capacity_type: PoolCapacityType = Field(description="ON_DEMAND, SPOT, RESERVED, CAPACITY_BLOCK (EKS) or "
                                                        "FLEX_START (GKE).")
    reservation: str | None = Field(None, description="RESERVED/CAPACITY_BLOCK: the reservation (see the "
                                                      "pool's `reservation`).")
    hourly_price: float | None = Field(None, ge=0, description="USD per node-hour where no list price applies "
                                                                "(a capacity block's purchase price).")


class AutoProvisioningLimits(Strict):
    """GKE node auto-provisioning limits for the whole cluster (compute-class provisioner only)."""

    cpu: int = Field(96, ge=1, le=100000, description="Most vCPUs across the cluster's nodes.")
    memory_gb: int = Field(768, ge=1, le=1000000, description="Most memory (GB) across the cluster's nodes.")


def options_of(pool) -> list[CapacityOption]:
    """A pool's capacity options in order: its own (``primary``), then ``fallback``."""
    own = CapacityOption("primary", tuple(pool.instance_types), CAPACITY_OF_CONFIG[pool.capacity_type],
                         pool.reservation, pool.hourly_price)
    return [own, *(CapacityOption(f.name, tuple(f.instance_types or pool.instance_types),
                                  CAPACITY_OF_CONFIG[f.capacity_type], f.reservation, f.hourly_price)
                   for f in pool.fallback)]


def gpu_model(pool, instance_type: str, aws: bool) -> str | None:
    """The MIG-capable GPU model of one of a pool's instance types, or None."""
    if aws:
        return EC2_GPU_MODEL.get(instance_type)
    from stacks.gcp_catalog import BUILT_IN_GPUS

    built_in = BUILT_IN_GPUS.get(instance_type)
    return GKE_GPU_MODEL.get(built_in[0] if built_in else pool.accelerator_type or "")


def partitions_per_gpu(pool, aws: bool) -> int:
    """Schedulable units per physical GPU: MIG partitions, or time slices / MPS clients."""
    if pool.mig_profile:
        model = gpu_model(pool, pool.instance_types[0], aws)
        return MIG_PROFILES[model][pool.mig_profile].per_gpu
    return pool.gpu_time_slicing


def check_capacity(settings) -> None:
    """Every capacity rule of a stack (called by StackSettings after the per-pool catalog checks)."""
    aws = settings.cloud == "aws"
    provisioner = settings.gpu_provisioner
    if provisioner in PROVISIONER_CLOUD and PROVISIONER_CLOUD[provisioner] != settings.cloud:
        allowed = "node-groups or karpenter on aws" if aws else "node-groups or compute-class on gcp"
        raise FieldProblem("gpuProvisioner", provisioner, allowed)
    if provisioner == "karpenter" and len(settings.cluster_name) > 70:
        # components/aws/karpenter.py names the interruption queue Karpenter-<cluster> (as terraform-aws-eks
        # modules/karpenter does); SQS queue names are 1-80 characters (CreateQueue QueueName).
        raise FieldProblem("clusterName", settings.cluster_name,
                           "at most 70 characters with gpuProvisioner karpenter (its interruption queue is "
                           "Karpenter-<clusterName>, and SQS queue names are at most 80)")
    for name, pool in settings.node_pools.items():
        _check_pool(f"nodePools.{name}", name, pool, aws, provisioner, settings.region)
        _check_zones(f"nodePools.{name}", name, pool, settings)


def _check_pool(key: str, name: str, pool, aws: bool, provisioner: str, region: str) -> None:
    from stacks.aws_catalog import PoolProblem, check_aws_pool
    from stacks.gcp_catalog import check_gcp_pool

    _check_option(key, pool.capacity_type, pool.reservation, pool.instance_types, aws, region)
    if pool.capacity_type == "FLEX_START" and (pool.min_size or pool.desired_size):
        # Flex-start nodes come when capacity frees up and live at most 7 days: nothing can hold a floor.
        raise FieldProblem(f"{key}.minSize", pool.min_size,
                           "0 (and desiredSize 0) with capacityType FLEX_START: flex-start nodes are created "
                           "only when capacity is available, so no floor can be held")
    elastic = pool.is_gpu and provisioner in ("karpenter", "compute-class") and name != "system"
    if provisioner == "karpenter" and elastic and (pool.min_size or pool.desired_size):
        raise FieldProblem(f"{key}.minSize", pool.min_size,
                           "0 (and desiredSize 0) with gpuProvisioner karpenter: Karpenter creates nodes for "
                           "pending pods only (hold capacity with the servers' replicas instead)")
    if pool.fallback and not elastic:
        raise FieldProblem(f"{key}.fallback", [f.name for f in pool.fallback],
                           "empty unless the pool is a GPU pool and gpuProvisioner is karpenter (EKS) or "
                           "compute-class (GKE): a fixed node group has one capacity option")
    names = [f.name for f in pool.fallback]
    if len(names) + 1 > KARPENTER_MAX_OPTIONS:
        raise FieldProblem(f"{key}.fallback", names, f"at most {KARPENTER_MAX_OPTIONS - 1} entries (Karpenter "
                                                     "NodePool weights run 100 down to 10; a ComputeClass the same)")
    for index, entry in enumerate(pool.fallback):
        entry_key = f"{key}.fallback.{index}"
        # Names made from it: Karpenter's NodePool <pool>-<name> is also the value of the nodes' label
        # karpenter.sh/nodepool (a label value is at most 63 characters); GKE's node pool <pool>-<name> is at
        # most 40 (projects.locations.clusters.nodePools create).
        longest = 63 if provisioner == "karpenter" else 40
        if len(f"{name}-{entry.name}") > longest:
            raise FieldProblem(f"{entry_key}.name", entry.name,
                               f"a name of at most {longest - len(name) - 1} characters: {name}-{entry.name} names "
                               + ("a Karpenter NodePool and a label value (at most 63)" if provisioner == "karpenter"
                                  else "a GKE node pool (at most 40)"))
        if entry.name == "primary" or entry.name in names[:index]:
            raise FieldProblem(f"{entry_key}.name", entry.name,
                               "a name not used by another entry and not 'primary' (the pool's own option)")
        types = entry.instance_types or pool.instance_types
        _check_option(entry_key, entry.capacity_type, entry.reservation, types, aws, region)
        # The fallback's types obey the same catalog rules, with the pool's GPU count: serving pods, the
        # settings' peak check and the cost line all assume one GPU count per pool.
        variant = pool.model_copy(update={"instance_types": list(types)})
        try:
            (check_aws_pool if aws else check_gcp_pool)(variant)
        except PoolProblem as problem:
            field = "instanceTypes" if problem.field in ("instanceTypes", "gpusPerNode", "acceleratorType") \
                else problem.field
            raise FieldProblem(f"{entry_key}.{field}", types if field == "instanceTypes" else problem.value,
                               problem.allowed + f" (fallback entries keep the pool's gpusPerNode "
                                                 f"{pool.gpus_per_node})") from None
    seen: dict[tuple, str] = {}
    if provisioner == "karpenter" and elastic:
        for option, option_key in zip(options_of(pool), [key, *(f"{key}.fallback.{i}" for i in range(len(pool.fallback)))]):
            if option.reservation and re.fullmatch(AWS_RESERVATION_GROUP, option.reservation):
                # Karpenter 1.14 selects reservations by id, tags or owner (EC2NodeClass
                # capacityReservationSelectorTerms), not by resource group.
                raise FieldProblem(f"{option_key}.reservation", option.reservation,
                                   "a capacity reservation id cr-... with gpuProvisioner karpenter (it selects "
                                   "reservations by id, not resource group: list the group's reservations as "
                                   "separate fallback entries)")
    for option in options_of(pool):
        signature = (option.instance_types, option.capacity, option.reservation)
        if signature in seen:
            raise FieldProblem(f"{key}.fallback", [f.name for f in pool.fallback],
                               f"entries that differ: {option.name!r} repeats {seen[signature]!r} "
                               f"({', '.join(option.instance_types)} {option.capacity})")
        seen[signature] = option.name
    _check_partitioning(key, pool, aws)


def _check_zones(key: str, name: str, pool, settings) -> None:
    aws = settings.cloud == "aws"
    if pool.zones is not None and not aws:
        raise FieldProblem(f"{key}.zones", pool.zones, "unset on GKE (pools use the cluster's zones)")
    for zone in pool.zones or []:
        if zone not in settings.zones:
            raise FieldProblem(f"{key}.zones", pool.zones, f"zones of the stack's zones {settings.zones}")
    karpenter = settings.gpu_provisioner == "karpenter" and pool.is_gpu
    by_id = pool.capacity_type == "CAPACITY_BLOCK" or (
        pool.capacity_type == "RESERVED" and re.fullmatch(AWS_RESERVATION_ID, pool.reservation or ""))
    if aws and by_id and not karpenter and (pool.zones is None or len(pool.zones) != 1):
        # A node group spread over zones would try to launch its reserved instances in zones the reservation
        # is not in (EC2 user guide, "Capacity Blocks for ML": launch in the block's Availability Zone).
        # Karpenter finds a reservation's zone itself (it reads it with DescribeCapacityReservations).
        raise FieldProblem(f"{key}.zones", pool.zones, f"the one zone of reservation {pool.reservation} "
                                                       f"(capacityType {pool.capacity_type})")


def _check_option(key: str, capacity: str, reservation: str | None, types: list[str], aws: bool,
                  region: str) -> None:
    if aws and capacity == "FLEX_START":
        raise FieldProblem(f"{key}.capacityType", capacity,
                           "ON_DEMAND, SPOT, RESERVED or CAPACITY_BLOCK on EKS (flex-start is a GKE feature)")
    if not aws and capacity == "CAPACITY_BLOCK":
        raise FieldProblem(f"{key}.capacityType", capacity,
                           "ON_DEMAND, SPOT, RESERVED or FLEX_START on GKE (capacity blocks are an EC2 feature)")
    reserved = capacity in ("RESERVED", "CAPACITY_BLOCK")
    if reserved and not reservation:
        raise FieldProblem(f"{key}.reservation", reservation,
                           f"the reservation to use with capacityType {capacity}: "
                           + ("a capacity reservation id cr-... or a resource group ARN" if aws and capacity == "RESERVED"
                              else "the capacity block's reservation id cr-..." if aws
                              else "a reservation name, projects/<p>/reservations/<name>, or 'any'"))
    if reservation and not reserved:
        raise FieldProblem(f"{key}.reservation", reservation,
                           f"unset unless capacityType is RESERVED{' or CAPACITY_BLOCK' if aws else ''} "
                           f"(not {capacity})")
    if not reservation:
        return
    if aws:
        patterns = [AWS_RESERVATION_ID] + ([AWS_RESERVATION_GROUP] if capacity == "RESERVED" else [])
        if not any(re.fullmatch(p, reservation) for p in patterns):
            raise FieldProblem(f"{key}.reservation", reservation,
                               "a capacity reservation id (cr- and 17 hex digits)"
                               + (" or a resource group ARN arn:aws:resource-groups:<region>:<account>:group/<name>"
                                  if capacity == "RESERVED" else " (capacity blocks are targeted by id)"))
        if capacity == "CAPACITY_BLOCK":
            from components.aws.capacity_blocks import check_capacity_block

            try:
                check_capacity_block(list(types), region)
            except ValueError as problem:
                raise FieldProblem(f"{key}.instanceTypes", list(types), str(problem)) from None
    elif not re.fullmatch(GCP_RESERVATION, reservation):
        raise FieldProblem(f"{key}.reservation", reservation,
                           "a Compute Engine reservation name, projects/<project>/reservations/<name>, or 'any'")


def _check_partitioning(key: str, pool, aws: bool) -> None:
    if pool.gpu_sharing_strategy == "MPS":
        if aws:
            raise FieldProblem(f"{key}.gpuSharingStrategy", "MPS", "TIME_SHARING on EKS (MPS sharing is built "
                                                                   "for GKE here)")
        if pool.gpu_time_slicing < 2:
            raise FieldProblem(f"{key}.gpuTimeSlicing", pool.gpu_time_slicing,
                               "2-48 with gpuSharingStrategy MPS (the clients sharing each GPU)")
    if not pool.mig_profile:
        return
    if pool.gpu_time_slicing > 1:
        raise FieldProblem(f"{key}.gpuTimeSlicing", pool.gpu_time_slicing,
                           f"1 with migProfile {pool.mig_profile} (each partition is a whole schedulable unit)")
    options = options_of(pool)
    models = {gpu_model(pool, t, aws) for option in options for t in option.instance_types}
    if len(models) > 1 and None not in models:
        # One boot script and one device-plugin config per pool: the partitions must be the same GPU's.
        raise FieldProblem(f"{key}.instanceTypes", pool.instance_types,
                           f"types of one GPU model with migProfile (the pool and its fallbacks mix "
                           f"{', '.join(sorted(models))})")
    for option in options:
        for instance_type in option.instance_types:
            model = gpu_model(pool, instance_type, aws)
            offered = (MIG_PROFILES.get(model or "", {}) if aws else GKE_PARTITION_SIZES.get(model or "", ()))
            if pool.mig_profile not in offered:
                where = "" if option.name == "primary" else f" (fallback {option.name})"
                capable = sorted(EC2_GPU_MODEL) if aws else sorted(GKE_GPU_MODEL)
                raise FieldProblem(f"{key}.migProfile", pool.mig_profile,
                                   f"a partition {instance_type}{where} offers: {', '.join(offered)}" if offered
                                   else f"unset: {instance_type}{where} has no MIG-capable GPU (MIG: "
                                        f"{', '.join(capable)})")


def check_server_partition(key: str, server, pool_name: str, pool) -> None:
    """A server on a MIG pool asks for exactly that pool's partition, one per replica."""
    if pool.mig_profile and server.gpu_partition != pool.mig_profile:
        raise FieldProblem(f"{key}.gpuPartition", server.gpu_partition,
                           f"{pool.mig_profile!r}, the migProfile of pool {pool_name!r} (its GPUs are split into "
                           "those partitions; whole GPUs are not offered)")
    if server.gpu_partition and not pool.mig_profile:
        raise FieldProblem(f"{key}.gpuPartition", server.gpu_partition,
                           f"unset: pool {pool_name!r} has no migProfile")
    if server.gpu_partition and server.gpus != 1:
        # "A CUDA process can use a single MIG device" (NVIDIA MIG user guide, "CUDA device enumeration").
        raise FieldProblem(f"{key}.gpus", server.gpus, f"1 with gpuPartition {server.gpu_partition}: a CUDA "
                                                       "process uses one MIG instance")
