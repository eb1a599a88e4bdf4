"""Compose the platform of one stack from its settings (``__main__.py`` stays short)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from components.aws.eks_cluster import EksCluster, EksClusterArgs
from components.aws.global_endpoint import regional_endpoint
from components.aws.node_group import NodePoolSpec
from components.node_labels import POOL_LABEL
from components.aws.model_bucket import ModelBucket, ModelBucketArgs, ModelReaderRole, ModelReaderRoleArgs
from components.aws.network import Vpc, VpcArgs
from components.gcp.compute_class import (GpuComputeClass, GpuComputeClassArgs, class_node_selector, class_toleration,
                                          compute_class_name)
from components.gcp.gke_cluster import GkeCluster, GkeClusterArgs, GkeNodePoolSpec
from components.gcp.image_mirror import (DockerHubMirror, DockerHubMirrorArgs, in_artifact_registry,
                                         repository_id)
from components.gcp.model_bucket import (GcsModelBucket, GcsModelBucketArgs, GcsModelPublisher,
                                        GcsModelPublisherArgs, GcsModelReader, GcsModelReaderArgs)
from components.aws.cluster_autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs
from components.aws.karpenter import Karpenter, KarpenterArgs, KarpenterNodePools, KarpenterNodePoolsArgs
from components.gcp.network import GkeNetwork, GkeNetworkArgs
from components.gpu.addons import GpuAddons, GpuAddonsArgs
from components.monitoring.alerts import AlertThresholds
from components.monitoring.prometheus_stack import FULLNAME as PROMETHEUS_FULLNAME
from components.monitoring.prometheus_stack import PrometheusStack, PrometheusStackArgs
from components.monitoring.serving_monitoring import ServingMonitoring, ServingMonitoringArgs
from components.serving.batching import BatchingConfig, default_batching
from components.serving.gateway import JwtIssuer, ServingGateway, ServingGatewayArgs
from components.serving.model_cache import ModelCache, ModelCacheArgs
from components.serving.canary_router import ROUTER_APP
from components.serving.model_server import APP_LABEL, ModelServerArgs
from components.serving.namespace import ServingNamespace, ServingNamespaceArgs
from components.serving.scale_to_zero import Keda, KedaArgs, OfficeHours, ServerScaleToZero
from components.serving.tfserving import TfServing, TfServingArgs
from components.serving.tfserving_config import ServedModel
from components.gpu.mig import GKE_PARTITION_LABEL, mig_resource
from components.node_labels import GPU_RESOURCE
from stacks.capacity_settings import options_of
from stacks.gcp_catalog import BUILT_IN_GPUS, accelerator_of
from stacks.images import ImageLockError, PinnedImages, pinned_images, read_lock
from stacks.settings import PROJECT, Server, StackSettings

SERVING_NAME = "tfserving"
"""Name of the serving service account (the bucket identity trusts exactly this one)."""


def serving_service_account(settings: StackSettings) -> str:
    """The serving Kubernetes service account. On GKE it carries the stack's name: Workload Identity
    names a KSA project-wide (``serviceAccount:<project>.svc.id.goog[<namespace>/<ksa>]``, no cluster in
    it), so any cluster of the project with the same namespace and KSA name could impersonate this
    stack's reader; a per-stack name keeps two stacks of one project apart. On EKS the IRSA trust
    already names this cluster's own OIDC issuer."""
    if settings.cloud == "aws":
        return SERVING_NAME
    return re.sub(r"[^a-z0-9-]", "-", f"{SERVING_NAME}-{pulumi.get_stack().lower()}")[:63].rstrip("-")


PoolDependencies = Callable[[str], list[pulumi.Resource]]
"""Pool name -> what a workload on that pool waits for beyond the cluster's provider (its node group
when it is not the system pool: the provider waits for the system pool only)."""
DEPLOYED_OUTPUT = "stackDeployed"
"""Exported by every successful ``pulumi up``; its absence from the stack's last outputs means this run
is the stack's first."""


