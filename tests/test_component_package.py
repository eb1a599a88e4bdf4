"""The ``tfplatform`` component package (provider/): the schema Pulumi's Python component provider host
infers from the wrappers, the wrappers built through the host's own Construct mapping on the mock engine, the
schema served over gRPC by the real plugin entry point, and the YAML example checked against the schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from google.protobuf import empty_pb2, text_format
from pulumi.provider.experimental.analyzer import Analyzer
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.provider.server import ComponentInitError
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc
from pulumi.runtime.settings import set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await
from tensorflow_serving.config import model_server_config_pb2

import provider
from stacks.mock_engine import ACCOUNT_ID, DEPLOY_ROLE, SECRET, PlanMocks, Recording, RecordingMonitor, plain

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "provider" / "examples" / "yaml-tfserving" / "Pulumi.yaml"
NAMES = ["EksPlatform", "GkePlatform", "ModelBucket", "ModelReader", "GcsModelBucket", "GcsModelReader",
         "GcsModelPublisher", "Keda", "TfServing", "ServingMonitoring"]
TOKENS = {name: f"tfplatform:index:{name}" for name in NAMES}

# What each component must be given (the schema's requiredInputs); everything else has a default.
REQUIRED = {
    "EksPlatform": {"clusterName", "region", "zones", "nodePools"},
    "GkePlatform": {"project", "region", "zones", "clusterName", "nodePools"},
    "ModelBucket": {"region"},
    "ModelReader": {"oidcProviderArn", "oidcIssuerUrl", "namespace", "serviceAccount", "bucketArn",
                    "kmsKeyArn", "region"},
    "GcsModelBucket": {"project", "location"},
    "GcsModelReader": {"project", "bucketName", "workloadPool", "namespace", "serviceAccount"},
    "GcsModelPublisher": {"project", "bucketName"},
    "Keda": set(),
    "TfServing": {"namespace", "server", "models", "modelSourceUri"},
    "ServingMonitoring": {"servingNamespace", "servers", "environment"},
}
# Outputs that exist only sometimes (a canary's endpoints while a model has a canary version).
OPTIONAL_OUTPUTS = {"TfServing": {"canaryGrpcEndpoint", "canaryRestEndpoint"}}
NESTED = {"EksNodePool", "GkeNodePool", "NodeTaint", "ServedModelSpec", "BatchingSpec", "AlertThresholds"}
ENUMS = {"CapacityType", "TaintEffect", "GpuSharing", "ObjectLockMode", "VersionPolicy", "ModelStore",
         "Router"}


@pytest.fixture(scope="module")
def host() -> ComponentProvider:
    """The provider exactly as ``component_provider_host`` builds it (host.py: ComponentProvider(...))."""
    return ComponentProvider(provider.COMPONENTS, "tfplatform", None, provider.VERSION)


@pytest.fixture(scope="module")
def schema(host: ComponentProvider) -> dict:
    return json.loads(host.schema)


# ---------------------------------------------------------------------------------------------- schema


def test_every_component_is_in_the_schema_under_its_token(schema):
    assert set(schema["resources"]) == set(TOKENS.values())
    assert schema["name"] == "tfplatform" and schema["version"] == provider.VERSION
    for token, resource in schema["resources"].items():
        assert resource["isComponent"] is True, token
        assert resource["description"].strip(), f"{token} has no description"


def _properties(schema: dict):
    """Every (where, name, property) of the schema: component inputs and outputs, and nested types' fields."""
    for token, resource in schema["resources"].items():
        for name, prop in resource["inputProperties"].items():
            yield f"{token} input", name, prop
        for name, prop in resource["properties"].items():
            yield f"{token} output", name, prop
    for token, typ in schema["types"].items():
        for name, prop in typ.get("properties", {}).items():
            yield token, name, prop


def _typed(prop: dict) -> bool:
    """A property with a concrete type: a primitive, a reference to one of our types, or an array/map whose
    items are typed (never ``pulumi.json#/Any``, which the analyzer emits for ``typing.Any``)."""
    if "$ref" in prop:
        return prop["$ref"].startswith("#/types/tfplatform:index:")
    if prop.get("type") == "array":
        return _typed(prop["items"])
    if prop.get("type") == "object":
        return "additionalProperties" in prop and _typed(prop["additionalProperties"])
    return prop.get("type") in {"string", "integer", "number", "boolean"}


def test_every_input_and_output_is_typed_and_documented(schema):
    seen = 0
    for where, name, prop in _properties(schema):
        seen += 1
        assert _typed(prop), f"{where} {name} is untyped: {prop}"
        assert (prop.get("description") or "").strip(), f"{where} {name} has no description"
    assert seen > 100  # all six components' properties and the nested types' fields were walked
    for token, typ in schema["types"].items():
        assert typ["description"].strip(), token
        for member in typ.get("enum", []):
            assert member["description"].strip(), f"{token}.{member['name']}"


def test_required_and_optional_inputs_are_as_intended(schema):
    for name, required in REQUIRED.items():
        resource = schema["resources"][TOKENS[name]]
        assert set(resource["requiredInputs"]) == required, name
        outputs = set(resource["properties"])
        assert set(resource["required"]) == outputs - OPTIONAL_OUTPUTS.get(name, set()), name


