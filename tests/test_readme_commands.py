"""Every command of README.md's shell blocks, as a newcomer runs it from a fresh clone, in order.

The blocks are read from the README itself, never copied here. Each command is classified:

- **offline** (a block preceded by ``<!-- offline -->``): run as written, in order, in a fresh clone
  of this working tree (``git clone`` of HEAD plus the uncommitted files, with this checkout's
  virtualenvs linked in so nothing is downloaded), with a timeout. ``make test`` is the exception:
  it would run this test again, so only its target is checked. A ``[--flag ARG]`` synopsis runs
  without the optional part, and each optional flag must be one the command accepts.
- **checked** (everything else: ``pulumi``, ``kubectl``, ``gcloud``, ``make`` targets, ``model_tools``
  against a real bucket or cluster): nothing is run against a cloud, but what can be checked offline
  is: ``pulumi config set --path`` keys are keys of the settings, ``pulumi stack output X`` names an
  output the plan exports, ``pulumi stack select`` a stack file, ``kubectl`` the namespace, Service
  and ports the plan renders, ``make`` targets exist, ``model_tools`` arguments parse with the real
  CLI parser, scripts pass ``bash -n``, and ``about N min (plan --timing)`` comments match the
  estimate. A command no rule knows fails the test, so a new README command needs a rule.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from stacks.plan import ROOT

README = ROOT / "README.md"
OFFLINE_MARK = "<!-- offline -->"
TIMEOUT = 900  # seconds per offline command (a scan or a diff plans whole stacks on a shared machine)


@dataclass(frozen=True)
class Block:
    line: int
    offline: bool
    commands: tuple[tuple[int, str], ...]
    """(line, command with continuation lines joined and comments kept)."""


def shell_blocks(text: str) -> list[Block]:
    """The ```sh blocks of a Markdown text, each with its commands and whether it is marked offline."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            offline = i > 0 and lines[i - 1].strip() == OFFLINE_MARK
            start, commands, i = i + 1, [], i + 1
            while lines[i].strip() != "```":
                number, line = i + 1, lines[i]
                while line.rstrip().endswith("\\"):
                    i += 1
                    line = line.rstrip()[:-1] + " " + lines[i].strip()
                if line.strip() and not line.lstrip().startswith("#"):
                    commands.append((number, line.strip()))
                i += 1
            blocks.append(Block(start, offline, tuple(commands)))
        i += 1
    return blocks


def words(command: str) -> list[str]:
    """The command's words as the shell splits them, without its trailing comment."""
    return shlex.split(command, comments=True)


BLOCKS = shell_blocks(README.read_text())
OFFLINE = [(block.line, number, command) for block in BLOCKS if block.offline for number, command in block.commands]
CHECKED = [(block, number, command) for block in BLOCKS if not block.offline for number, command in block.commands]


def test_the_readme_has_offline_and_checked_blocks():
    """The gathering itself works (a broken parser would make every check below vacuous)."""
    assert len(BLOCKS) >= 6
    assert [words(c)[:2] for _, _, c in OFFLINE][:2] == [["make", "plan"], ["make", "test"]]
    assert any(words(c)[:4] == [".venv/bin/python", "-m", "stacks", "diff"] for _, _, c in OFFLINE)
    assert sum(1 for _, _, c in CHECKED if c.startswith("pulumi ")) >= 10


# --------------------------------------------------------------------------------------------
# Offline commands: run in a fresh clone
# --------------------------------------------------------------------------------------------

OPTIONAL = re.compile(r"\s\[(--[\w-]+)(?: [A-Z]+)?\]")


