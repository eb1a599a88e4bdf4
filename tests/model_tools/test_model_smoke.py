"""smoke: against a local REST + gRPC stand-in for TF Serving that runs the exported model."""

from __future__ import annotations

import socket

import pytest

from model_tools.cli import main
from model_tools.signatures import SignatureInfo, TensorInfo, check_rest_response
from model_tools.smoke import percentile

from .tfserving_fake import FakeTFServing, LoadedModel


@pytest.fixture(scope="module")
def loaded(exported_model):
    return LoadedModel(exported_model.path)


@pytest.fixture
def serving(loaded):
    fake = FakeTFServing(loaded, "digits")
    rest = fake.start_rest()
    grpc_target = fake.start_grpc()
    try:
        yield fake, rest, grpc_target
    finally:
        fake.stop()


def test_smoke_passes_over_rest_and_grpc(serving, capsys):
    fake, rest, grpc_target = serving
    assert (
        main(["smoke", "--rest-url", rest, "--grpc-target", grpc_target, "--model", "digits", "-n", "5"]) == 0
    )
    out = capsys.readouterr().out
    assert "version(s) 1 AVAILABLE" in out
    assert "input  pixels: DT_FLOAT [-1, 8, 8]" in out
    for proto in ("REST predict: 5 ok", "gRPC predict: 5 ok"):
        line = next(ln for ln in out.splitlines() if ln.startswith(proto))
        assert "p50" in line and "p90" in line and "p99" in line
    assert "smoke test passed" in out
    assert (fake.rest_predicts, fake.grpc_predicts) == (5, 5)  # the real model answered each one


def test_smoke_other_signature_batch_and_label(serving, capsys):
    fake, rest, grpc_target = serving
    fake.states = {1: "AVAILABLE", 2: "AVAILABLE"}
    fake.labels = {"stable": 1, "canary": 2}
    assert (
        main(
            [
                "smoke",
                "--rest-url",
                rest + "/",
                "--grpc-target",
                grpc_target,
                "--model",
                "digits",
                "--signature",
                "embed",
                "--batch-size",
                "3",
                "--label",
                "canary",
                "-n",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "version(s) 2 AVAILABLE" in out and "output embedding: DT_FLOAT [-1, 32]" in out
    assert fake.rest_predicts == 2 and fake.grpc_predicts == 2


def test_smoke_fails_when_a_version_is_not_available(serving, capsys):
    fake, rest, _ = serving
    fake.states = {1: "AVAILABLE", 2: "LOADING"}
    assert main(["smoke", "--rest-url", rest, "--model", "digits"]) == 1
    err = capsys.readouterr().err
    assert "smoke test failed" in err and "version 2 is LOADING" in err and "Traceback" not in err
    assert fake.rest_predicts == 0


def test_smoke_fails_on_wrong_output_shape(serving, capsys):
    fake, rest, _ = serving

    def drop_a_class(body):
        for p in body["predictions"]:
            p["probabilities"] = p["probabilities"][:9]
        return body

    fake.mutate_predictions = drop_a_class
    assert main(["smoke", "--rest-url", rest, "--model", "digits", "-n", "3"]) == 1
    err = capsys.readouterr().err
    assert "output 'probabilities': shape [1, 9], expected [1, 10]" in err
    assert fake.rest_predicts == 1  # stops at the first bad answer


def test_smoke_fails_on_wrong_output_dtype(serving, capsys):
    fake, rest, _ = serving

    def float_class_ids(body):
        for p in body["predictions"]:
            p["class_id"] = float(p["class_id"]) + 0.5
        return body

    fake.mutate_predictions = float_class_ids
    assert main(["smoke", "--rest-url", rest, "--model", "digits"]) == 1
    assert "does not match dtype DT_INT64" in capsys.readouterr().err


def test_smoke_unknown_model_and_unreachable_server(serving, capsys):
    _, rest, _ = serving
    assert main(["smoke", "--rest-url", rest, "--model", "resnet"]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    assert (
        main(
            ["smoke", "--rest-url", f"http://127.0.0.1:{closed_port}", "--model", "digits", "--timeout", "2"]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Traceback" not in err


def test_smoke_grpc_failure_is_reported(serving, capsys):
    _, rest, _ = serving
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    assert (
        main(
            [
                "smoke",
                "--rest-url",
                rest,
                "--grpc-target",
                f"127.0.0.1:{closed_port}",
                "--model",
                "digits",
                "-n",
                "1",
                "--timeout",
                "2",
            ]
        )
        == 1
    )
    assert "gRPC Predict" in capsys.readouterr().err


def test_smoke_grpc_wrong_dtype_and_shape(serving, capsys):
    fake, rest, grpc_target = serving
    fake.mutate_grpc_outputs = lambda out: {**out, "class_id": out["class_id"].astype("float32")}
    args = ["smoke", "--rest-url", rest, "--grpc-target", grpc_target, "--model", "digits", "-n", "2"]
    assert main(args) == 1
    assert "gRPC output 'class_id': dtype DT_FLOAT, expected DT_INT64" in capsys.readouterr().err
    fake.mutate_grpc_outputs = lambda out: {**out, "probabilities": out["probabilities"][:, :5]}
    assert main(args) == 1
    assert "gRPC output 'probabilities': shape [1, 5], expected [1, 10]" in capsys.readouterr().err
    assert fake.rest_predicts == 4  # REST passed both times; gRPC is what failed


def test_smoke_latency_budget(serving, capsys):
    _, rest, _ = serving
    assert (
        main(["smoke", "--rest-url", rest, "--model", "digits", "-n", "2", "--max-p99-ms", "0.000001"]) == 1
    )
    assert "exceeds --max-p99-ms" in capsys.readouterr().err


def test_percentiles_nearest_rank():
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50.0, 90.0, 99.0)
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_response_checker_single_output_and_columnar():
    sig = SignatureInfo(
        "s", "", {"x": TensorInfo("x", "DT_FLOAT", [-1, 2])}, {"y": TensorInfo("y", "DT_FLOAT", [-1, 3])}
    )
    assert check_rest_response(sig, 2, {"predictions": [[1, 2, 3], [4, 5.5, 6]]}) == []
    assert check_rest_response(sig, 2, {"predictions": [[1, 2, 3]]}) == ["expected 2 predictions, got 1"]
    assert "ragged" in check_rest_response(sig, 2, {"predictions": [[1, 2, 3], [4, 5]]})[0]
    assert "non-finite" in check_rest_response(sig, 1, {"predictions": [[1, float("nan"), 3]]})[0]
    col = SignatureInfo(
        "s", "", {"x": TensorInfo("x", "DT_STRING", [])}, {"y": TensorInfo("y", "DT_BOOL", [4])}
    )
    assert not col.row_format
    assert check_rest_response(col, 1, {"outputs": [True, False, True, True]}) == []
    assert "does not match dtype DT_BOOL" in check_rest_response(col, 1, {"outputs": [1, 0, 1, 1]})[0]
