"""A readiness check that every served model has a loaded version, not just the first one.

An ``httpGet`` probe can check one URL, so it can only ask for one model; a pod serving several
models would take traffic while the others still load or failed to load. This exec probe asks
TF Serving's status API (``GET /v1/models/<name>``) for every model in the spec file and is ready
only when each one has a version in state ``AVAILABLE``. The ``tensorflow/serving`` image has bash
but no curl or wget, so the script talks HTTP through bash's ``/dev/tcp``.
"""

from __future__ import annotations

READY_SCRIPT_KEY = "ready.sh"

READY_SCRIPT = r"""#!/bin/bash
# Exit 0 when every model listed in the spec file has an AVAILABLE version in TF Serving.
# Usage: ready.sh [SPEC_FILE]   (default $MODEL_SPEC_FILE, then /etc/tfserving/sync.models)
# Spec lines: "<model> <anything...>"; blank lines and "# comments" are ignored.
# No here-strings or heredocs: before bash 5.1 they need a writable $TMPDIR, and the root
# filesystem may be read-only.
set -u
SPEC="${1:-${MODEL_SPEC_FILE:-/etc/tfserving/sync.models}}"
PORT="${REST_PORT:-8501}"
TIMEOUT="${READ_TIMEOUT_SECONDS:-3}"

fail() { echo "not ready: $*"; exit 1; }

# Prints the response to GET /v1/models/$1, CRs stripped. Runs inside $(...), so "exit" leaves
# only that subshell: 2 when the port refuses the connection, 3 when the answer stalls.
fetch() {
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 2
  printf 'GET /v1/models/%s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$1" >&3 \
    || exit 2
  while :; do
    IFS= read -r -t "$TIMEOUT" line <&3
    rc=$?
    [ "$rc" -gt 128 ] && exit 3
    [ "$rc" -eq 0 ] || { [ -n "$line" ] && printf '%s\n' "${line%$'\r'}"; break; }
    printf '%s\n' "${line%$'\r'}"
  done
}

# Checks one model; prints nothing and returns 0 when it has an AVAILABLE version.
check() {
  local name="$1" response rc code="" body states="" rest
  response=$(fetch "$name" 2>/dev/null)
  rc=$?
  [ "$rc" -eq 2 ] && fail "model $name: REST port $PORT not reachable (server down or still loading)"
  [ "$rc" -eq 3 ] && fail "model $name: no answer on port $PORT within ${TIMEOUT}s"
  [[ ${response%%$'\n'*} =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]] && code="${BASH_REMATCH[1]}"
  [ -n "$code" ] || fail "model $name: no HTTP response on port $PORT"
  body=""
  [[ $response == *$'\n\n'* ]] && body="${response#*$'\n\n'}"
  # One line: the JSON may be pretty-printed (TF Serving's default) or compact.
  body="${body//$'\n'/ }"
  if [ "$code" != 200 ]; then
    if [[ $body =~ \"error\"[[:space:]]*:[[:space:]]*\"([^\"]*)\" ]]; then
      fail "model $name: HTTP $code: ${BASH_REMATCH[1]}"
    fi
    fail "model $name: HTTP $code"
  fi
  # Collect every version's state; one AVAILABLE version is enough (others may be END or
  # LOADING while a new version rolls in).
  rest="$body"
  while [[ $rest =~ \"state\"[[:space:]]*:[[:space:]]*\"([A-Z_]*)\" ]]; do
    states="$states ${BASH_REMATCH[1]}"
    rest="${rest#*"${BASH_REMATCH[0]}"}"
  done
  case " $states " in *" AVAILABLE "*) return 0 ;; esac
  fail "model $name: no AVAILABLE version (states:${states:- none})"
}

[ -r "$SPEC" ] || fail "cannot read model list $SPEC"
count=0
while read -r name _ || [ -n "${name:-}" ]; do
  name="${name%$'\r'}"
  case "$name" in ''|'#'*) continue ;; esac
  check "$name"
  count=$((count + 1))
done < "$SPEC"
# An empty list is a broken config, not a ready server.
[ "$count" -gt 0 ] || fail "no models listed in $SPEC"
exit 0
"""


def readiness_probe(config_dir: str, period_seconds: int = 10, timeout_seconds: int = 5,
                    failure_threshold: int = 3) -> dict:
    """The container's ``readinessProbe``: runs ``ready.sh`` from the mounted config directory."""
    return {
        # Run through bash: ConfigMap files are mounted without the executable bit by default.
        "exec": {"command": ["/bin/bash", f"{config_dir}/{READY_SCRIPT_KEY}"]},
        "periodSeconds": period_seconds,
        # Keep above the script's own read timeout (3 s), so a stalled server is reported with a
        # reason instead of a bare probe timeout.
        "timeoutSeconds": timeout_seconds,
        "failureThreshold": failure_threshold,
    }
