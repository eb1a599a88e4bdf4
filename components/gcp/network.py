"""VPC network for a private GKE cluster: one subnetwork with pod and service ranges, Cloud NAT."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

PODS_RANGE = "pods"
SERVICES_RANGE = "services"


@dataclass(frozen=True)
class GkeNetworkArgs:
    """Inputs of :class:`GkeNetwork`."""

    project: str
    region: str
    cidr: str = "10.0.0.0/16"
    """Primary range of the subnetwork (node IPs)."""
    pod_cidr: str = "10.16.0.0/14"
    """Secondary range for pods (VPC-native cluster: pod IPs are routable in the VPC)."""
    service_cidr: str = "10.20.0.0/20"
    """Secondary range for ClusterIP services."""


class GkeNetwork(pulumi.ComponentResource):
    """Creates: a custom-mode ``Network``, a ``Subnetwork`` with secondary ranges ``pods`` and
    ``services`` and Private Google Access (private nodes reach Google APIs and GCS), a ``Router`` and
    a ``RouterNat`` (private nodes pull images from outside Google, e.g. docker.io).
    """

    network_id: pulumi.Output[str]
    subnetwork_id: pulumi.Output[str]

    def __init__(self, name: str, args: GkeNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:gcp:GkeNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        network = gcp.compute.Network(f"{name}-vpc", project=args.project, auto_create_subnetworks=False,
                                      routing_mode="REGIONAL", opts=child)
        subnet = gcp.compute.Subnetwork(
            f"{name}-nodes", project=args.project, region=args.region, network=network.id,
            ip_cidr_range=args.cidr, private_ip_google_access=True,
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=PODS_RANGE, ip_cidr_range=args.pod_cidr),
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=SERVICES_RANGE,
                                                           ip_cidr_range=args.service_cidr)],
            # Flow logs sampled at 50%: enough to investigate traffic, a fraction of the cost.
            log_config=gcp.compute.SubnetworkLogConfigArgs(aggregation_interval="INTERVAL_5_SEC",
                                                           flow_sampling=0.5, metadata="INCLUDE_ALL_METADATA"),
            opts=child)
        # Lowest priority deny-all ingress: only what GKE (and the platform) allow explicitly gets in.
        gcp.compute.Firewall(f"{name}-deny-ingress", project=args.project, network=network.id,
                             direction="INGRESS", priority=65534, source_ranges=["0.0.0.0/0"],
                             denies=[gcp.compute.FirewallDenyArgs(protocol="all")],
                             log_config=gcp.compute.FirewallLogConfigArgs(metadata="INCLUDE_ALL_METADATA"),
                             opts=child)
        router = gcp.compute.Router(f"{name}-router", project=args.project, region=args.region,
                                    network=network.id, opts=child)
        gcp.compute.RouterNat(f"{name}-nat", project=args.project, region=args.region, router=router.name,
                              nat_ip_allocate_option="AUTO_ONLY",
                              source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
                              log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
                              opts=child)
        self.network_id = network.id
        self.subnetwork_id = subnet.id
        self.register_outputs({"network_id": self.network_id, "subnetwork_id": self.subnetwork_id})
