"""Image pre-pull (components/serving/image_prepull.py): a DaemonSet that pulls a server's images onto each
of its nodes once the node is Ready, and what the scale-up estimate credits it with.

Resources: the DaemonSet runs exactly where the server's pods may (same node selector and tolerations),
pulls exactly their images, meets Pod Security ``restricted``, is selected by nothing of the server's and
is not awaited. Defaults: on for GPU servers whose pool pulls the image whole (EKS; GKE without streaming
from Artifact Registry), off for CPU servers; ``imagePrePull`` overrides both ways. The pods' script is run
with a real ``/bin/sh``: it sleeps, and leaves at once on SIGTERM. The estimate: the pull overlaps the GPU
wait and the steps before it, and nothing else changes.
"""

from __future__ import annotations

import copy
import signal
import subprocess
import time

import pytest

from components.serving.image_prepull import COMPONENT, SLEEP
from components.serving.model_server import APP_LABEL, RUN_AS, pull_policy
from stacks import scale_up
from stacks.plan import to_json
from tests.conftest import k8s_object, k8s_objects
from tests.test_cold_start import steps
from tests.test_serving import dev_servers

PREPULL = "tfserving-default-prepull"


def pod(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def prepulls(recording) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in k8s_objects(recording, "DaemonSet")
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == COMPONENT}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_the_daemonset_pulls_the_servers_images_where_its_pods_run(dev):
    daemon_set, deployment = k8s_object(dev, "DaemonSet", PREPULL), k8s_object(dev, "Deployment", "tfserving-default")
    spec, serving = pod(daemon_set), pod(deployment)
    images = [c["image"] for c in serving["containers"] + serving["initContainers"]]
    assert [c["image"] for c in spec["containers"]] == list(dict.fromkeys(images))
    assert len(spec["containers"]) == 2  # TF Serving's GPU image and the sync image
    assert spec["nodeSelector"] == serving["nodeSelector"] == {"tfplatform.io/node-pool": "gpu"}
    assert spec["tolerations"] == serving["tolerations"]
    assert daemon_set["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    # Awaited exactly when the server's Deployment is (dev's first up: not; a later up: both).
    assert (daemon_set["metadata"]["annotations"].get("pulumi.com/skipAwait")
            == deployment["metadata"].get("annotations", {}).get("pulumi.com/skipAwait"))
    # The GPU servers of dev only: the CPU server runs on the system pool.
    assert set(prepulls(dev)) == {PREPULL}


def test_a_later_up_awaits_it_like_the_deployment():
    from stacks.plan import plan_stack

    later = plan_stack("dev", previous_outputs={"stackDeployed": True})
    for name in (PREPULL, "tfserving-default"):
        kind = "DaemonSet" if name == PREPULL else "Deployment"
        assert "pulumi.com/skipAwait" not in (k8s_object(later, kind, name)["metadata"].get("annotations") or {})


def test_the_pods_meet_restricted_and_ask_for_almost_nothing(dev):
    spec = pod(k8s_object(dev, "DaemonSet", PREPULL))
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["automountServiceAccountToken"] is False and "serviceAccountName" not in spec
    for container in spec["containers"]:
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
        assert container["command"] == ["/bin/sh", "-c", SLEEP]
        # The -gpu image says NVIDIA_VISIBLE_DEVICES=all and EKS GPU nodes run the NVIDIA runtime by default.
        assert container["env"] == [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]
        assert "ports" not in container and "volumeMounts" not in container
        assert container["resources"]["requests"] == {"cpu": "1m", "memory": "8Mi"}
        assert "nvidia.com/gpu" not in container["resources"]["limits"]  # placed before the GPUs are advertised


def test_nothing_of_the_server_selects_the_prepull_pods(dev):
    """Services, PodDisruptionBudgets, ScaledObjects' targets and the server's NetworkPolicies select by label:
    none may pick a pod that only sleeps (a Service would send it requests, a PDB would count it)."""
    pod_labels = k8s_object(dev, "DaemonSet", PREPULL)["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[APP_LABEL] == PREPULL
    for service in k8s_objects(dev, "Service"):
        assert not selects(service["spec"].get("selector") or {}, pod_labels), service["metadata"]["name"]
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for obj in k8s_objects(dev, kind):
            selector = (obj["spec"].get("selector") or obj["spec"].get("podSelector") or {}).get("matchLabels") or {}
            assert not selects(selector, pod_labels), obj["metadata"]["name"]


@pytest.mark.parametrize("server_key, expected", [
    ({}, {PREPULL}),                                    # default: the GPU server only
    ({"imagePrePull": False}, set()),                   # switched off
])
def test_image_pre_pull_setting_on_the_gpu_server(plan_with, server_key, expected):
    assert set(prepulls(plan_with(**dev_servers(**server_key)))) == expected


def test_a_cpu_server_may_ask_for_it(plan_with):
    import yaml

    from stacks.plan import ROOT
    data = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]["tfserving-platform:servers"]
    data["cpu"]["imagePrePull"] = True
    recording = plan_with(servers=data)
    assert set(prepulls(recording)) == {PREPULL, "tfserving-cpu-prepull"}
    cpu = pod(k8s_object(recording, "DaemonSet", "tfserving-cpu-prepull"))
    assert cpu["nodeSelector"] == {"tfplatform.io/node-pool": "system"} and cpu.get("tolerations") is None
    assert cpu["containers"][0]["image"].split("@")[0] == "docker.io/tensorflow/serving:2.18.0"


def test_gke_streams_from_artifact_registry_so_no_prepull_unless_pulled_whole(gke, plan_with):
    assert prepulls(gke) == {}
    # Without the Docker Hub mirror the image is not in Artifact Registry: pulled whole, so pre-pulled.
    whole = plan_with("gke-dev", dockerHubMirror=False)
    (daemon_set,) = prepulls(whole).values()
    assert pod(daemon_set)["containers"][0]["image"].startswith("docker.io/tensorflow/serving:2.18.0-gpu")


def test_the_pods_script_sleeps_and_leaves_at_once_on_sigterm():
    process = subprocess.Popen(["/bin/sh", "-c", SLEEP])
    try:
        time.sleep(0.5)
        assert process.poll() is None  # still sleeping
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - started < 2  # not the whole sleep: the trap ends it
    finally:
        process.kill()


# --- the estimate ---------------------------------------------------------------------------------
def estimate(plan: dict) -> scale_up.ServerEstimate:
    return {e.server: e for e in scale_up.estimate(plan, {})}["default"]


def test_the_estimate_overlaps_the_pull_with_the_gpu_wait_and_the_steps_before_it(dev):
    f = scale_up.f
    plan = to_json(dev)
    with_prepull = estimate(plan)
    without = copy.deepcopy(plan)
    without["resources"] = [r for r in without["resources"]
                            if ((r.get("inputs") or {}).get("metadata") or {}).get("name") != PREPULL]
    plain = estimate(without)
    before, after = steps(plain.cold_node), steps(with_prepull.cold_node)
    gpu_wait = f("eks_gpu_ready_s")
    sync = max(0.0, before["sync image"] - gpu_wait)
    assert after["sync image"] == pytest.approx(sync) == 0
    assert after["serving image"] == pytest.approx(
        max(0.0, before["serving image"] - gpu_wait - sync - before["models"]))
    assert 0 < after["serving image"] < before["serving image"]
    # Only the two pulls change; a warm node pulls nothing either way.
    assert {k: v for k, v in after.items() if "image" not in k} == {k: v for k, v in before.items() if "image" not in k}
    assert steps(with_prepull.warm_node) == steps(plain.warm_node)


def test_a_prepull_of_other_images_is_no_credit(dev):
    plan = copy.deepcopy(to_json(dev))
    for r in plan["resources"]:
        if ((r.get("inputs") or {}).get("metadata") or {}).get("name") == PREPULL:
            for container in r["inputs"]["spec"]["template"]["spec"]["containers"]:
                container["image"] = "docker.io/library/busybox:1.36"
    edited = steps(estimate(plan).cold_node)
    f = scale_up.f
    whole = scale_up.IMAGE_BYTES["-gpu"].value / f("pull_bytes_per_s") * f("parallel_pull_factor")  # FastImagePull
    assert edited["serving image"] == pytest.approx(whole) and edited["sync image"] > 0


# --- what the API server and Pulumi make of it --------------------------------------------------------
def test_the_daemonset_is_valid_selects_its_own_pods_and_rolls_all_at_once(dev):
    """The strict Kubernetes schema; the API server refuses a DaemonSet whose selector misses its template's
    labels; a new image is pulled on every node at once; a pod leaves within its short grace period."""
    from tests.test_manifests import validation_failures

    daemon_set = k8s_object(dev, "DaemonSet", PREPULL)
    assert validation_failures([daemon_set]) == []
    spec = daemon_set["spec"]
    template = spec["template"]
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": PREPULL}}
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["labels"] == daemon_set["metadata"]["labels"] == {
        "app.kubernetes.io/name": PREPULL, "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/part-of": "default"}
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}}
    pod = template["spec"]
    assert pod["terminationGracePeriodSeconds"] == 5 and pod["enableServiceLinks"] is False
    for index, container in enumerate(pod["containers"]):
        assert container["name"] == f"image-{index}"
        assert container["imagePullPolicy"] == pull_policy(container["image"])
        assert container["resources"]["limits"] == {"cpu": "10m", "memory": "16Mi"}


