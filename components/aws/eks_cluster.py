"""EKS control plane with its IAM, KMS, logging, OIDC, access entries, add-ons and node groups."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws.iam import irsa_trust_policy, partition_of, service_trust_policy
from components.aws.node_group import ManagedNodeGroup, NodeGroupArgs, NodePoolSpec, name_slug


@dataclass(frozen=True)
class EksClusterArgs:
    """Inputs of :class:`EksCluster`."""

    cluster_name: str
    """EKS cluster name."""
    region: str
    """AWS region (used in the kubeconfig and ARNs)."""
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[list[str]]
    """Subnets for the control-plane ENIs and all nodes."""
    node_pools: dict[str, NodePoolSpec]
    """Managed node groups keyed by stable pool name; ``system`` hosts add-ons."""
    private_subnet_ids_by_zone: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    """The same subnets by zone, for node pools confined to some zones (``NodePoolSpec.zones``)."""
    kubernetes_version: str = "1.33"
    endpoint_public_access: bool = True
    """The private endpoint is always on; prod turns the public one off."""
    public_access_cidrs: list[str] = field(default_factory=lambda: ["0.0.0.0/0"])
    api_access_cidrs: list[str] = field(default_factory=list)
    """Networks (a deploy runner's VPC, a VPN) allowed to the API on 443 through the cluster security
    group: EKS's own group admits only the nodes and the control plane, so a private-only endpoint is
    unreachable for ``pulumi up`` without them."""
    admin_principal_arns: list[str] = field(default_factory=list)
    """IAM principals given cluster admin through access entries (people, other pipelines)."""
    deployer_principal_arn: str | None = None
    """The IAM role running ``pulumi up`` (an access entry too, so this program's own Kubernetes
    resources can be applied); listed once even when it is also in ``admin_principal_arns``."""
    log_types: list[str] = field(default_factory=lambda: ["api", "audit", "authenticator"])
    log_retention_days: int = 30
    protect: bool = False
    """Deletion protection on the cluster and Pulumi ``protect`` on it and its KMS key."""
    tags: dict[str, str] = field(default_factory=dict)


# Add-ons needed before nodes can join (networking, identity) vs after (coredns needs nodes).
# https://docs.aws.amazon.com/eks/latest/userguide/workloads-add-ons-available-eks.html
_PRE_NODE_ADDONS = {
    # enableNetworkPolicy makes the VPC CNI enforce NetworkPolicy objects (off by default).
    "vpc-cni": {"enableNetworkPolicy": "true"},
    "kube-proxy": None,
    "eks-pod-identity-agent": None,
}
# metrics-server serves metrics.k8s.io: the HPAs' CPU metric comes from it, and the HPA controller skips
# scale-down while any of its metrics is missing. The EKS add-on (a community add-on since 2025) rather
# than prometheus-adapter resource rules: it does not depend on the optional monitoring stack (absent
# with ``monitoring.install: false``) nor on Prometheus scrape health, and EKS versions it per cluster.
_POST_NODE_ADDONS = {"coredns": None, "metrics-server": None}
SYSTEM_POOL = "system"
"""The pool hosting add-ons; the Kubernetes provider waits for it alone."""

# No AmazonEKS_CNI_Policy: it lets its holder create, attach and delete network interfaces and assign
# IPs account-wide (ec2:*NetworkInterface* on "*"), and a node role's rights reach any pod that can
# reach IMDS (hostNetwork pods bypass the hop limit). aws-node gets it through its own IRSA role
# instead, as AWS recommends: https://docs.aws.amazon.com/eks/latest/userguide/cni-iam-role.html
_NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly")
CNI_POLICY = "AmazonEKS_CNI_Policy"
CNI_SERVICE_ACCOUNT = ("kube-system", "aws-node")
"""The VPC CNI's service account (namespace, name): the only subject its role trusts."""


def render_kubeconfig(cluster_name: str, region: str, endpoint: str, ca_data: str) -> str:
    """A kubeconfig that authenticates with ``aws eks get-token`` (no long-lived secret inside)."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": cluster_name,
        "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "users": [{"name": cluster_name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region, "--output", "json"],
        }}}],
    })


def pool_subnets(pool: str, spec: NodePoolSpec, args: EksClusterArgs) -> pulumi.Input[list[str]]:
    """A node group's subnets: every private subnet, or those of the pool's ``zones``."""
    if not spec.zones:
        return args.private_subnet_ids
    missing = [zone for zone in spec.zones if zone not in args.private_subnet_ids_by_zone]
    if missing:
        raise ValueError(f"node pool {pool!r}: no private subnet in zone(s) {missing} "
                         f"(the cluster's: {sorted(args.private_subnet_ids_by_zone)})")
    return [args.private_subnet_ids_by_zone[zone] for zone in spec.zones]


class EksCluster(pulumi.ComponentResource):
    """An EKS cluster ready for GPU workloads.

    Creates: cluster and node IAM roles with their policy attachments, a KMS key (and alias)
    encrypting Kubernetes secrets, the control-plane ``LogGroup``, the ``aws.eks.Cluster`` (API
    authentication mode, private endpoint), an IAM OIDC provider for IRSA, access entries for
    admins, the vpc-cni add-on's IRSA role (``AmazonEKS_CNI_Policy``, trusting only
    ``kube-system/aws-node``; the node role does not carry it), the add-ons vpc-cni
    (network policy on), kube-proxy, eks-pod-identity-agent,
    coredns and metrics-server, one :class:`ManagedNodeGroup` per pool, and a ``kubernetes.Provider``.
    """

    cluster_name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    cluster_security_group_id: pulumi.Output[str]
    """The security group EKS creates for the control plane and managed nodes (Karpenter's nodes join it)."""
    oidc_provider_arn: pulumi.Output[str]
    cni_role_arn: pulumi.Output[str]
    """The IRSA role of the vpc-cni add-on (aws-node)."""
    oidc_issuer_url: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    """Secret output; uses ``aws eks get-token``."""
    provider: k8s.Provider
    """Kubernetes provider for workloads on this cluster."""
    node_groups: dict[str, ManagedNodeGroup]

    def pool_dependencies(self, pool: str) -> list[pulumi.Resource]:
        """What a workload on ``pool`` must wait for beyond the provider: nothing for the system pool
        (the provider waits for it), that pool's node group otherwise (GPU pools)."""
        return [] if pool == SYSTEM_POOL else [self.node_groups[pool].node_group]

    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:aws:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        protected = pulumi.ResourceOptions(parent=self, protect=args.protect)
        partition = partition_of(args.region)
        managed_policy = f"arn:{partition}:iam::aws:policy"
        tags = args.tags

        cluster_role = aws.iam.Role(f"{name}-cluster-role", assume_role_policy=service_trust_policy(
            "eks.amazonaws.com"), tags=tags, opts=child)
        aws.iam.RolePolicyAttachment(f"{name}-cluster-policy", role=cluster_role.name,
                                     policy_arn=f"{managed_policy}/AmazonEKSClusterPolicy", opts=child)

        secrets_key = aws.kms.Key(f"{name}-secrets-key", description=f"EKS secrets of {args.cluster_name}",
                                  enable_key_rotation=True, deletion_window_in_days=30 if args.protect else 7,
                                  tags=tags, opts=protected)
        aws.kms.Alias(f"{name}-secrets-key", name=f"alias/{args.cluster_name}-eks-secrets",
                      target_key_id=secrets_key.key_id, opts=child)

        # Created first so EKS does not create it with unlimited retention.
        log_group = aws.cloudwatch.LogGroup(f"{name}-logs", name=f"/aws/eks/{args.cluster_name}/cluster",
                                            retention_in_days=args.log_retention_days, tags=tags, opts=child)

        cluster = aws.eks.Cluster(
            f"{name}-cluster",
            name=args.cluster_name,
            version=args.kubernetes_version,
            role_arn=cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=args.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=args.endpoint_public_access,
                public_access_cidrs=args.public_access_cidrs if args.endpoint_public_access else None),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=secrets_key.arn),
                resources=["secrets"]),
            enabled_cluster_log_types=args.log_types,
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                # Always false, never derived from config: the field is ForceNew
                # (terraform-provider-aws internal/service/eks/cluster.go, #35824), so flipping it
                # would replace the cluster. The deployer gets an explicit access entry instead,
                # as terraform-aws-eks does (enable_cluster_creator_admin_permissions).
                bootstrap_cluster_creator_admin_permissions=False),
            # Add-ons are managed below as aws.eks.Addon, with versions EKS picks for the cluster.
            bootstrap_self_managed_addons=False,
            deletion_protection=args.protect,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, depends_on=[log_group]))

        self.cluster_name = cluster.name
        self.endpoint = cluster.endpoint
        self.cluster_security_group_id = cluster.vpc_config.cluster_security_group_id
        api_rules = [aws.vpc.SecurityGroupIngressRule(
            f"{name}-api-{name_slug(cidr)}", security_group_id=cluster.vpc_config.cluster_security_group_id,
            cidr_ipv4=cidr, from_port=443, to_port=443, ip_protocol="tcp",
            description=f"Kubernetes API from {cidr}", tags=tags, opts=child) for cidr in args.api_access_cidrs]
        self.oidc_issuer_url = cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer)
        oidc = aws.iam.OpenIdConnectProvider(f"{name}-oidc", url=self.oidc_issuer_url,
                                             client_id_lists=["sts.amazonaws.com"], tags=tags, opts=child)
        self.oidc_provider_arn = oidc.arn

        admins = sorted({*args.admin_principal_arns, *([args.deployer_principal_arn] if args.deployer_principal_arn else [])})
        self.admin_access: list[aws.eks.AccessPolicyAssociation] = []
        for arn in admins:
            admin = f"{name}-admin-{name_slug(arn)[-40:]}"
            entry = aws.eks.AccessEntry(admin, cluster_name=cluster.name,
                                        principal_arn=arn, type="STANDARD", tags=tags, opts=child)
            self.admin_access.append(aws.eks.AccessPolicyAssociation(
                admin, cluster_name=cluster.name, principal_arn=entry.principal_arn,
                policy_arn=f"arn:{partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"), opts=child))

        # aws-node's own role. The add-on waits for the policy attachment (not only the role), so the
        # service account is never annotated with a role that cannot yet manage ENIs. On an existing
        # cluster the node role's CNI attachment is deleted in the same `pulumi up`, and Pulumi deletes
        # resources removed from the program only after every create and update has finished: role,
        # attachment, add-on update (EKS annotates the aws-node service account), then the detach.
        # Running aws-node pods keep the node role's credentials until they restart (the IRSA webhook
        # injects the web identity only into new pods, step 2 of the AWS page above): docs/components.md
        # ("Secure defaults") has the two-step upgrade of an existing cluster.
        cni_role = aws.iam.Role(f"{name}-vpc-cni-role", assume_role_policy=irsa_trust_policy(
            oidc.arn, self.oidc_issuer_url, *CNI_SERVICE_ACCOUNT), tags=tags, opts=child)
        cni_policy = aws.iam.RolePolicyAttachment(f"{name}-vpc-cni-policy", role=cni_role.name,
                                                  policy_arn=f"{managed_policy}/{CNI_POLICY}", opts=child)
        self.cni_role_arn = cni_role.arn
        addon_roles = {"vpc-cni": (cni_role.arn, [cni_policy])}

        def addon(addon_name: str, values: dict | None, depends_on: list[pulumi.Resource]) -> aws.eks.Addon:
            # Versions are left to EKS (the default for the cluster's Kubernetes version).
            role_arn, role_ready = addon_roles.get(addon_name, (None, []))
            return aws.eks.Addon(
                f"{name}-{addon_name}", cluster_name=cluster.name, addon_name=addon_name,
                configuration_values=json.dumps(values) if values else None,
                service_account_role_arn=role_arn,
                resolve_conflicts_on_create="OVERWRITE", resolve_conflicts_on_update="OVERWRITE", tags=tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*depends_on, *role_ready]))

        pre_node = [addon(a, values, []) for a, values in _PRE_NODE_ADDONS.items()]

        node_role = aws.iam.Role(f"{name}-node-role", assume_role_policy=service_trust_policy(
            "ec2.amazonaws.com"), tags=tags, opts=child)
        attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-node-{policy}", role=node_role.name,
                                         policy_arn=f"{managed_policy}/{policy}", opts=child)
            for policy in _NODE_POLICIES
        ]

        self.node_groups = {}
        for pool, spec in args.node_pools.items():
            self.node_groups[pool] = ManagedNodeGroup(
                f"{name}-{pool}", pool,
                NodeGroupArgs(cluster_name=cluster.name, node_role_arn=node_role.arn,
                              subnet_ids=pool_subnets(pool, spec, args), spec=spec, tags=tags),
                # Nodes need the CNI to become Ready and the role's policies to join.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*pre_node, *attachments]))

        for addon_name, values in _POST_NODE_ADDONS.items():
            addon(addon_name, values, list(self.node_groups.values()))

        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            cluster.name, cluster.endpoint, cluster.certificate_authority.data,
        ).apply(lambda a: render_kubeconfig(a[0], args.region, a[1], a[2])))
        # ConfigMaps that keep their name (the canary router's, dashboards) are updated in place rather
        # than deleted and recreated under running pods. TF Serving's are one immutable ConfigMap per
        # revision (ModelServer), so new config reaches new pods only.
        # Workloads wait for the system nodes: a Deployment's readiness await would otherwise run (and may
        # time out) while they are still launching. Only the system group: what runs on another pool (GPU
        # servers and add-ons) waits for that group itself (pool_dependencies), so nothing else waits
        # for a GPU group to launch. They also wait for the admins' access
        # policies: with authentication mode API and no bootstrap admin, the deployer is Unauthorized
        # until its AccessPolicyAssociation exists.
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, enable_config_map_mutable=True,
                                     opts=pulumi.ResourceOptions(parent=self, depends_on=[
                                         *self._system_groups(), *self.admin_access, *api_rules]))

        self.register_outputs({"cluster_name": self.cluster_name, "endpoint": self.endpoint,
                               "oidc_provider_arn": self.oidc_provider_arn, "kubeconfig": self.kubeconfig})

    def _system_groups(self) -> list[pulumi.Resource]:
        if SYSTEM_POOL in self.node_groups:
            return [self.node_groups[SYSTEM_POOL].node_group]
        return [g.node_group for g in self.node_groups.values()]
