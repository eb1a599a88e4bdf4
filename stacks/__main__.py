"""Offline tools of the platform (no credentials, no state):

``python -m stacks plan --stack dev``   what ``pulumi up`` would create, on Pulumi's mock engine
``python -m stacks diff --stack dev --base origin/main``   structural diff and cost delta vs a git revision
``python -m stacks scan --stack prod``  checkov over the manifests and the cloud resources
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stacks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="run the program offline and show what `pulumi up` would create")
    plan.add_argument("--stack", required=True, help="stack name (reads Pulumi.<stack>.yaml)")
    plan.add_argument("--config-file", type=Path, help="stack config file to use instead of Pulumi.<stack>.yaml")
    plan.add_argument("--json", type=Path, metavar="PATH", help="write resources, inputs and outputs as JSON")
    plan.add_argument("--manifests", type=Path, metavar="DIR",
                      help="write every Kubernetes object as YAML and the mounted config files")
    plan.add_argument("--quiet", action="store_true", help="print only the summary line")
    plan.add_argument("--redeploy", action="store_true",
                      help="plan a later `pulumi up` of the stack (default: its first, on a fresh stack)")
    plan.add_argument("--timing", action="store_true",
                      help="estimate a fresh `pulumi up` from the dependency graph (critical path, lower bound)")
    plan.add_argument("--graph", type=Path, metavar="PATH",
                      help="write the dependency graph as Graphviz DOT (and PATH.svg when `dot` is installed)")
    diff = sub.add_parser("diff", help="compare a stack's plan at a git revision with the working tree")
    diff.add_argument("--stack", required=True)
    diff.add_argument("--base", required=True, help="git revision to compare with, e.g. origin/main or HEAD~1")
    diff.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    diff.add_argument("--out", type=Path, metavar="PATH", help="write the result here instead of stdout")
    scan = sub.add_parser("scan", help="checkov over the rendered manifests and the cloud resources")
    scan.add_argument("--stack", required=True)
    scan.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    scan.add_argument("--out", type=Path, metavar="PATH", help="write the result here instead of stdout")
    return parser


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


def _diff(args: argparse.Namespace) -> int:
    from stacks import diff
    from stacks.plan import ROOT

    try:
        result = diff.diff_stack(args.stack, args.base, ROOT)
    except diff.SideFailed as error:
        print(f"error: stack {args.stack}: {error}", file=sys.stderr)
        return 2
    render = {"text": diff.render_text, "markdown": diff.render_markdown, "json": diff.render_json}[args.format]
    _emit(render(result), args.out)
    return 0


def _scan(args: argparse.Namespace) -> int:
    import tempfile

    from stacks import scan

    with tempfile.TemporaryDirectory(prefix="tfplatform-scan-") as tmp:
        try:
            result = scan.scan_stack(args.stack, Path(tmp))
        except scan.ScanError as error:
            print(f"error: stack {args.stack}: {error}", file=sys.stderr)
            return 2
    import json

    text = json.dumps(result.to_json(), indent=2) + "\n" if args.format == "json" else result.to_markdown()
    _emit(text, args.out)
    # 1: the scan ran and found failed checks (2 is kept for "could not scan").
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "diff":
        return _diff(args)
    if args.command == "scan":
        return _scan(args)
    # Imported here so `--help` answers without loading the Pulumi SDKs.
    import pulumi

    from stacks import plan
    from stacks.stack_files import StackFileError

    started = time.perf_counter()
    try:
        recording = plan.plan_stack(args.stack, args.config_file,
                                    previous_outputs=plan.DEPLOYED_OUTPUTS if args.redeploy else None)
    except (pulumi.RunError, StackFileError) as error:
        print(f"error: stack {args.stack}: {error}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    from stacks.deploy_rules import RULES, check, format_violations

    violations = check(recording)
    plan_json = plan.to_json(recording)  # the cost and timing estimates both read it

    tree = plan.render_tree(recording)
    print(tree.splitlines()[-1] if args.quiet else tree)
    if not args.quiet:
        print("\nOutputs:")
        for key, value in recording.outputs.items():
            print(f"  {key}: {value}")
        from stacks.cost import estimate

        cost = estimate(plan_json)
        print(f"\nEstimated compute cost: {cost.summary()}")
        for note in cost.floor_notes():
            print(f"  floor {note}")
    if args.json:
        plan.write_json(plan_json, args.json)
        print(f"wrote {args.json}")
    if args.manifests:
        files = plan.write_manifests(recording, args.manifests)
        print(f"wrote {len(files)} files under {args.manifests}")
    if args.timing:
        from stacks.timing import estimate as estimate_timing

        print(estimate_timing(plan_json).render())
    if args.graph:
        from stacks.graph import write_graph

        for path in write_graph(recording, args.graph):
            print(f"wrote {path}")
    which = "a later up" if args.redeploy else "the first up of a fresh stack"
    if violations:
        print(f"error: stack {args.stack}: {len(violations)} deploy-rule violation(s) in {which}:\n"
              f"{format_violations(violations)}", file=sys.stderr)
        return 2
    print(f"deploy rules: {len(RULES)} checked on {which}, no violation")
    print(f"planned stack {args.stack} offline in {elapsed:.2f}s")
    return 0


def _exit_now(code: int) -> None:
    """Leave without tearing down ~290,000 SDK objects (a 0.5 s garbage-collector walk at interpreter
    exit, measured by bench/plan_bench.py): every output is written and flushed by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
