"""The prometheus-adapter rule that exposes TF Serving's request rate as a per-pod custom metric.

TF Serving counts requests in the counter ``:tensorflow:serving:request_count`` (labels
``model_name``, ``status``); the ServiceMonitor scrapes it with ``namespace`` and ``pod`` labels.
A HorizontalPodAutoscaler cannot use that counter directly (a counter only grows, so an HPA on
it never scales down): prometheus-adapter turns it into the per-pod rate :data:`RPS_METRIC`
in the ``custom.metrics.k8s.io`` API, and the HPA reads it as a ``Pods`` metric::

    {"type": "Pods", "pods": {"metric": {"name": RPS_METRIC},
                              "target": {"type": "AverageValue", "averageValue": "20"}}}

The monitoring stack installs the adapter (Helm chart ``prometheus-community/prometheus-adapter``)
with :func:`adapter_rules_yaml` as its values (``rules.custom``). :func:`expand_metrics_query`
renders the query the way the adapter does for one HPA request, so tests can run it through
``promtool`` against synthetic series.

Format: prometheus-adapter ``docs/config.md`` (``seriesQuery``, ``resources.overrides``,
``name.matches``/``name.as``, ``metricsQuery`` as a Go template with ``<<`` ``>>`` delimiters).
"""

from __future__ import annotations

import re

import yaml

REQUEST_COUNT_SERIES = ":tensorflow:serving:request_count"
"""TF Serving's request counter as Prometheus scrapes it (``/`` in the name becomes ``:``)."""

RPS_METRIC = "tfserving_requests_per_second"
"""Name of the custom metric (per pod) in the ``custom.metrics.k8s.io`` API."""

RATE_WINDOW = "2m"
"""Window of ``rate()``: at least four scrapes at a 30 s interval, so one missed scrape is harmless."""

_TEMPLATE_FIELD = re.compile(r"<<\s*\.(\w+)\s*>>")


def adapter_rule() -> dict:
    """One rule of prometheus-adapter's config (an item of ``rules`` / Helm's ``rules.custom``)."""
    return {
        # Only series that carry the labels the resources below map to Kubernetes objects.
        "seriesQuery": f'{{__name__="{REQUEST_COUNT_SERIES}",namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"},
                                    "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{re.escape(REQUEST_COUNT_SERIES)}$", "as": RPS_METRIC},
        # A rate, never the raw counter; summed over model_name and status, one value per pod.
        "metricsQuery": f"sum(rate(<<.Series>>{{<<.LabelMatchers>>}}[{RATE_WINDOW}])) by (<<.GroupBy>>)",
    }


def adapter_rules_yaml() -> str:
    """Helm values for the prometheus-adapter chart: ``rules:`` ``custom: [adapter_rule()]``."""
    return yaml.safe_dump({"rules": {"custom": [adapter_rule()]}}, sort_keys=False,
                          default_flow_style=False, width=1000)


def _quote(value: str) -> str:
    """A PromQL string literal (the adapter formats label values with Go's ``%q``)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def expand_metrics_query(namespace: str, pods: list[str]) -> str:
    """The ``metricsQuery`` as prometheus-adapter sends it for the pods of one namespace.

    As in the adapter's ``pkg/naming/metrics_query.go``: ``Series`` is the series name,
    ``LabelMatchers`` the namespace label equal to ``namespace`` and the pod label equal to the one
    pod or matching ``a|b|...`` for several, ``GroupBy`` the pod label.
    """
    if not namespace:
        raise ValueError("expand_metrics_query: namespace must not be empty (the metric is namespaced)")
    if not pods:
        raise ValueError("expand_metrics_query: need at least one pod name")
    pod_matcher = f"pod={_quote(pods[0])}" if len(pods) == 1 else f"pod=~{_quote('|'.join(pods))}"
    values = {
        "Series": REQUEST_COUNT_SERIES,
        "LabelMatchers": f"namespace={_quote(namespace)},{pod_matcher}",
        "GroupBy": "pod",
    }

    def substitute(match: re.Match) -> str:
        if match.group(1) not in values:
            raise ValueError(f"expand_metrics_query: unsupported template field .{match.group(1)}")
        return values[match.group(1)]

    return _TEMPLATE_FIELD.sub(substitute, adapter_rule()["metricsQuery"])
