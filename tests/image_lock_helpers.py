"""Plans made with a lock file of the test's choosing (tests/test_image_lock.py, tests/test_policy_pack.py).

The program reads ``stacks.images.LOCK_FILE`` when it runs (the mock engine runs it in this process), so
pointing that attribute at a fixture lock plans a stack as if the repository's lock held it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stacks import images
from stacks.mock_engine import Recording
from stacks.plan import plan_stack


def fake_digest(reference: str) -> str:
    """A well-formed digest, different for every image (no registry here)."""
    return "sha256:" + hashlib.sha256(reference.encode()).hexdigest()


def full_lock(stack: str) -> dict[str, str]:
    """A lock holding every image the stack renders, listed from its settings."""
    return {ref: fake_digest(ref) for ref in images.stack_images(images.load_stack_settings(stack))}


def plan_with_lock(stack: str, lock: dict[str, str] | str, tmp_path: Path) -> Recording:
    """Plan ``stack`` with ``lock`` (a map, or the file's raw text) as the image lock."""
    path = tmp_path / f"images-{stack}.lock.json"
    path.write_text(lock if isinstance(lock, str) else images.render_lock(lock))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images, "LOCK_FILE", path)
        return plan_stack(stack)


def container_images(recording: Recording) -> dict[tuple[str, str], tuple[str, str]]:
    """``(Deployment name, container name) -> (image, imagePullPolicy)`` of every Deployment."""
    found = {}
    for r in recording.resources:
        if r.inputs.get("kind") != "Deployment":
            continue
        spec = r.inputs["spec"]["template"]["spec"]
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
            found[(r.inputs["metadata"]["name"], c["name"])] = (c["image"], c.get("imagePullPolicy"))
    return found
