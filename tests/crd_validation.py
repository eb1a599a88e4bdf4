"""Schema checks for the custom resources the program renders (Gateway API, Istio, Prometheus operator).

kubernetes-validate knows only built-in kinds. Gateway API and Istio objects go through JSON schemas
generated from the upstream CRDs by the npm packages ``@kubernetes-models/gateway-api`` and
``@kubernetes-models/istio`` (pinned in tests/crd_validator/package.json, installed by ``make test``);
ServiceMonitor and PrometheusRule through the pydantic models PyPI's
``cloudcoil-models-prometheus-operator`` generates from the operator's CRDs.

KEDA: a ``ScaledObject`` goes through ``@kubernetes-models/keda`` (node, generated from KEDA's Go API
types) *and* the CRD schema the pinned keda chart installs; an ``InterceptorRoute`` (HTTP add-on 0.15,
which no package models) through the CRD schema of the pinned keda-add-ons-http chart. Those schemas are
copied from the charts into ``crd_validator/schemas/`` (file names carry the chart versions) and checked
strictly: a field the CRD does not declare is an error (the API server would drop it, or refuse it with
strict field validation), and the CRD's CEL rules (``x-kubernetes-validations``) are evaluated too.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

VALIDATOR = Path(__file__).parent / "crd_validator"
CRD_KINDS = frozenset({"Gateway", "HTTPRoute", "VirtualService", "ServiceMonitor", "PrometheusRule", "ScaledObject",
                       "InterceptorRoute", "NodePool", "EC2NodeClass", "ComputeClass"})
PROMETHEUS_OPERATOR_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})
CHART_CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): VALIDATOR / "schemas" / "keda-2.20.2-scaledobject.json",
    ("http.keda.sh/v1beta1", "InterceptorRoute"): VALIDATOR / "schemas" / "keda-add-ons-http-0.15.0-interceptorroute.json",
    # aws/karpenter-provider-aws charts/karpenter-crd/templates at 1.14.1 (the karpenter chart's crds/ alike).
    ("karpenter.sh/v1", "NodePool"): VALIDATOR / "schemas" / "karpenter-1.14.1-nodepool.json",
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): VALIDATOR / "schemas" / "karpenter-1.14.1-ec2nodeclass.json",
}
"""Kinds also (or only) checked against the CRD a pinned chart installs (components/helm_charts.py)."""
NODE_KINDS_WITHOUT_MODEL = frozenset({("http.keda.sh/v1beta1", "InterceptorRoute")})
CEL_IN_NODE = frozenset({VALIDATOR / "schemas" / "karpenter-1.14.1-nodepool.json",
                         VALIDATOR / "schemas" / "karpenter-1.14.1-ec2nodeclass.json"})
"""Schemas whose CEL rules use more than :func:`cel_to_python` reads (macros, regexes, string functions):
evaluated by a real CEL implementation (``crd_validator/cel.mjs``), on strings and lists too."""


def validate_custom_resources(objects: list[dict]) -> list[str | None]:
    """Per object: None when valid, else the schema errors (unknown kinds are errors too)."""
    results: list[str | None] = [None] * len(objects)
    key = lambda o: (o.get("apiVersion"), o.get("kind"))  # noqa: E731
    node_side = [i for i, o in enumerate(objects) if o.get("kind") not in PROMETHEUS_OPERATOR_KINDS
                 and key(o) not in NODE_KINDS_WITHOUT_MODEL]
    for i, obj in enumerate(objects):
        if obj.get("kind") in PROMETHEUS_OPERATOR_KINDS:
            results[i] = _validate_prometheus_operator(obj)
    if node_side:
        for i, result in zip(node_side, _validate_with_node([objects[i] for i in node_side])):
            results[i] = result
    for i, obj in enumerate(objects):
        if key(obj) in CHART_CRD_SCHEMAS:
            errors = [e for e in (results[i], validate_against_crd(obj)) if e]
            results[i] = "; ".join(errors) or None
    return results


@cache
def _crd_schema(path: Path) -> dict:
    return strict_schema(json.loads(path.read_text())["openAPIV3Schema"])


def strict_schema(schema: dict) -> dict:
    """A CRD's structural openAPIV3Schema as a JSON Schema that refuses undeclared fields: every object
    with ``properties`` and neither ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields``
    gets ``additionalProperties: false``; ``x-kubernetes-int-or-string`` becomes integer-or-string."""
    schema = copy.deepcopy(schema)

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if node.get("x-kubernetes-int-or-string"):
            node.pop("anyOf", None)
            node["type"] = ["integer", "string"]
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for key, value in node.items():
            if key in ("properties", "patternProperties"):
                for child in value.values():
                    walk(child)
            elif key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not"):
                walk(value)

    walk(schema)
    return schema


_CEL_TOKENS = re.compile(r"\s*(has\(self\.[A-Za-z_][A-Za-z0-9_]*\)|self\.[A-Za-z_][A-Za-z0-9_]*|[0-9]+|&&|\|\||!=|==|<=|>=|[<>!?:()])")


def cel_to_python(rule: str) -> str:
    """The few CEL forms the pinned CRDs use (``has(self.f)``, ``self.f``, integers, ``!``, ``&&``, ``||``,
    comparisons, ``c ? a : b``, parentheses) as a Python expression over ``self`` (a dict), by a small
    recursive-descent parser with CEL's precedence. Anything else raises: an unknown rule never passes."""
    tokens, position = [], 0
    while rule[position:].strip():
        match = _CEL_TOKENS.match(rule, position)
        if not match:
            raise ValueError(f"CEL rule {rule!r}: unsupported syntax at {rule[position:]!r}")
        tokens.append(match.group(1))
        position = match.end()
    index = 0

    def peek() -> str | None:
        return tokens[index] if index < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal index
        token = peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"CEL rule {rule!r}: expected {expected or 'more'} at token {index}")
        index += 1
        return token

    def ternary() -> str:
        condition = disjunction()
        if peek() == "?":
            take("?")
            then = ternary()
            take(":")
            return f"(({then}) if ({condition}) else ({ternary()}))"
        return condition

    def disjunction() -> str:
        text = conjunction()
        while peek() == "||":
            take()
            text = f"({text} or {conjunction()})"
        return text

    def conjunction() -> str:
        text = comparison()
        while peek() == "&&":
            take()
            text = f"({text} and {comparison()})"
        return text

    def comparison() -> str:
        text = unary()
        if peek() in ("==", "!=", "<", "<=", ">", ">="):
            op = take()
            text = f"({text} {op} {unary()})"
        return text

    def unary() -> str:
        if peek() == "!":
            take()
            return f"(not {unary()})"
        token = take()
        if token == "(":
            inner = ternary()
            take(")")
            return f"({inner})"
        if token.startswith("has("):
            return f"({token[9:-1]!r} in self)"
        if token.startswith("self."):
            return f"self[{token[5:]!r}]"
        if token.isdigit():
            return token
        raise ValueError(f"CEL rule {rule!r}: unexpected {token!r}")

    text = ternary()
    if peek() is not None:
        raise ValueError(f"CEL rule {rule!r}: trailing {peek()!r}")
    return text