def test_the_component_is_a_child_of_its_server_and_owns_the_daemonset(dev):
    (component,) = [r for r in dev.resources if r.type == "tfplatform:serving:ImagePrePull"]
    (server,) = [r for r in dev.resources if r.urn == component.parent]
    assert component.name == PREPULL and server.type == "tfplatform:serving:TfServing"
    (daemon_set,) = [r for r in dev.resources if r.parent == component.urn]
    assert daemon_set.type == "kubernetes:apps/v1:DaemonSet" and daemon_set.name == f"{PREPULL}-daemonset"


def test_no_image_no_daemonset():
    from components.serving.image_prepull import ImagePrePull, ImagePrePullArgs

    with pytest.raises(ValueError, match="ImagePrePull x: images must not be empty"):
        ImagePrePull("x", ImagePrePullArgs(namespace="serving", server="s", images=(), node_selector={}))


def test_a_sync_image_pulled_by_the_pod_itself_adds_to_the_head_start(dev):
    """Only TF Serving's image in the DaemonSet: the pod pulls the sync image itself, after the GPU wait, and
    the pre-pull keeps running through that pull too."""
    f = scale_up.f
    plan = copy.deepcopy(to_json(dev))
    for r in plan["resources"]:
        if ((r.get("inputs") or {}).get("metadata") or {}).get("name") == PREPULL:
            spec = r["inputs"]["spec"]["template"]["spec"]
            spec["containers"] = [c for c in spec["containers"] if "-gpu" in c["image"]]
    partial = steps(estimate(plan).cold_node)
    whole = scale_up.IMAGE_BYTES["-gpu"].value / f("pull_bytes_per_s") * f("parallel_pull_factor")
    assert partial["sync image"] > 1
    assert partial["serving image"] == pytest.approx(
        max(0.0, whole - f("eks_gpu_ready_s") - partial["sync image"] - partial["models"]))
