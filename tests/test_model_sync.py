"""The serving sync script, run for real: POSIX sh + the AWS CLI against moto's S3 server.

No part of the script is mocked: each test writes a spec file with ``render_sync_spec``, publishes
objects with boto3 and runs ``sync.sh once|wait|loop`` as a process (``sync_helpers.Sync``), with
AWS CLI v1's upgrade debug mode on (any warning about a v2 difference fails the run). The awk
program that reads markers is also run on its own, under every awk installed (mawk, gawk, busybox).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import threading
import time
import uuid

import boto3
import pytest
from moto.server import ThreadedMotoServer

from components.model_contract import COMPLETION_MARKER, SYNC_STATE_FILE, marker_document, render_marker
from components.serving.model_sync import MANIFEST_AWK, SYNC_SCRIPT, SYNC_SPEC_PATH, render_sync_spec
from components.serving.tfserving_config import ServedModel

from .sync_helpers import Sync, mark_complete, marker_for, publish, v2_warnings, version_files, wait_for


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

    unit = sync.run("once", MODELS_VOLUME_BYTES="20Gi")
    assert unit.returncode == 2 and "MODELS_VOLUME_BYTES='20Gi' is not a number of bytes" in unit.stderr


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