def serving_awaited(settings: StackSettings) -> pulumi.Input[bool]:
    """Whether ``pulumi up`` waits for the serving rollouts (``awaitServing``).

    ``auto``: not on the first up (the bucket is created in that run and holds no models until they are
    published, so the Deployments could never become available and pulumi-kubernetes' await would fail
    the update after 10 minutes), always afterwards (a broken rollout then fails ``pulumi up`` loudly).
    The first up is recognised by reading this stack's own last outputs: the engine's StackReference
    read returns the last checkpoint's outputs and has no self-reference guard
    (pulumi/pulumi pkg/resource/deploy/builtins.go readStackReference -> backend GetStackOutputs).
    """
    if settings.await_serving != "auto":
        return settings.await_serving == "always"
    me = pulumi.StackReference(f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}")
    return me.outputs.apply(lambda outputs: bool((outputs or {}).get(DEPLOYED_OUTPUT)))


def served_models(server: Server) -> list[ServedModel]:
    return [ServedModel(name=name, version_policy=m.version_policy, latest_versions=m.latest_versions,
                        versions=tuple(m.versions), labels=m.stable_labels(), canary_version=m.canary_version)
            for name, m in server.models.items()]


def batching_config(server: Server) -> BatchingConfig | None:
    """The configured batching numbers, the unset ones derived from the pod's CPU and GPUs."""
    if not server.batching.enabled:
        return None
    b, d = server.batching, default_batching(server.cpu, server.gpus)
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return BatchingConfig(max_batch_size=pick(b.max_batch_size, d.max_batch_size),
                          batch_timeout_micros=pick(b.batch_timeout_micros, d.batch_timeout_micros),
                          max_enqueued_batches=pick(b.max_enqueued_batches, d.max_enqueued_batches),
                          num_batch_threads=pick(b.num_batch_threads, d.num_batch_threads),
                          allowed_batch_sizes=tuple(b.allowed_batch_sizes),
                          pad_variable_length_inputs=b.pad_variable_length_inputs)


def node_pool_specs(settings: StackSettings) -> dict[str, NodePoolSpec]:
    return {name: NodePoolSpec(
        instance_types=list(p.instance_types), ami_type=p.resolved_ami_type, capacity_type=p.capacity_type,
        min_size=p.min_size, desired_size=p.desired_size, max_size=p.max_size,
        gpus_per_node=p.gpus_per_node, gpu_time_slicing=p.gpu_time_slicing,
        disk_size_gb=p.disk_size_gb, fast_image_pull=p.resolved_fast_image_pull,
        root_volume_throughput=p.resolved_root_volume_throughput, labels=dict(p.labels),
        taints=[t.model_dump() for t in p.taints], reservation=p.reservation, hourly_price=p.hourly_price,
        fallback=tuple(options_of(p)[1:]), mig_profile=p.mig_profile, zones=tuple(p.zones or ()))
        for name, p in settings.node_pools.items()}


def karpenter_pools(settings: StackSettings) -> set[str]:
    """The pools Karpenter provisions: every GPU pool with ``gpuProvisioner: karpenter``."""
    if settings.gpu_provisioner != "karpenter":
        return set()
    return {name for name, p in settings.node_pools.items() if p.is_gpu}


def compute_class_pools(settings: StackSettings) -> set[str]:
    """The pools provisioned through a custom ComputeClass: every GPU pool with ``gpuProvisioner: compute-class``."""
    if settings.gpu_provisioner != "compute-class":
        return set()
    return {name for name, p in settings.node_pools.items() if p.is_gpu}


def placement(settings: StackSettings, server: Server) -> tuple[dict[str, str], tuple[dict[str, str], ...]]:
    """A server's node selector and extra tolerations: its pool's label, or on a ComputeClass pool the
    class (nodes GKE auto-provisions carry none of our labels, but the class label and taint), plus the
    partition size of a GKE MIG pool (GKE labels MIG nodes with it; pods request nvidia.com/gpu)."""
    pool = server.node_pool
    if pool in compute_class_pools(settings):
        name = compute_class_name(pool)
        selector, tolerations = class_node_selector(name), (class_toleration(name),)
    else:
        selector, tolerations = {POOL_LABEL: pool}, ()
    if server.gpu_partition and settings.cloud == "gcp":
        selector = {**selector, GKE_PARTITION_LABEL: server.gpu_partition}
    return selector, tolerations


