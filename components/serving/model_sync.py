"""The model sync script and its spec file: bucket -> shared volume, complete versions only.

TF Serving cannot read ``s3://`` since 2.7 (tensorflow/serving#1963), so an init container
(``sync.sh wait``) copies the models into an ``emptyDir`` before TF Serving starts and a native
sidecar (``sync.sh loop``) keeps copying new versions and prunes old ones. Only versions whose
completion marker exists are copied, into a temporary directory renamed into place, so TF Serving
never sees half a model. The tool is picked by URI scheme: ``aws s3`` for ``s3://`` (credentials
from IRSA), ``gcloud storage`` for ``gs://`` (Workload Identity).

Which models and versions to copy comes from a spec file (``render_sync_spec``), a key of the
serving ConfigMap that the script re-reads every round, so a version-policy change reaches the
sidecar without a pod restart. A model removed from the spec file is left alone on disk: TF Serving
unloads it when its own model config drops it, and the ``emptyDir`` goes with the pod.

Interface of the script (details in its header comment):

* ``sync.sh wait``: rounds until every model is ready locally, then exit 0; an empty, unreachable or
  forbidden bucket only makes it log and wait (the pod sits in Init, it does not crash-loop).
* ``sync.sh loop``: rounds forever, with pruning.
* ``sync.sh once``: one round with pruning; exit 1 if a listing or copy failed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from components.model_contract import COMPLETION_MARKER, MODEL_NAME_PATTERN
from components.serving.tfserving_config import CONFIG_DIR, ServedModel

SYNC_IMAGES = {
    # Pinned: the sync must not change behaviour under a running fleet.
    "s3": "docker.io/amazon/aws-cli:2.17.0",
    "gs": "gcr.io/google.com/cloudsdktool/google-cloud-cli:489.0.0-slim",
}

SYNC_SPEC_FILE = "sync.models"
"""ConfigMap key of the sync spec file; the script reads ``$MODEL_SPEC_FILE`` (default below)."""

SYNC_SPEC_PATH = f"{CONFIG_DIR}/{SYNC_SPEC_FILE}"

PRUNE_AFTER_SECONDS = 300
"""Default grace before an unselected local version is deleted: longer than TF Serving's 60 s
config poll plus its 30 s file-system poll, so it has moved to the newer version first."""


def render_sync_spec(models: Sequence[ServedModel]) -> str:
    """The spec file: one ``<name> latest <N>``, ``<name> all -`` or ``<name> specific <v1>,<v2>`` line
    per model, in the given order. ``versions`` counts only for ``specific`` (as in TF Serving)."""
    lines = ["# model-sync spec: <model> latest <N> | <model> all - | <model> specific <v1>,<v2>,..."]
    seen: set[str] = set()
    for model in models:
        if not re.match(MODEL_NAME_PATTERN, model.name):
            raise ValueError(f"model name {model.name!r} does not match {MODEL_NAME_PATTERN}")
        if model.name in seen:
            raise ValueError(f"model {model.name!r} listed twice")
        seen.add(model.name)
        if model.version_policy == "latest":
            if model.latest_versions < 1:
                raise ValueError(f"model {model.name!r}: latest_versions must be >= 1, "
                                 f"got {model.latest_versions}")
            lines.append(f"{model.name} latest {model.latest_versions}")
        elif model.version_policy == "all":
            lines.append(f"{model.name} all -")
        elif model.version_policy == "specific":
            if not model.versions or any(v < 1 for v in model.versions):
                raise ValueError(f"model {model.name!r}: specific needs versions >= 1, got {model.versions}")
            lines.append(f"{model.name} specific {','.join(str(v) for v in sorted(set(model.versions)))}")
        else:
            raise ValueError(f"model {model.name!r}: unknown version_policy {model.version_policy!r}")
    return "\n".join(lines) + "\n"


SYNC_SCRIPT = r"""#!/bin/sh
# Copy complete model versions from $MODEL_SOURCE_URI to $MODEL_DIR, as the spec file says.
#
# Usage: sync.sh wait | loop | once
#   wait  (init container) rounds every $SYNC_INTERVAL_SECONDS until every model of the spec file is
#         ready locally (latest/all: one version present; specific: every listed version present),
#         then exits 0. It never fails because the bucket is empty, unreachable or forbidden: it logs
#         one "model-sync: waiting: ..." line per problem per round, so the pod sits in Init.
#         It never prunes.
#   loop  (native sidecar) rounds forever, pruning; logs copies and problems; exits only on SIGTERM.
#   once  one round, pruning; exit 0 if every listing and copy worked, 1 otherwise (humans, tests).
#   anything else: usage error, exit 2 (as is a missing or unsupported $MODEL_SOURCE_URI).
#
# Environment:
#   MODEL_SOURCE_URI       s3://bucket[/prefix] or gs://bucket[/prefix] (required)
#   MODEL_DIR              local models directory (default /models)
#   MODEL_SPEC_FILE        spec file, re-read every round (default __SPEC_PATH__)
#   SYNC_INTERVAL_SECONDS  pause between rounds (default 45)
#   PRUNE_AFTER_SECONDS    how long a local version stays unselected before deletion (default __PRUNE__)
#   TMPDIR                 scratch directory (default /tmp; the root filesystem is read-only)
#
# Spec file, one model a line ('#' comments and blank lines ignored):
#   <model> latest <N>            the newest N complete versions
#   <model> all -                 every complete version
#   <model> specific <v1>,<v2>    exactly these versions, each once it is complete
# A version is complete when <uri>/<model>/<version>/__MARKER__ exists. It is copied into
# $MODEL_DIR/<model>/.incoming-<v> and renamed to $MODEL_DIR/<model>/<v> (atomic on one filesystem).
#
# Pruning (loop and once): a local version no longer selected (older than the newest N for latest,
# not listed for specific, never for all) is marked in $MODEL_DIR/<model>/.unselected-<v> (epoch
# seconds) and deleted once unselected for $PRUNE_AFTER_SECONDS, so TF Serving has moved on first.
# A version selected again loses its mark. Nothing is pruned for a model whose listing failed or whose
# selected versions are not all present locally. Models no longer in the spec file are left alone.
#
# The gs:// branch (gcloud storage) cannot be exercised by the tests (no GCS emulator there): it is
# written to the gcloud CLI documentation but untested.
#
# Unquoted expansions below are deliberate: version lists are split into words (digits only).
# shellcheck disable=SC2086
set -u
MODE="${1:-}"
SRC="${MODEL_SOURCE_URI:-}"
SRC="${SRC%/}"
DEST="${MODEL_DIR:-/models}"
SPEC="${MODEL_SPEC_FILE:-__SPEC_PATH__}"
MARKER="__MARKER__"
INTERVAL="${SYNC_INTERVAL_SECONDS:-45}"
PRUNE_AFTER="${PRUNE_AFTER_SECONDS:-__PRUNE__}"
SCRATCH="${TMPDIR:-/tmp}/model-sync.$$"
PROBLEM_PREFIX=""
export AWS_PAGER=""  # AWS CLI v2 would otherwise look for a pager

