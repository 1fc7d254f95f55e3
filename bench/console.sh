#!/usr/bin/env bash
# bench/console.sh — the queue browser with 1,000,000 passengers in the store.
#
# Issue target: p95 server time under 100 ms for a filtered page of the queue browser with
# 1,000,000 passengers in the store, measured with a real HTTP load generator (ab, from
# Debian's apache2-utils).
#
# Makes a project (a root client with an administrator, clients acme and globex with manual
# pipelines), seeds the store straight through the Store API
# (crates/ferry-store/examples/seed_console.rs: passengers over the last 30 days, mostly
# complete, some dead with three distinct errors, some failed, some pending, a few
# discarded; the pipelines paused so nothing changes while measuring; the search index brought
# up to date, as `ferry run` does in the background) with a root API token,
# starts `ferry run`, then sends each query REQUESTS times (or for at most MAX_SECONDS) at
# each concurrency in CONCURRENCY and prints the latency percentiles ab measures (round trip
# on localhost, so server time plus a few tens of µs) and ferry's peak RSS.
# Release build. Usage: bench/console.sh [PASSENGERS]   (default 1000000)
# Environment: REQUESTS (300), MAX_SECONDS (30), CONCURRENCY ("1 4"), PORT (5077),
#   BENCH_DIR (/tmp), KEEP=1 keeps the project.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
REQUESTS=${REQUESTS:-300}
MAX_SECONDS=${MAX_SECONDS:-30}
CONCURRENCY=${CONCURRENCY:-1 4}
PORT=${PORT:-5077}

command -v ab > /dev/null || { echo "needs ab: apt-get install -y apache2-utils"; exit 1; }
cargo build --release -q -p ferry
cargo build --release -q -p ferry-store --example seed_console
BIN=$PWD/target/release/ferry
SEED=$PWD/target/release/examples/seed_console
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/ferry-console-bench.XXXXXX")
trap '[ -n "${PID:-}" ] && kill -9 "$PID" 2>/dev/null; [ -z "${KEEP:-}" ] && rm -rf "$WORK"' EXIT

# The project.
cat > "$WORK/ferry.yaml" <<YAML
system_alias: ferry BENCH
store: sqlite://data/ferry.db
web:
  listen: 127.0.0.1:$PORT
YAML
pipeline() {
  mkdir -p "$WORK/clients/$1/pipelines"
  cat > "$WORK/clients/$1/pipelines/$2.yaml" <<YAML
description: seeded by bench/console.sh
schedule: manual
pullers:
  - type: generate
    count: 1
pushers:
  - type: file
    path: data/$1/out
YAML
}
for client in root acme globex; do
  mkdir -p "$WORK/clients/$client"
  echo "queue_life_span: 90d" > "$WORK/clients/$client/client.yaml"
done
pipeline acme invoices
pipeline acme orders
pipeline acme rare
pipeline globex feed
printf 'bench-password-1\n' | "$BIN" user add -C "$WORK" root admin --role administrator > /dev/null
"$BIN" validate "$WORK" > /dev/null

echo "ferry console benchmark: queue browser with $N passengers"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"

# The passengers and a root API token, straight into the store.
SECRET=ferry_bench_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
HASH=$(printf %s "$SECRET" | sha256sum | cut -d' ' -f1)
start=$(date +%s.%N)
"$SEED" "$WORK" "$N" "$HASH" > "$WORK/seed.env"
end=$(date +%s.%N)
# shellcheck disable=SC1091
. "$WORK/seed.env"
awk -v s="$start" -v e="$end" 'BEGIN { printf "seeded in %.0f s; ", e - s }'
echo "store: $(du -sh "$WORK/data" | cut -f1) in $WORK/data"

RUST_LOG=warn "$BIN" run "$WORK" 2> "$WORK/ferry.log" &
PID=$!
BASE=http://127.0.0.1:$PORT
for _ in $(seq 100); do
  curl -fs "$BASE/health" > /dev/null 2>&1 && break
  kill -0 "$PID" 2> /dev/null || { echo "ferry exited early:"; cat "$WORK/ferry.log"; exit 1; }
  sleep 0.2
done

# name|path; every API page is 50 passengers (or fewer when the filter finds fewer).
QUERIES=(
  "newest page, one client|/api/v1/queue?client=acme"
  "pipeline + state=dead|/api/v1/queue?client=acme&pipeline=invoices&state=dead"
  "pipeline + state=complete|/api/v1/queue?client=acme&pipeline=invoices&state=complete"
  "pipeline + state=pending|/api/v1/queue?client=acme&pipeline=orders&state=pending"
  "small pipeline + state=failed|/api/v1/queue?client=acme&pipeline=rare&state=failed"
  "all clients + state=dead|/api/v1/queue?state=dead"
  "text: one external id|/api/v1/queue?client=acme&text=$MIDDLE_ID"
  "text: part of one external id|/api/v1/queue?client=acme&text=${MIDDLE_ID#INV-}"
  "text: no match|/api/v1/queue?client=acme&text=no-such-order"
  "text: a source system (1 %)|/api/v1/queue?client=acme&text=edi"
  "time range: one day, 20 days ago|/api/v1/queue?client=acme&since=$DAY_SINCE&until=$DAY_UNTIL"
  "deep page: before= mid-queue|/api/v1/queue?client=acme&pipeline=invoices&before=$DEEP_BEFORE"
  "HTML page /queue, pipeline + dead|/queue?client=acme&pipeline=invoices&state=dead"
  "dashboard API|/api/v1/pipelines"
  "/metrics|/metrics"
)
AUTH="Authorization: Bearer $SECRET"

# Each query once, to check the answer and warm the cache.
for query in "${QUERIES[@]}"; do
  path=${query#*|}
  status=$(curl -s -o "$WORK/answer" -w '%{http_code}' -H "$AUTH" "$BASE$path")
  [ "$status" = 200 ] || { echo "$path: HTTP $status"; cat "$WORK/answer"; exit 1; }
done

printf '\n%-36s %4s %6s %8s %8s %8s %8s %8s\n' query c n rows p50_ms p95_ms p99_ms max_ms
for query in "${QUERIES[@]}"; do
  name=${query%%|*}
  path=${query#*|}
  rows=$(curl -s -H "$AUTH" "$BASE$path" | grep -o '"external_id"' | wc -l || true)
  case $path in /api/v1/queue*) ;; *) rows=- ;; esac
  for c in $CONCURRENCY; do
    out=$(ab -q -t "$MAX_SECONDS" -n "$REQUESTS" -c "$c" -H "$AUTH" "$BASE$path" 2>&1)
    if grep -q 'Non-2xx responses' <<< "$out"; then
      echo "$name: non-2xx answers"; echo "$out"; exit 1
    fi
    echo "$out" | awk -v name="$name" -v c="$c" -v rows="$rows" '
      /^Complete requests:/ { n = $3 }
      /^ +50%/ { p50 = $2 } /^ +95%/ { p95 = $2 } /^ +99%/ { p99 = $2 } /^ +100%/ { max = $2 }
      END { printf "%-36s %4d %6d %8s %8d %8d %8d %8d\n", name, c, n, rows, p50, p95, p99, max }'
  done
done

peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
echo
echo "ferry peak RSS: $((peak_kb / 1024)) MB (VmHWM, during the whole run)"
kill -TERM "$PID"; wait "$PID" || true; PID=
