"""A promotion replayed pod by pod: the real sync script (AWS CLI against moto's S3 server), the TF
Serving stand-in (tests/tfserving_core.py: labels checked on reload, versions unloaded when their
directory goes, readiness by version and label) and what each pod mounts, as Kubernetes mounts it.

The README's promote (digits: stable 1 with canary 2 -> versions [2]) rolls the stable pods. At every
step every live pod must serve every model of its own config, with every label resolving: no pod ever
serves fewer models. The control case replays the old design (one ConfigMap updated in place, a 60 s
config poll) and must show the drop the model-lifecycle review found, so the harness can fail.
"""

from __future__ import annotations

import copy
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
import yaml
from google.protobuf import text_format
from moto.server import ThreadedMotoServer
from tensorflow_serving.config import model_server_config_pb2

from model_tools.publish import publish
from stacks.mock_engine import Recording
from stacks.plan import ROOT, plan_stack
from tests import tfserving_core
from tests.conftest import config_volume_name, k8s_object, stack_file_with

BUCKET = "promotion-models"
STABLE = "tfserving-default"
PROMOTED = {"digits": {"versionPolicy": "specific", "versions": [2], "canaryVersion": 2},
            "digits-latest": {"versionPolicy": "latest", "latestVersions": 2}}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server with digits 1, 2 and digits-latest 1, 2 published by model_tools (real markers)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in (*env, "AWS_PROFILE", "AWS_SESSION_TOKEN")}
    os.environ.update(env)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        model = tmp_path_factory.mktemp("savedmodel")
        (model / "variables").mkdir()
        (model / "saved_model.pb").write_bytes(b"\x08\x01" * 64)  # TF Serving's stand-in checks presence
        (model / "variables" / "variables.index").write_bytes(b"index")
        for name in ("digits", "digits-latest"):
            for _ in (1, 2):
                publish(str(model), f"s3://{BUCKET}/models", name, log=lambda *a: None)
        yield {**os.environ}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        boto3.DEFAULT_SESSION = None  # it caches the credentials resolved above: later tests must not see them
        server.stop()


def container(deployment: dict, name: str) -> dict:
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name)


def mounted_after(before: Recording, after: Recording, name: str) -> dict[str, str]:
    """What a pod mounting ConfigMap ``name`` reads once the update is applied: the object of that name
    in the new plan (an in-place update reaches running pods), or, when the new plan has none, the old
    one (Pulumi deletes it only after the Deployment's rollout was awaited)."""
    try:
        return k8s_object(after, "ConfigMap", name)["data"]
    except AssertionError:
        return k8s_object(before, "ConfigMap", name)["data"]


@dataclass
class Pod:
    """One TF Serving pod: its files (the emptyDir and the mounted config), its sync, its server."""

    name: str
    root: Path
    env: dict[str, str]
    args: list[str]
    config: dict[str, str] = field(default_factory=dict)
    state: tfserving_core.ServerState | None = None

    @classmethod
    def of(cls, rec: Recording, deployment: str, root: Path, env: dict[str, str]) -> "Pod":
        dep = k8s_object(rec, "Deployment", deployment)
        sync_env = {e["name"]: e["value"] for e in container(dep, "model-sync")["env"]}
        # The plan's bucket is the mock's; the pods here read the moto bucket the models were published to.
        pod = cls(deployment, root, {**env, **sync_env, "MODEL_SOURCE_URI": f"s3://{BUCKET}/models",
                                     "MODEL_DIR": str(root / "models"),
                                     "MODEL_SPEC_FILE": str(root / "etc" / "sync.models"),
                                     "TMPDIR": str(root / "tmp")}, container(dep, "tfserving")["args"])
        pod.mount(k8s_object(rec, "ConfigMap", config_volume_name(dep))["data"])
        return pod

    def mount(self, data: dict[str, str]) -> None:
        self.config = dict(data)
        (self.root / "etc").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        for key, text in data.items():
            (self.root / "etc" / key).write_text(text)

    def sync(self, prune_after: int = 300) -> None:
        done = subprocess.run(["sh", str(self.root / "etc" / "sync.sh"), "once"], capture_output=True, text=True,
                              timeout=120, env={**self.env, "PRUNE_AFTER_SECONDS": str(prune_after)})
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        self.state = tfserving_core.start(self.args, self.config["models.config"], self.root)

    def config_poll(self) -> None:
        """TF Serving's --model_config_file_poll_wait_seconds round, if the pod runs one."""
        if not any(a.startswith("--model_config_file_poll_wait_seconds=") and not a.endswith("=0")
                   for a in self.args):
            return
        try:
            self.state = self.state.reload(self.config["models.config"])
        except tfserving_core.ReloadError as refused:
            self.state = refused.state

    def serving_problems(self, models_config: str) -> list[str]:
        """Every model of ``models_config`` (the pod's own config at start) must have a loaded version,
        every specific version loaded and every label resolving."""
        config = text_format.Parse(models_config, model_server_config_pb2.ModelServerConfig())
        problems = []
        for m in config.model_config_list.config:
            loaded = self.state.loaded.get(m.name, ())
            if not loaded:
                problems.append(f"{self.name}: {m.name} has no version loaded (answers 404)")
            for v in m.model_version_policy.specific.versions:
                if v not in loaded:
                    problems.append(f"{self.name}: {m.name} version {v} not loaded")
            for label, v in m.version_labels.items():
                try:
                    self.state.resolve(m.name, label)
                except LookupError as err:
                    problems.append(f"{self.name}: {m.name} label {label} ({v}): {err}")
        return problems