def consolidation_windows(settings: StackSettings, pools: set[str]) -> dict[str, int]:
    """Per pool, Karpenter's ``consolidateAfter``: the longest startup timeout of the servers on it. A node
    is consolidated only that long after a pod last started or left it, so never while a model loads."""
    return {pool: max([s.startup_timeout_seconds for s in settings.servers.values() if s.node_pool == pool],
                      default=600) for pool in pools}


def gpu_resource(settings: StackSettings, server: Server) -> str:
    """The resource a server's pods request: a MIG partition on EKS (device plugin mixed strategy), else
    ``nvidia.com/gpu`` (GKE advertises its partitions as nvidia.com/gpu on nodes labelled with their size)."""
    if server.gpu_partition and settings.cloud == "aws":
        return mig_resource(server.gpu_partition)
    return GPU_RESOURCE


def build_platform(settings: StackSettings) -> dict[str, object]:
    """Register every resource of the stack's cloud; return the stack outputs."""
    # The image lock is read (and a malformed one refused) before any resource exists.
    try:
        images = pinned_images(settings, read_lock())
    except ImageLockError as error:
        raise pulumi.RunError(str(error)) from None
    return (build_gcp_platform(settings, images) if settings.cloud == "gcp"
            else build_aws_platform(settings, images))


def build_aws_platform(settings: StackSettings, images: PinnedImages) -> dict[str, object]:
    """Register every resource of an AWS stack; return the stack outputs."""
    stack = pulumi.get_stack()
    tags = {"Project": PROJECT, "Stack": stack, "ManagedBy": "pulumi"}
    # An explicit provider: the region comes from validated settings, never from the environment.
    provider = aws.Provider("aws", region=settings.region, default_tags={"tags": tags})
    aws_opts = pulumi.ResourceOptions(providers={"aws": provider})

    # The identity running `pulumi up` gets an access entry: the program's own Kubernetes resources are
    # applied with it (authentication mode API, no bootstrap admin: see EksCluster).
    invoke = pulumi.InvokeOptions(provider=provider)
    caller = aws.get_caller_identity(opts=invoke)
    deployer = aws.iam.get_session_context(arn=caller.arn, opts=invoke).issuer_arn

    vpc = Vpc("network", VpcArgs(cluster_name=settings.cluster_name, zones=list(settings.zones),
                                 cidr=settings.vpc_cidr, single_nat_gateway=settings.single_nat_gateway,
                                 flow_logs=settings.vpc_flow_logs,
                                 flow_log_retention_days=settings.vpc_flow_log_retention_days,
                                 account_id=caller.account_id, sts_endpoint=settings.vpc_sts_endpoint),
              opts=aws_opts)
    specs = node_pool_specs(settings)
    by_karpenter = karpenter_pools(settings)
    cluster = EksCluster("eks", EksClusterArgs(
        cluster_name=settings.cluster_name, region=settings.region, vpc_id=vpc.vpc_id,
        private_subnet_ids=vpc.private_subnet_ids, private_subnet_ids_by_zone=vpc.private_subnet_ids_by_zone,
        node_pools={name: spec for name, spec in specs.items() if name not in by_karpenter},
        kubernetes_version=settings.kubernetes_version,
        endpoint_public_access=settings.endpoint_public_access,
        public_access_cidrs=list(settings.public_access_cidrs), api_access_cidrs=list(settings.api_access_cidrs),
        admin_principal_arns=list(settings.cluster_admin_arns), deployer_principal_arn=deployer, log_types=list(settings.cluster_log_types),
        log_retention_days=settings.cluster_log_retention_days, protect=settings.protect), opts=aws_opts)
    bucket = ModelBucket("models", ModelBucketArgs(
        prefix=settings.model_bucket_prefix,
        noncurrent_version_days=settings.model_bucket_noncurrent_days,
        force_destroy=settings.bucket_force_destroy, protect=settings.protect, account_id=caller.account_id,
        region=settings.region, publisher_principals=tuple(settings.model_publisher_principals),
        default_publisher=deployer,
        publisher_github_subjects=tuple(settings.model_publisher_github_subjects),
        object_lock_mode="" if settings.model_bucket_object_lock.mode == "off" else settings.model_bucket_object_lock.mode,
        object_lock_days=settings.model_bucket_object_lock.days), opts=aws_opts)
    reader = ModelReaderRole("model-reader", ModelReaderRoleArgs(
        oidc_provider_arn=cluster.oidc_provider_arn, oidc_issuer_url=cluster.oidc_issuer_url,
        namespace=settings.serving_namespace, service_account=SERVING_NAME, bucket_arn=bucket.bucket_arn,
        kms_key_arn=bucket.kms_key_arn, prefix=settings.model_bucket_prefix, region=settings.region,
        vpc_endpoint_id=vpc.s3_endpoint_id), opts=aws_opts)

    serving_opts = pulumi.ResourceOptions(providers={"kubernetes": cluster.provider})
    pool_dependencies = cluster.pool_dependencies
    if by_karpenter:
        karpenter = Karpenter("karpenter", KarpenterArgs(
            cluster_name=cluster.cluster_name, region=settings.region, account_id=caller.account_id,
            # The chart spreads its replicas one per node: at most the system pool's floor.
            replicas=min(2, settings.node_pools["system"].min_size), tags=tags), aws_opts=aws_opts, opts=serving_opts)
        nodes = KarpenterNodePools("karpenter-pools", KarpenterNodePoolsArgs(
            pools={name: specs[name] for name in sorted(by_karpenter)},
            instance_profile=karpenter.instance_profile_name, subnet_ids=vpc.private_subnet_ids,
            security_group_ids=[cluster.cluster_security_group_id],
            consolidate_after_seconds=consolidation_windows(settings, by_karpenter), tags=tags),
            ready=karpenter.ready, opts=serving_opts)

        # A server on a Karpenter pool waits for its NodePools (nothing else makes its nodes).
        def pool_dependencies(pool: str) -> list[pulumi.Resource]:
            return nodes.pool_resources[pool] if pool in by_karpenter else cluster.pool_dependencies(pool)

    serving = build_serving(settings, reader.service_account_annotations, bucket.models_uri, "s3",
                            {"AWS_REGION": settings.region}, serving_opts, pool_dependencies, images)
    if settings.cluster_autoscaler:
        ClusterAutoscaler("cluster-autoscaler", ClusterAutoscalerArgs(
            cluster_name=cluster.cluster_name, region=settings.region,
            kubernetes_version=settings.kubernetes_version, oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer_url=cluster.oidc_issuer_url), aws_opts=aws_opts, opts=serving_opts)

    return {
        "cloud": "aws",
        "region": settings.region,
        "clusterName": cluster.cluster_name,
        "kubeconfig": cluster.kubeconfig,
        "modelBucket": bucket.bucket_name,
        "modelsUri": bucket.models_uri,
        "modelReaderRoleArn": reader.role_arn,
        "modelPublisherRoleArn": bucket.publisher_role_arn,
        **serving,
        DEPLOYED_OUTPUT: True,
    }


