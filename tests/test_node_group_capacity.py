"""EKS managed node groups on reserved capacity (ODCRs, Capacity Blocks) and with MIG partitions.

The node groups run on Pulumi's mock engine; the MIG boot script runs under bash against a stand-in
``nvidia-smi`` (and ``systemctl``) that answers like the real ones and refuses what they refuse.
"""

from __future__ import annotations

import base64
import configparser
import email
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import botocore.session
import pytest
import yaml

from components.aws.capacity_blocks import (CAPACITY_BLOCK_INSTANCE_TYPES, check_capacity_block,
                                            reservation_target)
from components.aws.node_group import (DEVICE_PLUGIN_CONFIG_LABEL, MIG_SCRIPT_PATH, MIG_UNIT, NodePoolSpec,
                                       autoscaler_node_template_tags, check_pool_spec, mig_plan, node_labels,
                                       user_data_document)
from components.gpu.addons import MIG_MIXED_CONFIG, device_plugin_config
from stacks.mock_engine import Recording, run_program
from stacks.plan import ROOT

LT = "aws:ec2/launchTemplate:LaunchTemplate"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
CA_PREFIX = "k8s.io/cluster-autoscaler/node-template/"
CR_ID = "cr-02168da1478b509e0"
GROUP_ARN = "arn:aws:resource-groups:us-east-1:123456789012:group/gpu-odcrs"
TARGET_CR = {"capacityReservationTarget": {"capacityReservationId": CR_ID}}
NVIDIA = "AL2023_x86_64_NVIDIA"

PROGRAM = f"""
import pulumi
from components.aws.node_group import ManagedNodeGroup, NodeGroupArgs, NodePoolSpec
from components.gpu.addons import GpuAddons, GpuAddonsArgs

def group(name, **spec):
    ManagedNodeGroup(f"eks-{{name}}", name, NodeGroupArgs(
        cluster_name="tfserving-test", node_role_arn="arn:aws:iam::123456789012:role/node",
        subnet_ids=["subnet-0a"], spec=NodePoolSpec(ami_type="{NVIDIA}", gpus_per_node=8, min_size=0,
                                                     desired_size=0, max_size=2, **spec)))

group("odcr", instance_types=["p5.48xlarge"], capacity_type="RESERVED", reservation="{CR_ID}")
group("odcrgroup", instance_types=["p5.48xlarge"], capacity_type="RESERVED", reservation="{GROUP_ARN}")
group("block", instance_types=["p5.48xlarge"], capacity_type="CAPACITY_BLOCK", reservation="{CR_ID}")
group("plain", instance_types=["p4d.24xlarge"], capacity_type="SPOT")
group("mig", instance_types=["p4d.24xlarge"], mig_profile="1g.5gb", fast_image_pull=True)
GpuAddons("gpu", GpuAddonsArgs(time_slicing=[1, 2], mig=True, dcgm_exporter=False))
"""


def run_components(tmp_path: Path, program: str) -> Recording:
    path = tmp_path / "__main__.py"
    path.write_text(textwrap.dedent(program))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return run_program(path, "test", "tfserving-platform", {}, [])


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Recording:
    return run_components(tmp_path_factory.mktemp("node-groups"), PROGRAM)


def inputs(rec: Recording, type_: str, name: str) -> dict:
    return rec.one(type_, name).inputs


def asg_tags(rec: Recording, pool: str) -> dict[str, str]:
    return {r.inputs["tag"]["key"]: r.inputs["tag"]["value"] for r in rec.of_type("aws:autoscaling/tag:Tag")
            if r.name.startswith(f"eks-{pool}-ca-")}


def botocore_enum(service: str, shape: str) -> list[str]:
    return botocore.session.get_session().get_service_model(service).shape_for(shape).enum


# --- Reserved capacity -----------------------------------------------------------------------------


