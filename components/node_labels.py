"""Node labels, taint and resource names shared by every cloud's node pools and the pods on them."""

import hashlib
import re

POOL_LABEL = "tfplatform.io/node-pool"
"""Every node carries its pool's stable name here; serving pods select their pool with it."""

GPU_RESOURCE = "nvidia.com/gpu"
"""The extended resource NVIDIA's device plugin advertises (GKE's and the EKS add-on's alike)."""
GPU_TAINT_KEY = "nvidia.com/gpu"
"""Taint key of GPU nodes (EKS pools here: ``=true``; GKE itself: ``=present``); GPU pods tolerate it."""
MIG_PROFILE_LABEL = "tfplatform.io/mig-profile"
"""On EKS nodes whose GPUs are split into MIG partitions: the profile (``1g.5gb``). Pods need not select it
(they request ``nvidia.com/mig-<profile>``); the cost estimate reads it, and so can people."""
GPU_NODE_LABEL = "nvidia.com/gpu.present"
"""``true`` on GPU nodes; the device plugin and DCGM exporter select it (components/helm_values)."""


def name_slug(text: str) -> str:
    """``text`` reduced to what reads well in a Pulumi resource name (letters, digits, dashes).

    Not one-to-one (``team.name`` and ``team-name`` give the same slug): names built from slugs of
    several keys go through :func:`unique_slugs`.
    """
    return re.sub(r"[^a-zA-Z0-9-]+", "-", text).strip("-")


def unique_slugs(keys: list[str]) -> dict[str, str]:
    """A distinct, readable slug per key: :func:`name_slug`, plus a hash of the key for keys whose slugs
    coincide. Keys with a slug of their own keep it, so resources named from them keep their URNs;
    two resources of one name would be a duplicate URN, which the engine refuses."""
    slugs = {key: name_slug(key) for key in keys}
    counts: dict[str, int] = {}
    for slug in slugs.values():
        counts[slug] = counts.get(slug, 0) + 1
    taken = {slug for slug, n in counts.items() if n == 1}
    for key, slug in slugs.items():
        if counts[slug] > 1:
            candidate = f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
            while candidate in taken:  # a hash-suffixed slug that happens to equal another key's slug
                candidate = f"{candidate}-{hashlib.sha256(candidate.encode()).hexdigest()[:8]}"
            slugs[key] = candidate
            taken.add(candidate)
    return slugs
