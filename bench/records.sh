#!/usr/bin/env bash
# bench/records.sh — record batches through the processors (release build, whole processes).
#
# 1. remap: `remap` over record batches of 10,000 rows of 7 columns (id, name, email, amount,
#    created, active, note), a program that renames and converts three of them, one thread
#    (crates/ferry-connectors/examples/records_remap.rs). The rate is ROWS over the process's
#    wall seconds under GNU time, making the batches included. Issue 13: at least 300,000 rows/s.
# 2. parquet: the MariaDB table test.elt_source (ROWS rows, made by bench/elt.sh) to Parquet
#    files in a local directory, side by side in one run:
#      ferry  `sql` puller (chunks of 10,000 rows) → `encode` codec parquet → `file` pusher; one
#             Parquet file per chunk. `ferry run` runs in the background; its seconds run from the
#             start to the last file written (the newest file's modification time), then it gets
#             SIGTERM.
#      dlt    bench/records/dlt_parquet.py: sql_table with the ConnectorX backend (Arrow
#             batches of 250,000 rows) → filesystem destination, Parquet.
#      sling  `sling run --src-stream test.elt_source --tgt-object file://…/sling.parquet`.
#    Every output is counted with pyarrow (rows in all Parquet files); a wrong count is a failure.
#    Issue 13: ferry faster than dlt and sling.
# Peers come from bench/elt.sh's venv under CACHE (it installs them: this script runs it with
# no loads to make the data and the venv).
#
# Usage: bench/records.sh [ROWS]   (default 1000000)
# Environment: ROWS, MODES ("remap parquet"), PEERS ("ferry dlt sling"), CACHE
#   (~/.cache/ferry-bench), FERRY_BIN (a ferry binary instead of building one), TIMEOUT (s, 600).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${1:-${ROWS:-1000000}}
MODES=${MODES:-remap parquet}
PEERS=${PEERS:-ferry dlt sling}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-bench}
TIMEOUT=${TIMEOUT:-600}
MY_URL="mysql://root@127.0.0.1:3306/test"
VENV=$CACHE/venv
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/ferry-records.XXXXXX")
FERRY_PID=
cleanup() {
  [ -z "$FERRY_PID" ] || kill -KILL "$FERRY_PID" 2> /dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
has() { [[ " $2 " == *" $1 "* ]]; }

echo "ferry records benchmark: $ROWS rows; modes: $MODES; peers: $PEERS"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"

FERRY=${FERRY_BIN:-}
EXAMPLE=$PWD/target/release/examples/records_remap
if [ -z "$FERRY" ] || has remap "$MODES"; then
  echo "building (cargo build --release: ferry and the records_remap example)…"
  nice -n 10 cargo build --release -q -p ferry -p ferry-connectors --bins --examples
  FERRY=${FERRY:-$PWD/target/release/ferry}
fi
echo "$("$FERRY" --version)"

if has remap "$MODES"; then
  echo
  echo "== remap over record batches (one thread, whole process) =="
  /usr/bin/time -f '%e %M' -o "$WORK/time" "$EXAMPLE" "$ROWS"
  read -r secs kb < "$WORK/time"
  awk -v n="$ROWS" -v s="$secs" -v kb="$kb" 'BEGIN {
    printf "whole process: %d rows in %.2f s = %.0f rows/s, peak RSS %.0f MB; target 300,000 rows/s: %s\n",
      n, s, n / s, kb / 1024, (n / s >= 300000 ? "met" : "NOT met") }'
fi

has parquet "$MODES" || exit 0
echo
echo "== MariaDB table → Parquet files =="
# The source table and the peers' venv, from bench/elt.sh (no loads).
PEERS="$(has dlt "$PEERS" && echo dlt) $(has sling "$PEERS" && echo sling) " LOADS=" " \
  bench/elt.sh "$ROWS" | grep -E '^(data|versions|installing|loading|generating)' || true
SLING=$("$VENV/bin/python" -c 'import os, sling_linux_amd64 as s; print(os.path.join(os.path.dirname(s.__file__), "bin", "sling-linux-amd64"))' 2> /dev/null || true)
[ -z "$SLING" ] || echo "sling $("$SLING" --version 2>&1 | sed -n 's/^Version: //p')"

RESULTS=()
# result PEER SECONDS RSS_KB DIR LOG [STATUS]
result() {
  local counted rows files amount status=${6:-}
  counted=$("$VENV/bin/python" bench/records/count_parquet.py "$4" 2> /dev/null || echo "0 0 -")
  read -r rows files amount <<< "$counted"
  if [ -z "$status" ]; then
    if [ "$rows" = "$ROWS" ]; then status=ok; else status="failed: $rows of $ROWS rows ($(tail -1 "$5" | cut -c1-100))"; fi
  fi
  RESULTS+=("$1|$2|$3|$rows|$files|$amount|$status")
  printf '  %-6s %10s rows %8s s %6s MB %4s files amount %-16s %s\n' "$1" "$rows" "$2" \
    "$([[ $3 =~ ^[0-9]+$ ]] && echo $(($3 / 1024)) || echo -)" "$files" "$amount" "$status"
}
# timed LOG COMMAND…: runs it under GNU time; sets SECS and KB.
timed() {
  local log=$1
  shift
  timeout -k 10 "$TIMEOUT" /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" > "$log" 2>&1 || true
  read -r SECS KB < <(tail -1 "$WORK/time") || true
  [[ ${SECS:-} =~ ^[0-9.]+$ ]] || { SECS=-; KB=-; }
}

