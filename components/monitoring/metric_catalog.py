"""Every Prometheus metric the platform's dashboards and alert rules may read, and where it comes from.

A typo in a metric name does not make PromQL fail: the query just returns nothing and the panel or
alert stays silently empty. The tests therefore extract every metric name from every dashboard
query and alert expression and look it up here with :func:`metric_exists`.

Each entry was checked against the exporter's source or documentation (cited in the comment beside
it); add a name only after checking it the same way.

TF Serving's exporter (``tensorflow_serving/util/prometheus_exporter.cc``, ``GetPrometheusMetricName``)
turns every character outside ``[a-zA-Z0-9_]`` of a TensorFlow monitoring name into ``:``, so
``/tensorflow/serving/request_count`` is scraped as ``:tensorflow:serving:request_count``. It
serialises every ``monitoring::Sampler`` as a Prometheus histogram (``SerializeHistogram``:
``NAME_bucket{le=...}``, ``NAME_sum``, ``NAME_count``) and counters/gauges as plain series.

Histograms are listed by their base name and also in :data:`HISTOGRAMS`: only their ``_bucket``,
``_sum`` and ``_count`` series exist, so :func:`metric_exists` accepts those and rejects the bare
base name (``rate(:tensorflow:serving:request_latency[5m])`` would return nothing).

Deliberately absent: ``/tensorflow/serving/batching/*`` (``processed_batch_size``, ``padding_size``,
``input_batch_size`` ... in tensorflow/tensorflow ``tensorflow/core/kernels/batching_util/
batch_resource_base.cc``). Those belong to the in-graph ``BatchFunction`` op; the server-side
batching this platform turns on (``--enable_batching``) is ``BatchingSession`` and reports under
``/tensorflow/serving/batching_session/`` instead (below). Several of the ``batching/`` ones are
also ``PercentileSampler``s, and the exporter writes only ``kHistogram`` values as histograms.
"""

from __future__ import annotations

TENSORFLOW_SERVING = "tensorflow-serving"
TENSORFLOW = "tensorflow"
DCGM_EXPORTER = "dcgm-exporter"
KUBE_STATE_METRICS = "kube-state-metrics"
CADVISOR = "cadvisor"
PROMETHEUS = "prometheus"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

