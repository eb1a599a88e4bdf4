"""The serving sync script, run for real: POSIX sh + the AWS CLI against moto's S3 server.

No part of the script is mocked: each test writes a spec file with ``render_sync_spec``, publishes
objects with boto3 and runs ``sync.sh once|wait|loop`` as a process (``sync_helpers.Sync``), with
AWS CLI v1's upgrade debug mode on (any warning about a v2 difference fails the run). The awk
program that reads markers is also run on its own, under every awk installed (mawk, gawk, busybox).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid

import boto3
import pytest
import yaml

from components.model_contract import COMPLETION_MARKER, SYNC_STATE_FILE, marker_document, render_marker
from components.serving.model_sync import (
    DEFAULT_SYNC_INTERVAL_SECONDS,
    MANIFEST_AWK,
    SYNC_SCRIPT,
    SYNC_SPEC_PATH,
    render_sync_spec,
)
from components.serving.tfserving_config import ServedModel

from .sync_helpers import (
    CountingProxy,
    Sync,
    mark_complete,
    marker_for,
    publish,
    s3_endpoint,  # noqa: F401 (a fixture)
    tree,
    v2_warnings,
    version_files,
    wait_for,
)


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

    unit = sync.run("once", MODELS_VOLUME_BYTES="20Gi")
    assert unit.returncode == 2 and "MODELS_VOLUME_BYTES='20Gi' is not a number of bytes" in unit.stderr
    stale = sync.run("once", MODEL_CACHE_LOCK_STALE_SECONDS="0")
    assert stale.returncode == 2 and "MODEL_CACHE_LOCK_STALE_SECONDS='0' is not a positive number" in stale.stderr
    age = sync.run("once", MODEL_CACHE_LISTING_MAX_AGE_SECONDS="1m")
    assert age.returncode == 2 and "MODEL_CACHE_LISTING_MAX_AGE_SECONDS='1m' is not a number" in age.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_script_passes_shellcheck(tmp_path):
    script = tmp_path / "sync.sh"
    script.write_text(SYNC_SCRIPT)
    result = subprocess.run(["shellcheck", "--shell=sh", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_aws_cli_v2_differences_are_handled(sync):
    """v1's upgrade debug mode flags what v2 would do differently: the pager (shown on the script
    without its AWS_PAGER="") and nothing in the script itself. The empty prefix makes the listing
    print "None" (text output, no Contents), which is no version."""
    sync.write_spec(latest("digits"))
    without_pager = sync.tmp / "no-pager.sh"
    without_pager.write_text(SYNC_SCRIPT.replace('export AWS_PAGER=""', ":"))
    sync.run(script=without_pager)
    logged = sync.aws_log.read_text()
    assert any("pager" in warning for warning in v2_warnings(logged)), logged

    sync.aws_log.write_text("")
    result = sync.run()  # fails on any v2 warning
    assert result.returncode == 0, result.stderr
    assert "no complete version of digits" in result.stderr and sync.versions("digits") == []


# --- the marker: read by awk, in the exact layout publish writes -----------------------------------

AWKS = [name for name in ("mawk", "gawk", "busybox") if shutil.which(name)] or ["awk"]
MARKER_FILES = {"saved_model.pb": b"graph", "variables/variables.index": b"index",
                "assets/my vocab.txt": b"v"}


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def marker_text(files: dict[str, bytes] = MARKER_FILES, version: int = 3) -> str:
    listed = {rel: (len(body), sha256(body)) for rel, body in files.items()}
    # published_by with a non-ASCII character: JSON escapes it, and fields other than files are skipped.
    document = marker_document("digits", version, listed, "2024-01-01T00:00:00Z", "ci on h\u00f4st")
    return render_marker(document).decode()


def read_marker(awk: str, text: str, tmp_path) -> subprocess.CompletedProcess:
    marker = tmp_path / "marker"
    marker.write_text(text)
    command = ["busybox", "awk"] if awk == "busybox" else [awk]
    variables = ["model=digits", "version=3", f"marker={COMPLETION_MARKER}", f"state={SYNC_STATE_FILE}"]
    options = [arg for variable in variables for arg in ("-v", variable)]
    return subprocess.run([*command, *options, MANIFEST_AWK, str(marker)], capture_output=True, text=True,
                          timeout=10)


@pytest.mark.parametrize("awk", AWKS)
def test_the_marker_publish_writes_is_read_by_every_awk(awk, tmp_path):
    result = read_marker(awk, marker_text(), tmp_path)
    assert result.returncode == 0, result.stdout
    expected = [f"{len(body)} {sha256(body)} {rel}" for rel, body in sorted(MARKER_FILES.items())]
    assert result.stdout.splitlines() == expected


NO_SIZE = "has no size or no 64-digit sha256"
VOCAB_ENTRY = re.compile(r'    "assets/my vocab.txt": \{\n.*?\n    \},\n', re.S)
MANGLED = {
    "truncated at a line end": (lambda t: t[: t.rindex("\n", 0, len(t) // 2)], "truncated"),
    "truncated in a line": (lambda t: t[: len(t) // 2], "line 10: "),
    "an empty object": (lambda t: "{}", "does not start with a line {"),
    "on one line": (lambda t: json.dumps(json.loads(t), sort_keys=True), "does not start with a line {"),
    "CRLF line ends": (lambda t: t.replace("\n", "\r\n"), "does not start with a line {"),
    "a size edited": (lambda t: t.replace('"size": 5', '"size": 6', 1),
                      "total_bytes is 11 but the sizes add up to 12"),
    "a file dropped": (lambda t: VOCAB_ENTRY.sub("", t), "file_count is 3 but 2 files are listed"),
    "a file twice": (lambda t: VOCAB_ENTRY.sub(lambda m: m.group(0) * 2, t), "is listed twice"),
    "a size missing": (lambda t: t.replace('",\n      "size": 1\n', '"\n', 1), NO_SIZE),
    "a sha256 cut": (lambda t: t.replace(sha256(b"v"), sha256(b"v")[:-1]), NO_SIZE),
    "a size as a string": (lambda t: t.replace('"size": 1', '"size": "1"'), NO_SIZE),
    "a nested field": (lambda t: t.replace('"size": 1', '"size": {'), "not a field of a file entry"),
    "text after it": (lambda t: t + "\n{}", "text after the closing }"),
    "another version's": (lambda t: marker_text(version=4), "it is the marker of digits/4, not of digits/3"),
    "an escaped name": (lambda t: marker_text({**MARKER_FILES, "caf\u00e9": b"x"}),
                        "file name with an escape"),
    "a parent path": (lambda t: marker_text({**MARKER_FILES, "../evil": b"x"}), "unsafe file name ../evil"),
    "a reserved name": (lambda t: marker_text({**MARKER_FILES, COMPLETION_MARKER: b"x"}),
                        "reserved file name"),
}


@pytest.mark.parametrize("awk", AWKS)
@pytest.mark.parametrize("mangled", list(MANGLED))
def test_a_mangled_marker_is_refused_with_a_reason(awk, mangled, tmp_path):
    mangle, reason = MANGLED[mangled]
    result = read_marker(awk, mangle(marker_text()), tmp_path)
    assert result.returncode == 1, result.stdout
    assert reason in result.stdout and len(result.stdout.splitlines()) == 1, result.stdout


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
    expected = {"saved_model.pb", COMPLETION_MARKER, SYNC_STATE_FILE, "variables/variables.index",
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


# --- every copy is checked against its marker ------------------------------------------------------

@pytest.mark.parametrize("damage, why", [
    ("other bytes, same size", "variables/variables.index has another sha256 than the marker says"),
    ("an object gone", "variables/variables.index is missing"),
    ("an object more", "variables/stray is not in the marker"),
])
def test_a_copy_that_does_not_match_its_marker_is_never_renamed_into_place(sync, bucket, damage, why):
    client, name = bucket
    publish(client, name, "digits", 1)
    key = "models/digits/1/variables/"
    if damage == "other bytes, same size":
        client.put_object(Bucket=name, Key=key + "variables.index", Body=b"INDEX")
    elif damage == "an object gone":
        client.delete_object(Bucket=name, Key=key + "variables.index")
    else:
        client.put_object(Bucket=name, Key=key + "stray", Body=b"from another upload")
    sync.write_spec(latest("digits"))
    result = sync.run()
    assert result.returncode == 1
    uri = sync.env["MODEL_SOURCE_URI"]
    assert (f"model-sync: copy of {uri}/digits/1/ does not match its _COMPLETE marker (1 difference(s) with "
            f"the marker: {why}): discarded, retrying next round") in result.stderr.splitlines()
    assert "copied" not in result.stderr
    assert list((sync.models / "digits").iterdir()) == []  # nothing renamed, nothing left behind


@pytest.mark.parametrize("volume_bytes", ["", "1000000000"])
def test_a_marker_in_another_layout_is_refused(sync, bucket, volume_bytes):
    """Without the space check the copy is discarded; with it (MODELS_VOLUME_BYTES) the marker is read
    first and nothing is downloaded."""
    client, name = bucket
    publish(client, name, "digits", 1, complete=False)
    client.put_object(Bucket=name, Key=f"models/digits/1/{COMPLETION_MARKER}", Body=b"{}")  # hand-made
    sync.write_spec(latest("digits"))
    result = sync.run(MODELS_VOLUME_BYTES=volume_bytes)
    assert result.returncode == 1
    uri = sync.env["MODEL_SOURCE_URI"]
    if volume_bytes:
        assert (f"not copying digits/1: {uri}/digits/1/_COMPLETE is not a marker as model_tools publish "
                "writes it (line 1: the marker does not start with a line {); publish the model again as a "
                "new version") in result.stderr
    else:
        assert (f"copy of {uri}/digits/1/ does not match its _COMPLETE marker (the copied _COMPLETE is not a "
                "marker as model_tools publish writes it: line 1: the marker does not start with a line {): "
                "discarded, retrying next round") in result.stderr
    assert list((sync.models / "digits").iterdir()) == []


def test_a_republish_during_the_copy_is_discarded_not_renamed(sync, bucket):
    """The old `publish --force` ran while a pod copied: marker deleted, new files uploaded. The copy
    gets old and new files and no marker; it is discarded. Once the new marker is written, the next
    round copies the new version whole."""
    client, name = bucket
    publish(client, name, "digits", 1)
    new = {**version_files("digits", 1), "saved_model.pb": b"graph digits 1, take two"}
    sync.change_after_listing({f"models/digits/1/{COMPLETION_MARKER}": None,
                               "models/digits/1/saved_model.pb": new["saved_model.pb"]})
    sync.write_spec(latest("digits"))
    first = sync.run()
    assert first.returncode == 1
    assert ("does not match its _COMPLETE marker (the copy has no _COMPLETE: it vanished during the copy "
            "(uploaded again?)): discarded, retrying next round") in first.stderr
    assert "copied" not in first.stderr and list((sync.models / "digits").iterdir()) == []

    new_marker = marker_for("digits", 1, new)
    client.put_object(Bucket=name, Key=f"models/digits/1/{COMPLETION_MARKER}", Body=new_marker)
    second = sync.run()
    assert second.returncode == 0, second.stderr
    copied = sync.files("digits", 1)
    assert copied["saved_model.pb"] == new["saved_model.pb"] and copied[COMPLETION_MARKER] == new_marker


def test_a_damaged_local_copy_is_copied_again(sync, bucket):
    client, name = bucket
    publish(client, name, "digits", 1)
    sync.seed("digits", 1)
    (sync.models / "digits" / "1" / "variables" / "variables.index").write_bytes(b"ind")  # e.g. a full disk
    sync.write_spec(latest("digits"))
    result = sync.run()
    assert result.returncode == 0, result.stderr
    assert (f"the local copy {sync.models}/digits/1 is damaged (1 difference(s) with the marker: "
            "variables/variables.index has 3 bytes, the marker says 5): copying it again") in result.stderr
    assert "copied digits/1 again, replacing the damaged copy" in result.stderr
    assert sync.files("digits", 1)["variables/variables.index"] == b"index" and sync.hidden("digits") == []

    quiet = sync.run()  # a healthy copy costs the listing only: no marker download, nothing logged
    assert quiet.returncode == 0 and "model-sync" not in quiet.stderr, quiet.stderr


def test_a_version_replaced_in_the_bucket_is_reported_and_the_local_copy_kept(sync, bucket):
    client, name = bucket
    publish(client, name, "digits", 1)
    sync.write_spec(latest("digits"))
    assert sync.run().returncode == 0
    served = sync.files("digits", 1)

    # New bytes under the same number (what publish --force used to do, or a hand-made upload).
    new = {**version_files("digits", 1), "saved_model.pb": b"graph digits 1, take two"}
    client.put_object(Bucket=name, Key="models/digits/1/saved_model.pb", Body=new["saved_model.pb"])
    client.put_object(Bucket=name, Key=f"models/digits/1/{COMPLETION_MARKER}",
                      Body=marker_for("digits", 1, new))
    result = sync.run()
    assert result.returncode == 1
    uri = sync.env["MODEL_SOURCE_URI"]
    assert f"REPLACED: {uri}/digits/1/ has another _COMPLETE than the copy this pod serves" in result.stderr
    assert "keeping the local copy" in result.stderr and "copied" not in result.stderr
    assert sync.files("digits", 1) == served


def test_a_copy_that_would_overflow_the_volume_is_skipped(sync, bucket):
    """Version 2 alone fits the volume; next to version 1 (still served during the swap) it does not."""
    client, name = bucket
    sync.seed("digits", 1, files=8)
    for version in (1, 2):
        publish(client, name, "digits", version, files=8)
    sync.write_spec(latest("digits"))
    used = int(subprocess.check_output(["du", "-sk", str(sync.models)]).split()[0]) * 1024
    need = sum(-(-len(body) // 4096) * 4096 for body in version_files("digits", 2, files=8).values()) + 8192
    limit = used + need - 1
    skipped = sync.run(MODELS_VOLUME_BYTES=str(limit))
    assert skipped.returncode == 1
    assert (f"not copying digits/2: it needs {need} bytes and {sync.models} already uses {used}, more than "
            f"MODELS_VOLUME_BYTES={limit} (the pod would be evicted)") in skipped.stderr
    assert sync.versions("digits") == [1]

    fits = sync.run(MODELS_VOLUME_BYTES=str(limit + 1))
    assert fits.returncode == 0, fits.stderr
    assert sync.versions("digits") == [1, 2]


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


# --- the node cache (MODEL_CACHE_DIR): one download per node, not per pod -------------------------
# Each "pod" is a script process with its own models directory; the pods of a test share one cache
# directory (the node's) and reach moto through a CountingProxy, which records every request they send.

@pytest.fixture
def proxy(s3_endpoint):
    counting = CountingProxy(s3_endpoint)
    yield counting
    counting.stop()


@pytest.fixture
def node(tmp_path, proxy, bucket):
    """A factory of pods on one node: ``node("a")`` is a :class:`Sync` with its own models directory and
    the node's cache, talking to the bucket through ``proxy``."""
    cache = tmp_path / "node-cache"
    cache.mkdir()
    pods: list[Sync] = []

    def pod(name: str) -> Sync:
        world = Sync(tmp_path / f"pod-{name}", proxy.url, bucket[1], cache=cache)
        world.write_spec(latest("digits"))
        pods.append(world)
        return world

    yield pod
    for world in pods:
        world.stop_all()