def build_serving(settings: StackSettings, service_account_annotations: pulumi.Input[dict[str, str]],
                  models_uri: pulumi.Input[str], model_store: str, sync_env: dict[str, str],
                  opts: pulumi.ResourceOptions,
                  pool_dependencies: PoolDependencies = lambda pool: [],
                  images: PinnedImages | None = None) -> dict[str, object]:
    """Everything on the cluster, whatever the cloud: the serving namespace and identity, the servers,
    monitoring and GPU add-ons. ``opts`` carries the cluster's Kubernetes provider; what runs on a
    non-system pool also waits for ``pool_dependencies(pool)``; ``images`` are the final image references
    (default: the tags, no lock). Returns outputs."""
    namespace = ServingNamespace(SERVING_NAME, ServingNamespaceArgs(
        name=settings.serving_namespace, service_account=serving_service_account(settings),
        service_account_annotations=service_account_annotations,
        istio_injection=settings.traffic_router == "istio"), opts=opts)
    return {"servingNamespace": namespace.namespace,
            **build_servers(settings, namespace, models_uri, model_store, sync_env, opts, pool_dependencies,
                            images),
            **build_monitoring(settings, namespace, opts, pool_dependencies)}


def build_monitoring(settings: StackSettings, namespace: ServingNamespace, opts: pulumi.ResourceOptions,
                     pool_dependencies: PoolDependencies = lambda pool: []) -> dict[str, object]:
    """Prometheus stack (optional), serving scraping/alerts/dashboards, GPU add-ons; returns outputs."""
    outputs: dict[str, object] = {}
    ready: list[pulumi.Resource] = []
    if settings.monitoring.install:
        stack = PrometheusStack("monitoring", PrometheusStackArgs(
            namespace=settings.monitoring_namespace, grafana=settings.monitoring.grafana,
            environment=pulumi.get_stack()), opts=opts)
        ready = stack.ready
        if stack.grafana_admin_password is not None:
            outputs["grafanaAdminPassword"] = stack.grafana_admin_password
    ServingMonitoring("tfserving-monitoring", ServingMonitoringArgs(
        serving_namespace=settings.serving_namespace, monitoring_namespace=settings.monitoring_namespace,
        servers=list(settings.servers), environment=pulumi.get_stack(),
        thresholds=AlertThresholds(**settings.monitoring.alerts.model_dump(), cold_starts=cold_starts(settings)),
        monitoring_ready=ready),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[namespace])))
    gpu_pools = [p for p in settings.node_pools.values() if p.is_gpu]
    gpu_nodes = [dep for name, p in settings.node_pools.items() if p.is_gpu for dep in pool_dependencies(name)]
    aws = settings.cloud == "aws"
    exporter = settings.monitoring.gpu_metrics == "exporter"
    if gpu_pools and (aws or exporter):
        GpuAddons("gpu", GpuAddonsArgs(
            device_plugin=aws, time_slicing=[p.gpu_time_slicing for p in gpu_pools], dcgm_exporter=exporter,
            mig=aws and any(p.mig_profile for p in gpu_pools),
            monitoring_ready=ready, gke=not aws, gpu_nodes=gpu_nodes), opts=opts)
    return outputs


