"""Prometheus alert rules for TF Serving and the GPUs it runs on.

:func:`serving_alert_rules` returns a Prometheus rules document ``{"groups": [...]}``: the ``spec``
of a ``PrometheusRule`` and, written by :func:`write_rule_files`, a file ``promtool check rules``
and ``promtool test rules`` read. Every alert carries the labels ``severity`` (``critical`` or
``warning``) and ``environment``, and the annotations ``summary``, ``description`` and
``runbook_url``: an absolute URL, ``<runbook_base_url>#<alert name in lower case>``, the alert's section
of ``docs/runbooks.md`` wherever the repository is published (kube-prometheus does the same with
https://runbooks.prometheus-operator.dev/runbooks/<group>/<alert>: receivers and Grafana show the
annotation as a link, with no repository to resolve a relative path against).

Series the rules read, and the labels they rely on:

* TF Serving (``--monitoring_config_file``; ``/`` in names becomes ``:``), scraped by a
  ServiceMonitor per server: ``:tensorflow:serving:request_count{model_name, status}`` where
  ``status`` is the gRPC code name of the request's result (``error::Code_Name(status.code())`` in
  ``tensorflow_serving/servables/tensorflow/util.cc``), so ``"OK"`` for success; and the histogram
  ``:tensorflow:serving:request_latency_bucket{model_name, API, entrypoint, le}`` in
  **microseconds** (``Buckets::Exponential(10, 1.8, 33)``). The scrape adds ``namespace`` and
  ``pod``; ``job`` is the Service name, ``tfserving-<server>`` or ``tfserving-<server>-canary``.
* kube-state-metrics: ``kube_deployment_status_replicas_available`` / ``kube_deployment_spec_replicas``
  (``deployment``), ``kube_horizontalpodautoscaler_status_current_replicas`` /
  ``..._spec_max_replicas`` / ``..._spec_min_replicas`` (``horizontalpodautoscaler``),
  ``kube_pod_container_status_restarts_total`` and ``kube_pod_container_resource_limits``
  (``pod``, ``container``, ``resource``), and their ``kube_pod_init_container_*`` twins, which
  cover the model-sync sidecar (a native sidecar is an init container);
  ``kube_pod_init_container_status_running`` / ``..._waiting`` (``pod``, ``container``; 1 while the
  init container is in that state), for the ``model-sync-init`` container that waits until every
  model version of the pod is in the bucket (kube-state-metrics docs/metrics/workload/pod-metrics.md).
* cAdvisor (the kubelet): ``container_cpu_usage_seconds_total``, ``container_memory_working_set_bytes``;
  ``container=""`` is the pod-level cgroup and is left out.
* NVIDIA dcgm-exporter: ``DCGM_FI_DEV_GPU_UTIL`` (percent, one series per GPU). With Kubernetes
  mapping on, the exporter labels a GPU that is allocated to a pod with that pod's ``pod``,
  ``namespace`` and ``container``. **Assumption:** the scrape keeps those labels as they are,
  i.e. the ServiceMonitor sets ``honorLabels: true`` (as :class:`components.gpu.addons.GpuAddons`
  does), so they are *not* renamed to ``exported_pod`` / ``exported_namespace``. A GPU with no pod
  has no (or an empty) ``pod`` label, so ``namespace="<serving>", pod!=""`` selects exactly the
  GPUs allocated to serving pods. With ``honorLabels: false`` the GPU alerts would never fire.
  ``DCGM_FI_DEV_XID_ERRORS`` (``etc/default-counters.csv``: a gauge, "Value of the last XID error
  encountered", 0 until the GPU reports one) is watched on *every* GPU, allocated or not: an XID
  leaves the node Ready while its GPU may be unusable.

Deployments are ``tfserving-<server>`` and ``tfserving-<server>-canary``, HPAs ``tfserving-<server>``,
all in the serving namespace: the rules match ``tfserving-.+`` there. (A server that scales to zero keeps
those names: KEDA's HPA is named after the Deployment, components/serving/scale_to_zero.py.)

Zero replicas by design: a Deployment scaled to zero wants no pod (``kube_deployment_spec_replicas`` 0),
so the availability rule, which asks for wanted replicas, stays quiet. When such a Deployment wakes up,
its first pod needs a GPU node from zero and a model load (a *cold start*, minutes): the Deployments listed
in :attr:`AlertThresholds.cold_starts` alert only once they have wanted replicas for longer than their
cold start, then the usual 5 minutes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

RUNBOOK_DOC = "docs/runbooks.md"
"""Runbooks, one ``###`` heading per alert named exactly as the alert, relative to the repository root."""
DEFAULT_RUNBOOK_BASE_URL = "https://github.com/OWNER/REPO/blob/main/docs/runbooks.md"
"""Where :data:`RUNBOOK_DOC` is published unless the stack says (``monitoring.alerts.runbookBaseUrl``).
The project cannot know where a user hosts the repository, so the default is GitHub's address of the
file with visible placeholders: a stack sets its own."""
_RUNBOOK_BASE = re.compile(r"https?://[^\s#?/]+(/[^\s#?]*)?")

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY_BUCKET = ":tensorflow:serving:request_latency_bucket"
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
GPU_XID = "DCGM_FI_DEV_XID_ERRORS"
"""dcgm-exporter's gauge holding the last XID error code a GPU reported (0: none)."""
SERVING_NAME = "tfserving-.+"
"""Regex of the Services (scrape ``job``), Deployments and HPAs of TF Serving."""
MODEL_SYNC_INIT = "model-sync-init"
"""The init container of every TF Serving pod (``components/serving/model_server.py``) that waits,
without ever failing, until each model's versions are complete in the bucket."""
INIT_STUCK_MINUTES = 15
"""Minutes a pod may stay in ``model-sync-init`` before alerting: a normal first sync takes seconds to
a few minutes; a version that is not published never arrives."""

