"""Building blocks of the settings models: strict base model, field-naming errors, syntax checks."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict


class FieldProblem(ValueError):
    """Raised by cross-field validators so the error names the exact key, not just its parent."""

    def __init__(self, field: str, value: object, allowed: str):
        super().__init__(allowed)
        self.field, self.value, self.allowed = field, value, allowed


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Strict(BaseModel):
    """Unknown keys are errors (a typo must never fall back to a default silently)."""

    model_config = ConfigDict(extra="forbid", alias_generator=_camel, populate_by_name=True,
                              frozen=True)


_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                         r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not _LABEL_NAME.match(key) or len(key) > 316:
            raise FieldProblem(key, key, "a Kubernetes label key ([prefix/]name, name of at most 63 "
                                         "alphanumerics, '-', '_' or '.')")
        if not _LABEL_VALUE.match(value):
            raise FieldProblem(key, value, "a Kubernetes label value (at most 63 alphanumerics, "
                                           "'-', '_' or '.', starting and ending alphanumeric)")
    return labels


def check_quantity(quantity: str) -> str:
    if not QUANTITY.match(quantity):
        raise ValueError("a Kubernetes quantity such as 500m, 2, 512Mi or 4Gi")
    return quantity


def check_cidrs(cidrs: list[str]) -> list[str]:
    for index, cidr in enumerate(cidrs):
        try:
            ipaddress.IPv4Network(cidr)
        except ValueError:
            raise FieldProblem(str(index), cidr, "an IPv4 CIDR such as 203.0.113.0/24") from None
    return cidrs


NAME_KEY_ALLOWED = "a name of lowercase letters, digits, '-' or '_' (at most 63, starting and ending alphanumeric)"


def check_keys(mapping: dict, pattern: str, allowed: str = NAME_KEY_ALLOWED) -> dict:
    """Every key of a config map (pool, server or model name) matches ``pattern``; errors name the key."""
    for key in mapping:
        if not re.match(pattern, key):
            raise FieldProblem(key, key, allowed)
    return mapping
