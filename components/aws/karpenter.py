"""Karpenter on EKS: the controller (its AWS identity, interruption queue and chart) and the GPU pools it provisions.

Pinned: chart and controller 1.14.1 (aws/karpenter-provider-aws ``charts/karpenter/Chart.yaml``); NodePool and
EC2NodeClass ``v1`` as the chart's ``crds/`` define them. Upstream sources cited below are paths in
aws/karpenter-provider-aws (``provider``), kubernetes-sigs/karpenter (``core``) and terraform-aws-modules/
terraform-aws-eks (``modules/karpenter``), at the commits mirrored for this change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws.iam import partition_of, service_trust_policy
from components.aws.node_group import _K8S_EFFECT, NodePoolSpec, node_labels, node_taints, user_data_document
from components.capacity import CapacityOption
from components.helm_charts import KARPENTER, chart
from components.node_labels import GPU_RESOURCE, POOL_LABEL

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"
"""The chart's service account name (fullname template, release ``karpenter``)."""
AMI_ALIAS = "al2023@v20260714"
"""EKS AL2023 release every node class is pinned to (awslabs/amazon-eks-ami CHANGELOG.md, "AMI Release
v20260714"). The alias picks the release's NVIDIA variant for GPU instance types itself (provider
``pkg/providers/amifamily/al2023.go`` ``DescribeImageQuery``: standard, nvidia and neuron per arch). Never
``@latest``: every new AMI would drift (and so replace) every GPU node, loaded models and all."""

CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
RESERVATION_TYPE_LABEL = "karpenter.k8s.aws/capacity-reservation-type"
# Karpenter's own spelling of EC2 reservation types (provider pkg/apis/v1/ec2nodeclass_status.go).
_RESERVATION_TYPE = {"reserved": "default", "capacity-block": "capacity-block"}
_KARPENTER_CAPACITY = {"on-demand": "on-demand", "spot": "spot", "reserved": "reserved", "capacity-block": "reserved"}
"""``karpenter.sh/capacity-type`` of each option: capacity blocks are ``reserved`` capacity whose reservation
type is ``capacity-block`` (provider pkg/apis/v1/labels.go ``LabelCapacityReservationType``)."""

INTERRUPTION_EVENTS: dict[str, dict[str, Any]] = {
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    # Karpenter acts on EC2 scheduled changes only (provider pkg/controllers/interruption/messages/
    # scheduledchange/parser.go: acceptedService "EC2", acceptedEventTypeCategory "scheduledChange"):
    # other Health events would only cost SQS messages.
    "scheduled-change": {"source": ["aws.health"], "detail-type": ["AWS Health Event"],
                         "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]}},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    # Parsed since the ODCR support (provider pkg/controllers/interruption/parser.go DefaultParsers:
    # capacityreservationinterruption.Parser): interruptible reservations reclaimed by their owner.
    "capacity-reservation-interruption": {
        "source": ["aws.ec2"], "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"]},
}
"""EventBridge patterns feeding the interruption queue: exactly the (source, detail-type) pairs the pinned
controller parses (provider pkg/controllers/interruption/parser.go ``DefaultParsers``); anything else it
reads as a no-op message."""


