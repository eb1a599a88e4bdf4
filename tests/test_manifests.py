"""Every rendered Kubernetes object against the Kubernetes OpenAPI schema (kubernetes-validate)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from stacks.plan import kubernetes_objects, plan_stack
from stacks.settings import StackSettings
from tests.conftest import stack_file_with
from tests.crd_validation import CRD_KINDS, validate_custom_resources
from tests.test_serving import always_on

# Validate against the control-plane version the stacks run (Pulumi.yaml default).
K8S_VERSION = StackSettings.model_fields["kubernetes_version"].default + ".0"
# The shipped stacks split canaries with the stack's own router (no custom kinds but the monitoring
# ones); these variants render every route kind too: mesh canary routes and external exposure.
ROUTED = {"trafficRouter": "gateway-api", "clusterPrerequisites": ["gamma-mesh", "gateway-api-crds"],
          "exposure": {"enabled": True, "gatewayClassName": "eg", "hostname": "models.example.com",
                       "tlsSecretName": "models-tls", "proxyNamespaces": ["envoy-gateway-system"]}}
STACKS = ["dev", "prod", "gke-dev", "dev+routes", "gke-dev+routes", "dev+istio"]


def validation_failures(objects: list[dict]) -> list[str]:
    """Every object of a plan judged: built-in kinds against the Kubernetes schema (strict), custom kinds
    against their CRD schemas; one line per failure."""
    custom = [o for o in objects if o["kind"] in CRD_KINDS]
    failures = [f"{o['kind']}/{o['metadata']['name']}: {r}" for o, r in zip(custom, validate_custom_resources(custom))
                if r]
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: no schema for {obj['apiVersion']} {obj['kind']}")
        except kubernetes_validate.ValidationError as err:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {err.message} at {list(err.path)}")
    return failures


@pytest.fixture(scope="module", params=STACKS)
def manifests(request, tmp_path_factory) -> list[dict]:
    base, _, variant = request.param.partition("+")
    overrides = {"routes": ROUTED, "istio": {"trafficRouter": "istio", "clusterPrerequisites": ["istio"]},
                 "": None}[variant]
    if overrides and base == "dev":
        # Mesh routers cannot hold requests (settings refuse it): the variants run dev's GPU server always on.
        overrides = {**overrides, "servers": always_on()}
    config = stack_file_with(tmp_path_factory.mktemp(variant or base), base, **overrides) if overrides else None
    objects = [r.inputs for r in kubernetes_objects(plan_stack(base, config))]
    assert len(objects) >= 9
    return objects


def test_every_object_matches_the_strict_schema(manifests):
    failures = validation_failures([o for o in manifests if o["kind"] not in CRD_KINDS])
    assert not failures, "\n".join(failures)


def test_custom_resources_match_their_crd_schemas(manifests):
    custom = [o for o in manifests if o["kind"] in CRD_KINDS]
    assert custom, "the stack renders ServiceMonitors at least"
    results = validate_custom_resources(custom)
    failures = [f"{o['kind']}/{o['metadata']['name']}: {r}" for o, r in zip(custom, results) if r]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("stack", ["dev+routes", "gke-dev+routes"], indirect=False)
def test_crd_validator_rejects_a_broken_route(stack, tmp_path):
    base = stack.partition("+")[0]
    routed = {**ROUTED, "servers": always_on(base)} if base == "dev" else ROUTED
    manifests = [r.inputs for r in kubernetes_objects(plan_stack(base, stack_file_with(tmp_path, base, **routed)))]
    route = next(o for o in manifests if o["kind"] == "HTTPRoute")
    rules = [{**route["spec"]["rules"][-1], "backendRefs": [{"kind": "Service", "name": "x", "port": "http",
                                                              "weight": -1}]}]
    (result,) = validate_custom_resources([{**route, "spec": {**route["spec"], "rules": rules}}])
    assert result and "port" in result
    (unknown,) = validate_custom_resources([{"apiVersion": "example.com/v1", "kind": "Widget",
                                             "metadata": {"name": "w"}}])
    assert unknown and "no schema" in unknown


def test_validator_catches_a_broken_deployment(manifests):
    # The check above must be able to fail: a misspelt field is rejected in strict mode.
    deployment = next(o for o in manifests if o["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_an_unknown_kind_is_not_silently_accepted():
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({"apiVersion": "example.com/v1", "kind": "Widget",
                                      "metadata": {"name": "w"}}, K8S_VERSION, strict=True)