def test_odcr_by_id_is_an_on_demand_group_whose_template_targets_the_reservation(rec):
    lt = inputs(rec, LT, "eks-odcr-lt")
    # Only the target: the EC2 API takes a preference or a target, not both.
    assert lt["capacityReservationSpecification"] == TARGET_CR
    assert "instanceMarketOptions" not in lt and "instanceType" not in lt
    group = inputs(rec, NODE_GROUP, "eks-odcr")
    # EKS has no reserved capacity type (botocore CapacityTypes): an ODCR is consumed on demand.
    assert group["capacityType"] == "ON_DEMAND" and "RESERVED" not in botocore_enum("eks", "CapacityTypes")
    assert group["instanceTypes"] == ["p5.48xlarge"]


def test_odcr_by_resource_group_targets_the_group(rec):
    lt = inputs(rec, LT, "eks-odcrgroup-lt")
    assert lt["capacityReservationSpecification"] == {
        "capacityReservationTarget": {"capacityReservationResourceGroupArn": GROUP_ARN}}
    assert inputs(rec, NODE_GROUP, "eks-odcrgroup")["capacityType"] == "ON_DEMAND"


def test_capacity_block_template_has_market_reservation_and_the_one_type(rec):
    lt = inputs(rec, LT, "eks-block-lt")
    assert lt["instanceMarketOptions"] == {"marketType": "capacity-block"}
    assert lt["instanceMarketOptions"]["marketType"] in botocore_enum("ec2", "MarketType")
    assert lt["capacityReservationSpecification"] == TARGET_CR
    assert lt["instanceType"] == "p5.48xlarge"
    group = inputs(rec, NODE_GROUP, "eks-block")
    assert group["capacityType"] == "CAPACITY_BLOCK"
    assert group["capacityType"] in botocore_enum("eks", "CapacityTypes")
    # The type lives on the template; EKS fails a group naming types on both.
    assert not group.get("instanceTypes")
    # Still scalable from zero by the cluster-autoscaler during the block.
    assert asg_tags(rec, "block")[f"{CA_PREFIX}resources/nvidia.com/gpu"] == "8"


def test_on_demand_and_spot_groups_carry_no_reservation_or_market(rec):
    lt = inputs(rec, LT, "eks-plain-lt")
    assert not {"capacityReservationSpecification", "instanceMarketOptions", "instanceType"} & set(lt)
    assert inputs(rec, NODE_GROUP, "eks-plain")["capacityType"] == "SPOT"
    assert "userData" not in lt


def test_no_scheduled_actions_are_created(rec):
    # The decision in components/aws/capacity_blocks.py: AWS refuses scheduled actions in the past.
    assert not rec.of_type("aws:autoscaling/schedule:Schedule")


def test_capacity_block_table_covers_the_documented_types():
    documented = {"p5.48xlarge", "p4d.24xlarge", "p5e.48xlarge", "p6-b200.48xlarge"}
    assert documented <= set(CAPACITY_BLOCK_INSTANCE_TYPES)
    assert check_capacity_block(["p4d.24xlarge"], "us-west-2") == "p4d.24xlarge"
    with pytest.raises(ValueError, match="not offered in eu-west-1"):
        check_capacity_block(["p4d.24xlarge"], "eu-west-1")


