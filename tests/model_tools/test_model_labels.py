"""promote / rollback on copies of stack files; versions checked against moto S3."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from model_tools.cli import main
from model_tools.publish import publish

REPO = Path(__file__).resolve().parents[2]

STACK = """\
# Dev stack of the TF Serving platform.
config:
  aws:region: us-east-1   # region of everything
  tfserving-platform:clusterName: tfserving-dev
  tfserving-platform:servers:
    default:
      nodePool: gpu
      models:
        # The example digits classifier.
        digits:
          versionPolicy: specific   # latest | all | specific
          versions: [1, 2]          # loaded versions
          labels:
            stable: 1   # what clients get by default
            canary: 2
        scorer:
          versionPolicy: latest   # newest two
          latestVersions: 2
    # A second server: its models are found too.
    cpu:
      nodePool: system
      gpus: 0
      models:
        unlabelled:
          versionPolicy: all
  tfserving-platform:allowedNamespaces: [apps]
  # trailing comment
"""


@pytest.fixture
def stack_file(tmp_path):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(STACK)
    return path


@pytest.fixture
def published(s3_bucket, small_saved_model):
    """digits and scorer versions 1..3 published; digits version 4 uploaded without a marker."""
    for model in ("digits", "scorer", "unlabelled"):
        for _ in range(3):
            publish(str(small_saved_model), s3_bucket, model, log=lambda *a: None)
    from model_tools.storage import open_storage

    backend, base = open_storage(s3_bucket)
    backend.put_bytes(base.key("digits", 4, "saved_model.pb"), b"half an upload")
    return s3_bucket


def cli(*args) -> int:
    return main(list(map(str, args)))


def promote(stack_file, bucket, model, version, *extra) -> int:
    return cli("promote", "--stack-file", stack_file, "--model", model, "--version", version,
               "--bucket-uri", bucket, *extra)


def rollback(stack_file, bucket, model, *extra) -> int:
    return cli("rollback", "--stack-file", stack_file, "--model", model, "--bucket-uri", bucket, *extra)


def servers(path) -> dict:
    return yaml.safe_load(Path(path).read_text())["config"]["tfserving-platform:servers"]


def models(path) -> dict:
    """Every server's models in one map (model names are unique across servers)."""
    return {name: entry for server in servers(path).values() for name, entry in server["models"].items()}


def assert_platform_accepts(path) -> None:
    """The infrastructure side's own validation of each server (and its models) accepts the edited file."""
    settings = pytest.importorskip("stacks.settings")
    for server in servers(path).values():
        settings.Server.model_validate(server)


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b), "lines were added or removed"
    return [(x, y) for x, y in zip(a, b) if x != y]


def test_promote_canary_adds_version_and_keeps_everything_else(stack_file, published, capsys):
    assert promote(stack_file, published, "digits", 3, "--label", "canary") == 0
    out = capsys.readouterr().out
    assert "label 'canary' 2 -> 3" in out and "added 3 to versions" in out
    assert "pulumi up --stack dev" in out
    digits = models(stack_file)["digits"]
    assert digits["labels"] == {"stable": 1, "canary": 3}
    assert digits["versions"] == [1, 2, 3]
    after = stack_file.read_text()
    assert changed_lines(STACK, after) == [
        (
            "          versions: [1, 2]          # loaded versions",
            "          versions: [1, 2, 3]       # loaded versions",
        ),
        ("            canary: 2", "            canary: 3"),
    ]
    assert_platform_accepts(stack_file)


def test_promote_unpublished_or_incomplete_version_refused(stack_file, published, capsys):
    for version in (4, 9):  # 4 has files but no _COMPLETE marker; 9 does not exist
        assert promote(stack_file, published, "digits", version, "--label", "stable") == 2
        err = capsys.readouterr().err
        assert f"version {version} of model 'digits' is not published" in err
        assert "published versions: 1, 2, 3" in err and "Traceback" not in err
    assert stack_file.read_text() == STACK


