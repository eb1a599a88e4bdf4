"""The team's Pulumi state backend (issue 17): one S3 bucket and one GCS bucket, made by the bootstrap
before any main stack exists, so every stack starts in the shared backend (README.md, "From an empty
account to a shared backend").

Pulumi's DIY backend (pulumi/pulumi pkg/backend/diy, read at commit 1b59498) keeps, per project-mode
stack, ``.pulumi/stacks/<project>/<stack>.json`` (the checkpoint), ``.pulumi/history/<project>/<stack>/``
and ``.pulumi/backups/<project>/<stack>/`` (store.go), ``.pulumi/meta.yaml`` (meta.go), and one lock
object per running update, ``.pulumi/locks/organization/<project>/<stack>/<uuid>.json`` (lock.go).
Versioning keeps every overwritten checkpoint restorable; nothing here may stop Pulumi deleting its lock
objects, so neither bucket has an S3 Object Lock or a GCS retention policy (a retained lock object would
lock its stack out until the retention ends).

Components never read config (bootstrap/__main__.py passes plain values).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from bootstrap import policies
from components.aws.model_bucket import abort_uploads_rule, kms_encryption
from components.gcp.model_bucket import versioned_lifecycle_rules

"""Days before S3/GCS drop an unfinished multipart upload (a `pulumi up` killed mid-write)."""
LOG_NONCURRENT_DAYS = 30


def s3_backend_url(bucket: str, region: str) -> str:
    """``pulumi login`` URL of an S3 DIY backend. ``region`` and ``awssdk=v2`` are gocloud.dev s3blob
    URL parameters; Pulumi passes s3:// URLs to gocloud.dev (v0.46, AWS SDK v2) and still accepts
    ``awssdk`` (pulumi/pulumi pkg/backend/diy/backend.go, translateLegacyS3Params: "The other v1-era
    parameters (s3ForcePathStyle, awssdk) are still understood by gocloud.dev")."""
    return f"s3://{bucket}?region={region}&awssdk=v2"


def gcs_backend_url(bucket: str) -> str:
    """``pulumi login`` URL of a GCS DIY backend (gocloud.dev gcsblob, scheme ``gs``)."""
    return f"gs://{bucket}"


@dataclass(frozen=True)
class AwsStateBackendArgs:
    """Inputs of :class:`AwsStateBackend`."""

    bucket_name: str
    """The state bucket's (global) name."""
    account_id: str
    """The account: it keeps the key's administration (no use) and owns the access logs."""
    region: str
    """The bucket's region: the key is usable only through S3 there (``kms:ViaService``)."""
    key_alias: str
    """``alias/<...>`` of the bucket's KMS key."""
    writers: tuple[pulumi.Input[str], ...]
    """Role or user ARNs that read and write state (deploy roles, operators): the key policy names them,
    so pass the roles' ``arn`` outputs (KMS refuses a policy naming a principal that does not exist yet)."""
    readers: tuple[pulumi.Input[str], ...] = ()
    """Role ARNs that only read state (preview roles); denied every object write by the bucket policy."""
    stack_writers: dict[str, list[str]] = field(default_factory=dict)
    """Stack -> the ARNs that may write its objects; any other writer is denied writes to them."""
    noncurrent_version_days: int = 90
    """Days an overwritten or deleted state object version is kept."""
    log_retention_days: int = 365
    """Days the server access logs are kept."""


class AwsStateBackend(pulumi.ComponentResource):
    """The S3 state bucket of Pulumi's DIY backend.

    Creates: a KMS key (rotation on, 30-day deletion window) with an alias, whose policy leaves the account
    administration only, lets ``writers`` GenerateDataKey/Decrypt and ``readers`` Decrypt, through S3 only;
    the state ``aws.s3.Bucket`` with ``BucketOwnershipControls`` (BucketOwnerEnforced),
    ``BucketPublicAccessBlock`` (all four), ``BucketVersioning``, SSE-KMS
    ``BucketServerSideEncryptionConfiguration`` with the bucket key, a ``BucketPolicy``
    (:func:`bootstrap.policies.state_bucket_policy`), a ``BucketLifecycleConfiguration`` (noncurrent
    versions expire, unfinished multipart uploads abort) and ``BucketLogging``; and the access-log
    bucket with the same ownership, public access block, versioning, SSE-S3, a lifecycle and a policy
    admitting only S3's log delivery for this bucket.

    The state bucket and its key are ``protect`` and ``retain_on_delete``: neither a `pulumi destroy`
    nor a removed line of code deletes a team's state.

    Server access logs rather than CloudTrail data events: they need no trail (the account may have
    none, and S3 data events are an opt-in with a price per event), record every request including
    denied ones and the requester's ARN, and stay with the bucket they describe. The log bucket is
    SSE-S3 because S3's log delivery cannot write to a bucket whose default encryption is SSE-KMS
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/enable-server-access-logging.html, "the
    destination bucket ... SSE-S3"). An organisation trail with S3 data events can be added on top.
    """

    bucket_name: pulumi.Output[str]
    key_arn: pulumi.Output[str]
    log_bucket_name: pulumi.Output[str]
    backend_url: str

    def __init__(self, name: str, args: AwsStateBackendArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:bootstrap:AwsStateBackend", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        keep = pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True)

        key = aws.kms.Key(
            f"{name}-key", description="Pulumi state bucket encryption", enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=pulumi.Output.all(list(args.writers), list(args.readers)).apply(
                lambda wr: json.dumps(policies.state_key_policy(args.account_id, args.region, wr[0], wr[1]))),
            opts=keep)
        aws.kms.Alias(f"{name}-key", name=args.key_alias, target_key_id=key.key_id, opts=child)

        log_name = f"{args.bucket_name}-access-logs"
        logs = aws.s3.Bucket(f"{name}-access-logs", bucket=log_name,
                             opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True))
        self._private(f"{name}-access-logs", logs, child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-access-logs-sse", bucket=logs.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.
                BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"))],
            opts=child)
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-access-logs-lifecycle", bucket=logs.id,
            rules=[aws.s3.BucketLifecycleConfigurationRuleArgs(
                       id="expire-logs", status="Enabled",
                       filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                       expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                           days=args.log_retention_days),
                       noncurrent_version_expiration=aws.s3.
                       BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                           noncurrent_days=LOG_NONCURRENT_DAYS)),
                   abort_uploads_rule()],
            opts=child)
        log_policy = aws.s3.BucketPolicy(
            f"{name}-access-logs-policy", bucket=logs.id,
            policy=json.dumps(policies.log_bucket_policy(log_name, args.bucket_name, args.account_id)),
            opts=child)

        bucket = aws.s3.Bucket(name, bucket=args.bucket_name, opts=keep)
        public_block = self._private(name, bucket, child)
        kms_encryption(f"{name}-sse", bucket, key, child)
        # After the public access block, or S3 may take the policy for a public one and refuse it.
        aws.s3.BucketPolicy(
            f"{name}-policy", bucket=bucket.id,
            policy=pulumi.Output.all(key.arn, list(args.readers)).apply(lambda a: json.dumps(
                policies.state_bucket_policy(args.bucket_name, a[0], a[1], args.stack_writers))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_block]))
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=bucket.id,
            rules=[aws.s3.BucketLifecycleConfigurationRuleArgs(
                       id="expire-noncurrent-versions", status="Enabled",
                       filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                       noncurrent_version_expiration=aws.s3.
                       BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                           noncurrent_days=args.noncurrent_version_days)),
                   abort_uploads_rule()],
            opts=child)
        aws.s3.BucketLogging(f"{name}-logging", bucket=bucket.id, target_bucket=logs.id,
                             target_prefix=f"{args.bucket_name}/",
                             opts=pulumi.ResourceOptions(parent=self, depends_on=[log_policy]))

        self.bucket_name = bucket.bucket
        self.key_arn = key.arn
        self.log_bucket_name = logs.bucket
        self.backend_url = s3_backend_url(args.bucket_name, args.region)
        self.register_outputs({"bucket_name": self.bucket_name, "key_arn": self.key_arn,
                               "log_bucket_name": self.log_bucket_name, "backend_url": self.backend_url})

    @staticmethod
    def _private(name: str, bucket: aws.s3.Bucket, child: pulumi.ResourceOptions) -> aws.s3.BucketPublicAccessBlock:
        """ACLs off, no public access of any kind, versioning on."""
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"), opts=child)
        block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child)
        return block



