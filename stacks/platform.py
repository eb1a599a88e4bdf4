"""Compose the platform of one stack from its settings (``__main__.py`` stays short)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.aws.eks_cluster import EksCluster, EksClusterArgs
from components.aws.node_group import POOL_LABEL, NodePoolSpec
from components.aws.model_bucket import ModelBucket, ModelBucketArgs, ModelReaderRole, ModelReaderRoleArgs
from components.aws.network import Vpc, VpcArgs
from components.serving.model_server import ModelServerArgs
from components.serving.tfserving import TfServing, TfServingArgs
from components.serving.tfserving_config import ServedModel
from stacks.settings import PROJECT, StackSettings

SERVING_NAME = "tfserving"


def served_models(settings: StackSettings) -> list[ServedModel]:
    return [ServedModel(name=name, version_policy=m.version_policy, latest_versions=m.latest_versions,
                        versions=tuple(m.versions), labels=dict(m.labels))
            for name, m in settings.models.items()]


def node_pool_specs(settings: StackSettings) -> dict[str, NodePoolSpec]:
    return {name: NodePoolSpec(
        instance_types=list(p.instance_types), ami_type=p.resolved_ami_type, capacity_type=p.capacity_type,
        min_size=p.min_size, desired_size=p.desired_size, max_size=p.max_size,
        gpus_per_node=p.gpus_per_node, disk_size_gb=p.disk_size_gb, labels=dict(p.labels),
        taints=[t.model_dump() for t in p.taints]) for name, p in settings.node_pools.items()}


def build_aws_platform(settings: StackSettings) -> dict[str, object]:
    """Register every resource of an AWS stack; return the stack outputs."""
    stack = pulumi.get_stack()
    tags = {"Project": PROJECT, "Stack": stack, "ManagedBy": "pulumi"}
    # An explicit provider: the region comes from validated settings, never from the environment.
    provider = aws.Provider("aws", region=settings.region, default_tags={"tags": tags})
    aws_opts = pulumi.ResourceOptions(providers={"aws": provider})

    vpc = Vpc("network", VpcArgs(cluster_name=settings.cluster_name, zones=list(settings.zones),
                                 cidr=settings.vpc_cidr, single_nat_gateway=settings.single_nat_gateway),
              opts=aws_opts)
    cluster = EksCluster("eks", EksClusterArgs(
        cluster_name=settings.cluster_name, region=settings.region, vpc_id=vpc.vpc_id,
        private_subnet_ids=vpc.private_subnet_ids, node_pools=node_pool_specs(settings),
        kubernetes_version=settings.kubernetes_version,
        endpoint_public_access=settings.endpoint_public_access,
        public_access_cidrs=list(settings.public_access_cidrs),
        admin_principal_arns=list(settings.cluster_admin_arns), log_types=list(settings.cluster_log_types),
        log_retention_days=settings.cluster_log_retention_days, protect=settings.protect), opts=aws_opts)
    bucket = ModelBucket("models", ModelBucketArgs(
        prefix=settings.model_bucket_prefix,
        noncurrent_version_days=settings.model_bucket_noncurrent_days,
        force_destroy=settings.bucket_force_destroy, protect=settings.protect), opts=aws_opts)
    reader = ModelReaderRole("model-reader", ModelReaderRoleArgs(
        oidc_provider_arn=cluster.oidc_provider_arn, oidc_issuer_url=cluster.oidc_issuer_url,
        namespace=settings.serving_namespace, service_account=SERVING_NAME, bucket_arn=bucket.bucket_arn,
        kms_key_arn=bucket.kms_key_arn, prefix=settings.model_bucket_prefix), opts=aws_opts)

    serving = TfServing(SERVING_NAME, TfServingArgs(
        server=ModelServerArgs(
            namespace=settings.serving_namespace, models=served_models(settings),
            model_source_uri=bucket.models_uri, model_store="s3",
            service_account_annotations=reader.service_account_annotations,
            image_version=settings.serving_image_version, replicas=settings.serving_replicas,
            cpu=settings.serving_cpu, memory=settings.serving_memory, gpus=settings.serving_gpus,
            node_selector={POOL_LABEL: settings.serving_node_pool},
            sync_env={"AWS_REGION": settings.region}),
        max_replicas=settings.serving_max_replicas, allowed_namespaces=list(settings.allowed_namespaces),
        monitoring_namespace=settings.monitoring_namespace),
        opts=pulumi.ResourceOptions(providers={"kubernetes": cluster.provider}))

    return {
        "cloud": "aws",
        "region": settings.region,
        "clusterName": cluster.cluster_name,
        "kubeconfig": cluster.kubeconfig,
        "modelBucket": bucket.bucket_name,
        "modelsUri": bucket.models_uri,
        "modelReaderRoleArn": reader.role_arn,
        "servingNamespace": serving.namespace,
        "servingGrpcEndpoint": serving.grpc_endpoint,
        "servingRestEndpoint": serving.rest_endpoint,
    }