def test_promote_rejects_bad_label_names(stack_file, published, capsys):
    assert promote(stack_file, published, "digits", 2, "--label", "can-ary") == 2
    assert "invalid version label 'can-ary'" in capsys.readouterr().err
    assert stack_file.read_text() == STACK


def test_promote_same_version_is_a_no_op(stack_file, published, capsys):
    assert promote(stack_file, published, "digits", 1) == 0
    assert "already points at version 1" in capsys.readouterr().out
    assert stack_file.read_text() == STACK


def test_promote_new_label_on_model_without_labels(stack_file, published):
    assert promote(stack_file, published, "unlabelled", 2, "--label", "stable") == 0
    assert models(stack_file)["unlabelled"] == {"versionPolicy": "all", "labels": {"stable": 2}}
    assert_platform_accepts(stack_file)


def test_latest_policy_takes_no_labels_unless_pinned(stack_file, published, capsys):
    args = [
        "promote",
        "--stack-file",
        stack_file,
        "--model",
        "scorer",
        "--version",
        3,
        "--label",
        "canary",
        "--bucket-uri",
        published,
    ]
    assert cli(*args) == 2
    err = capsys.readouterr().err
    assert "versionPolicy latest, which takes no labels" in err and "--pin" in err and "[2, 3]" in err
    assert stack_file.read_text() == STACK
    # --pin: latest (loads 2 and 3 of 1..3) becomes specific [2, 3], in place, then the label is set.
    assert cli(*args, "--pin") == 0
    assert "versionPolicy latest -> specific, versions [2, 3]" in capsys.readouterr().out
    scorer = models(stack_file)["scorer"]
    assert scorer == {"versionPolicy": "specific", "versions": [2, 3], "labels": {"canary": 3}}
    assert list(scorer) == ["versionPolicy", "versions", "labels"]
    pinned = "          versionPolicy: specific # newest two\n          versions: [2, 3]\n"
    assert pinned in stack_file.read_text()
    assert_platform_accepts(stack_file)
    # Now specific: an older version is added to versions.
    assert promote(stack_file, published, "scorer", 1, "--label", "stable") == 0
    assert models(stack_file)["scorer"]["versions"] == [1, 2, 3]
    assert_platform_accepts(stack_file)


def test_rollback_moves_stable_to_previous_published(stack_file, published, capsys):
    assert promote(stack_file, published, "digits", 3) == 0
    capsys.readouterr()
    assert rollback(stack_file, published, "digits") == 0
    out = capsys.readouterr().out
    assert "label 'stable' 3 -> 2" in out and "pulumi up --stack dev" in out
    assert models(stack_file)["digits"]["labels"]["stable"] == 2
    assert rollback(stack_file, published, "digits", "--to", 1) == 0
    assert models(stack_file)["digits"]["labels"]["stable"] == 1
    assert rollback(stack_file, published, "digits") == 2
    assert "nothing to roll back to" in capsys.readouterr().err
    assert rollback(stack_file, published, "digits", "--to", 4) == 2
    assert "not published" in capsys.readouterr().err
    assert "# what clients get by default" in stack_file.read_text()


def test_stack_name_from_file_name(tmp_path, published, capsys, monkeypatch):
    path = tmp_path / "Pulumi.prod-eu.yaml"
    path.write_text(STACK)
    monkeypatch.chdir(tmp_path)
    assert promote(path.name, published, "digits", 2) == 0
    assert "\n  pulumi up --stack prod-eu\n" in capsys.readouterr().out
    other = tmp_path / "stack.yaml"
    other.write_text(STACK)
    assert promote(other, published, "digits", 2) == 2
    assert "expected a name like Pulumi.<stack>.yaml" in capsys.readouterr().err


