"""publish / list against moto's S3 and the in-process GCS emulator (each test runs on both).

Conditional writes: moto honours S3's ``If-None-Match: *`` (a second create gets 412
PreconditionFailed); gcp-storage-emulator ignores ``ifGenerationMatch`` (it overwrites), so the
lost-race tests run on S3 and the GCS side is checked at the client call and its error mapping.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from model_tools import storage as storage_mod
from model_tools.cli import main
from model_tools.errors import ToolError
from model_tools.publish import publish, scan_versions
from model_tools.storage import ObjectExists, open_storage

MARKER = "_COMPLETE"
CLAIM = "_PUBLISHING"


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
    """Wraps a real backend and records the order of writes and deletes."""

    def __init__(self, inner):
        self.inner = inner
        self.writes: list[str] = []

    def upload_file(self, path, key, progress=None):
        self.writes.append(key)
        self.inner.upload_file(path, key, progress)

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        self.writes.append(key)
        self.inner.put_bytes(key, data, content_type)

    def create_exclusive(self, key, data, content_type="application/octet-stream"):
        self.writes.append(key)
        self.inner.create_exclusive(key, data, content_type)

    def delete(self, keys):
        self.writes.extend(f"delete {k}" for k in keys)
        self.inner.delete(keys)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_marker_is_written_last(bucket_uri, small_saved_model):
    """Claim the number, upload, drop the claim, marker last: a complete version holds only its files."""
    backend, _ = open_storage(bucket_uri)
    rec = Recording(backend)
    publish(str(small_saved_model), bucket_uri, "digits", storage=rec, log=lambda *a: None)
    prefix = "models/digits/1/"
    assert rec.writes[0] == prefix + CLAIM
    assert rec.writes[-2:] == [f"delete {prefix}{CLAIM}", prefix + MARKER]
    assert sorted(rec.writes[1:-2]) == [prefix + rel for rel in sorted(local_hashes(small_saved_model))]
    assert sorted(objects(bucket_uri)) == sorted([prefix + MARKER, *rec.writes[1:-2]])


def test_marker_is_last_s3_request(s3_bucket, small_saved_model):
    """The same, seen at the S3 API: the last write is the marker, claim and marker are conditional."""
    backend, _ = open_storage(s3_bucket)
    calls = []
    backend.client.meta.events.register(
        "provide-client-params.s3.*",
        lambda params, model, **kw: calls.append((model.name, params.get("Key"), params.get("IfNoneMatch"))),
    )
    publish(str(small_saved_model), s3_bucket, "digits", storage=backend, log=lambda *a: None)
    writes = [
        (key, cond) for op, key, cond in calls
        if op in ("PutObject", "CreateMultipartUpload", "CompleteMultipartUpload")
    ]
    assert writes[0] == (f"models/digits/1/{CLAIM}", "*") and writes[-1] == (f"models/digits/1/{MARKER}", "*")
    assert len(writes) == 6 and all(cond is None for _, cond in writes[1:-1])
    ops = [op for op, _, _ in calls]
    marker_put = ops.index("PutObject", len(ops) - 1)
    # Listed to verify, claim deleted, then the marker.
    assert ops.index("ListObjectsV2", 1) < ops.index("DeleteObjects") < marker_put


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
    assert "already exists" in err and "published" in err and "version 2" in err
    assert read(bucket_uri, f"digits/1/{MARKER}") == marker_before


def test_force_refuses_to_replace_a_published_version(bucket_uri, small_saved_model, capsys):
    """Immutability: pods that copied version 1 keep its bytes, so --force must not change them."""
    base = ["--bucket-uri", bucket_uri, "--model", "digits", "--version", "1"]
    assert main(["publish", str(small_saved_model), *base]) == 0
    before = {key: read(bucket_uri, key.removeprefix("models/")) for key in objects(bucket_uri)}
    capsys.readouterr()
    (small_saved_model / "saved_model.pb").write_bytes(b"new graph")
    assert main(["publish", str(small_saved_model), *base, "--force"]) == 2
    err = capsys.readouterr().err
    assert "is published" in err and "immutable" in err and "not even with --force" in err
    assert "publish it as version 2" in err and "Traceback" not in err
    assert {key: read(bucket_uri, key.removeprefix("models/")) for key in objects(bucket_uri)} == before


def test_force_cleans_up_an_incomplete_version(bucket_uri, small_saved_model, capsys):
    """A failed upload (files, a stale claim, no marker) is cleaned up and published with --force."""
    backend, base_uri = open_storage(bucket_uri)
    backend.put_bytes(base_uri.key("digits", 1, "assets.extra", "old.txt"), b"old")
    backend.put_bytes(base_uri.key("digits", 1, "saved_model.pb"), b"old graph")
    backend.put_bytes(base_uri.key("digits", 1, CLAIM), b"{}")
    base = ["--bucket-uri", bucket_uri, "--model", "digits", "--version", "1"]
    assert main(["publish", str(small_saved_model), *base]) == 2
    assert "incomplete" in capsys.readouterr().err
    assert main(["publish", str(small_saved_model), *base, "--force"]) == 0
    assert "cleaning up incomplete version 1" in capsys.readouterr().out
    keys = objects(bucket_uri)
    assert "models/digits/1/assets.extra/old.txt" not in keys and f"models/digits/1/{CLAIM}" not in keys
    assert read(bucket_uri, "digits/1/saved_model.pb") == (small_saved_model / "saved_model.pb").read_bytes()
    marker = json.loads(read(bucket_uri, f"digits/1/{MARKER}"))
    assert "assets.extra/old.txt" not in marker["files"] and marker["file_count"] == 4


def test_a_second_marker_write_loses_on_s3(s3_bucket):
    """moto honours If-None-Match: the second create of the same key fails and changes nothing."""
    backend, base = open_storage(s3_bucket)
    key = base.key("digits", 1, MARKER)
    backend.create_exclusive(key, b"first")
    with pytest.raises(ObjectExists, match="already exists"):
        backend.create_exclusive(key, b"second")
    assert backend.get_bytes(key) == b"first"


def test_gcs_create_exclusive_sends_the_precondition(gcs_bucket, monkeypatch):
    """The emulator ignores ifGenerationMatch, so check the call and the 412 mapping instead."""
    from google.api_core import exceptions as gex
    from google.cloud.storage import Blob

    backend, base = open_storage(gcs_bucket)
    sent = []
    real = Blob.upload_from_string
    def recording(self, data, **kw):
        sent.append(kw)
        return real(self, data, **kw)

    monkeypatch.setattr(Blob, "upload_from_string", recording)
    backend.create_exclusive(base.key("digits", 1, MARKER), b"first")
    assert sent[-1]["if_generation_match"] == 0

    def precondition_failed(self, data, **kw):
        raise gex.PreconditionFailed("conditionNotMet")

    monkeypatch.setattr(Blob, "upload_from_string", precondition_failed)
    with pytest.raises(ObjectExists, match="already exists"):
        backend.create_exclusive(base.key("digits", 1, MARKER), b"second")


class Racing(Recording):
    """Lets "another publisher" write ``key`` just before this publish creates it."""

    def __init__(self, inner, key: str, body: bytes):
        super().__init__(inner)
        self.key, self.body = key, body

    def create_exclusive(self, key, data, content_type="application/octet-stream"):
        if key == self.key:
            self.inner.create_exclusive(key, self.body)
        super().create_exclusive(key, data, content_type)


def test_concurrent_publish_loses_at_the_marker(s3_bucket, small_saved_model):
    """Both took version 1; the other one's marker landed first: this one fails, theirs is kept."""
    backend, _ = open_storage(s3_bucket)
    theirs = b'{"published_by": "the other publisher"}'
    racing = Racing(backend, f"models/digits/1/{MARKER}", theirs)
    with pytest.raises(ToolError) as lost:
        publish(str(small_saved_model), s3_bucket, "digits", storage=racing, log=lambda *a: None)
    assert lost.value.exit_code == 1
    message = str(lost.value)
    assert "another publish wrote the _COMPLETE marker of version 1" in message and "NOT published" in message
    assert "Publish again to get a new version number" in message and "--version" not in message
    assert backend.get_bytes(f"models/digits/1/{MARKER}") == theirs


