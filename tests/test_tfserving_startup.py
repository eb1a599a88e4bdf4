"""Does TF Serving start with what we render? Every TF Serving pod of every stack, run through the
stand-in of tests/tfserving_core.py on the versions its sync would leave on disk; then one test per
rule, each breaking it on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.serving.model_server import TRACK_LABEL, server_args
from components.serving.tfserving_config import ServedModel, render_model_config
from stacks.mock_engine import Recording
from tests.conftest import config_volume_name, k8s_object, k8s_objects
from tests.tfserving_core import ReloadError, StartupError, start

LABELS_FLAG = "--allow_version_labels_for_unavailable_models=true"
NOT_AVAILABLE = ("Request to assign label to version {} of model {}, which is not currently available "
                 "for inference")


def tfserving_pods(rec: Recording) -> list[tuple[str, dict, dict, dict]]:
    """(Deployment name, its pod template, the tfserving container, its ConfigMap's data) for every
    TF Serving Deployment of a stack."""
    pods = []
    for deployment in k8s_objects(rec, "Deployment"):
        template = deployment["spec"]["template"]
        server = next((c for c in template["spec"]["containers"] if c["name"] == "tfserving"), None)
        if server is not None:
            data = k8s_object(rec, "ConfigMap", config_volume_name(deployment))["data"]
            pods.append((deployment["metadata"]["name"], template, server, data))
    return pods


def parse(text: str) -> dict[str, model_server_config_pb2.ModelConfig]:
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    return {c.name: c for c in config.model_config_list.config}


def synced_versions(data: dict) -> dict[str, tuple[int, ...]]:
    """The versions sync.sh leaves on disk per model of the spec file (see model_sync.py), the bucket
    holding versions 1..top, top high enough for every labelled or listed version: ``latest N`` keeps
    the newest N, ``all`` everything, ``specific`` the listed ones."""
    labels = {name: list(c.version_labels.values()) for name, c in parse(data["models.config"]).items()}
    synced = {}
    for line in data["sync.models"].splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        model, policy, arg = line.split()
        listed = [int(v) for v in arg.split(",")] if policy == "specific" else []
        newest = int(arg) if policy == "latest" else 0
        bucket = range(1, max(2, newest, *listed, *labels.get(model, [])) + 1)
        synced[model] = tuple(listed if policy == "specific" else bucket[-newest:] if newest else bucket)
    return synced


def publish(root: Path, models_dir: str, versions: dict[str, tuple[int, ...]]) -> Path:
    """Complete versions (a dummy saved_model.pb each) under ``root`` + ``models_dir``."""
    for model, numbers in versions.items():
        for version in numbers:
            path = root / models_dir.lstrip("/") / model / str(version)
            path.mkdir(parents=True)
            (path / "saved_model.pb").write_bytes(b"dummy")
    return root


# 1. What the stacks render starts, and every label resolves ---------------------------------

@pytest.mark.parametrize("stack", ["dev", "prod", "gke"])
def test_every_tf_serving_pod_starts_and_serves_its_labels(stack: str, request, tmp_path: Path):
    pods = tfserving_pods(request.getfixturevalue(stack))
    assert {t["metadata"]["labels"][TRACK_LABEL] for _, t, _, _ in pods} == {"stable", "canary"}
    labelled = 0
    for name, template, server, data in pods:
        mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
        # The stand-in gets the ConfigMap's text: it must be the file TF Serving reads, and the sync
        # must write where TF Serving looks.
        assert f"--model_config_file={mounts['config']}/models.config" in server["args"]
        sync_env = {e["name"]: e["value"] for e in template["spec"]["initContainers"][0]["env"]}
        assert sync_env["MODEL_DIR"] == mounts["models"]
        expected = synced_versions(data)
        root = publish(tmp_path / name, mounts["models"], expected)
        state = start(server["args"], data["models.config"], root)
        assert state.loaded == expected, name
        for model, config in parse(data["models.config"]).items():
            for label, version in config.version_labels.items():
                assert state.resolve(model, label) == version, (name, model, label)
                labelled += 1
    assert labelled, "no stack pod uses version labels: this test would prove nothing about them"


def test_dropping_the_flag_makes_the_real_dev_config_fail(dev: Recording, tmp_path: Path):
    # Regression for pods exiting at startup: ServerCore::ReloadConfig checks labels before any load.
    ((_, _, server, data),) = [p for p in tfserving_pods(dev) if p[0] == "tfserving-default"]
    args = list(server["args"])
    args.remove(LABELS_FLAG)  # ValueError when someone dropped the flag
    root = publish(tmp_path, "/models", synced_versions(data))
    with pytest.raises(StartupError, match=NOT_AVAILABLE.format(1, "digits")):
        start(args, data["models.config"], root)


# 2. One rule at a time ------------------------------------------------------------------------

def models_on_disk(root: Path, **versions: list[int]) -> Path:
    return publish(root, "/models", {name: tuple(v) for name, v in versions.items()})


def pinned(versions: tuple[int, ...], **labels: int) -> str:
    return render_model_config([ServedModel("digits", "specific", versions=versions, labels=labels)])


def test_a_label_on_a_version_not_loaded_yet_is_refused_without_the_flag(tmp_path: Path):
    root = models_on_disk(tmp_path, digits=[1])
    without = [a for a in server_args() if a != LABELS_FLAG]
    with pytest.raises(StartupError, match=NOT_AVAILABLE.format(1, "digits")):
        start(without, pinned((1,), stable=1), root)
    assert start(server_args(), pinned((1,), stable=1), root).resolve("digits", "stable") == 1


# Our pods read their config once; these rules concern servers that poll it (as ours did before).
POLLING = [*server_args(), "--model_config_file_poll_wait_seconds=60"]


def test_with_the_flag_an_existing_label_moves_only_onto_a_loaded_version(tmp_path: Path):
    state = start(POLLING, pinned((1,), stable=1), models_on_disk(tmp_path, digits=[1, 2]))
    moved = pinned((1, 2), stable=2)
    with pytest.raises(ReloadError, match=NOT_AVAILABLE.format(2, "digits")) as refused:
        state.reload(moved)
    # The refused config is stored but never reaches the source, so version 2 never loads and every
    # later poll refuses again: label changes must roll the pods.
    stuck = refused.value.state
    assert (stuck.loaded, stuck.labels) == ({"digits": (1,)}, {"digits": {"stable": 1}})
    with pytest.raises(ReloadError, match=NOT_AVAILABLE.format(2, "digits")):
        stuck.reload(moved)
    # In two steps it works; a new label may name a version that is still loading.
    both = state.reload(pinned((1, 2), stable=1))
    assert both.loaded == {"digits": (1, 2)}
    assert both.reload(moved).resolve("digits", "stable") == 2
    assert state.reload(pinned((1, 2), stable=1, canary=2)).resolve("digits", "canary") == 2


def test_labels_are_refused_when_the_server_disables_them(tmp_path: Path):
    with pytest.raises(StartupError, match="Model version labels are not currently allowed by the server"):
        start(server_args(), pinned((1,), stable=1), models_on_disk(tmp_path, digits=[1]),
              allow_version_labels=False)


def test_a_model_listed_twice_is_refused(tmp_path: Path):
    with pytest.raises(StartupError, match="Illegal to list model digits multiple times in config list"):
        start(server_args(), render_model_config([ServedModel("digits")] * 2),
              models_on_disk(tmp_path, digits=[1]))


def test_a_relative_base_path_is_refused(tmp_path: Path):
    with pytest.raises(StartupError, match=r"Expected model digits to have an absolute path or URI; "
                                           r"got base_path\(\)=models/digits"):
        start(server_args(), render_model_config([ServedModel("digits")], models_dir="models"),
              models_on_disk(tmp_path, digits=[1]))


@pytest.mark.parametrize(("platform", "message"), [
    ("onnx", "Model digits requests unsupported platform onnx"),
    ("", r"Illegal setting neither ModelServerConfig::model_type \(deprecated\) nor "
         r"ModelServerConfig::model_platform, model name is digits"),
])
def test_an_unknown_or_empty_platform_is_refused(platform: str, message: str, tmp_path: Path):
    config = render_model_config([ServedModel("digits")]).replace('"tensorflow"', f'"{platform}"')
    with pytest.raises(StartupError, match=message):
        start(server_args(), config, models_on_disk(tmp_path, digits=[1]))


@pytest.mark.parametrize(("flag", "message"), [
    ("--allow_version_labels=true", "unknown argument: --allow_version_labels=true"),
    ("--enable_batching=yes", "Couldn't interpret value =yes for flag enable_batching."),
    ("--file_system_poll_wait_seconds=30s",
     "Couldn't interpret value 30s for flag file_system_poll_wait_seconds."),
    ("--per_process_gpu_memory_fraction=half",
     "Couldn't interpret value half for flag per_process_gpu_memory_fraction."),
])
def test_an_unknown_flag_or_a_malformed_value_is_refused(flag: str, message: str, tmp_path: Path):
    with pytest.raises(StartupError, match=message):
        start([*server_args(), flag], render_model_config([ServedModel("digits")]),
              models_on_disk(tmp_path, digits=[1]))


def test_a_model_without_versions_never_becomes_available(tmp_path: Path):
    config = render_model_config([ServedModel("digits"), ServedModel("other")])
    root = models_on_disk(tmp_path, digits=[1])
    (root / "models/other/.incoming-1").mkdir(parents=True)  # a copy in progress is not a version
    with pytest.raises(StartupError,
                       match="never finishes starting.*Latest of other.*No versions of servable other"):
        start(server_args(), config, root)
    # A missing base path fails the whole file-system poll: no model loads at all.
    (root / "models/other/.incoming-1").rmdir()
    (root / "models/other").rmdir()
    with pytest.raises(StartupError, match="Latest of digits, other.*Could not find base path /models/other"):
        start(server_args(), config, root)


def test_a_version_directory_without_a_saved_model_does_not_load(tmp_path: Path):
    config = render_model_config([ServedModel("digits")])  # latest 1
    root = models_on_disk(tmp_path, digits=[1])
    state = start(server_args(), config, root)
    (root / "models/digits/2").mkdir()  # e.g. a model copied one directory too deep
    polled = state.poll_files()  # on a file-system poll: the broken version fails, version 1 stays
    assert polled.loaded == {"digits": (1,)} and ("digits", 2) in polled.failed
    with pytest.raises(StartupError, match=r"1 servable\(s\) did not become available: \{\{\{name: digits "
                                           r"version: 2\} due to error: NOT_FOUND: .*saved_model.pb"):
        start(server_args(), config, root)


def test_version_discovery_follows_the_policies(tmp_path: Path):
    root = models_on_disk(tmp_path, newest=[1, 2, 3], every=[1, 2, 3], listed=[1, 3])
    (root / "models/newest/.unselected-4").touch()  # the sync's marks never parse as versions
    (root / "models/newest/.incoming-5").mkdir()
    state = start(server_args(), render_model_config([
        ServedModel("newest", latest_versions=2), ServedModel("every", "all"),
        ServedModel("listed", "specific", versions=(2, 3))]), root)  # 2 missing: only warned about
    assert state.loaded == {"newest": (2, 3), "every": (1, 2, 3), "listed": (3,)}
