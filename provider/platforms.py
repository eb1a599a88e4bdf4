"""Clusters: ``EksPlatform`` (VPC + EKS + managed node groups) and ``GkePlatform`` (network + GKE + node
pools), wrapping components/aws/network.py, components/aws/eks_cluster.py, components/gcp/network.py and
components/gcp/gke_cluster.py."""

from enum import Enum
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from components.aws.eks_cluster import EksCluster, EksClusterArgs
from components.aws.network import Vpc, VpcArgs
from components.aws.node_group import NodePoolSpec
from components.gcp.gke_cluster import GkeCluster, GkeClusterArgs, GkeNodePoolSpec
from components.gcp.network import GkeNetwork, GkeNetworkArgs
from provider.shared import NodeTaint, plain, taints, token, value_of

GPU_AMI = "AL2023_x86_64_NVIDIA"
CPU_AMI = "AL2023_x86_64_STANDARD"


def _given(args: dict, component: str, **fields: Any) -> dict[str, Any]:
    """The inner Args' keyword arguments for the keys the caller set (plain values), so every key left out
    keeps the component's own default: the wrapper never restates (and so never loosens) a default."""
    out = {}
    for key, convert in fields.items():
        if args.get(key) is not None:
            value = plain(args[key], key, component)
            out[key] = convert(value) if convert else value
    return out


class CapacityType(Enum):
    """How EC2 capacity of an EKS node group is bought (the EKS API's ``CapacityTypes`` plus the platform's
    reserved spellings, components/aws/node_group.py)."""

    ON_DEMAND = "ON_DEMAND"
    """On-demand instances."""
    SPOT = "SPOT"
    """Spot instances (interruptible, cheaper); list several instance types to widen the pool."""
    RESERVED = "RESERVED"
    """On-demand instances in the capacity reservation named by ``reservation``."""
    CAPACITY_BLOCK = "CAPACITY_BLOCK"
    """A purchased EC2 Capacity Block for ML, named by ``reservation``."""


class EksNodePool(TypedDict):
    """One managed node group of an EKS platform, keyed by its stable pool name in ``nodePools``."""

    instance_types: list[str]
    """EC2 instance types (several widen spot capacity), e.g. ``g6.xlarge``."""
    ami_type: NotRequired[str]
    """EKS AMI type; default ``AL2023_x86_64_NVIDIA`` when ``gpusPerNode`` > 0 (driver and container toolkit
    included), else ``AL2023_x86_64_STANDARD``."""
    capacity_type: NotRequired[CapacityType]
    """How the capacity is bought; default ``ON_DEMAND``."""
    min_size: NotRequired[int]
    """Minimum nodes (0 lets a GPU pool scale from zero: the platform adds the autoscaler's node-template
    tags); default 1."""
    desired_size: NotRequired[int]
    """Nodes at creation (the autoscaler owns the count afterwards); default 1."""
    max_size: NotRequired[int]
    """Maximum nodes; default 3."""
    gpus_per_node: NotRequired[int]
    """GPUs per node: > 0 adds the ``nvidia.com/gpu`` taint, pool labels and scale-from-zero tags;
    default 0."""
    gpu_time_slicing: NotRequired[int]
    """Pods sharing each GPU (> 1 labels nodes for the device plugin's time-slicing config); default 1."""
    disk_size_gb: NotRequired[int]
    """Encrypted gp3 root volume size in GB; default 100."""
    labels: NotRequired[dict[str, str]]
    """Extra node labels (the pool label ``tfplatform.io/node-pool`` is always added)."""
    taints: NotRequired[list[NodeTaint]]
    """Extra taints on the nodes."""
    reservation: NotRequired[str]
    """``RESERVED``: a capacity reservation id ``cr-...`` or a resource group ARN; ``CAPACITY_BLOCK``: the
    block's reservation id."""
    zones: NotRequired[list[str]]
    """Zones to place the nodes in (their private subnets); default every zone of the platform."""


def eks_pool_spec(pool: str, spec: EksNodePool) -> NodePoolSpec:
    component = f"EksPlatform node pool {pool!r}"
    gpus = int(plain(spec.get("gpus_per_node") or 0, "gpusPerNode", component))
    return NodePoolSpec(
        instance_types=list(plain(spec["instance_types"], "instanceTypes", component)),
        ami_type=plain(spec.get("ami_type"), "amiType", component) or (GPU_AMI if gpus else CPU_AMI),
        **_given(spec, component, capacity_type=value_of, min_size=int, desired_size=int, max_size=int,
                 gpus_per_node=int, gpu_time_slicing=int, disk_size_gb=int, labels=dict, reservation=None,
                 zones=tuple),
        taints=taints(spec.get("taints"), component))


