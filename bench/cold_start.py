"""Cold start and idle cost, before and after: what the cold-start settings buy, per stack.

``python -m bench.cold_start`` (``make bench-cold-start``) plans each stack twice on the mock engine:

- **after**: the committed stack file (fast image pull / image streaming and the Docker Hub mirror on by
  default, the node-local model cache and the image pre-pull on by default, dev's GPU server scaling to
  zero);
- **before**: the same file with those settings off: ``fastImagePull: false`` on EKS pools,
  ``imageStreaming: false`` on GKE pools and ``dockerHubMirror: false``, ``modelCache: false`` and
  ``imagePrePull: false`` on every server, and a server that scales to zero held at its office-hours replicas all the time (what dev did
  before: ``replicas: 1``).

For each it prints the scale-up estimate of one more replica of every server (``stacks/scale_up.py``: a
new node, a warm free node) and the monthly compute cost (``stacks/cost.py``: the floor, which is what an
idle stack costs, and the typical month with office hours). Every figure is the estimate's, from its
sourced tables (docs/cold-start.md); nothing here is measured on a cloud.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("dev", "prod", "gke-dev")
KEY = "tfserving-platform:"


def before(data: dict[str, Any]) -> dict[str, Any]:
    """The stack file with the cold-start and idle-cost settings off."""
    data = copy.deepcopy(data)
    config = data["config"]
    gcp = config.get(f"{KEY}cloud") == "gcp"
    for pool in (config.get(f"{KEY}nodePools") or {}).values():
        pool["imageStreaming" if gcp else "fastImagePull"] = False
        pool.pop("rootVolumeThroughput", None)
        pool.pop("secondaryBootDiskImage", None)
    if gcp:
        config[f"{KEY}dockerHubMirror"] = False
    for server in (config.get(f"{KEY}servers") or {}).values():
        server["modelCache"] = False
        server["imagePrePull"] = False
        zero = server.pop("scaleToZero", None)
        if zero is not None:
            server["replicas"] = max(server.get("replicas", 0), (zero.get("schedule") or {}).get("replicas", 1))
    return data


def measure(stack: str, path: Path) -> dict[str, Any]:
    """Plan one stack file and return its scale-up estimates and monthly cost."""
    from stacks import cost, plan, scale_up

    recording = plan.plan_stack(stack, path)
    plan_json = plan.to_json(recording)
    estimates = scale_up.estimate(plan_json, scale_up.model_bytes(scale_up.stack_settings(stack, path)))
    priced = cost.estimate(plan_json)
    low, high = priced.monthly
    return {
        "servers": {e.server: {"pool": e.pool.name, "cold_node_s": round(e.cold_node.total, 1),
                               "warm_node_s": round(e.warm_node.total, 1),
                               "cold_node": e.cold_node.render(), "warm_node": e.warm_node.render()}
                    for e in estimates},
        "monthly_idle": low, "monthly_peak": high, "monthly_typical": priced.monthly_typical,
    }


def _time(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def render(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["one more replica (scale-up estimate) and monthly compute cost, before -> after the cold-start settings",
             "", f"{'stack':8} {'server':8} {'new node: before -> after':>28} {'warm node: before -> after':>28}"]
    for stack, pair in results.items():
        for server, after in pair["after"]["servers"].items():
            was = pair["before"]["servers"][server]
            lines.append(f"{stack:8} {server:8} {_time(was['cold_node_s']):>12} -> {_time(after['cold_node_s']):<12}"
                         f" {_time(was['warm_node_s']):>12} -> {_time(after['warm_node_s']):<12}")
    lines += ["", f"{'stack':8} {'idle $/month: before -> after':>32} {'typical month: before -> after':>34}"]
    for stack, pair in results.items():
        b, a = pair["before"], pair["after"]
        typical = lambda r: r["monthly_typical"] if r["monthly_typical"] is not None else r["monthly_idle"]  # noqa: E731
        lines.append(f"{stack:8} {b['monthly_idle']:>14,.0f} -> {a['monthly_idle']:<14,.0f}"
                     f" {typical(b):>16,.0f} -> {typical(a):<14,.0f}")
    lines += ["", "steps (after):"]
    for stack, pair in results.items():
        for server, after in pair["after"]["servers"].items():
            lines.append(f"  {stack}/{server} new node: {after['cold_node']}")
            lines.append(f"  {stack}/{server} warm node: {after['warm_node']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", default=",".join(STACKS), help="comma-separated stacks (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stack in args.stacks.split(","):
            source = ROOT / f"Pulumi.{stack}.yaml"
            if not source.is_file():
                print(f"error: --stacks: no stack file {source.name}", file=sys.stderr)
                return 2
            variant = Path(tmp) / f"Pulumi.{stack}-before.yaml"
            variant.write_text(yaml.safe_dump(before(yaml.safe_load(source.read_text()))))
            results[stack] = {"before": measure(stack, variant), "after": measure(stack, source)}
    print(render(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
