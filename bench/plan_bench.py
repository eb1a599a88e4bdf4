"""Wall time and peak memory of the offline plan, as whole processes, against the floor of importing the SDKs.

``python -m bench.plan_bench [--runs 5] [--models 1,10,50,200] [--json PATH]``

Rows: the plain import (a process that only runs ``import pulumi, pulumi_aws, ...``: context), the
floor (a process that imports exactly the SDK modules a prod plan leaves in ``sys.modules``: the
provider SDKs load their submodules lazily, so the plain import pays for almost none of them), the
dev, prod and gke-dev plans, and stacks generated from ``Pulumi.dev.yaml`` whose default server
serves N models (``m0001`` ...; versionPolicy latest; no canary), planned with ``--config-file`` as
stack dev.
Each command is a fresh process, timed from outside: wall time with ``time.perf_counter`` around
the child, peak RSS from the kernel's rusage of that child (``os.wait4``). Runs are interleaved
(every command once per round) so drift of a shared machine lands on every row alike; one warm-up
round is not counted. Ratios to the floor are the median of the per-round ratios.

Targets (PASS/FAIL): the prod plan within 2x the floor (the SDK modules it loads); the marginal cost
per model (least-squares
slope of wall time over model count) under 20 ms; and linear growth — see :func:`linearity`.
The exit status is 0 whatever the verdicts (it is a measurement); ``--strict`` exits 1 on a FAIL.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "tfserving-platform"
SERVERS_KEY = f"{PROJECT}:servers"
NODE_POOLS_KEY = f"{PROJECT}:nodePools"
EXPOSURE_KEY = f"{PROJECT}:exposure"

DEFAULT_MODELS = (1, 10, 50, 200)
FLOOR_IMPORTS = "import pulumi, pulumi_aws, pulumi_gcp, pulumi_kubernetes, pulumi_random"
"""The plain import of the SDKs the program uses (a row for context, not the floor)."""
SDK_TOPS = ("pulumi", "pulumi_aws", "pulumi_gcp", "pulumi_kubernetes", "pulumi_random")
"""Top-level packages whose modules count as the SDK: the floor imports every module of these that a
plan loads. Everything else the plan loads (pydantic, yaml, the project's own code) is program cost."""
PLAIN_ROW = "import SDKs (plain)"

# Targets.
PROD_FLOOR_RATIO_MAX = 2.0      # the prod plan may take at most twice the floor's (SDK modules) wall time
MS_PER_MODEL_MAX = 20.0         # marginal cost of one more model, least-squares slope
LINEARITY_RATIO_MAX = 1.5       # per-model cost above the pivot at most 1.5x the cost below it ...
LINEARITY_ALLOWANCE_MS = 1.0    # ... plus 1 ms/model, so that two near-zero slopes (noise) cannot FAIL


# --------------------------------------------------------------------------- generated stack files

def model_names(count: int) -> list[str]:
    """``m0001``, ``m0002``, ... (valid model names, sorted as generated)."""
    return [f"m{i:04d}" for i in range(1, count + 1)]


def _route_limit() -> int:
    """Models one server may hold when it gets a route (canary or exposure): Gateway API's match limit."""
    from components.serving.routing import MAX_MODELS

    return MAX_MODELS


def _has_route(config: dict[str, Any]) -> bool:
    """Whether servers get a route regardless of canaries: exposure through a Gateway is on."""
    exposure = config.get(EXPOSURE_KEY) or {}
    return isinstance(exposure, dict) and bool(exposure.get("enabled"))


def _canary_active(server: dict[str, Any]) -> bool:
    return any(isinstance(m, dict) and m.get("canaryVersion") is not None
               and m["canaryVersion"] not in (m.get("versions") or [])
               for m in (server.get("models") or {}).values())


def model_stack_data(base: dict[str, Any], count: int, per_server: int | None = None,
                     server: str = "default") -> dict[str, Any]:
    """A copy of stack file ``base`` whose ``servers.<server>.models`` is ``count`` latest-policy models.

    With ``per_server``, the models are split over servers of at most that many models (``server``,
    ``server-2``, ...), each a copy of ``server``'s settings, and the server's node pool gets a
    ``maxSize`` large enough for the GPUs their minimum replicas request, so the config validates.
    Other servers stay as they are; no generated model has a canary.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    if per_server is not None and per_server < 1:
        raise ValueError(f"per_server must be at least 1, not {per_server}")
    data = copy.deepcopy(base)
    config = data["config"]
    servers: dict[str, Any] = config[SERVERS_KEY]
    template = servers[server]
    names = model_names(count)
    size = per_server or count
    chunks = [names[i:i + size] for i in range(0, count, size)]
    generated: dict[str, Any] = {}
    for index, chunk in enumerate(chunks):
        key = server if index == 0 else f"{server}-{index + 1}"
        if key != server and key in servers:
            raise ValueError(f"server {key!r} already exists in the base stack file")
        spec = copy.deepcopy(template)
        spec["models"] = {name: {"versionPolicy": "latest"} for name in chunk}
        generated[key] = spec
    result: dict[str, Any] = {}
    for key, spec in servers.items():
        if key == server:
            result.update(generated)
        else:
            result[key] = spec
    config[SERVERS_KEY] = result
    if len(chunks) > 1:
        _fit_pool(config, template.get("nodePool", "gpu"))
    return data


def _fit_pool(config: dict[str, Any], pool_name: str) -> None:
    """Raise the GPU pool's maxSize to hold the peak of its servers: maxReplicas (and canaries), with one
    surge pod per Deployment for rolling updates (the rule in stacks/settings.py)."""
    pool = (config.get(NODE_POOLS_KEY) or {}).get(pool_name)
    if not isinstance(pool, dict) or not pool.get("gpusPerNode"):
        return
    demand = 0
    for spec in config[SERVERS_KEY].values():
        if spec.get("nodePool", "gpu") != pool_name:
            continue
        pods = spec.get("maxReplicas", 3) + 1 + (spec.get("canaryReplicas", 1) + 1 if _canary_active(spec) else 0)
        demand += pods * spec.get("gpus", 1)
    per_node = pool["gpusPerNode"] * pool.get("gpuTimeSlicing", 1)
    pool["maxSize"] = max(pool.get("maxSize", 3), math.ceil(demand / per_node))


def load_settings(stack_file: Path, stack: str = "dev", root: Path = ROOT) -> Any:
    """Parse a stack file the way the plan does (project defaults + stack values), validated."""
    from stacks.config import parse_settings
    from stacks.stack_files import load_stack_config

    return parse_settings(load_stack_config(root / "Pulumi.yaml", stack_file, stack).config)


def write_model_stack(count: int, out_dir: Path, base: Path = ROOT / "Pulumi.dev.yaml",
                      per_server: int | None = None, stack: str = "dev") -> Path:
    """Write ``Pulumi.models-<count>.yaml`` under ``out_dir`` and check that it validates.

    Without ``per_server`` all models go to one server unless servers get a route (exposure on),
    which holds at most 16 models, or one server fails validation; then the models are split.
    """
    from stacks.config import ConfigError

    data = yaml.safe_load(base.read_text())
    if per_server is None and _has_route(data["config"]):
        per_server = _route_limit()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"Pulumi.models-{count}.yaml"
    path.write_text(yaml.safe_dump(model_stack_data(data, count, per_server), sort_keys=False))
    try:
        load_settings(path, stack)
    except ConfigError:
        if per_server is not None:
            raise
        path.write_text(yaml.safe_dump(model_stack_data(data, count, _route_limit()), sort_keys=False))
        load_settings(path, stack)
    return path


# --------------------------------------------------------------------------- arithmetic of the figures

def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio_to_floor(samples: Sequence[float], floor: Sequence[float]) -> float:
    """Median of the round-by-round ratios (sample i against floor run i of the same round)."""
    if not samples or len(samples) != len(floor):
        raise ValueError("need as many samples as floor runs, at least one")
    return median([s / f for s, f in zip(samples, floor)])


def least_squares(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Slope and intercept of the least-squares line through (xs, ys)."""
    if len(xs) != len(ys) or len(set(xs)) < 2:
        raise ValueError("need at least two distinct x values, one y each")
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x


@dataclass(frozen=True)
class Segments:
    """Per-model cost (seconds per model) from the first count to the pivot and from the pivot to the
    last, each with an error bar from the spread of the runs."""

    first: int
    pivot: int
    last: int
    low: float
    high: float
    low_err: float = 0.0
    high_err: float = 0.0


def segment_slopes(points: dict[int, float], errors: dict[int, float] | None = None) -> Segments | None:
    """Per-model cost below and above a pivot count, or None with fewer than three counts.

    The pivot is the middle count (of 1, 10, 50, 200 it is 50): the low slope runs from the first
    count to the pivot, the high slope from the pivot to the last count. ``errors`` (seconds, per
    count) are error bars of the points; a slope's error bar is the sum of its two ends' over the
    distance between them.
    """
    counts = sorted(points)
    if len(counts) < 3:
        return None
    errors = errors or {}
    first, pivot, last = counts[0], counts[len(counts) // 2], counts[-1]
    e = {c: errors.get(c, 0.0) for c in (first, pivot, last)}
    return Segments(first, pivot, last,
                    low=(points[pivot] - points[first]) / (pivot - first),
                    high=(points[last] - points[pivot]) / (last - pivot),
                    low_err=(e[first] + e[pivot]) / (pivot - first),
                    high_err=(e[pivot] + e[last]) / (last - pivot))


def linearity(seg: Segments, max_ratio: float = LINEARITY_RATIO_MAX,
              allowance: float = LINEARITY_ALLOWANCE_MS / 1000) -> tuple[bool, float | None]:
    """Whether growth is linear; returns (linear, high / low, or None when the low slope is <= 0).

    A quadratic term makes the per-model cost above the pivot much larger than below it. The rule:
    FAIL only when the high slope exceeds ``max_ratio`` times the low slope even after each is given
    the benefit of its error bar, plus an allowance of 1 ms/model (5% of the 20 ms budget), so that
    two slopes that are both timer noise around zero, where their ratio means nothing, cannot FAIL:

        linear  <=>  high - high_err <= max_ratio * max(low + low_err, 0) + allowance
    """
    ratio = seg.high / seg.low if seg.low > 0 else None
    linear = seg.high - seg.high_err <= max_ratio * max(seg.low + seg.low_err, 0.0) + allowance
    return linear, ratio


def spread(values: Sequence[float]) -> float:
    """Error bar of a median of runs: half the min-max range (0 for a single run)."""
    return (max(values) - min(values)) / 2


# --------------------------------------------------------------------------- running the commands

@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]
    models: int | None = None
    floor: bool = False
    """The row the ratios are taken against (the SDK modules the plan loads)."""


@dataclass(frozen=True)
class Run:
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kib: int
    stdout: str


@dataclass
class Result:
    case: Case
    runs: list[Run] = field(default_factory=list)

    @property
    def walls(self) -> list[float]:
        return [r.wall_s for r in self.runs]

    @property
    def median_wall(self) -> float:
        return median(self.walls)

    @property
    def rss_mib(self) -> float:
        return median([r.max_rss_kib for r in self.runs]) / 1024

    @property
    def resources(self) -> int | None:
        found = re.search(r"(\d+) to create", self.runs[-1].stdout) if self.runs else None
        return int(found.group(1)) if found else None

    @property
    def program_s(self) -> float | None:
        """The plan's own figure (``planned stack ... offline in Xs``): plan_stack, without start-up."""
        times = [float(m.group(1)) for r in self.runs
                 if (m := re.search(r"offline in ([0-9.]+)s", r.stdout))]
        return median(times) if times else None


class CommandFailed(Exception):
    pass


def run_once(argv: Sequence[str], cwd: Path = ROOT, timeout: float = 600) -> Run:
    """Run one process to its end; wall time around it, rusage of exactly that child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        if proc.returncode != 0:
            raise CommandFailed(f"{' '.join(argv)} exited {proc.returncode}:\n"
                                f"{err.read().decode(errors='replace')[-3000:]}")
    return Run(wall_s=wall, user_s=usage.ru_utime, sys_s=usage.ru_stime, max_rss_kib=usage.ru_maxrss,
               stdout=stdout)


def is_sdk_module(name: str) -> bool:
    return name.split(".", 1)[0] in SDK_TOPS


def sdk_modules_of(stack: str, python: str = sys.executable) -> list[str]:
    """Every SDK module (:data:`SDK_TOPS`) in ``sys.modules`` after a plan of ``stack``, sorted.

    The provider SDKs load their submodules lazily (``pulumi/_utils.py`` lazy_import), on first use
    by the program, so this is the only honest list: recorded, not guessed."""
    probe = ("import sys, contextlib, io; from stacks.plan import plan_stack\n"
             "with contextlib.redirect_stdout(io.StringIO()): plan_stack(%r)\n"
             "print(' '.join(sorted(sys.modules)))" % stack)
    done = subprocess.run([python, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return sorted(m for m in done.stdout.split() if is_sdk_module(m))


def write_floor_script(modules: Sequence[str], path: Path) -> Path:
    """A script importing exactly ``modules``, in order (parents first, as ``sorted`` puts them), then
    leaving with ``os._exit`` as ``python -m stacks`` does (``stacks/__main__.py`` ``_exit_now``): the
    floor must not pay the garbage collector's walk at interpreter exit (about 0.5 s) that the plan
    skips, or the ratio would flatter the plan.

    A file rather than ``-c``: about a thousand module names exceed what one argument may hold."""
    if not modules:
        raise ValueError("no SDK modules to import: the probe plan loaded none")
    bad = [m for m in modules if not is_sdk_module(m)]
    if bad:
        raise ValueError(f"not SDK modules: {bad[:5]}")
    path.write_text("import importlib, os, sys\n"
                    "for name in %r:\n    importlib.import_module(name)\n"
                    "sys.stdout.flush()\nos._exit(0)\n" % (list(modules),))
    return path


def cases(model_files: dict[int, Path], python: str = sys.executable,
          floor_script: Path | None = None, floor_modules: int = 0) -> list[Case]:
    """The rows: the plain import (context), the floor (when ``floor_script`` is given), the three
    plans and the generated stacks. Ratios are taken against the floor, or the plain import without one."""
    plan = [python, "-m", "stacks", "plan"]
    rows = [Case(PLAIN_ROW, [python, "-c", FLOOR_IMPORTS], floor=floor_script is None)]
    if floor_script is not None:
        rows.append(Case(f"floor ({floor_modules} SDK modules)", [python, str(floor_script)], floor=True))
    rows += [Case(f"plan {stack}", [*plan, "--stack", stack, "--quiet"]) for stack in ("dev", "prod", "gke-dev")]
    rows += [Case(f"dev + {count} models",
                  [*plan, "--stack", "dev", "--config-file", str(path), "--quiet"], count)
             for count, path in sorted(model_files.items())]
    return rows


def measure(rows: list[Case], runs: int, warmup: int, timeout: float,
            progress: Any = sys.stderr) -> list[Result]:
    """Every case once per round (warm-up rounds first, not counted), ``runs`` counted rounds."""
    results = [Result(case) for case in rows]
    for round_no in range(warmup + runs):
        counted = round_no >= warmup
        label = f"round {round_no - warmup + 1}/{runs}" if counted else f"warm-up {round_no + 1}/{warmup}"
        print(f"  {label} ...", file=progress, flush=True)
        for result in results:
            run = run_once(result.case.argv, timeout=timeout)
            if counted:
                result.runs.append(run)
    return results


# --------------------------------------------------------------------------- verdicts and report

@dataclass(frozen=True)
class Verdict:
    target: str
    ok: bool | None  # None: could not be judged (too few model counts)
    detail: str

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "N/A "}[self.ok]


@dataclass(frozen=True)
class Scaling:
    counts: list[int]
    slope_s: float | None
    intercept_s: float | None
    segments: Segments | None
    linear: bool | None
    ratio: float | None


def scaling(points: dict[int, float], errors: dict[int, float] | None = None) -> Scaling:
    """Least-squares marginal cost and the linearity check of wall time (s) over model count."""
    counts = sorted(points)
    slope = intercept = None
    if len(counts) >= 2:
        slope, intercept = least_squares(counts, [points[c] for c in counts])
    seg = segment_slopes(points, errors)
    if seg is None:
        return Scaling(counts, slope, intercept, None, None, None)
    linear, ratio = linearity(seg)
    return Scaling(counts, slope, intercept, seg, linear, ratio)


def verdicts(prod_ratio: float | None, scale: Scaling) -> list[Verdict]:
    """PASS/FAIL per target; ``prod_ratio`` is the prod plan's wall time over the floor's (SDK modules)."""
    out = []
    if prod_ratio is not None:
        out.append(Verdict(f"prod plan within {PROD_FLOOR_RATIO_MAX:g}x the floor (SDK modules it loads)",
                           prod_ratio <= PROD_FLOOR_RATIO_MAX, f"{prod_ratio:.2f}x"))
    if scale.slope_s is None:
        out.append(Verdict(f"marginal cost per model < {MS_PER_MODEL_MAX:g} ms", None,
                           "needs two model counts"))
    else:
        ms = scale.slope_s * 1000
        out.append(Verdict(f"marginal cost per model < {MS_PER_MODEL_MAX:g} ms", ms < MS_PER_MODEL_MAX,
                           f"{ms:.2f} ms/model"))
    rule = (f"linear (high - err <= {LINEARITY_RATIO_MAX:g} x max(low + err, 0) "
            f"+ {LINEARITY_ALLOWANCE_MS:g} ms/model)")
    seg = scale.segments
    if seg is None:
        out.append(Verdict(rule, None, "needs three model counts"))
    else:
        ratio = f"{scale.ratio:.2f}x" if scale.ratio is not None else "n/a (low <= 0)"
        out.append(Verdict(rule, scale.linear, f"low {seg.low * 1000:.2f} ms, high {seg.high * 1000:.2f} ms, "
                                               f"high/low {ratio}"))
    return out


def report(results: list[Result], runs: int, warmup: int) -> tuple[str, dict[str, Any]]:
    """The table and the figures; ratios against the row marked ``floor`` and, for context, the first
    row (the plain import)."""
    floors = [r for r in results if r.case.floor]
    if len(floors) != 1:
        raise ValueError(f"expected exactly one floor row, got {len(floors)}")
    floor, plain = floors[0], results[0]
    header = (f"{'case':<26} {'models':>6} {'resources':>9} {'wall s':>7} {'min-max s':>11} "
              f"{'plan_stack s':>12} {'peak RSS MiB':>12} {'x floor':>8} {'x plain':>8}")
    lines = [f"python {platform.python_version()} on {os.cpu_count()} CPUs; {runs} counted runs per row "
             f"after {warmup} warm-up, interleaved; wall = median; x floor / x plain = median of "
             f"per-round ratios to '{floor.case.name}' / '{plain.case.name}'",
             "", header, "-" * len(header)]
    rows_json = []
    ratios: dict[str, float] = {}
    for result in results:
        ratio = ratio_to_floor(result.walls, floor.walls)
        plain_ratio = ratio_to_floor(result.walls, plain.walls)
        ratios[result.case.name] = ratio
        program = result.program_s
        lines.append(f"{result.case.name:<26} {result.case.models if result.case.models else '-':>6} "
                     f"{result.resources if result.resources is not None else '-':>9} "
                     f"{result.median_wall:>7.3f} {min(result.walls):>5.2f}-{max(result.walls):<5.2f} "
                     f"{(f'{program:.3f}' if program is not None else '-'):>12} "
                     f"{result.rss_mib:>12.1f} {ratio:>7.2f}x {plain_ratio:>7.2f}x")
        rows_json.append({"name": result.case.name, "command": result.case.argv[1:],
                          "models": result.case.models,
                          "resources": result.resources, "wall_s": result.walls,
                          "median_wall_s": result.median_wall, "plan_stack_s": program,
                          "peak_rss_mib": [r.max_rss_kib / 1024 for r in result.runs],
                          "median_peak_rss_mib": result.rss_mib,
                          "user_s": [r.user_s for r in result.runs], "sys_s": [r.sys_s for r in result.runs],
                          "floor": result.case.floor,
                          "ratio_to_floor": ratio, "ratio_to_plain_import": plain_ratio})
    points = {r.case.models: r.median_wall for r in results if r.case.models}
    errors = {r.case.models: spread(r.walls) for r in results if r.case.models}
    scale = scaling(points, errors)
    seg = scale.segments
    lines.append("")
    if scale.slope_s is not None:
        counts = ",".join(map(str, scale.counts))
        lines.append(f"marginal cost per model (least squares over {counts} models): "
                     f"{scale.slope_s * 1000:.2f} ms/model, intercept {scale.intercept_s:.3f} s")
    if seg is not None:
        lines.append(f"per-model cost low {seg.first}->{seg.pivot}: {seg.low * 1000:.2f} "
                     f"+/- {seg.low_err * 1000:.2f} ms/model; high {seg.pivot}->{seg.last}: "
                     f"{seg.high * 1000:.2f} +/- {seg.high_err * 1000:.2f} ms/model "
                     f"(error bars: half the min-max range of the runs)")
    found = verdicts(ratios.get("plan prod"), scale)
    lines.append("")
    lines.append("targets:")
    lines += [f"  {v.label}  {v.target}: {v.detail}" for v in found]
    figures = {
        "python": platform.python_version(), "cpus": os.cpu_count(), "runs": runs, "warmup": warmup,
        "rows": rows_json,
        "scaling": {"counts": scale.counts,
                    "ms_per_model": None if scale.slope_s is None else scale.slope_s * 1000,
                    "intercept_s": scale.intercept_s,
                    "pivot": seg.pivot if seg else None,
                    "low_ms_per_model": seg.low * 1000 if seg else None,
                    "low_err_ms_per_model": seg.low_err * 1000 if seg else None,
                    "high_ms_per_model": seg.high * 1000 if seg else None,
                    "high_err_ms_per_model": seg.high_err * 1000 if seg else None,
                    "high_over_low": scale.ratio, "linear": scale.linear},
        "targets": [{"target": v.target, "ok": v.ok, "detail": v.detail} for v in found],
    }
    return "\n".join(lines), figures


def parse_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 1,10,50,200, not {text!r}") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("model counts must be positive integers")
    return counts


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plan_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=_positive, default=5, help="counted runs of each command (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (default 1)")
    parser.add_argument("--models", type=parse_counts, default=list(DEFAULT_MODELS),
                        help="model counts of the generated stacks (default 1,10,50,200)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--stacks-dir", type=Path, metavar="DIR",
                        help="keep the generated stack files here (default: a temporary directory)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one run may take (default 600)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target FAILs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
        stacks_dir = args.stacks_dir or Path(tmp)
        files = {count: write_model_stack(count, stacks_dir) for count in args.models}
        modules = sdk_modules_of("prod")
        rows = cases(files, floor_script=write_floor_script(modules, Path(tmp) / "sdk_floor.py"),
                     floor_modules=len(modules))
        print(f"timing {len(rows)} commands, {args.warmup} + {args.runs} rounds ...", file=sys.stderr)
        try:
            results = measure(rows, args.runs, args.warmup, args.timeout)
        except CommandFailed as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    text, figures = report(results, args.runs, args.warmup)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")
    failed = any(v["ok"] is False for v in figures["targets"])
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
