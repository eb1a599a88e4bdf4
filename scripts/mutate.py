"""Mutation run over one module or a list (``make mutate MODULE=components/serving/network_policy.py``).

The tool is mutmut 3 (https://github.com/boxed/mutmut), chosen because it is maintained, works on this
code unchanged, and is fast enough for a 2-core machine: it imports the test suite once, forks one child
per mutant and runs only the tests that reached the mutated function, stopping at the first failure.
(cosmic-ray and mutatest start a fresh test process per mutant, which here means re-importing Pulumi's
SDKs for every mutant: about 5 s before the first test runs.)

What this script adds around ``mutmut run``:

* a scratch copy of the repository per run (``build/mutate/<name>/``), so mutmut's ``mutants/`` tree
  and its ``pyproject.toml`` settings never touch the checkout, and runs over different modules can
  proceed side by side (CI runs one slice per job);
* the test selection: test files that name the module (its import path, file stem or a top-level
  name) plus the snapshot tests, without the external scanners (checkov, trivy, the README's command
  run, the property test and the benchmark), whose minutes per mutant would not fit a budget;
* the fixture credit of tests/mutation_stats.py, so a test reading a shared plan counts as a test of
  every function that plan ran;
* a time budget: when it runs out the run is interrupted and the unchecked mutants are reported as
  such, never as killed;
* the report: per module the mutants, killed, survived, without tests, timeouts and the score, then
  every survivor with its diff (``report.md`` and ``report.json`` in the run's folder).

Score = (killed + timeouts) / (mutants checked). Mutants no selected test reaches count against it.
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import math
import os
import random
import re
import shutil
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mutation_report import COUNTS, score

ROOT = Path(__file__).resolve().parents[1]
# Packages the tests import; all of them are copied into mutmut's tree (only the chosen modules mutate).
PACKAGES = ("components", "stacks", "policy", "model_tools")
# Test files left out of every selection: each runs an external tool or the whole program many times
# (tens of seconds to minutes per mutant). The closing score is therefore a lower bound.
SLOW_TESTS = frozenset({
    "tests/test_checkov.py", "tests/test_trivy.py", "tests/test_readme_commands.py",
    "tests/test_config_properties.py", "tests/test_bench.py", "tests/test_scan.py",
})
# Test files that run the code under a Python without mutmut (a bare venv): mutated modules import
# mutmut's trampoline, so they would fail on every mutant, the original included.
NEEDS_BARE_PYTHON = frozenset({"tests/test_cli_help.py"})
EXCLUDED = SLOW_TESTS | NEEDS_BARE_PYTHON
ALWAYS = ("tests/test_snapshots.py",)
# mutmut's exit codes (mutmut/stats.py status_by_exit_code), grouped the way the report counts them.
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}
NOT_CHECKED = {None, 2}


class UsageError(Exception):
    """Bad arguments: one line for the user, exit 2."""


@dataclass
class ModuleScore:
    module: str
    mutants: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    no_tests: int = 0
    not_checked: int = 0
    other: int = 0
    survivors: list[dict] = field(default_factory=list)

    @property
    def checked(self) -> int:
        return self.mutants - self.not_checked

    @property
    def score(self) -> float | None:
        return score(asdict(self))


def module_paths(args: list[str]) -> list[str]:
    """The modules to mutate, relative to the repository, each an existing .py file of a package."""
    modules: list[str] = []
    for arg in args:
        for item in arg.replace(",", " ").split():
            path = (ROOT / item).resolve()
            if path.is_dir():
                found = sorted(p for p in path.rglob("*.py") if p.name != "__init__.py")
            elif path.is_file() and path.suffix == ".py":
                found = [path]
            else:
                raise UsageError(f"MODULE {item!r}: no such .py file or folder under {ROOT}")
            for p in found:
                rel = p.relative_to(ROOT).as_posix()
                if rel.split("/")[0] not in PACKAGES:
                    raise UsageError(f"MODULE {item!r}: {rel} is outside the packages that mutate "
                                     f"({', '.join(PACKAGES)})")
                if rel not in modules:
                    modules.append(rel)
    if not modules:
        raise UsageError("MODULE: name at least one module, e.g. MODULE=components/serving/network_policy.py")
    return modules


def _names(module: str, root: Path = ROOT) -> set[str]:
    """What a test that checks ``module`` names: its import path, its stem (also as CamelCase, the kind
    or class it builds: network_policy -> NetworkPolicy) and its public top-level functions and classes."""
    dotted = module.removesuffix(".py").replace("/", ".")
    stem = Path(module).stem
    names = {dotted, stem, "".join(part.capitalize() for part in stem.split("_"))}
    tree = _parse((root / module).read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            names.add(node.name)
    # Short names ("dns", "up") would match everything.
    return {n for n in names if len(n) >= 4}


def _test_functions(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """(pytest id suffix, node) of the test functions of a file, including those of Test classes."""
    found: list[tuple[str, ast.AST]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            found.append((node.name, node))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            found += [(f"{node.name}::{f.name}", f) for f in node.body
                      if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.name.startswith("test")]
    return found


def _parse(text: str) -> ast.Module:
    """``ast.parse`` with the garbage collector held off. CPython 3.11 keeps one AST recursion counter per
    interpreter (python/cpython#106905): a finalizer that parses while ``ast.parse`` builds its tree resets
    it, and the outer parse fails with "SystemError: AST constructor recursion depth mismatch". In the test
    process such a finalizer exists: asyncio logs "Future exception was never retrieved" when the collector
    frees a failed Pulumi RPC future of an earlier test, and 3.11's traceback formatting calls
    ``ast.parse`` (tests/test_mutation_tooling.py reproduces it). Should it still happen, the parse is done
    again in a fresh interpreter and the tree pickled back."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(text)
    except SystemError:
        done = subprocess.run(
            [sys.executable, "-c", "import ast, pickle, sys; "
                                   "sys.stdout.buffer.write(pickle.dumps(ast.parse(sys.stdin.read())))"],
            input=text.encode(), capture_output=True, check=True, timeout=60)
        return pickle.loads(done.stdout)
    finally:
        if enabled:
            gc.enable()


def select_tests(modules: list[str], with_snapshots: bool = False, root: Path = ROOT) -> list[str]:
    """The targeted tests of ``modules``: whole test files named after a module (``test_<stem>*.py``),
    and every other test function whose body (or a helper of its file it calls) names one of them.

    Deliberately not "every test that runs the module": nearly every test plans a stack, which runs
    every component, so coverage would pick the whole suite and the score would measure the snapshot
    tests. The snapshots are a second net (``--with-snapshots`` adds them)."""
    names = set().union(*(_names(m, root) for m in modules))
    pattern = re.compile("|".join(rf"\b{re.escape(n)}\b" for n in sorted(names, key=len, reverse=True)))
    stems = {Path(m).stem for m in modules}
    selected: list[str] = []
    for path in sorted((root / "tests").rglob("test_*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in EXCLUDED or (rel in ALWAYS and not with_snapshots):
            continue
        named = path.stem.removeprefix("test_")
        # test_eks.py is eks_cluster.py's, test_model_sync.py is model_sync.py's.
        if rel in ALWAYS or any(named.startswith(stem) or stem.startswith(named) for stem in stems):
            selected.append(rel)
            continue
        text = path.read_text()
        tree = _parse(text)
        # Module-level helpers that name the module count for the tests that call them.
        helpers = {node.name for node in tree.body
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("test")
                   and pattern.search(ast.get_source_segment(text, node) or "")}
        helper_pattern = re.compile("|".join(rf"\b{re.escape(h)}\b" for h in sorted(helpers))) if helpers else None
        for test_id, node in _test_functions(tree):
            source = ast.get_source_segment(text, node) or ""
            if pattern.search(source) or (helper_pattern and helper_pattern.search(source)):
                selected.append(f"{rel}::{test_id}")
    return selected


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]


def prepare(work: Path, ref: str | None) -> None:
    """A copy of the tree (the working tree's tracked files, or a commit's) with mutmut's settings for
    this run in its pyproject.toml."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    if ref:
        archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True)
        if archive.returncode != 0:
            raise UsageError(f"--ref {ref!r}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
        # The fixture credit plugin is part of the tooling, not of the code under test.
        shutil.copy2(ROOT / "tests/mutation_stats.py", work / "tests/mutation_stats.py")
    else:
        for rel in _tracked_files():
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)
    # The CRD schemas the manifest tests validate against (installed by scripts/ensure-tools.sh).
    schemas = ROOT / "tests/crd_validator/node_modules"
    if schemas.is_dir():
        (work / "tests/crd_validator/node_modules").symlink_to(schemas)


def configure(work: Path, modules: list[str], tests: list[str], timeout_constant: float) -> None:
    """mutmut's settings for this run, in the copy's pyproject.toml."""
    top_level = sorted({p.name for p in work.iterdir()} - set(PACKAGES) - {"tests", "pyproject.toml", "mutants"})
    settings = {
        "source_paths": list(PACKAGES),
        "only_mutate": modules,
        "also_copy": top_level,
        "pytest_add_cli_args": ["-p", "tests.mutation_stats", "-p", "no:cacheprovider"],
        "pytest_add_cli_args_test_selection": tests,
        "timeout_constant": timeout_constant,
        # A fresh fork server per run: forking the process that has already run the suite (mutmut's
        # default) hangs here, since Pulumi's runtime and gRPC leave threads and locks behind.
        "process_isolation": "forkserver",
        # Only the run itself decides what to re-test; no git or file-hash invalidation across runs.
        "use_git_change_detection": False,
    }
    # Tests that clone the checkout (tests/test_diff.py's two commits) need a git repository at the root
    # the tests see, mutmut's mutants/ folder; an empty one will do (they copy the files in themselves).
    (work / "mutants").mkdir(exist_ok=True)
    subprocess.run(["git", "init", "-q", str(work / "mutants")], check=True)
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    with (work / "pyproject.toml").open("a") as f:
        f.write("\n".join(lines) + "\n")


def run_mutmut(work: Path, max_children: int, budget: float, log: Path, names: list[str]) -> bool:
    """``mutmut run``; True when it finished within the budget."""
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
    # tests/mutation_stats.py plans each stack once in the fork server (MUTATE_WARM_UP).
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MUTATE_WARM_UP": "1"}
    # The scanners live in the checkout's own venvs (scripts/ensure-tools.sh); stacks/scan.py takes their
    # paths from these variables, so mutmut's copy need not hold the venvs.
    for variable, path in (("CHECKOV", ".venv-checkov/bin/checkov"), ("TRIVY", ".venv-trivy/bin/trivy")):
        if (ROOT / path).exists():
            env.setdefault(variable, str(ROOT / path))
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            proc.wait(timeout=budget or None)
        except subprocess.TimeoutExpired:
            # mutmut stops its workers and saves what it has on SIGINT (KeyboardInterrupt in _run).
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return False
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"mutmut run exited {proc.returncode}; the end of {log}:\n{tail}")
    return True


def _diff(work: Path, name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work,
                         capture_output=True, text=True)
    return out.stdout.split("\n", 1)[1].strip() if out.returncode == 0 else out.stderr.strip()


def scores(work: Path, modules: list[str], sample: set[str] | None) -> list[ModuleScore]:
    """Counts per module from mutmut's ``<module>.meta`` files; with a sample, of the sampled mutants only."""
    result = []
    for module in modules:
        s = ModuleScore(module)
        meta = work / "mutants" / f"{module}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        for name, code in sorted(codes.items()):
            if sample is not None and name not in sample:
                continue
            s.mutants += 1
            if code in KILLED:
                s.killed += 1
            elif code in TIMEOUT:
                s.timeout += 1
            elif code in SURVIVED:
                s.survived += 1
                s.survivors.append({"name": name, "diff": _diff(work, name)})
            elif code in NO_TESTS:
                s.no_tests += 1
                s.survivors.append({"name": name, "diff": _diff(work, name), "no_tests": True})
            elif code in NOT_CHECKED:
                s.not_checked += 1
            else:
                s.other += 1
        result.append(s)
    return result


_LIST_MUTANTS = """
import json, sys
from mutmut.mutation.file_mutation import mutate_file_contents
names = {}
for module in sys.argv[1:]:
    dotted = module.removesuffix(".py").replace("/", ".")
    with open(module) as f:
        names[module] = [f"{dotted}.{n}" for n in mutate_file_contents(module, f.read()).mutant_names]
print(json.dumps(names))
"""


def sample_mutants(work: Path, modules: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded uniform sample of each module's mutants (at least one per module that has any),
    named the way ``mutmut run`` takes them; generated with mutmut's own mutator in the run's folder."""
    out = subprocess.run([sys.executable, "-c", _LIST_MUTANTS, *modules], cwd=work, capture_output=True,
                         text=True, check=True)
    rng = random.Random(seed)
    chosen: list[str] = []
    for module, names in json.loads(out.stdout).items():
        if names:
            chosen += sorted(rng.sample(names, max(1, round(len(names) * fraction))))
    return chosen


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (for a sampled score)."""
    if n == 0:
        return 0.0, 1.0
    p = killed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _unchanged_since(earlier: dict, modules: list[str]) -> set[str]:
    """The modules whose source is the same as in the earlier run's commit (mutant names are positions in
    the source, so only there do they name the same mutants)."""
    same = set()
    for module in modules:
        if earlier.get("ref"):
            old = subprocess.run(["git", "show", f"{earlier['ref']}:{module}"], cwd=ROOT, capture_output=True)
            if old.returncode == 0 and old.stdout == (ROOT / module).read_bytes():
                same.add(module)
        else:
            same.add(module)
    return same


def recheck_scores(earlier: dict, rechecked: list[ModuleScore]) -> list[ModuleScore]:
    """The earlier report's counts, its survivors replaced by what they are now; modules not rechecked
    (their source changed) keep the earlier counts."""
    now = {s.module: s for s in rechecked}
    result = []
    for m in earlier["modules"]:
        before = ModuleScore(**{k: m[k] for k in ("module", *COUNTS, "survivors")})
        again = now.get(m["module"])
        if again is not None:
            before.killed += again.killed
            before.timeout += again.timeout
            before.other += again.other
            before.not_checked += again.not_checked
            before.survived, before.no_tests, before.survivors = again.survived, again.no_tests, again.survivors
        result.append(before)
    return result


def _pct(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.1%}"


def report(results: list[ModuleScore], tests: list[str], seconds: float, finished: bool,
           sample: tuple[float, int] | None) -> str:
    total = ModuleScore("total")
    for s in results:
        for k in COUNTS:
            setattr(total, k, getattr(total, k) + getattr(s, k))
    how = f"a seeded sample ({sample[0]:.0%} of each module's mutants, seed {sample[1]})" if sample else "all mutants"
    lines = ["# Mutation run", "",
             f"{len(results)} module(s), {how}, {len(tests)} test selector(s), {seconds:.0f} s"
             + ("" if finished else " - BUDGET EXHAUSTED, unchecked mutants are listed as not checked"), "",
             "| module | mutants | killed | timeout | survived | no tests | not checked | score | 95 % interval |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in [*results, total]:
        low, high = wilson(s.killed + s.timeout, s.checked)
        interval = f"{low:.0%}-{high:.0%}" if sample and s.checked else ""
        lines.append(f"| {s.module} | {s.mutants} | {s.killed} | {s.timeout} | {s.survived} | {s.no_tests} "
                     f"| {s.not_checked} | {_pct(s.score)} | {interval} |")
    lines += ["", "Tests: " + " ".join(tests)]
    for s in results:
        for sv in s.survivors:
            kind = "no selected test reaches it" if sv.get("no_tests") else "survived"
            lines += ["", f"## {sv['name']} ({kind})", "", "```diff", sv["diff"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/mutate.py", description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="+", help="module paths or package folders (space or comma separated)")
    parser.add_argument("--budget", type=float, default=540,
                        help="seconds for mutmut run, 0 for no limit; what is left unchecked is reported so (default 540)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2,
                        help="mutants tested at once (default: the CPU count)")
    parser.add_argument("--tests", help="pytest ids to use instead of the selection (space or comma separated)")
    parser.add_argument("--with-snapshots", action="store_true",
                        help="also count the snapshot tests (tests/test_snapshots.py) as killers")
    parser.add_argument("--sample", type=float, help="test a seeded sample of this fraction of the mutants")
    parser.add_argument("--seed", type=int, default=20261202, help="the sample's seed (default 20261202)")
    parser.add_argument("--ref", help="mutate the code and run the tests of this commit (default: the working tree)")
    parser.add_argument("--recheck", metavar="REPORT",
                        help="re-test only the survivors of an earlier report.json (after new tests) and report "
                             "its counts with them updated; modules whose source changed since are left as they were")
    parser.add_argument("--name", help="run folder under build/mutate (default: from the modules)")
    parser.add_argument("--timeout-constant", type=float, default=10.0,
                        help="seconds added to a mutant's test time before mutmut calls it a timeout (x30 CPU)")
    args = parser.parse_args(argv)
    name = args.name or re.sub(r"[^A-Za-z0-9]+", "-", "_".join(m.removesuffix(".py") for m in args.modules))[:80]
    work = ROOT / "build" / "mutate" / name
    try:
        modules = module_paths(args.modules)
        if not (args.budget >= 0 and math.isfinite(args.budget)) or args.max_children < 1:
            raise UsageError(f"--budget {args.budget} / --max-children {args.max_children}: "
                             "the budget is seconds >= 0 (0: no limit), and at least one child")
        if args.sample is not None and not 0 < args.sample <= 1:
            raise UsageError(f"--sample {args.sample}: a fraction in (0, 1]")
        prepare(work, args.ref)
        if args.tests:
            tests = args.tests.replace(",", " ").split()
            missing = [t for t in tests if not (work / t.split("::")[0]).exists()]
            if missing:
                raise UsageError(f"--tests: no such test file {missing[0]!r}")
        else:
            tests = select_tests(modules, args.with_snapshots, root=work)
        if not tests:
            raise UsageError(f"MODULE {' '.join(modules)}: no test names it; pass --tests")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    earlier = None
    if args.recheck:
        earlier = json.loads(Path(args.recheck).read_text())
        modules = [m for m in modules if m in _unchanged_since(earlier, modules)]
        if not modules:
            print(f"error: --recheck {args.recheck}: every module changed since its run", file=sys.stderr)
            return 2
    configure(work, modules, tests, args.timeout_constant)
    if earlier is not None:
        sample = [sv["name"] for m in earlier["modules"] if m["module"] in modules for sv in m["survivors"]]
    else:
        sample = sample_mutants(work, modules, args.sample, args.seed) if args.sample else None
    print(f"mutating {len(modules)} module(s) against {len(tests)} test selector(s)"
          + (f", {len(sample)} sampled mutants" if sample is not None else "")
          + f" in {work.relative_to(ROOT)}", flush=True)
    start = time.monotonic()
    finished = run_mutmut(work, args.max_children, args.budget, work / "mutmut.log", sample or [])
    seconds = time.monotonic() - start
    results = scores(work, modules, set(sample) if sample is not None else None)
    if earlier is not None:
        results = recheck_scores(earlier, results)
    sampled = (earlier["sample"], earlier["seed"]) if earlier is not None and earlier.get("sample") else \
        (args.sample, args.seed) if args.sample else None
    text = report(results, tests, seconds, finished, sampled)
    (work / "report.md").write_text(text)
    (work / "report.json").write_text(json.dumps(
        {"seconds": round(seconds, 1), "finished": finished, "tests": tests, "ref": args.ref,
         "sample": sampled and sampled[0], "seed": sampled and sampled[1], "recheck": args.recheck,
         "modules": [{**asdict(s), "score": s.score} for s in results]}, indent=2))
    print(text)
    print(f"report: {(work / 'report.md').relative_to(ROOT)}, {(work / 'report.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
