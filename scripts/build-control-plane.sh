#!/usr/bin/env bash
# Builds the real control plane of the test tier — kube-apiserver and etcd — from Go modules
# with the machine's Go, as controller-runtime's envtest uses them, and caches the binaries
# outside the clone:
#
#   $HOME/.cache/grantflow/k8s/<kube version>-etcd-<etcd version>/{kube-apiserver,etcd}
#
# The versions are pinned by the two build modules under tests/control-plane/ (go.mod + go.sum,
# checksummed by the Go module proxy). A first build downloads the modules and compiles for
# several minutes on two cores; later runs find the binaries and return at once.
# Prints the directory of the binaries as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

KUBE_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' tests/control-plane/kube-apiserver/go.mod)"
ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' tests/control-plane/etcd/go.mod)"
if [[ -z "$KUBE_VERSION" || -z "$ETCD_VERSION" ]]; then
  echo "build-control-plane: cannot read the pinned versions from tests/control-plane/*/go.mod" >&2
  exit 1
fi
OUT="${GRANTFLOW_CONTROL_PLANE_DIR:-$HOME/.cache/grantflow/k8s/$KUBE_VERSION-etcd-$ETCD_VERSION}"
mkdir -p "$OUT"

# What upstream's builds use: static binaries, no VCS stamping from our repo, trimmed paths;
# the module graph exactly as committed (go.sum checked, nothing upgraded); the machine's Go.
export CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local

if [[ -x "$OUT/etcd" ]] && "$OUT/etcd" --version >/dev/null 2>&1; then
  echo "etcd $ETCD_VERSION: cached in $OUT" >&2
else
  start=$SECONDS
  echo "etcd $ETCD_VERSION: building from go.etcd.io/etcd/server/v3 (first build only) ..." >&2
  (cd "$REPO/tests/control-plane/etcd" &&
    go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$OUT/etcd.tmp" "$OUT/etcd"
  echo "etcd $ETCD_VERSION: built in $((SECONDS - start)) s" >&2
fi

if [[ -x "$OUT/kube-apiserver" ]] && "$OUT/kube-apiserver" --version >/dev/null 2>&1; then
  echo "kube-apiserver $KUBE_VERSION: cached in $OUT" >&2
else
  start=$SECONDS
  echo "kube-apiserver $KUBE_VERSION: building from k8s.io/kubernetes (first build only; minutes) ..." >&2
  minor="${KUBE_VERSION#v1.}"
  minor="${minor%%.*}"
  # The version stamps upstream's hack/lib/version.sh writes, so /version reports the release
  # (without them it says v0.0.0-master and clients see no real version).
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X '$pkg.gitVersion=$KUBE_VERSION' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=$minor'"
    ldflags+=" -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=1970-01-01T00:00:00Z'"
  done
  (cd "$REPO/tests/control-plane/kube-apiserver" &&
    go build -trimpath -buildvcs=false -tags selinux,notest,grpcnotrace -ldflags "$ldflags" \
      -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"
  echo "kube-apiserver $KUBE_VERSION: built in $((SECONDS - start)) s" >&2
fi

echo "$OUT"