def _cel_errors(schema: dict, value: object, path: str) -> list[str]:
    """Evaluate every ``x-kubernetes-validations`` rule of ``schema`` that applies to ``value``."""
    errors = []
    if isinstance(value, dict):
        for rule in schema.get("x-kubernetes-validations") or []:
            if not eval(cel_to_python(rule["rule"]), {"__builtins__": {}}, {"self": value}):  # noqa: S307
                errors.append(f"{path or '/'}: {rule.get('message') or rule['rule']}")
        for key, child in value.items():
            if key in (schema.get("properties") or {}):
                errors += _cel_errors(schema["properties"][key], child, f"{path}/{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}/{index}")
    return errors


def validate_against_crd(obj: dict) -> str | None:
    """``obj`` against the CRD schema its pinned chart installs (see the module docstring); None if valid."""
    from jsonschema import Draft202012Validator

    path = CHART_CRD_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
    if path is None:
        return f"no chart CRD schema for {obj.get('apiVersion')} {obj.get('kind')}"
    schema = _crd_schema(path)
    errors = [f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
              for e in sorted(Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(e.absolute_path))]
    if not errors:
        errors = _cel_errors_in_node(schema, obj) if path in CEL_IN_NODE else _cel_errors(schema, obj, "")
    return "; ".join(errors) or None


def _cel_errors_in_node(schema: dict, obj: dict) -> list[str]:
    """Every ``x-kubernetes-validations`` rule that applies to a value of ``obj`` (objects, lists, strings,
    numbers), evaluated by ``crd_validator/cel.mjs``. Transition rules (``oldSelf``) run only on updates
    (Kubernetes "CRD validation rules": transition rules), so a create skips them."""
    checks: list[tuple[str, str, object]] = []

    def walk(node: dict, value: object, path: str) -> None:
        for rule in node.get("x-kubernetes-validations") or []:
            if "oldSelf" not in rule["rule"]:
                checks.append((f"{path or '/'}: {rule.get('message') or rule['rule']}", rule["rule"], value))
        if isinstance(value, dict):
            extra = node.get("additionalProperties")
            for key, child in value.items():
                sub = (node.get("properties") or {}).get(key, extra if isinstance(extra, dict) else None)
                if sub is not None:
                    walk(sub, child, f"{path}/{key}")
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for index, item in enumerate(value):
                walk(node["items"], item, f"{path}/{index}")

    walk(schema, obj, "")
    if not checks:
        return []
    done = subprocess.run([shutil.which("node") or "node", str(VALIDATOR / "cel.mjs")], capture_output=True,
                          input=json.dumps([{"rule": rule, "self": value} for _, rule, value in checks]),
                          text=True, cwd=VALIDATOR, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [message if result is False else f"{message} ({result})"
            for (message, _, _), result in zip(checks, json.loads(done.stdout)) if result is not True]


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
