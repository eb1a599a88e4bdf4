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

With ``MODEL_CACHE_DIR`` (the node-local cache of ``model_cache.py``) a version is downloaded once per
node: the first pod takes a per-version lock in the cache (a ``mkdir`` lock with a heartbeat, broken when
stale), downloads and verifies the version there, and every other pod of the server on that node copies
it from the cache, verified again in full. The round that lists the bucket leaves its listing in the
cache, and ``wait`` uses a fresh one instead of listing, so a second or restarted pod on a warm node
starts without a single bucket request. The cache is pruned by the pods' own policy; a missing or
unwritable cache only makes the round copy straight from the bucket (docs/model-cache.md).
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

DEFAULT_SYNC_INTERVAL_SECONDS = 15
"""Default pause between two sync rounds (each round lists the bucket once per model). With TF Serving's
file-system poll (``FILE_SYSTEM_POLL_SECONDS`` in model_server.py) it bounds the time from a publish to
the version serving: interval + copy + poll + load (docs/model-cache.md, tests/test_publish_to_serving.py)."""

PRUNE_AFTER_SECONDS = 300
"""Default grace before an unselected local version is deleted: far longer than TF Serving's
file-system poll (a few seconds; its config is read once, never polled), so it has moved to the newer
version first. The node cache's entries follow the same grace."""


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
#         It never prunes. With the node cache it takes a fresh listing from the cache instead of
#         listing the bucket, so a pod on a warm node starts without a bucket request ("Node cache").
#   loop  (native sidecar) rounds forever, pruning; logs copies and problems; exits only on SIGTERM.
#   once  one round, pruning; exit 0 if every listing, copy and check worked, 1 otherwise (humans, tests).
#   anything else: usage error, exit 2 (as is a missing or unsupported $MODEL_SOURCE_URI, or a
#   non-numeric SYNC_INTERVAL_SECONDS, PRUNE_AFTER_SECONDS, MODELS_VOLUME_BYTES or MODEL_CACHE_* number).
#
# Environment:
#   MODEL_SOURCE_URI       s3://bucket[/prefix] or gs://bucket[/prefix] (required)
#   MODEL_DIR              local models directory (default /models)
#   MODEL_SPEC_FILE        spec file, re-read every round (default __SPEC_PATH__)
#   SYNC_INTERVAL_SECONDS  pause between rounds (default __INTERVAL__)
#   PRUNE_AFTER_SECONDS    how long a local version stays unselected before deletion (default __PRUNE__)
#   MODELS_VOLUME_BYTES    size limit in bytes of the volume holding $MODEL_DIR (the emptyDir's
#                          sizeLimit: above it the kubelet evicts the pod); a copy that would not
#                          fit is skipped with a problem line. Unset or 0: no check.
#   TMPDIR                 scratch directory (default /tmp; the root filesystem is read-only)
#   MODEL_CACHE_DIR        node-local cache shared by this server's pods on the node (see "Node
#                          cache"); unset or empty: no cache, every pod copies from the bucket.
#   MODEL_CACHE_LISTING_MAX_AGE_SECONDS  wait uses the cache's listing of a model at most this old
#                          instead of listing the bucket (default 2 x SYNC_INTERVAL_SECONDS; 0: never).
#   MODEL_CACHE_LOCK_STALE_SECONDS  a cache lock whose heartbeat is older is broken (default 60).
#   MODEL_CACHE_MAX_BYTES  a version that would grow the cache above this many bytes is copied from
#                          the bucket without going through the cache. Unset or 0: no check.
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
# Node cache (MODEL_CACHE_DIR set). The pods of one server on one node share a directory (a hostPath
# PersistentVolume, components/serving/model_cache.py) holding verified complete versions, so a version
# is downloaded once per node, not once per pod:
#   <cache>/<model>/<v>@<sha256 of its marker>/  a complete copy: the files, the marker and __STATE__
#                                                (the marker's identity in the listing, as in a pod)
#   <cache>/<model>/.listing                     the last listing: "<epoch> <uri>", then "<v> <identity>"
#   <cache>/<model>/.lock-<v>/                   the lock of a version: owner, beat (epoch seconds)
#   <cache>/<model>/.incoming-<v>.<self>/       a download in progress
#   <cache>/<model>/.unselected-<v>@<sha256>     a prune mark (epoch seconds)
# An entry is looked up by the identity the listing gives for the marker, so finding it costs no bucket
# request; the marker's sha256 in its name keeps two uploads under one number apart (pods started after
# a replacement get the new bytes, as without the cache). Copying a selected version that is not here
# yet happens under the lock of (model, version), and:
#   - the cache has it: the entry is copied into $MODEL_DIR/<model>/.incoming-<v>, checked IN FULL
#     (sizes and sha256: the entry may be old, written by another pod, on the node's disk) and renamed
#     into place. An entry that fails is deleted and downloaded again: it is never served.
#   - it does not: the version is downloaded into the cache's .incoming-<v>.<self> and checked as in
#     steps 1-3 above, renamed into the cache, copied into $MODEL_DIR, checked by sizes (its sha256 were
#     checked moments ago under the same lock; a local cp either works or fails) and renamed into place.
# The lock is a directory made with mkdir (atomic). Its holder rewrites lock/beat every
# MODEL_CACHE_LOCK_STALE_SECONDS/6 seconds while it lives. A pod finding the lock taken waits (a line
# every 30 s), then finds the entry the holder made; a lock whose beat is older than
# MODEL_CACHE_LOCK_STALE_SECONDS (its holder was killed) is renamed away and deleted. The lock only saves
# downloads: an entry is made only by a rename after the full check, so even two holders (a lock broken
# under a holder frozen that long) cannot leave a partial entry, at worst a second download.
# Every round that lists the bucket writes that listing into the cache (replaced by a rename). wait uses
# a cached listing at most MODEL_CACHE_LISTING_MAX_AGE_SECONDS old instead of listing: a new pod on a
# warm node starts without any bucket request, on a listing at most that old (a version published
# meanwhile reaches it in its sidecar's first round).
# Pruning (loop and once) applies the pod's policy to the cache: an entry the spec file does not select,
# or that is no longer the listed identity of its version, is marked and deleted PRUNE_AFTER_SECONDS
# later, under its lock (so never while a pod copies it). A selected entry loses its mark, so with the
# stable and canary pods sharing the cache an entry stays while any pod on the node selects it. A pod's
# versions are its own copies: pruning the cache never touches what a running pod serves.
# Degrading: a cache directory that is missing or not writable (the node is not prepared yet) costs one
# log line a round, and the round copies straight from the bucket as without the cache; a version the
# cache cannot take (full, a failing write or lock) is copied straight from the bucket likewise.
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
INTERVAL="${SYNC_INTERVAL_SECONDS:-__INTERVAL__}"
PRUNE_AFTER="${PRUNE_AFTER_SECONDS:-__PRUNE__}"
VOLUME_BYTES="${MODELS_VOLUME_BYTES:-0}"
SCRATCH="${TMPDIR:-/tmp}/model-sync.$$"
PROBLEM_PREFIX=""
CACHE="${MODEL_CACHE_DIR:-}"
CACHE="${CACHE%/}"
LISTING_MAX_AGE="${MODEL_CACHE_LISTING_MAX_AGE_SECONDS:-}"  # default: 2 x INTERVAL (check_config)
LOCK_STALE="${MODEL_CACHE_LOCK_STALE_SECONDS:-60}"
CACHE_MAX_BYTES="${MODEL_CACHE_MAX_BYTES:-0}"
CACHE_ON=no      # the cache is usable this round (cache_ready)
LOCKED=""        # the cache lock this process holds, if any
BEAT_PID=""      # its heartbeat process
BEAT=10
SELF=""          # names this process in locks and temporary names (check_config)
COPIED_FROM=""   # how the last copy_version got its files, for the log line
LISTING_AGE=0
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
  [ -n "$LISTING_MAX_AGE" ] || LISTING_MAX_AGE=$((2 * INTERVAL))
  is_number "$LISTING_MAX_AGE" ||
    { log "MODEL_CACHE_LISTING_MAX_AGE_SECONDS='$LISTING_MAX_AGE' is not a number of seconds"; exit 2; }
  { is_number "$LOCK_STALE" && [ "$LOCK_STALE" -gt 0 ]; } ||
    { log "MODEL_CACHE_LOCK_STALE_SECONDS='$LOCK_STALE' is not a positive number of seconds"; exit 2; }
  is_number "$CACHE_MAX_BYTES" || { log "MODEL_CACHE_MAX_BYTES='$CACHE_MAX_BYTES' is not a number of bytes"; exit 2; }
  BEAT=$((LOCK_STALE / 6)); [ "$BEAT" -ge 1 ] || BEAT=1
  # The pod name (the hostname), the mode and the PID: unique among the pods and containers of a node.
  SELF="$(uname -n 2> /dev/null | tr -c 'A-Za-z0-9.\n-' _).$MODE.$$.$(date +%s)"
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

