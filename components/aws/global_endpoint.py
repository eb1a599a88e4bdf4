"""One global DNS name in front of several regional serving stacks: Route 53 health checks and the
failover (PRIMARY/SECONDARY) or latency records of that name (docs/multi-region.md).

Route 53 rules this module relies on (Amazon Route 53 Developer Guide and API Reference):

* Health checks (DG "How Amazon Route 53 determines whether a health check is healthy",
  dns-failover-determining-health-of-endpoints.html): checkers in several locations send a request every
  ``RequestInterval`` seconds (10 or 30); each checker calls the endpoint unhealthy after
  ``FailureThreshold`` consecutive failures; Route 53 calls it unhealthy when 18% of checkers or fewer say
  healthy. ``HTTPS`` passes on a status 200-399; ``HTTPS_STR_MATCH`` also needs ``SearchString`` in the
  first 5,120 bytes of the body (API Reference, HealthCheckConfig ``Type``). With only ``FullyQualifiedDomainName``
  set, Route 53 resolves it, sends it as the ``Host`` header and, with ``EnableSNI``, in the TLS
  client_hello (HealthCheckConfig ``EnableSNI``, ``FullyQualifiedDomainName``).
* Failover records (API Reference, ResourceRecordSet ``Failover``): primary healthy -> primary; primary
  unhealthy and secondary healthy -> secondary; secondary unhealthy -> primary, whatever the primary's
  health (so both unhealthy -> primary).
* Latency records (DG "How health checks work in simple Amazon Route 53 configurations",
  dns-failover-simple-configs.html): Route 53 answers with the healthy record of lowest latency to the
  resolver; when every record of the group is unhealthy it answers as though all were healthy.
* CNAME: not at the zone apex (DG "Choosing between alias and non-alias records"); the regional endpoints
  are hostnames outside Route 53's alias targets as far as this program knows (an alias to the load
  balancer needs the balancer's canonical hosted zone, which the regional stack cannot read offline).

The time a client needs to reach the other region after one fails is :func:`failover_time`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

ROUTINGS = ("failover", "latency")
CHECK_TYPES = ("HTTPS_STR_MATCH", "HTTPS")
REQUEST_INTERVALS = (10, 30)
"""The only intervals Route 53 offers (API Reference, HealthCheckConfig ``RequestInterval``)."""
PROPAGATION_SECONDS = 60
"""Allowance for Route 53's own propagation: a change reaches every Route 53 authoritative server "within
60 seconds" (Route 53 FAQ; API Reference GetChange: ``INSYNC`` once all servers have it). Added once."""
SEARCH_LIMIT_BYTES = 5120
"""HTTPS_STR_MATCH looks for ``SearchString`` in this many first bytes of the body."""
HEALTHY_STATE = "AVAILABLE"
"""What TF Serving's model status (``GET /v1/models/<name>``) says of a servable version that serves
(tensorflow/serving ``apis/get_model_status.proto`` ModelVersionStatus.State)."""


@dataclass(frozen=True)
class FailoverTime:
    """How long clients of the global name keep being sent to a region after it stops serving."""

    detection_seconds: int
    """Request interval x failure threshold: consecutive failed checks before Route 53 calls it unhealthy."""
    ttl_seconds: int
    """The global record's TTL: how long a resolver may keep answering with the failed region."""
    propagation_seconds: int
    """Route 53's propagation allowance (:data:`PROPAGATION_SECONDS`)."""

    @property
    def total_seconds(self) -> int:
        return self.detection_seconds + self.ttl_seconds + self.propagation_seconds

    def sentence(self) -> str:
        return (f"a region that stops serving is left out of the global name's answers after at most "
                f"~{self.total_seconds} s ({self.detection_seconds} s to fail its health check + "
                f"{self.ttl_seconds} s record TTL in resolvers + {self.propagation_seconds} s Route 53 "
                f"propagation); requests in that window may fail")


def failover_time(request_interval: int, failure_threshold: int, ttl: int,
                  propagation: int = PROPAGATION_SECONDS) -> FailoverTime:
    """The worst case from the plan's own numbers (docs/multi-region.md shows the figure)."""
    if request_interval not in REQUEST_INTERVALS:
        raise ValueError(f"request_interval {request_interval}: Route 53 offers {REQUEST_INTERVALS}")
    if not 1 <= failure_threshold <= 10:
        raise ValueError(f"failure_threshold {failure_threshold}: Route 53 allows 1-10")
    if ttl < 0:
        raise ValueError(f"ttl {ttl}: not negative")
    return FailoverTime(request_interval * failure_threshold, ttl, propagation)


def listener_accepts(listener_hostname: str, host: str) -> bool:
    """Whether a Gateway listener with ``hostname`` takes requests for ``host``. Gateway API
    (kubernetes-sigs/gateway-api apis/v1/gateway_types.go, ``Listener.Hostname``): an exact name matches
    itself; ``*.example.com`` matches ``test.example.com`` and ``foo.test.example.com`` but not
    ``example.com``."""
    if listener_hostname.startswith("*."):
        return host.endswith(listener_hostname[1:]) and len(host) > len(listener_hostname) - 1
    return host == listener_hostname


def regional_hostname(region: str, listener_hostname: str) -> str:
    """The per-region name a regional stack is reached at: ``<region>.<domain>`` under a wildcard
    listener (``*.models.example.com`` -> ``us-east-1.models.example.com``), else the listener's name."""
    return f"{region}{listener_hostname[1:]}" if listener_hostname.startswith("*.") else listener_hostname


def regional_endpoint(region: str, listener_hostname: str, model: str, authentication: str) -> dict[str, str]:
    """The regional stack's ``regionalEndpoint`` output, which the global stack reads."""
    return {"region": region, "hostname": regional_hostname(region, listener_hostname),
            "listenerHostname": listener_hostname, "healthPath": f"/v1/models/{model}",
            "authentication": authentication}


