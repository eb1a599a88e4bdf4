"""One EKS managed node group, CPU or NVIDIA GPU, able to scale from zero."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.aws.capacity_blocks import EKS_CAPACITY_TYPE, check_capacity_block, reservation_target
from components.capacity import CAPACITY_OF_CONFIG, CapacityOption
from components.gpu.addons import MIG_MIXED_CONFIG
from components.gpu.mig import EC2_GPU_MODEL, MIG_PROFILES, MigProfile, mig_resource
from components.node_labels import (GPU_NODE_LABEL, GPU_RESOURCE, GPU_TAINT_KEY, MIG_PROFILE_LABEL, POOL_LABEL, name_slug,
                                   unique_slugs)

__all__ = ["POOL_LABEL", "ManagedNodeGroup", "MigPlan", "NodeGroupArgs", "NodePoolSpec", "check_pool_spec",
           "mig_plan", "mig_partition_script", "name_slug", "user_data_document"]

DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"

# Kubernetes spelling of the EKS API's taint effects, for the autoscaler's node-template tags.
_K8S_EFFECT = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute",
               "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


@dataclass(frozen=True)
class NodePoolSpec:
    """One entry of the stack's ``nodePools`` map: what the nodes are, not how they are wired."""

    instance_types: list[str]
    """EC2 instance types (several widen spot capacity)."""
    ami_type: str
    """``AL2023_x86_64_NVIDIA`` for GPU pools (driver and toolkit included), else ``AL2023_x86_64_STANDARD``."""
    capacity_type: str = "ON_DEMAND"
    """``ON_DEMAND``, ``SPOT``, ``RESERVED`` (on-demand in ``reservation``) or ``CAPACITY_BLOCK``."""
    min_size: int = 1
    desired_size: int = 1
    max_size: int = 3
    gpus_per_node: int = 0
    """GPUs per node: > 0 adds the GPU taint, labels and scale-from-zero tags."""
    gpu_time_slicing: int = 1
    """Pods sharing each GPU; > 1 labels the nodes for the device plugin's time-slicing config."""
    disk_size_gb: int = 100
    """Encrypted gp3 root volume size."""
    fast_image_pull: bool = False
    """nodeadm's ``FastImagePull`` feature gate: the SOCI snapshotter pulls and unpacks layers in parallel
    (EKS AL2023 AMIs from v20250813; ignored on nodes below 4 vCPUs / 7 GiB)."""
    root_volume_throughput: int | None = None
    """gp3 throughput in MiB/s (None: gp3's 125). Parallel unpacking is bound by it: nodeadm's docs
    advise at least 600 with ``fast_image_pull``."""
    labels: dict[str, str] = field(default_factory=dict)
    """Extra node labels (the pool label is always added)."""
    taints: list[dict[str, str]] = field(default_factory=list)
    """Extra taints as ``{key, value, effect}`` with EKS effects (``NO_SCHEDULE``, ...)."""
    reservation: str | None = None
    """``RESERVED``: a capacity reservation id ``cr-...`` or a resource group ARN of reservations;
    ``CAPACITY_BLOCK``: the capacity block's reservation id."""
    hourly_price: float | None = None
    """USD per node-hour where no list price applies (a capacity block's, set when it is bought)."""
    fallback: tuple[CapacityOption, ...] = ()
    """More capacity options after the pool's own, in priority order (Karpenter only)."""
    mig_profile: str | None = None
    """MIG profile every GPU of the pool is split into (``1g.10gb``, ...): :mod:`components.gpu.mig`."""
    zones: tuple[str, ...] = ()
    """Zones to place the nodes in (their private subnets); empty: every zone of the cluster. A reserved or
    Capacity Block group names its reservation's zone: EC2 launches reserved capacity only there."""

    def options(self) -> tuple[CapacityOption, ...]:
        """The pool's own capacity option (named ``primary``), then its fallbacks."""
        primary = CapacityOption("primary", tuple(self.instance_types), CAPACITY_OF_CONFIG[self.capacity_type],
                                 self.reservation, self.hourly_price)
        return (primary, *self.fallback)


