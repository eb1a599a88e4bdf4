"""Run the serving sync script for real (POSIX sh + the AWS CLI) against a moto S3 server.

Every run has AWS CLI v1's upgrade debug mode on (``AWS_CLI_UPGRADE_DEBUG_MODE``): v1 then warns
about each command whose behaviour would differ under v2, the CLI of the sync image, and ``Sync.run``
fails on any such warning (``v2_warnings``).

:class:`CountingProxy` sits between the script (or a publisher) and moto and records every request,
so a test can count what reached the bucket: GETs of object keys, listings, or anything at all.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

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


@dataclass(frozen=True)
class Request:
    """One request that went through a :class:`CountingProxy`."""

    started: float
    """time.time() when the request arrived."""
    finished: float
    """time.time() when moto's answer had been read (for a PUT: the object exists from then on)."""
    method: str
    path: str
    """The URL path, unquoted: ``/<bucket>/<key>`` (the CLI addresses moto path-style: an IP endpoint)."""
    query: str
    status: int

    @property
    def bucket(self) -> str:
        return self.path.lstrip("/").partition("/")[0]

    @property
    def key(self) -> str:
        """The object key; empty for a request on the bucket itself (a listing)."""
        return self.path.lstrip("/").partition("/")[2]


# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy sets itself; Expect: the proxy answers the
# 100-continue itself (BaseHTTPRequestHandler.handle_expect_100) and sends moto the whole body.
_NOT_FORWARDED = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                  "upgrade", "expect", "content-length", "host", "server", "date"}


class CountingProxy:
    """A reverse proxy in front of moto's S3 server that records every request it forwards.

    Why a proxy: moto's own request recorder (``/moto-api/recorder``) records every client of the shared
    server, the test's boto3 calls included, and writes one file per server; a proxy per test counts
    exactly what the processes pointed at it sent (``AWS_ENDPOINT_URL`` = :attr:`url`). Bodies are
    buffered, responses re-framed with a Content-Length (a HEAD keeps moto's, which the CLI reads)."""

    def __init__(self, upstream: str):
        target = urllib.parse.urlsplit(upstream)
        self.requests: list[Request] = []
        self.object_get_delay = 0.0
        """Seconds each GET of an object waits before it is forwarded: makes a download last."""
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - quiet
                pass

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _forward(self) -> None:
                started = time.time()
                body = self._body()
                if self.command == "GET" and proxy.object_get_delay and "/" in self.path.lstrip("/").split("?")[0]:
                    time.sleep(proxy.object_get_delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                try:
                    upstream_conn.request(self.command, self.path, body=body, headers=headers)
                    response = upstream_conn.getresponse()
                    data = response.read()
                finally:
                    upstream_conn.close()
                url = urllib.parse.urlsplit(self.path)
                proxy._record(Request(started, time.time(), self.command, urllib.parse.unquote(url.path),
                                      url.query, response.status))
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in _NOT_FORWARDED:
                        self.send_header(name, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", response.getheader("Content-Length") or "0")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mark(self) -> int:
        """A position in the record: pass it to the queries below to count only what came after."""
        with self._lock:
            return len(self.requests)

    def since(self, mark: int = 0) -> list[Request]:
        with self._lock:
            return list(self.requests[mark:])

    def object_gets(self, mark: int = 0) -> Counter[str]:
        """GETs of objects (not listings) per key, from ``mark`` on."""
        return Counter(r.key for r in self.since(mark) if r.method == "GET" and r.key)

    def listings(self, mark: int = 0) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "GET" and not r.key and "list-type=2" in r.query]


class Sync:
    """One sync container's world: script, spec file, models directory, environment.

    ``aws`` on the script's PATH is a wrapper (``bin/aws``) that runs the real AWS CLI with v1's upgrade
    debug mode on, appends the CLI's stderr to ``aws.log`` and passes it on without the debug warnings
    (so the script sees what it would see in production). ``run`` and ``stop_all`` fail on any warning
    in ``aws.log`` (``v2_warnings``). The wrapper can also change the bucket right after the script
    lists it (``change_after_listing``)."""

    def __init__(self, tmp_path: Path, endpoint: str, bucket: str, cache: Path | None = None):
        tmp_path.mkdir(parents=True, exist_ok=True)
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
                    "MODELS_VOLUME_BYTES", "AWS_PAGER", "AWS_CONFIG_FILE", "MODEL_CACHE_DIR",
                    "MODEL_CACHE_LISTING_MAX_AGE_SECONDS", "MODEL_CACHE_LOCK_STALE_SECONDS", "MODEL_CACHE_MAX_BYTES"):
            self.env.pop(var, None)
        self.cache = cache
        if cache is not None:
            self.env["MODEL_CACHE_DIR"] = str(cache)
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
        return tree(self.models / model / str(version))

    def cache_entries(self, model: str) -> dict[str, Path]:
        """The node cache's entries of a model: ``<version>@<marker sha256>`` -> directory."""
        assert self.cache is not None
        directory = self.cache / model
        return ({p.name: p for p in sorted(directory.iterdir()) if "@" in p.name and not p.name.startswith(".")}
                if directory.exists() else {})


def tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root``: relative path -> content."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a free port, one per test module (import the fixture into the module)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
