"""The S3 model bucket and the IRSA reader role (mock engine)."""

from __future__ import annotations

import json

from stacks.mock_engine import Recording


def test_bucket_is_private_encrypted_and_versioned(dev: Recording):
    block = dev.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "models-public-access").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                          "restrictPublicBuckets"))
    sse = dev.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                  "models-sse").inputs["rules"][0]
    assert sse["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    # The mock engine names the key's ARN after the resource: the bucket's own key, not the cluster's.
    assert sse["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"].startswith("arn:aws:kms:us-east-1:")
    assert ":models-key-" in sse["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"]
    assert sse["bucketKeyEnabled"] is True
    versioning = dev.one("aws:s3/bucketVersioning:BucketVersioning", "models-versioning").inputs
    assert versioning["versioningConfiguration"]["status"] == "Enabled"
    ownership = dev.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls", "models-ownership").inputs
    assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"


def test_bucket_policy_denies_plain_http_after_public_block(dev: Recording):
    policy_res = dev.one("aws:s3/bucketPolicy:BucketPolicy", "models-policy")
    statement = json.loads(policy_res.inputs["policy"])["Statement"][0]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    bucket_arn = f"arn:aws:s3:::{dev.outputs['modelBucket']}"
    assert statement["Resource"] == [bucket_arn, f"{bucket_arn}/*"]
    block = dev.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "models-public-access")
    assert block.urn in policy_res.dependencies


def test_lifecycle_expires_noncurrent_versions(dev: Recording):
    rules = {r["id"]: r for r in dev.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                                         "models-lifecycle").inputs["rules"]}
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"]["noncurrentDays"] == 30
    assert rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 7


def test_dev_bucket_destroyable_prod_bucket_protected_and_retained(dev: Recording, prod: Recording):
    dev_bucket = dev.one("aws:s3/bucket:Bucket", "models")
    assert dev_bucket.inputs["forceDestroy"] is True and not dev_bucket.protect
    prod_bucket = prod.one("aws:s3/bucket:Bucket", "models")
    assert prod_bucket.inputs["forceDestroy"] is False and prod_bucket.protect
    assert prod_bucket.retain_on_delete and not dev_bucket.retain_on_delete
    assert prod.one("aws:kms/key:Key", "models-key").protect


def test_irsa_trust_is_scoped_to_the_one_service_account(dev: Recording):
    role = dev.one("aws:iam/role:Role", "model-reader-role").inputs
    statements = json.loads(role["assumeRolePolicy"])["Statement"]
    assert len(statements) == 1
    (st,) = statements
    assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert st["Principal"]["Federated"].startswith("arn:aws:iam::123456789012:oidc-provider/oidc.eks.")
    conditions = st["Condition"]["StringEquals"]
    subs = [v for k, v in conditions.items() if k.endswith(":sub")]
    auds = [v for k, v in conditions.items() if k.endswith(":aud")]
    assert subs == ["system:serviceaccount:serving:tfserving"]
    assert auds == ["sts.amazonaws.com"]


def test_reader_policy_reads_only_the_models_prefix(dev: Recording):
    policy = json.loads(dev.one("aws:iam/rolePolicy:RolePolicy", "model-reader-read-models").inputs["policy"])
    bucket_arn = f"arn:aws:s3:::{dev.outputs['modelBucket']}"
    actions = {s["Sid"]: s for s in policy["Statement"]}
    assert actions["ReadModels"]["Action"] == "s3:GetObject"
    assert actions["ReadModels"]["Resource"] == f"{bucket_arn}/models/*"
    assert actions["ListModels"]["Condition"]["StringLike"]["s3:prefix"] == ["models/", "models/*"]
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    written = {s["Action"] for s in policy["Statement"]}
    assert not any(a.startswith(("s3:Put", "s3:Delete")) or a == "s3:*" for a in written)


def test_service_account_carries_the_role_annotation(dev: Recording):
    sa = next(r for r in dev.of_type("kubernetes:core/v1:ServiceAccount"))
    role_arn = dev.outputs["modelReaderRoleArn"]
    assert sa.inputs["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role_arn}