log() { echo "model-sync: $*" >&2; }
problem() { log "$PROBLEM_PREFIX$*"; }
first_line() { sed -n '/[^[:space:]]/{p;q;}' "$1" 2>/dev/null; }
is_number() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; }
in_list() { # word list...: is word one of the list?
  il_word="$1"; shift
  for il_item in "$@"; do [ "$il_item" = "$il_word" ] && return 0; done
  return 1
}

check_config() {
  case "$SRC" in
    s3://?*|gs://?*) ;;
    *) log "MODEL_SOURCE_URI='$SRC' is not s3://bucket/prefix or gs://bucket/prefix"; exit 2 ;;
  esac
  is_number "$INTERVAL" || { log "SYNC_INTERVAL_SECONDS='$INTERVAL' is not a number of seconds"; exit 2; }
  is_number "$PRUNE_AFTER" || { log "PRUNE_AFTER_SECONDS='$PRUNE_AFTER' is not a number of seconds"; exit 2; }
}

# Prints the complete versions of model $1, ascending; fails (CLI error in $SCRATCH.err) when the
# bucket cannot be listed. An empty prefix is not a failure.
list_complete() {
  : > "$SCRATCH.err"
  case "$SRC" in
    s3://*)
      lc_path="${SRC#s3://}"; lc_bucket="${lc_path%%/*}"; lc_prefix="${lc_path#"$lc_bucket"}"
      lc_prefix="${lc_prefix#/}"; lc_keys="${lc_prefix:+$lc_prefix/}$1/"
      aws s3api list-objects-v2 --bucket "$lc_bucket" --prefix "$lc_keys" \
        --query "Contents[?ends_with(Key, '/$MARKER')].Key" --output text \
        < /dev/null > "$SCRATCH.list" 2> "$SCRATCH.err" || return 1 ;;
    gs://*)
      # Untested here (see the header). "*" matches one path level in gcloud storage.
      lc_keys="$SRC/$1/"
      if ! gcloud storage ls "$SRC/$1/*/$MARKER" < /dev/null > "$SCRATCH.list" 2> "$SCRATCH.err"; then
        [ -n "$(sed -n '/matched no objects/p' "$SCRATCH.err")" ] || return 1
        : > "$SCRATCH.list"
      fi ;;
  esac
  # Keys are "<lc_keys><version>/<marker>"; anything deeper or non-numeric is not a version.
  tr '\t' '\n' < "$SCRATCH.list" | while IFS= read -r lc_key; do
    lc_rest="${lc_key#"$lc_keys"}"
    [ "$lc_rest" != "$lc_key" ] || continue
    lc_version="${lc_rest%/"$MARKER"}"
    is_number "$lc_version" && echo "$lc_version"
  done | sort -n -u
}

