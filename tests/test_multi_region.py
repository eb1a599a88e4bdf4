"""Serving from two AWS regions behind one name (issue 17, docs/multi-region.md).

The two regional stacks (tests/stacks/Pulumi.region-*.yaml) and the global stack (global/) are planned
offline, the global one fed with the regional plans' outputs through its StackReferences. Then the
region-down drill: a stand-in of Route 53 evaluates the recorded health checks against stand-in regions
(each region's recorded Gateway routes decide whether the checked path reaches a model) and answers the
global name with Route 53's failover and latency rules:

* failover (API Reference, ResourceRecordSet ``Failover``): primary healthy -> primary; primary
  unhealthy, secondary healthy -> secondary; secondary unhealthy -> primary whatever its health;
* latency (Developer Guide, "How health checks work in simple Amazon Route 53 configurations"): the
  healthy record of lowest latency; all unhealthy -> as though all were healthy;
* health checks (API Reference, HealthCheckConfig ``Type``): HTTPS passes on 200-399, HTTPS_STR_MATCH
  also needs ``SearchString`` in the first 5,120 bytes of the body; Host header and SNI are the FQDN.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import botocore.session
import pulumi
import pytest
import yaml

from components.aws.global_endpoint import (SEARCH_LIMIT_BYTES, failover_time, listener_accepts,
                                            regional_hostname)
from stacks.deploy_rules import check
from stacks.mock_engine import Recording, _short_hash, run_program
from stacks.plan import ROOT, kubernetes_objects, plan_stack
from stacks.scan import scan_recording, scan_stack
from stacks.stack_files import load_stack_config
from tests.conftest import k8s_objects
from tests.test_manifests import validation_failures

GLOBAL = ROOT / "global"
sys.path.insert(0, str(GLOBAL))
import global_settings  # noqa: E402

STACKS = ROOT / "tests" / "stacks"
REGIONS = ("us-east-1", "us-west-2")
ORG = "example-org/tfserving-platform"
GLOBAL_STACK = "two-region"


def region_file(region: str):
    return STACKS / f"Pulumi.region-{region}.yaml"


def plan_global(tmp_path=None, regional: dict[str, dict] | None = None, **overrides) -> Recording:
    """Plan global/ with its two-region stack file (some keys replaced), StackReferences answered with
    ``regional`` (stack name -> outputs)."""
    stack_file = GLOBAL / f"Pulumi.{GLOBAL_STACK}.yaml"
    if overrides:
        data = yaml.safe_load(stack_file.read_text())
        for key, value in overrides.items():
            data["config"][f"tfserving-global:{key}"] = value
        stack_file = tmp_path / f"Pulumi.{GLOBAL_STACK}.yaml"
        stack_file.write_text(yaml.safe_dump(data))
    cfg = load_stack_config(GLOBAL / "Pulumi.yaml", stack_file, GLOBAL_STACK)
    return run_program(GLOBAL / "__main__.py", GLOBAL_STACK, cfg.project, cfg.config, cfg.secret_keys,
                       stack_outputs=regional)


@pytest.fixture(scope="module")
def regions() -> dict[str, Recording]:
    return {region: plan_stack(f"region-{region}", region_file(region)) for region in REGIONS}


@pytest.fixture(scope="module")
def regional_outputs(regions) -> dict[str, dict]:
    return {f"{ORG}/region-{region}": rec.outputs for region, rec in regions.items()}


@pytest.fixture(scope="module")
def global_plan(regional_outputs) -> Recording:
    return plan_global(regional=regional_outputs)


# --- the plans ----------------------------------------------------------------------------------

@pytest.mark.parametrize("region", REGIONS)
def test_each_region_exports_its_endpoint(regions, region):
    endpoint = regions[region].outputs["regionalEndpoint"]
    assert endpoint == {"region": region, "hostname": f"{region}.models.example.com",
                        "listenerHostname": "*.models.example.com", "healthPath": "/v1/models/digits",
                        "authentication": "none"}


def test_all_three_plans_pass_every_deploy_rule(regions, global_plan):
    for name, rec in [*regions.items(), ("global", global_plan)]:
        assert check(rec) == [], name


@pytest.mark.parametrize("region", REGIONS)
def test_regional_objects_validate(regions, region):
    objects = [r.inputs for r in kubernetes_objects(regions[region])]
    failures = validation_failures(objects)
    assert not failures, "\n".join(failures)
    assert {o["kind"] for o in objects} >= {"Gateway", "HTTPRoute"}


@pytest.mark.parametrize("region", REGIONS)
def test_each_region_scans_clean(region, tmp_path):
    result = scan_stack(f"region-{region}", tmp_path, stack_file=region_file(region))
    failed = [f"{scanner} {c.check_id} {c.resource}" for scanner, frameworks in result.scanners.items()
              for fw in frameworks.values() for c in fw.failed_checks]
    assert not failed and not result.unmapped and not result.mapping_problems, result.to_markdown()


def test_the_global_plan_scans_clean_and_every_type_is_mapped(global_plan, tmp_path):
    result = scan_recording(global_plan, tmp_path)
    failed = [f"{scanner} {c.check_id} {c.resource}" for scanner, frameworks in result.scanners.items()
              for fw in frameworks.values() for c in fw.failed_checks]
    assert not failed and not result.unmapped and not result.mapping_problems, result.to_markdown()


def test_the_global_plan_checks_each_region_and_fails_over_from_the_first(global_plan):
    checks = {r.inputs["fqdn"]: r.inputs for r in global_plan.of_type("aws:route53/healthCheck:HealthCheck")}
    assert set(checks) == {f"{r}.models.example.com" for r in REGIONS}
    for c in checks.values():
        assert (c["type"], c["port"], c["enableSni"], c["resourcePath"], c["searchString"]) == (
            "HTTPS_STR_MATCH", 443, True, "/v1/models/digits", "AVAILABLE")
        assert (c["requestInterval"], c["failureThreshold"]) == (30, 3)
    records = {r.inputs["setIdentifier"]: r.inputs for r in global_plan.of_type("aws:route53/record:Record")}
    assert {k: (v["name"], v["type"], v["ttl"], v["records"], v["failoverRoutingPolicies"])
            for k, v in records.items()} == {
        "us-east-1": ("api.models.example.com", "CNAME", 60, ["us-east-1.models.example.com"], [{"type": "PRIMARY"}]),
        "us-west-2": ("api.models.example.com", "CNAME", 60, ["us-west-2.models.example.com"], [{"type": "SECONDARY"}])}


# --- failover time ------------------------------------------------------------------------------

def test_failover_time_adds_detection_ttl_and_propagation():
    t = failover_time(30, 3, 60)
    assert (t.detection_seconds, t.ttl_seconds, t.propagation_seconds, t.total_seconds) == (90, 60, 60, 210)
    assert failover_time(10, 2, 30).total_seconds == 20 + 30 + 60
    for bad in [(20, 3, 60), (30, 0, 60), (30, 11, 60), (30, 3, -1)]:
        with pytest.raises(ValueError):
            failover_time(*bad)


def test_the_global_plan_prints_the_failover_time_it_computes(global_plan, tmp_path, regional_outputs):
    assert global_plan.outputs["failoverSeconds"] == {"detection": 90, "ttl": 60, "propagation": 60, "total": 210}
    assert "~210 s" in global_plan.outputs["failover"]
    faster = plan_global(tmp_path, regional_outputs, ttl=30, healthCheck={"requestInterval": 10, "failureThreshold": 2})
    assert faster.outputs["failoverSeconds"]["total"] == 10 * 2 + 30 + 60


# --- the region-down drill: a stand-in of Route 53 ---------------------------------------------

@dataclass
class RegionState:
    """A region as Route 53's checkers see it."""

    up: bool = True
    """False: its load balancer does not answer (region down, cluster gone, Gateway deleted)."""
    model_state: str = "AVAILABLE"
    """What TF Serving's status says of the checked model's version (apis/get_model_status.proto)."""


