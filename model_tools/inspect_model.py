"""Inspect a SavedModel: signatures, tensors, and the REST and gRPC requests a client sends.

Signatures are read from ``saved_model.pb`` (the ``serve`` MetaGraph), exactly what TF Serving
reports in its metadata API. ``--run`` also loads the model and runs the example request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from model_tools.errors import ToolError
from model_tools.signatures import (
    DEFAULT_SIGNATURE,
    NUMPY_DTYPES,
    SignatureInfo,
    build_rest_request,
    describe,
    parse_signature_map,
    require_signature,
)

SERVE_TAG = "serve"


@dataclass
class Inspection:
    path: str
    model_name: str
    signatures: dict[str, SignatureInfo]
    rest_url_path: str
    rest_body: dict
    grpc_request_text: str


def read_signature_defs(saved_model_dir: str) -> dict:
    """``{name: SignatureDef-as-JSON}`` of the ``serve`` MetaGraph (TF Serving's metadata form)."""
    root = Path(saved_model_dir)
    if not root.is_dir():
        raise ToolError(f"SavedModel directory {saved_model_dir} does not exist")
    pb, pbtxt = root / "saved_model.pb", root / "saved_model.pbtxt"
    if not pb.is_file() and not pbtxt.is_file():
        raise ToolError(f"{saved_model_dir} is not a SavedModel: no saved_model.pb in it")
    from google.protobuf import json_format, text_format
    from google.protobuf.message import DecodeError

    from model_tools.export import quiet_tensorflow

    quiet_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    try:
        if pb.is_file():
            sm.ParseFromString(pb.read_bytes())
        else:
            text_format.Parse(pbtxt.read_text(), sm)
    except (DecodeError, text_format.ParseError) as e:
        raise ToolError(f"cannot parse the SavedModel in {saved_model_dir}: {e}") from None
    for mg in sm.meta_graphs:
        if SERVE_TAG in mg.meta_info_def.tags:
            return {
                name: json_format.MessageToDict(sd, preserving_proto_field_name=True)
                for name, sd in mg.signature_def.items()
            }
    tags = [list(mg.meta_info_def.tags) for mg in sm.meta_graphs]
    raise ToolError(
        f"{saved_model_dir} has no MetaGraph tagged '{SERVE_TAG}' (tags: {tags}); TF Serving cannot load it"
    )


def default_model_name(saved_model_dir: str) -> str:
    """``.../digits/3`` -> ``digits``; ``.../digits`` -> ``digits``."""
    p = Path(saved_model_dir).resolve()
    name = p.parent.name if p.name.isdigit() else p.name
    return name or "model"


def grpc_request_text(model: str, sig: SignatureInfo, batch: int = 1) -> str:
    """The PredictRequest a gRPC client sends, in protobuf text format."""
    from google.protobuf import text_format

    from model_tools.smoke import build_grpc_request

    return text_format.MessageToString(build_grpc_request(model, sig, batch))


def inspect(
    saved_model_dir: str, model_name: str | None = None, signature: str = DEFAULT_SIGNATURE, batch: int = 1
) -> Inspection:
    """Read the signatures and build example requests; refuses models without serving_default."""
    if batch < 1:
        raise ToolError("--batch-size must be at least 1")
    sigs = parse_signature_map(read_signature_defs(saved_model_dir))
    require_signature(sigs, DEFAULT_SIGNATURE, f"SavedModel {saved_model_dir}")
    sig = require_signature(sigs, signature, f"SavedModel {saved_model_dir}")
    name = model_name or default_model_name(saved_model_dir)
    return Inspection(
        path=saved_model_dir,
        model_name=name,
        signatures=sigs,
        rest_url_path=f"/v1/models/{name}:predict",
        rest_body=build_rest_request(sig, batch),
        grpc_request_text=grpc_request_text(name, sig, batch),
    )


def run_example(saved_model_dir: str, sig: SignatureInfo, body: dict) -> dict[str, list[int]]:
    """Run the REST example body through the loaded model; returns output shapes."""
    import numpy as np
    import tensorflow as tf

    fn = tf.saved_model.load(saved_model_dir).signatures[sig.name]
    if "instances" in body:
        rows = body["instances"]
        if len(sig.inputs) == 1:
            feeds = {next(iter(sig.inputs)): rows}
        else:
            feeds = {k: [r[k] for r in rows] for k in sig.inputs}
    else:
        cols = body["inputs"]
        feeds = {next(iter(sig.inputs)): cols} if len(sig.inputs) == 1 else cols
    tensors = {
        k: tf.constant(np.array(v, dtype=NUMPY_DTYPES.get(sig.inputs[k].dtype, "float32")))
        for k, v in feeds.items()
    }
    out = fn(**tensors)
    return {k: list(v.shape) for k, v in out.items()}


def render(ins: Inspection, rest_host: str = "localhost:8501") -> str:
    """The text ``inspect`` prints."""
    lines = [f"SavedModel: {ins.path}", f"model name used in requests: {ins.model_name}", ""]
    for sig in ins.signatures.values():
        lines += [describe(sig), ""]
    lines += [
        f"REST request (signature '{ins.rest_body['signature_name']}'):",
        f"  POST http://{rest_host}{ins.rest_url_path}",
        "  " + json.dumps(ins.rest_body),
        "",
        "gRPC request (tensorflow.serving.PredictionService/Predict, PredictRequest text format):",
    ]
    lines += ["  " + line for line in ins.grpc_request_text.rstrip().splitlines()]
    return "\n".join(lines)


def to_json(ins: Inspection) -> dict:
    """Machine-readable form of an inspection (``--json``)."""
    return {
        "path": ins.path,
        "model_name": ins.model_name,
        "signatures": {
            name: {
                "method_name": s.method_name,
                "inputs": {k: {"dtype": t.dtype, "shape": t.shape} for k, t in s.inputs.items()},
                "outputs": {k: {"dtype": t.dtype, "shape": t.shape} for k, t in s.outputs.items()},
            }
            for name, s in ins.signatures.items()
        },
        "rest": {"path": ins.rest_url_path, "body": ins.rest_body},
        "grpc_request": ins.grpc_request_text,
    }