@dataclass(frozen=True)
class NodeGroupArgs:
    """Inputs of :class:`ManagedNodeGroup`: a pool spec and the cluster it joins."""

    cluster_name: pulumi.Input[str]
    node_role_arn: pulumi.Input[str]
    """Instance role of the nodes."""
    subnet_ids: pulumi.Input[list[str]]
    """Private subnets to place nodes in. A ``RESERVED`` or ``CAPACITY_BLOCK`` pool: only the subnets in the
    reservation's Availability Zone (EKS user guide, capacity-blocks-mng; an ODCR serves one zone)."""
    spec: NodePoolSpec
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MigPlan:
    """How a MIG pool's GPUs are split: one profile, ``per_gpu`` instances on every GPU."""

    gpu_model: str
    """The pool's GPU model (:data:`components.gpu.mig.EC2_GPU_MODEL`)."""
    profile: MigProfile
    gpus_per_node: int

    @property
    def resource(self) -> str:
        """What pods request: ``nvidia.com/mig-<profile>`` (the device plugin's ``mixed`` strategy)."""
        return mig_resource(self.profile.name)

    @property
    def per_node(self) -> int:
        """Partitions one node advertises."""
        return self.profile.per_gpu * self.gpus_per_node


def mig_plan(spec: NodePoolSpec) -> MigPlan | None:
    """The pool's MIG plan, None without ``mig_profile``. ValueError when the profile cannot be made on the
    pool's instances (no GPUs, GPUs without MIG, several GPU models, a profile the GPU does not offer, or
    time slicing on top of MIG)."""
    if not spec.mig_profile:
        return None
    if spec.gpus_per_node < 1:
        raise ValueError(f"mig_profile {spec.mig_profile!r} needs a GPU pool (gpus_per_node >= 1)")
    unknown = [t for t in spec.instance_types if t not in EC2_GPU_MODEL]
    if unknown:
        raise ValueError(f"mig_profile {spec.mig_profile!r}: instance types {unknown} have no MIG-capable "
                         f"GPU; allowed: {', '.join(EC2_GPU_MODEL)}")
    models = sorted({EC2_GPU_MODEL[t] for t in spec.instance_types})
    if len(models) != 1:
        # One boot script per launch template: its profile id must fit every instance's GPU.
        raise ValueError(f"mig_profile {spec.mig_profile!r}: the instance types {spec.instance_types} have "
                         f"different GPU models {models}; a MIG pool has one GPU model")
    (model,) = models
    profiles = MIG_PROFILES[model]
    if spec.mig_profile not in profiles:
        raise ValueError(f"mig_profile {spec.mig_profile!r} is not a MIG profile of {model} "
                         f"({spec.instance_types[0]}); allowed: {', '.join(profiles)}")
    if spec.gpu_time_slicing > 1:
        # The time-slicing configs replicate nvidia.com/gpu, which a MIG node no longer advertises.
        raise ValueError(f"gpu_time_slicing {spec.gpu_time_slicing} cannot be combined with mig_profile "
                         f"{spec.mig_profile!r}; allowed: gpu_time_slicing 1 on a MIG pool")
    return MigPlan(model, profiles[spec.mig_profile], spec.gpus_per_node)


def check_pool_spec(spec: NodePoolSpec) -> None:
    """Refuse (ValueError) what EKS or EC2 would refuse at ``pulumi up``, before any resource exists: a
    reservation the capacity type cannot use, a Capacity Block pool with several or unsupported types,
    an impossible MIG profile."""
    reservation_target(spec.capacity_type, spec.reservation)
    if spec.capacity_type == "CAPACITY_BLOCK":
        check_capacity_block(spec.instance_types)
    mig_plan(spec)


MIG_SCRIPT_PATH = "/usr/local/sbin/tfplatform-mig-partition"
MIG_UNIT = "tfplatform-mig-partition.service"