# Copies version $2 of model $1; fails (CLI error in $SCRATCH.err) leaving nothing behind.
copy_version() {
  cv_tmp="$DEST/$1/.incoming-$2"
  : > "$SCRATCH.err"
  rm -rf "$cv_tmp" && mkdir -p "$cv_tmp" 2> "$SCRATCH.err" || return 1
  case "$SRC" in
    s3://*) aws s3 cp --recursive --only-show-errors "$SRC/$1/$2/" "$cv_tmp/" ;;
    gs://*) gcloud storage cp --recursive --no-user-output-enabled "$SRC/$1/$2/*" "$cv_tmp/" ;;
  esac < /dev/null 2> "$SCRATCH.err" || { rm -rf "$cv_tmp"; return 1; }
  # Same filesystem: the rename is atomic, TF Serving sees all of the version or none of it.
  mv "$cv_tmp" "$DEST/$1/$2" 2> "$SCRATCH.err" || { rm -rf "$cv_tmp"; return 1; }
}

local_versions() { # model: the numeric version directories present locally, ascending
  for lv_dir in "$DEST/$1"/*; do
    [ -d "$lv_dir" ] || continue
    is_number "${lv_dir##*/}" && echo "${lv_dir##*/}"
  done | sort -n
}

# Marks the local versions of model $1 outside the keep list ($2...) and deletes those unselected for
# $PRUNE_AFTER seconds; versions in the keep list lose their mark.
prune() {
  pr_model="$1"; shift
  pr_now=$(date +%s)
  for pr_mark in "$DEST/$pr_model"/.unselected-*; do
    [ -f "$pr_mark" ] || continue
    pr_version="${pr_mark##*/.unselected-}"
    if [ ! -d "$DEST/$pr_model/$pr_version" ] || in_list "$pr_version" "$@"; then rm -f "$pr_mark"; fi
  done
  for pr_version in $(local_versions "$pr_model"); do
    in_list "$pr_version" "$@" && continue
    pr_mark="$DEST/$pr_model/.unselected-$pr_version"
    pr_since=$(cat "$pr_mark" 2>/dev/null)
    if ! is_number "$pr_since"; then
      pr_since="$pr_now"
      echo "$pr_now" > "$pr_mark" || { problem "cannot write $pr_mark"; RD_STATUS=1; continue; }
      log "$pr_model/$pr_version is no longer selected: deleting it after $PRUNE_AFTER s"
    fi
    [ $((pr_now - pr_since)) -ge "$PRUNE_AFTER" ] || continue
    pr_gone="$DEST/$pr_model/.pruning-$pr_version"
    # Renamed away first: TF Serving never sees a half-deleted version directory.
    if rm -rf "$pr_gone" && mv "$DEST/$pr_model/$pr_version" "$pr_gone" && rm -rf "$pr_gone"; then
      rm -f "$pr_mark"; log "pruned $pr_model/$pr_version (unselected for $((pr_now - pr_since)) s)"
    else
      problem "cannot delete $DEST/$pr_model/$pr_version"; RD_STATUS=1
    fi
  done
}