def published(model: str, version: int, files: int = 0) -> dict[str, bytes]:
    """What a complete local copy of a published version holds, the state file aside."""
    content = version_files(model, version, files)
    return {**content, COMPLETION_MARKER: marker_for(model, version, content)}


def without_state(files: dict[str, bytes]) -> dict[str, bytes]:
    return {rel: body for rel, body in files.items() if rel != SYNC_STATE_FILE}


def plant_lock(cache, model: str, version: int, owner: str, beat: float):
    lock = cache / model / f".lock-{version}"
    lock.mkdir(parents=True, exist_ok=True)
    (lock / "owner").write_text(f"{owner}\n")
    (lock / "beat").write_text(f"{int(beat)}\n")
    return lock


def test_two_pods_starting_together_download_each_object_once(node, bucket, proxy):
    """Both init containers start at once: one takes the version's lock and downloads, the other waits on
    the lock and copies from the cache. Each GET is held 1 s, so the download outlasts the 2 s stale-lock
    limit: only the holder's heartbeat keeps the waiting pod from breaking the lock and downloading too."""
    client, name = bucket
    publish(client, name, "digits", 1, files=20)
    proxy.object_get_delay = 1.0
    first, second = node("a"), node("b")
    mark = proxy.mark()
    started = [pod.start("wait", MODEL_CACHE_LOCK_STALE_SECONDS="2") for pod in (first, second)]
    assert all(process.wait(timeout=60) == 0 for process in started), [p.log(s) for p, s in zip((first, second), started)]

    expected = published("digits", 1, files=20)
    assert proxy.object_gets(mark) == {f"models/digits/1/{rel}": 1 for rel in expected}
    assert without_state(first.files("digits", 1)) == without_state(second.files("digits", 1)) == expected
    logs = [pod.log(process) for pod, process in zip((first, second), started)]
    origins = sorted(re.search(r"model-sync: copied digits/1(.*)", log).group(1) for log in logs)
    assert origins == [" (downloaded into the node cache)", " from the node cache"], logs
    assert not any("broke the lock" in log for log in logs), logs
    downloads = [r for r in proxy.since(mark) if r.key]
    assert max(r.finished for r in downloads) - min(r.started for r in downloads) > 2  # longer than the stale limit
    (entry,) = first.cache_entries("digits").values()
    assert without_state(tree(entry)) == expected and not list(first.cache.glob("digits/.lock-*"))


