"""The canary router (components/serving/canary_router.py) run as real nginx in front of stand-ins.

Stable and canary TF Serving are stood in for by a Python HTTP server (REST) and a grpcio server
(``tensorflow.serving.PredictionService/Predict``) each, answering with their own identity. As in
the cluster, where the router and both Services all use 8500/8501, the three share ports on
different loopback addresses: stable 127.0.0.2, canary 127.0.0.3, router 127.0.0.1. nginx is
Debian's package (``scripts/ensure-tools.sh``); when the tests run as root, nginx runs as ``nobody``
and without a ``user`` directive, as the pods run it under an arbitrary non-root UID.

Split checks: n requests at weight p hit the canary Binomial(n, p) times; the tests accept
n*p +- 4 standard deviations (a false failure about once in 16,000 runs).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import kubernetes_validate
import pytest

from components.serving.canary_router import (
    HEALTH_PATH,
    ROUTER_IMAGE,
    pinned_canary_paths,
    render_router_config,
    service_host,
)
from components.serving.model_server import APP_LABEL, RESTART_CHECKSUM
from components.serving.tfserving_config import ServedModel
from stacks.mock_engine import run_program
from stacks.plan import ROOT
from stacks.settings import StackSettings

STABLE_ADDR, CANARY_ADDR, ROUTER_ADDR = "127.0.0.2", "127.0.0.3", "127.0.0.1"
EDGE_ROUTER_ADDR = "127.0.0.4"  # a second router beside the module's, on the same ports
WEIGHT = 20
REQUESTS = 2000
MODELS = [ServedModel("digits", version_policy="specific", versions=(1,), labels={"stable": 1},
                      canary_version=2),
          ServedModel("digits-latest", version_policy="latest", latest_versions=2),
          # Promoted: the canary version is a stable one, nothing is pinned.
          ServedModel("other", version_policy="specific", versions=(3,), canary_version=3)]
NOBODY = 65534
K8S_VERSION = StackSettings.model_fields["kubernetes_version"].default + ".0"
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


# PredictRequest / PredictResponse carrying only ``model_spec.name`` (field 1 of ModelSpec; model_spec
# is field 1 of PredictRequest and 2 of PredictResponse), in protobuf wire form written by hand: the
# generated classes of tensorflow-serving-api import TensorFlow, 5 s for two short strings.
def model_spec_message(field: int, name: str) -> bytes:
    spec = b"\x0a" + bytes([len(name)]) + name.encode()
    return bytes([field << 3 | 2, len(spec)]) + spec


def model_spec_name(message: bytes, field: int) -> str:
    assert message[0] == field << 3 | 2 and message[2] == 0x0a, message
    return message[4:4 + message[3]].decode()


def within_four_sigma(hits: int, n: int, percent: int) -> bool:
    p = percent / 100
    return abs(hits - n * p) <= 4 * math.sqrt(n * p * (1 - p))


# Stand-in backends --------------------------------------------------------------------------


class StandInServer(ThreadingHTTPServer):
    """A threading HTTP server with a listen backlog like a real server's.

    socketserver's default backlog is 5: a burst of new upstream connections from nginx overflowed it,
    the kernel dropped the handshakes, and nginx answered 502 (seen in CI). Go servers such as KEDA's
    interceptor listen with the kernel's somaxconn (4096 on current kernels).
    """

    request_queue_size = 128
    daemon_threads = True


class Backend:
    """REST and gRPC stand-ins of one track, recording what reached them."""

    def __init__(self, track: str, address: str, rest_port: int, grpc_port: int):
        self.track = track
        self.requests: list[dict] = []
        self.grpc_calls = 0
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream connections expect
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = {"track": track, "method": self.command, "path": self.path, "body_bytes": len(body),
                        "request_id": self.headers.get("X-Request-Id"), "host": self.headers.get("Host")}
                with backend.lock:
                    backend.requests.append(seen)
                payload = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = handle_one

            def log_message(self, *args) -> None:
                pass

        self.http = StandInServer((address, rest_port), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

        answer = model_spec_message(2, track)  # a PredictResponse naming the track

        def predict(request: bytes, context: grpc.ServicerContext) -> bytes:
            assert model_spec_name(request, 1) == "digits"
            with backend.lock:
                backend.grpc_calls += 1
            return answer

        # Raw bytes in and out: the stand-in only counts calls.
        handler = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
            "Predict": grpc.unary_unary_rpc_method_handler(predict)})
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
        if self.grpc.add_insecure_port(f"{address}:{grpc_port}") != grpc_port:
            raise OSError(f"{address}:{grpc_port} is taken")
        self.grpc.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.grpc.stop(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ROUTER_ADDR, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Ports:
    rest: int
    grpc: int
    health: int


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Ports, Backend, Backend]]:
    for _ in range(5):
        ports = Ports(free_port(), free_port(), free_port())
        started: list[Backend] = []
        try:
            for track, address in (("stable", STABLE_ADDR), ("canary", CANARY_ADDR)):
                started.append(Backend(track, address, ports.rest, ports.grpc))
        except (OSError, RuntimeError):
            for b in started:
                b.close()
            continue
        yield ports, started[0], started[1]
        for b in started:
            b.close()
        return
    pytest.fail("no free ports for the stand-in backends")


# nginx --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx() -> str:
    """Path of nginx (Debian's nginx package, installed by scripts/ensure-tools.sh)."""
    path = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")
    if path is None:
        pytest.fail("nginx is not on PATH: run scripts/ensure-tools.sh "
                    "(or apt-get install --no-install-recommends nginx)", pytrace=False)
    return path


def as_nobody() -> dict:
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}