# One model: model policy arg prune(yes|no). Updates RD_STATUS and READY.
sync_model() {
  sm_model="$1"; sm_policy="$2"; sm_arg="$3"; sm_prune="$4"
  sm_listed=""
  [ "$sm_policy" = specific ] && sm_listed=$(echo "$sm_arg" | tr ',' ' ')
  if ! mkdir -p "$DEST/$sm_model" 2> "$SCRATCH.err"; then
    problem "cannot create $DEST/$sm_model: $(first_line "$SCRATCH.err")"; RD_STATUS=1; READY=no; return
  fi
  rm -rf "$DEST/$sm_model"/.incoming-* "$DEST/$sm_model"/.pruning-*  # left by an interrupted round
  sm_listing=ok
  if ! sm_complete=$(list_complete "$sm_model"); then
    problem "cannot list $SRC/$sm_model/ (check the bucket name and the pod's identity):" \
      "$(first_line "$SCRATCH.err")"
    RD_STATUS=1; sm_listing=failed; sm_complete=""
  fi
  case "$sm_policy" in
    latest) sm_selected=$(printf '%s\n' $sm_complete | tail -n "$sm_arg"); sm_keep="$sm_selected" ;;
    all) sm_selected="$sm_complete"; sm_keep="$sm_selected" ;;
    specific)
      sm_selected=""; sm_keep="$sm_listed"
      for sm_version in $sm_listed; do
        if in_list "$sm_version" $sm_complete; then sm_selected="$sm_selected $sm_version"
        elif [ "$sm_listing" = ok ] && [ ! -d "$DEST/$sm_model/$sm_version" ]; then
          problem "$sm_model version $sm_version (listed in versions) has no $MARKER marker yet:" \
            "$SRC/$sm_model/$sm_version/$MARKER"
        fi
      done ;;
  esac
  if [ "$sm_listing" = ok ] && [ -z "$sm_complete" ] && [ "$sm_policy" != specific ]; then
    problem "no complete version of $sm_model under $SRC/$sm_model/ (publish one with model_tools publish)"
  fi

  for sm_version in $sm_selected; do
    [ -d "$DEST/$sm_model/$sm_version" ] && continue
    if copy_version "$sm_model" "$sm_version"; then
      log "copied $sm_model/$sm_version"
    else
      problem "copy of $SRC/$sm_model/$sm_version/ failed, retrying next round: $(first_line "$SCRATCH.err")"
      RD_STATUS=1
    fi
  done

  case "$sm_policy" in
    specific) for sm_version in $sm_listed; do [ -d "$DEST/$sm_model/$sm_version" ] || READY=no; done ;;
    *) [ -n "$(local_versions "$sm_model")" ] || READY=no ;;
  esac

  # Prune only with a fresh listing, never under "all", and only once everything selected is here:
  # TF Serving must have the newer versions to move to before the old ones go.
  [ "$sm_prune" = yes ] && [ "$sm_listing" = ok ] && [ "$sm_policy" != all ] && [ -n "$sm_selected" ] \
    || return 0
  for sm_version in $sm_selected; do [ -d "$DEST/$sm_model/$sm_version" ] || return 0; done
  prune "$sm_model" $sm_keep
}

