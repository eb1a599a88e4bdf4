"""Run the real Pulumi program on Pulumi's own mock engine and record everything it registers.

``pulumi.runtime.set_mocks`` replaces the engine and the providers; the program itself is
unchanged. The stock ``MockMonitor`` drops parents, dependencies and options (pulumi#14421),
so :class:`RecordingMonitor` captures them from each ``RegisterResource`` request.
"""

from __future__ import annotations

import hashlib
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks, rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.settings import get_root_resource, set_root_resource
from pulumi.runtime.sync_await import _sync_await

ACCOUNT_ID = "123456789012"
DEPLOY_ROLE = "tfserving-deploy"
"""The role the offline plan pretends runs ``pulumi up`` (it gets an EKS access entry)."""
SECRET = "[secret]"


@dataclass
class RecordedResource:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    dependencies: list[str]
    protect: bool
    provider: str
    ignore_changes: list[str] = field(default_factory=list)
    retain_on_delete: bool = False


@dataclass
class Recording:
    stack: str
    project: str
    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    stack_urn: str = ""
    config: dict[str, str] = field(default_factory=dict)
    """The stack config the program ran with (Pulumi wire form: namespaced keys, string values)."""
    previous_outputs: dict[str, Any] | None = None
    """The outputs of the stack's last update (read back through a StackReference); None: a fresh stack,
    so this plan is its first ``pulumi up``."""
    stack_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Outputs of other stacks by the name a StackReference gives (``org/project/stack``), e.g. the regional
    stacks a global stack reads; a name not here is answered with ``previous_outputs``."""

    @property
    def first_up(self) -> bool:
        return self.previous_outputs is None

    def of_type(self, type_token: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str) -> RecordedResource:
        matches = [r for r in self.resources if r.type == type_token and r.name == name]
        if len(matches) != 1:
            raise LookupError(f"{len(matches)} resources of type {type_token} named {name}")
        return matches[0]

    def by_urn(self, urn: str) -> RecordedResource | None:
        return next((r for r in self.resources if r.urn == urn), None)


def plain(value: Any) -> Any:
    """Wire form -> plain JSON: secrets masked, integral floats back to ints (the wire has only floats)."""
    if rpc.is_rpc_secret(value):
        return _mask(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _mask(value: Any) -> Any:
    """A secret keeps its shape (a Secret's map stays a map, so schemas still apply); leaves are masked."""
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(v) for v in value]
    return SECRET


GCP_PROJECT = "example-project"
GCP_PROJECT_NUMBER = "123456789012"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:7]


