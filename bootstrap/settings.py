"""The bootstrap's config, validated before any resource is registered.

Every field's alias is its config key (``tfserving-bootstrap:<key>``); an error names the key, the value
and what is allowed, in one line.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stacks.settings_base import FieldProblem, Strict

PROJECT = "tfserving-bootstrap"
PULL_REQUEST = "pull_request"
"""``preview: pull_request``: the stack's preview runs for pull requests (OIDC ``sub``
``repo:<owner>/<repo>:pull_request``, https://docs.github.com/en/actions/reference/security/oidc)."""

# GitHub environment names: up to 255 characters, no control characters or `,:;'"`... kept simpler here:
# what is safe in a role name and an OIDC subject.
_ENV = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$")
_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
# A GCP service account id is 6-30 characters [a-z][-a-z0-9]*[a-z0-9] (iam.serviceAccounts.create).
_SA_ID = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
# An IAM role name is at most 64 characters of [\w+=,.@-] (IAM CreateRole); a KMS alias after `alias/`
# is [a-zA-Z0-9:/_-].
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,20}[a-z0-9]$")
# A stack is prod when its name or its GitHub environment is `prod`, `prod-<anything>` or `production`:
# its key is used only by the deploy identity of its approved environment, never from a workstation.
_PROD = re.compile(r"^prod(uction)?([-_.].*)?$")
# Operators: an IAM user or role of the account, path included (a key policy names the role's full ARN,
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-arns); a GCP
# user, group or service account (https://cloud.google.com/iam/docs/principal-identifiers).
_IAM_PRINCIPAL = re.compile(r"^arn:aws:iam::([0-9]{12}):(user|role)((?:/[\w+=,.@-]+)*)/([\w+=,.@-]{1,64})$")
_SESSION = re.compile(r"^arn:aws:sts::([0-9]{12}):assumed-role/([\w+=,.@-]{1,64})/.+$")
_GCP_MEMBER = re.compile(r"^(user|group|serviceAccount):[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


class StackSpec(Strict):
    cloud: Literal["aws", "gcp"]
    environment: str = Field(description="GitHub environment whose deploy identity owns this stack's key.")
    preview: str | None = Field(default=None, description=(
        "Who may preview the stack: `pull_request` (PR previews; the PR preview identity can then "
        "decrypt this stack's secrets) or a GitHub environment name used only for previews of merged "
        "code (e.g. `prod-preview`); absent: no preview identity can decrypt its secrets."))


class AwsSpec(Strict):
    account_id: str = Field(pattern=r"^[0-9]{12}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
    deploy_policy_arns: list[str] = Field(
        default_factory=lambda: ["arn:aws:iam::aws:policy/AdministratorAccess"], min_length=1)
    state_bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", description=(
        "The S3 bucket of Pulumi's DIY state backend: an existing bucket the roles are pointed at (as "
        "before the bootstrap made one), or, with `createStateBucket: true`, the name of the bucket the "
        "bootstrap creates. Absent: the bootstrap creates `<namePrefix>-pulumi-state-<accountId>` (S3 "
        "names are global). The deploy roles read and write it, the preview roles only read it."))
    create_state_bucket: bool | None = Field(default=None, description=(
        "Create the state bucket here (versioned, SSE-KMS with its own key, TLS only, access-logged). "
        "Default: create it unless `stateBucket` names an existing one; false without `stateBucket` is "
        "refused (the roles would have no bucket)."))
    state_noncurrent_version_days: int = Field(default=90, ge=1, le=3650, description=(
        "Days an overwritten or deleted state object version (every `pulumi up` overwrites the stack's "
        "checkpoint) is kept before S3 expires it: how far back a checkpoint can be restored."))
    state_log_retention_days: int = Field(default=365, ge=1, le=3650, description=(
        "Days the state bucket's server access logs are kept in their log bucket."))

    @property
    def creates_state_bucket(self) -> bool:
        return self.create_state_bucket if self.create_state_bucket is not None else not self.state_bucket

    def state_bucket_name(self, name_prefix: str) -> str:
        """The state bucket: the configured name, or the default one the bootstrap creates."""
        return self.state_bucket or f"{name_prefix}-pulumi-state-{self.account_id}"


