#!/usr/bin/env bash
# bench/http.sh — generate → durable queue → http pusher → a local HTTP endpoint.
#
# Measures how many requests per second the `http` pusher delivers, one passenger per request
# (POST, JSON body, an Idempotency-Key each), over kept-alive connections to a local endpoint
# (crates/ferry-connectors/examples/http_sink.rs, one thread) that answers 204 and counts the
# requests and distinct keys. Whole-process time: from starting ferry until the endpoint has
# seen every passenger. Target: at least 5,000 requests/s.
# Release build. Usage: bench/http.sh [PASSENGERS]   (default 100000)
# Environment: PROFILE (release; debug only to check the script), WORKERS (4, the default of ferry.yaml), BATCH (500), CONCURRENCY (16, the
#   pusher's default), SIZE (body bytes, 512), LIMIT (queue_limit, 50000), BENCH_DIR (/tmp), KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-100000}
WORKERS=${WORKERS:-4}
BATCH=${BATCH:-500}
CONCURRENCY=${CONCURRENCY:-16}
SIZE=${SIZE:-512}
LIMIT=${LIMIT:-50000}

# One build: the binary and the endpoint. PROFILE=debug checks the script quickly (not a
# measurement).
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p ferry --bin ferry -p ferry-connectors --example http_sink
else
  cargo build -q -p ferry --bin ferry -p ferry-connectors --example http_sink
fi
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$TARGET/$PROFILE/ferry
SINK=$TARGET/$PROFILE/examples/http_sink
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/ferry-bench-http.XXXXXX")
trap '[ -n "${PID:-}" ] && kill -9 "$PID" 2>/dev/null; [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null; [ -z "${KEEP:-}" ] && rm -rf "$WORK"' EXIT

"$SINK" > "$WORK/sink.out" 2> "$WORK/sink.log" &
SINK_PID=$!
for _ in $(seq 50); do
  [ -s "$WORK/sink.out" ] && break
  sleep 0.1
done
URL=$(head -n 1 "$WORK/sink.out")
[ -n "$URL" ] || { echo "the endpoint did not start:"; cat "$WORK/sink.log"; exit 1; }

mkdir -p "$WORK/clients/bench/pipelines"
cat > "$WORK/ferry.yaml" <<YAML
system_alias: ferry BENCH
store: sqlite://data/ferry.db
workers: $WORKERS
YAML
echo "queue_life_span: 1d" > "$WORK/clients/bench/client.yaml"
cat > "$WORK/clients/bench/pipelines/http.yaml" <<YAML
schedule: continuous
pullers:
  - type: generate
    count: $N
    size: $SIZE
pushers:
  - type: http
    url: $URL/orders/{external_id}
    headers: { X-Kind: "{metadata.kind}" }
    concurrency: $CONCURRENCY
batch_size: $BATCH
queue_limit: $LIMIT
YAML

stats() { curl -fsS "$URL/stats" 2>/dev/null || echo "0 0"; }

echo "ferry http pusher benchmark: $N passengers of $SIZE bytes, $WORKERS workers, batches of $BATCH, $CONCURRENCY requests at once per push"
echo "endpoint: $URL (examples/http_sink, one thread, 204 No Content)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
start=$(date +%s.%N)
RUST_LOG=warn "$BIN" run "$WORK" 2> "$WORK/ferry.log" &
PID=$!
keys=0
while [ "$keys" -lt "$N" ]; do
  sleep 0.2
  kill -0 "$PID" 2>/dev/null || { echo "ferry exited early:"; cat "$WORK/ferry.log"; exit 1; }
  read -r requests keys < <(stats)
  printf '\r  %s / %s delivered' "$keys" "$N"
done
end=$(date +%s.%N)
echo
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
kill -TERM "$PID"; wait "$PID" || true; PID=
read -r requests keys < <(stats)

awk -v n="$N" -v s="$start" -v e="$end" -v kb="$peak_kb" -v r="$requests" -v k="$keys" 'BEGIN {
  t = e - s
  printf "passengers:        %d (requests seen: %d, distinct idempotency keys: %d)\n", n, r, k
  printf "elapsed:           %.2f s (whole process, endpoint polled every 0.2 s)\n", t
  printf "throughput:        %.0f requests/s (target 5000)\n", n / t
  printf "peak RSS:          %.0f MB\n", kb / 1024
}'
[ "$keys" -eq "$N" ] || { echo "MISMATCH: expected $N distinct keys"; exit 1; }
if grep -q "WARN\|ERROR" "$WORK/ferry.log"; then
  echo "ferry logged warnings (first 5):"; grep "WARN\|ERROR" "$WORK/ferry.log" | head -5
fi

# Side by side: the same endpoint under wrk (16 connections, the same body size, a fresh
# Idempotency-Key per request): what the endpoint and HTTP on this machine give without ferry.
if command -v wrk > /dev/null; then
  cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = string.rep("x", $SIZE)
wrk.headers["Content-Type"] = "application/json"
local sent = 0
function request()
  sent = sent + 1
  wrk.headers["Idempotency-Key"] = "wrk-" .. sent
  return wrk.format()
end
LUA
  echo "the endpoint alone under wrk (2 threads, $CONCURRENCY connections, 10 s):"
  wrk -t 2 -c "$CONCURRENCY" -d 10s -s "$WORK/post.lua" "$URL/orders/x" | grep -E 'Requests/sec|Latency'
fi
