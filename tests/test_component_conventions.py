"""Pulumi component guidelines, checked on everything the program registers."""

from __future__ import annotations

import json
import re

from stacks.mock_engine import Recording

def test_only_components_and_the_aws_provider_sit_at_the_top(dev: Recording):
    top = [r for r in dev.resources if not r.parent or r.parent == dev.stack_urn]
    assert {r.type for r in top if r.custom} == {"pulumi:providers:aws"}
    assert {r.name for r in top if not r.custom} == {"network", "eks", "models", "model-reader", "tfserving",
                                                     "tfserving-default", "tfserving-cpu", "monitoring",
                                                     "tfserving-monitoring", "gpu", "cluster-autoscaler", "keda",
                                                     "model-cache"}
    for r in dev.resources:
        if r.custom and not r.type.startswith("pulumi:providers:aws"):
            parent = dev.by_urn(r.parent)
            assert parent is not None and not parent.custom, f"{r.urn} is not parented to a component"


def test_children_are_named_after_their_component(dev: Recording):
    for r in dev.resources:
        parent = dev.by_urn(r.parent) if r.parent else None
        if parent is not None:
            assert r.name == parent.name or r.name.startswith(parent.name + "-"), (parent.name, r.name)


def test_component_types_follow_pkg_module_type(dev: Recording):
    # Helm charts (v4) are the provider's own components; ours follow tfplatform:<module>:<Type>.
    components = [r for r in dev.resources if not r.custom and r.type != "kubernetes:helm.sh/v4:Chart"]
    assert components
    for r in components:
        assert re.fullmatch(r"tfplatform:(aws|gcp|serving|monitoring|gpu):[A-Z][A-Za-z]+", r.type), r.type


def test_node_groups_are_keyed_by_pool_name_not_index(dev: Recording):
    names = {r.name for r in dev.of_type("tfplatform:aws:ManagedNodeGroup")}
    assert names == {"eks-system", "eks-gpu"}


def test_aws_resources_use_the_explicit_regional_provider(dev: Recording):
    provider = dev.one("pulumi:providers:aws", "aws")
    assert provider.inputs["region"] == "us-east-1"
    # Provider inputs travel as JSON strings.
    assert json.loads(provider.inputs["defaultTags"])["tags"]["Stack"] == "dev"
    for r in dev.resources:
        if r.custom and r.type.startswith("aws:"):
            assert r.provider.startswith(provider.urn + "::"), r.urn


def test_gke_stack_follows_the_same_conventions(gke: Recording):
    test_children_are_named_after_their_component(gke)
    test_component_types_follow_pkg_module_type(gke)
    for r in gke.resources:
        if r.custom and not r.type.startswith("pulumi:providers:gcp"):
            parent = gke.by_urn(r.parent)
            assert parent is not None and not parent.custom, f"{r.urn} is not parented to a component"