@pytest.mark.parametrize(("spec", "message"), [
    (dict(instance_types=["p5.48xlarge"], capacity_type="CAPACITY_BLOCK"),
     "CAPACITY_BLOCK needs a reservation"),
    (dict(instance_types=["p5.48xlarge", "p4d.24xlarge"], capacity_type="CAPACITY_BLOCK", reservation=CR_ID),
     "exactly one instance type"),
    (dict(instance_types=["g5.48xlarge"], capacity_type="CAPACITY_BLOCK", reservation=CR_ID),
     "'g5.48xlarge' is not offered as a Capacity Block"),
    (dict(instance_types=["p5.48xlarge"], capacity_type="CAPACITY_BLOCK", reservation=GROUP_ARN),
     "targeted by their cr-... id"),
    (dict(instance_types=["p5.48xlarge"], capacity_type="RESERVED"), "RESERVED needs a reservation"),
    (dict(instance_types=["p5.48xlarge"], capacity_type="RESERVED", reservation="my-odcr"),
     "'my-odcr' is not a capacity reservation"),
    (dict(instance_types=["p5.48xlarge"], capacity_type="ON_DEMAND", reservation=CR_ID),
     "only used with capacity type RESERVED or CAPACITY_BLOCK"),
    (dict(instance_types=["p5.48xlarge"], capacity_type="FLEX_START"),
     "not available to EKS managed node groups"),
    (dict(instance_types=["p4d.24xlarge"], mig_profile="1g.10gb"),
     "'1g.10gb' is not a MIG profile of A100-40GB .*allowed: 1g.5gb, 2g.10gb"),
    (dict(instance_types=["g5.48xlarge"], mig_profile="1g.5gb"),
     r"\['g5.48xlarge'\] have no MIG-capable GPU"),
    (dict(instance_types=["p4d.24xlarge", "p5.48xlarge"], mig_profile="1g.10gb"), "different GPU models"),
    (dict(instance_types=["p4d.24xlarge"], mig_profile="1g.5gb", gpu_time_slicing=2),
     "gpu_time_slicing 2 cannot be combined"),
    (dict(instance_types=["p4d.24xlarge"], mig_profile="1g.5gb", gpus_per_node=0), "needs a GPU pool"),
])
def test_impossible_specs_are_refused(spec, message):
    spec = {"ami_type": NVIDIA, "gpus_per_node": 8, **spec}
    with pytest.raises(ValueError, match=message):
        check_pool_spec(NodePoolSpec(**spec))


def test_an_impossible_spec_registers_nothing(tmp_path):
    program = PROGRAM.split("group(\"odcr\"")[0] + (
        'group("bad", instance_types=["p5.48xlarge"], capacity_type="CAPACITY_BLOCK")\n')
    recording = Recording(stack="test", project="tfserving-platform")
    path = tmp_path / "__main__.py"
    path.write_text(textwrap.dedent(program))
    with pytest.raises(Exception, match="CAPACITY_BLOCK needs a reservation"):
        run_program(path, "test", "tfserving-platform", {}, [], into=recording)
    assert recording.resources == []


def test_reservation_ids_follow_the_ec2_id_format():
    assert reservation_target("RESERVED", "cr-1234abcd") == {"capacity_reservation_id": "cr-1234abcd"}
    with pytest.raises(ValueError):
        reservation_target("RESERVED", "cr-1234abc")  # 7 digits: no EC2 id has that length
    with pytest.raises(ValueError):
        reservation_target("RESERVED", CR_ID.upper())


# --- MIG: labels, autoscaler template, device plugin config --------------------------------------------


def test_mig_nodes_select_the_mixed_config_and_advertise_partitions_to_the_autoscaler(rec):
    group = inputs(rec, NODE_GROUP, "eks-mig")
    assert group["labels"][DEVICE_PLUGIN_CONFIG_LABEL] == MIG_MIXED_CONFIG
    tags = asg_tags(rec, "mig")
    # 8 A100-40GB x 7 x 1g.5gb; a MIG GPU is not offered as nvidia.com/gpu with the mixed strategy.
    assert tags[f"{CA_PREFIX}resources/nvidia.com/mig-1g.5gb"] == "56"
    assert f"{CA_PREFIX}resources/nvidia.com/gpu" not in tags
    assert tags[f"{CA_PREFIX}label/{DEVICE_PLUGIN_CONFIG_LABEL}"] == MIG_MIXED_CONFIG
    assert tags[f"{CA_PREFIX}taint/nvidia.com/gpu"] == "true:NoSchedule"


