"""Cloud-agnostic TF Serving on Kubernetes: model server, autoscaling, network policy."""
