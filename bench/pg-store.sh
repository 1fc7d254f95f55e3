#!/usr/bin/env bash
# bench/pg-store.sh — ferry's durable queue on a PostgreSQL store, 1, 2 and 3 nodes, beside a
# plain SKIP LOCKED queue written in SQL alone (the limit), in one run on the same server.
#
# ferry: a `generate` puller (1 KB JSON bodies) → queue → `blackhole` pusher, one project with
# its store in a fresh schema; NODES processes of `ferry run` on it; timed from the start of the
# first process until every passenger is complete (polled every 0.2 s), peak RSS per node.
# The limit: pgbench clients running, per transaction, the same three steps on a plain table —
# insert 1,000 rows of 1 KB (seat), take 1,000 with FOR UPDATE SKIP LOCKED (lease), mark them
# done (finish) — for DURATION seconds; rows per second = transactions/s × 1,000.
#
# Release build. Usage: bench/pg-store.sh [PASSENGERS]   (default 300000)
# Environment: NODES ("1 2 3"), WORKERS (4), DURATION (20), FERRY_TEST_POSTGRES (the server,
#   default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-300000}
NODES=${NODES:-1 2 3}
WORKERS=${WORKERS:-4}
DURATION=${DURATION:-20}
PG=${FERRY_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}

cargo build --release -q -p ferry
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/ferry
WORK=$(mktemp -d /tmp/ferry-pg-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  psql "$PG" -qAt -c "DROP SCHEMA IF EXISTS bench_limit CASCADE" >/dev/null 2>&1 || true
  for n in $NODES; do
    psql "$PG" -qAt -c "DROP SCHEMA IF EXISTS bench_nodes_$n CASCADE" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "PostgreSQL store benchmark: $N passengers of 1 KB, generate → queue → blackhole, $WORKERS workers per node"
echo "server: $(psql "$PG" -qAt -c 'SHOW server_version'), same machine: $(nproc) cores, $(uname -sr)"

echo
echo "== the limit: a plain SKIP LOCKED queue in SQL (pgbench, batches of 1,000)"
psql "$PG" -qAt -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
DROP SCHEMA IF EXISTS bench_limit CASCADE;
CREATE SCHEMA bench_limit;
CREATE TABLE bench_limit.q (id bigserial PRIMARY KEY, state smallint NOT NULL, body text NOT NULL);
CREATE INDEX q_open ON bench_limit.q (id) WHERE state = 0;
SQL
cat > "$WORK/cycle.sql" <<'SQL'
BEGIN;
INSERT INTO bench_limit.q (state, body) SELECT 0, repeat('x', 1024) FROM generate_series(1, 1000);
COMMIT;
BEGIN;
CREATE TEMP TABLE IF NOT EXISTS leased (id bigint) ON COMMIT DELETE ROWS;
INSERT INTO leased SELECT id FROM bench_limit.q WHERE state = 0 ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED;
UPDATE bench_limit.q SET state = 1 WHERE id IN (SELECT id FROM leased);
COMMIT;
UPDATE bench_limit.q SET state = 2 WHERE id IN (SELECT id FROM bench_limit.q WHERE state = 1 ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED);
SQL
for clients in 1 2 3; do
  tps=$(pgbench "$PG" -n -f "$WORK/cycle.sql" -c "$clients" -j "$clients" -T "$DURATION" 2>/dev/null \
    | awk '/^tps/ {print $3}')
  awk -v c="$clients" -v t="$tps" 'BEGIN { printf "  %d client(s): %.0f rows/s seated, leased and finished\n", c, t * 1000 }'
done

for nodes in $NODES; do
  echo
  echo "== ferry, $nodes node(s)"
  schema=bench_nodes_$nodes
  dir=$WORK/project-$nodes
  mkdir -p "$dir/clients/bench/pipelines"
  sep='?'; case "$PG" in *\?*) sep='&';; esac
  cat > "$dir/ferry.yaml" <<YAML
system_alias: ferry BENCH
store: "$PG${sep}schema=$schema"
workers: $WORKERS
web: { listen: "127.0.0.1:0" }
YAML
  echo "queue_life_span: 1d" > "$dir/clients/bench/client.yaml"
  cat > "$dir/clients/bench/pipelines/queue.yaml" <<YAML
schedule: continuous
pullers:
  - type: generate
    count: $N
    size: 1024
pushers:
  - type: blackhole
batch_size: 1000
queue_limit: 50000
YAML
  PIDS=()
  start=$(date +%s.%N)
  for i in $(seq "$nodes"); do
    RUST_LOG=warn "$BIN" run "$dir" 2> "$dir/node-$i.log" &
    PIDS+=($!)
  done
  done_count=0
  while [ "${done_count:-0}" -lt "$N" ]; do
    sleep 0.2
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "a node exited early:"; cat "$dir"/node-*.log; exit 1; }
    done
    done_count=$(psql "$PG" -qAt -c "SELECT count(*) FROM $schema.queue WHERE state = 'complete'" 2>/dev/null || echo 0)
  done
  end=$(date +%s.%N)
  peaks=""
  for pid in "${PIDS[@]}"; do
    peaks="$peaks $(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$pid/status") MB"
  done
  for pid in "${PIDS[@]}"; do kill -TERM "$pid"; done
  for pid in "${PIDS[@]}"; do wait "$pid" || true; done
  PIDS=()
  awk -v n="$N" -v s="$start" -v e="$end" -v p="$peaks" -v k="$nodes" 'BEGIN {
    printf "  %d passengers in %.1f s: %.0f passengers/s (%d node(s)); peak RSS per node:%s\n", n, e - s, n / (e - s), k, p
  }'
done