class GcpSpec(Strict):
    project: str = Field(pattern=r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
    project_number: str = Field(pattern=r"^[0-9]{6,20}$")
    kms_location: str = Field(default="global", pattern=r"^[a-z0-9-]+$")
    deploy_roles: list[str] = Field(default_factory=lambda: ["roles/editor"], min_length=1)
    state_bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", description=(
        "The GCS bucket of Pulumi's DIY state backend (`gs://<bucket>`): an existing bucket, or with "
        "`createStateBucket: true` the name of the one the bootstrap creates. Absent: the bootstrap creates "
        "`<project>-pulumi-state`. The deploy accounts get roles/storage.objectUser on it, the preview "
        "accounts roles/storage.objectViewer."))
    create_state_bucket: bool | None = Field(default=None, description=(
        "Create the state bucket here (versioned, CMEK, uniform access, public access prevented, Data "
        "Access audit logs). Default: create it unless `stateBucket` names an existing one."))
    state_bucket_location: str = Field(default="us-central1", pattern=r"^[a-z]+(-[a-z]+[0-9])?$", description=(
        "Location of the state bucket and of its CMEK key ring (a Cloud Storage CMEK key must be in the "
        "bucket's location; a `global` key cannot encrypt a bucket). A region (`us-central1`) or a "
        "multi-region (`us`, `eu`)."))
    state_noncurrent_version_days: int = Field(default=90, ge=1, le=3650, description=(
        "Days an overwritten or deleted state object version is kept before the lifecycle deletes it."))
    state_soft_delete_days: int = Field(default=7, ge=0, le=90, description=(
        "Cloud Storage soft delete: days a deleted object (a lifecycle-deleted old version included) stays "
        "restorable: 0 (off) or 7-90; 7 is Cloud Storage's default."))
    state_data_access_logs: bool = Field(default=True, description=(
        "Turn on Data Access audit logs (DATA_READ, DATA_WRITE) for storage.googleapis.com in the project, "
        "so every read and write of a state object is logged with its caller. The setting is "
        "authoritative for that service in the project (google_project_iam_audit_config)."))

    @property
    def creates_state_bucket(self) -> bool:
        return self.create_state_bucket if self.create_state_bucket is not None else not self.state_bucket

    def state_bucket_name(self) -> str:
        return self.state_bucket or f"{self.project}-pulumi-state"