def controller_trust_policy() -> str:
    """EKS Pod Identity: the agent assumes the role for the associated service account
    (terraform-aws-eks modules/karpenter main.tf ``controller_assume_role``)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "PodIdentity", "Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"]}]})


def controller_policy(cluster_name: str, region: str, account_id: str, queue_arn: str, node_role_arn: str) -> str:
    """The controller's least-privilege policy, after terraform-aws-eks modules/karpenter/policy.tf (v21) and
    the provider's getting-started cloudformation.yaml, scoped to this cluster's tags, queue and node role.

    Left out on purpose: every ``iam:*InstanceProfile`` write (Create/Tag/AddRole/RemoveRole/Delete). The node
    classes name a pre-created ``instanceProfile`` instead of a ``role``, and then the instance-profile
    reconciler only copies the name into the status (provider pkg/controllers/nodeclass/instanceprofile.go
    ``Reconcile``, the ``else`` branch): no IAM write is ever needed, so a compromised controller cannot
    attach another role to a profile. ``iam:ListInstanceProfiles`` stays: the profile garbage collector lists
    ``/karpenter/<region>/<cluster>/`` every run whatever the node classes say (provider pkg/controllers/
    nodeclass/garbagecollection/controller.go); it returns nothing here and deletes nothing.
    Also left out: ``arc-zonal-shift:GetManagedResource`` (``settings.enableZonalShift`` stays false)."""
    p = partition_of(region)
    ec2 = f"arn:{p}:ec2:{region}"
    owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned",
             "aws:RequestTag/eks:eks-cluster-name": cluster_name}
    created = [f"{ec2}:*:{kind}/*" for kind in ("fleet", "instance", "volume", "network-interface",
                                                 "launch-template", "spot-instances-request")]
    return json.dumps({"Version": "2012-10-17", "Statement": [
        # Launching reads images, snapshots, subnets, security groups, reservations: no tags to scope by.
        {"Sid": "AllowScopedEC2InstanceAccessActions", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
         "Resource": [f"{ec2}::image/*", f"{ec2}::snapshot/*", f"{ec2}:*:security-group/*", f"{ec2}:*:subnet/*",
                      f"{ec2}:*:capacity-reservation/*", f"{ec2}:*:placement-group/*"]},
        # Only launch templates Karpenter made for this cluster.
        {"Sid": "AllowScopedEC2LaunchTemplateAccessActions", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet"], "Resource": f"{ec2}:*:launch-template/*",
         "Condition": {"StringEquals": {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"},
                       "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}},
        # What it creates must carry this cluster's tags from birth.
        {"Sid": "AllowScopedEC2InstanceActionsWithTags", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
         "Resource": [*created, f"{ec2}:*:capacity-reservation/*"],
         "Condition": {"StringEquals": owned, "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}},
        {"Sid": "AllowScopedResourceCreationTagging", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": created,
         "Condition": {"StringEquals": {**owned, "ec2:CreateAction": ["RunInstances", "CreateFleet",
                                                                       "CreateLaunchTemplate"]},
                       "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}},
        # Later tagging (Name, nodeclaim) of its own instances only, and only those keys.
        {"Sid": "AllowScopedResourceTagging", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": f"{ec2}:*:instance/*",
         "Condition": {"StringEquals": {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"},
                       "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                       "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                       "ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name",
                                                                     "karpenter.sh/nodeclaim", "Name"]}}},
        # Terminate only its own instances of this cluster: never a managed node group's, never another cluster's.
        {"Sid": "AllowScopedDeletion", "Effect": "Allow",
         "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
         "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
         "Condition": {"StringEquals": {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"},
                       "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}},
        # Describe* has no resource-level permissions; pinned to the cluster's region.
        {"Sid": "AllowRegionalReadActions", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:DescribeCapacityReservations", "ec2:DescribeImages", "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates", "ec2:DescribePlacementGroups", "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets", "ec2:DescribeAvailabilityZones"],
         "Condition": {"StringEquals": {"aws:RequestedRegion": region}}},
        # The EKS AMI ids of an alias are public SSM parameters.
        {"Sid": "AllowSSMReadActions", "Effect": "Allow", "Action": "ssm:GetParameter",
         "Resource": f"arn:{p}:ssm:{region}::parameter/aws/service/*"},
        {"Sid": "AllowPricingReadActions", "Effect": "Allow", "Action": "pricing:GetProducts", "Resource": "*"},
        {"Sid": "AllowInterruptionQueueActions", "Effect": "Allow", "Resource": queue_arn,
         "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]},
        # Launching with the node instance profile passes its role: that role only, to EC2 only.
        {"Sid": "AllowPassingInstanceRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": node_role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        {"Sid": "AllowInstanceProfileReadActions", "Effect": "Allow", "Action": "iam:GetInstanceProfile",
         "Resource": f"arn:{p}:iam::{account_id}:instance-profile/*"},
        {"Sid": "AllowUnscopedInstanceProfileListAction", "Effect": "Allow", "Action": "iam:ListInstanceProfiles",
         "Resource": "*"},
        {"Sid": "AllowAPIServerEndpointDiscovery", "Effect": "Allow", "Action": "eks:DescribeCluster",
         "Resource": f"arn:{p}:eks:{region}:{account_id}:cluster/{cluster_name}"},
    ]})


def queue_policy(queue_arn: str) -> str:
    """Only EventBridge (and SQS itself) may send; anything over plain HTTP is refused (provider
    getting-started cloudformation.yaml ``KarpenterInterruptionQueuePolicy``)."""
    return json.dumps({"Version": "2012-10-17", "Id": "EC2InterruptionPolicy", "Statement": [
        {"Sid": "AllowEventBridge", "Effect": "Allow",
         "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
         "Action": "sqs:SendMessage", "Resource": queue_arn},
        {"Sid": "DenyHTTP", "Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": queue_arn,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]})


HOURLY_PRICE_ANNOTATION = "tfplatform.io/hourly-price"
"""A capacity option's configured ``hourlyPrice`` (USD per node-hour), read by the plan's cost estimate."""


@dataclass(frozen=True)
class KarpenterArgs:
    """Inputs of :class:`Karpenter`."""

    cluster_name: pulumi.Input[str]
    """The EKS cluster (``EksCluster.cluster_name``): scopes the policy and names the chart's cluster."""
    region: str
    """The cluster's region: ARNs and the regional-read condition."""
    account_id: pulumi.Input[str]
    """The cluster's account: instance-profile and cluster ARNs of the policy."""
    replicas: int = 2
    """Controller replicas (leader election; the chart's PDB allows one down)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags of the AWS resources."""