def test_mig_partition_counts_per_model():
    h100 = NodePoolSpec(["p5.48xlarge"], NVIDIA, gpus_per_node=8, mig_profile="3g.40gb")
    assert autoscaler_node_template_tags("p", h100)[f"{CA_PREFIX}resources/nvidia.com/mig-3g.40gb"] == "16"
    plan = mig_plan(NodePoolSpec(["p4de.24xlarge"], NVIDIA, gpus_per_node=8, mig_profile="1g.10gb"))
    assert (plan.gpu_model, plan.profile.profile_id, plan.per_node, plan.resource) == (
        "A100-80GB", 19, 56, "nvidia.com/mig-1g.10gb")


# The device plugin's config schema, from NVIDIA/k8s-device-plugin v0.17.1 api/config/v1 (config.go Config,
# flags.go CommandLineFlags / PluginCommandLineFlags / GFDCommandLineFlags, sharing.go, replicas.go,
# resources.go, imex.go). Unknown keys are refused here (sigs.k8s.io/yaml would silently drop them).
_RESOURCE = {"type": "object", "additionalProperties": False, "required": ["pattern", "name"],
             "properties": {"pattern": {"type": "string"}, "name": {"type": "string"}}}
_REPLICATED = {"type": "object", "additionalProperties": False, "properties": {
    "renameByDefault": {"type": "boolean"}, "failRequestsGreaterThanOne": {"type": "boolean"},
    "resources": {"type": "array", "items": {
        "type": "object", "additionalProperties": False, "required": ["name", "replicas"], "properties": {
            "name": {"type": "string"}, "rename": {"type": "string"},
            "devices": {}, "replicas": {"type": "integer", "minimum": 1}}}}}}
DEVICE_PLUGIN_CONFIG_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["version"], "properties": {
        "version": {"const": "v1"},
        "flags": {"type": "object", "additionalProperties": False, "properties": {
            "migStrategy": {"enum": ["none", "single", "mixed"]},  # consts.go MigStrategy*
            "failOnInitError": {"type": "boolean"}, "mpsRoot": {"type": "string"},
            "nvidiaDriverRoot": {"type": "string"}, "nvidiaDevRoot": {"type": "string"},
            "gdsEnabled": {"type": "boolean"}, "mofedEnabled": {"type": "boolean"},
            "useNodeFeatureAPI": {"type": "boolean"},
            "deviceDiscoveryStrategy": {"enum": ["auto", "nvml", "tegra"]},
            "plugin": {"type": "object", "additionalProperties": False, "properties": {
                "passDeviceSpecs": {"type": "boolean"}, "deviceListStrategy": {},
                "deviceIDStrategy": {"enum": ["uuid", "index"]}, "cdiAnnotationPrefix": {"type": "string"},
                "nvidiaCTKPath": {"type": "string"}, "containerDriverRoot": {"type": "string"}}},
            "gfd": {"type": "object"}}},
        "resources": {"type": "object", "additionalProperties": False, "properties": {
            "gpus": {"type": "array", "items": _RESOURCE}, "mig": {"type": "array", "items": _RESOURCE}}},
        "sharing": {"type": "object", "additionalProperties": False,
                    "properties": {"timeSlicing": _REPLICATED, "mps": _REPLICATED}},
        "imex": {"type": "object", "additionalProperties": False, "properties": {
            "channelIDs": {"type": "array", "items": {"type": "integer"}}, "required": {"type": "boolean"}}}}}


