"""tflite: conversion with dynamic-range and float16 quantization, accuracy vs the SavedModel."""

from __future__ import annotations

import pytest

from model_tools.cli import main
from model_tools.edge import export_tflite


@pytest.mark.parametrize("quantization", ["dynamic", "float16"])
def test_tflite_size_and_accuracy(exported_model, tmp_path, quantization):
    out = tmp_path / f"digits-{quantization}.tflite"
    result = export_tflite(exported_model.path, str(out), quantization=quantization, log=lambda *a: None)
    data = out.read_bytes()
    assert data[4:8] == b"TFL3"  # the TFLite flatbuffer identifier
    assert result.size_bytes == len(data) < exported_model.size_bytes
    assert result.saved_model_accuracy == pytest.approx(exported_model.accuracy)
    assert result.tflite_accuracy > exported_model.accuracy - 0.02


def test_dynamic_range_is_smaller_than_unquantized(exported_model, tmp_path):
    plain = export_tflite(
        exported_model.path,
        str(tmp_path / "plain.tflite"),
        quantization="none",
        evaluate=False,
        log=lambda *a: None,
    )
    dynamic = export_tflite(
        exported_model.path,
        str(tmp_path / "dyn.tflite"),
        quantization="dynamic",
        evaluate=False,
        log=lambda *a: None,
    )
    assert dynamic.size_bytes < plain.size_bytes
    assert plain.tflite_accuracy is None


def test_tflite_cli_reports_and_refuses_missing_model(exported_model, tmp_path, capsys):
    assert main(["tflite", exported_model.path, "--out", str(tmp_path / "m.tflite")]) == 0
    out = capsys.readouterr().out
    assert "dynamic quantization" in out and "held-out accuracy: TFLite" in out
    assert main(["tflite", str(tmp_path / "missing"), "--out", str(tmp_path / "x.tflite")]) == 2
    assert "does not exist" in capsys.readouterr().err
