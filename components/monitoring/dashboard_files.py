"""The Grafana dashboards shipped with the platform, and a small PromQL scanner to check their queries.

Dashboards are plain Grafana JSON files in :data:`DASHBOARD_DIR` (``tfserving.json``,
``gpu.json``). :class:`~components.monitoring.serving_monitoring.ServingMonitoring` puts each one
in a ConfigMap labelled :data:`DASHBOARD_LABEL`, which kube-prometheus-stack's Grafana sidecar
loads (chart values ``grafana.sidecar.dashboards.label`` / ``labelValue``, default
``grafana_dashboard: "1"``).

:func:`extract_metric_names` finds the metric names a PromQL expression reads, so the tests can
check each against :mod:`components.monitoring.metric_catalog`: a misspelt metric never fails a
query, it only leaves a panel empty. It is a tokenizer plus a few grammar rules, not a full parser:
it assumes the expression is valid PromQL (``promtool`` checks that separately).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DASHBOARD_DIR = Path(__file__).parent / "dashboards"
"""Directory of the dashboard JSON files; the file stem is the dashboard's key."""

DASHBOARD_LABEL = {"grafana_dashboard": "1"}
"""Label that makes kube-prometheus-stack's Grafana sidecar load a ConfigMap as a dashboard."""


def load_dashboards(directory: str | Path = DASHBOARD_DIR) -> dict[str, dict]:
    """Every ``*.json`` dashboard in ``directory``, parsed, keyed by file stem (sorted)."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(Path(directory).glob("*.json"))}


def iter_panels(dashboard: dict) -> Iterator[dict]:
    """Every panel of a dashboard, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_exprs(dashboard: dict) -> Iterator[tuple[dict, dict]]:
    """``(panel, target)`` for every PromQL target (one with an ``expr``) of every panel."""
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel, target


def variable_query(variable: dict) -> str:
    """The query string of a ``query`` template variable (Grafana saves a string or an object)."""
    query = variable.get("query", "")
    if isinstance(query, dict):
        query = query.get("query", "")
    return query


# --- PromQL scanning ----------------------------------------------------------------------------

KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                      "group_right", "offset", "bool", "atan2", "inf", "nan"})
"""Identifiers PromQL reserves (case-insensitive): never metric names."""

LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
"""Keywords followed by a parenthesised list of label names."""

AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                          "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"})
"""Aggregation operators (keywords: ``sum by (x) (...)`` puts the grouping before the parenthesis)."""

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_IDENT_START = re.compile(r"[a-zA-Z_:]")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(r"(?:[0-9]|\.[0-9])(?:[eE][+-]?[0-9]|[0-9a-zA-Z_.])*")
_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|[a-zA-Z0-9_]+)")
_MATCH_OPS = ("=~", "!~", "!=", "=")
_STRING_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "`": "`"}


@dataclass(frozen=True)
class Token:
    kind: str
    """``ident``, ``string``, ``number``, ``(``, ``)``, ``{``, ``}``, ``,``, ``match`` or ``other``."""
    value: str
    pos: int