class BootstrapSettings(Strict):
    github_repository: str = Field(description="owner/name of the repository whose workflows deploy.")
    name_prefix: str = "tfplatform-ci"
    stacks: dict[str, StackSpec] = Field(min_length=1)
    aws: AwsSpec | None = None
    gcp: GcpSpec | None = None
    operators: dict[str, list[str]] = Field(default_factory=dict, description=(
        "Per non-prod stack: the people (AWS IAM user/role ARNs; GCP `user:`, `group:`, "
        "`serviceAccount:` members) who may also use its key from a workstation: `pulumi stack init` "
        "(Encrypt) and every later command (Decrypt)."))

    @model_validator(mode="after")
    def _consistent(self) -> "BootstrapSettings":
        if not _REPO.fullmatch(self.github_repository):
            raise FieldProblem("githubRepository", self.github_repository, "owner/name of a GitHub repository")
        if not _PREFIX.fullmatch(self.name_prefix):
            raise FieldProblem("namePrefix", self.name_prefix,
                               "3-22 characters: lower-case letters, digits and '-', starting with a letter")
        deploy_envs = {spec.environment for spec in self.stacks.values()}
        for stack, spec in self.stacks.items():
            if not re.fullmatch(r"^[a-z0-9][a-z0-9-]{0,30}$", stack):
                raise FieldProblem(f"stacks.{stack}", stack, "a stack name of lower-case letters, digits and '-'")
            if not _ENV.fullmatch(spec.environment):
                raise FieldProblem(f"stacks.{stack}.environment", spec.environment,
                                   "a GitHub environment name of letters, digits, '_', '.', '-' (at most 31)")
            if spec.preview is not None and spec.preview != PULL_REQUEST:
                if not _ENV.fullmatch(spec.preview):
                    raise FieldProblem(f"stacks.{stack}.preview", spec.preview,
                                       "`pull_request` or a GitHub environment name")
                if spec.preview in deploy_envs:
                    # One environment would then hold both the deploy and a preview identity.
                    raise FieldProblem(f"stacks.{stack}.preview", spec.preview,
                                       f"an environment no stack deploys from (deploy environments: "
                                       f"{', '.join(sorted(deploy_envs))})")
            if getattr(self, spec.cloud) is None:
                raise FieldProblem(spec.cloud, None, f"settings for {spec.cloud} (stack {stack} deploys there)")
        for stack, members in self.operators.items():
            self._check_operators(stack, members)
        for cloud, spec in (("aws", self.aws), ("gcp", self.gcp)):
            if spec is not None and spec.create_state_bucket is False and not spec.state_bucket:
                raise FieldProblem(f"{cloud}.stateBucket", None, (
                    f"the name of an existing bucket when {cloud}.createStateBucket is false "
                    "(or leave createStateBucket on and the bootstrap creates one)"))
        if self.gcp is not None and 0 < self.gcp.state_soft_delete_days < 7:
            # "The retention duration must be 0 (off) or between 7 and 90 days"
            # (https://cloud.google.com/storage/docs/soft-delete#retention-duration).
            raise FieldProblem("gcp.stateSoftDeleteDays", self.gcp.state_soft_delete_days,
                               "0 (soft delete off) or 7-90 days")
        if self.gcp is not None and self.gcp.state_bucket_location == "global":
            # Cloud Storage has no `global` location, and a bucket's CMEK key must be in the bucket's own
            # location (https://cloud.google.com/storage/docs/encryption/customer-managed-keys#restrictions).
            raise FieldProblem("gcp.stateBucketLocation", "global",
                               "a region (us-central1) or multi-region (us, eu) of Cloud Storage")
        if self.aws is not None and self.aws.creates_state_bucket:
            name = self.aws.state_bucket_name(self.name_prefix)
            if len(name) > 63 - len("-access-logs"):
                raise FieldProblem("aws.stateBucket" if self.aws.state_bucket else "namePrefix",
                                   self.aws.state_bucket or self.name_prefix,
                                   f"a state bucket name of at most {63 - len('-access-logs')} characters "
                                   f"({name!r} is {len(name)}): its log bucket adds '-access-logs'")
        if self.gcp is not None:
            for who in sorted(self.gcp_principals()):
                account = self.service_account_id(who)
                if not _SA_ID.fullmatch(account):
                    raise FieldProblem("namePrefix", self.name_prefix,
                                       f"a prefix short enough for the service account id {account!r} "
                                       "(6-30 characters)")
        return self

    def _check_operators(self, stack: str, members: list[str]) -> None:
        key = f"operators.{stack}"
        spec = self.stacks.get(stack)
        if spec is None:
            raise FieldProblem(key, stack, f"a stack of `stacks` ({', '.join(sorted(self.stacks))})")
        if is_prod(stack, spec):
            # Prod's secrets are encrypted and decrypted only by its deploy role, in its approved
            # GitHub environment; break glass is a documented, logged key-policy change, not config.
            allowed = sorted(s for s, sp in self.stacks.items() if not is_prod(s, sp))
            raise FieldProblem(key, members, (
                f"operators only for non-prod stacks ({', '.join(allowed) or 'none'}): stack {stack} "
                f"(environment {spec.environment}) is prod, its key is used only by its deploy role "
                "(break glass: bootstrap/README.md)"))
        for i, member in enumerate(members):
            where = f"{key}[{i}]"
            if spec.cloud == "aws":
                self._check_aws_operator(where, stack, member)
            elif not _GCP_MEMBER.fullmatch(member):
                raise FieldProblem(where, member, ("a `user:<email>`, `group:<email>` or "
                                                   f"`serviceAccount:<email>` member (stack {stack} is on gcp)"))
            elif member.startswith(f"serviceAccount:{self.name_prefix}-") and \
                    member.endswith(f"@{self.gcp.project}.iam.gserviceaccount.com"):
                raise FieldProblem(where, member, "a person's or group's member, not one of the bootstrap's "
                                                  "CI service accounts (they get exactly their own keys)")

    def _check_aws_operator(self, where: str, stack: str, member: str) -> None:
        account = self.aws.account_id
        if (session := _SESSION.fullmatch(member)) is not None:
            # The ARN `aws sts get-caller-identity` prints for an assumed role names one session; the
            # key policy names the role (with its path, if it has one: `aws iam get-role`).
            raise FieldProblem(where, member, (
                f"the role's ARN, not a session's: arn:aws:iam::{session[1]}:role/{session[2]} (with the "
                f"role's path, if any: aws iam get-role --role-name {session[2]} --query Role.Arn)"))
        match = _IAM_PRINCIPAL.fullmatch(member)
        if match is None:
            raise FieldProblem(where, member, (
                f"an IAM user or role ARN arn:aws:iam::{account}:user/<name> or :role/<name> "
                f"(stack {stack} is on aws; no wildcard, no account root)"))
        if match[1] != account:
            raise FieldProblem(where, member, f"a user or role of account {account} (aws.accountId)")
        if match[2] == "role" and match[4].startswith(f"{self.name_prefix}-"):
            raise FieldProblem(where, member, (
                "a person's or administrators' role, not one of the bootstrap's CI roles "
                f"({self.name_prefix}-*: they get exactly their own keys)"))

    def operators_of(self, stack: str) -> list[str]:
        return sorted(set(self.operators.get(stack, [])))

    # --- derived names ------------------------------------------------------------------------
    def subject(self, who: str) -> str:
        """The OIDC ``sub`` of a job in environment ``who``, or of a pull request."""
        if who == PULL_REQUEST:
            return f"repo:{self.github_repository}:pull_request"
        return f"repo:{self.github_repository}:environment:{who}"

    def stacks_on(self, cloud: str) -> dict[str, StackSpec]:
        return {name: spec for name, spec in self.stacks.items() if spec.cloud == cloud}

    def deploy_environments(self, cloud: str) -> list[str]:
        return sorted({spec.environment for spec in self.stacks_on(cloud).values()})

    def preview_principals(self, cloud: str) -> list[str]:
        return sorted({spec.preview for spec in self.stacks_on(cloud).values() if spec.preview})

    def gcp_principals(self) -> set[str]:
        return {*(f"deploy-{e}" for e in self.deploy_environments("gcp")),
                *(preview_slug(p) for p in self.preview_principals("gcp"))}

    def role_name(self, kind: str, who: str) -> str:
        return f"{self.name_prefix}-{kind}-{who}" if kind == "deploy" else f"{self.name_prefix}-{preview_slug(who)}"

    def service_account_id(self, slug: str) -> str:
        return f"{self.name_prefix}-{slug}".lower().replace("_", "-").replace(".", "-")

    def key_alias(self, stack: str) -> str:
        return f"alias/{self.name_prefix}-{stack}"


def is_prod(stack: str, spec: StackSpec) -> bool:
    return bool(_PROD.fullmatch(stack) or _PROD.fullmatch(spec.environment))


def preview_slug(who: str) -> str:
    return "preview" if who == PULL_REQUEST else f"preview-{who}"


DEFAULT_KEYS = ("githubRepository", "namePrefix", "stacks", "aws", "gcp", "operators")


class BootstrapConfigError(Exception):
    """One line: the config key, the value, what is allowed."""


def parse(raw: dict[str, object]) -> BootstrapSettings:
    """Validate the decoded config (keys as in the stack file, without the project prefix)."""
    try:
        return BootstrapSettings.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        ctx = (error.get("ctx") or {}).get("error")
        if isinstance(ctx, FieldProblem):
            raise BootstrapConfigError(
                f"{PROJECT}:{ctx.field}: {ctx.value!r} is not allowed: expected {ctx.allowed}") from None
        where = ".".join(str(p) for p in error["loc"])
        raise BootstrapConfigError(
            f"{PROJECT}:{where}: {error.get('input')!r} is not allowed: {error['msg']}") from None
