"""cluster-autoscaler on EKS with its own least-privilege IRSA role."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.aws.iam import irsa_trust_policy, partition_of
from components.helm_charts import CLUSTER_AUTOSCALER, chart

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "cluster-autoscaler"


def autoscaler_policy(cluster_name: str, region: str) -> str:
    """Read anything it needs to simulate; change only the Auto Scaling groups of this cluster.

    EKS tags a managed node group's Auto Scaling group ``k8s.io/cluster-autoscaler/<cluster>=owned``:
    https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/cloudprovider/aws/README.md#iam-policy
    """
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Discover", "Effect": "Allow", "Resource": "*", "Action": [
            "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
            "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
            "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements"]},
        # DescribeNodegroup supports resource-level permissions: this cluster's node groups only.
        {"Sid": "DescribeOwnNodegroups", "Effect": "Allow", "Action": "eks:DescribeNodegroup",
         "Resource": f"arn:{partition_of(region)}:eks:{region}:*:nodegroup/{cluster_name}/*/*"},
        {"Sid": "ScaleOwnGroups", "Effect": "Allow", "Resource": "*",
         "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
         "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}}},
    ]})


@dataclass(frozen=True)
class ClusterAutoscalerArgs:
    """Inputs of :class:`ClusterAutoscaler`."""

    cluster_name: pulumi.Input[str]
    region: str
    kubernetes_version: str
    """The autoscaler's minor version must match the cluster's (one image per Kubernetes minor)."""
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]


class ClusterAutoscaler(pulumi.ComponentResource):
    """Creates: an IRSA ``Role`` trusting only ``kube-system/cluster-autoscaler``, its inline policy
    (describe everything, scale only this cluster's groups), and the cluster-autoscaler chart
    auto-discovering the node groups. GPU groups scale from zero through the node-template tags
    their Auto Scaling groups carry (:mod:`components.aws.node_group`).
    """

    role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterAutoscalerArgs, aws_opts: pulumi.ResourceOptions,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:aws:ClusterAutoscaler", name, None, opts)
        cloud = pulumi.ResourceOptions.merge(aws_opts, pulumi.ResourceOptions(parent=self))
        role = aws.iam.Role(f"{name}-role", assume_role_policy=irsa_trust_policy(
            args.oidc_provider_arn, args.oidc_issuer_url, NAMESPACE, SERVICE_ACCOUNT), opts=cloud)
        aws.iam.RolePolicy(f"{name}-scale", role=role.id,
                           policy=pulumi.Output.from_input(args.cluster_name).apply(
                               lambda cluster: autoscaler_policy(cluster, args.region)), opts=cloud)
        chart(f"{name}-chart", CLUSTER_AUTOSCALER, NAMESPACE, {
            "autoDiscovery": {"clusterName": args.cluster_name},
            "awsRegion": args.region,
            "image": {"tag": f"v{args.kubernetes_version}.0"},
            "rbac": {"serviceAccount": {"name": SERVICE_ACCOUNT,
                                        "annotations": {"eks.amazonaws.com/role-arn": role.arn}}},
        }, opts=pulumi.ResourceOptions(parent=self, depends_on=[role]))
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn})
