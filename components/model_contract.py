"""The contract between the model tooling (``model_tools``) and the serving sync container.

Both sides import these names, so a publisher and a reader can never disagree on the layout.
This module has no dependencies: the model tooling imports it without Pulumi installed.

Layout of a model bucket::

    <scheme>://<bucket>/<prefix>/<model>/<version>/saved_model.pb
    <scheme>://<bucket>/<prefix>/<model>/<version>/variables/...
    <scheme>://<bucket>/<prefix>/<model>/<version>/_COMPLETE      <- written last

A version directory is *published* only once ``_COMPLETE`` exists in it. The sync container
copies published versions only, so TF Serving never sees half an upload.
"""

COMPLETION_MARKER = "_COMPLETE"
"""Object name written last into ``<prefix>/<model>/<version>/`` when a version is fully uploaded."""

DEFAULT_MODELS_PREFIX = "models"
"""Key prefix under which models live in the bucket (config key ``modelBucketPrefix``)."""

MODEL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
"""Allowed model names: usable in a URL path, a bucket key and a Kubernetes label value."""

VERSION_LABEL_PATTERN = r"^[a-zA-Z0-9_]+$"
"""TF Serving's rule for version label names (model_server_config.proto)."""
