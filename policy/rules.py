"""The policies of the ``tfserving-platform-policies`` pack (``policy/__main__.py`` only assembles them).

Every ``validate`` works on what the Pulumi engine hands a policy pack: ``args.resource_type`` (the type
token, e.g. ``kubernetes:apps/v1:Deployment``) and ``args.props``, the resource's properties in wire
form: camelCase keys, numbers as floats, wrapped by pulumi_policy in read-only ``Mapping`` /
``Sequence`` proxies (not ``dict`` / ``list``) that raise ``UnknownValueError`` on a value unknown
during preview. So nothing here tests ``isinstance(x, dict)``, and quantities are compared after
normalising ``1.0`` and ``"1"`` alike.

This module imports nothing of the project: the CLI runs the pack in its own virtualenv
(``policy/venv``, from ``policy/requirements.txt``), with this directory first on ``sys.path``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

PROJECT = "tfserving-platform"
PROTECT_CONFIG_KEY = f"{PROJECT}:protect"
PROTECTED_STACKS = frozenset({"prod"})

GPU = "nvidia.com/gpu"
TF_SERVING = "tensorflow/serving"
GPU_TAG_MARK = "-gpu"

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}
NAMESPACE_TYPE = "kubernetes:core/v1:Namespace"
NETWORK_POLICY_TYPE = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
RESTRICTED_LABEL = "pod-security.kubernetes.io/enforce"

S3_BUCKET_TYPES = frozenset({"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"})
S3_PUBLIC_ACCESS_BLOCK_TYPE = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
S3_SSE_TYPES = frozenset({
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
})
PUBLIC_ACCESS_BLOCK_FLAGS = (
    "blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
GCS_BUCKET_TYPE = "gcp:storage/bucket:Bucket"
CLUSTER_TYPES = frozenset({"aws:eks/cluster:Cluster", "gcp:container/cluster:Cluster"})
DATA_TYPES = CLUSTER_TYPES | S3_BUCKET_TYPES | {GCS_BUCKET_TYPE}


# --- reading wire-form props ---------------------------------------------------------------------

def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else ()


def _path(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _quantity(value: Any) -> str | None:
    """A resource quantity as text: ``1``, ``1.0`` and ``"1"`` compare equal; unset and "0" are None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return None if text in ("", "0") else text


class Image(NamedTuple):
    repository: str
    tag: str | None
    digest: str | None


def parse_image(image: str) -> Image:
    """``registry:5000/org/repo:tag@sha256:...`` -> (``registry:5000/org/repo``, ``tag``, ``sha256:...``)."""
    name, _, digest = image.strip().partition("@")
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:  # a colon before the last slash is a registry port
        name, tag = name.rsplit(":", 1)
    return Image(name, tag or None, digest or None)


def is_tf_serving(image: Image) -> bool:
    """``tensorflow/serving`` on Docker Hub, or a mirror keeping its path (``<host>/tensorflow/serving``)."""
    return image.repository == TF_SERVING or image.repository.endswith("/" + TF_SERVING)


SERVER_PROGRAMS = ("tensorflow_model_server", "tf_serving_entrypoint")
"""The server binary, and the image's entrypoint script that starts it (tools/docker/Dockerfile*)."""


def runs_model_server(container: Mapping[str, Any]) -> bool:
    """Whether a TF Serving container starts the server: with no ``command`` the image's entrypoint does; a
    ``command`` does when it (or its arguments) names the binary. A container that only holds the image
    (components/serving/image_prepull.py: ``/bin/sh -c 'sleep ...'``) uses no GPU."""
    command = [str(part) for part in _seq(container.get("command"))]
    if not command:
        return True
    words = command + [str(part) for part in _seq(container.get("args"))]
    return any(program in word for word in words for program in SERVER_PROGRAMS)


def _kind(resource_type: str) -> str:
    return resource_type.rsplit(":", 1)[-1]


def _describe(resource_type: str, name: str, props: Mapping[str, Any]) -> str:
    """``Deployment serving/tfserving-default (Pulumi resource tfserving-default-deployment)``."""
    meta = _map(props.get("metadata"))
    namespace, object_name = meta.get("namespace"), meta.get("name")
    if object_name:
        where = f"{namespace}/{object_name}" if namespace else str(object_name)
        return f"{_kind(resource_type)} {where} (Pulumi resource {name})"
    return f"{_kind(resource_type)} {name}"


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    path = POD_SPEC_PATHS.get(resource_type)
    if path is None:
        return None
    spec = _path(props, *path)
    return spec if isinstance(spec, Mapping) else None


