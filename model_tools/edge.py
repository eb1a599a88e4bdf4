"""Edge export: convert a SavedModel's serving_default signature to TFLite.

Quantization: ``dynamic`` (int8 weights, float activations), ``float16`` (float16 weights) or
``none``. For the digits example (input ``pixels`` [-1, 8, 8] float32 with a ``class_id`` or
``probabilities`` output) it reports held-out accuracy of the TFLite model next to the
SavedModel's, on the same split ``export`` uses.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from model_tools.errors import ToolError

QUANTIZATIONS = ("dynamic", "float16", "none")


@dataclass
class EdgeResult:
    path: str
    quantization: str
    size_bytes: int
    saved_model_bytes: int
    tflite_accuracy: float | None
    saved_model_accuracy: float | None
    note: str = ""


def convert(saved_model_dir: str, quantization: str = "dynamic") -> bytes:
    """TFLite flatbuffer bytes for the serving_default signature."""
    from model_tools.export import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise ToolError(f"unknown quantization {quantization!r} (choose {', '.join(QUANTIZATIONS)})")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
    if quantization in ("dynamic", "float16"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - converter errors are user-facing here
        raise ToolError(f"TFLite conversion of {saved_model_dir} failed: {e}") from None


def _interpreter(model_bytes: bytes):
    try:  # LiteRT, where installed; tf.lite.Interpreter is deprecated in favour of it.
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(model_content=model_bytes)


def tflite_accuracy(model_bytes: bytes, images, labels) -> float:
    """Accuracy of the TFLite model's serving_default signature, one image per call."""
    import numpy as np

    runner = _interpreter(model_bytes).get_signature_runner("serving_default")
    correct = 0
    for image, label in zip(images, labels):
        out = runner(pixels=image[None, ...].astype("float32"))
        pred = int(out["class_id"][0]) if "class_id" in out else int(np.argmax(out["probabilities"][0]))
        correct += pred == int(label)
    return correct / len(labels)


def _is_digits_like(saved_model_dir: str) -> bool:
    from model_tools.inspect_model import read_signature_defs
    from model_tools.signatures import parse_signature_map

    sig = parse_signature_map(read_signature_defs(saved_model_dir)).get("serving_default")
    if sig is None:
        return False
    t = sig.inputs.get("pixels")
    return (
        t is not None
        and len(sig.inputs) == 1
        and t.dtype == "DT_FLOAT"
        and t.shape == [-1, 8, 8]
        and bool({"class_id", "probabilities"} & set(sig.outputs))
    )


def export_tflite(
    saved_model_dir: str,
    out: str,
    quantization: str = "dynamic",
    seed: int = 0,
    evaluate: bool = True,
    log=print,
) -> EdgeResult:
    """Convert, write ``out``, and compare accuracy with the SavedModel when it is the digits model."""
    from model_tools.export import dir_size, load_split
    from model_tools.export import evaluate as evaluate_saved_model
    from model_tools.inspect_model import read_signature_defs

    sigs = read_signature_defs(saved_model_dir)  # clear errors for missing/non-SavedModel dirs
    if "serving_default" not in sigs:
        raise ToolError(f"SavedModel {saved_model_dir} has no 'serving_default' signature to convert")
    data = convert(saved_model_dir, quantization)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(data)
    result = EdgeResult(out, quantization, len(data), dir_size(saved_model_dir), None, None)
    log(
        f"wrote {out}: {len(data)} bytes ({quantization} quantization; "
        f"SavedModel {result.saved_model_bytes} bytes)"
    )
    if evaluate and _is_digits_like(saved_model_dir):
        _, x_test, _, y_test = load_split(seed)
        result.tflite_accuracy = tflite_accuracy(data, x_test, y_test)
        result.saved_model_accuracy = evaluate_saved_model(saved_model_dir, x_test, y_test)
        log(
            f"held-out accuracy: TFLite {result.tflite_accuracy:.4f} "
            f"vs SavedModel {result.saved_model_accuracy:.4f} "
            f"({len(y_test)} examples, split seed {seed})"
        )
    elif evaluate:
        result.note = (
            "accuracy not evaluated: serving_default is not the digits example's pixels [-1, 8, 8] input"
        )
        log(result.note)
    return result
