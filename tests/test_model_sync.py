"""The serving sync script, run for real: POSIX sh + the AWS CLI against moto's S3 server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from components.model_contract import COMPLETION_MARKER
from components.serving.model_sync import SYNC_SCRIPT

BUCKET = "models-bucket"


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def publish(client, model: str, version: int, complete: bool) -> None:
    prefix = f"models/{model}/{version}"
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/saved_model.pb", Body=b"graph")
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/variables/variables.index", Body=b"index")
    if complete:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{COMPLETION_MARKER}", Body=b"{}")


def run_sync(tmp_path: Path, endpoint: str, source: str, models: str = "digits") -> subprocess.CompletedProcess:
    script = tmp_path / "sync.sh"
    script.write_text(SYNC_SCRIPT)
    env = {**os.environ, "MODEL_SOURCE_URI": source, "MODEL_DIR": str(tmp_path / "models"),
           "MODEL_NAMES": models, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
           "TMPDIR": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["sh", str(script), "once"], env=env, capture_output=True, text=True, timeout=120)


def test_copies_only_complete_versions(tmp_path, s3, s3_endpoint):
    publish(s3, "digits", 1, complete=True)
    publish(s3, "digits", 2, complete=False)
    result = run_sync(tmp_path, s3_endpoint, f"s3://{BUCKET}/models")
    assert result.returncode == 0, result.stderr
    models = tmp_path / "models" / "digits"
    assert (models / "1" / "saved_model.pb").read_bytes() == b"graph"
    assert (models / "1" / "variables" / "variables.index").exists()
    assert not (models / "2").exists()
    assert "copied digits/1" in result.stderr
    assert not list(models.glob(".incoming-*"))

    # Once its marker is written, version 2 arrives on the next pass; version 1 is not copied again.
    s3.put_object(Bucket=BUCKET, Key=f"models/digits/2/{COMPLETION_MARKER}", Body=b"{}")
    again = run_sync(tmp_path, s3_endpoint, f"s3://{BUCKET}/models")
    assert again.returncode == 0, again.stderr
    assert (models / "2" / "saved_model.pb").exists()
    assert "copied digits/2" in again.stderr and "copied digits/1" not in again.stderr


def test_model_prefixes_do_not_leak_into_each_other(tmp_path, s3, s3_endpoint):
    publish(s3, "big-digits", 5, complete=True)
    publish(s3, "digits", 1, complete=True)
    result = run_sync(tmp_path, s3_endpoint, f"s3://{BUCKET}/models", models="digits")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "models" / "digits").iterdir()) == ["1"]


def test_empty_model_is_reported_not_failed(tmp_path, s3, s3_endpoint):
    result = run_sync(tmp_path, s3_endpoint, f"s3://{BUCKET}/models")
    assert result.returncode == 0, result.stderr
    assert f"no complete version of digits under s3://{BUCKET}/models/digits/ yet" in result.stderr


def test_unreachable_bucket_fails_with_a_clear_line(tmp_path, s3, s3_endpoint):
    result = run_sync(tmp_path, s3_endpoint, "s3://no-such-bucket/models")
    assert result.returncode == 1
    assert "cannot list s3://no-such-bucket/models/digits/" in result.stderr
