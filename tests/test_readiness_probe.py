"""The readiness script, run with bash against a stand-in for TF Serving's REST status API."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from components.serving.readiness import READY_SCRIPT, READY_SCRIPT_KEY, readiness_probe
from components.serving.tfserving_config import CONFIG_DIR


def version_status(*states: str) -> dict:
    """The body of TF Serving's ``GET /v1/models/<name>`` (get_model_status.proto as JSON)."""
    return {"model_version_status": [
        {"version": str(i + 1), "state": state, "status": {"error_code": "OK", "error_message": ""}}
        for i, state in enumerate(states)]}


def pretty(doc: dict) -> str:
    # TF Serving pretty-prints its JSON answers.
    return json.dumps(doc, indent=1)


class StandIn(BaseHTTPRequestHandler):
    """Answers ``/v1/models/<name>`` from ``server.models``: name -> body; unknown names 404."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.paths.append(self.path)
        name = self.path.removeprefix("/v1/models/")
        if name in self.server.models:
            status, body = 200, self.server.models[name]
        else:
            status, body = 404, pretty({"error": f"Servable not found for request: Latest({name})"})
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def tfserving():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.models, server.paths = {}, []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def free_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ready(tmp_path: Path, port: int, spec: str, env: dict | None = None,
              spec_arg: bool = True) -> subprocess.CompletedProcess:
    script = tmp_path / READY_SCRIPT_KEY
    script.write_text(READY_SCRIPT)
    spec_file = tmp_path / "sync.models"
    spec_file.write_text(spec)
    command = ["bash", str(script)] + ([str(spec_file)] if spec_arg else [])
    return subprocess.run(command, env={"PATH": "/usr/bin:/bin", "REST_PORT": str(port), **(env or {})},
                          capture_output=True, text=True, timeout=20)


SPEC = "# synced models\ndigits latest 1\n\nmnist specific 3 4\n"


def test_all_models_available(tmp_path, tfserving):
    tfserving.models = {"digits": pretty(version_status("AVAILABLE")),
                        "mnist": pretty(version_status("AVAILABLE", "AVAILABLE"))}
    result = run_ready(tmp_path, tfserving.server_port, SPEC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tfserving.paths == ["/v1/models/digits", "/v1/models/mnist"]


def test_loading_model_is_not_ready_and_named(tmp_path, tfserving):
    tfserving.models = {"digits": pretty(version_status("AVAILABLE")),
                        "mnist": pretty(version_status("LOADING"))}
    result = run_ready(tmp_path, tfserving.server_port, SPEC)
    assert result.returncode == 1
    assert result.stdout.strip() == "not ready: model mnist: no AVAILABLE version (states: LOADING)"


def test_model_not_first_in_spec_is_still_checked(tmp_path, tfserving):
    # Only the first model answers; the old httpGet probe would have called this pod ready.
    tfserving.models = {"digits": pretty(version_status("AVAILABLE"))}
    result = run_ready(tmp_path, tfserving.server_port, "digits latest 1\nmnist latest 1\n")
    assert result.returncode == 1
    assert "model mnist: HTTP 404" in result.stdout
    assert tfserving.paths[-1] == "/v1/models/mnist"


def test_unknown_model_404_reports_tf_serving_error(tmp_path, tfserving):
    result = run_ready(tmp_path, tfserving.server_port, "ghost latest 1\n")
    assert result.returncode == 1
    assert result.stdout.strip() == (
        "not ready: model ghost: HTTP 404: Servable not found for request: Latest(ghost)")


def test_old_version_ended_new_available_is_ready(tmp_path, tfserving):
    tfserving.models = {"digits": pretty(version_status("END", "AVAILABLE"))}
    assert run_ready(tmp_path, tfserving.server_port, "digits\n").returncode == 0


def test_only_ended_versions_are_not_ready(tmp_path, tfserving):
    tfserving.models = {"digits": pretty(version_status("END", "UNLOADING"))}
    result = run_ready(tmp_path, tfserving.server_port, "digits\n")
    assert result.returncode == 1
    assert "(states: END UNLOADING)" in result.stdout


def test_compact_json_and_odd_whitespace(tmp_path, tfserving):
    tfserving.models = {
        "compact": json.dumps(version_status("AVAILABLE"), separators=(",", ":")),
        "spaced": '{"model_version_status": [{"version": "1", "state"\n\t :\n  "AVAILABLE"}]}',
    }
    result = run_ready(tmp_path, tfserving.server_port, "compact\nspaced\n")
    assert result.returncode == 0, result.stdout


def test_available_inside_an_error_message_does_not_count(tmp_path, tfserving):
    body = version_status("LOADING")
    body["model_version_status"][0]["status"]["error_message"] = 'was "state": "AVAILABLE"'
    tfserving.models = {"digits": json.dumps(body)}
    result = run_ready(tmp_path, tfserving.server_port, "digits\n")
    assert result.returncode == 1, result.stdout


def test_server_down_fails_fast(tmp_path):
    started = time.monotonic()
    result = run_ready(tmp_path, free_port(), SPEC)
    assert result.returncode == 1
    assert time.monotonic() - started < 2
    assert "model digits: REST port" in result.stdout and "not reachable" in result.stdout
    assert result.stderr == ""


def test_stalled_server_times_out_with_a_reason(tmp_path):
    # Listening but never answering: the kernel accepts the connection, nothing is sent back.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        result = run_ready(tmp_path, sock.getsockname()[1], "digits\n", {"READ_TIMEOUT_SECONDS": "1"})
    assert result.returncode == 1
    assert "no answer on port" in result.stdout


def test_spec_file_from_env_and_empty_spec(tmp_path, tfserving):
    tfserving.models = {"digits": pretty(version_status("AVAILABLE"))}
    spec = tmp_path / "sync.models"
    ok = run_ready(tmp_path, tfserving.server_port, "digits latest 1",  # no final newline
                   {"MODEL_SPEC_FILE": str(spec)}, spec_arg=False)
    assert ok.returncode == 0, ok.stdout
    empty = run_ready(tmp_path, tfserving.server_port, "# nothing yet\n")
    assert empty.returncode == 1 and "no models listed" in empty.stdout
    missing = run_ready(tmp_path, tfserving.server_port, "digits\n",
                        {"MODEL_SPEC_FILE": str(tmp_path / "absent")}, spec_arg=False)
    assert missing.returncode == 1 and "cannot read model list" in missing.stdout


def test_probe_runs_the_mounted_script_with_bash():
    probe = readiness_probe(CONFIG_DIR)
    assert probe == {"exec": {"command": ["/bin/bash", f"{CONFIG_DIR}/ready.sh"]},
                     "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
