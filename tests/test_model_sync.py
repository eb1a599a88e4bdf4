"""The serving sync script, run for real: POSIX sh + the AWS CLI against moto's S3 server.

No part of the script is mocked: each test writes a spec file with ``render_sync_spec``, publishes
objects with boto3 and runs ``sync.sh once|wait|loop`` as a process (``sync_helpers.Sync``).
"""

from __future__ import annotations

import threading
import time
import uuid

import boto3
import pytest
from moto.server import ThreadedMotoServer

from components.model_contract import COMPLETION_MARKER
from components.serving.model_sync import SYNC_SCRIPT, SYNC_SPEC_PATH, render_sync_spec
from components.serving.tfserving_config import ServedModel

from .sync_helpers import Sync, mark_complete, publish, wait_for


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint):
    """A fresh bucket per test, so a background sync of one test never sees another's objects."""
    name = f"models-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=name)
    yield client, name
    for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture
def sync(tmp_path, s3_endpoint, bucket):
    world = Sync(tmp_path, s3_endpoint, bucket[1])
    yield world
    world.stop_all()


def latest(name: str, n: int = 1) -> ServedModel:
    return ServedModel(name, version_policy="latest", latest_versions=n)


def specific(name: str, *versions: int) -> ServedModel:
    return ServedModel(name, version_policy="specific", versions=versions)


# --- the spec file ---------------------------------------------------------------------------------

def test_render_sync_spec_one_line_per_model():
    spec = render_sync_spec([latest("digits", 2), ServedModel("fashion", version_policy="all"),
                             specific("canary", 7, 3, 7)])
    assert spec.splitlines()[0].startswith("#")
    assert spec.splitlines()[1:] == ["digits latest 2", "fashion all -", "canary specific 3,7"]
    assert SYNC_SPEC_PATH == "/etc/tfserving/sync.models" and SYNC_SPEC_PATH in SYNC_SCRIPT


@pytest.mark.parametrize("model", [specific("digits"), latest("digits", 0), ServedModel("Digits x")])
def test_render_sync_spec_rejects_what_the_script_cannot_read(model):
    with pytest.raises(ValueError):
        render_sync_spec([model])


def test_bad_mode_spec_and_source_are_reported(sync):
    assert sync.run("sideways").returncode == 2
    assert sync.run("once", MODEL_SOURCE_URI="ftp://models").returncode == 2

    missing = sync.run("once")  # no spec file written yet
    assert missing.returncode == 1 and f"cannot read the spec file {sync.spec}" in missing.stderr

    sync.spec.write_text("# comment\n\ndigits newest 2\n")
    bad = sync.run("once")
    assert bad.returncode == 1 and "line 3 ignored: 'digits newest 2'" in bad.stderr


# --- which versions are copied ---------------------------------------------------------------------

def test_latest_copies_the_newest_complete_versions(sync, bucket):
    client, name = bucket
    for version in (1, 2, 3, 4):
        publish(client, name, "digits", version)
    publish(client, name, "digits", 5, complete=False)
    sync.write_spec(latest("digits", 2))

    result = sync.run()
    assert result.returncode == 0, result.stderr
    assert sync.versions("digits") == [3, 4]
    assert (sync.models / "digits" / "4" / "saved_model.pb").read_bytes() == b"graph digits 4"
    assert (sync.models / "digits" / "4" / "variables" / "variables.index").exists()
    assert "copied digits/3" in result.stderr and "copied digits/4" in result.stderr
    assert not list((sync.models / "digits").glob(".incoming-*"))

    # Once its marker is written, version 5 arrives on the next round; 4 is not copied again.
    mark_complete(client, name, "digits", 5)
    again = sync.run()
    assert again.returncode == 0, again.stderr
    assert 5 in sync.versions("digits")
    assert "copied digits/5" in again.stderr and "copied digits/4" not in again.stderr


def test_all_copies_every_complete_version(sync, bucket):
    client, name = bucket
    for version in (1, 2, 3):
        publish(client, name, "digits", version)
    publish(client, name, "digits", 4, complete=False)
    sync.write_spec(ServedModel("digits", version_policy="all"))
    result = sync.run()
    assert result.returncode == 0, result.stderr
    assert sync.versions("digits") == [1, 2, 3]


def test_specific_copies_exactly_the_listed_complete_versions(sync, bucket):
    client, name = bucket
    for version in (1, 2, 3, 4):
        publish(client, name, "digits", version)
    publish(client, name, "digits", 5, complete=False)
    sync.write_spec(specific("digits", 1, 3, 5))
    result = sync.run()
    assert result.returncode == 0, result.stderr
    assert sync.versions("digits") == [1, 3]
    assert "digits version 5 (listed in versions) has no _COMPLETE marker yet" in result.stderr


