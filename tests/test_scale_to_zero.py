"""Scale to zero with KEDA (components/serving/scale_to_zero.py): settings, the ScaledObjects and what they
replace, holding requests through KEDA's interceptor (the router run as real nginx), network policies,
KEDA's install, deploy rules and the cost floor.

The dev stack's GPU server scales to zero (Pulumi.dev.yaml); prod does not. Behaviour the mock engine
cannot show is checked where it can be run: the cron windows against KEDA's own rule (a reimplementation of
cron_scaler.go checked instant by instant), the request-rate query through promtool, the router's held
requests through nginx with a stand-in interceptor.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent import futures
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
import yaml

from components.gcp.gke_cluster import control_plane_ports
from components.helm_charts import KEDA, KEDA_HTTP_ADD_ON, PROMETHEUS_ADAPTER
from components.serving.autoscaling import hpa_behavior
from components.serving.canary_router import HoldRouting, render_router_config
from components.serving.scale_to_zero import (
    INTERCEPTOR_PODS,
    INTERCEPTOR_SERVICE,
    KEDA_NAMESPACE,
    TRANSFER_HPA,
    OfficeHours,
    keda_ports,
    parse_cron,
    request_rate_query,
    scaled_object_spec,
    window_share,
)
from components.serving.tfserving_config import ServedModel
from stacks.cost import AWS_PRICES, HOURS_PER_MONTH, estimate
from stacks.deploy_rules import check
from stacks.plan import ROOT, plan_stack, to_json
from tests.conftest import k8s_object, k8s_objects, run_promtool, stack_file_with
from tests.crd_validation import validate_custom_resources
from tests.test_canary_router import StandInServer, nginx  # noqa: F401 (nginx: the fixture, Debian's nginx)
from tests.test_settings import NS, assert_config_error, raw, stack_raw

STABLE, CANARY = "tfserving-default", "tfserving-default-canary"
BERLIN = ("0 8 * * 1-5", "0 19 * * 1-5", "Europe/Berlin")
CHART = "kubernetes:helm.sh/v4:Chart"


def dev_servers(**stz: object) -> dict:
    """dev's servers with the default server's scaleToZero block replaced (merged)."""
    servers = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"][f"{NS}:servers"]
    servers["default"]["scaleToZero"] = {**servers["default"]["scaleToZero"], **stz}
    return servers


def scaled_object(rec, name: str) -> dict:
    return k8s_object(rec, "ScaledObject", name)


def triggers(rec, name: str) -> dict[str, dict]:
    return {t["name"]: t for t in scaled_object(rec, name)["spec"]["triggers"]}


# 1. Settings ------------------------------------------------------------------------------------

def with_default(**changes: object) -> dict[str, str]:
    config = stack_raw("dev")
    servers = json.loads(config[f"{NS}:servers"])
    for key, value in changes.items():
        if value is None and key != "targetRequestsPerSecond":
            servers["default"].pop(key, None)
        else:
            servers["default"][key] = value
    return {**config, f"{NS}:servers": json.dumps(servers)}


def schedule(**window: object) -> dict:
    return {"schedule": {"timezone": "Europe/Berlin", "start": "0 8 * * 1-5", "end": "0 19 * * 1-5", **window}}


KEY = f"{NS}:servers.default"
BAD = [
    (with_default(scaleToZero=None), f"{KEY}.replicas", "0", "0 together with a scaleToZero block"),
    (with_default(replicas=1), f"{KEY}.scaleToZero", None, "replicas 0 (not 1)"),
    (with_default(scaleToZero={"holdRequests": False}), f"{KEY}.scaleToZero.holdRequests", "false",
     "nothing wakes the server"),
    (with_default(scaleToZero=schedule(start="0 8 * * 1-7")), f"{KEY}.scaleToZero.schedule.start", "'0 8 * * 1-7'",
     "7 is above the maximum 6"),
    (with_default(scaleToZero=schedule(start="0 0 8 * * 1-5")), f"{KEY}.scaleToZero.schedule.start", None,
     "expected exactly 5 fields"),
    (with_default(scaleToZero=schedule(end="@daily")), f"{KEY}.scaleToZero.schedule.end", "'@daily'", "descriptor"),
    (with_default(scaleToZero=schedule(end="TZ=UTC 0 19 * * 1-5")), f"{KEY}.scaleToZero.schedule.end", None,
     "set timezone instead"),
    (with_default(scaleToZero=schedule(end="0 8 * * MON-FRI")), f"{KEY}.scaleToZero.schedule.end",
     "'0 8 * * MON-FRI'", "never closes"),
    (with_default(scaleToZero=schedule(timezone="Europe/Berlinn")), f"{KEY}.scaleToZero.schedule.timezone",
     "'Europe/Berlinn'", "IANA time zone"),
    (with_default(scaleToZero=schedule(timezone="Local")), f"{KEY}.scaleToZero.schedule.timezone", "'Local'",
     "IANA time zone"),
    (with_default(scaleToZero=schedule(replicas=3)), f"{KEY}.scaleToZero.schedule.replicas", "3",
     "at most maxReplicas (2)"),
    (with_default(scaleToZero={"idleAfterSeconds": 30}), f"{KEY}.scaleToZero.idleAfterSeconds", "30", "60"),
    (with_default(scaleToZero={"coldStartTimeoutSeconds": 7200}), f"{KEY}.scaleToZero.coldStartTimeoutSeconds",
     "7200", "3600"),
    (with_default(targetRequestsPerSecond=None), f"{KEY}.targetRequestsPerSecond", "null", "request-rate trigger"),
    ({**with_default(), **raw(trafficRouter="istio", clusterPrerequisites=["istio"])},
     f"{KEY}.scaleToZero.holdRequests", "true", "unless trafficRouter is proxy (not istio)"),
    ({**with_default(scaleToZero={**schedule(), "holdRequests": False}), **raw(monitoring={"install": False})},
     f"{KEY}.scaleToZero.holdRequests", "false", "true while monitoring.install is false"),
    ({**with_default(), **raw(servingNamespace="keda")}, f"{NS}:servingNamespace", "'keda'",
     "other than 'keda'"),
]


@pytest.mark.parametrize("config,key,value,allowed", BAD, ids=[f"{b[1].split(':')[1]}-{i}" for i, b in enumerate(BAD)])
def test_a_bad_scale_to_zero_setting_names_its_key(config, key, value, allowed):
    if value is None:
        from stacks.config import ConfigError, parse_settings

        with pytest.raises(ConfigError) as caught:
            parse_settings(config)
        line = next((ln for ln in str(caught.value).splitlines() if f"{key} = " in ln), None)
        assert line is not None and allowed in line, str(caught.value)
    else:
        assert_config_error(config, key, value, allowed)


def test_the_dev_settings_and_their_defaults():
    from stacks.config import parse_settings

    settings = parse_settings(stack_raw("dev"))
    stz = settings.servers["default"].scale_to_zero
    assert settings.servers["default"].replicas == 0
    assert (stz.schedule.start, stz.schedule.end, stz.schedule.timezone) == BERLIN
    assert (stz.idle_after_seconds, stz.hold_requests, stz.cold_start_timeout_seconds) == (900, True, 600)
    # prod serves 24/7, and a server without the block keeps its floor of 1.
    assert all(s.scale_to_zero is None for s in parse_settings(stack_raw("prod")).servers.values())
    assert settings.servers["cpu"].scale_to_zero is None and settings.servers["cpu"].replicas == 1
    defaults = parse_settings(with_default(scaleToZero={})).servers["default"].scale_to_zero
    assert (defaults.schedule, defaults.idle_after_seconds, defaults.hold_requests,
            defaults.cold_start_timeout_seconds) == (None, 900, True, 600)


# 2. Cron as KEDA reads it ---------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["0 8 * * 1-5", "*/15 8-18 * * MON-FRI", "0 0 1 jan *", "30 7 ? * sun",
                                  "0 22 * * 0,6", "5/10 * * * *", "0 8 1-7 * 1"])
def test_robfig_accepts(spec):
    parse_cron(spec)


@pytest.mark.parametrize("spec,why", [
    ("0 8 * * 7", "above the maximum 6"), ("60 8 * * *", "above the maximum 59"), ("0 8 0 * *", "below the minimum 1"),
    ("0 8 * * 5-1", "starts after it ends"), ("*/0 * * * *", "must be positive"), ("0 8 * *", "exactly 5 fields"),
    ("0 0 8 * * 1", "exactly 5 fields"), ("@weekly", "descriptor"), ("CRON_TZ=UTC 0 8 * * *", "timezone"),
    ("0 8 * * mon-fry", "not a number"), ("1-2-3 * * * *", "too many hyphens"), ("1/2/3 * * * *", "too many slashes"),
    ("", "empty")])
def test_robfig_refuses(spec, why):
    with pytest.raises(ValueError, match=why):
        parse_cron(spec)


def next_match(spec, tz: ZoneInfo, after: datetime) -> datetime:
    """robfig's Schedule.Next, brute force: the first whole local minute after ``after`` that matches."""
    t = after.astimezone(tz).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(8 * 24 * 60):
        local = t.astimezone(tz)
        if (local.minute in spec.minutes and local.hour in spec.hours and local.month in spec.months
                and spec.day_matches(local.date())):
            return t
        t += timedelta(minutes=1)
    raise AssertionError("no match within 8 days")


