"""``python -m stacks plan --stack dev``: the offline plan of a stack on Pulumi's mock engine."""

from __future__ import annotations

import argparse
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Imported here so `--help` answers without loading the Pulumi SDKs.
    import pulumi

    from stacks import plan
    from stacks.stack_files import StackFileError

    started = time.perf_counter()
    try:
        recording = plan.plan_stack(args.stack, args.config_file)
    except (pulumi.RunError, StackFileError) as error:
        print(f"error: stack {args.stack}: {error}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started

    tree = plan.render_tree(recording)
    print(tree.splitlines()[-1] if args.quiet else tree)
    if not args.quiet:
        print("\nOutputs:")
        for key, value in recording.outputs.items():
            print(f"  {key}: {value}")
    if args.json:
        plan.write_json(recording, args.json)
        print(f"wrote {args.json}")
    if args.manifests:
        files = plan.write_manifests(recording, args.manifests)
        print(f"wrote {len(files)} files under {args.manifests}")
    print(f"planned stack {args.stack} offline in {elapsed:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
