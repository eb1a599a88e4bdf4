"""The CI trust bootstrap (bootstrap/), run on Pulumi's mock engine: who can become which role, and who
can use which stack's secrets key.

The checks evaluate the recorded policy documents with a small evaluator of IAM's logic for these
documents (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html and,
for keys, https://docs.aws.amazon.com/kms/latest/developerguide/determining-access-key-policy.html): an
explicit Deny anywhere wins; a KMS key is usable when its key policy allows the principal itself, or
allows the account (root) and an identity policy of the principal allows too. Where it cannot know
(an AWS-managed policy's text, a condition on an Allow) it assumes the permissive answer, and a
condition on a Deny is assumed not to apply: so "cannot" here means "cannot, whatever those hold".
Broken documents prove the evaluator says "can" when it should.
"""

from __future__ import annotations

import copy
import json
from fnmatch import fnmatchcase

import pytest
import yaml

from bootstrap import policies
from stacks.mock_engine import Recording, _short_hash, run_program
from stacks.plan import ROOT
from stacks.stack_files import load_stack_config
from tests.iam_eval import Request, kms_allows

import pulumi

BOOTSTRAP = ROOT / "bootstrap"
ACCOUNT = "123456789012"
ISSUER = policies.GITHUB_ISSUER
OIDC_ARN = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER}"
REPO = "example-org/tfserving-platform"
USE = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
       "kms:GenerateDataKeyWithoutPlaintext", "kms:GenerateDataKeyPair"]
ESCALATE = ["kms:CreateGrant", "kms:PutKeyPolicy"]


def plan(tmp_path=None, **overrides) -> Recording:
    stack_file = BOOTSTRAP / "Pulumi.ci.yaml"
    if overrides:
        data = yaml.safe_load(stack_file.read_text())
        for key, value in overrides.items():
            data["config"][f"tfserving-bootstrap:{key}"] = value
        stack_file = tmp_path / "Pulumi.ci.yaml"
        stack_file.write_text(yaml.safe_dump(data))
    cfg = load_stack_config(BOOTSTRAP / "Pulumi.yaml", stack_file, "ci")
    return run_program(BOOTSTRAP / "__main__.py", "ci", cfg.project, cfg.config, cfg.secret_keys)


@pytest.fixture(scope="module")
def boot() -> Recording:
    return plan()


# --- a small evaluator of IAM policy documents ----------------------------------------------

def listed(value) -> list:
    return value if isinstance(value, list) else [value]


def action_in(statement: dict, action: str) -> bool:
    # Action names are case-insensitive; wildcards as in IAM.
    if "NotAction" in statement:
        return not any(fnmatchcase(action.lower(), p.lower()) for p in listed(statement["NotAction"]))
    return any(fnmatchcase(action.lower(), p.lower()) for p in listed(statement["Action"]))


def resource_in(statement: dict, resource: str) -> bool:
    if "NotResource" in statement:
        return not any(fnmatchcase(resource, p) for p in listed(statement["NotResource"]))
    return any(fnmatchcase(resource, p) for p in listed(statement.get("Resource", "*")))


def names_account(statement: dict, account: str) -> bool:
    p = statement.get("Principal", {})
    return p == "*" or any(v in (account, f"arn:aws:iam::{account}:root", "*") for v in listed(p.get("AWS", [])))


def kms_can(key_policy: dict, identity: list[dict], principal: str, action: str, key_arn: str) -> bool:
    """KMS's evaluation (tests/iam_eval.py, shared with the model bucket's tests): the key policy names the
    principal, or delegates to the account and an identity policy allows; any explicit Deny wins."""
    return kms_allows(Request(principal, action, key_arn), identity, key_policy)