def runnable(command: str) -> tuple[str, list[str]]:
    """The command without its ``[--flag ARG]`` synopsis parts, and those flags."""
    return OPTIONAL.sub("", command), OPTIONAL.findall(command)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of this working tree: HEAD, then the modified and untracked files on top, and the
    virtualenvs of this checkout linked in (a fresh clone would make them with `make`, downloading)."""
    where = tmp_path_factory.mktemp("readme") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(where)], check=True)
    # The README diffs against origin/main, which a user's clone of the repository has. A clone of a
    # checkout on another branch has no origin/main: point it at HEAD, as on main.
    has_main = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "origin/main"], cwd=where,
                              capture_output=True)
    if has_main.returncode != 0:
        subprocess.run(["git", "update-ref", "refs/remotes/origin/main", "HEAD"], cwd=where, check=True)
    changed = subprocess.run(["git", "ls-files", "-z", "--modified", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, changed):
        if name.startswith(".venv"):  # a tool's virtualenv not (yet) in .gitignore: linked below
            continue
        source, target = ROOT / name, where / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists() and not source.exists():
            target.unlink()
    for deleted in subprocess.run(["git", "ls-files", "-z", "--deleted"], cwd=ROOT, capture_output=True,
                                  check=True).stdout.decode().split("\0"):
        if deleted and (where / deleted).exists():
            (where / deleted).unlink()
    for venv in ROOT.glob(".venv*"):
        if venv.is_dir() and not (where / venv.name).exists():
            (where / venv.name).symlink_to(venv)
    # The venv's make stamps must stay newer than the clone's freshly written requirement files, or
    # `make plan` would reinstall them (from the network).
    for requirement in [*where.glob("requirements*.txt"), *where.glob("model_tools/requirements*.txt")]:
        os.utime(requirement, (0, 0))
    return where


def test_offline_commands_run_as_written_in_order(clone):
    """Each offline command exits 0 in the clone, in README order; `make test` is only looked up."""
    ran = []
    for block_line, number, command in OFFLINE:
        argv = words(command)
        if argv[:2] == ["make", "test"]:
            dry = subprocess.run(["make", "-n", "test"], cwd=clone, capture_output=True, text=True)
            assert dry.returncode == 0 and "-m pytest" in dry.stdout, f"README.md:{number}: {dry.stderr}"
            continue
        text, optional = runnable(command)
        if optional:
            helped = subprocess.run([*words(text)[:4], "--help"] if "-m" in argv else [*words(text), "--help"],
                                    cwd=clone, capture_output=True, text=True, timeout=TIMEOUT)
            unknown = [flag for flag in optional if flag not in helped.stdout]
            assert not unknown, f"README.md:{number}: {command}: flags the command does not take: {unknown}"
        done = subprocess.run(["bash", "-c", text], cwd=clone, capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, (f"README.md:{number} (block at line {block_line}) exited "
                                      f"{done.returncode}: {text}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        assert "Traceback" not in done.stderr, f"README.md:{number}: {done.stderr[-2000:]}"
        ran.append(text)
    assert ran, "no offline command ran"
    # What they promise to leave behind.
    assert (clone / "build" / "plan-dev.json").is_file() and (clone / "build" / "manifests-dev").is_dir()
    assert (clone / "diff.md").is_file() and (clone / "build" / "prod.dot").is_file()


def test_model_tools_help_runs():
    """`python -m model_tools --help`, cited in "Ship a model", answers without TensorFlow or Pulumi."""
    assert "python -m model_tools --help" in README.read_text()
    done = subprocess.run([sys.executable, "-m", "model_tools", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "publish" in done.stdout, done.stderr


# --------------------------------------------------------------------------------------------
# Online commands: checked against the program
# --------------------------------------------------------------------------------------------

@cache
def plan(stack: str):
    from stacks.plan import plan_stack

    return plan_stack(stack)


def stack_of(block: Block, number: int, argv: list[str]) -> str:
    """The stack a command acts on: its --stack, else the block's `pulumi stack select`, else dev."""
    for flag in ("--stack", "-s"):
        if flag in argv:
            return argv[argv.index(flag) + 1]
    selected = "dev"
    for line, command in block.commands:
        if line >= number:
            break
        if (m := re.match(r"pulumi stack select (?:--create )?([\w-]+)", command)):
            selected = m.group(1)
    return selected


