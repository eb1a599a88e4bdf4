"""Image cold start (EKS FastImagePull, GKE image streaming, a secondary boot disk, the Docker Hub mirror)
and the scale-up estimate of ``plan --timing`` (stacks/scale_up.py).

Settings: each key refused where it cannot work, naming the key. Resources: the launch template's user data
is a MIME part whose NodeConfig validates against nodeadm's own CRD schema (vendored in tests/schemas) and
names only feature gates nodeadm knows. The estimate: each feature changes the step it claims to change,
and nothing else.
"""

from __future__ import annotations

import base64
import copy
import email
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from components.aws.node_group import NodePoolSpec, node_user_data
from components.gcp.image_mirror import DockerHubMirrorArgs, mirror_prefix, through_mirror
from stacks import scale_up
from stacks.__main__ import main
from stacks.diff import diff_plans
from stacks.plan import to_json
from tests.test_gcp_settings import L4, SYSTEM, gke
from tests.test_settings import GPU_POOLS, NS, assert_config_error, raw

NODECONFIG = json.loads((Path(__file__).parent / "schemas" / "nodeadm-nodeconfig.json").read_text())
DIGEST = "sha256:" + "a" * 64


def strict(schema: dict) -> dict:
    """The CRD schema with unknown fields refused (as the API server prunes them, nodeadm ignores them)."""
    schema = copy.deepcopy(schema)

    def walk(node: dict) -> None:
        if "properties" in node:
            node.setdefault("additionalProperties", False)
            for child in node["properties"].values():
                walk(child)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])
    walk(schema)
    return schema


def nodeconfigs(user_data: str) -> list[dict]:
    """The NodeConfig documents of a launch template's base64 MIME user data."""
    message = email.message_from_bytes(base64.b64decode(user_data))
    assert message.is_multipart(), "EKS merges only MIME multi-part user data with its own"
    docs = []
    for part in message.walk():
        if part.get_content_type() == "application/node.eks.aws":
            docs.extend(d for d in yaml.safe_load_all(part.get_payload()) if d)
    return docs


