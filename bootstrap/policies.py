"""The IAM and KMS policy documents of the bootstrap, as plain dicts (tests evaluate them).

References:
- GitHub's OIDC claims: ``sub`` is ``repo:<owner>/<repo>:environment:<env>`` for a job with an
  environment, ``repo:<owner>/<repo>:pull_request`` for a pull request; ``aud`` is
  ``sts.amazonaws.com`` for aws-actions/configure-aws-credentials
  (https://docs.github.com/en/actions/reference/security/oidc).
- AWS: a role trusting GitHub checks both with StringEquals
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_create_for-idp_oidc.html).
- KMS: a key policy must allow a principal itself, or allow the account (root) so that IAM policies
  can; without the account statement no IAM policy grants anything on the key
  (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html). The account keeps the
  key administrators' actions of that page and none of the key users' (Encrypt, Decrypt, ReEncrypt*,
  GenerateDataKey*), so only the principals named in the key policy can use the key.
"""

from __future__ import annotations

GITHUB_ISSUER = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"

# AWS's "Allow access for Key Administrators" statement (key-policy-default.html), verbatim. None of
# these encrypts or decrypts; kms:CreateGrant/PutKeyPolicy let an administrator grant use (break
# glass, logged in CloudTrail), which is why every deploy and preview role denies them on keys of
# other stacks (``deny_other_keys``).
KEY_ADMIN_ACTIONS = [
    "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
    "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
    "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:RotateKeyOnDemand",
]
# What Pulumi's awskms secrets manager calls: Encrypt to wrap a new data key (stack init,
# change-secrets-provider), Decrypt to unwrap it on every later command
# (https://github.com/pulumi/pulumi/blob/master/pkg/secrets/cloud/manager.go: NewSecretsManager calls
# keeper.Encrypt, SecretsManagerFromState keeper.Decrypt, nothing else).
KEY_USE_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]
PREVIEW_KEY_ACTIONS = ["kms:Decrypt", "kms:DescribeKey"]
# Every action that reads plaintext or makes ciphertext with a key, or hands that right to someone.
KEY_SENSITIVE_ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                         "kms:CreateGrant", "kms:PutKeyPolicy"]


