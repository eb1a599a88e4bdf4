"""The serving and GPU alert rules, run through the real ``promtool`` (Debian package ``prometheus``).

``promtool check rules`` parses the generated file. For every alert, ``promtool test rules`` runs two
unit tests at the same evaluation time: synthetic series where it must fire (with exactly the
expected labels, severity included, and rendered annotations), mixed with look-alike series that
must not (other namespace, other job, not long enough), and a healthy case where it must stay
quiet. Alerts with thresholds are run again with custom :class:`AlertThresholds` under which the
healthy series (or, for the HPA, a shorter spell at max) fire, so the thresholds really reach the
expressions. ``scripts/ensure-tools.sh`` (run by ``make test``) installs promtool.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from components.monitoring.alerts import (
    DEFAULT_RUNBOOK_BASE_URL,
    RUNBOOK_DOC,
    AlertThresholds,
    alerting_rules,
    serving_alert_rules,
    write_rule_files,
)
from tests.conftest import run_promtool as run

ROOT = Path(__file__).resolve().parent.parent
NS = "serving"
ENV = "staging"
DEFAULT = AlertThresholds()

SEVERITY = {
    "TFServingTargetDown": "warning",
    "TFServingPodStuckInInit": "warning",
    "TFServingNoAvailableReplicas": "critical",
    "TFServingHighErrorRatio": "critical",
    "TFServingHighP99Latency": "warning",
    "TFServingHPAMaxedOut": "warning",
    "TFServingPodRestarting": "warning",
    "TFServingCPUNearLimit": "warning",
    "TFServingMemoryNearLimit": "warning",
    "GPUUtilizationHigh": "warning",
    "GPUIdleWhileAllocated": "warning",
    "GPUXidError": "critical",
}

NODE_WIDE = {"GPUXidError"}
"""Alerts on every GPU of the cluster, not only the serving namespace's."""


# --- synthetic series ------------------------------------------------------------------------

def s(name: str, labels: dict[str, str], values: str) -> dict:
    """One promtool input series (values in expanding notation, one sample per minute)."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


@dataclass(frozen=True)
class Fire:
    labels: dict[str, str]
    """The alert's labels from the series (without alertname, severity, environment)."""
    value: str
    """How ``$value`` renders in the annotations."""


@dataclass(frozen=True)
class Case:
    eval_time: str
    firing: list[dict]
    fires: list[Fire]
    healthy: list[dict]
    custom: AlertThresholds | None = None
    """Thresholds under which ``custom_series`` (default: the healthy series) fire as ``custom_fires``."""
    custom_fires: list[Fire] = field(default_factory=list)
    custom_series: list[dict] | None = None


def up(pod: str, job: str = "tfserving-resnet", ns: str = NS) -> dict:
    return {"job": job, "namespace": ns, "service": job, "endpoint": "http", "pod": pod,
            "instance": f"{pod}:8501"}


def ksm(ns: str = NS, **labels: str) -> dict:
    return {"job": "kube-state-metrics", "namespace": ns, **labels}


def requests(model: str, status: str, pod: str = "tfserving-resnet-a", ns: str = NS) -> dict:
    return {"job": "tfserving-resnet", "namespace": ns, "pod": pod, "model_name": model, "status": status}


def latency(model: str, le: str) -> dict:
    return {"job": "tfserving-resnet", "namespace": NS, "pod": "tfserving-resnet-a", "model_name": model,
            "API": "predict", "entrypoint": "REST", "le": le}


LE = ["100000", "250000", "500000", "1000000", "+Inf"]
"""Bucket bounds in µs (100 ms ... 1 s)."""


def histogram(model: str, per_minute: list[int]) -> list[dict]:
    """Latency buckets growing by ``per_minute`` (cumulative counts, one per bound of LE)."""
    return [s(":tensorflow:serving:request_latency_bucket", latency(model, le), f"0+{n}x20")
            for le, n in zip(LE, per_minute)]


def cadvisor(pod: str, container: str, ns: str = NS) -> dict:
    return {"job": "kubelet", "metrics_path": "/metrics/cadvisor", "namespace": ns, "pod": pod,
            "container": container, "id": f"/kubepods/{pod}/{container}"}


def limit(pod: str, container: str, resource: str, ns: str = NS) -> dict:
    return ksm(ns, pod=pod, container=container, resource=resource,
               unit="core" if resource == "cpu" else "byte")


def container(pod: str, name: str) -> dict:
    return {"namespace": NS, "pod": pod, "container": name}