def build_servers(settings: StackSettings, namespace: ServingNamespace, models_uri: pulumi.Input[str],
                  model_store: str, sync_env: dict[str, str], opts: pulumi.ResourceOptions,
                  pool_dependencies: PoolDependencies = lambda pool: [],
                  images: PinnedImages | None = None) -> dict:
    """Register the serving Deployments of every server; return the endpoint outputs. The Deployments
    of a server on a non-system pool wait for that pool's nodes (their readiness await needs them)."""
    images = images or pinned_images(settings, {})
    gateway = None
    if settings.exposure.enabled:
        exposure = settings.exposure
        jwt = exposure.jwt
        gateway = ServingGateway(SERVING_NAME, ServingGatewayArgs(
            namespace=namespace.namespace, gateway_class_name=exposure.gateway_class_name,
            hostname=exposure.hostname, tls_secret_name=exposure.tls_secret_name,
            authentication=exposure.authentication, implementation=exposure.gateway_implementation,
            jwt=JwtIssuer(jwt.issuer, jwt.jwks_uri, list(jwt.audiences)) if jwt else None,
            client_ca_config_map=exposure.client_ca_config_map), opts=opts)
    endpoints: dict[str, dict] = {}
    await_rollout = serving_awaited(settings)
    cache_claim = build_model_cache(settings, namespace, images.sync, opts)
    keda = build_keda(settings, opts)
    for key, server in settings.servers.items():
        serving = TfServing(f"{SERVING_NAME}-{key}", TfServingArgs(
            server=ModelServerArgs(
                namespace=namespace.namespace, server=key, models=served_models(server),
                model_source_uri=models_uri, model_store=model_store,
                service_account_name=namespace.service_account_name,
                image_version=settings.serving_image_version, image=images.servers[key],
                sync_image=images.sync,
                replicas=server.replicas, cpu=server.cpu, memory=server.memory, gpus=server.gpus,
                gpu_resource=gpu_resource(settings, server),
                gpu_memory_fraction=settings.gpu_memory_fraction(server), batching=batching_config(server),
                node_selector=placement(settings, server)[0], tolerations=placement(settings, server)[1],
                sync_env=sync_env,
                sync_interval_seconds=server.sync_interval_seconds,
                startup_timeout_seconds=server.startup_timeout_seconds, await_rollout=await_rollout,
                models_volume_size=server.models_volume_size, sync_cpu=server.sync_cpu,
                sync_memory=server.sync_memory, model_cache_claim=cache_claim if server.model_cache else None),
            max_replicas=server.max_replicas, target_requests_per_second=server.target_requests_per_second,
            cpu_utilization=server.cpu_utilization,
            scale_down_stabilization_seconds=server.scale_down_stabilization_seconds,
            canary_weight=server.canary_weight, canary_replicas=server.canary_replicas,
            router=settings.traffic_router, router_image=images.router,
            gateway=gateway.listener if gateway else None,
            allowed_namespaces=list(settings.allowed_namespaces),
            allowed_pod_labels=dict(settings.allowed_pod_labels),
            proxy_namespaces=list(settings.exposure.proxy_namespaces),
            proxy_cidrs=list(settings.exposure.proxy_cidrs),
            monitoring_namespace=settings.monitoring_namespace,
            gke_metadata_server=settings.cloud == "gcp", scale_to_zero=server_scale_to_zero(settings, server, keda),
            image_pre_pull=image_pre_pull(settings, server, images.servers[key])),
            opts=pulumi.ResourceOptions.merge(opts, deployments_wait_for(pool_dependencies(server.node_pool))))
        endpoints[key] = {"grpc": serving.grpc_endpoint, "rest": serving.rest_endpoint,
                          "models": list(server.models)}
        if server.scale_to_zero is not None:
            endpoints[key]["scaleToZero"] = scale_to_zero_note(server)
        if serving.canary_grpc_endpoint is not None:
            endpoints[key] |= {"canaryGrpc": serving.canary_grpc_endpoint, "canaryRest": serving.canary_rest_endpoint}
    if gateway is None:
        return {"servingEndpoints": endpoints}
    # What a global stack (global/, docs/multi-region.md) puts behind one name: this region's hostname
    # under the listener and a status path proving a model serves (every server's models are routed), on
    # a server that does not scale to zero when there is one (a sleeping server would fail the check).
    servers = list(settings.servers.values())
    awake = [s for s in servers if s.scale_to_zero is None] or servers
    first_model = next(iter(awake[0].models))
    return {"servingEndpoints": endpoints, "externalUrl": gateway.url,
            "regionalEndpoint": regional_endpoint(settings.region, settings.exposure.hostname, first_model,
                                                  settings.exposure.authentication)}