_MIG_SCRIPT = r'''#!/bin/bash
# Split every GPU of this node into __PER_GPU__ MIG instances of profile __PROFILE__ (GPU instance profile
# id __PROFILE_ID__), each with its compute instance. Idempotent: a GPU already split this way is left alone.
# Run by the user data (first boot, cloud-final) and by __UNIT__ (every later boot), both before
# nodeadm-run.service starts the kubelet, so the device plugin finds the partitions when it starts.
set -euo pipefail
MIG_PROFILE='__PROFILE__'
MIG_PROFILE_ID=__PROFILE_ID__
MIG_PER_GPU=__PER_GPU__
STATE_DIR="${TFPLATFORM_MIG_STATE_DIR:-/var/lib/tfplatform-mig}"
log() { echo "tfplatform-mig: $*" >&2; }

# The driver is loaded by nvidia-kmod-load.service; wait (bounded) until nvidia-smi answers.
for attempt in $(seq 1 60); do
  if nvidia-smi -L >/dev/null 2>&1; then break; fi
  if [ "$attempt" -eq 60 ]; then log "nvidia-smi does not answer: no NVIDIA driver"; exit 1; fi
  sleep 5
done

mig_mode() { nvidia-smi -i "$1" --query-gpu=mig.mode.current --format=csv,noheader | tr -d '[:space:]'; }
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ')
if [ -z "$gpus" ]; then log "no GPU found"; exit 1; fi

# 1. MIG mode on every GPU. Services holding the GPUs open keep a mode change pending (NVIDIA mig-parted
# stops them around mode changes): stop the running ones, start them again afterwards.
to_enable=""
for gpu in $gpus; do
  if [ "$(mig_mode "$gpu")" != "Enabled" ]; then to_enable="$to_enable $gpu"; fi
done
if [ -n "$to_enable" ]; then
  held=""
  for unit in nvidia-persistenced.service nvidia-fabricmanager.service; do
    if systemctl is-active --quiet "$unit"; then systemctl stop "$unit"; held="$held $unit"; fi
  done
  pending=""
  for gpu in $to_enable; do
    nvidia-smi -i "$gpu" -mig 1
    if [ "$(mig_mode "$gpu")" != "Enabled" ]; then pending="$pending $gpu"; fi
  done
  for unit in $held; do systemctl start "$unit"; done
  if [ -n "$pending" ]; then
    # The mode takes effect after a GPU reset; a reboot does it and the mode survives it. Once only.
    if [ -e "$STATE_DIR/rebooted" ]; then
      log "MIG mode still pending on GPU(s)$pending after a reboot"; exit 1
    fi
    mkdir -p "$STATE_DIR" && touch "$STATE_DIR/rebooted"
    log "MIG mode pending on GPU(s)$pending: rebooting once"
    systemctl reboot
    exit 0
  fi
fi

# 2. The partitions, from what `nvidia-smi -L` lists under each GPU ("  MIG <profile> Device <n>: ...").
want=$(for _ in $(seq 1 "$MIG_PER_GPU"); do echo "$MIG_PROFILE"; done)
ids=$(for _ in $(seq 1 "$MIG_PER_GPU"); do printf '%s,' "$MIG_PROFILE_ID"; done)
ids=${ids%,}
listing=$(nvidia-smi -L)
for gpu in $gpus; do
  have=$(awk -v gpu="$gpu" '/^GPU [0-9]+:/ { n = $2; sub(":", "", n); on = (n == gpu); next }
                             on && $1 == "MIG" { print $2 }' <<<"$listing")
  if [ "$have" = "$want" ]; then log "GPU $gpu: $MIG_PER_GPU x $MIG_PROFILE already"; continue; fi
  # Anything else (another layout, or GPU instances left without compute instances) is cleared first;
  # "nothing to destroy" is not an error here, and whatever is left makes the create below fail loudly.
  nvidia-smi mig -i "$gpu" -dci >/dev/null 2>&1 || true
  nvidia-smi mig -i "$gpu" -dgi >/dev/null 2>&1 || true
  nvidia-smi mig -i "$gpu" -cgi "$ids" -C
done
'''

_MIG_UNIT = '''[Unit]
Description=tfplatform: split the GPUs into MIG partitions before the kubelet starts
# The driver: nvidia-kmod-load.service. The MIG mode changes before nvidia-persistenced and
# nvidia-fabricmanager hold the GPUs (awslabs/amazon-eks-ami templates/al2023/runtime/gpu/*.service).
After=nvidia-kmod-load.service
Before=nvidia-persistenced.service nvidia-fabricmanager.service nodeadm-run.service kubelet.service

[Service]
Type=oneshot
RemainAfterExit=true
ExecStart=__SCRIPT__

[Install]
WantedBy=multi-user.target
'''


