"""Smoke-test a deployed TF Serving endpoint over REST (and optionally gRPC).

Checks, in order: model status (every listed version AVAILABLE), signature metadata, N REST
``:predict`` calls built from that signature (output shapes and dtypes checked), optional
gRPC Predict calls, and latency percentiles. Any failure raises ToolError (exit code 1).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from model_tools.contract import check_label, check_model_name, check_version
from model_tools.errors import ToolError
from model_tools.signatures import (
    DEFAULT_SIGNATURE,
    NUMPY_DTYPES,
    SignatureInfo,
    build_rest_request,
    check_rest_response,
    describe,
    example_value,
    parse_metadata_response,
    require_signature,
)


class SmokeFailure(ToolError):
    def __init__(self, message: str):
        super().__init__(f"smoke test failed: {message}", exit_code=1)


@dataclass
class SmokeReport:
    model: str
    versions: list[str]
    signature: SignatureInfo
    rest_latencies_ms: list[float] = field(default_factory=list)
    grpc_latencies_ms: list[float] = field(default_factory=list)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_line(name: str, values: list[float]) -> str:
    return (
        f"{name}: {len(values)} ok  p50 {percentile(values, 50):.2f} ms  "
        f"p90 {percentile(values, 90):.2f} ms  p99 {percentile(values, 99):.2f} ms"
    )


def _http(method: str, url: str, body: dict | None, timeout: float) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SmokeFailure(f"cannot reach {url}: {reason}") from None
    try:
        return status, json.loads(raw.decode() or "null")
    except ValueError:
        return status, raw.decode(errors="replace")[:300]


def _model_path(model: str, version: int | None, label: str | None) -> str:
    path = f"/v1/models/{model}"
    if version is not None:
        path += f"/versions/{version}"
    elif label is not None:
        path += f"/labels/{label}"
    return path


def _error_text(body) -> str:
    return body.get("error", json.dumps(body)) if isinstance(body, dict) else str(body)


def check_status(base: str, model: str, version, label, timeout: float) -> list[str]:
    """GET the model status; every listed version must be AVAILABLE. Returns the versions."""
    url = base + _model_path(model, version, label)
    status, body = _http("GET", url, None, timeout)
    if status != 200:
        raise SmokeFailure(f"GET {url} returned HTTP {status}: {_error_text(body)}")
    entries = body.get("model_version_status") if isinstance(body, dict) else None
    if not entries:
        raise SmokeFailure(f"GET {url}: no model_version_status in response: {body}")
    bad = []
    for e in entries:
        state = e.get("state", "UNKNOWN")
        if state != "AVAILABLE":
            err = (e.get("status") or {}).get("error_message") or ""
            bad.append(f"version {e.get('version')} is {state}" + (f" ({err})" if err else ""))
    if bad:
        raise SmokeFailure(f"model '{model}' is not healthy: {'; '.join(bad)}")
    return [str(e.get("version")) for e in entries]


def fetch_signature(base: str, model: str, version, label, signature: str, timeout: float) -> SignatureInfo:
    url = base + _model_path(model, version, label) + "/metadata"
    status, body = _http("GET", url, None, timeout)
    if status != 200:
        raise SmokeFailure(f"GET {url} returned HTTP {status}: {_error_text(body)}")
    try:
        sigs = parse_metadata_response(body)
        return require_signature(sigs, signature, f"model '{model}' at {base}")
    except ToolError as e:
        raise SmokeFailure(str(e)) from None


def rest_predict(
    base, model, version, label, sig: SignatureInfo, n: int, batch: int, timeout: float
) -> list[float]:
    """Send ``n`` REST predict requests and check each response; returns latencies in ms."""
    url = base + _model_path(model, version, label) + ":predict"
    body = build_rest_request(sig, batch)
    latencies = []
    for i in range(n):
        start = time.perf_counter()
        status, resp = _http("POST", url, body, timeout)
        latencies.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise SmokeFailure(
                f"POST {url} (request {i + 1}/{n}) returned HTTP {status}: {_error_text(resp)}"
            )
        problems = check_rest_response(sig, batch, resp)
        if problems:
            raise SmokeFailure(f"POST {url} (request {i + 1}/{n}): " + "; ".join(problems))
    return latencies


def build_grpc_request(model: str, sig: SignatureInfo, batch: int, version=None, label=None):
    """A tensorflow_serving PredictRequest for ``sig`` with example values."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = sig.name
    if version is not None:
        req.model_spec.version.value = int(version)
    elif label is not None:
        req.model_spec.version_label = label
    for key, t in sig.inputs.items():
        value = example_value(t.dtype, t.shape, batch)
        dtype = NUMPY_DTYPES.get(t.dtype)
        if dtype is None:
            raise ToolError(f"cannot build a gRPC example for input '{key}' of dtype {t.dtype}")
        arr = np.array(value, dtype=object if dtype == "object" else dtype)
        if dtype == "object":
            arr = np.vectorize(lambda s: s.encode(), otypes=[object])(arr)
        req.inputs[key].CopyFrom(tf.make_tensor_proto(arr))
    return req


