"""The bootstrap's shared Pulumi state backend (issue 17; bootstrap/state_backend.py), run on the mock
engine: who can read and write state, what S3 and KMS refuse, what GCS grants, the Pulumi options that
keep the buckets, the exact `pulumi login` commands, config errors, and checkov + trivy on the
bootstrap's plan.

Policies are evaluated with tests/iam_eval.py (IAM's evaluation logic; a KMS key usable only when its
policy names the principal or delegates to the account and an identity policy allows). A state object is
readable only when S3 allows GetObject AND KMS allows Decrypt through S3 (SSE-KMS: S3 decrypts on the
caller's behalf with the caller's permissions,
https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html), writable only when S3
allows PutObject AND KMS allows GenerateDataKey.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from bootstrap import policies
from bootstrap.state_backend import gcs_backend_url, s3_backend_url
from stacks.mock_engine import Recording
from stacks.scan import (DEFAULT_TRIVY_IGNORE, TERRAFORM_PLAN, scan_recording, trivy_ignore_entries,
                         write_trivy_ignore)
from tests.iam_eval import GcsRequest, Request, gcs_allows, kms_allows, s3_allows
from tests.test_bootstrap import BOOTSTRAP, identity_policies, plan, refusal

ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "tfplatform-ci-pulumi-state-123456789012"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
GCS_BUCKET = "example-project-pulumi-state"
PROJECT = "tfserving-platform"  # the main project's name (Pulumi.yaml): its stacks' object keys
VIA_S3 = {"kms:ViaService": f"s3.{REGION}.amazonaws.com", "kms:CallerAccount": ACCOUNT}
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/Admin"
ALLOW_ALL = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
BOOTSTRAP_TRIVY_IGNORE = BOOTSTRAP / "trivyignore.yaml"


def role(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/tfplatform-ci-{name}"


def checkpoint(stack: str) -> str:
    """The keys the DIY backend writes for a project-mode stack (pulumi/pulumi pkg/backend/diy/store.go,
    lock.go)."""
    return f".pulumi/stacks/{PROJECT}/{stack}.json"


def lock(stack: str) -> str:
    return f".pulumi/locks/organization/{PROJECT}/{stack}/6f1c0a52-8d8e-4c55-9a53-0c1b3c7e9d10.json"


@pytest.fixture(scope="module")
def boot() -> Recording:
    return plan()


# --- the recording ---------------------------------------------------------------------------------

def bucket_policy(rec: Recording) -> dict:
    return json.loads(rec.one("aws:s3/bucketPolicy:BucketPolicy", "pulumi-state-policy").inputs["policy"])


def test_the_null_operator_is_evaluated_both_ways():
    present = {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": "*",
                              "Condition": {"Null": {"k": "false"}}}]}
    absent = copy.deepcopy(present)
    absent["Statement"][0]["Condition"]["Null"]["k"] = "true"

    def denied(policy: dict, context: dict) -> bool:
        return not s3_allows(Request(APP, "s3:PutObject", "arn:aws:s3:::b/o", context), [ALLOW_ALL],
                             policy)
    assert denied(present, {"k": "v"}) and not denied(present, {})
    assert denied(absent, {}) and not denied(absent, {"k": "v"})


def key_policy(rec: Recording) -> dict:
    return json.loads(rec.one("aws:kms/key:Key", "pulumi-state-key").inputs["policy"])


def state_key_arn(rec: Recording) -> str:
    return rec.outputs["stateBackends"]["aws"]["keyArn"]


APP = f"arn:aws:iam::{ACCOUNT}:role/some-app"
"""A principal of the account that nothing here grants anything (a workload's role)."""


def identity(rec: Recording, arn: str) -> list[dict]:
    """The CI roles' recorded policies (managed ones taken as allow-all); ``ADMIN`` allows everything."""
    name = arn.rsplit("/", 1)[1]
    if name.startswith("tfplatform-ci-"):
        return identity_policies(rec, name)
    return [ALLOW_ALL] if arn == ADMIN else []


def s3_can(rec: Recording, principal: str, action: str, key: str | None, **context: str) -> bool:
    resource = f"{BUCKET_ARN}/{key}" if key is not None else BUCKET_ARN
    ctx = {"aws:SecureTransport": "true", "aws:PrincipalArn": principal, **context}
    return s3_allows(Request(principal, action, resource, ctx), identity(rec, principal),
                     bucket_policy(rec))


def kms_can(rec: Recording, principal: str, action: str, via_s3: bool = True) -> bool:
    return kms_allows(Request(principal, action, state_key_arn(rec), dict(VIA_S3) if via_s3 else {}),
                      identity(rec, principal), key_policy(rec))


def reads(rec: Recording, principal: str, key: str) -> bool:
    return s3_can(rec, principal, "s3:GetObject", key) and kms_can(rec, principal, "kms:Decrypt")


def writes(rec: Recording, principal: str, key: str, **headers: str) -> bool:
    return s3_can(rec, principal, "s3:PutObject", key, **headers) and kms_can(rec, principal, "kms:GenerateDataKey")


# --- the S3 bucket ---------------------------------------------------------------------------------

def test_state_bucket_is_versioned_private_and_sse_kms_with_its_own_key(boot):
    bucket = boot.one("aws:s3/bucket:Bucket", "pulumi-state")
    assert bucket.inputs["bucket"] == BUCKET
    assert "forceDestroy" not in bucket.inputs or bucket.inputs["forceDestroy"] is False
    by_name = {r.name: r for r in boot.resources}
    assert by_name["pulumi-state-versioning"].inputs["versioningConfiguration"] == {"status": "Enabled"}
    (rule,) = by_name["pulumi-state-sse"].inputs["rules"]
    assert rule["bucketKeyEnabled"] is True
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": state_key_arn(boot)}
    for name in ("pulumi-state", "pulumi-state-access-logs"):
        block = by_name[f"{name}-public-access"].inputs
        assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                              "restrictPublicBuckets")), name
        assert by_name[f"{name}-ownership"].inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}, name
        assert by_name[f"{name}-versioning"].inputs["versioningConfiguration"] == {"status": "Enabled"}, name
    key = boot.one("aws:kms/key:Key", "pulumi-state-key")
    assert key.inputs["enableKeyRotation"] is True and key.inputs["deletionWindowInDays"] == 30
    alias = boot.one("aws:kms/alias:Alias", "pulumi-state-key")
    assert alias.inputs["name"] == "alias/tfplatform-ci-pulumi-state"


