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
from components.gcp.compute_class import (PRIMARY, class_node_labels, class_taint, compute_class_name,
                                          option_accelerator, option_pool_name, pooled_options)
from components.gcp.network import PODS_RANGE, SERVICES_RANGE
from components.gpu.mig import GKE_GPU_MODEL, GKE_PARTITION_SIZES
from components.helm_charts import KUBE_PROMETHEUS_STACK, PROMETHEUS_ADAPTER
from components.node_labels import POOL_LABEL
from components.serving.scale_to_zero import keda_ports

# What nodes need and nothing more (the default compute service account is project Editor):
# https://cloud.google.com/kubernetes-engine/docs/how-to/hardening-your-cluster#use_least_privilege_sa
NODE_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
              "roles/stackdriver.resourceMetadata.writer", "roles/autoscaling.metricsWriter",
              "roles/artifactregistry.reader")


SYSTEM_POOL = "system"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
FLEX_START_MAX_RUN = "604800s"
"""Flex-start VMs run at most seven days (GKE docs, "About flex-start provisioning mode"); the provider's
acceptance test of ``flex_start`` sets exactly this ``max_run_duration`` (terraform-provider-google
google/services/container/resource_container_node_pool_test.go, testAccContainerNodePool_withFlexStart)."""
RESERVATION_NAME_KEY = "compute.googleapis.com/reservation-name"
"""``reservation_affinity.key`` that targets a SPECIFIC_RESERVATION by name (terraform-provider-google
website/docs/r/container_node_pool.html.markdown, reservation_affinity)."""

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


def uses_compute_classes(pools: dict[str, "GkeNodePoolSpec"]) -> bool:
    return any(spec.compute_class for spec in pools.values())


def streaming_default(pools: dict[str, "GkeNodePoolSpec"]) -> bool:
    """Whether image streaming is the cluster's default for new pools: when a compute-class pool streams,
    so the pools NAP creates for its class stream too. Pools without ``image_streaming`` then turn it off
    explicitly (a pool's own ``gcfs_config`` overrides the cluster default)."""
    return any(spec.compute_class and spec.image_streaming for spec in pools.values())


def gpu_resource_limits(pools: dict[str, "GkeNodePoolSpec"]) -> dict[str, int]:
    """Node auto-provisioning's maximum per accelerator type: per pool, ``max_size`` nodes of the most GPUs
    per node any of its options (the first only, without a compute class) has of that type, summed over
    the pools. The limits are cluster-wide and count the fixed pools' GPUs too, so a pool's ``max_size``
    bounds its nodes across all its options, NAP's included."""
    limits: dict[str, int] = {}
    for spec in pools.values():
        if not spec.gpus_per_node:
            continue
        per_type: dict[str, int] = {}
        for option in spec.options() if spec.compute_class else spec.options()[:1]:
            accelerator, count = option_accelerator(spec, option)
            if accelerator and count:
                per_type[accelerator] = max(per_type.get(accelerator, 0), count)
        for accelerator, count in per_type.items():
            limits[accelerator] = limits.get(accelerator, 0) + spec.max_size * count
    return dict(sorted(limits.items()))


def gpu_partition_size(pool: str, spec: "GkeNodePoolSpec", accelerator: str | None) -> str | None:
    """``guest_accelerator.gpu_partition_size`` (MIG): ``mig_profile``, when GKE offers it for the GPU."""
    if spec.mig_profile is None:
        return None
    model = GKE_GPU_MODEL.get(accelerator or "")
    if model is None:
        raise ValueError(f"pool {pool!r}: mig_profile {spec.mig_profile!r} needs a MIG-capable GPU "
                         f"({', '.join(GKE_GPU_MODEL)}), not {accelerator}")
    if spec.mig_profile not in GKE_PARTITION_SIZES[model]:
        raise ValueError(f"pool {pool!r}: GKE partitions {model} ({accelerator}) into "
                         f"{', '.join(GKE_PARTITION_SIZES[model])}, not {spec.mig_profile!r}")
    return spec.mig_profile


