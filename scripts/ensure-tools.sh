#!/usr/bin/env bash
# Installs the tools the tests run that are not Python packages of the project's own venv.
# Idempotent: does nothing when everything is already there. `make test` calls it once (stamp).
#
#   promtool      Debian package `prometheus` (2.42): checks the prometheus-adapter query
#                 (tests/test_metrics_adapter.py). Installed with apt-get when missing (root only).
#   .venv-checkov checkov, pinned in requirements-checkov.txt, in a venv of its own: its exact
#                 dependency pins clash with the project's (tests/test_checkov.py).
#   tests/crd_validator/node_modules  JSON schemas of the Gateway API and Istio CRDs (npm packages
#                 @kubernetes-models/*, pinned by package-lock.json) for tests/test_manifests.py.
#
# Environment: PYTHON (default python3) builds the checkov venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CHECKOV_VENV=.venv-checkov
CHECKOV_REQUIREMENTS=requirements-checkov.txt
CHECKOV_STAMP=$CHECKOV_VENV/.installed

log() { echo "ensure-tools: $*"; }

ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "ensure-tools: promtool is missing and this user is not root." >&2
        echo "ensure-tools: install it with: sudo apt-get install -y --no-install-recommends prometheus" >&2
        exit 1
    fi
    log "installing promtool (Debian package prometheus)"
    local started=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends prometheus; then
        log "apt-get install failed; updating the package lists and retrying"
        apt-get update -q
        apt-get install -y -q --no-install-recommends prometheus
    fi
    command -v promtool >/dev/null 2>&1 || { echo "ensure-tools: promtool still not on PATH" >&2; exit 1; }
    log "installed promtool in $((SECONDS - started))s"
}

ensure_checkov() {
    if [ -x "$CHECKOV_VENV/bin/checkov" ] && [ -f "$CHECKOV_STAMP" ] \
        && [ ! "$CHECKOV_REQUIREMENTS" -nt "$CHECKOV_STAMP" ]; then
        return 0
    fi
    log "installing checkov into $CHECKOV_VENV"
    local started=$SECONDS
    test -x "$CHECKOV_VENV/bin/python" || "$PYTHON" -m venv "$CHECKOV_VENV"
    # -qq: errors only (pip's warnings about unused local index paths drown the log otherwise).
    "$CHECKOV_VENV/bin/pip" install -qq --disable-pip-version-check -r "$CHECKOV_REQUIREMENTS"
    touch "$CHECKOV_STAMP"
    log "installed checkov in $((SECONDS - started))s"
}

ensure_crd_validator() {
    local dir=tests/crd_validator
    if [ -f "$dir/node_modules/.installed" ] && [ ! "$dir/package-lock.json" -nt "$dir/node_modules/.installed" ]; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || { echo "ensure-tools: npm (Node.js 20+) is needed for $dir" >&2; exit 1; }
    log "installing the CRD schema validator ($dir, npm ci)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$dir/node_modules/.installed"
}

ensure_promtool
ensure_checkov
ensure_crd_validator
log "promtool $(promtool --version 2>&1 | head -n1 | awk '{print $3}'), $("$CHECKOV_VENV/bin/checkov" --version)"