@dataclass(frozen=True)
class RegionTarget:
    """One regional stack behind the global name."""

    region: str
    """AWS region of the stack (the latency record's region)."""
    hostname: pulumi.Input[str]
    """The region's own name (resolving to its Gateway's load balancer): the CNAME target and the health
    check's FQDN, Host header and SNI."""
    health_path: pulumi.Input[str]
    """Path the health check requests: a model's status URL, which answers only once the model serves."""


@dataclass(frozen=True)
class HealthCheckSpec:
    """How Route 53 checks each region."""

    request_interval: int = 30
    """Seconds between one checker's requests: 10 or 30 (10 costs more)."""
    failure_threshold: int = 3
    """Consecutive failures (or successes) that flip a checker's view (1-10)."""
    check_type: str = "HTTPS_STR_MATCH"
    """``HTTPS_STR_MATCH`` (status 2xx/3xx and ``search_string`` in the body) or ``HTTPS`` (status only)."""
    search_string: str = HEALTHY_STATE
    """For HTTPS_STR_MATCH: text the model status must contain (TF Serving's ``AVAILABLE``)."""
    checker_regions: tuple[str, ...] = ()
    """Route 53 checker regions (at least 3); empty: Route 53's default set."""


@dataclass(frozen=True)
class GlobalEndpointArgs:
    """Inputs of :class:`GlobalEndpoint`."""

    zone_id: str
    """Route 53 hosted zone holding ``name``."""
    name: str
    """The global name clients use (not the zone apex: it is a CNAME)."""
    regions: tuple[RegionTarget, ...]
    """Failover: exactly two, primary first; latency: two or more."""
    routing: str = "failover"
    """``failover`` (active-passive) or ``latency`` (active-active, nearest healthy region)."""
    ttl: int = 60
    """Seconds resolvers may cache the answer (part of the failover time)."""
    health_check: HealthCheckSpec = field(default_factory=HealthCheckSpec)
    """How each region is checked."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags of the health checks (besides Name)."""


class GlobalEndpoint(pulumi.ComponentResource):
    """Creates: per region one Route 53 health check (HTTPS on the region's hostname, port 443, SNI, the
    model status path) and one CNAME record of the global name pointing at the region's hostname, with a
    set identifier, that health check, and the failover role (first region PRIMARY, second SECONDARY) or
    the region for latency routing."""

    def __init__(self, name: str, args: GlobalEndpointArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:aws:GlobalEndpoint", name, None, opts)
        _check(name, args)
        child = pulumi.ResourceOptions(parent=self)
        hc = args.health_check
        self.health_checks: dict[str, aws.route53.HealthCheck] = {}
        self.records: dict[str, aws.route53.Record] = {}
        for index, target in enumerate(args.regions):
            check = aws.route53.HealthCheck(
                f"{name}-{target.region}", type=hc.check_type, fqdn=target.hostname, port=443,
                resource_path=target.health_path, enable_sni=True,
                search_string=hc.search_string if hc.check_type == "HTTPS_STR_MATCH" else None,
                request_interval=hc.request_interval, failure_threshold=hc.failure_threshold,
                regions=list(hc.checker_regions) or None,
                tags={**args.tags, "Name": f"{args.name} {target.region}"}, opts=child)
            policy: dict = {}
            if args.routing == "failover":
                policy["failover_routing_policies"] = [aws.route53.RecordFailoverRoutingPolicyArgs(
                    type="PRIMARY" if index == 0 else "SECONDARY")]
            else:
                policy["latency_routing_policies"] = [aws.route53.RecordLatencyRoutingPolicyArgs(
                    region=target.region)]
            self.records[target.region] = aws.route53.Record(
                f"{name}-{target.region}", zone_id=args.zone_id, name=args.name, type="CNAME", ttl=args.ttl,
                records=[target.hostname], set_identifier=target.region, health_check_id=check.id,
                opts=child, **policy)
            self.health_checks[target.region] = check
        self.fqdn = args.name
        self.failover = failover_time(hc.request_interval, hc.failure_threshold, args.ttl)
        self.register_outputs({"fqdn": self.fqdn,
                               "healthCheckIds": {r: c.id for r, c in self.health_checks.items()}})


def _check(name: str, args: GlobalEndpointArgs) -> None:
    hc = args.health_check
    problems = []
    if args.routing not in ROUTINGS:
        problems.append(f"routing {args.routing!r}, expected one of {ROUTINGS}")
    if args.routing == "failover" and len(args.regions) != 2:
        problems.append(f"failover routing needs exactly 2 regions (primary, secondary), got {len(args.regions)}")
    if args.routing == "latency" and len(args.regions) < 2:
        problems.append(f"latency routing needs 2 or more regions, got {len(args.regions)}")
    if len({t.region for t in args.regions}) != len(args.regions):
        problems.append("each region at most once (the region is the record's set identifier)")
    if hc.check_type not in CHECK_TYPES:
        problems.append(f"check_type {hc.check_type!r}, expected one of {CHECK_TYPES}")
    if hc.check_type == "HTTPS_STR_MATCH" and not 1 <= len(hc.search_string) <= 255:
        problems.append("search_string of 1-255 characters for HTTPS_STR_MATCH")
    if hc.checker_regions and len(hc.checker_regions) < 3:
        problems.append("checker_regions: at least 3 (Route 53's minimum) or none")
    if problems:
        raise ValueError(f"GlobalEndpoint {name}: " + "; ".join(problems))
    failover_time(hc.request_interval, hc.failure_threshold, args.ttl)  # raises on Route 53's limits