def routed(region: Recording, host: str, path: str) -> bool:
    """Whether the region's recorded Gateway sends ``host`` + ``path`` to a model: a Gateway listener that
    accepts the host and an external HTTPRoute with that hostname whose path match covers the path
    (Gateway API PathPrefix matches whole segments, Exact the whole path)."""
    listeners = [lst for g in k8s_objects(region, "Gateway") for lst in g["spec"]["listeners"]]
    if not any(listener_accepts(lst["hostname"], host) for lst in listeners):
        return False
    for route in k8s_objects(region, "HTTPRoute"):
        if not any(p.get("kind") == "Gateway" for p in route["spec"]["parentRefs"]):
            continue
        if not any(listener_accepts(h, host) for h in route["spec"].get("hostnames", [])):
            continue
        for rule in route["spec"]["rules"]:
            for match in rule.get("matches", []):
                kind, value = match["path"]["type"], match["path"]["value"]
                if (kind == "Exact" and path == value) or (
                        kind == "PathPrefix" and (path == value or path.startswith(value.rstrip("/") + "/"))):
                    return True
    return False


def probe(check_inputs: dict, region: Recording, state: RegionState) -> bool:
    """One health check request as Route 53 sends it: HTTPS to fqdn:port, Host and SNI the fqdn."""
    if not state.up:
        return False
    host, path = check_inputs["fqdn"], check_inputs["resourcePath"]
    if not routed(region, host, path):
        status, body = 404, ""
    else:
        body = json.dumps({"model_version_status": [{"version": "1", "state": state.model_state,
                                                     "status": {"error_code": "OK", "error_message": ""}}]},
                          indent=1)
        status = 200
    if not 200 <= status < 400:
        return False
    if check_inputs["type"] == "HTTPS_STR_MATCH":
        return check_inputs["searchString"] in body[:SEARCH_LIMIT_BYTES]
    return True


