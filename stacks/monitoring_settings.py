"""Typed settings of monitoring (Prometheus stack, alerts, dashboards) and the GPU add-ons."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stacks.settings_base import Strict


class AlertSettings(Strict):
    """Thresholds of the serving and GPU alerts (components/monitoring/alerts.py)."""

    error_ratio: float = Field(0.05, gt=0, lt=1, description="Share of failed requests per model that alerts.")
    p99_latency_ms: float = Field(500, gt=0, description="p99 request latency SLO per model, milliseconds.")
    hpa_maxed_minutes: int = Field(30, ge=1, le=1440, description="Minutes at maxReplicas before alerting.")
    restarts_per_30m: int = Field(3, ge=1, description="Container restarts in 30 minutes that alert.")
    cpu_limit_ratio: float = Field(0.9, gt=0, le=1, description="CPU use / limit that alerts.")
    memory_limit_ratio: float = Field(0.9, gt=0, le=1, description="Memory working set / limit that alerts.")
    gpu_util_high_percent: float = Field(90, gt=0, le=100, description="GPU utilisation that counts as high.")
    gpu_high_minutes: int = Field(30, ge=1, le=1440, description="Minutes of high GPU utilisation before alerting.")
    gpu_idle_percent: float = Field(5, ge=0, lt=100, description="GPU utilisation that counts as idle.")
    gpu_idle_minutes: int = Field(60, ge=1, le=1440, description="Minutes an allocated GPU may idle.")


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