def containers(spec: Mapping[str, Any], kinds: tuple[str, ...] = ("initContainers", "containers")
               ) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(field, container)`` for every container of a pod spec (native sidecars are initContainers)."""
    for field in kinds:
        for container in _seq(spec.get(field)):
            if isinstance(container, Mapping):
                yield field, container


def _container_label(field: str, container: Mapping[str, Any]) -> str:
    return f"{'init container' if field == 'initContainers' else 'container'} {container.get('name')!r}"


# --- 1. gpu-workloads-consistent -----------------------------------------------------------------

def tolerates_gpu(spec: Mapping[str, Any]) -> bool:
    """True when a toleration matches the ``nvidia.com/gpu`` NoSchedule taint of GPU nodes.

    EKS node groups here taint ``nvidia.com/gpu=true``, GKE taints ``nvidia.com/gpu=present``:
    ``Exists`` or ``Equal`` with any value, effect ``NoSchedule`` or empty (all effects). An empty key
    with ``Exists`` tolerates every taint, so it counts too.
    """
    for toleration in _seq(spec.get("tolerations")):
        toleration = _map(toleration)
        key = toleration.get("key") or ""
        operator = toleration.get("operator") or "Equal"  # the Kubernetes default
        if (toleration.get("effect") or "") not in ("", "NoSchedule"):
            continue
        if (operator == "Exists" and key in ("", GPU)) or (operator == "Equal" and key == GPU):
            return True
    return False


def validate_gpu_workloads(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    who = _describe(args.resource_type, args.name, args.props)
    gpu_users = []
    for field, container in containers(spec):
        label = _container_label(field, container)
        resources = _map(container.get("resources"))
        requested = _quantity(_map(resources.get("requests")).get(GPU))
        limited = _quantity(_map(resources.get("limits")).get(GPU))
        image_ref = container.get("image")
        image = parse_image(image_ref) if isinstance(image_ref, str) else None
        tf_serving = image is not None and is_tf_serving(image)
        gpu_image = tf_serving and GPU_TAG_MARK in (image.tag or "")
        if requested is None and limited is None:
            if gpu_image and runs_model_server(container):
                report_violation(
                    f"{who}: {label} runs the GPU image {image_ref} but requests no {GPU}: it would run "
                    f"without a GPU (or on a CPU node). Request {GPU} (requests = limits) or use the CPU "
                    "image (tag without -gpu).")
            continue
        gpu_users.append(label)
        if requested != limited:
            report_violation(
                f"{who}: {label} has {GPU} requests {requested or 'unset'} but limits {limited or 'unset'}: "
                "an extended resource cannot be overcommitted, set requests equal to limits.")
        if tf_serving and not gpu_image:
            shown = f"tag {image.tag!r}" if image.tag else f"digest {image.digest} without a tag"
            report_violation(
                f"{who}: {label} requests {GPU} but runs TF Serving image {image_ref} ({shown}): the CPU "
                "build never uses the GPU. Use tensorflow/serving:<version>-gpu (pin a digest as "
                "<version>-gpu@sha256:..., so the flavour stays visible).")
    if gpu_users and not tolerates_gpu(spec):
        report_violation(
            f"{who}: {', '.join(gpu_users)} request(s) {GPU} but the pod does not tolerate the {GPU} "
            "NoSchedule taint GPU nodes carry, so it stays Pending. Add a toleration "
            f"{{key: {GPU}, operator: Exists, effect: NoSchedule}}.")


# --- 2. no-latest-image-tags ---------------------------------------------------------------------

def is_floating_latest(tag: str) -> bool:
    """``latest`` and its flavours (``latest-gpu``, ``latest-devel`` on tensorflow/serving) move."""
    tag = tag.lower()
    return tag == "latest" or tag.startswith("latest-")


def validate_image_tags(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    who = _describe(args.resource_type, args.name, args.props)
    for field, container in containers(spec, ("initContainers", "containers", "ephemeralContainers")):
        label = _container_label(field, container)
        image_ref = container.get("image")
        if not isinstance(image_ref, str) or not image_ref.strip():
            report_violation(f"{who}: {label} has no image.")
            continue
        image = parse_image(image_ref)
        if image.tag is None and image.digest is None:
            report_violation(f"{who}: {label} image {image_ref} has neither tag nor digest, so it pulls "
                             "'latest': pin a version tag or a digest.")
        elif image.tag is not None and is_floating_latest(image.tag):
            report_violation(f"{who}: {label} image {image_ref} uses the tag {image.tag!r}, which moves: pin "
                             "a version tag or a digest.")


# --- 3. resources-requests-and-limits ------------------------------------------------------------

REQUIRED_RESOURCES = (("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory"))


def validate_resources(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    who = _describe(args.resource_type, args.name, args.props)
    for field, container in containers(spec):
        resources = _map(container.get("resources"))
        missing = [f"{section}.{name}" for section, name in REQUIRED_RESOURCES
                   if _quantity(_map(resources.get(section)).get(name)) is None]
        if missing:
            report_violation(
                f"{who}: {_container_label(field, container)} has no resources {', '.join(missing)}: every "
                "container needs cpu and memory requests (scheduling) and limits (a runaway model load "
                "must not starve the node).")


# --- stack helpers -------------------------------------------------------------------------------

def _of_type(resources: Sequence[PolicyResource], types: frozenset[str] | set[str] | str
             ) -> list[PolicyResource]:
    types = {types} if isinstance(types, str) else types
    return [r for r in resources if r.resource_type in types]


def stack_of(urn: str | None) -> str | None:
    """The stack of a URN (``urn:pulumi:<stack>::<project>::...``), or None."""
    head = (urn or "").split("::", 1)[0]
    return head[len("urn:pulumi:"):] if head.startswith("urn:pulumi:") else None


def stack_name(resources: Sequence[PolicyResource]) -> str | None:
    """From any URN (``urn:pulumi:<stack>::<project>::...``), else the CLI's ``PULUMI_STACK``.

    StackValidationArgs carries no stack name; the URN always does, in previews too.
    """
    for resource in resources:
        stack = stack_of(resource.urn)
        if stack is not None:
            return stack
    return os.environ.get("PULUMI_STACK")


def protect_configured() -> bool:
    """``tfserving-platform:protect`` of the stack being previewed.

    The CLI passes the stack's config to the pack process as ``PULUMI_CONFIG`` (a JSON object of
    strings); pulumi_policy 1.21's ``ConfigureStack`` keeps only the stack tags. Read from the
    environment, not ``pulumi.Config``: in tests the Pulumi SDK's in-memory config belongs to
    whichever program ran last on the mock engine.
    """
    try:
        config = json.loads(os.environ.get("PULUMI_CONFIG") or "{}")
    except ValueError:
        return False
    value = config.get(PROTECT_CONFIG_KEY) if isinstance(config, dict) else None
    return str(value).strip().lower() == "true"


# --- 4. serving-namespace-default-deny -----------------------------------------------------------

def _selects_all(selector: Any) -> bool:
    return isinstance(selector, Mapping) and not _seq(selector.get("matchExpressions")) \
        and not _map(selector.get("matchLabels"))


def is_default_deny(props: Mapping[str, Any]) -> bool:
    """Empty podSelector, both policy types, and no allow rule at all."""
    spec = _map(props.get("spec"))
    return (_selects_all(spec.get("podSelector"))
            and {"Ingress", "Egress"} <= set(_seq(spec.get("policyTypes")))
            and not _seq(spec.get("ingress")) and not _seq(spec.get("egress")))


def _namespace_of(props: Mapping[str, Any]) -> str:
    return _map(props.get("metadata")).get("namespace") or "default"


def validate_default_deny(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = args.resources
    workloads = [r for r in resources if r.resource_type in POD_SPEC_PATHS]
    deny_in = {_namespace_of(r.props) for r in _of_type(resources, NETWORK_POLICY_TYPE)
               if is_default_deny(r.props)}
    for namespace in _of_type(resources, NAMESPACE_TYPE):
        meta = _map(namespace.props.get("metadata"))
        if _map(meta.get("labels")).get(RESTRICTED_LABEL) != "restricted":
            continue
        ns_name = meta.get("name") or namespace.name
        inside = [w for w in workloads if _namespace_of(w.props) == ns_name]
        if inside and ns_name not in deny_in:
            names = ", ".join(_describe(w.resource_type, w.name, w.props) for w in inside)
            report_violation(
                f"Namespace {ns_name} (Pulumi resource {namespace.name}) is restricted and runs {names}, but "
                "has no default-deny NetworkPolicy (podSelector {}, policyTypes [Ingress, Egress], no "
                "rules): every pod there accepts and opens any connection not denied elsewhere.",
                namespace.urn)


# --- 5. buckets-private-and-encrypted ------------------------------------------------------------

def _bucket_identifiers(bucket: PolicyResource) -> set[str]:
    """What another resource's ``bucket`` property may hold: its id or name (outputs, once known)."""
    return {v for v in (bucket.props.get("id"), bucket.props.get("bucket")) if isinstance(v, str) and v}