def mig_partition_script(plan: MigPlan) -> str:
    """The boot script that splits every GPU into ``plan.per_gpu`` instances of ``plan.profile``."""
    return (_MIG_SCRIPT.replace("__PROFILE_ID__", str(plan.profile.profile_id))
            .replace("__PROFILE__", plan.profile.name).replace("__PER_GPU__", str(plan.profile.per_gpu))
            .replace("__UNIT__", MIG_UNIT))


def mig_user_script(plan: MigPlan) -> str:
    """The user-data shell part: install the partition script and its boot unit, then run it once."""
    return "\n".join([
        "#!/bin/bash",
        "# tfplatform: MIG partitions (components/aws/node_group.py). cloud-init runs this part in",
        "# cloud-final.service, which nodeadm-run.service (the kubelet's start) is ordered after.",
        "set -euo pipefail",
        f"cat > {MIG_SCRIPT_PATH} <<'TFPLATFORM_MIG_SCRIPT'",
        mig_partition_script(plan).rstrip("\n"),
        "TFPLATFORM_MIG_SCRIPT",
        f"chmod 0755 {MIG_SCRIPT_PATH}",
        f"cat > /etc/systemd/system/{MIG_UNIT} <<'TFPLATFORM_MIG_UNIT'",
        _MIG_UNIT.replace("__SCRIPT__", MIG_SCRIPT_PATH).rstrip("\n"),
        "TFPLATFORM_MIG_UNIT",
        "systemctl daemon-reload",
        # Enabled before the first run: a reboot the script asks for (MIG mode pending) runs it again.
        f"systemctl enable {MIG_UNIT}",
        MIG_SCRIPT_PATH,
        ""])


BOUNDARY = "tfplatform"


def user_data_document(spec: NodePoolSpec) -> str | None:
    """The nodes' MIME multi-part user data, or None when the pool needs none. Parts, in this order:

    1. ``application/node.eks.aws``: a nodeadm ``NodeConfig`` turning on the ``FastImagePull`` feature
       gate (``fast_image_pull``).
    2. ``text/x-shellscript``: the MIG partitioning (``mig_profile``), see :func:`mig_user_script`.

    EKS merges its own bootstrap NodeConfig with the user data of a managed node group's launch template
    when the group names no custom AMI, provided it is MIME multi-part (EKS user guide, "Customize managed
    nodes with launch templates", user data); nodeadm merges the NodeConfig documents
    (awslabs/amazon-eks-ami nodeadm/doc/examples.md, "Enabling fast image pull"). Karpenter's EC2NodeClass
    takes the same document in ``userData`` (plain text) and merges it with its own NodeConfig.

    Order against the kubelet (awslabs/amazon-eks-ami, templates/al2023/runtime/rootfs/etc/systemd/system/):
    ``nodeadm-config.service`` runs ``Before=cloud-init.service``; ``nodeadm-run.service`` runs
    ``After=nodeadm-config.service cloud-final.service`` and is what starts the kubelet (nodeadm
    internal/kubelet/daemon.go ``EnsureRunning`` restarts ``kubelet.service``, which the AMI does not
    enable: templates/al2023/provisioners/install-worker.sh). cloud-init runs ``text/x-shellscript`` parts
    in its final stage (cloud-final.service), so the partitions exist before the kubelet, and hence the
    device plugin, starts. Later boots run the same script from a unit ordered ``Before=nodeadm-run.service
    kubelet.service`` (cloud-init runs user scripts once per instance).

    Raises ValueError for an impossible MIG profile (:func:`mig_plan`).
    """
    plan = mig_plan(spec)
    parts: list[tuple[str, str]] = []
    if spec.fast_image_pull:
        parts.append(("application/node.eks.aws", "\n".join([
            '---',
            'apiVersion: node.eks.aws/v1alpha1',
            'kind: NodeConfig',
            'spec:',
            '  featureGates:',
            '    FastImagePull: true',
            ''])))
    if plan is not None:
        parts.append(('text/x-shellscript; charset="us-ascii"', mig_user_script(plan)))
    if not parts:
        return None
    lines = ['MIME-Version: 1.0', f'Content-Type: multipart/mixed; boundary="{BOUNDARY}"', '']
    for content_type, body in parts:
        lines += [f'--{BOUNDARY}', f'Content-Type: {content_type}', '', body]
    lines += [f'--{BOUNDARY}--', '']
    return "\n".join(lines)


