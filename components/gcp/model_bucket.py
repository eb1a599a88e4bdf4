"""Private, versioned GCS bucket for SavedModels, the one publisher service account that may change them,
and a read-only Workload Identity for serving."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from components.model_contract import DEFAULT_MODELS_PREFIX

WI_ANNOTATION = "iam.gke.io/gcp-service-account"
ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
"""A Google service account id: 6-30 characters, a lowercase letter first, no trailing dash."""
_SUFFIX = "-models"
_PUBLISH_SUFFIX = "-publish"
LIST_PREFIX = "storage.googleapis.com/objectListPrefix"
"""The IAM Conditions API attribute holding the ``prefix`` of an objects.list request (empty for other
bucket-level calls): https://cloud.google.com/iam/docs/conditions-attribute-reference#api-attributes"""
WORKLOAD_IDENTITY_MEMBER = ("principal://", "principalSet://")


def prefix_condition(bucket: str, prefix: str) -> str:
    """CEL: objects under ``prefix/``, and object listings asking only for names under ``prefix/``.

    A list call is authorized on the bucket (``resource.type`` Bucket, ``resource.name``
    ``projects/_/buckets/<b>``), so an unconditioned bucket branch would let the holder list every
    object name of the bucket; the list-prefix attribute limits it to the model prefix.
    """
    return (f'(resource.type == "storage.googleapis.com/Bucket" && '
            f'api.getAttribute("{LIST_PREFIX}", "").startsWith("{prefix}/")) || '
            f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{prefix}/")')


def model_reader_account_id(key: str) -> str:
    """The reader's service account id for ``key`` (a cluster name, or ``<project>-<stack>``).

    Account ids are unique per GCP project, so a fixed id makes two stacks in one project fight over
    one account: ``<key>-models`` when that is a valid id, else a readable prefix of the key and a
    hash of all of it (distinct keys give distinct ids).
    """
    return _account_id(key, _SUFFIX)


def model_publisher_account_id(key: str) -> str:
    """The publisher's service account id for ``key``: ``<key>-publish``, shortened as the reader's."""
    return _account_id(key, _PUBLISH_SUFFIX)


def _account_id(key: str, suffix: str) -> str:
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", key.lower())).strip("-")
    if slug and not slug[0].isalpha():
        slug = f"m-{slug}"
    plain = f"{slug}{suffix}"
    if slug == key and ACCOUNT_ID.match(plain):
        return plain
    digest = hashlib.sha256(key.encode()).hexdigest()[:6]
    head = slug[:30 - len(suffix) - len(digest) - 1].rstrip("-") or "m"
    return f"{head}-{digest}{suffix}"



def versioned_lifecycle_rules(noncurrent_version_days: int, abort_multipart_days: int = 7
                              ) -> list[gcp.storage.BucketLifecycleRuleArgs]:
    """Lifecycle of a versioned bucket: replaced or deleted versions go after ``noncurrent_version_days``,
    parts of unfinished multipart uploads after ``abort_multipart_days``."""
    return [
        gcp.storage.BucketLifecycleRuleArgs(
            action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
            condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                days_since_noncurrent_time=noncurrent_version_days, with_state="ARCHIVED")),
        gcp.storage.BucketLifecycleRuleArgs(
            action=gcp.storage.BucketLifecycleRuleActionArgs(type="AbortIncompleteMultipartUpload"),
            condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=abort_multipart_days))]

@dataclass(frozen=True)
class GcsModelBucketArgs:
    """Inputs of :class:`GcsModelBucket`."""

    project: str
    location: str
    """Region (or multi-region) of the bucket; the cluster's region keeps reads local and free."""
    noncurrent_version_days: int = 30
    """Days a replaced or deleted object version is kept before deletion."""
    kms_key: str = ""
    """Cloud KMS key for CMEK; empty: Google-managed encryption."""
    force_destroy: bool = False
    """Let ``pulumi destroy`` delete a non-empty bucket (dev only)."""
    protect: bool = False
    """Pulumi ``protect`` and ``retain_on_delete`` (prod)."""
    labels: dict[str, str] = field(default_factory=dict)


class GcsModelBucket(pulumi.ComponentResource):
    """The model store on GCS.

    Creates: a ``Bucket`` with uniform bucket-level access (no ACLs), public access prevention
    enforced, object versioning, lifecycle rules (noncurrent versions and stale multipart uploads
    expire), and with ``kms_key`` a ``CryptoKeyIAMMember`` letting the GCS service agent use the key
    for default CMEK encryption.
    """

    bucket_name: pulumi.Output[str]
    models_uri: pulumi.Output[str]

    def __init__(self, name: str, args: GcsModelBucketArgs, prefix: str = DEFAULT_MODELS_PREFIX,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:gcp:GcsModelBucket", name, None, opts)
        encryption, depends = None, []
        if args.kms_key:
            agent = gcp.storage.get_project_service_account_output(project=args.project)
            grant = gcp.kms.CryptoKeyIAMMember(
                f"{name}-cmek", crypto_key_id=args.kms_key, role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
                member=agent.member, opts=pulumi.ResourceOptions(parent=self))
            encryption, depends = gcp.storage.BucketEncryptionArgs(default_kms_key_name=args.kms_key), [grant]
        bucket = gcp.storage.Bucket(
            name, project=args.project, location=args.location, storage_class="STANDARD",
            uniform_bucket_level_access=True, public_access_prevention="enforced",
            versioning=gcp.storage.BucketVersioningArgs(enabled=True), encryption=encryption,
            lifecycle_rules=versioned_lifecycle_rules(args.noncurrent_version_days),
            force_destroy=args.force_destroy, labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect,
                                        depends_on=depends))
        self.bucket_name = bucket.name
        self.models_uri = bucket.name.apply(lambda b: f"gs://{b}/{prefix}")
        self.register_outputs({"bucket_name": self.bucket_name, "models_uri": self.models_uri})