def test_a_second_or_restarted_pod_on_a_warm_node_sends_no_request_to_the_bucket(node, bucket, proxy):
    client, name = bucket
    publish(client, name, "digits", 1)
    warm = node("a")
    assert warm.run().returncode == 0  # the first pod of the node: lists, downloads, fills the cache

    # The pods' listing window as deployed (2 x the 15 s default interval), not the helper's 2 x 1 s: on a
    # loaded machine two seconds can pass between the first pod's listing and the next pod's start.
    deployed_window = {"MODEL_CACHE_LISTING_MAX_AGE_SECONDS": str(2 * DEFAULT_SYNC_INTERVAL_SECONDS)}
    mark = proxy.mark()
    second = node("b")
    started = second.run("wait", **deployed_window)
    assert started.returncode == 0, started.stderr
    assert proxy.since(mark) == []  # no request of any kind: no listing, no GET, no HEAD
    assert "digits: using the node cache's listing from " in started.stderr
    assert "copied digits/1 from the node cache" in started.stderr
    assert second.files("digits", 1) == warm.files("digits", 1)

    shutil.rmtree(warm.models)  # a restarted pod gets a new emptyDir
    restarted = warm.run("wait", **deployed_window)
    assert restarted.returncode == 0, restarted.stderr
    assert proxy.since(mark) == [] and warm.versions("digits") == [1]

    # A listing older than MODEL_CACHE_LISTING_MAX_AGE_SECONDS is not trusted: the pod lists the bucket
    # (one request) and still takes the files from the cache.
    third = node("c")
    listed = third.run("wait", MODEL_CACHE_LISTING_MAX_AGE_SECONDS="0")
    assert listed.returncode == 0, listed.stderr
    assert len(proxy.since(mark)) == len(proxy.listings(mark)) == 1
    assert "copied digits/1 from the node cache" in listed.stderr