# Bytes version files in $SCRATCH.manifest take on disk: each file rounded up to 4 KiB blocks, plus two
# blocks for the marker copy and the state file.
need_bytes() {
  awk '{ n += int(($1 + 4095) / 4096) * 4096 } END { printf "%.0f\n", n + 8192 }' "$SCRATCH.manifest"
}

# Bytes directory $1 uses on disk (du), 0 when du fails.
used_bytes() {
  ub_used=$(du -sk "$1" 2> /dev/null | awk 'NR == 1 { printf "%.0f\n", $1 * 1024 }')
  is_number "$ub_used" || ub_used=0
  echo "$ub_used"
}

# Does version $2 of model $1 (its files in $SCRATCH.manifest) fit next to what $DEST holds now?
# Logs why not.
fits() {
  [ "$VOLUME_BYTES" -gt 0 ] || return 0
  ft_need=$(need_bytes)
  ft_used=$(used_bytes "$DEST")
  [ $((ft_used + ft_need)) -gt "$VOLUME_BYTES" ] || return 0
  problem "not copying $1/$2: it needs $ft_need bytes and $DEST already uses $ft_used, more than" \
    "MODELS_VOLUME_BYTES=$VOLUME_BYTES (the pod would be evicted); raise the server's modelsVolumeSize" \
    "or serve fewer versions"
  return 1
}