def test_model_prefixes_do_not_leak_into_each_other(sync, bucket):
    client, name = bucket
    publish(client, name, "big-digits", 5)
    publish(client, name, "digits", 1)
    sync.write_spec(ServedModel("digits", version_policy="all"))
    result = sync.run()
    assert result.returncode == 0, result.stderr
    assert sync.versions("digits") == [1] and not (sync.models / "big-digits").exists()


def test_empty_model_is_reported_not_failed(sync, bucket):
    sync.write_spec(latest("digits"))
    result = sync.run()
    assert result.returncode == 0, result.stderr
    assert (f"no complete version of digits under s3://{bucket[1]}/models/digits/ "
            "(publish one with model_tools publish)") in result.stderr


def test_unlistable_bucket_fails_once_with_the_cli_error(sync):
    sync.write_spec(latest("digits"))
    result = sync.run(MODEL_SOURCE_URI="s3://no-such-bucket/models")
    assert result.returncode == 1
    assert ("cannot list s3://no-such-bucket/models/digits/ (check the bucket name and the pod's identity): "
            in result.stderr)
    assert "NoSuchBucket" in result.stderr


def test_no_partially_copied_version_is_ever_visible(sync, bucket):
    """A watcher polls the models directory during the copy: a numeric directory, once visible, is whole."""
    client, name = bucket
    publish(client, name, "digits", 1, files=60)
    expected = {"saved_model.pb", COMPLETION_MARKER, "variables/variables.index",
                *(f"variables/shard-{shard:03d}" for shard in range(60))}
    sync.write_spec(latest("digits"))
    seen_incoming, partial, done = [], [], threading.Event()

    def watch():
        directory = sync.models / "digits"
        while not done.is_set():
            for entry in list(directory.iterdir()) if directory.exists() else []:
                if entry.name.startswith(".incoming-"):
                    seen_incoming.append(entry.name)
                elif entry.name.isdigit():
                    files = {str(p.relative_to(entry)) for p in entry.rglob("*") if p.is_file()}
                    if files != expected:
                        partial.append(len(files))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = sync.run()
    finally:
        done.set()
        watcher.join()
    assert result.returncode == 0, result.stderr
    assert sync.versions("digits") == [1]
    assert seen_incoming, "the copy was too quick to observe: the check proved nothing"
    assert not partial, f"a version directory was visible with {partial[0]} of {len(expected)} files"


# --- wait: the init container ----------------------------------------------------------------------

def test_wait_blocks_on_an_empty_bucket_until_a_version_is_published(sync, bucket):
    client, name = bucket
    sync.write_spec(latest("digits"))
    waiting = sync.start("wait")
    wait_for(lambda: "waiting: no complete version of digits" in sync.log(waiting), 15, "the waiting line")
    time.sleep(1.5)  # another round or two: still waiting, not failed
    assert waiting.poll() is None, sync.log(waiting)
    assert sync.versions("digits") == []

    publisher = threading.Thread(target=publish, args=(client, name, "digits", 1))
    publisher.start()
    publisher.join()
    assert waiting.wait(timeout=20) == 0, sync.log(waiting)
    assert sync.versions("digits") == [1]
    assert "copied digits/1" in sync.log(waiting) and "ready" in sync.log(waiting)


def test_wait_keeps_waiting_on_an_unreachable_endpoint(sync):
    sync.write_spec(latest("digits"))
    # One attempt per call keeps the round short (the CLI retries refused connections for ~10 s).
    waiting = sync.start("wait", AWS_ENDPOINT_URL="http://127.0.0.1:1", AWS_MAX_ATTEMPTS="1")
    wait_for(lambda: sync.log(waiting).count("cannot list") >= 2, 20, "two rounds of 'cannot list'")
    assert waiting.poll() is None, sync.log(waiting)
    line = next(line for line in sync.log(waiting).splitlines() if "cannot list" in line)
    assert line.startswith(f"model-sync: waiting: cannot list {sync.env['MODEL_SOURCE_URI']}/digits/ "
                           "(check the bucket name and the pod's identity): ")
    assert "Could not connect to the endpoint URL" in line


