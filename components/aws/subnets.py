"""How the VPC CIDR is split into per-zone subnets: plain Python, so the settings can check ranges against
the subnets (exposure.proxyCidrs) without importing the Pulumi SDKs."""

from __future__ import annotations

import ipaddress


def subnet_cidrs(cidr: str, zones: list[str]) -> dict[str, tuple[str, str]]:
    """``zone -> (private_cidr, public_cidr)``; private blocks are large because pods use VPC IPs."""
    net = ipaddress.IPv4Network(cidr)
    private = list(net.subnets(new_prefix=net.prefixlen + 3))
    # The last private-sized block is carved into small public subnets (NAT and load balancers only).
    public = list(private[-1].subnets(new_prefix=net.prefixlen + 6))
    return {zone: (str(private[i]), str(public[i])) for i, zone in enumerate(zones)}