# --- the node cache (MODEL_CACHE_DIR; see "Node cache" in the header) ---

# Sets CACHE_ON for this round: yes when the cache directory exists and takes a new directory. Logs one
# line when it is set but not usable (the round then copies from the bucket directly).
cache_ready() {
  CACHE_ON=no
  [ -n "$CACHE" ] || return 0
  if [ ! -d "$CACHE" ]; then cr_why="no such directory"
  elif ! { mkdir "$CACHE/.probe.$SELF" && rmdir "$CACHE/.probe.$SELF"; } 2> "$SCRATCH.err"; then
    cr_why=$(first_line "$SCRATCH.err")
  else
    CACHE_ON=yes; return 0
  fi
  log "node cache $CACHE is not usable (${cr_why:-not writable}): copying from $SRC directly this round"
}

# Rewrites <lock>/beat every $BEAT seconds while the process $2 lives and lock $1 is still ours.
heartbeat() {
  while sleep "$BEAT"; do
    kill -0 "$2" 2> /dev/null || exit 0
    [ "$(cat "$1/owner" 2> /dev/null)" = "$SELF" ] || exit 0
    { date +%s > "$1/beat.$SELF" && mv -f "$1/beat.$SELF" "$1/beat"; } 2> /dev/null || exit 0
  done
}