def test_device_plugin_configs_parse_and_match_the_plugin_schema():
    import jsonschema

    config = device_plugin_config([1, 2, 4], mig=True)
    assert set(config["map"]) == {"default", "time-slicing-2", "time-slicing-4", MIG_MIXED_CONFIG}
    for name, text in config["map"].items():
        doc = yaml.safe_load(text)
        errors = list(jsonschema.Draft202012Validator(DEVICE_PLUGIN_CONFIG_SCHEMA).iter_errors(doc))
        assert not errors, (name, [e.message for e in errors])
    mixed = {"version": "v1", "flags": {"migStrategy": "mixed"}}
    assert yaml.safe_load(config["map"][MIG_MIXED_CONFIG]) == mixed
    # MPS with mixed is refused by the plugin (cmd/nvidia-device-plugin/main.go): the MIG config
    # shares nothing.
    assert "sharing" not in yaml.safe_load(config["map"][MIG_MIXED_CONFIG])
    assert MIG_MIXED_CONFIG not in device_plugin_config([1, 2])["map"]


def test_schema_refuses_what_the_plugin_refuses():
    import jsonschema

    validator = jsonschema.Draft202012Validator(DEVICE_PLUGIN_CONFIG_SCHEMA)
    assert list(validator.iter_errors({"version": "v1", "flags": {"migStrategy": "mixd"}}))
    # Misplaced: sigs.k8s.io/yaml would drop it silently.
    assert list(validator.iter_errors({"version": "v1", "migStrategy": "mixed"}))


def test_every_config_a_node_selects_is_in_the_chart(rec):
    chart = next(r for r in rec.of_type("kubernetes:helm.sh/v4:Chart") if "device-plugin" in r.name)
    configs = chart.inputs["values"]["config"]["map"]
    pools = [NodePoolSpec(["p4d.24xlarge"], NVIDIA, gpus_per_node=8, mig_profile="1g.5gb"),
             NodePoolSpec(["g5.xlarge"], NVIDIA, gpus_per_node=1, gpu_time_slicing=2)]
    for spec in pools:
        assert node_labels("p", spec)[DEVICE_PLUGIN_CONFIG_LABEL] in configs
    assert configs[MIG_MIXED_CONFIG] == "version: v1\nflags:\n  migStrategy: mixed\n"


# --- MIG: the user data and the boot script -----------------------------------------------------------


def mig_spec(**overrides) -> NodePoolSpec:
    return NodePoolSpec(**{"instance_types": ["p4d.24xlarge"], "ami_type": NVIDIA, "gpus_per_node": 8,
                           "mig_profile": "1g.5gb", "fast_image_pull": True, **overrides})


def user_data_parts(document: str) -> list[tuple[str, str]]:
    message = email.message_from_string(document)
    assert message.is_multipart() and message.get_content_type() == "multipart/mixed"
    return [(part.get_content_type(), part.get_payload()) for part in message.get_payload()]


def shell_part(spec: NodePoolSpec) -> str:
    parts = user_data_parts(user_data_document(spec))
    (script,) = [body for kind, body in parts if kind == "text/x-shellscript"]
    return script


def heredoc(text: str, marker: str) -> str:
    match = re.search(rf"<<'{marker}'\n(.*?)\n{marker}\n", text, re.S)
    assert match, marker
    return match.group(1) + "\n"


def test_launch_template_carries_the_mig_user_data(rec):
    lt = inputs(rec, LT, "eks-mig-lt")
    document = base64.b64decode(lt["userData"]).decode()
    assert document == user_data_document(mig_spec())
    # NodeConfig first (nodeadm reads it before cloud-init), then the script cloud-init's final stage runs.
    assert [t for t, _ in user_data_parts(document)] == ["application/node.eks.aws", "text/x-shellscript"]


def test_user_data_without_fast_image_pull_has_only_the_script():
    parts = user_data_parts(user_data_document(mig_spec(fast_image_pull=False)))
    assert [t for t, _ in parts] == ["text/x-shellscript"]
    assert user_data_document(mig_spec(fast_image_pull=False, mig_profile=None)) is None


def test_scripts_are_valid_bash(tmp_path):
    script = shell_part(mig_spec())
    scripts = {"user-data.sh": script, "partition.sh": heredoc(script, "TFPLATFORM_MIG_SCRIPT")}
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
        result = subprocess.run(["bash", "-n", str(tmp_path / name)], capture_output=True, text=True)
        assert result.returncode == 0, (name, result.stderr)


