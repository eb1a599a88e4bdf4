"""The global name in front of the regional serving stacks (docs/multi-region.md).

Reads each regional stack's ``regionalEndpoint`` output through a StackReference and creates, through
:class:`components.aws.global_endpoint.GlobalEndpoint`, one Route 53 health check per region and the
failover (or latency) CNAME records of the global name. Deploy the regions first, then this stack; a
region that is broken or missing never blocks deploying another region (each is its own stack).

What each region reports is checked as soon as the StackReference is read, which ``pulumi preview``
already does: a region without exposure, in another region than configured, with a Gateway listener that
would not accept the global name, or with authentication Route 53's checkers cannot pass, fails the
preview naming the config key, and no record depends on an unchecked value.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi

# The Pulumi CLI runs this file with global/ as its working directory: the repository's packages
# (components, stacks) live one level up; this folder's own module next to this file.
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from components.aws.global_endpoint import (  # noqa: E402
    GlobalEndpoint, GlobalEndpointArgs, HealthCheckSpec, RegionTarget)
from global_settings import PROJECT, GlobalConfigError, GlobalSettings, check_region, parse  # noqa: E402
from stacks.settings_base import raw_config  # noqa: E402

KEYS = ("zoneId", "zoneName", "name", "routing", "ttl", "regions", "healthCheck")
OBJECT_KEYS = ("regions", "healthCheck", "ttl")


def read_settings() -> GlobalSettings:
    raw = raw_config(pulumi.Config(PROJECT), PROJECT, KEYS, OBJECT_KEYS, GlobalConfigError,
                     lambda key: "a number" if key == "ttl" else "a list or mapping")
    return parse(raw)


def main() -> None:
    try:
        s = read_settings()
    except GlobalConfigError as error:
        # One line naming the key, before any resource (pulumi.RunError prints no traceback).
        raise pulumi.RunError(str(error)) from None

    # Route 53 is a global service; the provider's region only decides where the API calls go.
    import pulumi_aws as aws

    provider = aws.Provider("aws", region="us-east-1",
                            default_tags={"tags": {"Project": PROJECT, "Stack": pulumi.get_stack(),
                                                   "ManagedBy": "pulumi"}})
    targets = []
    for index, ref in enumerate(s.regions):
        reference = pulumi.StackReference(f"region-{ref.region}", stack_name=ref.stack)

        def checked(outputs: dict, index: int = index) -> dict:
            try:
                return check_region(s, index, (outputs or {}).get("regionalEndpoint"))
            except GlobalConfigError as error:
                raise pulumi.RunError(str(error)) from None

        endpoint = reference.outputs.apply(checked)
        targets.append(RegionTarget(region=ref.region, hostname=endpoint.apply(lambda e: e["hostname"]),
                                    health_path=endpoint.apply(lambda e: e["healthPath"])))
    hc = s.health_check
    endpoint = GlobalEndpoint("global", GlobalEndpointArgs(
        zone_id=s.zone_id, name=s.name, regions=tuple(targets), routing=s.routing, ttl=s.ttl,
        health_check=HealthCheckSpec(request_interval=hc.request_interval, failure_threshold=hc.failure_threshold,
                                     check_type=hc.type, search_string=hc.search_string,
                                     checker_regions=tuple(hc.checker_regions))),
        opts=pulumi.ResourceOptions(providers={"aws": provider}))
    failover = endpoint.failover
    # The plan prints it (`pulumi preview` shows diagnostics; the offline plan records the outputs).
    pulumi.log.info(f"failover time of {s.name}: {failover.sentence()}")
    pulumi.export("name", s.name)
    pulumi.export("routing", s.routing)
    pulumi.export("primary" if s.routing == "failover" else "regions",
                  s.regions[0].region if s.routing == "failover" else [r.region for r in s.regions])
    pulumi.export("failoverSeconds", {"detection": failover.detection_seconds, "ttl": failover.ttl_seconds,
                                      "propagation": failover.propagation_seconds,
                                      "total": failover.total_seconds})
    pulumi.export("failover", failover.sentence())
    pulumi.export("healthCheckIds", {r: c.id for r, c in endpoint.health_checks.items()})


main()
