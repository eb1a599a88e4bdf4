"""No change a user is told to make replaces a cluster, node pool, bucket or KMS key.

The told changes are gathered from where users read them:

- every ``pulumi config set`` / ``pulumi config rm`` line of README.md, docs/*.md,
  model_tools/README.md and the stack files' comments, parsed as the Pulumi CLI reads it
  (``--path``, ``--stack``, key, value typed as ``--path`` types it). Each needs an entry in
  :data:`DOC_CASES` saying which stacks it applies to and from which state; a new instruction
  without one fails :func:`test_every_told_command_has_a_case`, naming its line;
- every ``model_tools promote`` / ``rollback`` command of those files, run with the real CLI
  (``model_tools.cli.main``) on a temporary copy of the stack file, with the versions published
  in a moto S3 bucket;
- the stack files' comments that tell what to change (``promote with versions: [2]``, ...) and
  the other changes the configuration reference invites (:data:`HAND_CASES`); a comment that
  reads like an instruction and is cited by no case fails :func:`test_instruction_comments_are_cited`.

Each case plans the stack before and after the change on the mock engine (in-process, base plans
cached per state), diffs them with ``stacks.diff.diff_plans`` and asserts that the change
(1) plans, (2) changes something, and (3) replaces or deletes none of :data:`GUARDED_TYPES`
(also judging the ForceNew fields of :data:`PROVIDER_FORCE_NEW`), unless README.md says so
(:data:`README_DECLARED`).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from stacks.diff import REPLACE_ON_CHANGE, ResourceChange, StackDiff, diff_plans
from stacks.plan import ROOT, plan_stack, to_json
from tests.model_tools.conftest import fake_aws_credentials

PROJECT = "tfserving-platform"

# What holds the platform or its data: replacing one of these is an outage or a data loss.
GUARDED_TYPES = frozenset({
    "aws:eks/cluster:Cluster", "aws:eks/nodeGroup:NodeGroup",
    "aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2",
    "aws:kms/key:Key", "gcp:container/cluster:Cluster", "gcp:container/nodePool:NodePool",
    "gcp:storage/bucket:Bucket", "gcp:kms/cryptoKey:CryptoKey",
})

# Fields of guarded types that force a replacement on the real provider but that
# stacks/diff.py's REPLACE_ON_CHANGE does not list yet: a change of one is judged a replacement
# here too, and test_diff_table_covers_provider_force_new fails until the table lists it.
PROVIDER_FORCE_NEW: dict[str, tuple[str, ...]] = {
    # terraform-provider-aws internal/service/eks/cluster.go: access_config.
    # bootstrap_cluster_creator_admin_permissions is ForceNew ("Changes to this property will
    # trigger replacement" on https://www.pulumi.com/registry/packages/aws/api-docs/eks/cluster/).
    "aws:eks/cluster:Cluster": ("accessConfig.bootstrapClusterCreatorAdminPermissions",),
}

# (case id, resource type) -> the README.md sentence that tells the user this change replaces it.
GCP_PROJECT_SENTENCE = ("Set `gcpProject` before the first `pulumi up`: changing it later moves everything to "
                        "the other\nproject, so it replaces the cluster, its node pools and the model bucket.")
README_DECLARED: dict[tuple[str, str], str] = {
    (f"{source}|set gcpProject my-project@gke-dev", type_): GCP_PROJECT_SENTENCE
    for source in ("README.md", "Pulumi.gke-dev.yaml")
    for type_ in ("gcp:storage/bucket:Bucket", "gcp:container/cluster:Cluster", "gcp:container/nodePool:NodePool")
}

BOOT_DISK_SENTENCE = ("Preloading the images\non a secondary boot disk (`secondaryBootDiskImage`) replaces the GPU node "
                      "pool when it is set or\nchanged: set it before the pool serves traffic.")
README_DECLARED[("docs/cold-start.md|set --path nodePools.gpu.secondaryBootDiskImage global/images/tfserving-cache"
                 "@gke-dev", "gcp:container/nodePool:NodePool")] = BOOT_DISK_SENTENCE

ADMIN_A = "arn:aws:iam::123456789012:role/platform-admins"
ADMIN_B = "arn:aws:iam::123456789012:role/oncall-admins"
BUCKET = "told-changes-models"
PUBLISHED = (1, 2, 3)  # versions of the tool's --model with a _COMPLETE marker in the moto bucket


# --------------------------------------------------------------------------------------------
# Steps: one edit of a stack file, as the CLI or the model tool makes it
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Edit:
    """``pulumi config set``/``rm`` (or the same edit by hand): ``value_json`` None removes."""

    key: str
    path: bool
    value_json: str | None

    def __str__(self) -> str:
        flag = "--path " if self.path else ""
        if self.value_json is None:
            return f"rm {flag}{self.key}"
        return f"set {flag}{self.key} {self.value_json}"


@dataclass(frozen=True)
class Tool:
    """``python -m model_tools <argv>`` on the stack file (its --stack-file and --bucket-uri replaced)."""

    argv: tuple[str, ...]

    def __str__(self) -> str:
        return "model_tools " + " ".join(self.argv)


Step = Edit | Tool


def cli_value(text: str, path: bool, typ: str | None) -> object:
    """The value ``pulumi config set`` stores: with --path, true/false are booleans and integers
    numbers; top-level entries are always strings (pulumi.com/docs/iac/cli/commands/pulumi_config_set)."""
    if typ == "bool" or (typ is None and path and text in ("true", "false")):
        return text == "true"
    if typ == "int" or (typ is None and path and re.fullmatch(r"-?\d+", text)):
        return int(text)
    if typ == "float":
        return float(text)
    return text


PATH_TOKEN = re.compile(r'\.?([^.\[\]"]+)|\[(\d+)\]|\["([^"]+)"\]')


def split_path(key: str) -> list[str | int]:
    """``servers.default.models.digits.versions[0]`` -> ['servers', 'default', ..., 'versions', 0]."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(key):
        m = PATH_TOKEN.match(key, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse config path {key!r} at {pos}")
        name, index, quoted = m.groups()
        parts.append(int(index) if index is not None else (quoted if quoted is not None else name))
        pos = m.end()
    return parts


def qualify(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def apply_edit(data: dict, edit: Edit) -> None:
    config = data.setdefault("config", {})
    if edit.path:
        head, _, rest = edit.key.partition(":") if ":" in edit.key.split(".")[0] else ("", "", edit.key)
        parts = split_path(rest)
        parts[0] = f"{head}:{parts[0]}" if head else qualify(str(parts[0]))
    else:
        parts = [qualify(edit.key)]
    remove = edit.value_json is None
    value = None if remove else json.loads(edit.value_json)
    container: dict | list = config
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        exists = part < len(container) if isinstance(container, list) else part in container
        if last:
            if remove:
                if not exists:
                    raise KeyError(f"{edit}: {part!r} is not set")
                del container[part]
            elif isinstance(container, list) and part == len(container):
                container.append(value)
            else:
                container[part] = value
            return
        if not exists:
            if remove:
                raise KeyError(f"{edit}: {part!r} is not set")
            child: dict | list = [] if isinstance(parts[i + 1], int) else {}
            if isinstance(container, list):
                if part != len(container):
                    raise IndexError(f"{edit}: index {part} past the end of the list")
                container.append(child)
            else:
                container[part] = child
        container = container[part]


class ToolFailed(RuntimeError):
    pass


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def run_tool(tool: Tool, stack_file: Path, workdir: Path) -> str:
    """Run ``model_tools`` as its CLI does, against a fresh moto bucket with PUBLISHED versions."""
    import boto3
    from moto import mock_aws

    from model_tools.cli import main
    from model_tools.publish import publish

    argv = list(tool.argv)
    # The publisher role of the docs (a stack output) becomes one moto answers AssumeRole for.
    for flag, value in (("--stack-file", str(stack_file)), ("--bucket-uri", f"s3://{BUCKET}/models"),
                        ("--role-arn", "arn:aws:iam::123456789012:role/tfserving-model-publisher")):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
    model = _flag(argv, "--model") or "digits"
    saved_model = workdir / "saved-model"
    if not saved_model.exists():  # publish uploads files; it does not parse them
        (saved_model / "variables").mkdir(parents=True)
        (saved_model / "saved_model.pb").write_bytes(b"\x08\x01" * 50)
        (saved_model / "variables" / "variables.index").write_bytes(b"index")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        fake_aws_credentials(mp)
        with mock_aws():
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            for _ in PUBLISHED:
                publish(str(saved_model), f"s3://{BUCKET}/models", model, log=lambda *a: None)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = main(argv)
    if code != 0:
        raise ToolFailed(f"`{tool}` exited {code}: {out.getvalue().strip()}")
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# The told commands, parsed from the documentation and the stack files
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Told:
    """A command found in a document: where, as written, and what it does."""

    file: str
    line: int
    text: str
    key: str
    """Normalized command (mapping key of DOC_CASES)."""
    block: int
    stack: str | None
    """The stack it names: --stack, a preceding ``pulumi stack select`` in its block, --stack-file,
    or the stack file it is written in."""
    step: Step | None
    error: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


CONFIG_RE = re.compile(r"(?:^|[\s`(;&|])pulumi\s+config\s+(\S+)(.*)")
TOOL_RE = re.compile(r"-m\s+model_tools\s+(promote|rollback)\b(.*)")
SELECT_RE = re.compile(r"pulumi\s+stack\s+(?:select|init)\b(.*)")
CONFIG_VERBS = ("set", "rm", "set-all", "rm-all", "cp")
PLACEHOLDER_RE = re.compile(r"<[^<>]+>")


def parse_config(verb: str, rest: str) -> tuple[str, str | None, Edit | None, str]:
    """(normalized text, --stack, edit, error) of ``pulumi config <verb> <rest>``.

    A documentation placeholder (``<runner egress IP>/32``) stays one word; its DocCase gives the value."""
    rest = PLACEHOLDER_RE.sub(lambda m: shlex.quote(m.group(0)), rest)
    try:
        tokens = shlex.split(rest, comments=True)
    except ValueError as err:
        return f"config {verb} {rest.strip()}", None, None, f"cannot split: {err}"
    normalized = " ".join(["config", verb, *tokens])
    if verb not in ("set", "rm"):
        return normalized, None, None, f"`pulumi config {verb}` is not understood by this test"
    path, stack, typ, positional = False, None, None, []
    it = iter(tokens)
    for tok in it:
        if tok == "--path":
            path = True
        elif tok in ("--stack", "-s"):
            stack = next(it, None)
        elif tok.startswith("--stack="):
            stack = tok.split("=", 1)[1]
        elif tok == "--type":
            typ = next(it, None)
        elif tok in ("--plaintext", "--secret", "--"):
            if tok == "--secret":
                return normalized, stack, None, "--secret values cannot be planned offline by this test"
        elif tok.startswith("-"):
            return normalized, stack, None, f"unknown flag {tok}"
        else:
            positional.append(tok)
    want = 2 if verb == "set" else 1
    if len(positional) != want:
        return normalized, stack, None, f"expected {want} positional argument(s), got {positional}"
    value = None if verb == "rm" else json.dumps(cli_value(positional[1], path, typ))
    return normalized, stack, Edit(positional[0], path, value), ""


def stack_of_file(name: str) -> str | None:
    m = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", Path(name).name)
    return m.group(1) if m else None


def scan_text(file: str, lines: list[str], comment_stack: str | None = None) -> list[Told]:
    """Every told config / model_tools command in a document (or stack file comments)."""
    found: list[Told] = []
    block, in_block, selected = 0, False, None
    i = 0
    while i < len(lines):
        raw, number = lines[i], i + 1
        if comment_stack is not None:  # a stack file: only its comments talk to the user
            line = raw.split("#", 1)[1] if "#" in raw else ""
        else:
            line = raw
            if line.lstrip().startswith("```"):
                in_block = not in_block
                block += 1
                selected = None
                i += 1
                continue
        while line.rstrip().endswith("\\") and i + 1 < len(lines):  # shell continuation lines
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        if in_block and (m := SELECT_RE.search(line)):
            args = [t for t in shlex.split(m.group(1), comments=True) if not t.startswith("-")]
            selected = args[0] if args else selected
        if m := CONFIG_RE.search(line):
            verb, rest = m.group(1), m.group(2).split("`")[0]
            if verb not in CONFIG_VERBS:
                continue
            normalized, stack, step, error = parse_config(verb, rest)
            stack = stack or comment_stack or (selected if in_block else None)
            text = f"pulumi {normalized}"
            found.append(Told(file, number, text, text, block, stack, step, error))
        elif m := TOOL_RE.search(line):
            try:
                tokens = shlex.split(m.group(2), comments=True)
            except ValueError as err:
                tokens, error = [], str(err)
            else:
                error = ""
            argv = (m.group(1), *tokens)
            text = "model_tools " + " ".join(argv)
            stack_file = _flag(list(argv), "--stack-file")
            stack = stack_of_file(stack_file) if stack_file else None
            if not error and stack is None:
                error = "no --stack-file Pulumi.<stack>.yaml"
            found.append(Told(file, number, text, text, block, stack, None if error else Tool(argv), error))
    return found


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "model_tools" / "README.md"]
    return [f for f in files if f.is_file()]


def stack_files() -> list[Path]:
    return sorted(ROOT.glob("Pulumi.*.yaml"))


def gather_told() -> list[Told]:
    told: list[Told] = []
    for path in doc_files():
        told += scan_text(str(path.relative_to(ROOT)), path.read_text().splitlines())
    for path in stack_files():
        told += scan_text(path.name, path.read_text().splitlines(), comment_stack=stack_of_file(path.name))
    return told


# --------------------------------------------------------------------------------------------
# How each told command becomes a case
# --------------------------------------------------------------------------------------------

CANARY = "servers.default.models.digits.canaryVersion"

# model_tools promote as the READMEs run it (--stack-file and --bucket-uri are replaced when run).
PROMOTE = ("promote", "--stack-file", "Pulumi.<stack>.yaml", "--model", "digits",
           "--bucket-uri", "s3://bucket/models")

# Named states a told change applies to (steps from the stack file as committed).
PRELUDES: dict[str, tuple[Step, ...]] = {
    "as-is": (),
    # The state a canary starts from (and the one a roll back leaves): no canaryVersion.
    "no-canary": (Edit(CANARY, True, None),),
    # model_tools/README.md "Ship a model" step 4 done: digits 3 canaried.
    "canary-3": (Edit(CANARY, True, "3"),),
    # model_tools/README.md step 7 done: digits 3 canaried, then promoted.
    "promoted-3": (Edit(CANARY, True, "3"),
                   Tool(PROMOTE + ("--version", "3"))),
    "one-admin": (Edit("clusterAdminArns[0]", True, json.dumps(ADMIN_A)),),
    "two-admins": (Edit("clusterAdminArns[0]", True, json.dumps(ADMIN_A)),
                   Edit("clusterAdminArns[1]", True, json.dumps(ADMIN_B))),
    # docs/components.md "Clients": external access turned on (the block before the JWT one).
    "exposed": (Edit("clusterPrerequisites[0]", True, json.dumps("gateway-api-crds")),
                Edit("exposure.enabled", True, "true"),
                Edit("exposure.gatewayClassName", True, json.dumps("eg")),
                Edit("exposure.hostname", True, json.dumps("models.example.com")),
                Edit("exposure.tlsSecretName", True, json.dumps("models-tls")),
                Edit("exposure.proxyNamespaces[0]", True, json.dumps("envoy-gateway-system"))),
}


@dataclass(frozen=True)
class DocCase:
    """How a documented command becomes a case."""

    stacks: tuple[str, ...] = ()
    """Stacks it applies to; empty: the one the command names (--stack, stack select, --stack-file)."""
    prelude: str = "as-is"
    """The state (PRELUDES) the document applies it to."""
    group: str = ""
    """Commands of one block with the same group are one change (all set before `pulumi up`)."""
    value_json: str | None = None
    """Replaces the documented example value (say why): e.g. when the example is the current value."""
    why: str = ""


# Sections without --stack: "the dev and prod stack files show a canary"; exposure on both clouds (prod,
# protect: true, also needs the authentication block: tests/test_trust_exposure.py refuses it without).
CANARY_STACKS = ("dev", "prod")
EXPOSURE_STACKS = ("dev", "gke-dev")
JWT_CASE = dict(stacks=("dev",), group="jwt", prelude="exposed")

# (file, normalized command) -> how it is a case. Every told command needs one.
DOC_CASES: dict[tuple[str, str], DocCase] = {
    # "Deploy for real" (after `pulumi stack select --create dev`).
    ("README.md", "pulumi config set --path allowedNamespaces[0] apps"): DocCase(
        stacks=("dev",), value_json=json.dumps("frontend"),
        why="the example value apps is already dev's (a no-op); the README says to change what "
            "differs, e.g. who may call the models"),
    ("README.md", "pulumi config set --path nodePools.gpu.maxSize 6"): DocCase(stacks=("dev",)),
    # docs/cold-start.md: a secondary boot disk with the images preloaded (README declares the replacement).
    ("docs/cold-start.md", "pulumi config set --path nodePools.gpu.secondaryBootDiskImage "
                           "global/images/tfserving-cache"): DocCase(stacks=("gke-dev",)),
    # "On Google Cloud (GKE)" (after `pulumi stack select --create gke-dev`); Pulumi.gke-dev.yaml's header.
    ("README.md", "pulumi config set gcpProject my-project"): DocCase(),
    ("Pulumi.gke-dev.yaml", "pulumi config set gcpProject my-project"): DocCase(),
    # "Ship a model": canary it, then promote with model_tools.
    ("README.md", f"pulumi config set --stack dev --path {CANARY} 2"): DocCase(prelude="no-canary"),
    ("README.md", "model_tools promote --stack-file Pulumi.dev.yaml --model digits --version 2 "
                  "--bucket-uri s3://$(pulumi stack output modelBucket)/models "
                  "--role-arn $(pulumi stack output modelPublisherRoleArn)"):
        DocCase(stacks=("dev", "prod")),
    # docs/components.md "Canary, promote, roll back": each step one change, then `pulumi up`.
    ("docs/components.md", f"pulumi config set --path {CANARY} 2"): DocCase(stacks=CANARY_STACKS, prelude="no-canary"),
    ("docs/components.md", "pulumi config set --path servers.default.canaryWeight 25"): DocCase(stacks=CANARY_STACKS),
    ("docs/components.md", "pulumi config set --path servers.default.models.digits.versions[0] 2"):
        DocCase(stacks=CANARY_STACKS),
    ("docs/components.md", f"pulumi config rm --path {CANARY}"): DocCase(stacks=CANARY_STACKS),
    # docs/components.md "Clients": turn external access on (the five keys together, then `pulumi up`).
    ("docs/components.md", "pulumi config set --path clusterPrerequisites[0] gateway-api-crds"):
        DocCase(stacks=EXPOSURE_STACKS, group="exposure"),
    ("docs/components.md", "pulumi config set --path exposure.enabled true"):
        DocCase(stacks=EXPOSURE_STACKS, group="exposure"),
    ("docs/components.md", "pulumi config set --path exposure.gatewayClassName eg"):
        DocCase(stacks=EXPOSURE_STACKS, group="exposure"),
    ("docs/components.md", "pulumi config set --path exposure.hostname models.example.com"):
        DocCase(stacks=EXPOSURE_STACKS, group="exposure"),
    ("docs/components.md", "pulumi config set --path exposure.tlsSecretName models-tls"):
        DocCase(stacks=EXPOSURE_STACKS, group="exposure"),
    ("docs/components.md", "pulumi config set --path exposure.proxyNamespaces[0] envoy-gateway-system"):
        DocCase(stacks=EXPOSURE_STACKS, group="exposure"),
    # docs/components.md "Clients": require a JWT at the gateway (Envoy Gateway), on top of the block above.
    ("docs/components.md", "pulumi config set --path clusterPrerequisites[1] envoy-gateway"): DocCase(**JWT_CASE),
    ("docs/components.md", "pulumi config set --path exposure.gatewayImplementation envoy-gateway"):
        DocCase(**JWT_CASE),
    ("docs/components.md", "pulumi config set --path exposure.authentication jwt"): DocCase(**JWT_CASE),
    ("docs/components.md", "pulumi config set --path exposure.jwt.issuer https://issuer.example.com"):
        DocCase(**JWT_CASE),
    ("docs/components.md", "pulumi config set --path exposure.jwt.jwksUri "
                           "https://issuer.example.com/.well-known/jwks.json"): DocCase(**JWT_CASE),
    ("docs/components.md", "pulumi config set --path exposure.jwt.audiences[0] models"): DocCase(**JWT_CASE),
    # README "Prod: the API and the deploy runners": the deploy runners' egress addresses, before the first up.
    ("README.md", "pulumi config set --stack prod --path publicAccessCidrs[0] 198.51.100.7/32"): DocCase(),
    # Pulumi.prod.yaml: the deploy runners' egress addresses, instead of the documentation range.
    ("Pulumi.prod.yaml", "pulumi config set --stack prod --path publicAccessCidrs[0] <runner egress IP>/32"):
        DocCase(value_json=json.dumps("198.51.100.7/32"), why="<runner egress IP> is a placeholder"),
    # model_tools/README.md "Ship a model": canary 3, promote 3, roll back.
    ("model_tools/README.md", f"pulumi config set --stack dev --path {CANARY} 3"): DocCase(),
    ("model_tools/README.md", "model_tools promote --stack-file Pulumi.dev.yaml --model digits --version 3 "
                              "--bucket-uri s3://my-models-bucket/models"):
        DocCase(stacks=("dev", "prod"), prelude="canary-3"),
    ("model_tools/README.md", "model_tools rollback --stack-file Pulumi.dev.yaml --model digits "
                              "--bucket-uri s3://my-models-bucket/models"):
        DocCase(stacks=("dev", "prod"), prelude="promoted-3"),
}


@dataclass(frozen=True)
class HandCase:
    """A told change that is not a command line: a stack file comment, the configuration reference."""

    id: str
    stack: str
    file: str
    cites: str
    """Text that must appear in ``file`` (the instruction); its line is the source."""
    steps: tuple[Step, ...]
    prelude: str = "as-is"


def _admin_cases(stack: str) -> list[HandCase]:
    cites = "IAM principals given cluster-admin access entries"
    return [
        HandCase(f"clusterAdminArns-add-first@{stack}", stack, "Pulumi.yaml", cites,
                 (Edit("clusterAdminArns[0]", True, json.dumps(ADMIN_A)),)),
        HandCase(f"clusterAdminArns-add-second@{stack}", stack, "Pulumi.yaml", cites,
                 (Edit("clusterAdminArns[1]", True, json.dumps(ADMIN_B)),), prelude="one-admin"),
        HandCase(f"clusterAdminArns-remove-second@{stack}", stack, "Pulumi.yaml", cites,
                 (Edit("clusterAdminArns[1]", True, None),), prelude="two-admins"),
        HandCase(f"clusterAdminArns-remove-last@{stack}", stack, "Pulumi.yaml", cites,
                 (Edit("clusterAdminArns", False, None),), prelude="one-admin"),
    ]


SCALE_POOL = "pulumi config set --path 'nodePools.gpu.maxSize' 6"
GO_PRIVATE = "go private-only in place (no replacement)"
PRIVATE = Edit("endpointPublicAccess", True, "false")
API_CIDRS = Edit("apiAccessCidrs", True, '["10.0.0.0/16"]')

HAND_CASES: list[HandCase] = [
    # Stack file comments.
    HandCase("comment-promote-versions-2@dev", "dev", "Pulumi.dev.yaml", "promote with versions: [2]",
             (Edit("servers.default.models.digits.versions", True, "[2]"),)),
    HandCase("comment-promote-versions-2@prod", "prod", "Pulumi.prod.yaml", "promote with versions: [2]",
             (Edit("servers.default.models.digits.versions", True, "[2]"),)),
    HandCase("comment-rollback-remove-canaryVersion@prod", "prod", "Pulumi.prod.yaml",
             "roll back by removing canaryVersion", (Edit(CANARY, True, None),)),
    # As written: private endpoint, publicAccessCidrs removed, apiAccessCidrs set (one change).
    HandCase("comment-go-private-only@prod", "prod", "Pulumi.prod.yaml", GO_PRIVATE,
             (PRIVATE, API_CIDRS, Edit("publicAccessCidrs", False, None))),
    # The configuration reference: admins are added and removed over a cluster's life.
    *_admin_cases("dev"),
    *_admin_cases("prod"),
    # README.md "Deploy for real" instructions, on the other stacks too.
    HandCase("nodePools.gpu.maxSize-10@prod", "prod", "README.md", SCALE_POOL,
             (Edit("nodePools.gpu.maxSize", True, "10"),)),
    HandCase("nodePools.gpu.maxSize-6@gke-dev", "gke-dev", "README.md", SCALE_POOL,
             (Edit("nodePools.gpu.maxSize", True, "6"),)),
    HandCase("allowedNamespaces-widen@prod", "prod", "README.md", "pulumi config set --path 'allowedNamespaces[0]' apps",
             (Edit("allowedNamespaces", False, json.dumps('["apps", "frontend"]')),)),
    HandCase("allowedNamespaces-widen@gke-dev", "gke-dev", "README.md", "pulumi config set --path 'allowedNamespaces[0]' apps",
             (Edit("allowedNamespaces", False, json.dumps('["apps", "frontend"]')),)),
]


@dataclass(frozen=True)
class Case:
    id: str
    stack: str
    source: str
    prelude: tuple[Step, ...]
    steps: tuple[Step, ...]
    error: str = ""


def _slug(text: str) -> str:
    """A short case id: no ``pulumi config`` prefix."""
    text = re.sub(r"^(pulumi )?config ", "", text)
    return re.sub(r"\s+", " ", text).strip()


def build_cases() -> tuple[list[Case], list[str]]:
    """The cases, and the problems that keep a told command from being one."""
    cases: list[Case] = []
    problems: list[str] = []
    told = gather_told()
    groups: dict[tuple[str, int, str, str], list[Told]] = {}
    used: set[tuple[str, str]] = set()
    for t in told:
        mapping = DOC_CASES.get((t.file, t.key))
        if mapping is None:
            problems.append(f"{t.where}: no case in DOC_CASES for ({t.file!r}, {t.key!r})"
                            + (f" ({t.error})" if t.error else ""))
            continue
        used.add((t.file, t.key))
        if t.error or t.step is None:
            problems.append(f"{t.where}: cannot apply: {t.error}")
            continue
        if PLACEHOLDER_RE.search(t.key) and mapping.value_json is None:
            problems.append(f"{t.where}: the value is a placeholder: give DocCase(value_json=...)")
            continue
        stacks = mapping.stacks or ((t.stack,) if t.stack else ())
        if not stacks:
            problems.append(f"{t.where}: names no stack (no --stack, no `pulumi stack select` before it "
                            "in its block): give DocCase(stacks=...)")
            continue
        if t.stack and t.stack not in stacks:
            problems.append(f"{t.where}: names stack {t.stack} but DocCase lists {stacks}")
            continue
        for stack in stacks:
            groups.setdefault((t.file, t.block if mapping.group else t.line, mapping.group or t.key, stack),
                              []).append(t)
    for (file, _, name, stack), items in groups.items():
        mapping = DOC_CASES[(file, items[0].key)]
        steps: list[Step] = []
        for t in items:
            m = DOC_CASES[(t.file, t.key)]
            step = t.step
            if m.value_json is not None and isinstance(step, Edit):
                step = Edit(step.key, step.path, m.value_json)
            steps.append(step)
        source = "; ".join(t.where for t in items)
        overrides = [f"value {m.value_json} instead: {m.why}"
                     for m in (DOC_CASES[(t.file, t.key)] for t in items) if m.value_json is not None]
        if overrides:
            source += " [" + "; ".join(overrides) + "]"
        if isinstance(steps[0], Tool):  # no --stack-file / --bucket-uri (placeholders, replaced when run)
            argv = list(steps[0].argv)
            for flag in ("--stack-file", "--bucket-uri", "--role-arn"):
                if flag in argv:
                    del argv[argv.index(flag):argv.index(flag) + 2]
            name = "model_tools " + " ".join(argv)
        case_id = f"{file}|{_slug(name)}@{stack}"
        if mapping.prelude != "as-is":
            case_id += f" from {mapping.prelude}"
        cases.append(Case(case_id, stack, source, PRELUDES[mapping.prelude], tuple(steps)))
    for key in DOC_CASES.keys() - used:
        problems.append(f"DOC_CASES entry {key} matches no command of {key[0]} any more: remove or update it")
    for hand in HAND_CASES:
        lines = (ROOT / hand.file).read_text().splitlines()
        hits = [n for n, line in enumerate(lines, 1) if hand.cites in line]
        if hits:
            source = f"{hand.file}:{hits[0]}: {lines[hits[0] - 1].strip()}"
            cases.append(Case(hand.id, hand.stack, source, PRELUDES[hand.prelude], hand.steps))
        else:
            error = f"{hand.file} no longer says {hand.cites!r}: update the case"
            cases.append(Case(hand.id, hand.stack, f"{hand.file}: {hand.cites!r}", PRELUDES[hand.prelude],
                              hand.steps, error=error))
    return cases, problems


CASES, PROBLEMS = build_cases()


# --------------------------------------------------------------------------------------------
# Planning and judging
# --------------------------------------------------------------------------------------------

class Planner:
    """Stack files realised from steps, and their plans, cached per (stack, steps)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.files: dict[tuple[str, tuple[Step, ...]], Path] = {}
        self.plans: dict[tuple[str, tuple[Step, ...]], dict] = {}
        self.failures: dict[tuple[str, tuple[Step, ...]], str] = {}

    def stack_file(self, stack: str, steps: tuple[Step, ...]) -> Path:
        """The stack file after ``steps`` (each state realised once, from the state before its last step)."""
        key = (stack, steps)
        if key not in self.files:
            parent = self.stack_file(stack, steps[:-1]) if steps else ROOT / f"Pulumi.{stack}.yaml"
            folder = self.workdir / f"state-{len(self.files)}"
            folder.mkdir(parents=True)
            path = folder / f"Pulumi.{stack}.yaml"  # the model tool wants the real name
            shutil.copyfile(parent, path)
            if steps and isinstance(steps[-1], Edit):
                data = yaml.safe_load(path.read_text())
                apply_edit(data, steps[-1])
                path.write_text(yaml.safe_dump(data, sort_keys=False))
            elif steps:
                run_tool(steps[-1], path, self.workdir)
            self.files[key] = path
        return self.files[key]

    def plan(self, stack: str, steps: tuple[Step, ...]) -> dict:
        key = (stack, steps)
        if key in self.failures:
            raise RuntimeError(self.failures[key])
        if key not in self.plans:
            try:
                path = self.stack_file(stack, steps)
                self.plans[key] = to_json(plan_stack(stack, config_file=path))
            except Exception as err:  # noqa: BLE001 - reported against every case that needs this state
                what = "; ".join(map(str, steps)) or "the stack file as committed"
                self.failures[key] = f"cannot plan {stack} after {what}: {type(err).__name__}: {err}"
                raise RuntimeError(self.failures[key]) from None
        return self.plans[key]


@pytest.fixture(scope="module")
def planner(tmp_path_factory) -> Planner:
    return Planner(tmp_path_factory.mktemp("told-changes"))


_DIFFS: dict[str, StackDiff] = {}


def case_diff(planner: Planner, case: Case) -> StackDiff:
    if case.error:
        pytest.fail(f"case {case.id}: {case.error}", pytrace=False)
    if case.id not in _DIFFS:
        problem = ""
        try:
            before = planner.plan(case.stack, case.prelude)
            after = planner.plan(case.stack, case.prelude + case.steps)
        except RuntimeError as err:
            problem = str(err)
        if problem:
            pytest.fail(f"case {case.id}: {problem}\n  source: {case.source}", pytrace=False)
        _DIFFS[case.id] = diff_plans(before, after, case.stack, "told change")
    return _DIFFS[case.id]


def _force_new_fields(change: ResourceChange) -> list[str]:
    """Changed fields that force a replacement: the diff's own mark, or PROVIDER_FORCE_NEW."""
    extra = PROVIDER_FORCE_NEW.get(change.type, ())
    out = []
    for f in change.fields:
        by_table = f.replaces
        by_provider = any(f.path == p or f.path.startswith((p + ".", p + "[")) for p in extra)
        if by_table or by_provider:
            note = "" if by_table else " (ForceNew on the provider; not in stacks/diff.py REPLACE_ON_CHANGE)"
            out.append(f"{f.path}: {json.dumps(f.old)} => {json.dumps(f.new)}{note}")
    return out


def destructive(diff: StackDiff) -> list[tuple[ResourceChange, str]]:
    """Guarded resources the change replaces or deletes, each with why."""
    found = []
    for change in diff.changes:
        if change.type not in GUARDED_TYPES:
            continue
        if change.op == "delete":
            created = [c.name for c in diff.changes if c.op == "create" and c.type == change.type]
            instead = f" (created instead: {', '.join(created)})" if created else ""
            found.append((change, "deleted" + instead))
        elif change.op in ("replace", "update"):
            fields = _force_new_fields(change)
            if fields:
                shown = "" if change.op == "replace" else " (the offline diff shows an update)"
                found.append((change, f"replaced{shown}, forced by " + "; ".join(fields)))
    return found


def _step_text(case: Case) -> str:
    prelude = "; ".join(map(str, case.prelude)) or "as committed"
    return f"from {case.stack} {prelude}, {'; '.join(map(str, case.steps))}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_told_change(planner, case):
    """The told change plans, changes something, and destroys nothing README.md does not announce."""
    diff = case_diff(planner, case)
    assert diff.changes, (f"case {case.id} ({_step_text(case)}) changes nothing in the plan, so it tests "
                          f"nothing.\n  source: {case.source}")
    bad = [(change, why) for change, why in destructive(diff)
           if (case.id, change.type) not in README_DECLARED]
    assert not bad, (
        f"case {case.id} ({_step_text(case)}) would destroy what README.md does not say it destroys.\n"
        f"  source: {case.source}\n"
        + "\n".join(f"  {change.type} {change.name}: {why}" for change, why in bad))


# --------------------------------------------------------------------------------------------
# The gathering itself
# --------------------------------------------------------------------------------------------

def test_every_told_command_has_a_case():
    assert not PROBLEMS, "told commands that are not (or not correctly) cases:\n  " + "\n  ".join(PROBLEMS)


def test_gathering_finds_the_known_instructions():
    """The parser still sees the commands it is meant to (a broken regex would make every test vacuous)."""
    keys = {t.key for t in gather_told()}
    assert "pulumi config set --path nodePools.gpu.maxSize 6" in keys
    assert f"pulumi config rm --path {CANARY}" in keys
    assert any(k.startswith("model_tools promote") for k in keys)
    assert any(k.startswith("model_tools rollback") for k in keys)
    assert len(CASES) >= 30


INSTRUCTION_RE = re.compile(r"(?i)\b(promote|roll(?:\s|-)?back|pulumi config|set|remove|change|go|switch|"
                            r"turn (?:on|off)|enable|disable)\b")


def test_instruction_comments_are_cited():
    """A stack file comment telling the user what to change is a case (cited or parsed)."""
    cited = {c.source.split(": ", 1)[0] for c in CASES}
    parsed = {f"{t.file}:{t.line}" for t in gather_told()}
    missing = []
    for path in stack_files():
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            comment = line.split("#", 1)[1] if "#" in line else ""
            if not INSTRUCTION_RE.search(comment):
                continue
            where = f"{path.name}:{number}"
            introduces = f"{path.name}:{number + 1}" in parsed  # the line before a parsed command
            if where not in cited and where not in parsed and not introduces:
                missing.append(f"{where}: {line.strip()}")
    assert not missing, ("stack file comments that tell what to change but no case cites "
                         "(add a HandCase):\n  " + "\n  ".join(missing))


def test_readme_declares_what_it_says_is_replaced():
    readme = (ROOT / "README.md").read_text()
    ids = {c.id for c in CASES}
    wrong = [f"{key}: {sentence!r}" for key, sentence in README_DECLARED.items()
             if sentence not in readme or key[0] not in ids]
    assert not wrong, ("README_DECLARED entries whose sentence is not in README.md or whose case is gone:\n  "
                       + "\n  ".join(wrong))


@pytest.mark.parametrize("resource_type,path",
                         [(t, p) for t, paths in PROVIDER_FORCE_NEW.items() for p in paths])
def test_diff_table_covers_provider_force_new(resource_type, path):
    """stacks/diff.py marks a change of each known ForceNew field of a guarded type as a replacement."""
    def plan(value: bool) -> dict:
        return {"resources": [{"urn": "urn:pulumi:dev::p::t::x", "type": resource_type, "name": "x",
                               "inputs": {path.split(".")[0]: {path.split(".", 1)[1]: value}} if "." in path
                               else {path: value}}]}

    diff = diff_plans(plan(True), plan(False), "dev", "table check")
    ops = [c.op for c in diff.changes]
    assert ops == ["replace"], (
        f"stacks/diff.py REPLACE_ON_CHANGE[{resource_type!r}] = {REPLACE_ON_CHANGE.get(resource_type)} "
        f"does not cover {path!r}, which forces replacement on the real provider: the offline diff shows "
        f"a change of it as {ops} instead of a replacement")
