"""A private GKE cluster with CPU and GPU node pools, Workload Identity and Dataplane V2."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.capacity import CapacityOption
from components.gcp.network import PODS_RANGE, SERVICES_RANGE
from components.helm_charts import KUBE_PROMETHEUS_STACK, PROMETHEUS_ADAPTER
from components.node_labels import POOL_LABEL
from components.serving.scale_to_zero import keda_ports

# What nodes need and nothing more (the default compute service account is project Editor):
# https://cloud.google.com/kubernetes-engine/docs/how-to/hardening-your-cluster#use_least_privilege_sa
NODE_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
              "roles/stackdriver.resourceMetadata.writer", "roles/autoscaling.metricsWriter",
              "roles/artifactregistry.reader")


SYSTEM_POOL = "system"

# GKE's own firewall rule lets a private cluster's control plane reach the nodes on 443 and 10250 only
# (https://cloud.google.com/kubernetes-engine/docs/concepts/firewall-rules). The API server also calls
# the pods behind APIServices and admission webhooks on their container ports:
# prometheus-adapter serves custom.metrics.k8s.io on its listenPort (chart default 6443;
# kubernetes-sigs/prometheus-adapter#534), the prometheus-operator admission webhook listens on
# prometheusOperator.tls.internalPort (chart default 10250, chosen for GKE). The charts' own defaults
# are used unless our base values set the key.
_ADAPTER_DEFAULT_PORT = 6443
_OPERATOR_WEBHOOK_DEFAULT_PORT = 10250


def control_plane_ports() -> list[str]:
    """TCP ports the control plane must reach on the nodes for this platform's APIService and webhooks."""
    adapter = PROMETHEUS_ADAPTER.base_values().get("listenPort", _ADAPTER_DEFAULT_PORT)
    operator = (KUBE_PROMETHEUS_STACK.base_values().get("prometheusOperator", {}).get("tls", {})
                .get("internalPort", _OPERATOR_WEBHOOK_DEFAULT_PORT))
    # KEDA's metrics APIService and admission webhooks (scale to zero): opened whether or not a server
    # scales to zero, so turning it on never waits for a firewall change.
    keda = keda_ports().values()
    return sorted({str(adapter), str(operator), *map(str, keda)}, key=int)