def node_user_data(spec: NodePoolSpec) -> str | None:
    """:func:`user_data_document`, base64-encoded for a launch template."""
    document = user_data_document(spec)
    return None if document is None else base64.b64encode(document.encode()).decode()


def node_labels(pool: str, spec: NodePoolSpec) -> dict[str, str]:
    labels = {POOL_LABEL: pool, **spec.labels}
    if spec.gpus_per_node:
        labels[GPU_NODE_LABEL] = "true"
    if spec.gpus_per_node and spec.mig_profile:
        # The device plugin's config-manager picks the named config from the chart's map by this label
        # (components/gpu/addons.py adds ``mig-mixed`` when a pool uses MIG).
        labels[DEVICE_PLUGIN_CONFIG_LABEL] = MIG_MIXED_CONFIG
        labels[MIG_PROFILE_LABEL] = spec.mig_profile
    elif spec.gpus_per_node and spec.gpu_time_slicing > 1:
        # The NVIDIA device plugin picks its per-node config by this label; the config named here
        # advertises each GPU as gpu_time_slicing schedulable nvidia.com/gpu.
        labels[DEVICE_PLUGIN_CONFIG_LABEL] = f"time-slicing-{spec.gpu_time_slicing}"
    return labels


def node_taints(spec: NodePoolSpec) -> list[dict[str, str]]:
    taints = list(spec.taints)
    if spec.gpus_per_node and not any(t["key"] == GPU_TAINT_KEY for t in taints):
        # Keeps non-GPU pods off expensive nodes; GPU pods (MIG ones too) tolerate it.
        taints.append({"key": GPU_TAINT_KEY, "value": "true", "effect": "NO_SCHEDULE"})
    return taints


def autoscaler_node_template_tags(pool: str, spec: NodePoolSpec) -> dict[str, str]:
    """Auto Scaling group tags that let cluster-autoscaler scale this group up from zero nodes.

    With no node running, the autoscaler builds a node template from these tags; managed node
    groups do not add them (https://github.com/kubernetes/autoscaler/issues/4998,
    https://github.com/aws/containers-roadmap/issues/724). A MIG pool advertises its partitions
    (``nvidia.com/mig-<profile>``, per GPU x GPUs) instead of ``nvidia.com/gpu``: with the ``mixed``
    strategy a MIG-enabled GPU is not offered as ``nvidia.com/gpu`` at all (NVIDIA/k8s-device-plugin
    v0.17.1 internal/rm/device_map.go ``buildGPUDeviceMap`` skips it).
    """
    prefix = "k8s.io/cluster-autoscaler/node-template"
    tags = {f"{prefix}/label/{k}": v for k, v in node_labels(pool, spec).items()}
    for taint in node_taints(spec):
        tags[f"{prefix}/taint/{taint['key']}"] = f"{taint['value']}:{_K8S_EFFECT[taint['effect']]}"
    plan = mig_plan(spec)
    if plan is not None:
        tags[f"{prefix}/resources/{plan.resource}"] = str(plan.per_node)
    elif spec.gpus_per_node:
        tags[f"{prefix}/resources/{GPU_RESOURCE}"] = str(spec.gpus_per_node * spec.gpu_time_slicing)
    return tags


