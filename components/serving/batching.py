"""TF Serving's ``--batching_parameters_file``, with defaults from its batching tuning guide.

Format: text protobuf of ``BatchingParameters`` (``tensorflow_serving/servables/tensorflow/
session_bundle_config.proto``). The scheduler fields are ``Int64Value`` wrappers, written with
braces (``max_batch_size { value: 32 }``); ``max_batch_size: 32`` is rejected at startup. Tests parse
the output with a strict parser built from the proto's field list (``tests/tf_serving_protos.py``).
Guide: ``tensorflow_serving/batching/README.md``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

BATCHING_FILE = "batching.config"


@dataclass(frozen=True)
class BatchingConfig:
    """The batching knobs TF Serving reads; every request to a batching model goes through them."""

    max_batch_size: int
    batch_timeout_micros: int
    """How long a partial batch waits for more requests; 0 runs it as soon as a thread is free."""
    max_enqueued_batches: int
    """Queue length in batches; a full queue rejects requests (UNAVAILABLE) instead of queueing."""
    num_batch_threads: int
    allowed_batch_sizes: tuple[int, ...] = ()
    """Sizes batches are padded up to (fewer shapes to compile); empty allows any size."""
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        counts = {"max_batch_size": self.max_batch_size,
                  "max_enqueued_batches": self.max_enqueued_batches,
                  "num_batch_threads": self.num_batch_threads}
        for name, value in {**counts, "batch_timeout_micros": self.batch_timeout_micros}.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes:
            # TF Serving checks these when the model loads: a bad list fails every load, not the deploy.
            if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
                raise ValueError(f"allowed_batch_sizes must be integers >= 1, got {sizes}")
            if any(a >= b for a, b in zip(sizes, sizes[1:])):
                raise ValueError(f"allowed_batch_sizes must be strictly increasing, got {sizes}")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(f"the last allowed batch size ({sizes[-1]}) must equal "
                                 f"max_batch_size ({self.max_batch_size})")


_QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(m?)")


def cpu_cores(quantity: str) -> float:
    """Cores in a Kubernetes CPU quantity: ``"2"`` -> 2.0, ``"500m"`` -> 0.5, ``"1.5"`` -> 1.5."""
    match = _QUANTITY.fullmatch(str(quantity).strip())
    if not match:
        raise ValueError(f"not a CPU quantity (expected e.g. 2, 1.5 or 500m): {quantity!r}")
    return float(match.group(1)) / (1000 if match.group(2) else 1)


def default_batching(cpu: str, gpus: int) -> BatchingConfig:
    """Starting values for a pod with ``cpu`` (Kubernetes quantity) and ``gpus`` GPUs."""
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    # Guide: one batch thread per core; a fractional core still needs one thread.
    threads = max(1, math.ceil(cpu_cores(cpu)))
    return BatchingConfig(
        # A starting point only: the right size depends on the model and hardware; tune it by
        # measuring throughput and latency under load.
        max_batch_size=32,
        # Guide: start at 0 on CPU (no waiting; batches form from requests that queue anyway).
        # A GPU is wasted on tiny batches, so wait 1 ms, the low end of the guide's 1-10 ms range.
        batch_timeout_micros=1000 if gpus else 0,
        # Guide: behind a load balancer keep the queue about num_batch_threads long, so an
        # overloaded pod rejects quickly and the balancer retries elsewhere instead of queueing.
        max_enqueued_batches=threads,
        num_batch_threads=threads,
    )


def render_batching_parameters(cfg: BatchingConfig) -> str:
    """The ``--batching_parameters_file`` contents."""
    lines = [
        f"max_batch_size {{ value: {cfg.max_batch_size} }}",
        f"batch_timeout_micros {{ value: {cfg.batch_timeout_micros} }}",
        f"max_enqueued_batches {{ value: {cfg.max_enqueued_batches} }}",
        f"num_batch_threads {{ value: {cfg.num_batch_threads} }}",
    ]
    lines += [f"allowed_batch_sizes: {size}" for size in cfg.allowed_batch_sizes]
    lines.append(f"pad_variable_length_inputs: {'true' if cfg.pad_variable_length_inputs else 'false'}")
    return "\n".join(lines) + "\n"