# Takes the node-wide lock of version $2 of model $1 (mkdir is atomic) and starts its heartbeat. While
# another pod holds it with a fresh beat: waits, or with $3 = try fails at once. A lock whose beat is
# older than $LOCK_STALE seconds (its holder was killed) is renamed away and deleted. Fails when no
# lock can be made (the cache is failing).
cache_lock() {
  ck_lock="$CACHE/$1/.lock-$2"; ck_start=$(date +%s); ck_said="$ck_start"; ck_failed=0
  while ! mkdir "$ck_lock" 2> /dev/null; do
    if [ ! -d "$ck_lock" ]; then  # not held (released meanwhile?): retry, but not forever
      ck_failed=$((ck_failed + 1)); [ "$ck_failed" -lt 3 ] || return 1; continue
    fi
    ck_now=$(date +%s); ck_owner=$(cat "$ck_lock/owner" 2> /dev/null)
    ck_beat=$(cat "$ck_lock/beat" 2> /dev/null)
    is_number "$ck_beat" || ck_beat="$ck_start"  # being made right now, or its holder died making it
    if [ $((ck_now - ck_beat)) -gt "$LOCK_STALE" ]; then
      if mv "$ck_lock" "$CACHE/$1/.broken-$2.$SELF" 2> /dev/null; then
        log "node cache: broke the lock of $1/$2 held by ${ck_owner:-a pod that never wrote its name}" \
          "(no heartbeat for $((ck_now - ck_beat)) s)"
        rm -rf "$CACHE/$1/.broken-$2.$SELF"
      fi
      continue
    fi
    [ "${3:-}" != try ] || return 1
    if [ $((ck_now - ck_said)) -ge 30 ]; then
      log "node cache: waiting for ${ck_owner:-another pod} to finish with $1/$2"; ck_said="$ck_now"
    fi
    sleep 1
  done
  LOCKED="$ck_lock"
  { printf '%s\n' "$SELF" > "$ck_lock/owner" && date +%s > "$ck_lock/beat"; } 2> /dev/null
  # stdio to /dev/null: the heartbeat's sleep must not hold the pipes of whoever runs this script.
  heartbeat "$ck_lock" $$ < /dev/null > /dev/null 2>&1 &
  BEAT_PID=$!
}

# Releases the lock this process holds (if it still is ours) and stops its heartbeat.
cache_unlock() {
  [ -n "$LOCKED" ] || return 0
  if [ -n "$BEAT_PID" ]; then kill "$BEAT_PID" 2> /dev/null; wait "$BEAT_PID" 2> /dev/null; fi
  if [ "$(cat "$LOCKED/owner" 2> /dev/null)" = "$SELF" ]; then rm -rf "$LOCKED"; fi
  LOCKED=""; BEAT_PID=""
}

# Prints the cache entry of version $2 of model $1 made from the marker of listing identity $3.
cache_entry() {
  for ce_dir in "$CACHE/$1/$2"@*; do
    if [ -d "$ce_dir" ] && [ "$(cat "$ce_dir/$STATE" 2> /dev/null)" = "$3" ]; then
      printf '%s\n' "$ce_dir"; return 0
    fi
  done
  return 1
}

# Deletes cache entry $1, which failed a check ($2 says how): renamed away first, so no pod finds half.
drop_entry() {
  log "node cache: $1 does not match its $MARKER marker ($2): deleted, downloading it again"
  de_gone="${1%/*}/.pruning-${1##*/}.$SELF"
  if mv "$1" "$de_gone" 2> /dev/null; then rm -rf "$de_gone"; else rm -rf "$1"; fi
}

# Would version $2 of model $1 (files in $SCRATCH.manifest) grow the cache above MODEL_CACHE_MAX_BYTES?
cache_room() {
  [ "$CACHE_MAX_BYTES" -gt 0 ] || return 0
  cm_need=$(need_bytes)
  cm_used=$(used_bytes "$CACHE")
  [ $((cm_used + cm_need)) -gt "$CACHE_MAX_BYTES" ] || return 0
  log "node cache: $1/$2 needs $cm_need bytes and $CACHE already uses $cm_used, more than" \
    "MODEL_CACHE_MAX_BYTES=$CACHE_MAX_BYTES: copying it from $SRC directly, not through the cache"
  return 1
}