def condition_holds(condition: dict, claims: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            claim = claims.get(key.removeprefix(f"{ISSUER}:"))
            if operator == "StringEquals":
                ok = claim in listed(wanted)
            elif operator == "StringLike":
                ok = claim is not None and any(fnmatchcase(claim, w) for w in listed(wanted))
            else:
                ok = True  # an operator this evaluator does not know: assume it admits
            if not ok:
                return False
    return True


def trust_admits(trust: dict, claims: dict[str, str]) -> bool:
    """Would AssumeRoleWithWebIdentity with a GitHub token carrying ``claims`` be allowed?"""
    allows = [s for s in trust["Statement"] if s["Effect"] == "Allow"
              and action_in(s, "sts:AssumeRoleWithWebIdentity")
              and (s.get("Principal") == "*" or OIDC_ARN in listed(s.get("Principal", {}).get("Federated", [])))
              and condition_holds(s.get("Condition", {}), claims)]
    denies = [s for s in trust["Statement"] if s["Effect"] == "Deny" and "Condition" not in s
              and action_in(s, "sts:AssumeRoleWithWebIdentity")]
    return bool(allows) and not denies


SUBJECTS = {
    "dev": f"repo:{REPO}:environment:dev",
    "prod": f"repo:{REPO}:environment:prod",
    "prod-preview": f"repo:{REPO}:environment:prod-preview",
    "pull_request": f"repo:{REPO}:pull_request",
    "branch": f"repo:{REPO}:ref:refs/heads/feature",
    "main": f"repo:{REPO}:ref:refs/heads/main",
    "other-env": f"repo:{REPO}:environment:staging",
    "other-repo": "repo:someone/else:environment:prod",
}


def admitted(trust: dict, audience: str = "sts.amazonaws.com") -> set[str]:
    return {who for who, sub in SUBJECTS.items() if trust_admits(trust, {"sub": sub, "aud": audience})}


# --- the recording ---------------------------------------------------------------------------

def roles(rec: Recording) -> dict[str, dict]:
    return {r.inputs["name"]: r for r in rec.of_type("aws:iam/role:Role")}


def identity_policies(rec: Recording, role_name: str) -> list[dict]:
    """The role's inline policies, and each managed policy as "Allow everything" (its text is AWS's)."""
    inline = [json.loads(r.inputs["policy"]) for r in rec.of_type("aws:iam/rolePolicy:RolePolicy")
              if r.inputs["role"] == role_name]
    managed = [r for r in rec.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
               if r.inputs["role"] == role_name]
    assumed = [{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]} for _ in managed]
    return inline + assumed


def keys(rec: Recording) -> dict[str, tuple[dict, str]]:
    """stack -> (key policy, key ARN as the mock engine answers it: stacks/mock_engine.py PlanMocks)."""
    out = {}
    for key in rec.of_type("aws:kms/key:Key"):
        if not key.name.endswith("-secrets"):
            continue  # the state bucket's key: tests/test_state_backend.py
        stack = key.name.removesuffix("-secrets")
        physical = f"{key.name}-{_short_hash(key.type + key.name)}"
        out[stack] = (json.loads(key.inputs["policy"]), f"arn:aws:kms:us-east-1:{ACCOUNT}:{physical}")
    return out


def role_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


# --- trust -----------------------------------------------------------------------------------

EXPECTED_TRUST = {
    "tfplatform-ci-deploy-dev": {"dev"},
    "tfplatform-ci-deploy-prod": {"prod"},
    "tfplatform-ci-preview": {"pull_request"},
    "tfplatform-ci-preview-prod-preview": {"prod-preview"},
}


def test_each_role_trusts_exactly_its_environment(boot):
    found = {name: admitted(json.loads(r.inputs["assumeRolePolicy"])) for name, r in roles(boot).items()}
    assert found == EXPECTED_TRUST


def test_trust_requires_sts_audience(boot):
    for name, r in roles(boot).items():
        assert admitted(json.loads(r.inputs["assumeRolePolicy"]), audience="https://github.com/example-org") == set(), name


def test_github_oidc_provider_is_for_sts(boot):
    (oidc,) = boot.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc.inputs["url"] == f"https://{ISSUER}" and oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"]