def test_boot_unit_runs_before_the_kubelet_and_is_enabled_before_the_first_run():
    script = shell_part(mig_spec())
    unit = configparser.ConfigParser(strict=False)
    unit.optionxform = str
    unit.read_string(heredoc(script, "TFPLATFORM_MIG_UNIT"))
    # nodeadm-run.service starts the kubelet (amazon-eks-ami nodeadm internal/kubelet/daemon.go); the
    # driver is loaded by nvidia-kmod-load.service; persistenced/fabricmanager hold the GPUs open.
    assert set(unit["Unit"]["Before"].split()) >= {"nodeadm-run.service", "kubelet.service",
                                                   "nvidia-persistenced.service"}
    assert "nvidia-kmod-load.service" in unit["Unit"]["After"].split()
    assert unit["Service"]["Type"] == "oneshot" and unit["Service"]["ExecStart"] == MIG_SCRIPT_PATH
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    lines = script.splitlines()
    assert lines.index(f"systemctl enable {MIG_UNIT}") < lines.index(MIG_SCRIPT_PATH)


# A stand-in for nvidia-smi and systemctl sharing one state file. Profiles and per-GPU limits of an
# A100-SXM4-40GB from NVIDIA's MIG user guide ("A100 MIG profiles"), typed here independently of
# components/gpu/mig.py; compute slices bound the total (7 per GPU).
FAKE_TOOLS = r'''
import json, os, sys
STATE, LOG = os.environ["FAKE_GPU_STATE"], os.environ["FAKE_GPU_LOG"]
PROFILES = {19: ("1g.5gb", 1, 7), 14: ("2g.10gb", 2, 3), 9: ("3g.20gb", 3, 2), 5: ("4g.20gb", 4, 1),
            0: ("7g.40gb", 7, 1)}
tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
state = json.load(open(STATE))
with open(LOG, "a") as log:
    log.write(json.dumps([tool, *args]) + "\n")
def save():
    json.dump(state, open(STATE, "w"))
def fail(message, code):
    print(message, file=sys.stderr); sys.exit(code)
gpus = state["gpus"]
if tool == "systemctl":
    active = state["active_units"]
    if args[:2] == ["is-active", "--quiet"]:
        sys.exit(0 if args[2] in active else 3)
    if args[0] == "stop":
        active.remove(args[1]) if args[1] in active else None
    elif args[0] == "start":
        active.append(args[1])
    elif args[0] == "reboot":
        state["reboot_requested"] = True
    else:
        fail(f"fake systemctl: unsupported {args}", 2)
    save(); sys.exit(0)
if args == ["-L"]:
    for i, gpu in enumerate(gpus):
        print(f"GPU {i}: NVIDIA A100-SXM4-40GB (UUID: GPU-{i:08x}-0000-0000-0000-000000000000)")
        for j, gi in enumerate(g for g in gpu["gis"] if g["ci"]):
            print(f"  MIG {PROFILES[gi['profile']][0]:<11} Device {j:>2}: (UUID: MIG-{i:04x}{j:04x})")
    sys.exit(0)
if args == ["--query-gpu=index", "--format=csv,noheader"]:
    print("\n".join(str(i) for i in range(len(gpus)))); sys.exit(0)
MODE_QUERY = ["--query-gpu=mig.mode.current", "--format=csv,noheader"]
if len(args) == 4 and args[0] == "-i" and args[2:] == MODE_QUERY:
    print(gpus[int(args[1])]["mode"]); sys.exit(0)
if len(args) == 4 and args[0] == "-i" and args[2:] == ["-mig", "1"]:
    i = int(args[1])
    if state["active_units"] or state.get("needs_reset"):
        # Another client holds the GPU: the change waits for a reset (nvidia-smi's pending state).
        gpus[i]["pending"] = True; save()
        print(f"Warning: MIG mode is in pending enable state for GPU 00000000:{i:02x}:00.0:"
              "In use by another client")
        print("All done."); sys.exit(0)
    gpus[i]["mode"] = "Enabled"; save()
    print(f"Enabled MIG Mode for GPU 00000000:{i:02x}:00.0"); print("All done."); sys.exit(0)
if args[:2] == ["mig", "-i"]:
    i, op = int(args[2]), args[3]
    gpu = gpus[i]
    if op == "-dci":
        if not any(g["ci"] for g in gpu["gis"]):
            fail("No compute instances found: Not Found", 6)
        for g in gpu["gis"]:
            g["ci"] = False
    elif op == "-dgi":
        if any(g["ci"] for g in gpu["gis"]):
            fail(f"Unable to destroy GPU instance on GPU {i}: In use by another client", 19)
        if not gpu["gis"]:
            fail("No GPU instances found: Not Found", 6)
        gpu["gis"] = []
    elif op == "-cgi":
        if gpu["mode"] != "Enabled":
            fail(f"Unable to create a GPU instance on GPU {i}: Not supported (MIG mode disabled)", 3)
        ids = [int(x) for x in args[4].split(",")]
        if any(p not in PROFILES for p in ids):
            fail(f"Unable to create a GPU instance on GPU {i}: Invalid Argument (profile)", 2)
        everything = [g["profile"] for g in gpu["gis"]] + ids
        too_many = any(everything.count(p) > PROFILES[p][2] for p in ids)
        if sum(PROFILES[p][1] for p in everything) > 7 or too_many:
            fail(f"Unable to create a GPU instance on GPU {i}: Insufficient Resources", 2)
        with_ci = args[5:] == ["-C"]
        for p in ids:
            gpu["gis"].append({"profile": p, "ci": with_ci})
            print(f"Successfully created GPU instance ID {len(gpu['gis'])} on GPU {i} using profile "
                  f"MIG {PROFILES[p][0]} (ID {p})")
    else:
        fail(f"fake nvidia-smi: unsupported {args}", 2)
    save(); sys.exit(0)
fail(f"fake nvidia-smi: unsupported {args}", 2)
'''


