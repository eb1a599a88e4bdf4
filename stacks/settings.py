"""The typed settings of one stack, validated before any resource is registered.

Every field's alias is its Pulumi config key (under the ``tfserving-platform`` namespace);
``description`` is the documentation (docs/configuration.md is generated from it, and
``Pulumi.yaml`` declares the same keys with the same defaults: both are checked by tests).

Only pydantic is needed here, so the model tooling can validate a stack file without Pulumi.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from components.aws.subnets import subnet_cidrs
from components.model_contract import DEFAULT_MODELS_PREFIX, MODEL_NAME_PATTERN
from stacks.aws_catalog import (
    CPU_AMI_TYPE,
    FAST_PULL_THROUGHPUT,
    GPU_AMI_TYPE,
    LOG_RETENTION_DAYS,
    AmiType,
    ClusterLogType,
    PoolProblem,
    TaintEffect,
    check_aws_pool,
)
from stacks.capacity_settings import (
    AutoProvisioningLimits,
    CapacityFallback,
    GpuProvisioner,
    GpuSharingStrategy,
    PoolCapacityType,
    check_capacity,
    check_server_partition,
    partitions_per_gpu,
)
from stacks.gcp_catalog import check_gcp_pool

from stacks.monitoring_settings import Monitoring
from stacks.serving_settings import Exposure, Model, RouterKind, Server, default_gpu_fraction
from stacks.settings_base import (
    DNS_LABEL,
    FieldProblem,
    Strict,
    check_cidrs,
    check_keys,
    check_labels,
    check_node_labels,
    reserved_namespace,
    check_unique,
    is_label_key,
    is_label_value,
)
from components.node_labels import name_slug

__all__ = ["PROJECT", "FieldProblem", "Model", "NodePool", "Server", "StackSettings", "Taint"]

PROJECT = "tfserving-platform"
Prerequisite = Literal["istio", "gamma-mesh", "gateway-api-crds", "envoy-gateway"]
"""Things installed on the cluster outside this stack that some settings need (the plan checks that every
object of a custom kind has its CRD installed by the stack or declared here)."""
GCP_ONLY_KEYS = ("gcp_project", "regional_cluster", "release_channel", "pod_cidr", "service_cidr", "master_cidr",
                 "model_bucket_kms_key", "model_publisher_members", "docker_hub_mirror", "auto_provisioning_limits")
AWS_ONLY_KEYS = ("cluster_admin_arns", "cluster_log_types", "cluster_log_retention_days", "single_nat_gateway",
                 "cluster_autoscaler", "vpc_flow_logs", "vpc_flow_log_retention_days", "model_publisher_principals",
                 "model_publisher_github_subjects", "model_bucket_object_lock", "vpc_sts_endpoint")
"""The Pulumi project name, which is also the config namespace."""


class Taint(Strict):
    """A Kubernetes taint on every node of a pool, spelled as the EKS API spells it."""

    key: str = Field(description="Taint key.")
    value: str = Field("", description="Taint value.")
    effect: TaintEffect = Field(description="NO_SCHEDULE, NO_EXECUTE or PREFER_NO_SCHEDULE.")

    @model_validator(mode="after")
    def _syntax(self) -> Taint:
        # A node taint's key is a qualified name and its value a label value (Kubernetes
        # pkg/apis/core/validation validateNodeTaints: IsQualifiedName, IsValidLabelValue); GKE's NodeTaint and
        # EKS's Taint pass them to the kubelet as is. The cloud's own length limits: check_aws_pool.
        if not is_label_key(self.key):
            raise FieldProblem("key", self.key, "a Kubernetes taint key ([prefix/]name, name of at most 63 "
                                                "alphanumerics, '-', '_' or '.', starting and ending alphanumeric)")
        if not is_label_value(self.value):
            raise FieldProblem("value", self.value, "a Kubernetes taint value (empty, or at most 63 alphanumerics, "
                                                    "'-', '_' or '.', starting and ending alphanumeric)")
        return self


class ObjectLock(Strict):
    """S3 Object Lock on the model bucket: a default retention on every new object version."""

    mode: Literal["off", "GOVERNANCE", "COMPLIANCE"] = Field(
        "off", description="`off`, `GOVERNANCE` (a principal with s3:BypassGovernanceRetention may still shorten "
                           "it; the bucket policy denies that to all but the publisher, which lacks it) or "
                           "`COMPLIANCE` (nobody, not even the root user, can delete a version before it expires). "
                           "Once on, S3 never turns Object Lock off; turning it on keeps the bucket (no replacement).")
    days: int = Field(0, ge=0, le=36500, description="Days each version is retained (1-36500 with a mode, 0 when off).")

    @model_validator(mode="after")
    def _days(self) -> ObjectLock:
        if self.mode != "off" and self.days < 1:
            raise FieldProblem("days", self.days, f"1 to 36500 days with mode {self.mode}")
        if self.mode == "off" and self.days:
            raise FieldProblem("days", self.days, "0 (or unset) when mode is off")
        return self


class NodePool(Strict):
    """One managed node group (EKS), keyed by its stable name in ``nodePools``."""

    instance_types: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9.-]*$")]] = Field(
        min_length=1, description="EC2 instance types (several widen spot capacity), or on GKE exactly one "
                                  "machine type.")
    capacity_type: PoolCapacityType = Field(
        "ON_DEMAND", description="ON_DEMAND, SPOT, RESERVED (a capacity reservation, `reservation`), "
                                 "CAPACITY_BLOCK (EKS: EC2 Capacity Blocks for ML) or FLEX_START (GKE: wait for "
                                 "capacity, nodes live at most 7 days).")
    min_size: int = Field(1, ge=0, le=1000, description="Minimum nodes (0 lets a GPU pool scale to zero).")
    desired_size: int = Field(1, ge=0, le=1000, description="Nodes at creation (then owned by the autoscaler).")
    max_size: int = Field(3, ge=1, le=1000, description="Maximum nodes.")
    gpus_per_node: int = Field(0, ge=0, le=16, description="NVIDIA GPUs per node; > 0 makes it a GPU pool.")
    gpu_time_slicing: int = Field(1, ge=1, le=48, description="Pods sharing each GPU through the NVIDIA "
                                                                "device plugin's time-slicing (1: a GPU per pod).")
    disk_size_gb: int = Field(100, ge=20, le=16384, description="Root volume size in GiB (images and models).")
    ami_type: AmiType | None = Field(None, description="Defaults to AL2023_x86_64_NVIDIA for GPU pools, "
                                                       "AL2023_x86_64_STANDARD otherwise.")
    accelerator_type: str | None = Field(None, description="GKE: GPU type on N1 machines (nvidia-tesla-t4, "
                                                           "...); G2/A2/A3 machines imply theirs.")
    gpu_driver_version: Literal["LATEST", "DEFAULT", "INSTALLATION_DISABLED"] | None = Field(
        None, description="GKE: GPU driver GKE installs (default LATEST on GPU pools).")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra Kubernetes node labels.")
    taints: list[Taint] = Field(default_factory=list, description="Extra taints (GPU pools always get "
                                                                  "nvidia.com/gpu=true:NO_SCHEDULE).")
    fast_image_pull: bool | None = Field(
        None, description="EKS: nodeadm's FastImagePull feature gate (the SOCI snapshotter pulls and unpacks "
                          "image layers in parallel) with a faster root volume; default on for GPU pools. "
                          "nodeadm ignores it below 4 vCPUs or 7 GiB, so it is refused on smaller types.")
    root_volume_throughput: int | None = Field(
        None, ge=125, le=1000, description="EKS: gp3 root volume throughput in MiB/s (125-1000); default 600 "
                                           "with fastImagePull (the AMI's advice), else gp3's 125.")
    image_streaming: bool | None = Field(
        None, description="GKE: image streaming (gcfsConfig): containers start while their image streams "
                          "from Artifact Registry; default on for GPU pools. Images elsewhere pull normally.")
    secondary_boot_disk_image: str | None = Field(
        None, pattern=r"^(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/)?global/images/[a-z]([-a-z0-9]*[a-z0-9])?$",
        description="GKE: disk image with the serving images preloaded (built by gke-disk-image-builder, "
                    "docs/cold-start.md), attached as a CONTAINER_IMAGE_CACHE secondary boot disk: new nodes "
                    "find the images on disk. Needs imageStreaming; changing it replaces the pool.")

    reservation: str | None = Field(
        None, description="RESERVED / CAPACITY_BLOCK: EKS a capacity reservation id `cr-...` (or, RESERVED "
                          "only, a resource group ARN of reservations); GKE a reservation name, "
                          "`projects/<p>/reservations/<name>`, or `any`.")
    hourly_price: float | None = Field(None, ge=0, description="USD per node-hour where no list price applies "
                                                                "(a capacity block's purchase price).")
    fallback: list[CapacityFallback] = Field(
        default_factory=list, description="More capacity options after the pool's own, tried in order "
                                          "(gpuProvisioner karpenter or compute-class; docs/capacity.md).")
    mig_profile: str | None = Field(
        None, pattern=r"^[1-7]g\.[0-9]+gb$", description="Split every GPU into MIG partitions of this "
                                                          "profile (A100/H100 pools; docs/mig.md).")
    zones: list[str] | None = Field(
        None, min_length=1, description="EKS: zones (of the stack's `zones`) the pool's nodes are placed in; "
                                        "default all. A CAPACITY_BLOCK or RESERVED-by-id node group names its "
                                        "reservation's zone (EC2 launches reserved capacity only there).")
    gpu_sharing_strategy: GpuSharingStrategy = Field(
        "TIME_SHARING", description="GKE: how gpuTimeSlicing pods share a GPU: TIME_SHARING or MPS.")

    @field_validator("labels")
    @classmethod
    def _label_syntax(cls, labels: dict[str, str]) -> dict[str, str]:
        return check_node_labels(check_labels(labels))

    @field_validator("instance_types")
    @classmethod
    def _distinct_types(cls, types: list[str]) -> list[str]:
        return check_unique(types)

    @field_validator("taints")
    @classmethod
    def _distinct_taints(cls, taints: list[Taint]) -> list[Taint]:
        # The API server refuses a node whose taints repeat a key and effect pair (validateNodeTaints:
        # "taints must be unique by key and effect pair"); the nodes would never register.
        seen: dict[tuple[str, str], int] = {}
        for index, taint in enumerate(taints):
            pair = (taint.key, taint.effect)
            if pair in seen:
                raise FieldProblem(str(index), taint.model_dump(by_alias=True),
                                   f"a taint whose key and effect differ from taint {seen[pair]}'s "
                                   "(Kubernetes: unique by key and effect)")
            seen[pair] = index
        return taints

    @model_validator(mode="after")
    def _sizes_and_gpus(self) -> NodePool:
        if self.min_size > self.max_size:
            raise FieldProblem("minSize", self.min_size, f"at most maxSize ({self.max_size})")
        if not self.min_size <= self.desired_size <= self.max_size:
            raise FieldProblem("desiredSize", self.desired_size,
                               f"between minSize ({self.min_size}) and maxSize ({self.max_size})")
        return self

    @property
    def is_gpu(self) -> bool:
        return self.gpus_per_node > 0

    @property
    def resolved_ami_type(self) -> str:
        return self.ami_type or (GPU_AMI_TYPE if self.is_gpu else CPU_AMI_TYPE)

    @property
    def resolved_fast_image_pull(self) -> bool:
        return self.is_gpu if self.fast_image_pull is None else self.fast_image_pull

    @property
    def resolved_root_volume_throughput(self) -> int | None:
        """gp3 throughput to set (None: gp3's default 125 MiB/s)."""
        if self.root_volume_throughput is not None:
            return self.root_volume_throughput
        return FAST_PULL_THROUGHPUT if self.resolved_fast_image_pull else None

    @property
    def resolved_image_streaming(self) -> bool:
        return self.is_gpu if self.image_streaming is None else self.image_streaming


class StackSettings(Strict):
    """Everything one stack can configure. Config key = field alias (camelCase)."""

    cloud: Literal["aws", "gcp"] = Field("aws", description="Cloud to deploy to: `aws` (EKS, S3) or `gcp` "
                                                            "(GKE, GCS).")
    region: str = Field("us-east-1", pattern=r"^[a-z]+(-[a-z]+)+-?[0-9]+$",
                        description="Region of every resource (us-east-1 on AWS, us-central1 on GCP).")
    zones: list[str] = Field(["us-east-1a", "us-east-1b"], min_length=1, max_length=6,
                             description="Zones for subnets and nodes (EKS needs two or more; GKE one or more).")
    gcp_project: str = Field("", description="GCP: project ID every resource is created in (required on gcp).")
    regional_cluster: bool = Field(True, description="GCP: regional control plane and nodes in every zone; "
                                                     "false makes a cheaper zonal cluster in zones[0] (dev).")
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = Field(
        "REGULAR", description="GCP: GKE release channel (GKE upgrades the cluster within it).")
    pod_cidr: str = Field("10.16.0.0/14", description="GCP: secondary range of the subnetwork for pods.")
    service_cidr: str = Field("10.20.0.0/20", description="GCP: secondary range of the subnetwork for services.")
    master_cidr: str = Field("172.16.0.0/28", description="GCP: /28 range of the private control plane.")
    docker_hub_mirror: bool = Field(
        True, description="GCP: pull the stack's Docker Hub images (TF Serving, nginx) through an Artifact Registry "
                          "remote repository the stack creates: GKE streams images only from Artifact Registry "
                          "(imageStreaming), and Docker Hub's pull limits stop mattering. Needs the "
                          "artifactregistry.googleapis.com API.")
    model_bucket_kms_key: str = Field("", description="GCP: Cloud KMS key (projects/.../cryptoKeys/...) for the "
                                                      "model bucket (CMEK); empty uses Google-managed keys.")
    cluster_name: str = Field("tfserving", description="Cluster name (unique per account and region on EKS: "
                                                       "1-100 letters, digits, '-'; per project and location "
                                                       "on GKE: 1-24 lowercase letters, digits, '-').")
    kubernetes_version: str = Field("1.33", pattern=r"^1\.[0-9]{2}$",
                                    description="Kubernetes minor version of the control plane.")
    endpoint_public_access: bool = Field(True, description="Expose the API endpoint publicly "
                                                           "(the private endpoint is always on).")
    public_access_cidrs: list[str] = Field(["0.0.0.0/0"], min_length=1,
                                           description="CIDRs allowed to reach the public endpoint.")
    api_access_cidrs: list[str] = Field(
        default_factory=list, description="CIDRs inside or connected to the VPC (a self-hosted deploy runner, "
                                          "a VPN) allowed to reach the private API endpoint on 443: a "
                                          "cluster security-group rule on EKS, authorized networks on GKE. "
                                          "Required when endpointPublicAccess is false.")
    cluster_admin_arns: list[Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:.+$")]] = Field(
        default_factory=list, description="IAM principals given cluster-admin access entries (the identity "
                                          "running `pulumi up` always gets one too); changing it never "
                                          "replaces the cluster.")
    cluster_log_types: list[ClusterLogType] = Field(["api", "audit", "authenticator"],
                                                    description="Control-plane log types sent to CloudWatch.")
    cluster_log_retention_days: int = Field(30, description="CloudWatch retention of control-plane logs.")
    vpc_flow_logs: bool = Field(True, description="AWS: VPC flow logs (all traffic) to a CloudWatch log group "
                                                  "through a role only the flow-logs service of this account "
                                                  "may assume; false saves their ingestion cost.")
    # A Literal of CloudWatch's retention periods: the error names every allowed value.
    vpc_flow_log_retention_days: Literal[LOG_RETENTION_DAYS] = Field(  # type: ignore[valid-type]
        365, description="AWS: CloudWatch retention of VPC flow logs, one of CloudWatch's retention periods "
                         "(365: the year CIS and checkov CKV_AWS_338 ask for).")
    vpc_sts_endpoint: bool = Field(False, description="AWS: an STS interface VPC endpoint in every private subnet, "
                                                      "so IRSA token exchanges stay in the VPC (about $7.30 a month "
                                                      "per zone: PrivateLink's $0.01/AZ-hour, us-east-1).")
    vpc_cidr: str = Field("10.0.0.0/16", description="VPC CIDR (/16 to /20), split into per-zone subnets.")
    single_nat_gateway: bool = Field(True, description="One NAT gateway for all zones (cheaper) "
                                                       "instead of one per zone (zone-resilient).")
    protect: bool = Field(False, description="Protect what holds data: Pulumi `protect` and deletion "
                                             "protection on the cluster, bucket and KMS keys, and retain the bucket.")
    node_pools: dict[str, NodePool] = Field(
        default_factory=lambda: {
            "system": NodePool(instance_types=["m6i.large"], min_size=2, desired_size=2, max_size=3),
            # max 4: the default server's peak, maxReplicas 3 + a rollout's surge pod.
            "gpu": NodePool(instance_types=["g5.xlarge"], capacity_type="SPOT", min_size=0,
                            desired_size=0, max_size=4, gpus_per_node=1),
        },
        description="Managed node groups keyed by stable name; `system` (CPU) is required.")
    model_bucket_prefix: str = Field(DEFAULT_MODELS_PREFIX, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                                     description="Key prefix of the models in the bucket (serving reads only this).")
    model_bucket_noncurrent_days: int = Field(30, ge=1, le=3650,
                                              description="Days before a replaced object version is deleted.")
    bucket_force_destroy: bool = Field(False, description="Let `pulumi destroy` empty and delete the bucket.")
    model_publisher_principals: list[Annotated[str, Field(
        pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:(root|role/[\w+=,.@/-]+|user/[\w+=,.@/-]+)$")]] = Field(
        default_factory=list, description="AWS: IAM principals (role, user or account-root ARNs) that may assume "
                                          "the model publisher role, the only identity allowed to write or delete "
                                          "model objects. Empty, with no modelPublisherGithubSubjects: the identity "
                                          "running `pulumi up` (the deploy role).")
    model_publisher_github_subjects: list[Annotated[str, Field(
        pattern=r"^repo:[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+:[^*?\s]+$")]] = Field(
        default_factory=list, description="AWS: GitHub Actions OIDC `sub` values (exact, no wildcards, e.g. "
                                          "`repo:org/repo:environment:models`) that may assume the publisher role "
                                          "through the account's token.actions.githubusercontent.com OIDC provider.")
    model_publisher_members: list[Annotated[str, Field(
        pattern=r"^((user|group|serviceAccount|domain):[^\s]+|principal(Set)?://iam\.googleapis\.com/[^\s]+)$")]] = Field(
        default_factory=list, description="GCP: IAM members that may act as the model publisher service account, "
                                          "the only identity this stack lets write model objects (user:, group:, "
                                          "serviceAccount:, domain: impersonate it; principal:// or principalSet:// "
                                          "Workload Identity Federation members, such as a CI job, use it directly).")
    model_bucket_object_lock: ObjectLock = Field(
        default_factory=ObjectLock, description="AWS: S3 Object Lock default retention of model versions "
                                                "(mode, days).")
    serving_namespace: str = Field("serving", pattern=DNS_LABEL, description="Namespace of TF Serving.")
    serving_image_version: str = Field("2.18.0", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$",
                                       description="tensorflow/serving image tag (`-gpu` is added when GPUs are requested).")
    servers: dict[str, Server] = Field(
        default_factory=lambda: {"default": Server(models={"digits": Model()})},
        description="TF Serving Deployments keyed by stable name, each with its models, resources, "
                    "node pool, batching, autoscaling and canary.")
    traffic_router: RouterKind = Field("proxy", description="What applies canary weights: `proxy` (an nginx "
                                       "router this stack installs in front of each server with a canary), "
                                       "`istio` (VirtualService; needs clusterPrerequisites istio), "
                                       "`gateway-api` (HTTPRoute on the Service; needs a GAMMA mesh, "
                                       "clusterPrerequisites gamma-mesh) or `none` (no canaries).")
    cluster_prerequisites: list[Prerequisite] = Field(
        default_factory=list, description="What is installed on the cluster outside this stack: `istio`, "
                                          "`gamma-mesh` (a mesh implementing Gateway API for Services), "
                                          "`gateway-api-crds` (needed for exposure on EKS; GKE installs them).")
    await_serving: Literal["auto", "always", "never"] = Field(
        "auto", description="Whether `pulumi up` waits for the serving rollouts: `auto` from the second up "
                            "on (the first creates the bucket, which holds no models until you publish), "
                            "`always`, or `never`.")
    exposure: Exposure = Field(default_factory=Exposure, description="External HTTPS access through a "
                                                                     "Gateway; off keeps the models in-cluster.")
    allowed_namespaces: list[Annotated[str, Field(pattern=DNS_LABEL)]] = Field(
        default_factory=list, description="Namespaces whose pods may call the models (all others are denied).")
    allowed_pod_labels: dict[str, str] = Field(
        default_factory=dict, description="When set, only pods with these labels in allowedNamespaces may "
                                          "call the models.")
    monitoring_namespace: str = Field("monitoring", pattern=DNS_LABEL,
                                      description="Namespace of Prometheus, allowed to scrape metrics.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Prometheus stack, alerts, "
                                                                           "dashboards, GPU metrics.")
    cluster_autoscaler: bool = Field(True, description="AWS: install cluster-autoscaler (its own IRSA role) so "
                                                       "node groups, GPU ones from zero, follow pending pods.")
    gpu_provisioner: GpuProvisioner = Field(
        "node-groups", description="What makes GPU nodes: `node-groups` (fixed node groups / pools scaled by the "
                                   "cluster autoscaler), `karpenter` (EKS) or `compute-class` (GKE custom "
                                   "ComputeClasses). docs/capacity.md says which to choose.")
    auto_provisioning_limits: AutoProvisioningLimits = Field(
        default_factory=AutoProvisioningLimits,
        description="GCP: node auto-provisioning limits (gpuProvisioner compute-class; GPU limits come from the "
                    "pools' maxSize).")

    @field_validator("public_access_cidrs", "api_access_cidrs")
    @classmethod
    def _cidrs(cls, cidrs: list[str]) -> list[str]:
        return check_cidrs(cidrs)

    @field_validator("vpc_flow_log_retention_days", mode="before")
    @classmethod
    def _strict_int_choice(cls, days: object) -> object:
        # A Literal of ints takes True as 1 and 365.0 as 365 even in strict mode: refuse anything but an int.
        if type(days) is not int:
            raise ValueError(f"an integer, one of CloudWatch's retention periods {list(LOG_RETENTION_DAYS)}")
        return days

    @field_validator("cluster_log_types", "allowed_namespaces", "cluster_prerequisites", "zones",
                     "model_publisher_principals", "model_publisher_github_subjects", "model_publisher_members")
    @classmethod
    def _distinct(cls, items: list[str]) -> list[str]:
        return check_unique(items)

    @field_validator("cluster_admin_arns")
    @classmethod
    def _admins(cls, arns: list[str]) -> list[str]:
        # Each ARN becomes an EKS access entry named after the last 40 characters of its slug
        # (components/aws/eks_cluster.py): two ARNs sharing them would be a duplicate URN.
        tails: dict[str, int] = {}
        for index, arn in enumerate(check_unique(arns)):
            tail = name_slug(arn)[-40:]
            if tail in tails:
                raise FieldProblem(str(index), arn, f"an ARN whose access entry name differs from item "
                                                    f"{tails[tail]}'s ({arns[tails[tail]]}): both end in {tail!r}")
            tails[tail] = index
        return arns

    @field_validator("cluster_log_retention_days")
    @classmethod
    def _retention(cls, days: int) -> int:
        if days not in LOG_RETENTION_DAYS:
            raise ValueError(f"one of CloudWatch's retention periods {list(LOG_RETENTION_DAYS)}")
        return days

    @field_validator("pod_cidr", "service_cidr", "master_cidr")
    @classmethod
    def _gke_cidr(cls, cidr: str) -> str:
        try:
            ipaddress.IPv4Network(cidr)
        except ValueError:
            raise ValueError("an IPv4 network such as 10.16.0.0/14") from None
        return cidr

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr(cls, cidr: str) -> str:
        try:
            net = ipaddress.IPv4Network(cidr)
        except ValueError:
            raise ValueError("an IPv4 network such as 10.0.0.0/16") from None
        if not 16 <= net.prefixlen <= 20:
            raise ValueError("a prefix length from /16 to /20 (AWS allows /16 at most)")
        return cidr

    @field_validator("allowed_pod_labels")
    @classmethod
    def _pod_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return check_labels(labels)

    @field_validator("node_pools")
    @classmethod
    def _keys(cls, mapping: dict) -> dict:
        # The cloud's node pool name rules apply too (_check_names).
        return check_keys(mapping, MODEL_NAME_PATTERN)

    @field_validator("servers")
    @classmethod
    def _server_names(cls, servers: dict) -> dict:
        # Kubernetes names tfserving-<key>-canary must stay within 63 characters.
        return check_keys(servers, r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$",
                          "a name of lowercase letters, digits and '-' (at most 40, starting and ending "
                          "alphanumeric)")

    @model_validator(mode="after")
    def _cross_fields(self) -> StackSettings:
        self._check_cloud()
        self._check_namespaces()
        if "system" not in self.node_pools:
            raise FieldProblem("nodePools", sorted(self.node_pools), "a `system` pool for cluster add-ons")
        if self.node_pools["system"].is_gpu:
            raise FieldProblem("nodePools.system.gpusPerNode", self.node_pools["system"].gpus_per_node,
                               "0: the system pool runs add-ons on CPU nodes")
        self._check_servers()
        if self.protect and self.bucket_force_destroy:
            raise FieldProblem("bucketForceDestroy", True, "false when protect is true")
        if self.model_bucket_object_lock.mode != "off" and self.bucket_force_destroy:
            # Locked versions cannot be deleted before they expire: `pulumi destroy` would fail half-way.
            raise FieldProblem("bucketForceDestroy", True,
                               f"false when modelBucketObjectLock.mode is {self.model_bucket_object_lock.mode}")
        if not self.endpoint_public_access and self.public_access_cidrs != ["0.0.0.0/0"]:
            raise FieldProblem("publicAccessCidrs", self.public_access_cidrs,
                               "left unset when endpointPublicAccess is false")
        if self.protect and self.endpoint_public_access and "0.0.0.0/0" in self.public_access_cidrs:
            raise FieldProblem("publicAccessCidrs", self.public_access_cidrs,
                               "the deploy runners' and operators' ranges, not 0.0.0.0/0, when protect is true "
                               "(or endpointPublicAccess false with apiAccessCidrs)")
        if not self.endpoint_public_access and not self.api_access_cidrs:
            raise FieldProblem("apiAccessCidrs", [],
                               "at least one CIDR (e.g. the VPC CIDR of a self-hosted deploy runner) when "
                               "endpointPublicAccess is false: otherwise nothing, not even `pulumi up`, can "
                               "reach the Kubernetes API")
        self._check_prerequisites()
        return self

    def _check_prerequisites(self) -> None:
        needs = {"istio": "istio", "gateway-api": "gamma-mesh"}.get(self.traffic_router)
        routes = any(server.has_canary for server in self.servers.values())
        if needs and routes and needs not in self.cluster_prerequisites:
            raise FieldProblem("trafficRouter", self.traffic_router,
                               f"proxy (installed by this stack), or declare {needs!r} in clusterPrerequisites "
                               f"once it is installed on the cluster: a {self.traffic_router} route does nothing "
                               "without it")
        # The JWT policies are objects of the implementation's own CRDs (SecurityPolicy, RequestAuthentication):
        # without them installed the first `pulumi up` fails with "no matches for kind".
        policy_crds = {"envoy-gateway": "envoy-gateway", "istio": "istio"}.get(self.exposure.gateway_implementation)
        if (self.exposure.enabled and self.exposure.authentication == "jwt" and policy_crds
                and policy_crds not in self.cluster_prerequisites):
            raise FieldProblem("exposure.gatewayImplementation", self.exposure.gateway_implementation,
                               f"an implementation installed on the cluster: declare {policy_crds!r} in "
                               "clusterPrerequisites once it is (its JWT policy is an object of its own CRDs)")
        if self.exposure.enabled and self.cloud == "aws" and "gateway-api-crds" not in self.cluster_prerequisites:
            raise FieldProblem("exposure.enabled", True,
                               "false, or declare 'gateway-api-crds' in clusterPrerequisites once the Gateway "
                               "API CRDs and a controller are installed (EKS installs neither)")

    def _check_cloud(self) -> None:
        aws = self.cloud == "aws"
        region = r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$" if aws else r"^[a-z]+-[a-z]+[0-9]+$"
        if not re.fullmatch(region, self.region):
            raise FieldProblem("region", self.region, "an AWS region such as us-east-1 (cloud is aws)" if aws
                               else "a GCP region such as us-central1 (cloud is gcp)")
        sep = "" if aws else "-"
        for zone in self.zones:
            if not re.fullmatch(rf"^{re.escape(self.region)}{sep}[a-z]$", zone):
                raise FieldProblem("zones", zone, f"a zone of region {self.region} such as {self.region}{sep}a")
        if aws and len(self.zones) < 2:
            raise FieldProblem("zones", self.zones, "at least 2 zones (EKS needs subnets in two)")
        if not aws and not re.fullmatch(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", self.gcp_project):
            raise FieldProblem("gcpProject", self.gcp_project, "a GCP project ID (6-30 lowercase letters, digits, "
                                                               "'-') when cloud is gcp")
        if not aws and self.model_bucket_kms_key and not re.fullmatch(
                r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", self.model_bucket_kms_key):
            raise FieldProblem("modelBucketKmsKey", self.model_bucket_kms_key,
                               "projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>")
        self._check_cloud_only_keys(aws)
        if aws and self.monitoring.gpu_metrics == "managed":
            raise FieldProblem("monitoring.gpuMetrics", "managed", "exporter or none on AWS (managed DCGM "
                                                                  "collection is a GKE feature)")
        if not aws:
            self._check_gke_ranges()
        check_pool = check_aws_pool if aws else check_gcp_pool
        for name, pool in self.node_pools.items():
            try:
                check_pool(pool)
            except PoolProblem as problem:
                raise FieldProblem(f"nodePools.{name}.{problem.field}", problem.value, problem.allowed) from None
        check_capacity(self)
        self._check_names(aws)

    def _check_names(self, aws: bool) -> None:
        """Names the program derives from config keys, checked against the API that receives them."""
        if aws:
            # EKS CreateCluster name: 1-100, ^[0-9A-Za-z][A-Za-z0-9\-_]* (botocore eks model, ClusterName);
            # also in alias/<name>-eks-secrets (KMS AliasName <= 256), /aws/eks/<name>/cluster (CloudWatch
            # log group <= 512) and the subnet tag key kubernetes.io/cluster/<name> (EC2 tag key <= 128).
            cluster, cluster_rule = r"[a-zA-Z][a-zA-Z0-9-]{0,99}", "1-100 letters, digits or '-', starting with a letter"
            # Pool key -> node group eks-<pool>, auto-named eks-<pool>-<7 hex>: EKS nodegroupName is 1-63
            # alphanumerics, '-' or '_' (CreateNodegroup API reference), hence 51 here.
            pool, pool_rule = r"[a-z0-9]([a-z0-9_-]{0,49}[a-z0-9])?", (
                "at most 51 lowercase letters, digits, '-' or '_', starting and ending alphanumeric (EKS "
                "names the node group eks-<pool>-<7 characters>, at most 63)")
        else:
            # GKE cluster name: lowercase letters, digits and '-', starting with a letter, ending alphanumeric, at
            # most 40 (projects.locations.clusters create). The node service account id is <name>-nodes, and a
            # service account id is 6-30 lowercase letters, digits or '-', starting with a letter, not ending
            # with '-' (IAM projects.serviceAccounts.create accountId), hence 24 here.
            cluster, cluster_rule = r"[a-z]([-a-z0-9]{0,22}[a-z0-9])?", (
                "1-24 lowercase letters, digits or '-', starting with a letter and ending alphanumeric (GKE "
                "cluster name rules, and <name>-nodes must be a GCP service account id of at most 30)")
            # GKE node pool name: lowercase letters, digits and '-', starting with a letter, ending alphanumeric,
            # at most 40 (projects.locations.clusters.nodePools create).
            pool, pool_rule = r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?", (
                "a GKE node pool name: 1-40 lowercase letters, digits or '-', starting with a letter and "
                "ending alphanumeric")
        if not re.fullmatch(cluster, self.cluster_name):
            raise FieldProblem("clusterName", self.cluster_name, cluster_rule)
        for name in self.node_pools:
            if not re.fullmatch(pool, name):
                raise FieldProblem(f"nodePools.{name}", name, pool_rule)
        if not aws:
            zones = len(self.zones) if self.regional_cluster else 1
            for name, spec in self.node_pools.items():
                # GKE starts the same count in every zone (initialNodeCount is per zone): the pool's first
                # nodes must reach minSize without exceeding maxSize (components/gcp/gke_cluster.py).
                per_zone = min(-(-spec.desired_size // zones), spec.max_size // zones)
                if per_zone * zones < spec.min_size:
                    raise FieldProblem(f"nodePools.{name}.maxSize", spec.max_size,
                                       f"a multiple of the {zones} zones at least minSize ({spec.min_size}), or a "
                                       "lower minSize: GKE starts the same number of nodes in every zone")

    def _check_namespaces(self) -> None:
        """Namespaces the stack creates are distinct and not Kubernetes' or the cloud's own: two Namespace
        resources for one object fight over it, and one the cluster already has fails to create."""
        owned = {"servingNamespace": self.serving_namespace}
        if self.monitoring.install:
            owned["monitoringNamespace"] = self.monitoring_namespace
        for key, namespace in owned.items():
            reserved = reserved_namespace(namespace, self.cloud)
            if reserved:
                raise FieldProblem(key, namespace, f"a namespace of the stack's own, not {reserved}")
        if self.monitoring.install and self.monitoring_namespace == self.serving_namespace:
            raise FieldProblem("monitoringNamespace", self.monitoring_namespace,
                               f"a namespace other than servingNamespace ({self.serving_namespace}): the stack "
                               "creates both")

    def _check_cloud_only_keys(self, aws: bool) -> None:
        """A key of the other cloud set to anything but its default is a mistake, not a no-op."""
        other = GCP_ONLY_KEYS if aws else AWS_ONLY_KEYS
        for name in other:
            value, default = getattr(self, name), type(self).model_fields[name].get_default(call_default_factory=True)
            if value != default:
                if isinstance(value, Strict):
                    value = value.model_dump(by_alias=True)
                field = type(self).model_fields[name].alias
                raise FieldProblem(field, value, f"unset on {'AWS' if aws else 'GCP'} ({'GCP' if aws else 'AWS'} only)")

    def _check_gke_ranges(self) -> None:
        ranges = {"vpcCidr": self.vpc_cidr, "podCidr": self.pod_cidr, "serviceCidr": self.service_cidr,
                  "masterCidr": self.master_cidr}
        if ipaddress.IPv4Network(self.master_cidr).prefixlen != 28:
            raise FieldProblem("masterCidr", self.master_cidr, "a /28 range (GKE's private control plane)")
        nets = {key: ipaddress.IPv4Network(cidr) for key, cidr in ranges.items()}
        keys = list(nets)
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                if nets[a].overlaps(nets[b]):
                    raise FieldProblem(b, ranges[b], f"a range not overlapping {a} ({ranges[a]})")

    def _check_servers(self) -> None:
        if not self.servers:
            raise FieldProblem("servers", {}, "at least one server")
        owners: dict[str, str] = {}
        demand: dict[str, dict[str, tuple[int, int]]] = {}
        for name, server in self.servers.items():
            key = f"servers.{name}"
            for model in server.models:
                if model in owners:
                    raise FieldProblem(f"{key}.models.{model}", model,
                                       f"a model name not already served by servers.{owners[model]} "
                                       "(clients and routes address models by name)")
                owners[model] = name
            pool = self.node_pools.get(server.node_pool)
            if pool is None:
                raise FieldProblem(f"{key}.nodePool", server.node_pool,
                                   f"one of the nodePools keys {sorted(self.node_pools)}")
            if server.gpus > pool.gpus_per_node:
                raise FieldProblem(f"{key}.gpus", server.gpus,
                                   f"at most {pool.gpus_per_node}, the GPUs per node of pool {server.node_pool!r}")
            if pool.is_gpu and not server.gpus:
                raise FieldProblem(f"{key}.gpus", 0, f"at least 1 on GPU pool {server.node_pool!r} (its nodes "
                                                     "are tainted for GPU pods; use a CPU pool for CPU serving)")
            check_server_partition(key, server, server.node_pool, pool)
            if pool.gpu_time_slicing > 1 and server.gpus > 1:
                raise FieldProblem(f"{key}.gpus", server.gpus,
                                   f"1 on pool {server.node_pool!r}, whose GPUs are time-sliced")
            if server.gpu_memory_fraction and server.gpu_memory_fraction * pool.gpu_time_slicing > 1:
                raise FieldProblem(f"{key}.gpuMemoryFraction", server.gpu_memory_fraction,
                                   f"at most {1 / pool.gpu_time_slicing:.2f}: {pool.gpu_time_slicing} pods "
                                   f"share each GPU of pool {server.node_pool!r}")
            if server.has_canary and self.traffic_router == "none":
                model = next(m for m, spec in server.models.items() if spec.canary_active)
                raise FieldProblem(f"{key}.models.{model}.canaryVersion",
                                   server.models[model].canary_version,
                                   "unset while trafficRouter is none (nothing would apply canaryWeight): "
                                   "set trafficRouter to gateway-api or istio")
            if server.scale_to_zero is not None:
                self._check_scale_to_zero(key, server)
            # At peak the HPA runs maxReplicas, and a rolling update then surges one pod per Deployment
            # (maxSurge 1, maxUnavailable 0); a promotion rolls the stable pods while the canary still runs.
            # The pool must hold that peak, or pods stay Pending: the HPA cannot reach maxReplicas, and
            # pulumi's await fails the update (the canary is never removed).
            pods = server.max_replicas + 1 + (server.canary_replicas + 1 if server.has_canary else 0)
            demand.setdefault(server.node_pool, {})[name] = (pods, server.gpus)
        for pool_name, servers in demand.items():
            pool = self.node_pools[pool_name]
            gpus = sum(pods * per_pod for pods, per_pod in servers.values())
            per_node = pool.gpus_per_node * partitions_per_gpu(pool, self.cloud == "aws")
            capacity = pool.max_size * per_node
            if pool.is_gpu and gpus > capacity:
                needs = "; ".join(
                    f"servers.{name} {pods * per_pod} ({self._peak_pods(name)} = {pods} pods x {per_pod} GPU)"
                    for name, (pods, per_pod) in servers.items())
                raise FieldProblem(f"nodePools.{pool_name}.maxSize", pool.max_size,
                                   f"at least {-(-gpus // per_node)}: enough for the {gpus} GPUs the servers "
                                   f"request at peak, maxReplicas (and canaries) with one surge pod per "
                                   f"Deployment included: {needs}; {capacity} at maxSize "
                                   f"({pool.gpus_per_node} GPUs per node x "
                                   + (f"{per_node // pool.gpus_per_node} {pool.mig_profile} partitions)"
                                      if pool.mig_profile else f"{pool.gpu_time_slicing} time slices)"))
        if self.exposure.enabled:
            self._check_exposure()
        if self.allowed_pod_labels and not self.allowed_namespaces:
            raise FieldProblem("allowedPodLabels", self.allowed_pod_labels,
                               "unset unless allowedNamespaces names the namespaces those pods run in")

    def _check_scale_to_zero(self, key: str, server: Server) -> None:
        """What a scale-to-zero server needs of the stack (docs/scale-to-zero.md)."""
        if server.scale_to_zero.hold_requests and self.traffic_router != "proxy":
            raise FieldProblem(f"{key}.scaleToZero.holdRequests", True,
                               f"false unless trafficRouter is proxy (not {self.traffic_router}): the platform's "
                               "router is what sends the server's requests through KEDA's interceptor")
        if not self.monitoring.install and not server.scale_to_zero.hold_requests:
            # Without the platform's Prometheus there is no request-rate trigger; held requests still keep
            # the server awake (the interceptor reports its traffic), unheld ones nothing would.
            raise FieldProblem(f"{key}.scaleToZero.holdRequests", False,
                               "true while monitoring.install is false: the request-rate trigger needs the "
                               "platform's Prometheus, and nothing else would keep a busy server awake")
        from components.serving.scale_to_zero import KEDA_NAMESPACE  # imports Pulumi: only when used

        for field, namespace in (("servingNamespace", self.serving_namespace),
                                 ("monitoringNamespace", self.monitoring_namespace)):
            if namespace == KEDA_NAMESPACE:
                raise FieldProblem(field, namespace, f"a namespace other than {KEDA_NAMESPACE!r}, which KEDA gets "
                                                     f"when {key} scales to zero")

    def _check_exposure(self) -> None:
        exposure = self.exposure
        if not (exposure.proxy_namespaces or exposure.proxy_cidrs):
            raise FieldProblem("exposure.proxyNamespaces", [],
                               "the namespaces of the gateway's proxy pods, or proxyCidrs for a load "
                               "balancer outside the cluster (the network policy denies everything else)")
        # proxyCidrs are admitted to the REST port from anywhere: a range holding pod addresses would admit
        # every pod there, bypassing allowedNamespaces. The AWS VPC CNI gives pods addresses of their node's
        # (private) subnet (https://docs.aws.amazon.com/eks/latest/userguide/managing-vpc-cni.html); GKE gives
        # them podCidr, and hostNetwork pods their node's address in vpcCidr.
        if self.cloud == "aws":
            subnets = subnet_cidrs(self.vpc_cidr, self.zones)
            pod_ranges = {f"the private subnet of {zone} ({private}), where nodes and pods take their "
                          f"addresses": private for zone, (private, _) in subnets.items()}
            hint = ("the public subnets' CIDRs, where the load balancer runs: "
                    f"{[public for _, public in subnets.values()]}")
        else:
            pod_ranges = {f"podCidr ({self.pod_cidr}), the pods' addresses": self.pod_cidr,
                          f"vpcCidr ({self.vpc_cidr}), the nodes' addresses": self.vpc_cidr}
            hint = "Google's front-end ranges 35.191.0.0/16 and 130.211.0.0/22 for an external Gateway"
        for index, cidr in enumerate(exposure.proxy_cidrs):
            for what, pod_range in pod_ranges.items():
                if ipaddress.IPv4Network(cidr).overlaps(ipaddress.IPv4Network(pod_range)):
                    raise FieldProblem(f"exposure.proxyCidrs.{index}", cidr,
                                       f"a range not overlapping {what}: it would admit every pod to the "
                                       f"REST port; use {hint}")
        if self.protect and not exposure.requires_authentication and not exposure.allow_anonymous:
            raise FieldProblem("exposure.authentication", "none",
                               "jwt or client-certificate when protect is true (the exposed API would answer "
                               "anyone), or allowAnonymous true with an anonymousReason")

    def _peak_pods(self, name: str) -> str:
        server = self.servers[name]
        text = f"maxReplicas {server.max_replicas} + 1 surge"
        return text + (f" + canary {server.canary_replicas} + 1 surge" if server.has_canary else "")

    def gpu_memory_fraction(self, server: Server) -> float | None:
        """The fraction passed to TF Serving: the configured one, or a share of a time-sliced GPU."""
        slices = self.node_pools[server.node_pool].gpu_time_slicing
        if server.gpu_memory_fraction is not None or not server.gpus:
            return server.gpu_memory_fraction
        return default_gpu_fraction(slices) if slices > 1 else None