def shown(value: object) -> str:
    """A value as the settings errors print it."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def launch_template(rec, pool: str):
    return rec.one("aws:ec2/launchTemplate:LaunchTemplate", f"eks-{pool}-lt")


# --- settings -------------------------------------------------------------------------------------

def test_fast_image_pull_is_refused_where_nodeadm_ignores_it():
    pools = {**GPU_POOLS, "system": {"instanceTypes": ["m6i.large"], "fastImagePull": True}}
    assert_config_error(raw(nodePools=pools), f"{NS}:nodePools.system.fastImagePull", "true",
                        "at least 4 vCPUs and 7 GiB")


@pytest.mark.parametrize("key, value", [("imageStreaming", True),
                                        ("secondaryBootDiskImage", "global/images/serving-cache")])
def test_gke_image_keys_are_refused_on_eks(key, value):
    pools = {**GPU_POOLS, "gpu": {**GPU_POOLS["gpu"], key: value}}
    assert_config_error(raw(nodePools=pools), f"{NS}:nodePools.gpu.{key}", shown(value), "unset on AWS (GKE only)")


@pytest.mark.parametrize("key, value", [("fastImagePull", True), ("rootVolumeThroughput", 600)])
def test_eks_image_keys_are_refused_on_gke(key, value):
    assert_config_error(gke(nodePools={"system": SYSTEM, "gpu": {**L4, key: value}}),
                        f"{NS}:nodePools.gpu.{key}", shown(value), "unset on GKE (EKS only)")


def test_a_secondary_boot_disk_needs_image_streaming():
    pool = {**L4, "imageStreaming": False, "secondaryBootDiskImage": "global/images/serving-cache"}
    assert_config_error(gke(nodePools={"system": SYSTEM, "gpu": pool}), f"{NS}:nodePools.gpu.imageStreaming",
                        "false", "secondaryBootDiskImage")


def test_a_malformed_disk_image_is_refused():
    pool = {**L4, "secondaryBootDiskImage": "serving-cache"}
    assert_config_error(gke(nodePools={"system": SYSTEM, "gpu": pool}),
                        f"{NS}:nodePools.gpu.secondaryBootDiskImage", "'serving-cache'", "global/images")


@pytest.mark.parametrize("throughput, allowed", [(124, "greater than or equal to 125"),
                                                 (1001, "less than or equal to 1000")])
def test_root_volume_throughput_is_within_gp3_limits(throughput, allowed):
    pools = {**GPU_POOLS, "gpu": {**GPU_POOLS["gpu"], "rootVolumeThroughput": throughput}}
    assert_config_error(raw(nodePools=pools), f"{NS}:nodePools.gpu.rootVolumeThroughput", str(throughput), allowed)


# --- EKS: the launch template ----------------------------------------------------------------------

def test_gpu_pools_pull_in_parallel_and_cpu_pools_do_not(dev):
    gpu = launch_template(dev, "gpu").inputs
    (config,) = nodeconfigs(gpu["userData"])
    errors = [e.message for e in jsonschema.Draft7Validator(strict(NODECONFIG["schema"])).iter_errors(config)]
    assert not errors, errors
    assert (config["apiVersion"], config["kind"]) == (f"node.eks.aws/{NODECONFIG['version']}", "NodeConfig")
    assert config["spec"]["featureGates"] == {"FastImagePull": True}
    assert set(config["spec"]["featureGates"]) <= set(NODECONFIG["featureGates"])
    assert gpu["blockDeviceMappings"][0]["ebs"]["throughput"] == 600
    system = launch_template(dev, "system").inputs
    assert "userData" not in system and "throughput" not in system["blockDeviceMappings"][0]["ebs"]


def test_a_misspelt_feature_gate_would_fail_the_schema_check():
    user_data = node_user_data(NodePoolSpec(instance_types=["g5.xlarge"], ami_type="x", fast_image_pull=True))
    text = base64.b64decode(user_data).decode().replace("FastImagePull", "FastImagePul")
    (config,) = nodeconfigs(base64.b64encode(text.encode()).decode())
    assert not set(config["spec"]["featureGates"]) <= set(NODECONFIG["featureGates"])
    config["spec"]["featureGate"] = config["spec"].pop("featureGates")
    assert list(jsonschema.Draft7Validator(strict(NODECONFIG["schema"])).iter_errors(config))


def test_fast_image_pull_can_be_turned_off(plan_with):
    pools = yaml.safe_load((Path(__file__).parent.parent / "Pulumi.dev.yaml").read_text())["config"][
        f"{NS}:nodePools"]
    pools["gpu"]["fastImagePull"] = False
    rec = plan_with(nodePools=pools)
    ebs = launch_template(rec, "gpu").inputs
    assert "userData" not in ebs and "throughput" not in ebs["blockDeviceMappings"][0]["ebs"]


# --- GKE: streaming, the boot disk, the mirror ------------------------------------------------------

def test_gke_gpu_pool_streams_images_from_the_docker_hub_mirror(gke):
    pools = {r.inputs["name"]: r.inputs["nodeConfig"] for r in gke.of_type("gcp:container/nodePool:NodePool")}
    assert pools["gpu"]["gcfsConfig"] == {"enabled": True}
    assert "gcfsConfig" not in pools["system"]
    (repo,) = gke.of_type("gcp:artifactregistry/repository:Repository")
    assert (repo.inputs["format"], repo.inputs["mode"], repo.inputs["location"]) == (
        "DOCKER", "REMOTE_REPOSITORY", "us-central1")
    assert repo.inputs["remoteRepositoryConfig"]["dockerRepository"] == {"publicRepository": "DOCKER_HUB"}
    prefix = f"us-central1-docker.pkg.dev/example-project/{repo.inputs['repositoryId']}/"
    servers = [r for r in gke.of_type("kubernetes:apps/v1:Deployment")
               if any(c["name"] == "tfserving" for c in r.inputs["spec"]["template"]["spec"]["containers"])]
    assert servers
    for deployment in servers:
        (serving,) = [c for c in deployment.inputs["spec"]["template"]["spec"]["containers"] if c["name"] == "tfserving"]
        assert serving["image"].startswith(prefix + "tensorflow/serving:"), serving["image"]
        # The first pull through the repository needs it: the Deployment waits for it.
        assert repo.urn in deployment.dependencies


def test_the_mirror_keeps_the_digest_and_leaves_other_registries_alone():
    prefix = mirror_prefix(DockerHubMirrorArgs(project="p-123456", region="europe-west4", repository_id="c-docker-hub"))
    assert through_mirror(f"docker.io/tensorflow/serving:2.18.0-gpu@{DIGEST}", prefix) == (
        f"europe-west4-docker.pkg.dev/p-123456/c-docker-hub/tensorflow/serving:2.18.0-gpu@{DIGEST}")
    assert through_mirror("gcr.io/x/y:1", prefix) == "gcr.io/x/y:1"


def test_no_mirror_means_docker_hub_images(plan_with):
    rec = plan_with("gke-dev", dockerHubMirror=False)
    assert not rec.of_type("gcp:artifactregistry/repository:Repository")
    images = [c["image"] for r in rec.of_type("kubernetes:apps/v1:Deployment")
              for c in r.inputs["spec"]["template"]["spec"]["containers"] if c["name"] == "tfserving"]
    assert images and all(i.startswith("docker.io/tensorflow/serving:") for i in images)


def test_docker_hub_mirror_is_gcp_only():
    assert_config_error(raw(dockerHubMirror=False), f"{NS}:dockerHubMirror", "false", "unset on AWS (GCP only)")


def test_a_secondary_boot_disk_is_an_image_cache_and_changing_it_replaces_the_pool(plan_with, gke):
    pools = yaml.safe_load((Path(__file__).parent.parent / "Pulumi.gke-dev.yaml").read_text())["config"][
        f"{NS}:nodePools"]
    pools["gpu"]["secondaryBootDiskImage"] = "global/images/tfserving-cache"
    rec = plan_with("gke-dev", nodePools=pools)
    (gpu,) = [r for r in rec.of_type("gcp:container/nodePool:NodePool") if r.inputs["name"] == "gpu"]
    assert gpu.inputs["nodeConfig"]["secondaryBootDisks"] == [
        {"diskImage": "global/images/tfserving-cache", "mode": "CONTAINER_IMAGE_CACHE"}]
    changes = {c.name: c for c in diff_plans(to_json(gke), to_json(rec), "gke-dev", "test").changes}
    assert changes["gke-gpu"].op == "replace", changes["gke-gpu"]
    assert [f.path for f in changes["gke-gpu"].fields if f.replaces] == [
        "nodeConfig.secondaryBootDisks[0].diskImage", "nodeConfig.secondaryBootDisks[0].mode"]


def test_turning_image_streaming_off_rolls_the_nodes(plan_with, gke):
    pools = yaml.safe_load((Path(__file__).parent.parent / "Pulumi.gke-dev.yaml").read_text())["config"][
        f"{NS}:nodePools"]
    pools["gpu"]["imageStreaming"] = False
    rec = plan_with("gke-dev", nodePools=pools)
    change = {c.name: c for c in diff_plans(to_json(gke), to_json(rec), "gke-dev", "test").changes}["gke-gpu"]
    assert change.op == "update" and [f.path for f in change.fields if f.rolls_nodes] == [
        "nodeConfig.gcfsConfig.enabled"], change


# --- the scale-up estimate ------------------------------------------------------------------------

def estimates(rec, **sizes: float) -> dict[str, scale_up.ServerEstimate]:
    return {e.server: e for e in scale_up.estimate(to_json(rec), sizes)}


def steps(s: scale_up.Steps) -> dict[str, float]:
    return dict(s.parts)


def test_every_figure_has_a_source():
    for table in (scale_up.FIGURES, scale_up.IMAGE_BYTES):
        for key, figure in table.items():
            assert figure.value > 0 and len(figure.source) > 20, key


def test_a_new_node_costs_the_node_and_the_images_a_warm_one_does_not(dev):
    default = estimates(dev)["default"]
    cold, warm = steps(default.cold_node), steps(default.warm_node)
    # dev's GPU server sleeps outside office hours and holds requests: the add-on's push wakes it.
    assert set(cold) == {"wake from zero", "node", "sync image", "models", "serving image", "load", "ready"}
    assert cold["wake from zero"] == warm["wake from zero"] == 0.7
    assert "node" not in warm and "serving image" not in warm and "sync image" not in warm
    assert cold["node"] == 10 + 60 + 20  # scan + EC2 + device plugin (a GPU pool)
    assert warm["load"] == cold["load"] and warm["ready"] == cold["ready"] == 2 + 10  # startup + readiness periods
    assert default.cold_node.total > default.warm_node.total


def test_fast_image_pull_shortens_the_serving_image_pull_only_with_a_fast_volume(dev):
    pool = scale_up._pools(to_json(dev)["resources"])["gpu"]
    image = "docker.io/tensorflow/serving:2.18.0-gpu"
    plain, _ = scale_up.pull_seconds(image, scale_up.Pool("aws", "gpu", "g5.xlarge", True))
    fast, note = scale_up.pull_seconds(image, pool)
    assert pool.fast_image_pull and pool.root_volume_mib_s == 600 and note is None
    assert fast == pytest.approx(plain * 0.68)
    slow_disk, note = scale_up.pull_seconds(image, scale_up.Pool("aws", "gpu", "g5.xlarge", True, True, 125))
    assert slow_disk == plain and "600" in note


def test_image_streaming_helps_only_artifact_registry_images():
    pool = scale_up.Pool("gcp", "gpu", "g2-standard-8", True, image_streaming=True)
    streamed, note = scale_up.pull_seconds(f"us-central1-docker.pkg.dev/p/r/tensorflow/serving:2.18.0-gpu@{DIGEST}", pool)
    whole, why = scale_up.pull_seconds(f"docker.io/tensorflow/serving:2.18.0-gpu@{DIGEST}", pool)
    assert note is None and streamed < whole / 3 and "not in Artifact Registry" in why
    cached, _ = scale_up.pull_seconds("docker.io/anything:1", scale_up.Pool("gcp", "gpu", "x", True, True, 1, True, True))
    assert cached == 0


def test_model_size_scales_the_model_steps(dev):
    small, big = estimates(dev, default=2 ** 30)["default"], estimates(dev, default=4 * 2 ** 30)["default"]
    assert steps(big.cold_node)["models"] == pytest.approx(4 * steps(small.cold_node)["models"])
    # The pre-pulled serving image: a longer download leaves less of its pull to wait for
    # (tests/test_image_prepull.py has the formula). The CPU server pulls its image after the models.
    assert steps(big.cold_node)["serving image"] == 0 < steps(small.cold_node)["serving image"]
    small, big = estimates(dev, cpu=2 ** 30)["cpu"], estimates(dev, cpu=4 * 2 ** 30)["cpu"]
    assert steps(big.cold_node)["models"] == pytest.approx(4 * steps(small.cold_node)["models"])
    assert steps(big.cold_node)["serving image"] == steps(small.cold_node)["serving image"] > 0


def test_a_scaled_to_zero_server_waits_for_the_keda_poll(dev):
    plan = copy.deepcopy(to_json(dev))
    name = next(r["inputs"]["metadata"]["name"] for r in plan["resources"]
                if r["type"] == "kubernetes:apps/v1:Deployment" and r["name"] == "tfserving-default-deployment")
    plan["resources"] = [r for r in plan["resources"] if not r["type"].endswith(":ScaledObject")] + [{
        "type": "kubernetes:keda.sh/v1alpha1:ScaledObject", "name": "x", "custom": True, "inputs": {
            "spec": {"scaleTargetRef": {"name": name}, "minReplicaCount": 0, "pollingInterval": 15}}}]
    default = {e.server: e for e in scale_up.estimate(plan, {})}["default"]
    assert steps(default.cold_node)["wake from zero"] == 15 == steps(default.warm_node)["wake from zero"]
    # With held requests the add-on pushes the wake-up instead of waiting for the poll.
    plan["resources"][-1]["inputs"]["spec"]["triggers"] = [{"type": "external-push"}]
    default = {e.server: e for e in scale_up.estimate(plan, {})}["default"]
    assert steps(default.cold_node)["wake from zero"] == 0.7


def test_plan_timing_prints_the_scale_up_estimate(capsys):
    assert main(["plan", "--stack", "gke-dev", "--quiet", "--timing"]) == 0
    out = capsys.readouterr().out
    assert "scale-up of one more replica" in out
    assert "default on pool gpu (g2-standard-8, GCP):" in out
    assert "no free node:" in out and "warm node (free):" in out


def test_the_readme_quotes_the_estimate():
    """README's scale-up figures are what `plan --timing` prints for the GPU server of dev and gke-dev."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Cold start and idle cost"):readme.index("## Review a change")]
    quoted = [(m, w) for m, w in zip(*[iter(re.findall(r"\*\*([0-9.]+ (?:min|s))\*\*", section))] * 2)][:2]
    assert len(quoted) == 2, section
    for stack, (cold, warm) in zip(("dev", "gke-dev"), quoted):
        settings = scale_up.stack_settings(stack)
        from stacks.plan import plan_stack
        (default,) = [e for e in scale_up.estimate(to_json(plan_stack(stack)), scale_up.model_bytes(settings))
                      if e.server == "default"]
        assert (scale_up._minutes(default.cold_node.total), scale_up._minutes(default.warm_node.total)) == (
            cold, warm), stack