KNOWN_METRICS: dict[str, str] = {
    # --- TF Serving: tensorflow/serving tensorflow_serving/servables/tensorflow/util.cc -----------
    # monitoring::Counter<2> "/tensorflow/serving/request_count", labels model_name, status (the gRPC
    # code name of the result, "OK" on success).
    ":tensorflow:serving:request_count": TENSORFLOW_SERVING,
    # monitoring::Sampler<3> "/tensorflow/serving/request_latency" (microseconds), labels model_name,
    # API, entrypoint; Buckets::Exponential(10, 1.8, 33).
    ":tensorflow:serving:request_latency": TENSORFLOW_SERVING,
    # monitoring::Sampler<3> "/tensorflow/serving/runtime_latency" (microseconds, time in the
    # TensorFlow runtime only), labels model_name, API, runtime; Buckets::Exponential(10, 1.8, 33).
    ":tensorflow:serving:runtime_latency": TENSORFLOW_SERVING,

    # --- TF Serving server-side batching (--enable_batching) ---------------------------------------
    # tensorflow/serving tensorflow_serving/batching/batching_util.h: RecordInputBatchSize,
    # RecordProcessedBatchSize and RecordPaddingSize<BatchingTask> create monitoring::Sampler metrics
    # "/tensorflow/serving/" + BatchingTask::Name() + "/input_batch_size" | "/processed_batch_size"
    # | "/padding_size" (Buckets::Exponential(1, 2, 14)); BatchingSessionTask::Name() is
    # "batching_session" (tensorflow_serving/batching/batching_session.h), and
    # tensorflow_serving/batching/batching_session.cc calls them from ComputeInputSize and
    # MergeInputTensors. No model_name label ("model name is not available as a session property").
    # Size of each request's input (0th dimension).
    ":tensorflow:serving:batching_session:input_batch_size": TENSORFLOW_SERVING,
    # Size of each executed batch after padding to an allowed_batch_sizes entry.
    ":tensorflow:serving:batching_session:processed_batch_size": TENSORFLOW_SERVING,
    # Padding rows added per batch; label execution_batch_size.
    ":tensorflow:serving:batching_session:padding_size": TENSORFLOW_SERVING,
    # tensorflow_serving/batching/batching_session.cc: monitoring::Sampler<1>
    # "/tensorflow/serving/batching_session/queuing_latency" (microseconds a task waits in the
    # batching queue), label thread_pool_name; Buckets::Exponential(100, 1.2, 52).
    ":tensorflow:serving:batching_session:queuing_latency": TENSORFLOW_SERVING,
    # tensorflow_serving/batching/batching_session.cc: monitoring::Counter<0>
    # "/tensorflow/serving/batching_session/wrapped_run_count" (one per batch run on the model).
    ":tensorflow:serving:batching_session:wrapped_run_count": TENSORFLOW_SERVING,

    # --- TensorFlow inside TF Serving: tensorflow/tensorflow tensorflow/cc/saved_model/loader.cc ---
    # monitoring::Counter<2> "/tensorflow/cc/saved_model/load_attempt_count", labels model_path
    # (the version directory, <base_path>/<version>) and status ("success" | "fail"), incremented by
    # LoadSavedModel, which TF Serving's SavedModel loader calls for every version it loads.
    ":tensorflow:cc:saved_model:load_attempt_count": TENSORFLOW,

    # --- NVIDIA dcgm-exporter: NVIDIA/dcgm-exporter etc/default-counters.csv -----------------------
    # (the chart's default counters; also in etc/dcp-metrics-included.csv). Labels gpu, UUID, device,
    # modelName, Hostname; with Kubernetes mapping also pod, namespace, container of the GPU's pod.
    "DCGM_FI_DEV_GPU_UTIL": DCGM_EXPORTER,  # gauge, "GPU utilization (in %)"
    "DCGM_FI_DEV_FB_USED": DCGM_EXPORTER,  # gauge, "Framebuffer memory used (in MiB)"
    "DCGM_FI_DEV_FB_FREE": DCGM_EXPORTER,  # gauge, "Framebuffer memory free (in MiB)"
    "DCGM_FI_DEV_POWER_USAGE": DCGM_EXPORTER,  # gauge, "Power draw (in W)"
    "DCGM_FI_DEV_GPU_TEMP": DCGM_EXPORTER,  # gauge, "GPU temperature (in C)"
    "DCGM_FI_DEV_XID_ERRORS": DCGM_EXPORTER,  # gauge, "Value of the last XID error encountered"

    # --- kube-state-metrics: kubernetes/kube-state-metrics docs/metrics/workload/*.md --------------
    # deployment-metrics.md (labels deployment, namespace)
    "kube_deployment_spec_replicas": KUBE_STATE_METRICS,
    "kube_deployment_status_replicas_available": KUBE_STATE_METRICS,
    # horizontalpodautoscaler-metrics.md (labels horizontalpodautoscaler, namespace)
    "kube_horizontalpodautoscaler_spec_max_replicas": KUBE_STATE_METRICS,
    "kube_horizontalpodautoscaler_spec_min_replicas": KUBE_STATE_METRICS,
    "kube_horizontalpodautoscaler_status_current_replicas": KUBE_STATE_METRICS,
    "kube_horizontalpodautoscaler_status_desired_replicas": KUBE_STATE_METRICS,
    # pod-metrics.md (labels container, pod, namespace; resource and unit for the limits)
    "kube_pod_container_status_restarts_total": KUBE_STATE_METRICS,
    "kube_pod_init_container_status_restarts_total": KUBE_STATE_METRICS,
    "kube_pod_container_resource_limits": KUBE_STATE_METRICS,
    "kube_pod_init_container_resource_limits": KUBE_STATE_METRICS,
    # pod-metrics.md, STABLE: 1 while the init container is in that state, else 0 (labels container,
    # pod, namespace, uid). The model-sync-init container is "running" while it waits for versions.
    "kube_pod_init_container_status_running": KUBE_STATE_METRICS,
    "kube_pod_init_container_status_waiting": KUBE_STATE_METRICS,

    # --- cAdvisor (scraped from the kubelet): google/cadvisor docs/storage/prometheus.md -----------
    "container_cpu_usage_seconds_total": CADVISOR,  # counter, seconds
    "container_memory_working_set_bytes": CADVISOR,  # gauge, bytes

    # --- Prometheus itself: docs "Jobs and instances", automatically generated series -------------
    "up": PROMETHEUS,  # 1 if the target's last scrape succeeded, 0 otherwise
}

HISTOGRAMS: frozenset[str] = frozenset({
    ":tensorflow:serving:request_latency",
    ":tensorflow:serving:runtime_latency",
    ":tensorflow:serving:batching_session:input_batch_size",
    ":tensorflow:serving:batching_session:processed_batch_size",
    ":tensorflow:serving:batching_session:padding_size",
    ":tensorflow:serving:batching_session:queuing_latency",
})
"""Base names in :data:`KNOWN_METRICS` that are classic histograms (only the suffixed series exist)."""


def metric_exists(name: str) -> bool:
    """Whether a series called ``name`` is exported by one of the catalogued sources.

    Plain metrics match exactly; a histogram matches as ``<base>_bucket``, ``<base>_sum`` or
    ``<base>_count`` but not as its bare base name.
    """
    if name in KNOWN_METRICS:
        return name not in HISTOGRAMS
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return True
    return False


def metric_source(name: str) -> str | None:
    """The source (``tensorflow-serving``, ``dcgm-exporter`` ...) of a series name, or None if unknown."""
    if not metric_exists(name):
        return None
    if name in KNOWN_METRICS:
        return KNOWN_METRICS[name]
    return next(KNOWN_METRICS[name[: -len(s)]] for s in HISTOGRAM_SUFFIXES
                if name.endswith(s) and name[: -len(s)] in HISTOGRAMS)


def series_names() -> set[str]:
    """Every concrete series name the catalogue allows (histograms expanded to their three series)."""
    names = {n for n in KNOWN_METRICS if n not in HISTOGRAMS}
    names |= {base + suffix for base in HISTOGRAMS for suffix in HISTOGRAM_SUFFIXES}
    return names