@contextlib.contextmanager
def router_dir() -> Iterator[Path]:
    # Outside pytest's 0700 tmp tree, so nginx running as nobody can read and write its files.
    base = Path(tempfile.mkdtemp(prefix="canary-router-"))
    try:
        base.chmod(0o755)
        (base / "tmp").mkdir(mode=0o777)
        (base / "tmp").chmod(0o777)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def write_config(base: Path, text: str) -> Path:
    conf = base / "nginx.conf"
    conf.write_text(text)
    conf.chmod(0o644)
    return conf


def nginx_t(nginx: str, base: Path, text: str,
            prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    conf = write_config(base, text)
    # stdout: /dev/null, which nobody may open again as the access log (a pipe of root's it may not).
    # (unshare needs root: a prefixed nginx -t keeps this process's user.)
    return subprocess.run([*(prefix or []), nginx, "-t", "-q", "-p", str(base), "-c", str(conf)],
                          check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=30,
                          **({} if prefix else as_nobody()))


def render(ports: Ports, base: Path, weight: int, address: str = ROUTER_ADDR) -> str:
    return render_router_config(MODELS, STABLE_ADDR, CANARY_ADDR, weight, rest_port=ports.rest,
                                grpc_port=ports.grpc, health_port=ports.health, listen_address=address,
                                tmp_dir=str(base / "tmp"))


@dataclass
class Router:
    address: str
    ports: Ports
    access_log: Path
    error_log: Path

    def rest(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.address, self.ports.rest, timeout=10)

    def grpc_channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"{self.address}:{self.ports.grpc}",
                                     options=[("grpc.enable_http_proxy", 0)])