# Writes the listing of model $1 just made ($SCRATCH.complete) into the cache, replaced by a rename.
cache_save_listing() {
  [ "$CACHE_ON" = yes ] || return 0
  cs_file="$CACHE/$1/.listing"
  if ! { mkdir -p "$CACHE/$1" && { echo "$(date +%s) $SRC"; cat "$SCRATCH.complete"; } > "$cs_file.$SELF" \
         && mv -f "$cs_file.$SELF" "$cs_file"; } 2> "$SCRATCH.err"; then
    rm -f "$cs_file.$SELF"; log "node cache: cannot write $cs_file: $(first_line "$SCRATCH.err")"
  fi
}

# wait only: the cache's listing of model $1 into $SCRATCH.complete when it is of this $SRC and at most
# $LISTING_MAX_AGE seconds old (its age in LISTING_AGE); fails otherwise.
cache_listing() {
  [ "$CACHE_ON" = yes ] && [ "$MODE" = wait ] && [ "$LISTING_MAX_AGE" -gt 0 ] || return 1
  lg_head=$(sed -n 1p "$CACHE/$1/.listing" 2> /dev/null)
  lg_when="${lg_head%% *}"
  is_number "$lg_when" && [ "${lg_head#* }" = "$SRC" ] || return 1
  LISTING_AGE=$(($(date +%s) - lg_when))
  [ "$LISTING_AGE" -ge 0 ] && [ "$LISTING_AGE" -le "$LISTING_MAX_AGE" ] || return 1
  sed 1d "$CACHE/$1/.listing" | awk 'NF == 2 && $1 ~ /^[0-9]+$/' | sort -n -u -k1,1 > "$SCRATCH.complete"
}

# Marks the cache entries of model $1 that the keep list ($2...) does not select, or that are no longer
# the listed identity of their version ($SCRATCH.complete), and deletes those marked $PRUNE_AFTER
# seconds ago whose lock is free; selected entries lose their mark. Also deletes what pods killed while
# downloading or deleting left behind.
prune_cache() {
  pc_model="$1"; shift
  pc_now=$(date +%s)
  for pc_entry in "$CACHE/$pc_model"/*@*; do
    [ -d "$pc_entry" ] || continue
    pc_name="${pc_entry##*/}"; pc_version="${pc_name%%@*}"
    is_number "$pc_version" || continue
    pc_mark="$CACHE/$pc_model/.unselected-$pc_name"
    pc_id=$(awk -v v="$pc_version" '$1 == v { print $2; exit }' "$SCRATCH.complete")
    if in_list "$pc_version" "$@" && { [ -z "$pc_id" ] || [ "$(cat "$pc_entry/$STATE" 2> /dev/null)" = "$pc_id" ]; }
    then
      rm -f "$pc_mark"; continue
    fi
    pc_since=$(cat "$pc_mark" 2> /dev/null)
    if ! is_number "$pc_since"; then
      pc_since="$pc_now"
      echo "$pc_now" 2> /dev/null > "$pc_mark" || { log "node cache: cannot write $pc_mark"; continue; }
      log "node cache: $pc_model/$pc_name is no longer selected: deleting it after $PRUNE_AFTER s"
    fi
    [ $((pc_now - pc_since)) -ge "$PRUNE_AFTER" ] || continue
    cache_lock "$pc_model" "$pc_version" try || continue  # a pod is copying it: next round
    pc_gone="$CACHE/$pc_model/.pruning-$pc_name.$SELF"
    if mv "$pc_entry" "$pc_gone" 2> /dev/null && rm -rf "$pc_gone"; then
      rm -f "$pc_mark"; log "node cache: pruned $pc_model/$pc_name (unselected for $((pc_now - pc_since)) s)"
    else
      log "node cache: cannot delete $pc_entry"
    fi
    cache_unlock
  done
  for pc_mark in "$CACHE/$pc_model"/.unselected-*; do
    [ -f "$pc_mark" ] && [ ! -d "$CACHE/$pc_model/${pc_mark##*/.unselected-}" ] && rm -f "$pc_mark"
  done
  for pc_left in "$CACHE/$pc_model"/.incoming-*; do  # .incoming-<v>.<self>: free only when v is
    [ -d "$pc_left" ] || continue
    pc_version="${pc_left##*/.incoming-}"; pc_version="${pc_version%%.*}"
    { is_number "$pc_version" && cache_lock "$pc_model" "$pc_version" try; } || continue
    rm -rf "$CACHE/$pc_model/.incoming-$pc_version".*
    cache_unlock
  done
  rm -rf "$CACHE/$pc_model"/.pruning-* "$CACHE/$pc_model"/.broken-* 2> /dev/null
  return 0
}