def image_pre_pull(settings: StackSettings, server: Server, image: str) -> bool:
    """``imagePrePull``, or its default: on for a GPU server whose pool pulls its image whole. Not where
    GKE streams it (image streaming reads an Artifact Registry image on demand: a pre-pull would fetch
    little) or a secondary boot disk already holds the images."""
    if server.image_pre_pull is not None:
        return server.image_pre_pull
    if not server.gpus:
        return False
    pool = settings.node_pools[server.node_pool]
    if settings.cloud == "gcp":
        streamed = pool.resolved_image_streaming and in_artifact_registry(image)
        return not (pool.secondary_boot_disk_image or streamed)
    return True


def cold_starts(settings: StackSettings) -> tuple[tuple[str, int], ...]:
    """``(deployment, seconds)`` of every Deployment that scales to zero (both tracks: a canary may come)."""
    return tuple((f"{SERVING_NAME}-{key}{suffix}", s.scale_to_zero.cold_start_timeout_seconds)
                 for key, s in settings.servers.items() if s.scale_to_zero is not None for suffix in ("", "-canary"))


def build_keda(settings: StackSettings, opts: pulumi.ResourceOptions) -> Keda | None:
    """KEDA (and its HTTP add-on when a server holds requests), when any server scales to zero."""
    sleepers = [s.scale_to_zero for s in settings.servers.values() if s.scale_to_zero is not None]
    if not sleepers:
        return None
    return Keda("keda", KedaArgs(
        http_add_on=any(s.hold_requests for s in sleepers), monitoring_namespace=settings.monitoring_namespace,
        serving_namespace=settings.serving_namespace, router_pods={APP_LABEL: ROUTER_APP},
        serving_pods={APP_LABEL: "tfserving"}), opts=opts)