def dcgm(gpu: str, pod: str | None, ns: str = NS) -> dict:
    labels = {"job": "dcgm-exporter", "instance": "10.0.1.5:9400", "gpu": gpu, "UUID": f"GPU-{gpu}a1b",
              "device": f"nvidia{gpu}", "modelName": "NVIDIA L4", "Hostname": "gpu-node-1", "namespace": ns}
    if pod:
        labels.update(pod=pod, container="tfserving")
    return labels


def hpa(name: str, current: str, maximum: str, minimum: str, ns: str = NS) -> list[dict]:
    labels = ksm(ns, horizontalpodautoscaler=name)
    return [s("kube_horizontalpodautoscaler_status_current_replicas", labels, current),
            s("kube_horizontalpodautoscaler_spec_max_replicas", labels, maximum),
            s("kube_horizontalpodautoscaler_spec_min_replicas", labels, minimum)]


POD_A, POD_B = "tfserving-resnet-a", "tfserving-resnet-b"
RESTARTS = "kube_pod_container_status_restarts_total"
GIB = 1024 ** 3
CPU_SERIES = "container_cpu_usage_seconds_total"
MEM_SERIES = "container_memory_working_set_bytes"
LIMITS = "kube_pod_container_resource_limits"
INIT_LIMITS = "kube_pod_init_container_resource_limits"
GPU = "DCGM_FI_DEV_GPU_UTIL"
XID = "DCGM_FI_DEV_XID_ERRORS"
INIT_RUNNING = "kube_pod_init_container_status_running"
INIT_WAITING = "kube_pod_init_container_status_waiting"


def init_state(pod: str, running: str, waiting: str, container: str = "model-sync-init",
               ns: str = NS) -> list[dict]:
    """kube-state-metrics' running and waiting series (1 or 0) of one init container."""
    labels = ksm(ns, pod=pod, container=container)
    return [s(INIT_RUNNING, labels, running), s(INIT_WAITING, labels, waiting)]


def sync_init(pod: str, ns: str = NS) -> dict:
    return ksm(ns, pod=pod, container="model-sync-init")