def test_the_bucket_policy_waits_for_the_public_access_block(boot):
    policy = boot.one("aws:s3/bucketPolicy:BucketPolicy", "pulumi-state-policy")
    block = boot.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "pulumi-state-public-access")
    assert block.urn in policy.dependencies


@pytest.mark.parametrize(("overrides", "noncurrent"), [({}, 90), ({"stateNoncurrentVersionDays": 30}, 30)])
def test_lifecycle_expires_old_versions_and_aborts_uploads(tmp_path, boot, overrides, noncurrent):
    rec = boot if not overrides else plan(tmp_path, aws={**aws_config(), **overrides})
    rules = {r["id"]: r for r in rec.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                                         "pulumi-state-lifecycle").inputs["rules"]}
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"] == {"noncurrentDays": noncurrent}
    assert rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}
    assert all(r["status"] == "Enabled" and r["filter"] == {"prefix": ""} for r in rules.values())
    # No rule ever expires a current version: the latest checkpoint lives until Pulumi replaces it.
    assert not any("expiration" in r for r in rules.values())


def test_access_logs_go_to_their_own_bucket_and_only_s3_log_delivery_writes_there(boot):
    logging = boot.one("aws:s3/bucketLogging:BucketLogging", "pulumi-state-logging").inputs
    assert logging["targetPrefix"] == f"{BUCKET}/"
    assert logging["targetBucket"].startswith("pulumi-state-access-logs-")  # the log bucket's id (mock)
    (sse,) = boot.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                      "pulumi-state-access-logs-sse").inputs["rules"]
    assert sse["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    rules = {r["id"]: r for r in boot.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                                          "pulumi-state-access-logs-lifecycle").inputs["rules"]}
    assert rules["expire-logs"]["expiration"] == {"days": 365}
    policy = json.loads(boot.one("aws:s3/bucketPolicy:BucketPolicy", "pulumi-state-access-logs-policy").inputs["policy"])
    (allow,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "logging.s3.amazonaws.com"} and allow["Action"] == "s3:PutObject"
    assert allow["Condition"] == {"ArnLike": {"aws:SourceArn": BUCKET_ARN}, "StringEquals": {"aws:SourceAccount": ACCOUNT}}
    assert allow["Resource"] == f"arn:aws:s3:::{BUCKET}-access-logs/{BUCKET}/*"


def test_state_bucket_and_key_are_protected_and_retained(boot):
    for token, name in [("aws:s3/bucket:Bucket", "pulumi-state"), ("aws:kms/key:Key", "pulumi-state-key"),
                        ("gcp:storage/bucket:Bucket", "pulumi-state"), ("gcp:kms/cryptoKey:CryptoKey", "pulumi-state-key"),
                        ("gcp:kms/keyRing:KeyRing", "pulumi-state-ring")]:
        resource = boot.one(token, name)
        assert resource.protect and resource.retain_on_delete, (token, name)
    # The log bucket outlives a `pulumi destroy` too (the evidence of who touched the state).
    assert boot.one("aws:s3/bucket:Bucket", "pulumi-state-access-logs").retain_on_delete


# --- who can read and write state (S3 + KMS) -----------------------------------------------------------

def test_a_deploy_role_reads_and_writes_its_stacks_state(boot):
    for stack, env in (("dev", "dev"), ("prod", "prod")):
        deployer = role(f"deploy-{env}")
        for key in (checkpoint(stack), lock(stack), f".pulumi/history/{PROJECT}/{stack}/{stack}-1.checkpoint.json"):
            assert writes(boot, deployer, key), (deployer, key)
            assert reads(boot, deployer, key), (deployer, key)
        assert s3_can(boot, deployer, "s3:DeleteObject", lock(stack))  # Unlock deletes its lock
        assert s3_can(boot, deployer, "s3:ListBucket", None)


def test_non_tls_requests_are_denied_to_everyone(boot):
    for who in (role("deploy-dev"), role("preview"), ADMIN):
        for action, key in (("s3:GetObject", checkpoint("dev")), ("s3:PutObject", checkpoint("dev")),
                            ("s3:ListBucket", None)):
            assert not s3_can(boot, who, action, key, **{"aws:SecureTransport": "false"}), (who, action)


@pytest.mark.parametrize(("headers", "allowed"), [
    ({}, True),  # Pulumi's DIY backend sends no encryption header: the bucket default (SSE-KMS) applies
    # `aws:kms` alone would encrypt with the AWS managed key aws/s3, which the account's S3 users decrypt
    ({"s3:x-amz-server-side-encryption": "aws:kms"}, False),
    ({"s3:x-amz-server-side-encryption": "AES256"}, False),
    ({"s3:x-amz-server-side-encryption": "aws:kms:dsse"}, False),
    ({"s3:x-amz-server-side-encryption": "aws:kms",
      "s3:x-amz-server-side-encryption-aws-kms-key-id": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/other"}, False),
], ids=["no-header", "kms-without-key", "sse-s3", "dsse", "another-key"])
def test_only_puts_encrypted_with_the_bucket_key_are_accepted(boot, headers, allowed):
    assert s3_can(boot, role("deploy-dev"), "s3:PutObject", checkpoint("dev"), **headers) is allowed


def test_the_bucket_key_itself_is_accepted_when_named(boot):
    headers = {"s3:x-amz-server-side-encryption": "aws:kms",
               "s3:x-amz-server-side-encryption-aws-kms-key-id": state_key_arn(boot)}
    assert s3_can(boot, role("deploy-dev"), "s3:PutObject", checkpoint("dev"), **headers)


def test_one_stacks_deploy_role_cannot_write_another_stacks_state(boot):
    for key in (checkpoint("prod"), checkpoint("prod") + ".bak", lock("prod"),
                f".pulumi/backups/{PROJECT}/prod/prod.1700000000.json"):
        assert not s3_can(boot, role("deploy-dev"), "s3:PutObject", key), key
        assert not s3_can(boot, role("deploy-dev"), "s3:DeleteObject", key), key
        assert s3_can(boot, role("deploy-prod"), "s3:PutObject", key), key
    assert not s3_can(boot, role("deploy-prod"), "s3:DeleteObject", lock("dev"))
    # Reading is not partitioned: a role reads another stack's outputs (StackReference-style).
    assert reads(boot, role("deploy-dev"), checkpoint("prod"))


def test_preview_roles_only_read(boot):
    for preview, stack in ((role("preview"), "dev"), (role("preview-prod-preview"), "prod")):
        assert reads(boot, preview, checkpoint(stack))
        assert s3_can(boot, preview, "s3:ListBucket", None)
        for action in ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"):
            # ... not even a lock: `pulumi preview` takes none on a DIY backend (policies.preview_allow),
            # and a PR's code must not delete the lock of a running `pulumi up`.
            assert not s3_can(boot, preview, action, lock(stack)), (preview, action)
        assert not kms_can(boot, preview, "kms:GenerateDataKey")


def test_an_unrelated_principal_can_neither_read_nor_write_state(boot):
    # A role granted nothing: the bucket policy allows nobody (it only denies), the key policy names it not.
    for action, key in (("s3:GetObject", checkpoint("dev")), ("s3:PutObject", checkpoint("dev")),
                        ("s3:ListBucket", None)):
        assert not s3_can(boot, APP, action, key), action
    assert not kms_can(boot, APP, "kms:Decrypt")
    # An administrator of this account (an identity policy allowing everything): S3 would serve the
    # object, but KMS will not decrypt it nor make a data key for it, so state is out of reach.
    assert s3_can(boot, ADMIN, "s3:GetObject", checkpoint("dev"))
    assert not reads(boot, ADMIN, checkpoint("dev"))
    assert not writes(boot, ADMIN, checkpoint("dev"))


def test_the_state_key_is_used_only_through_s3(boot):
    assert kms_can(boot, role("deploy-dev"), "kms:Decrypt")
    assert not kms_can(boot, role("deploy-dev"), "kms:Decrypt", via_s3=False)
    assert not kms_can(boot, role("deploy-dev"), "kms:Encrypt")


def test_the_state_key_policy_gives_the_account_administration_only(boot):
    policy = key_policy(boot)
    (admin,) = [s for s in policy["Statement"] if s["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}]
    assert admin["Action"] == policies.KEY_ADMIN_ACTIONS
    users = {p for s in policy["Statement"] if s["Sid"] != "KeyAdministration" for p in s["Principal"]["AWS"]}
    assert users == {role("deploy-dev"), role("deploy-prod"), role("preview"), role("preview-prod-preview")}
    for action in ("kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt", "kms:ReEncryptFrom"):
        assert not kms_can(boot, ADMIN, action), action


def test_no_ci_role_can_reconfigure_the_bucket_or_its_key(boot):
    for who in (role("deploy-dev"), role("deploy-prod"), role("preview")):
        for action in ("s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:PutBucketVersioning",
                       "s3:PutEncryptionConfiguration", "s3:PutLifecycleConfiguration", "s3:DeleteBucket",
                       "s3:PutBucketPublicAccessBlock", "s3:PutBucketLogging"):
            assert not s3_can(boot, who, action, None), (who, action)
        for action in ("kms:PutKeyPolicy", "kms:CreateGrant", "kms:ScheduleKeyDeletion"):
            assert not kms_allows(Request(who, action, state_key_arn(boot)), identity(boot, who),
                                  key_policy(boot)), (who, action)
    # An account administrator still can (break glass, in CloudTrail).
    assert s3_can(boot, ADMIN, "s3:PutBucketPolicy", None)


@pytest.mark.parametrize("mutation", ["no-tls-deny", "deny-headerless", "no-partition", "no-preview-deny"])
def test_the_checks_fail_on_a_weaker_bucket_policy(boot, mutation):
    """The evaluator sees each statement's effect: remove or break one and the matching check flips."""
    rec = copy.copy(boot)
    policy = copy.deepcopy(bucket_policy(boot))
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    if mutation == "no-tls-deny":
        policy["Statement"].remove(by_sid["DenyInsecureTransport"])
        check = lambda r: s3_can(r, role("deploy-dev"), "s3:GetObject", checkpoint("dev"),  # noqa: E731
                                 **{"aws:SecureTransport": "false"})
    elif mutation == "deny-headerless":
        # Without `Null: false`, a put that names no encryption (every Pulumi write) is refused.
        del by_sid["DenyNonKmsEncryption"]["Condition"]["Null"]
        check = lambda r: not s3_can(r, role("deploy-dev"), "s3:PutObject", checkpoint("dev"))  # noqa: E731
    elif mutation == "no-partition":
        policy["Statement"] = [s for s in policy["Statement"] if not s["Sid"].startswith("OnlyItsWriters")]
        check = lambda r: s3_can(r, role("deploy-dev"), "s3:PutObject", checkpoint("prod"))  # noqa: E731
    else:
        policy["Statement"].remove(by_sid["PreviewRolesOnlyRead"])
        # ReadOnlyAccess is taken to allow anything (its text is AWS's): only the bucket policy stops it.
        check = lambda r: s3_can(r, role("preview"), "s3:DeleteObject", lock("dev"))  # noqa: E731
    assert not check(boot)
    mutated = boot.one("aws:s3/bucketPolicy:BucketPolicy", "pulumi-state-policy")
    original = mutated.inputs["policy"]
    try:
        mutated.inputs["policy"] = json.dumps(policy)
        assert check(rec)
    finally:
        mutated.inputs["policy"] = original


# --- operators ---------------------------------------------------------------------------------------

def test_an_operator_writes_its_stacks_state_and_not_prods(tmp_path):
    rec = plan(tmp_path, operators={"dev": [ADMIN]})
    assert writes(rec, ADMIN, checkpoint("dev")) and reads(rec, ADMIN, checkpoint("dev"))
    assert not s3_can(rec, ADMIN, "s3:PutObject", checkpoint("prod"))
    assert not s3_can(rec, ADMIN, "s3:DeleteObject", lock("prod"))


def test_a_gcp_operator_joins_the_state_writers(tmp_path):
    rec = plan(tmp_path, operators={"gke-dev": ["user:me@example.com"]})
    writers = rec.one("gcp:storage/bucketIAMBinding:BucketIAMBinding", "pulumi-state-writers").inputs
    assert writers["role"] == "roles/storage.objectUser"
    assert sorted(writers["members"]) == sorted([SA.format("deploy-dev"), "user:me@example.com"])


# --- a bucket made elsewhere, a custom name ---------------------------------------------------------------

def aws_config() -> dict:
    data = yaml.safe_load((BOOTSTRAP / "Pulumi.ci.yaml").read_text())
    return dict(data["config"]["tfserving-bootstrap:aws"])


def test_a_user_supplied_bucket_is_used_not_created(tmp_path):
    rec = plan(tmp_path, aws={**aws_config(), "stateBucket": "team-state"})
    assert not rec.of_type("aws:s3/bucket:Bucket")
    assert not [k for k in rec.of_type("aws:kms/key:Key") if k.name == "pulumi-state-key"]
    statements = {s["Sid"]: s for d in identity_policies(rec, "tfplatform-ci-deploy-dev")[:1] for s in d["Statement"]}
    assert statements["StateObjects"]["Resource"] == "arn:aws:s3:::team-state/*"
    assert statements["NoChangesToStateBucket"]["Resource"] == "arn:aws:s3:::team-state"
    preview = {s["Sid"]: s for d in identity_policies(rec, "tfplatform-ci-preview")[:1] for s in d["Statement"]}
    assert preview["StateReadObjects"]["Resource"] == "arn:aws:s3:::team-state/*"
    assert not any(a.startswith(("s3:Put", "s3:Delete")) for s in preview.values() if s["Effect"] == "Allow"
                   for a in s["Action"])
    assert rec.outputs["stateBackends"]["aws"] == {"bucket": "team-state", "created": False,
                                                   "url": "s3://team-state?region=us-east-1&awssdk=v2"}
    assert rec.outputs["loginCommands"]["aws"] == "pulumi login 's3://team-state?region=us-east-1&awssdk=v2'"


def test_a_custom_name_is_created_when_asked(tmp_path):
    rec = plan(tmp_path, aws={**aws_config(), "stateBucket": "team-state", "createStateBucket": True})
    assert rec.one("aws:s3/bucket:Bucket", "pulumi-state").inputs["bucket"] == "team-state"
    assert rec.one("aws:s3/bucket:Bucket", "pulumi-state-access-logs").inputs["bucket"] == "team-state-access-logs"


# --- outputs -------------------------------------------------------------------------------------------

def test_outputs_are_the_exact_login_commands(boot):
    out = boot.outputs
    s3 = f"s3://{BUCKET}?region={REGION}&awssdk=v2"
    gs = f"gs://{GCS_BUCKET}"
    assert s3_backend_url(BUCKET, REGION) == s3 and gcs_backend_url(GCS_BUCKET) == gs
    assert out["loginCommands"] == {"aws": f"pulumi login '{s3}'", "gcp": f"pulumi login '{gs}'"}
    assert out["stackLoginCommands"] == {"dev": f"pulumi login '{s3}'", "prod": f"pulumi login '{s3}'",
                                         "gke-dev": f"pulumi login '{gs}'"}
    assert out["stateBackends"]["aws"]["url"] == s3 and out["stateBackends"]["gcp"]["url"] == gs
    assert out["stateBackends"]["aws"]["accessLogBucket"] == f"{BUCKET}-access-logs"
    # The repository variables the workflows log in with (.github/workflows/*.yml).
    assert out["githubVariables"]["(repository)"]["PULUMI_BACKEND_URL"] == s3
    assert out["githubVariables"]["(repository)"]["PULUMI_GCP_BACKEND_URL"] == gs
    assert out["stackInitCommands"] == {
        "dev": "pulumi stack init dev --secrets-provider 'awskms://alias/tfplatform-ci-dev?region=us-east-1'",
        "prod": "pulumi stack init prod --secrets-provider 'awskms://alias/tfplatform-ci-prod?region=us-east-1'",
        "gke-dev": "pulumi stack init gke-dev --secrets-provider 'gcpkms://projects/example-project/locations/"
                   "global/keyRings/tfplatform-ci-pulumi/cryptoKeys/gke-dev'"}


# --- GCP -----------------------------------------------------------------------------------------------

SA = "serviceAccount:tfplatform-ci-{}@example-project.iam.gserviceaccount.com"
GCS_AGENT = "serviceAccount:service-123456789012@gs-project-accounts.iam.gserviceaccount.com"


def test_gcs_bucket_is_versioned_uniform_private_and_cmek(boot):
    bucket = boot.one("gcp:storage/bucket:Bucket", "pulumi-state").inputs
    assert bucket["name"] == GCS_BUCKET and bucket["location"] == "US-CENTRAL1"
    assert bucket["uniformBucketLevelAccess"] is True and bucket["publicAccessPrevention"] == "enforced"
    assert bucket["versioning"] == {"enabled": True} and bucket["forceDestroy"] is False
    assert "retentionPolicy" not in bucket  # a retention policy would keep Pulumi from deleting its locks
    assert bucket["softDeletePolicy"] == {"retentionDurationSeconds": 7 * 86400}
    rules = [(r["action"]["type"], r["condition"]) for r in bucket["lifecycleRules"]]
    assert rules == [("Delete", {"daysSinceNoncurrentTime": 90, "withState": "ARCHIVED"}),
                     ("AbortIncompleteMultipartUpload", {"age": 7})]
    key = boot.one("gcp:kms/cryptoKey:CryptoKey", "pulumi-state-key")
    assert bucket["encryption"] == {"defaultKmsKeyName": f"{key.name}-{_hash(key)}-id"}
    # CMEK keys for a bucket must be in its location: a `global` key ring cannot encrypt it.
    assert boot.one("gcp:kms/keyRing:KeyRing", "pulumi-state-ring").inputs["location"] == "us-central1"
    assert key.inputs["rotationPeriod"] == "7776000s"


def _hash(resource) -> str:
    from stacks.mock_engine import _short_hash

    return _short_hash(resource.type + resource.name)


def test_only_the_gcs_service_agent_uses_the_state_key(boot):
    binding = boot.one("gcp:kms/cryptoKeyIAMBinding:CryptoKeyIAMBinding", "pulumi-state-cmek").inputs
    assert (binding["role"], binding["members"]) == ("roles/cloudkms.cryptoKeyEncrypterDecrypter", [GCS_AGENT])
    bucket = boot.one("gcp:storage/bucket:Bucket", "pulumi-state")
    grant = boot.one("gcp:kms/cryptoKeyIAMBinding:CryptoKeyIAMBinding", "pulumi-state-cmek")
    assert grant.urn in bucket.dependencies  # the agent may use the key before the bucket names it


def gcs_bindings(rec: Recording) -> list[dict]:
    return [{"role": b.inputs["role"], "member": m} for b in rec.of_type("gcp:storage/bucketIAMBinding:BucketIAMBinding")
            for m in b.inputs["members"]]


def test_gcs_deploy_accounts_write_previews_only_read(boot):
    bindings = gcs_bindings(boot)
    assert {(b["role"], b["member"]) for b in bindings} == {
        ("roles/storage.objectUser", SA.format("deploy-dev")), ("roles/storage.objectViewer", SA.format("preview"))}
    obj = f".pulumi/locks/organization/{PROJECT}/gke-dev/x.json"
    assert gcs_allows(GcsRequest(SA.format("deploy-dev"), "storage.objects.create", GCS_BUCKET, obj), bindings)
    assert gcs_allows(GcsRequest(SA.format("deploy-dev"), "storage.objects.delete", GCS_BUCKET, obj), bindings)
    assert gcs_allows(GcsRequest(SA.format("preview"), "storage.objects.get", GCS_BUCKET, obj), bindings)
    assert not gcs_allows(GcsRequest(SA.format("preview"), "storage.objects.create", GCS_BUCKET, obj), bindings)
    assert not gcs_allows(GcsRequest(SA.format("preview"), "storage.objects.delete", GCS_BUCKET, obj), bindings)
    assert not gcs_allows(GcsRequest("user:someone@example.com", "storage.objects.get", GCS_BUCKET, obj), bindings)


def test_gcs_data_access_audit_logs(boot, tmp_path):
    audit = boot.one("gcp:projects/iAMAuditConfig:IAMAuditConfig", "pulumi-state-data-access").inputs
    assert audit["service"] == "storage.googleapis.com" and audit["project"] == "example-project"
    assert [c["logType"] for c in audit["auditLogConfigs"]] == ["ADMIN_READ", "DATA_READ", "DATA_WRITE"]
    data = yaml.safe_load((BOOTSTRAP / "Pulumi.ci.yaml").read_text())["config"]["tfserving-bootstrap:gcp"]
    quiet = plan(tmp_path, gcp={**data, "stateDataAccessLogs": False, "stateSoftDeleteDays": 0})
    assert not quiet.of_type("gcp:projects/iAMAuditConfig:IAMAuditConfig")
    assert quiet.one("gcp:storage/bucket:Bucket", "pulumi-state").inputs["softDeletePolicy"] == {
        "retentionDurationSeconds": 0}


# --- config errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("cloud", "extra", "message"), [
    ("aws", {"createStateBucket": False}, "tfserving-bootstrap:aws.stateBucket: None is not allowed: expected the "
     "name of an existing bucket when aws.createStateBucket is false"),
    ("aws", {"stateNoncurrentVersionDays": 0}, "tfserving-bootstrap:aws.stateNoncurrentVersionDays: 0 is not allowed"),
    ("aws", {"stateBucket": "x" * 55, "createStateBucket": True}, "tfserving-bootstrap:aws.stateBucket: 'xxxxx"),
    ("aws", {"stateBucket": "Not_A_Bucket"}, "tfserving-bootstrap:aws.stateBucket: 'Not_A_Bucket'"),
    ("gcp", {"createStateBucket": False}, "tfserving-bootstrap:gcp.stateBucket: None is not allowed"),
    ("gcp", {"stateSoftDeleteDays": 91}, "tfserving-bootstrap:gcp.stateSoftDeleteDays: 91 is not allowed"),
    ("gcp", {"stateSoftDeleteDays": 3}, "tfserving-bootstrap:gcp.stateSoftDeleteDays: 3 is not allowed: expected "
     "0 (soft delete off) or 7-90 days"),
    ("gcp", {"stateBucketLocation": "global"}, "tfserving-bootstrap:gcp.stateBucketLocation: 'global'"),
])
def test_bad_state_config_is_one_line_before_any_resource(tmp_path, cloud, extra, message):
    key = f"tfserving-bootstrap:{cloud}"
    error = refusal(tmp_path, lambda config: config.update({key: {**config[key], **extra}}))
    assert error.startswith(message), error


# --- checkov and trivy on the bootstrap's plan ------------------------------------------------------------

def bootstrap_trivy_ignore(path: Path, with_bootstrap: bool = True) -> Path:
    """The shared ignore file's entries plus bootstrap/trivyignore.yaml's (see its header)."""
    entries = trivy_ignore_entries(DEFAULT_TRIVY_IGNORE)
    if with_bootstrap:
        entries += trivy_ignore_entries(BOOTSTRAP_TRIVY_IGNORE)
    return write_trivy_ignore(entries, path)


@pytest.fixture(scope="module")
def bootstrap_scan(boot, checkov, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("scan-ci")
    return scan_recording(boot, workdir, frameworks=[TERRAFORM_PLAN],
                          trivy_ignore_file=bootstrap_trivy_ignore(workdir / "ignore.yaml"))


def test_the_bootstrap_passes_checkov_and_trivy(bootstrap_scan):
    assert bootstrap_scan.unmapped == {} and bootstrap_scan.mapping_problems == []
    failed = [f"{scanner} {c.check_id} {c.resource}" for scanner, c in bootstrap_scan.failed_checks]
    assert not failed, bootstrap_scan.to_text()
    checkov = bootstrap_scan.frameworks[TERRAFORM_PLAN]
    assert checkov.parsing_errors == 0 and checkov.passed >= 100, checkov.passed
    # The state bucket's resources were really judged (no vacuous pass).
    passed = checkov.passed_by_resource()
    for resource, at_least in {"aws_s3_bucket.pulumi-state": 5, "aws_kms_key.pulumi-state-key": 2,
                               "aws_s3_bucket_public_access_block.pulumi-state-public-access": 4,
                               "google_storage_bucket.pulumi-state": 3}.items():
        assert passed.get(resource, 0) >= at_least, (resource, passed.get(resource))
    assert bootstrap_scan.trivy[TERRAFORM_PLAN].passed >= 50


def test_the_bootstraps_trivy_ignores_are_needed(boot, tmp_path):
    # Without bootstrap/trivyignore.yaml each of its findings reappears.
    result = scan_recording(boot, tmp_path, frameworks=[TERRAFORM_PLAN], scanners=["trivy"],
                            trivy_ignore_file=bootstrap_trivy_ignore(tmp_path / "ignore.yaml", with_bootstrap=False))
    found = {c.check_id for _, c in result.failed_checks}
    wanted = {e["id"] for e in trivy_ignore_entries(BOOTSTRAP_TRIVY_IGNORE)}
    assert wanted and wanted <= found, (wanted, found)
    assert all(len(str(e["statement"]).split()) >= 8 for e in trivy_ignore_entries(BOOTSTRAP_TRIVY_IGNORE))
