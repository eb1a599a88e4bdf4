"""The Grafana dashboards: structure, the metric names their queries read, and the queries themselves.

A misspelt metric never makes a PromQL query fail, it only leaves a panel empty. Every metric name
in every panel query and template-variable query (and in the alert rules) is therefore extracted
with :func:`extract_metric_names` and looked up in :mod:`components.monitoring.metric_catalog`, whose
entries cite the exporter source each name was checked against. ``promtool check rules`` parses
every panel query, and ``promtool test rules`` evaluates the main ones against synthetic series
labelled the way TF Serving, the ServiceMonitor and dcgm-exporter label them.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from components.monitoring.dashboard_files import (
    DASHBOARD_DIR,
    DASHBOARD_LABEL,
    extract_metric_names,
    iter_panels,
    load_dashboards,
    panel_exprs,
    template_query_metric_names,
    tokenize,
    variable_query,
)
from components.monitoring.metric_catalog import (
    HISTOGRAMS,
    KNOWN_METRICS,
    metric_exists,
    metric_source,
    series_names,
)
from tests.conftest import run_promtool as run

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = load_dashboards()
DS_REFS = {"${datasource}", "$datasource"}
REQUIRED_VARIABLES = {"datasource", "namespace", "model"}
# Grafana unit ids (packages/grafana-data valueFormats/categories.ts) the dashboards may use.
GRAFANA_UNITS = {"reqps", "ops", "percentunit", "percent", "µs", "short", "none", "bytes", "mbytes",
                 "watt", "celsius"}
SOURCES = {"tensorflow-serving", "tensorflow", "dcgm-exporter", "kube-state-metrics", "cadvisor",
           "prometheus"}


def unknown_metrics(dashboards: dict[str, dict]) -> list[str]:
    """``dashboard / panel / refId: name`` for every metric name not in the catalogue."""
    problems = []
    for key, dashboard in dashboards.items():
        for panel, target in panel_exprs(dashboard):
            for name in sorted(extract_metric_names(target["expr"])):
                if not metric_exists(name):
                    problems.append(f"{key} / {panel['title']} / {target['refId']}: {name}")
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                for name in sorted(template_query_metric_names(variable_query(variable))):
                    if not metric_exists(name):
                        problems.append(f"{key} / variable {variable['name']}: {name}")
    return problems


def variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def ds_uid(ref: object) -> str | None:
    return ref.get("uid") if isinstance(ref, dict) else ref


# --- files and structure ----------------------------------------------------------------------

def test_both_dashboards_ship():
    assert set(DASHBOARDS) == {"tfserving", "gpu"}
    assert DASHBOARD_DIR.is_dir()


def test_dashboard_label_is_what_the_grafana_sidecar_watches():
    values = yaml.safe_load((ROOT / "components/helm_values/kube-prometheus-stack.yaml").read_text())
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert DASHBOARD_LABEL == {sidecar["label"]: sidecar["labelValue"]} == {"grafana_dashboard": "1"}


@pytest.mark.parametrize("key", sorted(DASHBOARDS))
def test_dashboard_header(key):
    d = DASHBOARDS[key]
    assert d["schemaVersion"] == 39
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", d["uid"]), d.get("uid")
    assert d["title"].strip()
    assert d.get("id") is None  # provisioned: Grafana assigns the numeric id


def test_uids_and_titles_are_unique():
    assert len({d["uid"] for d in DASHBOARDS.values()}) == len(DASHBOARDS)
    assert len({d["title"] for d in DASHBOARDS.values()}) == len(DASHBOARDS)


@pytest.mark.parametrize("key", sorted(DASHBOARDS))
def test_panel_ids_are_unique_integers(key):
    ids = [p["id"] for p in iter_panels(DASHBOARDS[key])]
    assert all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    assert len(ids) == len(set(ids)), sorted(ids)


@pytest.mark.parametrize("key", sorted(DASHBOARDS))
def test_template_variables(key):
    found = variables(DASHBOARDS[key])
    assert REQUIRED_VARIABLES <= set(found)
    ds = found["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for name, variable in found.items():
        if name == "datasource":
            continue
        assert variable["type"] == "query", name
        assert ds_uid(variable["datasource"]) in DS_REFS, name
        assert variable_query(variable).startswith("label_values("), name
        assert variable["definition"] == variable_query(variable), name
    namespace_query, model_query = variable_query(found["namespace"]), variable_query(found["model"])
    assert template_query_metric_names(namespace_query) == {"kube_deployment_spec_replicas"}
    assert template_query_metric_names(model_query) == {":tensorflow:serving:request_count"}
    # The model list follows the namespace selection; "All" still requires a model_name label.
    assert "$namespace" in model_query
    assert found["model"]["includeAll"] and found["model"]["multi"]


@pytest.mark.parametrize("key", sorted(DASHBOARDS))
def test_every_panel_queries_prometheus_through_the_variable(key):
    panels = [p for p in iter_panels(DASHBOARDS[key]) if p["type"] != "row"]
    assert panels
    for panel in panels:
        title = panel["title"]
        assert panel["type"] == "timeseries", title
        assert panel.get("description"), title
        assert ds_uid(panel["datasource"]) in DS_REFS, title
        targets = panel["targets"]
        assert targets and all(t.get("expr", "").strip() for t in targets), title
        assert all(ds_uid(t["datasource"]) in DS_REFS for t in targets), title
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), title
        assert panel["fieldConfig"]["defaults"]["unit"] in GRAFANA_UNITS, title


@pytest.mark.parametrize("key", sorted(DASHBOARDS))
def test_panels_fit_the_grid_without_overlapping(key):
    taken: dict[tuple[int, int], str] = {}
    for panel in iter_panels(DASHBOARDS[key]):
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def expected_unit(exprs: list[str]) -> str | None:
    """The unit a panel must have, from what its queries compute (None: not constrained here)."""
    joined = " ".join(exprs)
    metrics = set().union(*(extract_metric_names(e) for e in exprs))
    if "histogram_quantile" in joined and all(m.endswith("_latency_bucket") for m in metrics):
        return "µs"  # TF Serving's latency histograms are in microseconds
    only = {m for m in metrics if m.startswith("DCGM_")}
    if metrics == only == {"DCGM_FI_DEV_GPU_UTIL"} and "count by" not in joined:
        return "percent"
    if metrics == {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}:
        return "percentunit"
    if only and metrics - only <= {":tensorflow:serving:request_count"} and len(only) == 1:
        unit = {"DCGM_FI_DEV_FB_USED": "mbytes", "DCGM_FI_DEV_FB_FREE": "mbytes",
                "DCGM_FI_DEV_POWER_USAGE": "watt", "DCGM_FI_DEV_GPU_TEMP": "celsius",
                "DCGM_FI_DEV_GPU_UTIL": "percent"}
        return unit[next(iter(only))] if "count by" not in joined else None
    if metrics == {":tensorflow:serving:request_count"} and "rate(" in joined and "/" not in joined:
        return "reqps"
    if "container_memory_working_set_bytes" in metrics:
        return "bytes"
    return None


@pytest.mark.parametrize("key", sorted(DASHBOARDS))
def test_units_match_what_the_queries_compute(key):
    constrained = 0
    for panel in iter_panels(DASHBOARDS[key]):
        if panel["type"] == "row":
            continue
        unit = expected_unit([t["expr"] for t in panel["targets"]])
        if unit is not None:
            constrained += 1
            assert panel["fieldConfig"]["defaults"]["unit"] == unit, panel["title"]
    assert constrained >= 5


def test_error_ratio_panel_is_a_ratio():
    (panel,) = [p for p in iter_panels(DASHBOARDS["tfserving"]) if p["title"] == "Error ratio by model"]
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert 'status!="OK"' in panel["targets"][0]["expr"]


@pytest.mark.parametrize("key,variable", [("tfserving", "$namespace"), ("gpu", "$node")])
def test_every_query_honours_the_selection(key, variable):
    for panel, target in panel_exprs(DASHBOARDS[key]):
        assert variable in target["expr"], panel["title"]


def test_model_selection_reaches_every_tf_serving_request_query():
    for dashboard in DASHBOARDS.values():
        for panel, target in panel_exprs(dashboard):
            selectors = re.findall(r":tensorflow:serving:(?:request|runtime)_\w+\{[^}]*\}", target["expr"])
            for selector in selectors:
                assert 'model_name=~"$model"' in selector, (panel["title"], selector)


def test_tf_serving_dashboard_covers_the_requested_views():
    used = set().union(*(extract_metric_names(t["expr"]) for _, t in panel_exprs(DASHBOARDS["tfserving"])))
    assert {":tensorflow:serving:request_count", ":tensorflow:serving:request_latency_bucket",
            ":tensorflow:serving:runtime_latency_bucket",
            ":tensorflow:serving:batching_session:processed_batch_size_bucket",
            "kube_deployment_status_replicas_available", "kube_horizontalpodautoscaler_spec_max_replicas",
            "kube_horizontalpodautoscaler_status_current_replicas",
            ":tensorflow:cc:saved_model:load_attempt_count"} <= used


def test_gpu_dashboard_covers_the_requested_views():
    used = set().union(*(extract_metric_names(t["expr"]) for _, t in panel_exprs(DASHBOARDS["gpu"])))
    assert {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
            "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_TEMP"} <= used


def test_files_are_stable_json():
    """Committed files stay as written (2-space indent, UTF-8 µ): a reformat shows up in review."""
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", path.name


# --- metric names -----------------------------------------------------------------------------

def test_every_dashboard_metric_is_in_the_catalogue():
    assert unknown_metrics(DASHBOARDS) == []


def test_every_alert_metric_is_in_the_catalogue():
    from components.monitoring.alerts import AlertThresholds, alerting_rules, serving_alert_rules

    rules = alerting_rules(serving_alert_rules("serving", "test", AlertThresholds()))
    names = set().union(*(extract_metric_names(r["expr"]) for r in rules))
    assert names and sorted(n for n in names if not metric_exists(n)) == []


@pytest.mark.parametrize("typo,where", [
    (":tensorflow:serving:request_cuont", "Requests per second by model"),
    (":tensorflow:serving:request_latency_buckets", "Request latency p50 / p90 / p99 by model"),
    (":tensorflow:serving:request_latency", "Request latency p50 / p90 / p99 by model"),  # no suffix
    ("kube_deployment_status_replica_available", "Ready pods per Deployment"),
])
def test_a_misspelt_metric_in_a_copied_dashboard_is_caught(tmp_path, typo, where):
    for path in DASHBOARD_DIR.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    path = tmp_path / "tfserving.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    (panel,) = [p for p in iter_panels(doc) if p["title"] == where]
    original = next(iter(sorted(extract_metric_names(panel["targets"][0]["expr"]))))
    target = panel["targets"][0]
    target["expr"] = re.sub(re.escape(original) + r"(?![\w:])", typo, target["expr"])
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert unknown_metrics(load_dashboards(tmp_path)) == [f"tfserving / {where} / A: {typo}"]


def test_a_misspelt_metric_in_a_variable_query_is_caught():
    doc = copy.deepcopy(DASHBOARDS["gpu"])
    node = variables(doc)["node"]
    node["query"]["query"] = node["query"]["query"].replace("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_GPU_UTIL")
    assert unknown_metrics({"gpu": doc}) == ["gpu / variable node: DCGM_FI_GPU_UTIL"]


def test_catalogue_entries():
    assert set(KNOWN_METRICS.values()) <= SOURCES
    assert HISTOGRAMS <= set(KNOWN_METRICS)
    for name in KNOWN_METRICS:
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name), name
    # TF Serving names are TensorFlow monitoring paths with every '/' turned into ':'.
    for name, source in KNOWN_METRICS.items():
        if source.startswith("tensorflow"):
            assert name.startswith(":tensorflow:"), name


@pytest.mark.parametrize("name,exists", [
    (":tensorflow:serving:request_count", True),
    (":tensorflow:serving:request_latency_bucket", True),
    (":tensorflow:serving:request_latency_sum", True),
    (":tensorflow:serving:request_latency_count", True),
    (":tensorflow:serving:request_latency", False),  # a histogram's bare name has no series
    (":tensorflow:serving:request_count_sum", False),  # a counter has no histogram series
    (":tensorflow:serving:request_latency_bucket_bucket", False),
    ("tensorflow:serving:request_count", False),  # the leading ':' matters
    (":tensorflow:serving:batching:processed_batch_size_bucket", False),  # BatchFunction op, not enabled
    (":tensorflow:serving:batching_session:processed_batch_size_bucket", True),
    ("DCGM_FI_DEV_GPU_UTIL", True),
    ("dcgm_fi_dev_gpu_util", False),
    ("up", True),
    ("", False),
])
def test_metric_exists(name, exists):
    assert metric_exists(name) is exists


def test_metric_source_and_series_names():
    assert metric_source(":tensorflow:serving:runtime_latency_sum") == "tensorflow-serving"
    assert metric_source("DCGM_FI_DEV_FB_FREE") == "dcgm-exporter"
    assert metric_source(":tensorflow:serving:runtime_latency") is None
    names = series_names()
    assert ":tensorflow:serving:request_latency_bucket" in names
    assert ":tensorflow:serving:request_latency" not in names
    assert all(metric_exists(n) for n in names)


# --- the PromQL scanner -----------------------------------------------------------------------

EXTRACT_CASES = [
    ("up", {"up"}),
    (":tensorflow:serving:request_count", {":tensorflow:serving:request_count"}),
    ("rate(x[5m])", {"x"}),
    ("rate(x_total[5m:30s])", {"x_total"}),  # subquery: the ':' inside brackets is not a name
    ('histogram_quantile(0.99, sum by (le) (rate(:tensorflow:serving:request_latency_bucket'
     '{namespace="serving", le!="+Inf"}[5m])))', {":tensorflow:serving:request_latency_bucket"}),
    ("histogram_quantile(0.9, sum(rate(a_bucket[5m])) by (le, model_name))", {"a_bucket"}),
    ("sum without (pod) (rate(foo_total[5m]))", {"foo_total"}),
    ("SUM BY (job) (Foo)", {"Foo"}),  # keywords are case-insensitive, names are not
    ('foo{job="bar:baz_total", path=~"rate(x[5m])", q="a\\"b_total"}', {"foo"}),
    ("foo{instance='a:9090', job=`raw\\n`}", {"foo"}),
    ("rate(foo[5m] offset 1h) - rate(foo[5m] offset -30m)", {"foo"}),
    ("foo @ start() + bar @ 1609746000", {"foo", "bar"}),
    ("a:b:c / ignoring (code) group_left (le) d:e", {"a:b:c", "d:e"}),
    ("x * on (namespace, pod) group_left () group by (namespace, pod) (y)", {"x", "y"}),
    ("x and on(a) y or z unless w == bool 1", {"x", "y", "z", "w"}),
    ("x > Inf or x < -inf or x != NaN", {"x"}),
    ('label_replace(up, "dst", "$1", "instance", "(.*):.*")', {"up"}),
    ('count_values("version", build_info) + topk(3, m1) + quantile(0.9, m2)', {"build_info", "m1", "m2"}),
    ("max by (le) (min_over_time(sum_metric[1h])) + avg(count_total)", {"sum_metric", "count_total"}),
    ("rate(by_total[5m]) + on_total", {"by_total", "on_total"}),  # keyword prefixes are names
    ("vector(1) + time() + scalar(foo)", {"foo"}),
    ('{__name__="job:requests:rate5m", job="x"}', {"job:requests:rate5m"}),
    ('{__name__=~"kube_pod_container_resource_limits|kube_pod_init_container_resource_limits", '
     'resource="cpu"}', {"kube_pod_container_resource_limits", "kube_pod_init_container_resource_limits"}),
    ('{__name__!="excluded", job="x"}', set()),
    ('{"my.dotted.metric", job="x"}', {"my.dotted.metric"}),
    ('sum(rate(x{ns=~"$namespace", model=~"${model:regex}"}[$__rate_interval])) / $scale', {"x"}),
    ("rate(x[[[interval]]])", {"x"}),  # Grafana's legacy [[var]] syntax
    ("foo # bar_total is a comment\n + baz", {"foo", "baz"}),
]


@pytest.mark.parametrize("expr,names", EXTRACT_CASES)
def test_extract_metric_names(expr, names):
    assert extract_metric_names(expr) == names


def test_numbers_and_durations_are_not_names():
    assert extract_metric_names("1e3 * 0.5 + 0x1F + .5 + 1h30m") == set()
    kinds = [t.kind for t in tokenize("rate(x[5m]) offset 1h30m")]
    assert kinds == ["ident", "(", "ident", ")", "ident", "number"]


@pytest.mark.parametrize("expr", [
    '{__name__=~"DCGM_.*"}',  # a regex naming no metric cannot be checked
    'foo{job="unterminated}',
    "foo{job=}",
])
def test_uncheckable_or_broken_expressions_raise(expr):
    with pytest.raises(ValueError):
        extract_metric_names(expr)


@pytest.mark.parametrize("query,names", [
    ("label_values(namespace)", set()),
    ('label_values(kube_deployment_spec_replicas{deployment=~"tfserving-.+"}, namespace)',
     {"kube_deployment_spec_replicas"}),
    ('label_values(:tensorflow:serving:request_count{namespace=~"$namespace", a=~"x,y"}, model_name)',
     {":tensorflow:serving:request_count"}),
    ("label_names()", set()),
    ("label_names(up)", {"up"}),
    ("metrics(DCGM_.*)", set()),
    ("query_result(topk(5, sum by (pod) (rate(x_total[5m]))))", {"x_total"}),
])
def test_template_query_metric_names(query, names):
    assert template_query_metric_names(query) == names


def test_unknown_template_query_is_rejected():
    with pytest.raises(ValueError):
        template_query_metric_names("up")


# --- the queries under promtool ---------------------------------------------------------------

NS = "serving"
SELECTION = {"namespace": NS, "model": "m", "node": ".+"}
GRAFANA_INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def render(expr: str, selection: dict[str, str]) -> str:
    """Substitute Grafana variables as Grafana would for a single selected value."""
    values = {**GRAFANA_INTERVALS, **selection}

    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    rendered = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)
    assert "$" not in rendered, rendered
    return rendered




def test_every_panel_query_parses(promtool, tmp_path):
    rules = []
    for key, dashboard in DASHBOARDS.items():
        for panel, target in panel_exprs(dashboard):
            rules.append({"record": f"dashboard:{key}:panel{panel['id']}_{target['refId']}",
                          "expr": render(target["expr"], SELECTION)})
    path = tmp_path / "dashboards.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, width=10_000))
    result = run(promtool, "check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_scanner_cases_are_valid_promql(promtool, tmp_path):
    """The scanner's test expressions are real PromQL (bar Grafana variables and Prometheus 3 syntax)."""
    rules = [{"record": f"case{i}", "expr": expr} for i, (expr, _) in enumerate(EXTRACT_CASES)
             if "$" not in expr and "[[" not in expr and '{"' not in expr]
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "cases", "rules": rules}]}, width=10_000))
    result = run(promtool, "check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rules) >= 20


def series(name: str, labels: dict[str, str], values: str) -> dict:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


RC = ":tensorflow:serving:request_count"
POD = {"namespace": NS, "pod": "tfserving-a-7d9f-x1", "server": "a", "track": "stable"}
GPU = {"Hostname": "node-a", "gpu": "0", "UUID": "GPU-1", "modelName": "NVIDIA L4"}
# One sample per minute; over [5m] at 10m the rate of "0+60x10" is exactly 1/s.
INPUT = [
    series(RC, {**POD, "model_name": "m", "status": "OK"}, "0+54x10"),
    series(RC, {**POD, "model_name": "m", "status": "INVALID_ARGUMENT"}, "0+6x10"),
    series(RC, {**POD, "model_name": "n", "status": "OK"}, "0+60x10"),
    # Another namespace's server must not count.
    series(RC, {**POD, "namespace": "other", "model_name": "m", "status": "OK"}, "0+600x10"),
    *(series(":tensorflow:serving:request_latency_bucket",
             {**POD, "model_name": "m", "API": "predict", "entrypoint": "REST", "le": le}, values)
      for le, values in (("1000", "0+30x10"), ("2000", "0+60x10"), ("+Inf", "0+60x10"))),
    # dcgm-exporter: a GPU of a pod that served model m, an idle GPU of no pod, a GPU of another pod.
    series("DCGM_FI_DEV_GPU_UTIL", {**GPU, "namespace": NS, "pod": "tfserving-a-7d9f-x1"}, "40x10"),
    series("DCGM_FI_DEV_GPU_UTIL",
           {**GPU, "gpu": "1", "UUID": "GPU-2", "namespace": "gpu", "pod": "dcgm-exporter-abc"}, "0x10"),
    series("DCGM_FI_DEV_GPU_UTIL",
           {**GPU, "gpu": "2", "UUID": "GPU-3", "namespace": NS, "pod": "tfserving-b-1-z"}, "90x10"),
    series("DCGM_FI_DEV_FB_USED", {**GPU, "namespace": NS, "pod": "tfserving-a-7d9f-x1"}, "3000x10"),
    series("DCGM_FI_DEV_FB_FREE", {**GPU, "namespace": NS, "pod": "tfserving-a-7d9f-x1"}, "1000x10"),
]


def expectation(key: str, title: str, samples: list[tuple[str, float]], ref: str = "A",
                selection: dict[str, str] | None = None) -> dict:
    (panel,) = [p for p in iter_panels(DASHBOARDS[key]) if p["title"] == title]
    (target,) = [t for t in panel["targets"] if t["refId"] == ref]
    return {"expr": render(target["expr"], selection or SELECTION), "eval_time": "10m",
            "exp_samples": [{"labels": labels, "value": value} for labels, value in samples]}


def test_main_queries_compute_the_right_values(promtool, tmp_path):
    all_models = {**SELECTION, "model": ".+"}
    tests = [
        expectation("tfserving", "Requests per second by model", [('{model_name="m"}', 1)]),
        expectation("tfserving", "Requests per second by model",
                    [('{model_name="m"}', 1), ('{model_name="n"}', 1)], selection=all_models),
        expectation("tfserving", "Error ratio by model",
                    [('{model_name="m"}', 0.1), ('{model_name="n"}', 0)], selection=all_models),
        expectation("tfserving", "Failed requests per second by status",
                    [('{model_name="m", status="INVALID_ARGUMENT"}', 0.1)]),
        expectation("tfserving", "Requests per second by track", [('{model_name="m", track="stable"}', 1)]),
        # p50 of 0.1/s under 1000 µs and 0.1/s in (1000, 2000] µs: the edge of the first bucket.
        expectation("tfserving", "Request latency p50 / p90 / p99 by model", [('{model_name="m"}', 1000)]),
        expectation("gpu", "Framebuffer memory used (share)", [('{Hostname="node-a", gpu="0"}', 0.75)]),
        expectation("gpu", "GPU utilisation by serving pod",
                    [(f'{{Hostname="node-a", gpu="0", namespace="{NS}", pod="tfserving-a-7d9f-x1"}}', 40)]),
        expectation("gpu", "Requests per second per GPU", [(f'{{namespace="{NS}"}}', 1)]),
    ]
    (tmp_path / "empty.yaml").write_text("groups: []\n")
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["empty.yaml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": INPUT, "promql_expr_test": tests}]}, width=10_000))
    result = run(promtool, "test", "rules", "test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_value_fails_under_promtool(promtool, tmp_path):
    """The evaluation test above can fail: a wrong expectation is reported."""
    wrong = expectation("tfserving", "Requests per second by model", [('{model_name="m"}', 2)])
    (tmp_path / "empty.yaml").write_text("groups: []\n")
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["empty.yaml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": INPUT, "promql_expr_test": [wrong]}]}, width=10_000))
    result = run(promtool, "test", "rules", "test.yaml", cwd=tmp_path)
    assert result.returncode != 0 and "model_name" in result.stdout + result.stderr