def keda_active(start: str, end: str, tz_name: str, now: datetime) -> bool:
    """cron_scaler.go GetMetricsAndActivity, literally: inside unless the next start comes before the next end."""
    tz = ZoneInfo(tz_name)
    next_start, next_end = next_match(parse_cron(start), tz, now), next_match(parse_cron(end), tz, now)
    return not next_start < next_end


def test_keda_rule_on_known_instants():
    berlin = ZoneInfo("Europe/Berlin")
    at = lambda *a: datetime(*a, tzinfo=berlin)  # noqa: E731
    assert keda_active(*BERLIN, at(2027, 3, 3, 9, 30))        # Wednesday morning
    assert not keda_active(*BERLIN, at(2027, 3, 3, 19, 30))   # Wednesday evening
    assert not keda_active(*BERLIN, at(2027, 3, 6, 12, 0))    # Saturday
    assert not keda_active(*BERLIN, at(2027, 3, 8, 7, 59))    # Monday before eight
    assert keda_active("0 22 * * *", "0 6 * * *", "UTC", datetime(2027, 3, 3, 23, 0, tzinfo=timezone.utc))


@pytest.mark.parametrize("start,end,tz,expected", [
    (*BERLIN, 55 / 168),                                     # 11 h a weekday
    ("0 22 * * *", "0 6 * * *", "UTC", 8 / 24),              # across midnight
    ("0 9 * * 1", "0 17 * * 5", "America/New_York", 104 / 168),  # Monday 9:00 to Friday 17:00
])
def test_window_share_is_the_time_keda_keeps_pods(start, end, tz, expected):
    share = window_share(start, end, tz)
    assert share == pytest.approx(expected, abs=0.002)
    # And it is KEDA's rule: instants drawn over the year agree with the share (fixed seed, 4-sigma band).
    rng = random.Random(7)
    first = datetime(2027, 1, 4, tzinfo=ZoneInfo(tz))
    hits = sum(keda_active(start, end, tz, first + timedelta(minutes=rng.randrange(364 * 24 * 60)))
               for _ in range(300))
    assert abs(hits - 300 * share) <= 4 * (300 * share * (1 - share)) ** 0.5


