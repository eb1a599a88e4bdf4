"""VPC for an EKS cluster: public and private subnets per zone, NAT for the private ones, flow logs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.aws.iam import partition_of
from components.aws.subnets import subnet_cidrs

# Values of the EC2 API (botocore's ec2 model: TrafficType, LogDestinationType; tests/test_aws_enums.py).
FLOW_LOG_TRAFFIC_TYPE = "ALL"
"""Accepted and rejected traffic: rejects alone would not show what a compromised pod reached."""
FLOW_LOG_DESTINATION_TYPE = "cloud-watch-logs"


@dataclass(frozen=True)
class VpcArgs:
    """Inputs of :class:`Vpc`."""

    cluster_name: str
    """EKS cluster name, used in the subnet discovery tag ``kubernetes.io/cluster/<name>``."""
    zones: list[str]
    """Availability zones; one public and one private subnet each, keyed by zone name."""
    cidr: str = "10.0.0.0/16"
    """VPC CIDR. Private subnets get /(n+3) blocks (pods take VPC IPs with the VPC CNI), public /(n+6)."""
    single_nat_gateway: bool = True
    """One NAT gateway for all zones (cheaper) or one per zone (a zone outage keeps egress)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Extra tags on every resource."""
    region: str = ""
    """AWS region of the VPC (names the S3 endpoint service); empty: the region of ``zones[0]``."""
    flow_logs: bool = True
    """VPC flow logs of all traffic to a CloudWatch log group (needs ``account_id``)."""
    flow_log_retention_days: int = 365
    """Retention of the flow-log group (one of CloudWatch's periods, checked by the settings)."""
    account_id: pulumi.Input[str] = ""
    """The AWS account of the VPC: the flow-log role trusts the flow-logs service of this account only."""
    sts_endpoint: bool = False
    """An STS interface endpoint in every private subnet: the pods' IRSA token exchange
    (AssumeRoleWithWebIdentity) stays in the VPC instead of crossing the NAT gateway. Interface endpoints
    are billed per AZ-hour and per GB (https://aws.amazon.com/privatelink/pricing/: $0.01/AZ-hour in
    us-east-1 as of 2025-06, about $7.30 a month per zone), gateway endpoints are free."""


def flow_log_trust_policy(account_id: str, region: str) -> str:
    """Lets VPC Flow Logs assume the role, only on behalf of flow logs of this account and region.

    ``aws:SourceAccount`` and ``aws:SourceArn`` guard against the confused deputy, as
    https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-iam-role.html recommends.
    """
    partition = partition_of(region)
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account_id},
                "ArnLike": {"aws:SourceArn": f"arn:{partition}:ec2:{region}:{account_id}:vpc-flow-log/*"},
            },
        }],
    })


def log_group_arn(name: str, account_id: str, region: str) -> str:
    """The ARN of a CloudWatch log group (without the ``:*`` the provider's ``arn`` output may carry)."""
    return f"arn:{partition_of(region)}:logs:{region}:{account_id}:log-group:{name}"


def flow_log_policy(log_group: str, account_id: str, region: str) -> str:
    """What the flow-logs service needs to deliver to one existing log group, and no more.

    AWS's example role (same page as above) allows logs:CreateLogGroup and all five actions on
    ``*``. The group exists (this component creates it), so CreateLogGroup is left out and writing
    is limited to its streams; DescribeLogGroups takes only the account's ``log-group:*`` resource
    form (it lists groups, read-only). ``log_group`` is the group's name.
    """
    partition = partition_of(region)
    group = log_group_arn(log_group, account_id, region)
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "WriteFlowLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
             "Resource": [group, f"{group}:log-stream:*"]},
            {"Sid": "FindLogGroup", "Effect": "Allow", "Action": "logs:DescribeLogGroups",
             "Resource": f"arn:{partition}:logs:{region}:{account_id}:log-group:*"},
        ],
    })


def s3_endpoint_service(region: str) -> str:
    return f"com.amazonaws.{region}.s3"