# --- copying a version ---

# Downloads version $2 of model $1 into directory $3 (made afresh) and checks it against the marker
# copied with it. Logs each problem; fails leaving nothing behind.
download_verified() {
  dv_src="$SRC/$1/$2/"
  : > "$SCRATCH.err"
  if ! { rm -rf "$3" && mkdir -p "$3"; } 2> "$SCRATCH.err"; then
    problem "cannot create $3: $(first_line "$SCRATCH.err")"; return 1
  fi
  case "$SRC" in
    s3://*) aws s3 cp --recursive --only-show-errors "$dv_src" "$3/" ;;
    gs://*) gcloud storage cp --recursive --no-user-output-enabled "$dv_src*" "$3/" ;;
  esac < /dev/null 2> "$SCRATCH.err" || {
    rm -rf "$3"; problem "copy of $dv_src failed, retrying next round: $(first_line "$SCRATCH.err")"
    return 1
  }
  # The copy must be exactly what the marker copied with it lists: files uploaded again during the
  # copy (or a marker deleted meanwhile) show up as a difference.
  if ! check_copy "$3" "$1" "$2" full; then
    rm -rf "$3"
    problem "copy of $dv_src does not match its $MARKER marker ($CHECK_WHY): discarded, retrying next round"
    return 1
  fi
}

# Checks copy $1 of version $3 of model $2 against the marker in it: sizes only ($4 = sizes) or also
# sha256s and unlisted files ($4 = full). Fails with the reason in CHECK_WHY.
check_copy() {
  CHECK_WHY=""
  if [ ! -f "$1/$MARKER" ]; then
    CHECK_WHY="the copy has no $MARKER: it vanished during the copy (uploaded again?)"
  elif ! read_marker "$1/$MARKER" "$2" "$3"; then
    CHECK_WHY="the copied $MARKER is not a marker as model_tools publish writes it:"
    CHECK_WHY="$CHECK_WHY $(first_line "$SCRATCH.manifest")"
  elif ! verify "$1" "$4" > "$SCRATCH.verify"; then
    CHECK_WHY=$(first_line "$SCRATCH.verify")
  fi
  [ -z "$CHECK_WHY" ]
}

# Copies cache entry $1 into a fresh pod directory $2; fails (nothing left) when cp does.
copy_entry() {
  { rm -rf "$2" && mkdir -p "$2" && cp -R "$1/." "$2/"; } 2> "$SCRATCH.err" && return 0
  CHECK_WHY="cannot copy it: $(first_line "$SCRATCH.err")"; rm -rf "$2"; return 1
}

# Puts checked copy $4 of version $2 of model $1 (marker identity $3) into place, replacing a damaged
# copy. Logs each problem; fails leaving nothing behind.
install_version() {
  iv_dir="$DEST/$1/$2"; iv_old="$DEST/$1/.pruning-$2"
  if ! printf '%s\n' "$3" 2> "$SCRATCH.err" > "$4/$STATE"; then
    rm -rf "$4"; problem "cannot write $4/$STATE: $(first_line "$SCRATCH.err")"; return 1
  fi
  # Same filesystem: the rename is atomic, TF Serving sees all of the version or none of it. A damaged
  # copy is renamed away first and deleted after.
  if [ -d "$iv_dir" ] && ! { rm -rf "$iv_old" && mv "$iv_dir" "$iv_old"; } 2> "$SCRATCH.err"; then
    rm -rf "$4"; problem "cannot move the damaged $iv_dir away: $(first_line "$SCRATCH.err")"; return 1
  fi
  if ! mv "$4" "$iv_dir" 2> "$SCRATCH.err"; then
    problem "cannot rename $4 to $iv_dir: $(first_line "$SCRATCH.err")"
    rm -rf "$4"; [ -d "$iv_old" ] && mv "$iv_old" "$iv_dir"
    return 1
  fi
  rm -rf "$iv_old"
}