def test_model_in_second_server_is_found_and_only_it_changes(stack_file, published, capsys):
    assert promote(stack_file, published, "unlabelled", 3, "--label", "beta") == 0
    out = capsys.readouterr().out
    assert "unlabelled: label 'beta' unset -> 3" in out and "server 'cpu'" in out
    after = servers(stack_file)
    assert after["cpu"]["models"]["unlabelled"] == {"versionPolicy": "all", "labels": {"beta": 3}}
    before = yaml.safe_load(STACK)["config"]["tfserving-platform:servers"]
    assert after["default"] == before["default"]
    assert {k: v for k, v in after["cpu"].items() if k != "models"} == {
        k: v for k, v in before["cpu"].items() if k != "models"
    }
    added = "          labels:\n            beta: 3\n"
    assert added in stack_file.read_text()
    assert changed_lines(STACK, stack_file.read_text().replace(added, "")) == []
    assert_platform_accepts(stack_file)


def test_unnamespaced_servers_key(tmp_path, published):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(STACK.replace("tfserving-platform:servers:", "servers:"))
    assert promote(path, published, "unlabelled", 2) == 0
    data = yaml.safe_load(path.read_text())["config"]["servers"]
    assert data["cpu"]["models"]["unlabelled"]["labels"] == {"stable": 2}


def test_unknown_model_lists_models_per_server(stack_file, published, capsys):
    assert promote(stack_file, published, "resnet", 1) == 2
    err = capsys.readouterr().err
    assert "model 'resnet' is not configured in any server of" in err
    assert "(models per server: default: digits, scorer; cpu: unlabelled)" in err
    assert "under config.tfserving-platform:servers:" in err
    assert "    default:\n      models:\n        resnet:\n          versionPolicy: specific\n" in err
    assert "Traceback" not in err
    assert rollback(stack_file, published, "resnet") == 2
    assert "model 'resnet' is not configured in any server" in capsys.readouterr().err
    assert stack_file.read_text() == STACK


def test_missing_servers_map_and_missing_file(tmp_path, published, capsys):
    old = tmp_path / "Pulumi.old.yaml"
    old.write_text("config:\n  tfserving-platform:models:\n    digits:\n      versionPolicy: all\n")
    assert promote(old, published, "digits", 1) == 2
    err = capsys.readouterr().err
    assert "has no 'tfserving-platform:servers' map under 'config'" in err
    assert "old layout" in err and "config.tfserving-platform:servers.<server>.models" in err
    bare = tmp_path / "Pulumi.bare.yaml"
    bare.write_text("config:\n  tfserving-platform:clusterName: x\n")
    assert promote(bare, published, "digits", 1) == 2
    err = capsys.readouterr().err
    assert "has no 'tfserving-platform:servers' map" in err and "old layout" not in err
    assert promote(tmp_path / "Pulumi.nope.yaml", published, "digits", 1) == 2
    assert "does not exist" in capsys.readouterr().err


def test_model_in_two_servers_is_refused(tmp_path, published, capsys):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(STACK.replace("        unlabelled:", "        digits:"))
    assert promote(path, published, "digits", 2) == 2
    assert "configured in several servers" in capsys.readouterr().err


CANARY_STACK = """\
config:
  tfserving-platform:servers:
    default:
      canaryWeight: 20
      models:
        digits:
          versionPolicy: specific
          versions: [1]
          canaryVersion: 2   # takes 20% of unlabelled traffic
"""


def test_canary_label_is_managed_while_canary_version_is_active(tmp_path, published, capsys):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(CANARY_STACK)
    for move in (lambda: promote(path, published, "digits", 2, "--label", "canary"),
                 lambda: rollback(path, published, "digits", "--label", "canary", "--to", 1)):
        assert move() == 2
        err = capsys.readouterr().err
        assert "active canaryVersion 2" in err and "Change canaryVersion in the stack file instead" in err
    assert path.read_text() == CANARY_STACK
    # A version above the canary cannot join versions: canaryVersion must stay the highest.
    assert promote(path, published, "digits", 3) == 2
    assert "above the canary" in capsys.readouterr().err
    assert path.read_text() == CANARY_STACK
    # Labelling the canary version itself promotes the canary (it joins versions).
    assert promote(path, published, "digits", 2) == 0
    out = capsys.readouterr().out
    assert "label 'stable' 1 (by default: the highest of versions) -> 2" in out
    assert "canaryVersion 2 is now in versions: the canary is promoted" in out
    assert models(path)["digits"] == {
        "versionPolicy": "specific", "versions": [1, 2], "canaryVersion": 2, "labels": {"stable": 2}
    }
    assert "canaryVersion: 2   # takes 20% of unlabelled traffic" in path.read_text()
    assert_platform_accepts(path)
    # Promoted: the canary label is free again.
    assert promote(path, published, "digits", 1, "--label", "canary") == 0
    assert models(path)["digits"]["labels"] == {"stable": 2, "canary": 1}
    assert_platform_accepts(path)


