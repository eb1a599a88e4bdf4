"""Add up mutation reports (scripts/mutate.py's report.json files) per package.

    python scripts/mutation_report.py build/mutate/*/report.json

A package is a folder under components/ (components/serving, ...), components' own modules, or a top-level
package (stacks, policy, model_tools). Prints a Markdown table: mutants, killed, survived, without tests,
not checked and the score, (killed + timeouts) / checked, as scripts/mutate.py counts it. Standard
library only (the CI job that runs it installs nothing).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

COUNTS = ("mutants", "killed", "timeout", "survived", "no_tests", "not_checked", "other")


def package_of(module: str) -> str:
    parts = module.split("/")
    if parts[0] == "components" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0]


def add_up(reports: list[dict]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for report in reports:
        for module in report["modules"]:
            for key in (package_of(module["module"]), "total"):
                for count in COUNTS:
                    totals[key][count] += module[count]
    return dict(totals)


def score(counts: dict[str, int]) -> float | None:
    checked = counts["mutants"] - counts["not_checked"]
    return (counts["killed"] + counts["timeout"]) / checked if checked else None


def table(totals: dict[str, dict[str, int]]) -> str:
    lines = ["| package | mutants | killed | timeout | survived | no tests | not checked | score |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for package in sorted(totals, key=lambda p: (p == "total", p)):
        c = totals[package]
        s = score(c)
        lines.append(f"| {package} | {c['mutants']} | {c['killed']} | {c['timeout']} | {c['survived']} | "
                     f"{c['no_tests']} | {c['not_checked']} | {'n/a' if s is None else f'{s:.1%}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python scripts/mutation_report.py REPORT.json...", file=sys.stderr)
        return 2
    reports = []
    for name in argv:
        try:
            reports.append(json.loads(Path(name).read_text()))
        except (OSError, ValueError) as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 2
    print(table(add_up(reports)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
