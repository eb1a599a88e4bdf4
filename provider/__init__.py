"""The platform's public components as a Pulumi component package (``tfplatform``) for every language.

Each module holds thin wrappers whose args the Python component provider host can infer a schema from
(``pulumi/provider/experimental/analyzer.py``: TypedDicts of plain types or ``pulumi.Input`` of them, a
docstring after every field); each wrapper builds the existing components from ``components/``. No module
here uses ``from __future__ import annotations``: the analyzer reads ``inspect.get_annotations`` without
evaluating strings, so postponed annotations would reach it as bare strings.
"""

from provider.buckets import ModelBucket, ModelReader
from provider.gcs_buckets import GcsModelBucket, GcsModelPublisher, GcsModelReader
from provider.platforms import EksPlatform, GkePlatform
from provider.scale_to_zero import Keda
from provider.shared import PACKAGE
from provider.workloads import ServingMonitoring, TfServing

VERSION = "0.1.0"
"""The package version SDKs are generated with (the project's, pyproject.toml)."""

COMPONENTS = [EksPlatform, GkePlatform, ModelBucket, ModelReader, GcsModelBucket, GcsModelReader, GcsModelPublisher,
              Keda, TfServing, ServingMonitoring]
"""Every component the package offers, in the order the schema lists them."""

__all__ = ["COMPONENTS", "PACKAGE", "VERSION", "EksPlatform", "GcsModelBucket", "GcsModelPublisher", "GcsModelReader",
           "GkePlatform", "Keda", "ModelBucket", "ModelReader", "ServingMonitoring", "TfServing"]
