"""Only the publisher can change a model; the readers read only their prefix, from inside the VPC
(issue 19, findings 4, 7, 8). The plan's policies are judged by a policy evaluator (tests/iam_eval.py)."""

from __future__ import annotations

import copy
import json

import pytest

from stacks.config import ConfigError, parse_settings
from stacks.diff import diff_plans
from stacks.mock_engine import ACCOUNT_ID, DEPLOY_ROLE, Recording, _short_hash
from stacks.plan import ROOT, to_json
from stacks.stack_files import load_stack_config
from tests.iam_eval import GcsRequest, Request, cel_eval, gcs_allows, kms_allows, s3_allows

NS = "tfserving-platform"
ADMIN = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*", "kms:*"], "Resource": "*"}]}
"""An identity policy with every S3 and KMS right (the deploy role, or any administrator)."""
VIA_S3 = {"kms:ViaService": "s3.us-east-1.amazonaws.com", "kms:CallerAccount": ACCOUNT_ID}
WRITES = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectTagging",
          "s3:PutObjectRetention", "s3:PutObjectLegalHold", "s3:BypassGovernanceRetention", "s3:PutObjectAcl")


class AwsPlan:
    """The policies one AWS plan writes, and the principals they concern."""

    def __init__(self, rec: Recording):
        self.rec = rec
        self.bucket = f"arn:aws:s3:::{rec.outputs['modelBucket']}"
        self.publisher = rec.outputs["modelPublisherRoleArn"]
        self.reader = rec.outputs["modelReaderRoleArn"]
        self.bucket_policy = rec.one("aws:s3/bucketPolicy:BucketPolicy", "models-policy").inputs["policy"]
        self.key_policy = rec.one("aws:kms/key:Key", "models-key").inputs["policy"]
        # The key S3 encrypts the models with (the bucket's default encryption).
        sse = rec.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                      "models-sse").inputs["rules"][0]
        self.key_arn = sse["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"]
        # Every identity policy the plan attaches to a role, by role name.
        self.role_policies: dict[str, list[str]] = {}
        for r in rec.of_type("aws:iam/rolePolicy:RolePolicy"):
            self.role_policies.setdefault(r.inputs["role"], []).append(r.inputs["policy"])
        endpoint = rec.one("aws:ec2/vpcEndpoint:VpcEndpoint", "network-s3")
        self.endpoint = endpoint
        # The mock engine's id of a resource: <name>-<hash of type and name>-id (stacks/mock_engine.py).
        self.vpce = f"network-s3-{_short_hash(endpoint.type + 'network-s3')}-id"

    def identity(self, principal: str) -> list:
        if principal in (self.publisher, self.reader):
            # RolePolicy.role is the role's id, which the mock engine makes <role name>-id.
            return self.role_policies[f"{principal.split('/')[-1]}-id"]
        return [ADMIN]

    def s3(self, principal: str, action: str, resource: str, **context: str) -> bool:
        ctx = {"aws:SecureTransport": "true", "aws:PrincipalArn": principal, **context}
        return s3_allows(Request(principal, action, resource, ctx), self.identity(principal), self.bucket_policy)

    def kms(self, principal: str, action: str, **context: str) -> bool:
        ctx = {"aws:PrincipalArn": principal, **context}
        return kms_allows(Request(principal, action, self.key_arn, ctx),
                          self.identity(principal), self.key_policy)


@pytest.fixture(scope="module")
def aws(dev: Recording) -> AwsPlan:
    return AwsPlan(dev)


def _others(plan: AwsPlan) -> dict[str, str]:
    return {"reader": plan.reader, "deploy role": f"arn:aws:iam::{ACCOUNT_ID}:role/{DEPLOY_ROLE}",
            "an account user with s3:*": f"arn:aws:iam::{ACCOUNT_ID}:user/alice",
            "a role of another account": "arn:aws:iam::210987654321:role/ci"}


def test_role_policies_are_found_for_the_plan_roles(aws: AwsPlan):
    # The evaluator judges the policies the plan attaches: make sure it finds them.
    assert aws.identity(aws.publisher) and aws.identity(aws.reader)


@pytest.mark.parametrize("action", WRITES)
def test_only_the_publisher_writes_the_model_prefix(aws: AwsPlan, action: str):
    key = f"{aws.bucket}/models/digits/1/saved_model.pb"
    assert aws.s3(aws.publisher, action, key, **{"aws:SourceIp": "198.51.100.7"}) == (
        action not in ("s3:PutObjectRetention", "s3:PutObjectLegalHold", "s3:BypassGovernanceRetention",
                       "s3:PutObjectAcl", "s3:DeleteObjectVersion"))
    for who, principal in _others(aws).items():
        # Inside the VPC too: the endpoint gives no write.
        assert not aws.s3(principal, action, key, **{"aws:SourceVpce": aws.vpce}), (who, action)


