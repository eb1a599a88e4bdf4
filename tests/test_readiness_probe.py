"""The readiness script, run with bash against a stand-in for TF Serving's REST API.

The stand-in answers the paths the script uses as TF Serving does (tensorflow_serving, model_servers/):

* ``GET /v1/models/<m>`` and ``/versions/<v>``: ``GetModelStatusImpl`` (get_model_status_impl.cc),
  ``{"model_version_status": [{"version": "<v>", "state": "<STATE>", "status": {...}}]}``, pretty-printed
  (http_rest_api_util.cc ToJsonString, add_whitespace); 404 ``Could not find any versions of model <m>`` /
  ``Could not find version <v> of model <m>``.
* ``GET /v1/models/<m>/labels/<l>``: the status of EVERY version, whatever the label (the status impl
  reads ``model_spec.has_version()`` only), so the script cannot use it.
* ``GET /v1/models/<m>[/versions/<v>|/labels/<l>]/metadata``: ``ServerCore::ServableRequestFromModelSpec``
  (server_core.cc) then a servable handle (core/basic_manager.cc): 400 ``Unrecognized servable version
  label: <l>``, 404 ``Servable not found for request: Specific(<m>, <v>)`` (or ``Latest(<m>)``), 200
  ``{"model_spec": {..., "version": "<v>"}, "metadata": {"signature_def": ...}}``.
* Errors are ``{"error": "<message>"}`` (util/json_tensor.cc MakeJsonFromStatus) with the HTTP code of
  http_server.cc ToHTTPStatusCode (InvalidArgument 400, NotFound 404, Unavailable 503).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from components.serving.model_sync import render_sync_spec
from components.serving.readiness import (
    READY_SCRIPT,
    READY_SCRIPT_KEY,
    READY_SPEC_KEY,
    readiness_probe,
    render_readiness_spec,
)
from components.serving.tfserving_config import CONFIG_DIR, ServedModel

# model_servers/http_rest_api_util.cc kModelStatusApiRegex
STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")


def pretty(doc: dict) -> str:
    # TF Serving pretty-prints its JSON answers.
    return json.dumps(doc, indent=1)


def status_entry(version: int, state: str) -> dict:
    return {"version": str(version), "state": state, "status": {"error_code": "OK", "error_message": ""}}


def version_status(*states: str) -> dict:
    """The body of TF Serving's ``GET /v1/models/<name>`` for versions 1, 2... in these states."""
    return {"model_version_status": [status_entry(i + 1, state) for i, state in enumerate(states)]}


def metadata_body(name: str, version: int, signatures: int = 3) -> str:
    """http_rest_api_util.cc ToJsonString(GetModelMetadataResponse): model_spec first, then signature defs."""
    spec = pretty({"name": name, "signature_name": "", "version": str(version)})
    def signature(i: int) -> dict:
        return {"inputs": {"x": {"dtype": "DT_FLOAT", "name": f"x_{i}:0"}},
                "method_name": "tensorflow/serving/predict"}

    defs = pretty({"signature_def": {f"serving_{i}": signature(i) for i in range(signatures)}})
    return "{\n" + f'"model_spec":{spec},\n' + '"metadata": {' + f'"signature_def": {defs}' + "}\n}\n"