def sts_endpoint_service(region: str) -> str:
    return f"com.amazonaws.{region}.sts"


class Vpc(pulumi.ComponentResource):
    """A VPC spread over zones.

    Creates: ``aws.ec2.Vpc``, an ``InternetGateway``; per zone a public and a private ``Subnet``
    tagged for load-balancer discovery; one or per-zone ``Eip`` + ``NatGateway``; route tables
    and their associations; an S3 gateway ``VpcEndpoint`` on the private route tables (with ``sts_endpoint``
    also an STS interface ``VpcEndpoint`` and its ``SecurityGroup``), so model
    downloads and ECR image layers (served from S3) bypass the NAT gateway's per-GB charge
    (gateway endpoints are free: https://docs.aws.amazon.com/vpc/latest/privatelink/gateway-endpoints.html);
    with ``flow_logs``, a ``FlowLog`` of all the VPC's traffic into a ``LogGroup`` with retention,
    delivered through an IAM ``Role`` only VPC Flow Logs of this account may assume, with an inline
    ``RolePolicy`` limited to that group.
    """

    vpc_id: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    private_subnet_ids_by_zone: dict[str, pulumi.Output[str]]
    """The private subnet of each zone (node groups confined to some zones use these)."""
    public_subnet_ids: pulumi.Output[list[str]]
    s3_endpoint_id: pulumi.Output[str]
    """The S3 gateway endpoint (``vpce-...``): policies bind in-VPC readers to it with ``aws:SourceVpce``."""

    def __init__(self, name: str, args: VpcArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:aws:Vpc", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {**args.tags}
        cidrs = subnet_cidrs(args.cidr, args.zones)

        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=args.cidr, enable_dns_hostnames=True,
                          enable_dns_support=True, tags={**tags, "Name": name}, opts=child)
        # Adopt the VPC's default security group and strip its rules: nothing may fall back on it
        # (CIS AWS 5.4; node groups and the cluster use their own groups).
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[],
                                     tags={**tags, "Name": f"{name}-default-unused"}, opts=child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={**tags, "Name": name}, opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags={**tags, "Name": f"{name}-public"}, opts=child)

        # Subnet discovery tags: https://docs.aws.amazon.com/eks/latest/userguide/network-load-balancing.html
        cluster_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}
        public_subnets: dict[str, aws.ec2.Subnet] = {}
        private_subnets: dict[str, aws.ec2.Subnet] = {}
        for zone, (private_cidr, public_cidr) in cidrs.items():
            public_subnets[zone] = aws.ec2.Subnet(
                f"{name}-public-{zone}", vpc_id=vpc.id, cidr_block=public_cidr, availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={**tags, **cluster_tag, "Name": f"{name}-public-{zone}", "kubernetes.io/role/elb": "1"},
                opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-public-{zone}", subnet_id=public_subnets[zone].id,
                                          route_table_id=public_rt.id, opts=child)
            private_subnets[zone] = aws.ec2.Subnet(
                f"{name}-private-{zone}", vpc_id=vpc.id, cidr_block=private_cidr, availability_zone=zone,
                tags={**tags, **cluster_tag, "Name": f"{name}-private-{zone}",
                      "kubernetes.io/role/internal-elb": "1"},
                opts=child)

        nat_zones = args.zones[:1] if args.single_nat_gateway else args.zones
        nats: dict[str, aws.ec2.NatGateway] = {}
        for zone in nat_zones:
            eip = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags={**tags, "Name": f"{name}-nat-{zone}"},
                              opts=child)
            nats[zone] = aws.ec2.NatGateway(
                f"{name}-nat-{zone}", allocation_id=eip.id, subnet_id=public_subnets[zone].id,
                tags={**tags, "Name": f"{name}-nat-{zone}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]))
        private_rts: list[aws.ec2.RouteTable] = []
        for zone, subnet in private_subnets.items():
            nat = nats.get(zone, nats[nat_zones[0]])
            rt = aws.ec2.RouteTable(
                f"{name}-private-{zone}", vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags={**tags, "Name": f"{name}-private-{zone}"}, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{zone}", subnet_id=subnet.id,
                                          route_table_id=rt.id, opts=child)
            private_rts.append(rt)
        # Same-region S3 traffic of the private subnets takes the endpoint's prefix-list route (more
        # specific than 0.0.0.0/0 -> NAT). Cross-region buckets and non-S3 registries still use the NAT.
        region = args.region or args.zones[0][:-1]
        if args.flow_logs:
            self._flow_logs(name, args, region, vpc, tags, child)
        s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3", vpc_id=vpc.id, service_name=s3_endpoint_service(region), vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_rts], tags={**tags, "Name": f"{name}-s3"}, opts=child)
        if args.sts_endpoint:
            # Private DNS makes sts.<region>.amazonaws.com resolve to the endpoint inside the VPC; only
            # HTTPS from the VPC reaches it.
            # No egress rule: the provider removes AWS's default allow-all egress of a new group, and an
            # endpoint only answers connections.
            endpoint_sg = aws.ec2.SecurityGroup(
                f"{name}-sts-endpoint", vpc_id=vpc.id, description="HTTPS from the VPC to the STS endpoint",
                tags={**tags, "Name": f"{name}-sts-endpoint"}, opts=child)
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-sts-endpoint-https", security_group_id=endpoint_sg.id, cidr_ipv4=args.cidr,
                ip_protocol="tcp", from_port=443, to_port=443, description="HTTPS from the VPC", opts=child)
            aws.ec2.VpcEndpoint(
                f"{name}-sts", vpc_id=vpc.id, service_name=sts_endpoint_service(region),
                vpc_endpoint_type="Interface", private_dns_enabled=True,
                subnet_ids=[s.id for s in private_subnets.values()], security_group_ids=[endpoint_sg.id],
                tags={**tags, "Name": f"{name}-sts"}, opts=child)
        self.s3_endpoint_id = s3_endpoint.id

        self.vpc_id = vpc.id
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private_subnets.values()])
        self.private_subnet_ids_by_zone = {zone: subnet.id for zone, subnet in private_subnets.items()}
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public_subnets.values()])
        self.register_outputs({"vpc_id": self.vpc_id, "private_subnet_ids": self.private_subnet_ids,
                               "public_subnet_ids": self.public_subnet_ids, "s3_endpoint_id": self.s3_endpoint_id})

    @staticmethod
    def _flow_logs(name: str, args: VpcArgs, region: str, vpc: aws.ec2.Vpc, tags: dict[str, str],
                   child: pulumi.ResourceOptions) -> aws.ec2.FlowLog:
        # Created here with its retention, so the service never creates it with unlimited retention.
        # Encrypted with CloudWatch's AWS-owned keys, as the control-plane group (.checkov.yaml
        # CKV_AWS_158 and .trivyignore.yaml AWS-0017 say why no customer key yet).
        group = aws.cloudwatch.LogGroup(f"{name}-flow-logs", name=f"/aws/vpc/{args.cluster_name}/flow-logs",
                                        retention_in_days=args.flow_log_retention_days, tags=tags, opts=child)
        role = aws.iam.Role(f"{name}-flow-logs",
                            assume_role_policy=pulumi.Output.from_input(args.account_id).apply(
                                lambda account: flow_log_trust_policy(account, region)),
                            tags=tags, opts=child)
        policy = aws.iam.RolePolicy(f"{name}-flow-logs", role=role.id, policy=pulumi.Output.all(
            group.name, args.account_id).apply(lambda a: flow_log_policy(a[0], a[1], region)), opts=child)
        return aws.ec2.FlowLog(f"{name}-flow-logs", vpc_id=vpc.id, traffic_type=FLOW_LOG_TRAFFIC_TYPE,
                               log_destination_type=FLOW_LOG_DESTINATION_TYPE, log_destination=group.arn,
                               iam_role_arn=role.arn, tags={**tags, "Name": f"{name}-flow-logs"},
                               opts=pulumi.ResourceOptions(parent=child.parent, depends_on=[policy]))
