"""One EKS managed node group, CPU or NVIDIA GPU, able to scale from zero."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.capacity import CAPACITY_OF_CONFIG, CapacityOption
from components.node_labels import GPU_NODE_LABEL, GPU_RESOURCE, GPU_TAINT_KEY, POOL_LABEL, name_slug, unique_slugs

__all__ = ["POOL_LABEL", "ManagedNodeGroup", "NodeGroupArgs", "NodePoolSpec", "name_slug"]

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
    """Private subnets to place nodes in."""
    spec: NodePoolSpec
    tags: dict[str, str] = field(default_factory=dict)


def user_data_document(spec: NodePoolSpec) -> str | None:
    """The nodes' MIME multi-part user data: a nodeadm ``NodeConfig`` part turning on the ``FastImagePull``
    feature gate, or None.

    EKS merges its own bootstrap NodeConfig with the user data of a managed node group's launch template
    when the group names no custom AMI, provided it is MIME multi-part (EKS user guide, "Customize managed
    nodes with launch templates", user data); nodeadm merges the NodeConfig documents
    (awslabs/amazon-eks-ami nodeadm/doc/examples.md, "Enabling fast image pull"). Karpenter's EC2NodeClass
    takes the same document in ``userData`` (plain text) and merges it with its own NodeConfig."""
    if not spec.fast_image_pull:
        return None
    return "\n".join([
        'MIME-Version: 1.0',
        'Content-Type: multipart/mixed; boundary="tfplatform"',
        '',
        '--tfplatform',
        'Content-Type: application/node.eks.aws',
        '',
        '---',
        'apiVersion: node.eks.aws/v1alpha1',
        'kind: NodeConfig',
        'spec:',
        '  featureGates:',
        '    FastImagePull: true',
        '',
        '--tfplatform--',
        ''])


def node_user_data(spec: NodePoolSpec) -> str | None:
    """:func:`user_data_document`, base64-encoded for a launch template."""
    document = user_data_document(spec)
    return None if document is None else base64.b64encode(document.encode()).decode()


def node_labels(pool: str, spec: NodePoolSpec) -> dict[str, str]:
    labels = {POOL_LABEL: pool, **spec.labels}
    if spec.gpus_per_node:
        labels[GPU_NODE_LABEL] = "true"
    if spec.gpus_per_node and spec.gpu_time_slicing > 1:
        # The NVIDIA device plugin picks its per-node config by this label; the config named here
        # advertises each GPU as gpu_time_slicing schedulable nvidia.com/gpu.
        labels[DEVICE_PLUGIN_CONFIG_LABEL] = f"time-slicing-{spec.gpu_time_slicing}"
    return labels


def node_taints(spec: NodePoolSpec) -> list[dict[str, str]]:
    taints = list(spec.taints)
    if spec.gpus_per_node and not any(t["key"] == GPU_TAINT_KEY for t in taints):
        # Keeps non-GPU pods off expensive nodes; GPU pods tolerate it.
        taints.append({"key": GPU_TAINT_KEY, "value": "true", "effect": "NO_SCHEDULE"})
    return taints


def autoscaler_node_template_tags(pool: str, spec: NodePoolSpec) -> dict[str, str]:
    """Auto Scaling group tags that let cluster-autoscaler scale this group up from zero nodes.

    With no node running, the autoscaler builds a node template from these tags; managed node
    groups do not add them (https://github.com/kubernetes/autoscaler/issues/4998,
    https://github.com/aws/containers-roadmap/issues/724).
    """
    prefix = "k8s.io/cluster-autoscaler/node-template"
    tags = {f"{prefix}/label/{k}": v for k, v in node_labels(pool, spec).items()}
    for taint in node_taints(spec):
        tags[f"{prefix}/taint/{taint['key']}"] = f"{taint['value']}:{_K8S_EFFECT[taint['effect']]}"
    if spec.gpus_per_node:
        tags[f"{prefix}/resources/{GPU_RESOURCE}"] = str(spec.gpus_per_node * spec.gpu_time_slicing)
    return tags


class ManagedNodeGroup(pulumi.ComponentResource):
    """An EKS managed node group.

    Creates: an ``aws.ec2.LaunchTemplate`` (IMDSv2 only with hop limit 1, so pods cannot take the
    node role; encrypted gp3 root volume; with ``fast_image_pull`` a NodeConfig user-data part), the ``aws.eks.NodeGroup`` (labels, taints, rolling
    updates of a third of the nodes, node auto-repair) and one ``aws.autoscaling.Tag`` per node-template tag.
    """

    node_group_name: pulumi.Output[str]
    asg_name: pulumi.Output[str]

    def __init__(self, name: str, pool: str, args: NodeGroupArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:aws:ManagedNodeGroup", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec = args.spec

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
            capacity_type=spec.capacity_type,
            instance_types=spec.instance_types,
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
