"""Deploy-time estimate: the critical path of a fresh `pulumi up` is the unavoidable chain."""

from __future__ import annotations

import copy

import pytest

from stacks.mock_engine import Recording
from stacks.plan import to_json
from stacks.timing import UNAVOIDABLE, estimate, typical_seconds

# Resources with a real cost that must never sit on the critical path: they hold no ordering the
# cluster or the workloads need (bucket, its key, the serving identity, the add-on charts).
OFF_PATH = ("aws:s3/", "aws:kms/", "gcp:storage/", "kubernetes:helm.sh/v4:Chart")


@pytest.mark.parametrize("fixture", ["dev", "prod", "gke"])
def test_critical_path_is_the_unavoidable_chain(fixture, request):
    rec: Recording = request.getfixturevalue(fixture)
    timing = estimate(to_json(rec))
    slow = [s for s in timing.path if s.seconds >= 30]
    assert all(s.type.startswith(UNAVOIDABLE) for s in slow), slow
    kinds = [s.type.split(":")[-1] for s in slow]
    # The first up does not wait for TF Serving (its bucket is still empty): the chain ends with what it
    # does wait for, the last add-on or the canary router's rollout.
    assert kinds[0] == "Cluster" and kinds[-1] in ("Deployment", "Addon"), kinds
    assert kinds[1] in ("NodeGroup", "NodePool"), kinds
    assert not [s for s in timing.path if s.type.startswith(OFF_PATH)]
    # Only fast API calls (namespace, config) separate the estimate from the lower bound, plus on GKE the
    # Cloud KMS key ring, key and grant the cluster's application-layer secrets encryption needs first.
    secrets_key = sum(s.seconds for s in timing.path if s.type.startswith("gcp:kms/"))
    assert timing.lower_bound <= timing.total <= timing.lower_bound + 10 + secrets_key


def test_later_ups_wait_for_the_serving_rollout_and_the_first_does_not(dev: Recording):
    from stacks.plan import DEPLOYED_OUTPUTS, plan_stack
    from stacks.timing import TYPICAL_SECONDS, resource_seconds

    def serving(plan: dict) -> dict:
        return next(r for r in plan["resources"] if r["name"] == "tfserving-default-deployment")

    first, later = to_json(dev), to_json(plan_stack("dev", previous_outputs=DEPLOYED_OUTPUTS))
    assert resource_seconds(serving(first)) == TYPICAL_SECONDS["kubernetes:*"]
    assert resource_seconds(serving(later)) == TYPICAL_SECONDS["kubernetes:apps/v1:Deployment"]
    assert "tfserving" in " ".join(s.name for s in estimate(later).path)
    assert estimate(later).total > estimate(first).total


def test_a_false_serialization_shows_on_the_critical_path(dev: Recording):
    plan = to_json(dev)
    bucket = next(r for r in plan["resources"] if r["type"] == "aws:s3/bucket:Bucket")
    nat = next(r for r in plan["resources"] if r["type"] == "aws:ec2/natGateway:NatGateway")
    broken = copy.deepcopy(plan)
    for r in broken["resources"]:
        if r["type"] == "aws:eks/cluster:Cluster":
            r["dependencies"].append(bucket["urn"])  # the cluster waiting for the model bucket: wrong
        if r["urn"] == bucket["urn"]:
            r["dependencies"].append(nat["urn"])  # ... which waits for a NAT gateway
    fine, slow = estimate(plan), estimate(broken)
    assert slow.total >= fine.total + typical_seconds(nat["type"]) - 10
    assert any(s.type == "aws:s3/bucket:Bucket" for s in slow.path)
    assert slow.total > slow.lower_bound + 10 or any(s.type.startswith(OFF_PATH) for s in slow.path)


def test_a_dependency_cycle_is_reported(dev: Recording):
    plan = to_json(dev)
    cluster = next(r for r in plan["resources"] if r["type"] == "aws:eks/cluster:Cluster")
    group = next(r for r in plan["resources"] if r["type"] == "aws:eks/nodeGroup:NodeGroup")
    cluster["dependencies"].append(group["urn"])
    with pytest.raises(ValueError, match="cycle"):
        estimate(plan)


def test_typical_times_have_defaults_per_cloud():
    assert typical_seconds("aws:eks/cluster:Cluster") == 600
    assert typical_seconds("aws:iam/role:Role") == 5
    assert typical_seconds("kubernetes:core/v1:ConfigMap") == 1
    assert typical_seconds("pulumi:providers:aws") == 0


def test_plan_prints_the_timing(dev: Recording):
    text = estimate(to_json(dev)).render()
    assert "critical path: network-vpc" in text and "eks-cluster (600s)" in text
    assert "lower bound" in text
