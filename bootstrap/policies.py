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
    """PR and prod previews read through ReadOnlyAccess; the DIY backend also writes its lock file
    (``.pulumi/locks/``) for a preview (pkg/backend/diy/lock.go)."""
    if not state_bucket:
        return []
    return [{"Sid": "StateLock", "Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
             "Resource": f"arn:aws:s3:::{state_bucket}/.pulumi/locks/*"}]
