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


def test_dict_outputs_print_as_json_with_sorted_keys(dev_cli, dev: Recording):
    """servingEndpoints is a dict: printed as JSON (what `pulumi stack output --json` shows), not
    Python's repr, so it can be copied into a client or jq."""
    result, _ = dev_cli
    marker = "  servingEndpoints: "
    text = result.stdout[result.stdout.index(marker) + len(marker):]
    pairs: list[list[str]] = []

    def keep_order(items):
        pairs.append([key for key, _ in items])
        return dict(items)

    printed, _ = json.JSONDecoder(object_pairs_hook=keep_order).raw_decode(text)
    assert printed == dev.outputs["servingEndpoints"]
    assert all(keys == sorted(keys) for keys in pairs), pairs
    assert "stackDeployed: true" in result.stdout  # JSON's boolean, not Python's True


def main_result(capsys, *argv: str) -> tuple[int, str, str]:
    from stacks.__main__ import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


BAD_STACK_FILES = {
    # name: (file content or None for a directory, the message after "<path>: ")
    "directory": (None, "is a directory, not a YAML file"),
    "not-utf8": (b"\xff\xfeconfig: {}\n", "not UTF-8 text (byte 0: invalid start byte)"),
    "not-yaml": (b"config: [valid\n", "not valid YAML: line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    "list": (b"- config\n", "expected a mapping at the top level, found a list"),
    "scalar": (b"hello\n", "expected a mapping at the top level, found a string"),
    "config-list": (b"config:\n  - a\n", "`config` must be a mapping of key: value, found a list"),
    "config-number": (b"config: 5\n", "`config` must be a mapping of key: value, found a number"),
    "number-key": (b"config:\n  5: x\n", "config key 5 must be a string such as "
                                         "`tfserving-platform:servingReplicas`, found a number"),
}


@pytest.mark.parametrize("case", sorted(BAD_STACK_FILES))
def test_a_stack_file_that_cannot_be_read_is_one_error_line(case: str, tmp_path: Path, capsys):
    content, message = BAD_STACK_FILES[case]
    path = tmp_path / "Pulumi.dev.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    code, out, err = main_result(capsys, "plan", "--stack", "dev", "--config-file", str(path))
    assert (code, out, err) == (2, "", f"error: stack dev: {path}: {message}\n")


def test_an_unreadable_stack_file_is_one_error_line(tmp_path: Path, capsys, monkeypatch):
    # The tests run as root, whom chmod 000 does not stop: the read fails as it does for other users.
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text("config: {}\n")
    read_text = Path.read_text

    def denied(self: Path, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    code, out, err = main_result(capsys, "plan", "--stack", "dev", "--config-file", str(path))
    assert (code, out, err) == (2, "", f"error: stack dev: {path}: cannot read: Permission denied\n")


def test_an_empty_stack_file_is_a_stack_without_config(tmp_path: Path):
    """As for the Pulumi CLI, which reads an empty stack file as no config (sdk/go/common/workspace/
    loaders.go): the plan gets the project defaults, the same as from `config: {}`."""
    empty, no_config = tmp_path / "empty.yaml", tmp_path / "no-config.yaml"
    empty.write_text("# nothing set yet\n")
    no_config.write_text("config: {}\n")
    got = load_stack_config(ROOT / "Pulumi.yaml", empty, "dev")
    assert got == load_stack_config(ROOT / "Pulumi.yaml", no_config, "dev")
    assert got.config["tfserving-platform:cloud"] == "aws"


@pytest.mark.parametrize("stack", ["", "a/b", "../dev", "dev stack", "x" * 101])
def test_a_stack_name_pulumi_would_refuse_is_one_error_line(stack: str, capsys):
    for command in (["plan", "--stack", stack], ["diff", "--stack", stack, "--base", "HEAD"]):
        code, out, err = main_result(capsys, *command)
        assert (code, out) == (2, "")
        assert err == (f"error: --stack {stack!r}: a stack name is 1-100 letters, digits, '-', '_' or '.' "
                       "(the stack file is Pulumi.<stack>.yaml)\n")


def test_an_unknown_stack_names_the_stacks_there_are(capsys):
    code, out, err = main_result(capsys, "plan", "--stack", "nosuchstack")
    known = ", ".join(sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml")))
    assert (code, out) == (2, "")
    assert err == (f"error: stack nosuchstack: {ROOT / 'Pulumi.nosuchstack.yaml'}: no such file "
                   f"(stacks here: {known}; or give one with --config-file)\n")


def test_output_paths_that_cannot_be_written_fail_before_the_plan(tmp_path: Path, capsys):
    a_file, a_dir = tmp_path / "a-file", tmp_path / "a-dir"
    a_file.write_text("")
    a_dir.mkdir()
    (tmp_path / "g.dot.svg").mkdir()
    cases = {
        ("--json", str(a_dir)): f"--json {a_dir}: is a directory; give a file path",
        ("--json", str(a_file / "plan.json")): f"--json {a_file / 'plan.json'}: {a_file} is a file, not a directory",
        ("--graph", str(a_dir)): f"--graph {a_dir}: is a directory; give a file path",
        ("--graph", str(tmp_path / "g.dot")): f"--graph {tmp_path / 'g.dot.svg'}: is a directory; give a file path",
        ("--graph", str(a_file / "x" / "g.dot")): f"--graph {a_file / 'x' / 'g.dot'}: {a_file} is a file, "
                                                  "not a directory",
        ("--manifests", str(a_file)): f"--manifests {a_file}: is a file; give a directory path",
        ("--manifests", str(a_file / "m")): f"--manifests {a_file / 'm'}: {a_file} is a file, not a directory",
    }
    for (flag, path), message in cases.items():
        code, out, err = main_result(capsys, "plan", "--stack", "dev", flag, path)
        # Nothing planned, nothing printed but the error.
        assert (code, out, err) == (2, "", f"error: {message}\n"), (flag, path)


def test_a_write_that_fails_after_the_plan_is_one_error_line(tmp_path: Path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "serving").write_text("a file where the serving namespace's directory goes")
    result = plan("--stack", "dev", "--quiet", "--manifests", str(manifests))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"error: --manifests {manifests}: cannot write: a file is in the way of the "
                             f"directory {manifests / 'serving'}\n")


def test_a_full_disk_is_one_error_line(capsys):
    from stacks.__main__ import CliError, _emit

    # /dev/full: every write fails with ENOSPC (Linux, https://man7.org/linux/man-pages/man4/full.4.html).
    with pytest.raises(CliError, match=r"^--out /dev/full: cannot write: No space left on device$"):
        _emit("text", Path("/dev/full"))


# Survivors of the sampled mutation run (issue 20), in-process so the run can see them.

def _plan_json(tmp_path, *extra: str) -> dict:
    from stacks.__main__ import main

    out = tmp_path / f"plan{len(extra)}.json"
    assert main(["plan", "--stack", "dev", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_redeploy_plans_a_later_up(tmp_path, capsys):
    """`--redeploy` plans a later `pulumi up`: the client Services then wait for their endpoints, while the
    first up skips that await (no pod is ready before the models sync; docs/deploy.md)."""
    def client_annotations(plan: dict) -> dict:
        (svc,) = [r for r in plan["resources"] if r["name"] == "tfserving-default-client"]
        return svc["inputs"]["metadata"].get("annotations") or {}

    first = _plan_json(tmp_path)
    assert client_annotations(first).get("pulumi.com/skipAwait") == "true"
    later = _plan_json(tmp_path, "--redeploy")
    assert "pulumi.com/skipAwait" not in client_annotations(later)
    assert "checked on a later up, no violation" in capsys.readouterr().out


def test_plan_json_keys(tmp_path):
    plan = _plan_json(tmp_path)
    assert sorted(plan) == ["outputs", "project", "resources", "stack"] and plan["stack"] == "dev"
    assert all(sorted(r) == ["custom", "dependencies", "ignoreChanges", "inputs", "name", "parent", "protect",
                             "provider", "retainOnDelete", "type", "urn"] for r in plan["resources"])
    # Every resource has a parent (the stack's own resource for the top-level components).
    assert all(r["parent"] and r["parent"].startswith("urn:pulumi:dev::") for r in plan["resources"])
