"""Snapshot of each stack's whole plan: any change to what `pulumi up` would do shows up in review.

Targeted tests say what must hold; the snapshot says nothing else moved. After an intended change,
regenerate with ``UPDATE_SNAPSHOTS=1 make test`` and review the JSON diff like a preview diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stacks.plan import to_json

SNAPSHOTS = Path(__file__).parent / "snapshots"


FIXTURES = {"dev": "dev", "prod": "prod", "gke-dev": "gke"}


@pytest.mark.parametrize("stack", list(FIXTURES))
def test_plan_matches_snapshot(stack, request):
    current = to_json(request.getfixturevalue(FIXTURES[stack]))
    path = SNAPSHOTS / f"plan-{stack}.json"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    expected = json.loads(path.read_text())
    if current != expected:
        changed = sorted({r["urn"] for r in current["resources"]} ^ {r["urn"] for r in expected["resources"]})
        changed += [r["urn"] for r in current["resources"]
                    if r in current["resources"] and r not in expected["resources"]][:10]
        pytest.fail(f"plan of {stack} differs from {path.name} (UPDATE_SNAPSHOTS=1 to accept): {changed[:20]}")