def promote(before: Recording, after: Recording, tmp: Path, env: dict[str, str]) -> list[str]:
    """Replay the promotion; return every moment a pod served less than its own config."""
    problems: list[str] = []
    old = Pod.of(before, STABLE, tmp / "old", env)
    old.sync()
    old.start()
    old_config = old.config["models.config"]
    problems += old.serving_problems(old_config)
    assert not problems, problems  # the starting point is healthy

    # The update is applied. The old pod keeps running (maxUnavailable 0) until its replacement is ready.
    old.mount(mounted_after(before, after, config_volume_name(k8s_object(before, "Deployment", STABLE))))
    old.config_poll()
    old.sync(prune_after=0)  # marks what its (possibly new) spec no longer selects
    old.sync(prune_after=0)  # ... and, the grace period over, deletes it
    old.state = old.state.poll_files()
    problems += old.serving_problems(old_config)

    new = Pod.of(after, STABLE, tmp / "new", env)
    new.sync()
    new.start()
    problems += new.serving_problems(new.config["models.config"])
    old.state = old.state.poll_files()  # the old pod still serves until the new one is ready
    problems += old.serving_problems(old_config)
    assert new.state.resolve("digits", "stable") == 2
    return problems


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> tuple[Recording, Recording]:
    dev = plan_stack("dev")
    data = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]["tfserving-platform:servers"]
    data["default"]["models"] = PROMOTED
    path = stack_file_with(tmp_path_factory.mktemp("promoted"), "dev", servers=data)
    return dev, plan_stack("dev", path)


def test_a_promotion_never_leaves_a_pod_serving_fewer_models(plans, s3, tmp_path):
    before, after = plans
    assert promote(before, after, tmp_path, s3) == []


def test_the_old_in_place_config_drops_the_model_on_old_pods(plans, s3, tmp_path):
    """The control: one ConfigMap updated in place and a config poll (as before this fix) must show the
    old pod losing digits: its reload stores the new config, refuses `stable=2` (version 2 not loaded),
    never reaches the source, and the sidecar prunes version 1 under it."""
    before, after = (_in_place(r) for r in plans)
    problems = promote(before, after, tmp_path, s3)
    assert any("tfserving-default: digits has no version loaded" in p for p in problems), problems


def _in_place(rec: Recording) -> Recording:
    """The same plan as the old design rendered it: the config named without its revision, polled."""
    rec = copy.deepcopy(rec)
    for r in rec.resources:
        if r.inputs.get("kind") == "ConfigMap" and r.inputs["metadata"]["name"].startswith(f"{STABLE}-config-"):
            r.inputs["metadata"]["name"] = f"{STABLE}-config"
        if r.inputs.get("kind") == "Deployment" and r.inputs["metadata"]["name"] == STABLE:
            spec = r.inputs["spec"]["template"]["spec"]
            for v in spec["volumes"]:
                if v["name"] == "config":
                    v["configMap"]["name"] = f"{STABLE}-config"
            server = next(c for c in spec["containers"] if c["name"] == "tfserving")
            server["args"] = [*server["args"], "--model_config_file_poll_wait_seconds=60"]
    return rec
