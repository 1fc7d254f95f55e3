#!/usr/bin/env bash
# bench/mariadb.sh — CSV → MariaDB table: ferry's `mysql` pusher side by side with its peers, same
# data, one run (issue 13: ferry ≥ 0.8× of `LOAD DATA LOCAL INFILE` of the same file, faster than
# sling, peak RSS under 150 MB).
#
# The data is bench/elt.sh's: ROWS rows of bench/elt/gen.awk (id, name, email, amount
# numeric(12,2), created date, active true/false, note; ~120 bytes per row), generated once into
# CACHE/elt-data (shared with bench/elt.sh: same file, same stamp). Each peer loads into its own
# table test.bench_<peer> on the MariaDB of the machine, dropped before the load:
#   load-data  the `mariadb` client: `LOAD DATA LOCAL INFILE` of the CSV into a table created
#              before with the columns ferry creates (BIGINT, VARCHAR(100), DECIMAL(12,2),
#              DATE, BOOLEAN, LONGTEXT): the server's own loader, the limit for one stream.
#   sling      the sling-linux-amd64 binary from PyPI (the venv of bench/elt.sh under CACHE),
#              `sling run --src-stream file://… --tgt-object test.bench_sling --mode
#              full-refresh` (its default path for MySQL targets; it creates its own table).
#   ferry      release build; a throw-away project: `table` puller (columns declared with the
#              same types) → `mysql` pusher, mode append, workers: 2. There is no one-shot
#              command yet: `ferry run` runs in the background, the target is polled (every
#              FERRY_POLL s) until it holds ROWS rows, then ferry gets SIGTERM; its seconds run
#              from its start to the poll that saw ROWS rows (so up to FERRY_POLL s too many).
# Every load runs under GNU time (wall seconds, peak RSS), under `nice -n 10` like the rest of
# the run; the target is counted after each load, a wrong count is a failure, not a result.
#
# Usage: bench/mariadb.sh [ROWS]   (default 1000000)
# Environment: ROWS, PEERS ("load-data sling ferry"), CACHE (~/.cache/ferry-bench),
#   FERRY_BIN (a ferry binary instead of building one with cargo build --release),
#   FERRY_POLL (0.2), FERRY_WORKERS (2), TIMEOUT (seconds per load; 300 + ROWS/5000),
#   KEEP=1 keeps the work directory and the tables.
# Results: the table at the end, also as Markdown in $CACHE/mariadb-results-$ROWS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${1:-${ROWS:-1000000}}
PEERS=${PEERS:-load-data sling ferry}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-bench}
TIMEOUT=${TIMEOUT:-$((300 + ROWS / 5000))}
FERRY_POLL=${FERRY_POLL:-0.2}
FERRY_WORKERS=${FERRY_WORKERS:-2}
FERRY_BATCH=${FERRY_BATCH:-8}
MY_URL="mysql://root@127.0.0.1:3306/test"
MYSQL=(mariadb -h127.0.0.1 -P3306 -uroot test)
command -v mariadb > /dev/null || MYSQL=(mysql -h127.0.0.1 -P3306 -uroot test)
DDL="(id BIGINT, name VARCHAR(100), email VARCHAR(100), amount DECIMAL(12,2), created DATE,
  active BOOLEAN, note LONGTEXT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
if ! [[ $ROWS =~ ^[1-9][0-9]*$ ]]; then echo "ROWS must be a positive integer"; exit 1; fi