class Karpenter(pulumi.ComponentResource):
    """The Karpenter controller on EKS.

    Creates: the controller's IAM ``Role`` (trust: EKS Pod Identity) with its inline ``RolePolicy``
    (:func:`controller_policy`) and a ``PodIdentityAssociation`` for ``kube-system/karpenter``; the
    interruption ``sqs.Queue`` (SSE, 300 s retention) with its ``QueuePolicy``; one EventBridge ``EventRule``
    and ``EventTarget`` per :data:`INTERRUPTION_EVENTS` entry; the node ``Role`` (EC2 trust;
    AmazonEKSWorkerNodePolicy and AmazonEC2ContainerRegistryPullOnly attached), its ``InstanceProfile`` and
    an EKS ``AccessEntry`` of type ``EC2_LINUX``; the karpenter chart (CRDs from its ``crds/``).

    ``ready``: what the node classes and node pools must come after (the chart: CRDs and controller, and
    the node access entry, without which a launched node cannot join).
    """

    role_arn: pulumi.Output[str]
    node_role_arn: pulumi.Output[str]
    instance_profile_name: pulumi.Output[str]
    queue_name: pulumi.Output[str]

    def __init__(self, name: str, args: KarpenterArgs, aws_opts: pulumi.ResourceOptions,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:aws:Karpenter", name, None, opts)
        cloud = pulumi.ResourceOptions.merge(aws_opts, pulumi.ResourceOptions(parent=self))

        # Named as terraform-aws-eks modules/karpenter does (queue names are unique per account and region, as
        # cluster names are): the chart's settings.interruptionQueue takes the name.
        queue = aws.sqs.Queue(f"{name}-interruption", name=pulumi.Output.concat("Karpenter-", args.cluster_name),
                              message_retention_seconds=300, sqs_managed_sse_enabled=True, tags=args.tags,
                              opts=cloud)
        aws.sqs.QueuePolicy(f"{name}-interruption", queue_url=queue.url, policy=queue.arn.apply(queue_policy),
                            opts=cloud)
        for event, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(f"{name}-{event}", description=f"Karpenter interruption: {event}",
                                            event_pattern=json.dumps(pattern), tags=args.tags, opts=cloud)
            aws.cloudwatch.EventTarget(f"{name}-{event}", rule=rule.name, arn=queue.arn,
                                       target_id="KarpenterInterruptionQueueTarget", opts=cloud)

        # Nodes: no AmazonEKS_CNI_Policy, aws-node has its own IRSA role (EksCluster); ECR pull only
        # (terraform-aws-eks modules/karpenter main.tf ``aws_iam_role_policy_attachment.node``).
        node_role = aws.iam.Role(f"{name}-node", assume_role_policy=service_trust_policy("ec2.amazonaws.com"),
                                 tags=args.tags, opts=cloud)
        p = partition_of(args.region)
        attachments = [aws.iam.RolePolicyAttachment(f"{name}-node-{policy}", role=node_role.name,
                                                    policy_arn=f"arn:{p}:iam::aws:policy/{policy}", opts=cloud)
                       for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly")]
        # Named, not autonamed: the node classes refer to it by name. Instance profile names are unique per
        # account, hence cluster and region in it.
        profile = aws.iam.InstanceProfile(
            f"{name}-node", name=pulumi.Output.concat("karpenter-", args.cluster_name, "-", args.region),
            role=node_role.name, tags=args.tags, opts=cloud)
        access = aws.eks.AccessEntry(f"{name}-node", cluster_name=args.cluster_name, principal_arn=node_role.arn,
                                     type="EC2_LINUX", tags=args.tags, opts=cloud)

        role = aws.iam.Role(f"{name}-controller", assume_role_policy=controller_trust_policy(), tags=args.tags,
                            opts=cloud)
        policy = aws.iam.RolePolicy(f"{name}-controller", role=role.id, policy=pulumi.Output.all(
            args.cluster_name, args.account_id, queue.arn, node_role.arn).apply(
                lambda a: controller_policy(a[0], args.region, a[1], a[2], a[3])), opts=cloud)
        identity = aws.eks.PodIdentityAssociation(
            f"{name}-controller", cluster_name=args.cluster_name, namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT, role_arn=role.arn, tags=args.tags, opts=cloud)

        # The controller must start with its identity in place (the agent injects credentials at pod start)
        # and its node role allowed to join before it launches anything.
        self.chart = chart(f"{name}-chart", KARPENTER, NAMESPACE, {
            "replicas": args.replicas,
            "settings": {"clusterName": args.cluster_name, "interruptionQueue": queue.name},
            "serviceAccount": {"name": SERVICE_ACCOUNT},
        }, opts=pulumi.ResourceOptions(parent=self, depends_on=[identity, policy, access, *attachments]))

        self.ready: list[pulumi.Resource] = [self.chart, access, profile]
        self.role_arn = role.arn
        self.node_role_arn = node_role.arn
        self.instance_profile_name = profile.name
        self.queue_name = queue.name
        self.register_outputs({"role_arn": self.role_arn, "node_role_arn": self.node_role_arn,
                               "instance_profile_name": self.instance_profile_name, "queue_name": self.queue_name})


# --- node classes and node pools --------------------------------------------------------------------

@dataclass(frozen=True)
class KarpenterNodePoolsArgs:
    """Inputs of :class:`KarpenterNodePools`: the GPU pools and where their nodes go."""

    pools: dict[str, NodePoolSpec]
    """GPU pools by stable name (``gpus_per_node`` > 0); each gets a node class and a NodePool per option."""
    instance_profile: pulumi.Input[str]
    """``Karpenter.instance_profile_name``: the pre-created profile of the node role."""
    subnet_ids: pulumi.Input[list[str]]
    """Private subnets for the nodes (selected by id, not by discovery tags)."""
    security_group_ids: pulumi.Input[list[str]]
    """The nodes' security groups (``EksCluster.cluster_security_group_id``, as managed nodes get)."""
    consolidate_after_seconds: dict[str, int] = field(default_factory=dict)
    """Per pool: the longest startup timeout of its servers; a node is not consolidated until that long after
    a pod last arrived on it or left it (so never while a model loads). Missing pools: 600."""
    disruption_budget_nodes: str = "1"
    """Karpenter disruption budget per NodePool: nodes (or %) voluntarily disrupted at once."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags on the EC2 resources Karpenter launches."""


def _k8s_taints(spec: NodePoolSpec) -> list[dict[str, str]]:
    """The pool's taints in Kubernetes spelling (NodePool taints are core/v1 Taints)."""
    return [{"key": t["key"], "value": t["value"], "effect": _K8S_EFFECT[t["effect"]]} for t in node_taints(spec)]


def _arch(spec: NodePoolSpec) -> str:
    return "arm64" if "ARM" in spec.ami_type.upper() else "amd64"


def _check_option(pool: str, option: CapacityOption) -> None:
    """Refuse what the pinned EC2NodeClass cannot express, before anything is registered."""
    if option.capacity not in _KARPENTER_CAPACITY:
        raise ValueError(f"node pool {pool!r} option {option.name!r}: capacity {option.capacity!r} is not "
                         f"available on EKS with Karpenter (allowed: {', '.join(_KARPENTER_CAPACITY)})")
    if not option.is_reserved:
        return
    reservation = option.reservation or ""
    if reservation.startswith("arn:") or not reservation.startswith("cr-"):
        # capacityReservationSelectorTerms take id, ownerID, tags, instanceMatchCriteria: no resource group
        # (provider charts/karpenter/crds/karpenter.k8s.aws_ec2nodeclasses.yaml, pattern ^cr-[0-9a-z]+$).
        raise ValueError(f"node pool {pool!r} option {option.name!r}: Karpenter 1.14 selects capacity reservations "
                         f"by id (cr-...) only, not {reservation!r}: list the reservations of a resource group as "
                         "separate options, or use node groups")


def node_class_name(pool: str, option: CapacityOption) -> str:
    """One node class per pool for on-demand and spot; a reserved option has its own (its reservation)."""
    return f"{pool}-{option.name}" if option.is_reserved else pool


def node_pool_name(pool: str, option: CapacityOption) -> str:
    return pool if option.name == "primary" else f"{pool}-{option.name}"


def node_class_manifest(pool: str, spec: NodePoolSpec, name: str, option: CapacityOption | None,
                        instance_profile: Any, subnet_ids: Any, security_group_ids: Any,
                        tags: dict[str, str]) -> dict[str, Any]:
    ebs: dict[str, Any] = {"volumeSize": f"{spec.disk_size_gb}Gi", "volumeType": "gp3", "encrypted": True,
                           "deleteOnTermination": True}
    if spec.root_volume_throughput is not None:
        ebs["throughput"] = spec.root_volume_throughput
    node_class: dict[str, Any] = {
        "amiSelectorTerms": [{"alias": AMI_ALIAS}],
        "instanceProfile": instance_profile,
        "subnetSelectorTerms": pulumi.Output.from_input(subnet_ids).apply(lambda ids: [{"id": i} for i in ids]),
        "securityGroupSelectorTerms": pulumi.Output.from_input(security_group_ids).apply(
            lambda ids: [{"id": i} for i in ids]),
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "rootVolume": True, "ebs": ebs}],
        # IMDSv2 only, one hop: pods cannot reach the node role's credentials (as the managed nodes' launch template).
        "metadataOptions": {"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled", "httpPutResponseHopLimit": 1,
                            "httpTokens": "required"},
        "tags": {**tags, POOL_LABEL: pool},
    }
    user_data = user_data_document(spec)
    if user_data is not None:
        node_class["userData"] = user_data
    if option is not None and option.is_reserved:
        node_class["capacityReservationSelectorTerms"] = [{"id": option.reservation}]
    return {"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": name},
            "spec": node_class}


