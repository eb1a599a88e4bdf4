"""Run the serving sync script for real (POSIX sh + the AWS CLI) against a moto S3 server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from components.model_contract import COMPLETION_MARKER
from components.serving.model_sync import SYNC_SCRIPT, render_sync_spec
from components.serving.tfserving_config import ServedModel


def publish(client, bucket: str, model: str, version: int, complete: bool = True, files: int = 0) -> None:
    """Upload a fake SavedModel (plus ``files`` extra shards); the marker last when ``complete``."""
    prefix = f"models/{model}/{version}"
    client.put_object(Bucket=bucket, Key=f"{prefix}/saved_model.pb", Body=f"graph {model} {version}".encode())
    client.put_object(Bucket=bucket, Key=f"{prefix}/variables/variables.index", Body=b"index")
    for shard in range(files):
        client.put_object(Bucket=bucket, Key=f"{prefix}/variables/shard-{shard:03d}", Body=b"x" * 1024)
    if complete:
        mark_complete(client, bucket, model, version)


def mark_complete(client, bucket: str, model: str, version: int) -> None:
    client.put_object(Bucket=bucket, Key=f"models/{model}/{version}/{COMPLETION_MARKER}", Body=b"{}")


class Sync:
    """One sync container's world: script, spec file, models directory, environment."""

    def __init__(self, tmp_path: Path, endpoint: str, bucket: str):
        self.tmp = tmp_path
        self.script = tmp_path / "sync.sh"
        self.script.write_text(SYNC_SCRIPT)
        self.spec = tmp_path / "config" / "sync.models"
        self.spec.parent.mkdir()
        self.models = tmp_path / "models"
        self.scratch = tmp_path / "scratch"
        self.scratch.mkdir()
        self.env = {**os.environ, "MODEL_SOURCE_URI": f"s3://{bucket}/models", "MODEL_DIR": str(self.models),
                    "MODEL_SPEC_FILE": str(self.spec), "AWS_ENDPOINT_URL": endpoint,
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "TMPDIR": str(self.scratch), "SYNC_INTERVAL_SECONDS": "1",
                    "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "PRUNE_AFTER_SECONDS"):
            self.env.pop(var, None)
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    def write_spec(self, *models: ServedModel) -> None:
        """Replace the spec file in one rename, as the kubelet swaps a ConfigMap volume."""
        staged = self.spec.with_name(f".staged-{uuid.uuid4().hex}")
        staged.write_text(render_sync_spec(models))
        staged.replace(self.spec)

    def run(self, mode: str = "once", **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(self.script), mode], env={**self.env, **env}, capture_output=True,
                              text=True, timeout=60)

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

    def versions(self, model: str) -> list[int]:
        directory = self.models / model
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []

    def hidden(self, model: str) -> list[str]:
        return sorted(p.name for p in (self.models / model).iterdir() if p.name.startswith("."))

    def seed(self, model: str, *versions: int) -> None:
        """Versions already on the local volume (copied by an earlier round)."""
        for version in versions:
            (self.models / model / str(version)).mkdir(parents=True)
            (self.models / model / str(version) / "saved_model.pb").write_bytes(b"old")


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