@pytest.mark.parametrize("damage, why", [
    ("other bytes, same size", "variables/variables.index has another sha256 than the marker says"),
    ("a file gone", "variables/variables.index is missing"),
    ("a file more", "variables/stray is not in the marker"),
])
def test_a_damaged_cache_entry_is_never_served_but_deleted_and_fetched_again(node, bucket, proxy, damage, why):
    client, name = bucket
    publish(client, name, "digits", 1)
    first = node("a")
    assert first.run().returncode == 0
    (entry,) = first.cache_entries("digits").values()
    index = entry / "variables" / "variables.index"
    if damage == "other bytes, same size":
        index.write_bytes(b"INDEX")  # bit rot, or a write by something else on the node
    elif damage == "a file gone":
        index.unlink()
    else:
        (entry / "variables" / "stray").write_bytes(b"left over")

    mark = proxy.mark()
    second = node("b")
    result = second.run()
    assert result.returncode == 0, result.stderr
    assert (f"model-sync: node cache: {entry} does not match its _COMPLETE marker (1 difference(s) with the "
            f"marker: {why}): deleted, downloading it again") in result.stderr.splitlines()
    assert without_state(second.files("digits", 1)) == published("digits", 1)  # the bucket's bytes
    assert proxy.object_gets(mark)["models/digits/1/variables/variables.index"] == 1
    assert without_state(tree(entry)) == published("digits", 1)  # the entry was made again, whole
    assert without_state(first.files("digits", 1)) == published("digits", 1)  # a pod's copy is its own