run_ferry() {
  local dir=$WORK/ferry out=$WORK/out-ferry log=$WORK/ferry.log chunks=$(((ROWS + 9999) / 10000))
  mkdir -p "$dir/clients/bench/pipelines" "$out"
  cat > "$dir/ferry.yaml" <<YAML
system_alias: bench
web: { listen: "127.0.0.1:0" }
workers: 2
clients: { bench: { paths: ["$out"] } }
YAML
  echo "erp: { type: mysql, url: \"$MY_URL\", clients: [bench] }" > "$dir/connections.yaml"
  : > "$dir/clients/bench/client.yaml"
  cat > "$dir/clients/bench/pipelines/export.yaml" <<YAML
schedule: every 1h   # runs at start
batch_size: 8
pullers:
  - type: sql
    connection: erp
    query: SELECT * FROM elt_source
processors:
  - type: encode
    codec: parquet
pushers:
  - type: file
    path: $out
    name_template: "chunk-{metadata.chunk}.parquet"
YAML
  "$FERRY" validate "$dir" > "$log" 2>&1 || { result ferry - - "$out" "$log" "failed: invalid project: $(head -1 "$log")"; return; }
  local start end n status=''
  start=$(date +%s.%N)
  RUST_LOG=warn /usr/bin/time -f '%e %M' -o "$WORK/time" "$FERRY" run "$dir" >> "$log" 2>&1 &
  FERRY_PID=$!
  while :; do
    sleep 0.2
    n=$(find "$out" -name '*.parquet' | wc -l)
    [ "$n" -lt "$chunks" ] || break
    if ! kill -0 "$FERRY_PID" 2> /dev/null; then status="failed: ferry exited"; break; fi
    if awk -v a="$(date +%s.%N)" -v b="$start" -v t="$TIMEOUT" 'BEGIN { exit !(a - b >= t) }'; then
      status="failed: timeout after $TIMEOUT s ($n of $chunks files)"
      break
    fi
  done
  end=$(find "$out" -name '*.parquet' -printf '%T@\n' | sort -n | tail -1)
  local pid
  pid=$(pgrep -P "$FERRY_PID" || true)
  [ -z "$pid" ] || kill -TERM "$pid" 2> /dev/null || true
  wait "$FERRY_PID" 2> /dev/null || true
  FERRY_PID=
  read -r _ KB < <(tail -1 "$WORK/time") || KB=-
  result ferry "$(awk -v s="$start" -v e="${end:-$start}" 'BEGIN { printf "%.2f", e - s }')" "$KB" "$out" "$log" "$status"
}

run_dlt() {
  local out=$WORK/out-dlt log=$WORK/dlt.log
  mkdir -p "$out"
  timed "$log" env RUNTIME__DLTHUB_TELEMETRY=false "$VENV/bin/python" bench/records/dlt_parquet.py \
    --mysql "$MY_URL" --out "$out" --workdir "$WORK/dlt"
  result dlt "$SECS" "$KB" "$out" "$log"
}

run_sling() {
  local out=$WORK/out-sling log=$WORK/sling.log
  mkdir -p "$out"
  [ -n "$SLING" ] || { result sling - - "$out" /dev/null "failed: not installed"; return; }
  timed "$log" env SLING_HOME_DIR="$WORK/sling" SLING_DISABLE_TELEMETRY=true ELT_MARIADB="$MY_URL" \
    "$SLING" run --src-conn ELT_MARIADB --src-stream test.elt_source --tgt-object "file://$out/sling.parquet"
  result sling "$SECS" "$KB" "$out" "$log"
}

for peer in $PEERS; do "run_$peer"; done
echo
echo "| peer | rows | seconds | rows/s | peak RSS MB | files | amount type | status |"
echo "|---|---|---|---|---|---|---|---|"
for r in "${RESULTS[@]}"; do
  IFS='|' read -r peer secs kb rows files amount status <<< "$r"
  awk -v p="$peer" -v s="$secs" -v kb="$kb" -v n="$rows" -v f="$files" -v a="$amount" -v st="$status" 'BEGIN {
    ok = (st == "ok" && s > 0)
    printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", p, n, (s ~ /^[0-9.]+$/ ? s : "-"),
      (ok ? sprintf("%.0f", n / s) : "-"), (kb ~ /^[0-9]+$/ ? sprintf("%.0f", kb / 1024) : "-"), f, a, st }'
done
