"""The global stack's config, validated before any resource is registered; and the checks of what each
regional stack reports (its ``regionalEndpoint`` output), which name the config key they contradict.

Every field's alias is its config key (``tfserving-global:<key>``); an error names the key, the value and
what is allowed, in one line. Route 53's limits come from botocore's Route 53 service model (shapes
``RequestInterval`` 10-30, ``FailureThreshold`` 1-10, ``SearchString`` <= 255, ``HealthCheckRegion``,
``HealthCheckRegionList`` >= 3, ``TTL`` >= 0); the interval is 10 or 30 only (API Reference,
HealthCheckConfig ``RequestInterval``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from components.aws.global_endpoint import listener_accepts
from stacks.settings_base import FieldProblem, Strict

PROJECT = "tfserving-global"
CHECKER_REGIONS = ("us-east-1", "us-west-1", "us-west-2", "eu-west-1", "ap-southeast-1", "ap-southeast-2",
                   "ap-northeast-1", "sa-east-1")
"""botocore route53 ``HealthCheckRegion`` (tests/test_multi_region.py compares it with botocore's model)."""
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")
_STACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")


class GlobalConfigError(Exception):
    """A config value the program refuses; the message names the key."""


class HealthCheckSettings(Strict):
    request_interval: Literal[10, 30] = Field(30, description="Seconds between one checker's requests (10 "
                                                                 "costs more, detects faster).")
    failure_threshold: int = Field(3, ge=1, le=10, description="Consecutive failed checks before a checker "
                                                                "calls the region unhealthy.")
    type: Literal["HTTPS_STR_MATCH", "HTTPS"] = Field(
        "HTTPS_STR_MATCH", description="`HTTPS_STR_MATCH`: the model status must answer 2xx/3xx and contain "
                                       "searchString; `HTTPS`: any 2xx/3xx.")
    search_string: str = Field("AVAILABLE", min_length=1, max_length=255,
                               description="What the model status must contain (a version AVAILABLE).")
    checker_regions: list[str] = Field(default_factory=list, description="Route 53 checker regions (at least 3); "
                                                                         "empty: Route 53's default set.")

    @field_validator("checker_regions")
    @classmethod
    def _regions(cls, regions: list[str]) -> list[str]:
        for index, region in enumerate(regions):
            if region not in CHECKER_REGIONS:
                raise FieldProblem(str(index), region, f"one of {list(CHECKER_REGIONS)}")
        if regions and len(regions) < 3:
            raise FieldProblem("", regions, "at least 3 regions (Route 53's minimum), or none")
        if len(set(regions)) != len(regions):
            raise FieldProblem("", regions, "each region once")
        return regions


class RegionRef(Strict):
    stack: str = Field(description="org/project/stack of a regional tfserving-platform stack.")
    region: str = Field(description="Its AWS region (checked against the stack's output).")


class GlobalSettings(Strict):
    zone_id: str = Field(description="Route 53 hosted zone id holding the global name.")
    zone_name: str = Field(description="Domain of the hosted zone.")
    name: str = Field(description="The global name (CNAME; not the zone apex).")
    routing: Literal["failover", "latency"] = Field("failover", description="failover or latency routing.")
    ttl: int = Field(60, ge=0, le=86400, description="Record TTL in seconds.")
    regions: list[RegionRef] = Field(min_length=2, description="Regional stacks, primary first.")
    health_check: HealthCheckSettings = Field(default_factory=HealthCheckSettings,
                                              description="Route 53 health check of each region.")

    @model_validator(mode="after")
    def _consistent(self) -> GlobalSettings:
        if not re.fullmatch(r"^Z[A-Z0-9]{1,31}$", self.zone_id):
            raise FieldProblem("zoneId", self.zone_id, "a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ")
        zone = self.zone_name.rstrip(".")
        if not _DNS_NAME.fullmatch(zone):
            raise FieldProblem("zoneName", self.zone_name, "a domain such as example.com")
        if not _DNS_NAME.fullmatch(self.name) or not self.name.endswith(f".{zone}"):
            # A CNAME cannot sit at the zone apex (RFC 1034 3.6.2; Route 53 DG "Choosing between alias and
            # non-alias records"), and a name outside the zone cannot be created in it.
            raise FieldProblem("name", self.name, f"a DNS name below {zone} (not {zone} itself: the record "
                                                  "is a CNAME)")
        for index, ref in enumerate(self.regions):
            if not _STACK.fullmatch(ref.stack):
                raise FieldProblem(f"regions.{index}.stack", ref.stack, "org/project/stack of a regional stack")
            if not _REGION.fullmatch(ref.region):
                raise FieldProblem(f"regions.{index}.region", ref.region, "an AWS region such as us-east-1")
        for key in ("stack", "region"):
            values = [getattr(r, key) for r in self.regions]
            for index, value in enumerate(values):
                if value in values[:index]:
                    raise FieldProblem(f"regions.{index}.{key}", value, f"a {key} not already in regions")
        if self.routing == "failover" and len(self.regions) != 2:
            raise FieldProblem("regions", [r.stack for r in self.regions],
                               "exactly 2 regions for routing failover (primary first, then secondary)")
        return self


def parse(raw: dict[str, object]) -> GlobalSettings:
    """Validate the decoded config (keys as in the stack file, without the project prefix)."""
    try:
        return GlobalSettings.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        ctx = (error.get("ctx") or {}).get("error")
        if isinstance(ctx, FieldProblem):
            key = ".".join([*(str(p) for p in error["loc"]), *([ctx.field] if ctx.field else [])])
            raise GlobalConfigError(f"{PROJECT}:{key}: {ctx.value!r} is not allowed: expected {ctx.allowed}") from None
        where = ".".join(str(p) for p in error["loc"])
        raise GlobalConfigError(f"{PROJECT}:{where}: {error.get('input')!r} is not allowed: {error['msg']}") from None


def check_region(settings: GlobalSettings, index: int, endpoint: object) -> dict[str, str]:
    """One regional stack's ``regionalEndpoint`` output, refused (naming the config key) when the global
    name cannot work with it. Returns it."""
    ref = settings.regions[index]
    key = f"{PROJECT}:regions.{index}.stack"
    if not isinstance(endpoint, dict) or not endpoint.get("hostname"):
        raise GlobalConfigError(f"{key}: {ref.stack!r} has no regionalEndpoint output: expected a "
                                "tfserving-platform stack deployed with exposure enabled (deploy it first)")
    if endpoint.get("region") != ref.region:
        raise GlobalConfigError(f"{PROJECT}:regions.{index}.region: {ref.region!r} is not allowed: expected "
                                f"{endpoint.get('region')!r}, the region stack {ref.stack} runs in")
    listener = str(endpoint.get("listenerHostname", ""))
    for host in (settings.name, endpoint["hostname"]):
        # The region's Gateway listener filters on the Host header / SNI: a name it does not match gets no
        # route there (clients of the global name, or Route 53's checker of the regional name).
        if not listener_accepts(listener, host):
            raise GlobalConfigError(
                f"{key}: {ref.stack!r} is not allowed: its Gateway listener hostname {listener!r} does not "
                f"accept {host!r}; expected a region whose exposure.hostname is a wildcard covering both the "
                f"global name and <region>.<domain>, e.g. '*.{settings.name.split('.', 1)[1]}'")
    if endpoint.get("authentication", "none") != "none":
        # Route 53 health checkers send no token and no client certificate: every check would fail.
        raise GlobalConfigError(
            f"{key}: {ref.stack!r} is not allowed: its gateway requires authentication "
            f"{endpoint.get('authentication')!r}, which Route 53's HTTPS health checks cannot present; expected "
            "a region with exposure.authentication none (docs/multi-region.md, 'Authentication')")
    return endpoint