class StandIn(BaseHTTPRequestHandler):
    """TF Serving's REST status and metadata paths over ``server.states`` (model -> {version: state}),
    ``server.labels`` (model -> {label: version}) and ``server.raw`` (model -> body of its status path)."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.paths.append(self.path)
        status, body = self.answer(self.path)
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the script stops reading once it has what it needs

    def answer(self, path: str) -> tuple[int, str]:
        match = STATUS_PATH.fullmatch(path)
        if not match:
            return 400, pretty({"error": f"Malformed request: GET {path}"})
        name, version, label, metadata = match.groups()
        if not name:
            return 400, pretty({"error": "Missing model name in request."})
        states = self.server.states.get(name, {})
        if not metadata:
            if version is not None:
                if int(version) not in states:
                    return 404, pretty({"error": f"Could not find version {version} of model {name}"})
                entry = status_entry(int(version), states[int(version)])
                return 200, pretty({"model_version_status": [entry]})
            # No version: every version, also for a label (the label is not looked at).
            if name in self.server.raw:
                return 200, self.server.raw[name]
            if not states:
                return 404, pretty({"error": f"Could not find any versions of model {name}"})
            entries = [status_entry(v, s) for v, s in sorted(states.items())]
            return 200, pretty({"model_version_status": entries})
        if label is not None:
            labels = self.server.labels.get(name, {})
            if label not in labels:
                return 400, pretty({"error": f"Unrecognized servable version label: {label}"})
            version = labels[label]
        available = [v for v, s in states.items() if s == "AVAILABLE"]
        if version is None:
            if not available:
                return 404, pretty({"error": f"Servable not found for request: Latest({name})"})
            return 200, metadata_body(name, max(available), self.server.signatures)
        if int(version) not in available:
            return 404, pretty({"error": f"Servable not found for request: Specific({name}, {version})"})
        return 200, metadata_body(name, int(version), self.server.signatures)

    def log_message(self, *args):
        pass


@pytest.fixture
def tfserving():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.states, server.labels, server.raw, server.paths, server.signatures = {}, {}, {}, [], 3
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def http_get(server: ThreadingHTTPServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def free_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ready(tmp_path: Path, port: int, spec: str, env: dict | None = None,
              spec_arg: bool = True) -> subprocess.CompletedProcess:
    script = tmp_path / READY_SCRIPT_KEY
    script.write_text(READY_SCRIPT)
    spec_file = tmp_path / "ready.models"
    spec_file.write_text(spec)
    command = ["bash", str(script)] + ([str(spec_file)] if spec_arg else [])
    return subprocess.run(command, env={"PATH": "/usr/bin:/bin", "REST_PORT": str(port), **(env or {})},
                          capture_output=True, text=True, timeout=20)


def states(*pairs: str) -> dict[int, str]:
    return {i + 1: state for i, state in enumerate(pairs)}


SPEC = "# served models\ndigits latest 1\n\nmnist specific 3,4\n"


# What TF Serving's REST API does, as the stand-in reproduces it -------------------------------

def test_label_status_path_ignores_the_label(tfserving):
    # Why the script asks /labels/<l>/metadata: the label's status path answers every version, even
    # for a label TF Serving does not know.
    tfserving.states = {"digits": states("AVAILABLE", "LOADING")}
    code, body = http_get(tfserving, "/v1/models/digits/labels/nosuchlabel")
    assert code == 200 and [e["version"] for e in json.loads(body)["model_version_status"]] == ["1", "2"]
    assert http_get(tfserving, "/v1/models/digits/labels/nosuchlabel/metadata") == (
        400, pretty({"error": "Unrecognized servable version label: nosuchlabel"}))
    code, body = http_get(tfserving, "/v1/models/digits/versions/2")
    assert code == 200 and json.loads(body) == {"model_version_status": [status_entry(2, "LOADING")]}
    assert http_get(tfserving, "/v1/models/digits/versions/3") == (
        404, pretty({"error": "Could not find version 3 of model digits"}))


# Versions -------------------------------------------------------------------------------------

def test_all_models_available(tmp_path, tfserving):
    tfserving.states = {"digits": states("AVAILABLE"), "mnist": {3: "AVAILABLE", 4: "AVAILABLE"}}
    result = run_ready(tmp_path, tfserving.server_port, SPEC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert tfserving.paths == ["/v1/models/digits", "/v1/models/mnist"]


def test_specific_version_still_loading_is_not_ready(tmp_path, tfserving):
    # The finding: TF Serving opened its port once version 1 loaded (ServableRequest::Latest); the old
    # check (one AVAILABLE version per model) called this pod ready while stable=2 still failed.
    tfserving.states = {"digits": states("AVAILABLE", "LOADING")}
    tfserving.labels = {"digits": {"stable": 2}}
    result = run_ready(tmp_path, tfserving.server_port, "digits specific 1,2 stable=2\n")
    assert result.returncode == 1
    assert result.stdout.strip() == ("not ready: model digits: versions not AVAILABLE: 2 (LOADING) "
                                     "(TF Serving has: 1:AVAILABLE 2:LOADING)")


def test_specific_version_unknown_to_tf_serving_is_not_ready(tmp_path, tfserving):
    tfserving.states = {"mnist": {3: "AVAILABLE"}}
    result = run_ready(tmp_path, tfserving.server_port, "mnist specific 3,4\n")
    assert result.returncode == 1
    assert "versions not AVAILABLE: 4 (not loaded)" in result.stdout


def test_every_version_and_label_available_is_ready(tmp_path, tfserving):
    tfserving.states = {"digits": states("AVAILABLE", "AVAILABLE")}
    tfserving.labels = {"digits": {"stable": 2, "canary": 1}}
    result = run_ready(tmp_path, tfserving.server_port, "digits specific 1,2 canary=1 stable=2\n")
    assert result.returncode == 0, result.stdout
    assert tfserving.paths == ["/v1/models/digits", "/v1/models/digits/labels/canary/metadata",
                               "/v1/models/digits/labels/stable/metadata"]


def test_latest_policy_with_fewer_versions_than_n_is_ready(tmp_path, tfserving):
    # latest 3, but the bucket holds one version so far: TF Serving serves it, so the pod is ready.
    tfserving.states = {"digits": states("AVAILABLE")}
    assert run_ready(tmp_path, tfserving.server_port, "digits latest 3\n").returncode == 0


def test_latest_policy_newer_version_loading_stays_ready(tmp_path, tfserving):
    tfserving.states = {"digits": states("END", "AVAILABLE", "LOADING")}
    assert run_ready(tmp_path, tfserving.server_port, "digits latest 2\n").returncode == 0


def test_loading_model_is_not_ready_and_named(tmp_path, tfserving):
    tfserving.states = {"digits": states("LOADING")}
    result = run_ready(tmp_path, tfserving.server_port, "digits latest 1\nmnist specific 3,4\n")
    assert result.returncode == 1
    assert result.stdout.strip() == "not ready: model digits: no AVAILABLE version (states: LOADING)"


def test_model_not_first_in_spec_is_still_checked(tmp_path, tfserving):
    # Only the first model answers; an httpGet probe on it would have called this pod ready.
    tfserving.states = {"digits": states("AVAILABLE")}
    result = run_ready(tmp_path, tfserving.server_port, "digits latest 1\nmnist all -\n")
    assert result.returncode == 1
    assert result.stdout.strip() == ("not ready: model mnist: HTTP 404: "
                                     "Could not find any versions of model mnist")
    assert tfserving.paths[-1] == "/v1/models/mnist"


def test_bare_model_name_needs_one_available_version(tmp_path, tfserving):
    tfserving.states = {"digits": states("END", "AVAILABLE")}
    assert run_ready(tmp_path, tfserving.server_port, "digits\n").returncode == 0
    tfserving.states = {"digits": states("END", "UNLOADING")}
    result = run_ready(tmp_path, tfserving.server_port, "digits\n")
    assert result.returncode == 1 and "(states: END UNLOADING)" in result.stdout


def test_compact_json_and_odd_whitespace(tmp_path, tfserving):
    tfserving.raw = {
        "compact": json.dumps(version_status("AVAILABLE", "AVAILABLE"), separators=(",", ":")),
        "spaced": '{"model_version_status": [{"version": "1",\n "state"\n\t :\n  "AVAILABLE"}]}',
    }
    result = run_ready(tmp_path, tfserving.server_port, "compact specific 1,2\nspaced specific 1\n")
    assert result.returncode == 0, result.stdout


def test_available_inside_an_error_message_does_not_count(tmp_path, tfserving):
    body = version_status("LOADING", "LOADING")
    body["model_version_status"][0]["status"]["error_message"] = 'was "version": "2", "state": "AVAILABLE"'
    tfserving.raw = {"digits": json.dumps(body)}
    assert run_ready(tmp_path, tfserving.server_port, "digits latest 1\n").returncode == 1
    assert run_ready(tmp_path, tfserving.server_port, "digits specific 2\n").returncode == 1


# Labels ---------------------------------------------------------------------------------------

def test_label_on_a_loading_version_is_not_ready(tmp_path, tfserving):
    # Policy all: version 1 is enough for the version check, the label still fails.
    tfserving.states = {"digits": states("AVAILABLE", "LOADING")}
    tfserving.labels = {"digits": {"stable": 2}}
    result = run_ready(tmp_path, tfserving.server_port, "digits all - stable=2\n")
    assert result.returncode == 1
    assert result.stdout.strip() == ("not ready: model digits: label stable (version 2): HTTP 404: "
                                     "Servable not found for request: Specific(digits, 2)")
    assert tfserving.paths == ["/v1/models/digits", "/v1/models/digits/labels/stable/metadata"]


def test_label_on_an_unknown_version_is_not_ready(tmp_path, tfserving):
    # --allow_version_labels_for_unavailable_models lets TF Serving take stable=3 although it never
    # loads version 3: the label never resolves.
    tfserving.states = {"digits": states("AVAILABLE", "AVAILABLE")}
    tfserving.labels = {"digits": {"stable": 3}}
    result = run_ready(tmp_path, tfserving.server_port, "digits specific 1,2 stable=3\n")
    assert result.returncode == 1
    assert ("label stable (version 3): HTTP 404: Servable not found for request: Specific(digits, 3)"
            in result.stdout)


def test_label_tf_serving_does_not_know_is_not_ready(tmp_path, tfserving):
    tfserving.states = {"digits": states("AVAILABLE", "AVAILABLE")}
    result = run_ready(tmp_path, tfserving.server_port, "digits specific 1,2 stable=2\n")
    assert result.returncode == 1
    assert result.stdout.strip() == ("not ready: model digits: label stable (version 2): HTTP 400: "
                                     "Unrecognized servable version label: stable")


def test_label_resolving_to_another_version_is_not_ready(tmp_path, tfserving):
    tfserving.states = {"digits": states("AVAILABLE", "AVAILABLE")}
    tfserving.labels = {"digits": {"stable": 1}}
    result = run_ready(tmp_path, tfserving.server_port, "digits specific 1,2 stable=2\n")
    assert result.returncode == 1
    assert result.stdout.strip() == "not ready: model digits: label stable (version 2): resolves to version 1"


def test_label_check_reads_only_the_head_of_large_metadata(tmp_path, tfserving):
    tfserving.states = {"digits": states("AVAILABLE")}
    tfserving.labels = {"digits": {"stable": 1}}
    tfserving.signatures = 3000  # ~150k lines of signature defs
    started = time.monotonic()
    result = run_ready(tmp_path, tfserving.server_port, "digits all - stable=1\n")
    assert result.returncode == 0, result.stdout
    assert time.monotonic() - started < 2


# Failures of the server or the spec -------------------------------------------------------------

def test_server_down_fails_fast(tmp_path):
    port = free_port()
    started = time.monotonic()
    result = run_ready(tmp_path, port, "digits specific 1,2 stable=2\n")
    assert result.returncode == 1
    assert time.monotonic() - started < 2
    assert result.stdout.strip() == (f"not ready: model digits: REST port {port} not reachable "
                                     "(server down or still loading)")
    assert result.stderr == ""


def test_stalled_server_times_out_with_a_reason(tmp_path):
    # Listening but never answering: the kernel accepts the connection, nothing is sent back.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        started = time.monotonic()
        result = run_ready(tmp_path, sock.getsockname()[1], "digits latest 1\n",
                           {"READ_TIMEOUT_SECONDS": "1"})
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "no answer on port" in result.stdout
    assert elapsed < 3


def test_whole_check_stays_within_its_budget(tmp_path):
    # Every read may wait READ_TIMEOUT_SECONDS, but all of them together stop at the budget, below the
    # probe's timeoutSeconds, so the kubelet sees the reason instead of a bare timeout.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        started = time.monotonic()
        result = run_ready(tmp_path, sock.getsockname()[1], "digits latest 1\n",
                           {"READ_TIMEOUT_SECONDS": "30", "READY_BUDGET_SECONDS": "2"})
        elapsed = time.monotonic() - started
    assert result.returncode == 1 and "no answer on port" in result.stdout
    assert elapsed < 3.5
    assert readiness_probe(CONFIG_DIR)["timeoutSeconds"] > 4  # the default budget


@pytest.mark.parametrize("line", ["digits specific 1,,2", "digits latest 0", "digits sometimes 1",
                                  "digits all - stable", "digits all - stable=x", "Digits latest 1",
                                  "digits specific 1 bad-label=1"])
def test_malformed_spec_line_is_not_ready(tmp_path, tfserving, line):
    tfserving.states = {"digits": states("AVAILABLE")}
    result = run_ready(tmp_path, tfserving.server_port, f"# c\n{line}\n")
    assert result.returncode == 1
    assert f"line 2 of {tmp_path / 'ready.models'} is not" in result.stdout
    assert tfserving.paths == []


def test_spec_file_choice_and_empty_spec(tmp_path, tfserving):
    tfserving.states = {"digits": states("AVAILABLE")}
    spec = tmp_path / "ready.models"
    # $READY_SPEC_FILE first, then (no ready.models in the config dir here) $MODEL_SPEC_FILE.
    ok = run_ready(tmp_path, tfserving.server_port, "digits latest 1",  # no final newline
                   {"READY_SPEC_FILE": str(spec), "MODEL_SPEC_FILE": str(tmp_path / "absent")},
                   spec_arg=False)
    assert ok.returncode == 0, ok.stdout
    ok = run_ready(tmp_path, tfserving.server_port, "digits latest 1\n", {"MODEL_SPEC_FILE": str(spec)},
                   spec_arg=False)
    assert ok.returncode == 0, ok.stdout
    empty = run_ready(tmp_path, tfserving.server_port, "# nothing yet\n")
    assert empty.returncode == 1 and "no models listed" in empty.stdout
    missing = run_ready(tmp_path, tfserving.server_port, "digits\n",
                        {"MODEL_SPEC_FILE": str(tmp_path / "absent")}, spec_arg=False)
    assert missing.returncode == 1 and "cannot read model list" in missing.stdout


def test_default_spec_is_the_mounted_readiness_spec_then_the_sync_spec():
    mounted = f"{CONFIG_DIR}/{READY_SPEC_KEY}"
    assert f'elif [ -e "{mounted}" ]; then SPEC="{mounted}"' in READY_SCRIPT
    assert f'else SPEC="${{MODEL_SPEC_FILE:-{CONFIG_DIR}/sync.models}}"' in READY_SCRIPT


# The rendered spec, end to end --------------------------------------------------------------------

MODELS = [ServedModel("digits", "specific", versions=(2, 1), labels={"stable": 2, "old": 1}),
          ServedModel("mnist", "latest", latest_versions=2),
          ServedModel("text", "all", labels={"stable": 5})]


def test_readiness_spec_is_the_sync_spec_plus_labels():
    spec = render_readiness_spec(MODELS)
    assert spec.splitlines()[1:] == ["digits specific 1,2 old=1 stable=2", "mnist latest 2",
                                     "text all - stable=5"]
    sync = [line for line in render_sync_spec(MODELS).splitlines() if not line.startswith("#")]
    assert [" ".join(line.split()[:3]) for line in spec.splitlines()[1:]] == sync


def test_readiness_spec_rejects_what_could_never_turn_ready():
    with pytest.raises(ValueError, match="not in versions"):
        render_readiness_spec([ServedModel("digits", "specific", versions=(1, 2), labels={"stable": 3})])
    with pytest.raises(ValueError, match="does not match"):
        render_readiness_spec([ServedModel("digits", "all", labels={"bad-label": 1})])
    with pytest.raises(ValueError, match="listed twice"):  # render_sync_spec's checks apply too
        render_readiness_spec([ServedModel("digits"), ServedModel("digits")])


def test_rendered_spec_drives_the_script(tmp_path, tfserving):
    spec = render_readiness_spec(MODELS)
    tfserving.states = {"digits": states("AVAILABLE", "AVAILABLE"), "mnist": states("AVAILABLE"),
                        "text": {4: "AVAILABLE", 5: "LOADING"}}
    tfserving.labels = {"digits": {"stable": 2, "old": 1}, "text": {"stable": 5}}
    result = run_ready(tmp_path, tfserving.server_port, spec)
    assert result.returncode == 1 and "model text: label stable (version 5): HTTP 404" in result.stdout
    tfserving.states["text"][5] = "AVAILABLE"
    result = run_ready(tmp_path, tfserving.server_port, spec)
    assert result.returncode == 0, result.stdout


def test_canary_view_waits_for_the_canary_version(tmp_path, tfserving):
    model = ServedModel("digits", "specific", versions=(1, 2), labels={"stable": 2}, canary_version=3)
    spec = render_readiness_spec([model.canary_view()])
    assert spec.splitlines()[1] == "digits specific 1,2,3 canary=3 stable=2"
    tfserving.states = {"digits": states("AVAILABLE", "AVAILABLE", "LOADING")}
    tfserving.labels = {"digits": {"stable": 2, "canary": 3}}
    assert run_ready(tmp_path, tfserving.server_port, spec).returncode == 1
    assert render_readiness_spec([model.stable_view()]).splitlines()[1] == "digits specific 1,2 stable=2"


def test_probe_runs_the_mounted_script_with_bash():
    probe = readiness_probe(CONFIG_DIR)
    assert probe == {"exec": {"command": ["/bin/bash", f"{CONFIG_DIR}/ready.sh"]},
                     "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
