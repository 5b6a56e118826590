#!/usr/bin/env bash
# CPU time per request of the tidegate Worker on workerd (docs/benchmarks-worker.md).
#
# Run after scripts/e2e-worker has built the Worker (crates/tidegate-worker/build). Starts the
# stand-in origin and workerd (worker/harness.mjs, core profile with limits raised so nothing
# trips), drives it with wrk for each request kind, and divides the CPU time the workerd
# process used (user + system, from /proc) by the requests served. The figure includes
# workerd's HTTP handling and the counter Durable Objects (same process), not the origin.
#
#   worker/bench-cpu.sh [seconds per kind, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
bin=${CARGO_TARGET_DIR:-$PWD/target}/debug
entry=crates/tidegate-worker/build/index.js
[ -f "$entry" ] || { echo "no $entry: run scripts/e2e-worker first" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mock=127.0.0.1:27881
listen=127.0.0.1:27890
kvadmin=127.0.0.1:27891
"$bin/tidegate" mock-origin --listen $mock --latency-ms 0 --chunk-delay-ms 0 >"$work/mock.log" 2>&1 &
pids+=($!)
"$bin/tidegate" kb build --input kb/demo.jsonl --output "$work/faq.kb" >/dev/null
sed -E "s/127\.0\.0\.1:(27081|47081)/$mock/g" tests/config/core.toml \
  | awk '/^\[limits\.(ip|user)\]/ { print; getline; print "limit = 100000000"; next } { print }' \
  >"$work/bench.toml"
node worker/harness.mjs --script "$entry" --config "$work/bench.toml" --listen $listen \
  --kv-admin $kvadmin --kb "$work/faq.kb" --codes 'SPRING618\nGROUP3' >"$work/worker.log" 2>&1 &
harness=$!
pids+=($harness)
for _ in $(seq 1 600); do grep -q '^ready:' "$work/worker.log" && break; sleep 0.1; done
workerd=$(pgrep -P "$harness" -f workerd | head -n1)
[ -n "$workerd" ] || { echo "workerd not found under $harness" >&2; exit 1; }
ticks() { awk '{ print $14 + $15 }' "/proc/$workerd/stat"; }
hz=$(getconf CLK_TCK)

run() { # name, lua body; connections from $conns
  local name="$1 c=$conns" lua=$work/$1.lua
  printf '%s\n' "$2" >"$lua"
  local before after
  before=$(ticks)
  wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$lua" "http://$listen${path:-/v1/chat/completions}" >"$work/$1.out"
  after=$(ticks)
  local reqs
  reqs=$(awk '/requests in/ { print $1 }' "$work/$1.out")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ { print $2 }' "$work/$1.out")
  p50=$(awk '$1 == "50%" { print $2 }' "$work/$1.out")
  p99=$(awk '$1 == "99%" { print $2 }' "$work/$1.out")
  awk -v n="$name" -v r="$reqs" -v t=$((after - before)) -v hz="$hz" -v rps="$rps" \
    -v p50="$p50" -v p99="$p99" \
    'BEGIN { printf "%-12s %8d requests  %8.0f req/s  p50 %s  p99 %s  workerd CPU %.0f us/request\n", n, r, rps, p50, p99, t / hz * 1e6 / (r > 0 ? r : 1) }'
}

kinds() {
# The floor: workerd, Miniflare's entry worker and one call into the wasm, no counters.
path=/healthz run healthz 'wrk.method = "GET"'

run faq 'wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-user-id"] = "bench"
wrk.body = [[{"messages":[{"role":"user","content":"How do I get a refund?"}]}]]'

run forward 'wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-user-id"] = "bench"
wrk.body = [[{"model":"gpt-4o","messages":[{"role":"user","content":"Explain recursion to me please"}]}]]'

run stream 'wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-user-id"] = "bench"
wrk.body = [[{"stream":true,"messages":[{"role":"user","content":"Explain closures step by step"}]}]]'
}
# One client: the cost of a request alone. Eight clients of one user and IP: every request
# races for the same counter objects (the worst case for the per-key turns).
conns=1 kinds
conns=8 kinds
