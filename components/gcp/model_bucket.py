"""Private, versioned GCS bucket for SavedModels, and a read-only Workload Identity for serving."""

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


def model_reader_account_id(key: str) -> str:
    """The reader's service account id for ``key`` (a cluster name, or ``<project>-<stack>``).

    Account ids are unique per GCP project, so a fixed id makes two stacks in one project fight over
    one account: ``<key>-models`` when that is a valid id, else a readable prefix of the key and a
    hash of all of it (distinct keys give distinct ids).
    """
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", key.lower())).strip("-")
    if slug and not slug[0].isalpha():
        slug = f"m-{slug}"
    plain = f"{slug}{_SUFFIX}"
    if slug == key and ACCOUNT_ID.match(plain):
        return plain
    digest = hashlib.sha256(key.encode()).hexdigest()[:6]
    head = slug[:30 - len(_SUFFIX) - len(digest) - 1].rstrip("-") or "m"
    return f"{head}-{digest}{_SUFFIX}"


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
            lifecycle_rules=[
                gcp.storage.BucketLifecycleRuleArgs(
                    action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                        days_since_noncurrent_time=args.noncurrent_version_days, with_state="ARCHIVED")),
                gcp.storage.BucketLifecycleRuleArgs(
                    action=gcp.storage.BucketLifecycleRuleActionArgs(type="AbortIncompleteMultipartUpload"),
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=7))],
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


class GcsModelReader(pulumi.ComponentResource):
    """The serving identity on GCP.

    Creates: a Google ``ServiceAccount``, a ``BucketIAMMember`` granting it ``roles/storage.objectViewer``
    on the bucket under an IAM condition (bucket-level calls such as list, and objects under
    ``prefix/`` only), and a ``IAMMember`` on the service account granting
    ``roles/iam.workloadIdentityUser`` to exactly ``<namespace>/<service_account>`` of the cluster.
    """

    email: pulumi.Output[str]
    service_account_annotations: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: GcsModelReaderArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:gcp:GcsModelReader", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account_id = args.account_id or model_reader_account_id(
            args.cluster_name or f"{pulumi.get_project()}-{pulumi.get_stack()}")
        if not ACCOUNT_ID.match(account_id):
            raise ValueError(f"account_id {account_id!r}: 6-30 characters [a-z][a-z0-9-]*[a-z0-9]")
        account = gcp.serviceaccount.Account(f"{name}-sa", project=args.project, account_id=account_id,
                                             display_name="TF Serving model reader", opts=child)
        condition = pulumi.Output.from_input(args.bucket_name).apply(lambda b: gcp.storage.BucketIAMMemberConditionArgs(
            title=f"{args.prefix}-only", description=f"bucket metadata and objects under {args.prefix}/",
            expression=(f'resource.type == "storage.googleapis.com/Bucket" || '
                        f'resource.name.startsWith("projects/_/buckets/{b}/objects/{args.prefix}/")')))
        gcp.storage.BucketIAMMember(f"{name}-read", bucket=args.bucket_name, role="roles/storage.objectViewer",
                                    member=account.member, condition=condition, opts=child)
        gcp.serviceaccount.IAMMember(
            f"{name}-workload-identity", service_account_id=account.name, role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat("serviceAccount:", args.workload_pool,
                                        f"[{args.namespace}/{args.service_account}]"), opts=child)
        self.email = account.email
        self.service_account_annotations = account.email.apply(lambda e: {WI_ANNOTATION: e})
        self.register_outputs({"email": self.email})