# 3. The ScaledObjects of dev ------------------------------------------------------------------

def test_no_hpa_on_a_deployment_keda_scales(dev, prod):
    assert {h["metadata"]["name"] for h in k8s_objects(dev, "HorizontalPodAutoscaler")} == {"tfserving-cpu"}
    assert {s["metadata"]["name"] for s in k8s_objects(dev, "ScaledObject")} == {STABLE, CANARY}
    # The disruption budget stays: one pod at a time in a drain; a scale to zero is no eviction.
    assert k8s_object(dev, "PodDisruptionBudget", STABLE)["spec"] == {
        "maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "tfserving",
                                                          "app.kubernetes.io/instance": STABLE}}}
    # prod keeps its HPA exactly, and no KEDA at all.
    assert {h["metadata"]["name"] for h in k8s_objects(prod, "HorizontalPodAutoscaler")} == {STABLE}
    assert not k8s_objects(prod, "ScaledObject") and not [c for c in prod.of_type(CHART) if "keda" in c.inputs["chart"]]


def test_the_stable_scaled_object(dev):
    spec = scaled_object(dev, STABLE)["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": STABLE}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (0, 2, 900)
    hpa = spec["advanced"]["horizontalPodAutoscalerConfig"]
    assert hpa == {"name": STABLE, "behavior": hpa_behavior(300)}
    assert scaled_object(dev, STABLE)["metadata"]["annotations"] == {TRANSFER_HPA: "true"}
    t = triggers(dev, STABLE)
    assert list(t) == ["office-hours", "requests-per-second", "held-rest", "held-grpc", "cpu"]
    assert t["office-hours"] == {"type": "cron", "name": "office-hours", "metadata": {
        "timezone": "Europe/Berlin", "start": "0 8 * * 1-5", "end": "0 19 * * 1-5", "desiredReplicas": "1"}}
    assert t["requests-per-second"]["metadata"] == {
        "serverAddress": "http://kps-prometheus.monitoring.svc:9090",
        "query": request_rate_query("serving", "default", "stable"), "threshold": "20", "activationThreshold": "0"}
    assert [t[n]["metadata"] for n in ("held-rest", "held-grpc")] == [
        {"scalerAddress": "keda-add-ons-http-external-scaler.keda:9090", "interceptorRoute": f"{STABLE}-{p}"}
        for p in ("rest", "grpc")]
    assert t["cpu"] == {"type": "cpu", "name": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}