def initial_nodes_per_zone(spec: "GkeNodePoolSpec", zone_count: int) -> int:
    """GKE's ``initial_node_count`` is per zone: the per-zone count whose total is the smallest
    multiple of the zones reaching ``desired_size``, capped so the total never exceeds ``max_size``."""
    return min(math.ceil(spec.desired_size / zone_count), spec.max_size // zone_count)


@dataclass(frozen=True)
class GkeNodePoolSpec:
    """One GKE node pool, keyed by its stable name (the same shape as the EKS pools)."""

    machine_type: str
    spot: bool = False
    min_size: int = 1
    """Total minimum nodes across the pool's zones (0 lets a GPU pool scale to zero)."""
    desired_size: int = 1
    """Total nodes at creation, spread over the zones (GKE's initial count is per zone: the total is
    rounded up to a multiple of the zones, and down again if that exceeds ``max_size``)."""
    max_size: int = 3
    gpus_per_node: int = 0
    accelerator_type: str | None = None
    """``nvidia-l4``, ``nvidia-tesla-t4``, ``nvidia-tesla-a100``, ``nvidia-h100-80gb``, ..."""
    gpu_driver_version: str = "LATEST"
    """GKE installs this driver (``LATEST`` or ``DEFAULT``); GKE also runs the device plugin."""
    gpu_time_slicing: int = 1
    """> 1: GKE time-shares each GPU among that many pods."""
    disk_size_gb: int = 100
    image_streaming: bool = False
    """GKE image streaming (``gcfsConfig``): a container starts while its image streams in. Only images in
    Artifact Registry stream; others are pulled whole as before."""
    secondary_boot_disk_image: str | None = None
    """``global/images/<name>`` (or ``projects/<p>/global/images/<name>``) preloaded with the serving
    images, attached as a ``CONTAINER_IMAGE_CACHE`` secondary boot disk (needs ``image_streaming``)."""
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    """``{key, value, effect}`` with GKE effects (``NO_SCHEDULE``, ...). GKE adds
    ``nvidia.com/gpu=present:NoSchedule`` to GPU nodes itself."""
    flex_start: bool = False
    """Flex-start VMs (``node_config.flex_start``): nodes come when capacity frees up, run at most 7 days."""
    reservation: str | None = None
    """Consume a Compute Engine reservation: its name (``<name>`` or ``projects/<p>/reservations/<name>``),
    or ``any`` for any matching reservation."""
    hourly_price: float | None = None
    """USD per node-hour where no list price applies."""
    fallback: tuple[CapacityOption, ...] = ()
    """More capacity options after the pool's own, in priority order (compute-class provisioner only)."""
    compute_class: bool = False
    """Provision this pool through a custom ComputeClass (its options in order), not as one fixed pool."""
    mig_profile: str | None = None
    """GKE ``gpu_partition_size`` (MIG) of every GPU in the pool: :mod:`components.gpu.mig`."""
    gpu_sharing_strategy: str = "TIME_SHARING"
    """With ``gpu_time_slicing`` > 1: ``TIME_SHARING`` or ``MPS`` (NVIDIA Multi-Process Service)."""

    def options(self) -> tuple[CapacityOption, ...]:
        """The pool's own capacity option (named ``primary``), then its fallbacks."""
        capacity = "flex-start" if self.flex_start else "spot" if self.spot else (
            "reserved" if self.reservation else "on-demand")
        primary = CapacityOption("primary", (self.machine_type,), capacity, self.reservation, self.hourly_price)
        return (primary, *self.fallback)


@dataclass(frozen=True)
class GkeClusterArgs:
    """Inputs of :class:`GkeCluster`."""

    cluster_name: str
    project: str
    region: str
    zones: list[str]
    network_id: pulumi.Input[str]
    subnetwork_id: pulumi.Input[str]
    node_pools: dict[str, GkeNodePoolSpec]
    regional: bool = True
    """Regional control plane (three replicas) and nodes in every zone; False: zonal in ``zones[0]``."""
    kubernetes_version: str | None = None
    """Minimum control-plane version (the release channel upgrades beyond it)."""
    release_channel: str = "REGULAR"
    endpoint_public_access: bool = True
    """Public control-plane endpoint (restricted to ``authorized_cidrs``); nodes are private anyway."""
    authorized_cidrs: list[str] = field(default_factory=lambda: ["0.0.0.0/0"])
    master_cidr: str = "172.16.0.0/28"
    protect: bool = False
    """Deletion protection on the cluster and Pulumi ``protect``."""
    labels: dict[str, str] = field(default_factory=dict)


SECRETS_KEY_ROTATION = "7776000s"
"""90 days: a new key version encrypts new writes; GKE keeps decrypting with the older versions."""


def gke_service_agent(project_number: str) -> str:
    """The GKE service agent of a project, which encrypts and decrypts the cluster's Secrets."""
    return f"serviceAccount:service-{project_number}@container-engine-robot.iam.gserviceaccount.com"


def kubeconfig_for(name: str, endpoint: str, ca_data: str) -> str:
    """A kubeconfig that authenticates with ``gke-gcloud-auth-plugin`` (no static credentials)."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": f"https://{endpoint}",
                                                "certificate-authority-data": ca_data}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "users": [{"name": name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "gke-gcloud-auth-plugin",
            "provideClusterInfo": True,
            "installHint": "gcloud components install gke-gcloud-auth-plugin"}}}],
    })


class GkeCluster(pulumi.ComponentResource):
    """Creates: a Cloud KMS ``KeyRing`` (random-suffixed name) and ``CryptoKey`` encrypting the cluster's
    Secrets, with a ``CryptoKeyIAMMember`` for the GKE service agent, a node ``ServiceAccount`` with the
    least roles nodes need (one ``IAMMember`` per role), a ``Cluster`` (application-layer secrets
    encryption, default pool removed, release channel, Workload Identity, Dataplane V2 for network
    policy, private nodes, shielded nodes, authorized networks, Gateway API CRDs, deletion protection
    when protected), a ``Firewall`` rule letting the control plane reach the nodes on the APIService and
    webhook ports (:func:`control_plane_ports`), one ``NodePool`` per spec (autoscaling, spot, GPUs
    with driver installation and optional time-sharing, Workload Identity metadata server, secure boot),
    a secret kubeconfig and a Kubernetes ``Provider`` waiting for the system pool.
    """

    cluster_name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    workload_pool: pulumi.Output[str]
    """``<project>.svc.id.goog``, read from the cluster: the pool exists only once a cluster with
    Workload Identity does (terraform-google-kubernetes-engine#916), so bindings on it must wait."""
    provider: k8s.Provider
    node_pools: dict[str, gcp.container.NodePool]

    def pool_dependencies(self, pool: str) -> list[pulumi.Resource]:
        """What a workload on ``pool`` must wait for beyond the provider: nothing for the system pool
        (the provider waits for it), that node pool otherwise (GPU pools)."""
        return [] if pool == SYSTEM_POOL else [self.node_pools[pool]]

    def _secrets_key(self, name: str, args: GkeClusterArgs) -> gcp.kms.CryptoKey:
        """A key ring and key for the cluster's Secrets, in the cluster's region (GKE requires the key in
        the cluster's location), and the GKE service agent's right to use it.

        Key rings cannot be deleted (https://cloud.google.com/kms/docs/resource-hierarchy#key_rings): the
        ring's name carries a random suffix, so a stack destroyed and created again does not collide
        with its old ring. The service agent ``service-<project number>@container-engine-robot`` is named
        by the project's number, which the ``organizations.getProject`` invoke returns.
        """
        child = pulumi.ResourceOptions(parent=self)
        suffix = random.RandomId(f"{name}-secrets-ring", byte_length=2, opts=child)
        ring = gcp.kms.KeyRing(f"{name}-secrets", project=args.project, location=args.region,
                               name=suffix.hex.apply(lambda h: f"{args.cluster_name}-secrets-{h}"), opts=child)
        key = gcp.kms.CryptoKey(f"{name}-secrets", key_ring=ring.id, name="kubernetes-secrets",
                                purpose="ENCRYPT_DECRYPT", rotation_period=SECRETS_KEY_ROTATION,
                                labels=args.labels or None,
                                opts=pulumi.ResourceOptions(parent=self, protect=args.protect))
        project = gcp.organizations.get_project_output(project_id=args.project,
                                                       opts=pulumi.InvokeOptions(parent=self))
        self._secrets_grant = gcp.kms.CryptoKeyIAMMember(
            f"{name}-secrets-gke-agent", crypto_key_id=key.id, role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
            member=project.number.apply(gke_service_agent), opts=child)
        return key

    def __init__(self, name: str, args: GkeClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:gcp:GkeCluster", name, None, opts)
        if "system" not in args.node_pools:
            raise ValueError(f"GkeCluster {name}: a 'system' node pool is required")
        child = pulumi.ResourceOptions(parent=self)
        location = args.region if args.regional else args.zones[0]

        secrets_key = self._secrets_key(name, args)

        node_sa = gcp.serviceaccount.Account(
            f"{name}-nodes", project=args.project, account_id=f"{args.cluster_name}-nodes"[:30],
            display_name=f"GKE nodes of {args.cluster_name}", opts=child)
        for role in NODE_ROLES:
            gcp.projects.IAMMember(f"{name}-nodes-{role.split('/')[1].replace('.', '-')}", project=args.project,
                                   role=role, member=node_sa.member, opts=child)

        cluster = gcp.container.Cluster(
            f"{name}-cluster", name=args.cluster_name, project=args.project, location=location,
            node_locations=args.zones if args.regional else ([z for z in args.zones if z != location] or None),
            # Node pools are managed below; the default one only exists while the cluster is created.
            remove_default_node_pool=True, initial_node_count=1,
            network=args.network_id, subnetwork=args.subnetwork_id, networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name=PODS_RANGE, services_secondary_range_name=SERVICES_RANGE),
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=args.release_channel),
            min_master_version=args.kubernetes_version,
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=f"{args.project}.svc.id.goog"),
            # Dataplane V2 (Cilium) enforces NetworkPolicy; without it GKE ignores them.
            datapath_provider="ADVANCED_DATAPATH",
            private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True, enable_private_endpoint=not args.endpoint_public_access,
                master_ipv4_cidr_block=args.master_cidr),
            master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
                cidr_blocks=[gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(
                    cidr_block=cidr, display_name=f"authorized-{i}") for i, cidr in enumerate(args.authorized_cidrs)]),
            master_auth=gcp.container.ClusterMasterAuthArgs(
                client_certificate_config=gcp.container.ClusterMasterAuthClientCertificateConfigArgs(
                    issue_client_certificate=False)),
            enable_shielded_nodes=True,
            # VPC flow logs then see pod-to-pod traffic on the same node too.
            enable_intranode_visibility=True,
            enable_legacy_abac=False,
            # GKE installs and upgrades the Gateway API CRDs the canary routes use.
            gateway_api_config=gcp.container.ClusterGatewayApiConfigArgs(channel="CHANNEL_STANDARD"),
            logging_config=gcp.container.ClusterLoggingConfigArgs(
                enable_components=["SYSTEM_COMPONENTS", "WORKLOADS", "APISERVER"]),
            node_config=gcp.container.ClusterNodeConfigArgs(
                service_account=node_sa.email, oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"],
                workload_metadata_config=gcp.container.ClusterNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA"),
                shielded_instance_config=gcp.container.ClusterNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True)),
            # Application-layer secrets encryption: etcd's copy of every Secret is encrypted with this
            # program's Cloud KMS key (https://cloud.google.com/kubernetes-engine/docs/how-to/encrypting-secrets).
            database_encryption=gcp.container.ClusterDatabaseEncryptionArgs(
                state="ENCRYPTED", key_name=secrets_key.id),
            resource_labels=args.labels, deletion_protection=args.protect,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, depends_on=[self._secrets_grant]))

        # The control plane to the APIService/webhook ports of pods on any node (all run as node_sa).
        gcp.compute.Firewall(
            f"{name}-master-webhooks", project=args.project, network=args.network_id, direction="INGRESS",
            priority=1000, source_ranges=[args.master_cidr], target_service_accounts=[node_sa.email],
            allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=control_plane_ports())],
            description="GKE control plane to APIService and admission webhook ports on the nodes",
            opts=child)

        self.workload_pool = cluster.workload_identity_config.apply(lambda c: c.workload_pool)
        zone_count = len(args.zones) if args.regional else 1
        self.node_pools = {}
        for pool, spec in args.node_pools.items():
            self.node_pools[pool] = self._node_pool(name, pool, spec, args, cluster, node_sa, zone_count)

        self.cluster_name = cluster.name
        self.endpoint = cluster.endpoint
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(cluster.name, cluster.endpoint,
                                                                 cluster.master_auth.cluster_ca_certificate).apply(
            lambda a: kubeconfig_for(a[0], a[1], a[2])))
        # ConfigMaps that keep their name are updated in place (TF Serving's are one per revision). Workloads
        # wait for the system pool (a Deployment's readiness await needs nodes); what runs on another
        # pool waits for that pool itself (pool_dependencies).
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, enable_config_map_mutable=True,
                                     opts=pulumi.ResourceOptions(parent=self, depends_on=[self.node_pools[SYSTEM_POOL]]))
        self.register_outputs({"cluster_name": self.cluster_name, "endpoint": self.endpoint,
                               "kubeconfig": self.kubeconfig})

    def _node_pool(self, name: str, pool: str, spec: GkeNodePoolSpec, args: GkeClusterArgs,
                   cluster: gcp.container.Cluster, node_sa: gcp.serviceaccount.Account,
                   zone_count: int) -> gcp.container.NodePool:
        per_zone = initial_nodes_per_zone(spec, zone_count)
        if per_zone * zone_count < spec.min_size:
            raise ValueError(
                f"GkeCluster {name}: pool {pool!r} cannot start with its minSize {spec.min_size} in "
                f"{zone_count} zones without exceeding maxSize {spec.max_size} (GKE starts the same count in "
                f"every zone): raise maxSize to a multiple of {zone_count} or lower minSize")
        accelerators = None
        if spec.gpus_per_node:
            sharing = (gcp.container.NodePoolNodeConfigGuestAcceleratorGpuSharingConfigArgs(
                gpu_sharing_strategy="TIME_SHARING", max_shared_clients_per_gpu=spec.gpu_time_slicing)
                if spec.gpu_time_slicing > 1 else None)
            accelerators = [gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
                type=spec.accelerator_type, count=spec.gpus_per_node,
                gpu_driver_installation_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(
                    gpu_driver_version=spec.gpu_driver_version),
                gpu_sharing_config=sharing)]
        return gcp.container.NodePool(
            f"{name}-{pool}", name=pool, project=args.project, cluster=cluster.id, location=cluster.location,
            # GKE counts initial nodes per zone; the autoscaler's total_* limits span all zones.
            initial_node_count=per_zone,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                total_min_node_count=spec.min_size, total_max_node_count=spec.max_size, location_policy="ANY"
                if spec.spot else "BALANCED"),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            upgrade_settings=gcp.container.NodePoolUpgradeSettingsArgs(max_surge=1, max_unavailable=0),
            node_config=gcp.container.NodePoolNodeConfigArgs(
                machine_type=spec.machine_type, spot=spec.spot, disk_size_gb=spec.disk_size_gb,
                disk_type="pd-balanced", image_type="COS_CONTAINERD",
                service_account=node_sa.email, oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"],
                labels={POOL_LABEL: pool, **spec.labels},
                taints=[gcp.container.NodePoolNodeConfigTaintArgs(**t) for t in spec.taints] or None,
                guest_accelerators=accelerators,
                gcfs_config=gcp.container.NodePoolNodeConfigGcfsConfigArgs(enabled=True)
                if spec.image_streaming else None,
                # ForceNew in the provider (terraform-provider-google node_config.go, secondary_boot_disks):
                # changing the image replaces the pool, as stacks/diff.py says.
                secondary_boot_disks=[gcp.container.NodePoolNodeConfigSecondaryBootDiskArgs(
                    disk_image=spec.secondary_boot_disk_image, mode="CONTAINER_IMAGE_CACHE")]
                if spec.secondary_boot_disk_image else None,
                metadata={"disable-legacy-endpoints": "true"},
                workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA"),
                shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True)),
            # The autoscaler owns the node count after creation.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["initialNodeCount"]))
