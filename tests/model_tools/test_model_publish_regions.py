"""Publishing one model version to every region's bucket (docs/multi-region.md): moto S3 with two buckets
in two regions. Each bucket gets the version under one number, with its own ``_COMPLETE`` written last in
that bucket; nothing is uploaded anywhere when the number is taken in any bucket; a failure part-way
names what is published and the command that finishes the rest."""

from __future__ import annotations

import json

import pytest

from model_tools.cli import main
from model_tools.errors import ToolError
from model_tools.publish import publish, publish_to_all, scan_versions
from model_tools.storage import open_storage
from tests.model_tools.conftest import fake_aws_credentials
from tests.model_tools.test_model_publish import CLAIM, MARKER, Recording, local_hashes, objects, read

EAST, WEST = "models-us-east-1", "models-us-west-2"


@pytest.fixture
def two_buckets(monkeypatch):
    import boto3
    from moto import mock_aws

    fake_aws_credentials(monkeypatch)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=EAST)
        boto3.client("s3", region_name="us-west-2").create_bucket(
            Bucket=WEST, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield f"s3://{EAST}/models", f"s3://{WEST}/models"


def quiet(*_args):
    pass


def test_the_cli_publishes_one_version_to_both_buckets(two_buckets, small_saved_model, capsys):
    east, west = two_buckets
    args = ["publish", str(small_saved_model), "--bucket-uri", east, "--bucket-uri", west, "--model", "digits"]
    assert main(args) == 0
    assert "version 1 published" in capsys.readouterr().out
    hashes = local_hashes(small_saved_model)
    markers = [json.loads(read(uri, f"digits/1/{MARKER}")) for uri in two_buckets]
    for uri, marker in zip(two_buckets, markers):
        assert {k: v["sha256"] for k, v in marker["files"].items()} == hashes
        assert sorted(objects(uri)) == sorted([f"models/digits/1/{MARKER}", *(f"models/digits/1/{r}" for r in hashes)])
    # Again: version 2 in both.
    assert main(args) == 0
    for uri in two_buckets:
        backend, base = open_storage(uri)
        assert [(v.version, v.complete) for v in scan_versions(backend, base, "digits")] == [(1, True), (2, True)]


def test_each_buckets_marker_is_written_last_in_that_bucket(two_buckets, small_saved_model):
    recorders = [Recording(open_storage(uri)[0]) for uri in two_buckets]
    publish_to_all(str(small_saved_model), list(two_buckets), "digits", storages=recorders, log=quiet)
    for rec in recorders:
        prefix = "models/digits/1/"
        assert rec.writes[0] == prefix + CLAIM
        assert rec.writes[-2:] == [f"delete {prefix}{CLAIM}", prefix + MARKER]
    # The second bucket is written only after the first one is complete (its marker exists).
    assert recorders[0].writes[-1].endswith(MARKER) and recorders[1].writes


def test_the_number_is_the_next_free_one_over_all_buckets(two_buckets, small_saved_model):
    east, west = two_buckets
    for _ in range(2):
        publish(str(small_saved_model), west, "digits", log=quiet)
    results = publish_to_all(str(small_saved_model), [east, west], "digits", log=quiet)
    assert [r.version for r in results] == [3, 3]
    backend, base = open_storage(east)
    assert [v.version for v in scan_versions(backend, base, "digits")] == [3]


def test_a_number_published_in_one_bucket_uploads_nothing_anywhere(two_buckets, small_saved_model):
    east, west = two_buckets
    publish(str(small_saved_model), west, "digits", version=5, log=quiet)
    with pytest.raises(ToolError) as err:
        publish_to_all(str(small_saved_model), [east, west], "digits", version=5, log=quiet)
    assert "version 5 of model 'digits'" in str(err.value) and "never overwritten" in str(err.value)
    assert objects(east) == {}


def test_a_failure_in_the_second_bucket_names_the_command_that_finishes_it(two_buckets, small_saved_model,
                                                                           monkeypatch):
    east, west = two_buckets
    backend_west = open_storage(west)[0]
    real_upload = backend_west.upload_file
    calls = {"n": 0}

    def flaky(path, key, progress=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("connection reset")
        real_upload(path, key, progress)

    monkeypatch.setattr(backend_west, "upload_file", flaky)
    with pytest.raises(ToolError) as err:
        publish_to_all(str(small_saved_model), [east, west], "digits", storages=[None, backend_west], log=quiet)
    message = str(err.value)
    assert f"before this one: {east}/digits/1/" in message
    assert f"--bucket-uri {west} --model digits --version 1" in message
    assert read(east, f"digits/1/{MARKER}") is not None and read(west, f"digits/1/{MARKER}") is None
    # The inner error asks for --force (its own incomplete upload); with it the rerun finishes the region.
    assert "--force" in message.split("Buckets published")[0]
    monkeypatch.undo()
    fake_aws_credentials(monkeypatch)
    assert main(["publish", str(small_saved_model), "--bucket-uri", west, "--model", "digits", "--version", "1",
                 "--force"]) == 0
    assert json.loads(read(west, f"digits/1/{MARKER}"))["files"] == json.loads(read(east, f"digits/1/{MARKER}"))["files"]


def test_the_same_bucket_twice_is_refused(two_buckets, small_saved_model, capsys):
    east, _ = two_buckets
    assert main(["publish", str(small_saved_model), "--bucket-uri", east, "--bucket-uri", east, "--model", "m"]) == 2
    assert "is given twice" in capsys.readouterr().err
    assert objects(east) == {}


def test_role_arns_are_given_once_per_bucket(two_buckets, small_saved_model, capsys):
    east, west = two_buckets
    role = "arn:aws:iam::123456789012:role/publisher"
    assert main(["publish", str(small_saved_model), "--bucket-uri", east, "--bucket-uri", west, "--model", "m",
                 "--role-arn", role]) == 2
    assert "--role-arn is given 1 time(s) for 2 --bucket-uri" in capsys.readouterr().err
    assert objects(east) == {} and objects(west) == {}