@pytest.mark.parametrize(("condition", "also"), [
    ({"StringLike": {f"{ISSUER}:sub": f"repo:{REPO}:*", f"{ISSUER}:aud": "sts.amazonaws.com"}},
     {"dev", "prod", "prod-preview", "pull_request", "branch", "main", "other-env"}),
    ({"StringEquals": {f"{ISSUER}:sub": [SUBJECTS["dev"], SUBJECTS["prod"]], f"{ISSUER}:aud": "sts.amazonaws.com"}},
     {"dev", "prod"}),
    ({"StringEquals": {f"{ISSUER}:aud": "sts.amazonaws.com"}}, set(SUBJECTS)),
], ids=["wildcard-subject", "two-environments", "no-subject"])
def test_the_trust_check_fails_on_a_wider_trust(condition, also):
    # The evaluator sees what a wider trust admits (the shared role of the finding trusted dev and prod).
    trust = policies.github_trust_policy(ACCOUNT, SUBJECTS["dev"])
    trust["Statement"][0]["Condition"] = condition
    assert admitted(trust) == also


# --- secrets keys ----------------------------------------------------------------------------

def who_can(rec: Recording, stack: str, action: str) -> set[str]:
    key_policy, key_arn = keys(rec)[stack]
    principals = {name: (role_arn(name), identity_policies(rec, name)) for name in roles(rec)}
    # Anyone else in the account with an administrator's IAM policy (a person, another pipeline).
    principals["account-admin"] = (f"arn:aws:iam::{ACCOUNT}:role/Admin",
                                   [{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}])
    return {name for name, (arn, identity) in principals.items()
            if kms_can(key_policy, identity, arn, action, key_arn)}


def test_the_pr_preview_role_cannot_decrypt_prod(boot):
    key_policy, key_arn = keys(boot)["prod"]
    preview = "tfplatform-ci-preview"
    for action in USE + ESCALATE:
        assert not kms_can(key_policy, identity_policies(boot, preview), role_arn(preview), action, key_arn), action


@pytest.mark.parametrize(("stack", "users", "decrypters"), [
    ("dev", {"tfplatform-ci-deploy-dev"}, {"tfplatform-ci-deploy-dev", "tfplatform-ci-preview"}),
    ("prod", {"tfplatform-ci-deploy-prod"}, {"tfplatform-ci-deploy-prod", "tfplatform-ci-preview-prod-preview"}),
])
def test_only_the_stacks_own_roles_use_its_key(boot, stack, users, decrypters):
    assert who_can(boot, stack, "kms:Encrypt") == users
    assert who_can(boot, stack, "kms:Decrypt") == decrypters
    for action in USE:
        assert who_can(boot, stack, action) <= decrypters, action
    # Nobody outside the stack can hand itself the key: another environment's roles are denied
    # grants and policy changes; an account administrator can (break glass, in CloudTrail).
    for action in ESCALATE:
        assert who_can(boot, stack, action) - {"account-admin"} <= users, action


def test_key_policies_give_the_account_administration_only(boot):
    for stack, (key_policy, _) in keys(boot).items():
        root = [s for s in key_policy["Statement"] if names_account(s, ACCOUNT)]
        assert root, stack  # the key stays manageable
        for action in USE:
            assert not any(action_in(s, action) for s in root), (stack, action)
        use = {p for s in key_policy["Statement"] if s["Effect"] == "Allow" and any(action_in(s, a) for a in USE)
               for p in listed(s["Principal"]["AWS"])}
        spec = {"dev": {"deploy-dev", "preview"}, "prod": {"deploy-prod", "preview-prod-preview"}}[stack]
        assert use == {role_arn(f"tfplatform-ci-{x}") for x in spec}


def test_keys_rotate_and_are_protected(boot):
    for key in boot.of_type("aws:kms/key:Key"):
        assert key.inputs["enableKeyRotation"] is True
        assert key.inputs["deletionWindowInDays"] == 30
        assert key.protect


@pytest.mark.parametrize("mutation", ["root-uses", "no-deny"])
def test_the_key_check_fails_on_a_wider_key(boot, mutation):
    key_policy, key_arn = copy.deepcopy(keys(boot)["prod"])
    preview = "tfplatform-ci-preview"
    identity = identity_policies(boot, preview)
    if mutation == "root-uses":
        # AWS's programmatic default: the account may do everything, IAM policies decide; then any
        # administrator of the account decrypts prod's secrets.
        key_policy["Statement"][0]["Action"] = "kms:*"
        admin = [{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}]
        assert kms_can(key_policy, admin, f"arn:aws:iam::{ACCOUNT}:role/Admin", "kms:Decrypt", key_arn)
    else:
        # Without the explicit deny, the preview role (ReadOnlyAccess assumed to allow anything) could
        # rewrite prod's key policy through the account's administration statement.
        identity = [{"Statement": [s for s in d["Statement"] if s.get("Sid") not in ("NoOtherStacksKeys", "PreviewOnlyDecrypts")]} for d in identity]
        assert kms_can(key_policy, identity, role_arn(preview), "kms:PutKeyPolicy", key_arn)


