"""Private, encrypted, versioned S3 bucket for SavedModels, the one publisher role that may change them,
and a read-only IRSA role for serving."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.aws.iam import irsa_trust_policy, partition_of
from components.model_contract import DEFAULT_MODELS_PREFIX

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
"""GitHub Actions' OIDC issuer (https://docs.github.com/en/actions/security-for-github-actions/
security-hardening-your-deployments/configuring-openid-connect-in-amazon-web-services)."""
OBJECT_WRITE_ACTIONS = ("s3:PutObject*", "s3:DeleteObject*", "s3:RestoreObject", "s3:AbortMultipartUpload",
                        "s3:BypassGovernanceRetention", "s3:Replicate*")
"""Every object-level action that creates, replaces, deletes, re-tags or re-locks an object (wildcards so a
new PutObject*/DeleteObject* action is covered too): only the publisher may call them. ``s3:PutObject*``
covers PutObject (and CopyObject/multipart uploads, which S3 authorizes as PutObject), PutObjectAcl,
PutObjectTagging, PutObjectRetention, PutObjectLegalHold and their Version forms; ``s3:DeleteObject*``
DeleteObject(Version)(Tagging). https://docs.aws.amazon.com/service-authorization/latest/reference/
list_amazons3.html. Bucket-level actions (PutBucketPolicy, PutLifecycleConfiguration...) are not object
actions: the deploy role keeps managing the bucket's configuration."""
KEY_ADMIN_ACTIONS = (
    "kms:Describe*", "kms:Get*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Enable*", "kms:Disable*",
    "kms:Revoke*", "kms:RetireGrant", "kms:CreateAlias", "kms:DeleteAlias", "kms:TagResource",
    "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:RotateKeyOnDemand")
"""AWS's key-administrator statement (https://docs.aws.amazon.com/kms/latest/developerguide/
key-policy-default.html#key-policy-default-allow-administrators) without ``kms:Create*``: CreateGrant would
let an administrator grant itself Encrypt. Delegated to the account's IAM policies (the deploy role)."""



ABORT_MULTIPART_DAYS = 7
"""Days after which an unfinished multipart upload's parts are deleted (they are billed, never visible)."""


def abort_uploads_rule() -> aws.s3.BucketLifecycleConfigurationRuleArgs:
    """The lifecycle rule deleting the parts of multipart uploads left unfinished for ABORT_MULTIPART_DAYS."""
    return aws.s3.BucketLifecycleConfigurationRuleArgs(
        id="abort-incomplete-uploads", status="Enabled",
        filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
        abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
            days_after_initiation=ABORT_MULTIPART_DAYS))


def kms_encryption(resource_name: str, bucket: aws.s3.Bucket, key: aws.kms.Key,
                   opts: pulumi.ResourceOptions) -> aws.s3.BucketServerSideEncryptionConfiguration:
    """Default SSE-KMS encryption of ``bucket`` with ``key``, with an S3 Bucket Key: one data key per bucket
    instead of a KMS call per object, so fewer KMS requests, and the encryption context becomes the bucket
    ARN (AWS S3 "Reducing the cost of SSE-KMS with Amazon S3 Bucket Keys")."""
    return aws.s3.BucketServerSideEncryptionConfiguration(
        resource_name, bucket=bucket.id,
        rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
            apply_server_side_encryption_by_default=aws.s3.
            BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                sse_algorithm="aws:kms", kms_master_key_id=key.arn),
            bucket_key_enabled=True)],
        opts=opts)

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
    account_id: pulumi.Input[str] = ""
    """The AWS account of the bucket: the key policy delegates key administration to it."""
    region: str = "us-east-1"
    """Region of the bucket: ``kms:ViaService`` names ``s3.<region>.amazonaws.com``."""
    publisher_principals: tuple[str, ...] = ()
    """IAM principal ARNs (roles, users, account roots) that may assume the publisher role."""
    default_publisher: pulumi.Input[str] = ""
    """Who may assume the publisher role when neither ``publisher_principals`` nor
    ``publisher_github_subjects`` is set (the identity running ``pulumi up``)."""
    publisher_github_subjects: tuple[str, ...] = ()
    """GitHub Actions OIDC ``sub`` values (exact) that may assume the publisher role through the account's
    ``token.actions.githubusercontent.com`` OIDC provider."""
    object_lock_mode: str = ""
    """``GOVERNANCE`` or ``COMPLIANCE``: S3 Object Lock default retention on every new object version;
    empty: no Object Lock."""
    object_lock_days: int = 0
    """Days of the default retention (with ``object_lock_mode``)."""


