"""Strict parsers for the TF Serving config messages that ``tensorflow-serving-api`` does not ship.

The package has ``model_server_config_pb2`` but neither ``BatchingParameters``
(``servables/tensorflow/session_bundle_config.proto``) nor ``MonitoringConfig``
(``config/monitoring_config.proto``). Both are built here at runtime from their field lists, without
protoc, so ``text_format.Parse`` checks our files the way TF Serving does: unknown fields, wrong
types and wrappers written without braces are errors. Field names and types follow the upstream
protos; text format matches by name, so the numbers only matter for binary encoding.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

# Our own package and pool: never clashes with real tensorflow_serving protos a test may import.
PACKAGE = "tfplatform.test.serving"

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False) -> _F:
    field = _F(name=name, number=number, type=kind,
               label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:  # set only for message fields: an empty type_name on a scalar is an error
        field.type_name = type_name
    return field


def _wrapper(name: str, number: int, wrapper: str) -> _F:
    return _field(name, number, _F.TYPE_MESSAGE, f".google.protobuf.{wrapper}")


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="tfplatform/test/serving/tf_serving_configs.proto", package=PACKAGE, syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    file.message_type.add(name="BatchingParameters", field=[
        _wrapper("max_batch_size", 1, "Int64Value"),
        _wrapper("batch_timeout_micros", 2, "Int64Value"),
        _wrapper("max_enqueued_batches", 3, "Int64Value"),
        _wrapper("num_batch_threads", 4, "Int64Value"),
        _wrapper("thread_pool_name", 5, "StringValue"),
        _field("allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True),
        _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
        _wrapper("enable_large_batch_splitting", 9, "BoolValue"),
        _wrapper("max_execution_batch_size", 10, "Int64Value"),
    ])
    file.message_type.add(name="PrometheusConfig", field=[
        _field("enable", 1, _F.TYPE_BOOL),
        _field("path", 2, _F.TYPE_STRING),
    ])
    file.message_type.add(name="MonitoringConfig", field=[
        _field("prometheus_config", 1, _F.TYPE_MESSAGE, f".{PACKAGE}.PrometheusConfig"),
    ])
    return file


_pool = descriptor_pool.DescriptorPool()
_pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
_pool.Add(_build_file())


def _message_class(name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


BatchingParameters = _message_class("BatchingParameters")
MonitoringConfig = _message_class("MonitoringConfig")


def parse_batching(text: str):
    """``--batching_parameters_file`` text -> ``BatchingParameters``; raises ``text_format.ParseError``."""
    return text_format.Parse(text, BatchingParameters())


def parse_monitoring(text: str):
    """``--monitoring_config_file`` text -> ``MonitoringConfig``; raises ``text_format.ParseError``."""
    return text_format.Parse(text, MonitoringConfig())
