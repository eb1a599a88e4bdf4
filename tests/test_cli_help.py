"""`--help` of every `python -m stacks` and `python -m model_tools` subcommand, in a bare virtualenv:
no Pulumi, no TensorFlow or any other package, run from a directory without Pulumi config."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from model_tools.cli import build_parser
from stacks.__main__ import _parser

REPO = Path(__file__).resolve().parents[1]


def subcommands(parser) -> list[str]:
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(action.choices)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    where = tmp_path_factory.mktemp("bare-venv")
    venv.create(where, with_pip=False, system_site_packages=False)
    python = where / "bin" / "python"
    probe = subprocess.run([python, "-c", "import pulumi"], capture_output=True, text=True, check=False)
    assert probe.returncode != 0, "the bare venv must not see the project's packages"
    return str(python)


@pytest.mark.parametrize("cli,parser", [("stacks", _parser), ("model_tools", build_parser)])
def test_every_subcommand_help_works_without_any_package(cli, parser, bare_python, tmp_path):
    names = subcommands(parser())
    assert names, cli
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}, "PYTHONPATH": str(REPO)}
    for args in [["--help"]] + [[name, "--help"] for name in names]:
        done = subprocess.run([bare_python, "-m", cli, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, (cli, args, done.stderr)
        assert done.stdout.startswith(f"usage: python -m {cli}"), (cli, args, done.stdout)
        assert done.stderr == "", (cli, args, done.stderr)
    assert sys.executable != bare_python
