"""The plan benchmark's own logic: generated stack files, the fit, the linearity rule, the ratios.

No timing assertions: figures come from synthetic data (or a trivial process, for the plumbing).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from bench import plan_bench as pb
from stacks.config import parse_settings
from stacks.plan import ROOT
from stacks.stack_files import load_stack_config


def settings_of(path: Path):
    return parse_settings(load_stack_config(ROOT / "Pulumi.yaml", path, "dev").config)


def dev_data() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())


# --------------------------------------------------------------------------- generated stack files

@pytest.mark.parametrize("count", [1, 200])
def test_generated_stack_parses_with_n_latest_models_and_no_canary(tmp_path, count):
    path = pb.write_model_stack(count, tmp_path)
    assert path.parent == tmp_path
    settings = settings_of(path)
    served = {name: model for server in settings.servers.values() for name, model in server.models.items()}
    generated = {name: model for name, model in served.items() if name.startswith("m")}
    assert sorted(generated) == [f"m{i:04d}" for i in range(1, count + 1)]
    assert all(m.version_policy == "latest" and m.canary_version is None for m in generated.values())
    assert not any(server.has_canary for server in settings.servers.values())
    # The dev stack's other server is untouched, and the models replace the default server's own.
    assert "cpu" in settings.servers and "digits-cpu" in settings.servers["cpu"].models
    assert "digits" not in served
    # No route without canary or exposure, so one server holds them all.
    assert set(settings.servers["default"].models) == set(generated)


def test_split_over_servers_fits_the_gpu_pool(tmp_path):
    data = pb.model_stack_data(dev_data(), 200, per_server=16)
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump(data))
    settings = settings_of(path)
    generated = [s for name, s in settings.servers.items() if name.startswith("default")]
    assert len(generated) == 13  # ceil(200 / 16)
    assert all(len(s.models) <= 16 and s.node_pool == "gpu" for s in generated)
    assert sum(len(s.models) for s in generated) == 200
    # At peak each server runs maxReplicas (2 in dev) and a rollout's surge pod, one GPU each, one per node.
    assert settings.node_pools["gpu"].max_size >= 39
    assert {"default", "default-2", "default-13", "cpu"} <= set(settings.servers)


def test_exposure_makes_the_generator_respect_the_route_limit(tmp_path):
    from components.serving.routing import MAX_MODELS

    data = dev_data()
    data["config"]["tfserving-platform:exposure"] = {
        "enabled": True, "gatewayClassName": "envoy", "hostname": "models.example.com",
        "tlsSecretName": "models-tls", "proxyNamespaces": ["envoy-gateway-system"]}
    data["config"]["tfserving-platform:clusterPrerequisites"] = ["gateway-api-crds"]  # EKS has no Gateway API
    base = tmp_path / "Pulumi.exposed.yaml"
    base.write_text(yaml.safe_dump(data))
    settings = settings_of(pb.write_model_stack(40, tmp_path / "out", base=base))
    sizes = [len(s.models) for name, s in settings.servers.items() if name.startswith("default")]
    assert sizes == [16, 16, 8] and max(sizes) <= MAX_MODELS


def test_generator_rejects_nonsense():
    with pytest.raises(ValueError):
        pb.model_stack_data(dev_data(), 0)
    with pytest.raises(ValueError):
        pb.model_stack_data(dev_data(), 10, per_server=0)


def test_parse_counts():
    assert pb.parse_counts("200,1,10,50,10") == [1, 10, 50, 200]
    for bad in ("0,10", "a,b", ""):
        with pytest.raises(Exception):
            pb.parse_counts(bad)


# --------------------------------------------------------------------------- fit, ratios, linearity

def test_least_squares_recovers_a_line():
    xs = [1, 10, 50, 200]
    slope, intercept = pb.least_squares(xs, [2.0 + 0.005 * x for x in xs])
    assert slope == pytest.approx(0.005) and intercept == pytest.approx(2.0)


def test_least_squares_of_scattered_points():
    # Hand-computed: mean x 2, mean y 5/3, Sxy = 1, Sxx = 2.
    slope, intercept = pb.least_squares([1, 2, 3], [1, 2, 2])
    assert slope == pytest.approx(0.5) and intercept == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        pb.least_squares([5, 5], [1, 2])


def test_ratio_to_floor_is_the_median_of_per_round_ratios():
    # Per-round ratios 2, 1, 3 -> 2; the ratio of the medians (3 / 3) would say 1.
    assert pb.ratio_to_floor([2.0, 3.0, 9.0], [1.0, 3.0, 3.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        pb.ratio_to_floor([1.0], [1.0, 2.0])


def test_linear_series_passes():
    scale = pb.scaling({n: 2.0 + 0.008 * n for n in (1, 10, 50, 200)})
    assert scale.slope_s == pytest.approx(0.008)
    assert scale.segments.pivot == 50
    assert scale.segments.low == pytest.approx(0.008) and scale.segments.high == pytest.approx(0.008)
    assert scale.linear is True and scale.ratio == pytest.approx(1.0)


def test_quadratic_series_fails_linearity():
    points = {n: 2.0 + 1e-4 * n * n for n in (1, 10, 50, 200)}
    scale = pb.scaling(points)
    seg = scale.segments
    assert seg.low == pytest.approx(1e-4 * (2500 - 1) / 49)      # 5.1 ms/model
    assert seg.high == pytest.approx(1e-4 * (40000 - 2500) / 150)  # 25 ms/model
    assert scale.ratio == pytest.approx(seg.high / seg.low)
    assert scale.linear is False
    verdict = pb.verdicts(1.0, scale)[-1]
    assert verdict.label == "FAIL" and "high/low 4.90x" in verdict.detail


def test_noise_around_zero_is_not_a_quadratic_term():
    # Both slopes are timer noise (one negative): no ratio, and within the 1 ms/model allowance.
    scale = pb.scaling({1: 2.30, 10: 2.32, 50: 2.28, 200: 2.35})
    assert scale.ratio is None and scale.linear is True


def test_error_bars_decide_a_borderline_case():
    points = {1: 2.0, 50: 2.0 + 49 * 0.004, 200: 2.0 + 49 * 0.004 + 150 * 0.008}  # 4 then 8 ms/model
    assert pb.scaling(points).linear is False
    # A 0.3 s min-max half-range at each point widens both slopes enough to give the benefit of the doubt.
    assert pb.scaling(points, {1: 0.3, 50: 0.3, 200: 0.3}).linear is True
    seg = pb.segment_slopes(points, {1: 0.3, 50: 0.3, 200: 0.3})
    assert seg.low_err == pytest.approx(0.6 / 49) and seg.high_err == pytest.approx(0.6 / 150)


def test_too_few_counts_cannot_be_judged():
    assert pb.segment_slopes({1: 1.0, 200: 2.0}) is None
    scale = pb.scaling({1: 1.0, 200: 2.0})
    assert scale.slope_s == pytest.approx(1 / 199)
    labels = [v.label for v in pb.verdicts(None, scale)]
    assert labels == ["PASS", "N/A "]
    assert [v.label for v in pb.verdicts(None, pb.scaling({50: 1.0}))] == ["N/A ", "N/A "]


def test_verdict_thresholds():
    linear = pb.scaling({n: 1.0 + 0.025 * n for n in (1, 10, 50, 200)})  # 25 ms/model: too dear
    prod, cost, line = pb.verdicts(2.5, linear)
    assert (prod.label, cost.label, line.label) == ("FAIL", "FAIL", "PASS")
    cheap = pb.scaling({n: 1.0 + 0.001 * n for n in (1, 10, 50, 200)})
    assert [v.label for v in pb.verdicts(1.9, cheap)] == ["PASS", "PASS", "PASS"]


def test_spread_is_half_the_range():
    assert pb.spread([2.0, 2.4, 2.1]) == pytest.approx(0.2)
    assert pb.spread([2.0]) == 0


# --------------------------------------------------------------------------- report and plumbing

def fake(name: str, walls: list[float], models: int | None = None, program: float | None = 1.0,
         floor: bool = False) -> pb.Result:
    out = f"103 to create: 77 resources\nplanned stack dev offline in {program}s\n" if program else ""
    runs = [pb.Run(wall_s=w, user_s=w, sys_s=0.0, max_rss_kib=150 * 1024, stdout=out) for w in walls]
    return pb.Result(pb.Case(name, ["python", name], models, floor), runs)


def test_report_table_and_figures():
    results = [fake(pb.PLAIN_ROW, [0.25, 0.25, 0.25], program=None),
               fake("floor (900 SDK modules)", [0.5, 0.5, 0.5], program=None, floor=True),
               fake("plan prod", [1.2, 1.0, 0.9]),
               *[fake(f"dev + {n} models", [1.0 + 0.002 * n] * 3, n) for n in (1, 10, 50, 200)]]
    text, figures = pb.report(results, runs=3, warmup=1)
    assert "plan prod" in text and "PASS  prod plan within 2x the floor (SDK modules it loads): 2.00x" in text
    assert "marginal cost per model (least squares over 1,10,50,200 models): 2.00 ms/model" in text
    prod = next(r for r in figures["rows"] if r["name"] == "plan prod")
    assert prod["median_wall_s"] == pytest.approx(1.0) and prod["ratio_to_floor"] == pytest.approx(2.0)
    assert prod["ratio_to_plain_import"] == pytest.approx(4.0)  # the plain import: context only
    assert prod["resources"] == 103 and prod["plan_stack_s"] == pytest.approx(1.0)
    assert prod["median_peak_rss_mib"] == pytest.approx(150.0)
    assert figures["scaling"]["ms_per_model"] == pytest.approx(2.0)
    assert figures["scaling"]["linear"] is True
    assert [t["ok"] for t in figures["targets"]] == [True, True, True]
    json.dumps(figures)  # what --json writes


def test_cases_cover_floor_stacks_and_model_counts(tmp_path):
    script = tmp_path / "sdk_floor.py"
    rows = pb.cases({200: tmp_path / "b.yaml", 1: tmp_path / "a.yaml"}, python="py",
                    floor_script=script, floor_modules=900)
    assert rows[0].argv == ["py", "-c", "import pulumi, pulumi_aws, pulumi_gcp, pulumi_kubernetes, pulumi_random"]
    assert rows[1].argv == ["py", str(script)] and rows[1].name == "floor (900 SDK modules)"
    assert [r.floor for r in rows] == [False, True] + [False] * 5
    assert [r.name for r in rows[2:5]] == ["plan dev", "plan prod", "plan gke-dev"]
    assert rows[3].argv == ["py", "-m", "stacks", "plan", "--stack", "prod", "--quiet"]
    assert [r.models for r in rows[5:]] == [1, 200]
    assert rows[5].argv[-4:] == ["dev", "--config-file", str(tmp_path / "a.yaml"), "--quiet"]
    # Without a floor script the plain import is the floor (a report always has exactly one).
    assert [r.floor for r in pb.cases({}, python="py")] == [True, False, False, False]


def test_report_needs_exactly_one_floor():
    rows = [fake(pb.PLAIN_ROW, [0.5]), fake("plan prod", [1.0])]
    with pytest.raises(ValueError, match="exactly one floor row, got 0"):
        pb.report(rows, runs=1, warmup=0)


def test_prod_verdict_fails_above_twice_the_floor_and_passes_at_it():
    """The verdict can go either way: the target is a ratio to the SDK-modules floor, boundary included."""
    scale = pb.scaling({1: 1.0, 200: 1.0})
    assert pb.verdicts(2.0, scale)[0].label == "PASS"
    assert pb.verdicts(2.01, scale)[0].label == "FAIL"
    assert pb.verdicts(0.9, scale)[0].label == "PASS"
    # Through the report: a prod plan 3x the floor FAILs although it is only 1.5x the plain import.
    rows = [fake(pb.PLAIN_ROW, [2.0, 2.0]), fake("floor (9 SDK modules)", [1.0, 1.0], floor=True),
            fake("plan prod", [3.0, 3.0])]
    text, figures = pb.report(rows, runs=2, warmup=0)
    assert "FAIL  prod plan within 2x the floor (SDK modules it loads): 3.00x" in text
    assert figures["targets"][0]["ok"] is False


def test_floor_script_imports_exactly_the_modules_and_exits_like_the_plan(tmp_path):
    script = pb.write_floor_script(["pulumi", "pulumi_random"], tmp_path / "floor.py")
    probe = tmp_path / "probe.py"
    # Run the script's body, then report what it loaded: os._exit ends the process, so patch it.
    probe.write_text("import os, sys\n"
                     "os._exit = lambda code: (print('random' if 'pulumi_random' in sys.modules else '-', "
                     "'aws' if 'pulumi_aws' in sys.modules else '-', 'exit', code), sys.exit(code))\n"
                     f"exec(open({str(script)!r}).read())\n")
    assert pb.run_once([sys.executable, str(probe)]).stdout.split() == ["random", "-", "exit", "0"]
    assert "os._exit(0)" in script.read_text()  # the plan leaves the same way (stacks/__main__.py)
    with pytest.raises(ValueError, match="not SDK modules"):
        pb.write_floor_script(["pulumi", "yaml"], tmp_path / "bad.py")
    with pytest.raises(ValueError, match="no SDK modules"):
        pb.write_floor_script([], tmp_path / "empty.py")


def test_sdk_modules_are_recorded_from_a_real_plan():
    """The floor's list comes from sys.modules after a plan: lazily loaded submodules included, the
    program's own modules and non-SDK libraries excluded."""
    modules = pb.sdk_modules_of("prod")
    assert {"pulumi", "pulumi_aws", "pulumi_aws.eks", "pulumi_kubernetes.core.v1", "pulumi_random"} <= set(modules)
    assert modules == sorted(modules) and all(pb.is_sdk_module(m) for m in modules)
    assert not any(m.startswith(("stacks", "components", "pydantic", "yaml")) for m in modules)