class EksPlatformArgs(TypedDict):
    """Inputs of ``EksPlatform``."""

    cluster_name: str
    """EKS cluster name (also names the log groups, KMS alias and subnet discovery tags)."""
    region: str
    """AWS region of the platform; must be the region of the AWS provider the component runs with."""
    zones: list[str]
    """Availability zones: one public and one private subnet each, e.g. ``us-east-1a``."""
    node_pools: dict[str, EksNodePool]
    """Managed node groups keyed by stable pool name; a pool named ``system`` hosts the add-ons and is what
    the cluster's Kubernetes provider waits for."""
    vpc_cidr: NotRequired[str]
    """VPC CIDR; default ``10.0.0.0/16``."""
    single_nat_gateway: NotRequired[bool]
    """One NAT gateway for all zones (cheaper) or one per zone (a zone outage keeps egress); default true."""
    flow_logs: NotRequired[bool]
    """VPC flow logs of all traffic to a CloudWatch log group; default true."""
    flow_log_retention_days: NotRequired[int]
    """Retention of the flow-log group (a CloudWatch retention period); default 365."""
    sts_endpoint: NotRequired[bool]
    """An STS interface endpoint in every private subnet (IRSA token exchange stays in the VPC);
    default false."""
    kubernetes_version: NotRequired[str]
    """EKS Kubernetes version; default ``1.33``."""
    endpoint_public_access: NotRequired[bool]
    """Public API endpoint (the private one is always on); default true, restricted by
    ``publicAccessCidrs``."""
    public_access_cidrs: NotRequired[list[str]]
    """Networks allowed to the public endpoint; default ``0.0.0.0/0``."""
    api_access_cidrs: NotRequired[list[str]]
    """Networks (a deploy runner's VPC, a VPN) allowed to the API on 443 through the cluster security
    group."""
    admin_principal_arns: NotRequired[list[str]]
    """IAM principals given cluster admin through EKS access entries."""
    deployer_principal_arn: NotRequired[str]
    """The IAM role that applies Kubernetes resources to the cluster (an access entry); default the role
    running ``pulumi up`` (the issuer of the caller's session)."""
    log_types: NotRequired[list[str]]
    """Control-plane log types; default ``api``, ``audit``, ``authenticator``."""
    log_retention_days: NotRequired[int]
    """Retention of the control-plane log group; default 30."""
    protect: NotRequired[bool]
    """Deletion protection on the cluster and Pulumi ``protect`` on it and its KMS key; default false."""
    tags: NotRequired[dict[str, str]]
    """Extra tags on every AWS resource."""