def test_nested_specs_are_documented_types_and_maps_stay_maps(schema):
    types = {token.split(":")[-1]: typ for token, typ in schema["types"].items()}
    assert NESTED | ENUMS <= set(types)
    assert {name for name, typ in types.items() if "enum" in typ} == ENUMS
    eks = schema["resources"][TOKENS["EksPlatform"]]["inputProperties"]
    # Pools keyed by stable name stay a map (a list would renumber pools when one is removed).
    assert eks["nodePools"]["type"] == "object"
    assert eks["nodePools"]["additionalProperties"]["$ref"] == "#/types/tfplatform:index:EksNodePool"
    gke = schema["resources"][TOKENS["GkePlatform"]]["inputProperties"]
    assert gke["nodePools"]["additionalProperties"]["$ref"] == "#/types/tfplatform:index:GkeNodePool"
    serving = schema["resources"][TOKENS["TfServing"]]["inputProperties"]
    assert serving["models"]["items"]["$ref"] == "#/types/tfplatform:index:ServedModelSpec"
    assert serving["router"]["$ref"] == "#/types/tfplatform:index:Router"
    assert types["EksNodePool"]["required"] == ["instanceTypes"]
    assert types["ServedModelSpec"]["required"] == ["name"]
    assert types["ServedModelSpec"]["properties"]["labels"]["additionalProperties"]["type"] == "integer"
    assert types["TaintEffect"]["enum"][0]["value"] == "NO_SCHEDULE"
    # Names and loop keys must be known when the component is built: plain in every SDK. Values that only
    # flow into resources stay inputs (a YAML program passes `${bucket.modelsUri}`).
    assert eks["clusterName"].get("plain") is True and eks["nodePools"].get("plain") is True
    assert "plain" not in serving["modelSourceUri"] and "plain" not in serving["kubeconfig"]


def test_every_reference_resolves(schema):
    refs = set()

    def collect(prop: dict) -> None:
        if "$ref" in prop:
            refs.add(prop["$ref"].removeprefix("#/types/"))
        for key in ("items", "additionalProperties"):
            if key in prop:
                collect(prop[key])

    for _, _, prop in _properties(schema):
        collect(prop)
    assert refs and refs <= set(schema["types"])
    assert {t.split(":")[-1] for t in schema["types"]} == {r.split(":")[-1] for r in refs}  # nothing unused


def test_the_analyzer_needs_evaluated_annotations_and_marks_any_untyped():
    """Why provider/ never uses postponed annotations (this test module does): the analyzer reads
    ``inspect.get_annotations`` unevaluated, so they reach it as strings and fail. And a bare ``typing.Any``
    would pass the analyzer as an untyped ``pulumi.json#/Any`` property."""
    from typing import Any as AnyType
    from typing import TypedDict

    class PostponedArgs(TypedDict):
        size: int
        """A size."""

    class Postponed(pulumi.ComponentResource):
        def __init__(self, name: str, args: PostponedArgs, opts=None):
            super().__init__("tfplatform:index:Postponed", name, None, opts)

    with pytest.raises(AttributeError):
        Analyzer("tfplatform").analyze([Postponed])
    for module in (ROOT / "provider").glob("*.py"):
        assert not re.search(r"^from __future__ import", module.read_text(), re.MULTILINE), module

    loose_args = TypedDict("LooseArgs", {"anything": AnyType})

    class Loose(pulumi.ComponentResource):
        def __init__(self, name, args, opts=None):
            super().__init__("tfplatform:index:Loose", name, None, opts)

    Loose.__init__.__annotations__ = {"args": loose_args}
    prop = Analyzer("tfplatform").analyze([Loose])["component_definitions"]["Loose"].inputs["anything"]
    assert prop.ref == "pulumi.json#/Any" and prop.type is None and not _typed({"$ref": prop.ref})


# --------------------------------------------------------------------------------- built on the mock engine


def record(build: Callable[[], Any]) -> tuple[Recording, Any]:
    """Run ``build`` as a program on the mock engine (as stacks/mock_engine.run_program does)."""
    recording = Recording(stack="test", project="tfplatform-test")
    set_root_resource(None)
    pulumi.runtime.set_mocks(PlanMocks(), project=recording.project, stack=recording.stack, preview=False,
                             monitor=RecordingMonitor(recording))
    pulumi.runtime.set_all_config({}, [])
    runtime_settings.SETTINGS.outputs = set()
    result: dict[str, Any] = {}
    _sync_await(run_pulumi_func(lambda: result.update(value=build())))
    return recording, result.get("value")


def resolve(value: Any) -> Any:
    output = pulumi.Output.from_input(value)
    return SECRET if _sync_await(output.is_secret()) else plain(_sync_await(output.future()))


def construct(host: ComponentProvider, name: str, component: str, inputs: dict,
              opts: pulumi.ResourceOptions | None = None, before: Callable[[], Any] | None = None
              ) -> tuple[Recording, dict]:
    """Build ``component`` through the host's Construct path (input mapping by schema name, integer
    conversion, enum members) with ``inputs`` in wire form: camelCase keys, every number a float."""
    def build():
        options = opts
        if before is not None:
            options = pulumi.ResourceOptions(depends_on=[before()])
        result = host.construct(name, TOKENS[component], inputs, options)
        return result.state

    recording, state = record(build)
    return recording, {key: resolve(value) for key, value in state.items()}