def server_scale_to_zero(settings: StackSettings, server: Server, keda: Keda | None) -> ServerScaleToZero | None:
    stz = server.scale_to_zero
    if stz is None or keda is None:
        return None
    window = stz.schedule
    return ServerScaleToZero(
        schedule=OfficeHours(start=window.start, end=window.end, timezone=window.timezone, replicas=window.replicas)
        if window else None,
        idle_after_seconds=stz.idle_after_seconds, hold_requests=stz.hold_requests,
        cold_start_timeout_seconds=stz.cold_start_timeout_seconds,
        # kube-prometheus-stack's Prometheus Service (fullnameOverride, components/monitoring/prometheus_stack.py);
        # none without the platform's monitoring (then held traffic alone keeps the server awake).
        prometheus_url=f"http://{PROMETHEUS_FULLNAME}-prometheus.{settings.monitoring_namespace}.svc:9090"
        if settings.monitoring.install else None,
        keda_ready=tuple(keda.ready))


def build_model_cache(settings: StackSettings, namespace: ServingNamespace, image: str,
                      opts: pulumi.ResourceOptions) -> pulumi.Output[str] | None:
    """The node-local model cache of the servers with ``modelCache`` (its claim), or None without any."""
    cached = {key: s for key, s in settings.servers.items() if s.model_cache}
    if not cached:
        return None
    classes = compute_class_pools(settings)
    return ModelCache("model-cache", ModelCacheArgs(
        namespace=namespace.namespace, servers=sorted(cached),
        node_pools=sorted({s.node_pool for s in cached.values()}), image=image,
        compute_classes=sorted({compute_class_name(s.node_pool) for s in cached.values() if s.node_pool in classes})),
        opts=opts).claim_name


def scale_to_zero_note(server: Server) -> str:
    """What a client of a server that scales to zero sees, for the stack outputs (the plan prints them)."""
    stz = server.scale_to_zero
    if stz.hold_requests:
        return (f"held: a REST or gRPC call to the grpc/rest endpoints while no pod runs waits up to "
                f"{stz.cold_start_timeout_seconds} s for one (KEDA interceptor), then 504; the canaryGrpc/"
                "canaryRest endpoints are not held")
    return "not held: outside the schedule, calls fail (no endpoint) until the server's schedule wakes it"


def deployments_wait_for(resources: list[pulumi.Resource]) -> pulumi.ResourceOptions:
    """Options making every Deployment registered under a component depend on ``resources`` (a
    component's ``depends_on`` is not passed on to its children; a transformation is)."""
    if not resources:
        return pulumi.ResourceOptions()

    def add(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
        if args.type_ != "kubernetes:apps/v1:Deployment":
            return None
        return pulumi.ResourceTransformationResult(
            args.props, pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(depends_on=resources)))
    return pulumi.ResourceOptions(transformations=[add])


def gke_node_pool_specs(settings: StackSettings) -> dict[str, GkeNodePoolSpec]:
    return {name: GkeNodePoolSpec(
        machine_type=p.instance_types[0], spot=p.capacity_type == "SPOT", min_size=p.min_size,
        desired_size=p.desired_size, max_size=p.max_size, gpus_per_node=p.gpus_per_node,
        accelerator_type=accelerator_of(p), gpu_driver_version=p.gpu_driver_version or "LATEST",
        gpu_time_slicing=p.gpu_time_slicing, disk_size_gb=p.disk_size_gb,
        image_streaming=p.resolved_image_streaming, secondary_boot_disk_image=p.secondary_boot_disk_image,
        labels=dict(p.labels), taints=[t.model_dump() for t in p.taints],
        flex_start=p.capacity_type == "FLEX_START", reservation=p.reservation, hourly_price=p.hourly_price,
        fallback=tuple(options_of(p)[1:]), compute_class=name in compute_class_pools(settings),
        mig_profile=p.mig_profile, gpu_sharing_strategy=p.gpu_sharing_strategy,
        fallback_accelerators={o.name: BUILT_IN_GPUS[o.instance_types[0]] for o in options_of(p)[1:]
                               if o.instance_types[0] in BUILT_IN_GPUS})
        for name, p in settings.node_pools.items()}