CASES: dict[str, Case] = {
    "TFServingTargetDown": Case(
        eval_time="12m",
        firing=[
            s("up", up(POD_A), "1x4 0x10"),                                   # down since 5m: fires
            s("up", up("tfserving-resnet-canary-c", job="tfserving-resnet-canary"), "0x15"),  # canary too
            s("up", up(POD_B), "1x9 0x5"),                                    # down for 2m only
            s("up", up("tfserving-x", ns="other"), "0x15"),                   # another namespace
            s("up", {**up("node-exporter-z", job="node-exporter")}, "0x15"),  # not TF Serving
        ],
        fires=[Fire(up(POD_A), ""),
               Fire(up("tfserving-resnet-canary-c", job="tfserving-resnet-canary"), "")],
        healthy=[s("up", up(POD_A), "1x15"),
                 s("up", up("tfserving-resnet-canary-c", job="tfserving-resnet-canary"), "1x15")],
    ),
    "TFServingPodStuckInInit": Case(
        eval_time="20m",
        firing=[
            # Waiting for a version that is not in the bucket: running since the pod started.
            *init_state(POD_A, running="1x25", waiting="0x25"),
            # The sync image cannot be pulled: waiting (ImagePullBackOff) all along.
            *init_state("tfserving-resnet-canary-c", running="0x25", waiting="1x25"),
            # Crash-looping between running and waiting: still in init the whole time.
            *init_state("tfserving-resnet-d", running="1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1",
                        waiting="0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0"),
            # In init for 10 minutes only, then done (terminated: neither running nor waiting).
            *init_state(POD_B, running="0x9 1x9 0x6", waiting="1x9 0x15"),
            # The model-sync native sidecar is an init container running all the time: quiet.
            *init_state(POD_B, running="0x9 0x9 1x6", waiting="0x25", container="model-sync"),
            *init_state("tfserving-resnet-e", running="1x25", waiting="0x25", container="model-sync"),
            # Another namespace, and a pod that is not TF Serving with a container of the same name.
            *init_state("tfserving-x", running="1x25", waiting="0x25", ns="other"),
            *init_state("batch-loader-x", running="1x25", waiting="0x25"),
        ],
        fires=[Fire(sync_init(POD_A), "1"), Fire(sync_init("tfserving-resnet-canary-c"), "1"),
               Fire(sync_init("tfserving-resnet-d"), "1")],
        # A normal start: 2 minutes in init, then the sidecar runs beside TF Serving.
        healthy=[*init_state(POD_A, running="1x2 0x22", waiting="0x25"),
                 *init_state(POD_A, running="0x2 1x22", waiting="1x2 0x22", container="model-sync")],
    ),
    "TFServingNoAvailableReplicas": Case(
        eval_time="12m",
        firing=[
            s("kube_deployment_status_replicas_available", ksm(deployment="tfserving-resnet"), "2x4 0x10"),
            s("kube_deployment_spec_replicas", ksm(deployment="tfserving-resnet"), "2x15"),
            # A canary scaled to zero on purpose: quiet.
            s("kube_deployment_status_replicas_available", ksm(deployment="tfserving-resnet-canary"), "0x15"),
            s("kube_deployment_spec_replicas", ksm(deployment="tfserving-resnet-canary"), "0x15"),
            # Not TF Serving, and another namespace: quiet.
            s("kube_deployment_status_replicas_available", ksm(deployment="gateway"), "0x15"),
            s("kube_deployment_spec_replicas", ksm(deployment="gateway"), "1x15"),
            s("kube_deployment_status_replicas_available", ksm("other", deployment="tfserving-x"), "0x15"),
            s("kube_deployment_spec_replicas", ksm("other", deployment="tfserving-x"), "1x15"),
        ],
        fires=[Fire(ksm(deployment="tfserving-resnet"), "")],
        healthy=[
            s("kube_deployment_status_replicas_available", ksm(deployment="tfserving-resnet"), "2x15"),
            s("kube_deployment_spec_replicas", ksm(deployment="tfserving-resnet"), "2x15"),
            s("kube_deployment_status_replicas_available", ksm(deployment="tfserving-resnet-canary"), "1x15"),
            s("kube_deployment_spec_replicas", ksm(deployment="tfserving-resnet-canary"), "1x15"),
        ],
    ),
    "TFServingHighErrorRatio": Case(
        eval_time="15m",
        firing=[
            # resnet: 10 % INTERNAL over two pods (9 + 1 requests/s on each).
            s(":tensorflow:serving:request_count", requests("resnet", "OK"), "0+540x20"),
            s(":tensorflow:serving:request_count", requests("resnet", "INTERNAL"), "0+60x20"),
            s(":tensorflow:serving:request_count", requests("resnet", "OK", pod=POD_B), "0+540x20"),
            s(":tensorflow:serving:request_count", requests("resnet", "INTERNAL", pod=POD_B), "0+60x20"),
            # mnist: no errors at all; idle: old errors, no traffic now (0/0); other namespace.
            s(":tensorflow:serving:request_count", requests("mnist", "OK"), "0+600x20"),
            s(":tensorflow:serving:request_count", requests("idle", "OK"), "100x20"),
            s(":tensorflow:serving:request_count", requests("idle", "INTERNAL"), "7x20"),
            s(":tensorflow:serving:request_count", requests("resnet", "INTERNAL", ns="other"), "0+600x20"),
        ],
        fires=[Fire({"namespace": NS, "model_name": "resnet"}, "10%")],
        healthy=[
            s(":tensorflow:serving:request_count", requests("resnet", "OK"), "0+594x20"),
            s(":tensorflow:serving:request_count", requests("resnet", "INVALID_ARGUMENT"), "0+6x20"),
        ],
        custom=AlertThresholds(error_ratio=0.005),
        custom_fires=[Fire({"namespace": NS, "model_name": "resnet"}, "1%")],
    ),
    "TFServingHighP99Latency": Case(
        eval_time="15m",
        # resnet: 95 of 100 requests under 500 ms, all under 1 s: p99 = 900 ms (900000 µs).
        firing=histogram("resnet", [50, 80, 95, 100, 100]) + histogram("idle", [0, 0, 0, 0, 0]),
        fires=[Fire({"namespace": NS, "model_name": "resnet"}, "900000")],
        # 98 of 100 under 250 ms: p99 = 375 ms, within the 500 ms SLO ...
        healthy=histogram("resnet", [80, 98, 100, 100, 100]),
        # ... but not within 100 ms.
        custom=AlertThresholds(p99_latency_ms=100),
        custom_fires=[Fire({"namespace": NS, "model_name": "resnet"}, "375000")],
    ),
    "TFServingHPAMaxedOut": Case(
        eval_time="35m",
        firing=[
            *hpa("tfserving-resnet", current="5x40", maximum="5x40", minimum="1x40"),  # fires
            # min == max: it cannot scale at all; being at max is by design.
            *hpa("tfserving-bert", current="4x40", maximum="4x40", minimum="4x40"),
            # At max only since 10m: 25 minutes < 30.
            *hpa("tfserving-mnist", current="3x9 5x30", maximum="5x40", minimum="1x40"),
            *hpa("tfserving-x", current="5x40", maximum="5x40", minimum="1x40", ns="other"),
        ],
        fires=[Fire({"namespace": NS, "horizontalpodautoscaler": "tfserving-resnet"}, "5")],
        healthy=hpa("tfserving-resnet", current="2x40", maximum="5x40", minimum="1x40"),
        # 20 minutes: mnist (at max for 25) fires.
        custom=AlertThresholds(hpa_maxed_minutes=20),
        custom_series=hpa("tfserving-mnist", current="3x9 5x30", maximum="5x40", minimum="1x40"),
        custom_fires=[Fire({"namespace": NS, "horizontalpodautoscaler": "tfserving-mnist"}, "5")],
    ),
    "TFServingPodRestarting": Case(
        eval_time="45m",
        firing=[
            # 4 restarts at 30..33m; the model-sync sidecar (an init container) 3 restarts.
            s(RESTARTS, ksm(pod=POD_A, container="tfserving"), "0x29 1 2 3 4x15"),
            s("kube_pod_init_container_status_restarts_total", ksm(pod=POD_A, container="model-sync"),
              "0x29 1 2 3x15"),
            # 2 restarts: below 3. 5 restarts, but in the first 5 minutes (out of the window).
            s(RESTARTS, ksm(pod=POD_B, container="tfserving"), "0x29 1 2x15"),
            s(RESTARTS, ksm(pod="tfserving-resnet-old", container="tfserving"), "0 1 2 3 4 5x40"),
            s(RESTARTS, ksm("other", pod="x", container="x"), "0+1x45"),
        ],
        fires=[Fire(ksm(pod=POD_A, container="tfserving"), "4"),
               Fire(ksm(pod=POD_A, container="model-sync"), "3")],
        healthy=[s(RESTARTS, ksm(pod=POD_A, container="tfserving"), "0x29 1x16")],
        custom=AlertThresholds(restarts_per_30m=1),
        custom_fires=[Fire(ksm(pod=POD_A, container="tfserving"), "1")],
    ),
    "TFServingCPUNearLimit": Case(
        eval_time="25m",
        firing=[
            # 1.9 of 2 cores; the sidecar 0.095 of its 0.1 (an init-container limit).
            s(CPU_SERIES, cadvisor(POD_A, "tfserving"), "0+114x30"),
            s(LIMITS, limit(POD_A, "tfserving", "cpu"), "2x30"),
            s(LIMITS, limit(POD_A, "tfserving", "memory"), f"{4 * GIB}x30"),
            s(CPU_SERIES, cadvisor(POD_A, "model-sync"), "0+5.7x30"),
            s(INIT_LIMITS, limit(POD_A, "model-sync", "cpu"), "0.1x30"),
            # The pod-level cgroup (container=""), and another namespace: ignored.
            s(CPU_SERIES, cadvisor(POD_A, ""), "0+500x30"),
            s(CPU_SERIES, cadvisor("x", "x", ns="other"), "0+120x30"),
            s(LIMITS, limit("x", "x", "cpu", ns="other"), "2x30"),
        ],
        fires=[Fire(container(POD_A, "tfserving"), "95%"), Fire(container(POD_A, "model-sync"), "95%")],
        healthy=[
            s(CPU_SERIES, cadvisor(POD_A, "tfserving"), "0+60x30"),
            s(LIMITS, limit(POD_A, "tfserving", "cpu"), "2x30"),
            s(CPU_SERIES, cadvisor(POD_A, "model-sync"), "0+3x30"),
            s(INIT_LIMITS, limit(POD_A, "model-sync", "cpu"), "0.1x30"),
        ],
        custom=AlertThresholds(cpu_limit_ratio=0.4),
        custom_fires=[Fire(container(POD_A, "tfserving"), "50%"),
                      Fire(container(POD_A, "model-sync"), "50%")],
    ),
    "TFServingMemoryNearLimit": Case(
        eval_time="25m",
        firing=[
            s(MEM_SERIES, cadvisor(POD_A, "tfserving"), f"{int(0.95 * 4 * GIB)}x30"),
            s(LIMITS, limit(POD_A, "tfserving", "memory"), f"{4 * GIB}x30"),
            s(LIMITS, limit(POD_A, "tfserving", "cpu"), "2x30"),
            s(MEM_SERIES, cadvisor(POD_A, "model-sync"), f"{128 * 1024 ** 2}x30"),
            s(INIT_LIMITS, limit(POD_A, "model-sync", "memory"), f"{256 * 1024 ** 2}x30"),
            s(MEM_SERIES, cadvisor(POD_A, ""), f"{8 * GIB}x30"),
            s(MEM_SERIES, cadvisor("x", "x", ns="other"), f"{GIB}x30"),
            s(LIMITS, limit("x", "x", "memory", ns="other"), f"{GIB}x30"),
        ],
        fires=[Fire(container(POD_A, "tfserving"), "95%")],
        healthy=[
            s(MEM_SERIES, cadvisor(POD_A, "tfserving"), f"{2 * GIB}x30"),
            s(LIMITS, limit(POD_A, "tfserving", "memory"), f"{4 * GIB}x30"),
            s(MEM_SERIES, cadvisor(POD_A, "model-sync"), f"{128 * 1024 ** 2}x30"),
            s(INIT_LIMITS, limit(POD_A, "model-sync", "memory"), f"{256 * 1024 ** 2}x30"),
        ],
        custom=AlertThresholds(memory_limit_ratio=0.4),
        custom_fires=[Fire(container(POD_A, "tfserving"), "50%"),
                      Fire(container(POD_A, "model-sync"), "50%")],
    ),
    "GPUUtilizationHigh": Case(
        eval_time="40m",
        firing=[
            s(GPU, dcgm("0", POD_A), "97x40"),
            s(GPU, dcgm("1", POD_B), "50x19 99x21"),      # high only since 20m
            s(GPU, dcgm("2", None, ns="nvidia"), "100x40"),  # no pod: not a serving GPU
            s(GPU, dcgm("4", None), "100x40"),               # no pod, even with a serving namespace
            s(GPU, dcgm("3", "x", ns="other"), "100x40"),
        ],
        fires=[Fire(dcgm("0", POD_A), "97")],
        healthy=[s(GPU, dcgm("0", POD_A), "50x40")],
        custom=AlertThresholds(gpu_util_high_percent=40),
        custom_fires=[Fire(dcgm("0", POD_A), "50")],
    ),
    "GPUIdleWhileAllocated": Case(
        eval_time="70m",
        firing=[
            s(GPU, dcgm("0", POD_A), "2x80"),
            s(GPU, dcgm("1", POD_B), "40x40 1x40"),        # idle only since 41m
            s(GPU, dcgm("2", None, ns="nvidia"), "0x80"),  # unallocated GPUs idle by design
            s(GPU, dcgm("4", None), "0x80"),
            s(GPU, dcgm("3", "x", ns="other"), "0x80"),
        ],
        fires=[Fire(dcgm("0", POD_A), "2")],
        healthy=[s(GPU, dcgm("0", POD_A), "40x80")],
        custom=AlertThresholds(gpu_idle_percent=45),
        custom_fires=[Fire(dcgm("0", POD_A), "40")],
    ),
    "GPUXidError": Case(
        eval_time="10m",
        firing=[
            s(XID, dcgm("0", POD_A), "0x5 79x5"),            # fell off the bus at 6m
            s(XID, dcgm("2", None, ns="nvidia"), "48x10"),   # unallocated GPUs count too
            s(XID, dcgm("1", POD_B), "0x10"),               # healthy GPU: 0
            s(XID, dcgm("3", "x", ns="other"), "13x3 0x7"),  # reset since: quiet again
        ],
        fires=[Fire(dcgm("0", POD_A), "79"), Fire(dcgm("2", None, ns="nvidia"), "48")],
        healthy=[s(XID, dcgm("0", POD_A), "0x10"), s(XID, dcgm("2", None, ns="nvidia"), "0x10")],
    ),
}


