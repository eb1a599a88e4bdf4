"""Hypothesis strategies that mutate a committed stack file, driven by the settings schema itself.

A mutation walks ``StackSettings``' pydantic fields from the top (a map such as ``servers`` consumes one
more step, its key; a list an index) to some key, and puts there either a value of the declared type
(within and just beyond its bounds, matching and not matching its pattern) or a hostile one: another
type, a YAML ``true`` for a number, null, NaN, infinities, huge and tiny numbers, empty, blank, unicode
and very long strings, lists with duplicates, maps with hostile keys.
"""

from __future__ import annotations

import copy
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

import annotated_types
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from stacks.config import decode_config
from stacks.plan import ROOT
from stacks.settings import PROJECT, StackSettings
from stacks.stack_files import load_stack_config

STACKS = ("dev", "prod", "gke-dev")


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (Annotated is kept: its constraints matter here)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def base_config(stack: str) -> dict[str, Any]:
    """A committed stack's config merged with the project defaults, decoded (key without namespace -> value)."""
    raw = load_stack_config(ROOT / "Pulumi.yaml", ROOT / f"Pulumi.{stack}.yaml", stack).config
    return decode_config(raw)


def to_raw(values: dict[str, Any]) -> dict[str, str]:
    """Back to what the CLI hands the program: strings, everything else as JSON (stack_files' rule)."""
    return {f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


LONG = "a" * 10_000
HOSTILE_STRINGS = ["", " ", "\t", "\n", "x\n", " x", "ü", "名前", "é" * 70, LONG, "null", "true", "0", "-1",
                   "a" * 64, "a" * 101, "A", "-a", "a-", "a_b", "a.b", "a/b", "UPPER", "../x", "$(x)", "a" * 41]
hostile_scalars = st.sampled_from([None, True, False, 0, -1, 1, 2**63, 10**30, 0.5, -0.0, 1e-9, 1e18,
                                   float("nan"), float("inf"), float("-inf"), [], {}, [1, 1], {"": 1}])
hostile_strings = st.sampled_from(HOSTILE_STRINGS) | st.text(max_size=80)
hostile = hostile_scalars | hostile_strings


def _bounds(metadata: list[Any]) -> tuple[float | None, float | None]:
    low = high = None
    for m in metadata:
        if isinstance(m, (annotated_types.Ge, annotated_types.Gt)):
            low = getattr(m, "ge", getattr(m, "gt", None))
        if isinstance(m, (annotated_types.Le, annotated_types.Lt)):
            high = getattr(m, "le", getattr(m, "lt", None))
    return low, high


def _pattern(metadata: list[Any]) -> str | None:
    return next((getattr(m, "pattern", None) for m in metadata if getattr(m, "pattern", None)), None)


def _metadata(annotation: Any, field: FieldInfo | None) -> tuple[Any, list[Any]]:
    """The bare type and its constraints (the field's, and Annotated's on list items)."""
    metadata = list(field.metadata) if field is not None else []
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            for m in extra:
                metadata.extend(getattr(m, "metadata", [m]))
            continue
        bare = _unwrap(annotation)
        if bare is annotation:
            return annotation, metadata
        annotation = bare


def values_of(annotation: Any, field: FieldInfo | None = None, depth: int = 0,
              typed_only: bool = False) -> st.SearchStrategy:
    """Values of the declared type, around its bounds and pattern, mixed with hostile ones (unless
    ``typed_only``: configs the settings accept more often, so plans render more)."""
    kind, metadata = _metadata(annotation, field)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Literal:
        typed: st.SearchStrategy = st.sampled_from(args)
    elif kind is bool:
        typed = st.booleans()
    elif kind is int:
        low, high = _bounds(metadata)
        lo = int(low) - 2 if low is not None else -5
        hi = int(high) + 2 if high is not None else 10_000
        typed = st.integers(lo, hi) | st.sampled_from([v for v in (low, high) if v is not None] or [1])
    elif kind is float:
        low, high = _bounds(metadata)
        typed = st.floats(allow_nan=True, allow_infinity=True) | st.floats(
            min_value=(low or 0) - 1, max_value=(high or 1000) + 1) | st.integers(-5, 1000)
    elif kind is str:
        pattern = _pattern(metadata)
        typed = st.from_regex(pattern, fullmatch=True) if pattern else st.text(
            alphabet="abcdefghijklmnopqrstuvwxyz0123456789-./_", max_size=70)
    elif origin is list:
        item = values_of(args[0], depth=depth + 1, typed_only=typed_only)
        lists = st.lists(item, max_size=4)
        typed = lists | lists.filter(bool).map(lambda xs: xs + xs[:1])  # a duplicate item
    elif origin is dict and depth < 2:
        keys = st.sampled_from(HOSTILE_STRINGS[:20]) | st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)
        typed = st.dictionaries(keys, values_of(args[1], depth=depth + 1, typed_only=typed_only), max_size=3)
    elif isinstance(kind, type) and issubclass(kind, BaseModel) and depth < 2:
        typed = st.fixed_dictionaries({}, optional={
            f.alias: values_of(f.annotation, f, depth + 1, typed_only) for f in kind.model_fields.values()})
    else:
        typed = st.just({})
    return typed if typed_only else st.one_of(typed, typed, hostile)


@dataclass(frozen=True)
class Mutation:
    path: tuple[str, ...]
    """Config key path: top-level key, then map keys, field aliases and list indexes."""
    value: Any

    @property
    def key(self) -> str:
        return ".".join(self.path)


@st.composite
def mutations(draw: st.DrawFn, base: dict[str, Any], typed_only: bool = False) -> Mutation:
    """One key of the schema, reached from the top, and a value for it."""
    current: Any = StackSettings
    field: FieldInfo | None = None
    value: Any = base
    path: list[str] = []
    while True:
        kind = _unwrap(current)
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        stop = path and draw(st.integers(0, 4)) == 0
        if isinstance(kind, type) and issubclass(kind, BaseModel) and not stop:
            aliases = {f.alias: f for f in kind.model_fields.values()}
            alias = draw(st.sampled_from(sorted(aliases)))
            field = aliases[alias]
            path.append(alias)
            current = field.annotation
            value = value.get(alias) if isinstance(value, dict) else None
        elif origin is dict and not stop:
            existing = sorted(value) if isinstance(value, dict) else []
            key = draw(st.sampled_from(existing) if existing and draw(st.booleans())
                       else st.sampled_from(existing + HOSTILE_STRINGS[:20] + ["cpu", "models", "gpu", "system"]))
            path.append(key)
            current, field = args[1], None
            value = value.get(key) if isinstance(value, dict) else None
        elif origin is list and isinstance(value, list) and value and not stop and draw(st.booleans()):
            index = draw(st.integers(0, len(value) - 1))
            path.append(str(index))
            current, field = args[0], None
            value = value[index]
        else:
            return Mutation(tuple(path), draw(values_of(current, field, typed_only=typed_only)))


def apply(base: dict[str, Any], mutation: Mutation) -> dict[str, Any]:
    """A copy of ``base`` with ``mutation`` applied (maps on the way are created; lists are indexed)."""
    config = copy.deepcopy(base)
    node: Any = config
    for part in mutation.path[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
            continue
        child = node.get(part)
        if not isinstance(child, (dict, list)):
            child = node[part] = {}
        node = child
    last = mutation.path[-1]
    if isinstance(node, list):
        node[int(last)] = mutation.value
    else:
        node[last] = mutation.value
    return config