def health_check_id(resource) -> str:
    # The id the mock engine gives (stacks/mock_engine.py PlanMocks.new_resource), which records refer to.
    return f"{resource.name}-{_short_hash(resource.type + resource.name)}-id"


LATENCY_ORDER = {"us-east-1": ["us-east-1", "us-west-2"], "us-west-2": ["us-west-2", "us-east-1"],
                 "eu-west-1": ["us-east-1", "us-west-2"]}
"""Stand-in latency from a resolver's region to each record's region, nearest first."""


def answer(global_plan: Recording, regions: dict[str, Recording], states: dict[str, RegionState],
           resolver_region: str = "eu-west-1") -> str:
    """What Route 53 answers for the global name, after every health check has settled."""
    checks = {health_check_id(r): r for r in global_plan.of_type("aws:route53/healthCheck:HealthCheck")}

    def healthy(record: dict) -> bool:
        check_inputs = checks[record["healthCheckId"]].inputs
        region = next(r for r in REGIONS if check_inputs["fqdn"] == f"{r}.models.example.com")
        return probe(check_inputs, regions[region], states[region])

    records = [r.inputs for r in global_plan.of_type("aws:route53/record:Record")]
    assert len({(r["name"], r["type"]) for r in records}) == 1
    if all("failoverRoutingPolicies" in r for r in records):
        (primary,) = [r for r in records if r["failoverRoutingPolicies"][0]["type"] == "PRIMARY"]
        (secondary,) = [r for r in records if r["failoverRoutingPolicies"][0]["type"] == "SECONDARY"]
        if healthy(primary):
            return primary["records"][0]
        if healthy(secondary):
            return secondary["records"][0]
        return primary["records"][0]
    by_latency = sorted(records, key=lambda r: LATENCY_ORDER[resolver_region].index(
        r["latencyRoutingPolicies"][0]["region"]))
    alive = [r for r in by_latency if healthy(r)]
    return (alive or by_latency)[0]["records"][0]


