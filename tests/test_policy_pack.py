"""The CrossGuard pack (policy/) judged on the real plans, and on broken copies of them.

No Pulumi CLI here: each policy's ``validate`` gets the arguments pulumi_policy's analyzer servicer would
build, made from the mock engine's recordings by ``policy/adapters.py`` (wire-form props behind
pulumi_policy's unknown-checking proxies, options with ``protect``, stack resources linked by URN).
The servicer itself (``_PolicyAnalyzerServicer``, private in pulumi_policy 1.21.0) is also driven with
real protobuf requests, as the engine sends them, to check the adapter's shape against it.
``policy/__main__.py`` is never imported: ``PolicyPack(...)`` starts a gRPC server and blocks, so it
runs only with ``PolicyPack`` replaced by a mock.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import gc
import importlib.metadata
import runpy
import sys
from collections.abc import Callable, Mapping
from unittest import mock

import pytest
import yaml

try:
    import pulumi_policy
except ImportError as error:  # pragma: no cover - an environment problem, reported plainly
    raise ImportError("pulumi-policy is not installed in this environment: "
                      "`.venv/bin/pip install --no-deps pulumi-policy==1.21.0` (see policy/README.md)"
                      ) from error

from google.protobuf import struct_pb2
from pulumi.runtime import proto
from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ResourceValidationPolicy,
    StackValidationPolicy,
)
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from policy import adapters, rules
from stacks.mock_engine import Recording, RecordedResource
from stacks.plan import ROOT
from tests.image_lock_helpers import full_lock, plan_with_lock

POLICY_DIR = ROOT / "policy"
PACK_NAME = "tfserving-platform-policies"
EXPECTED_POLICIES = {
    "gpu-workloads-consistent": ResourceValidationPolicy,
    "no-latest-image-tags": ResourceValidationPolicy,
    "resources-requests-and-limits": ResourceValidationPolicy,
    "serving-namespace-default-deny": StackValidationPolicy,
    "buckets-private-and-encrypted": StackValidationPolicy,
    "prod-protects-data": StackValidationPolicy,
    "prod-images-pinned-by-digest": ResourceValidationPolicy,
}
ADVISORY = {"prod-images-pinned-by-digest"}
"""Warnings (EnforcementLevel.ADVISORY); the pack's MANDATORY applies to every other policy."""
POLICY = {p.name: p for p in rules.POLICIES}

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"  # the model cache's prep (components/serving/model_cache.py)
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
NAMESPACE = "kubernetes:core/v1:Namespace"
S3_BUCKET = "aws:s3/bucket:Bucket"
PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
GCS_BUCKET = "gcp:storage/bucket:Bucket"
EKS = "aws:eks/cluster:Cluster"
GKE = "gcp:container/cluster:Cluster"
GPU_DEPLOYMENT = "tfserving-default-deployment"
CPU_DEPLOYMENT = "tfserving-cpu-deployment"


@pytest.fixture(autouse=True)
def no_stack_environment(monkeypatch):
    """The pack reads PULUMI_CONFIG / PULUMI_STACK (set by the CLI): none unless a test sets them."""
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_STACK", raising=False)


@pytest.fixture(params=["dev", "prod", "gke"])
def recording(request) -> Recording:
    return request.getfixturevalue(request.param)


class Violations(list):
    """A ``report_violation`` that keeps ``(message, urn)``."""

    def __call__(self, message: str, urn: str | None = None) -> None:
        self.append((message, urn))

    @property
    def messages(self) -> str:
        return "\n".join(m for m, _ in self)


def copied(recording: Recording) -> list[RecordedResource]:
    """The recording's resources, deep-copied so a test may break them."""
    return [dataclasses.replace(r, inputs=copy.deepcopy(r.inputs), dependencies=list(r.dependencies))
            for r in recording.resources]


def find(resources: list[RecordedResource], type_: str, name: str) -> RecordedResource:
    matches = [r for r in resources if r.type == type_ and r.name == name]
    assert len(matches) == 1, f"{len(matches)} {type_} named {name}"
    return matches[0]


def without(resources: list[RecordedResource], type_: str, name: str) -> list[RecordedResource]:
    target = find(resources, type_, name)
    return [r for r in resources if r is not target]


def validate_resource(policy_name: str, resource: RecordedResource,
                      resources: list[RecordedResource] = ()) -> Violations:
    report = Violations()
    assert POLICY[policy_name].validate(adapters.resource_args(resource, resources), report) is None
    return report


def validate_stack(policy_name: str, resources: list[RecordedResource]) -> Violations:
    report = Violations()
    assert POLICY[policy_name].validate(adapters.stack_args(resources), report) is None
    return report


def pod_spec(resource: RecordedResource) -> dict:
    return resource.inputs["spec"]["template"]["spec"]


def container(resource: RecordedResource, name: str, field: str = "containers") -> dict:
    matches = [c for c in pod_spec(resource)[field] if c["name"] == name]
    assert len(matches) == 1
    return matches[0]