def test_nobody_writes_outside_the_prefix_and_the_deploy_role_keeps_the_bucket_config(aws: AwsPlan):
    deploy = _others(aws)["deploy role"]
    assert not aws.s3(aws.publisher, "s3:PutObject", f"{aws.bucket}/elsewhere/x")
    assert not aws.s3(deploy, "s3:PutObject", f"{aws.bucket}/elsewhere/x")
    for action in ("s3:PutBucketPolicy", "s3:PutLifecycleConfiguration", "s3:PutBucketVersioning",
                   "s3:PutEncryptionConfiguration", "s3:GetObject"):
        resource = f"{aws.bucket}/models/digits/1/x" if action == "s3:GetObject" else aws.bucket
        assert aws.s3(deploy, action, resource), action
    assert not aws.s3(deploy, "s3:GetObject", f"{aws.bucket}/models/x", **{"aws:SecureTransport": "false"})


def test_only_the_publisher_encrypts_with_the_key(aws: AwsPlan):
    for action in ("kms:Encrypt", "kms:GenerateDataKey"):
        assert aws.kms(aws.publisher, action, **VIA_S3)
        assert not aws.kms(aws.publisher, action)  # not outside S3
        for who, principal in _others(aws).items():
            assert not aws.kms(principal, action, **VIA_S3), (who, action)
    deploy = _others(aws)["deploy role"]
    # Administration stays with the account's IAM (the deploy role), but not CreateGrant.
    for action in ("kms:PutKeyPolicy", "kms:EnableKeyRotation", "kms:ScheduleKeyDeletion", "kms:DescribeKey"):
        assert aws.kms(deploy, action), action
    assert not aws.kms(deploy, "kms:CreateGrant")
    assert not aws.kms(deploy, "kms:ReEncryptFrom", **VIA_S3)


