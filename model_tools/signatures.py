"""Signature handling shared by ``inspect`` and ``smoke`` (pure Python, no TensorFlow import).

Signatures are handled in the JSON form TF Serving's REST metadata API returns
(``SignatureDef`` rendered with proto field names: ``inputs``, ``outputs``, ``method_name``,
``dtype: "DT_FLOAT"``, ``tensor_shape: {"dim": [{"size": "-1"}]}``). ``inspect`` turns the
SavedModel's own proto into the same form, so both commands build requests the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from model_tools.errors import ToolError

DEFAULT_SIGNATURE = "serving_default"

FLOAT_DTYPES = {"DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16"}
INT_DTYPES = {
    "DT_INT8",
    "DT_INT16",
    "DT_INT32",
    "DT_INT64",
    "DT_UINT8",
    "DT_UINT16",
    "DT_UINT32",
    "DT_UINT64",
}
# numpy dtype names, used when building gRPC TensorProtos and checking gRPC outputs.
NUMPY_DTYPES = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_HALF": "float16",
    "DT_INT8": "int8",
    "DT_INT16": "int16",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_UINT8": "uint8",
    "DT_UINT16": "uint16",
    "DT_UINT32": "uint32",
    "DT_UINT64": "uint64",
    "DT_BOOL": "bool",
    "DT_STRING": "object",
}


@dataclass
class TensorInfo:
    """One input or output of a signature: its key, dtype name and shape (None = unknown rank)."""

    key: str
    dtype: str
    shape: list[int] | None
    tensor_name: str = ""

    def shape_text(self) -> str:
        return "unknown rank" if self.shape is None else "[" + ", ".join(map(str, self.shape)) + "]"

    @property
    def batched(self) -> bool:
        """True when the first dimension is the variable batch dimension (-1)."""
        return bool(self.shape) and self.shape[0] == -1


@dataclass
class SignatureInfo:
    """A signature: name, method and its inputs and outputs keyed by their signature keys."""

    name: str
    method_name: str
    inputs: dict[str, TensorInfo] = field(default_factory=dict)
    outputs: dict[str, TensorInfo] = field(default_factory=dict)

    @property
    def row_format(self) -> bool:
        """TF Serving's row ("instances") format needs every input and output batched."""
        tensors = list(self.inputs.values()) + list(self.outputs.values())
        return bool(self.inputs) and all(t.batched for t in tensors)


def _parse_tensor(key: str, d: dict) -> TensorInfo:
    shape_d = d.get("tensor_shape") or d.get("tensorShape") or {}
    if shape_d.get("unknown_rank") or shape_d.get("unknownRank"):
        shape = None
    else:
        shape = [int(dim.get("size", 0)) for dim in shape_d.get("dim", [])]
    return TensorInfo(key=key, dtype=d.get("dtype", "DT_INVALID"), shape=shape, tensor_name=d.get("name", ""))


def parse_signature_def(name: str, d: dict) -> SignatureInfo:
    """Build a SignatureInfo from one SignatureDef in JSON (proto field names) form."""
    return SignatureInfo(
        name=name,
        method_name=d.get("method_name") or d.get("methodName", ""),
        inputs={k: _parse_tensor(k, v) for k, v in sorted((d.get("inputs") or {}).items())},
        outputs={k: _parse_tensor(k, v) for k, v in sorted((d.get("outputs") or {}).items())},
    )


def parse_signature_map(sig_map: dict) -> dict[str, SignatureInfo]:
    """Parse ``{name: SignatureDef-json}`` into SignatureInfos, sorted with serving_default first."""
    names = sorted(sig_map, key=lambda n: (n != DEFAULT_SIGNATURE, n))
    return {n: parse_signature_def(n, sig_map[n]) for n in names if not n.startswith("__")}


def parse_metadata_response(body: dict) -> dict[str, SignatureInfo]:
    """Parse the body of TF Serving's ``GET /v1/models/<name>/metadata``."""
    try:
        sig_map = body["metadata"]["signature_def"]["signature_def"]
    except (KeyError, TypeError):
        raise ToolError("metadata response has no metadata.signature_def.signature_def map") from None
    return parse_signature_map(sig_map)


def require_signature(signatures: dict[str, SignatureInfo], name: str, where: str) -> SignatureInfo:
    """Return signature ``name`` or raise a ToolError naming the ones that exist."""
    if name in signatures:
        return signatures[name]
    found = ", ".join(signatures) or "none"
    hint = ""
    if name == DEFAULT_SIGNATURE:
        hint = (
            f". TF Serving uses '{DEFAULT_SIGNATURE}' when a request names no signature, and the "
            "platform's clients and smoke tests rely on it: re-export the model with a "
            f"'{DEFAULT_SIGNATURE}' signature"
        )
    raise ToolError(f"{where} has no '{name}' signature (signatures found: {found}){hint}")


def _example_scalar(dtype: str):
    if dtype in FLOAT_DTYPES:
        return 0.0
    if dtype in INT_DTYPES:
        return 0
    if dtype == "DT_BOOL":
        return False
    if dtype == "DT_STRING":
        return ""
    raise ToolError(f"cannot build an example value for dtype {dtype}")


def example_value(dtype: str, shape: list[int] | None, batch_size: int = 1):
    """A nested list of the given shape (unknown dims: batch_size for dim 0, else 1)."""
    if shape is None:
        shape = [batch_size]
    dims = [(batch_size if i == 0 else 1) if d < 0 else d for i, d in enumerate(shape)]

    def build(rest):
        if not rest:
            return _example_scalar(dtype)
        return [build(rest[1:]) for _ in range(rest[0])]

    return build(dims)