# --- promtool ----------------------------------------------------------------------------------



def rules_for(thresholds: AlertThresholds) -> dict:
    return serving_alert_rules(NS, ENV, thresholds)


def rule_named(doc: dict, alert: str) -> dict:
    (rule,) = [r for r in alerting_rules(doc) if r["alert"] == alert]
    return rule


def expected_alert(rule: dict, fire: Fire) -> dict:
    """What promtool must report: the series labels plus severity and environment (spelled out
    here, not copied from the rule), and the annotations as Prometheus renders them."""
    def render(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: fire.labels.get(m.group(1), ""), text)
        return re.sub(r"\{\{[^{}]*\$value[^{}]*\}\}", fire.value, text)

    return {"exp_labels": {**fire.labels, "severity": SEVERITY[rule["alert"]], "environment": ENV},
            "exp_annotations": {key: render(value) for key, value in rule["annotations"].items()}}


def unit_test(name: str, series: list[dict], alert: str, eval_time: str, expected: list[dict]) -> dict:
    return {"name": name, "interval": "1m", "input_series": series,
            "alert_rule_test": [{"eval_time": eval_time, "alertname": alert, "exp_alerts": expected}]}


def run_tests(promtool: str, tmp_path: Path, thresholds: AlertThresholds,
              tests: list[dict]) -> subprocess.CompletedProcess:
    rules = write_rule_files(rules_for(thresholds), tmp_path)
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m",
                                         "tests": tests}, sort_keys=False, allow_unicode=True))
    return run(promtool, "test", "rules", test_file.name, cwd=tmp_path)