def test_the_readme_quotes_dev_idle_cost(dev):
    """The idle figure is the cost estimate's floor for dev (its GPU pool at zero nodes)."""
    from stacks.cost import estimate as cost

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (idle,) = re.findall(r"idle, dev costs \*\*\$([0-9,]+)/month\*\*", readme)
    assert f"{cost(to_json(dev)).monthly[0]:,.0f}" == idle


def test_each_step_is_its_documented_formula(dev):
    """The dev CPU server on the system pool (m6i.large, gp3 at 125 MiB/s, 500m sync CPU), step by step."""
    f = scale_up.f
    plan = copy.deepcopy(to_json(dev))  # edited below: never the session's recording
    gib = 2 ** 30
    cpu = {e.server: e for e in scale_up.estimate(plan, {"cpu": 2 * gib})}["cpu"]
    # The CLI's CPU would take 17.2 s; m6i.large's 0.781 Gbps baseline network takes longer: it binds.
    bucket = max(2 * f("sync_cpu_s_per_gib") / 0.5, 2 * gib / (0.781e9 / 8))
    assert bucket == 2 * gib / (0.781e9 / 8)
    verify = 2 * gib / (f("sha256_bytes_per_core_s") * 0.5)
    local = 2 * gib / (125 * 2 ** 20 / 2)
    load = f("load_fixed_cpu_s") + 2 * gib / f("load_bytes_per_s")
    assert steps(cpu.cold_node) == pytest.approx({
        "node": f("autoscaler_scan_s") + f("eks_node_s"),  # a CPU pool: no GPU to wait for
        "sync image": scale_up.IMAGE_BYTES["aws-cli"].value / f("pull_bytes_per_s"),
        "models": bucket + verify + local,
        "serving image": scale_up.IMAGE_BYTES["tensorflow/serving:"].value / f("pull_bytes_per_s"),
        "load": load, "ready": 2 + 10})
    assert steps(cpu.warm_node) == pytest.approx({"models": local + verify, "load": load, "ready": 2 + 10})
    assert cpu.notes == ()
    # Without the cache every start copies from the bucket, and the plan says so.
    for r in plan["resources"]:
        for c in ((r.get("inputs") or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("initContainers") or []:
            c["env"] = [e for e in c.get("env") or [] if e["name"] != "MODEL_CACHE_DIR"]
    uncached = {e.server: e for e in scale_up.estimate(plan, {"cpu": 2 * gib})}["cpu"]
    assert steps(uncached.cold_node)["models"] == steps(uncached.warm_node)["models"] == pytest.approx(bucket + verify)
    assert uncached.notes == ("no node-local model cache: a pod on a warm node copies every version from the bucket "
                              "again",)
    assert uncached.pool.name == "system" and not uncached.pool.gpu


def test_quantities_and_rendering():
    assert scale_up._cpu_cores("500m") == 0.5 and scale_up._cpu_cores("2") == 2.0 and scale_up._cpu_cores(None) == 1.0
    assert scale_up._minutes(89) == "89 s" and scale_up._minutes(90) == "1.5 min"
    s = scale_up.Steps()
    s.add("node", 90.4)
    s.add("nothing", 0.2)
    s.add("load", 12)
    assert s.total == pytest.approx(102.6) and s.render() == "node 90s + load 12s"
    estimate = scale_up.ServerEstimate("default", scale_up.Pool("aws", "gpu", "g5.xlarge", True), s, s, ("a note",))
    assert scale_up.render([estimate]).splitlines()[1:] == [
        "  default on pool gpu (g5.xlarge, AWS):",
        "    no free node:      1.7 min = node 90s + load 12s",
        "    warm node (free):  1.7 min = node 90s + load 12s",
        "    note: a note"]


def test_the_node_network_caps_every_pull_and_download(monkeypatch):
    """A node slower than the per-stream pull rate pulls at its network's speed, with or without parallel
    pull, streamed or whole; an unknown type gets the table's default."""
    image = "docker.io/tensorflow/serving:2.18.0-gpu"
    size = scale_up.IMAGE_BYTES["-gpu"].value
    network = 0.2e9 / 8
    monkeypatch.setitem(scale_up.NODE_NETWORK_BYTES_PER_S, "x9.tiny", scale_up.Figure(network, "a test's"))
    slow = scale_up.Pool("aws", "gpu", "x9.tiny", True)
    assert slow.network_bytes_per_s == network < scale_up.f("pull_bytes_per_s")
    assert scale_up.pull_seconds(image, slow)[0] == pytest.approx(size / network)
    fast_pull = scale_up.Pool("aws", "gpu", "x9.tiny", True, fast_image_pull=True, root_volume_mib_s=600)
    assert scale_up.pull_seconds(image, fast_pull)[0] == pytest.approx(size / network)  # no faster than the NIC
    streamed = scale_up.Pool("gcp", "gpu", "x9.tiny", True, image_streaming=True)
    assert scale_up.pull_seconds(f"us-docker.pkg.dev/p/r/tensorflow/serving:2.18.0-gpu@{DIGEST}", streamed)[0] == \
        pytest.approx(scale_up.f("stream_start_s") + size * scale_up.f("stream_read_fraction") / network)
    # A g5.xlarge's 2.5 Gbps baseline is above the per-stream rate: the rate binds, as before.
    g5 = scale_up.Pool("aws", "gpu", "g5.xlarge", True)
    assert scale_up.pull_seconds(image, g5)[0] == pytest.approx(size / scale_up.f("pull_bytes_per_s"))
    unknown = scale_up.Pool("aws", "gpu", "x9.unknown", True)
    assert unknown.network_bytes_per_s == scale_up.DEFAULT_NODE_NETWORK_BYTES_PER_S.value
    for figure in scale_up.NODE_NETWORK_BYTES_PER_S.values():
        assert figure.source
