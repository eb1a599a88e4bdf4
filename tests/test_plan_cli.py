"""`python -m stacks plan` as a user runs it: output, JSON, manifests, and bad config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
import yaml

from stacks.mock_engine import Recording, run_program
from stacks.plan import ROOT
from stacks.stack_files import load_stack_config
from tests.conftest import stack_file_with


def plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stacks", "plan", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def dev_cli(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("plan")
    return plan("--stack", "dev", "--json", str(out / "plan.json"), "--manifests", str(out / "manifests")), out


def test_plan_prints_the_tree_and_count(dev_cli):
    result, _ = dev_cli
    assert result.returncode == 0, result.stderr
    assert_lists(result.stdout, "aws:eks/cluster:Cluster  eks-cluster", "aws:eks/nodeGroup:NodeGroup  eks-gpu",
                 "aws:eks/nodeGroup:NodeGroup  eks-system", "aws:s3/bucket:Bucket  models",
                 "kubernetes:apps/v1:Deployment  tfserving-default-deployment",
                 "kubernetes:core/v1:Service  tfserving-default-service")
    assert " to create: " in result.stdout
    assert "kubeconfig: [secret]" in result.stdout


def test_plan_json_has_the_documented_shape(dev_cli, dev: Recording):
    _, out = dev_cli
    data = json.loads((out / "plan.json").read_text())
    assert data["stack"] == "dev" and set(data) == {"stack", "project", "resources", "outputs"}
    assert len(data["resources"]) == len(dev.resources)
    for res in data["resources"]:
        assert {"urn", "type", "name", "parent", "inputs", "dependencies"} <= set(res)
    types = {r["type"] for r in data["resources"]}
    assert {"aws:eks/cluster:Cluster", "kubernetes:apps/v1:Deployment", "aws:s3/bucket:Bucket"} <= types
    cluster = next(r for r in data["resources"] if r["type"] == "aws:eks/cluster:Cluster")
    assert cluster["parent"].endswith("tfplatform:aws:EksCluster::eks")


def test_manifests_one_file_per_object_and_mounted_files(dev_cli):
    _, out = dev_cli
    manifests = out / "manifests"
    deployment = yaml.safe_load((manifests / "serving" / "deployment-tfserving-default.yaml").read_text())
    assert deployment["kind"] == "Deployment"
    assert (manifests / "_cluster" / "namespace-serving.yaml").exists()
    # One immutable ConfigMap per revision: tfserving-default-config-<content hash>.
    (config_dir,) = (manifests / "files" / "serving").glob("tfserving-default-config-*")
    models_config = (config_dir / "models.config").read_text()
    assert 'name: "digits"' in models_config


def test_prod_plan_lists_more_than_dev(dev: Recording, prod: Recording):
    def network(rec: Recording) -> int:
        return len([r for r in rec.resources if r.type.startswith("aws:ec2/")])

    assert network(prod) > network(dev)  # NAT per zone, third zone's subnets


def test_bad_config_exits_non_zero_with_one_clear_message(tmp_path: Path):
    bad = stack_file_with(tmp_path, servingReplicas="two", cloud="azure")
    result = plan("--stack", "dev", "--config-file", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "tfserving-platform:servingReplicas = 'two'" in result.stderr
    assert "tfserving-platform:cloud = 'azure': Input should be 'aws'" in result.stderr


def test_missing_stack_file_is_a_clear_error():
    result = plan("--stack", "nosuchstack")
    assert result.returncode == 2 and "Pulumi.nosuchstack.yaml: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_registers_nothing(tmp_path: Path):
    bad = stack_file_with(tmp_path, nodePools={"system": {"instanceTypes": ["m6i.large"], "minSize": 3,
                                                          "maxSize": 1}})
    cfg = load_stack_config(ROOT / "Pulumi.yaml", bad, "dev")
    recording = Recording(stack="dev", project=cfg.project)
    with pytest.raises(pulumi.RunError, match=r"nodePools\.system\.minSize = 3"):
        run_program(ROOT / "__main__.py", "dev", cfg.project, cfg.config, cfg.secret_keys, into=recording)
    assert recording.resources == []


def test_gke_plan_lists_network_cluster_gpu_pool_bucket_and_binding():
    result = plan("--stack", "gke-dev")
    assert result.returncode == 0, result.stderr
    assert_lists(result.stdout, "gcp:compute/network:Network  network-vpc", "gcp:container/cluster:Cluster  gke-cluster",
                 "gcp:container/nodePool:NodePool  gke-gpu", "gcp:storage/bucket:Bucket  models",
                 "gcp:serviceaccount/iAMMember:IAMMember  model-reader-workload-identity",
                 "kubernetes:apps/v1:Deployment  tfserving-default-deployment")
    assert "modelsUri: gs://" in result.stdout


def assert_lists(stdout: str, *lines: str) -> None:
    missing = [line for line in lines if line not in stdout]
    assert not missing, missing


def test_graph_shows_every_resource_and_dependency(tmp_path: Path, dev: Recording):
    from stacks.graph import to_dot

    dot = to_dot(dev)
    for r in dev.resources:
        assert f'"{r.urn}"' in dot, r.name
    group = dev.one("aws:eks/nodeGroup:NodeGroup", "eks-gpu")
    for dep in group.dependencies:
        assert f'"{dep}" -> "{group.urn}";' in dot
    result = plan("--stack", "dev", "--graph", str(tmp_path / "dev.dot"), "--quiet")
    assert result.returncode == 0, result.stderr
    # Graphviz (Debian `graphviz`) is installed by scripts/ensure-tools.sh: the picture is rendered too.
    svg = (tmp_path / "dev.dot.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "eks&#45;gpu" in svg  # dot escapes "-"
