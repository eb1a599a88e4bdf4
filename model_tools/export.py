"""Train and export the example model: a small digits classifier (scikit-learn's bundled digits).

Nothing is downloaded: ``sklearn.datasets.load_digits`` ships with scikit-learn. The model takes
raw 8x8 pixel intensities (0..16, float32) and scales them itself, so clients send raw pixels.

Signatures:
  serving_default  pixels [-1, 8, 8] float32 -> class_id [-1] int64, probabilities [-1, 10] float32
  predict_proba    pixels -> probabilities
  embed            pixels -> embedding [-1, HIDDEN] float32 (penultimate layer)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from model_tools.contract import check_model_name
from model_tools.errors import ToolError

MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most 1000 warmup records (saved_model_warmup.md)
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
INPUT_KEY = "pixels"
HIDDEN = 32
NUM_CLASSES = 10


@dataclass
class ExportResult:
    path: str
    accuracy: float
    test_examples: int
    size_bytes: int
    signatures: list[str]
    warmup_records: int


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ info logs unless the user chose a level."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_split(seed: int = 0, test_size: float = 0.2):
    """Digits images (N, 8, 8) float32 in 0..16 and int64 labels, split stratified by ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype("float32")
    y = digits.target.astype("int64")
    return train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)


def dir_size(path: str) -> int:
    """Total bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def check_warmup(n: int) -> int:
    if n < 0:
        raise ToolError("--warmup must be 0 or more")
    if n > MAX_WARMUP_RECORDS:
        raise ToolError(
            f"--warmup {n} is too many: TF Serving reads at most {MAX_WARMUP_RECORDS} warmup records"
        )
    return n


def _build(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    pixels = keras.Input(shape=(8, 8), name=INPUT_KEY, dtype="float32")
    x = keras.layers.Rescaling(1.0 / 16.0, name="scale_0_16")(pixels)
    x = keras.layers.Flatten(name="flatten")(x)
    embedding = keras.layers.Dense(HIDDEN, activation="relu", name="embedding")(x)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(embedding)
    return keras.Model(pixels, [logits, embedding], name="digits")


def train(seed: int = 0, epochs: int = 30):
    """Train deterministically; returns (model, test images, test labels)."""
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    x_train, x_test, y_train, y_test = load_split(seed)
    model = _build(seed)
    trainer = keras.Model(model.input, model.outputs[0])
    trainer.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    trainer.fit(x_train, y_train, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    return model, x_test, y_test


def _save(model, path: str) -> None:
    import tensorflow as tf
    from keras.export import ExportArchive

    spec = tf.TensorSpec([None, 8, 8], tf.float32, name=INPUT_KEY)

    def serve(pixels):
        logits, _ = model(pixels, training=False)
        probabilities = tf.nn.softmax(logits, axis=-1)
        return {"class_id": tf.argmax(probabilities, axis=-1), "probabilities": probabilities}

    def proba(pixels):
        logits, _ = model(pixels, training=False)
        return {"probabilities": tf.nn.softmax(logits, axis=-1)}

    def embed(pixels):
        _, embedding = model(pixels, training=False)
        return {"embedding": embedding}

    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    archive.add_endpoint("predict_proba", proba, input_signature=[spec])
    archive.add_endpoint("embed", embed, input_signature=[spec])
    archive.write_out(path, verbose=False)


def write_warmup(saved_model_dir: str, model_name: str, images, n: int) -> int:
    """Write ``n`` PredictionLog records (one image each) for TF Serving's model warmup."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    check_warmup(n)
    path = Path(saved_model_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = "serving_default"
            request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(images[i % len(images)][None, ...]))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return n


def evaluate(saved_model_dir: str, images, labels) -> float:
    """Accuracy of the SavedModel's serving_default signature (loaded from disk)."""
    import numpy as np
    import tensorflow as tf

    fn = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    predicted = fn(**{INPUT_KEY: tf.constant(images, tf.float32)})["class_id"].numpy()
    return float(np.mean(predicted == labels))


def export_digits(
    out: str,
    epochs: int = 30,
    seed: int = 0,
    warmup: int = 0,
    force: bool = False,
    model_name: str = "digits",
    log=print,
) -> ExportResult:
    """Train, export to ``out`` (written to a temp dir, then renamed), evaluate the export."""
    check_warmup(warmup)
    check_model_name(model_name)
    if epochs < 1:
        raise ToolError("--epochs must be at least 1")
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise ToolError(f"{out} already exists and is not empty; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)

    log(f"training digits classifier (seed {seed}, {epochs} epochs)")
    model, x_test, y_test = train(seed, epochs)
    try:
        _save(model, str(tmp))
        if warmup:
            write_warmup(str(tmp), model_name, x_test, warmup)
        accuracy = evaluate(str(tmp), x_test, y_test)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = ExportResult(
        str(target),
        accuracy,
        len(y_test),
        dir_size(str(target)),
        ["serving_default", "predict_proba", "embed"],
        warmup,
    )
    log(f"exported SavedModel to {target} ({result.size_bytes} bytes)")
    log(f"held-out accuracy: {accuracy:.4f} on {len(y_test)} examples")
    log(f"signatures: {', '.join(result.signatures)}")
    if warmup:
        log(f"warmup: {warmup} records in {WARMUP_FILE}")
    return result
