"""The documentation holds together: links resolve, and the facts it states about the repository are true.

- Every relative link of README.md and docs/*.md points at a file that exists, and every ``#anchor``
  (in the same file or another Markdown file) at a heading GitHub renders with that anchor.
- Canary weights stated next to ``canaryWeight`` (``dev 20%, prod 5%, default 10%``) are the stack
  files' and the setting's default: the README once said "start: 10%" where dev runs 20 and prod 5.
- A count of checkov skips in prose matches ``.checkov.yaml``: the README once said "the one skip"
  where the file had 16.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from stacks.plan import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

CODE_BLOCK = re.compile(r"(?ms)^\s*```.*?^\s*```")
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)\)")


def prose(text: str) -> str:
    """The text without fenced code blocks (links there are not links)."""
    return CODE_BLOCK.sub("", text)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: links reduced to their text, lower case, punctuation other
    than ``-`` and ``_`` dropped, spaces to ``-`` (github.com/gjtorikian/html-pipeline TocFilter)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; a repeated heading gets ``-1``, ``-2``... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*#*$", prose(path.read_text()), flags=re.M):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        found.add(anchor if count == 0 else f"{anchor}-{count}")
        seen[anchor] = count + 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link outside code."""
    text = prose(path.read_text())
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            found.append((number, target))
    return found


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... (not checked offline)
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: ({target})"
        if not linked.exists():
            problems.append(f"{where} {file_part} does not exist")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{where} {linked.relative_to(ROOT)} has no heading with anchor #{anchor}")
    return problems


def test_the_link_check_reads_the_docs():
    assert ROOT / "docs" / "runbooks.md" in DOCS and ROOT / "docs" / "configuration.md" in DOCS
    assert sum(len(links(p)) for p in DOCS) >= 20
    assert "canary-promote-roll-back" in anchors(ROOT / "docs" / "components.md")


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_relative_link_and_anchor_resolves(path):
    problems = broken_links(path)
    assert not problems, "broken links:\n  " + "\n  ".join(problems)


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Real section\n\n```sh\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#real-section) [ok](#page) [gone](missing.md) "
                    "[bad anchor](other.md#not-a-heading) [self](#nowhere) `[code](missing.md)`\n")
    # broken_links reports paths relative to ROOT: check through a copy under the repository's view.
    problems = [p.split(": (", 1)[1] for p in _broken_links_in(page)]
    assert problems == ["missing.md) missing.md does not exist",
                        "other.md#not-a-heading) other.md has no heading with anchor #not-a-heading",
                        "#nowhere) page.md has no heading with anchor #nowhere"]


def _broken_links_in(page: Path) -> list[str]:
    """broken_links for a file outside the repository (paths shown relative to its directory)."""
    global ROOT
    saved, ROOT = ROOT, page.parent
    try:
        return broken_links(page)
    finally:
        ROOT = saved


# --------------------------------------------------------------------------------------------
# Facts the docs state about the stack files
# --------------------------------------------------------------------------------------------

WEIGHT = re.compile(r"\b(dev|prod|gke-dev|default) (\d+)%")
PERCENT = re.compile(r"\d+(?:\.\d+)?%")


def canary_weights() -> dict[str, int]:
    """canaryWeight of the default server per stack, and the setting's default."""
    from stacks.config import parse_settings
    from stacks.serving_settings import Server
    from stacks.stack_files import load_stack_config

    weights = {"default": Server.model_fields["canary_weight"].default}
    for stack in ("dev", "prod", "gke-dev"):
        config = load_stack_config(ROOT / "Pulumi.yaml", ROOT / f"Pulumi.{stack}.yaml", stack).config
        weights[stack] = parse_settings(config).servers["default"].canary_weight
    return weights


def weight_claims(text: str, weights: dict[str, int]) -> list[str]:
    """Wrong or unchecked percentages on lines that mention canaryWeight."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if "canaryWeight" not in line:
            continue
        checked = set()
        for m in WEIGHT.finditer(line):
            checked.add(m.start(2))
            if int(m.group(2)) != weights[m.group(1)]:
                problems.append(f"{number}: says {m.group(1)} {m.group(2)}%, the canaryWeight is "
                                f"{weights[m.group(1)]}%: {line.strip()}")
        for m in PERCENT.finditer(line):
            if m.start() not in checked:
                problems.append(f"{number}: {m.group(0)} next to canaryWeight names no stack (write "
                                f"`dev 20%`, `prod 5%` or `default 10%` so it is checked): {line.strip()}")
    return problems


def test_canary_weights_in_the_docs_are_the_stacks():
    weights = canary_weights()
    problems = [f"{p.relative_to(ROOT)}:{problem}" for p in DOCS for problem in weight_claims(p.read_text(), weights)]
    assert not problems, "\n".join(problems)
    assert any(WEIGHT.search(line) for p in DOCS for line in p.read_text().splitlines() if "canaryWeight" in line)


def test_the_weight_check_catches_the_old_readme_line():
    weights = {"dev": 20, "prod": 5, "gke-dev": 20, "default": 10}
    assert weight_claims("# start: 10% (canaryWeight) of digits traffic to version 2", weights)
    assert weight_claims("(canaryWeight: dev 10%)", weights)
    assert not weight_claims("(canaryWeight: dev 20%, prod 5%, default 10%)", weights)


NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                "nine": 9, "ten": 10}
SKIP_COUNT = re.compile(r"(?i)\b(\d+|" + "|".join(NUMBER_WORDS) + r")\s+(?:checkov\s+)?skip(?:s|ped checks?)?\b")


def checkov_skips() -> int:
    return len(yaml.safe_load((ROOT / ".checkov.yaml").read_text())["skip-check"])


def skip_claims(text: str, actual: int) -> list[str]:
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        for m in SKIP_COUNT.finditer(line):
            said = m.group(1).lower()
            value = NUMBER_WORDS.get(said) or int(said)
            if value != actual:
                problems.append(f"{number}: says {m.group(0)!r}, .checkov.yaml has {actual}: {line.strip()}")
    return problems


def test_checkov_skip_counts_in_the_docs_are_true():
    actual = checkov_skips()
    problems = [f"{p.relative_to(ROOT)}:{problem}" for p in DOCS for problem in skip_claims(p.read_text(), actual)]
    assert not problems, "\n".join(problems)


def test_the_skip_check_catches_the_old_readme_line():
    assert skip_claims("  The one skip is in `.checkov.yaml` with its reason (CKV_K8S_43, image digests).", 16)
    assert skip_claims("checkov runs with 3 skips", 16)
    assert not skip_claims("Every skipped check is in `.checkov.yaml` with its reason.", 16)
