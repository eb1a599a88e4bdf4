"""What the engine would hand the pack, built from a mock-engine recording (for tests; not used by the pack).

``stacks.mock_engine.RecordedResource`` keeps a resource's type, name, URN, parent, dependencies,
options and inputs. The engine sends the same through the analyzer RPC, and pulumi_policy's servicer
turns it into ``ResourceValidationArgs`` / ``PolicyResource``; this module does what that servicer
(``_PolicyAnalyzerServicer.Analyze`` / ``AnalyzeStack``) does, from a recording:

* props become wire form again: integers are floats (the RPC carries only doubles; the recording turned
  integral floats back into ints) and the whole tree is wrapped in ``unknown_checking_proxy`` like the
  servicer does, so the policies see ``Mapping`` / ``Sequence`` proxies, not dicts and lists;
* ``opts`` is a ``PolicyResourceOptions`` with the recorded ``protect``, ``ignore_changes`` and parent;
* stack resources get their ``parent`` and ``dependencies`` linked to the other ``PolicyResource``
  objects, as the servicer links them by URN.

What a recording cannot give: ``property_dependencies`` (the mock monitor keeps only the flat
dependency list) and a resource's outputs (stack policies receive outputs; a recording has inputs,
a subset for the resources checked here). Duck-typed: anything with the attributes of
``RecordedResource`` works, so this module imports nothing of the project.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import unknown_checking_proxy


class Recorded(Protocol):
    urn: str
    type: str
    name: str
    parent: str
    inputs: dict[str, Any]
    dependencies: list[str]
    protect: bool
    provider: str
    ignore_changes: list[str]


def wire_form(value: Any) -> Any:
    """A deep copy as the RPC delivers it: every number a float (bools stay bools)."""
    if isinstance(value, Mapping):
        return {k: wire_form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [wire_form(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return copy.deepcopy(value)


def engine_props(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    return unknown_checking_proxy(wire_form(inputs))


def resource_options(resource: Recorded) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=bool(resource.protect),
        ignore_changes=list(getattr(resource, "ignore_changes", []) or []),
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=resource.parent or None,
    )


def provider_resource(resource: Recorded, by_urn: Mapping[str, Recorded]) -> PolicyProviderResource | None:
    """The provider reference is ``<provider urn>::<provider id>``; None for the default provider."""
    reference = getattr(resource, "provider", "") or ""
    if not reference:
        return None
    urn = reference.rsplit("::", 1)[0]
    provider = by_urn.get(urn)
    if provider is None:
        return None
    return PolicyProviderResource(provider.type, engine_props(provider.inputs), provider.urn, provider.name)


def resource_args(resource: Recorded, others: Iterable[Recorded] = (),
                  config: Mapping[str, Any] | None = None) -> ResourceValidationArgs:
    """``ResourceValidationArgs`` for one resource (``others``: the recording, to resolve its provider)."""
    by_urn = {r.urn: r for r in others}
    return ResourceValidationArgs(resource.type, engine_props(resource.inputs), resource.urn, resource.name,
                                  resource_options(resource), provider_resource(resource, by_urn), config)


def policy_resources(resources: Iterable[Recorded]) -> list[PolicyResource]:
    """``PolicyResource`` objects with parents and dependencies linked by URN, like ``AnalyzeStack``."""
    recorded = list(resources)
    by_urn = {r.urn: r for r in recorded}
    converted = {r.urn: PolicyResource(r.type, engine_props(r.inputs), r.urn, r.name, resource_options(r),
                                       provider_resource(r, by_urn), None, [], {})
                 for r in recorded}
    for r in recorded:
        target = converted[r.urn]
        target.parent = converted.get(r.parent) if r.parent else None
        target.dependencies = [converted[d] for d in r.dependencies if d in converted]
    return list(converted.values())


def stack_args(resources: Iterable[Recorded], config: Mapping[str, Any] | None = None) -> StackValidationArgs:
    return StackValidationArgs(policy_resources(resources), config)
