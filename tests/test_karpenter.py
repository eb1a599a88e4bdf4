"""Karpenter as the EKS GPU provisioner (components/aws/karpenter.py), run on the mock engine.

One program registers the controller, the node pools of two GPU pools (spot -> on-demand -> a reserved
ODCR, fast image pull and time slicing; a capacity-block pool) and a GPU model server pinned to the first
pool, so the node pools are judged against what the serving pods really select and tolerate.
"""

from __future__ import annotations

import copy
import json
import sys
import textwrap
from dataclasses import replace

import pytest

from components.aws.karpenter import (AMI_ALIAS, INTERRUPTION_EVENTS, KarpenterNodePools, KarpenterNodePoolsArgs,
                                      weights)
from components.aws.node_group import NodePoolSpec, user_data_document
from components.capacity import CapacityOption
from components.helm_charts import KARPENTER
from components.node_labels import GPU_NODE_LABEL, GPU_RESOURCE, GPU_TAINT_KEY, POOL_LABEL
from stacks.deploy_rules import Context, Plan, crd_installed_first
from stacks.mock_engine import ACCOUNT_ID, Recording, run_program
from stacks.plan import ROOT
from tests.crd_validation import validate_custom_resources
from tests.iam_eval import Request, s3_allows

CLUSTER = "tfp-dev"
REGION = "us-east-1"
RESERVATION = "cr-0123456789abcdef0"
BLOCK = "cr-0fedcba9876543210"

PROGRAM = f"""
import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
from components.aws.karpenter import Karpenter, KarpenterArgs, KarpenterNodePools, KarpenterNodePoolsArgs
from components.aws.node_group import NodePoolSpec
from components.capacity import CapacityOption
from components.node_labels import POOL_LABEL
from components.serving.model_server import ModelServer, ModelServerArgs
from components.serving.tfserving_config import ServedModel

aws_opts = pulumi.ResourceOptions(providers={{"aws": aws.Provider("aws", region="{REGION}")}})
k8s_opts = pulumi.ResourceOptions(providers={{"kubernetes": k8s.Provider("k8s", kubeconfig="{{}}")}})
controller = Karpenter("karpenter", KarpenterArgs(cluster_name="{CLUSTER}", region="{REGION}",
                       account_id="{ACCOUNT_ID}", tags={{"Stack": "test"}}), aws_opts=aws_opts, opts=k8s_opts)
gpu = NodePoolSpec(instance_types=["g6.xlarge", "g5.xlarge"], ami_type="AL2023_x86_64_NVIDIA",
                   capacity_type="SPOT", min_size=0, desired_size=0, max_size=4, gpus_per_node=1,
                   gpu_time_slicing=2, disk_size_gb=200, fast_image_pull=True, root_volume_throughput=600,
                   fallback=(CapacityOption("on-demand", ("g6.xlarge",), "on-demand"),
                             CapacityOption("reserved", ("g6.xlarge",), "reserved", "{RESERVATION}")))
train = NodePoolSpec(instance_types=["p5.48xlarge"], ami_type="AL2023_x86_64_NVIDIA",
                     capacity_type="CAPACITY_BLOCK", min_size=0, max_size=2, gpus_per_node=8,
                     reservation="{BLOCK}", hourly_price=31.46)
pools = KarpenterNodePools("karpenter-pools", KarpenterNodePoolsArgs(
    pools={{"gpu": gpu, "train": train}},
    instance_profile=controller.instance_profile_name, subnet_ids=["subnet-a", "subnet-b"],
    security_group_ids=["sg-cluster"], consolidate_after_seconds={{"gpu": 900}}, tags={{"Stack": "test"}}),
    ready=controller.ready, opts=k8s_opts)
ModelServer("gpu-server", ModelServerArgs(namespace="serving", server="gpu-server", models=[ServedModel("m")],
            model_source_uri="s3://bucket/models", model_store="s3", service_account_name="tfserving", gpus=1,
            node_selector={{POOL_LABEL: "gpu"}}), opts=pulumi.ResourceOptions.merge(
            k8s_opts, pulumi.ResourceOptions(depends_on=pools.pool_resources["gpu"])))
"""


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Recording:
    program = tmp_path_factory.mktemp("karpenter-program") / "__main__.py"
    program.write_text(textwrap.dedent(PROGRAM))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return run_program(program, "test", "tfserving-platform", {}, [])


