"""Render TF Serving's text-protobuf config files from typed model descriptions.

Formats: ``tensorflow_serving/config/model_server_config.proto`` (model config list) and
``monitoring_config.proto`` (Prometheus endpoint). Tests parse the output with TF Serving's own
protobuf classes from ``tensorflow-serving-api``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

METRICS_PATH = "/monitoring/prometheus/metrics"
MODELS_DIR = "/models"
CONFIG_DIR = "/etc/tfserving"
MODEL_CONFIG_FILE = "models.config"
MONITORING_CONFIG_FILE = "monitoring.config"
CANARY_LABEL = "canary"


@dataclass(frozen=True)
class ServedModel:
    """One model entry of TF Serving's model config list."""

    name: str
    version_policy: Literal["latest", "all", "specific"] = "latest"
    """``latest`` loads the newest ``latest_versions``; ``all`` every version; ``specific`` ``versions``."""
    latest_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)
    """Version labels (``stable``, ``canary``...) -> version; clients call ``/labels/<label>``."""
    canary_version: int | None = None
    """With policy ``specific``: a newer version the canary pods serve besides ``versions``.
    Ignored when it is already one of ``versions`` (promoted)."""

    @property
    def canary_active(self) -> bool:
        return self.canary_version is not None and self.canary_version not in self.versions

    def stable_view(self) -> ServedModel:
        """What the stable pods load: the configured versions and labels, never the canary."""
        return replace(self, canary_version=None)

    def canary_view(self) -> ServedModel:
        """What the canary pods load: the stable versions too (so every label keeps working) plus the
        canary version, labelled ``canary``; TF Serving answers unlabelled requests from it, the highest."""
        if not self.canary_active:
            return self.stable_view()
        return replace(self, versions=tuple(sorted({*self.versions, self.canary_version})),
                       labels={**self.labels, CANARY_LABEL: self.canary_version}, canary_version=None)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _version_policy(model: ServedModel) -> str:
    if model.version_policy == "all":
        return "all {}"
    if model.version_policy == "specific":
        return "specific { " + " ".join(f"versions: {v}" for v in model.versions) + " }"
    return f"latest {{ num_versions: {model.latest_versions} }}"


def render_model_config(models: list[ServedModel], models_dir: str = MODELS_DIR) -> str:
    """The ``--model_config_file`` contents: one ``config`` block per model, in the given order."""
    lines = ["model_config_list {"]
    for model in models:
        lines += [
            "  config {",
            f"    name: {_quote(model.name)}",
            f"    base_path: {_quote(f'{models_dir}/{model.name}')}",
            '    model_platform: "tensorflow"',
            f"    model_version_policy {{ {_version_policy(model)} }}",
        ]
        lines += [f"    version_labels {{ key: {_quote(label)} value: {version} }}"
                  for label, version in sorted(model.labels.items())]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_monitoring_config(path: str = METRICS_PATH) -> str:
    """The ``--monitoring_config_file`` contents; without it the metrics path answers 404."""
    return f"prometheus_config {{\n  enable: true\n  path: {_quote(path)}\n}}\n"
