"""Model lifecycle tooling: export, inspect, publish, promote, smoke-test and edge-export models.

Run ``python -m model_tools --help``. Nothing here imports Pulumi; TensorFlow is imported only
by the subcommands that need it (export, inspect, tflite, and smoke's gRPC check).
"""

__version__ = "0.1.0"
