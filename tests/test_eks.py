"""The EKS cluster, network and node groups as the program registers them (mock engine)."""

from __future__ import annotations

import json

from stacks.mock_engine import Recording

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
CA_PREFIX = "k8s.io/cluster-autoscaler/node-template/"


def asg_tags(rec: Recording, pool: str) -> dict[str, str]:
    tags = {}
    for r in rec.of_type("aws:autoscaling/tag:Tag"):
        if r.name.startswith(f"eks-{pool}-ca-"):
            tags[r.inputs["tag"]["key"]] = r.inputs["tag"]["value"]
    return tags


def test_gpu_node_group_uses_nvidia_ami_taint_and_labels(dev: Recording):
    gpu = dev.one(NODE_GROUP, "eks-gpu").inputs
    assert gpu["amiType"] == "AL2023_x86_64_NVIDIA"
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"} in gpu["taints"]
    assert gpu["labels"]["tfplatform.io/node-pool"] == "gpu"
    assert gpu["capacityType"] == "SPOT"
    assert gpu["instanceTypes"] == ["g5.xlarge", "g6.xlarge"]
    assert gpu["scalingConfig"]["minSize"] == 0


def test_system_node_group_is_cpu_and_untainted(dev: Recording):
    system = dev.one(NODE_GROUP, "eks-system").inputs
    assert system["amiType"] == "AL2023_x86_64_STANDARD"
    assert system["taints"] == []


