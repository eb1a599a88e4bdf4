"""Private, encrypted, versioned S3 bucket for SavedModels, and a read-only IRSA role for serving."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.aws.iam import irsa_trust_policy
from components.model_contract import DEFAULT_MODELS_PREFIX


@dataclass(frozen=True)
class ModelBucketArgs:
    """Inputs of :class:`ModelBucket`."""

    prefix: str = DEFAULT_MODELS_PREFIX
    """Key prefix under which models live; readers are limited to it."""
    noncurrent_version_days: int = 30
    """Days a replaced or deleted object version is kept before expiry."""
    force_destroy: bool = False
    """Let ``pulumi destroy`` delete a non-empty bucket (dev only)."""
    protect: bool = False
    """Pulumi ``protect`` and ``retain_on_delete`` on the bucket and its key (prod)."""
    tags: dict[str, str] = field(default_factory=dict)


def tls_only_policy(bucket_arn: str) -> str:
    """Deny every request not made over TLS (AWS Foundational Security Best Practices S3.5)."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }],
    })


def read_models_policy(bucket_arn: str, key_arn: str, prefix: str) -> str:
    """List and get objects under ``prefix/`` only, and decrypt with the bucket's key."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListModels", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
             "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}}},
            {"Sid": "ReadModels", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": f"{bucket_arn}/{prefix}/*"},
            {"Sid": "DecryptModels", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn},
        ],
    })


class ModelBucket(pulumi.ComponentResource):
    """The model store.

    Creates: a KMS key, the ``aws.s3.Bucket``, ``BucketOwnershipControls`` (ACLs off),
    ``BucketPublicAccessBlock`` (all four on), ``BucketVersioning``, SSE-KMS
    ``BucketServerSideEncryptionConfiguration`` with bucket keys, a TLS-only ``BucketPolicy`` and a
    ``BucketLifecycleConfiguration`` expiring noncurrent versions and stale multipart uploads.
    """

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    models_uri: pulumi.Output[str]
    """``s3://<bucket>/<prefix>``: what the serving sync reads."""

    def __init__(self, name: str, args: ModelBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:aws:ModelBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        keep = pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect)

        key = aws.kms.Key(f"{name}-key", description="Model bucket encryption", enable_key_rotation=True,
                          deletion_window_in_days=30 if args.protect else 7, tags=args.tags, opts=keep)
        bucket = aws.s3.Bucket(f"{name}", force_destroy=args.force_destroy, tags=args.tags, opts=keep)
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"), opts=child)
        public_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse", bucket=bucket.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.
                BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="aws:kms", kms_master_key_id=key.arn),
                bucket_key_enabled=True)],
            opts=child)
        # A bucket policy must wait for the public access block, or S3 may reject it as public.
        aws.s3.BucketPolicy(f"{name}-tls-only", bucket=bucket.id, policy=bucket.arn.apply(tls_only_policy),
                            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_block]))
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-noncurrent-versions", status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    noncurrent_version_expiration=aws.s3.
                    BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.noncurrent_version_days)),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-uploads", status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    abort_incomplete_multipart_upload=aws.s3.
                    BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(days_after_initiation=7)),
            ],
            opts=child)

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.kms_key_arn = key.arn
        self.models_uri = bucket.bucket.apply(lambda b: f"s3://{b}/{args.prefix}")
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn,
                               "models_uri": self.models_uri})


@dataclass(frozen=True)
class ModelReaderRoleArgs:
    """Inputs of :class:`ModelReaderRole`."""

    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    namespace: str
    service_account: str
    """The one Kubernetes service account allowed to assume the role."""
    bucket_arn: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    prefix: str = DEFAULT_MODELS_PREFIX
    tags: dict[str, str] = field(default_factory=dict)


class ModelReaderRole(pulumi.ComponentResource):
    """IRSA role: one service account may list and read ``<prefix>/*`` of the model bucket, nothing else.

    Creates: an ``aws.iam.Role`` trusting the cluster's OIDC provider for that service account
    (``sub`` and ``aud`` pinned) and an inline ``RolePolicy``.
    """

    role_arn: pulumi.Output[str]
    service_account_annotations: pulumi.Output[dict[str, str]]
    """Annotation to put on the Kubernetes service account (``eks.amazonaws.com/role-arn``)."""

    def __init__(self, name: str, args: ModelReaderRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:aws:ModelReaderRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=irsa_trust_policy(args.oidc_provider_arn, args.oidc_issuer_url,
                                                 args.namespace, args.service_account),
            tags=args.tags, opts=child)
        aws.iam.RolePolicy(
            f"{name}-read-models", role=role.id,
            policy=pulumi.Output.all(args.bucket_arn, args.kms_key_arn).apply(
                lambda a: read_models_policy(a[0], a[1], args.prefix)),
            opts=child)
        self.role_arn = role.arn
        self.service_account_annotations = role.arn.apply(lambda arn: {"eks.amazonaws.com/role-arn": arn})
        self.register_outputs({"role_arn": self.role_arn})