def reservation_affinity(pool: str, option: CapacityOption
                         ) -> gcp.container.NodePoolNodeConfigReservationAffinityArgs | None:
    """Which reservations an option's nodes consume (provider docs, reservation_affinity): a named one
    (SPECIFIC_RESERVATION, by ``compute.googleapis.com/reservation-name``; a shared reservation of another
    project by its ``projects/<p>/reservations/<name>`` path), any matching one (ANY_RESERVATION, which
    falls back to on-demand), or none for flex-start VMs (they never consume reservations; the provider's
    flex-start acceptance test sets NO_RESERVATION). None: the API default."""
    if option.capacity == "flex-start":
        if option.reservation:
            raise ValueError(f"pool {pool!r}, option {option.name!r}: flex-start VMs consume no reservation "
                             f"({option.reservation!r})")
        return gcp.container.NodePoolNodeConfigReservationAffinityArgs(consume_reservation_type="NO_RESERVATION")
    if option.reservation is None:
        return None
    if option.reservation == "any":
        return gcp.container.NodePoolNodeConfigReservationAffinityArgs(consume_reservation_type="ANY_RESERVATION")
    return gcp.container.NodePoolNodeConfigReservationAffinityArgs(
        consume_reservation_type="SPECIFIC_RESERVATION", key=RESERVATION_NAME_KEY, values=[option.reservation])


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
    fallback_accelerators: dict[str, tuple[str, int]] = field(default_factory=dict)
    """``{option name: (accelerator type, GPUs per node)}`` for fallbacks whose machine type carries other
    GPUs than the pool's (``g2-standard-24``: ``("nvidia-l4", 2)``); an option not listed has the pool's
    ``accelerator_type`` and ``gpus_per_node``. Components read no catalog: the composition fills this."""

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
    auto_provisioning_cpu: int = 96
    """Node auto-provisioning's cluster-wide ``cpu`` maximum (cores), set when a pool uses a compute class.
    GKE applies these limits to every node of the cluster, the fixed pools' included (provider docs,
    cluster_autoscaling.resource_limits), so it must cover all pools at their maximum size."""
    auto_provisioning_memory_gb: int = 768
    """Node auto-provisioning's cluster-wide ``memory`` maximum (GB), with the same cluster-wide scope."""


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
    with driver installation, optional time-sharing or MPS and MIG partitions, reservation affinity,
    flex-start, Workload Identity metadata server, secure boot), a secret kubeconfig and a Kubernetes
    ``Provider`` waiting for the system pool.

    A pool with ``compute_class`` also gets a ``NodePool`` ``<pool>-<option>`` per fallback option that NAP
    cannot create (:func:`components.gcp.compute_class.pooled_options`), all of its pools carry the class's
    label and taint, and the cluster turns on node auto-provisioning (``cluster_autoscaling``: limits from
    ``auto_provisioning_cpu`` / ``auto_provisioning_memory_gb`` and :func:`gpu_resource_limits`, defaults
    with the node service account). The ``ComputeClass`` object itself is
    :class:`components.gcp.compute_class.GpuComputeClass`.
    """

    cluster_name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    workload_pool: pulumi.Output[str]
    """``<project>.svc.id.goog``, read from the cluster: the pool exists only once a cluster with
    Workload Identity does (terraform-google-kubernetes-engine#916), so bindings on it must wait."""
    provider: k8s.Provider
    node_pools: dict[str, gcp.container.NodePool]
    """Each pool's own node pool (its ``primary`` option)."""
    option_pools: dict[str, dict[str, gcp.container.NodePool]]
    """Per pool, the node pools of its compute-class options that NAP cannot create, by option name."""

    def pool_dependencies(self, pool: str) -> list[pulumi.Resource]:
        """What a workload on ``pool`` must wait for beyond the provider: nothing for the system pool
        (the provider waits for it), that pool's node pools otherwise (GPU pools; with a compute class
        also its options' pools)."""
        return [] if pool == SYSTEM_POOL else [self.node_pools[pool], *self.option_pools[pool].values()]

    def _auto_provisioning(self, args: GkeClusterArgs, node_sa: gcp.serviceaccount.Account
                           ) -> gcp.container.ClusterClusterAutoscalingArgs | None:
        """Node auto-provisioning with cluster-wide limits (cpu, memory, GPUs per type: see
        :func:`gpu_resource_limits`) and defaults for the pools it creates: our least-privilege node
        service account (NAP would otherwise use the Compute Engine default service account, project
        Editor: provider default ``service_account = "default"``), the cloud-platform scope (IAM decides,
        as on the fixed pools), shielded nodes with secure boot (the provider's default is off) and
        integrity monitoring, auto repair and upgrade, surge upgrades one node at a time."""
        if not uses_compute_classes(args.node_pools):
            return None
        for key, value in (("auto_provisioning_cpu", args.auto_provisioning_cpu),
                           ("auto_provisioning_memory_gb", args.auto_provisioning_memory_gb)):
            if value < 1:  # the provider's ValidateFunc: IntAtLeast(1)
                raise ValueError(f"GkeCluster: {key} {value}, at least 1")
        limit = gcp.container.ClusterClusterAutoscalingResourceLimitArgs
        container = gcp.container  # shorter lines below
        defaults = gcp.container.ClusterClusterAutoscalingAutoProvisioningDefaultsArgs(
            service_account=node_sa.email, oauth_scopes=[CLOUD_PLATFORM_SCOPE],
            disk_type="pd-balanced", image_type="COS_CONTAINERD",
            shielded_instance_config=container.ClusterClusterAutoscalingAutoProvisioningDefaultsShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_integrity_monitoring=True),
            management=container.ClusterClusterAutoscalingAutoProvisioningDefaultsManagementArgs(
                auto_repair=True, auto_upgrade=True),
            upgrade_settings=container.ClusterClusterAutoscalingAutoProvisioningDefaultsUpgradeSettingsArgs(
                strategy="SURGE", max_surge=1, max_unavailable=0))
        return gcp.container.ClusterClusterAutoscalingArgs(
            enabled=True, auto_provisioning_defaults=defaults,
            resource_limits=[limit(resource_type="cpu", minimum=0, maximum=args.auto_provisioning_cpu),
                             limit(resource_type="memory", minimum=0, maximum=args.auto_provisioning_memory_gb),
                             *[limit(resource_type=accelerator, minimum=0, maximum=maximum)
                               for accelerator, maximum in gpu_resource_limits(args.node_pools).items()]])

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
                service_account=node_sa.email, oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                workload_metadata_config=gcp.container.ClusterNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA"),
                shielded_instance_config=gcp.container.ClusterNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True)),
            # Application-layer secrets encryption: etcd's copy of every Secret is encrypted with this
            # program's Cloud KMS key (https://cloud.google.com/kubernetes-engine/docs/how-to/encrypting-secrets).
            database_encryption=gcp.container.ClusterDatabaseEncryptionArgs(
                state="ENCRYPTED", key_name=secrets_key.id),
            # Node auto-provisioning, only when a pool uses a compute class (NAP creates that class's pools for
            # its plain priorities). cluster_autoscaling updates in place (terraform-provider-google
            # resource_container_cluster.go: Update sends DesiredClusterAutoscaling); of its fields only
            # auto_provisioning_defaults.boot_disk_kms_key is ForceNew, and it is not set here.
            cluster_autoscaling=self._auto_provisioning(args, node_sa),
            # NAP-created pools stream images like the class's own pools (the cluster default for new pools;
            # node_pool_defaults...gcfs_config updates in place, resource_container_cluster.go).
            node_pool_defaults=gcp.container.ClusterNodePoolDefaultsArgs(
                node_config_defaults=gcp.container.ClusterNodePoolDefaultsNodeConfigDefaultsArgs(
                    gcfs_config=gcp.container.ClusterNodePoolDefaultsNodeConfigDefaultsGcfsConfigArgs(enabled=True)))
            if streaming_default(args.node_pools) else None,
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
        self.node_pools, self.option_pools = {}, {}
        for pool, spec in args.node_pools.items():
            options = pooled_options(spec) if spec.compute_class else spec.options()[:1]
            pools = {o.name: self._node_pool(name, pool, spec, o, args, cluster, node_sa, zone_count)
                     for o in options}
            self.node_pools[pool] = pools.pop(PRIMARY)
            self.option_pools[pool] = pools

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

    def _node_pool(self, name: str, pool: str, spec: GkeNodePoolSpec, option: CapacityOption, args: GkeClusterArgs,
                   cluster: gcp.container.Cluster, node_sa: gcp.serviceaccount.Account,
                   zone_count: int) -> gcp.container.NodePool:
        """The node pool of one capacity option: the pool's own (``primary``: resource ``<name>-<pool>``, GKE
        name ``<pool>``) or a compute-class fallback (``<name>-<pool>-<option>``, GKE name ``<pool>-<option>``,
        starting empty and scaling from zero: the primary holds ``min_size``)."""
        primary = option.name == PRIMARY
        flex_start = option.capacity == "flex-start"
        if option.capacity not in ("on-demand", "spot", "reserved", "flex-start"):
            raise ValueError(f"GkeCluster {name}: pool {pool!r}, option {option.name!r}: capacity "
                             f"{option.capacity!r} does not exist on GKE")
        if spec.gpu_sharing_strategy not in ("TIME_SHARING", "MPS"):
            raise ValueError(f"GkeCluster {name}: pool {pool!r}: gpu_sharing_strategy {spec.gpu_sharing_strategy!r}, "
                             "expected TIME_SHARING or MPS")
        if primary and not flex_start:
            per_zone = initial_nodes_per_zone(spec, zone_count)
            if per_zone * zone_count < spec.min_size:
                raise ValueError(
                    f"GkeCluster {name}: pool {pool!r} cannot start with its minSize {spec.min_size} in "
                    f"{zone_count} zones without exceeding maxSize {spec.max_size} (GKE starts the same count in "
                    f"every zone): raise maxSize to a multiple of {zone_count} or lower minSize")
        else:
            # Fallbacks, and flex-start pools (created empty in the provider's acceptance test: nodes come
            # when capacity frees up), start with no node.
            per_zone = 0
        min_size = spec.min_size if primary else 0
        accelerator, gpus = option_accelerator(spec, option)
        accelerators = None
        if gpus:
            # MPS: one CUDA context server shares each GPU among up to max_shared_clients_per_gpu containers
            # (provider docs, guest_accelerator.gpu_sharing_config); TIME_SHARING: time slices.
            sharing = (gcp.container.NodePoolNodeConfigGuestAcceleratorGpuSharingConfigArgs(
                gpu_sharing_strategy=spec.gpu_sharing_strategy, max_shared_clients_per_gpu=spec.gpu_time_slicing)
                if spec.gpu_time_slicing > 1 else None)
            accelerators = [gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
                type=accelerator, count=gpus,
                gpu_driver_installation_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(
                    gpu_driver_version=spec.gpu_driver_version),
                # ForceNew, like every guest_accelerator field (terraform-provider-google node_config.go).
                gpu_partition_size=gpu_partition_size(pool, spec, accelerator),
                gpu_sharing_config=sharing)]
        labels = {POOL_LABEL: pool, **spec.labels}
        taints = list(spec.taints)
        if spec.compute_class:
            # Manually created pools of a compute class carry its label and NoSchedule taint (GKE docs, "About
            # custom compute classes"). Labels and taints update in place (terraform-provider-google
            # node_config.go, nodePoolNodeConfigUpdate: node_config.0.labels, node_config.0.taint).
            klass = compute_class_name(pool)
            labels.update(class_node_labels(klass))
            taints.append(class_taint(klass))
        location_policy = "ANY" if option.capacity != "on-demand" or option.reservation else "BALANCED"
        return gcp.container.NodePool(
            f"{name}-{pool}" if primary else f"{name}-{pool}-{option.name}",
            name=option_pool_name(pool, option), project=args.project, cluster=cluster.id,
            location=cluster.location,
            # GKE counts initial nodes per zone; the autoscaler's total_* limits span all zones.
            initial_node_count=per_zone,
            # ANY: "prioritize utilization of unused reservations, and reduce preemption risk for Spot VMs"
            # (provider docs, autoscaling.location_policy); flex-start capacity comes wherever it frees up.
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                total_min_node_count=min_size, total_max_node_count=spec.max_size, location_policy=location_policy),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            upgrade_settings=gcp.container.NodePoolUpgradeSettingsArgs(max_surge=1, max_unavailable=0),
            node_config=gcp.container.NodePoolNodeConfigArgs(
                machine_type=option.instance_types[0], spot=option.capacity == "spot",
                disk_size_gb=spec.disk_size_gb, disk_type="pd-balanced", image_type="COS_CONTAINERD",
                service_account=node_sa.email, oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                labels=labels,
                taints=[gcp.container.NodePoolNodeConfigTaintArgs(**t) for t in taints] or None,
                guest_accelerators=accelerators,
                # ForceNew (node_config.go), as are flex_start and max_run_duration: changing them replaces
                # the pool.
                reservation_affinity=reservation_affinity(pool, option),
                flex_start=True if flex_start else None,
                max_run_duration=FLEX_START_MAX_RUN if flex_start else None,
                # gcfs_config updates in place (node_config.go, nodePoolNodeConfigUpdate).
                gcfs_config=gcp.container.NodePoolNodeConfigGcfsConfigArgs(enabled=True) if spec.image_streaming
                else gcp.container.NodePoolNodeConfigGcfsConfigArgs(enabled=False)
                if streaming_default(args.node_pools) else None,
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
