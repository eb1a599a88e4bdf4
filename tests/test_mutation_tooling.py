"""The mutation run's own logic (scripts/mutate.py, scripts/mutation_report.py, tests/mutation_stats.py,
.github/workflows/mutation.yml). The run itself (mutmut, minutes per module) is not part of `make test`;
these check what decides its result: which tests judge a module, how results are counted, that the
fixture credit works, and that the scheduled slices leave no module out."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


mutation_report = _load("mutation_report")  # first: mutate.py imports its counts
mutate = _load("mutate")


def all_modules(*packages: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for pkg in packages for p in (ROOT / pkg).rglob("*.py")
            if p.name != "__init__.py"}


def test_modules_expand_folders_and_refuse_what_cannot_mutate():
    assert mutate.module_paths(["components/gpu"]) == ["components/gpu/addons.py", "components/gpu/mig.py"]
    assert mutate.module_paths(["stacks/diff.py,stacks/cost.py", "stacks/diff.py"]) == \
        ["stacks/diff.py", "stacks/cost.py"]
    with pytest.raises(mutate.UsageError, match=r"MODULE 'stacks/nope.py': no such \.py file"):
        mutate.module_paths(["stacks/nope.py"])
    with pytest.raises(mutate.UsageError, match=r"MODULE 'tests/conftest.py': tests/conftest.py is outside"):
        mutate.module_paths(["tests/conftest.py"])
    with pytest.raises(mutate.UsageError, match="name at least one module"):
        mutate.module_paths([" , "])


def test_a_bad_module_is_one_error_line_before_anything_runs():
    done = subprocess.run([sys.executable, "scripts/mutate.py", "components/serving/no_such.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == (f"error: MODULE 'components/serving/no_such.py': no such .py file or folder "
                           f"under {ROOT}\n")
    assert not (ROOT / "build/mutate/components-serving-no-such").exists()


def test_a_finalizer_that_parses_cannot_break_the_selection(monkeypatch):
    """The flake behind python/cpython#106905, made certain: cyclic garbage whose finalizer parses (as
    asyncio's "Future exception was never retrieved" log does through 3.11's traceback formatting) and a
    collector that runs every few allocations. A bare ``ast.parse`` fails; ``_parse`` holds the collector
    off. And were the counter broken anyway, the parse is done again in a fresh interpreter."""
    import ast
    import gc

    class ParsesWhenFreed:
        def __del__(self):
            ast.parse("x = f(a, (b + c) * d)")

    source = (ROOT / "components/serving/network_policy.py").read_text()
    fresh_interpreters = []
    monkeypatch.setattr(mutate.subprocess, "run", lambda *a, **k: fresh_interpreters.append(a))
    threshold = gc.get_threshold()
    gc.set_threshold(50)
    try:
        def garbage():
            cycle = ParsesWhenFreed()
            cycle.me = cycle

        garbage()
        with pytest.raises(SystemError, match="AST constructor recursion depth mismatch"):
            ast.parse(source)
        garbage()
        assert "NetworkPolicy" in mutate._names("components/serving/network_policy.py")
        garbage()
        tree = mutate._parse(source)
    finally:
        gc.set_threshold(*threshold)
        gc.collect()  # the last cycle goes here, outside any parse
    assert fresh_interpreters == []  # the collector held off was enough
    assert ast.dump(tree) == ast.dump(ast.parse(source))
    monkeypatch.undo()

    calls = []

    def broken(text):
        calls.append(text)
        raise SystemError("AST constructor recursion depth mismatch (before=1, after=2)")

    monkeypatch.setattr(mutate.ast, "parse", broken)
    tree = mutate._parse(source)
    monkeypatch.undo()
    assert calls == [source] and ast.dump(tree) == ast.dump(ast.parse(source))


def test_network_policy_is_judged_by_the_tests_that_name_it():
    tests = mutate.select_tests(["components/serving/network_policy.py"])
    assert "tests/test_serving.py::test_network_policy_default_deny_and_narrow_allow" in tests
    assert "tests/test_serving.py::test_model_pods_egress_is_https_and_cluster_dns" in tests
    # Test functions, not whole files: most of test_serving.py plans a stack but never looks at the policy.
    assert "tests/test_serving.py" not in tests
    assert not any(t.startswith("tests/test_snapshots.py") for t in tests)
    assert "tests/test_snapshots.py" in mutate.select_tests(["components/serving/network_policy.py"],
                                                             with_snapshots=True)


def test_a_module_gets_the_test_file_named_after_it_and_never_the_scanners():
    assert "tests/test_eks.py" in mutate.select_tests(["components/aws/eks_cluster.py"])
    assert "tests/test_diff.py" in mutate.select_tests(["stacks/diff.py"])
    every = mutate.select_tests(["stacks/scan.py", "stacks/settings.py", "stacks/platform.py"])
    assert not {t.split("::")[0] for t in every} & mutate.SLOW_TESTS


def test_every_selected_test_exists(tmp_path):
    """Each selector is a pytest id that collects: a misspelt id would make mutmut judge with nothing."""
    tests = mutate.select_tests(["components/serving/network_policy.py", "stacks/diff.py"])
    # pyproject's addopts has -q: one node id per line.
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider", *tests], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    collected = {line for line in done.stdout.splitlines() if "::" in line}
    for selector in tests:
        assert any(c == selector or c.startswith((selector + "::", selector + "[")) for c in collected), selector


def _meta(work: Path, module: str, codes: dict[str, int | None]) -> None:
    path = work / "mutants" / f"{module}.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes}))


def test_scores_count_each_outcome_and_a_sample_counts_only_its_mutants(tmp_path, monkeypatch):
    monkeypatch.setattr(mutate, "_diff", lambda work, name: f"diff of {name}")
    m = "components.serving.network_policy."
    _meta(tmp_path, "components/serving/network_policy.py", {
        m + "a__mutmut_1": 1, m + "a__mutmut_2": 3, m + "a__mutmut_3": 0, m + "a__mutmut_4": 33,
        m + "a__mutmut_5": -24, m + "a__mutmut_6": None, m + "a__mutmut_7": 0})
    [s] = mutate.scores(tmp_path, ["components/serving/network_policy.py"], None)
    assert (s.mutants, s.killed, s.timeout, s.survived, s.no_tests, s.not_checked) == (7, 2, 1, 2, 1, 1)
    # killed and timeouts over the checked ones; a mutant no test reaches counts against the score.
    assert s.score == pytest.approx(3 / 6)
    assert [sv["name"] for sv in s.survivors] == [m + "a__mutmut_3", m + "a__mutmut_4", m + "a__mutmut_7"]
    [sampled] = mutate.scores(tmp_path, ["components/serving/network_policy.py"],
                              {m + "a__mutmut_1", m + "a__mutmut_3"})
    assert (sampled.mutants, sampled.killed, sampled.survived, sampled.score) == (2, 1, 1, 0.5)
    text = mutate.report([s], ["tests/test_x.py::test_y"], 12.0, False, None)
    assert "| components/serving/network_policy.py | 7 | 2 | 1 | 2 | 1 | 1 | 50.0% |" in text
    assert "BUDGET EXHAUSTED" in text and "diff of " + m + "a__mutmut_7" in text
    assert f"## {m}a__mutmut_4 (no selected test reaches it)" in text


def test_wilson_interval():
    low, high = mutate.wilson(50, 100)
    assert (round(low, 3), round(high, 3)) == (0.404, 0.596)
    assert mutate.wilson(10, 10)[1] == pytest.approx(1.0) and mutate.wilson(10, 10)[0] > 0.69


def module(name: str, **counts) -> dict:
    """One module's entry of a report.json."""
    return {"module": name, **dict.fromkeys(mutation_report.COUNTS, 0), "survivors": [], **counts}