def test_a_stale_lock_is_broken_and_a_live_one_waited_for(node, bucket, tmp_path):
    client, name = bucket
    publish(client, name, "digits", 1)
    cache = tmp_path / "node-cache"
    plant_lock(cache, "digits", 1, "killed-pod", time.time() - 120)  # its holder died two minutes ago
    first = node("a")
    result = first.run()
    assert result.returncode == 0, result.stderr
    assert re.search(r"model-sync: node cache: broke the lock of digits/1 held by killed-pod \(no heartbeat "
                     r"for 1[2-3]\d s\)", result.stderr), result.stderr
    assert first.versions("digits") == [1] and not (cache / "digits" / ".lock-1").exists()

    # A holder that lives (its beat rewritten every half second) is waited for, however long it takes;
    # once its beat stops, the lock is broken MODEL_CACHE_LOCK_STALE_SECONDS later.
    lock = plant_lock(cache, "digits", 1, "live-pod", time.time())
    alive = threading.Event()
    alive.set()

    def beat():
        while alive.is_set():
            (lock / "beat").write_text(f"{int(time.time())}\n")
            time.sleep(0.5)

    beating = threading.Thread(target=beat)
    beating.start()
    second = node("b")
    try:
        waiting = second.start("once", MODEL_CACHE_LOCK_STALE_SECONDS="2")
        time.sleep(5)
        assert waiting.poll() is None, second.log(waiting)
        assert second.versions("digits") == []
    finally:
        alive.clear()
        beating.join()
    stopped = time.monotonic()
    assert waiting.wait(timeout=30) == 0, second.log(waiting)
    assert time.monotonic() - stopped < 10
    assert "node cache: broke the lock of digits/1 held by live-pod" in second.log(waiting)
    assert "copied digits/1 from the node cache" in second.log(waiting)


def test_the_cache_is_pruned_like_the_pod_and_never_under_a_lock(node, bucket, tmp_path):
    client, name = bucket
    cache = tmp_path / "node-cache"
    publish(client, name, "digits", 1)
    first, other = node("a"), node("b")
    other.write_spec(latest("digits", 2))
    assert first.run().returncode == 0 and other.run().returncode == 0
    publish(client, name, "digits", 2)

    marked = first.run(PRUNE_AFTER_SECONDS="3600")
    assert marked.returncode == 0, marked.stderr
    entries = first.cache_entries("digits")
    assert [e.split("@")[0] for e in entries] == ["1", "2"]
    one = next(e for e in entries if e.startswith("1@"))
    assert f"node cache: digits/{one} is no longer selected: deleting it after 3600 s" in marked.stderr
    assert (cache / "digits" / f".unselected-{one}").exists()

    assert other.run(PRUNE_AFTER_SECONDS="3600").returncode == 0  # a pod selecting version 1: unmarked
    assert not (cache / "digits" / f".unselected-{one}").exists()

    lock = plant_lock(cache, "digits", 1, "copying-pod", time.time())  # a pod copying version 1 right now
    busy = first.run(PRUNE_AFTER_SECONDS="0")
    assert busy.returncode == 0, busy.stderr
    assert first.versions("digits") == [2]  # the pod's own copy follows the pod's policy
    assert one in first.cache_entries("digits")  # the entry waits for its lock
    shutil.rmtree(lock)

    pruned = first.run(PRUNE_AFTER_SECONDS="0")
    assert pruned.returncode == 0, pruned.stderr
    assert f"node cache: pruned digits/{one}" in pruned.stderr
    assert [e.split("@")[0] for e in first.cache_entries("digits")] == ["2"]
    assert other.versions("digits") == [1, 2]  # pruning the cache never touches a pod's copies
    assert sorted(p.name for p in (cache / "digits").iterdir()) == [".listing", next(iter(first.cache_entries("digits")))]