class ManagedNodeGroup(pulumi.ComponentResource):
    """An EKS managed node group.

    Creates: an ``aws.ec2.LaunchTemplate`` (IMDSv2 only with hop limit 1, so pods cannot take the
    node role; encrypted gp3 root volume; user data parts for ``fast_image_pull`` and ``mig_profile``;
    for ``RESERVED`` and ``CAPACITY_BLOCK`` the capacity reservation target, for ``CAPACITY_BLOCK`` also the
    ``capacity-block`` market and the one instance type), the ``aws.eks.NodeGroup`` (labels, taints, rolling
    updates of a third of the nodes, node auto-repair; capacity type ``ON_DEMAND`` for ``RESERVED``) and one
    ``aws.autoscaling.Tag`` per node-template tag. The spec is checked first (:func:`check_pool_spec`):
    nothing is registered for an impossible one.
    """

    node_group_name: pulumi.Output[str]
    asg_name: pulumi.Output[str]

    def __init__(self, name: str, pool: str, args: NodeGroupArgs,
                 opts: pulumi.ResourceOptions | None = None):
        spec = args.spec
        check_pool_spec(spec)
        super().__init__("tfplatform:aws:ManagedNodeGroup", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        target = reservation_target(spec.capacity_type, spec.reservation)
        capacity_block = spec.capacity_type == "CAPACITY_BLOCK"
        launch_template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            description=f"EKS node group {pool}",
            update_default_version=True,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1),
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=spec.disk_size_gb, volume_type="gp3", encrypted="true",
                    throughput=spec.root_volume_throughput, delete_on_termination="true"))],
            # Only the target, no preference: the EC2 API takes one of the two
            # (LaunchTemplateCapacityReservationSpecificationRequest).
            capacity_reservation_specification=None if target is None else
            aws.ec2.LaunchTemplateCapacityReservationSpecificationArgs(
                capacity_reservation_target=aws.ec2.
                LaunchTemplateCapacityReservationSpecificationCapacityReservationTargetArgs(**target)),
            # A Capacity Block launch: market type capacity-block and the type on the template (EKS user
            # guide, capacity-blocks-mng; components/aws/capacity_blocks.py).
            instance_market_options=aws.ec2.LaunchTemplateInstanceMarketOptionsArgs(
                market_type="capacity-block") if capacity_block else None,
            instance_type=spec.instance_types[0] if capacity_block else None,
            user_data=node_user_data(spec),
            tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(
                resource_type="instance", tags={**args.tags, "Name": name})],
            tags=args.tags,
            opts=child)

        group = aws.eks.NodeGroup(
            f"{name}",
            cluster_name=args.cluster_name,
            node_role_arn=args.node_role_arn,
            subnet_ids=args.subnet_ids,
            ami_type=spec.ami_type,
            capacity_type=EKS_CAPACITY_TYPE[spec.capacity_type],
            # A type on the launch template and any here fail the create (EKS CreateNodegroup instanceTypes).
            instance_types=None if capacity_block else spec.instance_types,
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=launch_template.id, version=launch_template.latest_version.apply(str)),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=spec.min_size, desired_size=spec.desired_size, max_size=spec.max_size),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable_percentage=33),
            # EKS node auto-repair: unhealthy nodes (NotReady; GPU/XID faults too once the
            # eks-node-monitoring-agent reports them) are replaced or rebooted instead of lingering.
            node_repair_config=aws.eks.NodeGroupNodeRepairConfigArgs(enabled=True),
            labels=node_labels(pool, spec),
            taints=[aws.eks.NodeGroupTaintArgs(**t) for t in node_taints(spec)],
            tags={**args.tags, "tfplatform.io/node-pool": pool},
            # The cluster-autoscaler owns the desired size after creation; without this every
            # `pulumi up` would reset it (terraform-aws-eks does the same).
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["scalingConfig.desiredSize"]))

        self.node_group = group
        self.node_group_name = group.node_group_name
        self.asg_name = group.resources.apply(lambda resources: resources[0].autoscaling_groups[0].name)

        tags = autoscaler_node_template_tags(pool, spec)
        # Distinct keys, distinct names (label keys team.name and team-name share a plain slug).
        slugs = unique_slugs([key.removeprefix("k8s.io/cluster-autoscaler/node-template/") for key in tags])
        for key, value in tags.items():
            aws.autoscaling.Tag(
                f"{name}-ca-{slugs[key.removeprefix('k8s.io/cluster-autoscaler/node-template/')]}",
                autoscaling_group_name=self.asg_name,
                tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                opts=child)

        self.register_outputs({"node_group_name": self.node_group_name, "asg_name": self.asg_name})