@contextlib.contextmanager
def running_router(nginx: str, ports: Ports, weight: int, address: str = ROUTER_ADDR) -> Iterator[Router]:
    with router_dir() as base:
        text = render(ports, base, weight, address)
        checked = nginx_t(nginx, base, text)
        assert checked.returncode == 0, checked.stderr
        access_log, error_log = base / "access.log", base / "error.log"
        for path in (access_log, error_log):
            path.touch(mode=0o666)
            path.chmod(0o666)  # the access log is /dev/stdout, which nginx opens again as nobody
        with access_log.open("wb") as out, error_log.open("wb") as err:
            proc = subprocess.Popen([nginx, "-p", str(base), "-c", str(base / "nginx.conf"),
                                     "-g", "daemon off;"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, **as_nobody())
        try:
            deadline = time.monotonic() + 10
            while True:
                assert proc.poll() is None, f"nginx exited {proc.returncode}: {error_log.read_text()}"
                try:
                    conn = http.client.HTTPConnection(address, ports.health, timeout=1)
                    conn.request("GET", HEALTH_PATH)
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"nginx never answered: {error_log.read_text()}"
                time.sleep(0.05)
            yield Router(address, ports, access_log, error_log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def router(nginx, backends) -> Iterator[Router]:
    with running_router(nginx, backends[0], WEIGHT) as r:
        yield r


def get(conn: http.client.HTTPConnection, path: str, method: str = "GET", body: bytes | None = None,
        headers: dict | None = None) -> tuple[int, dict, http.client.HTTPResponse]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    return response.status, (json.loads(data) if response.status == 200 else {}), response


def rest_tracks(router: Router, paths: list[str], rounds: int) -> dict[str, Counter]:
    seen: dict[str, Counter] = {p: Counter() for p in paths}
    conn = router.rest()
    for _ in range(rounds):
        for path in paths:
            verb = ":" in path.rsplit("/", 1)[-1]
            method, body = ("POST", b'{"instances": [[0.0]]}') if verb else ("GET", None)
            status, answer, _ = get(conn, path, method, body)
            assert status == 200, (path, status)
            assert answer["path"] == path, "the backend must get the URI as the client sent it"
            seen[path][answer["track"]] += 1
    conn.close()
    return seen


def grpc_tracks(router: Router, calls: int) -> Counter:
    tracks: Counter = Counter()
    request = model_spec_message(1, "digits")  # a PredictRequest for model digits
    with router.grpc_channel() as channel:
        predict = channel.unary_unary(PREDICT_METHOD)  # PredictionServiceStub.Predict, bytes in and out
        for _ in range(calls):
            tracks[model_spec_name(predict(request, timeout=10), 2)] += 1
    return tracks


def pinned_forms(path: str) -> list[str]:
    return [path, f"{path}:predict", f"{path}:classify", f"{path}:regress", f"{path}/metadata",
            f"{path}%3Apredict"]


def unpinned_paths() -> list[str]:
    return ["/v1/models/digits", "/v1/models/digits:predict", "/v1/models/digits/metadata",
            "/v1/models/digits/labels/stable:predict", "/v1/models/digits/versions/1:predict",
            # Look-alikes of the pinned paths.
            "/v1/models/digits/versions/20:predict", "/v1/models/digits/labels/canaryx:predict",
            "/v1/models/digits-latest/labels/canary:predict", "/v1/models/other/labels/canary:predict",
            "/v1/models/other/versions/3:predict"]


# Routing ------------------------------------------------------------------------------------


def test_the_pinned_paths_are_the_canary_label_and_version():
    assert pinned_canary_paths(MODELS) == ["/v1/models/digits/labels/canary", "/v1/models/digits/versions/2"]


def test_pinned_canary_paths_always_reach_the_canary(router, backends):
    paths = [form for p in pinned_canary_paths(MODELS) for form in pinned_forms(p)]
    seen = rest_tracks(router, paths, rounds=20)
    leaked = {p: dict(c) for p, c in seen.items() if set(c) != {"canary"}}
    assert not leaked, f"pinned paths split at {WEIGHT}%: {leaked}"


def test_other_rest_requests_split_by_weight(router):
    paths = unpinned_paths()
    seen = rest_tracks(router, paths, rounds=REQUESTS // len(paths))
    total = Counter()
    for counts in seen.values():
        total.update(counts)
    n = sum(total.values())
    print(f"\nREST {WEIGHT}% weight: {total['canary']}/{n} = {100 * total['canary'] / n:.1f}% to the canary")
    assert n == REQUESTS
    assert within_four_sigma(total["canary"], n, WEIGHT), total
    # Every path is split, none pinned either way (P(no canary in 200 draws at 20%) ~ 4e-20).
    assert all(c["stable"] and c["canary"] for c in seen.values()), seen


def test_grpc_splits_by_weight(router, backends):
    _, stable, canary = backends
    before = stable.grpc_calls + canary.grpc_calls
    tracks = grpc_tracks(router, REQUESTS)
    print(f"\ngRPC {WEIGHT}% weight: {tracks['canary']}/{REQUESTS} = "
          f"{100 * tracks['canary'] / REQUESTS:.1f}% to the canary")
    assert sum(tracks.values()) == REQUESTS
    assert stable.grpc_calls + canary.grpc_calls - before == REQUESTS, "one backend call per client call"
    assert within_four_sigma(tracks["canary"], REQUESTS, WEIGHT), tracks


@pytest.mark.parametrize("weight,track", [(0, "stable"), (100, "canary")])
def test_weight_edges_send_everything_one_way(nginx, backends, weight, track):
    # The stack settings allow 1..99; the renderer also takes the edges.
    ports = backends[0]
    with running_router(nginx, ports, weight, EDGE_ROUTER_ADDR) as r:
        seen = rest_tracks(r, unpinned_paths(), rounds=20)
        assert all(set(c) == {track} for c in seen.values()), seen
        assert set(grpc_tracks(r, 200)) == {track}
        if weight == 0:  # paths naming the canary still reach it
            pinned = rest_tracks(r, pinned_canary_paths(MODELS), rounds=10)
            assert all(set(c) == {"canary"} for c in pinned.values()), pinned


def test_healthz_answers_on_its_own_port(router):
    conn = http.client.HTTPConnection(ROUTER_ADDR, router.ports.health, timeout=5)
    conn.request("GET", HEALTH_PATH)
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"ok\n")
    conn.request("GET", "/v1/models/digits")
    assert conn.getresponse().status == 404, "the health port routes nothing"


def test_request_ids_bodies_and_host_reach_the_backend(router):
    conn = router.rest()
    body = os.urandom(1 << 20)
    status, answer, response = get(conn, "/v1/models/digits/labels/canary:predict", "POST", body,
                                   {"Content-Type": "application/json"})
    assert status == 200 and answer["body_bytes"] == len(body)
    assert re.fullmatch(r"[0-9a-f]{32}", answer["request_id"]), answer
    assert response.getheader("X-Request-Id") == answer["request_id"]
    assert answer["host"] == ROUTER_ADDR
    status, answer, _ = get(conn, "/v1/models/digits", headers={"X-Request-Id": "caller-123"})
    assert answer["request_id"] == "caller-123", "a caller's request id is kept"


def test_a_body_over_the_limit_is_refused(router):
    # Only the headers: nginx refuses on Content-Length before any byte of the body.
    with socket.create_connection((ROUTER_ADDR, router.ports.rest), timeout=5) as s:
        s.sendall(b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: router\r\n"
                  b"Content-Length: 40000000\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 413")


def test_access_log_is_json_lines(router):
    conn = router.rest()
    get(conn, "/v1/models/digits/metadata", headers={"X-Request-Id": "log-me"})
    conn.close()
    time.sleep(0.2)
    lines = [json.loads(line) for line in router.access_log.read_text().splitlines()]
    entry = next(e for e in lines if e["request_id"] == "log-me")
    assert entry["status"] == "200" and entry["upstream"].startswith((STABLE_ADDR, CANARY_ADDR))
    assert not [e for e in lines if e["uri"] == HEALTH_PATH], "probes are not logged"


def test_nginx_logged_no_errors(router):
    # Runs after the traffic above: no upstream failure, no refused variable, nothing above a notice.
    problems = [line for line in router.error_log.read_text().splitlines()
                if re.search(r"\[(warn|error|crit|alert|emerg)\]", line)
                and "client intended to send too large body" not in line]  # the 413 test
    assert not problems, problems


# Configs nginx refuses ----------------------------------------------------------------------


def test_every_variant_passes_nginx_t(nginx):
    no_canary = [m.stable_view() for m in MODELS]
    with router_dir() as base:
        for models, weight in ((MODELS, 1), (MODELS, 99), (MODELS, 0), (MODELS, 100), (no_canary, 10)):
            # The production ports and paths, except the pid and temp files (nginx -t creates them).
            text = render_router_config(models, STABLE_ADDR, CANARY_ADDR, weight, tmp_dir=str(base / "tmp"))
            result = nginx_t(nginx, base, text)
            assert result.returncode == 0, (weight, result.stderr)
        assert "tfs_canary_rest; }" not in render_router_config(no_canary, STABLE_ADDR, CANARY_ADDR, 10)


def test_an_upstream_without_a_server_fails_nginx_t(nginx, backends):
    with router_dir() as base:
        text = render(backends[0], base, WEIGHT)
        broken = re.sub(rf"\n\s*server {re.escape(CANARY_ADDR)}:\d+;", "", text, count=1)
        assert broken != text
        result = nginx_t(nginx, base, broken)
        assert result.returncode != 0 and "no servers are inside upstream" in result.stderr, result.stderr


def test_a_service_that_does_not_exist_yet_fails_nginx_t(nginx):
    # In a network namespace of its own, no DNS server answers: what nginx sees when a Service's
    # name does not resolve (the reason the router must be created after its Services).
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], check=False,
                                         capture_output=True).returncode != 0:
        pytest.skip("unshare -n needs root (CI runs as root)")
    with router_dir() as base:
        text = render_router_config(MODELS, STABLE_ADDR, service_host("tfserving-canary", "serving"), WEIGHT,
                                    tmp_dir=str(base / "tmp"))
        result = nginx_t(nginx, base, text, prefix=[unshare, "-n"])
        assert result.returncode != 0 and "host not found in upstream" in result.stderr, result.stderr