def test_the_canary_scales_to_zero_with_it(dev):
    # Starts at zero pods and is left to KEDA: pulumi up never resets the count.
    assert k8s_object(dev, "Deployment", CANARY)["spec"]["replicas"] == 0
    assert dev.one("kubernetes:apps/v1:Deployment", f"{CANARY}-deployment").ignore_changes == ["spec.replicas"]
    assert k8s_object(dev, "Deployment", STABLE)["spec"]["replicas"] == 0
    spec = scaled_object(dev, CANARY)["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 1)  # canaryReplicas
    t = triggers(dev, CANARY)
    assert list(t) == ["office-hours", "requests-per-second", "held-rest", "held-grpc"]  # no HPA before, no cpu
    assert t["office-hours"]["metadata"]["desiredReplicas"] == "1"
    assert 'track="canary"' in t["requests-per-second"]["metadata"]["query"]


def test_scaled_object_spec_refuses_what_keda_refuses():
    # A cpu trigger alone cannot scale to zero (KEDA's webhook refuses it): a spec needs a waker, and a
    # waker (schedule or held route) is itself a trigger that is not cpu/memory.
    with pytest.raises(ValueError, match="nothing wakes it"):
        scaled_object_spec("d", 2, idle_after_seconds=60, cpu_utilization=70)
    with pytest.raises(ValueError, match="nothing wakes it"):
        scaled_object_spec("d", 2, idle_after_seconds=60, held_routes=[], cpu_utilization=70)
    with pytest.raises(ValueError, match="together"):
        scaled_object_spec("d", 2, idle_after_seconds=60, held_routes=["d-rest"], prometheus_url="http://p:9090")
    with pytest.raises(ValueError, match="same"):
        scaled_object_spec("d", 2, idle_after_seconds=60, schedule=OfficeHours("0 8 * * *", "0 8 * * *"))
    with pytest.raises(ValueError, match="outside 1..2"):
        scaled_object_spec("d", 2, idle_after_seconds=60, schedule=OfficeHours("0 8 * * *", "0 9 * * *", replicas=3))
    ok = scaled_object_spec("d", 2, idle_after_seconds=60, held_routes=["d-rest"], cpu_utilization=70)
    assert [t["type"] for t in ok["triggers"]] == ["external-push", "cpu"]


def test_keda_objects_validate_against_their_crds_and_a_broken_one_fails(dev):
    objects = k8s_objects(dev, "ScaledObject") + k8s_objects(dev, "InterceptorRoute")
    assert len(objects) == 6
    assert validate_custom_resources(objects) == [None] * 6
    broken = json.loads(json.dumps(scaled_object(dev, STABLE)))
    broken["spec"]["triggers"][0].pop("type")
    broken["spec"]["cooldown"] = 900  # a misspelt field the CRD does not declare
    (result,) = validate_custom_resources([broken])
    assert result and "type" in result and "cooldown" in result
    too_many = json.loads(json.dumps(scaled_object(dev, STABLE)))
    too_many["spec"]["minReplicaCount"] = 3  # above maxReplicaCount 2: the CRD's CEL rule
    (result,) = validate_custom_resources([too_many])
    assert result and "minReplicaCount" in result
    route = json.loads(json.dumps(k8s_object(dev, "InterceptorRoute", f"{STABLE}-rest")))
    route["spec"]["target"]["portName"] = "http"  # port and portName: exactly one allowed
    (result,) = validate_custom_resources([route])
    assert result and "exactly one of 'port' or 'portName'" in result


# 4. The request-rate query, through promtool ---------------------------------------------------

def test_the_request_rate_query_counts_one_track_and_wakes_on_one_request(promtool, tmp_path):
    series = lambda server, track, pod, values: {  # noqa: E731
        "series": f':tensorflow:serving:request_count{{namespace="serving",server="{server}",track="{track}",'
                  f'pod="{pod}",job="tfserving-{server}",model_name="digits",status="OK"}}', "values": values}
    rules = {"groups": [{"name": "keda", "rules": [
        {"record": "stable_rate", "expr": request_rate_query("serving", "default", "stable")},
        {"record": "canary_rate", "expr": request_rate_query("serving", "default", "canary")}]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    test = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            series("default", "stable", "a", "0+600x10"),   # 10 requests/s
            series("default", "stable", "b", "0+1200x10"),  # 20 requests/s
            series("default", "canary", "c", "0 0 0 0 0 0 0 0 1 1 1"),  # one request at minute 8
            series("cpu", "stable", "d", "0+6000x10"),      # another server: not counted
        ],
        "promql_expr_test": [
            {"expr": "stable_rate", "eval_time": "5m", "exp_samples": [{"labels": "stable_rate", "value": 30}]},
            # One request in the 2-minute window: a rate above the activation threshold 0, so KEDA keeps
            # (or, with a pod counting it, wakes) the track.
            {"expr": "canary_rate > 0", "eval_time": "9m",
             "exp_samples": [{"labels": "canary_rate", "value": 1 / 120}]},
            {"expr": "canary_rate", "eval_time": "5m", "exp_samples": [{"labels": "canary_rate", "value": 0}]},
        ]}]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    done = run_promtool(promtool, "test", "rules", "test.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# 5. Holding requests --------------------------------------------------------------------------

def test_the_router_sends_every_request_of_a_held_server_to_the_interceptor(dev):
    conf = k8s_object(dev, "ConfigMap", f"{STABLE}-router-config")["data"]["nginx.conf"]
    interceptor = f"{INTERCEPTOR_SERVICE}.{KEDA_NAMESPACE}.svc.cluster.local:8080"
    assert conf.count(f"server {interceptor};") == 4  # stable/canary x REST/gRPC
    assert "tfserving-default-stable.serving" not in conf
    assert f"tfs_canary_rest {CANARY}-hold.serving.svc.cluster.local;" in conf
    assert f"default         {STABLE}-hold.serving.svc.cluster.local;" in conf
    assert "grpc_set_header Host $tfs_grpc_host;" in conf
    # Timeouts cover a cold start (600 s) on top of TF Serving's own.
    assert "proxy_read_timeout 635s;" in conf and "grpc_read_timeout 660s;" in conf
    # The client Service selects the router (callers keep one address), which waits for the hold
    # Services and the add-on chart (nginx resolves the interceptor's name at start).
    router = dev.one("kubernetes:apps/v1:Deployment", f"{STABLE}-router-deployment")
    names = {dev.by_urn(u).name for u in router.dependencies if dev.by_urn(u)}
    assert {f"{STABLE}-hold", f"{CANARY}-hold", "keda-http-add-on"} <= names


def test_a_held_server_without_a_canary_still_gets_the_router(plan_with):
    servers = dev_servers()
    servers["default"]["models"]["digits"].pop("canaryVersion")
    rec = plan_with(servers=servers)
    assert k8s_object(rec, "Service", STABLE)["spec"]["selector"]["app.kubernetes.io/name"] == "tfserving-router"
    conf = k8s_object(rec, "ConfigMap", f"{STABLE}-router-config")["data"]["nginx.conf"]
    assert f"tfs_canary_rest {STABLE}-hold.serving.svc.cluster.local;" in conf  # no canary: all stable
    assert {r["metadata"]["name"] for r in k8s_objects(rec, "InterceptorRoute")} == {f"{STABLE}-rest",
                                                                                      f"{STABLE}-grpc"}
    # Not held: no add-on, no router (no canary), the client Service never awaited while asleep.
    off = plan_with(servers=dev_servers(holdRequests=False))
    assert not k8s_objects(off, "InterceptorRoute")
    assert not [c for c in off.of_type(CHART) if c.inputs["chart"] == "keda-add-ons-http"]
    assert [t["type"] for t in scaled_object(off, STABLE)["spec"]["triggers"]] == ["cron", "prometheus", "cpu"]


def test_an_exposed_held_server_is_reached_through_the_router(plan_with):
    exposure = {"enabled": True, "gatewayClassName": "eg", "hostname": "models.example.com",
                "tlsSecretName": "models-tls", "proxyNamespaces": ["envoy-gateway-system"]}
    rec = plan_with(exposure=exposure, clusterPrerequisites=["gateway-api-crds"])
    route = k8s_object(rec, "HTTPRoute", f"{STABLE}-external")["spec"]
    # Every rule goes to the client Service, which selects the router: the gateway's traffic is held too.
    assert {b["name"] for rule in route["rules"] for b in rule["backendRefs"]} == {STABLE}
    assert k8s_object(rec, "Service", STABLE)["spec"]["selector"]["app.kubernetes.io/name"] == "tfserving-router"
    assert not check(rec)


def test_the_interceptor_routes_and_the_hold_service(dev):
    rest, grpc_route = (k8s_object(dev, "InterceptorRoute", f"{STABLE}-{p}")["spec"] for p in ("rest", "grpc"))
    host = f"{STABLE}-hold.serving.svc.cluster.local"
    assert rest["target"] == {"service": f"{STABLE}-hold", "port": 8501}
    assert rest["rules"] == [{"hosts": [host], "paths": [{"value": "/v1"}]}]
    assert grpc_route["target"] == {"service": f"{STABLE}-hold", "port": 8500}
    assert grpc_route["rules"] == [{"hosts": [host], "paths": [
        {"value": "/tensorflow.serving.PredictionService"}, {"value": "/tensorflow.serving.ModelService"}]}]
    for spec in (rest, grpc_route):
        assert spec["timeouts"] == {"readiness": "600s", "request": "0s"}
        assert spec["scalingMetric"] == {"requestRate": {"targetValue": 20, "window": "1m", "granularity": "1s"}}
    hold = k8s_object(dev, "Service", f"{STABLE}-hold")
    ports = {p["name"]: p for p in hold["spec"]["ports"]}
    # The interceptor speaks h2c only to a port with this appProtocol (interceptor/handler/upstream.go).
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c" and ports["http"]["appProtocol"] == "http"
    assert hold["spec"]["selector"] == {"app.kubernetes.io/name": "tfserving", "app.kubernetes.io/instance": STABLE}
    # Not scraped twice: the ServiceMonitor selects app.kubernetes.io/name=tfserving Services.
    assert hold["metadata"]["labels"]["app.kubernetes.io/name"] == "tfserving-hold"
    # The Services selecting a sleeping server's pods are never awaited (no endpoint while asleep).
    for name in (f"{STABLE}-hold", f"{CANARY}-hold", f"{STABLE}-stable", CANARY):
        assert k8s_object(dev, "Service", name)["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}


def test_without_the_platforms_prometheus_held_traffic_keeps_it_awake(plan_with):
    rec = plan_with(monitoring={"install": False})
    assert [t["type"] for t in scaled_object(rec, STABLE)["spec"]["triggers"]] == [
        "cron", "external-push", "external-push", "cpu"]


def test_the_plan_says_what_a_client_sees(dev):
    note = dev.outputs["servingEndpoints"]["default"]["scaleToZero"]
    assert "REST or gRPC" in note and "600 s" in note and "canaryGrpc/canaryRest endpoints are not held" in note
    assert "scaleToZero" not in dev.outputs["servingEndpoints"]["cpu"]


class Interceptor:
    """Stand-in of KEDA's interceptor: holds each request ``hold`` seconds, then answers with the Host it got."""

    def __init__(self, address: str, rest_port: int, grpc_port: int, hold: float):
        self.hosts: list[tuple[str, str, str]] = []
        lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def handle_one(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(hold)
                with lock:
                    stand_in.hosts.append(("rest", self.path, self.headers.get("Host")))
                payload = json.dumps({"host": self.headers.get("Host")}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = handle_one

            def log_message(self, *args) -> None:
                pass

        self.http = StandInServer((address, rest_port), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

        def predict(request: bytes, context: grpc.ServicerContext) -> bytes:
            time.sleep(hold)
            host = dict(context.invocation_metadata()).get("host", "")
            with lock:
                stand_in.hosts.append(("grpc", "Predict", host))
            return host.encode()

        handler = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
            "Predict": grpc.unary_unary_rpc_method_handler(predict)})
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=24), handlers=[handler])
        assert self.grpc.add_insecure_port(f"{address}:{grpc_port}") == grpc_port
        self.grpc.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.grpc.stop(0)


def test_held_requests_reach_the_interceptor_with_their_tracks_host(nginx):
    from tests.test_canary_router import as_nobody, free_port, nginx_t, router_dir

    address, router_address = "127.0.0.6", "127.0.0.7"
    rest, grpc_port, health, router_rest, router_grpc = (free_port() for _ in range(5))
    stand_in = Interceptor(address, rest, grpc_port, hold=1.0)
    stable_host, canary_host = f"{STABLE}-hold.serving.svc.cluster.local", f"{CANARY}-hold.serving.svc.cluster.local"
    models = [ServedModel("digits", version_policy="specific", versions=(1,), labels={"stable": 1}, canary_version=2)]
    try:
        with router_dir() as base:
            text = render_router_config(
                models, "127.0.0.2", "127.0.0.3", 20, rest_port=router_rest, grpc_port=router_grpc,
                health_port=health, listen_address=router_address, tmp_dir=str(base / "tmp"),
                hold=HoldRouting(address, stable_host, canary_host, 600), upstream_port={"rest": rest, "grpc": grpc_port})
            checked = nginx_t(nginx, base, text)
            assert checked.returncode == 0, checked.stderr
            log = base / "error.log"
            log.touch(mode=0o666)
            log.chmod(0o666)
            with log.open("wb") as err:
                proc = subprocess.Popen([nginx, "-p", str(base), "-c", str(base / "nginx.conf"), "-g", "daemon off;"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, **as_nobody())
            try:
                deadline = time.monotonic() + 10
                while True:
                    with contextlib.suppress(OSError):
                        conn = http.client.HTTPConnection(router_address, health, timeout=1)
                        conn.request("GET", "/healthz")
                        if conn.getresponse().status == 200:
                            break
                    assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                    time.sleep(0.05)

                def call_rest(path: str) -> tuple[int, str, float]:
                    started = time.monotonic()
                    conn = http.client.HTTPConnection(router_address, router_rest, timeout=30)
                    conn.request("POST", path, body=b'{"instances": [[0.0]]}')
                    response = conn.getresponse()
                    body = response.read()
                    assert response.status == 200, (response.status, body[:200], log.read_text())
                    return response.status, json.loads(body)["host"], time.monotonic() - started

                with futures.ThreadPoolExecutor(max_workers=24) as pool:
                    pinned = list(pool.map(call_rest, ["/v1/models/digits/labels/canary:predict"] * 8))
                    split = list(pool.map(call_rest, ["/v1/models/digits:predict"] * 48))
                    with grpc.insecure_channel(f"{router_address}:{router_grpc}",
                                               options=[("grpc.enable_http_proxy", 0)]) as channel:
                        predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
                        grpc_hosts = list(pool.map(lambda _: predict(b"x", timeout=30).decode(), range(48)))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    finally:
        stand_in.close()
    # Held 1 s and still answered; a pinned canary path always carries the canary's Host.
    assert all(status == 200 and seconds >= 1.0 for status, _, seconds in pinned + split)
    assert {host for _, host, _ in pinned} == {canary_host}
    # The weighted split: each request carries the Host of the track nginx drew (both seen, nothing else).
    assert {host for _, host, _ in split} == {stable_host, canary_host}
    assert set(grpc_hosts) == {stable_host, canary_host}
    assert Counter(kind for kind, _, _ in stand_in.hosts) == Counter({"rest": 56, "grpc": 48})


# 6. Network policies --------------------------------------------------------------------------

def policy(rec, name: str) -> dict:
    return k8s_object(rec, "NetworkPolicy", name)["spec"]


def peer(namespace: str, pods: dict) -> dict:
    return {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}]}, "podSelector": {"matchLabels": pods}}


