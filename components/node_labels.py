"""Node labels, taint and resource names shared by every cloud's node pools and the pods on them."""

POOL_LABEL = "tfplatform.io/node-pool"
"""Every node carries its pool's stable name here; serving pods select their pool with it."""

GPU_RESOURCE = "nvidia.com/gpu"
"""The extended resource NVIDIA's device plugin advertises (GKE's and the EKS add-on's alike)."""
GPU_TAINT_KEY = "nvidia.com/gpu"
"""Taint key of GPU nodes (EKS pools here: ``=true``; GKE itself: ``=present``); GPU pods tolerate it."""
GPU_NODE_LABEL = "nvidia.com/gpu.present"
"""``true`` on GPU nodes; the device plugin and DCGM exporter select it (components/helm_values)."""