def test_gpu_group_can_scale_from_zero(dev: Recording):
    tags = asg_tags(dev, "gpu")
    assert tags[f"{CA_PREFIX}resources/nvidia.com/gpu"] == "1"
    assert tags[f"{CA_PREFIX}taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert tags[f"{CA_PREFIX}label/tfplatform.io/node-pool"] == "gpu"
    # Tags go on the node group's own Auto Scaling group, never propagated to instances.
    tag_resources = [r for r in dev.of_type("aws:autoscaling/tag:Tag") if r.name.startswith("eks-gpu-ca-")]
    assert len({r.inputs["autoscalingGroupName"] for r in tag_resources}) == 1
    assert all(r.inputs["tag"]["propagateAtLaunch"] is False for r in tag_resources)
    assert not any("resources/" in k for k in asg_tags(dev, "system"))


def test_node_groups_keep_desired_size_for_the_autoscaler_and_block_imds(dev: Recording):
    for group in dev.of_type(NODE_GROUP):
        assert group.ignore_changes == ["scalingConfig.desiredSize"], group.name
    for lt in dev.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        meta = lt.inputs["metadataOptions"]
        assert meta["httpTokens"] == "required" and meta["httpPutResponseHopLimit"] == 1
        assert lt.inputs["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"


def test_cluster_encrypts_secrets_logs_and_uses_access_entries(dev: Recording):
    cluster = dev.one("aws:eks/cluster:Cluster", "eks-cluster").inputs
    assert cluster["name"] == "tfserving-dev"
    assert cluster["encryptionConfig"]["resources"] == ["secrets"]
    key_arn = cluster["encryptionConfig"]["provider"]["keyArn"]
    key = dev.one("aws:kms/key:Key", "eks-secrets-key")
    assert key_arn.startswith("arn:aws:kms:") and key.inputs["enableKeyRotation"] is True
    assert cluster["accessConfig"]["authenticationMode"] == "API"
    assert set(cluster["enabledClusterLogTypes"]) == {"api", "audit", "authenticator"}
    assert cluster["vpcConfig"]["endpointPrivateAccess"] is True


def test_prod_api_endpoint_admits_only_the_runners_and_cluster_protected(prod: Recording, dev: Recording):
    cluster = prod.one("aws:eks/cluster:Cluster", "eks-cluster")
    vpc = cluster.inputs["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True and vpc["endpointPublicAccess"] is True
    assert vpc["publicAccessCidrs"] == ["203.0.113.0/24"]
    assert cluster.protect and cluster.inputs["deletionProtection"] is True
    assert prod.one("aws:kms/key:Key", "eks-secrets-key").protect
    assert not dev.one("aws:eks/cluster:Cluster", "eks-cluster").protect


def test_vpc_cni_enforces_network_policy_and_addons_present(dev: Recording):
    addons = {r.inputs["addonName"]: r.inputs for r in dev.of_type("aws:eks/addon:Addon")}
    assert set(addons) == {"vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent", "metrics-server"}
    assert json.loads(addons["vpc-cni"]["configurationValues"]) == {"enableNetworkPolicy": "true"}


def test_node_groups_wait_for_cni_and_coredns_waits_for_nodes(dev: Recording):
    cni = dev.one("aws:eks/addon:Addon", "eks-vpc-cni").urn
    gpu_component = dev.one("tfplatform:aws:ManagedNodeGroup", "eks-gpu")
    assert cni in gpu_component.dependencies
    coredns = dev.one("aws:eks/addon:Addon", "eks-coredns")
    # Depending on a component means depending on its children: the node groups themselves.
    assert dev.one(NODE_GROUP, "eks-gpu").urn in coredns.dependencies
    assert dev.one(NODE_GROUP, "eks-system").urn in coredns.dependencies


def test_oidc_provider_trusts_sts(dev: Recording):
    oidc = dev.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider", "eks-oidc").inputs
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"]
    assert oidc["url"].startswith("https://oidc.eks.")


def test_subnets_per_zone_and_nat_per_environment(dev: Recording, prod: Recording):
    def zones(rec: Recording, kind: str) -> set[str]:
        return {r.inputs["availabilityZone"] for r in rec.of_type("aws:ec2/subnet:Subnet") if f"-{kind}-" in r.name}

    assert zones(dev, "private") == zones(dev, "public") == {"us-east-1a", "us-east-1b"}
    assert zones(prod, "private") == {"us-east-1a", "us-east-1b", "us-east-1c"}
    assert len(dev.of_type("aws:ec2/natGateway:NatGateway")) == 1
    assert len(prod.of_type("aws:ec2/natGateway:NatGateway")) == 3
    for subnet in dev.of_type("aws:ec2/subnet:Subnet"):
        role = "kubernetes.io/role/internal-elb" if "-private-" in subnet.name else "kubernetes.io/role/elb"
        assert subnet.inputs["tags"][role] == "1"


def test_kubeconfig_is_a_secret_output_using_get_token(dev: Recording):
    assert dev.outputs["kubeconfig"] == "[secret]"
    provider = dev.one("pulumi:providers:kubernetes", "eks-k8s")
    assert provider.inputs["kubeconfig"] == "[secret]"


DEPLOYER = "arn:aws:iam::123456789012:role/tfserving-deploy"  # stacks.mock_engine.DEPLOY_ROLE


def test_admin_access_entries_are_keyed_by_principal_and_include_the_deployer(plan_with):
    admin = "arn:aws:iam::123456789012:role/platform-admins"
    rec = plan_with(clusterAdminArns=[admin])
    entries = rec.of_type("aws:eks/accessEntry:AccessEntry")
    assert sorted(e.inputs["principalArn"] for e in entries) == [admin, DEPLOYER]
    assoc = rec.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")[0].inputs
    assert assoc["policyArn"].endswith(":cluster-access-policy/AmazonEKSClusterAdminPolicy")
    cluster = rec.one("aws:eks/cluster:Cluster", "eks-cluster").inputs
    assert cluster["accessConfig"]["bootstrapClusterCreatorAdminPermissions"] is False


def test_bootstrap_admin_is_false_whatever_the_admins(dev: Recording, plan_with):
    # ForceNew in terraform-provider-aws: deriving it from clusterAdminArns replaced the cluster
    # when the first admin was added (hashicorp/terraform-provider-aws#35824).
    rec = plan_with(clusterAdminArns=["arn:aws:iam::123456789012:role/platform-admins"])
    for r in (dev, rec):
        assert r.one("aws:eks/cluster:Cluster", "eks-cluster").inputs["accessConfig"][
            "bootstrapClusterCreatorAdminPermissions"] is False


def test_the_deployer_is_listed_once_and_the_provider_waits_for_its_access(plan_with, dev: Recording):
    rec = plan_with(clusterAdminArns=[DEPLOYER])
    assert [e.inputs["principalArn"] for e in rec.of_type("aws:eks/accessEntry:AccessEntry")] == [DEPLOYER]
    provider = dev.one("pulumi:providers:kubernetes", "eks-k8s")
    assoc = dev.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert [a.inputs["principalArn"] for a in assoc] == [DEPLOYER]
    assert assoc[0].urn in provider.dependencies


def test_api_access_cidrs_open_443_on_the_cluster_security_group(plan_with):
    rec = plan_with("prod", endpointPublicAccess=False, publicAccessCidrs=["0.0.0.0/0"],
                    apiAccessCidrs=["10.20.0.0/16"])
    # The other ingress rule (prod) admits the VPC to the STS interface endpoint.
    (rule,) = [r for r in rec.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
               if r.inputs.get("cidrIpv4") == "10.20.0.0/16"]
    assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["cidrIpv4"]) == (443, 443, "10.20.0.0/16")
    sg = rec.one("aws:eks/cluster:Cluster", "eks-cluster")
    assert rule.inputs["securityGroupId"].startswith("sg-")
    assert rule.urn in rec.one("pulumi:providers:kubernetes", "eks-k8s").dependencies
    assert sg.inputs["vpcConfig"]["endpointPublicAccess"] is False


def test_time_sliced_gpu_pool_advertises_slices_to_the_autoscaler(plan_with):
    rec = plan_with(nodePools={"system": {"instanceTypes": ["m6i.large"], "minSize": 2, "desiredSize": 2},
                               "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1, "gpuTimeSlicing": 4,
                                       "minSize": 0, "desiredSize": 0, "maxSize": 2}})
    tags = asg_tags(rec, "gpu")
    assert tags[f"{CA_PREFIX}resources/nvidia.com/gpu"] == "4"
    labels = rec.one(NODE_GROUP, "eks-gpu").inputs["labels"]
    assert labels["nvidia.com/device-plugin.config"] == "time-slicing-4"
    assert "nvidia.com/device-plugin.config" not in rec.one(NODE_GROUP, "eks-system").inputs["labels"]


def test_stack_pools_without_reservations_keep_plain_launch_templates(dev: Recording):
    # RESERVED / CAPACITY_BLOCK add a reservation target and a market type
    # (tests/test_node_group_capacity.py); the dev stack's on-demand and spot pools must not get either,
    # nor a type pinned on the template.
    reserved_only = {"capacityReservationSpecification", "instanceMarketOptions", "instanceType"}
    for lt in dev.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        assert not reserved_only & set(lt.inputs)
    assert {g.inputs["capacityType"] for g in dev.of_type(NODE_GROUP)} <= {"ON_DEMAND", "SPOT"}