def test_reports_add_up_per_package():
    totals = mutation_report.add_up([
        {"modules": [module("components/serving/a.py", mutants=10, killed=8, survived=2),
                     module("components/node_labels.py", mutants=4, killed=1, timeout=1, not_checked=2)]},
        {"modules": [module("components/serving/b.py", mutants=5, killed=5),
                     module("stacks/diff.py", mutants=3, no_tests=3)]}])
    assert totals["components/serving"]["mutants"] == 15 and totals["components/serving"]["killed"] == 13
    assert mutation_report.score(totals["components"]) == 1.0  # (1 killed + 1 timeout) / 2 checked
    assert mutation_report.score(totals["stacks"]) == 0.0
    assert totals["total"]["mutants"] == 22
    text = mutation_report.table(totals)
    assert text.splitlines()[-1].startswith("| total | 22 | 14 | 1 |")
    assert "| components/serving | 15 | 13 | 0 | 2 | 0 | 0 | 86.7% |" in text


def test_the_scheduled_slices_mutate_every_module_once():
    workflow = yaml.safe_load((ROOT / ".github/workflows/mutation.yml").read_text())
    slices = workflow["jobs"]["slice"]["strategy"]["matrix"]["include"]
    seen: list[str] = []
    for s in slices:
        seen += mutate.module_paths([s["modules"]])
    assert sorted(seen) == sorted(set(seen)), "a module is in two slices"
    assert set(seen) == all_modules("components", "stacks")
    assert len({s["name"] for s in slices}) == len(slices)
    step = next(st for st in workflow["jobs"]["slice"]["steps"] if st.get("name") == "Mutation run")
    assert step["run"].startswith("make mutate MODULE=")


