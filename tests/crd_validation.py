"""Schema checks for the custom resources the program renders (Gateway API, Istio, Prometheus operator).

kubernetes-validate knows only built-in kinds. Gateway API and Istio objects go through JSON schemas
generated from the upstream CRDs by the npm packages ``@kubernetes-models/gateway-api`` and
``@kubernetes-models/istio`` (pinned in tests/crd_validator/package.json, installed by ``make test``);
ServiceMonitor and PrometheusRule through the pydantic models PyPI's
``cloudcoil-models-prometheus-operator`` generates from the operator's CRDs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

VALIDATOR = Path(__file__).parent / "crd_validator"
CRD_KINDS = frozenset({"Gateway", "HTTPRoute", "VirtualService", "ServiceMonitor", "PrometheusRule"})
PROMETHEUS_OPERATOR_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})


def validate_custom_resources(objects: list[dict]) -> list[str | None]:
    """Per object: None when valid, else the schema errors (unknown kinds are errors too)."""
    results: list[str | None] = [None] * len(objects)
    node_side = [i for i, o in enumerate(objects) if o.get("kind") not in PROMETHEUS_OPERATOR_KINDS]
    for i, obj in enumerate(objects):
        if obj.get("kind") in PROMETHEUS_OPERATOR_KINDS:
            results[i] = _validate_prometheus_operator(obj)
    if node_side:
        for i, result in zip(node_side, _validate_with_node([objects[i] for i in node_side])):
            results[i] = result
    return results


def _validate_prometheus_operator(obj: dict) -> str | None:
    from cloudcoil.models.prometheus_operator import v1
    from pydantic import ValidationError

    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        return f"no schema for {obj.get('apiVersion')} {obj.get('kind')}"
    try:
        getattr(v1, obj["kind"]).model_validate(obj)
    except ValidationError as err:
        return str(err)
    return None


def _validate_with_node(objects: list[dict]) -> list[str | None]:
    node = shutil.which("node")
    if node is None or not (VALIDATOR / "node_modules").is_dir():
        raise AssertionError("CRD validator missing: run `make test` (npm ci in tests/crd_validator)")
    done = subprocess.run([node, str(VALIDATOR / "validate.mjs")], input=json.dumps(objects),
                          capture_output=True, text=True, cwd=VALIDATOR, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
