"""Publish to serving, measured (issue 15, part 5): from the ``_COMPLETE`` marker to AVAILABLE.

A new version is published with the real ``python -m model_tools publish`` to moto's S3 server; the
real sync script runs in ``loop`` mode with the environment the platform renders for the dev stack's
default server (its sync interval, volume bound and node cache: all defaults, asserted below); the TF
Serving stand-in (tests/tfserving_core.py) is started with that server's rendered flags and polls the
models directory every ``--file_system_poll_wait_seconds`` as rendered. A CountingProxy between the
publisher, the sync and moto timestamps the marker's PUT, so the clock starts when the version is
published (the marker exists in the bucket) and stops when the stand-in has it AVAILABLE.

The publish lands just after a sync round, so the measured time is close to the worst case: a whole
interval passes before the next listing sees it. The worst case is computed too (interval + the
measured round that copied it + the poll interval + the measured load) and both must stay under
:data:`TARGET_SECONDS`. The result goes to ``build/publish-to-serving.json`` (docs/model-cache.md
quotes it). Not modelled: a real SavedModel's load time (the stand-in loads at once; TF Serving's load
plus warmup is model-dependent and comes on top), and a real bucket's latency (moto is local).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest

from components.model_contract import COMPLETION_MARKER
from components.serving.model_server import FILE_SYSTEM_POLL_SECONDS
from components.serving.model_sync import DEFAULT_SYNC_INTERVAL_SECONDS, PRUNE_AFTER_SECONDS
from components.serving.tfserving_config import ServedModel, render_model_config
from stacks.mock_engine import Recording
from stacks.plan import ROOT
from stacks.serving_settings import Server
from tests import tfserving_core
from tests.conftest import k8s_object

from .sync_helpers import CountingProxy, Sync, s3_endpoint, wait_for  # noqa: F401 (s3_endpoint: a fixture)

TARGET_SECONDS = 45
"""Issue 15: the defaults must bring a published version to AVAILABLE within this."""
MODEL_BYTES = 8 * 2**20
"""Size of the published test model (a SavedModel's files: saved_model.pb plus variable shards)."""
RESULT = ROOT / "build" / "publish-to-serving.json"


def rendered_pod(dev: Recording) -> tuple[dict[str, str], list[str]]:
    """The default server's sync environment and TF Serving arguments as the dev stack renders them."""
    spec = k8s_object(dev, "Deployment", "tfserving-default")["spec"]["template"]["spec"]
    sidecar = next(c for c in spec["initContainers"] if c["name"] == "model-sync")
    server = next(c for c in spec["containers"] if c["name"] == "tfserving")
    return {e["name"]: e["value"] for e in sidecar["env"]}, list(server["args"])


def saved_model(directory: Path, version: int) -> Path:
    """A SavedModel-shaped directory of MODEL_BYTES (the stand-in and publish need saved_model.pb)."""
    (directory / "variables").mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(f"graph digits {version}".encode() * 1000)
    shard = MODEL_BYTES // 4
    for index in range(4):
        (directory / "variables" / f"variables.data-{index:05d}-of-00004").write_bytes(os.urandom(shard))
    (directory / "variables" / "variables.index").write_bytes(b"index")
    return directory


def publish(env: dict[str, str], directory: Path, uri: str) -> str:
    result = subprocess.run([sys.executable, "-m", "model_tools", "publish", str(directory), "--bucket-uri", uri,
                             "--model", "digits", "--no-progress"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_published_version_is_available_within_the_target(dev: Recording, s3_endpoint, tmp_path):
    env, args = rendered_pod(dev)
    interval = int(env["SYNC_INTERVAL_SECONDS"])
    poll = int(next(a for a in args if a.startswith("--file_system_poll_wait_seconds=")).split("=")[1])
    # What the platform renders is the default of every knob involved, not a value the dev stack set.
    assert interval == Server.model_fields["sync_interval_seconds"].default == DEFAULT_SYNC_INTERVAL_SECONDS
    assert poll == FILE_SYSTEM_POLL_SECONDS
    assert env["MODEL_CACHE_DIR"] and Server.model_fields["model_cache"].default is True
    # TF Serving must have moved to the new version before the sync deletes the old one.
    assert PRUNE_AFTER_SECONDS > 10 * poll

    bucket = f"models-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    proxy = CountingProxy(s3_endpoint)
    uri = f"s3://{bucket}/models"
    publisher = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        publisher.pop(var, None)
    cache = tmp_path / "node-cache"
    cache.mkdir()
    pod = Sync(tmp_path / "pod", proxy.url, bucket, cache=cache)
    pod.write_spec(ServedModel("digits", version_policy="latest", latest_versions=1))
    # The rendered environment, with this machine's paths for the pod's directories.
    rendered = {k: v for k, v in env.items() if k not in ("MODEL_SOURCE_URI", "MODEL_DIR", "MODEL_SPEC_FILE",
                                                          "HOME", "MODEL_CACHE_DIR")}
    sync_env = {**rendered, "MODEL_SOURCE_URI": uri}
    try:
        assert "version 1" in publish(publisher, saved_model(tmp_path / "v1", 1), uri)
        started = pod.run("wait", **sync_env)
        assert started.returncode == 0, started.stderr

        # TF Serving starts on version 1 with the server's rendered flags; it then polls the directory.
        config = render_model_config([ServedModel("digits", version_policy="latest", latest_versions=1)],
                                     models_dir=str(pod.models))
        state = tfserving_core.start(args, config, Path("/"))
        assert state.loaded["digits"] == (1,)
        available: dict[str, float] = {}
        stop = threading.Event()

        def serve():
            nonlocal state
            while not stop.wait(poll):
                before = time.monotonic()
                state = state.poll_files()
                if 2 in state.loaded.get("digits", ()) and "at" not in available:
                    available.update(at=time.time(), load=time.monotonic() - before)

        appeared: dict[str, float] = {}

        def watch():
            while not stop.wait(0.02):
                if (pod.models / "digits" / "2").is_dir() and "at" not in appeared:
                    appeared["at"] = time.time()

        threads = [threading.Thread(target=serve), threading.Thread(target=watch)]
        for thread in threads:
            thread.start()
        looping = pod.start("loop", **sync_env)
        try:
            # Publish right after the loop's first round has listed the bucket: the next listing is a
            # whole interval away, so this measures (close to) the worst case, not a lucky one.
            first_listing = proxy.mark()
            wait_for(lambda: len(proxy.listings(first_listing)) >= 1, 30, "the loop's first listing")
            time.sleep(1)
            assert "version 2" in publish(publisher, saved_model(tmp_path / "v2", 2), uri)
            (marker,) = [r for r in proxy.since() if r.method == "PUT" and r.key == f"models/digits/2/{COMPLETION_MARKER}"]
            wait_for(lambda: "at" in available, interval + poll + 60, "version 2 AVAILABLE in the stand-in")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert looping.poll() is None, pod.log(looping)
        log = pod.log(looping)
    finally:
        pod.stop_all()
        proxy.stop()

    seconds = available["at"] - marker.finished
    # The round that copied version 2: from its listing (the first after the marker) to the rename.
    listing = min((r for r in proxy.listings() if r.started > marker.finished), key=lambda r: r.started)
    copy_round = appeared["at"] - listing.started
    worst = interval + copy_round + poll + available["load"]
    result = {
        "seconds_marker_to_available": round(seconds, 2),
        "seconds_marker_to_copied": round(appeared["at"] - marker.finished, 2),
        "seconds_copied_to_available": round(available["at"] - appeared["at"], 2),
        "worst_case_seconds": round(worst, 2),
        "worst_case": {"sync_interval": interval, "copy_round": round(copy_round, 2), "file_system_poll": poll,
                       "load": round(available["load"], 3)},
        "target_seconds": TARGET_SECONDS,
        "model_bytes": MODEL_BYTES,
        "settings": {"SYNC_INTERVAL_SECONDS": interval, "--file_system_poll_wait_seconds": poll,
                     "MODEL_CACHE_DIR": "set", "MODELS_VOLUME_BYTES": env["MODELS_VOLUME_BYTES"]},
        "note": "moto (local S3) and the TF Serving stand-in (instant load): a real bucket's latency and a real "
                "model's load and warmup come on top",
    }
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\npublish to serving: {seconds:.1f} s from the _COMPLETE marker to AVAILABLE "
          f"(worst case {worst:.1f} s = interval {interval} + copy round {copy_round:.1f} + poll {poll} "
          f"+ load {available['load']:.3f}); {RESULT}")
    assert re.search(r"model-sync: copied digits/2 \(downloaded into the node cache\)", log), log
    assert 0 < seconds < TARGET_SECONDS, result
    assert worst < TARGET_SECONDS, result
