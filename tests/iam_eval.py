"""A small evaluator of AWS IAM and GCP IAM policies, enough to judge the policies this program writes.

AWS, after https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
(same-account requests): an explicit Deny in any applicable policy wins; otherwise an Allow in the
principal's identity policies or in the resource policy naming the principal allows. A resource
policy naming the account root (``arn:aws:iam::<account>:root``) delegates to the account: the principal
then needs its own identity Allow too. KMS differs: the key policy must allow the principal directly, or
allow the account root and the identity policy allow as well
(https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html#key-policy-default-allow-root-enable-iam).
Supported: Effect, Principal/NotPrincipal, Action/NotAction and Resource/NotResource with ``*``/``?``
wildcards (actions case-insensitive), and the condition operators String(Not)Equals, String(Not)Like,
Arn(Not)Equals, Arn(Not)Like and Bool, each also as ``...IfExists`` and with the ``ForAllValues:`` /
``ForAnyValue:`` set qualifiers (a context value may then be a list, e.g. ``aws:TagKeys``), and ``Null``; a key absent
from the request makes a positive operator false and a negated one true
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html).
Anything else raises, so a policy using an operator this evaluator does not know fails the tests.

GCP: bindings of (role, member, CEL condition); the condition subset the program writes (``==``,
``startsWith``, ``api.getAttribute``, ``&&``, ``||``, parentheses) is evaluated; role permissions from
https://cloud.google.com/storage/docs/access-control/iam-roles.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    principal: str
    """``aws:PrincipalArn``: a role's ARN for its sessions."""
    action: str
    resource: str
    context: dict[str, str | list[str]] = field(default_factory=dict)
    """Condition keys of the request (``aws:SourceVpce``, ``kms:ViaService``, ``s3:prefix``...)."""

    @property
    def account(self) -> str:
        return self.principal.split(":")[4]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _wild(pattern: str, value: str, case: bool = True) -> bool:
    """IAM wildcards: ``*`` any run of characters, ``?`` one character, nothing else special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _principal_matches(spec, principal: str) -> str | None:
    """``direct`` when the principal is named, ``account`` when its account root is, else None."""
    if spec == "*":
        return "direct"
    found = None
    for kind, values in spec.items():
        for value in _as_list(values):
            if kind != "AWS":
                continue
            if value == "*" or value == principal:
                return "direct"
            if value.endswith(":root") and value.split(":")[4] == principal.split(":")[4]:
                found = "account"
    return found


_OPERATORS = {
    "StringEquals": (lambda p, v: p == v, False), "StringNotEquals": (lambda p, v: p == v, True),
    "StringLike": (lambda p, v: _wild(p, v), False), "StringNotLike": (lambda p, v: _wild(p, v), True),
    "ArnEquals": (lambda p, v: p == v, False), "ArnNotEquals": (lambda p, v: p == v, True),
    "ArnLike": (lambda p, v: _wild(p, v), False), "ArnNotLike": (lambda p, v: _wild(p, v), True),
    "Bool": (lambda p, v: str(p).lower() == str(v).lower(), False),
}


def _conditions_hold(conditions: dict, context: dict[str, str | list[str]]) -> bool:
    for operator, keys in conditions.items():
        if operator == "Null":
            # "true": the key must be absent from the request; "false": present (Conditions_Null).
            if any((key not in context) != (str(value).lower() == "true") for key, value in keys.items()):
                return False
            continue
        qualifier, _, base = operator.rpartition(":")
        if_exists = base.endswith("IfExists")
        base = base.removesuffix("IfExists")
        if base not in _OPERATORS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
            raise NotImplementedError(f"condition operator {operator} is not evaluated here")
        test, negated = _OPERATORS[base]
        for key, patterns in keys.items():
            if key not in context:
                # ...IfExists: true when the key is absent; ForAllValues: true for an absent (empty) set;
                # ForAnyValue: false (reference_policies_condition-single-vs-multi-valued-context-keys.html).
                if if_exists or qualifier == "ForAllValues" or (negated and qualifier != "ForAnyValue"):
                    continue
                return False
            values = _as_list(context[key])
            matches = [any(test(p, v) for p in _as_list(patterns)) != negated for v in values]
            if qualifier == "ForAllValues":
                held = all(matches)
            elif qualifier == "ForAnyValue":
                held = any(matches)
            else:
                held = matches[0] if len(values) == 1 else all(matches)
            if not held:
                return False
    return True


def _applies(statement: dict, request: Request) -> bool:
    if "Action" in statement:
        if not any(_wild(a, request.action, case=False) for a in _as_list(statement["Action"])):
            return False
    elif any(_wild(a, request.action, case=False) for a in _as_list(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_wild(r, request.resource) for r in _as_list(statement["Resource"])):
            return False
    elif "NotResource" in statement and any(_wild(r, request.resource) for r in _as_list(statement["NotResource"])):
        return False
    return _conditions_hold(statement.get("Condition", {}), request.context)


def _resource_match(statement: dict, request: Request) -> str | None:
    if "Principal" in statement:
        return _principal_matches(statement["Principal"], request.principal)
    if "NotPrincipal" in statement:
        return None if _principal_matches(statement["NotPrincipal"], request.principal) else "direct"
    raise ValueError(f"a resource policy statement without Principal: {statement}")


def _statements(policy: str | dict) -> list[dict]:
    document = json.loads(policy) if isinstance(policy, str) else policy
    return _as_list(document["Statement"])


def _identity_effect(request: Request, identity: list[str | dict]) -> str | None:
    """What the principal's own (identity) policies say: ``Deny`` when one denies, ``Allow`` when one
    allows and none denies, None when none applies."""
    effect = None
    for policy in identity:
        for st in _statements(policy):
            if _applies(st, request):
                if st["Effect"] == "Deny":
                    return "Deny"
                effect = "Allow"
    return effect


def s3_allows(request: Request, identity: list[str | dict], bucket_policy: str | dict | None) -> bool:
    """Whether a same-account S3 request is allowed by the principal's identity policies and the bucket's."""
    own = _identity_effect(request, identity)
    if own == "Deny":
        return False
    identity_allow = own == "Allow"
    resource_allow = False
    for st in _statements(bucket_policy) if bucket_policy else []:
        match = _resource_match(st, request)
        if match and _applies(st, request):
            if st["Effect"] == "Deny":
                return False
            resource_allow = resource_allow or match == "direct"
    return identity_allow or resource_allow


def kms_allows(request: Request, identity: list[str | dict], key_policy: str | dict) -> bool:
    """Whether a KMS request is allowed: the key policy names the principal, or delegates to its account
    and an identity policy allows."""
    direct = delegated = False
    for st in _statements(key_policy):
        match = _resource_match(st, request)
        if match and _applies(st, request):
            if st["Effect"] == "Deny":
                return False
            direct = direct or match == "direct"
            delegated = delegated or match == "account"
    own = _identity_effect(request, identity)
    if own == "Deny":
        return False
    return direct or (delegated and own == "Allow")


# --- GCP ---

ROLE_PERMISSIONS = {
    "roles/storage.objectViewer": {"storage.objects.get", "storage.objects.list"},
    "roles/storage.objectCreator": {"storage.objects.create"},
    "roles/storage.objectUser": {"storage.objects.create", "storage.objects.delete", "storage.objects.get",
                                 "storage.objects.list", "storage.objects.update"},
    "roles/storage.objectAdmin": {"storage.objects.create", "storage.objects.delete", "storage.objects.get",
                                  "storage.objects.list", "storage.objects.update",
                                  "storage.objects.getIamPolicy", "storage.objects.setIamPolicy"},
    "roles/storage.admin": {"storage.objects.create", "storage.objects.delete", "storage.objects.get",
                            "storage.objects.list", "storage.objects.update", "storage.buckets.update"},
}


@dataclass(frozen=True)
class GcsRequest:
    member: str
    permission: str
    bucket: str
    object: str | None = None
    """The object name; None for a bucket-level call (objects.list)."""
    list_prefix: str | None = None
    """The ``prefix`` of an objects.list call."""


_CEL_TOKENS = re.compile(r'\s*(?:(&&|\|\||==|\(|\)|,|\.)|("(?:[^"\\]|\\.)*")|([A-Za-z_][A-Za-z0-9_]*))')


def cel_eval(expression: str, request: GcsRequest) -> bool:
    """Evaluate the CEL subset of Cloud Storage conditions the program writes; anything else raises."""
    resource_type = "storage.googleapis.com/Object" if request.object is not None else "storage.googleapis.com/Bucket"
    name = f"projects/_/buckets/{request.bucket}" + (f"/objects/{request.object}" if request.object else "")
    attributes = {"storage.googleapis.com/objectListPrefix": request.list_prefix}
    tokens, pos = [], 0
    while pos < len(expression.rstrip()):
        m = _CEL_TOKENS.match(expression, pos)
        if not m or m.end() == pos:
            raise NotImplementedError(f"CEL not evaluated here: {expression[pos:]!r}")
        tokens.append(m.group(1) or m.group(2) or m.group(3))
        pos = m.end()
    out = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "&&":
            out.append(" and ")
        elif t == "||":
            out.append(" or ")
        elif t in ("(", ")", ",", "=="):
            out.append(t)
        elif t.startswith('"'):
            out.append(repr(json.loads(t)))
        elif tokens[i:i + 3] == ["resource", ".", "type"]:
            out.append(repr(resource_type)); i += 2
        elif tokens[i:i + 3] == ["resource", ".", "name"]:
            out.append(repr(name)); i += 2
        elif tokens[i:i + 3] == ["api", ".", "getAttribute"]:
            out.append("attr"); i += 2
        elif t == "." and i + 1 < len(tokens) and tokens[i + 1] == "startsWith":
            out.append(".startswith"); i += 1
        else:
            raise NotImplementedError(f"CEL token not evaluated here: {t!r} in {expression!r}")
        i += 1

    def attr(key: str, default: str) -> str:
        value = attributes.get(key)
        return default if value is None else value

    return bool(eval("".join(out), {"__builtins__": {}, "attr": attr}))  # noqa: S307 (tokens checked above)


def gcs_allows(request: GcsRequest, bindings: list[dict]) -> bool:
    """``bindings``: dicts with role, member and an optional condition expression (bucket IAM)."""
    for binding in bindings:
        if binding["member"] != request.member:
            continue
        if request.permission not in ROLE_PERMISSIONS[binding["role"]]:
            continue
        condition = binding.get("condition")
        if condition is None or cel_eval(condition, request):
            return True
    return False