@pytest.mark.parametrize("state", ["missing", "not writable"])
def test_a_missing_or_unwritable_cache_means_direct_copies(tmp_path, s3_endpoint, bucket, state):
    client, name = bucket
    publish(client, name, "digits", 1)
    cache = tmp_path / "node-cache"
    immutable = False
    if state == "not writable":  # as the kubelet makes it: root's, before model-cache-prep has run
        cache.mkdir()
        cache.chmod(0o555)
        if os.geteuid() == 0:  # root ignores the mode: make the directory immutable instead
            subprocess.run(["chattr", "+i", str(cache)], check=True)
            immutable = True
    pod = Sync(tmp_path / "pod", s3_endpoint, name, cache=cache)
    pod.write_spec(latest("digits"))
    try:
        result = pod.run()
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(cache)], check=True)
    assert result.returncode == 0, result.stderr
    uri = pod.env["MODEL_SOURCE_URI"]
    (line,) = [line for line in result.stderr.splitlines() if "node cache" in line]
    why = "no such directory" if state == "missing" else "mkdir: cannot create directory"
    assert line.startswith(f"model-sync: node cache {cache} is not usable ({why}")
    assert line.endswith(f"copying from {uri} directly this round")
    assert "copied digits/1\n" in result.stderr + "\n"  # straight from the bucket, as without a cache
    assert without_state(pod.files("digits", 1)) == published("digits", 1)
    assert not cache.exists() if state == "missing" else list(cache.iterdir()) == []


def test_a_version_the_cache_may_not_hold_is_copied_directly(node, bucket):
    client, name = bucket
    publish(client, name, "digits", 1, files=8)
    pod = node("a")
    result = pod.run(MODEL_CACHE_MAX_BYTES="4096")
    assert result.returncode == 0, result.stderr
    assert re.search(r"node cache: digits/1 needs \d+ bytes and \S+ already uses \d+, more than "
                     r"MODEL_CACHE_MAX_BYTES=4096: copying it from \S+ directly, not through the cache",
                     result.stderr), result.stderr
    assert pod.versions("digits") == [1] and pod.cache_entries("digits") == {}


# --- the node cache's Kubernetes objects, as every stack renders them ------------------------------

# Pod Security "restricted" allows only these volume types in a pod
# (https://kubernetes.io/docs/concepts/security/pod-security-standards/, "Volume Types").
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def cache_objects(rec) -> dict:
    from tests.conftest import k8s_objects

    namespace = rec.outputs["servingNamespace"]
    volumes = {v["metadata"]["name"]: v for v in k8s_objects(rec, "PersistentVolume")}
    claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in k8s_objects(rec, "PersistentVolumeClaim")}
    (prep,) = [d for d in k8s_objects(rec, "DaemonSet") if d["metadata"]["name"] == "model-cache-prep"]
    return {"namespace": namespace, "volumes": volumes, "claims": claims, "prep": prep}


@pytest.mark.parametrize("stack", ["dev", "prod", "gke"])
def test_the_cache_volume_is_a_node_directory_pre_bound_to_one_claim_per_namespace(stack, request):
    from components.serving.model_cache import CLAIM_NAME, HOST_ROOT, NOMINAL_CAPACITY, PREP_NAME

    rec = request.getfixturevalue(stack)
    objects = cache_objects(rec)
    namespace, prep_ns = objects["namespace"], objects["prep"]["metadata"]["namespace"]
    assert set(objects["volumes"]) == {f"{CLAIM_NAME}-{namespace}", f"{PREP_NAME}-{namespace}"}
    for (claim_ns, claim_name), volume_name in [((namespace, CLAIM_NAME), f"{CLAIM_NAME}-{namespace}"),
                                                ((prep_ns, PREP_NAME), f"{PREP_NAME}-{namespace}")]:
        volume = objects["volumes"][volume_name]["spec"]
        claim = objects["claims"][(claim_ns, claim_name)]["spec"]
        # One node directory per namespace, made by the kubelet if missing; kept when the object goes.
        assert volume["hostPath"] == {"path": f"{HOST_ROOT}/{namespace}", "type": "DirectoryOrCreate"}
        assert volume["persistentVolumeReclaimPolicy"] == "Retain"
        # Bound both ways, no storage class: no provisioner, no other claim can take it.
        assert volume["claimRef"] | {} == {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                           "namespace": claim_ns, "name": claim_name}
        assert claim["volumeName"] == volume_name and claim["storageClassName"] == volume["storageClassName"] == ""
        assert claim["accessModes"] == volume["accessModes"] == ["ReadWriteOnce"]
        assert claim["resources"]["requests"]["storage"] == volume["capacity"]["storage"] == NOMINAL_CAPACITY