def custom(rec: Recording, kind: str) -> dict[str, dict]:
    return {r.inputs["metadata"]["name"]: r.inputs for r in rec.resources if r.inputs.get("kind") == kind
            and r.inputs.get("apiVersion", "").startswith("karpenter.")}


def one(rec: Recording, type_: str, name: str) -> dict:
    return rec.one(type_, name).inputs


def pod_spec(rec: Recording, name: str) -> dict:
    deployment = next(r.inputs for r in rec.resources if r.inputs.get("kind") == "Deployment"
                      and r.inputs["metadata"]["name"] == name)
    return deployment["spec"]["template"]["spec"]


# --- schemas -------------------------------------------------------------------------------------

def test_every_nodepool_and_nodeclass_passes_the_node_models_and_the_chart_crds(rec):
    objects = [*custom(rec, "NodePool").values(), *custom(rec, "EC2NodeClass").values()]
    # NodePools gpu, gpu-on-demand, gpu-reserved, train; node classes gpu, gpu-reserved, train-primary.
    assert len(objects) == 4 + 3
    assert validate_custom_resources(objects) == [None] * len(objects)


def test_the_schemas_refuse_what_karpenter_refuses(rec):
    """The validator is not a rubber stamp: an undeclared field, an out-of-range weight and two CEL-only
    errors of the pinned CRDs (role and instanceProfile both set; a requirement on a restricted
    karpenter.sh label) are each reported."""
    pool, node_class = custom(rec, "NodePool")["gpu"], custom(rec, "EC2NodeClass")["gpu"]
    unknown = copy.deepcopy(pool)
    unknown["spec"]["disruption"]["consolidateAfterSeconds"] = 900
    heavy = copy.deepcopy(pool)
    heavy["spec"]["weight"] = 101
    restricted = copy.deepcopy(pool)
    restricted["spec"]["template"]["spec"]["requirements"].append(
        {"key": "karpenter.sh/nodeclaim", "operator": "Exists"})
    both = copy.deepcopy(node_class)
    both["spec"]["role"] = "KarpenterNodeRole"
    results = validate_custom_resources([unknown, heavy, restricted, both])
    assert all(results), results
    assert "consolidateAfterSeconds" in results[0]
    assert "weight" in results[1]
    assert "restricted" in results[2]
    assert "role" in results[3] and "instanceProfile" in results[3]


# --- node pools ----------------------------------------------------------------------------------

def test_one_nodepool_per_option_named_by_stable_keys_weights_descending(rec):
    pools = custom(rec, "NodePool")
    spec_weights = [pools[name]["spec"]["weight"] for name in ("gpu", "gpu-on-demand", "gpu-reserved")]
    assert spec_weights == sorted(spec_weights, reverse=True) and len(set(spec_weights)) == 3
    capacity = {name: next(r["values"] for r in p["spec"]["template"]["spec"]["requirements"]
                           if r["key"] == "karpenter.sh/capacity-type") for name, p in pools.items()}
    assert capacity == {"gpu": ["spot"], "gpu-on-demand": ["on-demand"], "gpu-reserved": ["reserved"],
                        "train": ["reserved"]}
    assert weights(3) == [100, 90, 80]
    with pytest.raises(ValueError, match="at most 10"):
        weights(11)


def test_requirements_pin_the_options_instance_types_and_gpu_count(rec):
    pools = custom(rec, "NodePool")

    def req(pool: str, key: str) -> list[str]:
        return next(r["values"] for r in pools[pool]["spec"]["template"]["spec"]["requirements"] if r["key"] == key)

    assert req("gpu", "node.kubernetes.io/instance-type") == ["g6.xlarge", "g5.xlarge"]
    assert req("gpu-on-demand", "node.kubernetes.io/instance-type") == ["g6.xlarge"]
    assert req("gpu", "karpenter.k8s.aws/instance-gpu-count") == ["1"]
    assert req("train", "karpenter.k8s.aws/instance-gpu-count") == ["8"]
    # ODCR vs capacity block: Karpenter's reservation types (provider pkg/apis/v1/ec2nodeclass_status.go).
    assert req("gpu-reserved", "karpenter.k8s.aws/capacity-reservation-type") == ["default"]
    assert req("train", "karpenter.k8s.aws/capacity-reservation-type") == ["capacity-block"]