# --- the real plans pass -------------------------------------------------------------------------

def test_the_pack_holds_the_seven_policies():
    assert {p.name: type(p) for p in rules.POLICIES} == EXPECTED_POLICIES
    assert len(rules.POLICIES) == len(EXPECTED_POLICIES)
    assert {p.name: p.enforcement_level for p in rules.POLICIES} == {
        name: EnforcementLevel.ADVISORY if name in ADVISORY else None for name in EXPECTED_POLICIES}


def test_every_mandatory_policy_passes_on_the_real_plans(recording):
    """The advisory one depends on images.lock.json: see the prod-images-pinned-by-digest tests."""
    resources = recording.resources
    failures = {}
    for policy in rules.POLICIES:
        if policy.name in ADVISORY:
            continue
        report = Violations()
        if isinstance(policy, ResourceValidationPolicy):
            for resource in resources:
                policy.validate(adapters.resource_args(resource, resources), report)
        else:
            policy.validate(adapters.stack_args(resources), report)
        if report:
            failures[policy.name] = report.messages
    assert not failures, f"{recording.stack}: {failures}"
    # ...and they had something to judge.
    assert [r for r in resources if r.type == DEPLOYMENT]
    assert [r for r in resources if r.type in (S3_BUCKET, GCS_BUCKET)]
    assert [r for r in resources if r.type in (EKS, GKE)]


def test_the_gpu_policy_sees_gpu_and_cpu_servers(dev):
    """Both sides of the rule are exercised by the dev plan: a GPU server and a CPU one."""
    servers = [r for r in dev.resources if r.type == DEPLOYMENT
               and any(c["name"] == "tfserving" for c in r.inputs["spec"]["template"]["spec"]["containers"])]
    images = {r.name: container(r, "tfserving")["image"] for r in servers}
    assert images[GPU_DEPLOYMENT].endswith("-gpu") and not images[CPU_DEPLOYMENT].endswith("-gpu")


def test_prod_data_is_protected_in_the_recording(prod):
    assert all(r.protect for r in prod.resources if r.type in (EKS, S3_BUCKET))


# --- 1. gpu-workloads-consistent ----------------------------------------------------------------

@pytest.mark.parametrize("plan", ["dev", "gke"])
def test_gpu_pod_without_the_toleration_is_a_violation(request, plan):
    resources = copied(request.getfixturevalue(plan))
    deployment = find(resources, DEPLOYMENT, GPU_DEPLOYMENT)
    del pod_spec(deployment)["tolerations"]
    report = validate_resource("gpu-workloads-consistent", deployment)
    assert len(report) == 1
    assert GPU_DEPLOYMENT in report.messages and "serving/tfserving-default" in report.messages
    assert "does not tolerate" in report.messages and "'tfserving'" in report.messages


@pytest.mark.parametrize("toleration, tolerated", [
    ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
    ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}, True),  # GKE
    ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}, True),  # EKS
    ({"key": "nvidia.com/gpu", "value": "true"}, True),  # operator defaults to Equal, empty effect = all
    ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
    ({"operator": "Exists"}, True),  # tolerates every taint
    ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
    ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "PreferNoSchedule"}, False),
    ({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}, False),
    ({"operator": "Equal", "value": "true", "effect": "NoSchedule"}, False),
])
def test_gpu_toleration_forms(dev, toleration, tolerated):
    deployment = find(copied(dev), DEPLOYMENT, GPU_DEPLOYMENT)
    pod_spec(deployment)["tolerations"] = [toleration]
    report = validate_resource("gpu-workloads-consistent", deployment)
    assert (not report) is tolerated, report.messages


def test_cpu_image_with_a_gpu_request_is_a_violation(dev):
    deployment = find(copied(dev), DEPLOYMENT, GPU_DEPLOYMENT)
    container(deployment, "tfserving")["image"] = "docker.io/tensorflow/serving:2.18.0"
    report = validate_resource("gpu-workloads-consistent", deployment)
    assert len(report) == 1
    assert GPU_DEPLOYMENT in report.messages and "CPU build" in report.messages
    assert "tensorflow/serving:2.18.0" in report.messages


def test_gpu_image_without_a_gpu_request_is_a_violation(dev):
    deployment = find(copied(dev), DEPLOYMENT, CPU_DEPLOYMENT)
    container(deployment, "tfserving")["image"] = "docker.io/tensorflow/serving:2.18.0-gpu"
    report = validate_resource("gpu-workloads-consistent", deployment)
    assert len(report) == 1
    assert CPU_DEPLOYMENT in report.messages and "requests no nvidia.com/gpu" in report.messages