@pytest.mark.parametrize("stack", ["dev", "prod", "gke"])
def test_serving_pods_mount_their_server_directory_in_the_sync_containers_only(stack, request):
    from tests.conftest import k8s_objects

    rec = request.getfixturevalue(stack)
    namespace = rec.outputs["servingNamespace"]
    deployments = [d for d in k8s_objects(rec, "Deployment") if d["metadata"]["namespace"] == namespace
                   and any(c["name"] == "tfserving" for c in d["spec"]["template"]["spec"]["containers"])]
    assert deployments
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        server = deployment["spec"]["template"]["metadata"]["labels"]["tfplatform.io/server"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "model-cache"}
        # Still a restricted pod: the node directory comes through a claim, never a hostPath volume.
        assert all(set(v) - {"name"} <= RESTRICTED_VOLUMES for v in spec["volumes"]), spec["volumes"]
        for container in spec["initContainers"]:
            env = {e["name"]: e["value"] for e in container["env"]}
            assert {"name": "model-cache", "mountPath": "/model-cache", "subPath": server} in container["volumeMounts"]
            assert env["MODEL_CACHE_DIR"] == "/model-cache"
            assert env["MODEL_CACHE_MAX_BYTES"] == env["MODELS_VOLUME_BYTES"]  # bounded like the pod's volume
        (tfserving,) = spec["containers"]
        assert "model-cache" not in {m["name"] for m in tfserving["volumeMounts"]}


@pytest.mark.parametrize("stack", ["dev", "prod", "gke"])
def test_the_prep_daemonset_is_root_with_chown_only_in_a_baseline_namespace(stack, request):
    from tests.conftest import k8s_objects

    from components.pod_security import REASON_ANNOTATION

    rec = request.getfixturevalue(stack)
    objects = cache_objects(rec)
    prep = objects["prep"]
    prep_ns = prep["metadata"]["namespace"]
    (namespace,) = [n for n in k8s_objects(rec, "Namespace") if n["metadata"]["name"] == prep_ns]
    labels = namespace["metadata"]["labels"]
    # Root and CHOWN are allowed under baseline; hostPath is not, and the pod has none: it is not privileged.
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert REASON_ANNOTATION not in (namespace["metadata"].get("annotations") or {})
    policies = [p for p in k8s_objects(rec, "NetworkPolicy") if p["metadata"]["namespace"] == prep_ns]
    assert [p["spec"] for p in policies] == [{"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}]

    pod = prep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "privileged": False,
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert pod["volumes"] == [{"name": "cache", "persistentVolumeClaim": {"claimName": "model-cache-prep"}}]
    assert container["volumeMounts"] == [{"name": "cache", "mountPath": "/cache"}]
    # Runs where the cached servers run, with their image (already on those nodes) and their directories.
    servers = {d["spec"]["template"]["metadata"]["labels"]["tfplatform.io/server"]: d
               for d in k8s_objects(rec, "Deployment") if "tfplatform.io/server" in d["spec"]["template"]["metadata"]["labels"]
               and any(c["name"] == "tfserving" for c in d["spec"]["template"]["spec"]["containers"])}
    pools = {d["spec"]["template"]["spec"]["nodeSelector"]["tfplatform.io/node-pool"] for d in servers.values()}
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "tfplatform.io/node-pool", "operator": "In", "values": sorted(pools)}]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    sync_images = {c["image"] for d in servers.values() for c in d["spec"]["template"]["spec"]["initContainers"]}
    assert sync_images == {container["image"]}
    assert container["command"][3:] == ["model-cache-prep", *sorted(servers)]
    assert container["readinessProbe"]["exec"]["command"][3:] == ["ready", *sorted(servers)]
    for key in ("requests", "limits"):
        assert set(container["resources"][key]) == {"cpu", "memory"}


def test_the_cache_objects_wait_for_what_they_need(dev):
    """The serving claim waits for the serving namespace and its volume; the Deployments for the claim;
    the DaemonSet for its claim (pulumi-kubernetes creates in dependency order)."""
    by_name = {r.name: r for r in dev.resources}
    claim = by_name["model-cache-serving-claim"]
    assert by_name["model-cache-serving-volume"].urn in claim.dependencies
    assert by_name["tfserving-ns"].urn in claim.dependencies
    assert claim.urn in by_name["tfserving-default-deployment"].dependencies
    assert by_name["model-cache-prep-claim"].urn in by_name["model-cache-prep"].dependencies


def test_model_cache_off_renders_no_cache(plan_with):
    from tests.conftest import k8s_objects

    servers = {"default": {"nodePool": "gpu", "gpus": 1, "models": {"digits": {}}},
               "cpu": {"nodePool": "system", "gpus": 0, "cpu": "1", "memory": "2Gi", "models": {"digits-cpu": {}},
                       "modelCache": False}}
    partly = plan_with(servers=servers)
    (prep,) = [d for d in k8s_objects(partly, "DaemonSet") if d["metadata"]["name"] == "model-cache-prep"]
    assert prep["spec"]["template"]["spec"]["containers"][0]["command"][3:] == ["model-cache-prep", "default"]
    cpu = next(d for d in k8s_objects(partly, "Deployment") if d["metadata"]["name"] == "tfserving-cpu")
    assert "model-cache" not in {v["name"] for v in cpu["spec"]["template"]["spec"]["volumes"]}
    assert all("MODEL_CACHE_DIR" not in {e["name"] for e in c["env"]}
               for c in cpu["spec"]["template"]["spec"]["initContainers"])

    servers["default"]["modelCache"] = False
    off = plan_with(servers=servers)
    assert not k8s_objects(off, "PersistentVolume") and not k8s_objects(off, "PersistentVolumeClaim")
    assert not [d for d in k8s_objects(off, "DaemonSet") if d["metadata"]["name"] == "model-cache-prep"]
    assert not [r for r in off.resources if r.type == "tfplatform:serving:ModelCache"]


