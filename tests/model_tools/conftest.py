"""Fixtures for the model tooling tests: one real export per session, moto S3, a GCS emulator."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BUCKET = "models-bucket"


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory):
    """The digits example trained and exported once (real TensorFlow), with 8 warmup records."""
    from model_tools.export import export_digits

    out = tmp_path_factory.mktemp("export") / "digits"
    return export_digits(str(out), epochs=30, seed=0, warmup=8, log=lambda *a: None)


@pytest.fixture
def small_saved_model(tmp_path):
    """A tiny directory shaped like a SavedModel (publish only uploads files, it does not parse them)."""
    root = tmp_path / "sm"
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"\x08\x01" * 100)
    (root / "variables" / "variables.index").write_bytes(b"index" * 10)
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(5000))
    (root / "fingerprint.pb").write_bytes(b"fp")
    return root


def fake_aws_credentials(mp: pytest.MonkeyPatch) -> None:
    """Credentials and region for moto; nothing of the developer's own AWS setup leaks in."""
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        mp.delenv(var, raising=False)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_bucket(monkeypatch):
    """An S3 bucket in moto's in-process mock; yields the bucket URI with the 'models' prefix."""
    import boto3
    from moto import mock_aws

    fake_aws_credentials(monkeypatch)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}/models"


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator running in this process on 127.0.0.1 (ephemeral port, in memory)."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True)
    server._api.daemon = True  # never keep the test process alive
    server.start()
    port = server._api._httpd.server_address[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator, monkeypatch):
    """A fresh bucket on the GCS emulator; yields the bucket URI with the 'models' prefix."""
    from google.cloud import storage

    server, host = gcs_emulator
    server.wipe()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    storage.Client().create_bucket(BUCKET)
    yield f"gs://{BUCKET}/models"


@pytest.fixture(params=["s3", "gs"])
def bucket_uri(request):
    """The same tests against moto S3 and the GCS emulator."""
    return request.getfixturevalue("s3_bucket" if request.param == "s3" else "gcs_bucket")