_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class AlertThresholds:
    """Thresholds of the serving and GPU alerts (``monitoring.alerts`` in the stack settings)."""

    error_ratio: float = 0.05
    """Share of a model's requests with a status other than ``OK`` (over 5 minutes) that alerts."""
    p99_latency_ms: float = 500
    """p99 request latency SLO per model, in milliseconds (TF Serving's histogram is in µs)."""
    hpa_maxed_minutes: int = 30
    """Minutes an HPA may run at ``maxReplicas`` before alerting."""
    restarts_per_30m: int = 3
    """Container restarts within 30 minutes that alert (this many or more)."""
    cpu_limit_ratio: float = 0.9
    """CPU use / CPU limit of a container (5-minute rate, held for 15 minutes) that alerts."""
    memory_limit_ratio: float = 0.9
    """Memory working set / memory limit of a container (held for 10 minutes) that alerts."""
    gpu_util_high_percent: float = 90
    """GPU utilisation (percent, 5-minute average) above which a GPU counts as saturated."""
    gpu_high_minutes: int = 30
    """Minutes of saturation before alerting."""
    gpu_idle_percent: float = 5
    """GPU utilisation (percent, 5-minute average) below which an allocated GPU counts as idle; 0 disables."""
    gpu_idle_minutes: int = 60
    """Minutes an allocated GPU may idle before alerting."""
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL
    """Absolute URL of the published :data:`RUNBOOK_DOC` (no fragment); each alert links to its section."""
    cold_starts: tuple[tuple[str, int], ...] = ()
    """``(deployment, seconds)`` of the Deployments that scale to zero: how long their first pod may take
    after they wake (a node from zero, image pull, model load) before no-available-replicas counts."""

    def __post_init__(self) -> None:
        problems = []
        for entry in self.cold_starts:
            if (not isinstance(entry, tuple) or len(entry) != 2 or not isinstance(entry[0], str)
                    or not _K8S_NAME.fullmatch(entry[0]) or not isinstance(entry[1], int)
                    or isinstance(entry[1], bool) or entry[1] < 1):
                problems.append(f"cold_starts entry {entry!r} must be (a Deployment name, seconds >= 1)")
        if not 0 < self.error_ratio < 1:
            problems.append(f"error_ratio {self.error_ratio} must be in (0, 1)")
        if not self.p99_latency_ms > 0:
            problems.append(f"p99_latency_ms {self.p99_latency_ms} must be > 0")
        for name in ("hpa_maxed_minutes", "restarts_per_30m", "gpu_high_minutes", "gpu_idle_minutes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} {value!r} must be an integer >= 1")
        for name in ("cpu_limit_ratio", "memory_limit_ratio"):
            if not 0 < getattr(self, name) <= 1:
                problems.append(f"{name} {getattr(self, name)} must be in (0, 1]")
        if not 0 < self.gpu_util_high_percent <= 100:
            problems.append(f"gpu_util_high_percent {self.gpu_util_high_percent} must be in (0, 100]")
        if not 0 <= self.gpu_idle_percent < self.gpu_util_high_percent:
            problems.append(f"gpu_idle_percent {self.gpu_idle_percent} must be in [0, gpu_util_high_percent)")
        if not isinstance(self.runbook_base_url, str) or not _RUNBOOK_BASE.fullmatch(self.runbook_base_url):
            problems.append(f"runbook_base_url {self.runbook_base_url!r} must be an absolute http(s) URL "
                            "without a fragment or query")
        if problems:
            raise ValueError("AlertThresholds: " + "; ".join(problems))