def _unwrap(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _unwrap(args[0])
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation


def resolve_config_path(path: str) -> str | None:
    """None when ``path`` (``servers.default.models.digits.versions[0]``) names a setting, else why not.

    Walks the settings models by alias: a dict field consumes one more element (its map key), a list
    one index."""
    from stacks.settings import StackSettings
    from tests.test_told_changes import split_path

    node = StackSettings
    for part in split_path(path):
        node = _unwrap(node)
        origin = typing.get_origin(node)
        if origin is list:
            if not isinstance(part, int):
                return f"{part!r} is not an index of a list"
            node = typing.get_args(node)[0]
        elif origin is dict:
            node = typing.get_args(node)[1]
        elif isinstance(node, type) and issubclass(node, BaseModel):
            fields = {f.alias or name: f for name, f in node.model_fields.items()}
            if part not in fields:
                return f"{part!r} is not a key of {node.__name__} ({', '.join(sorted(fields))})"
            node = fields[part].annotation
        else:
            return f"{part!r}: {node} has no keys"
    return None


PULUMI_FLAGS = {
    # https://www.pulumi.com/docs/iac/cli/commands/ (pulumi_login, pulumi_stack_select, pulumi_up,
    # pulumi_stack_output, pulumi_config_set): the subcommands and flags the README uses.
    ("login",): {"--local"},
    ("stack", "select"): {"--create", "-c"},
    ("stack", "init"): {"--secrets-provider"},
    ("up",): {"--yes", "-y", "--stack", "-s"},
    ("stack", "output"): {"--show-secrets", "--stack", "-s", "--json"},
    ("config", "set"): {"--path", "--stack", "-s"},
    ("config", "rm"): {"--path", "--stack", "-s"},
}


def check_pulumi(block: Block, number: int, argv: list[str]) -> list[str]:
    project = ROOT
    if argv[1:2] == ["-C"]:  # `pulumi -C <dir> ...`: the Pulumi project in <dir> (the bootstrap)
        project = ROOT / argv[2]
        if not (project / "Pulumi.yaml").is_file():
            return [f"-C {argv[2]}: no Pulumi.yaml there"]
        argv = [argv[0], *argv[3:]]
        if argv[1:3] == ["stack", "select"]:
            name = [a for a in argv[3:] if not a.startswith("-")][0]
            return [] if (project / f"Pulumi.{name}.yaml").is_file() else [f"no {argv[2]}/Pulumi.{name}.yaml"]
        if argv[1:3] == ["stack", "output"] and argv[2:3] and project.name == "bootstrap":
            from tests.test_bootstrap import plan as plan_bootstrap

            outputs = plan_bootstrap().outputs
            return [f"the bootstrap exports no output {name!r} ({', '.join(sorted(outputs))})"
                    for name in argv[3:] if not name.startswith("-") and name not in outputs]
        return [] if argv[1:] in (["up", "--yes"], ["up"]) else [f"pulumi -C: no rule for {argv[1:]}"]
    sub = tuple(argv[1:3]) if tuple(argv[1:3]) in PULUMI_FLAGS else tuple(argv[1:2])
    if sub not in PULUMI_FLAGS:
        return [f"`pulumi {' '.join(argv[1:3])}` has no rule here"]
    rest = argv[1 + len(sub):]
    problems = [f"unknown flag {a}" for a in rest if a.startswith("-") and a not in PULUMI_FLAGS[sub]]
    positional = [a for i, a in enumerate(rest) if not a.startswith("-")
                  and not (i and rest[i - 1] in ("--stack", "-s"))]
    stack = stack_of(block, number, argv)
    if sub == ("stack", "select") and not (ROOT / f"Pulumi.{positional[0]}.yaml").is_file():
        problems.append(f"no Pulumi.{positional[0]}.yaml")
    if sub == ("stack", "init"):
        # The secrets provider given at init is the one the stack file names (CI decrypts with it).
        stack_file = yaml.safe_load((ROOT / f"Pulumi.{positional[0]}.yaml").read_text())
        given = rest[rest.index("--secrets-provider") + 1] if "--secrets-provider" in rest else None
        if given != stack_file.get("secretsprovider"):
            problems.append(f"--secrets-provider {given} is not Pulumi.{positional[0]}.yaml's "
                            f"secretsprovider {stack_file.get('secretsprovider')}")
    if sub == ("stack", "output"):
        outputs = plan(stack).outputs
        problems += [f"stack {stack} exports no output {name!r} ({', '.join(sorted(outputs))})"
                     for name in positional if name not in outputs]
    if sub in (("config", "set"), ("config", "rm")):
        key = positional[0]
        why = resolve_config_path(key) if "--path" in rest else resolve_config_path(key.split(":")[-1])
        if why:
            problems.append(f"config key {key}: {why}")
    return problems


def rendered(stack: str, kind: str, name: str) -> dict | None:
    from tests.conftest import k8s_objects

    return next((o for o in k8s_objects(plan(stack), kind) if o["metadata"]["name"] == name), None)


def check_kubectl(block: Block, number: int, argv: list[str]) -> list[str]:
    stack = stack_of(block, number, argv)
    namespace = argv[argv.index("-n") + 1] if "-n" in argv else "default"
    problems = []
    if namespace != plan(stack).config.get("tfserving-platform:servingNamespace", "serving"):
        problems.append(f"namespace {namespace} is not stack {stack}'s serving namespace")
    if "port-forward" in argv:
        target = argv[argv.index("port-forward") + 1]
        kind, _, name = target.partition("/")
        service = rendered(stack, "Service", name) if kind in ("svc", "service") else None
        if service is None:
            return problems + [f"stack {stack} renders no Service {name!r}"]
        ports = {str(p["port"]) for p in service["spec"]["ports"]}
        wanted = [a.split(":")[-1] for a in argv[argv.index(target) + 1:] if re.fullmatch(r"\d+(:\d+)?", a)]
        problems += [f"Service {name} has no port {p} ({sorted(ports)})" for p in wanted if p not in ports]
    return problems


def check_model_tools(argv: list[str]) -> list[str]:
    from model_tools.cli import build_parser

    args = argv[argv.index("model_tools") + 1:]
    try:
        build_parser().parse_args(args)
    except SystemExit as stop:
        return [f"model_tools {' '.join(args)}: the CLI refuses these arguments (exit {stop.code})"]
    return []


def check(block: Block, number: int, command: str) -> list[str]:
    command = re.sub(r"\s&$", "", command)  # a background job (port-forward ... &)
    command = re.sub(r"\s\d?>>?\s*\S+", "", command)  # a redirection (> kubeconfig.json)
    # A substitution is checked as its own command; the outer one sees a placeholder.
    problems = []
    for inner in re.findall(r"\$\((pulumi [^)]*)\)", command):
        problems += check_pulumi(block, number, words(inner))
    command = re.sub(r"\$\([^)]*\)", "SUBSTITUTED", command)
    argv = words(command)
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):  # VAR=value command ...
        argv = argv[1:]
    if not argv:  # an assignment alone (URI=...)
        return problems
    head = argv[0]
    if head == "pulumi":
        return problems + check_pulumi(block, number, argv)
    if head == "kubectl":
        return problems + check_kubectl(block, number, argv)
    if head == ".venv/bin/python" and argv[1:3] == ["-m", "model_tools"]:
        return problems + check_model_tools(argv)
    if head == "make":
        dry = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, capture_output=True, text=True)
        return problems + ([] if dry.returncode == 0 else [f"make: {dry.stderr.strip()}"])
    if head == "bash" and argv[1].endswith(".sh"):
        script = ROOT / argv[1]
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        stack_ok = len(argv) < 3 or (ROOT / f"Pulumi.{argv[2]}.yaml").is_file()
        return problems + ([] if syntax.returncode == 0 and stack_ok else [f"{argv[1]}: {syntax.stderr} "
                                                                            f"or no stack {argv[2:]}"])
    if head == "export":
        return problems
    if head == "unset":
        # Only what the same block exported before (the bootstrap's backend and passphrase).
        exported = {word.split("=", 1)[0] for line_number, line in block.commands if line_number < number
                    and line.startswith("export ") for word in shlex.split(line, comments=True)[1:] if "=" in word}
        return problems + [f"unset {name}: not exported earlier in this block" for name in argv[1:]
                           if name not in exported]
    if head == "gcloud":
        known = {("auth", "application-default"), ("components", "install"), ("services", "enable")}
        return problems + ([] if tuple(argv[1:3]) in known else [f"gcloud {argv[1:3]} has no rule here"])
    return problems + [f"no rule for `{head}`: add one to tests/test_readme_commands.py"]