def test_a_gpu_image_that_only_sleeps_needs_no_gpu_but_one_running_the_server_does(dev):
    """The image pre-pull (components/serving/image_prepull.py) holds the -gpu image without a GPU: it never
    starts the server. The same container is a violation once its command (or no command: the image's
    entrypoint) runs tensorflow_model_server."""
    daemon_set = find(copied(dev), DAEMONSET, "tfserving-default-prepull-daemonset")
    (held,) = [c for c in daemon_set.inputs["spec"]["template"]["spec"]["containers"] if "-gpu" in c["image"]]
    assert not validate_resource("gpu-workloads-consistent", daemon_set)
    for command in (["/bin/sh", "-c", "exec tensorflow_model_server --port=8500"], None,
                    ["/usr/bin/tf_serving_entrypoint.sh"]):
        if command is None:
            held.pop("command")
        else:
            held["command"] = command
        report = validate_resource("gpu-workloads-consistent", daemon_set)
        assert len(report) == 1 and "requests no nvidia.com/gpu" in report.messages, command
    held["command"], held["args"] = ["/bin/sh", "-c"], ["tensorflow_model_server --port=8500"]
    assert len(validate_resource("gpu-workloads-consistent", daemon_set)) == 1


@pytest.mark.parametrize("requests, limits", [("1", "2"), (None, "1"), ("1", None)])
def test_gpu_requests_must_equal_limits(dev, requests, limits):
    deployment = find(copied(dev), DEPLOYMENT, GPU_DEPLOYMENT)
    resources = container(deployment, "tfserving")["resources"]
    for section, value in (("requests", requests), ("limits", limits)):
        resources[section].pop("nvidia.com/gpu")
        if value is not None:
            resources[section]["nvidia.com/gpu"] = value
    report = validate_resource("gpu-workloads-consistent", deployment)
    assert len(report) == 1
    assert GPU_DEPLOYMENT in report.messages and "equal to limits" in report.messages


def test_gpu_quantities_compare_as_numbers(dev):
    """``1`` (a number, a float on the wire) and ``"1"`` are the same quantity."""
    deployment = find(copied(dev), DEPLOYMENT, GPU_DEPLOYMENT)
    container(deployment, "tfserving")["resources"]["limits"]["nvidia.com/gpu"] = 1
    assert not validate_resource("gpu-workloads-consistent", deployment)


@pytest.mark.parametrize("image, ok", [
    ("docker.io/tensorflow/serving:2.18.0-gpu@sha256:" + "a" * 64, True),
    ("registry.example.com:5000/mirror/tensorflow/serving:2.18.0-gpu", True),
    ("docker.io/tensorflow/serving@sha256:" + "a" * 64, False),  # flavour not visible
    ("registry.example.com:5000/mirror/tensorflow/serving:2.18.0", False),
    ("nvcr.io/nvidia/tritonserver:24.08-py3", True),  # not TF Serving: the image is not judged
])
def test_gpu_image_flavour_of_mirrors_and_digests(dev, image, ok):
    deployment = find(copied(dev), DEPLOYMENT, GPU_DEPLOYMENT)
    container(deployment, "tfserving")["image"] = image
    report = validate_resource("gpu-workloads-consistent", deployment)
    assert (not report) is ok, report.messages


