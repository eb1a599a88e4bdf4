"""Batching and monitoring files, parsed with strict parsers built from TF Serving's protos."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from components.serving.batching import (
    BatchingConfig,
    cpu_cores,
    default_batching,
    render_batching_parameters,
)
from components.serving.tfserving_config import METRICS_PATH, render_monitoring_config
from tests.tf_serving_protos import parse_batching, parse_monitoring


def config(**overrides) -> BatchingConfig:
    values = {"max_batch_size": 32, "batch_timeout_micros": 0, "max_enqueued_batches": 2,
              "num_batch_threads": 2, **overrides}
    return BatchingConfig(**values)


def test_rendered_defaults_parse_and_round_trip():
    cfg = default_batching("2", 0)
    parsed = parse_batching(render_batching_parameters(cfg))
    # Every scheduler field set explicitly (wrappers present), so TF Serving's own defaults never apply.
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        assert parsed.HasField(name), name
    assert parsed.max_batch_size.value == cfg.max_batch_size
    assert parsed.batch_timeout_micros.value == cfg.batch_timeout_micros
    assert parsed.max_enqueued_batches.value == cfg.max_enqueued_batches
    assert parsed.num_batch_threads.value == cfg.num_batch_threads
    assert list(parsed.allowed_batch_sizes) == [] and parsed.pad_variable_length_inputs is False


def test_allowed_sizes_and_padding_round_trip():
    cfg = config(max_batch_size=64, batch_timeout_micros=5000, allowed_batch_sizes=(8, 16, 64),
                 pad_variable_length_inputs=True)
    parsed = parse_batching(render_batching_parameters(cfg))
    assert list(parsed.allowed_batch_sizes) == [8, 16, 64]
    assert parsed.pad_variable_length_inputs is True
    assert parsed.batch_timeout_micros.value == 5000 and parsed.max_batch_size.value == 64


@pytest.mark.parametrize("text", [
    "max_batch_size: 32\n",                        # a wrapper written without braces
    "max_batch_size { value: 32 }\nbatch_size { value: 8 }\n",  # unknown field
    "num_batch_threads { value: 2.5 }\n",          # wrong type
    "allowed_batch_sizes { value: 8 }\n",          # a plain field written as a wrapper
])
def test_parser_is_strict(text):
    with pytest.raises(text_format.ParseError):
        parse_batching(text)


@pytest.mark.parametrize("overrides, message", [
    ({"allowed_batch_sizes": (8, 8, 32)}, "strictly increasing"),
    ({"allowed_batch_sizes": (16, 8, 32)}, "strictly increasing"),
    ({"allowed_batch_sizes": (8, 16)}, "must equal max_batch_size"),
    ({"allowed_batch_sizes": (0, 32)}, ">= 1"),
    ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
    ({"num_batch_threads": 0}, "num_batch_threads must be >= 1"),
    ({"max_enqueued_batches": -1}, "max_enqueued_batches must be >= 1"),
    ({"batch_timeout_micros": -1}, "batch_timeout_micros must be >= 0"),
    ({"max_batch_size": 32.0}, "must be an integer"),
])
def test_config_rejects_what_tf_serving_rejects(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_zero_timeout_and_matching_sizes_are_fine():
    assert config(batch_timeout_micros=0, allowed_batch_sizes=(32,)).allowed_batch_sizes == (32,)


@pytest.mark.parametrize("quantity, cores", [("2", 2.0), ("500m", 0.5), ("1.5", 1.5), ("1500m", 1.5),
                                             ("250m", 0.25), (" 4 ", 4.0)])
def test_cpu_cores(quantity, cores):
    assert cpu_cores(quantity) == cores


@pytest.mark.parametrize("quantity", ["", "m", "2 cores", "-1", "1Gi", "1.5.2"])
def test_cpu_cores_rejects_non_quantities(quantity):
    with pytest.raises(ValueError):
        cpu_cores(quantity)


@pytest.mark.parametrize("cpu, gpus, threads, timeout", [
    ("500m", 0, 1, 0),    # a fractional core still gets one thread
    ("2", 0, 2, 0),       # one thread per core; no waiting on CPU
    ("4", 1, 4, 1000),    # a GPU waits 1 ms to fill batches
    ("1500m", 0, 2, 0),
])
def test_default_batching_follows_the_tuning_guide(cpu, gpus, threads, timeout):
    cfg = default_batching(cpu, gpus)
    assert cfg == BatchingConfig(max_batch_size=32, batch_timeout_micros=timeout,
                                 max_enqueued_batches=threads, num_batch_threads=threads)


def test_default_batching_rejects_negative_gpus():
    with pytest.raises(ValueError):
        default_batching("1", -1)


def test_monitoring_config_parses_with_the_proto_fields():
    parsed = parse_monitoring(render_monitoring_config())
    assert parsed.HasField("prometheus_config")
    assert parsed.prometheus_config.enable is True
    assert parsed.prometheus_config.path == METRICS_PATH
    assert parse_monitoring(render_monitoring_config("/metrics")).prometheus_config.path == "/metrics"


def test_monitoring_parser_is_strict():
    with pytest.raises(text_format.ParseError):
        parse_monitoring(render_monitoring_config().replace("enable", "enabled"))
    with pytest.raises(text_format.ParseError):
        parse_monitoring("prometheus_config { enable: true port: 8501 }\n")