def grpc_predict(
    target: str, model: str, sig: SignatureInfo, n: int, batch: int, timeout: float, version=None, label=None
) -> list[float]:
    """Send ``n`` gRPC Predict calls via PredictionServiceStub; check output shapes and dtypes."""
    import grpc
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    req = build_grpc_request(model, sig, batch, version, label)
    latencies = []
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for i in range(n):
            start = time.perf_counter()
            try:
                resp = stub.Predict(req, timeout=timeout)
            except grpc.RpcError as e:
                raise SmokeFailure(
                    f"gRPC Predict to {target} (request {i + 1}/{n}): {e.code().name}: {e.details()}"
                ) from None
            latencies.append((time.perf_counter() - start) * 1000)
            missing = set(sig.outputs) - set(resp.outputs)
            if missing:
                raise SmokeFailure(f"gRPC Predict response lacks outputs {sorted(missing)}")
            for key, t in sig.outputs.items():
                proto = resp.outputs[key]
                got = types_pb2.DataType.Name(proto.dtype)
                if got != t.dtype:
                    raise SmokeFailure(f"gRPC output '{key}': dtype {got}, expected {t.dtype}")
                shape = list(tf.make_ndarray(proto).shape)
                expected = (
                    None
                    if t.shape is None
                    else [batch if (j == 0 and d < 0) else d for j, d in enumerate(t.shape)]
                )
                if expected is not None and (
                    len(shape) != len(expected) or any(e >= 0 and e != s for e, s in zip(expected, shape))
                ):
                    raise SmokeFailure(f"gRPC output '{key}': shape {shape}, expected {expected}")
    return latencies


def run_smoke(
    rest_url: str,
    model: str,
    n: int = 10,
    grpc_target: str | None = None,
    signature: str = DEFAULT_SIGNATURE,
    version=None,
    label=None,
    batch: int = 1,
    timeout: float = 10.0,
    max_p99_ms: float | None = None,
    log=print,
) -> SmokeReport:
    """Run every check; raises SmokeFailure on the first failure."""
    check_model_name(model)
    if version is not None and label is not None:
        raise ToolError("pass either --version or --label, not both")
    if version is not None:
        version = check_version(version)
    if label is not None:
        check_label(label)
    if n < 1 or batch < 1:
        raise ToolError("-n and --batch-size must be at least 1")
    if not rest_url.startswith(("http://", "https://")):
        raise ToolError(f"--rest-url must start with http:// or https:// (got {rest_url!r})")
    base = rest_url.rstrip("/")

    versions = check_status(base, model, version, label, timeout)
    log(f"status: model '{model}' version(s) {', '.join(versions)} AVAILABLE")
    sig = fetch_signature(base, model, version, label, signature, timeout)
    log(describe(sig))
    report = SmokeReport(model, versions, sig)
    report.rest_latencies_ms = rest_predict(base, model, version, label, sig, n, batch, timeout)
    log(latency_line("REST predict", report.rest_latencies_ms))
    if grpc_target:
        report.grpc_latencies_ms = grpc_predict(grpc_target, model, sig, n, batch, timeout, version, label)
        log(latency_line("gRPC predict", report.grpc_latencies_ms))
    if max_p99_ms is not None:
        for name, values in (("REST", report.rest_latencies_ms), ("gRPC", report.grpc_latencies_ms)):
            if values and percentile(values, 99) > max_p99_ms:
                raise SmokeFailure(
                    f"{name} p99 latency {percentile(values, 99):.2f} ms exceeds --max-p99-ms {max_p99_ms}"
                )
    log("smoke test passed")
    return report
