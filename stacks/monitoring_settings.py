"""Typed settings of monitoring (Prometheus stack, alerts, dashboards) and the GPU add-ons."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stacks.settings_base import FieldProblem, Strict


class AlertSettings(Strict):
    """Thresholds of the serving and GPU alerts (components/monitoring/alerts.py)."""

    # Finite everywhere (Strict: allow_inf_nan=False): an infinite threshold renders a rule that never fires.
    error_ratio: float = Field(0.05, ge=0.0001, lt=1, description="Share of failed requests per model that alerts.")
    p99_latency_ms: float = Field(500, ge=1, le=3_600_000,
                                  description="p99 request latency SLO per model, milliseconds (1 to 3600000).")
    hpa_maxed_minutes: int = Field(30, ge=1, le=1440, description="Minutes at maxReplicas before alerting.")
    restarts_per_30m: int = Field(3, ge=1, le=1000, description="Container restarts in 30 minutes that alert.")
    cpu_limit_ratio: float = Field(0.9, gt=0, le=1, description="CPU use / limit that alerts.")
    memory_limit_ratio: float = Field(0.9, gt=0, le=1, description="Memory working set / limit that alerts.")
    gpu_util_high_percent: float = Field(90, gt=0, le=100, description="GPU utilisation that counts as high.")
    gpu_high_minutes: int = Field(30, ge=1, le=1440, description="Minutes of high GPU utilisation before alerting.")
    gpu_idle_percent: float = Field(5, ge=0, lt=100, description="GPU utilisation that counts as idle.")
    gpu_idle_minutes: int = Field(60, ge=1, le=1440, description="Minutes an allocated GPU may idle.")
    # Absolute, as kube-prometheus' runbook_url annotations are: Alertmanager receivers and Grafana
    # show the annotation as a link, with no repository to resolve a relative path against.
    runbook_base_url: str = Field(
        "https://github.com/OWNER/REPO/blob/main/docs/runbooks.md", max_length=2000,
        description="Where docs/runbooks.md is published (absolute http(s) URL, no #fragment): each alert's "
                    "runbook_url is this plus `#<alert name in lower case>`. Set it to your repository's copy.")

    @model_validator(mode="after")
    def _runbook_base_is_absolute(self) -> AlertSettings:
        # The same rule as components/monitoring/alerts.py AlertThresholds, before any resource exists.
        import re

        if not re.fullmatch(r"https?://[^\s#?/]+(/[^\s#?]*)?", self.runbook_base_url):
            raise FieldProblem("runbookBaseUrl", self.runbook_base_url,
                               "an absolute http(s) URL of docs/runbooks.md without #fragment or ?query, e.g. "
                               "https://github.com/<owner>/<repo>/blob/main/docs/runbooks.md")
        return self

    @model_validator(mode="after")
    def _idle_below_high(self) -> AlertSettings:
        # components/monitoring/alerts.py AlertThresholds refuses it too, but only once resources exist.
        if self.gpu_idle_percent >= self.gpu_util_high_percent:
            raise FieldProblem("gpuIdlePercent", self.gpu_idle_percent,
                               f"below gpuUtilHighPercent ({self.gpu_util_high_percent})")
        return self


class Monitoring(Strict):
    """Prometheus, Grafana and the custom-metrics adapter, plus what the platform adds to them."""

    install: bool = Field(True, description="Install kube-prometheus-stack and prometheus-adapter; false keeps "
                                            "only the ServiceMonitors, rules and dashboards (an existing "
                                            "Prometheus picks them up).")
    grafana: bool = Field(True, description="Install Grafana (admin password generated, a stack secret output).")
    gpu_metrics: Literal["exporter", "managed", "none"] = Field(
        "exporter", description="GPU metrics: `exporter` installs NVIDIA dcgm-exporter with a ServiceMonitor; "
                                "`managed` (GKE) relies on GKE's managed DCGM collection.")
    alerts: AlertSettings = Field(default_factory=AlertSettings, description="Alert thresholds.")
