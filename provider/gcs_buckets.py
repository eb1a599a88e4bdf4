"""The GCP model store: ``GcsModelBucket``, its read-only Workload Identity reader ``GcsModelReader`` and its one
writer ``GcsModelPublisher``, wrapping components/gcp/model_bucket.py."""

from typing import NotRequired, TypedDict

import pulumi

from components.gcp.model_bucket import GcsModelBucket as Bucket
from components.gcp.model_bucket import GcsModelBucketArgs as BucketArgs
from components.gcp.model_bucket import GcsModelPublisher as Publisher
from components.gcp.model_bucket import GcsModelPublisherArgs as PublisherArgs
from components.gcp.model_bucket import GcsModelReader as Reader
from components.gcp.model_bucket import GcsModelReaderArgs as ReaderArgs
from provider.shared import plain, token


def _optional(args: dict, keys: tuple[str, ...], component: str) -> dict:
    """The optional plain inputs that were given (every one left out keeps the component's default)."""
    return {key: plain(args[key], key, component) for key in keys if args.get(key) is not None}


class GcsModelBucketArgs(TypedDict):
    """Inputs of ``GcsModelBucket``."""

    project: str
    """The Google Cloud project of the bucket."""
    location: str
    """Region (or multi-region) of the bucket; the cluster's region keeps reads local and free."""
    prefix: NotRequired[str]
    """Object prefix under which models live; readers are limited to it. Default ``models``."""
    noncurrent_version_days: NotRequired[int]
    """Days a replaced or deleted object version is kept before deletion; default 30."""
    kms_key: NotRequired[str]
    """Cloud KMS key (``projects/.../cryptoKeys/...``) for CMEK; default Google-managed encryption."""
    force_destroy: NotRequired[bool]
    """Let ``pulumi destroy`` delete a non-empty bucket (dev only); default false."""
    protect: NotRequired[bool]
    """Pulumi ``protect`` and ``retainOnDelete`` on the bucket (prod); default false."""
    labels: NotRequired[dict[str, str]]
    """Labels of the bucket."""


class GcsModelBucket(pulumi.ComponentResource):
    """A private GCS model store: uniform bucket-level access (no ACLs), public access prevention enforced,
    object versioning, noncurrent versions and stale multipart uploads expiring, optionally CMEK."""

    bucket_name: pulumi.Output[str]
    """The bucket's name (pass it to ``GcsModelReader`` and ``GcsModelPublisher``)."""
    models_uri: pulumi.Output[str]
    """``gs://<bucket>/<prefix>``: the ``modelSourceUri`` of ``TfServing``."""

    def __init__(self, name: str, args: GcsModelBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(token("GcsModelBucket"), name, None, opts)
        component = "GcsModelBucket"
        optional = _optional(args, ("noncurrent_version_days", "kms_key", "force_destroy", "protect"), component)
        if "noncurrent_version_days" in optional:
            optional["noncurrent_version_days"] = int(optional["noncurrent_version_days"])
        prefix = _optional(args, ("prefix",), component)
        inner = Bucket(f"{name}-bucket", BucketArgs(
            project=plain(args["project"], "project", component),
            location=plain(args["location"], "location", component),
            labels=dict(plain(args.get("labels") or {}, "labels", component)), **optional),
            **prefix, opts=pulumi.ResourceOptions(parent=self))
        self.bucket_name = inner.bucket_name
        self.models_uri = inner.models_uri
        self.register_outputs({"bucket_name": self.bucket_name, "models_uri": self.models_uri})


class GcsModelReaderArgs(TypedDict):
    """Inputs of ``GcsModelReader``."""

    project: str
    """The project of the reader's Google service account."""
    bucket_name: pulumi.Input[str]
    """The model bucket (``GcsModelBucket.bucketName``)."""
    workload_pool: pulumi.Input[str]
    """The cluster's Workload Identity pool, ``<project>.svc.id.goog`` (``GkePlatform.workloadPool``): an
    output, so the binding waits for the cluster that creates the pool."""
    namespace: str
    """Namespace of the one Kubernetes service account that may act as the reader."""
    service_account: str
    """The one Kubernetes service account the serving pods run as (``TfServing.serviceAccount``)."""
    prefix: NotRequired[str]
    """The object prefix the reader may list and read; default ``models``."""
    account_id: NotRequired[str]
    """The Google service account id (6-30 characters); default derived from the Pulumi project and stack."""


class GcsModelReader(pulumi.ComponentResource):
    """The serving identity on GCP: a Google service account that may list and read ``<prefix>/`` of the
    bucket only (an IAM condition), impersonated through Workload Identity by exactly one Kubernetes
    service account."""

    email: pulumi.Output[str]
    """The Google service account's email."""
    service_account_annotations: pulumi.Output[dict[str, str]]
    """``iam.gke.io/gcp-service-account`` for the Kubernetes service account
    (``TfServing.serviceAccountAnnotations``)."""

    def __init__(self, name: str, args: GcsModelReaderArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(token("GcsModelReader"), name, None, opts)
        component = "GcsModelReader"
        inner = Reader(f"{name}-reader", ReaderArgs(
            project=plain(args["project"], "project", component), bucket_name=args["bucket_name"],
            workload_pool=args["workload_pool"], namespace=plain(args["namespace"], "namespace", component),
            service_account=plain(args["service_account"], "serviceAccount", component),
            **_optional(args, ("prefix", "account_id"), component)), opts=pulumi.ResourceOptions(parent=self))
        self.email = inner.email
        self.service_account_annotations = inner.service_account_annotations
        self.register_outputs({"email": self.email, "service_account_annotations": self.service_account_annotations})


class GcsModelPublisherArgs(TypedDict):
    """Inputs of ``GcsModelPublisher``."""

    project: str
    """The project of the publisher's Google service account."""
    bucket_name: pulumi.Input[str]
    """The model bucket (``GcsModelBucket.bucketName``)."""
    members: NotRequired[list[str]]
    """Who may act as the publisher: ``user:``/``group:``/``serviceAccount:``/``domain:`` members may
    impersonate it, Workload Identity Federation ``principal://``/``principalSet://`` members (a CI job)
    may use it as their identity; default nobody."""
    prefix: NotRequired[str]
    """The object prefix the publisher may write; default ``models``."""
    account_id: NotRequired[str]
    """The Google service account id (6-30 characters); default derived from the Pulumi project and stack."""


class GcsModelPublisher(pulumi.ComponentResource):
    """The one identity with write access to the models on GCP (``python -m model_tools publish``): a Google
    service account with ``roles/storage.objectAdmin`` under the prefix condition, and per member the one
    role that lets it act as that account."""

    email: pulumi.Output[str]
    """The Google service account's email (``--impersonate-service-account``)."""

    def __init__(self, name: str, args: GcsModelPublisherArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(token("GcsModelPublisher"), name, None, opts)
        component = "GcsModelPublisher"
        inner = Publisher(f"{name}-publisher", PublisherArgs(
            project=plain(args["project"], "project", component), bucket_name=args["bucket_name"],
            members=tuple(plain(args.get("members") or (), "members", component)),
            **_optional(args, ("prefix", "account_id"), component)), opts=pulumi.ResourceOptions(parent=self))
        self.email = inner.email
        self.register_outputs({"email": self.email})