class PlanMocks(mocks.Mocks):
    """Answers like the providers would, with deterministic physical names and ARNs."""

    def __init__(self, previous_outputs: dict[str, Any] | None = None,
                 stack_outputs: dict[str, dict[str, Any]] | None = None):
        self.previous_outputs = previous_outputs
        self.stack_outputs = stack_outputs or {}

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str, dict]:
        state = dict(args.inputs)
        name, token = args.name, args.typ
        if token == "pulumi:pulumi:StackReference":
            # A stack that was never updated has no outputs (pkg/resource/deploy/builtins.go
            # readStackReference returns what the backend's last checkpoint holds).
            stack = str(state.get("name") or name)
            outputs = self.stack_outputs[stack] if stack in self.stack_outputs else self.previous_outputs
            return name, {"name": stack, "outputs": dict(outputs or {}), "secretOutputNames": []}
        physical = f"{name}-{_short_hash(token + name)}"
        if token.startswith("aws:"):
            service = token.split(":")[1].split("/")[0]
            state.setdefault("arn", f"arn:aws:{service}:us-east-1:{ACCOUNT_ID}:{physical}")
        if token == "aws:s3/bucket:Bucket":
            state.setdefault("bucket", physical)
            state["arn"] = f"arn:aws:s3:::{state['bucket']}"
        elif token == "aws:iam/role:Role":
            state.setdefault("name", physical)
            state["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:role/{state['name']}"
        elif token == "aws:kms/key:Key":
            state["keyId"] = physical
        elif token == "aws:eks/cluster:Cluster":
            issuer = f"https://oidc.eks.us-east-1.amazonaws.com/id/{_short_hash(name).upper()}"
            state.update(endpoint=f"https://{_short_hash(name)}.gr7.us-east-1.eks.amazonaws.com",
                         certificateAuthority={"data": "bW9jay1jYQ=="},
                         vpcConfig={**(state.get("vpcConfig") or {}),
                                    "clusterSecurityGroupId": f"sg-{_short_hash(name + 'cluster')}"},
                         identities=[{"oidcs": [{"issuer": issuer}]}])
        elif token == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            state["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{str(state.get('url', '')).removeprefix('https://')}"
        elif token == "aws:eks/nodeGroup:NodeGroup":
            state.update(nodeGroupName=physical,
                         resources=[{"autoscalingGroups": [{"name": f"eks-{physical}"}]}])
        elif token == "aws:ec2/launchTemplate:LaunchTemplate":
            state["latestVersion"] = 1
        elif token == "gcp:storage/bucket:Bucket":
            state.setdefault("name", physical)
            state["url"] = f"gs://{state['name']}"
        elif token == "gcp:serviceaccount/account:Account":
            email = f"{state.get('accountId', physical)}@{state.get('project', GCP_PROJECT)}.iam.gserviceaccount.com"
            state.update(email=email, member=f"serviceAccount:{email}",
                         name=f"projects/{state.get('project', GCP_PROJECT)}/serviceAccounts/{email}")
        elif token == "gcp:container/cluster:Cluster":
            state.update(endpoint=f"203.0.113.{int(_short_hash(name), 16) % 250 + 1}",
                         masterAuth={**(state.get("masterAuth") or {}), "clusterCaCertificate": "bW9jay1jYQ=="})
        elif token == "random:index/randomPassword:RandomPassword":
            # Never a real secret offline; the program must treat it as one (it is exported secret).
            state.update(result=f"offline-{_short_hash(name)}", bcryptHash="offline")
        elif token == "random:index/randomId:RandomId":
            digits = _short_hash(name)[:2 * int(state.get("byteLength", 4))]
            state.update(hex=digits, dec=str(int(digits, 16)), b64Std="", b64Url="")
        if token.startswith("gcp:"):
            state.setdefault("selfLink", f"https://www.googleapis.com/{token.split(':')[1]}/{physical}")
        if token == "aws:ec2/subnet:Subnet":
            # EC2's own shape (subnet- and 17 hex digits): Karpenter's EC2NodeClass schema refuses anything else.
            return f"subnet-{hashlib.sha256((token + name).encode()).hexdigest()[:17]}", state
        return f"{physical}-id", state

    def call(self, args: mocks.MockCallArgs) -> tuple[dict, list]:
        # The invokes the program makes; any other must fail loudly, not return {}.
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{DEPLOY_ROLE}/pulumi",
                    "userId": "AROAEXAMPLE:pulumi", "id": ACCOUNT_ID}, []
        if args.token == "aws:iam/getSessionContext:getSessionContext":
            arn = args.args["arn"]
            role = arn.split("/")[1] if ":assumed-role/" in arn else None
            issuer = f"arn:aws:iam::{ACCOUNT_ID}:role/{role}" if role else arn
            return {"arn": arn, "issuerArn": issuer, "issuerName": role or "", "id": arn,
                    "issuerId": "AROAEXAMPLE", "sessionName": "pulumi" if role else ""}, []
        if args.token == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount":
            email = f"service-{GCP_PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
            return {"emailAddress": email, "member": f"serviceAccount:{email}", "id": email}, []
        if args.token == "gcp:organizations/getProject:getProject":
            project = args.args.get("projectId", "")
            return {"number": GCP_PROJECT_NUMBER, "projectId": project, "name": project,
                    "id": f"projects/{project}"}, []
        raise NotImplementedError(f"the offline plan does not answer invoke {args.token}")


class DuplicateUrnError(Exception):
    """Two registrations with one URN: the real engine fails the update (pkg/diag/errors.go,
    ``GetDuplicateResourceURNError``, code 2001), the stock MockMonitor does not notice."""


class RecordingMonitor(mocks.MockMonitor):
    """A MockMonitor that also keeps each registration's parent, dependencies and options, and refuses a
    duplicate URN as the engine does."""

    def __init__(self, recording: Recording):
        super().__init__(PlanMocks(recording.previous_outputs, recording.stack_outputs))
        self.recording = recording
        self.urns: set[str] = set()

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        """URNs as the engine makes them: the parent's whole type chain, the root stack left out."""
        if parent:
            parent_type = parent.split("::")[2]
            if parent_type != "pulumi:pulumi:Stack":
                type_ = f"{parent_type}${type_}"
        return f"urn:pulumi:{self.recording.stack}::{self.recording.project}::{type_}::{name}"

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        urn = self.make_urn(request.parent, request.type, request.name)
        if urn in self.urns:
            # The engine's wording (https://github.com/pulumi/pulumi/blob/master/pkg/diag/errors.go).
            raise DuplicateUrnError(f"Duplicate resource URN '{urn}'; try giving it a unique name")
        self.urns.add(urn)
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            self.recording.stack_urn = urn
            return response
        self.recording.resources.append(RecordedResource(
            urn=urn, type=request.type, name=request.name, parent=request.parent, custom=request.custom,
            inputs=plain(rpc.deserialize_properties(request.object, keep_unknowns=True)),
            dependencies=list(request.dependencies), protect=bool(request.protect),
            provider=request.provider, ignore_changes=list(request.ignoreChanges),
            retain_on_delete=bool(request.retainOnDelete)))
        return response


def run_program(program: Path, stack: str, project: str, config: dict[str, str],
                secret_keys: list[str], into: Recording | None = None,
                previous_outputs: dict[str, Any] | None = None,
                stack_outputs: dict[str, dict[str, Any]] | None = None) -> Recording:
    """Execute ``program`` (a ``__main__.py``) on the mock engine with ``config``.

    ``previous_outputs`` None plans the stack's first ``pulumi up``; a dict plans a later one, the
    stack's last outputs being these. ``stack_outputs`` answers StackReferences to other stacks by name.
    Raises whatever the program raises (``pulumi.RunError`` for a config error); pass ``into`` to inspect
    what was registered before the failure.
    """
    recording = into if into is not None else Recording(stack=stack, project=project)
    recording.previous_outputs = previous_outputs
    recording.stack_outputs = dict(stack_outputs or {})
    recording.config = dict(config)
    set_root_resource(None)
    pulumi.runtime.set_mocks(PlanMocks(previous_outputs, stack_outputs), project=project, stack=stack,
                             preview=False, monitor=RecordingMonitor(recording))
    pulumi.runtime.set_all_config(config, secret_keys)
    # Outputs a previous run left pending (one that failed part-way, e.g. on a duplicate URN) would
    # otherwise be awaited by this run and fail it; MockSettings does not reset them.
    runtime_settings.SETTINGS.outputs = set()
    from pulumi.runtime.stack import run_pulumi_func

    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(program), run_name="__main__")))
    root = get_root_resource()
    recording.outputs = _sync_await(_resolve_outputs(getattr(root, "outputs", {})))
    return recording


async def _resolve_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    resolved = {}
    for key, value in outputs.items():
        output = pulumi.Output.from_input(value)
        resolved[key] = SECRET if await output.is_secret() else plain(await output.future())
    return resolved