@pytest.mark.parametrize("block,number,command", CHECKED, ids=[f"line{n}" for _, n, _ in CHECKED])
def test_online_command_is_consistent_with_the_program(block, number, command):
    problems = check(block, number, command)
    assert not problems, f"README.md:{number}: {command}\n  " + "\n  ".join(problems)


TIMING = re.compile(r"about (\d+) min \(plan --timing(?:, ([\w-]+)( --redeploy)?)?\)")


def timing_claims() -> list[tuple[str, int, int, str, bool]]:
    """(file, line, minutes, stack, redeploy) of every ``about N min (plan --timing[, stack])``."""
    claims = []
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for block in shell_blocks(text) if path == README else []:
            for number, command in block.commands:
                for m in TIMING.finditer(command):
                    claims.append((path.name, number, int(m.group(1)),
                                   m.group(2) or stack_of(block, number, words(command)), bool(m.group(3))))
        for number, line in enumerate(text.splitlines(), 1):
            for m in TIMING.finditer(line):
                if m.group(2):
                    claims.append((path.name, number, int(m.group(1)), m.group(2), bool(m.group(3))))
    return claims


def test_timing_figures_match_the_estimate():
    """`about N min (plan --timing)` is what `plan --timing` says today, rounded to the minute."""
    from stacks.plan import DEPLOYED_OUTPUTS, plan_stack, to_json
    from stacks.timing import estimate

    claims = timing_claims()
    assert len(claims) >= 3
    wrong = []
    for file, line, minutes, stack, redeploy in claims:
        # As `plan --timing [--redeploy]` computes it (stacks/__main__.py).
        recording = plan_stack(stack, previous_outputs=DEPLOYED_OUTPUTS) if redeploy else plan(stack)
        actual = estimate(to_json(recording)).total / 60
        if round(actual) != minutes:
            wrong.append(f"{file}:{line}: about {minutes} min for {stack}{' --redeploy' if redeploy else ''}, "
                         f"plan --timing says {actual:.1f} min")
    assert not wrong, "\n".join(wrong)