def _read_string(expr: str, start: int) -> tuple[str, int]:
    """The unescaped value of the string literal opening at ``start`` and the index after it."""
    quote = expr[start]
    i = start + 1
    out = []
    while i < len(expr):
        c = expr[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\" and quote != "`":
            if i + 1 >= len(expr):
                break
            nxt = expr[i + 1]
            out.append(_STRING_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        if c == "\n" and quote != "`":
            break
        out.append(c)
        i += 1
    raise ValueError(f"unterminated string literal at {start} in {expr!r}")


def _skip_brackets(expr: str, start: int) -> int:
    """Index after the ``]`` closing the ``[`` at ``start`` (range, subquery, Grafana ``[[var]]``)."""
    depth = 0
    for i in range(start, len(expr)):
        if expr[i] == "[":
            depth += 1
        elif expr[i] == "]":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unclosed '[' at {start} in {expr!r}")


def tokenize(expr: str) -> list[Token]:
    """PromQL tokens of ``expr``; range/subquery brackets, comments and Grafana variables dropped."""
    tokens: list[Token] = []
    i = 0
    n = len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "#":
            end = expr.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in "\"'`":
            value, end = _read_string(expr, i)
            tokens.append(Token("string", value, i))
            i = end
        elif c == "[":
            i = _skip_brackets(expr, i)
        elif c == "$":
            m = _VARIABLE.match(expr, i)
            if not m:
                raise ValueError(f"stray '$' at {i} in {expr!r}")
            i = m.end()
        elif (m := _NUMBER.match(expr, i)) is not None:
            tokens.append(Token("number", m.group(), i))
            i = m.end()
        elif _IDENT_START.match(c):
            m = _IDENT.match(expr, i)
            tokens.append(Token("ident", m.group(), i))
            i = m.end()
        elif c in "(){},":
            tokens.append(Token(c, c, i))
            i += 1
        else:
            op = next((o for o in _MATCH_OPS if expr.startswith(o, i)), None)
            if op == "=" and expr.startswith("==", i):
                op = None
            if op:
                tokens.append(Token("match", op, i))
                i += len(op)
            else:
                tokens.append(Token("other", c, i))
                i += 1
    return tokens


def _closing(tokens: list[Token], start: int, open_: str, close: str) -> int:
    """Index of the token closing the ``open_`` token at ``start``."""
    depth = 0
    for j in range(start, len(tokens)):
        if tokens[j].kind == open_:
            depth += 1
        elif tokens[j].kind == close:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced {open_!r} at {tokens[start].pos}")


def _name_regex_alternatives(regex: str) -> set[str]:
    """Metric names a ``__name__=~"a|b"`` matcher selects; only plain alternations are resolvable."""
    names = set(regex.split("|"))
    unresolved = sorted(a for a in names if not METRIC_NAME.fullmatch(a))
    if unresolved:
        raise ValueError(f"cannot resolve __name__ regex {regex!r} to metric names "
                         f"(not a plain name: {unresolved})")
    return names


def _matcher_names(tokens: list[Token]) -> set[str]:
    """Metric names inside one ``{...}`` (tokens between the braces)."""
    names: set[str] = set()
    items: list[list[Token]] = [[]]
    for tok in tokens:
        if tok.kind == ",":
            items.append([])
        else:
            items[-1].append(tok)
    for item in items:
        if not item:
            continue
        if len(item) == 1 and item[0].kind == "string":
            # Quoted metric name ({"my.metric", job="x"}, Prometheus 3 UTF-8 names).
            names.add(item[0].value)
            continue
        if len(item) != 3 or item[1].kind != "match" or item[2].kind != "string":
            raise ValueError(f"unexpected label matcher at {item[0].pos}: "
                             f"{' '.join(t.value for t in item)!r}")
        label, op, value = item[0].value, item[1].value, item[2].value
        if label == "__name__":
            if op == "=":
                names.add(value)
            elif op == "=~":
                names |= _name_regex_alternatives(value)
    return names


def extract_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Recognised: bare selectors (``foo``, ``:tensorflow:serving:request_count``, ``a:b:c``),
    ``{__name__="x"}`` and ``{__name__=~"x|y"}`` (a regex that is not a plain alternation of names
    raises ``ValueError``: it cannot be checked), and quoted names inside braces. Ignored: function
    and aggregation names, keywords (``by``, ``without``, ``on``, ``offset``, ``bool``, ``and`` ...),
    label names (matchers and grouping lists), numbers and durations, ranges and subqueries
    (``[5m]``, ``[1h:1m]``), string literals, ``#`` comments and Grafana variables (``$model``,
    ``${ns}``, ``$__rate_interval``, ``[[var]]``).
    """
    tokens = tokenize(expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.kind == "{":
            end = _closing(tokens, i, "{", "}")
            names |= _matcher_names(tokens[i + 1:end])
            i = end + 1
            continue
        if tok.kind == "ident":
            word = tok.value.lower()
            if word in LABEL_LIST_KEYWORDS and nxt is not None and nxt.kind == "(":
                i = _closing(tokens, i + 1, "(", ")") + 1  # a list of label names
                continue
            if word in KEYWORDS or word in AGGREGATIONS:
                i += 1
                continue
            if nxt is not None and nxt.kind == "(":
                i += 1  # a function call
                continue
            names.add(tok.value)
        i += 1
    return names


_TEMPLATE_FUNCTION = re.compile(r"^\s*(label_values|label_names|metrics|query_result)\s*\((.*)\)\s*$", re.S)


def template_query_metric_names(query: str) -> set[str]:
    """Metric names a Grafana Prometheus variable query reads.

    ``label_values(label)``, ``label_values(selector, label)``, ``label_names([selector])``,
    ``query_result(expr)``; ``metrics(regex)`` selects by regex and yields nothing checkable.
    """
    m = _TEMPLATE_FUNCTION.match(query)
    if not m:
        raise ValueError(f"not a Grafana Prometheus variable query: {query!r}")
    function, args = m.group(1), m.group(2)
    if function == "query_result":
        return extract_metric_names(args)
    if function == "metrics":
        return set()
    if function == "label_names":
        return extract_metric_names(args) if args.strip() else set()
    # label_values: the label is the last top-level argument; a selector may precede it.
    depth, split = 0, -1
    for tok in tokenize(args):
        if tok.kind in ("(", "{"):
            depth += 1
        elif tok.kind in (")", "}"):
            depth -= 1
        elif tok.kind == "," and depth == 0:
            split = tok.pos
    return extract_metric_names(args[:split]) if split >= 0 else set()