FAKE_MUTMUT = '''
from collections import defaultdict
class _State:
    def __init__(self):
        self._stats = set()
        self.tests_by_mangled_function_name = defaultdict(set)
_s = _State()
def state():
    return _s
'''

CONFTEST = '''
import json, os
import pytest
from mutmut.state import state

@pytest.fixture(scope="session")
def plan():
    state()._stats.update({"components.x.x_build", "components.y.x_render"})
    return "recorded"

def pytest_runtest_teardown(item):
    # what mutmut's own collector does: credit what ran during the test, then clear
    for f in state()._stats:
        state().tests_by_mangled_function_name[f].add(item.nodeid)
    state()._stats.clear()

def pytest_sessionfinish(session):
    with open(os.environ["OUT"], "w") as out:
        json.dump({k: sorted(v) for k, v in state().tests_by_mangled_function_name.items()}, out)
'''

TESTS = '''
def test_first(plan):
    assert plan == "recorded"

def test_second(plan):
    assert plan == "recorded"

def test_without_the_plan():
    pass
'''


@pytest.mark.parametrize("mode", ["stats", "off"])
def test_a_shared_fixtures_calls_count_for_every_test_using_it(tmp_path, mode):
    (tmp_path / "mutmut").mkdir()
    (tmp_path / "mutmut" / "__init__.py").write_text("")
    (tmp_path / "mutmut" / "state.py").write_text(FAKE_MUTMUT)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_shared.py").write_text(TESTS)
    out = tmp_path / "out.json"
    env = {"PATH": "/usr/bin:/bin", "OUT": str(out), "PYTHONPATH": f"{tmp_path}:{ROOT}",
           "MUTANT_UNDER_TEST": "stats" if mode == "stats" else ""}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:cloudcoil",
                           "-p", "tests.mutation_stats", "--rootdir", str(tmp_path), "test_shared.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    credited = json.loads(out.read_text())
    first, second = "test_shared.py::test_first", "test_shared.py::test_second"
    if mode == "stats":
        assert credited == {"components.x.x_build": [first, second], "components.y.x_render": [first, second]}
    else:  # without the plugin's credit only the first test would count: what the plugin exists to fix
        assert credited == {"components.x.x_build": [first], "components.y.x_render": [first]}


def test_the_fork_server_warm_up_leaves_no_executor_threads():
    """Forked children inherit no threads: the warm-up must leave the event loop without its thread pool,
    or a child's first run_in_executor waits forever (what happened before the warm-up shut it down)."""
    probe = textwrap.dedent('''
        import asyncio, os, sys, threading
        os.environ["MUTATE_WARM_UP"] = "1"
        import tests.mutation_stats
        print(asyncio.get_event_loop()._default_executor, len(threading.enumerate()))
    ''')
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["None", "1"]


def test_a_recheck_updates_only_the_earlier_survivors():
    earlier = {"modules": [
        module("stacks/cost.py", mutants=10, killed=6, survived=3, no_tests=1,
                       survivors=[{"name": f"s{i}", "diff": ""} for i in range(4)]),
        module("stacks/diff.py", mutants=5, killed=2, survived=3,
                       survivors=[{"name": f"d{i}", "diff": ""} for i in range(3)])]}
    again = mutate.ModuleScore("stacks/cost.py", mutants=4, killed=2, timeout=1, survived=1,
                               survivors=[{"name": "s3", "diff": ""}])
    cost, diff = mutate.recheck_scores(earlier, [again])
    assert (cost.mutants, cost.killed, cost.timeout, cost.survived, cost.no_tests) == (10, 8, 1, 1, 0)
    assert cost.score == pytest.approx(9 / 10) and [s["name"] for s in cost.survivors] == ["s3"]
    # diff.py changed since the earlier run (its mutant names name other mutants now): kept as it was.
    assert (diff.killed, diff.survived, diff.score) == (2, 3, 0.4)