@pytest.mark.parametrize("change", [{"canary_weight": 101}, {"canary_weight": -1}, {"stable_host": ""},
                                    {"canary_host": "svc;evil"}, {"grpc_port": 8501},
                                    {"models": [ServedModel("bad name {", canary_version=2)]}])
def test_the_renderer_refuses_what_nginx_would_misread(change):
    kwargs = {"models": MODELS, "stable_host": "s", "canary_host": "c", "canary_weight": 10, **change}
    with pytest.raises(ValueError):
        render_router_config(**kwargs)


# The component on Pulumi's mock engine -------------------------------------------------------

PROGRAM = """
import pulumi
import pulumi_kubernetes as k8s
from components.serving.canary_router import CanaryRouter, CanaryRouterArgs
from components.serving.tfserving_config import ServedModel

ns = k8s.core.v1.Namespace("serving", metadata={"name": "serving"})
def service(name):
    return k8s.core.v1.Service(name, metadata={"name": name, "namespace": ns.metadata.name},
                               spec={"selector": {"app": name}, "ports": [{"port": 8501}]})
stable, canary = service("tfserving-default"), service("tfserving-default-canary")
router = CanaryRouter("tfserving-default-router", CanaryRouterArgs(
    namespace=ns.metadata.name, server="default",
    models=[ServedModel("digits", version_policy="specific", versions=(1,), canary_version=2)],
    # Plain names: only opts.depends_on orders the Deployment after the Services.
    stable_service="tfserving-default", canary_service="tfserving-default-canary", canary_weight=20,
    labels={"app.kubernetes.io/name": "tfserving", "team": "ml"}),
    opts=pulumi.ResourceOptions(depends_on=[stable, canary]))
# No canary: a plain front door, everything to the stable Service.
CanaryRouter("tfserving-cpu-router", CanaryRouterArgs(
    namespace="serving", server="cpu", models=[ServedModel("digits", canary_version=2)],
    stable_service="tfserving-cpu"))
pulumi.export("selector", router.selector)
pulumi.export("service_name", router.service_name)
pulumi.export("rest_endpoint", router.rest_endpoint)
"""


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    program = tmp_path_factory.mktemp("router-program") / "__main__.py"
    program.write_text(textwrap.dedent(PROGRAM))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return run_program(program, "test", "tfserving-platform", {}, [])


