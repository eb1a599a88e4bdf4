"""Run the serving sync script for real (POSIX sh + the AWS CLI) against a moto S3 server.

Every run has AWS CLI v1's upgrade debug mode on (``AWS_CLI_UPGRADE_DEBUG_MODE``): v1 then warns
about each command whose behaviour would differ under v2, the CLI of the sync image, and ``Sync.run``
fails on any such warning (``v2_warnings``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from components.model_contract import COMPLETION_MARKER, marker_document, render_marker
from components.serving.model_sync import SYNC_SCRIPT, render_sync_spec
from components.serving.tfserving_config import ServedModel


def version_files(model: str, version: int, files: int = 0) -> dict[str, bytes]:
    """A fake SavedModel (plus ``files`` extra 1 KiB shards): relative path -> content."""
    content = {"saved_model.pb": f"graph {model} {version}".encode(), "variables/variables.index": b"index"}
    content.update({f"variables/shard-{shard:03d}": b"x" * 1024 for shard in range(files)})
    return content


def marker_for(model: str, version: int, content: dict[str, bytes]) -> bytes:
    """The marker model_tools publish writes for ``content`` (fixed time: the same files, the same bytes)."""
    listed = {rel: (len(body), hashlib.sha256(body).hexdigest()) for rel, body in content.items()}
    return render_marker(marker_document(model, version, listed, "2024-01-01T00:00:00Z", "tests"))


def publish(client, bucket: str, model: str, version: int, complete: bool = True, files: int = 0) -> None:
    """Upload a fake SavedModel (plus ``files`` extra shards); the marker last when ``complete``."""
    prefix = f"models/{model}/{version}"
    for rel, body in version_files(model, version, files).items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=body)
    if complete:
        mark_complete(client, bucket, model, version, files)


def mark_complete(client, bucket: str, model: str, version: int, files: int = 0) -> None:
    client.put_object(Bucket=bucket, Key=f"models/{model}/{version}/{COMPLETION_MARKER}",
                      Body=marker_for(model, version, version_files(model, version, files)))


UPGRADE_WARNING = re.compile(r"AWS CLI v2 UPGRADE WARNING: (.*)")
TIMESTAMP_WARNING = "In AWS CLI v2, all timestamp response values are returned in the ISO 8601 format"


def v2_warnings(log: str) -> list[str]:
    """AWS CLI v1's warnings (AWS_CLI_UPGRADE_DEBUG_MODE) about what v2 would do differently, except the
    timestamp format one: v1 warns whenever a response holds a timestamp, and the script never prints one
    (its --query selects keys and ETags, `s3 cp` prints nothing)."""
    return [w for w in UPGRADE_WARNING.findall(log) if not w.startswith(TIMESTAMP_WARNING)]


class Sync:
    """One sync container's world: script, spec file, models directory, environment.

    ``aws`` on the script's PATH is a wrapper (``bin/aws``) that runs the real AWS CLI with v1's upgrade
    debug mode on, appends the CLI's stderr to ``aws.log`` and passes it on without the debug warnings
    (so the script sees what it would see in production). ``run`` and ``stop_all`` fail on any warning
    in ``aws.log`` (``v2_warnings``). The wrapper can also change the bucket right after the script
    lists it (``change_after_listing``)."""

    def __init__(self, tmp_path: Path, endpoint: str, bucket: str):
        self.tmp = tmp_path
        self.script = tmp_path / "sync.sh"
        self.script.write_text(SYNC_SCRIPT)
        self.spec = tmp_path / "config" / "sync.models"
        self.spec.parent.mkdir()
        self.models = tmp_path / "models"
        self.scratch = tmp_path / "scratch"
        self.scratch.mkdir()
        self.endpoint, self.bucket = endpoint, bucket
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.aws_log = tmp_path / "aws.log"
        self.aws_log.touch()
        path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        self._write_aws_wrapper(shutil.which("aws", path=path))
        self.env = {**os.environ, "MODEL_SOURCE_URI": f"s3://{bucket}/models", "MODEL_DIR": str(self.models),
                    "MODEL_SPEC_FILE": str(self.spec), "AWS_ENDPOINT_URL": endpoint,
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "TMPDIR": str(self.scratch), "SYNC_INTERVAL_SECONDS": "1",
                    "AWS_CLI_UPGRADE_DEBUG_MODE": "true", "PATH": f"{self.bin}:{path}"}
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "PRUNE_AFTER_SECONDS",
                    "MODELS_VOLUME_BYTES", "AWS_PAGER", "AWS_CONFIG_FILE"):
            self.env.pop(var, None)
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    def _write_aws_wrapper(self, real: str | None) -> None:
        assert real, "the AWS CLI (awscli) is not installed next to the test interpreter"
        wrapper = self.bin / "aws"
        wrapper.write_text(f"""#!/bin/sh