@dataclass(frozen=True)
class GcsModelReaderArgs:
    """Inputs of :class:`GcsModelReader`."""

    project: str
    bucket_name: pulumi.Input[str]
    workload_pool: pulumi.Input[str]
    """``<project>.svc.id.goog``, taken from the cluster's output (not typed in) so the binding waits for
    the cluster: the pool does not exist before it (terraform-google-kubernetes-engine#916)."""
    namespace: str
    service_account: str
    """The Kubernetes service account the serving pods run as."""
    prefix: str = DEFAULT_MODELS_PREFIX
    cluster_name: str = ""
    """Names the service account (``<cluster>-models``); empty: ``<pulumi project>-<stack>`` does."""
    account_id: str = ""
    """The service account id; empty: :func:`model_reader_account_id` of ``cluster_name``."""


def _prefix_account(name: str, args, account_id_of, display_name: str, suffix: str, role: str, verb: str,
                    child: pulumi.ResourceOptions) -> gcp.serviceaccount.Account:
    """A service account holding ``role`` on the bucket under one IAM condition: objects (and list calls)
    under ``args.prefix/`` only. Shared by the reader and the publisher."""
    account_id = args.account_id or account_id_of(args.cluster_name or f"{pulumi.get_project()}-{pulumi.get_stack()}")
    if not ACCOUNT_ID.match(account_id):
        raise ValueError(f"account_id {account_id!r}: 6-30 characters [a-z][a-z0-9-]*[a-z0-9]")
    account = gcp.serviceaccount.Account(f"{name}-sa", project=args.project, account_id=account_id,
                                         display_name=display_name, opts=child)
    condition = pulumi.Output.from_input(args.bucket_name).apply(lambda b: gcp.storage.BucketIAMMemberConditionArgs(
        title=f"{args.prefix}-only", description=f"{verb} objects under {args.prefix}/ only",
        expression=prefix_condition(b, args.prefix)))
    gcp.storage.BucketIAMMember(f"{name}-{suffix}", bucket=args.bucket_name, role=role,
                                member=account.member, condition=condition, opts=child)
    return account


class GcsModelReader(pulumi.ComponentResource):
    """The serving identity on GCP.

    Creates: a Google ``ServiceAccount``, a ``BucketIAMMember`` granting it ``roles/storage.objectViewer``
    on the bucket under an IAM condition (listings of ``prefix/`` and objects under it only), and a ``IAMMember`` on the service account granting
    ``roles/iam.workloadIdentityUser`` to exactly ``<namespace>/<service_account>`` of the cluster.
    """

    email: pulumi.Output[str]
    service_account_annotations: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: GcsModelReaderArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:gcp:GcsModelReader", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = _prefix_account(name, args, model_reader_account_id, "TF Serving model reader",
                                   "read", "roles/storage.objectViewer", "list and read", child)
        gcp.serviceaccount.IAMMember(
            f"{name}-workload-identity", service_account_id=account.name, role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat("serviceAccount:", args.workload_pool,
                                        f"[{args.namespace}/{args.service_account}]"), opts=child)
        self.email = account.email
        self.service_account_annotations = account.email.apply(lambda e: {WI_ANNOTATION: e})
        self.register_outputs({"email": self.email})


@dataclass(frozen=True)
class GcsModelPublisherArgs:
    """Inputs of :class:`GcsModelPublisher`."""

    project: str
    bucket_name: pulumi.Input[str]
    prefix: str = DEFAULT_MODELS_PREFIX
    members: tuple[str, ...] = ()
    """Who may act as the publisher: ``user:``/``group:``/``serviceAccount:``/``domain:`` members get
    ``roles/iam.serviceAccountTokenCreator`` (``--impersonate-service-account``), Workload Identity
    Federation ``principal://``/``principalSet://`` members (a CI job) ``roles/iam.workloadIdentityUser``."""
    account_id: str = ""
    """The service account id; empty: :func:`model_publisher_account_id` of ``cluster_name``."""
    cluster_name: str = ""


class GcsModelPublisher(pulumi.ComponentResource):
    """The one identity given write access to the models on GCP.

    Creates: a Google ``ServiceAccount``, a ``BucketIAMMember`` granting it ``roles/storage.objectAdmin``
    under the same prefix condition as the reader, and per member an ``IAMMember`` on the account letting
    that member impersonate it. Nothing else gets a write role on the bucket from this stack; roles held
    at the project level (Owner, Editor, Storage Admin) still apply to every bucket of the project, which
    bucket IAM cannot take away (docs/deploy.md "Models in the bucket").
    """

    email: pulumi.Output[str]

    def __init__(self, name: str, args: GcsModelPublisherArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:gcp:GcsModelPublisher", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = _prefix_account(name, args, model_publisher_account_id, "Model publisher (model_tools publish)",
                                   "write", "roles/storage.objectAdmin", "write", child)
        for member in args.members:
            role = ("roles/iam.workloadIdentityUser" if member.startswith(WORKLOAD_IDENTITY_MEMBER)
                    else "roles/iam.serviceAccountTokenCreator")
            # Named after the member, not its position: removing one member leaves the others untouched.
            digest = hashlib.sha256(member.encode()).hexdigest()[:8]
            gcp.serviceaccount.IAMMember(f"{name}-member-{digest}", service_account_id=account.name, role=role,
                                         member=member, opts=child)
        self.email = account.email
        self.register_outputs({"email": self.email})
