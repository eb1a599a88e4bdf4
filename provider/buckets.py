"""The AWS model store: ``ModelBucket`` and its read-only IRSA role ``ModelReader``, wrapping
components/aws/model_bucket.py (``ModelBucket``, ``ModelReaderRole``)."""

from enum import Enum
from typing import NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from components.aws.model_bucket import ModelBucket as Bucket
from components.aws.model_bucket import ModelBucketArgs as BucketArgs
from components.aws.model_bucket import ModelReaderRole, ModelReaderRoleArgs
from provider.shared import plain, token, value_of


class ObjectLockMode(Enum):
    """S3 Object Lock default retention mode (once on, Object Lock cannot be turned off)."""

    GOVERNANCE = "GOVERNANCE"
    """Principals with ``s3:BypassGovernanceRetention`` may shorten the retention (denied to all but the
    publisher, which lacks it)."""
    COMPLIANCE = "COMPLIANCE"
    """Nobody, not even the account root, may shorten the retention."""


class ModelBucketArgs(TypedDict):
    """Inputs of ``ModelBucket``."""

    region: str
    """Region of the bucket (the region of the AWS provider): the key policy's ``kms:ViaService``."""
    prefix: NotRequired[str]
    """Key prefix under which models live; readers are limited to it. Default ``models``."""
    noncurrent_version_days: NotRequired[int]
    """Days a replaced or deleted object version is kept before expiry; default 30."""
    force_destroy: NotRequired[bool]
    """Let ``pulumi destroy`` delete a non-empty bucket (dev only); default false."""
    protect: NotRequired[bool]
    """Pulumi ``protect`` and ``retainOnDelete`` on the bucket and its key (prod); default false."""
    publisher_principals: NotRequired[list[str]]
    """IAM principal ARNs that may assume the publisher role (the only writer of model objects)."""
    publisher_github_subjects: NotRequired[list[str]]
    """GitHub Actions OIDC ``sub`` values (exact) that may assume the publisher role."""
    default_publisher: NotRequired[pulumi.Input[str]]
    """Who may assume the publisher role when neither principals nor subjects are set; default the role
    running ``pulumi up``."""
    object_lock_mode: NotRequired[ObjectLockMode]
    """S3 Object Lock default retention on every new object version; default none."""
    object_lock_days: NotRequired[int]
    """Days of the default retention (with ``objectLockMode``)."""
    tags: NotRequired[dict[str, str]]
    """Extra tags."""


class ModelBucket(pulumi.ComponentResource):
    """A private S3 model store: versioned, SSE-KMS with its own key, public access blocked, TLS only, and
    one publisher role as the only principal that may write or delete model objects."""

    bucket_name: pulumi.Output[str]
    """The bucket's name."""
    bucket_arn: pulumi.Output[str]
    """The bucket's ARN (pass it to ``ModelReader``)."""
    kms_key_arn: pulumi.Output[str]
    """The KMS key encrypting the objects (pass it to ``ModelReader``)."""
    publisher_role_arn: pulumi.Output[str]
    """The one role that may write or delete model objects."""
    models_uri: pulumi.Output[str]
    """``s3://<bucket>/<prefix>``: the ``modelSourceUri`` of ``TfServing``."""

    def __init__(self, name: str, args: ModelBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(token("ModelBucket"), name, None, opts)
        component = "ModelBucket"
        # As stacks/platform.py: the key policy delegates to this account, and by default the identity
        # running `pulumi up` may publish. Invokes with parent=self use the component's AWS provider.
        invoke = pulumi.InvokeOptions(parent=self)
        caller = aws.get_caller_identity_output(opts=invoke)
        default_publisher = args.get("default_publisher")
        if default_publisher is None:
            default_publisher = aws.iam.get_session_context_output(arn=caller.arn, opts=invoke).issuer_arn
        optional = {}
        for key in ("prefix", "noncurrent_version_days", "force_destroy", "protect", "object_lock_days"):
            if args.get(key) is not None:
                optional[key] = plain(args[key], key, component)
        if args.get("object_lock_mode") is not None:
            optional["object_lock_mode"] = value_of(args["object_lock_mode"])
        inner = Bucket(f"{name}-bucket", BucketArgs(
            account_id=caller.account_id, region=plain(args["region"], "region", component),
            default_publisher=default_publisher,
            publisher_principals=tuple(plain(args.get("publisher_principals") or (), "publisherPrincipals",
                                             component)),
            publisher_github_subjects=tuple(plain(args.get("publisher_github_subjects") or (),
                                                  "publisherGithubSubjects", component)),
            tags=dict(plain(args.get("tags") or {}, "tags", component)), **optional),
            opts=pulumi.ResourceOptions(parent=self))
        self.bucket_name = inner.bucket_name
        self.bucket_arn = inner.bucket_arn
        self.kms_key_arn = inner.kms_key_arn
        self.publisher_role_arn = inner.publisher_role_arn
        self.models_uri = inner.models_uri
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn,
                               "kms_key_arn": self.kms_key_arn, "publisher_role_arn": self.publisher_role_arn,
                               "models_uri": self.models_uri})