def _tolerates(tolerations: list[dict], taint: dict) -> bool:
    """Kubernetes toleration matching (k8s.io/api core/v1 toleration.go ToleratesTaint): same effect or
    empty; key equal or empty with Exists; Exists matches any value, Equal (default) the same value."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint["effect"]:
            continue
        if t.get("key") and t["key"] != taint["key"]:
            continue
        if not t.get("key") and t.get("operator") != "Exists":
            continue
        if t.get("operator") == "Exists" or t.get("value", "") == taint.get("value", ""):
            return True
    return False


def test_serving_pods_select_and_tolerate_every_nodepool_of_their_pool(rec):
    spec = pod_spec(rec, "gpu-server")
    assert spec["nodeSelector"] == {POOL_LABEL: "gpu"}
    for name in ("gpu", "gpu-on-demand", "gpu-reserved"):
        template = custom(rec, "NodePool")[name]["spec"]["template"]
        assert spec["nodeSelector"].items() <= template["metadata"]["labels"].items()
        assert template["metadata"]["labels"][GPU_NODE_LABEL] == "true"  # the device plugin's selector
        assert template["metadata"]["labels"]["nvidia.com/device-plugin.config"] == "time-slicing-2"
        assert {"key": GPU_TAINT_KEY, "value": "true", "effect": "NoSchedule"} in template["spec"]["taints"]
        assert all(_tolerates(spec["tolerations"], taint) for taint in template["spec"]["taints"])
    # A pod of another pool (or none) does not land there: the train pool has its own label value.
    assert custom(rec, "NodePool")["train"]["spec"]["template"]["metadata"]["labels"][POOL_LABEL] == "train"


def test_limits_count_what_the_nodes_advertise(rec):
    pools = custom(rec, "NodePool")
    # max 4 nodes x 1 GPU x 2 time slices: the Node's nvidia.com/gpu capacity once the device plugin runs.
    assert pools["gpu"]["spec"]["limits"] == {"nodes": "4", GPU_RESOURCE: "8"}
    assert pools["gpu-reserved"]["spec"]["limits"] == {"nodes": "4", GPU_RESOURCE: "8"}
    assert pools["train"]["spec"]["limits"] == {"nodes": "2", GPU_RESOURCE: "16"}


def test_consolidation_waits_for_model_loads_and_respects_budgets(rec):
    pools = custom(rec, "NodePool")
    for name in ("gpu", "gpu-on-demand", "gpu-reserved"):
        disruption = pools[name]["spec"]["disruption"]
        assert disruption["consolidateAfter"] == "900s"  # the pool's longest startup timeout, from the args
        assert disruption["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
        assert disruption["budgets"] == [{"nodes": "1"}]
    assert pools["train"]["spec"]["disruption"]["consolidateAfter"] == "600s"  # no servers given: the default


# --- node classes --------------------------------------------------------------------------------

def test_node_classes_pin_the_ami_and_harden_the_nodes(rec):
    classes = custom(rec, "EC2NodeClass")
    profile = one(rec, "aws:iam/instanceProfile:InstanceProfile", "karpenter-node")
    assert set(classes) == {"gpu", "gpu-reserved", "train-primary"}
    for node_class in classes.values():
        spec = node_class["spec"]
        assert spec["amiSelectorTerms"] == [{"alias": AMI_ALIAS}] and not AMI_ALIAS.endswith("@latest")
        assert spec["instanceProfile"] and "role" not in spec  # pre-created profile: no IAM writes
        assert spec["subnetSelectorTerms"] == [{"id": "subnet-a"}, {"id": "subnet-b"}]
        assert spec["securityGroupSelectorTerms"] == [{"id": "sg-cluster"}]
        assert spec["metadataOptions"]["httpTokens"] == "required"
        assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
        (root,) = spec["blockDeviceMappings"]
        assert root["rootVolume"] is True and root["ebs"]["encrypted"] is True and root["ebs"]["volumeType"] == "gp3"
    assert profile["role"]  # the profile holds the node role
    gpu = classes["gpu"]["spec"]
    assert gpu["blockDeviceMappings"][0]["ebs"]["volumeSize"] == "200Gi"
    assert gpu["blockDeviceMappings"][0]["ebs"]["throughput"] == 600
    assert gpu["userData"] == user_data_document(NodePoolSpec(["g6.xlarge"], "AL2023_x86_64_NVIDIA",
                                                              fast_image_pull=True))
    assert "FastImagePull: true" in gpu["userData"]
    assert "capacityReservationSelectorTerms" not in gpu
    assert classes["gpu-reserved"]["spec"]["capacityReservationSelectorTerms"] == [{"id": RESERVATION}]
    assert classes["train-primary"]["spec"]["capacityReservationSelectorTerms"] == [{"id": BLOCK}]
    assert "userData" not in classes["train-primary"]["spec"]
    assert gpu["tags"] == {"Stack": "test", POOL_LABEL: "gpu"}


def _args(spec: NodePoolSpec) -> KarpenterNodePoolsArgs:
    return KarpenterNodePoolsArgs(pools={"p": spec}, instance_profile="profile",
                                  subnet_ids=["subnet-a"], security_group_ids=["sg"])


GPU = NodePoolSpec(["g6.xlarge"], "AL2023_x86_64_NVIDIA", gpus_per_node=1)


@pytest.mark.parametrize("spec, message", [
    (replace(GPU, capacity_type="RESERVED",
              reservation="arn:aws:resource-groups:us-east-1:123456789012:group/gpus"), "by id"),
    (replace(GPU, fallback=(CapacityOption("flex", ("g6.xlarge",), "flex-start"),)), "flex-start"),
    (replace(GPU, gpus_per_node=0), "GPU pools only"),
])
def test_what_the_pinned_version_cannot_express_is_refused_before_registration(spec, message):
    # No mocks are set here: the error comes before the component registers anything.
    with pytest.raises(ValueError, match=message):
        KarpenterNodePools("refused", _args(spec), ready=[])


# --- the controller ------------------------------------------------------------------------------

def test_the_chart_is_the_pinned_oci_chart_on_the_system_pool(rec):
    chart = one(rec, "kubernetes:helm.sh/v4:Chart", "karpenter-chart")
    assert chart["chart"] == "oci://public.ecr.aws/karpenter/karpenter" and chart["version"] == "1.14.1"
    assert not chart.get("repositoryOpts")  # an OCI reference is not a repository URL
    assert not chart.get("skipCrds")  # the chart's crds/ are rendered (and so upgraded with it)
    values = chart["values"]
    assert values["settings"]["clusterName"] == CLUSTER
    queue = one(rec, "aws:sqs/queue:Queue", "karpenter-interruption")
    assert values["settings"]["interruptionQueue"] == queue["name"] == f"Karpenter-{CLUSTER}"
    assert queue["messageRetentionSeconds"] == 300 and queue["sqsManagedSseEnabled"] is True
    assert values["nodeSelector"][POOL_LABEL] == "system"
    assert values["replicas"] == 2
    assert values["controller"]["resources"]["requests"] and values["controller"]["resources"]["limits"]["memory"]
    assert KARPENTER.oci_ref == chart["chart"]


def test_pod_identity_binds_the_charts_service_account(rec):
    association = one(rec, "aws:eks/podIdentityAssociation:PodIdentityAssociation", "karpenter-controller")
    chart = one(rec, "kubernetes:helm.sh/v4:Chart", "karpenter-chart")
    assert (association["namespace"], association["serviceAccount"]) == (chart["namespace"], "karpenter")
    assert chart["values"]["serviceAccount"]["name"] == "karpenter"
    trust = json.loads(one(rec, "aws:iam/role:Role", "karpenter-controller")["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]


def test_node_role_has_node_policies_but_not_the_cni_policy_and_joins_as_ec2_linux(rec):
    attached = {r.inputs["policyArn"].rsplit("/", 1)[1]
                for r in rec.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if r.name.startswith("karpenter-node-")}
    assert attached == {"AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly"}
    entry = one(rec, "aws:eks/accessEntry:AccessEntry", "karpenter-node")
    assert entry["type"] == "EC2_LINUX" and entry["clusterName"] == CLUSTER
    assert entry["principalArn"].startswith(f"arn:aws:iam::{ACCOUNT_ID}:role/karpenter-node-")


# --- IAM, evaluated ------------------------------------------------------------------------------

def _controller(rec: Recording) -> tuple[str, list[dict], str, str]:
    role = f"arn:aws:iam::{ACCOUNT_ID}:role/karpenter-controller"
    policy = json.loads(one(rec, "aws:iam/rolePolicy:RolePolicy", "karpenter-controller")["policy"])
    node_role = one(rec, "aws:eks/accessEntry:AccessEntry", "karpenter-node")["principalArn"]
    queue = next(s["Resource"] for s in policy["Statement"] if s["Sid"] == "AllowInterruptionQueueActions")
    return role, [policy], node_role, queue


def _allowed(principal: str, identity: list[dict], action: str, resource: str, **context: str | list[str]) -> bool:
    return s3_allows(Request(principal, action, resource, context), identity, None)


OWN = {f"aws:ResourceTag/kubernetes.io/cluster/{CLUSTER}": "owned", "aws:ResourceTag/karpenter.sh/nodepool": "gpu"}
CREATE = {f"aws:RequestTag/kubernetes.io/cluster/{CLUSTER}": "owned", "aws:RequestTag/eks:eks-cluster-name": CLUSTER,
          "aws:RequestTag/karpenter.sh/nodepool": "gpu"}
EC2 = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}"


def test_the_controller_may_do_its_job_on_its_own_resources(rec):
    role, identity, node_role, queue = _controller(rec)
    for action in ("ec2:RunInstances", "ec2:CreateFleet"):
        assert _allowed(role, identity, action, f"{EC2}:instance/i-0abc", **CREATE)
        assert _allowed(role, identity, action, f"{EC2}:launch-template/lt-1", **OWN)
        assert _allowed(role, identity, action, f"arn:aws:ec2:{REGION}::image/ami-1")
        assert _allowed(role, identity, action, f"{EC2}:capacity-reservation/{RESERVATION}")
    assert _allowed(role, identity, "ec2:CreateLaunchTemplate", f"{EC2}:launch-template/lt-1", **CREATE)
    assert _allowed(role, identity, "ec2:CreateTags", f"{EC2}:volume/vol-1", **CREATE,
                    **{"ec2:CreateAction": "RunInstances"})
    assert _allowed(role, identity, "ec2:TerminateInstances", f"{EC2}:instance/i-0abc", **OWN)
    assert _allowed(role, identity, "ec2:DescribeInstanceTypes", "*", **{"aws:RequestedRegion": REGION})
    assert _allowed(role, identity, "ssm:GetParameter",
                    f"arn:aws:ssm:{REGION}::parameter/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/"
                    "x86_64/nvidia/amazon-eks-node-al2023-x86_64-nvidia-1.33-v20260714/image_id")
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueUrl"):
        assert _allowed(role, identity, action, queue)
    assert _allowed(role, identity, "iam:PassRole", node_role, **{"iam:PassedToService": "ec2.amazonaws.com"})
    assert _allowed(role, identity, "eks:DescribeCluster", f"arn:aws:eks:{REGION}:{ACCOUNT_ID}:cluster/{CLUSTER}")


def test_the_controller_cannot_touch_other_clusters_roles_or_queues(rec):
    role, identity, node_role, queue = _controller(rec)
    other = {f"aws:ResourceTag/kubernetes.io/cluster/other": "owned", "aws:ResourceTag/karpenter.sh/nodepool": "gpu"}
    assert not _allowed(role, identity, "ec2:TerminateInstances", f"{EC2}:instance/i-other", **other)
    # A managed node group's instance of this cluster: no karpenter.sh/nodepool tag.
    assert not _allowed(role, identity, "ec2:TerminateInstances", f"{EC2}:instance/i-mng",
                        **{f"aws:ResourceTag/kubernetes.io/cluster/{CLUSTER}": "owned"})
    assert not _allowed(role, identity, "ec2:RunInstances", f"{EC2}:instance/i-new",
                        **{**CREATE, "aws:RequestTag/eks:eks-cluster-name": "other"})
    assert not _allowed(role, identity, "ec2:RunInstances", f"{EC2}:launch-template/lt-other", **other)
    assert not _allowed(role, identity, "ec2:DescribeInstanceTypes", "*", **{"aws:RequestedRegion": "eu-west-1"})
    assert not _allowed(role, identity, "iam:PassRole", f"arn:aws:iam::{ACCOUNT_ID}:role/admin",
                        **{"iam:PassedToService": "ec2.amazonaws.com"})
    assert not _allowed(role, identity, "iam:PassRole", node_role, **{"iam:PassedToService": "lambda.amazonaws.com"})
    for action in ("iam:CreateInstanceProfile", "iam:AddRoleToInstanceProfile", "iam:TagInstanceProfile",
                   "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"):
        assert not _allowed(role, identity, action, f"arn:aws:iam::{ACCOUNT_ID}:instance-profile/any")
    assert not _allowed(role, identity, "sqs:ReceiveMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:someone-else")
    assert not _allowed(role, identity, "sqs:SendMessage", queue)
    assert not _allowed(role, identity, "eks:DescribeCluster", f"arn:aws:eks:{REGION}:{ACCOUNT_ID}:cluster/other")


def test_the_queue_refuses_plain_http_and_takes_messages_from_eventbridge_only(rec):
    role, identity, _, queue = _controller(rec)
    policy = json.loads(one(rec, "aws:sqs/queuePolicy:QueuePolicy", "karpenter-interruption")["policy"])
    assert _allowed(role, identity, "sqs:ReceiveMessage", queue, **{"aws:SecureTransport": "true"})
    assert not s3_allows(Request(role, "sqs:ReceiveMessage", queue, {"aws:SecureTransport": "false"}), identity, policy)
    assert s3_allows(Request(role, "sqs:ReceiveMessage", queue, {"aws:SecureTransport": "true"}), identity, policy)
    # The only Allow: SendMessage, for the two AWS services (iam_eval does not model service principals).
    (allow,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allow["Action"] == "sqs:SendMessage" and allow["Resource"] == queue
    assert sorted(allow["Principal"]["Service"]) == ["events.amazonaws.com", "sqs.amazonaws.com"]


# --- interruption events -------------------------------------------------------------------------

# Sample events as AWS documents them (EC2 User Guide "Spot Instance interruption notices" and "EC2 instance
# rebalance recommendations"; EventBridge User Guide "Amazon EC2 instance state-change" example; AWS Health
# User Guide "AWS Health events" (scheduled change); EC2 User Guide "Interruptible Capacity Reservations").
SAMPLES = {
    "spot-interruption": {
        "version": "0", "id": "12345678-1234-1234-1234-123456789012",
        "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2", "account": "123456789012",
        "time": "2026-07-01T12:00:00Z", "region": "us-east-2",
        "resources": ["arn:aws:ec2:us-east-2a:instance/i-1234567890abcdef0"],
        "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "terminate"}},
    "rebalance": {
        "version": "0", "id": "12345678-1234-1234-1234-123456789012",
        "detail-type": "EC2 Instance Rebalance Recommendation", "source": "aws.ec2", "account": "123456789012",
        "time": "2026-07-01T12:00:00Z", "region": "us-east-2",
        "resources": ["arn:aws:ec2:us-east-2:123456789012:instance/i-1234567890abcdef0"],
        "detail": {"instance-id": "i-1234567890abcdef0"}},
    "scheduled-change": {
        "version": "0", "id": "7fb65329-1628-4cf3-a740-95fg457h1402", "detail-type": "AWS Health Event",
        "source": "aws.health", "account": "123456789012", "time": "2026-07-01T12:00:00Z", "region": "us-east-1",
        "resources": ["i-abcd1111"],
        "detail": {"eventArn": "arn:aws:health:us-east-1::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/"
                               "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED_ABC123-DEF456",
                   "service": "EC2", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
                   "eventTypeCategory": "scheduledChange", "eventScopeCode": "ACCOUNT_SPECIFIC",
                   "startTime": "Wed, 15 Jul 2026 12:00:00 GMT", "endTime": "Wed, 15 Jul 2026 13:00:00 GMT",
                   "eventDescription": [{"language": "en_US", "latestDescription": "instance retirement"}],
                   "affectedEntities": [{"entityValue": "i-abcd1111"}]}},
    "state-change": {
        "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "account": "123456789012",
        "time": "2026-07-01T21:29:54Z", "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
        "detail": {"instance-id": "i-abcd1111", "state": "shutting-down"}},
    "capacity-reservation-interruption": {
        "version": "0", "id": "0f4b8f2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        "detail-type": "EC2 Capacity Reservation Instance Interruption Warning", "source": "aws.ec2",
        "account": "123456789012", "time": "2026-07-01T12:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1:123456789012:capacity-reservation/cr-0123456789abcdef0"],
        "detail": {"capacityReservationId": "cr-0123456789abcdef0",
                   "instanceIds": ["i-abcd1111"]}},
}
# Events Karpenter does not act on (provider pkg/controllers/interruption: a Health event of another service;
# an Auto Scaling event) must not cost queue messages.
NOISE = [
    {**SAMPLES["scheduled-change"], "detail": {**SAMPLES["scheduled-change"]["detail"], "service": "RDS"}},
    {**SAMPLES["scheduled-change"], "detail": {**SAMPLES["scheduled-change"]["detail"],
                                               "eventTypeCategory": "issue"}},
    {**SAMPLES["rebalance"], "source": "aws.autoscaling", "detail-type": "EC2 Instance Launch Successful"},
]


def _matches(pattern: object, event: object) -> bool:
    """EventBridge matching for the pattern forms used here (EventBridge User Guide "Event patterns"): a
    pattern object matches when each of its fields matches; a list of values matches when the event's value
    (or any element of an event list) equals one of them; a field missing from the event never matches."""
    if isinstance(pattern, dict):
        return isinstance(event, dict) and all(k in event and _matches(v, event[k]) for k, v in pattern.items())
    values = event if isinstance(event, list) else [event]
    return any(v in pattern for v in values)


def test_each_interruption_rule_matches_its_aws_sample_event_and_only_it(rec):
    rules = {r.name.removeprefix("karpenter-"): json.loads(r.inputs["eventPattern"])
             for r in rec.of_type("aws:cloudwatch/eventRule:EventRule")}
    assert set(rules) == set(SAMPLES) == set(INTERRUPTION_EVENTS)
    for name, event in SAMPLES.items():
        assert [r for r, pattern in rules.items() if _matches(pattern, event)] == [name]
    for event in NOISE:
        assert not any(_matches(pattern, event) for pattern in rules.values()), event
    _, _, _, queue_arn = _controller(rec)
    targets = {t.name.removeprefix("karpenter-"): t.inputs
               for t in rec.of_type("aws:cloudwatch/eventTarget:EventTarget")}
    assert set(targets) == set(rules)
    assert {t["arn"] for t in targets.values()} == {queue_arn}  # the queue the controller reads


# --- deploy semantics ----------------------------------------------------------------------------

def test_nodepools_come_after_the_chart_that_installs_their_crds(rec):
    plan = Plan(rec)
    karpenter = [r for r in plan.k8s() if r.inputs["apiVersion"].startswith("karpenter.")]
    assert len(karpenter) == 7
    assert not crd_installed_first(plan, Context())
    broken = Recording(stack=rec.stack, project=rec.project)
    chart_urn = rec.one("kubernetes:helm.sh/v4:Chart", "karpenter-chart").urn
    broken.resources = [replace(r, dependencies=[d for d in r.dependencies if d != chart_urn])
                        if r.inputs.get("apiVersion", "").startswith("karpenter.") else r for r in rec.resources]
    violations = crd_installed_first(Plan(broken), Context())
    assert {v.urn for v in violations} == {r.urn for r in karpenter}
    assert all("karpenter." in v.message for v in violations)


def test_later_tagging_is_limited_to_its_own_instances_and_three_keys(rec):
    # AllowScopedResourceTagging: StringEqualsIfExists and ForAllValues:StringEquals (aws:TagKeys, a set).
    role, identity, _, _ = _controller(rec)
    instance = f"{EC2}:instance/i-0abc"
    assert _allowed(role, identity, "ec2:CreateTags", instance, **OWN,
                    **{"aws:TagKeys": ["Name", "karpenter.sh/nodeclaim"]})
    assert _allowed(role, identity, "ec2:CreateTags", instance, **OWN,
                    **{"aws:TagKeys": ["eks:eks-cluster-name"], "aws:RequestTag/eks:eks-cluster-name": CLUSTER})
    # Any other key in the set, another cluster's name, or someone else's instance: no.
    assert not _allowed(role, identity, "ec2:CreateTags", instance, **OWN,
                        **{"aws:TagKeys": ["Name", f"kubernetes.io/cluster/{CLUSTER}"]})
    assert not _allowed(role, identity, "ec2:CreateTags", instance, **OWN,
                        **{"aws:TagKeys": ["eks:eks-cluster-name"], "aws:RequestTag/eks:eks-cluster-name": "other"})
    assert not _allowed(role, identity, "ec2:CreateTags", f"{EC2}:instance/i-mng",
                        **{f"aws:ResourceTag/kubernetes.io/cluster/{CLUSTER}": "owned", "aws:TagKeys": ["Name"]})