@pytest.mark.parametrize("type_, wrap", [
    ("kubernetes:apps/v1:StatefulSet", lambda spec: {"spec": {"template": {"spec": spec}}}),
    ("kubernetes:apps/v1:DaemonSet", lambda spec: {"spec": {"template": {"spec": spec}}}),
    ("kubernetes:batch/v1:Job", lambda spec: {"spec": {"template": {"spec": spec}}}),
    ("kubernetes:batch/v1:CronJob",
     lambda spec: {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
    ("kubernetes:core/v1:Pod", lambda spec: {"spec": spec}),
])
def test_gpu_policy_covers_every_workload_kind(dev, type_, wrap):
    deployment = find(copied(dev), DEPLOYMENT, GPU_DEPLOYMENT)
    spec = pod_spec(deployment)
    workload = dataclasses.replace(deployment, type=type_, name="gpu-workload",
                                   inputs={"metadata": {"name": "w", "namespace": "serving"}, **wrap(spec)})
    assert not validate_resource("gpu-workloads-consistent", workload)
    del spec["tolerations"]
    report = validate_resource("gpu-workloads-consistent", workload)
    assert len(report) == 1 and "gpu-workload" in report.messages
    assert report.messages.startswith(type_.rsplit(":", 1)[-1])


# --- 2. no-latest-image-tags --------------------------------------------------------------------

@pytest.mark.parametrize("field, name, image, expected", [
    ("containers", "tfserving", "docker.io/tensorflow/serving:latest", "uses the tag 'latest'"),
    ("initContainers", "model-sync-init", "docker.io/amazon/aws-cli", "neither tag nor digest"),
    ("initContainers", "model-sync", "registry.example.com:5000/aws-cli", "neither tag nor digest"),
    ("containers", "tfserving", "docker.io/tensorflow/serving:latest@sha256:" + "b" * 64, "'latest'"),
    ("containers", "tfserving", "docker.io/tensorflow/serving:latest-devel", "'latest-devel'"),
])
def test_unpinned_images_are_violations(dev, field, name, image, expected):
    deployment = find(copied(dev), DEPLOYMENT, CPU_DEPLOYMENT)
    container(deployment, name, field)["image"] = image
    report = validate_resource("no-latest-image-tags", deployment)
    assert len(report) == 1
    assert CPU_DEPLOYMENT in report.messages and f"'{name}'" in report.messages
    assert expected in report.messages


def test_an_image_pinned_by_digest_alone_passes(dev):
    deployment = find(copied(dev), DEPLOYMENT, CPU_DEPLOYMENT)
    container(deployment, "tfserving")["image"] = "docker.io/tensorflow/serving@sha256:" + "c" * 64
    assert not validate_resource("no-latest-image-tags", deployment)


def test_a_container_without_image_is_a_violation(gke):
    deployment = find(copied(gke), DEPLOYMENT, GPU_DEPLOYMENT)
    del container(deployment, "model-sync", "initContainers")["image"]
    report = validate_resource("no-latest-image-tags", deployment)
    assert len(report) == 1 and "has no image" in report.messages and GPU_DEPLOYMENT in report.messages


# --- 3. resources-requests-and-limits -----------------------------------------------------------

def test_a_container_without_limits_is_a_violation(dev):
    deployment = find(copied(dev), DEPLOYMENT, CPU_DEPLOYMENT)
    del container(deployment, "tfserving")["resources"]["limits"]
    report = validate_resource("resources-requests-and-limits", deployment)
    assert len(report) == 1
    assert CPU_DEPLOYMENT in report.messages and "container 'tfserving'" in report.messages
    assert "limits.cpu, limits.memory" in report.messages


def test_an_init_container_without_a_memory_request_is_a_violation(prod):
    deployment = find(copied(prod), DEPLOYMENT, GPU_DEPLOYMENT)
    del container(deployment, "model-sync", "initContainers")["resources"]["requests"]["memory"]
    report = validate_resource("resources-requests-and-limits", deployment)
    assert len(report) == 1
    assert "init container 'model-sync'" in report.messages and "requests.memory" in report.messages
    assert "requests.cpu" not in report.messages


def test_a_container_without_resources_lists_all_four(gke):
    deployment = find(copied(gke), DEPLOYMENT, GPU_DEPLOYMENT)
    del container(deployment, "model-sync-init", "initContainers")["resources"]
    report = validate_resource("resources-requests-and-limits", deployment)
    assert "requests.cpu, requests.memory, limits.cpu, limits.memory" in report.messages


def test_non_workloads_are_not_judged(dev):
    namespace = find(copied(dev), NAMESPACE, "tfserving-ns")
    for name in ("gpu-workloads-consistent", "no-latest-image-tags", "resources-requests-and-limits"):
        assert not validate_resource(name, namespace)


# --- 4. serving-namespace-default-deny ----------------------------------------------------------

@pytest.mark.parametrize("plan", ["dev", "prod", "gke"])
def test_removing_the_default_deny_is_a_violation(request, plan):
    resources = without(copied(request.getfixturevalue(plan)), NETWORK_POLICY, "tfserving-default-deny")
    report = validate_stack("serving-namespace-default-deny", resources)
    namespace = find(resources, NAMESPACE, "tfserving-ns")
    assert len(report) == 1 and report[0][1] == namespace.urn
    assert "Namespace serving (Pulumi resource tfserving-ns)" in report.messages
    assert GPU_DEPLOYMENT in report.messages


@pytest.mark.parametrize("change", [
    lambda spec: spec.update(podSelector={"matchLabels": {"app": "x"}}),
    lambda spec: spec.update(policyTypes=["Ingress"]),
    lambda spec: spec.update(ingress=[{}]),  # allows every ingress
    lambda spec: spec.update(egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
])
def test_a_network_policy_that_is_not_default_deny_does_not_count(dev, change):
    resources = copied(dev)
    change(find(resources, NETWORK_POLICY, "tfserving-default-deny").inputs["spec"])
    report = validate_stack("serving-namespace-default-deny", resources)
    assert len(report) == 1 and "serving" in report.messages


def test_default_deny_in_another_namespace_does_not_count(dev):
    resources = copied(dev)
    find(resources, NETWORK_POLICY, "tfserving-default-deny").inputs["metadata"]["namespace"] = "monitoring"
    assert len(validate_stack("serving-namespace-default-deny", resources)) == 1


def test_only_restricted_namespaces_with_workloads_need_it(dev):
    resources = without(copied(dev), NETWORK_POLICY, "tfserving-default-deny")
    labels = find(resources, NAMESPACE, "tfserving-ns").inputs["metadata"]["labels"]
    labels["pod-security.kubernetes.io/enforce"] = "baseline"
    assert not validate_stack("serving-namespace-default-deny", resources)
    labels["pod-security.kubernetes.io/enforce"] = "restricted"
    empty = [r for r in resources if r.type not in (DEPLOYMENT, DAEMONSET)]
    assert not validate_stack("serving-namespace-default-deny", empty)


# --- 5. buckets-private-and-encrypted -----------------------------------------------------------

@pytest.mark.parametrize("flag", ["blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                  "restrictPublicBuckets"])
def test_a_public_s3_bucket_is_a_violation(prod, flag):
    resources = copied(prod)
    find(resources, PAB, "models-public-access").inputs[flag] = False
    report = validate_stack("buckets-private-and-encrypted", resources)
    assert len(report) == 1 and report[0][1] == find(resources, S3_BUCKET, "models").urn
    assert "S3 bucket models" in report.messages and "BucketPublicAccessBlock" in report.messages


def test_an_s3_bucket_without_a_public_access_block_is_a_violation(dev):
    resources = without(copied(dev), PAB, "models-public-access")
    report = validate_stack("buckets-private-and-encrypted", resources)
    assert len(report) == 1 and "S3 bucket models" in report.messages


@pytest.mark.parametrize("remove", [True, False])
def test_an_unencrypted_s3_bucket_is_a_violation(dev, remove):
    resources = copied(dev)
    if remove:
        resources = without(resources, SSE, "models-sse")
    else:
        del find(resources, SSE, "models-sse").inputs["rules"][0]["applyServerSideEncryptionByDefault"]
    report = validate_stack("buckets-private-and-encrypted", resources)
    assert len(report) == 1 and report[0][1] == find(resources, S3_BUCKET, "models").urn
    assert "S3 bucket models" in report.messages
    assert "BucketServerSideEncryptionConfiguration" in report.messages


def test_each_bucket_needs_its_own_block_and_encryption(dev):
    """A second bucket is not covered by the first one's resources (matched by the bucket reference)."""
    resources = copied(dev)
    models = find(resources, S3_BUCKET, "models")
    logs = dataclasses.replace(models, name="logs", urn=models.urn.replace("::models", "::logs"),
                               inputs={"tags": {}, "forceDestroy": False})
    report = validate_stack("buckets-private-and-encrypted", [*resources, logs])
    assert {urn for _, urn in report} == {logs.urn} and len(report) == 2
    assert all("S3 bucket logs" in message for message, _ in report)


def test_bucket_references_resolve_like_the_engine_sends_them():
    """property_dependencies first (what the engine sends), then the id/name value, then one dependency."""
    def resource(type_, name, props, deps=(), property_deps=None):
        return PolicyResource(type_, props, f"urn:pulumi:dev::p::{type_}::{name}", name, None, None, None,
                              list(deps), property_deps or {})

    a = resource(S3_BUCKET, "a", {"id": "a-123", "bucket": "a-123"})
    b = resource(S3_BUCKET, "b", {"id": "b-456", "bucket": "b-456"})
    buckets = [a, b]
    assert rules.buckets_referenced(resource(PAB, "p", {"bucket": "x"}, property_deps={"bucket": [b]}),
                                    buckets) == {b.urn}
    assert rules.buckets_referenced(resource(PAB, "p", {"bucket": "a-123"}, deps=[a, b]), buckets) == {a.urn}
    assert rules.buckets_referenced(resource(PAB, "p", {"bucket": "?"}, deps=[b]), buckets) == {b.urn}
    assert rules.buckets_referenced(resource(PAB, "p", {"bucket": "?"}, deps=[a, b]), buckets) == set()


@pytest.mark.parametrize("prop, value, expected", [
    ("uniformBucketLevelAccess", False, "uniformBucketLevelAccess is not true"),
    ("publicAccessPrevention", "inherited", "publicAccessPrevention is 'inherited'"),
    ("publicAccessPrevention", None, "publicAccessPrevention is None"),
])
def test_a_gcs_bucket_open_to_acls_or_the_public_is_a_violation(gke, prop, value, expected):
    resources = copied(gke)
    bucket = find(resources, GCS_BUCKET, "models")
    if value is None:
        del bucket.inputs[prop]
    else:
        bucket.inputs[prop] = value
    report = validate_stack("buckets-private-and-encrypted", resources)
    assert len(report) == 1 and report[0][1] == bucket.urn
    assert "GCS bucket models" in report.messages and expected in report.messages


# --- 6. prod-protects-data ----------------------------------------------------------------------

@pytest.mark.parametrize("type_, name", [(S3_BUCKET, "models"), (EKS, "eks-cluster")])
def test_prod_without_protect_is_a_violation(prod, type_, name):
    resources = copied(prod)
    target = find(resources, type_, name)
    target.protect = False
    report = validate_stack("prod-protects-data", resources)
    assert len(report) == 1 and report[0][1] == target.urn
    assert name in report.messages and "stack prod" in report.messages and "protect=True" in report.messages


def test_the_protect_config_applies_outside_prod(dev, gke, monkeypatch):
    """``tfserving-platform:protect: true`` (PULUMI_CONFIG, as the CLI passes it) demands it on any stack."""
    monkeypatch.setenv("PULUMI_CONFIG", '{"tfserving-platform:protect": "true", "aws:region": "us-east-1"}')
    dev_report = validate_stack("prod-protects-data", dev.resources)
    assert {m.split(" (")[0] for m, _ in dev_report} == {"Cluster eks-cluster", "Bucket models"}
    assert "tfserving-platform:protect is true" in dev_report.messages
    gke_report = validate_stack("prod-protects-data", gke.resources)
    assert {urn for _, urn in gke_report} == {r.urn for r in gke.resources if r.type in (GKE, GCS_BUCKET)}
    monkeypatch.setenv("PULUMI_CONFIG", '{"tfserving-platform:protect": "false"}')
    assert not validate_stack("prod-protects-data", dev.resources)


def test_the_stack_name_comes_from_the_urns(prod, monkeypatch):
    assert rules.stack_name(adapters.policy_resources(prod.resources)) == "prod"
    monkeypatch.setenv("PULUMI_STACK", "prod")
    assert rules.stack_name([]) == "prod"


# --- 7. prod-images-pinned-by-digest (advisory) --------------------------------------------------

@pytest.fixture(scope="module")
def prod_unlocked(tmp_path_factory) -> Recording:
    """prod rendered with an empty image lock: tags alone."""
    return plan_with_lock("prod", {}, tmp_path_factory.mktemp("prod-unlocked"))


@pytest.fixture(scope="module")
def prod_locked(tmp_path_factory) -> Recording:
    """prod rendered with a lock holding every image it renders."""
    return plan_with_lock("prod", full_lock("prod"), tmp_path_factory.mktemp("prod-locked"))


def digest_warnings(resources: list[RecordedResource]) -> Violations:
    report = Violations()
    for resource in resources:
        POLICY["prod-images-pinned-by-digest"].validate(adapters.resource_args(resource, resources), report)
    return report


def containers_of(resources: list[RecordedResource]) -> list[tuple[RecordedResource, dict]]:
    return [(r, c) for r in resources if r.type in (DEPLOYMENT, DAEMONSET)
            for c in [*(pod_spec(r).get("initContainers") or []), *pod_spec(r)["containers"]]]


def as_stack(resources: list[RecordedResource], stack: str) -> list[RecordedResource]:
    """The same resources with URNs of another stack (the policy reads the stack from the URN)."""
    return [dataclasses.replace(r, urn=r.urn.replace("urn:pulumi:prod::", f"urn:pulumi:{stack}::", 1))
            for r in resources]


def test_prod_images_without_digests_are_warnings(prod_unlocked):
    resources = prod_unlocked.resources
    report = digest_warnings(resources)
    unpinned = containers_of(resources)
    assert unpinned and all("@" not in c["image"] for _, c in unpinned)
    # One warning per container, naming the Deployment, the container and its image.
    assert len(report) == len(unpinned)
    for deployment, c in unpinned:
        assert any(deployment.name in m and f"'{c['name']}' image {c['image']} has no digest" in m
                   for m, _ in report), (deployment.name, c["name"])
    assert "stack prod" in report.messages and "images.lock.json" in report.messages


def test_prod_with_a_full_lock_is_silent(prod_locked):
    assert all("@sha256:" in c["image"] for _, c in containers_of(prod_locked.resources))
    assert not digest_warnings(prod_locked.resources)


def test_the_digest_warning_is_for_prod_only(prod_unlocked, monkeypatch):
    dev_like = as_stack(prod_unlocked.resources, "dev")
    assert not digest_warnings(dev_like)
    # ...unless the stack asks for prod's guarantees (tfserving-platform:protect, as the CLI passes it).
    monkeypatch.setenv("PULUMI_CONFIG", '{"tfserving-platform:protect": "true"}')
    report = digest_warnings(dev_like)
    assert len(report) == len(containers_of(dev_like))
    assert "tfserving-platform:protect is true" in report.messages


def test_one_unpinned_container_is_one_warning(prod_locked):
    resources = copied(prod_locked)
    deployment = find(resources, DEPLOYMENT, GPU_DEPLOYMENT)
    sidecar = container(deployment, "model-sync", "initContainers")
    sidecar["image"] = sidecar["image"].split("@")[0]
    report = digest_warnings(resources)
    assert len(report) == 1
    assert GPU_DEPLOYMENT in report.messages and "init container 'model-sync'" in report.messages


def test_the_servicer_reports_digest_warnings_as_advisory(prod_unlocked, prod_locked, servicer):
    deployment = find(prod_unlocked.resources, DEPLOYMENT, GPU_DEPLOYMENT)
    diagnostics = servicer.Analyze(analyze_request(deployment), None).diagnostics
    assert {(d.policyName, d.enforcementLevel) for d in diagnostics} == {
        ("prod-images-pinned-by-digest", proto.ADVISORY)}
    assert len(diagnostics) == len(containers_of([deployment]))
    locked = find(prod_locked.resources, DEPLOYMENT, GPU_DEPLOYMENT)
    assert not servicer.Analyze(analyze_request(locked), None).diagnostics


# --- the adapter --------------------------------------------------------------------------------

def test_the_adapter_gives_engine_shaped_args(dev):
    deployment = find(dev.resources, DEPLOYMENT, GPU_DEPLOYMENT)
    args = adapters.resource_args(deployment, dev.resources)
    assert (args.resource_type, args.name, args.urn) == (DEPLOYMENT, GPU_DEPLOYMENT, deployment.urn)
    assert isinstance(args.props, Mapping) and not isinstance(args.props, dict)  # pulumi_policy's proxy
    # dev's GPU server scales to zero (scaleToZero): created with 0 replicas, an int the adapter makes a float.
    assert args.props["spec"]["replicas"] == 0.0 and isinstance(args.props["spec"]["replicas"], float)
    assert args.opts.protect is False and args.opts.parent == deployment.parent
    assert args.opts.ignore_changes == deployment.ignore_changes
    assert deployment.inputs["spec"]["replicas"] == 0 and isinstance(deployment.inputs["spec"]["replicas"], int)


def test_the_adapter_links_stack_resources_by_urn(prod):
    resources = {r.urn: r for r in adapters.policy_resources(prod.resources)}
    block = next(r for r in resources.values() if r.resource_type == PAB)
    bucket = next(r for r in resources.values() if r.resource_type == S3_BUCKET)
    assert bucket in block.dependencies and block.parent is bucket.parent
    assert block.parent.resource_type == "tfplatform:aws:ModelBucket"
    assert bucket.opts.protect is True


def test_an_unknown_value_stops_a_policy_as_in_a_preview(dev):
    """pulumi_policy turns this into an advisory "can't run policy during preview" diagnostic."""
    deployment = find(copied(dev), DEPLOYMENT, GPU_DEPLOYMENT)
    container(deployment, "tfserving")["image"] = UNKNOWN_STRING_VALUE
    with pytest.raises(UnknownValueError):
        validate_resource("no-latest-image-tags", deployment)


# --- the entry module, never imported -----------------------------------------------------------

def test_the_entry_module_builds_the_pack_from_rules():
    """Read, not run: exactly one PolicyPack(name=..., enforcement_level=MANDATORY, policies=rules)."""
    # The collector is held off while parsing: a finalizer that parses mid-parse breaks CPython 3.11's
    # AST counter (scripts/mutate.py, _parse).
    gc.disable()
    try:
        tree = ast.parse((POLICY_DIR / "__main__.py").read_text())
    finally:
        gc.enable()
    calls = [n for n in ast.walk(tree)
             if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "PolicyPack"]
    assert len(calls) == 1 and not calls[0].args
    kwargs = {k.arg: k.value for k in calls[0].keywords}
    assert set(kwargs) == {"name", "enforcement_level", "policies"}
    assert ast.literal_eval(kwargs["name"]) == PACK_NAME
    assert ast.unparse(kwargs["enforcement_level"]) == "EnforcementLevel.MANDATORY"
    assert ast.unparse(kwargs["policies"]) == "list(rules.POLICIES)"
    imports = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    assert "rules" in imports


@pytest.fixture
def pack_call() -> mock.Mock:
    """Run policy/__main__.py as the CLI does (pack directory first on sys.path) with PolicyPack mocked.

    The real gRPC server is patched to fail, so a missed mock errors instead of blocking.
    """
    saved_rules = sys.modules.pop("rules", None)
    try:
        with mock.patch("pulumi_policy.PolicyPack") as pack, \
                mock.patch("pulumi_policy.policy.grpc.server", side_effect=AssertionError("server started")):
            runpy.run_path(str(POLICY_DIR), run_name="__main__")
        return pack
    finally:
        sys.modules.pop("rules", None)
        if saved_rules is not None:
            sys.modules["rules"] = saved_rules


def test_running_the_entry_module_constructs_the_pack_once(pack_call):
    pack_call.assert_called_once()
    kwargs = pack_call.call_args.kwargs
    assert kwargs["name"] == PACK_NAME and kwargs["enforcement_level"] is EnforcementLevel.MANDATORY
    assert [p.name for p in kwargs["policies"]] == [p.name for p in rules.POLICIES]
    assert [type(p) for p in kwargs["policies"]] == [type(p) for p in rules.POLICIES]


# --- pulumi_policy's own servicer, fed protobuf requests as the engine sends them ----------------

def _struct(value: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _options(r: RecordedResource) -> proto.AnalyzerResourceOptions:
    return proto.AnalyzerResourceOptions(protect=r.protect, ignoreChanges=r.ignore_changes, parent=r.parent)


def analyze_request(r: RecordedResource) -> proto.AnalyzeRequest:
    return proto.AnalyzeRequest(type=r.type, properties=_struct(r.inputs), urn=r.urn, name=r.name,
                                options=_options(r))


def stack_request(resources: list[RecordedResource],
                  property_dependencies: Callable[[RecordedResource], dict] = lambda r: {}
                  ) -> proto.AnalyzeStackRequest:
    return proto.AnalyzeStackRequest(resources=[
        proto.AnalyzerResource(type=r.type, properties=_struct(r.inputs), urn=r.urn, name=r.name,
                               options=_options(r), parent=r.parent, dependencies=r.dependencies,
                               propertyDependencies={k: proto.AnalyzerPropertyDependencies(urns=v)
                                                     for k, v in property_dependencies(r).items()})
        for r in resources])


@pytest.fixture
def servicer(pack_call) -> _PolicyAnalyzerServicer:
    """The analyzer the CLI talks to, built from exactly what __main__.py passes to PolicyPack."""
    kwargs = pack_call.call_args.kwargs
    return _PolicyAnalyzerServicer(kwargs["name"], "0.0.1", kwargs["policies"], kwargs["enforcement_level"])


def test_the_servicer_describes_the_pack(servicer):
    info = servicer.GetAnalyzerInfo(None, None)
    assert info.name == PACK_NAME
    assert {p.name for p in info.policies} == set(EXPECTED_POLICIES)
    assert {p.name: p.enforcementLevel for p in info.policies} == {
        name: proto.ADVISORY if name in ADVISORY else proto.MANDATORY for name in EXPECTED_POLICIES}


def mandatory(diagnostics) -> list:
    """The diagnostics that fail an update (the advisory digest warning depends on the lock's state)."""
    assert all(d.policyName in ADVISORY for d in diagnostics if d.enforcementLevel != proto.MANDATORY)
    return [d for d in diagnostics if d.enforcementLevel == proto.MANDATORY]


def test_the_servicer_passes_the_real_plans_and_catches_a_latest_tag(recording, servicer):
    for resource in recording.resources:
        assert not mandatory(servicer.Analyze(analyze_request(resource), None).diagnostics), resource.urn
    assert not servicer.AnalyzeStack(stack_request(recording.resources), None).diagnostics
    # A TF Serving Deployment (the router's has no tfserving container; registration order is not fixed).
    deployment = next(r for r in copied(recording) if r.type == DEPLOYMENT
                      and any(c["name"] == "tfserving" for c in pod_spec(r)["containers"]))
    server = container(deployment, "tfserving")
    server["image"] = "tensorflow/serving:latest" + ("-gpu" if server["image"].endswith("-gpu") else "")
    diagnostics = mandatory(servicer.Analyze(analyze_request(deployment), None).diagnostics)
    assert [(d.policyName, d.enforcementLevel) for d in diagnostics] == [
        ("no-latest-image-tags", proto.MANDATORY)]
    assert deployment.name in diagnostics[0].message


def test_the_servicer_matches_buckets_by_property_dependencies(dev, servicer):
    """With the engine's propertyDependencies the bucket is found even with an unknown bucket id."""
    resources = copied(dev)
    bucket = find(resources, S3_BUCKET, "models")
    second = dataclasses.replace(bucket, name="logs", urn=bucket.urn.replace("::models", "::logs"))
    for r in resources:
        if r.type in (PAB, SSE):
            r.inputs["bucket"] = UNKNOWN_STRING_VALUE
            r.dependencies.append(second.urn)  # two buckets among the dependencies: ambiguous without them
    by_property = lambda r: {"bucket": [bucket.urn]} if r.type in (PAB, SSE) else {}  # noqa: E731
    diagnostics = servicer.AnalyzeStack(stack_request([*resources, second], by_property), None).diagnostics
    assert {(d.policyName, d.urn) for d in diagnostics} == {("buckets-private-and-encrypted", second.urn)}
    find(resources, PAB, "models-public-access").inputs["blockPublicAcls"] = False
    diagnostics = servicer.AnalyzeStack(stack_request([*resources, second], by_property), None).diagnostics
    assert {d.urn for d in diagnostics} == {bucket.urn, second.urn}


def test_the_servicer_reports_unknowns_as_advisory(dev, servicer):
    deployment = find(copied(dev), DEPLOYMENT, GPU_DEPLOYMENT)
    container(deployment, "tfserving")["image"] = UNKNOWN_STRING_VALUE
    diagnostics = servicer.Analyze(analyze_request(deployment), None).diagnostics
    assert diagnostics and all(d.enforcementLevel == proto.ADVISORY and "during preview" in d.message
                               for d in diagnostics)


# --- the pack's own files -----------------------------------------------------------------------

def test_pack_project_and_requirements():
    project = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    pins = dict(line.split("==") for line in (POLICY_DIR / "requirements.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    repo_pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                     if "==" in line and not line.startswith("#"))
    assert pins == {"pulumi": repo_pins["pulumi"],
                    "pulumi-policy": importlib.metadata.version("pulumi-policy")}
    assert pins["pulumi-policy"] == "1.21.0"
    assert pulumi_policy.__name__ == "pulumi_policy"