def test_run_once_records_the_child_and_reports_failure():
    run = pb.run_once([sys.executable, "-c", "print('planned stack dev offline in 0.25s')"])
    assert run.max_rss_kib > 0 and run.wall_s > 0 and "offline in 0.25s" in run.stdout
    with pytest.raises(pb.CommandFailed, match="exited 3"):
        pb.run_once([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])


# --------------------------------------------------------------------------- cold start, before and after
def test_cold_start_before_turns_off_every_cold_start_setting_and_nothing_else():
    from bench import cold_start

    dev = dev_data()
    gke = yaml.safe_load((ROOT / "Pulumi.gke-dev.yaml").read_text())
    was_dev, was_gke = cold_start.before(dev), cold_start.before(gke)
    key = cold_start.KEY
    assert all(p["fastImagePull"] is False for p in was_dev["config"][f"{key}nodePools"].values())
    assert all(p["imageStreaming"] is False for p in was_gke["config"][f"{key}nodePools"].values())
    assert was_gke["config"][f"{key}dockerHubMirror"] is False and f"{key}dockerHubMirror" not in was_dev["config"]
    servers = was_dev["config"][f"{key}servers"]
    assert all(s["modelCache"] is False and s["imagePrePull"] is False for s in servers.values())
    # dev's GPU server slept outside office hours; before, it held the schedule's replica all the time.
    assert "scaleToZero" not in servers["default"] and servers["default"]["replicas"] == 1
    assert servers["cpu"]["replicas"] == 1
    assert dev["config"][f"{key}servers"]["default"]["replicas"] == 0  # the input is not edited
    # Nothing else changes: drop the switched keys and the two files agree.
    def strip(data):
        data = yaml.safe_load(yaml.safe_dump(data))
        for pool in data["config"][f"{key}nodePools"].values():
            pool.pop("fastImagePull", None), pool.pop("imageStreaming", None)
        for server in data["config"][f"{key}servers"].values():
            server.pop("modelCache", None), server.pop("scaleToZero", None), server.pop("replicas", None)
            server.pop("imagePrePull", None)
        data["config"].pop(f"{key}dockerHubMirror", None)
        return data
    assert strip(was_dev) == strip(dev) and strip(was_gke) == strip(gke)


