"""``check``: every version a stack file needs is published (has its ``_COMPLETE`` marker), before
``pulumi up``; a missing one would leave new pods waiting in Init. Against moto S3 (and the GCS
emulator once), on copies of stack files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from model_tools.cli import main
from model_tools.publish import publish
from model_tools.storage import open_storage

REPO = Path(__file__).resolve().parents[2]

STACK = """\
config:
  tfserving-platform:servers:
    default:
      canaryWeight: 20
      models:
        digits:
          versionPolicy: specific
          versions: [1, 2]
          labels:
            stable: 1   # kept as is: check never writes
          canaryVersion: 3
        scorer:
          versionPolicy: latest
          latestVersions: 2
    cpu:
      nodePool: system
      gpus: 0
      models:
        unlabelled:
          versionPolicy: all
          labels:
            beta: 2
"""


@pytest.fixture
def stack_file(tmp_path):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(STACK)
    return path


def put(bucket, saved_model, model, *versions) -> None:
    for version in versions:
        publish(str(saved_model), bucket, model, version=version, log=lambda *a: None)


def unpublish(bucket, model, version, keep_files=False) -> None:
    """Delete a version from the bucket (or only its marker: an upload that never finished)."""
    storage, base = open_storage(bucket)
    prefix = base.key(model, version) + "/"
    storage.delete([base.key(model, version, "_COMPLETE")] if keep_files else sorted(storage.list(prefix)))


def check(stack_file, bucket) -> int:
    return main(["check", "--stack-file", str(stack_file), "--bucket-uri", bucket])


def objects(bucket) -> dict[str, int]:
    storage, base = open_storage(bucket)
    return storage.list(base.key())


def test_everything_published(stack_file, s3_bucket, small_saved_model, capsys):
    put(s3_bucket, small_saved_model, "digits", 1, 2, 3)
    put(s3_bucket, small_saved_model, "scorer", 1, 2, 3)
    put(s3_bucket, small_saved_model, "unlabelled", 1, 2)
    before = objects(s3_bucket)
    assert check(stack_file, s3_bucket) == 0
    out = capsys.readouterr().out
    assert out == (
        f"{stack_file} needs from s3://models-bucket/models:\n"
        "  SERVER   MODEL       NEEDS                               STATUS\n"
        "  default  digits      version 1 (versions, label stable)  published\n"
        "  default  digits      version 2 (versions)                published\n"
        "  default  digits      version 3 (canaryVersion)           published\n"
        "  default  scorer      a published version (latest 2)      published: 1, 2, 3\n"
        "  cpu      unlabelled  a published version (all)           published: 1, 2\n"
        "  cpu      unlabelled  version 2 (label beta)              published\n"
        "ok: all 6 are published\n"
    )
    # Read-only: neither the stack file nor the bucket changes.
    assert stack_file.read_text() == STACK
    assert objects(s3_bucket) == before


def test_each_missing_version_is_named(stack_file, s3_bucket, small_saved_model, capsys):
    put(s3_bucket, small_saved_model, "digits", 1, 2)  # canaryVersion 3 never published
    unpublish(s3_bucket, "digits", 2)  # deleted from the bucket
    put(s3_bucket, small_saved_model, "unlabelled", 1, 2)
    unpublish(s3_bucket, "unlabelled", 2, keep_files=True)  # files, no marker: not published
    # scorer: nothing at all
    assert check(stack_file, s3_bucket) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[2:] == [
        "  default  digits      version 1 (versions, label stable)  published",
        "  default  digits      version 2 (versions)                "
        "MISSING: not in the bucket (published: 1)",
        "  default  digits      version 3 (canaryVersion)           "
        "MISSING: not in the bucket (published: 1)",
        "  default  scorer      a published version (latest 2)      "
        "MISSING: no published version under s3://models-bucket/models/scorer/",
        "  cpu      unlabelled  a published version (all)           published: 1",
        "  cpu      unlabelled  version 2 (label beta)              "
        "MISSING: incomplete upload, no _COMPLETE marker (published: 1)",
    ]
    err = captured.err
    assert err.startswith(
        f"error: 4 of 6 model versions {stack_file} needs are not published in s3://models-bucket/models: "
        "default/digits version 2, default/digits version 3, default/scorer (no published version), "
        "cpu/unlabelled version 2. New TF Serving pods would wait in Init (model-sync-init) for them."
    )
    assert "before `pulumi up`" in err and "Traceback" not in err
    assert stack_file.read_text() == STACK
    # Publishing what is missing makes it pass.
    put(s3_bucket, small_saved_model, "digits", 2, 3)
    put(s3_bucket, small_saved_model, "scorer", 1)
    publish(str(small_saved_model), s3_bucket, "unlabelled", version=2, force=True, log=lambda *a: None)
    assert check(stack_file, s3_bucket) == 0
    assert "ok: all 6 are published" in capsys.readouterr().out


def test_promoted_canary_and_labels_need_no_extra_version(tmp_path, s3_bucket, small_saved_model, capsys):
    """A promoted canary (canaryVersion in versions) and labels on loaded versions add no row."""
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(
        "config:\n  servers:\n    default:\n      models:\n        digits:\n"
        "          versionPolicy: specific\n          versions: [2, 3]\n          canaryVersion: 3\n"
        "          labels: {stable: 3, old: 2}\n"
    )
    put(s3_bucket, small_saved_model, "digits", 2, 3)
    assert check(path, s3_bucket) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2:] == [
        "  default  digits  version 2 (versions, label old)                    published",
        "  default  digits  version 3 (versions, canaryVersion, label stable)  published",
        "ok: all 2 are published",
    ]


def test_gcs_bucket(stack_file, gcs_bucket, small_saved_model, capsys):
    put(gcs_bucket, small_saved_model, "digits", 1, 2)
    put(gcs_bucket, small_saved_model, "scorer", 1)
    put(gcs_bucket, small_saved_model, "unlabelled", 1, 2)
    assert check(stack_file, gcs_bucket) == 1
    captured = capsys.readouterr()
    assert f"{stack_file} needs from gs://models-bucket/models:" in captured.out
    assert "published in gs://models-bucket/models: default/digits version 3. " in captured.err


def test_real_dev_stack_file(tmp_path, s3_bucket, small_saved_model, capsys):
    """The project's own dev stack: every model it serves, in every server."""
    path = tmp_path / "Pulumi.dev.yaml"
    shutil.copy(REPO / "Pulumi.dev.yaml", path)
    servers = yaml.safe_load(path.read_text())["config"]["tfserving-platform:servers"]
    models = {name: entry for server in servers.values() for name, entry in server["models"].items()}
    needed = {
        name: sorted({*entry.get("versions", []), *entry.get("labels", {}).values(),
                      *([entry["canaryVersion"]] if entry.get("canaryVersion") else [])} or {1})
        for name, entry in models.items()
    }
    for name, versions in needed.items():
        put(s3_bucket, small_saved_model, name, *versions)
    assert check(path, s3_bucket) == 0
    out = capsys.readouterr().out
    for server, body in servers.items():
        for name in body["models"]:
            assert f"  {server}" in out and f"  {name}  " in out
    # Remove the highest version some model needs: check names it.
    name, versions = max(((n, v) for n, v in needed.items() if models[n].get("versionPolicy") == "specific"),
                         key=lambda item: item[1][-1], default=(None, None))
    if name is None:
        pytest.skip("dev stack has no model with versionPolicy specific")
    unpublish(s3_bucket, name, versions[-1])
    assert check(path, s3_bucket) == 1
    assert f"/{name} version {versions[-1]}" in capsys.readouterr().err


def test_user_errors(tmp_path, s3_bucket, stack_file, capsys):
    assert check(tmp_path / "Pulumi.nope.yaml", s3_bucket) == 2
    assert "does not exist" in capsys.readouterr().err
    assert check(stack_file, "ftp://bucket/models") == 2
    assert "unsupported URI scheme" in capsys.readouterr().err
    bare = tmp_path / "Pulumi.bare.yaml"
    bare.write_text("config:\n  tfserving-platform:clusterName: x\n")
    assert check(bare, s3_bucket) == 2
    assert "has no 'tfserving-platform:servers' map" in capsys.readouterr().err
    other = tmp_path / "stack.yaml"
    other.write_text(STACK)
    assert check(other, s3_bucket) == 2
    assert "expected a name like Pulumi.<stack>.yaml" in capsys.readouterr().err
    # A bucket that does not exist is a clear error, not a traceback.
    assert check(stack_file, "s3://no-such-bucket-here/models") == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["check", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--stack-file" in out and "--bucket-uri" in out and "exit 1" in out