def publisher_trust_policy(account_id: str, principals: tuple[str, ...] = (),
                           github_subjects: tuple[str, ...] = (), region: str = "us-east-1",
                           default: str = "") -> str:
    """Who may become the publisher: the configured principals and GitHub subjects, else ``default``.

    The default is one named principal (the deploy identity), not the account root: trusting the root
    would let any principal of the account with ``sts:AssumeRole`` on ``*`` become the publisher
    (checkov CKV_AWS_61). Assuming the role is a deliberate, logged act: every write then runs under the
    publisher's name in CloudTrail. GitHub subjects are matched exactly (StringEquals, no wildcard) with
    the audience pinned, as GitHub's guide above requires.
    """
    partition = partition_of(region)
    statements: list[dict] = []
    if principals or not github_subjects:
        statements.append({"Sid": "Publishers", "Effect": "Allow",
                           "Principal": {"AWS": list(principals) or default},
                           "Action": ["sts:AssumeRole", "sts:TagSession"]})
    if github_subjects:
        statements.append({
            "Sid": "GithubPublishers", "Effect": "Allow",
            "Principal": {"Federated": f"arn:{partition}:iam::{account_id}:oidc-provider/{GITHUB_OIDC_HOST}"},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{GITHUB_OIDC_HOST}:aud": "sts.amazonaws.com",
                                           f"{GITHUB_OIDC_HOST}:sub": list(github_subjects)}}})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def publish_models_policy(bucket_arn: str, key_arn: str, prefix: str, region: str) -> str:
    """What ``model_tools publish/promote`` needs under ``prefix/``: list, read, write, delete; the key
    through S3 only (SSE-KMS uploads need GenerateDataKey, multipart uploads and reads need Decrypt)."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListModels", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions"],
             "Resource": bucket_arn,
             "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}}},
            {"Sid": "WriteModels", "Effect": "Allow",
             "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:PutObjectTagging",
                        "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
             "Resource": f"{bucket_arn}/{prefix}/*"},
            {"Sid": "EncryptModels", "Effect": "Allow",
             "Action": ["kms:GenerateDataKey", "kms:Decrypt", "kms:DescribeKey"], "Resource": key_arn,
             "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}},
        ],
    })


def key_policy(account_id: str, publisher_arn: str, region: str) -> str:
    """Only the publisher encrypts; decryption only through S3 in this region.

    The account root gets administration (delegated to IAM, so the deploy role keeps managing the key)
    and ``kms:Decrypt`` with ``kms:ViaService``, so the readers' IAM policies decide who reads but nobody
    decrypts outside S3. Encrypt/GenerateDataKey are granted to the publisher role alone: an identity
    policy of another principal cannot add them (a key policy must allow the account for IAM policies to
    count: https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html#key-policy-default-allow-root-enable-iam).
    """
    root = f"arn:{partition_of(region)}:iam::{account_id}:root"
    via_s3 = {"kms:ViaService": f"s3.{region}.amazonaws.com", "kms:CallerAccount": account_id}
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "KeyAdministration", "Effect": "Allow", "Principal": {"AWS": root},
             "Action": list(KEY_ADMIN_ACTIONS), "Resource": "*"},
            {"Sid": "PublisherEncrypts", "Effect": "Allow", "Principal": {"AWS": publisher_arn},
             "Action": ["kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt", "kms:DescribeKey"],
             "Resource": "*", "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}},
            {"Sid": "DecryptThroughS3", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:Decrypt",
             "Resource": "*", "Condition": {"StringEquals": via_s3}},
        ],
    })


def bucket_policy(bucket_arn: str, publisher_arn: str) -> str:
    """TLS only, and nobody but the publisher role writes or deletes an object.

    An explicit Deny beats every Allow of any identity policy (the deploy role's ``s3:*`` included):
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html.
    ``aws:PrincipalArn`` is the role's ARN for its sessions (not the session ARN), so
    ``ArnNotEquals`` exempts exactly the publisher's sessions (a ``NotPrincipal`` would have to list the
    session ARNs). Only object actions are denied: the deploy role can still change the bucket's
    configuration and this policy, which is the break-glass path (a reviewed ``pulumi up``; the account
    root can also delete a bucket policy that locks everyone out).
    """
    statements = json.loads(tls_only_policy(bucket_arn))["Statement"]
    statements.append({
        "Sid": "OnlyThePublisherWritesObjects", "Effect": "Deny", "Principal": "*",
        "Action": list(OBJECT_WRITE_ACTIONS), "Resource": f"{bucket_arn}/*",
        "Condition": {"ArnNotEquals": {"aws:PrincipalArn": publisher_arn}}})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


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


def read_models_policy(bucket_arn: str, key_arn: str, prefix: str, region: str = "us-east-1",
                       vpc_endpoint_id: str = "") -> str:
    """List and get objects under ``prefix/`` only, and decrypt with the bucket's key through S3 only.

    With ``vpc_endpoint_id`` (the VPC's S3 gateway endpoint) the S3 calls count only when they come
    through that endpoint (``aws:SourceVpce``): the role's credentials are useless outside the VPC.
    The KMS call is made by S3 on the reader's behalf, so it is bound by ``kms:ViaService`` instead
    (https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service).
    """
    in_vpc = {"StringEquals": {"aws:SourceVpce": vpc_endpoint_id}} if vpc_endpoint_id else {}
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListModels", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
             "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}, **in_vpc}},
            {"Sid": "ReadModels", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": f"{bucket_arn}/{prefix}/*", **({"Condition": in_vpc} if in_vpc else {})},
            {"Sid": "DecryptModels", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn,
             "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}},
        ],
    })


class ModelBucket(pulumi.ComponentResource):
    """The model store.

    Creates: the publisher ``aws.iam.Role`` (trusting ``publisher_principals`` / ``publisher_github_subjects``)
    with an inline ``RolePolicy`` writing ``<prefix>/*``, a KMS key whose policy lets only the publisher
    encrypt and anyone decrypt only through S3, the ``aws.s3.Bucket``, ``BucketOwnershipControls`` (ACLs
    off), ``BucketPublicAccessBlock`` (all four on), ``BucketVersioning``, SSE-KMS
    ``BucketServerSideEncryptionConfiguration`` with bucket keys, a ``BucketPolicy`` (TLS only; object
    writes and deletes denied to every principal but the publisher role), a
    ``BucketLifecycleConfiguration`` expiring noncurrent versions and stale multipart uploads, and with
    ``object_lock_mode`` a ``BucketObjectLockConfiguration`` (default retention).
    """

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    publisher_role_arn: pulumi.Output[str]
    """The one identity that may write or delete model objects (``model_tools publish`` assumes it)."""
    models_uri: pulumi.Output[str]
    """``s3://<bucket>/<prefix>``: what the serving sync reads."""

    def __init__(self, name: str, args: ModelBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:aws:ModelBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        keep = pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect)

        account = pulumi.Output.from_input(args.account_id)
        publisher = aws.iam.Role(
            f"{name}-publisher", description="The only writer of the model objects (model_tools publish)",
            assume_role_policy=pulumi.Output.all(account, args.default_publisher).apply(
                lambda a: publisher_trust_policy(a[0], args.publisher_principals, args.publisher_github_subjects,
                                                 args.region, a[1])),
            max_session_duration=3600, tags=args.tags, opts=child)
        # The key policy names the publisher role, so the role exists first (KMS refuses a policy whose
        # principal does not exist yet).
        key = aws.kms.Key(f"{name}-key", description="Model bucket encryption", enable_key_rotation=True,
                          deletion_window_in_days=30 if args.protect else 7, tags=args.tags,
                          policy=pulumi.Output.all(account, publisher.arn).apply(
                              lambda a: key_policy(a[0], a[1], args.region)),
                          opts=keep)
        # Object Lock is turned on by BucketObjectLockConfiguration below, never by the bucket's own
        # object_lock_enabled: that argument forces a new bucket (ForceNew in terraform-provider-aws,
        # hashicorp/terraform-provider-aws#36529), which `protect` refuses; S3 enables Object Lock on an
        # existing versioned bucket since 2023-11 (pulumi-aws BucketObjectLockConfiguration docs: "can be
        # used enable Object Lock for new and existing buckets").
        bucket = aws.s3.Bucket(f"{name}", force_destroy=args.force_destroy, tags=args.tags, opts=keep)
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"), opts=child)
        public_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child)
        if args.object_lock_mode:
            # Needs versioning on first (PutObjectLockConfiguration on an existing bucket). Retention keeps
            # every version of a model, including a replaced one, for object_lock_days: GOVERNANCE lets a
            # principal with s3:BypassGovernanceRetention (denied to all but the publisher, which lacks it)
            # shorten it; COMPLIANCE lets nobody, not even the root user. Object Lock can never be turned
            # off again once on: https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html
            aws.s3.BucketObjectLockConfiguration(
                f"{name}-object-lock", bucket=bucket.id, object_lock_enabled="Enabled",
                rule=aws.s3.BucketObjectLockConfigurationRuleArgs(
                    default_retention=aws.s3.BucketObjectLockConfigurationRuleDefaultRetentionArgs(
                        mode=args.object_lock_mode, days=args.object_lock_days)),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning], protect=args.protect))
        kms_encryption(f"{name}-sse", bucket, key, child)
        # A bucket policy must wait for the public access block, or S3 may reject it as public. Renamed
        # from <name>-tls-only: the alias keeps it one resource (a delete of the old one after the create
        # of the new would remove the bucket's only policy).
        aws.s3.BucketPolicy(f"{name}-policy", bucket=bucket.id,
                            policy=pulumi.Output.all(bucket.arn, publisher.arn).apply(
                                lambda a: bucket_policy(a[0], a[1])),
                            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_block],
                                                        aliases=[pulumi.Alias(name=f"{name}-tls-only")]))
        aws.iam.RolePolicy(f"{name}-publisher-write", role=publisher.id,
                           policy=pulumi.Output.all(bucket.arn, key.arn).apply(
                               lambda a: publish_models_policy(a[0], a[1], args.prefix, args.region)),
                           opts=child)
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-noncurrent-versions", status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    noncurrent_version_expiration=aws.s3.
                    BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.noncurrent_version_days)),
                abort_uploads_rule(),
            ],
            opts=child)

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.kms_key_arn = key.arn
        self.publisher_role_arn = publisher.arn
        self.models_uri = bucket.bucket.apply(lambda b: f"s3://{b}/{args.prefix}")
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn,
                               "models_uri": self.models_uri, "publisher_role_arn": self.publisher_role_arn})


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
    region: str = "us-east-1"
    """Region of the bucket (``kms:ViaService``)."""
    vpc_endpoint_id: pulumi.Input[str] = ""
    """The VPC's S3 gateway endpoint: the reader's S3 calls count only through it; empty: anywhere."""


class ModelReaderRole(pulumi.ComponentResource):
    """IRSA role: one service account may list and read ``<prefix>/*`` of the model bucket, nothing else,
    through the VPC's S3 endpoint only.

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
            policy=pulumi.Output.all(args.bucket_arn, args.kms_key_arn, args.vpc_endpoint_id).apply(
                lambda a: read_models_policy(a[0], a[1], args.prefix, args.region, a[2])),
            opts=child)
        self.role_arn = role.arn
        self.service_account_annotations = role.arn.apply(lambda arn: {"eks.amazonaws.com/role-arn": arn})
        self.register_outputs({"role_arn": self.role_arn})

