"""export: a real training run and SavedModel export with tensorflow-cpu."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from model_tools.cli import main
from model_tools.export import MAX_WARMUP_RECORDS, WARMUP_FILE, dir_size, load_split, train


def test_export_reports_accuracy_above_threshold(exported_model):
    assert exported_model.accuracy > 0.93
    assert exported_model.test_examples == 360
    assert exported_model.size_bytes == dir_size(exported_model.path) > 10_000


def test_exported_signatures_and_shapes(exported_model):
    loaded = tf.saved_model.load(exported_model.path)
    assert {"serving_default", "predict_proba", "embed"} <= set(loaded.signatures)
    _, x_test, _, _ = load_split(0)
    batch = tf.constant(x_test[:5])  # raw 0..16 pixel values: scaling happens inside the model
    out = loaded.signatures["serving_default"](pixels=batch)
    assert out["class_id"].dtype == tf.int64 and out["class_id"].shape == (5,)
    assert out["probabilities"].shape == (5, 10)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    proba = loaded.signatures["predict_proba"](pixels=batch)["probabilities"].numpy()
    np.testing.assert_allclose(proba, out["probabilities"].numpy(), rtol=1e-6)
    emb = loaded.signatures["embed"](pixels=batch)["embedding"]
    assert emb.shape == (5, 32) and emb.dtype == tf.float32


def test_preprocessing_is_inside_the_model(exported_model):
    """Raw pixels score high; pre-scaled pixels (what an outside scaler would send) do not."""
    fn = tf.saved_model.load(exported_model.path).signatures["serving_default"]
    _, x_test, _, y_test = load_split(0)
    raw = np.mean(fn(pixels=tf.constant(x_test))["class_id"].numpy() == y_test)
    prescaled = np.mean(fn(pixels=tf.constant(x_test / 16.0))["class_id"].numpy() == y_test)
    assert raw == pytest.approx(exported_model.accuracy)
    assert prescaled < raw - 0.2


def test_warmup_records_are_valid_prediction_logs(exported_model):
    path = f"{exported_model.path}/{WARMUP_FILE}"
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    assert len(records) == exported_model.warmup_records == 8
    fn = tf.saved_model.load(exported_model.path).signatures["serving_default"]
    for raw in records:
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        req = log.predict_log.request
        assert req.model_spec.name == "digits" and req.model_spec.signature_name == "serving_default"
        pixels = tf.make_ndarray(req.inputs["pixels"])
        assert pixels.shape == (1, 8, 8) and pixels.dtype == np.float32
        assert fn(pixels=tf.constant(pixels))["class_id"].shape == (1,)


def test_warmup_over_limit_refused_before_training(tmp_path, capsys):
    out = tmp_path / "m"
    code = main(["export", "--out", str(out), "--warmup", str(MAX_WARMUP_RECORDS + 1)])
    err = capsys.readouterr().err
    assert code == 2
    assert "at most 1000" in err and "Traceback" not in err
    assert not out.exists()


def test_export_refuses_non_empty_out_without_force(tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["export", "--out", str(out), "--epochs", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "x"


def test_training_is_deterministic():
    first, _, _ = train(seed=3, epochs=2)
    second, _, _ = train(seed=3, epochs=2)
    other, _, _ = train(seed=4, epochs=2)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first.get_weights(), other.get_weights()))
