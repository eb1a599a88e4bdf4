"""A local stand-in for TF Serving that runs a real SavedModel, for the smoke tests.

REST (bound to 127.0.0.1, ephemeral port): ``GET /v1/models/<m>[/versions/<v>|/labels/<l>]``,
``.../metadata`` and ``POST ...:predict`` in TF Serving's row and columnar formats, with its
error shape ``{"error": ...}``. gRPC: a ``PredictionServiceServicer`` (tensorflow-serving-api)
answering ``Predict``. Both execute the SavedModel's signatures for real, so a badly shaped or
badly typed request fails here the way it fails on TF Serving.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

PATH_RE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:predict)?$"
)


class LoadedModel:
    """A SavedModel loaded once, with its serve MetaGraph's SignatureDefs (independent of model_tools)."""

    def __init__(self, saved_model_dir: str):
        self.loaded = tf.saved_model.load(saved_model_dir)
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
        (meta,) = [mg for mg in sm.meta_graphs if "serve" in mg.meta_info_def.tags]
        self.signature_defs = dict(meta.signature_def)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if signature not in self.loaded.signatures:
            raise ValueError(f'Serving signature name: "{signature}" not found in signature def')
        sig_def = self.signature_defs[signature]
        if set(inputs) != set(sig_def.inputs):
            raise ValueError(
                f"inputs {sorted(inputs)} do not match signature inputs {sorted(sig_def.inputs)}"
            )
        feeds = {}
        for key, value in inputs.items():
            dtype = tf.dtypes.as_dtype(sig_def.inputs[key].dtype)
            feeds[key] = tf.constant(np.asarray(value), dtype=dtype)
        out = self.loaded.signatures[signature](**feeds)
        return {k: v.numpy() for k, v in out.items()}


class FakeTFServing:
    """REST and gRPC endpoints for one model name; ``states`` maps version -> state."""

    def __init__(self, model: LoadedModel, name: str = "digits"):
        self.model = model
        self.name = name
        self.states: dict[int, str] = {1: "AVAILABLE"}
        self.labels: dict[str, int] = {"stable": 1}
        self.mutate_predictions = None  # optional callable(body) -> body, to simulate a broken server
        self.mutate_grpc_outputs = None  # optional callable(dict of arrays) -> dict of arrays
        self.rest_predicts = 0
        self.grpc_predicts = 0
        self._lock = threading.Lock()
        self._http = None
        self._grpc = None

    # --- REST -------------------------------------------------------------------------------
    def _resolve(self, m) -> tuple[int, dict] | int:
        if m["name"] != self.name:
            return 404, {"error": f"Servable not found for request: Latest({m['name']})"}
        if m["label"] is not None:
            if m["label"] not in self.labels:
                return 404, {"error": f"Unrecognized servable version label: {m['label']}"}
            return self.labels[m["label"]]
        if m["version"] is not None:
            v = int(m["version"])
            if v not in self.states:
                return 404, {"error": f"Servable not found for request: Specific({self.name}, {v})"}
            return v
        return 0  # all versions (status) / latest (predict)

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        m = PATH_RE.match(path)
        if not m:
            return 404, {"error": "Malformed request: " + path}
        version = self._resolve(m)
        if isinstance(version, tuple):
            return version
        suffix = m["suffix"]
        if method == "GET" and suffix is None:
            versions = [version] if version else sorted(self.states, reverse=True)
            return 200, {
                "model_version_status": [
                    {
                        "version": str(v),
                        "state": self.states[v],
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                    for v in versions
                ]
            }
        served = version or max(v for v, s in self.states.items() if s == "AVAILABLE")
        if method == "GET" and suffix == "/metadata":
            sigs = {
                k: json_format.MessageToDict(v, preserving_proto_field_name=True)
                for k, v in self.model.signature_defs.items()
            }
            return 200, {
                "model_spec": {"name": self.name, "signature_name": "", "version": str(served)},
                "metadata": {"signature_def": {"signature_def": sigs}},
            }
        if method == "POST" and suffix == ":predict":
            with self._lock:
                self.rest_predicts += 1
            try:
                return 200, self._predict(json.loads(body or b"{}"))
            except Exception as e:  # noqa: BLE001 - TF Serving answers 400 with the error text
                return 400, {"error": str(e)}
        return 405, {"error": "Unsupported method or path"}

    def _predict(self, req: dict) -> dict:
        signature = req.get("signature_name", "serving_default")
        sig_def = self.model.signature_defs.get(signature)
        if sig_def is None:
            raise ValueError(f'Serving signature name: "{signature}" not found in signature def')
        keys = list(sig_def.inputs)
        if "instances" in req:
            rows = req["instances"]
            if rows and isinstance(rows[0], dict):
                inputs = {k: [r[k] for r in rows] for k in rows[0]}
            elif len(keys) == 1:
                inputs = {keys[0]: rows}
            else:
                raise ValueError("instances must be objects when the signature has several inputs")
            out = self.model.run(signature, inputs)
            if len(out) == 1:
                body = {"predictions": next(iter(out.values())).tolist()}
            else:
                n = len(next(iter(out.values())))
                body = {"predictions": [{k: v[i].tolist() for k, v in out.items()} for i in range(n)]}
        elif "inputs" in req:
            cols = req["inputs"]
            inputs = cols if isinstance(cols, dict) else {keys[0]: cols}
            out = self.model.run(signature, inputs)
            body = {
                "outputs": next(iter(out.values())).tolist()
                if len(out) == 1
                else {k: v.tolist() for k, v in out.items()}
            }
        else:
            raise ValueError("Missing 'instances' or 'inputs' key")
        return self.mutate_predictions(body) if self.mutate_predictions else body

    def start_rest(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                status, body = fake.handle(method, self.path, self.rfile.read(length) if length else b"")
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._reply("GET")

            def do_POST(self):
                self._reply("POST")

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    # --- gRPC -------------------------------------------------------------------------------
    def start_grpc(self) -> str:
        fake = self

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):
                if request.model_spec.name != fake.name:
                    context.abort(
                        grpc.StatusCode.NOT_FOUND,
                        f"Servable not found for request: Latest({request.model_spec.name})",
                    )
                signature = request.model_spec.signature_name or "serving_default"
                with fake._lock:
                    fake.grpc_predicts += 1
                try:
                    out = fake.model.run(
                        signature, {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                    )
                except Exception as e:  # noqa: BLE001
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                if fake.mutate_grpc_outputs:
                    out = fake.mutate_grpc_outputs(out)
                resp = predict_pb2.PredictResponse()
                resp.model_spec.name = fake.name
                resp.model_spec.signature_name = signature
                resp.model_spec.version.value = max(fake.states)
                for k, v in out.items():
                    resp.outputs[k].CopyFrom(tf.make_tensor_proto(v))
                return resp

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), self._grpc)
        port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        return f"127.0.0.1:{port}"

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(5)