# Copies version $2 of model $1 (marker identity $3 in the listing) into place, checked against its
# marker: from the node cache when it holds the version, else from the bucket (through the cache when
# it is usable, so the next pod on the node finds it). Sets COPIED_FROM for the log line. Logs each
# problem; fails leaving nothing behind.
copy_version() {
  COPIED_FROM=""; cv_entry=""
  if [ "$CACHE_ON" = yes ]; then
    if ! mkdir -p "$CACHE/$1" 2> "$SCRATCH.err"; then
      log "node cache: cannot create $CACHE/$1 ($(first_line "$SCRATCH.err")): copying $1/$2 from $SRC directly"
    elif ! cache_lock "$1" "$2"; then
      log "node cache: cannot lock $1/$2 in $CACHE: copying it from $SRC directly"
    else
      cv_entry=$(cache_entry "$1" "$2" "$3")
    fi
  fi
  copy_locked "$1" "$2" "$3" "$cv_entry"
  cv_status=$?
  cache_unlock
  return $cv_status
}

copy_locked() { # copy_version with the cache lock held (or no cache): model version identity entry
  cv_tmp="$DEST/$1/.incoming-$2"; cv_src="$SRC/$1/$2/"; cv_entry="$4"
  # The marker is read before anything is copied, for the space checks: from the cache entry (no
  # request), else downloaded when a space check needs it.
  if [ -n "$cv_entry" ] && ! read_marker "$cv_entry/$MARKER" "$1" "$2"; then
    drop_entry "$cv_entry" "its $MARKER is unreadable: $(first_line "$SCRATCH.manifest")"; cv_entry=""
  fi
  if [ -z "$cv_entry" ] && { [ "$VOLUME_BYTES" -gt 0 ] || { [ -n "$LOCKED" ] && [ "$CACHE_MAX_BYTES" -gt 0 ]; }; }
  then
    if ! fetch_marker "$1" "$2" "$SCRATCH.marker"; then
      problem "cannot read $cv_src$MARKER, retrying next round: $(first_line "$SCRATCH.err")"; return 1
    fi
    if ! read_marker "$SCRATCH.marker" "$1" "$2"; then
      problem "not copying $1/$2: $cv_src$MARKER is not a marker as model_tools publish writes it" \
        "($(first_line "$SCRATCH.manifest")); publish the model again as a new version"
      return 1
    fi
  fi
  fits "$1" "$2" || return 1
  if [ -n "$cv_entry" ]; then
    if copy_entry "$cv_entry" "$cv_tmp" && check_copy "$cv_tmp" "$1" "$2" full; then
      COPIED_FROM=" from the node cache"
      install_version "$1" "$2" "$3" "$cv_tmp"; return
    fi
    rm -rf "$cv_tmp"; drop_entry "$cv_entry" "$CHECK_WHY"
  fi
  if [ -n "$LOCKED" ] && cache_room "$1" "$2"; then
    cv_in="$CACHE/$1/.incoming-$2.$SELF"
    rm -rf "$CACHE/$1/.incoming-$2".*  # left by a pod killed while it held this lock
    download_verified "$1" "$2" "$cv_in" || return 1
    cv_sha=$(sha256sum < "$cv_in/$MARKER" | sed 's/ .*//')
    cv_entry="$CACHE/$1/$2@$cv_sha"
    # An entry of the same marker under another listing identity (a re-upload of the same bytes) goes.
    if { printf '%s\n' "$3" > "$cv_in/$STATE" \
         && { [ ! -d "$cv_entry" ] || { mv "$cv_entry" "$cv_in.old" && rm -rf "$cv_in.old"; }; } \
         && mv "$cv_in" "$cv_entry"; } 2> "$SCRATCH.err"; then
      COPIED_FROM=" (downloaded into the node cache)"
      if copy_entry "$cv_entry" "$cv_tmp" && check_copy "$cv_tmp" "$1" "$2" sizes; then
        install_version "$1" "$2" "$3" "$cv_tmp"; return
      fi
      rm -rf "$cv_tmp"; problem "cannot copy $cv_entry into $cv_tmp ($CHECK_WHY), retrying next round"
      return 1
    fi
    # Downloaded and checked, but the cache refused the entry: the pod takes the download itself.
    log "node cache: cannot keep $1/$2 in $CACHE ($(first_line "$SCRATCH.err")): the pod keeps its download"
    if ! { rm -rf "$cv_tmp" && mv "$cv_in" "$cv_tmp"; } 2> "$SCRATCH.err"; then
      rm -rf "$cv_in" "$cv_tmp"
      problem "cannot move $cv_in to $cv_tmp, retrying next round: $(first_line "$SCRATCH.err")"; return 1
    fi
    install_version "$1" "$2" "$3" "$cv_tmp"; return
  fi
  download_verified "$1" "$2" "$cv_tmp" || return 1
  install_version "$1" "$2" "$3" "$cv_tmp"
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
  log "copied $1/$2 again$COPIED_FROM, replacing the damaged copy"
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
  if cache_listing "$sm_model"; then
    sm_complete=$(sed 's/ .*//' "$SCRATCH.complete")
    log "$sm_model: using the node cache's listing from $LISTING_AGE s ago instead of listing $SRC/$sm_model/"
  elif ! sm_complete=$(list_complete "$sm_model"); then
    problem "cannot list $SRC/$sm_model/ (check the bucket name and the pod's identity):" \
      "$(first_line "$SCRATCH.err")"
    RD_STATUS=1; sm_listing=failed; sm_complete=""
  else
    cache_save_listing "$sm_model"
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
      log "copied $sm_model/$sm_version$COPIED_FROM"
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
  if [ "$CACHE_ON" = yes ]; then prune_cache "$sm_model" $sm_keep; fi
}

