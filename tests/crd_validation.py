"""Schema checks for the custom resources the program renders (Gateway API, Istio).

kubernetes-validate knows only built-in kinds; these go through JSON schemas generated from the
upstream CRDs by the npm packages ``@kubernetes-models/gateway-api`` and ``@kubernetes-models/istio``
(pinned in tests/crd_validator/package.json, installed by ``make test``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

VALIDATOR = Path(__file__).parent / "crd_validator"
CRD_KINDS = frozenset({"Gateway", "HTTPRoute", "VirtualService"})


def validate_custom_resources(objects: list[dict]) -> list[str | None]:
    """Per object: None when valid, else the schema errors (unknown kinds are errors too)."""
    node = shutil.which("node")
    if node is None or not (VALIDATOR / "node_modules").is_dir():
        raise AssertionError("CRD validator missing: run `make test` (npm ci in tests/crd_validator)")
    done = subprocess.run([node, str(VALIDATOR / "validate.mjs")], input=json.dumps(objects),
                          capture_output=True, text=True, cwd=VALIDATOR, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