# --- tests -------------------------------------------------------------------------------------

def test_every_alert_has_a_case_and_a_severity():
    names = [r["alert"] for r in alerting_rules(rules_for(DEFAULT))]
    assert len(names) == len(set(names))
    assert set(names) == set(CASES) == set(SEVERITY)
    for name in names:
        assert re.fullmatch(r"(TFServing|GPU)[A-Z][A-Za-z0-9]+", name), name


def test_promtool_check_rules_passes(promtool, tmp_path):
    path = write_rule_files(rules_for(DEFAULT), tmp_path)
    result = run(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(SEVERITY)} rules found" in result.stdout, result.stdout


@pytest.mark.parametrize("alert", list(CASES))
def test_alert_fires_and_stays_quiet_when_healthy(promtool, tmp_path, alert):
    case, rule = CASES[alert], rule_named(rules_for(DEFAULT), alert)
    result = run_tests(promtool, tmp_path, DEFAULT, [
        unit_test(f"{alert} fires", case.firing, alert, case.eval_time,
                  [expected_alert(rule, fire) for fire in case.fires]),
        unit_test(f"{alert} quiet", case.healthy, alert, case.eval_time, []),
    ])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


@pytest.mark.parametrize("alert", [name for name, case in CASES.items() if case.custom])
def test_custom_thresholds_are_honoured(promtool, tmp_path, alert):
    case = CASES[alert]
    rule = rule_named(rules_for(case.custom), alert)
    series = case.custom_series if case.custom_series is not None else case.healthy
    result = run_tests(promtool, tmp_path, case.custom, [
        unit_test(f"{alert} fires with {case.custom}", series, alert, case.eval_time,
                  [expected_alert(rule, fire) for fire in case.custom_fires])])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails(promtool, tmp_path):
    # The checks above can fail: expecting the alert on healthy series is reported.
    case = CASES["TFServingHighP99Latency"]
    rule = rule_named(rules_for(DEFAULT), "TFServingHighP99Latency")
    result = run_tests(promtool, tmp_path, DEFAULT, [
        unit_test("wrong", case.healthy, "TFServingHighP99Latency", case.eval_time,
                  [expected_alert(rule, case.custom_fires[0])])])
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_is_labelled_and_annotated():
    for rule in alerting_rules(rules_for(DEFAULT)):
        name = rule["alert"]
        assert rule["labels"] == {"severity": SEVERITY[name], "environment": ENV}, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert notes["summary"].strip() and notes["description"].strip(), name
        assert "{{ $labels." in notes["description"], name
        assert notes["runbook_url"] == f"{DEFAULT_RUNBOOK_BASE_URL}#{name.lower()}", name
        url = urlsplit(notes["runbook_url"])  # absolute, as kube-prometheus' runbook_url
        assert url.scheme == "https" and url.netloc and url.path.endswith("/" + RUNBOOK_DOC), name


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections(doc: str) -> list[str]:
    """The ``## `` headings of the runbook document: one per alert, nothing else at that level."""
    return re.findall(r"^## (.+?)\s*$", re.sub(r"(?ms)^```.*?^```", "", doc), flags=re.M)