def runbook_anchor(alert: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give the heading ``### <alert>``."""
    return alert.lower()


def runbook_url(alert: str, base_url: str = DEFAULT_RUNBOOK_BASE_URL) -> str:
    """Where the runbook of ``alert`` lives: its heading's anchor in the published :data:`RUNBOOK_DOC`."""
    return f"{base_url}#{runbook_anchor(alert)}"


def _num(value: float) -> str:
    """A PromQL number literal without a spurious ``.0``."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _alert(name: str, expr: str, severity: str, environment: str, summary: str, description: str,
           for_: str | None = None, runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL) -> dict:
    rule: dict = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, "environment": environment}
    rule["annotations"] = {"summary": summary, "description": description,
                           "runbook_url": runbook_url(name, runbook_base_url)}
    return rule


def serving_alert_rules(namespace: str, environment: str, thresholds: AlertThresholds) -> dict:
    """The alert rules of the TF Serving Deployments in ``namespace`` (see the module docstring)."""
    if not _K8S_NAME.fullmatch(namespace):
        raise ValueError(f"serving_alert_rules: namespace {namespace!r} is not a Kubernetes name")
    if not environment or not re.fullmatch(r"[A-Za-z0-9_.-]+", environment):
        raise ValueError(f"serving_alert_rules: environment {environment!r} must be a plain word")
    t = thresholds
    ns = f'namespace="{namespace}"'
    env = environment

    def a(name, expr, severity, summary, description, for_=None):
        return _alert(name, expr, severity, env, summary, description, for_, t.runbook_base_url)

    requests = f"sum by (namespace, model_name) (rate({REQUEST_COUNT}{{{ns}}}[5m]))"
    failed = f'sum by (namespace, model_name) (rate({REQUEST_COUNT}{{{ns}, status!="OK"}}[5m]))'
    hpa = f'{{{ns}, horizontalpodautoscaler=~"{SERVING_NAME}"}}'
    on_hpa = "on (namespace, horizontalpodautoscaler)"
    deploy = f'{{{ns}, deployment=~"{SERVING_NAME}"}}'
    per_container = "sum by (namespace, pod, container)"
    cadvisor = f'{{{ns}, container!="", container!="POD"}}'
    # The model-sync sidecar is a native sidecar (an init container): kube-state-metrics reports its
    # limits and restarts in the kube_pod_init_container_* series.
    limits = '{__name__=~"kube_pod_container_resource_limits|kube_pod_init_container_resource_limits", '

    # The pod's waiting init container, not the model-sync native sidecar (an init container that
    # runs for the pod's whole life, so its running series is always 1).
    sync_init = f'{{{ns}, pod=~"{SERVING_NAME}", container="{MODEL_SYNC_INIT}"}}'

    gpu = f'{GPU_UTIL}{{{ns}, pod!=""}}'
    gpu_where = ("GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on {{ $labels.Hostname }}, "
                 "allocated to pod {{ $labels.namespace }}/{{ $labels.pod }}")

    # Scale-to-zero Deployments: quiet until they have wanted pods for a whole cold start (grouped by length).
    by_seconds: dict[int, list[str]] = {}
    for deployment, seconds in t.cold_starts:
        by_seconds.setdefault(seconds, []).append(deployment)
    waking = "".join(
        f" unless on (namespace, deployment) min_over_time(kube_deployment_spec_replicas"
        f'{{{ns}, deployment=~"{"|".join(sorted(names))}"}}[{math.ceil(seconds / 60)}m]) == 0'
        for seconds, names in sorted(by_seconds.items()))

    cold_start_note = " (after its cold start, for a server that scales to zero)" if t.cold_starts else ""

    availability = [
        a("TFServingTargetDown",
          f'up{{job=~"{SERVING_NAME}", {ns}}} == 0', "warning",
          "Prometheus cannot scrape TF Serving pod {{ $labels.pod }}",
          "Scraping {{ $labels.instance }} (job {{ $labels.job }}, "
          "pod {{ $labels.namespace }}/{{ $labels.pod }}) has failed for 5 minutes. The metrics come "
          "from TF Serving's REST port, so that pod's REST API is most likely unreachable too.", "5m"),
        a("TFServingPodStuckInInit",
          f"kube_pod_init_container_status_running{sync_init} == 1 "
          f"or kube_pod_init_container_status_waiting{sync_init} == 1", "warning",
          "TF Serving pod {{ $labels.pod }} is stuck in its model-sync init container",
          "Pod {{ $labels.namespace }}/{{ $labels.pod }} has been in its init container "
          "{{ $labels.container }} (running or waiting) for "
          f"{INIT_STUCK_MINUTES} minutes. That container waits until every model version the pod "
          "serves is complete in the bucket (its _COMPLETE marker), so a versions or canaryVersion "
          "entry that is not published (never published, or deleted), unreadable bucket access, "
          "or a sync image that cannot be pulled keeps the pod out of service; a rollout stalls "
          "behind it.", f"{INIT_STUCK_MINUTES}m"),
        a("TFServingNoAvailableReplicas",
          f"kube_deployment_status_replicas_available{deploy} == 0 "
          f"and on (namespace, deployment) kube_deployment_spec_replicas{deploy} > 0{waking}", "critical",
          "Deployment {{ $labels.deployment }} has no ready TF Serving pod",
          "Deployment {{ $labels.namespace }}/{{ $labels.deployment }} wants replicas but none has been "
          f"available for 5 minutes{cold_start_note}. A pod is ready only when every model it serves is "
          "AVAILABLE, so its models are not being served by any pod of this Deployment.", "5m"),
    ]
    traffic = [
        a("TFServingHighErrorRatio",
          f"({failed} / {requests}) > {_num(t.error_ratio)} and on (namespace, model_name) {requests} > 0",
          "critical",
          "Model {{ $labels.model_name }} fails {{ $value | humanizePercentage }} of requests",
          "{{ $value | humanizePercentage }} of the requests to model {{ $labels.model_name }} in namespace "
          "{{ $labels.namespace }} ended with a status other than OK over the last 5 minutes "
          f"(threshold {_num(t.error_ratio * 100)}%).", "5m"),
        a("TFServingHighP99Latency",
          f"histogram_quantile(0.99, sum by (namespace, model_name, le) "
          f"(rate({REQUEST_LATENCY_BUCKET}{{{ns}}}[5m]))) > {_num(t.p99_latency_ms * 1000)}", "warning",
          "Model {{ $labels.model_name }} p99 latency is above the SLO",
          "p99 request latency of model {{ $labels.model_name }} in namespace {{ $labels.namespace }} "
          "has been {{ printf \"%.0f\" $value }} µs for 10 minutes "
          f"(SLO {_num(t.p99_latency_ms)} ms = {_num(t.p99_latency_ms * 1000)} µs).", "10m"),
    ]
    capacity = [
        a("TFServingHPAMaxedOut",
          f"kube_horizontalpodautoscaler_status_current_replicas{hpa} "
          f">= {on_hpa} kube_horizontalpodautoscaler_spec_max_replicas{hpa} "
          f"and {on_hpa} (kube_horizontalpodautoscaler_spec_min_replicas{hpa} "
          f"< {on_hpa} kube_horizontalpodautoscaler_spec_max_replicas{hpa})", "warning",
          "HPA {{ $labels.horizontalpodautoscaler }} has been at its maximum replicas",
          "HorizontalPodAutoscaler {{ $labels.namespace }}/{{ $labels.horizontalpodautoscaler }} has run "
          f"{{{{ $value }}}} replicas, its maxReplicas, for {t.hpa_maxed_minutes} minutes: it cannot add "
          "capacity if load grows.", f"{t.hpa_maxed_minutes}m"),
        a("TFServingPodRestarting",
          f"increase(kube_pod_container_status_restarts_total{{{ns}}}[30m]) >= {t.restarts_per_30m} "
          f"or increase(kube_pod_init_container_status_restarts_total{{{ns}}}[30m]) >= {t.restarts_per_30m}",
          "warning",
          "Container {{ $labels.container }} of pod {{ $labels.pod }} keeps restarting",
          "Container {{ $labels.container }} of pod {{ $labels.namespace }}/{{ $labels.pod }} restarted "
          "{{ printf \"%.0f\" $value }} times in the last 30 minutes "
          f"(threshold {t.restarts_per_30m})."),
        a("TFServingCPUNearLimit",
          f"{per_container} (rate(container_cpu_usage_seconds_total{cadvisor}[5m])) "
          f'/ {per_container} ({limits}{ns}, resource="cpu"}}) '
          f"> {_num(t.cpu_limit_ratio)}", "warning",
          "Container {{ $labels.container }} of pod {{ $labels.pod }} is near its CPU limit",
          "Container {{ $labels.container }} of pod {{ $labels.namespace }}/{{ $labels.pod }} has used "
          "{{ $value | humanizePercentage }} of its CPU limit for 15 minutes "
          f"(threshold {_num(t.cpu_limit_ratio * 100)}%): it is being throttled and latency suffers.", "15m"),
        a("TFServingMemoryNearLimit",
          f"{per_container} (container_memory_working_set_bytes{cadvisor}) "
          f'/ {per_container} ({limits}{ns}, resource="memory"}}) '
          f"> {_num(t.memory_limit_ratio)}", "warning",
          "Container {{ $labels.container }} of pod {{ $labels.pod }} is near its memory limit",
          "Container {{ $labels.container }} of pod {{ $labels.namespace }}/{{ $labels.pod }} has used "
          "{{ $value | humanizePercentage }} of its memory limit for 10 minutes "
          f"(threshold {_num(t.memory_limit_ratio * 100)}%): the next model version or a traffic burst "
          "may get it OOM-killed.", "10m"),
    ]
    gpus = [
        a("GPUUtilizationHigh",
          f"avg_over_time({gpu}[5m]) > {_num(t.gpu_util_high_percent)}", "warning",
          "GPU of pod {{ $labels.pod }} is saturated",
          f"{gpu_where}, has averaged {{{{ printf \"%.0f\" $value }}}}% utilisation for "
          f"{t.gpu_high_minutes} minutes (threshold {_num(t.gpu_util_high_percent)}%).",
          f"{t.gpu_high_minutes}m"),
        a("GPUIdleWhileAllocated",
          f"avg_over_time({gpu}[5m]) < {_num(t.gpu_idle_percent)}", "warning",
          "GPU of pod {{ $labels.pod }} is allocated but idle",
          f"{gpu_where}, has averaged {{{{ printf \"%.0f\" $value }}}}% utilisation for "
          f"{t.gpu_idle_minutes} minutes (idle below {_num(t.gpu_idle_percent)}%): a GPU is paid for "
          "and not used.", f"{t.gpu_idle_minutes}m"),
        a("GPUXidError",
          f"{GPU_XID} > 0", "critical",
          "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported an XID error",
          "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on {{ $labels.Hostname }} (exporter "
          "{{ $labels.instance }}) reported XID {{ printf \"%.0f\" $value }}: the driver detected a GPU "
          "error (hardware, driver or the application). The node stays Ready and keeps getting GPU "
          "pods while the GPU may be unusable; the value stays until the GPU or driver is reset."),
    ]
    return {"groups": [
        {"name": "tfserving-availability", "rules": availability},
        {"name": "tfserving-traffic", "rules": traffic},
        {"name": "tfserving-capacity", "rules": capacity},
        {"name": "tfserving-gpu", "rules": gpus},
    ]}


def alerting_rules(doc: dict) -> list[dict]:
    """Every alerting rule of a rules document, in order."""
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def write_rule_files(doc: dict, directory: str | Path, name: str = "tfserving-alerts") -> Path:
    """Write ``doc`` (``{"groups": [...]}``) as ``<directory>/<name>.yaml``, the file ``promtool`` reads."""
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise ValueError("write_rule_files: expected a rules document {'groups': [...]}")
    path = Path(directory) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"groups": doc["groups"]}, sort_keys=False, allow_unicode=True,
                                   default_flow_style=False, width=10_000))
    return path