def objects(recording, router: str = "tfserving-default-router") -> dict[str, dict]:
    return {r.inputs["kind"]: r.inputs for r in recording.resources
            if r.parent.endswith(f"::{router}") and r.custom}


def test_component_manifests_match_the_kubernetes_schema(recording):
    rendered = objects(recording)
    assert set(rendered) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    for obj in rendered.values():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    broken = {**rendered["Deployment"], "spec": {**rendered["Deployment"]["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_component_wiring(recording, nginx):
    rendered = objects(recording)
    conf = rendered["ConfigMap"]["data"]["nginx.conf"]
    models = [ServedModel("digits", version_policy="specific", versions=(1,), canary_version=2)]
    assert conf == render_router_config(models, "tfserving-default.serving.svc.cluster.local",
                                        "tfserving-default-canary.serving.svc.cluster.local", 20)
    deployment = rendered["Deployment"]
    template = deployment["spec"]["template"]
    checksum = hashlib.sha256(conf.encode()).hexdigest()[:16]
    assert template["metadata"]["annotations"][RESTART_CHECKSUM] == checksum
    selector = recording.outputs["selector"]
    assert selector[APP_LABEL] == "tfserving-router", "never matched by TF Serving's selectors"
    assert template["metadata"]["labels"]["team"] == "ml"
    assert deployment["spec"]["selector"]["matchLabels"] == selector
    assert rendered["Service"]["spec"]["selector"] == selector
    assert rendered["PodDisruptionBudget"]["spec"] == {"maxUnavailable": 1,
                                                       "selector": {"matchLabels": selector}}
    assert {p["name"]: (p["port"], p.get("appProtocol")) for p in rendered["Service"]["spec"]["ports"]} == {
        "grpc": (8500, "grpc"), "http": (8501, "http")}
    assert recording.outputs["service_name"] == "tfserving-default-router"
    assert recording.outputs["rest_endpoint"] == \
        "http://tfserving-default-router.serving.svc.cluster.local:8501"

    pod = template["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "router" and container["image"] == ROUTER_IMAGE
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 65532
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/nginx/nginx.conf", "/tmp"}
    assert container["readinessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}

    # The Deployment waits for both backend Services (nginx resolves them at start).
    urns = {r.name: r.urn for r in recording.resources}
    dep = recording.one("kubernetes:apps/v1:Deployment", "tfserving-default-router-deployment")
    assert {urns["tfserving-default"], urns["tfserving-default-canary"]} <= set(dep.dependencies)

    no_canary = objects(recording, "tfserving-cpu-router")["ConfigMap"]["data"]["nginx.conf"]
    host = "tfserving-cpu.serving.svc.cluster.local"
    assert no_canary == render_router_config([], host, host, 0)

    # And the rendered config is one nginx accepts (hosts swapped for resolvable ones).
    with router_dir() as base:
        local = (conf.replace("tfserving-default-canary.serving.svc.cluster.local", CANARY_ADDR)
                 .replace("tfserving-default.serving.svc.cluster.local", STABLE_ADDR)
                 .replace(" /tmp/", f" {base}/tmp/"))
        result = nginx_t(nginx, base, local)
        assert result.returncode == 0, result.stderr
