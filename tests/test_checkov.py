"""checkov's Kubernetes checks on the rendered manifests of every stack, and the skip file.

The scan itself is ``stacks.scan`` (the ``stack_scan`` fixture in conftest.py, shared with
tests/test_scan.py, which also asserts that no check fails and none is skipped inline). checkov
runs from its own venv (``.venv-checkov``, made by ``scripts/ensure-tools.sh``). Skipped checks
live in ``.checkov.yaml`` only, each with its reason.
"""

from __future__ import annotations

import re

import yaml

from stacks.plan import ROOT
from stacks.scan import KUBERNETES

CONFIG = ROOT / ".checkov.yaml"
# checkov 3.3 runs about 88 checks on a Deployment (the TF Serving one passes 87): fewer passed
# than this means checkov did not really evaluate it.
MIN_PASSED_PER_DEPLOYMENT = 50


def test_checkov_evaluated_every_deployment(stack_scan):
    # Guard against a vacuous pass: each Deployment of the plan got a full set of checks.
    deployments = set()
    for path in sorted((stack_scan.workdir / "manifests").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                meta = doc["metadata"]
                deployments.add(f"Deployment.{meta.get('namespace', 'default')}.{meta['name']}")
    assert deployments, f"stack {stack_scan.stack}: the plan has no Deployment"
    passed = stack_scan.frameworks[KUBERNETES].passed_by_resource()
    for name in sorted(deployments):
        assert passed.get(name, 0) >= MIN_PASSED_PER_DEPLOYMENT, (
            f"stack {stack_scan.stack}: checkov passed only {passed.get(name, 0)} checks on {name} "
            f"(want >= {MIN_PASSED_PER_DEPLOYMENT}); passed per resource: {passed}")


def test_every_skip_is_documented():
    # .checkov.yaml is the one place for skips (Kubernetes checks and the cloud checks of the
    # Terraform-plan scan in stacks/scan.py), and each one says why (a comment naming the check).
    # `CKV_X_n:<regex>` skips a check only in the files whose path matches the regex.
    text = CONFIG.read_text()
    config = yaml.safe_load(text) or {}
    assert set(config) <= {"skip-check"}, f"unexpected keys in .checkov.yaml: {sorted(config)}"
    skips = config.get("skip-check") or []
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for entry in skips:
        check_id, _, pattern = entry.partition(":")
        assert re.fullmatch(r"CKV2?_(K8S|AWS|GCP)_\d+", check_id), \
            f"not a Kubernetes, AWS or GCP check id: {entry}"
        if pattern:
            re.compile(pattern)
        assert re.search(rf"#\s*{check_id}\b.*\S", comments), f"{check_id} is skipped without a reason"
