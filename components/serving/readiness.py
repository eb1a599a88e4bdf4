"""A readiness check that the pod serves everything its config promises, not just one version.

An ``httpGet`` probe can check one URL, so it can only ask for one model; and TF Serving opens its
ports once ANY version of each model is loaded (``ServerCore::WaitUntilModelsAvailable`` awaits
``ServableRequest::Latest``, model_servers/server_core.cc). A new pod with versions {1, 2} and
``stable=2`` would then take traffic while ``/v1/models/<m>/labels/stable`` still fails. This exec
probe asks TF Serving's REST API, for every model of the readiness spec (``render_readiness_spec``):

* ``GET /v1/models/<m>`` (the status of every version TF Serving tracks): with policy ``specific``
  every listed version must be ``AVAILABLE``; with ``latest N`` or ``all`` one ``AVAILABLE`` version is
  enough (the bucket may hold fewer than N versions, and a version arriving later must not turn a
  serving pod unready);
* ``GET /v1/models/<m>/labels/<label>/metadata`` for every version label: it must answer 200 for the
  configured version. The label's *status* path (``/v1/models/<m>/labels/<label>``) cannot be used:
  ``GetModelStatusImpl::GetModelStatusWithModelSpec`` (model_servers/get_model_status_impl.cc) looks
  at ``model_spec.has_version()`` only, so it answers 200 with every version, whatever the label.
  The metadata path resolves the label (``ServerCore::ServableRequestFromModelSpec``) and takes a
  handle on that version: an unknown label answers 400 ``Unrecognized servable version label: <l>``,
  a label on a version that is not AVAILABLE answers 404 ``Servable not found for request:
  Specific(<m>, <v>)``, and 200 names the version in ``model_spec.version``.

The check is strict for the pod's whole life, which is right only because a pod's config never
changes under it (an immutable ConfigMap per config revision, no ``--model_config_file_poll_wait_seconds``).
With a shared, mutable ConfigMap, adding a version would turn every pod unready at once.

The ``tensorflow/serving`` image has bash but no curl or wget, so the script talks HTTP through
bash's ``/dev/tcp``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from components.model_contract import VERSION_LABEL_PATTERN
from components.serving.model_sync import SYNC_SPEC_FILE, render_sync_spec
from components.serving.tfserving_config import CONFIG_DIR, ServedModel

READY_SCRIPT_KEY = "ready.sh"

READY_SPEC_KEY = "ready.models"
"""ConfigMap key of the readiness spec (``render_readiness_spec``); the script reads
``$CONFIG_DIR/ready.models`` when it exists, else the sync spec (versions only, no labels)."""


def render_readiness_spec(models: Sequence[ServedModel]) -> str:
    """The readiness spec: the sync spec's line per model (``<model> latest <N>``, ``<model> all -`` or
    ``<model> specific <v1>,<v2>``, validated by ``render_sync_spec``) followed by that model's version
    labels as ``<label>=<version>`` words, in label order. Pass the same (stable or canary) view of the
    models as ``render_model_config`` gets, so the probe checks what that pod's TF Serving loads."""
    sync_lines = [line for line in render_sync_spec(models).splitlines() if line and not line.startswith("#")]
    if len(sync_lines) != len(models):
        raise ValueError(f"sync spec has {len(sync_lines)} model lines for {len(models)} models")
    lines = ["# readiness spec: <model> latest <N> | all - | specific <v1>,<v2>,... [<label>=<version>...]"]
    for model, line in zip(models, sync_lines):
        words = [line]
        for label, version in sorted(model.labels.items()):
            if not re.match(VERSION_LABEL_PATTERN, label):
                raise ValueError(f"model {model.name!r}: label {label!r} does not match "
                                 f"{VERSION_LABEL_PATTERN}")
            if not isinstance(version, int) or version < 1:
                raise ValueError(f"model {model.name!r}: label {label!r} needs a version >= 1, "
                                 f"got {version!r}")
            if model.version_policy == "specific" and version not in model.versions:
                # TF Serving would never load it, so the label never resolves and the pod never turns ready.
                raise ValueError(f"model {model.name!r}: label {label}={version} names a version not in "
                                 f"versions {sorted(set(model.versions))}")
            words.append(f"{label}={version}")
        lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