def test_the_prep_script_hands_directories_to_the_sync_uid_and_deletes_unlisted_ones(tmp_path):
    """The prep's script and readiness check, run for real on a stand-in node directory. As root (the
    prep runs as root) it hands the directories to 65532; otherwise to the test's own user."""
    from components.serving.model_cache import render_prep_script, render_ready_script

    root_user = os.geteuid() == 0
    uid, gid = (65532, 65532) if root_user else (os.getuid(), os.getgid())
    reclaim = "0:0" if root_user else f"{uid}:{gid}"
    node = tmp_path / "node"
    node.mkdir()
    (node / "default").mkdir(mode=0o755)  # as the kubelet makes a missing subPath: root's, 0755
    gone = node / "removed-server" / "digits" / "1@abc"
    gone.mkdir(parents=True)
    (gone / "saved_model.pb").write_bytes(b"graph")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the cache's")
    (gone / "link").symlink_to(outside)  # a planted symlink must not make the prep chown or delete outside
    outside_owner = (outside.stat().st_uid, outside.stat().st_gid)

    ready = ["sh", "-c", render_ready_script(uid, gid, root=str(node)), "ready", "cpu", "default"]
    assert subprocess.run(ready).returncode == 1
    script = render_prep_script(uid, gid, root=str(node), period=1, reclaim=reclaim)
    prep = subprocess.Popen(["sh", "-c", script, "model-cache-prep", "cpu", "default"], stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        wait_for(lambda: subprocess.run(ready).returncode == 0 and not (node / "removed-server").exists(), 15,
                 "the prep's first pass")
    finally:
        os.killpg(prep.pid, signal.SIGTERM)
        log = prep.communicate(timeout=10)[1]
    assert prep.returncode == 0, log  # SIGTERM: a clean exit
    for server in ("cpu", "default"):
        stat = (node / server).stat()
        assert (stat.st_uid, stat.st_gid) == (uid, gid) and stat.st_mode & 0o777 == 0o750, server
        assert f"model-cache-prep: {node}/{server} is ready for {uid}:{gid}" in log
    assert sorted(p.name for p in node.iterdir()) == ["cpu", "default"]
    assert f"deleted {node}/removed-server: no such server any more" in log
    assert outside.read_text() == "not the cache's" and (outside.stat().st_uid, outside.stat().st_gid) == outside_owner


def test_the_prep_script_passes_shellcheck(tmp_path):
    from components.serving.model_cache import render_prep_script

    script = tmp_path / "prep.sh"
    script.write_text(render_prep_script(65532))
    result = subprocess.run(["shellcheck", "--shell=sh", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("stack", ["dev", "prod", "gke"])
def test_only_model_cache_prep_runs_as_root_or_adds_a_capability(stack, request, checkov, tmp_path):
    """The prep skips CKV_K8S_23/25/40 by annotation (PREP_SCAN_SKIPS); this runs the three checks with the
    annotations removed and allows exactly the prep to fail them: the skips hide nothing else."""
    from stacks.plan import write_manifests

    rec = request.getfixturevalue(stack)
    for path in write_manifests(rec, tmp_path / "manifests"):
        text = path.read_text()
        if "checkov.io/skip" in text:
            docs = [d for d in yaml.safe_load_all(text) if d]
            for doc in docs:
                annotations = (doc.get("metadata") or {}).get("annotations") or {}
                for key in [k for k in annotations if k.startswith("checkov.io/skip")]:
                    del annotations[key]
            path.write_text(yaml.safe_dump_all(docs))
    checks = ("CKV_K8S_23", "CKV_K8S_25", "CKV_K8S_40")
    result = subprocess.run([str(checkov), "-d", "manifests", "--framework", "kubernetes", "--skip-download",
                             "--compact", "-o", "json", "--check", ",".join(checks)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    results = report["results"]
    failed = {(c["check_id"], c["resource"]) for c in results["failed_checks"]}
    assert failed == {(check, "DaemonSet.model-cache.model-cache-prep") for check in checks}
    passed = {c["resource"] for c in results["passed_checks"] if c["check_id"] == "CKV_K8S_23"}
    deployments = {f"Deployment.{d['metadata']['namespace']}.{d['metadata']['name']}"
                   for d in (r.inputs for r in rec.resources) if d.get("kind") == "Deployment"}
    assert deployments and deployments <= passed  # the checks really ran on every workload
