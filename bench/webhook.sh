#!/usr/bin/env bash
# bench/webhook.sh — webhook deliveries through the console into the queue.
#
# Issue 14 target: 5,000+ deliveries/s with p99 under 50 ms, each answered 202 only once it is
# seated. A real HTTP load generator (wrk, from Debian's `wrk` package) posts GitHub-style
# deliveries (a JSON body of SIZE bytes, `X-Hub-Signature-256`, a unique `X-GitHub-Delivery`
# per request, so none is a duplicate) to `POST /hooks/acme/bench` of a release `ferry run`
# whose pipeline seats them and pushes them to the `blackhole` pusher. Prints wrk's request
# rate and latency percentiles (round trip on localhost: the time until the delivery was
# committed), the passengers ferry seated, and ferry's peak RSS.
# Release build. Usage: bench/webhook.sh
# Environment: DURATION (30s), CONNECTIONS (64), THREADS (2), SIZE (1024), PORT (5078),
#   BENCH_DIR (/tmp), KEEP=1 keeps the project, FERRY_BIN=path runs that binary instead of a
#   release build (to check the script with a debug build; its numbers mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
SIZE=${SIZE:-1024}
PORT=${PORT:-5078}
SECRET=bench-webhook-secret

command -v wrk > /dev/null || { echo "needs wrk: apt-get install -y wrk"; exit 1; }
command -v openssl > /dev/null || { echo "needs openssl: apt-get install -y openssl"; exit 1; }
if [ -n "${FERRY_BIN:-}" ]; then
  BIN=$(realpath "$FERRY_BIN")
else
  cargo build --release -q -p ferry --bin ferry -p ferry-connectors --example http_sink
  BIN=$PWD/target/release/ferry
fi
SINK=${SINK:-$PWD/target/release/examples/http_sink}
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/ferry-webhook-bench.XXXXXX")
trap '[ -n "${PID:-}" ] && kill -9 "$PID" 2>/dev/null; [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null; [ -z "${KEEP:-}" ] && rm -rf "$WORK"' EXIT

mkdir -p "$WORK/clients/acme/pipelines"
cat > "$WORK/ferry.yaml" <<YAML
system_alias: ferry BENCH
store: sqlite://data/ferry.db
web:
  listen: 127.0.0.1:$PORT
YAML
echo "queue_life_span: 1d" > "$WORK/clients/acme/client.yaml"
cat > "$WORK/clients/acme/pipelines/bench.yaml" <<YAML
description: bench/webhook.sh
pullers:
  - type: webhook
    auth: { github: "$SECRET" }
    capacity: 20000
pushers:
  - type: blackhole
YAML
"$BIN" validate "$WORK" > /dev/null

# One body; its signature (GitHub signs the body alone); a fresh delivery id per request.
BODY=$(printf '{"action":"opened","number":1,"payload":"%s"}' "$(head -c "$SIZE" /dev/zero | tr '\0' x)")
SIGNATURE=sha256=$(printf %s "$BODY" | openssl dgst -sha256 -hmac "$SECRET" | sed 's/^.* //')
RUN=$(date +%s)
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "pull_request"
wrk.headers["X-Hub-Signature-256"] = "$SIGNATURE"
local number = 0
function setup(thread)
  number = number + 1
  thread:set("id", number)
end
function init(args)
  sent = 0
end
function request()
  sent = sent + 1
  wrk.headers["X-GitHub-Delivery"] = "$RUN-" .. id .. "-" .. sent
  return wrk.format()
end
function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local failed = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("requests: %d in %.1f s = %.0f/s; not 202 or failed: %d\n",
    summary.requests, seconds, summary.requests / seconds, failed))
  io.write(string.format("latency: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000))
  local met = summary.requests / seconds >= 5000 and latency:percentile(99) < 50000 and failed == 0
  io.write(string.format("target (5,000/s, p99 under 50 ms, every delivery 202): %s\n",
    met and "met" or "missed"))
end
LUA

echo "ferry webhook benchmark: $DURATION, $CONNECTIONS connections, $THREADS wrk threads, bodies of $(printf %s "$BODY" | wc -c) bytes"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
RUST_LOG=warn "$BIN" run "$WORK" --listen "127.0.0.1:$PORT" 2> "$WORK/ferry.log" &
PID=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break
  sleep 0.1
done
# The first run registers the endpoint.
for _ in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/hooks/acme/bench")
  [ "$code" = 401 ] && break
  sleep 0.1
done

wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency -s "$WORK/post.lua" \
  "http://127.0.0.1:$PORT/hooks/acme/bench" | tee "$WORK/wrk.txt" | grep -E '^(requests|latency|target)'
sleep 2
echo "ferry: $("$BIN" status "$WORK" | grep -E '^acme/bench' | awk '{print $3" pending, "$4" in flight, "$7" complete"}') (ferry status)"
echo "ferry peak RSS: $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' "/proc/$PID/status")"
kill -TERM "$PID"
wait "$PID" || true
PID=

# Side by side, the same requests to an endpoint that only answers 204 (http_sink, one thread:
# no signature check, nothing stored): what HTTP on this machine gives without ferry's work.
if [ -x "$SINK" ]; then
  "$SINK" > "$WORK/sink.out" 2> /dev/null &
  SINK_PID=$!
  for _ in $(seq 50); do [ -s "$WORK/sink.out" ] && break; sleep 0.1; done
  echo "the same load against http_sink (answers only):"
  wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency -s "$WORK/post.lua" \
    "$(head -1 "$WORK/sink.out")/hooks/acme/bench" | grep -E '^(requests|latency)'
  kill "$SINK_PID"
fi
