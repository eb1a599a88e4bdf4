"""The README's "ship a model" path end to end, each step a real command in its own process.

export -> inspect -> publish (to moto's S3 server) -> list -> promote (in a copy of Pulumi.dev.yaml,
then validated by the stack settings) -> the serving sync script pulls the published version with
the real AWS CLI -> smoke against a TF Serving stand-in that loads exactly the synced files.
This is the one command that proves both sides of the bucket contract agree:
``.venv/bin/python -m pytest tests/model_tools/test_model_ship_end_to_end.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from components.serving.model_server import server_args
from components.serving.model_sync import SYNC_SCRIPT, render_sync_spec
from components.serving.tfserving_config import ServedModel, render_model_config
from stacks.config import parse_settings
from stacks.plan import ROOT
from stacks.platform import batching_config, served_models
from stacks.stack_files import load_stack_config
from tests import tfserving_core

from .tfserving_fake import FakeTFServing, LoadedModel

BUCKET = "ship-models"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        env.pop(var, None)
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


def tool(env: dict, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "model_tools", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_ship_a_model(tmp_path, s3_env):
    uri = f"s3://{BUCKET}/models"
    model_dir = tmp_path / "digits"

    exported = tool(s3_env, "export", "--out", str(model_dir), "--epochs", "15", "--warmup", "5")
    assert "held-out accuracy" in exported
    inspected = tool(s3_env, "inspect", str(model_dir))
    assert "serving_default" in inspected and ":predict" in inspected

    assert "version 1" in tool(s3_env, "publish", str(model_dir), "--bucket-uri", uri, "--model", "digits",
                               "--no-progress")
    assert "version 2" in tool(s3_env, "publish", str(model_dir), "--bucket-uri", uri, "--model", "digits",
                               "--no-progress")
    listing = tool(s3_env, "list", "--bucket-uri", uri, "--model", "digits")
    assert "1" in listing and "2" in listing

    stack_file = tmp_path / "Pulumi.dev.yaml"
    shutil.copy(ROOT / "Pulumi.dev.yaml", stack_file)
    promoted = tool(s3_env, "promote", "--stack-file", str(stack_file), "--model", "digits", "--version", "2",
                    "--label", "stable", "--bucket-uri", uri, "--pin")
    assert "pulumi up --stack dev" in promoted
    settings = parse_settings(load_stack_config(ROOT / "Pulumi.yaml", stack_file, "dev").config)
    digits = settings.servers["default"].models["digits"]
    assert digits.labels["stable"] == 2 and 2 in digits.versions

    # The serving side: the sync script copies the published versions with the real AWS CLI.
    script = tmp_path / "sync.sh"
    script.write_text(SYNC_SCRIPT)
    spec = tmp_path / "sync.models"
    spec.write_text(render_sync_spec([ServedModel("digits", version_policy="all")]))
    synced = tmp_path / "serving-models"
    sync = subprocess.run(["sh", str(script), "once"], capture_output=True, text=True, timeout=300,
                          env={**s3_env, "MODEL_SOURCE_URI": uri, "MODEL_DIR": str(synced),
                               "MODEL_SPEC_FILE": str(spec), "TMPDIR": str(tmp_path)})
    assert sync.returncode == 0, sync.stderr
    assert sorted(p.name for p in (synced / "digits").iterdir() if not p.name.startswith(".")) == ["1", "2"]
    assert (synced / "digits" / "2" / "assets.extra" / "tf_serving_warmup_requests").exists()

    # TF Serving starts on the synced files with the flags and model config the promoted stack renders
    # (the startup rules of tests/tfserving_core.py: labels assigned before any version loads, ...);
    # the stand-in then serves exactly what that server would.
    server = settings.servers["default"]
    config = render_model_config([m for m in served_models(server) if m.name == "digits"], models_dir=str(synced))
    args = server_args(batching_config(server) is not None, settings.gpu_memory_fraction(server))
    started = tfserving_core.start(args, config, Path("/"))
    assert started.resolve("digits", "stable") == 2
    fake = FakeTFServing(LoadedModel(str(synced / "digits" / "2")), "digits")
    fake.states = {v: "AVAILABLE" for v in started.loaded["digits"]}
    fake.labels = dict(started.labels["digits"])
    rest = fake.start_rest()
    try:
        smoke = tool(s3_env, "smoke", "--rest-url", rest, "--model", "digits", "-n", "5")
    finally:
        fake.stop()
    assert "smoke test passed" in smoke
    assert fake.rest_predicts == 5