# One round over the spec file: prune(yes|no). Sets READY=yes when every model is ready locally;
# returns 1 when the spec file, a listing, a copy, a check or a deletion failed.
round() {
  rd_prune="$1"; RD_STATUS=0; READY=yes; rd_seen=""; rd_number=0
  if ! cp "$SPEC" "$SCRATCH.spec" 2> "$SCRATCH.err"; then  # a private copy: the ConfigMap may change
    problem "cannot read the spec file $SPEC (ConfigMap key __SPEC_KEY__): $(first_line "$SCRATCH.err")"
    rm -f "$SCRATCH".*; READY=no; return 1
  fi
  cache_ready
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
stop_on() { trap 'cache_unlock; log "stopping"; rm -f "$SCRATCH".*; exit '"$1" TERM INT; }

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
    stop_on 143
    round yes
    exit $? ;;
  *)
    echo "usage: sync.sh wait|loop|once (MODEL_SOURCE_URI, MODEL_DIR, MODEL_SPEC_FILE," \
      "SYNC_INTERVAL_SECONDS, PRUNE_AFTER_SECONDS, MODELS_VOLUME_BYTES, MODEL_CACHE_*)" >&2
    exit 2 ;;
esac
"""
assert "'" not in MANIFEST_AWK + VERIFY_AWK, "the awk programs are single-quoted in the script"
SYNC_SCRIPT = SYNC_SCRIPT.replace("__MANIFEST_AWK__", MANIFEST_AWK.strip("\n")) \
    .replace("__VERIFY_AWK__", VERIFY_AWK.strip("\n")).replace("__MARKER__", COMPLETION_MARKER) \
    .replace("__STATE__", SYNC_STATE_FILE).replace("__SPEC_PATH__", SYNC_SPEC_PATH) \
    .replace("__SPEC_KEY__", SYNC_SPEC_FILE).replace("__PRUNE__", str(PRUNE_AFTER_SECONDS)) \
    .replace("__INTERVAL__", str(DEFAULT_SYNC_INTERVAL_SECONDS))
