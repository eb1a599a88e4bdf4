"""The global stack's offline plan: plan each regional stack on the mock engine, feed their outputs to this
program's StackReferences, and print what ``pulumi up`` would create plus the failover time.

    .venv/bin/python global/plan.py --stack two-region \\
        --region example-org/tfserving-platform/region-us-east-1=tests/stacks/Pulumi.region-us-east-1.yaml \\
        --region example-org/tfserving-platform/region-us-west-2=tests/stacks/Pulumi.region-us-west-2.yaml

Exit 0 with the plan, 1 when a program refuses its config (the message names the key).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import pulumi  # noqa: E402

from stacks.mock_engine import Recording, run_program  # noqa: E402
from stacks.plan import ROOT, plan_stack, render_tree  # noqa: E402
from stacks.stack_files import StackFileError, load_stack_config  # noqa: E402


def plan_global(stack: str, regions: dict[str, Path], stack_file: Path | None = None) -> Recording:
    """Plan global/ for ``stack``; ``regions`` maps each referenced stack name to its stack file."""
    outputs = {}
    for name, path in regions.items():
        outputs[name] = plan_stack(name.rsplit("/", 1)[-1], path).outputs
    stack_file = stack_file or HERE / f"Pulumi.{stack}.yaml"
    cfg = load_stack_config(HERE / "Pulumi.yaml", stack_file, stack)
    return run_program(HERE / "__main__.py", stack, cfg.project, cfg.config, cfg.secret_keys,
                       stack_outputs=outputs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="global/plan.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--stack", required=True, help="global stack (global/Pulumi.<stack>.yaml)")
    p.add_argument("--config-file", type=Path, help="another global stack file")
    p.add_argument("--region", action="append", default=[], metavar="STACK=FILE",
                   help="a referenced regional stack (org/project/stack) and its stack file; repeat")
    a = p.parse_args(argv)
    regions: dict[str, Path] = {}
    for item in a.region:
        name, sep, path = item.partition("=")
        if not sep or not path:
            p.error(f"--region {item!r}: expected org/project/stack=path/to/Pulumi.<stack>.yaml")
        regions[name] = Path(path) if Path(path).is_absolute() else ROOT / path
    try:
        rec = plan_global(a.stack, regions, a.config_file)
    except (pulumi.RunError, StackFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(render_tree(rec))
    print()
    print(f"global name: {rec.outputs['name']} ({rec.outputs['routing']} routing)")
    print(f"failover time: {rec.outputs['failover']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