def build_rest_request(sig: SignatureInfo, batch_size: int = 1) -> dict:
    """The REST ``:predict`` body for ``sig``: row format when possible, else columnar."""
    body: dict = {"signature_name": sig.name}
    if sig.row_format:
        rows = []
        for i in range(batch_size):
            row = {k: example_value(t.dtype, t.shape[1:]) for k, t in sig.inputs.items()}
            rows.append(next(iter(row.values())) if len(row) == 1 else row)
        body["instances"] = rows
    else:
        cols = {k: example_value(t.dtype, t.shape, batch_size) for k, t in sig.inputs.items()}
        body["inputs"] = next(iter(cols.values())) if len(cols) == 1 else cols
    return body


def _value_shape(value, path: str, problems: list[str]) -> list[int] | None:
    """Shape of a nested JSON list; None (with a problem recorded) if ragged."""
    if not isinstance(value, list):
        return []
    if not value:
        return [0]
    shapes = [_value_shape(v, path, problems) for v in value]
    if any(s is None for s in shapes):
        return None
    if any(s != shapes[0] for s in shapes):
        problems.append(f"{path}: ragged nested list")
        return None
    return [len(value)] + shapes[0]


def _leaves(value):
    if isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _check_dtype(dtype: str, value, path: str, problems: list[str]) -> None:
    for leaf in _leaves(value):
        if dtype in FLOAT_DTYPES:
            ok = isinstance(leaf, (int, float)) and not isinstance(leaf, bool)
            if ok and not math.isfinite(float(leaf)):
                problems.append(f"{path}: non-finite value {leaf!r}")
                return
        elif dtype in INT_DTYPES:
            ok = isinstance(leaf, int) and not isinstance(leaf, bool)
        elif dtype == "DT_BOOL":
            ok = isinstance(leaf, bool)
        elif dtype == "DT_STRING":
            ok = isinstance(leaf, str) or (isinstance(leaf, dict) and set(leaf) == {"b64"})
        else:
            ok = True
        if not ok:
            problems.append(f"{path}: value {leaf!r} does not match dtype {dtype}")
            return


def _shape_matches(expected: list[int] | None, actual: list[int]) -> bool:
    if expected is None:
        return True
    return len(expected) == len(actual) and all(e < 0 or e == a for e, a in zip(expected, actual))


def check_rest_response(sig: SignatureInfo, batch_size: int, body) -> list[str]:
    """Check a ``:predict`` response body against ``sig``; return a list of problems."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return [f"response is not a JSON object: {str(body)[:200]}"]
    if "error" in body:
        return [f"server returned error: {body['error']}"]
    outputs = sig.outputs
    if sig.row_format:
        if "predictions" not in body:
            return [f"response has no 'predictions' key (keys: {sorted(body)})"]
        preds = body["predictions"]
        if not isinstance(preds, list) or len(preds) != batch_size:
            n = len(preds) if isinstance(preds, list) else type(preds).__name__
            return [f"expected {batch_size} predictions, got {n}"]
        # One named output: TF Serving drops the name; several: one object per instance.
        per_output: dict[str, list] = {}
        if len(outputs) == 1:
            per_output[next(iter(outputs))] = preds
        else:
            for i, p in enumerate(preds):
                if not isinstance(p, dict):
                    return [f"prediction {i} is not an object with keys {sorted(outputs)}"]
                if set(p) != set(outputs):
                    return [f"prediction {i} has keys {sorted(p)}, expected {sorted(outputs)}"]
            per_output = {k: [p[k] for p in preds] for k in outputs}
        for key, t in outputs.items():
            expected = None if t.shape is None else [batch_size] + t.shape[1:]
            _check_output(key, t, per_output[key], expected, problems)
    else:
        if "outputs" not in body:
            return [f"response has no 'outputs' key (keys: {sorted(body)})"]
        out = body["outputs"]
        per_output = {next(iter(outputs)): out} if len(outputs) == 1 else out
        if not isinstance(per_output, dict) or set(per_output) != set(outputs):
            return [f"outputs do not match signature outputs {sorted(outputs)}"]
        for key, t in outputs.items():
            expected = (
                None
                if t.shape is None
                else [batch_size if (i == 0 and d < 0) else d for i, d in enumerate(t.shape)]
            )
            _check_output(key, t, per_output[key], expected, problems)
    return problems


def _check_output(key: str, t: TensorInfo, value, expected, problems: list[str]) -> None:
    shape = _value_shape(value, f"output '{key}'", problems)
    if shape is None:
        return
    if not _shape_matches(expected, shape):
        problems.append(f"output '{key}': shape {shape}, expected {expected} (signature {t.shape_text()})")
        return
    _check_dtype(t.dtype, value, f"output '{key}'", problems)


def describe(sig: SignatureInfo) -> str:
    """Human-readable lines describing one signature."""
    lines = [f"signature '{sig.name}' (method {sig.method_name or 'unknown'})"]
    for kind, tensors in (("input", sig.inputs), ("output", sig.outputs)):
        for t in tensors.values():
            name = f"  (tensor {t.tensor_name})" if t.tensor_name else ""
            lines.append(f"  {kind:6} {t.key}: {t.dtype} {t.shape_text()}{name}")
    return "\n".join(lines)