# One round over the spec file: prune(yes|no). Sets READY=yes when every model is ready locally;
# returns 1 when the spec file, a listing, a copy or a deletion failed.
round() {
  rd_prune="$1"; RD_STATUS=0; READY=yes; rd_seen=""; rd_number=0
  if ! cp "$SPEC" "$SCRATCH.spec" 2> "$SCRATCH.err"; then  # a private copy: the ConfigMap may change
    problem "cannot read the spec file $SPEC (ConfigMap key __SPEC_KEY__): $(first_line "$SCRATCH.err")"
    rm -f "$SCRATCH".*; READY=no; return 1
  fi
  while IFS= read -r rd_line <&3 || [ -n "$rd_line" ]; do
    rd_number=$((rd_number + 1))
    set -f; set -- $rd_line; set +f  # split on blanks, no globbing
    rd_model="${1:-}"; rd_policy="${2:-}"; rd_arg="${3:-}"; rd_extra="${4:-}"
    case "$rd_model" in ''|'#'*) continue ;; esac
    rd_valid=yes
    case "$rd_model" in *[!a-z0-9_-]*) rd_valid=no ;; esac
    case "$rd_policy" in
      latest) case "$rd_arg" in ''|0*|*[!0-9]*) rd_valid=no ;; esac ;;
      all) case "$rd_arg" in ''|-) ;; *) rd_valid=no ;; esac ;;
      specific) case "$rd_arg" in ''|*[!0-9,]*|,*|*,|*,,*) rd_valid=no ;; esac ;;
      *) rd_valid=no ;;
    esac
    [ -z "$rd_extra" ] || rd_valid=no
    if [ "$rd_valid" = no ]; then
      problem "$SPEC line $rd_number ignored: '$rd_line' (expected '<model> latest <N>'," \
        "'<model> all -' or '<model> specific <v1>,<v2>')"
      RD_STATUS=1; READY=no; continue
    fi
    if in_list "$rd_model" $rd_seen; then
      problem "$SPEC line $rd_number ignored: $rd_model is listed twice"; RD_STATUS=1; continue
    fi
    rd_seen="$rd_seen $rd_model"
    sync_model "$rd_model" "$rd_policy" "$rd_arg" "$rd_prune"
  done 3< "$SCRATCH.spec"
  if [ -z "$rd_seen" ] && [ "$RD_STATUS" = 0 ]; then
    problem "the spec file $SPEC lists no model"; RD_STATUS=1; READY=no
  fi
  rm -f "$SCRATCH".*
  return $RD_STATUS
}

pause() { sleep "$INTERVAL" & wait $!; }  # in the background: SIGTERM is handled at once
stop_on() { trap 'log "stopping"; rm -f "$SCRATCH".*; exit '"$1" TERM INT; }

case "$MODE" in
  wait)
    check_config
    stop_on 143  # interrupted is not done: the init container must not count as succeeded
    PROBLEM_PREFIX="waiting: "
    while :; do
      round no || :
      if [ "$READY" = yes ]; then log "ready: every model in $SPEC has its versions in $DEST"; exit 0; fi
      pause
    done ;;
  loop)
    check_config
    stop_on 0
    while :; do
      round yes || :
      pause
    done ;;
  once)
    check_config
    round yes
    exit $? ;;
  *)
    echo "usage: sync.sh wait|loop|once (MODEL_SOURCE_URI, MODEL_DIR, MODEL_SPEC_FILE," \
      "SYNC_INTERVAL_SECONDS, PRUNE_AFTER_SECONDS)" >&2
    exit 2 ;;
esac
""".replace("__MARKER__", COMPLETION_MARKER).replace("__SPEC_PATH__", SYNC_SPEC_PATH) \
    .replace("__SPEC_KEY__", SYNC_SPEC_FILE).replace("__PRUNE__", str(PRUNE_AFTER_SECONDS))