def test_stable_defaults_to_highest_version_with_specific(tmp_path, published, capsys):
    text = CANARY_STACK.replace("versions: [1]", "versions: [1, 2]").replace(
        "          canaryVersion: 2   # takes 20% of unlabelled traffic\n", ""
    )
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(text)
    assert promote(path, published, "digits", 2) == 0
    assert "already points at version 2 (by default: the highest of versions)" in capsys.readouterr().out
    assert path.read_text() == text
    assert rollback(path, published, "digits") == 0
    assert "label 'stable' 2 (by default: the highest of versions) -> 1" in capsys.readouterr().out
    assert models(path)["digits"]["labels"] == {"stable": 1}
    assert_platform_accepts(path)


def test_block_style_lists_and_indentation_are_kept(tmp_path, published):
    text = (
        "config:\n"
        "    tfserving-platform:servers:\n"
        "        default:\n"
        "            models:\n"
        "                digits:\n"
        "                    versionPolicy: specific\n"
        "                    versions:\n"
        "                        - 1   # first\n"
        "                        - 3\n"
        "                    labels:\n"
        "                        stable: 1\n"
    )
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(text)
    assert promote(path, published, "digits", 2) == 0
    assert path.read_text() == text.replace(
        "                        - 3\n", "                        - 2\n                        - 3\n"
    ).replace("stable: 1", "stable: 2")


@pytest.mark.skipif(not (REPO / "Pulumi.dev.yaml").is_file(), reason="repository has no Pulumi.dev.yaml")
def test_real_dev_stack_file_copy(tmp_path, published, capsys):
    """The project's own dev stack: promoting digits changes only its entry, and the stack validates."""
    path = tmp_path / "Pulumi.dev.yaml"
    shutil.copy(REPO / "Pulumi.dev.yaml", path)
    before = path.read_text()
    if "digits" not in models(path):
        pytest.skip("dev stack does not configure the digits model")
    server = next(name for name, srv in servers(path).items() if "digits" in srv["models"])
    digits = models(path)["digits"]
    canary = digits.get("canaryVersion")
    target = 3 if canary is None or canary in digits.get("versions", []) else canary
    assert promote(path, published, "digits", target, "--pin") == 0
    out = capsys.readouterr().out
    assert "pulumi up --stack dev" in out and f"server '{server}'" in out
    after = path.read_text()
    assert models(path)["digits"]["labels"]["stable"] == target
    assert_platform_accepts(path)
    comments = [line for line in before.splitlines() if line.lstrip().startswith("#")]
    assert comments and all(c in after.splitlines() for c in comments)
    old, new = yaml.safe_load(before)["config"], yaml.safe_load(after)["config"]
    assert list(old) == list(new)
    key = "tfserving-platform:servers"
    assert {k: v for k, v in old.items() if k != key} == {k: v for k, v in new.items() if k != key}
    for name in old[key]:
        old_models, new_models = old[key][name].pop("models"), new[key][name].pop("models")
        assert old[key][name] == new[key][name]
        assert {m: e for m, e in old_models.items() if m != "digits"} == {
            m: e for m, e in new_models.items() if m != "digits"
        }
    config = pytest.importorskip("stacks.config")
    stack_files = pytest.importorskip("stacks.stack_files")
    settings = config.parse_settings(stack_files.load_stack_config(REPO / "Pulumi.yaml", path, "dev").config)
    assert settings.servers[server].models["digits"].labels["stable"] == target