err=$(mktemp)
"{real}" "$@" 2> "$err"; rc=$?
cat "$err" >> "{self.aws_log}"
grep -v '^AWS CLI v2 UPGRADE WARNING: ' "$err" >&2
rm -f "$err"
case "$*" in
  "s3api list-objects-v2 "*)
    if [ -e "{self.bin}/change.py" ] && [ ! -e "{self.bin}/changed" ]; then
      : > "{self.bin}/changed"; "{sys.executable}" "{self.bin}/change.py"
    fi ;;
esac
exit $rc
""")
        wrapper.chmod(0o755)

    def change_after_listing(self, objects: dict[str, bytes | None]) -> None:
        """Right after the script's first listing (``aws s3api list-objects-v2``), put ``objects`` into
        the bucket (``None``: delete the key): a publish landing between the sync's listing and its copy."""
        lines = ["import boto3",
                 f"client = boto3.client('s3', endpoint_url={self.endpoint!r}, region_name='us-east-1', "
                 "aws_access_key_id='testing', aws_secret_access_key='testing')"]
        for number, (key, body) in enumerate(objects.items()):
            if body is None:
                lines.append(f"client.delete_object(Bucket={self.bucket!r}, Key={key!r})")
            else:
                (self.bin / f"body-{number}").write_bytes(body)
                lines.append(f"client.put_object(Bucket={self.bucket!r}, Key={key!r}, "
                             f"Body=open({str(self.bin / f'body-{number}')!r}, 'rb').read())")
        (self.bin / "change.py").write_text("\n".join(lines) + "\n")

    def check_aws_log(self, since: int = 0) -> None:
        """Fail if the AWS CLI warned (from byte ``since`` of aws.log on) that v2 would behave differently."""
        warnings = v2_warnings(self.aws_log.read_text()[since:])
        assert not warnings, f"AWS CLI v2 would behave differently: {warnings}"

    def write_spec(self, *models: ServedModel) -> None:
        """Replace the spec file in one rename, as the kubelet swaps a ConfigMap volume."""
        staged = self.spec.with_name(f".staged-{uuid.uuid4().hex}")
        staged.write_text(render_sync_spec(models))
        staged.replace(self.spec)

    def run(self, mode: str = "once", script: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        """Run ``sync.sh mode`` (or another ``script``) to the end; fails on a v2 warning of the AWS CLI."""
        since = len(self.aws_log.read_text())
        result = subprocess.run(["sh", str(script or self.script), mode], env={**self.env, **env},
                                capture_output=True, text=True, timeout=60)
        if script is None:
            self.check_aws_log(since)
        return result

    def start(self, mode: str, **env: str) -> subprocess.Popen:
        """Start in the background, stderr to a file (read with ``log``); killed by ``stop_all``."""
        log = self.tmp / f"{mode}-{len(self.processes)}.log"
        with log.open("w") as sink:
            process = subprocess.Popen(["sh", str(self.script), mode], env={**self.env, **env}, stdout=sink,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((process, log))
        return process

    def log(self, process: subprocess.Popen) -> str:
        return next(log for p, log in self.processes if p is process).read_text()

    def stop_all(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # the script and its aws/sleep children
                process.wait(timeout=10)
        self.check_aws_log()

    def versions(self, model: str) -> list[int]:
        directory = self.models / model
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []

    def hidden(self, model: str) -> list[str]:
        return sorted(p.name for p in (self.models / model).iterdir() if p.name.startswith("."))

    def seed(self, model: str, *versions: int, files: int = 0) -> None:
        """Versions already on the local volume, as an earlier round copied them (files and marker as
        ``publish`` uploads them; no record of the marker's identity in the listing)."""
        for version in versions:
            content = version_files(model, version, files)
            for rel, body in {**content, COMPLETION_MARKER: marker_for(model, version, content)}.items():
                (self.models / model / str(version) / rel).parent.mkdir(parents=True, exist_ok=True)
                (self.models / model / str(version) / rel).write_bytes(body)

    def files(self, model: str, version: int) -> dict[str, bytes]:
        """The local copy of a version: relative path -> content."""
        root = self.models / model / str(version)
        return {path.relative_to(root).as_posix(): path.read_bytes()
                for path in sorted(root.rglob("*")) if path.is_file()}


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