mkdir -p "$CACHE"
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/ferry-mariadb.XXXXXX")
FERRY_TIME_PID=
cleanup() {
  if [ -n "$FERRY_TIME_PID" ]; then
    for pid in $(pgrep -P "$FERRY_TIME_PID"); do kill -KILL "$pid" 2> /dev/null || true; done
  fi
  if [ -z "${KEEP:-}" ]; then
    rm -rf "$WORK"
    for peer in load_data sling ferry; do
      "${MYSQL[@]}" -e "DROP TABLE IF EXISTS bench_$peer" > /dev/null 2>&1 || true
    done
    "${MYSQL[@]}" -e "DELETE FROM ferry_loads WHERE target = 'test.bench_ferry'" > /dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
my() { "${MYSQL[@]}" -N -B "$@"; }
has_peer() { [[ " $PEERS " == *" $1 "* ]]; }

echo "ferry CSV → MariaDB benchmark: $ROWS rows; peers: $PEERS"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
my -e "SELECT 1" > /dev/null || { echo "MariaDB is not answering at $MY_URL"; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install -y time"; exit 1; }
AWK=$(command -v mawk || command -v awk)

declare -A BROKEN
# sling: the venv bench/elt.sh makes (installed here the same way when it is missing).
VENV=$CACHE/venv
REQ=bench/elt/requirements.txt
SLING=
if has_peer sling; then
  if ! cmp -s "$REQ" "$VENV/.elt-requirements" 2> /dev/null; then
    echo "installing bench/elt.sh's peers into $VENV (pip)…"
    if { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"; } > "$WORK/pip.log" 2>&1 &&
      "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >> "$WORK/pip.log" 2>&1; then
      cp "$REQ" "$VENV/.elt-requirements"
    else
      tail -5 "$WORK/pip.log"
      BROKEN[sling]="not installed: pip install failed"
    fi
  fi
  [ -n "${BROKEN[sling]:-}" ] ||
    SLING=$("$VENV/bin/python" -c 'import os, sling_linux_amd64 as s; print(os.path.join(os.path.dirname(s.__file__), "bin", "sling-linux-amd64"))')
fi
FERRY=${FERRY_BIN:-}
if has_peer ferry && [ -z "$FERRY" ]; then
  echo "building ferry (nice cargo build --release -p ferry)…"
  if nice -n 10 cargo build --release -q -p ferry > "$WORK/ferry-build.log" 2>&1; then
    FERRY=${CARGO_TARGET_DIR:-$PWD/target}/release/ferry
  else
    BROKEN[ferry]="build failed: $(grep -m1 '^error' "$WORK/ferry-build.log" || tail -1 "$WORK/ferry-build.log")"
  fi
fi

# --- the data (bench/elt.sh's) -------------------------------------------------------------------
STAMP="ferry-bench elt rows=$ROWS gen=$(sha256sum bench/elt/gen.awk | cut -c1-12)"
DATA=$CACHE/elt-data
CSV=$DATA/csv/elt_source.csv
if [ "$(cat "$DATA/stamp" 2> /dev/null)" != "$STAMP" ] || [ ! -f "$CSV" ]; then
  echo "generating $CSV ($ROWS rows)…"
  rm -rf "$DATA"
  mkdir -p "$DATA/csv"
  "$AWK" -v rows="$ROWS" -f bench/elt/gen.awk > "$DATA/elt_source.csv.tmp"
  mv "$DATA/elt_source.csv.tmp" "$CSV"
  echo "$STAMP" > "$DATA/stamp"
fi
echo "data: $CSV ($(du -m "$CSV" | cut -f1) MB)"
VERSIONS=("MariaDB $(my -e 'SELECT version()')" "$("${MYSQL[0]}" --version | cut -c1-60)")
[ -n "$SLING" ] && VERSIONS+=("sling $("$SLING" --version 2>&1 | sed -n 's/^Version: //p')")
[ -n "$FERRY" ] && VERSIONS+=("$("$FERRY" --version)")
echo "versions: ${VERSIONS[*]}"

# --- measuring ---------------------------------------------------------------------------------
RESULTS=()
count() { my -e "SELECT count(*) FROM $1" 2> /dev/null || echo 0; }
reset() {  # TABLE [precreate]
  my -e "DROP TABLE IF EXISTS $1" > /dev/null
  [ -z "${2:-}" ] || my -e "CREATE TABLE $1 $DDL" > /dev/null
}
measure() {  # LOG COMMAND…
  local log=$1
  shift
  RC=0
  timeout -k 10 "$TIMEOUT" nice -n 10 /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" > "$log" 2>&1 || RC=$?
  read -r SECONDS_ RSS_KB < <(tail -1 "$WORK/time" 2> /dev/null || echo "- -") || true
  [[ ${SECONDS_:-} =~ ^[0-9.]+$ ]] || { SECONDS_=-; RSS_KB=-; }
}
verdict() {  # PEER TABLE LOG [STATUS]
  local n status=${4:-}
  n=$(count "$2")
  if [ -n "$status" ]; then :
  elif [ "$RC" = 124 ] || [ "$RC" = 137 ]; then status="failed: timeout after ${TIMEOUT} s"
  elif [ "$RC" != 0 ]; then status="failed: exit $RC ($(tail -1 "$3" | cut -c1-80))"
  elif [ "$n" != "$ROWS" ]; then status="failed: $n of $ROWS rows"
  else status=ok; fi
  RESULTS+=("$1|$n|$SECONDS_|$RSS_KB|$status")
  printf '  %-10s %10s rows %8s s %8s MB  %s\n' "$1" "$n" "$SECONDS_" \
    "$([ "$RSS_KB" = - ] && echo - || echo $((RSS_KB / 1024)))" "$status"
}

run_load_data() {
  reset bench_load_data precreate
  measure "$WORK/load-data.log" "${MYSQL[@]}" --local-infile=1 -e "
    LOAD DATA LOCAL INFILE '$CSV' INTO TABLE bench_load_data CHARACTER SET utf8mb4
    FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\n' IGNORE 1 LINES
    (id, name, email, amount, created, @active, @note)
    SET active = (@active = 'true'), note = NULLIF(@note, '')"
  verdict load-data bench_load_data "$WORK/load-data.log"
}

run_sling() {
  reset bench_sling
  measure "$WORK/sling.log" env SLING_HOME_DIR="$WORK/sling" SLING_DISABLE_TELEMETRY=true \
    SLING_LOGGING_COLOR=false BENCH_MARIADB="$MY_URL" \
    "$SLING" run --src-stream "file://$CSV" --tgt-conn BENCH_MARIADB \
    --tgt-object test.bench_sling --mode full-refresh
  verdict sling bench_sling "$WORK/sling.log"
}

run_ferry() {
  local dir=$WORK/ferry log=$WORK/ferry.log start now n=0 status= ferry_pid
  reset bench_ferry
  my -e "DELETE FROM ferry_loads WHERE target = 'test.bench_ferry'" > /dev/null 2>&1 || true
  rm -rf "$dir"
  mkdir -p "$dir/clients/bench/pipelines"
  cat > "$dir/ferry.yaml" <<YAML
system_alias: bench
web: { listen: "127.0.0.1:0" }
workers: $FERRY_WORKERS
clients: { bench: { paths: ["$(dirname "$CSV")"] } }
YAML
  echo "erp: { type: mysql, url: \"$MY_URL\", clients: [bench] }" > "$dir/connections.yaml"
  : > "$dir/clients/bench/client.yaml"
  cat > "$dir/clients/bench/pipelines/csv.yaml" <<YAML
schedule: every 1h   # runs at start
batch_size: $FERRY_BATCH
pullers:
  - type: table
    path: $(dirname "$CSV")
    pattern: "*.csv"
    after_seat: keep
    columns:
      - { name: id, type: integer }
      - { name: name, type: "varchar(100)" }
      - { name: email, type: "varchar(100)" }
      - { name: amount, type: "numeric(12,2)" }
      - { name: created, type: date }
      - { name: active, type: boolean }
      - { name: note }
pushers:
  - type: mysql
    connection: erp
    table: test.bench_ferry
    mode: append
YAML
  "$FERRY" validate "$dir" > "$log" 2>&1 || { RC=1; SECONDS_=-; RSS_KB=-; verdict ferry bench_ferry "$log" "failed: invalid project: $(head -1 "$log")"; return; }
  start=$(date +%s.%N)
  RUST_LOG=${RUST_LOG:-warn} nice -n 10 /usr/bin/time -f '%e %M' -o "$WORK/time" "$FERRY" run "$dir" > "$log" 2>&1 &
  FERRY_TIME_PID=$!
  while :; do
    sleep "$FERRY_POLL"
    now=$(date +%s.%N)
    if ! kill -0 "$FERRY_TIME_PID" 2> /dev/null; then status="failed: ferry exited: $(tail -1 "$log" | cut -c1-80)"; break; fi
    n=$(my -e "SELECT count(*) FROM bench_ferry" 2> /dev/null || echo 0)
    [ "$n" -ge "$ROWS" ] && break
    if awk -v a="$now" -v b="$start" -v t="$TIMEOUT" 'BEGIN { exit !(a - b >= t) }'; then
      status="failed: timeout after $TIMEOUT s ($n rows)"
      break
    fi
  done
  SECONDS_=$(awk -v s="$start" -v e="$now" 'BEGIN { printf "%.2f", e - s }')
  ferry_pid=$(pgrep -P "$FERRY_TIME_PID" || true)
  if [ -n "$ferry_pid" ]; then
    kill -TERM "$ferry_pid" 2> /dev/null || true
    for _ in $(seq 60); do kill -0 "$ferry_pid" 2> /dev/null || break; sleep 0.5; done
    kill -KILL "$ferry_pid" 2> /dev/null || true
  fi
  wait "$FERRY_TIME_PID" 2> /dev/null || true
  FERRY_TIME_PID=
  read -r _ RSS_KB < <(tail -1 "$WORK/time" 2> /dev/null || echo "- -") || true
  [[ ${RSS_KB:-} =~ ^[0-9]+$ ]] || RSS_KB=-
  RC=0
  verdict ferry bench_ferry "$log" "$status"
}

echo
for peer in $PEERS; do
  if [ -n "${BROKEN[$peer]:-}" ]; then
    RESULTS+=("$peer|-|-|-|${BROKEN[$peer]}")
    printf '  %-10s %s\n' "$peer" "${BROKEN[$peer]}"
    continue
  fi
  case $peer in
    load-data) run_load_data ;;
    sling) run_sling ;;
    ferry) run_ferry ;;
    *) echo "unknown peer $peer (known: load-data sling ferry)" ;;
  esac