def serves(answer_host: str, regions: dict[str, Recording], states: dict[str, RegionState]) -> bool:
    """Whether a client following the answer reaches a model (the global name through that region)."""
    region = answer_host.split(".")[0]
    state = states[region]
    return (state.up and state.model_state == "AVAILABLE"
            and routed(regions[region], "api.models.example.com", "/v1/models/digits:predict"))


def test_failover_all_healthy_answers_the_primary(global_plan, regions):
    states = {r: RegionState() for r in REGIONS}
    assert answer(global_plan, regions, states) == "us-east-1.models.example.com"
    assert serves("us-east-1.models.example.com", regions, states)


def test_failover_primary_down_answers_the_secondary(global_plan, regions):
    states = {"us-east-1": RegionState(up=False), "us-west-2": RegionState()}
    host = answer(global_plan, regions, states)
    assert host == "us-west-2.models.example.com"
    assert serves(host, regions, states)


def test_failover_primary_up_but_no_model_available_answers_the_secondary(global_plan, regions):
    # The load balancer answers, but the model's only version failed to load: HTTPS would pass (200),
    # the string match does not.
    states = {"us-east-1": RegionState(model_state="END"), "us-west-2": RegionState()}
    assert answer(global_plan, regions, states) == "us-west-2.models.example.com"


def test_failover_secondary_down_changes_nothing(global_plan, regions):
    states = {"us-east-1": RegionState(), "us-west-2": RegionState(up=False)}
    assert answer(global_plan, regions, states) == "us-east-1.models.example.com"


def test_failover_both_down_answers_the_primary_and_nothing_serves(global_plan, regions):
    # Route 53 then answers with the primary (the secondary is unhealthy): clients get a name that fails.
    states = {r: RegionState(up=False) for r in REGIONS}
    host = answer(global_plan, regions, states)
    assert host == "us-east-1.models.example.com"
    assert not any(serves(f"{r}.models.example.com", regions, states) for r in REGIONS)


def test_latency_routing_answers_the_nearest_healthy_region(tmp_path, regional_outputs, regions):
    plan = plan_global(tmp_path, regional_outputs, routing="latency")
    records = {r.inputs["setIdentifier"]: r.inputs for r in plan.of_type("aws:route53/record:Record")}
    assert {k: v["latencyRoutingPolicies"] for k, v in records.items()} == {
        r: [{"region": r}] for r in REGIONS}
    healthy = {r: RegionState() for r in REGIONS}
    assert answer(plan, regions, healthy, "us-west-2") == "us-west-2.models.example.com"
    assert answer(plan, regions, healthy, "us-east-1") == "us-east-1.models.example.com"
    west_down = {"us-east-1": RegionState(), "us-west-2": RegionState(up=False)}
    assert answer(plan, regions, west_down, "us-west-2") == "us-east-1.models.example.com"
    # All unhealthy: Route 53 answers as though all were healthy (the nearest), which does not serve.
    down = {r: RegionState(up=False) for r in REGIONS}
    assert answer(plan, regions, down, "us-west-2") == "us-west-2.models.example.com"
    assert plan.outputs["regions"] == list(REGIONS)


def test_a_health_path_the_gateway_does_not_route_is_unhealthy(regions):
    # The drill's probe is not a rubber stamp: a path outside the routed model prefixes gets a 404.
    check_inputs = {"fqdn": "us-east-1.models.example.com", "resourcePath": "/v1/models/other", "type": "HTTPS"}
    assert not probe(check_inputs, regions["us-east-1"], RegionState())
    check_inputs["resourcePath"] = "/v1/models/digits"
    assert probe(check_inputs, regions["us-east-1"], RegionState())
    check_inputs["fqdn"] = "us-east-1.other.example.com"
    assert not probe(check_inputs, regions["us-east-1"], RegionState())


# --- what the global program refuses ---------------------------------------------------------------

def refusal(tmp_path, regional, **overrides) -> str:
    with pytest.raises(pulumi.RunError) as err:
        plan_global(tmp_path, regional, **overrides)
    return str(err.value)


