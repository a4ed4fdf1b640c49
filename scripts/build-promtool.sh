#!/usr/bin/env bash
# Builds Prometheus's promtool from the Go module github.com/prometheus/prometheus with the
# machine's Go and caches the binary outside the clone:
#
#   $HOME/.cache/grantflow/tools/promtool-<module version>/promtool
#
# The chart tests run the real `promtool check rules` and `promtool test rules` on the
# PrometheusRule the chart renders and on the dashboard's queries (tests/tests/chart/).
# The version is pinned by the build module tests/promtool/go.mod + go.sum (checksummed by the
# Go module proxy). A first build downloads the modules and compiles for a few minutes on two
# cores; later runs find the binary and return at once. Prints the binary's path as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

VERSION="$(awk '$1 == "github.com/prometheus/prometheus" { print $2; exit }' tests/promtool/go.mod)"
if [[ -z "$VERSION" ]]; then
  echo "build-promtool: cannot read the pinned version from tests/promtool/go.mod" >&2
  exit 1
fi
OUT="$HOME/.cache/grantflow/tools/promtool-$VERSION"
mkdir -p "$OUT"

# As upstream's release builds: static binary, trimmed paths, the module graph exactly as
# committed (go.sum checked, nothing upgraded), the machine's Go. `remove_all_sd` (upstream's
# build tag) leaves out the service-discovery plugins (cloud SDKs, client-go), which rule checks
# never use: a build of minutes instead of tens of minutes on two cores.
export CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local

if [[ -x "$OUT/promtool" ]] && "$OUT/promtool" --version >/dev/null 2>&1; then
  echo "promtool $VERSION: cached in $OUT" >&2
else
  start=$SECONDS
  echo "promtool $VERSION: building from github.com/prometheus/prometheus (first build only) ..." >&2
  (cd "$REPO/tests/promtool" &&
    go build -trimpath -buildvcs=false -tags remove_all_sd -ldflags "-s -w -X github.com/prometheus/common/version.Version=$VERSION" \
      -o "$OUT/promtool.tmp" github.com/prometheus/prometheus/cmd/promtool)
  mv "$OUT/promtool.tmp" "$OUT/promtool"
  echo "promtool $VERSION: built in $((SECONDS - start)) s" >&2
fi

echo "$OUT/promtool"