class FakeNode:
    """A p4d.24xlarge as nvidia-smi and systemctl show it: 8 A100-SXM4-40GB."""

    def __init__(self, tmp_path: Path, script: str, **state):
        self.dir = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        tool = self.bin / "fake_tools.py"
        tool.write_text(f"#!{sys.executable}\n" + FAKE_TOOLS)
        tool.chmod(0o755)
        for name in ("nvidia-smi", "systemctl"):
            (self.bin / name).symlink_to(tool)
        self.script = tmp_path / "partition.sh"
        self.script.write_text(script)
        self.state_file, self.log = tmp_path / "state.json", tmp_path / "calls.log"
        self.state_file.write_text(json.dumps({
            "gpus": [{"mode": "Disabled", "gis": []} for _ in range(8)], "active_units": [], **state}))

    @property
    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def edit(self, change) -> None:
        state = self.state
        change(state)
        self.state_file.write_text(json.dumps(state))

    def run(self) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        self.log.write_text("")
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "FAKE_GPU_LOG": str(self.log),
               "FAKE_GPU_STATE": str(self.state_file),
               "TFPLATFORM_MIG_STATE_DIR": str(self.dir / "mig-state")}
        result = subprocess.run(["bash", str(self.script)], env=env, capture_output=True, text=True,
                                timeout=60)
        return result, [json.loads(line) for line in self.log.read_text().splitlines()]


def partition_script(spec: NodePoolSpec | None = None) -> str:
    return heredoc(shell_part(spec or mig_spec()), "TFPLATFORM_MIG_SCRIPT")


