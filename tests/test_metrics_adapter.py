"""The prometheus-adapter rule, run through the real ``promtool`` (Debian package ``prometheus``).

``promtool check rules`` parses the queries; ``promtool test rules`` evaluates the expanded
metrics query on synthetic TF Serving counters and checks the per-pod rates it yields.
``scripts/ensure-tools.sh`` (run by ``make test``) installs promtool.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from components.serving.metrics_adapter import (
    REQUEST_COUNT_SERIES,
    RPS_METRIC,
    adapter_rule,
    adapter_rules_yaml,
    expand_metrics_query,
)
from tests.conftest import run_promtool as run

NAMESPACE = "serving"
RECORD = "namespace_pod:tfserving_requests:rate"




def write_rules(tmp_path: Path, pods: list[str]) -> Path:
    rules = {"groups": [{"name": "prometheus-adapter", "interval": "30s", "rules": [
        {"record": RECORD, "expr": expand_metrics_query(NAMESPACE, pods)},
        # The discovery query must be a valid selector too.
        {"record": "tfserving:adapter_series", "expr": adapter_rule()["seriesQuery"]},
    ]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def series(pod: str, values: str, namespace: str = NAMESPACE, model: str = "resnet",
           status: str = "OK") -> dict:
    labels = f'model_name="{model}",namespace="{namespace}",pod="{pod}",status="{status}"'
    return {"series": f"{REQUEST_COUNT_SERIES}{{{labels}}}", "values": values}


# Scraped every 30 s for 10 minutes (21 samples per series).
INPUT_SERIES = [
    # Pod a: 10 requests/s in all, over two status values (summed away).
    series("a", "0+240x20"),
    series("a", "0+60x20", status="INVALID_ARGUMENT"),
    # Pod b: 30 requests/s; the container restarts at 5m and its counter starts again from 0.
    series("b", "0+900x9 900+900x10"),
    # Same namespace, not asked for: must not show up.
    series("c", "0+3000x20"),
    # A pod named a in another namespace: must not be added to pod a.
    series("a", "0+1500x20", namespace="other"),
]


def write_test(tmp_path: Path, rules: Path, expected: dict[str, float], eval_time: str = "6m") -> Path:
    test = {
        "rule_files": [rules.name],
        "evaluation_interval": "30s",
        "tests": [{
            "interval": "30s",
            "input_series": INPUT_SERIES,
            "promql_expr_test": [{
                "expr": RECORD,
                "eval_time": eval_time,
                "exp_samples": [{"labels": f'{RECORD}{{pod="{pod}"}}', "value": value}
                                for pod, value in expected.items()],
            }],
        }],
    }
    path = tmp_path / "rules_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return path


def test_rule_has_the_prometheus_adapter_shape():
    rule = adapter_rule()
    assert set(rule) == {"seriesQuery", "resources", "name", "metricsQuery"}
    assert rule["seriesQuery"] == f'{{__name__="{REQUEST_COUNT_SERIES}",namespace!="",pod!=""}}'
    assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"},
                                               "pod": {"resource": "pod"}}}
    assert rule["name"]["as"] == RPS_METRIC
    assert re.search(rule["name"]["matches"], REQUEST_COUNT_SERIES)
    assert not re.search(rule["name"]["matches"], ":tensorflow:serving:request_count_total")
    # Never the raw counter: a counter only grows, so the HPA would never scale down.
    assert rule["metricsQuery"].startswith("sum(rate(<<.Series>>{<<.LabelMatchers>>}[")
    assert rule["metricsQuery"].endswith(") by (<<.GroupBy>>)")


def test_rules_yaml_is_helm_values_for_rules_custom():
    values = yaml.safe_load(adapter_rules_yaml())
    assert values == {"rules": {"custom": [adapter_rule()]}}


def test_expansion_matches_the_adapter():
    assert expand_metrics_query("serving", ["a", "b"]) == (
        'sum(rate(:tensorflow:serving:request_count{namespace="serving",pod=~"a|b"}[2m])) by (pod)')
    # One pod: the adapter uses an equality matcher.
    assert 'pod="a"}' in expand_metrics_query("serving", ["a"])
    with pytest.raises(ValueError):
        expand_metrics_query("serving", [])


def test_promtool_accepts_the_queries(promtool, tmp_path):
    rules = write_rules(tmp_path, ["a", "b"])
    result = run(promtool, "check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rules found" in result.stdout, result.stdout


@pytest.mark.parametrize("eval_time", ["3m", "6m", "10m"])
def test_per_pod_rate_survives_a_counter_reset(promtool, tmp_path, eval_time):
    # 6m: the 2m window holds pod b's counter reset at 5m; the rate must still be 30/s.
    rules = write_rules(tmp_path, ["a", "b"])
    test = write_test(tmp_path, rules, {"a": 10, "b": 30}, eval_time)
    result = run(promtool, "test", "rules", test.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_wrong_expectation_fails(promtool, tmp_path):
    # The check above can fail: promtool reports a wrong per-pod value.
    rules = write_rules(tmp_path, ["a", "b"])
    test = write_test(tmp_path, rules, {"a": 10, "b": 20})
    result = run(promtool, "test", "rules", test.name, cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr


def test_single_pod_query(promtool, tmp_path):
    rules = write_rules(tmp_path, ["b"])
    test = write_test(tmp_path, rules, {"b": 30})
    result = run(promtool, "test", "rules", test.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_empty_namespace_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"namespace must not be empty \(the metric is namespaced\)"):
        expand_metrics_query("", ["a"])