def of(rec: Recording, token: str) -> list:
    return rec.of_type(token)


def the_wrapper(rec: Recording, component: str, name: str):
    (wrapper,) = [r for r in rec.resources if r.type == TOKENS[component] and r.name == name]
    return wrapper


def test_eks_platform_builds_network_cluster_and_pools(host):
    rec, state = construct(host, "demo", "EksPlatform", {
        "clusterName": "demo", "region": "us-east-1", "zones": ["us-east-1a", "us-east-1b"],
        "nodePools": {
            "system": {"instanceTypes": ["m6i.large"]},
            "gpu": {"instanceTypes": ["g6.xlarge"], "gpusPerNode": 1.0, "minSize": 0.0, "maxSize": 4.0,
                    "capacityType": "SPOT",
                    "taints": [{"key": "dedicated", "value": "serving", "effect": "NO_SCHEDULE"}]}}})
    wrapper = the_wrapper(rec, "EksPlatform", "demo")
    vpc = rec.one("tfplatform:aws:Vpc", "demo-network")
    cluster_component = rec.one("tfplatform:aws:EksCluster", "demo-eks")
    assert vpc.parent == wrapper.urn and cluster_component.parent == wrapper.urn
    cluster = rec.one("aws:eks/cluster:Cluster", "demo-eks-cluster").inputs
    assert cluster["name"] == "demo" and cluster["encryptionConfig"]["resources"] == ["secrets"]
    assert cluster["accessConfig"]["authenticationMode"] == "API"
    # The component's own default kept (nothing restated in the wrapper): the VPC CIDR and flow logs.
    assert rec.one("aws:ec2/vpc:Vpc", "demo-network-vpc").inputs["cidrBlock"] == "10.0.0.0/16"
    assert of(rec, "aws:ec2/flowLog:FlowLog")
    groups = {g.name: g.inputs for g in of(rec, "aws:eks/nodeGroup:NodeGroup")}
    gpu, system = groups["demo-eks-gpu"], groups["demo-eks-system"]
    assert gpu["amiType"] == "AL2023_x86_64_NVIDIA" and system["amiType"] == "AL2023_x86_64_STANDARD"
    assert gpu["capacityType"] == "SPOT"
    assert gpu["scalingConfig"]["minSize"] == 0 and gpu["scalingConfig"]["maxSize"] == 4
    assert {"key": "dedicated", "value": "serving", "effect": "NO_SCHEDULE"} in gpu["taints"]
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"} in gpu["taints"]
    # The identity running `pulumi up` (the mock's assumed role) gets the access entry.
    entries = [e.inputs["principalArn"] for e in of(rec, "aws:eks/accessEntry:AccessEntry")]
    assert entries == [f"arn:aws:iam::{ACCOUNT_ID}:role/{DEPLOY_ROLE}"]
    assert state["kubeconfig"] == SECRET
    assert state["clusterName"] == "demo" and state["s3EndpointId"].endswith("-id")
    assert len(state["privateSubnetIds"]) == 2


def test_gke_platform_builds_network_cluster_and_gpu_pool(host):
    rec, state = construct(host, "demo", "GkePlatform", {
        "project": "example-project", "region": "us-central1", "zones": ["us-central1-a", "us-central1-b"],
        "clusterName": "demo",
        "nodePools": {
            "system": {"machineType": "e2-standard-4"},
            "gpu": {"machineType": "g2-standard-8", "gpusPerNode": 1.0, "acceleratorType": "nvidia-l4",
                    "minSize": 0.0, "spot": True, "gpuTimeSlicing": 2.0, "gpuSharingStrategy": "MPS"}}})
    wrapper = the_wrapper(rec, "GkePlatform", "demo")
    assert rec.one("tfplatform:gcp:GkeNetwork", "demo-network").parent == wrapper.urn
    cluster = rec.one("gcp:container/cluster:Cluster", "demo-gke-cluster").inputs
    assert cluster["name"] == "demo" and cluster["datapathProvider"] == "ADVANCED_DATAPATH"
    assert cluster["workloadIdentityConfig"]["workloadPool"] == "example-project.svc.id.goog"
    pools = {p.name: p.inputs for p in of(rec, "gcp:container/nodePool:NodePool")}
    gpu = pools["demo-gke-gpu"]["nodeConfig"]
    (accelerator,) = gpu["guestAccelerators"]
    assert accelerator["type"] == "nvidia-l4" and accelerator["count"] == 1
    assert accelerator["gpuSharingConfig"] == {"gpuSharingStrategy": "MPS", "maxSharedClientsPerGpu": 2}
    assert gpu["spot"] is True and gpu["workloadMetadataConfig"]["mode"] == "GKE_METADATA"
    assert state["kubeconfig"] == SECRET and state["clusterName"] == "demo"