@dataclass(frozen=True)
class GcpStateBackendArgs:
    """Inputs of :class:`GcpStateBackend`."""

    project: str
    bucket_name: str
    location: str
    """Region or multi-region of the bucket and of its key ring (CMEK keys must share the bucket's
    location: https://cloud.google.com/storage/docs/encryption/customer-managed-keys#restrictions)."""
    key_ring_name: str
    writers: tuple[pulumi.Input[str], ...]
    """IAM members (deploy service accounts, operators) given roles/storage.objectUser on the bucket."""
    readers: tuple[pulumi.Input[str], ...] = ()
    """IAM members (preview service accounts) given roles/storage.objectViewer on the bucket."""
    noncurrent_version_days: int = 90
    """Days an overwritten or deleted state object version is kept."""
    soft_delete_days: int = 7
    """Days a deleted object stays restorable (Cloud Storage soft delete); 0: off."""
    data_access_logs: bool = True
    """Turn on Data Access audit logs for storage.googleapis.com in the project."""


class GcpStateBackend(pulumi.ComponentResource):
    """The GCS state bucket of Pulumi's DIY backend.

    Creates: a KMS ``KeyRing`` in the bucket's location and a ``CryptoKey`` (90-day rotation), an
    authoritative ``CryptoKeyIAMBinding`` giving roles/cloudkms.cryptoKeyEncrypterDecrypter to the
    project's Cloud Storage service agent only (with CMEK, GCS encrypts and decrypts; readers and
    writers need no key permission:
    https://cloud.google.com/storage/docs/encryption/customer-managed-keys#service-agent-access),
    the ``Bucket`` (uniform bucket-level access, public access prevention enforced, versioning, default
    CMEK key, lifecycle: noncurrent versions deleted after N days and unfinished multipart uploads
    aborted, soft delete), authoritative ``BucketIAMBinding`` s (objectUser: writers; objectViewer:
    readers), and with ``data_access_logs`` an ``IAMAuditConfig`` for storage.googleapis.com.

    Soft delete stays on (default 7 days): versioning keeps overwritten checkpoints, and soft delete
    keeps what the lifecycle or a person deletes, the bucket included, restorable for a week. No
    retention policy (bucket lock): it would forbid deleting lock objects
    (https://cloud.google.com/storage/docs/bucket-lock: objects cannot be deleted or replaced until
    they reach the retention age).
    """

    bucket_name: pulumi.Output[str]
    key_id: pulumi.Output[str]
    backend_url: str

    def __init__(self, name: str, args: GcpStateBackendArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:bootstrap:GcpStateBackend", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        keep = pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True)

        ring = gcp.kms.KeyRing(f"{name}-ring", name=args.key_ring_name, location=args.location.lower(),
                               project=args.project, opts=keep)
        key = gcp.kms.CryptoKey(f"{name}-key", name="pulumi-state", key_ring=ring.id,
                                rotation_period="7776000s", opts=keep)
        # The service agent exists once asked for (this invoke creates it if needed: pulumi-gcp
        # storage.getProjectServiceAccount docs), before the bucket names the key.
        agent = gcp.storage.get_project_service_account_output(project=args.project)
        grant = gcp.kms.CryptoKeyIAMBinding(f"{name}-cmek", crypto_key_id=key.id,
                                            role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
                                            members=[agent.member], opts=child)
        bucket = gcp.storage.Bucket(
            name, name=args.bucket_name, project=args.project, location=args.location.upper(),
            storage_class="STANDARD", uniform_bucket_level_access=True, public_access_prevention="enforced",
            versioning=gcp.storage.BucketVersioningArgs(enabled=True),
            encryption=gcp.storage.BucketEncryptionArgs(default_kms_key_name=key.id),
            lifecycle_rules=versioned_lifecycle_rules(args.noncurrent_version_days),
            soft_delete_policy=gcp.storage.BucketSoftDeletePolicyArgs(
                retention_duration_seconds=args.soft_delete_days * 86400),
            force_destroy=False,
            opts=pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True, depends_on=[grant]))
        gcp.storage.BucketIAMBinding(f"{name}-writers", bucket=bucket.name, role="roles/storage.objectUser",
                                     members=list(args.writers), opts=child)
        if args.readers:
            gcp.storage.BucketIAMBinding(f"{name}-readers", bucket=bucket.name, role="roles/storage.objectViewer",
                                         members=list(args.readers), opts=child)
        if args.data_access_logs:
            gcp.projects.IAMAuditConfig(
                f"{name}-data-access", project=args.project, service="storage.googleapis.com",
                audit_log_configs=[gcp.projects.IAMAuditConfigAuditLogConfigArgs(log_type=t)
                                   for t in ("ADMIN_READ", "DATA_READ", "DATA_WRITE")],
                opts=child)

        self.bucket_name = bucket.name
        self.key_id = key.id
        self.backend_url = gcs_backend_url(args.bucket_name)
        self.register_outputs({"bucket_name": self.bucket_name, "key_id": self.key_id,
                               "backend_url": self.backend_url})