def test_every_alert_has_a_runbook_section_and_every_section_an_alert():
    doc = (ROOT / RUNBOOK_DOC).read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", doc, flags=re.M)}
    rules = alerting_rules(rules_for(DEFAULT))
    for rule in rules:
        assert rule["annotations"]["runbook_url"].split("#", 1)[1] in anchors, rule["alert"]
    # And no runbook for an alert that no longer exists (or under another name).
    sections = runbook_sections(doc)
    assert sorted(sections) == sorted(r["alert"] for r in rules)
    assert len(set(sections)) == len(sections)


def test_the_section_check_fails_on_a_stale_runbook():
    doc = (ROOT / RUNBOOK_DOC).read_text()
    stale = doc.replace("## TFServingTargetDown\n", "## TFServingScrapeDown\n")
    assert stale != doc
    assert sorted(runbook_sections(stale)) != sorted(r["alert"] for r in alerting_rules(rules_for(DEFAULT)))


def test_a_stack_points_the_runbooks_at_its_own_copy():
    """monitoring.alerts.runbookBaseUrl reaches every alert, as stacks/platform.py passes the settings."""
    from stacks.monitoring_settings import AlertSettings

    base = "https://git.example.com/platform/tfserving-platform/-/blob/main/docs/runbooks.md"
    settings = AlertSettings.model_validate({"runbookBaseUrl": base})
    doc = serving_alert_rules(NS, ENV, AlertThresholds(**settings.model_dump()))
    urls = [r["annotations"]["runbook_url"] for r in alerting_rules(doc)]
    assert urls == [f"{base}#{r['alert'].lower()}" for r in alerting_rules(doc)] and urls


