"""IAM policy documents as plain JSON (no ``get_policy_document`` invokes: they need a live provider)."""

from __future__ import annotations

import json

import pulumi


def partition_of(region: str) -> str:
    """The ARN partition of a region (``aws``, ``aws-cn`` or ``aws-us-gov``)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def service_trust_policy(service: str) -> str:
    """Lets an AWS service (``eks.amazonaws.com``, ``ec2.amazonaws.com``) assume the role."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service},
                       "Action": ["sts:AssumeRole", "sts:TagSession"]}],
    })


def irsa_trust_policy(oidc_provider_arn: pulumi.Input[str], oidc_issuer_url: pulumi.Input[str],
                      namespace: str, service_account: str) -> pulumi.Output[str]:
    """Trust exactly one Kubernetes service account through the cluster's OIDC provider.

    Both ``sub`` and ``aud`` are pinned, as AWS recommends:
    https://docs.aws.amazon.com/eks/latest/userguide/associate-service-account-role.html
    """

    def render(args: list[str]) -> str:
        arn, url = args
        issuer = url.removeprefix("https://")
        return json.dumps({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {
                    f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                    f"{issuer}:aud": "sts.amazonaws.com",
                }},
            }],
        })

    return pulumi.Output.all(oidc_provider_arn, oidc_issuer_url).apply(render)