def test_cold_start_bench_reports_dev_before_and_after(tmp_path, capsys):
    """The bench plans dev twice; the figures are the estimates' (dev's GPU server: a faster image pull,
    a scale-to-zero wake, no GPU node held when idle), written as JSON and printed as a table."""
    from bench import cold_start

    assert cold_start.main(["--stacks", "dev", "--json", str(tmp_path / "out.json")]) == 0
    result = json.loads((tmp_path / "out.json").read_text())["dev"]
    before, after = result["before"], result["after"]
    gpu_before, gpu_after = before["servers"]["default"], after["servers"]["default"]
    # The image: a plain pull before; after, FastImagePull's parallel pull, started by the pre-pull at node Ready.
    serving_image = lambda rendered: int(re.search(r"serving image (\d+)s", rendered).group(1))  # noqa: E731
    assert serving_image(gpu_before["cold_node"]) == 60 and serving_image(gpu_after["cold_node"]) < 41
    assert "wake from zero" in gpu_after["cold_node"] and "wake from zero" not in gpu_before["cold_node"]
    assert gpu_after["cold_node_s"] < gpu_before["cold_node_s"]
    # Idle, dev holds no GPU node after; before, the stable and the canary pod held a g5.xlarge each all
    # month (2 x $1.006/h x 730 h = $1,469).
    assert round(before["monthly_idle"] - after["monthly_idle"]) == 1469
    assert after["monthly_typical"] is not None and before["monthly_typical"] is None
    table = capsys.readouterr().out
    assert f"{before['monthly_idle']:,.0f} -> {after['monthly_idle']:<14,.0f}" in table


def test_cold_start_bench_names_a_missing_stack(capsys):
    from bench import cold_start

    assert cold_start.main(["--stacks", "nope"]) == 2
    assert "--stacks: no stack file Pulumi.nope.yaml" in capsys.readouterr().err