@pytest.mark.parametrize("bad", ["docs/runbooks.md", "README.md#alert-runbooks", "https://h/x#frag",
                                 "https://h/x?a=1", "ftp://h/runbooks.md", "https://h/with space", "https:///x", ""])
def test_a_runbook_base_that_is_not_an_absolute_url_is_refused(bad):
    from pydantic import ValidationError

    from stacks.monitoring_settings import AlertSettings

    from stacks.settings_base import FieldProblem

    with pytest.raises(ValidationError) as refused:
        AlertSettings.model_validate({"runbookBaseUrl": bad})
    cause = (refused.value.errors()[0].get("ctx") or {}).get("error")
    assert isinstance(cause, FieldProblem) and cause.field == "runbookBaseUrl" and cause.value == bad
    assert "absolute http(s) URL" in cause.allowed  # what stacks/config.py prints after the key and value
    with pytest.raises(ValueError, match="runbook_base_url"):
        AlertThresholds(runbook_base_url=bad)


def test_init_alert_watches_the_init_container_of_the_serving_pods(dev):
    """The alert names the init container the serving Deployments really run first, and not the
    model-sync native sidecar (which runs for the pod's whole life)."""
    from components.monitoring.alerts import INIT_STUCK_MINUTES, MODEL_SYNC_INIT, SERVING_NAME
    from tests.conftest import k8s_objects

    deployments = [d for d in k8s_objects(dev, "Deployment")
                   if d["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server"]
    assert {d["metadata"]["name"] for d in deployments} >= {"tfserving-default", "tfserving-default-canary"}
    for deployment in deployments:
        first, *rest = deployment["spec"]["template"]["spec"]["initContainers"]
        assert re.fullmatch(SERVING_NAME, deployment["metadata"]["name"])  # its pods match pod=~
        assert first["name"] == MODEL_SYNC_INIT and "restartPolicy" not in first, deployment["metadata"]
        assert first["command"][-1] == "wait", first
        assert all(c.get("restartPolicy") == "Always" for c in rest)  # sidecars, not watched
    rule = rule_named(rules_for(DEFAULT), "TFServingPodStuckInInit")
    assert rule["for"] == f"{INIT_STUCK_MINUTES}m" == "15m"
    assert f'container="{MODEL_SYNC_INIT}"' in rule["expr"] and f'pod=~"{SERVING_NAME}"' in rule["expr"]


def test_threshold_defaults():
    assert dataclasses.asdict(DEFAULT) == {
        "error_ratio": 0.05, "p99_latency_ms": 500, "hpa_maxed_minutes": 30, "restarts_per_30m": 3,
        "cpu_limit_ratio": 0.9, "memory_limit_ratio": 0.9, "gpu_util_high_percent": 90,
        "gpu_high_minutes": 30, "gpu_idle_percent": 5, "gpu_idle_minutes": 60,
        "runbook_base_url": DEFAULT_RUNBOOK_BASE_URL, "cold_starts": ()}


def test_thresholds_match_the_stack_settings():
    # stacks/platform.py builds AlertThresholds(**settings.monitoring.alerts.model_dump()).
    from stacks.monitoring_settings import AlertSettings

    assert AlertThresholds(**AlertSettings().model_dump()) == DEFAULT


@pytest.mark.parametrize("bad", [
    {"error_ratio": 0}, {"error_ratio": 1.5}, {"p99_latency_ms": 0}, {"hpa_maxed_minutes": 0},
    {"restarts_per_30m": 2.5}, {"cpu_limit_ratio": 1.2}, {"memory_limit_ratio": 0},
    {"gpu_util_high_percent": 101}, {"gpu_idle_percent": 95}, {"gpu_idle_minutes": 0},
])
def test_invalid_thresholds_are_rejected(bad):
    with pytest.raises(ValueError):
        AlertThresholds(**bad)


def test_thresholds_and_namespace_reach_the_expressions():
    doc = serving_alert_rules("ml-serving", "prod", AlertThresholds(
        p99_latency_ms=100, hpa_maxed_minutes=20, gpu_high_minutes=15, gpu_idle_minutes=90))
    rules = {r["alert"]: r for r in alerting_rules(doc)}
    # TF Serving's latency histogram is in microseconds.
    assert rules["TFServingHighP99Latency"]["expr"].endswith("> 100000")
    assert rules["TFServingHPAMaxedOut"]["for"] == "20m"
    assert rules["GPUUtilizationHigh"]["for"] == "15m"
    assert rules["GPUIdleWhileAllocated"]["for"] == "90m"
    # An XID error is a fault of the GPU (node), whichever pod holds it: watched on every GPU.
    assert "namespace" not in rules["GPUXidError"]["expr"]
    for rule in rules.values():
        if rule["alert"] in NODE_WIDE:
            continue
        assert 'namespace="ml-serving"' in rule["expr"], rule["alert"]
        assert 'namespace="serving"' not in rule["expr"], rule["alert"]
        assert rule["labels"]["environment"] == "prod"
    with pytest.raises(ValueError):
        serving_alert_rules('serving"}', "prod", DEFAULT)


# --- servers that scale to zero ---------------------------------------------------------------

SLEEPERS = AlertThresholds(cold_starts=(("tfserving-sleepy", 600), ("tfserving-waking", 600),
                                        ("tfserving-slow", 1800)))


def replicas(deployment: str, spec: str, available: str) -> list[dict]:
    return [s("kube_deployment_spec_replicas", ksm(deployment=deployment), spec),
            s("kube_deployment_status_replicas_available", ksm(deployment=deployment), available)]


@pytest.mark.parametrize("eval_time,firing", [
    # Minute 18: tfserving-waking has wanted a pod for 9 minutes (a cold start of up to 10): quiet. The
    # always-on server without a pod for 18 minutes alerts; the sleeping one (0 wanted) never does.
    ("18m", ["tfserving-steady"]),
    # Minute 25: woken 16 minutes ago, past its 10-minute cold start and the 5 minutes of `for`: alerts.
    # tfserving-slow (a 30-minute cold start) still waits.
    ("25m", ["tfserving-steady", "tfserving-waking"]),
    ("50m", ["tfserving-slow", "tfserving-steady", "tfserving-waking"]),
])
def test_zero_replicas_by_design_is_healthy_and_a_stuck_wakeup_alerts(promtool, tmp_path, eval_time, firing):
    rule = rule_named(rules_for(SLEEPERS), "TFServingNoAvailableReplicas")
    series = [*replicas("tfserving-sleepy", "0x60", "0x60"),            # asleep all along
              *replicas("tfserving-waking", "0x9 1x50", "0x60"),        # woken at minute 10, never ready
              *replicas("tfserving-slow", "0x9 1x50", "0x60"),          # the same, with a 30-minute cold start
              *replicas("tfserving-steady", "1x60", "0x60")]            # always on, never ready
    result = run_tests(promtool, tmp_path, SLEEPERS, [unit_test(
        f"sleepers at {eval_time}", series, "TFServingNoAvailableReplicas", eval_time,
        [expected_alert(rule, Fire(ksm(deployment=d), "")) for d in firing])])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_woken_server_that_becomes_ready_never_alerts(promtool, tmp_path):
    rule = rule_named(rules_for(DEFAULT), "TFServingNoAvailableReplicas")
    # Woken at minute 10, ready at 18 (an 8-minute cold start), asleep again from minute 40: quiet throughout.
    series = replicas("tfserving-waking", "0x9 1x30 0x20", "0x17 1x22 0x20")
    tests = [unit_test(f"ready at {t}", series, "TFServingNoAvailableReplicas", t, []) for t in ("16m", "30m", "58m")]
    result = run_tests(promtool, tmp_path, SLEEPERS, tests)
    assert result.returncode == 0, result.stdout + result.stderr
    # Without the cold-start allowance the same wake-up alerts at minute 16 (the check above can fail).
    result = run_tests(promtool, tmp_path, DEFAULT, [unit_test(
        "no allowance", series, "TFServingNoAvailableReplicas", "16m",
        [expected_alert(rule, Fire(ksm(deployment="tfserving-waking"), ""))])])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("bad", [(("tfserving-x", 0),), (("Not_A_Name", 60),), (("tfserving-x", True),),
                                 ("tfserving-x",)])
def test_invalid_cold_starts_are_rejected(bad):
    with pytest.raises(ValueError, match="cold_starts"):
        AlertThresholds(cold_starts=bad)


def test_the_dev_stack_gives_its_sleeping_deployments_a_cold_start(dev, prod):
    def expr(rec):
        spec = next(r.inputs["spec"] for r in rec.resources if r.inputs.get("kind") == "PrometheusRule")
        return rule_named(spec, "TFServingNoAvailableReplicas")["expr"]

    assert expr(dev).endswith('unless on (namespace, deployment) min_over_time(kube_deployment_spec_replicas'
                              '{namespace="serving", deployment=~"tfserving-default|tfserving-default-canary"}[10m]) == 0')
    assert "unless" not in expr(prod)


def test_write_rule_files_round_trips(tmp_path):
    doc = rules_for(DEFAULT)
    path = write_rule_files(doc, tmp_path / "rules")
    assert path == tmp_path / "rules" / "tfserving-alerts.yaml"
    assert yaml.safe_load(path.read_text()) == doc