done

# --- results -----------------------------------------------------------------------------------
rate() { awk -v r="$ROWS" -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", r / s; else print "-" }'; }
OUT=$CACHE/mariadb-results-$ROWS.md
{
  echo "| peer | rows | seconds | rows/s | peak RSS MB | status |"
  echo "|---|---:|---:|---:|---:|---|"
  for result in "${RESULTS[@]}"; do
    IFS='|' read -r peer n secs rss status <<< "$result"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$peer" "$n" "$secs" \
      "$([ "$secs" = - ] && echo - || rate "$secs")" \
      "$([ "$rss" = - ] && echo - || echo $((rss / 1024)))" "$status"
  done
} > "$OUT"
echo
cat "$OUT"
secs_of() { for r in "${RESULTS[@]}"; do IFS='|' read -r p _ s _ st <<< "$r"; [ "$p" = "$1" ] && [ "$st" = ok ] && echo "$s"; done; true; }
ferry_s=$(secs_of ferry)
load_s=$(secs_of load-data)
sling_s=$(secs_of sling)
if [ -n "$ferry_s" ] && [ -n "$load_s" ]; then
  awk -v f="$ferry_s" -v l="$load_s" 'BEGIN { printf "ferry / LOAD DATA LOCAL INFILE: %.2f× (target ≥ 0.80×)\n", l / f }'
fi
if [ -n "$ferry_s" ] && [ -n "$sling_s" ]; then
  awk -v f="$ferry_s" -v s="$sling_s" 'BEGIN { printf "ferry / sling: %.2f× (target > 1×)\n", s / f }'
fi
echo "results: $OUT"