def test_no_role_can_change_the_ci_identities(boot):
    for name in roles(boot):
        statements = [s for d in identity_policies(boot, name)[:1] for s in d["Statement"]]
        for target in (role_arn("tfplatform-ci-deploy-prod"), OIDC_ARN):
            assert any(s["Effect"] == "Deny" and action_in(s, "iam:UpdateAssumeRolePolicy")
                       and resource_in(s, target) for s in statements), (name, target)


# --- operators: people who run a non-prod stack from a workstation ---------------------------

ADMIN = f"arn:aws:iam::{ACCOUNT}:role/Admin"  # who_can's "account-admin"
OPERATORS = {"dev": [ADMIN], "gke-dev": ["user:me@example.com"]}


@pytest.fixture(scope="module")
def operated(tmp_path_factory) -> Recording:
    return plan(tmp_path_factory.mktemp("operators"), operators=OPERATORS)


def test_an_operator_uses_its_stacks_key_and_no_other(operated):
    # `pulumi stack init` wraps the stack's data key (Encrypt), every later command unwraps it (Decrypt).
    for action in ("kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"):
        assert "account-admin" in who_can(operated, "dev", action), action
    # (DescribeKey on prod's key stays with the account's administration, as without operators.)
    for action in USE:
        assert "account-admin" not in who_can(operated, "prod", action), action
    # The CI roles keep exactly their keys.
    assert who_can(operated, "dev", "kms:Encrypt") == {"tfplatform-ci-deploy-dev", "account-admin"}
    assert who_can(operated, "prod", "kms:Decrypt") == {"tfplatform-ci-deploy-prod",
                                                        "tfplatform-ci-preview-prod-preview"}


def test_a_gcp_operator_joins_its_stacks_encrypter_binding_only(operated):
    members = {b.name: b.inputs["members"]
               for b in operated.of_type("gcp:kms/cryptoKeyIAMBinding:CryptoKeyIAMBinding") if "-secrets" in b.name}
    sa = "serviceAccount:tfplatform-ci-{}@example-project.iam.gserviceaccount.com"
    assert members == {"gke-dev-secrets-use": [sa.format("deploy-dev"), "user:me@example.com"],
                       "gke-dev-secrets-preview": [sa.format("preview")]}


# --- GCP -------------------------------------------------------------------------------------

def test_gcp_service_accounts_admit_exactly_their_subject(boot):
    pool = "projects/123456789012/locations/global/workloadIdentityPools/tfplatform-ci"
    bindings = {b.name: b.inputs for b in boot.of_type("gcp:serviceaccount/iAMBinding:IAMBinding")}
    assert {n: (b["role"], b["members"]) for n, b in bindings.items()} == {
        "deploy-dev-workload-identity": ("roles/iam.workloadIdentityUser",
                                         [f"principal://iam.googleapis.com/{pool}/subject/{SUBJECTS['dev']}"]),
        "preview-workload-identity": ("roles/iam.workloadIdentityUser",
                                      [f"principal://iam.googleapis.com/{pool}/subject/{SUBJECTS['pull_request']}"]),
    }
    (provider,) = boot.of_type("gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider")
    assert provider.inputs["attributeCondition"] == f"assertion.repository == '{REPO}'"
    assert provider.inputs["oidc"]["issuerUri"] == f"https://{ISSUER}"


