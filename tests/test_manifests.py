"""Every rendered Kubernetes object against the Kubernetes OpenAPI schema (kubernetes-validate)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from stacks.plan import kubernetes_objects, plan_stack
from stacks.settings import StackSettings
from tests.crd_validation import CRD_KINDS, validate_custom_resources

# Validate against the control-plane version the stacks run (Pulumi.yaml default).
K8S_VERSION = StackSettings.model_fields["kubernetes_version"].default + ".0"


@pytest.fixture(scope="module", params=["dev", "prod", "gke-dev"])
def manifests(request) -> list[dict]:
    objects = [r.inputs for r in kubernetes_objects(plan_stack(request.param))]
    assert len(objects) >= 9
    return objects


def test_every_object_matches_the_strict_schema(manifests):
    failures = []
    for obj in manifests:
        if obj["kind"] in CRD_KINDS:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            failures.append(f"{name}: no schema for {obj['apiVersion']} {obj['kind']}")
        except kubernetes_validate.ValidationError as err:
            failures.append(f"{name}: {err.message} at {list(err.path)}")
    assert not failures, "\n".join(failures)


def test_custom_resources_match_their_crd_schemas(manifests):
    custom = [o for o in manifests if o["kind"] in CRD_KINDS]
    assert custom, "the stack renders a canary route"
    results = validate_custom_resources(custom)
    failures = [f"{o['kind']}/{o['metadata']['name']}: {r}" for o, r in zip(custom, results) if r]
    assert not failures, "\n".join(failures)


def test_crd_validator_rejects_a_broken_route(manifests):
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
