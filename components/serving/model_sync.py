"""The model sync script and container specs: bucket -> shared volume, complete versions only.

TF Serving cannot read ``s3://`` since 2.7 (tensorflow/serving#1963), so an init container
copies the models into an ``emptyDir`` before TF Serving starts and a sidecar keeps copying new
versions. Only versions whose completion marker exists are copied, into a temporary directory
renamed into place, so TF Serving never sees half a model. The tool is picked by URI scheme:
``aws s3`` for ``s3://`` (credentials from IRSA), ``gcloud storage`` for ``gs://`` (Workload Identity).
"""

from __future__ import annotations

from components.model_contract import COMPLETION_MARKER

SYNC_IMAGES = {
    # Pinned: the sync must not change behaviour under a running fleet.
    "s3": "docker.io/amazon/aws-cli:2.17.0",
    "gs": "gcr.io/google.com/cloudsdktool/google-cloud-cli:489.0.0-slim",
}

SYNC_SCRIPT = r"""#!/bin/sh
# Copy complete model versions from $MODEL_SOURCE_URI to $MODEL_DIR.
# Usage: sync.sh once | loop
set -u
MODE="${1:-once}"
SRC="${MODEL_SOURCE_URI%/}"
DEST="${MODEL_DIR:-/models}"
MARKER="__MARKER__"
INTERVAL="${SYNC_INTERVAL_SECONDS:-45}"

log() { echo "model-sync: $*" >&2; }

# Prints the versions of model $1 whose marker exists in the bucket; fails when the bucket cannot
# be listed (an empty prefix is not a failure).
complete_versions() {
  listing="${TMPDIR:-/tmp}/model-sync-listing-$1"
  case "$SRC" in
    s3://*)
      path="${SRC#s3://}"; bucket="${path%%/*}"; prefix="${path#"$bucket"}"; prefix="${prefix#/}"
      aws s3api list-objects-v2 --bucket "$bucket" --prefix "${prefix:+$prefix/}$1/" \
        --query 'Contents[].Key' --output text > "$listing" || return 1 ;;
    gs://*)
      if ! gcloud storage ls "$SRC/$1/*/$MARKER" > "$listing" 2> "$listing.err"; then
        grep -q "matched no objects" "$listing.err" || { cat "$listing.err" >&2; return 1; }
      fi ;;
    *) log "unsupported source $SRC (expected s3:// or gs://)"; return 2 ;;
  esac
  tr '\t' '\n' < "$listing" | sed -n "s#^.*$1/\([0-9][0-9]*\)/$MARKER\$#\1#p" | sort -n -u
}

copy_version() { # model version
  tmp="$DEST/$1/.incoming-$2"
  rm -rf "$tmp" && mkdir -p "$tmp" || return 1
  case "$SRC" in
    s3://*) aws s3 cp --recursive --only-show-errors "$SRC/$1/$2/" "$tmp/" ;;
    gs://*) gcloud storage cp --recursive --no-user-output-enabled "$SRC/$1/$2/*" "$tmp/" ;;
  esac || { rm -rf "$tmp"; return 1; }
  # Same filesystem: the rename is atomic, TF Serving sees all of the version or none of it.
  mv "$tmp" "$DEST/$1/$2"
}

sync_all() {
  status=0
  for model in $MODEL_NAMES; do
    mkdir -p "$DEST/$model"
    if ! versions=$(complete_versions "$model"); then
      log "cannot list $SRC/$model/ (check the bucket and the pod's identity)"; status=1; continue
    fi
    [ -n "$versions" ] || log "no complete version of $model under $SRC/$model/ yet (marker $MARKER)"
    for version in $versions; do
      [ -d "$DEST/$model/$version" ] && continue
      if copy_version "$model" "$version"; then log "copied $model/$version"
      else log "copy of $model/$version failed; will retry"; status=1; fi
    done
  done
  return $status
}

if [ "$MODE" = once ]; then
  sync_all
  exit $?
fi
while true; do
  sync_all || true
  sleep "$INTERVAL"
done
""".replace("__MARKER__", COMPLETION_MARKER)