READY_SCRIPT = r"""#!/bin/bash
# Exit 0 when TF Serving serves everything the readiness spec lists; else print one
# "not ready: <reason>" line and exit 1.
# Usage: ready.sh [SPEC_FILE]
#   SPEC_FILE defaults to $READY_SPEC_FILE, then __CONFIG_DIR__/__READY_KEY__ if it exists, then
#   $MODEL_SPEC_FILE, then __CONFIG_DIR__/__SYNC_KEY__ (the sync spec: the same lines, no labels).
# Spec lines ("#" comments and blank lines ignored):
#   <model> specific <v1>,<v2>,... [<label>=<version>...]   every listed version AVAILABLE
#   <model> latest <N> [<label>=<version>...]               one AVAILABLE version
#   <model> all - [<label>=<version>...]                    one AVAILABLE version
#   <model>                                                 one AVAILABLE version
# and every <label> must resolve to <version>, AVAILABLE.
# Requests: one GET /v1/models/<model> per model, one GET /v1/models/<model>/labels/<label>/metadata
# per label; the first failure ends the check. Each read waits at most $READ_TIMEOUT_SECONDS (3) and
# the whole check at most about $READY_BUDGET_SECONDS (4), below the probe's timeoutSeconds (5).
# No here-strings or heredocs: before bash 5.1 they need a writable $TMPDIR, and the root
# filesystem may be read-only.
set -u
if [ $# -gt 0 ]; then SPEC="$1"
elif [ -n "${READY_SPEC_FILE:-}" ]; then SPEC="$READY_SPEC_FILE"
elif [ -e "__CONFIG_DIR__/__READY_KEY__" ]; then SPEC="__CONFIG_DIR__/__READY_KEY__"
else SPEC="${MODEL_SPEC_FILE:-__CONFIG_DIR__/__SYNC_KEY__}"
fi
PORT="${REST_PORT:-8501}"
TIMEOUT="${READ_TIMEOUT_SECONDS:-3}"
BUDGET="${READY_BUDGET_SECONDS:-4}"
SP='[[:space:]]*'

fail() { echo "not ready: $*"; exit 1; }

# Prints the response to GET $1, CRs stripped, at most $2 lines (0: all). Runs inside $(...), so
# "exit" leaves only that subshell: 2 when the port refuses the connection, 3 when the answer stalls
# or the budget is spent.
fetch() {
  local max="$2" lines=0 wait rc line
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 2
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$1" >&3 || exit 2
  while :; do
    wait=$((BUDGET - SECONDS))
    [ "$wait" -lt 1 ] && exit 3
    [ "$wait" -gt "$TIMEOUT" ] && wait="$TIMEOUT"
    IFS= read -r -t "$wait" line <&3
    rc=$?
    [ "$rc" -gt 128 ] && exit 3
    [ "$rc" -eq 0 ] || { [ -n "$line" ] && printf '%s\n' "${line%$'\r'}"; break; }
    printf '%s\n' "${line%$'\r'}"
    lines=$((lines + 1))
    [ "$max" -gt 0 ] && [ "$lines" -ge "$max" ] && break
  done
}

# GET $2 for the check described by $1 (at most $3 lines); sets CODE and BODY (the JSON on one line:
# TF Serving pretty-prints it) or fails.
get() {
  local what="$1" response rc
  response=$(fetch "$2" "${3:-0}" 2>/dev/null)
  rc=$?
  [ "$rc" -eq 2 ] && fail "$what: REST port $PORT not reachable (server down or still loading)"
  [ "$rc" -eq 3 ] && fail "$what: no answer on port $PORT within ${TIMEOUT}s (budget ${BUDGET}s)"
  CODE=""
  [[ ${response%%$'\n'*} =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]] && CODE="${BASH_REMATCH[1]}"
  [ -n "$CODE" ] || fail "$what: no HTTP response on port $PORT"
  BODY=""
  [[ $response == *$'\n\n'* ]] && BODY="${response#*$'\n\n'}"
  BODY="${BODY//$'\n'/ }"
}

# Fails with TF Serving's {"error": "..."} message when CODE is not 200.
need_200() {
  [ "$CODE" = 200 ] && return 0
  if [[ $BODY =~ \"error\"$SP:$SP\"([^\"]*)\" ]]; then fail "$1: HTTP $CODE: ${BASH_REMATCH[1]}"; fi
  fail "$1: HTTP $CODE"
}

# Checks model $1 with policy $2 ("specific", "latest", "all" or "") and versions $3 (v1,v2 for
# specific); prints nothing and returns when it is served.
check_versions() {
  local name="$1" policy="$2" wanted="$3" rest pairs="" states="" missing="" v state
  get "model $name" "/v1/models/$name"
  need_200 "model $name"
  # model_version_status entries, fields in proto order: "version": "<n>", "state": "<STATE>".
  # Quotes inside an error_message are escaped, so they cannot match.
  rest="$BODY"
  while [[ $rest =~ \"version\"$SP:$SP\"?([0-9]+)\"?$SP,$SP\"state\"$SP:$SP\"([A-Z_]*)\" ]]; do
    pairs="$pairs ${BASH_REMATCH[1]}:${BASH_REMATCH[2]}"
    states="$states ${BASH_REMATCH[2]}"
    rest="${rest#*"${BASH_REMATCH[0]}"}"
  done
  if [ "$policy" != specific ]; then
    # latest N / all: TF Serving itself waits for one version of each model, and the bucket may hold
    # fewer than N versions; a newer version that is still loading must not unready a serving pod.
    case " $states " in *" AVAILABLE "*) return 0 ;; esac
    fail "model $name: no AVAILABLE version (states:${states:- none})"
  fi
  for v in ${wanted//,/ }; do
    state="not loaded"
    [[ " $pairs " =~ \ $v:([A-Z_]*)\  ]] && state="${BASH_REMATCH[1]}"
    [ "$state" = AVAILABLE ] || missing="$missing, $v ($state)"
  done
  [ -z "$missing" ] && return 0
  fail "model $name: versions not AVAILABLE: ${missing#, } (TF Serving has:${pairs:- none})"
}

# Checks that label $2 of model $1 resolves to version $3 and that version is AVAILABLE.
check_label() {
  local name="$1" label="$2" want="$3" what="model $1: label $2 (version $3)"
  # Only the head of the answer: model_spec comes first, the signature defs may be large.
  get "$what" "/v1/models/$name/labels/$label/metadata" 40
  need_200 "$what"
  if [[ $BODY =~ \"model_spec\"$SP:$SP\{[^}]*\"version\"$SP:$SP\"?([0-9]+) ]]; then
    [ "${BASH_REMATCH[1]}" = "$want" ] && return 0
    fail "$what: resolves to version ${BASH_REMATCH[1]}"
  fi
  fail "$what: no model_spec version in the metadata answer"
}

[ -r "$SPEC" ] || fail "cannot read model list $SPEC"
count=0
number=0
while IFS= read -r line || [ -n "$line" ]; do
  number=$((number + 1))
  line="${line%$'\r'}"
  # Split on blanks on purpose, without globbing.
  set -f
  # shellcheck disable=SC2086
  set -- $line
  set +f
  name="${1:-}"; policy="${2:-}"; arg="${3:-}"
  case "$name" in ''|'#'*) continue ;; esac
  bad=""
  case "$name" in *[!a-z0-9_-]*) bad=yes ;; esac
  case "$policy" in
    '') ;;
    latest) case "$arg" in ''|0*|*[!0-9]*) bad=yes ;; esac ;;
    all) case "$arg" in ''|-) ;; *) bad=yes ;; esac ;;
    specific) case "$arg" in ''|*[!0-9,]*|,*|*,|*,,*) bad=yes ;; esac ;;
    *) bad=yes ;;
  esac
  shift $(($# < 3 ? $# : 3))
  for word in "$@"; do
    [[ $word =~ ^[A-Za-z0-9_]+=[1-9][0-9]*$ ]] || bad=yes
  done
  [ -z "$bad" ] || \
    fail "line $number of $SPEC is not '<model> <policy> <versions> [<label>=<version>...]': $line"
  check_versions "$name" "$policy" "$arg"
  for word in "$@"; do check_label "$name" "${word%%=*}" "${word#*=}"; done
  count=$((count + 1))
done < "$SPEC"
# An empty list is a broken config, not a ready server.
[ "$count" -gt 0 ] || fail "no models listed in $SPEC"
exit 0
""".replace("__CONFIG_DIR__", CONFIG_DIR).replace("__READY_KEY__", READY_SPEC_KEY) \
    .replace("__SYNC_KEY__", SYNC_SPEC_FILE)


def readiness_probe(config_dir: str, period_seconds: int = 10, timeout_seconds: int = 5,
                    failure_threshold: int = 3) -> dict:
    """The container's ``readinessProbe``: runs ``ready.sh`` from the mounted config directory."""
    return {
        # Run through bash: ConfigMap files are mounted without the executable bit by default.
        "exec": {"command": ["/bin/bash", f"{config_dir}/{READY_SCRIPT_KEY}"]},
        "periodSeconds": period_seconds,
        # Keep above the script's own budget (about 4 s, each read at most 3 s), so a stalled server
        # is reported with a reason instead of a bare probe timeout.
        "timeoutSeconds": timeout_seconds,
        "failureThreshold": failure_threshold,
    }