def build_gcp_platform(settings: StackSettings, images: PinnedImages) -> dict[str, object]:
    """Register every resource of a GCP stack; return the same outputs as AWS (plus the GCP ones)."""
    labels = {"project": PROJECT, "stack": pulumi.get_stack().lower(), "managed-by": "pulumi"}
    # An explicit provider: project and region come from validated settings, never the environment.
    provider = gcp.Provider("gcp", project=settings.gcp_project, region=settings.region, default_labels=labels)
    gcp_opts = pulumi.ResourceOptions(providers={"gcp": provider})

    network = GkeNetwork("network", GkeNetworkArgs(
        project=settings.gcp_project, region=settings.region, cidr=settings.vpc_cidr,
        pod_cidr=settings.pod_cidr, service_cidr=settings.service_cidr), opts=gcp_opts)
    specs = gke_node_pool_specs(settings)
    cluster = GkeCluster("gke", GkeClusterArgs(
        cluster_name=settings.cluster_name, project=settings.gcp_project, region=settings.region,
        zones=list(settings.zones), network_id=network.network_id, subnetwork_id=network.subnetwork_id,
        node_pools=specs, regional=settings.regional_cluster,
        kubernetes_version=settings.kubernetes_version, release_channel=settings.release_channel,
        endpoint_public_access=settings.endpoint_public_access,
        authorized_cidrs=[*(settings.public_access_cidrs if settings.endpoint_public_access else []),
                          *settings.api_access_cidrs], master_cidr=settings.master_cidr,
        auto_provisioning_cpu=settings.auto_provisioning_limits.cpu,
        auto_provisioning_memory_gb=settings.auto_provisioning_limits.memory_gb,
        protect=settings.protect), opts=gcp_opts)
    bucket = GcsModelBucket("models", GcsModelBucketArgs(
        project=settings.gcp_project, location=settings.region,
        noncurrent_version_days=settings.model_bucket_noncurrent_days, kms_key=settings.model_bucket_kms_key,
        force_destroy=settings.bucket_force_destroy, protect=settings.protect),
        prefix=settings.model_bucket_prefix, opts=gcp_opts)
    reader = GcsModelReader("model-reader", GcsModelReaderArgs(
        project=settings.gcp_project, bucket_name=bucket.bucket_name, workload_pool=cluster.workload_pool,
        namespace=settings.serving_namespace, service_account=serving_service_account(settings),
        prefix=settings.model_bucket_prefix, cluster_name=settings.cluster_name), opts=gcp_opts)
    publisher = GcsModelPublisher("model-publisher", GcsModelPublisherArgs(
        project=settings.gcp_project, bucket_name=bucket.bucket_name, prefix=settings.model_bucket_prefix,
        members=tuple(settings.model_publisher_members), cluster_name=settings.cluster_name), opts=gcp_opts)

    classes = {pool: GpuComputeClass(f"compute-class-{pool}", GpuComputeClassArgs(
        pool=pool, spec=specs[pool], node_pools=tuple(cluster.pool_dependencies(pool))),
        opts=pulumi.ResourceOptions(provider=cluster.provider)) for pool in sorted(compute_class_pools(settings))}

    def pools_and_classes(pool: str) -> list[pulumi.Resource]:
        return classes[pool].dependencies if pool in classes else cluster.pool_dependencies(pool)

    pool_dependencies = pools_and_classes
    if settings.docker_hub_mirror:
        # The server images already name it (stacks/images.py as_pulled).
        mirror = DockerHubMirror("docker-hub", DockerHubMirrorArgs(
            project=settings.gcp_project, region=settings.region,
            repository_id=repository_id(settings.cluster_name)), opts=gcp_opts)

        # The first pull through the repository needs it to exist: the serving pods wait for it too.
        def pool_dependencies(pool: str) -> list[pulumi.Resource]:
            return [*pools_and_classes(pool), mirror.repository]

    # gcloud finds credentials through the GKE metadata server (Workload Identity); nothing to pass.
    serving = build_serving(settings, reader.service_account_annotations, bucket.models_uri, "gs", {},
                            pulumi.ResourceOptions(providers={"kubernetes": cluster.provider}),
                            pool_dependencies, images)
    return {
        "cloud": "gcp",
        "region": settings.region,
        "clusterName": cluster.cluster_name,
        "kubeconfig": cluster.kubeconfig,
        "modelBucket": bucket.bucket_name,
        "modelsUri": bucket.models_uri,
        "modelReaderServiceAccount": reader.email,
        "modelPublisherServiceAccount": publisher.email,
        **serving,
        DEPLOYED_OUTPUT: True,
    }