@pytest.mark.parametrize("overrides,message", [
    ({"name": "example.com"}, "tfserving-global:name: 'example.com' is not allowed"),
    ({"name": "api.models.example.org"}, "tfserving-global:name: 'api.models.example.org' is not allowed"),
    ({"zoneId": "zone-1"}, "tfserving-global:zoneId: 'zone-1'"),
    ({"healthCheck": {"requestInterval": 20}}, "tfserving-global:healthCheck.requestInterval: 20"),
    ({"healthCheck": {"failureThreshold": 11}}, "tfserving-global:healthCheck.failureThreshold: 11"),
    ({"healthCheck": {"checkerRegions": ["us-east-1", "eu-west-1"]}},
     "tfserving-global:healthCheck.checkerRegions: ['us-east-1', 'eu-west-1'] is not allowed: expected at least 3"),
    ({"healthCheck": {"checkerRegions": ["us-east-1", "eu-west-1", "eu-central-1"]}},
     "tfserving-global:healthCheck.checkerRegions.2: 'eu-central-1'"),
    ({"ttl": -5}, "tfserving-global:ttl: -5"),
    ({"regions": [{"stack": f"{ORG}/region-us-east-1", "region": "us-east-1"}]}, "tfserving-global:regions: "),
    ({"regions": [{"stack": f"{ORG}/region-us-east-1", "region": "us-east-1"},
                  {"stack": f"{ORG}/region-us-east-1", "region": "us-west-2"}]},
     "tfserving-global:regions.1.stack: 'example-org/tfserving-platform/region-us-east-1' is not allowed"),
])
def test_config_errors_name_the_key(tmp_path, regional_outputs, overrides, message):
    assert message in refusal(tmp_path, regional_outputs, **overrides)


def test_failover_with_three_regions_is_refused(tmp_path, regional_outputs):
    three = [{"stack": f"{ORG}/region-{r}", "region": r} for r in (*REGIONS, "eu-west-1")]
    assert "tfserving-global:regions: " in refusal(tmp_path, regional_outputs, regions=three)
    assert "exactly 2 regions for routing failover" in refusal(tmp_path, regional_outputs, regions=three)


def test_a_region_without_exposure_is_refused(tmp_path, regional_outputs):
    without = {**regional_outputs, f"{ORG}/region-us-west-2": {
        k: v for k, v in regional_outputs[f"{ORG}/region-us-west-2"].items() if k != "regionalEndpoint"}}
    message = refusal(tmp_path, without)
    assert message.startswith("tfserving-global:regions.1.stack: 'example-org/tfserving-platform/region-us-west-2' "
                              "has no regionalEndpoint output")


def test_a_region_in_another_region_than_configured_is_refused(tmp_path, regional_outputs):
    swapped = [{"stack": f"{ORG}/region-us-east-1", "region": "us-west-2"},
               {"stack": f"{ORG}/region-us-west-2", "region": "us-east-1"}]
    assert refusal(tmp_path, regional_outputs, regions=swapped).startswith(
        "tfserving-global:regions.0.region: 'us-west-2' is not allowed: expected 'us-east-1'")


def test_a_region_whose_listener_does_not_take_the_global_name_is_refused(tmp_path, regional_outputs):
    narrow = json.loads(json.dumps(regional_outputs))
    endpoint = narrow[f"{ORG}/region-us-east-1"]["regionalEndpoint"]
    endpoint.update(listenerHostname="us-east-1.models.example.com", hostname="us-east-1.models.example.com")
    message = refusal(tmp_path, narrow)
    assert "regions.0.stack" in message and "does not accept 'api.models.example.com'" in message


def test_a_region_requiring_authentication_is_refused(tmp_path, regional_outputs):
    jwt = json.loads(json.dumps(regional_outputs))
    jwt[f"{ORG}/region-us-west-2"]["regionalEndpoint"]["authentication"] = "jwt"
    assert "regions.1.stack" in refusal(tmp_path, jwt)
    assert "cannot present" in refusal(tmp_path, jwt)