def test_wait_for_specific_versions_names_the_missing_one(sync, bucket):
    client, name = bucket
    publish(client, name, "digits", 1)
    publish(client, name, "digits", 2, complete=False)
    sync.write_spec(specific("digits", 1, 2))
    waiting = sync.start("wait")
    missing = "waiting: digits version 2 (listed in versions) has no _COMPLETE marker yet"
    wait_for(lambda: sync.log(waiting).count(missing) >= 2, 15, "two rounds naming version 2")
    assert waiting.poll() is None, sync.log(waiting)
    assert sync.versions("digits") == [1]
    assert "version 1 (listed" not in sync.log(waiting)

    mark_complete(client, name, "digits", 2)
    assert waiting.wait(timeout=20) == 0, sync.log(waiting)
    assert sync.versions("digits") == [1, 2]


def test_wait_never_prunes(sync, bucket):
    client, name = bucket
    sync.seed("digits", 1)
    publish(client, name, "digits", 2)
    sync.write_spec(latest("digits"))
    result = sync.run("wait", PRUNE_AFTER_SECONDS="0")
    assert result.returncode == 0, result.stderr
    assert sync.versions("digits") == [1, 2] and sync.hidden("digits") == []


# --- loop: the sidecar -----------------------------------------------------------------------------

def test_loop_follows_spec_file_changes_without_restart(sync, bucket):
    client, name = bucket
    publish(client, name, "digits", 1)
    publish(client, name, "fashion", 3)
    sync.write_spec(latest("digits"))
    looping = sync.start("loop")
    wait_for(lambda: sync.versions("digits") == [1], 15, "digits/1")
    time.sleep(1.5)  # rounds go on without touching the unlisted model
    assert not (sync.models / "fashion").exists()

    sync.write_spec(latest("digits"), latest("fashion"))
    wait_for(lambda: sync.versions("fashion") == [3], 15, "fashion/3 after the spec change")
    publish(client, name, "digits", 2)
    wait_for(lambda: 2 in sync.versions("digits"), 15, "digits/2, published while looping")
    assert looping.poll() is None, sync.log(looping)


# --- pruning ---------------------------------------------------------------------------------------

def test_unselected_versions_are_pruned_only_after_the_grace_period(sync, bucket):
    client, name = bucket
    sync.seed("digits", 1, 2)
    for version in (1, 2, 3):
        publish(client, name, "digits", version)

    sync.write_spec(latest("digits"))
    marked = sync.run(PRUNE_AFTER_SECONDS="3600")
    assert marked.returncode == 0, marked.stderr
    assert sync.versions("digits") == [1, 2, 3]
    assert sync.hidden("digits") == [".unselected-1", ".unselected-2"]
    assert "digits/1 is no longer selected: deleting it after 3600 s" in marked.stderr
    since = (sync.models / "digits" / ".unselected-1").read_text()

    sync.write_spec(latest("digits", 2))  # 2 is selected again and loses its mark; 1 keeps its own
    reselected = sync.run(PRUNE_AFTER_SECONDS="3600")
    assert reselected.returncode == 0, reselected.stderr
    assert sync.hidden("digits") == [".unselected-1"]
    assert (sync.models / "digits" / ".unselected-1").read_text() == since

    pruned = sync.run(PRUNE_AFTER_SECONDS="0")
    assert pruned.returncode == 0, pruned.stderr
    assert sync.versions("digits") == [2, 3] and sync.hidden("digits") == []
    assert "pruned digits/1" in pruned.stderr


def test_specific_prunes_unlisted_and_all_prunes_nothing(sync, bucket):
    client, name = bucket
    sync.seed("digits", 1, 2, 3)
    for version in (1, 2):  # 3 is gone from the bucket: "all" still keeps it
        publish(client, name, "digits", version)
    sync.write_spec(ServedModel("digits", version_policy="all"))
    kept = sync.run(PRUNE_AFTER_SECONDS="0")
    assert kept.returncode == 0, kept.stderr
    assert sync.versions("digits") == [1, 2, 3] and sync.hidden("digits") == []

    sync.write_spec(specific("digits", 2))
    pruned = sync.run(PRUNE_AFTER_SECONDS="0")
    assert pruned.returncode == 0, pruned.stderr
    assert sync.versions("digits") == [2]


def test_nothing_is_pruned_without_a_listed_replacement(sync, bucket):
    sync.seed("digits", 1)
    sync.write_spec(latest("digits"))
    empty = sync.run(PRUNE_AFTER_SECONDS="0")  # an empty prefix is no reason to delete what serves
    assert empty.returncode == 0, empty.stderr
    unlistable = sync.run(PRUNE_AFTER_SECONDS="0", MODEL_SOURCE_URI="s3://no-such-bucket/models")
    assert unlistable.returncode == 1
    assert sync.versions("digits") == [1] and sync.hidden("digits") == []
