"""The command line itself: help on every subcommand, and no Pulumi/TensorFlow where not needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model_tools.cli import main

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = {
    "export": ["--out", "--epochs", "--seed", "--warmup", "--force"],
    "inspect": ["--model-name", "--signature", "--json", "--run"],
    "publish": ["--bucket-uri", "--model", "--version", "--force", "--no-progress", "--role-arn",
                "--impersonate-service-account"],
    "list": ["--bucket-uri", "--model", "--json", "--role-arn", "--impersonate-service-account"],
    "promote": ["--stack-file", "--model", "--version", "--label", "--bucket-uri", "--pin", "--role-arn"],
    "rollback": ["--stack-file", "--model", "--label", "--to", "--bucket-uri", "--pin", "--role-arn"],
    "smoke": ["--rest-url", "--grpc-target", "--model", "-n", "--batch-size", "--max-p99-ms"],
    "tflite": ["--out", "--quantize", "--no-eval"],
}


def test_module_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "model_tools", "--help"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for name in SUBCOMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in SUBCOMMANDS[name]:
        assert flag in out, flag


def test_missing_required_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["publish", "somewhere"])
    assert exc.value.code == 2
    assert "--bucket-uri" in capsys.readouterr().err


def test_publish_list_promote_work_without_pulumi_or_tensorflow(tmp_path):
    """In a fresh interpreter where `import pulumi` fails, the bucket and stack commands (publish, list,
    promote, rollback, check) still work."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.modules["pulumi"] = None  # any `import pulumi` now raises ImportError
        os.environ.update(AWS_ACCESS_KEY_ID="t", AWS_SECRET_ACCESS_KEY="t", AWS_DEFAULT_REGION="us-east-1")
        os.environ.pop("AWS_ENDPOINT_URL", None); os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        import boto3
        from moto import mock_aws
        from model_tools.cli import main
        sm = {str(tmp_path)!r} + "/sm"
        os.makedirs(sm)
        open(sm + "/saved_model.pb", "wb").write(b"x")
        open({str(tmp_path)!r} + "/Pulumi.ci.yaml", "w").write(
            "config:\\n  tfserving-platform:servers:\\n    default:\\n      models:\\n"
            "        digits:\\n          versionPolicy: all\\n")
        with mock_aws():
            boto3.client("s3").create_bucket(Bucket="ci-bucket")
            for _ in range(2):
                assert main(["publish", sm, "--bucket-uri", "s3://ci-bucket/models", "--model", "digits"]) == 0
            assert main(["list", "--bucket-uri", "s3://ci-bucket/models"]) == 0
            stack = {str(tmp_path)!r} + "/Pulumi.ci.yaml"
            assert main(["promote", "--stack-file", stack, "--model", "digits",
                         "--version", "2", "--bucket-uri", "s3://ci-bucket/models"]) == 0
            # The label had no version before this promotion, so there is no recorded one to go back to:
            # roll back to the previous published version, explicitly.
            assert main(["rollback", "--stack-file", stack, "--model", "digits", "--previous-published",
                         "--bucket-uri", "s3://ci-bucket/models"]) == 0
            assert main(["check", "--stack-file", stack, "--bucket-uri", "s3://ci-bucket/models"]) == 0
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
        assert not any(m.startswith("pulumi") and sys.modules[m] for m in sys.modules)
        print("OK")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("OK")
    assert "pulumi up --stack ci" in proc.stdout
    assert "label 'stable' 2 -> 1" in proc.stdout
    assert "ok: all 2 are published" in proc.stdout  # a version for `all`, and the stable label's
