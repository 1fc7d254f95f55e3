#!/usr/bin/env bash
# bench/queue.sh — generate → durable queue → pusher, with 1 KB passengers.
#
# Measures how many passengers per second ferry seats, leases, pushes and finishes with durable
# commits (SQLite WAL, synchronous=FULL) and the peak RSS of the process. Release build.
# Usage: bench/queue.sh [PASSENGERS]   (default 1000000)
# Environment: PUSHER: `blackhole` (default: the queue alone, nothing written anywhere) or
#   `file` (one file per passenger, one syncfs per pushed batch);
#   WORKERS (4, the default of ferry.yaml), BATCH (1000), LIMIT (queue_limit, 50000),
#   BENCH_DIR (/tmp), KEEP=1,
#   OUTBOX (PUSHER=file): where the pushed files go (default: in the bench directory, on the
#   same disk as the queue). OUTBOX=/dev/shm/x puts them on tmpfs, to measure the queue without
#   the disk's cost of creating one file per passenger (bench/baseline_files.py: that cost alone).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
WORKERS=${WORKERS:-4}
BATCH=${BATCH:-1000}
LIMIT=${LIMIT:-50000}
PUSHER=${PUSHER:-blackhole}

cargo build --release -q -p ferry
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/ferry
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/ferry-bench.XXXXXX")
OUTBOX=${OUTBOX:-$WORK/outbox}
trap '[ -n "${PID:-}" ] && kill -9 "$PID" 2>/dev/null; [ -z "${KEEP:-}" ] && rm -rf "$WORK" "$OUTBOX"' EXIT

mkdir -p "$WORK/clients/bench/pipelines"
cat > "$WORK/ferry.yaml" <<YAML
system_alias: ferry BENCH
store: sqlite://data/ferry.db
workers: $WORKERS
clients: { bench: { paths: ["$OUTBOX"] } }
YAML
echo "queue_life_span: 1d" > "$WORK/clients/bench/client.yaml"
cat > "$WORK/clients/bench/pipelines/queue.yaml" <<YAML
schedule: continuous
pullers:
  - type: generate
    count: $N
    size: 1024
pushers:
$(if [ "$PUSHER" = file ]; then
  printf '  - type: file\n    path: %s\n    name_template: "{external_id}.json"\n' "$OUTBOX"
else
  printf '  - type: %s\n' "$PUSHER"
fi)
batch_size: $BATCH
queue_limit: $LIMIT
YAML

complete() {
  "$BIN" status "$WORK" 2>/dev/null | awk '$1 == "bench/queue" { print $7 }'
}

echo "ferry queue benchmark: $N passengers of 1 KB, $PUSHER pusher, $WORKERS workers, batches of $BATCH, queue limit $LIMIT"
echo "queue: $WORK/data (disk, synchronous=FULL)"
[ "$PUSHER" = file ] && echo "outbox: $OUTBOX ($(stat -f -c %T "$(dirname "$OUTBOX")"))"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
start=$(date +%s.%N)
RUST_LOG=warn "$BIN" run "$WORK" 2> "$WORK/ferry.log" &
PID=$!
done_count=0
while [ "${done_count:-0}" -lt "$N" ]; do
  sleep 0.2
  kill -0 "$PID" 2>/dev/null || { echo "ferry exited early:"; cat "$WORK/ferry.log"; exit 1; }
  done_count=$(complete)
  printf '\r  %s / %s complete' "${done_count:-0}" "$N"
done
end=$(date +%s.%N)
echo
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
kill -TERM "$PID"; wait "$PID" || true; PID=

files=$N
[ "$PUSHER" = file ] && files=$(find "$OUTBOX" -maxdepth 1 -type f -name '*.json' | wc -l)
awk -v n="$N" -v s="$start" -v e="$end" -v kb="$peak_kb" -v f="$files" -v p="$PUSHER" 'BEGIN {
  t = e - s
  printf "passengers:        %d (delivered by the %s pusher: %d)\n", n, p, f
  printf "elapsed:           %.1f s (status polled every 0.2 s)\n", t
  printf "throughput:        %.0f passengers/s seated and pushed\n", n / t
  printf "peak RSS:          %.0f MB\n", kb / 1024
}'
[ "$files" -eq "$N" ] || { echo "MISMATCH: expected $N files"; exit 1; }