def test_model_bucket_keeps_the_store_private_and_locks_objects(host):
    rec, state = construct(host, "models", "ModelBucket", {
        "region": "us-east-1", "objectLockMode": "GOVERNANCE", "objectLockDays": 30.0})
    wrapper = the_wrapper(rec, "ModelBucket", "models")
    assert rec.one("tfplatform:aws:ModelBucket", "models-bucket").parent == wrapper.urn
    block = rec.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                    "models-bucket-public-access").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                          "restrictPublicBuckets"))
    lock = rec.one("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration",
                   "models-bucket-object-lock").inputs
    assert lock["rule"]["defaultRetention"] == {"mode": "GOVERNANCE", "days": 30}
    # By default the role running `pulumi up` may assume the publisher role (read through the invokes).
    trust = json.loads(rec.one("aws:iam/role:Role", "models-bucket-publisher").inputs["assumeRolePolicy"])
    principals = json.dumps(trust["Statement"])
    assert f"arn:aws:iam::{ACCOUNT_ID}:role/{DEPLOY_ROLE}" in principals
    assert re.fullmatch(r"s3://[a-z0-9.-]+/models", state["modelsUri"])


def test_model_reader_trusts_one_service_account_through_the_endpoint(host):
    issuer = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"
    rec, state = construct(host, "reader", "ModelReader", {
        "oidcProviderArn": f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC",
        "oidcIssuerUrl": issuer, "namespace": "serving", "serviceAccount": "tfserving",
        "bucketArn": "arn:aws:s3:::models", "kmsKeyArn": f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/k",
        "region": "us-east-1", "vpcEndpointId": "vpce-0123"})
    trust = rec.one("aws:iam/role:Role", "reader-role-role").inputs["assumeRolePolicy"]
    assert "system:serviceaccount:serving:tfserving" in trust
    policy = rec.one("aws:iam/rolePolicy:RolePolicy", "reader-role-read-models").inputs["policy"]
    assert "vpce-0123" in policy and "arn:aws:s3:::models/models/*" in policy
    assert state["serviceAccountAnnotations"] == {"eks.amazonaws.com/role-arn": state["roleArn"]}


def test_gcs_model_bucket_is_private_versioned_and_encrypted_with_the_given_key(host):
    key = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/models"
    rec, state = construct(host, "gmodels", "GcsModelBucket", {
        "project": "example-project", "location": "us-central1", "kmsKey": key, "noncurrentVersionDays": 14.0,
        "protect": True, "prefix": "serving"})
    wrapper = the_wrapper(rec, "GcsModelBucket", "gmodels")
    assert rec.one("tfplatform:gcp:GcsModelBucket", "gmodels-bucket").parent == wrapper.urn
    bucket = rec.one("gcp:storage/bucket:Bucket", "gmodels-bucket")
    assert bucket.inputs["uniformBucketLevelAccess"] is True and bucket.inputs["publicAccessPrevention"] == "enforced"
    assert bucket.inputs["versioning"] == {"enabled": True} and bucket.inputs["encryption"] == {"defaultKmsKeyName": key}
    # An integer on the wire (14.0 -> 14) and protection on the bucket itself.
    assert bucket.inputs["lifecycleRules"][0]["condition"]["daysSinceNoncurrentTime"] == 14
    assert bucket.protect and bucket.retain_on_delete
    assert rec.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember", "gmodels-bucket-cmek").inputs["cryptoKeyId"] == key
    assert re.fullmatch(r"gs://[a-z0-9._-]+/serving", state["modelsUri"])


def test_gcs_reader_reads_one_prefix_for_one_kubernetes_service_account(host):
    rec, state = construct(host, "greader", "GcsModelReader", {
        "project": "example-project", "bucketName": "models-bucket", "workloadPool": "example-project.svc.id.goog",
        "namespace": "serving", "serviceAccount": "tfserving", "accountId": "tfs-models-reader"})
    (binding,) = of(rec, "gcp:storage/bucketIAMMember:BucketIAMMember")
    assert binding.inputs["role"] == "roles/storage.objectViewer" and binding.inputs["bucket"] == "models-bucket"
    assert "projects/_/buckets/models-bucket/objects/models/" in binding.inputs["condition"]["expression"]
    (identity,) = of(rec, "gcp:serviceaccount/iAMMember:IAMMember")
    assert identity.inputs["role"] == "roles/iam.workloadIdentityUser"
    assert identity.inputs["member"] == "serviceAccount:example-project.svc.id.goog[serving/tfserving]"
    assert rec.one("gcp:serviceaccount/account:Account", "greader-reader-sa").inputs["accountId"] == "tfs-models-reader"
    assert state["serviceAccountAnnotations"] == {"iam.gke.io/gcp-service-account": state["email"]}


def test_gcs_publisher_writes_one_prefix_and_names_who_may_act_as_it(host):
    ci = "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/ci/attribute.repository/o/r"
    rec, state = construct(host, "gpublisher", "GcsModelPublisher", {
        "project": "example-project", "bucketName": "models-bucket", "members": ["user:ml@example.com", ci]})
    (binding,) = of(rec, "gcp:storage/bucketIAMMember:BucketIAMMember")
    assert binding.inputs["role"] == "roles/storage.objectAdmin"
    roles = {m.inputs["member"]: m.inputs["role"] for m in of(rec, "gcp:serviceaccount/iAMMember:IAMMember")}
    assert roles == {"user:ml@example.com": "roles/iam.serviceAccountTokenCreator",
                     ci: "roles/iam.workloadIdentityUser"}
    assert state["email"]


def _k8s(rec: Recording, kind: str) -> list[dict]:
    return [r.inputs for r in rec.resources if r.inputs.get("kind") == kind]


