"""Property: every stack config is refused up front with the mutated key named, or plans into valid objects.

Starting from each committed stack file, Hypothesis mutates one to three keys the settings schema declares
(tests/config_strategies.py). For each example, either

* ``ConfigError`` is raised, its message names a mutated key, and (for full plans) the mock engine
  recorded no resource at all (the exit-2 path of ``python -m stacks plan``), or
* the settings parse and the program completes on the mock engine, and every Kubernetes object it
  recorded matches its schema (kubernetes-validate for built-in kinds, the CRD schemas for the others).

Never another exception. Settings-only examples are cheap and run in bulk; full plans take a second or
two each. ``CONFIG_PROPERTY_EXAMPLES`` scales both (default 1000 settings examples and 40 plans, about
40 s; 3000 gives 120 plans); the run is derandomized, so CI sees the same examples every time.
"""

from __future__ import annotations

import os
from typing import Any

import kubernetes_validate
import pulumi
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stacks.config import ConfigError, parse_settings
from stacks.mock_engine import Recording, run_program
from stacks.plan import ROOT, kubernetes_objects
from stacks.settings import PROJECT, StackSettings
from tests.config_strategies import STACKS, Mutation, apply, base_config, mutations, to_raw
from tests.crd_validation import CRD_KINDS, validate_custom_resources

EXAMPLES = int(os.environ.get("CONFIG_PROPERTY_EXAMPLES", "1000"))
PLANS = max(EXAMPLES // 25, 40)
K8S_VERSION = StackSettings.model_fields["kubernetes_version"].default + ".0"
BASES = {stack: base_config(stack) for stack in STACKS}
COMMON = dict(derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@st.composite
def mutated_configs(draw: st.DrawFn) -> tuple[str, list[Mutation], dict[str, str]]:
    stack = draw(st.sampled_from(STACKS))
    config = BASES[stack]
    applied = []
    typed_only = draw(st.integers(0, 3)) > 0  # mostly values of the declared type: more plans render
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(mutations(config, typed_only))
        config = apply(config, mutation)
        applied.append(mutation)
    return stack, applied, to_raw(config)


def assert_names_a_mutated_key(error: ConfigError, applied: list[Mutation]) -> None:
    """The message names a mutated key: a problem's key is one of them (or inside one), or the message
    names one while explaining a problem it causes elsewhere (``... when protect is true``)."""
    message = str(error)
    keys = [line.split(" = ", 1)[0].removeprefix("  - ").removeprefix(f"{PROJECT}:")
            for line in message.splitlines()[1:]]
    for mutation in applied:
        top = mutation.path[0]
        if any(key == top or key.startswith(top + ".") for key in keys):
            return
        if any(part in message for part in mutation.path if not part.isdigit() and len(part) > 2):
            return
    raise AssertionError(f"no mutated key ({[m.key for m in applied]}) named in:\n{message}")


@settings(max_examples=EXAMPLES, **COMMON)
@given(mutated_configs())
def test_settings_refuse_with_the_key_or_accept(example):
    _stack, applied, raw = example
    try:
        parse_settings(raw)
    except ConfigError as error:
        event("refused")
        assert_names_a_mutated_key(error, applied)
    else:
        event("accepted")
        assert_kept_as_given(settings_dump(raw), applied)


def settings_dump(raw: dict[str, str]) -> dict:
    return parse_settings(raw).model_dump(by_alias=True)


def assert_kept_as_given(dump: dict, applied: list[Mutation]) -> None:
    """An accepted scalar is the value given, of the type given: a YAML true never became 1, 2.0 never 2
    (an int in a float field is the one widening allowed)."""
    for mutation in applied:
        node: Any = dump
        for part in mutation.path:  # a later mutation may have replaced the path: then nothing to compare
            if isinstance(node, list):
                node = node[int(part)] if part.isdigit() and int(part) < len(node) else None
            else:
                node = node.get(part) if isinstance(node, dict) else None
        given_value = mutation.value
        if isinstance(given_value, (bool, int, float)) and not isinstance(node, (dict, list)):
            widened = type(given_value) is int and type(node) is float
            # A top-level string key gets the CLI's text of any scalar (YAML 0 -> "0"): that is a string.
            widened = widened or (len(mutation.path) == 1 and type(node) is str)
            assert type(node) is type(given_value) or widened, f"{mutation.key}: {given_value!r} became {node!r}"


def invalid_objects(recording: Recording) -> list[str]:
    """Schema errors of every Kubernetes object the plan recorded."""
    objects = [r.inputs for r in kubernetes_objects(recording)]
    failures = []
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as err:
            failures.append(f"{obj['kind']}/{obj['metadata'].get('name')}: {getattr(err, 'message', err)}")
    custom = [o for o in objects if o["kind"] in CRD_KINDS]
    for obj, result in zip(custom, validate_custom_resources(custom)):
        if result:
            failures.append(f"{obj['kind']}/{obj['metadata'].get('name')}: {result}")
    return failures


def plan(stack: str, raw: dict[str, str]) -> tuple[Recording, BaseException | None]:
    """Run the real program on the mock engine; what it registered, and what it raised."""
    recording = Recording(stack=stack, project=PROJECT)
    try:
        run_program(ROOT / "__main__.py", stack, PROJECT, raw, [], into=recording)
    except BaseException as error:  # noqa: BLE001 (the property is about what escapes)
        return recording, error
    return recording, None


@settings(max_examples=PLANS, **COMMON)
@given(mutated_configs())
def test_plans_refuse_before_any_resource_or_render_valid_objects(example):
    stack, applied, raw = example
    try:
        parse_settings(raw)
        expected_error = None
    except ConfigError as error:
        expected_error = error
    recording, raised = plan(stack, raw)
    if expected_error is not None:
        # __main__.py turns ConfigError into RunError: the message alone, exit 2, nothing registered.
        assert isinstance(raised, pulumi.RunError), repr(raised)
        assert str(expected_error) in str(raised)
        assert_names_a_mutated_key(expected_error, applied)
        assert recording.resources == [], f"{len(recording.resources)} resources registered before the error"
        event("plan refused")
        return
    assert raised is None, f"{[m.key for m in applied]}: {raised!r}"
    failures = invalid_objects(recording)
    assert not failures, "\n".join(failures)
    event("plan validated")


def test_the_property_can_fail():
    # A config the settings accept is planned and judged: an invalid object is reported...
    recording, raised = plan("dev", to_raw(BASES["dev"]))
    assert raised is None and kubernetes_objects(recording)
    deployment = next(r for r in kubernetes_objects(recording) if r.inputs["kind"] == "Deployment")
    deployment.inputs["spec"]["replica"] = 2
    assert any("replica" in f for f in invalid_objects(recording))
    # ...and a refusal that does not name the mutated key is caught.
    with pytest.raises(ConfigError) as caught:
        parse_settings(to_raw({**BASES["dev"], "cloud": "azure"}))
    with pytest.raises(AssertionError):
        assert_names_a_mutated_key(caught.value, [Mutation(("servingNamespace",), "x")])