def test_gcp_key_is_used_only_by_its_stacks_accounts(boot, tmp_path):
    members = {(b.name, b.inputs["role"]): b.inputs["members"]
               for b in boot.of_type("gcp:kms/cryptoKeyIAMBinding:CryptoKeyIAMBinding") if "-secrets" in b.name}
    sa = "serviceAccount:tfplatform-ci-{}@example-project.iam.gserviceaccount.com"
    assert members == {
        ("gke-dev-secrets-use", "roles/cloudkms.cryptoKeyEncrypterDecrypter"): [sa.format("deploy-dev")],
        ("gke-dev-secrets-preview", "roles/cloudkms.cryptoKeyDecrypter"): [sa.format("preview")],
    }
    # A stack without a preview gets no decrypter binding at all.
    stacks = {"gke-dev": {"cloud": "gcp", "environment": "dev"}}
    quiet = plan(tmp_path, stacks=stacks)
    assert [b.inputs["role"] for b in quiet.of_type("gcp:kms/cryptoKeyIAMBinding:CryptoKeyIAMBinding")
            if "-secrets" in b.name] == \
        ["roles/cloudkms.cryptoKeyEncrypterDecrypter"]
    assert not quiet.of_type("aws:iam/role:Role")  # no AWS stack, no AWS identities


# --- outputs ---------------------------------------------------------------------------------

def test_outputs_are_the_secrets_providers_and_commands(boot):
    out = boot.outputs
    assert out["secretsProviders"] == {
        "dev": "awskms://alias/tfplatform-ci-dev?region=us-east-1",
        "prod": "awskms://alias/tfplatform-ci-prod?region=us-east-1",
        "gke-dev": "gcpkms://projects/example-project/locations/global/keyRings/tfplatform-ci-pulumi/cryptoKeys/gke-dev",
    }
    aliases = {a.inputs["name"] for a in boot.of_type("aws:kms/alias:Alias") if a.name.endswith("-secrets")}
    assert {u.split("//")[1].split("?")[0] for u in out["secretsProviders"].values() if u.startswith("awskms")} == aliases
    for stack, url in out["secretsProviders"].items():
        assert out["stackInitCommands"][stack] == f"pulumi stack init {stack} --secrets-provider '{url}'"
    variables = out["githubVariables"]
    assert variables["prod"] == {"AWS_ROLE_ARN": role_arn("tfplatform-ci-deploy-prod")}
    assert variables["prod-preview"] == {"AWS_ROLE_ARN": role_arn("tfplatform-ci-preview-prod-preview")}
    # Only the pull-request identities are repository variables; never a deploy role.
    assert not any("deploy" in str(v) for v in variables["(repository)"].values())
    assert out["clusterAdminCommands"]["prod"].endswith(role_arn("tfplatform-ci-deploy-prod"))


def test_secrets_provider_lines_of_the_stack_files_match_the_bootstrap(boot):
    # Each main stack file names the key the bootstrap made for it, under the example names.
    for stack, url in boot.outputs["secretsProviders"].items():
        data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
        assert data.get("secretsprovider") == url, stack


# --- config errors ---------------------------------------------------------------------------