def test_checker_regions_are_route53s_own():
    model = botocore.session.get_session().get_service_model("route53")
    assert list(global_settings.CHECKER_REGIONS) == model.shape_for("HealthCheckRegion").enum
    assert model.shape_for("HealthCheckRegionList").metadata["min"] == 3
    assert (model.shape_for("FailureThreshold").metadata["min"], model.shape_for("FailureThreshold").metadata["max"]) == (1, 10)


# --- listener hostnames and the regional output --------------------------------------------------

def test_listener_hostname_matching_follows_gateway_api():
    # kubernetes-sigs/gateway-api apis/v1/gateway_types.go, Listener.Hostname.
    assert listener_accepts("*.example.com", "test.example.com")
    assert listener_accepts("*.example.com", "foo.test.example.com")
    assert not listener_accepts("*.example.com", "example.com")
    assert not listener_accepts("*.example.com", "testexample.com")
    assert listener_accepts("models.example.com", "models.example.com")
    assert not listener_accepts("models.example.com", "api.models.example.com")
    assert regional_hostname("us-west-2", "*.models.example.com") == "us-west-2.models.example.com"


def test_the_health_path_is_a_model_of_a_server_that_does_not_scale_to_zero(plan_with):
    # dev's GPU server sleeps outside office hours: checking its model would fail the region every night.
    rec = plan_with(exposure={"enabled": True, "gatewayClassName": "eg", "hostname": "*.models.example.com",
                              "tlsSecretName": "models-tls", "proxyNamespaces": ["envoy-gateway-system"]},
                    clusterPrerequisites=["gateway-api-crds"])
    assert rec.outputs["regionalEndpoint"]["healthPath"] == "/v1/models/digits-cpu"
    assert routed(rec, "us-east-1.models.example.com", "/v1/models/digits-cpu")


def test_the_global_plan_follows_the_component_conventions(global_plan):
    from tests import test_component_conventions as conventions

    conventions.test_children_are_named_after_their_component(global_plan)
    conventions.test_component_types_follow_pkg_module_type(global_plan)
    provider = global_plan.one("pulumi:providers:aws", "aws")
    for r in global_plan.resources:
        if r.custom and r.type.startswith("aws:"):
            assert r.provider.startswith(provider.urn + "::") and global_plan.by_urn(r.parent).type == (
                "tfplatform:aws:GlobalEndpoint"), r.urn


def _global_plan_cli():
    import importlib.util

    spec = importlib.util.spec_from_file_location("global_plan_cli", GLOBAL / "plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_global_plan_cli_prints_the_records_and_the_failover_time(capsys):
    cli = _global_plan_cli()
    regions = [f"--region={ORG}/region-{r}=tests/stacks/Pulumi.region-{r}.yaml" for r in REGIONS]
    assert cli.main(["--stack", GLOBAL_STACK, *regions]) == 0
    out = capsys.readouterr().out
    assert out.count("aws:route53/healthCheck:HealthCheck") == 2 and out.count("aws:route53/record:Record") == 2
    assert ("failover time: a region that stops serving is left out of the global name's answers after at most "
            "~210 s (90 s to fail its health check + 60 s record TTL in resolvers + 60 s Route 53 propagation)") in out
    # Without the second region's stack the reference reads no outputs: refused, naming the key.
    assert cli.main(["--stack", GLOBAL_STACK, regions[0]]) == 1
    assert "error: tfserving-global:regions.1.stack: " in capsys.readouterr().err


def test_a_status_only_check_keeps_a_region_whose_model_failed(tmp_path, regional_outputs, regions):
    # Why HTTPS_STR_MATCH is the default: with type HTTPS a 200 from the status URL is enough, so a region
    # whose model version ended (failed load, unloaded) keeps getting the traffic.
    plan = plan_global(tmp_path, regional_outputs, healthCheck={"type": "HTTPS"})
    assert all("searchString" not in r.inputs for r in plan.of_type("aws:route53/healthCheck:HealthCheck"))
    states = {"us-east-1": RegionState(model_state="END"), "us-west-2": RegionState()}
    assert answer(plan, regions, states) == "us-east-1.models.example.com"
    assert not serves("us-east-1.models.example.com", regions, states)