class ModelReaderArgs(TypedDict):
    """Inputs of ``ModelReader``."""

    oidc_provider_arn: pulumi.Input[str]
    """The cluster's IAM OIDC provider (``EksPlatform.oidcProviderArn``)."""
    oidc_issuer_url: pulumi.Input[str]
    """The cluster's OIDC issuer URL (``EksPlatform.oidcIssuerUrl``)."""
    namespace: str
    """Namespace of the one service account the role trusts."""
    service_account: str
    """The one Kubernetes service account allowed to assume the role (``TfServing.serviceAccount``)."""
    bucket_arn: pulumi.Input[str]
    """The model bucket (``ModelBucket.bucketArn``)."""
    kms_key_arn: pulumi.Input[str]
    """The bucket's key (``ModelBucket.kmsKeyArn``): decrypt only through S3."""
    region: str
    """Region of the bucket (``kms:ViaService``)."""
    prefix: NotRequired[str]
    """The key prefix the role may list and read; default ``models``."""
    vpc_endpoint_id: NotRequired[pulumi.Input[str]]
    """The VPC's S3 gateway endpoint (``EksPlatform.s3EndpointId``): reads count only through it; default
    reads from anywhere."""
    tags: NotRequired[dict[str, str]]
    """Extra tags."""


class ModelReader(pulumi.ComponentResource):
    """The read-only IRSA role of the model servers: one service account may list and read ``<prefix>/*`` of
    the model bucket, decrypt through S3 only, nothing else."""

    role_arn: pulumi.Output[str]
    """The role's ARN."""
    service_account_annotations: pulumi.Output[dict[str, str]]
    """``eks.amazonaws.com/role-arn`` for the service account (``TfServing.serviceAccountAnnotations``)."""

    def __init__(self, name: str, args: ModelReaderArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(token("ModelReader"), name, None, opts)
        component = "ModelReader"
        optional = {}
        if args.get("prefix") is not None:
            optional["prefix"] = plain(args["prefix"], "prefix", component)
        if args.get("vpc_endpoint_id") is not None:
            optional["vpc_endpoint_id"] = args["vpc_endpoint_id"]
        role = ModelReaderRole(f"{name}-role", ModelReaderRoleArgs(
            oidc_provider_arn=args["oidc_provider_arn"], oidc_issuer_url=args["oidc_issuer_url"],
            namespace=plain(args["namespace"], "namespace", component),
            service_account=plain(args["service_account"], "serviceAccount", component),
            bucket_arn=args["bucket_arn"], kms_key_arn=args["kms_key_arn"],
            region=plain(args["region"], "region", component),
            tags=dict(plain(args.get("tags") or {}, "tags", component)), **optional),
            opts=pulumi.ResourceOptions(parent=self))
        self.role_arn = role.role_arn
        self.service_account_annotations = role.service_account_annotations
        self.register_outputs({"role_arn": self.role_arn,
                               "service_account_annotations": self.service_account_annotations})