def test_serving_policies_let_the_interceptor_in_and_the_router_out_to_it(dev, prod):
    interceptor = peer("keda", dict(INTERCEPTOR_PODS))
    both = [{"protocol": "TCP", "port": 8500}, {"protocol": "TCP", "port": 8501}]
    assert {"from": [interceptor], "ports": both} in policy(dev, f"{STABLE}-allow")["ingress"]
    assert {"to": [interceptor], "ports": [{"protocol": "TCP", "port": 8080}]} in policy(dev, f"{STABLE}-router-allow")["egress"]
    # Only for the held server.
    for rec, name in ((dev, "tfserving-cpu-allow"), (prod, f"{STABLE}-allow"), (prod, f"{STABLE}-router-allow")):
        assert "http-add-on" not in json.dumps(policy(rec, name)), name


def test_keda_namespace_is_default_deny_with_each_flow_allowed(dev):
    ns = k8s_object(dev, "Namespace", "keda")["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "restricted"
    keda = {p["metadata"]["name"]: p["spec"] for p in k8s_objects(dev, "NetworkPolicy")
            if p["metadata"]["namespace"] == "keda"}
    assert keda["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert set(keda) == {"default-deny", "keda-operator", "keda-metrics-apiserver", "keda-admission-webhooks",
                         "http-add-on-interceptor", "http-add-on-scaler", "http-add-on-operator"}
    prometheus = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                          "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
                  "ports": [{"protocol": "TCP", "port": 9090}]}
    assert prometheus in keda["keda-operator"]["egress"]
    # The control plane calls the metrics API and the webhooks: their ports admit any source, nothing else does.
    assert keda["keda-metrics-apiserver"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 6443}]}]
    assert keda["keda-admission-webhooks"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 10250}]}]
    router = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "serving"}},
              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "tfserving-router"}}}
    assert keda["http-add-on-interceptor"]["ingress"][0] == {"from": [router], "ports": [{"protocol": "TCP", "port": 8080}]}
    serving = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "serving"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "tfserving"}}}
    assert {"to": [serving], "ports": [{"protocol": "TCP", "port": 8500}, {"protocol": "TCP", "port": 8501}]} in \
        keda["http-add-on-interceptor"]["egress"]
    # Nobody reaches instance metadata (IMDS credentials of the node).
    blocks = [to["ipBlock"] for spec in keda.values() for rule in spec.get("egress") or []
              for to in rule.get("to") or [] if "ipBlock" in to]
    assert blocks and all(b == {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]} for b in blocks)


