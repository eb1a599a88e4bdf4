"""The model sync script and its spec file: bucket -> shared volume, complete versions only.

TF Serving cannot read ``s3://`` since 2.7 (tensorflow/serving#1963), so an init container
(``sync.sh wait``) copies the models into an ``emptyDir`` before TF Serving starts and a native
sidecar (``sync.sh loop``) keeps copying new versions and prunes old ones. Only versions whose
completion marker exists are copied, into a temporary directory that is checked file by file
against the marker (size and sha256) and only then renamed into place, so TF Serving never sees
half a model or a mix of two uploads. The tool is picked by URI scheme: ``aws s3`` for ``s3://``
(credentials from IRSA), ``gcloud storage`` for ``gs://`` (Workload Identity).

Which models and versions to copy comes from a spec file (``render_sync_spec``), a key of the
serving ConfigMap that the script re-reads every round, so a version-policy change reaches the
sidecar without a pod restart. A model removed from the spec file is left alone on disk: TF Serving
unloads it when its own model config drops it, and the ``emptyDir`` goes with the pod.

Interface of the script (details in its header comment):

* ``sync.sh wait``: rounds until every model is ready locally, then exit 0; an empty, unreachable or
  forbidden bucket only makes it log and wait (the pod sits in Init, it does not crash-loop).
* ``sync.sh loop``: rounds forever, with pruning.
* ``sync.sh once``: one round with pruning; exit 1 if a listing, copy or check failed.

The script has no JSON parser (the sync images have none): ``MANIFEST_AWK`` reads the marker in the
exact layout ``model_tools publish`` writes (``components.model_contract.render_marker``) and refuses
any other. Every round it also re-checks the local versions (sizes against the local copy of the
marker) and reports a version whose marker was replaced in the bucket. ``MODELS_VOLUME_BYTES`` (the
volume's sizeLimit) makes it skip a copy that would overflow the volume instead of getting the pod
evicted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from components.model_contract import COMPLETION_MARKER, MODEL_NAME_PATTERN, SYNC_STATE_FILE
from components.serving.tfserving_config import CONFIG_DIR, ServedModel

SYNC_IMAGES = {
    # Pinned: the sync must not change behaviour under a running fleet. By tag here; the composition
    # passes ``<tag>@sha256:...`` (ModelServerArgs.sync_image) when images.lock.json has the tag.
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


MANIFEST_AWK = r"""
# Reads a _COMPLETE marker exactly as model_tools publish writes it (json.dumps(marker, indent=2,
# sort_keys=True), see components/model_contract.py) and prints "<size> <sha256> <path>" per file.
# Anything else (truncated, hand-edited, another layout, a marker of another version, counts that
# do not add up) prints one reason and exits 1: a marker is never half-read.
# Variables: model, version (what the marker must say), marker, state (names no file may have).
function fail(why) { reason = "line " NR ": " why; bad = 1; exit 1 }
function value(line) { sub(/^ *"[^"]*": /, "", line); sub(/,$/, "", line); return line }
BEGIN { state_ = "start"; n = 0; sum = 0; count = ""; total = ""; said_model = ""; said_version = "" }
state_ == "start" { if ($0 != "{") fail("the marker does not start with a line {"); state_ = "top"; next }
state_ == "end" { fail("text after the closing }") }
state_ == "top" {
  if ($0 == "}") { state_ = "end"; next }
  if ($0 == "  \"files\": {") { if (files_seen++) fail("files is listed twice"); state_ = "files"; next }
  if ($0 ~ /^  "file_count": [0-9]+,?$/) { count = value($0); next }
  if ($0 ~ /^  "total_bytes": [0-9]+,?$/) { total = value($0); next }
  if ($0 ~ /^  "version": [0-9]+,?$/) { said_version = value($0); next }
  if ($0 ~ /^  "model": "[a-z0-9_-]+",?$/) { said_model = value($0); gsub(/"/, "", said_model); next }
  if ($0 ~ /^  "[a-z0-9_]+": ("([^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false|null),?$/) next
  fail("not a top-level field of the marker layout")
}
state_ == "files" {
  if ($0 ~ /^  },?$/) { state_ = "top"; next }
  if ($0 !~ /^    ".+": \{$/) fail("not a file entry")
  name = substr($0, 6, length($0) - 9)
  if (index(name, "\\") || index(name, "\"")) fail("file name with an escape sequence")
  if (name ~ /^ / || name ~ / $/ || name ~ /^\// || name ~ /\/\// || name ~ /\/$/)
    fail("unsafe file name " name)
  if (name ~ /(^|\/)\.\.?(\/|$)/) fail("unsafe file name " name)
  if (name == marker || name == state) fail("reserved file name " name)
  if (name in size) fail("file " name " is listed twice")
  fsize = ""; fsha = ""; state_ = "file"; next
}
state_ == "file" {
  if ($0 ~ /^      "sha256": "[0-9a-f]+",?$/) { fsha = value($0); gsub(/"/, "", fsha); next }
  if ($0 ~ /^      "size": [0-9]+,?$/) { fsize = value($0); next }
  if ($0 ~ /^    },?$/) {
    if (length(fsha) != 64 || fsize == "") fail(name " has no size or no 64-digit sha256")
    size[name] = fsize; sha[name] = fsha; names[++n] = name; sum += fsize; state_ = "files"; next
  }
  if ($0 ~ /^      "[a-z0-9_]+": ("([^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false|null),?$/) next
  fail("not a field of a file entry")
}
END {
  if (bad) { print reason; exit 1 }
  if (state_ != "end") { print "truncated: no closing } after line " NR; exit 1 }
  if (n == 0) { print "no files listed"; exit 1 }
  if (count == "" || count + 0 != n) { print "file_count is " count " but " n " files are listed"; exit 1 }
  if (total == "" || total + 0 != sum) {
    print "total_bytes is " total " but the sizes add up to " sum; exit 1
  }
  if (said_model != model || said_version + 0 != version + 0) {
    print "it is the marker of " said_model "/" said_version ", not of " model "/" version; exit 1
  }
  for (i = 1; i <= n; i++) print size[names[i]], sha[names[i]], names[i]
}
"""
"""awk program: a marker -> its file list, or one reason it is refused (``sync.sh`` ``read_marker``)."""

VERIFY_AWK = r"""
# Compares a version directory with its file list. Arguments: the file list ("<size> <sha256>
# <path>"), `wc -c` of those paths and /dev/null (its last line is the total), and with mode=full
# `sha256sum` of them and every file found (relative paths). Prints one line naming the first
# differences and exits 1 when there are any. Variables: mode (sizes|full), marker, state.
function differ(what) { bad++; if (bad <= 3) text = text (bad > 1 ? "; " : "") what }
FILENAME == ARGV[1] {
  path = $0; sub(/^[^ ]* [^ ]* /, "", path); size[path] = $1; sha[path] = $2; order[++n] = path; next
}
FILENAME == ARGV[2] { wc[++lines] = $0; next }
FILENAME == ARGV[3] { if (substr($0, 1, 1) != "\\") got_sha[substr($0, 67)] = substr($0, 1, 64); next }
FILENAME == ARGV[4] { found[$0] = 1; next }
END {
  for (i = 1; i < lines; i++) {
    path = wc[i]; sub(/^ *[0-9]+ /, "", path)
    bytes = wc[i]; sub(/^ */, "", bytes); sub(/ .*/, "", bytes)
    got_size[path] = bytes
  }
  for (i = 1; i <= n; i++) {
    path = order[i]
    if (!(path in got_size)) differ(path " is missing")
    else if (got_size[path] != size[path] "")
      differ(path " has " got_size[path] " bytes, the marker says " size[path])
    else if (mode == "full" && got_sha[path] != sha[path] "")
      differ(path " has another sha256 than the marker says")
  }
  if (mode == "full")
    for (path in found)
      if (!(path in size) && path != marker && path != state) differ(path " is not in the marker")
  if (bad) { printf "%d difference(s) with the marker: %s\n", bad, text; exit 1 }
}
"""
"""awk program: a directory's sizes (and sha256s, files) against a file list (``sync.sh`` ``verify``)."""

SYNC_SCRIPT = r"""#!/bin/sh
# Copy complete model versions from $MODEL_SOURCE_URI to $MODEL_DIR, as the spec file says, verified
# against each version's marker.
#
# Usage: sync.sh wait | loop | once
#   wait  (init container) rounds every $SYNC_INTERVAL_SECONDS until every model of the spec file is
#         ready locally (latest/all: one version present; specific: every listed version present),
#         then exits 0. It never fails because the bucket is empty, unreachable or forbidden: it logs
#         one "model-sync: waiting: ..." line per problem per round, so the pod sits in Init.
#         It never prunes.
#   loop  (native sidecar) rounds forever, pruning; logs copies and problems; exits only on SIGTERM.
#   once  one round, pruning; exit 0 if every listing, copy and check worked, 1 otherwise (humans, tests).
#   anything else: usage error, exit 2 (as is a missing or unsupported $MODEL_SOURCE_URI, or a
#   non-numeric SYNC_INTERVAL_SECONDS, PRUNE_AFTER_SECONDS or MODELS_VOLUME_BYTES).
#
# Environment:
#   MODEL_SOURCE_URI       s3://bucket[/prefix] or gs://bucket[/prefix] (required)
#   MODEL_DIR              local models directory (default /models)
#   MODEL_SPEC_FILE        spec file, re-read every round (default __SPEC_PATH__)
#   SYNC_INTERVAL_SECONDS  pause between rounds (default 45)
#   PRUNE_AFTER_SECONDS    how long a local version stays unselected before deletion (default __PRUNE__)
#   MODELS_VOLUME_BYTES    size limit in bytes of the volume holding $MODEL_DIR (the emptyDir's
#                          sizeLimit: above it the kubelet evicts the pod); a copy that would not
#                          fit is skipped with a problem line. Unset or 0: no check.
#   TMPDIR                 scratch directory (default /tmp; the root filesystem is read-only)
#
# Spec file, one model a line ('#' comments and blank lines ignored):
#   <model> latest <N>            the newest N complete versions
#   <model> all -                 every complete version
#   <model> specific <v1>,<v2>    exactly these versions, each once it is complete
#
# Copying. A version is complete when <uri>/<model>/<version>/__MARKER__ exists: the marker that
# model_tools publish writes last, listing every file with its size and sha256. A selected version
# that is not here yet is, in one round:
#   1. with MODELS_VOLUME_BYTES set: its marker downloaded and read first, and the copy skipped if
#      the marker is not in the layout publish writes or if du of $MODEL_DIR plus the version's files
#      (each rounded up to 4 KiB blocks, as du counts them) would not fit, the versions already here
#      included (a swap to a new version holds N+1 of them). So neither costs a download.
#   2. copied into $MODEL_DIR/<model>/.incoming-<v>;
#   3. verified against the marker copied with it (read with awk, the exact layout publish writes,
#      see components/model_contract.py; any other layout is refused): every file it lists is there
#      with its size and sha256, and no other file is. Files uploaded again during the copy, or a
#      marker deleted meanwhile, fail this;
#   4. renamed to $MODEL_DIR/<model>/<v> (atomic on one filesystem): TF Serving sees all or nothing.
# On any failure the incoming copy is deleted, one "model-sync: ..." line says why, and the next
# round tries again; nothing is renamed into place. The version directory keeps the marker
# (<v>/__MARKER__) and its identity in the bucket listing (<v>/__STATE__: S3 ETag, GCS size@time).
#
# Checking, every round, each selected version already here (no download while all is well):
#   - damaged (a file of the local marker copy missing or of another size, or that copy gone or
#     unreadable): copied again as above, then swapped in (the damaged directory renamed away first,
#     so TF Serving briefly sees no such version, then the new one).
#   - replaced: the listing shows another identity for the marker; it is downloaded and, if its
#     content differs from the local copy, the version was re-uploaded under the same number (which
#     model_tools publish refuses). Logged as a problem every round; the local copy is KEPT. Versions
#     are immutable by contract: TF Serving does not reload a version it has loaded, so new bytes
#     would not reach the running model anyway, and swapping them in some pods but not others would
#     make one version number mean two models. Publish the change as a new version instead (and put
#     the original bytes back under the old number, or restart the pods to make them all agree).
#
# Pruning (loop and once): a local version no longer selected (older than the newest N for latest,
# not listed for specific, never for all) is marked in $MODEL_DIR/<model>/.unselected-<v> (epoch
# seconds) and deleted once unselected for $PRUNE_AFTER_SECONDS, so TF Serving has moved on first.
# A version selected again loses its mark. Nothing is pruned for a model whose listing failed or whose
# selected versions are not all present locally. Models no longer in the spec file are left alone.
#
# AWS CLI: the image (amazon/aws-cli) ships v2, the tests run v1 against moto. Checked for both
# (the v2 migration guide, and v1's AWS_CLI_UPGRADE_DEBUG_MODE=true, which a test runs):
#   - pager: v2 pipes output through $AWS_PAGER / cli_pager (default less), v1 never does:
#     AWS_PAGER="" below.
#   - s3api list-objects-v2 paginates by itself in both (1000 keys a page). With --output text the
#     --query is applied to each page on its own, and a page without Contents (an empty prefix)
#     prints "None" in both: the output is read as one "<key><TAB><etag>" row a line and any other
#     line ("None") is skipped, never taken for a key.
#   - timestamps: v2 prints ISO 8601, v1 the wire format; no timestamp reaches the output here.
#   - s3 cp: same flags (--recursive, --only-show-errors) in both, and non-zero on any failure (1 a
#     transfer failed, or "fatal error ... (404)" for one missing object; 2 a file skipped; other
#     errors 255 in v1, 252-255 in v2): only zero/non-zero is used. Both write each file under a
#     temporary name first. Newer v2 releases can pick the CRT transfer client on some instance
#     types: whichever wrote the files, the copy is verified against the marker.
#   - us-east-1: v2 uses the regional endpoint (s3.us-east-1.amazonaws.com), v1 the global one.
#   - retries: v2's default "standard" mode makes 3 attempts, v1's "legacy" mode 5.
#   - ETags are quoted in both and used only as identities, never as checksums (not an MD5 for
#     SSE-KMS or multipart objects).
# The image also has coreutils (sha256sum, wc, du), sed and awk (gawk there, mawk in the
# google-cloud-cli image; the awk programs are POSIX), and no jq or python.
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
STATE="__STATE__"
INTERVAL="${SYNC_INTERVAL_SECONDS:-45}"
PRUNE_AFTER="${PRUNE_AFTER_SECONDS:-__PRUNE__}"
VOLUME_BYTES="${MODELS_VOLUME_BYTES:-0}"
SCRATCH="${TMPDIR:-/tmp}/model-sync.$$"
PROBLEM_PREFIX=""
TAB=$(printf '\t')
export AWS_PAGER=""  # AWS CLI v2 would otherwise look for a pager

# A marker -> "<size> <sha256> <path>" lines, or one reason it is refused.
# shellcheck disable=SC2016
MANIFEST_AWK='__MANIFEST_AWK__'
# A directory against such a file list: one line naming the differences.
# shellcheck disable=SC2016
VERIFY_AWK='__VERIFY_AWK__'

log() { echo "model-sync: $*" >&2; }
problem() { log "$PROBLEM_PREFIX$*"; }
first_line() { sed -n '/[^[:space:]]/{p;q;}' "$1" 2>/dev/null; }
is_number() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; }
in_list() { # word list...: is word one of the list?
  il_word="$1"; shift
  for il_item in "$@"; do [ "$il_item" = "$il_word" ] && return 0; done
  return 1
}
same_file() { [ -f "$1" ] && [ -f "$2" ] && [ "$(sha256sum < "$1")" = "$(sha256sum < "$2")" ]; }

check_config() {
  case "$SRC" in
    s3://?*|gs://?*) ;;
    *) log "MODEL_SOURCE_URI='$SRC' is not s3://bucket/prefix or gs://bucket/prefix"; exit 2 ;;
  esac
  is_number "$INTERVAL" || { log "SYNC_INTERVAL_SECONDS='$INTERVAL' is not a number of seconds"; exit 2; }
  is_number "$PRUNE_AFTER" || { log "PRUNE_AFTER_SECONDS='$PRUNE_AFTER' is not a number of seconds"; exit 2; }
  is_number "$VOLUME_BYTES" || { log "MODELS_VOLUME_BYTES='$VOLUME_BYTES' is not a number of bytes"; exit 2; }
}

# Prints the complete versions of model $1, ascending, and writes "<version> <marker identity>"
# lines to $SCRATCH.complete; fails (CLI error in $SCRATCH.err) when the bucket cannot be listed.
# An empty prefix is not a failure.
list_complete() {
  : > "$SCRATCH.err"
  case "$SRC" in
    s3://*)
      lc_path="${SRC#s3://}"; lc_bucket="${lc_path%%/*}"; lc_prefix="${lc_path#"$lc_bucket"}"
      lc_prefix="${lc_prefix#/}"; lc_keys="${lc_prefix:+$lc_prefix/}$1/"
      aws s3api list-objects-v2 --bucket "$lc_bucket" --prefix "$lc_keys" \
        --query "Contents[?ends_with(Key, '/$MARKER')].[Key,ETag]" --output text \
        < /dev/null > "$SCRATCH.list" 2> "$SCRATCH.err" || return 1 ;;
    gs://*)
      # Untested here (see the header). "*" matches one path level in gcloud storage; --long
      # prints "<size>  <creation time>  <url>" per object, then a TOTAL line.
      lc_keys="$SRC/$1/"
      if ! gcloud storage ls --long "$SRC/$1/*/$MARKER" < /dev/null > "$SCRATCH.ls" 2> "$SCRATCH.err"; then
        [ -n "$(sed -n '/matched no objects/p' "$SCRATCH.err")" ] || return 1
        : > "$SCRATCH.ls"
      fi
      awk -v tab="$TAB" '$NF ~ /^gs:\/\// { print $NF tab $1 "@" $2 }' "$SCRATCH.ls" > "$SCRATCH.list" ;;
  esac
  # Rows are "<lc_keys><version>/<marker><TAB><identity>"; anything else is not a version.
  while IFS="$TAB" read -r lc_key lc_id lc_rest; do
    lc_rest="${lc_key#"$lc_keys"}"
    [ "$lc_rest" != "$lc_key" ] || continue
    lc_version="${lc_rest%/"$MARKER"}"
    lc_id="${lc_id#\"}"; lc_id="${lc_id%\"}"
    is_number "$lc_version" && [ -n "$lc_id" ] && echo "$lc_version $lc_id"
  done < "$SCRATCH.list" | sort -n -u -k1,1 > "$SCRATCH.complete"
  sed 's/ .*//' "$SCRATCH.complete"
}

# Downloads the marker of version $2 of model $1 to $3; fails (CLI error in $SCRATCH.err).
fetch_marker() {
  : > "$SCRATCH.err"
  case "$SRC" in
    s3://*) aws s3 cp --only-show-errors "$SRC/$1/$2/$MARKER" "$3" ;;
    gs://*) gcloud storage cp --no-user-output-enabled "$SRC/$1/$2/$MARKER" "$3" ;;
  esac < /dev/null 2> "$SCRATCH.err"
}

# Reads marker file $1, which must be the marker of model $2 version $3, into $SCRATCH.manifest
# ("<size> <sha256> <path>" a line); fails with the reason in $SCRATCH.manifest.
read_marker() {
  [ -f "$1" ] || { echo "no such file" > "$SCRATCH.manifest"; return 1; }
  awk -v model="$2" -v version="$3" -v marker="$MARKER" -v state="$STATE" "$MANIFEST_AWK" "$1" \
    > "$SCRATCH.manifest" 2>&1
}

list_files() ( # directory [prefix]: every file below it, as a relative path, one a line
  for lf_entry in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$lf_entry" ] || [ -L "$lf_entry" ] || continue
    if [ -d "$lf_entry" ] && [ ! -L "$lf_entry" ]; then list_files "$lf_entry" "${2:-}${lf_entry##*/}/"
    else printf '%s\n' "${2:-}${lf_entry##*/}"; fi
  done
)

# Compares directory $1 with $SCRATCH.manifest: sizes only ($2 = sizes, cheap: no file is read) or
# also sha256s and files the marker does not list ($2 = full). Prints one line naming the first
# differences and fails when there are any.
verify() {
  vf_dir="$1"; vf_mode="$2"
  set --
  while IFS= read -r vf_line; do set -- "$@" "${vf_line#* * }"; done < "$SCRATCH.manifest"
  (cd "$vf_dir" && wc -c -- "$@" /dev/null) > "$SCRATCH.sizes" 2> /dev/null
  : > "$SCRATCH.sums"; : > "$SCRATCH.found"
  if [ "$vf_mode" = full ]; then
    (cd "$vf_dir" && sha256sum -- "$@") > "$SCRATCH.sums" 2> /dev/null
    list_files "$vf_dir" > "$SCRATCH.found"
  fi
  awk -v mode="$vf_mode" -v marker="$MARKER" -v state="$STATE" "$VERIFY_AWK" \
    "$SCRATCH.manifest" "$SCRATCH.sizes" "$SCRATCH.sums" "$SCRATCH.found"
}

# Does version $2 of model $1 (its files in $SCRATCH.manifest) fit next to what $DEST holds now?
# Logs why not.
fits() {
  [ "$VOLUME_BYTES" -gt 0 ] || return 0
  # Files rounded up to 4 KiB blocks, plus two blocks for the marker copy and the state file.
  ft_need=$(awk '{ n += int(($1 + 4095) / 4096) * 4096 } END { printf "%.0f\n", n + 8192 }' \
    "$SCRATCH.manifest")
  ft_used=$(du -sk "$DEST" 2> /dev/null | awk 'NR == 1 { printf "%.0f\n", $1 * 1024 }')
  is_number "$ft_used" || ft_used=0
  [ $((ft_used + ft_need)) -gt "$VOLUME_BYTES" ] || return 0
  problem "not copying $1/$2: it needs $ft_need bytes and $DEST already uses $ft_used, more than" \
    "MODELS_VOLUME_BYTES=$VOLUME_BYTES (the pod would be evicted); raise the server's modelsVolumeSize" \
    "or serve fewer versions"
  return 1
}

# Copies version $2 of model $1 (marker identity $3 in the listing), verifies it against the marker
# copied with it and renames it into place, replacing a damaged copy. With MODELS_VOLUME_BYTES set the
# marker is read first, to refuse a bad one and a version that does not fit before any download.
# Logs each problem; fails leaving nothing behind.
copy_version() {
  cv_dir="$DEST/$1/$2"; cv_tmp="$DEST/$1/.incoming-$2"; cv_old="$DEST/$1/.pruning-$2"; cv_src="$SRC/$1/$2/"
  if [ "$VOLUME_BYTES" -gt 0 ]; then
    if ! fetch_marker "$1" "$2" "$SCRATCH.marker"; then
      problem "cannot read $cv_src$MARKER, retrying next round: $(first_line "$SCRATCH.err")"; return 1
    fi
    if ! read_marker "$SCRATCH.marker" "$1" "$2"; then
      problem "not copying $1/$2: $cv_src$MARKER is not a marker as model_tools publish writes it" \
        "($(first_line "$SCRATCH.manifest")); publish the model again as a new version"
      return 1
    fi
    fits "$1" "$2" || return 1
  fi
  : > "$SCRATCH.err"
  if ! { rm -rf "$cv_tmp" && mkdir -p "$cv_tmp"; } 2> "$SCRATCH.err"; then
    problem "cannot create $cv_tmp: $(first_line "$SCRATCH.err")"; return 1
  fi
  case "$SRC" in
    s3://*) aws s3 cp --recursive --only-show-errors "$cv_src" "$cv_tmp/" ;;
    gs://*) gcloud storage cp --recursive --no-user-output-enabled "$cv_src*" "$cv_tmp/" ;;
  esac < /dev/null 2> "$SCRATCH.err" || {
    rm -rf "$cv_tmp"; problem "copy of $cv_src failed, retrying next round: $(first_line "$SCRATCH.err")"
    return 1
  }
  # The copy must be exactly what the marker copied with it lists: files uploaded again during the
  # copy (or a marker deleted meanwhile) show up as a difference.
  if [ ! -f "$cv_tmp/$MARKER" ]; then
    cv_why="the copy has no $MARKER: it vanished during the copy (uploaded again?)"
  elif ! read_marker "$cv_tmp/$MARKER" "$1" "$2"; then
    cv_why="the copied $MARKER is not a marker as model_tools publish writes it:"
    cv_why="$cv_why $(first_line "$SCRATCH.manifest")"
  elif ! verify "$cv_tmp" full > "$SCRATCH.verify"; then
    cv_why=$(first_line "$SCRATCH.verify")
  else
    cv_why=""
  fi
  if [ -n "$cv_why" ]; then
    rm -rf "$cv_tmp"
    problem "copy of $cv_src does not match its $MARKER marker ($cv_why): discarded, retrying next round"
    return 1
  fi
  if ! printf '%s\n' "$3" 2> "$SCRATCH.err" > "$cv_tmp/$STATE"; then
    rm -rf "$cv_tmp"; problem "cannot write $cv_tmp/$STATE: $(first_line "$SCRATCH.err")"; return 1
  fi
  # Same filesystem: the rename is atomic, TF Serving sees all of the version or none of it. A damaged
  # copy is renamed away first and deleted after.
  if [ -d "$cv_dir" ] && ! { rm -rf "$cv_old" && mv "$cv_dir" "$cv_old"; } 2> "$SCRATCH.err"; then
    rm -rf "$cv_tmp"; problem "cannot move the damaged $cv_dir away: $(first_line "$SCRATCH.err")"; return 1
  fi
  if ! mv "$cv_tmp" "$cv_dir" 2> "$SCRATCH.err"; then
    problem "cannot rename $cv_tmp to $cv_dir: $(first_line "$SCRATCH.err")"
    rm -rf "$cv_tmp"; [ -d "$cv_old" ] && mv "$cv_old" "$cv_dir"
    return 1
  fi
  rm -rf "$cv_old"
}

# Re-checks local version $2 of model $1 (marker identity $3 in the listing): copies it again when
# damaged; reports it (and keeps it) when its marker was replaced in the bucket. Fails on a problem.
check_local() {
  cl_dir="$DEST/$1/$2"
  if [ "$(cat "$cl_dir/$STATE" 2> /dev/null)" != "$3" ]; then
    # Not the marker identity this copy was made from: compare the contents.
    if ! fetch_marker "$1" "$2" "$SCRATCH.marker"; then
      problem "cannot read $SRC/$1/$2/$MARKER to check the local copy against it:" \
        "$(first_line "$SCRATCH.err")"
      return 1
    fi
    if [ -f "$cl_dir/$MARKER" ]; then
      if ! same_file "$SCRATCH.marker" "$cl_dir/$MARKER"; then
        problem "REPLACED: $SRC/$1/$2/ has another $MARKER than the copy this pod serves (new bytes" \
          "under the same version number): keeping the local copy, but pods started from now on get" \
          "the new bytes. Versions are immutable: publish the change as a new version and put the" \
          "original version $2 back in the bucket (or restart every pod so that they agree)"
        return 1
      fi
      printf '%s\n' "$3" > "$cl_dir/$STATE"  # the same marker: remember its new identity
    fi
  fi
  if [ ! -f "$cl_dir/$MARKER" ]; then cl_why="its $MARKER copy is missing"
  elif ! read_marker "$cl_dir/$MARKER" "$1" "$2"; then
    cl_why="its $MARKER copy is unreadable: $(first_line "$SCRATCH.manifest")"
  elif ! verify "$cl_dir" sizes > "$SCRATCH.verify"; then cl_why=$(first_line "$SCRATCH.verify")
  else return 0
  fi
  problem "the local copy $cl_dir is damaged ($cl_why): copying it again"
  copy_version "$1" "$2" "$3" || return 1
  log "copied $1/$2 again, replacing the damaged copy"
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
  : > "$SCRATCH.complete"
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
    sm_id=$(awk -v v="$sm_version" '$1 == v { print $2; exit }' "$SCRATCH.complete")
    if [ -d "$DEST/$sm_model/$sm_version" ]; then
      check_local "$sm_model" "$sm_version" "$sm_id" || RD_STATUS=1
    elif copy_version "$sm_model" "$sm_version" "$sm_id"; then
      log "copied $sm_model/$sm_version"
    else
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
# returns 1 when the spec file, a listing, a copy, a check or a deletion failed.
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
      "SYNC_INTERVAL_SECONDS, PRUNE_AFTER_SECONDS, MODELS_VOLUME_BYTES)" >&2
    exit 2 ;;
esac
"""
assert "'" not in MANIFEST_AWK + VERIFY_AWK, "the awk programs are single-quoted in the script"
SYNC_SCRIPT = SYNC_SCRIPT.replace("__MANIFEST_AWK__", MANIFEST_AWK.strip("\n")) \
    .replace("__VERIFY_AWK__", VERIFY_AWK.strip("\n")).replace("__MARKER__", COMPLETION_MARKER) \
    .replace("__STATE__", SYNC_STATE_FILE).replace("__SPEC_PATH__", SYNC_SPEC_PATH) \
    .replace("__SPEC_KEY__", SYNC_SPEC_FILE).replace("__PRUNE__", str(PRUNE_AFTER_SECONDS))