def test_the_checks_catch_wrong_commands():
    """Each rule can fail: a misspelt key, output, Service, port, flag, target or tool is reported."""
    block = Block(1, False, ((2, "pulumi stack select --create dev"),))
    wrong = ["pulumi config set --path 'nodePools.gpu.maxSizes' 6",
             "pulumi config set --path 'servers.default.models.digits.version[0]' 2",
             "pulumi stack output modelBuckets",
             'URI="s3://$(pulumi stack output bucket)/models"',
             "pulumi up --yess",
             "pulumi stack select --create staging",
             "kubectl -n serving port-forward svc/tfserving-nope 8501",
             "kubectl -n serving port-forward svc/tfserving-default-canary 9999",
             "kubectl -n default get pods",
             ".venv/bin/python -m model_tools publish build/digits --modle digits",
             "make no-such-target",
             "bash scripts/smoke-stack.sh staging",
             "helm install x y"]
    assert [c for c in wrong if not check(block, 3, c)] == []
    right = ["pulumi config set --path 'servers.default.models.digits.versions[0]' 2",
             'URI="s3://$(pulumi stack output modelBucket)/models"',
             "kubectl -n serving port-forward svc/tfserving-default-canary 8501 8500 &"]
    assert {c: check(block, 3, c) for c in right} == {c: [] for c in right}
