"""publish / list against moto's S3 and the in-process GCS emulator (each test runs on both)."""

from __future__ import annotations

import hashlib
import json

import pytest

from model_tools import storage as storage_mod
from model_tools.cli import main
from model_tools.publish import publish, scan_versions
from model_tools.storage import open_storage

MARKER = "_COMPLETE"


def objects(uri: str) -> dict[str, int]:
    backend, base = open_storage(uri)
    return backend.list(base.key() + "/")


def read(uri: str, key: str) -> bytes | None:
    backend, base = open_storage(uri)
    return backend.get_bytes(base.key(key))


def local_hashes(root) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_publish_next_versions_with_marker_and_list(bucket_uri, small_saved_model, capsys):
    for expected in (1, 2):
        assert main(["publish", str(small_saved_model), "--bucket-uri", bucket_uri, "--model", "digits"]) == 0
        assert f"version {expected} published" in capsys.readouterr().out
    keys = objects(bucket_uri)
    hashes = local_hashes(small_saved_model)
    for version in (1, 2):
        marker = json.loads(read(bucket_uri, f"digits/{version}/{MARKER}"))
        assert marker["model"] == "digits" and marker["version"] == version
        assert marker["file_count"] == len(hashes) == 4
        assert {k: v["sha256"] for k, v in marker["files"].items()} == hashes
        assert marker["published_at"].endswith("Z")
        for rel in hashes:
            assert keys[f"models/digits/{version}/{rel}"] == (small_saved_model / rel).stat().st_size
    assert main(["list", "--bucket-uri", bucket_uri, "--model", "digits", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["digits"]
    assert [(v["version"], v["complete"], v["files"]) for v in listed] == [(1, True, 4), (2, True, 4)]
    assert main(["list", "--bucket-uri", bucket_uri]) == 0  # every model under the prefix
    out = capsys.readouterr().out
    assert "digits:" in out and out.count("complete") == 2


class Recording:
    """Wraps a real backend and records the order of writes."""

    def __init__(self, inner):
        self.inner = inner
        self.writes: list[str] = []

    def upload_file(self, path, key, progress=None):
        self.writes.append(key)
        self.inner.upload_file(path, key, progress)

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        self.writes.append(key)
        self.inner.put_bytes(key, data, content_type)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_marker_is_written_last(bucket_uri, small_saved_model):
    backend, _ = open_storage(bucket_uri)
    rec = Recording(backend)
    publish(str(small_saved_model), bucket_uri, "digits", storage=rec, log=lambda *a: None)
    assert len(rec.writes) == 5
    assert rec.writes[-1] == f"models/digits/1/{MARKER}"
    assert all(not k.endswith(MARKER) for k in rec.writes[:-1])


def test_marker_is_last_s3_request(s3_bucket, small_saved_model):
    """The same, seen at the S3 API: the last PutObject/upload request is the marker."""
    backend, _ = open_storage(s3_bucket)
    calls = []
    backend.client.meta.events.register(
        "provide-client-params.s3.*",
        lambda params, model, **kw: calls.append((model.name, params.get("Key"))),
    )
    publish(str(small_saved_model), s3_bucket, "digits", storage=backend, log=lambda *a: None)
    writes = [
        key for op, key in calls if op in ("PutObject", "CreateMultipartUpload", "CompleteMultipartUpload")
    ]
    assert writes[-1] == f"models/digits/1/{MARKER}" and len(writes) == 5
    assert calls.index(("ListObjectsV2", None), 1) < calls.index(("PutObject", writes[-1]))  # verified first


def test_republish_refused_without_force(bucket_uri, small_saved_model, capsys):
    args = [
        "publish",
        str(small_saved_model),
        "--bucket-uri",
        bucket_uri,
        "--model",
        "digits",
        "--version",
        "1",
    ]
    assert main(args) == 0
    marker_before = read(bucket_uri, f"digits/1/{MARKER}")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and "version 2" in err
    assert read(bucket_uri, f"digits/1/{MARKER}") == marker_before


def test_force_replaces_and_removes_stale_files(bucket_uri, small_saved_model, tmp_path, capsys):
    (small_saved_model / "assets.extra").mkdir()
    (small_saved_model / "assets.extra" / "old.txt").write_text("old")
    base = ["--bucket-uri", bucket_uri, "--model", "digits", "--version", "1"]
    assert main(["publish", str(small_saved_model), *base]) == 0
    (small_saved_model / "assets.extra" / "old.txt").unlink()
    (small_saved_model / "saved_model.pb").write_bytes(b"new graph")
    assert main(["publish", str(small_saved_model), *base, "--force"]) == 0
    assert "replacing existing version 1" in capsys.readouterr().out
    keys = objects(bucket_uri)
    assert "models/digits/1/assets.extra/old.txt" not in keys
    assert read(bucket_uri, "digits/1/saved_model.pb") == b"new graph"
    marker = json.loads(read(bucket_uri, f"digits/1/{MARKER}"))
    assert "assets.extra/old.txt" not in marker["files"] and marker["file_count"] == 4


def test_failure_midway_leaves_no_marker(bucket_uri, small_saved_model, monkeypatch, capsys):
    scheme = bucket_uri.split(":")[0]
    backend_cls = storage_mod.BACKENDS[scheme]
    real_upload = backend_cls.upload_file
    calls = {"n": 0}

    def flaky_upload(self, path, key, progress=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise storage_mod.StorageError("connection reset by peer")
        return real_upload(self, path, key, progress)

    monkeypatch.setattr(backend_cls, "upload_file", flaky_upload)
    assert main(["publish", str(small_saved_model), "--bucket-uri", bucket_uri, "--model", "digits"]) == 1
    err = capsys.readouterr().err
    assert "failed after 2/4 files" in err and "connection reset" in err
    assert "NOT published" in err and "--version 1 --force" in err and "Traceback" not in err
    keys = objects(bucket_uri)
    assert any(k.startswith("models/digits/1/") for k in keys)
    assert f"models/digits/1/{MARKER}" not in keys
    backend, base = open_storage(bucket_uri)
    [v1] = scan_versions(backend, base, "digits")
    assert (v1.version, v1.complete) == (1, False)
    assert main(["list", "--bucket-uri", bucket_uri, "--model", "digits"]) == 0
    assert "incomplete" in capsys.readouterr().out

    monkeypatch.setattr(backend_cls, "upload_file", real_upload)
    # An incomplete version still counts: the next automatic version is 2.
    assert main(["publish", str(small_saved_model), "--bucket-uri", bucket_uri, "--model", "digits"]) == 0
    assert f"models/digits/2/{MARKER}" in objects(bucket_uri)
    # Following the printed advice completes version 1.
    assert (
        main(
            [
                "publish",
                str(small_saved_model),
                "--bucket-uri",
                bucket_uri,
                "--model",
                "digits",
                "--version",
                "1",
                "--force",
            ]
        )
        == 0
    )
    assert f"models/digits/1/{MARKER}" in objects(bucket_uri)


def test_explicit_version_then_next(bucket_uri, small_saved_model):
    publish(str(small_saved_model), bucket_uri, "digits", version=7, log=lambda *a: None)
    result = publish(str(small_saved_model), bucket_uri, "digits", log=lambda *a: None)
    assert result.version == 8
    assert result.uri == bucket_uri + "/digits/8/"


def test_progress_bar_shown_when_asked(bucket_uri, small_saved_model, capsys):
    assert (
        main(
            ["publish", str(small_saved_model), "--bucket-uri", bucket_uri, "--model", "digits", "--progress"]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "digits/1" in err and "100%" in err


@pytest.mark.parametrize(
    "uri, message",
    [
        ("http://bucket/models", "unsupported URI scheme 'http://'"),
        ("bucket/models", "invalid bucket URI"),
        ("s3:///models", "no bucket name"),
    ],
)
def test_bad_uri_is_a_clear_error(small_saved_model, capsys, uri, message):
    assert main(["publish", str(small_saved_model), "--bucket-uri", uri, "--model", "digits"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_dir_and_non_saved_model_dir(bucket_uri, tmp_path, capsys):
    assert main(["publish", str(tmp_path / "nope"), "--bucket-uri", bucket_uri, "--model", "digits"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["publish", str(tmp_path / "empty"), "--bucket-uri", bucket_uri, "--model", "digits"]) == 2
    assert "no saved_model.pb" in capsys.readouterr().err
    assert objects(bucket_uri) == {}


def test_invalid_model_name_refused(bucket_uri, small_saved_model, capsys):
    assert main(["publish", str(small_saved_model), "--bucket-uri", bucket_uri, "--model", "Digits/v2"]) == 2
    assert "invalid model name" in capsys.readouterr().err


def test_missing_bucket_is_a_clear_error(bucket_uri, small_saved_model, capsys):
    missing = bucket_uri.replace("models-bucket", "no-such-bucket")
    assert main(["publish", str(small_saved_model), "--bucket-uri", missing, "--model", "digits"]) == 2
    err = capsys.readouterr().err
    assert "no-such-bucket" in err and "Traceback" not in err


def test_real_export_round_trip(s3_bucket, exported_model, tmp_path):
    """The exported SavedModel published and downloaded again is byte-identical."""
    result = publish(exported_model.path, s3_bucket, "digits", log=lambda *a: None)
    backend, base = open_storage(s3_bucket)
    for f in result.files:
        assert hashlib.sha256(backend.get_bytes(base.key("digits", 1, f.rel))).hexdigest() == f.sha256
    assert any(f.rel == "assets.extra/tf_serving_warmup_requests" for f in result.files)


def test_no_aws_credentials_is_a_clear_error(small_saved_model, tmp_path, monkeypatch, capsys):
    """Without credentials (and with the instance-metadata lookup disabled: no network) -> a hint."""
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert main(["list", "--bucket-uri", "s3://some-bucket/models"]) == 2
    err = capsys.readouterr().err
    assert "no AWS credentials found" in err and "Traceback" not in err
