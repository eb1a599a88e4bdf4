"""Offline tools of the platform (no credentials, no state):

``python -m stacks plan --stack dev``   what ``pulumi up`` would create, on Pulumi's mock engine
``python -m stacks diff --stack dev --base origin/main``   structural diff and cost delta vs a git revision
``python -m stacks scan --stack prod``  checkov and trivy over the manifests and the cloud resources
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The Pulumi Service's rule for stack names (`stackNameAndProjectRegexp`,
# https://github.com/pulumi/pulumi/blob/master/pkg/backend/httpstate/backend.go); an organization or
# project prefix (org/project/stack) has no stack file of its own here, so no slash either.
STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class CliError(Exception):
    """Bad input or an output that cannot be written: printed as one ``error: ...`` line, exit 2."""


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
    scan = sub.add_parser("scan", help="checkov and trivy over the rendered manifests and the cloud resources")
    scan.add_argument("--stack", required=True, help="stack name (reads Pulumi.<stack>.yaml)")
    scan.add_argument("--config-file", type=Path, help="stack config file to use instead of Pulumi.<stack>.yaml")
    scan.add_argument("--format", choices=["text", "markdown", "json"], default="text",
                      help="text: plain text for a terminal; markdown: a PR comment; json: for tools")
    scan.add_argument("--out", type=Path, metavar="PATH", help="write the result here instead of stdout")
    return parser


def _check_stack(stack: str) -> None:
    if not STACK_NAME.fullmatch(stack):
        raise CliError(f"--stack {stack!r}: a stack name is 1-100 letters, digits, '-', '_' or '.' "
                       "(the stack file is Pulumi.<stack>.yaml)")


def _check_file_target(flag: str, path: Path) -> None:
    """Refuse an output file path that cannot be written, before minutes of planning are spent."""
    if path.is_dir():
        raise CliError(f"{flag} {path}: is a directory; give a file path")
    _check_parent(flag, path)


def _check_dir_target(flag: str, path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CliError(f"{flag} {path}: is a file; give a directory path")
    _check_parent(flag, path)


def _check_parent(flag: str, path: Path) -> None:
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CliError(f"{flag} {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor if not path.exists() else path, os.W_OK):
        raise CliError(f"{flag} {path}: not writable by this user")


def _write_error(flag: str, path: Path, error: OSError) -> CliError:
    if isinstance(error, (FileExistsError, NotADirectoryError)) and error.filename:
        return CliError(f"{flag} {path}: cannot write: a file is in the way of the directory {error.filename}")
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
    return CliError(f"{flag} {path}: cannot write: {error.strerror or error}{where}")


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
        except OSError as error:
            raise _write_error("--out", out, error) from None
        print(f"wrote {out}")


def _output_text(value: Any) -> str:
    """A stack output as the plan prints it: strings as they are, anything else as JSON (keys sorted,
    nested lines indented under the key), as `pulumi stack output --json` shows it, not Python's repr."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str).replace("\n", "\n  ")


def _diff(args: argparse.Namespace) -> int:
    from stacks import diff
    from stacks.plan import ROOT

    if args.out is not None:
        _check_file_target("--out", args.out)
    try:
        result = diff.diff_stack(args.stack, args.base, ROOT)
    except diff.SideFailed as error:
        # The message names the side (working tree, base <rev>) and never repeats this prefix.
        print(f"error: stack {args.stack}: {error}", file=sys.stderr)
        return 2
    render = {"text": diff.render_text, "markdown": diff.render_markdown, "json": diff.render_json}[args.format]
    _emit(render(result), args.out)
    return 0


def _scan(args: argparse.Namespace) -> int:
    import tempfile

    import pulumi

    from stacks import scan
    from stacks.plan import ROOT
    from stacks.stack_files import StackFileError

    _check_stack(args.stack)
    if args.config_file is None and not (ROOT / f"Pulumi.{args.stack}.yaml").is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
        raise CliError(f"--stack {args.stack}: no stack file Pulumi.{args.stack}.yaml (stacks: "
                       f"{', '.join(known)}); pass --config-file for a stack file elsewhere")
    if args.out is not None:
        _check_file_target("--out", args.out)
    with tempfile.TemporaryDirectory(prefix="tfplatform-scan-") as tmp:
        try:
            result = scan.scan_stack(args.stack, Path(tmp), stack_file=args.config_file)
        except (scan.ScanError, pulumi.RunError, StackFileError) as error:
            # RunError: the program refused the stack config (one line naming key, value, what is
            # allowed); StackFileError: the stack file is missing or not YAML.
            print(f"error: stack {args.stack}: {error}", file=sys.stderr)
            return 2
    render = {"json": lambda r: json.dumps(r.to_json(), indent=2) + "\n",
              "markdown": scan.ScanResult.to_markdown, "text": scan.ScanResult.to_text}[args.format]
    _emit(render(result), args.out)
    # 1: the scan ran and found failed checks (2 is kept for "could not scan").
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in ("plan", "diff"):
            _check_stack(args.stack)
        if args.command == "diff":
            return _diff(args)
        if args.command == "scan":
            return _scan(args)
        return _plan(args)
    except CliError as error:
        sys.stdout.flush()
        print(f"error: {error}", file=sys.stderr)
        return 2


def _plan(args: argparse.Namespace) -> int:
    for flag, path in (("--json", args.json), ("--graph", args.graph)):
        if path is not None:
            _check_file_target(flag, path)
    if args.graph is not None:
        _check_file_target("--graph", args.graph.with_name(args.graph.name + ".svg"))
    if args.manifests is not None:
        _check_dir_target("--manifests", args.manifests)
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
            print(f"  {key}: {_output_text(value)}")
        from stacks.cost import estimate

        cost = estimate(plan_json)
        print(f"\nEstimated compute cost: {cost.summary()}")
        for note in cost.floor_notes():
            print(f"  floor {note}")
        from stacks.fallback import render as render_capacity

        print("\n" + render_capacity(plan_json))
    if args.json:
        try:
            plan.write_json(plan_json, args.json)
        except OSError as error:
            raise _write_error("--json", args.json, error) from None
        print(f"wrote {args.json}")
    if args.manifests:
        try:
            files = plan.write_manifests(recording, args.manifests)
        except OSError as error:
            raise _write_error("--manifests", args.manifests, error) from None
        print(f"wrote {len(files)} files under {args.manifests}")
    if args.timing:
        from stacks.timing import estimate as estimate_timing

        print(estimate_timing(plan_json).render())
        from stacks import scale_up

        settings = scale_up.stack_settings(args.stack, args.config_file)
        print(scale_up.render(scale_up.estimate(plan_json, scale_up.model_bytes(settings))))
    if args.graph:
        from stacks.graph import write_graph

        try:
            written = write_graph(recording, args.graph)
        except OSError as error:
            raise _write_error("--graph", args.graph, error) from None
        except subprocess.CalledProcessError as error:
            raise CliError(f"--graph {args.graph}: Graphviz `dot` failed: "
                           f"{(error.stderr or b'').decode(errors='replace').strip()}") from None
        for path in written:
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