# 7. KEDA's install ----------------------------------------------------------------------------

def test_keda_charts_are_pinned_in_their_namespace_and_ordered(dev):
    charts = {c.inputs["chart"]: c for c in dev.of_type(CHART)}
    for spec in (KEDA, KEDA_HTTP_ADD_ON):
        inputs = charts[spec.chart].inputs
        assert (inputs["version"], inputs["repositoryOpts"], inputs["namespace"]) == (
            spec.version, {"repo": "https://kedacore.github.io/charts"}, "keda")
    assert charts["keda"].urn in charts["keda-add-ons-http"].dependencies  # its interceptor ScaledObject
    values = charts["keda"].inputs["values"]
    assert {values["image"][c]["tag"] for c in ("keda", "metricsApiServer", "webhooks")} == {KEDA.app_version}
    assert values["nodeSelector"] == {"tfplatform.io/node-pool": "system"}
    add_on = charts["keda-add-ons-http"].inputs["values"]
    assert add_on["images"]["tag"] == KEDA_HTTP_ADD_ON.app_version
    context = add_on["securityContext"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"} and context["capabilities"] == {"drop": ["ALL"]}
    assert add_on["podSecurityContext"]["runAsNonRoot"] is True
    # The ScaledObjects wait for both charts (CRDs, webhook, interceptor).
    so = dev.one("kubernetes:keda.sh/v1alpha1:ScaledObject", f"{STABLE}-scaledobject")
    assert {charts["keda"].urn, charts["keda-add-ons-http"].urn} <= set(so.dependencies)


def test_keda_runs_on_gke_too_and_its_ports_are_open_there(plan_with):
    servers = yaml.safe_load((ROOT / "Pulumi.gke-dev.yaml").read_text())["config"][f"{NS}:servers"]
    servers["default"].update(replicas=0, scaleToZero={"schedule": dict(zip(("start", "end", "timezone"), BERLIN))})
    rec = plan_with("gke-dev", servers=servers)
    assert {c.inputs["chart"] for c in rec.of_type(CHART)} >= {"keda", "keda-add-ons-http"}
    assert {s["metadata"]["name"] for s in k8s_objects(rec, "ScaledObject")} == {STABLE, CANARY}
    assert not check(rec)
    # GKE's control plane reaches private nodes on 443 and 10250 and the platform's firewall ports only:
    # KEDA's metrics API (external.metrics.k8s.io) and webhooks listen on ports among them.
    assert {str(p) for p in keda_ports().values()} <= set(control_plane_ports())


def test_keda_and_prometheus_adapter_serve_different_metrics_apis(dev):
    # prometheus-adapter registers external.metrics.k8s.io only with rules.external, and the resource
    # metrics API only with rules.resource (chart templates/external-metrics-apiservice.yaml,
    # resource-metrics-apiservice.yaml); the platform sets neither, so KEDA alone serves external metrics.
    adapter = dev.one(CHART, "monitoring-prometheus-adapter").inputs["values"]["rules"]
    assert set(adapter) == {"default", "custom"} and adapter["default"] is False
    assert PROMETHEUS_ADAPTER.base_values()["rules"] == {"default": False}


# 8. Cost --------------------------------------------------------------------------------------

def test_dev_gpu_floor_is_zero_and_office_hours_are_priced(dev):
    cost = estimate(to_json(dev))
    gpu = next(line for line in cost.lines if line.item == "eks-gpu")
    price = AWS_PRICES["us-east-1"]["g5.xlarge"]
    assert gpu.hourly_min == 0 and gpu.hourly_max == round(5 * price, 4) and not gpu.held_by
    share = window_share(*BERLIN)
    assert gpu.hourly_typical == pytest.approx(2 * price * share, abs=1e-4)
    assert "0 node(s) at the floor: servers.default canary, servers.default stable scale to zero" in gpu.asleep
    assert cost.monthly_typical == pytest.approx((cost.hourly[0] + 2 * price * share) * HOURS_PER_MONTH, abs=0.05)


def test_plan_cli_prints_the_idle_floor(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stacks", "plan", "--stack", "dev"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("Estimated compute cost:"))
    prices = AWS_PRICES["us-east-1"]
    low = float(line.split("$", 1)[1].split("-", 1)[0])
    # EKS 0.10 + NAT 0.045 + 2 x m6i.large; no GPU node at idle.
    assert low == pytest.approx(0.1 + 0.045 + 2 * prices["m6i.large"], abs=0.01)
    assert "typical $" in line
    assert "  floor eks-gpu: 0 node(s) at the floor" in done.stdout


# 9. Deploy semantics of the stacks --------------------------------------------------------------

@pytest.mark.parametrize("redeploy", [False, True])
def test_dev_keeps_every_deploy_rule(redeploy):
    rec = plan_stack("dev", previous_outputs={"stackDeployed": True} if redeploy else None)
    assert not check(rec)

