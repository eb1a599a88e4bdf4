"""inspect: signatures and example requests, checked against real SavedModels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2

from model_tools.cli import main
from model_tools.inspect_model import inspect, run_example


def _save(module, path, signatures):
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


@pytest.fixture(scope="module")
def no_default_model(tmp_path_factory):
    """A SavedModel whose only signature is 'classify' (no serving_default)."""
    module = tf.Module()
    module.w = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def classify(x):
        return {"y": x * module.w}

    return _save(module, tmp_path_factory.mktemp("nodefault") / "m", {"classify": classify})


@pytest.fixture(scope="module")
def two_input_model(tmp_path_factory):
    """serving_default takes a float [-1, 3] and an int64 [-1]; returns one float [-1] output."""
    module = tf.Module()

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="features"),
            tf.TensorSpec([None], tf.int64, name="offset"),
        ]
    )
    def serve(features, offset):
        return {"score": tf.reduce_sum(features, axis=1) + tf.cast(offset, tf.float32)}

    return _save(module, tmp_path_factory.mktemp("twoin") / "scorer", {"serving_default": serve})


def test_inspect_prints_signatures_and_requests(exported_model, capsys):
    assert main(["inspect", exported_model.path]) == 0
    out = capsys.readouterr().out
    for text in (
        "signature 'serving_default'",
        "signature 'embed'",
        "signature 'predict_proba'",
        "input  pixels: DT_FLOAT [-1, 8, 8]",
        "output class_id: DT_INT64 [-1]",
        "output probabilities: DT_FLOAT [-1, 10]",
        "output embedding: DT_FLOAT [-1, 32]",
        "POST http://localhost:8501/v1/models/digits:predict",
        'name: "digits"',
    ):
        assert text in out, text


def test_rest_and_grpc_examples_run_on_the_real_model(exported_model, capsys):
    assert main(["inspect", exported_model.path, "--json", "--batch-size", "2"]) == 0
    info = json.loads(capsys.readouterr().out)
    body = info["rest"]["body"]
    assert body["signature_name"] == "serving_default"
    assert np.array(body["instances"]).shape == (2, 8, 8)
    assert info["signatures"]["serving_default"]["outputs"]["probabilities"] == {
        "dtype": "DT_FLOAT",
        "shape": [-1, 10],
    }
    fn = tf.saved_model.load(exported_model.path).signatures["serving_default"]
    out = fn(pixels=tf.constant(body["instances"], tf.float32))
    assert out["probabilities"].shape == (2, 10)
    req = text_format.Parse(info["grpc_request"], predict_pb2.PredictRequest())
    assert req.model_spec.name == "digits" and req.model_spec.signature_name == "serving_default"
    pixels = tf.make_ndarray(req.inputs["pixels"])
    assert pixels.shape == (2, 8, 8) and pixels.dtype == np.float32
    assert fn(pixels=tf.constant(pixels))["class_id"].shape == (2,)


def test_inspect_other_signature(exported_model):
    ins = inspect(exported_model.path, model_name="digits", signature="embed")
    assert ins.rest_body["signature_name"] == "embed"
    assert run_example(exported_model.path, ins.signatures["embed"], ins.rest_body) == {"embedding": [1, 32]}


def test_inspect_refuses_model_without_serving_default(no_default_model, capsys):
    assert main(["inspect", str(no_default_model)]) == 2
    captured = capsys.readouterr()
    assert "no 'serving_default' signature" in captured.err
    assert "classify" in captured.err  # names what it found
    assert "Traceback" not in captured.err and "REST request" not in captured.out


def test_multi_input_model_uses_named_instances(two_input_model, capsys):
    assert main(["inspect", str(two_input_model), "--json", "--run"]) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)
    assert info["model_name"] == "scorer"
    assert info["rest"]["body"]["instances"] == [{"features": [0.0, 0.0, 0.0], "offset": 0}]
    assert "output shapes {'score': [1]}" in captured.err
    req = text_format.Parse(info["grpc_request"], predict_pb2.PredictRequest())
    assert tf.make_ndarray(req.inputs["offset"]).dtype == np.int64


@pytest.mark.parametrize("make", ["missing", "not_saved_model"])
def test_inspect_bad_path_is_a_clear_error(tmp_path, capsys, make):
    path = tmp_path / "nothing"
    if make == "not_saved_model":
        path.mkdir()
        (path / "model.h5").write_bytes(b"x")
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