def refusal(tmp_path, edit) -> str:
    """The bootstrap's ci stack planned with ``edit`` applied to its config: the error it must raise, one
    line, with no resource registered."""
    data = yaml.safe_load((BOOTSTRAP / "Pulumi.ci.yaml").read_text())
    edit(data["config"])
    path = tmp_path / "Pulumi.ci.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_stack_config(BOOTSTRAP / "Pulumi.yaml", path, "ci")
    into = Recording(stack="ci", project=cfg.project)
    with pytest.raises(pulumi.RunError) as error:
        run_program(BOOTSTRAP / "__main__.py", "ci", cfg.project, cfg.config, cfg.secret_keys, into=into)
    assert "\n" not in str(error.value) and into.resources == []
    return str(error.value)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"githubRepository": "not a repo"}, "tfserving-bootstrap:githubRepository: 'not a repo'"),
    ({"stacks": {"dev": {"cloud": "aws", "environment": "dev"},
                 "prod": {"cloud": "aws", "environment": "prod", "preview": "dev"}}},
     "tfserving-bootstrap:stacks.prod.preview: 'dev' is not allowed: expected an environment no stack deploys from"),
    ({"stacks": {"x": {"cloud": "azure", "environment": "dev"}}}, "tfserving-bootstrap:stacks.x.cloud"),
    ({"aws": {"accountId": "12", "region": "us-east-1"}}, "tfserving-bootstrap:aws.accountId: '12'"),
    ({"namePrefix": "a-very-long-prefix-for-names"}, "tfserving-bootstrap:namePrefix"),
    # Prod is deployed only by its approved deploy role: no workstation operator, whatever the name.
    ({"operators": {"dev": [], "prod": [f"arn:aws:iam::{ACCOUNT}:role/Admin"]}},
     "tfserving-bootstrap:operators.prod: ['arn:aws:iam::123456789012:role/Admin'] is not allowed: expected "
     "operators only for non-prod stacks (dev, gke-dev): stack prod (environment prod) is prod"),
    ({"stacks": {"dev": {"cloud": "aws", "environment": "dev"}, "live": {"cloud": "aws", "environment": "prod"}},
      "operators": {"live": [f"arn:aws:iam::{ACCOUNT}:role/Admin"]}},
     "tfserving-bootstrap:operators.live: ['arn:aws:iam::123456789012:role/Admin'] is not allowed: expected "
     "operators only for non-prod stacks (dev)"),
    ({"operators": {"staging": [f"arn:aws:iam::{ACCOUNT}:role/Admin"]}},
     "tfserving-bootstrap:operators.staging: 'staging' is not allowed: expected a stack of `stacks`"),
    ({"operators": {"dev": [f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/me@example.com"]}},
     "tfserving-bootstrap:operators.dev[0]: 'arn:aws:sts::123456789012:assumed-role/Admin/me@example.com' is not "
     "allowed: expected the role's ARN, not a session's: arn:aws:iam::123456789012:role/Admin"),
    ({"operators": {"dev": [f"arn:aws:iam::{ACCOUNT}:root"]}}, "tfserving-bootstrap:operators.dev[0]: "
     "'arn:aws:iam::123456789012:root' is not allowed: expected an IAM user or role ARN"),
    ({"operators": {"dev": [f"arn:aws:iam::{ACCOUNT}:role/*"]}}, "tfserving-bootstrap:operators.dev[0]"),
    ({"operators": {"dev": ["arn:aws:iam::210987654321:user/me"]}},
     "tfserving-bootstrap:operators.dev[0]: 'arn:aws:iam::210987654321:user/me' is not allowed: expected a user "
     "or role of account 123456789012"),
    ({"operators": {"dev": [f"arn:aws:iam::{ACCOUNT}:role/tfplatform-ci-preview"]}},
     "tfserving-bootstrap:operators.dev[0]: 'arn:aws:iam::123456789012:role/tfplatform-ci-preview' is not "
     "allowed: expected a person's or administrators' role"),
    ({"operators": {"dev": ["user:me@example.com"]}}, "tfserving-bootstrap:operators.dev[0]: 'user:me@example.com'"),
    ({"operators": {"gke-dev": ["allUsers"]}}, "tfserving-bootstrap:operators.gke-dev[0]: 'allUsers' is not allowed: "
     "expected a `user:<email>`"),
    ({"operators": {"gke-dev": [ADMIN]}}, "tfserving-bootstrap:operators.gke-dev[0]"),
    ({"operators": {"dev": ADMIN}}, "tfserving-bootstrap:operators.dev"),
])
def test_bad_config_is_one_line_before_any_resource(tmp_path, overrides, message):
    error = refusal(tmp_path, lambda config: config.update(
        {f"tfserving-bootstrap:{key}": value for key, value in overrides.items()}))
    assert error.startswith(message), error


def test_raw_config_parses_structured_keys_and_names_one_that_is_not_json():
    """What bootstrap/ and global/ read their config with (stacks/settings_base.py raw_config)."""
    from stacks.settings_base import raw_config

    class Config(dict):
        pass

    config = Config({"name": "api", "regions": '[{"stack": "a"}]'})
    raw = raw_config(config, "p", ("name", "regions", "ttl"), ("regions", "ttl"), ValueError, lambda key: "a list")
    assert raw == {"name": "api", "regions": [{"stack": "a"}]}  # ttl absent: left out, not None
    config["ttl"] = "sixty"
    with pytest.raises(ValueError, match=r"^p:ttl: 'sixty' is not allowed: expected a number$"):
        raw_config(config, "p", ("ttl",), ("ttl",), ValueError, lambda key: "a number")
