"""Day-two capacity and cost: peak GPU demand fits the pools, the cost floor counts the GPU nodes the
serving replicas hold, the GCS reader's account id is per stack, and S3 traffic skips the NAT gateway."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from bench import plan_bench as pb
from components.gcp.model_bucket import ACCOUNT_ID, model_reader_account_id
from stacks.config import ConfigError, parse_settings
from stacks.cost import AWS_PRICES, GCP_PRICES, estimate
from stacks.plan import ROOT, to_json
from stacks.stack_files import load_stack_config

NS = "tfserving-platform"


def stack_settings(stack: str, edit=None):
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    if edit:
        edit(data["config"])
    tmp = Path(tempfile.mkdtemp()) / f"Pulumi.{stack}.yaml"
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return parse_settings(load_stack_config(ROOT / "Pulumi.yaml", tmp, stack).config)


def gpu_pool(config: dict) -> dict:
    return config[f"{NS}:nodePools"]["gpu"]


# ------------------------------------------------------------------ 1. peak GPU demand fits maxSize

@pytest.mark.parametrize("stack, peak", [("dev", 5), ("gke-dev", 5), ("prod", 9)])
def test_shipped_stacks_hold_their_peak(stack, peak):
    settings = stack_settings(stack)
    pool = settings.node_pools["gpu"]
    assert pool.max_size * pool.gpus_per_node * pool.gpu_time_slicing >= peak
    # One node fewer than the peak needs is refused, naming the key, the value and who needs what.
    with pytest.raises(ConfigError) as error:
        stack_settings(stack, lambda c: gpu_pool(c).update(maxSize=peak - 1))
    text = str(error.value)
    assert f"{NS}:nodePools.gpu.maxSize = {peak - 1}" in text
    assert f"enough for the {peak} GPUs" in text and f"servers.default {peak} (maxReplicas" in text
    assert "canary 1 + 1 surge" in text


def test_peak_counts_max_replicas_not_the_floor():
    # replicas 1 + surge fits two nodes; maxReplicas 4 + surge does not.
    config = {f"{NS}:nodePools": json.dumps({"system": {"instanceTypes": ["m6i.large"]},
                                             "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1,
                                                     "minSize": 0, "desiredSize": 0, "maxSize": 2}}),
              f"{NS}:servers": json.dumps({"default": {"nodePool": "gpu", "gpus": 1, "replicas": 1,
                                                       "maxReplicas": 4, "models": {"digits": {}}}})}
    with pytest.raises(ConfigError, match=r"nodePools\.gpu\.maxSize = 2: expected at least 5"):
        parse_settings(config)


def test_time_slicing_counts_as_capacity():
    config = {f"{NS}:nodePools": json.dumps({"system": {"instanceTypes": ["m6i.large"]},
                                             "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1,
                                                     "gpuTimeSlicing": 4, "minSize": 0, "desiredSize": 0,
                                                     "maxSize": 2}}),
              f"{NS}:servers": json.dumps({"default": {"nodePool": "gpu", "gpus": 1, "replicas": 2,
                                                       "maxReplicas": 7, "models": {"digits": {}}}})}
    assert parse_settings(config).node_pools["gpu"].max_size == 2  # 8 pods on 2 nodes x 1 GPU x 4 slices


def test_bench_fit_pool_follows_the_peak_rule(tmp_path):
    data = pb.model_stack_data(yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text()), 40, per_server=16)
    config = data["config"]
    servers = [s for name, s in config[f"{NS}:servers"].items() if s.get("nodePool", "gpu") == "gpu"]
    peak = sum(s.get("maxReplicas", 3) + 1 for s in servers)
    assert gpu_pool(config)["maxSize"] >= peak
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(data))
    parse_settings(load_stack_config(ROOT / "Pulumi.yaml", path, "dev").config)


# ------------------------------------------------------------------ 2. the cost floor

@pytest.fixture(scope="module")
def dev_always_on(tmp_path_factory):
    """dev with its GPU server always on (as shipped it scales to zero: tests/test_scale_to_zero.py prices that)."""
    from stacks.plan import plan_stack
    from tests.conftest import stack_file_with
    from tests.test_serving import always_on

    path = stack_file_with(tmp_path_factory.mktemp("dev"), "dev", servers=always_on())
    return path, plan_stack("dev", path)


def test_dev_floor_prices_the_gpu_nodes_the_servers_hold(dev_always_on):
    cost = estimate(to_json(dev_always_on[1]))
    gpu = next(line for line in cost.lines if line.item == "eks-gpu")
    # minSize 0, but the stable replica and the canary (1 GPU each, 1 GPU per node) keep 2 nodes up.
    assert gpu.hourly_min == round(2 * AWS_PRICES["us-east-1"]["g5.xlarge"], 4)
    assert "servers.default stable 1 x 1 GPU" in gpu.held_by and "servers.default canary 1 x 1 GPU" in gpu.held_by
    system = next(line for line in cost.lines if line.item == "eks-system")
    assert system.hourly_min == round(2 * AWS_PRICES["us-east-1"]["m6i.large"], 4) and not system.held_by


def test_gke_floor_divides_by_shared_gpus():
    plan = {"resources": [
        {"type": "pulumi:providers:gcp", "name": "gcp", "inputs": {"region": "us-central1"}},
        {"type": "gcp:container/nodePool:NodePool", "name": "gke-gpu", "inputs": {
            "autoscaling": {"totalMinNodeCount": 0, "totalMaxNodeCount": 4},
            "nodeConfig": {"machineType": "g2-standard-8", "labels": {"tfplatform.io/node-pool": "gpu"},
                           "guestAccelerators": [{"count": 1, "type": "nvidia-l4",
                                                  "gpuSharingConfig": {"maxSharedClientsPerGpu": 2}}]}}},
        {"type": "kubernetes:apps/v1:Deployment", "name": "a", "inputs": {
            "metadata": {"name": "tfserving-a", "labels": {"tfplatform.io/server": "a", "tfplatform.io/track": "stable"}},
            "spec": {"replicas": 1, "template": {"spec": {"nodeSelector": {"tfplatform.io/node-pool": "gpu"},
                                                          "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}},
        {"type": "kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "name": "a-hpa", "inputs": {
            "spec": {"minReplicas": 3, "scaleTargetRef": {"name": "tfserving-a"}}}}]}
    gpu = estimate(plan).lines[0]
    # 3 pods (the HPA's floor) on 2 pods per node: 2 nodes.
    assert gpu.hourly_min == round(2 * GCP_PRICES["us-central1"]["g2-standard-8"], 4)
    assert gpu.held_by.startswith("2 node(s) held by servers.a stable 3 x 1 GPU")


def test_plan_cli_prints_the_floor_and_who_holds_it(dev_always_on):
    done = subprocess.run([sys.executable, "-m", "stacks", "plan", "--stack", "dev", "--config-file",
                           str(dev_always_on[0])], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    line = next(l for l in done.stdout.splitlines() if l.startswith("Estimated compute cost:"))
    low = float(re.search(r"\$([0-9.]+)-", line).group(1))
    prices = AWS_PRICES["us-east-1"]
    # EKS 0.10 + NAT 0.045 + 2 x m6i.large + the 2 GPU nodes the servers hold.
    assert low == pytest.approx(0.1 + 0.045 + 2 * prices["m6i.large"] + 2 * prices["g5.xlarge"], abs=0.01)
    assert "  floor eks-gpu: 2 node(s) held by servers.default" in done.stdout


# ------------------------------------------------------------------ 3. the GCS reader's account id

@pytest.mark.parametrize("key", ["tfserving-gke-dev", "tfserving-platform-gke-dev", "a", "Dev_Stack",
                                 "9-lives", "x" * 60, "a--b-", "tfserving-platform-gke-prod"])
def test_reader_account_id_is_valid(key):
    account = model_reader_account_id(key)
    assert 6 <= len(account) <= 30 and re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", account), account
    assert ACCOUNT_ID.match(account)


def test_reader_account_ids_are_distinct_per_stack():
    keys = ["tfserving-platform-gke-dev", "tfserving-platform-gke-prod", "tfserving-platform-gke-dev2",
            "x" * 40, "x" * 40 + "y", "Dev", "dev", "tfserving-gke-dev", "tfserving-gke-prod"]
    ids = [model_reader_account_id(k) for k in keys]
    assert len(set(ids)) == len(ids), ids
    assert model_reader_account_id("tfserving-gke-dev") == "tfserving-gke-dev-models"


def test_gke_plan_reader_account_is_not_fixed(gke):
    accounts = [r["inputs"]["accountId"] for r in to_json(gke)["resources"]
                if r["type"] == "gcp:serviceaccount/account:Account" and r["name"] == "model-reader-sa"]
    assert accounts == [model_reader_account_id("tfserving-gke-dev")] == ["tfserving-gke-dev-models"]  # from clusterName
    assert accounts != ["tfserving-models"]


# ------------------------------------------------------------------ 4. S3 through a gateway endpoint

@pytest.mark.parametrize("fixture, zones", [("dev", 2), ("prod", 3)])
def test_s3_gateway_endpoint_on_every_private_route_table(fixture, zones, request):
    resources = to_json(request.getfixturevalue(fixture))["resources"]
    endpoints = [r for r in resources if r["type"] == "aws:ec2/vpcEndpoint:VpcEndpoint"
                 and r["inputs"]["vpcEndpointType"] == "Gateway"]  # prod also has the STS interface endpoint
    assert len(endpoints) == 1
    inputs = endpoints[0]["inputs"]
    assert inputs["vpcEndpointType"] == "Gateway" and inputs["serviceName"] == "com.amazonaws.us-east-1.s3"
    private = {r["urn"] for r in resources if r["type"] == "aws:ec2/routeTable:RouteTable"
               and r["name"].startswith("network-private-")}
    assert len(private) == zones and set(endpoints[0]["dependencies"]) >= private
    assert len(inputs["routeTableIds"]) == zones
    public = [r for r in resources if r["type"] == "aws:ec2/routeTable:RouteTable" and r["name"] == "network-public"]
    assert public and public[0]["urn"] not in endpoints[0]["dependencies"]


def test_endpoint_type_is_in_the_terraform_table():
    from stacks.terraform_plan import TERRAFORM_TYPES

    assert TERRAFORM_TYPES["aws:ec2/vpcEndpoint:VpcEndpoint"] == "aws_vpc_endpoint"