SERVING_INPUTS = {
    "namespace": "serving", "server": "resnet", "modelSourceUri": "s3://models-bucket/models",
    "kubeconfig": "apiVersion: v1\nkind: Config\n", "syncEnv": {"AWS_REGION": "us-east-1"},
    "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": f"arn:aws:iam::{ACCOUNT_ID}:role/reader"},
    "models": [{"name": "resnet", "versionPolicy": "specific", "versions": [1.0, 2.0],
                "labels": {"stable": 2.0}, "canaryVersion": 3.0}],
    "batching": {"maxBatchSize": 32.0, "batchTimeoutMicros": 0.0, "maxEnqueuedBatches": 4.0,
                 "numBatchThreads": 4.0, "allowedBatchSizes": [8.0, 32.0]},
}


@pytest.fixture(scope="module")
def serving(host) -> tuple[Recording, dict]:
    return construct(host, "tfserving-resnet", "TfServing", SERVING_INPUTS)


def test_tfserving_builds_hardened_stable_and_canary_servers(serving):
    rec, state = serving
    deployments = {d["metadata"]["name"]: d for d in _k8s(rec, "Deployment")}
    assert {"tfserving-resnet", "tfserving-resnet-canary"} <= set(deployments)
    pod = deployments["tfserving-resnet"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    server = next(c for c in pod["containers"] if c["name"] == "tfserving")
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert server["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "--enable_batching=true" in server["args"]
    # model store derived from the s3:// URI: the AWS CLI syncs, TF Serving keeps no IRSA token.
    images = {c["image"] for c in pod["initContainers"] + pod["containers"]}
    assert any("amazon/aws-cli" in image for image in images)
    namespace = next(n for n in _k8s(rec, "Namespace") if n["metadata"]["name"] == "serving")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    policies = {p["metadata"]["name"]: p["spec"] for p in _k8s(rec, "NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    account = next(a for a in _k8s(rec, "ServiceAccount") if a["metadata"]["name"] == "tfserving")
    assert account["metadata"]["annotations"] == SERVING_INPUTS["serviceAccountAnnotations"]
    assert state["grpcEndpoint"] == "tfserving-resnet.serving.svc.cluster.local:8500"
    assert state["restEndpoint"] == "http://tfserving-resnet.serving.svc.cluster.local:8501"
    assert state["canaryGrpcEndpoint"] and state["serviceAccount"] == "tfserving"


def test_tfserving_model_config_has_integer_versions_from_wire_floats(serving):
    """The engine sends 2.0 for 2; TF Serving's parser refuses ``versions: 2.0`` (an int64 field)."""
    rec, _ = serving
    configs = [c["data"]["models.config"] for c in _k8s(rec, "ConfigMap")
               if "models.config" in c.get("data", {})]
    assert len(configs) == 2  # stable and canary revisions
    parsed = [text_format.Parse(text, model_server_config_pb2.ModelServerConfig()) for text in configs]
    by_versions = {tuple(c.model_config_list.config[0].model_version_policy.specific.versions): c
                   for c in parsed}
    assert set(by_versions) == {(1, 2), (1, 2, 3)}
    canary = by_versions[(1, 2, 3)].model_config_list.config[0]
    assert dict(canary.version_labels) == {"stable": 2, "canary": 3}
    batching = [c["data"]["batching.config"] for c in _k8s(rec, "ConfigMap")
                if "batching.config" in c.get("data", {})]
    assert batching and all("allowed_batch_sizes: 8" in text and "max_batch_size { value: 32 }" in text
                            for text in batching)


def test_tfserving_uses_only_its_own_kubernetes_provider(serving):
    rec, _ = serving
    (k8s_provider,) = of(rec, "pulumi:providers:kubernetes")
    assert k8s_provider.name == "tfserving-resnet-k8s" and k8s_provider.inputs["kubeconfig"] == SECRET
    objects = [r for r in rec.resources if r.custom and r.type.startswith("kubernetes:")]
    assert len(objects) > 8
    assert all(r.provider.startswith(k8s_provider.urn + "::") for r in objects), \
        [r.name for r in objects if not r.provider.startswith(k8s_provider.urn)]


def test_tfserving_in_an_existing_namespace_creates_neither_namespace_nor_account(host):
    inputs = {k: v for k, v in SERVING_INPUTS.items() if k != "serviceAccountAnnotations"}
    rec, state = construct(host, "second", "TfServing", {**inputs, "createNamespace": False,
                                                         "serviceAccount": "shared"})
    assert not _k8s(rec, "Namespace") and not _k8s(rec, "ServiceAccount")
    (deployment,) = [d for d in _k8s(rec, "Deployment") if d["metadata"]["name"] == "second"]
    assert deployment["metadata"]["namespace"] == "serving"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "shared"
    assert state["namespace"] == "serving" and state["serviceAccount"] == "shared"


def test_tfserving_pre_pulls_its_images_only_when_asked(serving, host):
    rec, _ = serving
    assert not _k8s(rec, "DaemonSet")  # off by default in the package
    inputs = {**SERVING_INPUTS, "gpus": 1.0, "nodeSelector": {"pool": "gpu"}, "imagePrePull": True}
    rec, _ = construct(host, "gpu", "TfServing", inputs)
    (daemon_set,) = _k8s(rec, "DaemonSet")
    (deployment,) = [d for d in _k8s(rec, "Deployment") if d["metadata"]["name"] == "gpu"]
    held, pod = daemon_set["spec"]["template"]["spec"], deployment["spec"]["template"]["spec"]
    assert daemon_set["metadata"]["name"] == "gpu-prepull"
    assert [c["image"] for c in held["containers"]] == [c["image"] for c in pod["containers"] + pod["initContainers"][:1]]
    assert held["nodeSelector"] == pod["nodeSelector"] == {"pool": "gpu"} and held["tolerations"] == pod["tolerations"]


def test_tfserving_scales_to_zero_with_the_package_keda(host):
    """Keda, then a TfServing that sleeps outside office hours and holds requests, depending on it: KEDA's
    ScaledObjects replace the HPA, start at zero pods, wait for KEDA's charts and pass their CRD schemas."""
    from tests.test_manifests import validation_failures

    inputs = {**SERVING_INPUTS, "targetRequestsPerSecond": 20.0, "scaleToZero": {
        "schedule": {"start": "0 8 * * 1-5", "end": "0 19 * * 1-5", "timezone": "Europe/Berlin", "replicas": 1.0},
        "idleAfterSeconds": 600.0, "coldStartTimeoutSeconds": 300.0}}
    rec, _ = construct(host, "sleepy", "TfServing", inputs,
                       before=lambda: provider.Keda("keda", {"http_add_on": True}))
    keda = the_wrapper(rec, "Keda", "keda")
    charts = {r.inputs["chart"] for r in rec.resources if r.type == "kubernetes:helm.sh/v4:Chart"}
    assert charts == {"keda", "keda-add-ons-http"}
    scaled = {r.inputs["metadata"]["name"]: r for r in rec.resources if r.type.endswith(":ScaledObject")}
    assert set(scaled) == {"sleepy", "sleepy-canary"}
    stable = scaled["sleepy"].inputs["spec"]
    assert stable["minReplicaCount"] == 0 and stable["cooldownPeriod"] == 600
    triggers = {t["type"]: t for t in stable["triggers"]}
    assert triggers["cron"]["metadata"]["timezone"] == "Europe/Berlin" and "external-push" in triggers
    # dependsOn a component waits for its custom resources: here KEDA's charts (CRDs, webhook) among them.
    chart_urns = {r.urn for r in rec.resources if r.type == "kubernetes:helm.sh/v4:Chart"}
    assert all(chart_urns <= set(r.dependencies) for r in scaled.values()), [r.dependencies for r in scaled.values()]
    assert keda.type == TOKENS["Keda"]
    assert not _k8s(rec, "HorizontalPodAutoscaler")
    (deployment,) = [d for d in _k8s(rec, "Deployment") if d["metadata"]["name"] == "sleepy"]
    assert deployment["spec"]["replicas"] == 0
    routes = [r for r in rec.resources if r.type.endswith(":InterceptorRoute")]
    assert len(routes) == 4  # REST and gRPC, stable and canary
    assert validation_failures([r.inputs for r in rec.resources if r.inputs.get("kind") in
                                ("ScaledObject", "InterceptorRoute", "Deployment", "Namespace")]) == []


def test_tfserving_refuses_replicas_with_scale_to_zero(host):
    with pytest.raises(Exception, match="replicas 2 with scaleToZero"):
        construct(host, "both", "TfServing", {**SERVING_INPUTS, "replicas": 2.0, "scaleToZero": {}})


def test_tfserving_refuses_what_it_cannot_build(host):
    bad_version = {**SERVING_INPUTS,
                   "models": [{"name": "m", "versionPolicy": "specific", "versions": [1.5]}]}
    with pytest.raises(ComponentInitError, match="versions must hold integers"):
        construct(host, "bad", "TfServing", bad_version)

    def uri_output():
        inputs = {**SERVING_INPUTS, "modelSourceUri": pulumi.Output.from_input("s3://b/models")}
        return host.construct("late", TOKENS["TfServing"], inputs, None).state

    with pytest.raises(ComponentInitError, match="set modelStore"):
        record(uri_output)

    def server_output():
        inputs = {**SERVING_INPUTS, "server": pulumi.Output.from_input("resnet")}
        return host.construct("late-server", TOKENS["TfServing"], inputs, None).state

    # `server` names objects: an output of another resource cannot be used (schema: plain).
    with pytest.raises(ComponentInitError, match="input 'server' must be a plain value"):
        record(server_output)
    with pytest.raises(ComponentInitError, match="serviceAccountAnnotations needs createNamespace"):
        construct(host, "existing", "TfServing", {**SERVING_INPUTS, "createNamespace": False})
    missing = {k: v for k, v in SERVING_INPUTS.items() if k != "models"}
    with pytest.raises(Exception, match="Missing required input 'models'"):
        construct(host, "missing", "TfServing", missing)


def test_serving_monitoring_waits_for_the_crds_and_applies_thresholds(host):
    def crd_installer():
        # What installs the ServiceMonitor and PrometheusRule CRDs (a plain resource under mocks).
        return k8s.helm.v3.Release("kube-prometheus-stack", chart="kube-prometheus-stack",
                                   namespace="monitoring")

    rec, state = construct(host, "monitoring", "ServingMonitoring", {
        "servingNamespace": "serving", "servers": ["resnet"], "environment": "prod",
        "thresholds": {"errorRatio": 0.01, "hpaMaxedMinutes": 45.0}}, before=crd_installer)
    installer = rec.one("kubernetes:helm.sh/v3:Release", "kube-prometheus-stack")
    monitors = [r for r in rec.resources if r.inputs.get("kind") == "ServiceMonitor"]
    rules = [r for r in rec.resources if r.inputs.get("kind") == "PrometheusRule"]
    assert [m.inputs["metadata"]["name"] for m in monitors] == ["tfserving-resnet"]
    assert all(installer.urn in r.dependencies for r in monitors + rules)
    groups = json.loads(state["alertRules"])["groups"]
    alerts = {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}
    assert any("> 0.01" in rule["expr"] for rule in alerts.values())
    assert any(rule.get("for") == "45m" for rule in alerts.values())
    assert state["serviceMonitors"] == ["tfserving-resnet"]


# ------------------------------------------------------------------------------- the real plugin over gRPC


def pulumi_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of Pulumi's own schemas (provider/schemas/). Their semver patterns use ECMAScript
    named groups ``(?<name>``, which Python's re spells ``(?P<name>``."""
    text = (ROOT / "provider" / "schemas" / name).read_text()
    return jsonschema.Draft202012Validator(json.loads(re.sub(r"\(\?<(?=[A-Za-z])", "(?P<", text)))


def test_the_metaschema_rejects_a_broken_schema(schema):
    """The validator is not vacuous: a property with a type Pulumi does not know fails it."""
    broken = json.loads(json.dumps(schema))
    broken["resources"][TOKENS["TfServing"]]["inputProperties"]["models"]["type"] = "list"
    assert list(pulumi_validator("pulumi-package.json").iter_errors(broken))
    assert not list(pulumi_validator("pulumi-package.json").iter_errors(schema))


def test_the_plugin_entry_point_serves_the_schema_over_grpc(schema):
    """Run the plugin as the python language host does, ``python <plugin directory> <engine address>``
    (pulumi/pulumi sdk/python/cmd/pulumi-language-python/main.go, RunPlugin), read the port it prints and
    ask it for its schema (ResourceProvider.GetSchema, proto/pulumi/provider.proto); then validate that schema
    with Pulumi's Package Metaschema (provider/schemas/README.md)."""
    process = subprocess.Popen([sys.executable, str(ROOT / "provider"), "127.0.0.1:1"], cwd=ROOT / "provider",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = process.stdout.readline().decode().strip()
        assert port.isdigit(), process.stderr.read().decode() if process.poll() is not None else port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            served = json.loads(stub.GetSchema(provider_pb2.GetSchemaRequest(version=0), timeout=20).schema)
            info = stub.GetPluginInfo(empty_pb2.Empty(), timeout=20)
    finally:
        process.kill()
        process.wait(timeout=10)
    assert served == schema
    assert info.version == provider.VERSION
    validator = pulumi_validator("pulumi-package.json")
    errors = [f"{e.json_path}: {e.message[:200]}" for e in validator.iter_errors(served)]
    assert not errors, errors
    for token, resource in served["resources"].items():
        assert re.fullmatch(r"tfplatform:index:[A-Z][A-Za-z]+", token)
        assert set(resource["requiredInputs"]) <= set(resource["inputProperties"])


# ---------------------------------------------------------------------------------------- the YAML example


_SCHEMA_TYPE = {"string": str, "boolean": bool, "integer": int, "number": (int, float)}
_INTERPOLATION = re.compile(r"^\$\{([^}]+)\}$")


def _check_value(value: Any, prop: dict, types: dict, where: str, config: dict) -> None:
    match = _INTERPOLATION.match(value) if isinstance(value, str) else None
    if match:
        name = match.group(1)
        if name in config:  # a config value: check its declared default against the property
            _check_value(config[name]["default"], prop, types, where, config)
        else:  # another resource's output: only inputs (not plain values) can take one
            assert not prop.get("plain"), f"{where} is plain: it cannot take the output {value}"
        return
    if "$ref" in prop:
        typ = types[prop["$ref"].removeprefix("#/types/")]
        if "enum" in typ:
            assert value in [m["value"] for m in typ["enum"]], f"{where}: {value!r} not in {typ['enum']}"
            return
        assert isinstance(value, dict), where
        assert set(typ.get("required", [])) <= set(value), f"{where} misses {typ.get('required')}"
        for key, item in value.items():
            assert key in typ["properties"], f"{where}.{key} is not in the schema"
            _check_value(item, typ["properties"][key], types, f"{where}.{key}", config)
    elif prop["type"] == "array":
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            _check_value(item, prop["items"], types, f"{where}[{i}]", config)
    elif prop["type"] == "object":
        assert isinstance(value, dict), where
        for key, item in value.items():
            _check_value(item, prop["additionalProperties"], types, f"{where}.{key}", config)
    else:
        expected = _SCHEMA_TYPE[prop["type"]]
        assert isinstance(value, expected) and not (prop["type"] != "boolean" and isinstance(value, bool)), \
            f"{where}: {value!r} is not a {prop['type']}"


def test_yaml_example_sets_only_schema_properties_with_the_right_types(schema):
    program = yaml.safe_load(EXAMPLE.read_text())
    assert program["runtime"] == "yaml"
    validator = pulumi_validator("pulumi-project.json")
    errors = [f"{e.json_path}: {e.message[:200]}" for e in validator.iter_errors(program)]
    assert not errors, errors
    assert program["packages"]["tfplatform"] == "../.."  # the provider directory, from this example
    config = program.get("config", {})
    ours = {name: r for name, r in program["resources"].items() if r["type"].startswith("tfplatform:")}
    assert {r["type"] for r in ours.values()} >= {TOKENS["TfServing"]}
    for name, resource in ours.items():
        spec = schema["resources"][resource["type"]]
        props = resource.get("properties", {})
        missing = set(spec["requiredInputs"]) - set(props)
        assert not missing, f"{name} misses {missing}"
        for key, value in props.items():
            assert key in spec["inputProperties"], f"{name}.{key} is not an input of {resource['type']}"
            _check_value(value, spec["inputProperties"][key], schema["types"], f"{name}.{key}", config)
    for key, value in program.get("outputs", {}).items():
        resource, _, output = _INTERPOLATION.match(value).group(1).partition(".")
        assert output in schema["resources"][program["resources"][resource]["type"]]["properties"], key


def test_yaml_example_builds_on_the_mock_engine(host):
    """The example's TfServing, its config defaults filled in as the YAML runtime would, constructs."""
    program = yaml.safe_load(EXAMPLE.read_text())
    config = {name: spec["default"] for name, spec in program.get("config", {}).items()}

    def fill(value: Any) -> Any:
        if isinstance(value, str) and _INTERPOLATION.match(value):
            return config[_INTERPOLATION.match(value).group(1)]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    (name, resource), = [(n, r) for n, r in program["resources"].items() if r["type"] == TOKENS["TfServing"]]
    rec, state = construct(host, name, "TfServing", fill(resource["properties"]))
    assert state["grpcEndpoint"] == f"{name}.serving.svc.cluster.local:8500"
    assert any(d["metadata"]["name"] == name for d in _k8s(rec, "Deployment"))
    # No kubeconfig in the example: no provider of its own and no provider reference on any object, so the
    # engine gives each the default (ambient) Kubernetes provider (the mock monitor registers none).
    assert not of(rec, "pulumi:providers:kubernetes")
    objects = [r for r in rec.resources if r.custom and r.type.startswith("kubernetes:")]
    assert objects and all(r.provider == "" for r in objects)


def test_all_wrappers_in_one_program_follow_the_component_conventions(host):
    """The house conventions (tests/test_component_conventions.py), on a program using every wrapper: each
    wrapper registers its schema token, every resource sits under a component and is named after its
    parent, and no URN repeats (RecordingMonitor refuses a duplicate as the engine does)."""
    inputs = {
        "EksPlatform": {"clusterName": "eks", "region": "us-east-1", "zones": ["us-east-1a"],
                        "nodePools": {"system": {"instanceTypes": ["m6i.large"]}}},
        "GkePlatform": {"project": "example-project", "region": "us-central1", "zones": ["us-central1-a"],
                        "clusterName": "gke", "nodePools": {"system": {"machineType": "e2-standard-4"}}},
        "ModelBucket": {"region": "us-east-1"},
        "ModelReader": {"oidcProviderArn": "arn:aws:iam::1:oidc-provider/x", "oidcIssuerUrl": "https://x",
                        "namespace": "serving", "serviceAccount": "tfserving", "bucketArn": "arn:aws:s3:::b",
                        "kmsKeyArn": "arn:aws:kms:us-east-1:1:key/k", "region": "us-east-1"},
        "GcsModelBucket": {"project": "example-project", "location": "us-central1"},
        "GcsModelReader": {"project": "example-project", "bucketName": "b", "workloadPool": "p.svc.id.goog",
                           "namespace": "serving", "serviceAccount": "tfserving"},
        "GcsModelPublisher": {"project": "example-project", "bucketName": "b", "members": ["user:a@example.com"]},
        "Keda": {"httpAddOn": True, "namespace": "keda-system"},
        "TfServing": SERVING_INPUTS,
        "ServingMonitoring": {"servingNamespace": "serving", "servers": ["resnet"], "environment": "dev"},
    }

    def build():
        return {component: host.construct(f"the-{component.lower()}", TOKENS[component], args, None).urn
                for component, args in inputs.items()}

    rec, urns = record(build)
    for component in NAMES:
        urn = _sync_await(pulumi.Output.from_input(urns[component]).future())
        assert rec.by_urn(urn).type == TOKENS[component]
    top = [r for r in rec.resources if not r.parent or r.parent == rec.stack_urn]
    assert {r.type for r in top} == set(TOKENS.values())
    for r in rec.resources:
        parent = rec.by_urn(r.parent) if r.parent else None
        if r.custom:
            assert parent is not None and not parent.custom, f"{r.urn} is not parented to a component"
        if parent is not None:
            assert r.name == parent.name or r.name.startswith(parent.name + "-"), (parent.name, r.name)
    assert len({r.urn for r in rec.resources}) == len(rec.resources)


def test_the_readme_shows_the_example_programs_resources():
    # The README's YAML program is the example file's (which the tests above check against the schema).
    import re

    import yaml

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### From other languages", 1)[1]
    shown = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    example = yaml.safe_load(EXAMPLE.read_text())
    assert shown["resources"] == example["resources"]
    assert (shown["runtime"], shown["packages"]) == (example["runtime"], example["packages"])
