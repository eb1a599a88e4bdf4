"""promote / rollback on copies of stack files; versions checked against moto S3."""

from __future__ import annotations

import re
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


def label_line(path, label: str) -> list[str]:
    """The lines setting ``label``, with runs of spaces collapsed (comment alignment is ruamel's)."""
    return [" ".join(line.split()) for line in Path(path).read_text().splitlines()
            if line.lstrip().startswith(f"{label}:")]


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
        # promote records the version it replaced, for rollback.
        ("            canary: 2", "            canary: 3   # model_tools history: 3 <- 2"),
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


def test_rollback_returns_to_the_stable_before_the_promotion(stack_file, published, capsys):
    assert promote(stack_file, published, "digits", 3) == 0
    assert "            stable: 3   # what clients get by default  # model_tools history: 3 <- 1\n" \
        in stack_file.read_text()
    capsys.readouterr()
    # 2 is published and below 3, but stable was 1 before the promotion.
    assert rollback(stack_file, published, "digits") == 0
    out = capsys.readouterr().out
    assert "label 'stable' 3 -> 1" in out and "pulumi up --stack dev" in out
    assert "the version 'stable' had before 3 was promoted" in out
    assert models(stack_file)["digits"]["labels"]["stable"] == 1
    # Back at the oldest recorded version: the record is gone, the user's comment stays.
    assert "            stable: 1   # what clients get by default\n" in stack_file.read_text()
    assert rollback(stack_file, published, "digits") == 2
    err = capsys.readouterr().err
    assert "no earlier 'stable' version of model 'digits' is recorded" in err
    assert "--to N" in err and "--previous-published" in err and "Traceback" not in err
    assert rollback(stack_file, published, "digits", "--previous-published") == 2
    assert "nothing to roll back to" in capsys.readouterr().err
    assert rollback(stack_file, published, "digits", "--to", 4) == 2
    assert "not published" in capsys.readouterr().err
    assert rollback(stack_file, published, "digits", "--to", 2, "--previous-published") == 2
    assert "not both" in capsys.readouterr().err
    assert models(stack_file)["digits"]["labels"]["stable"] == 1
    assert_platform_accepts(stack_file)


def test_history_comment_does_not_read_like_an_instruction(stack_file, published):
    """A promoted stack file gets committed; tests/test_told_changes.py treats stack file comments
    that tell what to change (promote, roll back, set, ...) as instructions that need a case."""
    assert promote(stack_file, published, "digits", 3) == 0
    (line,) = label_line(stack_file, "stable")
    comment = line.split("# ", 2)[2]
    assert comment == "model_tools history: 3 <- 1"
    instruction = re.compile(r"(?i)\b(promote|roll(?:\s|-)?back|pulumi config|set|remove|change|go|switch|"
                             r"turn (?:on|off)|enable|disable)\b")
    assert not instruction.search(comment)


def set_canary(path, version) -> None:
    """``pulumi config set --path 'servers.default.models.digits.canaryVersion' N`` (or ``rm`` for None)."""
    text = Path(path).read_text()
    text = "\n".join(line for line in text.splitlines() if "canaryVersion:" not in line) + "\n"
    if version is not None:
        versions = "          versions: ["
        text = text.replace(versions, f"          canaryVersion: {version}\n{versions}", 1)
    Path(path).write_text(text)


def test_rollback_after_a_rejected_canary_skips_it(tmp_path, published, capsys):
    """Versions 1, 2, 3 published; stable 1. Canary 2 is rejected (canaryVersion removed), canary 3 is
    good and promoted. Rolling stable back must return to 1, not to the rejected 2 (the highest
    published version below 3)."""
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(CANARY_STACK.replace("          canaryVersion: 2   # takes 20% of unlabelled traffic\n",
                                         ""))
    set_canary(path, 2)
    assert_platform_accepts(path)
    set_canary(path, None)  # 2 misbehaved: the canary is rolled back
    set_canary(path, 3)
    assert promote(path, published, "digits", 3) == 0  # 3 is good: promoted, stable 1 -> 3
    assert models(path)["digits"] == {
        "versionPolicy": "specific", "versions": [1, 3], "canaryVersion": 3, "labels": {"stable": 3}
    }
    capsys.readouterr()
    assert rollback(path, published, "digits") == 0
    assert "label 'stable' 3 -> 1" in capsys.readouterr().out
    assert models(path)["digits"]["labels"] == {"stable": 1}
    assert models(path)["digits"]["versions"] == [1, 3]  # 2 never joins versions
    assert_platform_accepts(path)


