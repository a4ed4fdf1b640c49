#!/usr/bin/env bash
# Instructions per gRPC Check, counted by callgrind: repeatable on a busy machine, where CPU
# seconds are not (docs/benchmarks.md, "Instructions per check").
#
#   bench/scripts/callgrind-check.sh [EXTAUTHZ_BIN]
#
# Runs the benchmark's main tables briefly (no Envoy, no embedded store, no rows) with every
# grantflow-extauthz it starts under `valgrind --tool=callgrind`, and the benchmark itself
# under callgrind for the no-op floor; counts only what runs inside hyper's per-request HTTP/2
# stream task (decode, check, answer), and prints instructions per check for the floor, the
# memory store and the Redis store, with the steps inside a check. Needs valgrind,
# redis-server, and the release `bench` and `grantflow-extauthz` (built if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/grantflow/target-release}"
bench="$target/release/bench"
extauthz="${1:-$target/release/grantflow-extauthz}"
if [[ ! -x "$bench" || ! -x "$extauthz" ]]; then
  CARGO_TARGET_DIR="$target" cargo build --release -p grantflow-bench -p grantflow-extauthz
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
toggle='<hyper::proto::h2::server::H2Stream*>::poll'
# The store deadline of 50 ms is for native speed; under valgrind a check takes far longer.
cat > "$work/extauthz" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do if [[ "\$a" == 50ms ]]; then args+=(10s); else args+=("\$a"); fi; done
valgrind --tool=callgrind --callgrind-out-file="$work/server.%p" --toggle-collect='$toggle' \
  "$extauthz" "\${args[@]}" &
echo \$! >> "$work/pids"
wait
WRAP
chmod +x "$work/extauthz"
common=(--seconds 4 --warmup-seconds 0 --open-seconds 0.5 --rate 100 --sessions 1
        --embedded 0 --envoy 0 --rows none)
echo "servers under callgrind (about 2 min) ..." >&2
GRANTFLOW_EXTAUTHZ_BIN="$work/extauthz" REDIS_SERVER_BIN="${REDIS_SERVER_BIN:-$(command -v redis-server)}" \
  timeout 600 "$bench" "${common[@]}" > /dev/null 2> "$work/bench.log" || true
# The servers were killed with their wrapper's parent gone: end them so callgrind writes out.
while read -r pid; do kill -TERM "$pid" 2> /dev/null || true; done < "$work/pids"
sleep 5
echo "the floor (the benchmark's own no-op server) under callgrind ..." >&2
GRANTFLOW_EXTAUTHZ_BIN="$extauthz" REDIS_SERVER_BIN="${REDIS_SERVER_BIN:-$(command -v redis-server)}" \
  valgrind --tool=callgrind --callgrind-out-file="$work/floor.%p" --toggle-collect="$toggle" \
  "$bench" "${common[@]}" > /dev/null 2> "$work/floor.log" &
floor=$!
for _ in $(seq 1 300); do grep -q '\[2/4\]' "$work/floor.log" 2> /dev/null && break; sleep 1; done
kill -TERM "$floor" 2> /dev/null || true
wait "$floor" 2> /dev/null || true

per_check() { # FILE LABEL: inclusive instructions of the stream task and of steps, per check
  local tree="$work/$2.tree"
  callgrind_annotate --tree=calling --inclusive=yes --threshold=100 "$1" > "$tree" 2> /dev/null
  local checks
  checks=$(grep -E '> .*PipeToSendStream<S> as core::future::future::Future>::poll' "$tree" \
    | head -1 | sed -E 's/.*\(([0-9,]+)x\).*/\1/' | tr -d ,)
  printf '%s: %s checks\n' "$2" "$checks"
  for step in 'H2Stream<F,B,Ex> as core::future::future::Future>::poll' \
              'as tonic::codec::Decoder>::decode' \
              'read_check_request' 'TokenValidator::validate::\{\{closure\}\}' \
              'sha2::sha256::compress256' 'jsonwebtoken::decoding::decode' \
              'SessionStore>::check::\{\{closure\}\}' 'response::check_response' \
              'drop_in_place<tonic::request::Request<'; do
    grep -E "^ *[0-9,]+ .*\* .*$step" "$tree" | head -1 \
      | awk -v n="$checks" -v s="$step" '{gsub(",","",$1); printf "  %-55s %9.0f per check\n", substr(s,1,55), $1/n}'
  done
}
servers=( $(ls "$work"/server.* 2> /dev/null) )
[[ ${#servers[@]} -ge 1 ]] && per_check "${servers[0]}" memory
[[ ${#servers[@]} -ge 2 ]] && per_check "${servers[1]}" redis
ls "$work"/floor.* > /dev/null 2>&1 && per_check "$(ls "$work"/floor.* | head -1)" floor
echo "(software SHA-256 under valgrind: the CPU's SHA extensions are not emulated; subtract" \
  "sha2::sha256::compress256 for what native code runs)"