def test_readers_decrypt_only_through_s3(aws: AwsPlan):
    assert aws.kms(aws.reader, "kms:Decrypt", **VIA_S3)
    assert not aws.kms(aws.reader, "kms:Decrypt")
    assert not aws.kms(aws.reader, "kms:Decrypt", **{**VIA_S3, "kms:ViaService": "ec2.us-east-1.amazonaws.com"})
    statement = next(s for s in json.loads(aws.identity(aws.reader)[0])["Statement"] if s["Sid"] == "DecryptModels")
    assert statement["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}


def test_the_reader_reads_only_through_the_vpc_endpoint(aws: AwsPlan):
    key = f"{aws.bucket}/models/digits/1/saved_model.pb"
    assert aws.s3(aws.reader, "s3:GetObject", key, **{"aws:SourceVpce": aws.vpce})
    assert aws.s3(aws.reader, "s3:ListBucket", aws.bucket, **{"aws:SourceVpce": aws.vpce, "s3:prefix": "models/"})
    assert not aws.s3(aws.reader, "s3:GetObject", key)  # from the internet with stolen credentials
    assert not aws.s3(aws.reader, "s3:GetObject", key, **{"aws:SourceVpce": "vpce-0123456789abcdef0"})
    assert not aws.s3(aws.reader, "s3:ListBucket", aws.bucket, **{"aws:SourceVpce": aws.vpce, "s3:prefix": ""})
    assert not aws.s3(aws.reader, "s3:GetObject", f"{aws.bucket}/other/x", **{"aws:SourceVpce": aws.vpce})
    # The id is the S3 gateway endpoint's own output (the policy waits for the endpoint).
    policy = aws.rec.one("aws:iam/rolePolicy:RolePolicy", "model-reader-read-models")
    assert aws.endpoint.urn in policy.dependencies
    assert aws.endpoint.inputs["vpcEndpointType"] == "Gateway"


def test_the_publisher_is_not_bound_to_the_vpc(aws: AwsPlan):
    # The publisher runs outside the VPC (a laptop, CI): a SourceVpce condition would lock it out.
    assert "aws:SourceVpce" not in json.dumps([json.loads(p) for p in aws.identity(aws.publisher)])
    assert "aws:SourceVpce" not in aws.bucket_policy


def test_publisher_trust_follows_the_configured_principals(plan_with, dev: Recording):
    default = json.loads(dev.one("aws:iam/role:Role", "models-publisher").inputs["assumeRolePolicy"])
    # Unset: the deploy identity, named (the account root would let any principal with sts:AssumeRole on *).
    assert [s["Principal"] for s in default["Statement"]] == [{"AWS": f"arn:aws:iam::{ACCOUNT_ID}:role/{DEPLOY_ROLE}"}]
    rec = plan_with(modelPublisherPrincipals=[f"arn:aws:iam::{ACCOUNT_ID}:role/publish"],
                    modelPublisherGithubSubjects=["repo:acme/models:environment:publish"])
    trust = json.loads(rec.one("aws:iam/role:Role", "models-publisher").inputs["assumeRolePolicy"])
    by_sid = {s["Sid"]: s for s in trust["Statement"]}
    assert by_sid["Publishers"]["Principal"] == {"AWS": [f"arn:aws:iam::{ACCOUNT_ID}:role/publish"]}
    github = by_sid["GithubPublishers"]
    assert github["Principal"]["Federated"].endswith(":oidc-provider/token.actions.githubusercontent.com")
    assert github["Condition"] == {"StringEquals": {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": ["repo:acme/models:environment:publish"]}}


def test_prod_has_the_sts_endpoint_and_dev_does_not(dev: Recording, prod: Recording):
    sts = [r for r in prod.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") if r.name == "network-sts"]
    assert len(sts) == 1 and sts[0].inputs["vpcEndpointType"] == "Interface"
    assert sts[0].inputs["privateDnsEnabled"] is True and sts[0].inputs["serviceName"] == "com.amazonaws.us-east-1.sts"
    assert len(sts[0].inputs["subnetIds"]) == 3
    sg = prod.one("aws:ec2/securityGroup:SecurityGroup", "network-sts-endpoint")
    assert "ingress" not in sg.inputs and "egress" not in sg.inputs
    assert sts[0].inputs["securityGroupIds"] and sg.urn in sts[0].dependencies
    rules = [r.inputs for r in prod.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
             if r.name == "network-sts-endpoint-https"]
    assert [(r["ipProtocol"], r["fromPort"], r["toPort"], r["cidrIpv4"]) for r in rules] == [
        ("tcp", 443, 443, "10.0.0.0/16")]
    assert not [r for r in dev.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") if r.name == "network-sts"]


# --- Object Lock ---

def _raw(stack: str, **values: object) -> dict[str, str]:
    config = dict(load_stack_config(ROOT / "Pulumi.yaml", ROOT / f"Pulumi.{stack}.yaml", stack).config)
    config.update({f"{NS}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()})
    return config


@pytest.mark.parametrize(("stack", "values", "key"), [
    ("prod", {"modelBucketObjectLock": {"mode": "GOVERNANCE", "days": 0}}, "modelBucketObjectLock.days"),
    ("prod", {"modelBucketObjectLock": {"mode": "COMPLIANCE", "days": 36501}}, "modelBucketObjectLock.days"),
    ("prod", {"modelBucketObjectLock": {"mode": "off", "days": 5}}, "modelBucketObjectLock.days"),
    ("prod", {"modelBucketObjectLock": {"mode": "governance", "days": 5}}, "modelBucketObjectLock.mode"),
    ("dev", {"modelBucketObjectLock": {"mode": "GOVERNANCE", "days": 5}}, "bucketForceDestroy"),
    ("gke-dev", {"modelBucketObjectLock": {"mode": "GOVERNANCE", "days": 5}}, "modelBucketObjectLock"),
    ("prod", {"modelPublisherPrincipals": ["arn:aws:iam::123:role/x"]}, "modelPublisherPrincipals.0"),
    ("prod", {"modelPublisherGithubSubjects": ["repo:acme/*"]}, "modelPublisherGithubSubjects.0"),
    ("gke-dev", {"modelPublisherMembers": ["alice@example.com"]}, "modelPublisherMembers.0"),
    ("dev", {"modelPublisherMembers": ["user:alice@example.com"]}, "modelPublisherMembers"),
    ("gke-dev", {"vpcStsEndpoint": True}, "vpcStsEndpoint"),
])
def test_trust_settings_are_validated(stack: str, values: dict, key: str):
    with pytest.raises(ConfigError) as caught:
        parse_settings(_raw(stack, **values))
    assert any(f"- {NS}:{key} = " in line for line in str(caught.value).splitlines()), str(caught.value)


def test_prod_object_lock_never_replaces_the_bucket(prod: Recording, plan_with):
    lock = prod.one("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration", "models-object-lock")
    assert lock.inputs["objectLockEnabled"] == "Enabled"
    assert lock.inputs["rule"]["defaultRetention"] == {"mode": "GOVERNANCE", "days": 30}
    assert prod.one("aws:s3/bucketVersioning:BucketVersioning", "models-versioning").urn in lock.dependencies
    assert lock.protect
    # The bucket's own objectLockEnabled forces a new bucket: it is never set.
    assert "objectLockEnabled" not in prod.one("aws:s3/bucket:Bucket", "models").inputs
    off = plan_with("prod", modelBucketObjectLock={"mode": "off"})
    change = diff_plans(to_json(off), to_json(prod), "prod", "HEAD")
    ops = {(c.type, c.name): c.op for c in change.changes}
    assert ops[("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration", "models-object-lock")] == "create"
    assert not [c for c in change.changes if c.op in ("replace", "delete")], change.changes


def test_setting_object_lock_on_the_bucket_itself_is_flagged_as_a_replacement(prod: Recording):
    before = to_json(prod)
    after = copy.deepcopy(before)
    bucket = next(r for r in after["resources"] if r["type"] == "aws:s3/bucket:Bucket")
    bucket["inputs"]["objectLockEnabled"] = True
    ops = {c.name: c for c in diff_plans(before, after, "prod", "HEAD").changes}
    assert ops["models"].op == "replace"
    assert [f.path for f in ops["models"].fields if f.replaces] == ["objectLockEnabled"]


# --- GCP ---

def _bindings(rec: Recording) -> list[dict]:
    return [{"role": r.inputs["role"], "member": r.inputs["member"],
             "condition": (r.inputs.get("condition") or {}).get("expression")}
            for r in rec.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")]


def test_gcp_only_the_publisher_writes_and_the_reader_lists_only_its_prefix(gke: Recording):
    bucket = gke.outputs["modelBucket"]
    bindings = _bindings(gke)
    reader = f"serviceAccount:{gke.outputs['modelReaderServiceAccount']}"
    publisher = f"serviceAccount:{gke.outputs['modelPublisherServiceAccount']}"
    assert {b["member"] for b in bindings} == {reader, publisher}
    # No project-level storage grant from this stack either.
    assert not [r for r in gke.resources if r.type.startswith("gcp:projects/") and "storage" in str(r.inputs)]
    obj = "models/digits/1/saved_model.pb"
    for permission in ("storage.objects.create", "storage.objects.delete", "storage.objects.update"):
        assert gcs_allows(GcsRequest(publisher, permission, bucket, obj), bindings)
        assert not gcs_allows(GcsRequest(publisher, permission, bucket, "other/x"), bindings)
        for member in (reader, "user:eve@example.com"):
            assert not gcs_allows(GcsRequest(member, permission, bucket, obj), bindings), (member, permission)
    for member in (reader, publisher):
        assert gcs_allows(GcsRequest(member, "storage.objects.get", bucket, obj), bindings)
        assert gcs_allows(GcsRequest(member, "storage.objects.list", bucket, list_prefix="models/digits/"), bindings)
        assert not gcs_allows(GcsRequest(member, "storage.objects.get", bucket, "other/x"), bindings)
        # The bucket-level branch is no longer open: listing the whole bucket or another prefix is refused.
        for prefix in (None, "", "other/", "model"):
            assert not gcs_allows(GcsRequest(member, "storage.objects.list", bucket, list_prefix=prefix), bindings), prefix


def test_cel_subset_is_evaluated_not_guessed():
    request = GcsRequest("m", "storage.objects.list", "b", list_prefix="models/")
    assert cel_eval('resource.type == "storage.googleapis.com/Bucket"', request)
    assert not cel_eval('resource.name.startsWith("projects/_/buckets/b/objects/")', request)
    with pytest.raises(NotImplementedError):
        cel_eval('resource.name.endsWith("x")', request)


def test_gcp_publisher_members_may_act_as_it(plan_with):
    rec = plan_with("gke-dev", modelPublisherMembers=[
        "group:ml-publishers@example.com",
        "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/gh/attribute.repository/acme/models"])
    grants = {r.inputs["member"]: r.inputs["role"] for r in rec.of_type("gcp:serviceaccount/iAMMember:IAMMember")
              if r.name.startswith("model-publisher-member-")}
    assert grants == {
        "group:ml-publishers@example.com": "roles/iam.serviceAccountTokenCreator",
        "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/gh/attribute.repository/acme/models":
            "roles/iam.workloadIdentityUser"}