def buckets_referenced(resource: PolicyResource, buckets: Sequence[PolicyResource]) -> set[str]:
    """URNs of the buckets ``resource.props["bucket"]`` points at.

    1. ``property_dependencies["bucket"]``: what the engine sends, and known in previews too;
    2. the value against each bucket's ``id`` / ``bucket`` outputs (a plain bucket name);
    3. the one bucket among the resource's dependencies: all a recording holds (the mock engine records
       the flat ``dependencies`` list, and the bucket's id is an output it does not keep).
    """
    urns = {b.urn for b in buckets}
    by_property = {d.urn for d in resource.property_dependencies.get("bucket", []) if d.urn in urns}
    if by_property:
        return by_property
    reference = resource.props.get("bucket")
    by_value = {b.urn for b in buckets if isinstance(reference, str) and reference in _bucket_identifiers(b)}
    if by_value:
        return by_value
    by_dependency = {d.urn for d in resource.dependencies if d.urn in urns}
    return by_dependency if len(by_dependency) == 1 else set()


def _encrypts(sse: PolicyResource) -> bool:
    rules = list(_seq(sse.props.get("rules"))) + list(_seq(sse.props.get("rule")))
    return any(_path(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm") for rule in rules)


def validate_buckets(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = args.resources
    s3_buckets = _of_type(resources, S3_BUCKET_TYPES)
    blocked: set[str] = set()
    for block in _of_type(resources, S3_PUBLIC_ACCESS_BLOCK_TYPE):
        if all(block.props.get(flag) is True for flag in PUBLIC_ACCESS_BLOCK_FLAGS):
            blocked |= buckets_referenced(block, s3_buckets)
    encrypted: set[str] = set()
    for sse in _of_type(resources, S3_SSE_TYPES):
        if _encrypts(sse):
            encrypted |= buckets_referenced(sse, s3_buckets)
    for bucket in s3_buckets:
        if bucket.urn not in blocked:
            report_violation(
                f"S3 bucket {bucket.name} has no BucketPublicAccessBlock with "
                f"{', '.join(PUBLIC_ACCESS_BLOCK_FLAGS)} "
                "all true: a later ACL or bucket policy could make the models public.", bucket.urn)
        if bucket.urn not in encrypted:
            report_violation(
                f"S3 bucket {bucket.name} has no BucketServerSideEncryptionConfiguration with a default "
                "encryption rule (sseAlgorithm): state the encryption (aws:kms with the bucket key).",
                bucket.urn)
    for bucket in _of_type(resources, GCS_BUCKET_TYPE):
        problems = []
        if bucket.props.get("uniformBucketLevelAccess") is not True:
            problems.append("uniformBucketLevelAccess is not true (object ACLs could grant access)")
        if bucket.props.get("publicAccessPrevention") != "enforced":
            problems.append(f"publicAccessPrevention is {bucket.props.get('publicAccessPrevention')!r}, "
                            "not 'enforced'")
        if problems:
            report_violation(f"GCS bucket {bucket.name}: {'; '.join(problems)}.", bucket.urn)


# --- 6. prod-protects-data -----------------------------------------------------------------------

def validate_protection(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    stack = stack_name(args.resources)
    if stack not in PROTECTED_STACKS and not protect_configured():
        return
    reason = f"stack {stack}" if stack in PROTECTED_STACKS else f"{PROTECT_CONFIG_KEY} is true"
    for resource in _of_type(args.resources, DATA_TYPES):
        if not resource.opts.protect:
            report_violation(
                f"{_kind(resource.resource_type)} {resource.name} ({resource.resource_type}) is not "
                f"protected ({reason}): set ResourceOptions(protect=True) so no `pulumi destroy` or "
                "replacement deletes the cluster or the models.", resource.urn)


# --- 7. prod-images-pinned-by-digest (advisory) -------------------------------------------------

LOCK_FILE = "images.lock.json"


def validate_image_digests(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """In prod (or with protect true), a container image without ``@sha256:`` is a warning: its tag can be
    moved at the registry, so two pods of one Deployment may run different builds."""
    stack = stack_of(args.urn) or os.environ.get("PULUMI_STACK")
    if stack not in PROTECTED_STACKS and not protect_configured():
        return
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    who = _describe(args.resource_type, args.name, args.props)
    reason = f"stack {stack}" if stack in PROTECTED_STACKS else f"{PROTECT_CONFIG_KEY} is true"
    for field, container in containers(spec, ("initContainers", "containers", "ephemeralContainers")):
        image_ref = container.get("image")
        if not isinstance(image_ref, str) or not image_ref.strip():
            continue  # no-latest-image-tags reports it
        if parse_image(image_ref).digest is None:
            report_violation(
                f"{who}: {_container_label(field, container)} image {image_ref} has no digest ({reason}): "
                "the tag can be moved at the registry, so pods of one rollout may run different builds. "
                f"Fill {LOCK_FILE} (the image-digests workflow, docs/images.md) to render <tag>@sha256:...")


# --- the policies --------------------------------------------------------------------------------

gpu_workloads_consistent = ResourceValidationPolicy(
    name="gpu-workloads-consistent",
    description="A container requesting nvidia.com/gpu runs the tensorflow/serving -gpu image, tolerates the "
                "GPU taint and has GPU requests = limits; a -gpu TF Serving image that runs the server "
                "requests a GPU.",
    validate=validate_gpu_workloads,
    severity=Severity.HIGH,
)

no_latest_image_tags = ResourceValidationPolicy(
    name="no-latest-image-tags",
    description="Every container image is pinned by a digest or a tag other than 'latest' (or 'latest-*').",
    validate=validate_image_tags,
    severity=Severity.MEDIUM,
)

resources_requests_and_limits = ResourceValidationPolicy(
    name="resources-requests-and-limits",
    description="Every container and init container sets cpu and memory requests and limits.",
    validate=validate_resources,
    severity=Severity.MEDIUM,
)

serving_namespace_default_deny = StackValidationPolicy(
    name="serving-namespace-default-deny",
    description="A Pod Security 'restricted' namespace running workloads has a default-deny NetworkPolicy "
                "(empty podSelector, Ingress and Egress, no rules).",
    validate=validate_default_deny,
    severity=Severity.HIGH,
)

buckets_private_and_encrypted = StackValidationPolicy(
    name="buckets-private-and-encrypted",
    description="S3 buckets have a full BucketPublicAccessBlock and default encryption; GCS buckets have "
                "uniform bucket-level access and enforced public access prevention.",
    validate=validate_buckets,
    severity=Severity.CRITICAL,
)

prod_protects_data = StackValidationPolicy(
    name="prod-protects-data",
    description="In the prod stack (or with tfserving-platform:protect true) EKS/GKE clusters and model "
                "buckets are protected (Pulumi protect).",
    validate=validate_protection,
    severity=Severity.HIGH,
)

prod_images_pinned_by_digest = ResourceValidationPolicy(
    name="prod-images-pinned-by-digest",
    description="In the prod stack (or with tfserving-platform:protect true) every container image carries "
                "a digest (@sha256:...); a warning, not a failure, until images.lock.json is filled.",
    validate=validate_image_digests,
    # A warning: the stacks render tags until the image-digests workflow has filled the lock (issue 13:
    # "prod without digests is a policy-pack warning"). The pack's MANDATORY applies to the others.
    enforcement_level=EnforcementLevel.ADVISORY,
    severity=Severity.LOW,
)

POLICIES = [
    gpu_workloads_consistent,
    no_latest_image_tags,
    resources_requests_and_limits,
    serving_namespace_default_deny,
    buckets_private_and_encrypted,
    prod_protects_data,
    prod_images_pinned_by_digest,
]