class EksPlatform(pulumi.ComponentResource):
    """An EKS platform for GPU serving: a VPC (public and private subnets per zone, NAT, S3 gateway endpoint,
    flow logs) and an EKS cluster (encrypted secrets, API authentication mode, OIDC provider for IRSA,
    add-ons with network policy enforced) with one managed node group per pool."""

    cluster_name: pulumi.Output[str]
    """The EKS cluster name."""
    endpoint: pulumi.Output[str]
    """The Kubernetes API endpoint."""
    kubeconfig: pulumi.Output[str]
    """Kubeconfig (secret) authenticating with ``aws eks get-token``; pass it to ``TfServing``."""
    oidc_provider_arn: pulumi.Output[str]
    """The IAM OIDC provider of the cluster (IRSA roles trust it; pass it to ``ModelReader``)."""
    oidc_issuer_url: pulumi.Output[str]
    """The cluster's OIDC issuer URL (pass it to ``ModelReader``)."""
    vpc_id: pulumi.Output[str]
    """The VPC."""
    private_subnet_ids: pulumi.Output[list[str]]
    """The private subnets (nodes and control-plane ENIs)."""
    s3_endpoint_id: pulumi.Output[str]
    """The VPC's S3 gateway endpoint (``ModelReader`` binds bucket reads to it)."""

    def __init__(self, name: str, args: EksPlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(token("EksPlatform"), name, None, opts)
        component = "EksPlatform"
        child = pulumi.ResourceOptions(parent=self)
        cluster_name = plain(args["cluster_name"], "clusterName", component)
        region = plain(args["region"], "region", component)
        zones = list(plain(args["zones"], "zones", component))
        # As stacks/platform.py does: the identity running `pulumi up` gets an access entry (authentication
        # mode API and no bootstrap admin, see EksCluster), unless the caller names another. Invokes with
        # parent=self use the AWS provider the component was given.
        invoke = pulumi.InvokeOptions(parent=self)
        caller = aws.get_caller_identity(opts=invoke)
        deployer = args.get("deployer_principal_arn")
        if deployer is None:
            deployer = aws.iam.get_session_context(arn=caller.arn, opts=invoke).issuer_arn
        tags = dict(plain(args.get("tags") or {}, "tags", component))

        vpc = Vpc(f"{name}-network", VpcArgs(
            cluster_name=cluster_name, zones=zones, region=region, account_id=caller.account_id, tags=tags,
            **_given(args, component, single_nat_gateway=bool, flow_logs=bool, flow_log_retention_days=int,
                     sts_endpoint=bool),
            **({"cidr": plain(args["vpc_cidr"], "vpcCidr", component)} if args.get("vpc_cidr") else {})),
            opts=child)
        pools = {pool: eks_pool_spec(pool, spec)
                 for pool, spec in plain(args["node_pools"], "nodePools", component).items()}
        cluster = EksCluster(f"{name}-eks", EksClusterArgs(
            cluster_name=cluster_name, region=region, vpc_id=vpc.vpc_id,
            private_subnet_ids=vpc.private_subnet_ids,
            private_subnet_ids_by_zone=vpc.private_subnet_ids_by_zone, node_pools=pools,
            deployer_principal_arn=plain(deployer, "deployerPrincipalArn", component), tags=tags,
            **_given(args, component, kubernetes_version=str, endpoint_public_access=bool,
                     public_access_cidrs=list, api_access_cidrs=list, admin_principal_arns=list,
                     log_types=list, log_retention_days=int, protect=bool)),
            opts=child)

        self.cluster_name = cluster.cluster_name
        self.endpoint = cluster.endpoint
        self.kubeconfig = cluster.kubeconfig
        self.oidc_provider_arn = cluster.oidc_provider_arn
        self.oidc_issuer_url = cluster.oidc_issuer_url
        self.vpc_id = vpc.vpc_id
        self.private_subnet_ids = vpc.private_subnet_ids
        self.s3_endpoint_id = vpc.s3_endpoint_id
        self.register_outputs({
            "cluster_name": self.cluster_name, "endpoint": self.endpoint, "kubeconfig": self.kubeconfig,
            "oidc_provider_arn": self.oidc_provider_arn, "oidc_issuer_url": self.oidc_issuer_url,
            "vpc_id": self.vpc_id, "private_subnet_ids": self.private_subnet_ids,
            "s3_endpoint_id": self.s3_endpoint_id})


class GpuSharing(Enum):
    """How GKE shares a GPU among pods when ``gpuTimeSlicing`` > 1."""

    TIME_SHARING = "TIME_SHARING"
    """Time-slicing: pods take turns on the whole GPU."""
    MPS = "MPS"
    """NVIDIA Multi-Process Service: pods run concurrently on the GPU."""


class GkeNodePool(TypedDict):
    """One GKE node pool, keyed by its stable pool name in ``nodePools``."""

    machine_type: str
    """Compute Engine machine type, e.g. ``g2-standard-8``."""
    spot: NotRequired[bool]
    """Spot VMs; default false."""
    min_size: NotRequired[int]
    """Total minimum nodes across the pool's zones (0 lets a GPU pool scale to zero); default 1."""
    desired_size: NotRequired[int]
    """Total nodes at creation, spread over the zones; default 1."""
    max_size: NotRequired[int]
    """Total maximum nodes; default 3."""
    gpus_per_node: NotRequired[int]
    """GPUs per node (with ``acceleratorType``); default 0."""
    accelerator_type: NotRequired[str]
    """GPU type: ``nvidia-l4``, ``nvidia-tesla-t4``, ``nvidia-tesla-a100``, ``nvidia-h100-80gb``, ..."""
    gpu_driver_version: NotRequired[str]
    """Driver GKE installs: ``LATEST`` or ``DEFAULT``; default ``LATEST``."""
    gpu_time_slicing: NotRequired[int]
    """Pods sharing each GPU (> 1 turns on ``gpuSharingStrategy``); default 1."""
    gpu_sharing_strategy: NotRequired[GpuSharing]
    """How a GPU is shared when ``gpuTimeSlicing`` > 1; default ``TIME_SHARING``."""
    disk_size_gb: NotRequired[int]
    """Boot disk size in GB; default 100."""
    image_streaming: NotRequired[bool]
    """GKE image streaming (Artifact Registry images start while they stream in); default false."""
    labels: NotRequired[dict[str, str]]
    """Extra node labels (the pool label is always added)."""
    taints: NotRequired[list[NodeTaint]]
    """Extra taints (GKE adds ``nvidia.com/gpu=present:NoSchedule`` to GPU nodes itself)."""
    reservation: NotRequired[str]
    """Consume a Compute Engine reservation: its name, ``projects/<p>/reservations/<name>``, or ``any``."""


def gke_pool_spec(pool: str, spec: GkeNodePool) -> GkeNodePoolSpec:
    component = f"GkePlatform node pool {pool!r}"
    return GkeNodePoolSpec(
        machine_type=plain(spec["machine_type"], "machineType", component),
        **_given(spec, component, spot=bool, min_size=int, desired_size=int, max_size=int, gpus_per_node=int,
                 accelerator_type=str, gpu_driver_version=str, gpu_time_slicing=int,
                 gpu_sharing_strategy=value_of, disk_size_gb=int, image_streaming=bool, labels=dict,
                 reservation=str),
        taints=taints(spec.get("taints"), component))


class GkePlatformArgs(TypedDict):
    """Inputs of ``GkePlatform``."""

    project: str
    """Google Cloud project id."""
    region: str
    """Region of the network and the (regional) cluster, e.g. ``us-central1``."""
    zones: list[str]
    """Zones of the node pools, e.g. ``us-central1-a``; a zonal cluster uses the first."""
    cluster_name: str
    """GKE cluster name."""
    node_pools: dict[str, GkeNodePool]
    """Node pools keyed by stable pool name; a pool named ``system`` hosts the add-ons."""
    cidr: NotRequired[str]
    """Primary range of the subnetwork (node IPs); default ``10.0.0.0/16``."""
    pod_cidr: NotRequired[str]
    """Secondary range for pods; default ``10.16.0.0/14``."""
    service_cidr: NotRequired[str]
    """Secondary range for ClusterIP services; default ``10.20.0.0/20``."""
    regional: NotRequired[bool]
    """Regional control plane and nodes in every zone (false: zonal in the first zone); default true."""
    kubernetes_version: NotRequired[str]
    """Minimum control-plane version (the release channel upgrades beyond it)."""
    release_channel: NotRequired[str]
    """GKE release channel; default ``REGULAR``."""
    endpoint_public_access: NotRequired[bool]
    """Public control-plane endpoint, restricted to ``authorizedCidrs``; default true."""
    authorized_cidrs: NotRequired[list[str]]
    """Networks allowed to the control-plane endpoint; default ``0.0.0.0/0``."""
    master_cidr: NotRequired[str]
    """The control plane's private /28; default ``172.16.0.0/28``."""
    protect: NotRequired[bool]
    """Deletion protection on the cluster and Pulumi ``protect``; default false."""
    labels: NotRequired[dict[str, str]]
    """Resource labels on the cluster."""


class GkePlatform(pulumi.ComponentResource):
    """A GKE platform for GPU serving: a custom VPC network (subnetwork with pod and service ranges, Private
    Google Access, deny-all ingress, Cloud NAT) and a private GKE cluster (Workload Identity, Dataplane V2
    network policy, secrets encrypted with Cloud KMS, least-privilege node service account, shielded nodes)
    with one node pool per spec."""

    cluster_name: pulumi.Output[str]
    """The GKE cluster name."""
    endpoint: pulumi.Output[str]
    """The control-plane endpoint (IP address)."""
    kubeconfig: pulumi.Output[str]
    """Kubeconfig (secret) authenticating with ``gke-gcloud-auth-plugin``; pass it to ``TfServing``."""
    workload_pool: pulumi.Output[str]
    """The Workload Identity pool ``<project>.svc.id.goog`` (exists once the cluster does)."""
    network_id: pulumi.Output[str]
    """The VPC network."""
    subnetwork_id: pulumi.Output[str]
    """The nodes' subnetwork."""

    def __init__(self, name: str, args: GkePlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(token("GkePlatform"), name, None, opts)
        component = "GkePlatform"
        child = pulumi.ResourceOptions(parent=self)
        project = plain(args["project"], "project", component)
        region = plain(args["region"], "region", component)
        network = GkeNetwork(f"{name}-network", GkeNetworkArgs(
            project=project, region=region,
            **_given(args, component, cidr=str, pod_cidr=str, service_cidr=str)),
            opts=child)
        pools = {pool: gke_pool_spec(pool, spec)
                 for pool, spec in plain(args["node_pools"], "nodePools", component).items()}
        cluster = GkeCluster(f"{name}-gke", GkeClusterArgs(
            cluster_name=plain(args["cluster_name"], "clusterName", component), project=project,
            region=region,
            zones=list(plain(args["zones"], "zones", component)), network_id=network.network_id,
            subnetwork_id=network.subnetwork_id, node_pools=pools,
            **_given(args, component, regional=bool, kubernetes_version=str, release_channel=str,
                     endpoint_public_access=bool, authorized_cidrs=list, master_cidr=str, protect=bool,
                     labels=dict)),
            opts=child)
        self.cluster_name = cluster.cluster_name
        self.endpoint = cluster.endpoint
        self.kubeconfig = cluster.kubeconfig
        self.workload_pool = cluster.workload_pool
        self.network_id = network.network_id
        self.subnetwork_id = network.subnetwork_id
        self.register_outputs({
            "cluster_name": self.cluster_name, "endpoint": self.endpoint, "kubeconfig": self.kubeconfig,
            "workload_pool": self.workload_pool, "network_id": self.network_id,
            "subnetwork_id": self.subnetwork_id})