def changes(calls: list[list[str]]) -> list[list[str]]:
    """The calls that change something (no queries, listings or is-active checks)."""
    return [c for c in calls if c[0] == "systemctl" and c[1] != "is-active"
            or c[0] == "nvidia-smi" and ("-mig" in c or c[1:2] == ["mig"])]


SEVEN_1G = "19,19,19,19,19,19,19"


def test_script_enables_mig_and_splits_every_gpu(tmp_path):
    node = FakeNode(tmp_path, partition_script())
    result, calls = node.run()
    assert result.returncode == 0, result.stderr
    made = changes(calls)
    for gpu in map(str, range(8)):
        assert made.count(["nvidia-smi", "-i", gpu, "-mig", "1"]) == 1
        assert made.count(["nvidia-smi", "mig", "-i", gpu, "-cgi", SEVEN_1G, "-C"]) == 1
        # MIG mode before partitions on each GPU.
        assert (made.index(["nvidia-smi", "-i", gpu, "-mig", "1"])
                < made.index(["nvidia-smi", "mig", "-i", gpu, "-cgi", SEVEN_1G, "-C"]))
    for gpu in node.state["gpus"]:
        assert gpu["mode"] == "Enabled" and [x["profile"] for x in gpu["gis"]] == [19] * 7
        assert all(x["ci"] for x in gpu["gis"])


def test_second_run_changes_nothing(tmp_path):
    node = FakeNode(tmp_path, partition_script())
    assert node.run()[0].returncode == 0
    before = node.state
    result, calls = node.run()
    assert result.returncode == 0, result.stderr
    assert changes(calls) == []
    assert node.state == before
    assert result.stderr.count("already") == 8


def test_a_gpu_split_otherwise_is_redone_alone(tmp_path):
    node = FakeNode(tmp_path, partition_script())
    node.run()
    node.edit(lambda s: s["gpus"][3].update(gis=[{"profile": 14, "ci": True}] * 3))  # 3 x 2g.10gb
    node.edit(lambda s: s["gpus"][5].update(gis=[{"profile": 19, "ci": False}] * 2))  # instances, no CIs
    result, calls = node.run()
    assert result.returncode == 0, result.stderr
    redone = {c[3] for c in changes(calls)}
    assert redone == {"3", "5"}
    assert [g["profile"] for g in node.state["gpus"][3]["gis"]] == [19] * 7
    assert [g["profile"] for g in node.state["gpus"][5]["gis"]] == [19] * 7


def test_services_holding_the_gpus_are_stopped_around_the_mode_change(tmp_path):
    units = ["nvidia-persistenced.service", "nvidia-fabricmanager.service"]
    node = FakeNode(tmp_path, partition_script(), active_units=list(units))
    result, calls = node.run()
    assert result.returncode == 0, result.stderr
    made = changes(calls)
    first_mode = made.index(["nvidia-smi", "-i", "0", "-mig", "1"])
    for unit in units:
        assert made.index(["systemctl", "stop", unit]) < first_mode < made.index(["systemctl", "start", unit])
    assert sorted(node.state["active_units"]) == sorted(units)
    assert "reboot_requested" not in node.state


def test_a_pending_mode_reboots_once_then_fails_loudly(tmp_path):
    node = FakeNode(tmp_path, partition_script(), needs_reset=True)
    result, calls = node.run()
    assert result.returncode == 0 and node.state["reboot_requested"] is True
    assert not any("-cgi" in c for c in calls)  # no partitions on a GPU whose mode is not on yet
    result, _ = node.run()  # the same after the reboot: no second reboot, an error instead
    assert result.returncode == 1 and "still pending" in result.stderr


def test_h100_profile_ids_reach_nvidia_smi():
    script = partition_script(mig_spec(instance_types=["p5.48xlarge"], mig_profile="3g.40gb"))
    assert "MIG_PROFILE='3g.40gb'" in script and "MIG_PROFILE_ID=9" in script and "MIG_PER_GPU=2" in script