def node_pool_manifest(pool: str, spec: NodePoolSpec, option: CapacityOption, weight: int,
                       consolidate_after_seconds: int, budget_nodes: str = "1") -> dict[str, Any]:
    requirements = [
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": list(option.instance_types)},
        {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": [_KARPENTER_CAPACITY[option.capacity]]},
        {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "In", "values": [str(spec.gpus_per_node)]},
        {"key": "kubernetes.io/arch", "operator": "In", "values": [_arch(spec)]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]
    if option.is_reserved:
        requirements.append({"key": RESERVATION_TYPE_LABEL, "operator": "In",
                             "values": [_RESERVATION_TYPE[option.capacity]]})
    # Limits are per NodePool (core pkg/apis/v1/nodepool.go ``Limits``, checked against that NodePool's own
    # status.resources): a pool of three options can hold up to three times max_size nodes in total when
    # every option has capacity. The GPU limit counts what the nodes advertise once registered (core
    # pkg/controllers/state/statenode.go ``Capacity``: the Node's capacity), i.e. time-sliced GPUs;
    # ``nodes`` caps the count whatever the device plugin advertises (MIG, time slicing).
    limits = {"nodes": str(spec.max_size)}
    if spec.mig_profile is None:
        limits[GPU_RESOURCE] = str(spec.max_size * spec.gpus_per_node * spec.gpu_time_slicing)
    metadata: dict[str, Any] = {"name": node_pool_name(pool, option)}
    if option.hourly_price is not None:
        # A price no list applies to (a capacity block's purchase price), for the plan's cost line.
        metadata["annotations"] = {HOURLY_PRICE_ANNOTATION: str(option.hourly_price)}
    return {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": metadata,
            "spec": {
                "weight": weight,
                "template": {
                    "metadata": {"labels": node_labels(pool, spec)},
                    "spec": {
                        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                                         "name": node_class_name(pool, option)},
                        "requirements": requirements,
                        "taints": _k8s_taints(spec),
                        "expireAfter": "720h",
                    },
                },
                "limits": limits,
                "disruption": {
                    # Consolidation drains through the eviction API, so the serving PDB holds (core
                    # pkg/controllers/node/termination/terminator/eviction.go ``evict``: 429 on a PDB, retried).
                    # consolidateAfter counts from the NodeClaim's lastPodEventTime, set whenever a pod is
                    # scheduled to or removed from the node (core pkg/controllers/nodeclaim/podevents/
                    # controller.go; pkg/utils/disruption/disruption.go ``IsUnderConsolidateAfter``): a node
                    # whose server pod arrived less than the longest startup timeout ago (still loading its
                    # model) is not a consolidation candidate.
                    "consolidationPolicy": "WhenEmptyOrUnderutilized",
                    "consolidateAfter": f"{consolidate_after_seconds}s",
                    "budgets": [{"nodes": budget_nodes}],
                },
            }}


def weights(count: int) -> list[int]:
    """Strictly descending NodePool weights (1..100, higher tried first: core pkg/apis/v1/nodepool.go
    ``Weight``) for options in priority order: 100, 90, 80, ... (at most 10 options)."""
    if count > 10:
        raise ValueError(f"at most 10 capacity options per pool (weights 100..10), got {count}")
    return [100 - 10 * i for i in range(count)]


class KarpenterNodePools(pulumi.ComponentResource):
    """The GPU pools as Karpenter node classes and NodePools.

    Creates, per pool: an ``EC2NodeClass`` ``<pool>`` (AL2023 alias pinned to :data:`AMI_ALIAS`, subnets and
    security groups by id, the pre-created instance profile, encrypted gp3 root volume of the pool's size and
    throughput, IMDSv2 with hop limit 1, the pool's NodeConfig user data, tags), one more ``EC2NodeClass``
    ``<pool>-<option>`` per reserved/capacity-block option (its reservation), and a ``NodePool`` per
    capacity option (``<pool>`` for the primary, ``<pool>-<option>`` for fallbacks) with weights descending
    in option order, the pool's labels and taints, limits and a consolidation window.

    ``resources``: the NodePools and node classes, for the platform's ``pool_dependencies``.
    """

    def __init__(self, name: str, args: KarpenterNodePoolsArgs, ready: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        # Every pool is checked before anything (this component included) is registered.
        for pool, spec in args.pools.items():
            if spec.gpus_per_node <= 0:
                raise ValueError(f"node pool {pool!r}: Karpenter provisions GPU pools only (gpusPerNode > 0)")
            for option in spec.options():
                _check_option(pool, option)
            weights(len(spec.options()))
        super().__init__("tfplatform:aws:KarpenterNodePools", name, None, opts)
        after = pulumi.ResourceOptions(parent=self, depends_on=list(ready))
        self.resources: list[pulumi.Resource] = []
        self.pool_resources: dict[str, list[pulumi.Resource]] = {}
        for pool, spec in args.pools.items():
            options = spec.options()
            classes: dict[str, pulumi.Resource] = {}
            for option in options:
                class_name = node_class_name(pool, option)
                if class_name in classes:
                    continue
                manifest = node_class_manifest(pool, spec, class_name, option, args.instance_profile,
                                               args.subnet_ids, args.security_group_ids, args.tags)
                classes[class_name] = k8s.apiextensions.CustomResource(
                    f"{name}-{class_name}-class", api_version=manifest["apiVersion"], kind=manifest["kind"],
                    metadata=manifest["metadata"], spec=manifest["spec"], opts=after)
            pools = []
            for option, weight in zip(options, weights(len(options))):
                manifest = node_pool_manifest(pool, spec, option, weight,
                                              args.consolidate_after_seconds.get(pool, 600),
                                              args.disruption_budget_nodes)
                pools.append(k8s.apiextensions.CustomResource(
                    f"{name}-{node_pool_name(pool, option)}", api_version=manifest["apiVersion"],
                    kind=manifest["kind"], metadata=manifest["metadata"], spec=manifest["spec"],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[
                        *ready, classes[node_class_name(pool, option)]])))
            self.pool_resources[pool] = [*classes.values(), *pools]
            self.resources += self.pool_resources[pool]
        self.register_outputs({})