def account_root(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:root"


def role_arn(account_id: str, name: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{name}"


def oidc_provider_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:oidc-provider/{GITHUB_ISSUER}"


def github_trust_policy(account_id: str, subject: str) -> dict:
    """Trust exactly one OIDC subject of GitHub's issuer, for STS's audience: no wildcard, no StringLike."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "GitHubActions",
            "Effect": "Allow",
            "Principal": {"Federated": oidc_provider_arn(account_id)},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{GITHUB_ISSUER}:aud": STS_AUDIENCE,
                                           f"{GITHUB_ISSUER}:sub": subject}},
        }],
    }


def key_policy(account_id: str, deploy_role: str, preview_roles: list[str],
               operators: list[str] | None = None) -> dict:
    """``operators``: people (IAM users or roles) who may also use this key from a workstation, named
    one by one like the deploy role; settings.py refuses them for prod stacks."""
    statements = [
        {"Sid": "KeyAdministration", "Effect": "Allow", "Principal": {"AWS": account_root(account_id)},
         "Action": KEY_ADMIN_ACTIONS, "Resource": "*"},
        {"Sid": "StackDeployRole", "Effect": "Allow", "Principal": {"AWS": deploy_role},
         "Action": KEY_USE_ACTIONS, "Resource": "*"},
    ]
    if preview_roles:
        statements.append({"Sid": "StackPreviewRoles", "Effect": "Allow",
                           "Principal": {"AWS": sorted(preview_roles)},
                           "Action": PREVIEW_KEY_ACTIONS, "Resource": "*"})
    if operators:
        statements.append({"Sid": "StackOperators", "Effect": "Allow",
                           "Principal": {"AWS": sorted(operators)}, "Action": KEY_USE_ACTIONS, "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": statements}


def deny_other_keys(other_key_arns: list[str]) -> list[dict]:
    """Explicit denies win over any allow (AdministratorAccess included): no use of, and no way to grant
    oneself, another stack's key."""
    if not other_key_arns:
        return []
    return [{"Sid": "NoOtherStacksKeys", "Effect": "Deny", "Action": KEY_SENSITIVE_ACTIONS,
             "Resource": sorted(other_key_arns)}]


def deny_ci_identities(account_id: str, name_prefix: str) -> dict:
    """No deploy or preview role may change the CI roles or GitHub's OIDC provider (it could otherwise
    widen its own trust, or another environment's)."""
    return {"Sid": "NoChangesToCiIdentities", "Effect": "Deny",
            "Action": ["iam:*"],
            "Resource": [role_arn(account_id, f"{name_prefix}-*"), oidc_provider_arn(account_id)]}


def deny_preview_writes() -> dict:
    """A preview identity only ever decrypts (its ReadOnlyAccess has no key writes, and this keeps it so
    whatever that managed policy becomes): no new ciphertext, no grants, no key policies, on any key."""
    return {"Sid": "PreviewOnlyDecrypts", "Effect": "Deny",
            "Action": [a for a in KEY_SENSITIVE_ACTIONS if a != "kms:Decrypt"], "Resource": "*"}


def role_policy(statements: list[dict]) -> dict:
    return {"Version": "2012-10-17", "Statement": statements}


def preview_allow(state_bucket: str | None) -> list[dict]:
    """PR and prod previews only read the state: ``pulumi preview`` takes no lock on a DIY backend and
    writes nothing (pulumi/pulumi pkg/backend/diy/backend.go at 1b59498: ``Preview`` calls no
    ``b.Lock``, and ``apply`` persists snapshots, history and backups only when not ``DryRun``; the
    lock is taken by update, refresh, destroy, import, stack rm/rename/import). ReadOnlyAccess already
    reads S3; these statements say so for this bucket whatever that managed policy becomes."""
    if not state_bucket:
        return []
    arn = f"arn:aws:s3:::{state_bucket}"
    return [{"Sid": "StateRead", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": arn},
            {"Sid": "StateReadObjects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
             "Resource": f"{arn}/*"}]


def deploy_state_allow(state_bucket: str | None) -> list[dict]:
    """A deploy role reads and writes the state objects (checkpoint, history, backups, its lock), also
    when ``deployPolicyArns`` is narrower than AdministratorAccess."""
    if not state_bucket:
        return []
    arn = f"arn:aws:s3:::{state_bucket}"
    return [{"Sid": "StateList", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": arn},
            {"Sid": "StateObjects", "Effect": "Allow",
             "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject",
                        "s3:AbortMultipartUpload"], "Resource": f"{arn}/*"}]


# --- the state bucket (bootstrap/state_backend.py) --------------------------------------------------

STATE_BUCKET_CONFIG_ACTIONS = ["s3:PutBucket*", "s3:DeleteBucket*", "s3:PutEncryptionConfiguration",
                               "s3:PutLifecycleConfiguration", "s3:PutReplicationConfiguration"]
"""Every call that changes the state bucket's policy, versioning, encryption, public access block,
ownership, logging or lifecycle, or deletes the bucket (``s3:PutBucket*`` covers PutBucketPolicy,
PutBucketVersioning, PutBucketPublicAccessBlock, PutBucketOwnershipControls, PutBucketLogging...:
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html)."""
STATE_KEY_CHANGE_ACTIONS = ["kms:PutKeyPolicy", "kms:CreateGrant", "kms:ScheduleKeyDeletion", "kms:DisableKey"]
STATE_OBJECT_WRITES = ["s3:PutObject*", "s3:DeleteObject*", "s3:RestoreObject", "s3:AbortMultipartUpload"]
"""Object calls that create, replace or delete a state object (CopyObject and multipart uploads are
authorized as s3:PutObject)."""
# A stack's objects in a project-mode DIY backend (pulumi/pulumi pkg/backend/diy/store.go
# projectReferenceStore: .pulumi/stacks/<project>/<stack>.json[.gz|.bak], .pulumi/history/<project>/<stack>/,
# .pulumi/backups/<project>/<stack>/; lock.go: .pulumi/locks/organization/<project>/<stack>/<uuid>.json).
STACK_OBJECT_PATTERNS = (".pulumi/stacks/*/{stack}.json*", ".pulumi/history/*/{stack}/*",
                         ".pulumi/backups/*/{stack}/*", ".pulumi/locks/organization/*/{stack}/*")


def deny_state_backend_changes(state_bucket: str, state_key_arn: str | None) -> list[dict]:
    """No CI role may reconfigure or delete the state bucket, or change its key's policy, grants or
    life: a deploy role's AdministratorAccess could otherwise lift the bucket policy's denies."""
    statements = [{"Sid": "NoChangesToStateBucket", "Effect": "Deny", "Action": STATE_BUCKET_CONFIG_ACTIONS,
                   "Resource": f"arn:aws:s3:::{state_bucket}"}]
    if state_key_arn:
        statements.append({"Sid": "NoChangesToStateKey", "Effect": "Deny", "Action": STATE_KEY_CHANGE_ACTIONS,
                           "Resource": state_key_arn})
    return statements


def state_key_policy(account_id: str, region: str, writers: list[str], readers: list[str]) -> dict:
    """The state bucket's key: the account keeps administration (no use), ``writers`` (deploy roles,
    operators) encrypt and decrypt, ``readers`` (preview roles) only decrypt, and only through S3 in
    the bucket's region (``kms:ViaService``,
    https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service).
    S3 calls GenerateDataKey for a PutObject and Decrypt for a GetObject or a multipart upload
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html#require-sse-kms)."""
    via_s3 = {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com", "kms:CallerAccount": account_id}}
    statements = [
        {"Sid": "KeyAdministration", "Effect": "Allow", "Principal": {"AWS": account_root(account_id)},
         "Action": KEY_ADMIN_ACTIONS, "Resource": "*"},
        {"Sid": "StateWriters", "Effect": "Allow", "Principal": {"AWS": sorted(set(writers))},
         "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": "*", "Condition": via_s3},
    ]
    if readers:
        statements.append({"Sid": "StateReaders", "Effect": "Allow", "Principal": {"AWS": sorted(set(readers))},
                           "Action": "kms:Decrypt", "Resource": "*", "Condition": via_s3})
    return {"Version": "2012-10-17", "Statement": statements}


def state_bucket_policy(bucket: str, key_arn: str, readers: list[str],
                        stack_writers: dict[str, list[str]]) -> dict:
    """TLS only; every object SSE-KMS with the bucket's key; preview roles never write; and each stack's
    objects are written only by that stack's own writers.

    - Non-TLS: ``aws:SecureTransport`` false is denied for every call (S3.5 of AWS Foundational
      Security Best Practices).
    - Non-KMS puts: a PutObject that asks for another encryption (``s3:x-amz-server-side-encryption``
      present and not ``aws:kms``), another key (``...-aws-kms-key-id`` present and not this key's
      ARN) or ``aws:kms`` without a key id (S3 would use aws/s3) is denied. A put that asks for nothing gets the bucket's default, SSE-KMS with this key:
      Pulumi's DIY backend sends no encryption header (gocloud.dev s3blob without ``ssetype``), so a
      policy denying header-less puts (AWS's ``Null ... "true"`` example) would refuse every
      checkpoint. ``Null: false`` = the header is present
      (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_Null).
    - ``readers`` (preview roles): no object write anywhere (a PR's code must not delete a lock of a
      running ``pulumi up`` nor plant one).
    - ``stack_writers``: stack -> the principals that may write its objects (its deploy role, its
      operators); every other writer is denied writes to that stack's checkpoint, history, backups and
      lock (:data:`STACK_OBJECT_PATTERNS`), so dev's role or operator cannot rewrite prod's state.
    """
    arn = f"arn:aws:s3:::{bucket}"
    statements = [
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Sid": "DenyNonKmsEncryption", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"{arn}/*",
         "Condition": {"Null": {"s3:x-amz-server-side-encryption": "false"},
                       "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}},
        {"Sid": "DenyOtherKmsKeys", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"{arn}/*",
         "Condition": {"Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"},
                       "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn}}},
        # `aws:kms` without a key id means the AWS managed key aws/s3, not the bucket's (PutObject API:
        # "If you specify x-amz-server-side-encryption:aws:kms ... but do not provide
        # x-amz-server-side-encryption-aws-kms-key-id, Amazon S3 uses the AWS managed key (aws/s3)").
        {"Sid": "DenyAwsManagedKey", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"{arn}/*",
         "Condition": {"Null": {"s3:x-amz-server-side-encryption": "false",
                                "s3:x-amz-server-side-encryption-aws-kms-key-id": "true"}}},
    ]
    if readers:
        statements.append({"Sid": "PreviewRolesOnlyRead", "Effect": "Deny", "Principal": "*",
                           "Action": STATE_OBJECT_WRITES, "Resource": f"{arn}/*",
                           "Condition": {"ArnEquals": {"aws:PrincipalArn": sorted(set(readers))}}})
    everyone = {p for ps in stack_writers.values() for p in ps}
    for stack, owners in sorted(stack_writers.items()):
        others = sorted(everyone - set(owners))
        if not others:
            continue
        statements.append({
            "Sid": "OnlyItsWriters" + "".join(part.title() for part in stack.split("-")), "Effect": "Deny",
            "Principal": "*", "Action": STATE_OBJECT_WRITES,
            "Resource": [f"{arn}/{p.format(stack=stack)}" for p in STACK_OBJECT_PATTERNS],
            "Condition": {"ArnEquals": {"aws:PrincipalArn": others}}})
    return {"Version": "2012-10-17", "Statement": statements}


def log_bucket_policy(log_bucket: str, source_bucket: str, account_id: str) -> dict:
    """S3 server access logs into a bucket with Object Ownership "bucket owner enforced": ACLs are off,
    so the logging service is allowed by bucket policy, for this source bucket and account only
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/enable-server-access-logging.html#grant-log-delivery-permissions-general);
    and TLS only."""
    arn = f"arn:aws:s3:::{log_bucket}"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Sid": "S3ServerAccessLogs", "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": f"{arn}/{source_bucket}/*",
         "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{source_bucket}"},
                       "StringEquals": {"aws:SourceAccount": account_id}}},
    ]}