def test_rollback_walks_back_through_several_promotions(stack_file, published, capsys):
    for version in (2, 3):
        assert promote(stack_file, published, "digits", version) == 0
    assert "stable: 3   # what clients get by default  # model_tools history: 3 <- 2 <- 1\n" \
        in stack_file.read_text()
    # Each label keeps its own history.
    assert promote(stack_file, published, "digits", 1, "--label", "canary") == 0
    assert label_line(stack_file, "canary") == ["canary: 1 # model_tools history: 1 <- 2"]
    assert rollback(stack_file, published, "digits") == 0
    assert models(stack_file)["digits"]["labels"] == {"stable": 2, "canary": 1}
    assert "stable: 2   # what clients get by default  # model_tools history: 2 <- 1\n" \
        in stack_file.read_text()
    # A promotion after a rollback continues the history.
    assert promote(stack_file, published, "digits", 3) == 0
    assert "# model_tools history: 3 <- 2 <- 1\n" in stack_file.read_text()
    # --to a recorded version drops what came after it; --to anything else starts afresh.
    assert rollback(stack_file, published, "digits", "--to", 2) == 0
    assert "# model_tools history: 2 <- 1\n" in stack_file.read_text()
    assert rollback(stack_file, published, "digits", "--label", "canary") == 0
    assert models(stack_file)["digits"]["labels"] == {"stable": 2, "canary": 2}
    assert promote(stack_file, published, "digits", 3) == 0
    assert rollback(stack_file, published, "digits", "--to", 1) == 0
    assert "            stable: 1   # what clients get by default\n" in stack_file.read_text()
    capsys.readouterr()
    assert rollback(stack_file, published, "digits") == 2
    assert "no earlier 'stable' version" in capsys.readouterr().err
    assert_platform_accepts(stack_file)


def test_rollback_refuses_a_stale_history(stack_file, published, capsys):
    assert promote(stack_file, published, "digits", 3) == 0
    # Someone sets the label by hand: the record (3 <- 1) no longer describes the label.
    stack_file.write_text(stack_file.read_text().replace("stable: 3 ", "stable: 2 "))
    before = stack_file.read_text()
    assert rollback(stack_file, published, "digits") == 2
    err = capsys.readouterr().err
    assert "was recorded when the label pointed at 3, but it points at 2 now" in err
    assert "--previous-published to take the highest published version below 2 (version 1" in err
    assert stack_file.read_text() == before
    # The old rule only on request.
    assert rollback(stack_file, published, "digits", "--previous-published") == 0
    out = capsys.readouterr().out
    assert "label 'stable' 2 -> 1" in out and "--previous-published" in out
    # A promotion after a stale record starts a new one from the label's real version.
    assert promote(stack_file, published, "digits", 3) == 0
    assert "# model_tools history: 3 <- 1\n" in stack_file.read_text()


def test_recorded_version_no_longer_published_is_refused(stack_file, published, capsys):
    from model_tools.storage import open_storage

    assert promote(stack_file, published, "digits", 3) == 0
    backend, base = open_storage(published)
    backend.delete(sorted(backend.list(base.key("digits", 1) + "/")))
    before = stack_file.read_text()
    capsys.readouterr()
    assert rollback(stack_file, published, "digits") == 2
    err = capsys.readouterr().err
    assert "says 1 came before 3, but version 1 is no longer published" in err and "--to N" in err
    assert stack_file.read_text() == before


def test_history_on_flow_style_labels_and_before_comment_lines(tmp_path, published):
    text = (
        "config:\n"
        "  tfserving-platform:servers:\n"
        "    default:\n"
        "      models:\n"
        "        digits:\n"
        "          versionPolicy: all\n"
        "          labels: {stable: 1, beta: 2}   # flow\n"
        "        scorer:\n"
        "          versionPolicy: all\n"
        "          labels:\n"
        "            stable: 1\n"
        "          # a comment line below the label\n"
        "    cpu:\n"
        "      models:\n"
        "        unlabelled:\n"
        "          versionPolicy: all\n"
    )
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(text)
    assert promote(path, published, "digits", 2) == 0
    assert promote(path, published, "scorer", 3) == 0
    after = path.read_text()
    # The flow map gets a line per label so the record sits on the label's own line.
    assert (
        "          labels:                        # flow\n"
        "            stable: 2  # model_tools history: 2 <- 1\n"
        "            beta: 2\n"
    ) in after
    assert (
        "            stable: 3  # model_tools history: 3 <- 1\n"
        "          # a comment line below the label\n"
    ) in after
    assert rollback(path, published, "scorer") == 0
    assert rollback(path, published, "digits") == 0
    assert models(path)["digits"]["labels"] == {"stable": 1, "beta": 2}
    assert "            stable: 1\n          # a comment line below the label\n" in path.read_text()
    assert_platform_accepts(path)


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
    # Nothing recorded for the default label: refused unless the old rule is asked for.
    assert rollback(path, published, "digits") == 2
    assert "no earlier 'stable' version" in capsys.readouterr().err
    assert path.read_text() == text
    assert rollback(path, published, "digits", "--previous-published") == 0
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
    ).replace("stable: 1", "stable: 2  # model_tools history: 2 <- 1")


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