def test_concurrent_publish_loses_at_the_claim(s3_bucket, small_saved_model):
    """Both listed the bucket before either claimed version 1: the second claim fails, nothing is uploaded."""
    backend, _ = open_storage(s3_bucket)
    racing = Racing(backend, f"models/digits/1/{CLAIM}", b"{}")
    with pytest.raises(ToolError) as lost:
        publish(str(small_saved_model), s3_bucket, "digits", storage=racing, log=lambda *a: None)
    assert lost.value.exit_code == 1
    assert "another publish took version 1" in str(lost.value) and "Publish again" in str(lost.value)
    assert list(objects(s3_bucket)) == [f"models/digits/1/{CLAIM}"]  # only the winner's claim


@pytest.mark.parametrize(
    "name", ['say "hi".txt', "back\\slash", " leading", "trailing ", "caf\u00e9", "tab\there"]
)
def test_file_names_the_sync_cannot_read_are_refused(bucket_uri, small_saved_model, capsys, name):
    """The marker must list every name unescaped (the sync reads it with awk and sh)."""
    (small_saved_model / name).write_text("x")
    assert main(["publish", str(small_saved_model), "--bucket-uri", bucket_uri, "--model", "digits"]) == 2
    assert "the serving sync cannot handle" in capsys.readouterr().err
    assert objects(bucket_uri) == {}


@pytest.mark.parametrize("name", [MARKER, CLAIM, ".model-sync"])
def test_reserved_names_are_refused(bucket_uri, small_saved_model, capsys, name):
    (small_saved_model / name).write_text("x")
    assert main(["publish", str(small_saved_model), "--bucket-uri", bucket_uri, "--model", "digits"]) == 2
    assert f"a file named {name}, a name the bucket layout reserves" in capsys.readouterr().err
    assert objects(bucket_uri) == {}


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
    # boto3 caches one default session per process, with whatever credentials an earlier test resolved.
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    assert main(["list", "--bucket-uri", "s3://some-bucket/models"]) == 2
    err = capsys.readouterr().err
    assert "no AWS credentials found" in err and "Traceback" not in err
