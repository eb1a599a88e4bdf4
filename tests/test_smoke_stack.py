"""scripts/smoke-stack.sh, the deploy workflow's "dev serves before prod moves" gate, run against
stand-ins for pulumi, kubectl and the model tool that record what they are asked (no cluster here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stacks.plan import ROOT

SCRIPT = ROOT / "scripts" / "smoke-stack.sh"
ENDPOINTS = {"default": {"grpc": "g", "rest": "r", "models": ["digits", "digits-latest"]},
             "cpu": {"grpc": "g", "rest": "r", "models": ["digits-cpu"]}}


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


@pytest.fixture
def tools(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    stub(bin_dir, "pulumi", f"""echo "pulumi $*" >> {log}
case "$*" in
  *kubeconfig*) echo '{{}}' ;;
  *servingNamespace*) echo serving ;;
  *servingEndpoints*) echo '{json.dumps(ENDPOINTS)}' ;;
  *) exit 3 ;;
esac
""")
    stub(bin_dir, "kubectl", f"""echo "kubectl $*" >> {log}
case "$*" in
  *port-forward*) echo "Forwarding from 127.0.0.1:x -> 8501"; sleep 30 ;;
  *"rollout status"*) [ -z "$ROLLOUT_FAILS" ] || exit 1 ;;
esac
""")
    # The model tool: records the smoke call; fails for the model named in $BROKEN_MODEL.
    stub(bin_dir, "python-standin", f"""if [ "$1" = -c ]; then exec {sys.executable} "$@"; fi
echo "model_tools $*" >> {log}
case " $* " in *" --model $BROKEN_MODEL "*) exit 1 ;; esac
""")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "python-standin"),
           "BROKEN_MODEL": "", "ROLLOUT_FAILS": ""}
    return env, log


def run(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "dev"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not on PATH: run scripts/ensure-tools.sh"
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_every_model_of_every_server_is_smoked_after_its_rollout(tools):
    env, log = tools
    result = run(env)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    smokes = [c for c in calls if c.startswith("model_tools")]
    assert [c.split("--model ")[1] for c in smokes] == ["digits", "digits-latest", "digits-cpu"]
    assert all(" smoke --rest-url http://localhost:" in c and "--grpc-target localhost:" in c for c in smokes)
    for server in ("default", "cpu"):
        rollout = calls.index(f"kubectl -n serving rollout status deployment/tfserving-{server} --timeout=10m")
        forward = next(i for i, c in enumerate(calls) if c.startswith(f"kubectl -n serving port-forward "
                                                                       f"svc/tfserving-{server} "))
        assert rollout < forward  # never smoke a server whose rollout has not finished
    # Each server gets its own local ports.
    assert len({c.split("--rest-url ")[1].split()[0] for c in smokes}) == 2


def test_a_model_that_does_not_serve_fails_the_gate(tools):
    env, log = tools
    result = run({**env, "BROKEN_MODEL": "digits-latest"})
    assert result.returncode != 0
    smoked = [c.split("--model ")[1] for c in log.read_text().splitlines() if c.startswith("model_tools")]
    assert smoked == ["digits", "digits-latest"]  # stops at the first failure


def test_a_rollout_that_never_finishes_fails_the_gate(tools):
    env, log = tools
    result = run({**env, "ROLLOUT_FAILS": "1"})
    assert result.returncode != 0
    assert not [c for c in log.read_text().splitlines() if c.startswith("model_tools")]
