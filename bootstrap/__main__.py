"""The CI trust bootstrap: run once per cloud account/project, before the main stacks (README.md).

Creates, per cloud, GitHub's OIDC trust, one deploy identity per GitHub environment (trusting exactly
that environment's OIDC subject), one identity per preview kind (pull requests; a preview-only
environment for merged code), and one KMS key per stack for Pulumi's secrets provider, usable only by
that stack's deploy identity (and its preview identity, if the stack has one, and the `operators`
named for a non-prod stack, who run it from a workstation). Its outputs are the
values to paste: secrets-provider URLs, `pulumi stack init` commands, GitHub variables.

The third section, `state backends` (issue 17), makes the team's state buckets (bootstrap/state_backend.py):
the S3 one is created inside `aws_identities` (its key policy names the roles, and the roles' policies
name the bucket and its key), the GCS one inside `gcp_identities`; the outputs carry the exact
`pulumi login` commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pulumi

# The Pulumi CLI runs this file with bootstrap/ as its working directory; its modules live in the
# `bootstrap` package next to `stacks` (whose strict settings base it reuses).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bootstrap import policies  # noqa: E402
from bootstrap.state_backend import (  # noqa: E402
    AwsStateBackend, AwsStateBackendArgs, GcpStateBackend, GcpStateBackendArgs, gcs_backend_url, s3_backend_url)
from bootstrap.settings import (  # noqa: E402
    DEFAULT_KEYS, PROJECT, BootstrapConfigError, BootstrapSettings, parse, preview_slug)
from stacks.settings_base import raw_config  # noqa: E402

READ_ONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"


def read_settings() -> BootstrapSettings:
    raw = raw_config(pulumi.Config(PROJECT), PROJECT, DEFAULT_KEYS, ("stacks", "aws", "gcp", "operators"),
                     BootstrapConfigError, lambda key: "a mapping")
    if "githubRepository" not in raw:
        raise BootstrapConfigError(f"{PROJECT}:githubRepository: missing: expected owner/name of the repository")
    return parse(raw)


def aws_identities(s: BootstrapSettings) -> dict[str, object]:
    import pulumi_aws as aws

    account, region = s.aws.account_id, s.aws.region
    provider = aws.Provider("aws", region=region, allowed_account_ids=[account])
    opts = pulumi.ResourceOptions(provider=provider)
    stacks = s.stacks_on("aws")

    oidc = aws.iam.OpenIdConnectProvider(
        "github", url=f"https://{policies.GITHUB_ISSUER}", client_id_lists=[policies.STS_AUDIENCE], opts=opts)

    deploy_arns = {env: policies.role_arn(account, s.role_name("deploy", env)) for env in s.deploy_environments("aws")}
    preview_arns = {who: policies.role_arn(account, s.role_name("preview", who)) for who in s.preview_principals("aws")}
    keys = {}
    roles: list[tuple[str, aws.iam.Role, list[dict]]] = []

    def role(name: str, subject: str, managed: list[str], statements: list[dict]) -> aws.iam.Role:
        r = aws.iam.Role(name, name=name, assume_role_policy=json.dumps(policies.github_trust_policy(account, subject)),
                         max_session_duration=3600, opts=pulumi.ResourceOptions(provider=provider, depends_on=[oidc]))
        for i, arn in enumerate(managed):
            aws.iam.RolePolicyAttachment(f"{name}-managed-{i}", role=r.name, policy_arn=arn, opts=opts)
        roles.append((name, r, statements))
        return r

    state_bucket = s.aws.state_bucket_name(s.name_prefix)
    deploy_roles, preview_roles = {}, {}
    for env, arn in deploy_arns.items():
        deploy_roles[env] = role(s.role_name("deploy", env), s.subject(env), list(s.aws.deploy_policy_arns),
                                 [*policies.deploy_state_allow(state_bucket),
                                  policies.deny_ci_identities(account, s.name_prefix)])
    for who, arn in preview_arns.items():
        preview_roles[who] = role(s.role_name("preview", who), s.subject(who), [READ_ONLY],
                                  [*policies.preview_allow(state_bucket),
                                   policies.deny_ci_identities(account, s.name_prefix),
                                   policies.deny_preview_writes()])

    for stack, spec in stacks.items():
        previewers = [preview_arns[spec.preview]] if spec.preview else []
        key = aws.kms.Key(
            f"{stack}-secrets", description=f"Pulumi secrets provider of stack {stack}",
            enable_key_rotation=True, deletion_window_in_days=30,
            policy=json.dumps(policies.key_policy(account, deploy_arns[spec.environment], previewers,
                                                  s.operators_of(stack))),
            opts=pulumi.ResourceOptions(provider=provider, protect=True,
                                        depends_on=[r for _, r, _ in roles]))
        aws.kms.Alias(f"{stack}-secrets", name=s.key_alias(stack), target_key_id=key.key_id, opts=opts)
        keys[stack] = key

    # --- state backend (issue 17): the key policy names the roles (by their outputs, so they exist
    # first) and every role's inline policy below names the bucket and its key.
    operators = sorted({arn for stack in stacks for arn in s.operators_of(stack)})
    backend = None
    if s.aws.creates_state_bucket:
        backend = AwsStateBackend("pulumi-state", AwsStateBackendArgs(
            bucket_name=state_bucket, account_id=account, region=region,
            key_alias=f"alias/{s.name_prefix}-pulumi-state",
            writers=(*(r.arn for _, r in sorted(deploy_roles.items())), *operators),
            readers=tuple(r.arn for _, r in sorted(preview_roles.items())),
            stack_writers={stack: [deploy_arns[spec.environment], *s.operators_of(stack)]
                           for stack, spec in stacks.items()},
            noncurrent_version_days=s.aws.state_noncurrent_version_days,
            log_retention_days=s.aws.state_log_retention_days),
            opts=pulumi.ResourceOptions(provider=provider))
    state_key = backend.key_arn if backend else None

    # Each role's inline policy: its statements, a deny on every key it has no business with (by key
    # ARN: an alias ARN in an IAM policy's Resource does not match operations on the key,
    # https://docs.aws.amazon.com/kms/latest/developerguide/cmks-in-iam-policies.html), and a deny on
    # changing the state bucket or its key.
    for name, r, statements in roles:
        usable = {stack for stack, spec in stacks.items()
                  if name == s.role_name("deploy", spec.environment)
                  or (spec.preview and name == s.role_name("preview", spec.preview))}
        others = [keys[stack].arn for stack in sorted(set(stacks) - usable)]
        document = pulumi.Output.all(state_key, *others).apply(
            lambda arns, st=statements: json.dumps(policies.role_policy(
                [*st, *policies.deny_other_keys(list(arns[1:])),
                 *policies.deny_state_backend_changes(state_bucket, arns[0])])))
        aws.iam.RolePolicy(f"{name}-boundaries", role=r.name, policy=document, opts=opts)

    return {
        "oidcProviderArn": oidc.arn,
        "deployRoleArns": deploy_arns,
        "previewRoleArns": preview_arns,
        "secretsProviders": {stack: f"awskms://{s.key_alias(stack)}?region={region}" for stack in stacks},
        "stateBackend": {"bucket": state_bucket, "created": backend is not None,
                         "url": s3_backend_url(state_bucket, region),
                         **({"keyArn": backend.key_arn, "accessLogBucket": backend.log_bucket_name}
                            if backend else {})},
    }


def gcp_identities(s: BootstrapSettings) -> dict[str, object]:
    import pulumi_gcp as gcp

    g = s.gcp
    provider = gcp.Provider("gcp", project=g.project)
    opts = pulumi.ResourceOptions(provider=provider)
    stacks = s.stacks_on("gcp")
    pool_id = s.name_prefix
    pool_path = f"projects/{g.project_number}/locations/global/workloadIdentityPools/{pool_id}"

    pool = gcp.iam.WorkloadIdentityPool("github", workload_identity_pool_id=pool_id, project=g.project,
                                        display_name="GitHub Actions", opts=opts)
    oidc = gcp.iam.WorkloadIdentityPoolProvider(
        "github", workload_identity_pool_id=pool.workload_identity_pool_id, workload_identity_pool_provider_id="github",
        project=g.project,
        # Only this repository's tokens are accepted at all; each service account then admits exactly
        # one subject (https://cloud.google.com/iam/docs/workload-identity-federation-with-deployment-pipelines).
        attribute_mapping={"google.subject": "assertion.sub", "attribute.repository": "assertion.repository"},
        attribute_condition=f"assertion.repository == '{s.github_repository}'",
        oidc=gcp.iam.WorkloadIdentityPoolProviderOidcArgs(issuer_uri=f"https://{policies.GITHUB_ISSUER}"),
        opts=opts)

    accounts: dict[str, gcp.serviceaccount.Account] = {}

    def account(slug: str, subject: str, roles: list[str]) -> gcp.serviceaccount.Account:
        sa = gcp.serviceaccount.Account(slug, account_id=s.service_account_id(slug), project=g.project,
                                        display_name=f"GitHub Actions: {subject}", opts=opts)
        # Authoritative for the role on this account: exactly one principal may impersonate it.
        gcp.serviceaccount.IAMBinding(f"{slug}-workload-identity", service_account_id=sa.name,
                                      role="roles/iam.workloadIdentityUser",
                                      members=[f"principal://iam.googleapis.com/{pool_path}/subject/{subject}"],
                                      opts=pulumi.ResourceOptions(provider=provider, depends_on=[oidc]))
        for r in roles:
            gcp.projects.IAMMember(f"{slug}-{r.split('/')[-1]}", project=g.project, role=r, member=sa.member, opts=opts)
        accounts[slug] = sa
        return sa

    for env in s.deploy_environments("gcp"):
        account(f"deploy-{env}", s.subject(env), list(g.deploy_roles))
    for who in s.preview_principals("gcp"):
        account(preview_slug(who), s.subject(who), ["roles/viewer"])

    ring = gcp.kms.KeyRing("pulumi-secrets", name=f"{s.name_prefix}-pulumi", location=g.kms_location,
                           project=g.project, opts=pulumi.ResourceOptions(provider=provider, protect=True))
    urls = {}
    for stack, spec in stacks.items():
        key = gcp.kms.CryptoKey(f"{stack}-secrets", name=stack, key_ring=ring.id, rotation_period="7776000s",
                                opts=pulumi.ResourceOptions(provider=provider, protect=True))
        # Authoritative bindings: nobody else holds these roles on the key. The stack's operators (never
        # a prod stack's: settings.py) share the deploy account's binding, since a second binding of the
        # same role on the key would overwrite it.
        gcp.kms.CryptoKeyIAMBinding(f"{stack}-secrets-use", crypto_key_id=key.id,
                                    role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
                                    members=[accounts[f"deploy-{spec.environment}"].member,
                                             *s.operators_of(stack)], opts=opts)
        if spec.preview:
                gcp.kms.CryptoKeyIAMBinding(f"{stack}-secrets-preview", crypto_key_id=key.id,
                                        role="roles/cloudkms.cryptoKeyDecrypter",
                                        members=[accounts[preview_slug(spec.preview)].member], opts=opts)
        urls[stack] = (f"gcpkms://projects/{g.project}/locations/{g.kms_location}/keyRings/"
                       f"{s.name_prefix}-pulumi/cryptoKeys/{stack}")

    # --- state backend (issue 17)
    state_bucket = g.state_bucket_name()
    backend = None
    if g.creates_state_bucket:
        operators = sorted({m for stack in stacks for m in s.operators_of(stack)})
        backend = GcpStateBackend("pulumi-state", GcpStateBackendArgs(
            project=g.project, bucket_name=state_bucket, location=g.state_bucket_location,
            key_ring_name=f"{s.name_prefix}-state",
            writers=(*(accounts[f"deploy-{e}"].member for e in s.deploy_environments("gcp")), *operators),
            readers=tuple(accounts[preview_slug(p)].member for p in s.preview_principals("gcp")),
            noncurrent_version_days=g.state_noncurrent_version_days, soft_delete_days=g.state_soft_delete_days,
            data_access_logs=g.state_data_access_logs),
            opts=pulumi.ResourceOptions(provider=provider))
    return {
        "workloadIdentityProvider": f"{pool_path}/providers/github",
        "serviceAccounts": {slug: sa.email for slug, sa in accounts.items()},
        "secretsProviders": urls,
        "stateBackend": {"bucket": state_bucket, "created": backend is not None, "url": gcs_backend_url(state_bucket),
                         **({"keyId": backend.key_id} if backend else {})},
    }


def main() -> None:
    try:
        s = read_settings()
    except BootstrapConfigError as error:
        # One line naming the key, before any resource (pulumi.RunError prints no traceback).
        raise pulumi.RunError(str(error)) from None

    aws_out = aws_identities(s) if s.stacks_on("aws") else {}
    gcp_out = gcp_identities(s) if s.stacks_on("gcp") else {}
    providers = {**aws_out.get("secretsProviders", {}), **gcp_out.get("secretsProviders", {})}

    env_vars: dict[str, dict[str, object]] = {}
    for env, arn in (aws_out.get("deployRoleArns") or {}).items():
        env_vars.setdefault(env, {})["AWS_ROLE_ARN"] = arn
    for who, arn in (aws_out.get("previewRoleArns") or {}).items():
        env_vars.setdefault("(repository)" if who == "pull_request" else who, {})[
            "AWS_PREVIEW_ROLE_ARN" if who == "pull_request" else "AWS_ROLE_ARN"] = arn
    for slug, email in (gcp_out.get("serviceAccounts") or {}).items():
        if slug == "preview":
            env_vars.setdefault("(repository)", {})["GCP_PREVIEW_SERVICE_ACCOUNT"] = email
        else:
            env_vars.setdefault(slug.removeprefix("deploy-").removeprefix("preview-"), {})["GCP_SERVICE_ACCOUNT"] = email
    if gcp_out:
        env_vars.setdefault("(repository)", {})["GCP_WORKLOAD_IDENTITY_PROVIDER"] = gcp_out["workloadIdentityProvider"]
    # The backends the workflows log in to (.github/workflows: PULUMI_BACKEND_URL for the AWS stacks,
    # PULUMI_GCP_BACKEND_URL for gke-dev).
    if aws_out:
        env_vars.setdefault("(repository)", {})["PULUMI_BACKEND_URL"] = aws_out["stateBackend"]["url"]
    if gcp_out:
        env_vars.setdefault("(repository)", {})["PULUMI_GCP_BACKEND_URL"] = gcp_out["stateBackend"]["url"]

    # Which backend each main stack lives in: the bucket of its cloud.
    backends = {cloud: out["stateBackend"]["url"] for cloud, out in (("aws", aws_out), ("gcp", gcp_out)) if out}
    pulumi.export("stateBackends", {cloud: out["stateBackend"] for cloud, out in (("aws", aws_out), ("gcp", gcp_out))
                                    if out})
    pulumi.export("loginCommands", {cloud: f"pulumi login '{url}'" for cloud, url in backends.items()})
    pulumi.export("stackLoginCommands", {stack: f"pulumi login '{backends[spec.cloud]}'"
                                         for stack, spec in s.stacks.items()})
    pulumi.export("secretsProviders", providers)
    pulumi.export("stackInitCommands", {
        stack: f"pulumi stack init {stack} --secrets-provider '{url}'" for stack, url in providers.items()})
    pulumi.export("changeSecretsProviderCommands", {
        stack: f"pulumi stack change-secrets-provider --stack {stack} '{url}'" for stack, url in providers.items()})
    pulumi.export("githubVariables", env_vars)
    if aws_out:
        pulumi.export("aws", {k: v for k, v in aws_out.items() if k not in ("secretsProviders", "stateBackend")})
        # Prod's cluster admins are declared, not "whoever ran the last up": the deploy role of each stack.
        pulumi.export("clusterAdminCommands", {
            stack: f"pulumi config set --stack {stack} --path 'clusterAdminArns[0]' "
                   f"{aws_out['deployRoleArns'][spec.environment]}"
            for stack, spec in s.stacks_on("aws").items()})
    if gcp_out:
        pulumi.export("gcp", {k: v for k, v in gcp_out.items() if k not in ("secretsProviders", "stateBackend")})


main()
