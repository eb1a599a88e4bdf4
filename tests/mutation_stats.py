"""pytest plugin for mutation runs (``make mutate``): shared fixtures' calls, warm-up, test order.

1. Credit a shared fixture's calls to every test using it.

mutmut records, per test, which mutated functions ran between the test's start and its teardown, and
later runs a mutant against those tests only. A session-scoped fixture (``dev``, ``prod``, ``gke``: the
plans in conftest.py) runs the program once, inside the first test that asks for it, so without this
plugin every later test reading that plan would look as if it exercised nothing, and a mutant in a
component would be tried against one test instead of every test that reads the plan.

2. Warm up mutmut's fork server (``MUTATE_WARM_UP=1``, set by scripts/mutate.py): plan each stack once, so
the SDKs' lazily loaded submodules and a first plan's other costs are paid there, not in every forked
child (seconds each).

3. In a child testing a mutant, run the fastest tests first: mutmut stops at the first failure.

The plugin is passed with ``-p tests.mutation_stats`` by scripts/mutate.py only; it does nothing unless
mutmut is collecting stats (``MUTANT_UNDER_TEST=stats``), so an ordinary ``pytest`` never loads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest




def _warm_up() -> None:
    """Plan each stack once, unmutated, so that what a first plan in a process costs (lazy SDK classes,
    pydantic schemas: about 2.5 s of a 3 s first plan) is paid here, in the fork server, and not again
    in every forked child. Then stop the event loop's default executor: its worker threads do not
    survive a fork, and a child submitting to it would wait forever (the pool believes it has idle
    workers); with no executor the child's loop starts a fresh one."""
    import asyncio
    import contextlib
    import io

    from stacks.plan import plan_stack

    mutant = os.environ.pop("MUTANT_UNDER_TEST", None)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for stack in ("dev", "prod", "gke-dev"):
                plan_stack(stack)
    finally:
        if mutant is not None:
            os.environ["MUTANT_UNDER_TEST"] = mutant
    loop = asyncio.get_event_loop()
    executor = loop._default_executor
    if executor is not None:
        executor.shutdown(wait=True)
        loop._default_executor = None


if os.environ.get("MUTATE_WARM_UP") == "1":
    _warm_up()

# (fixture's baseid, name) -> mutated functions that ran while the fixture was set up.
_HITS_BY_FIXTURE: dict[tuple[str, str], set[str]] = {}


def _collecting_stats() -> bool:
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def _testing_a_mutant() -> bool:
    return "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", "")


def pytest_collection_modifyitems(items):
    if not _testing_a_mutant():
        return
    try:
        durations = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: durations.get(item.nodeid.removeprefix("mutants/"), float("inf")))


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if not _collecting_stats() or fixturedef.scope == "function":
        yield
        return
    from mutmut.state import state

    outer = state()._stats
    state()._stats = set()
    try:
        yield
    finally:
        hits = state()._stats
        state()._stats = outer | hits
        _HITS_BY_FIXTURE.setdefault((fixturedef.baseid, fixturedef.argname), set()).update(hits)


def pytest_runtest_teardown(item):
    if not _collecting_stats():
        return
    from mutmut.state import state

    nodeid = item.nodeid.removeprefix("mutants/")
    tests_by_function = state().tests_by_mangled_function_name
    for name in item.fixturenames:
        definitions = item._fixtureinfo.name2fixturedefs.get(name)
        if not definitions:
            continue
        active = definitions[-1]
        for function in _HITS_BY_FIXTURE.get((active.baseid, active.argname), ()):
            tests_by_function[function].add(nodeid)
