#!/usr/bin/env bash
# bench/elt.sh — ELT loads into PostgreSQL: ferry side by side with its peers, same data, one run.
#
# Issue targets: the CSV load reaches at least 80 % of `psql \copy` rows/s and beats every peer;
# MariaDB → PostgreSQL beats pgloader and sling; ferry's peak RSS stays under 200 MB whatever the
# input size (also run ROWS=10000000).
#
# Two loads, each into a fresh schema per peer (bench_psql, bench_pgloader, bench_sling,
# bench_dlt, bench_ferry; dropped and created again before every load, CHECKPOINT before each):
#   csv      a CSV with header, ROWS rows of ~120 bytes (bench/elt/gen.awk: id, name, email,
#            amount numeric(12,2), created date, active true/false, note; some notes quoted)
#            → <schema>.csv_load
#   mariadb  the same rows in MariaDB table test.elt_source (primary key on id) → <schema>.mariadb_load
# The data is generated once into CACHE and again only when ROWS (or gen.awk) changes.
#
# Peers (targets without indexes everywhere; where a peer creates its table, its own types):
#   psql      `\copy … FROM file (FORMAT csv)` into a table created before: the limit for one
#             stream. For MariaDB a reference line: `mysql --quick --batch -e 'SELECT …' | psql \copy`.
#   pgloader  Debian's pgloader, command files bench/elt/pgloader-*.load (defaults otherwise).
#   sling     the sling-linux-amd64 binary from PyPI, `sling run … --mode full-refresh` (its
#             default path: COPY into a _tmp table, then into the target).
#   dlt       bench/elt/dlt_load.py: Arrow batches (pyarrow CSV reader; sql_database source with
#             the ConnectorX backend streaming), loader file format parquet through ADBC (binary
#             COPY), batches and files of 250,000 rows, 2 load workers. DLT_FORMAT=csv and DLT_BACKEND=pyarrow are the alternatives.
#   ferry     release build; a throw-away project per load (table puller / sql puller → postgres
#             pusher, workers: 2). There is no one-shot command yet: `ferry run` runs in the
#             background, the target is polled until it holds ROWS rows (`ferry status` first:
#             when the pipeline's run is over and nothing is pending, in flight or failed, the
#             table is counted), then ferry gets SIGTERM. Its seconds run from the start to the
#             last committed statement on the target (a statement trigger logs clock_timestamp()
#             into bench_ferry.commits; without it, to the poll that saw ROWS rows).
# Every load runs under GNU time: wall seconds and peak RSS (for a pipe, its largest process).
# After each load the target is counted: a load with the wrong count is a failure, not a result.
# A failing peer is reported in the status column (its log's last lines below the table) and
# the run carries on. Missing peers are installed (apt-get: pgloader, time; pip, into a venv
# under CACHE: bench/elt/requirements.txt).
#
# Usage: bench/elt.sh [ROWS]   (default 1000000)
# Environment: ROWS (1000000), PEERS ("psql pgloader sling dlt ferry"), LOADS ("csv mariadb"),
#   CACHE (~/.cache/ferry-bench: data, venv, results), TIMEOUT (seconds per load; 300 + ROWS/5000),
#   DLT_FORMAT (parquet), DLT_BACKEND (connectorx), DLT_CHUNK (250000 rows per batch and file;
#   500000 was ~15 % faster at 1,000,000 rows but ~150 MB more RSS), FERRY_POLL (0.5 s), FERRY_WORKERS (2),
#   FERRY_BIN (a ferry binary to use instead of building one),
#   FERRY_PRECREATE (1: create bench_ferry.<load>_load before, like psql's; 0: leave it to ferry),
#   BENCH_DIR (/tmp), KEEP=1 keeps the work directory and the bench_* schemas.
# Results: the table at the end, also as Markdown in $CACHE/elt-results-$ROWS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${1:-${ROWS:-1000000}}
PEERS=${PEERS:-psql pgloader sling dlt ferry}
LOADS=${LOADS:-csv mariadb}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-bench}
TIMEOUT=${TIMEOUT:-$((300 + ROWS / 5000))}
DLT_FORMAT=${DLT_FORMAT:-parquet}
DLT_BACKEND=${DLT_BACKEND:-connectorx}
DLT_CHUNK=${DLT_CHUNK:-250000}
FERRY_POLL=${FERRY_POLL:-0.5}
FERRY_WORKERS=${FERRY_WORKERS:-2}
FERRY_PRECREATE=${FERRY_PRECREATE:-1}
PG_URL="postgres://root@127.0.0.1:5432/test?sslmode=disable"
MY_URL="mysql://root@127.0.0.1:3306/test"
MYSQL=(mysql -h127.0.0.1 -P3306 -uroot)
DDL="(id integer, name text, email text, amount numeric(12,2), created date, active boolean, note text)"
# ferry's tables as its pusher would create them (it never narrows a type on its own: a column
# that cannot hold every value of the batch's type holds the load for a person); MariaDB's
# BOOLEAN is tinyint(1), read as an integer.
FERRY_DDL_csv="(id bigint, name text, email text, amount numeric, created date, active boolean, note text)"
FERRY_DDL_mariadb="(id bigint, name text, email text, amount numeric, created date, active bigint, note text)"
# The MariaDB source, columns as the issue asks.
MY_DDL="(id INT NOT NULL PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(100) NOT NULL,
  amount DECIMAL(12,2) NOT NULL, created DATE NOT NULL, active BOOLEAN NOT NULL, note VARCHAR(200))
  ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
if ! [[ $ROWS =~ ^[1-9][0-9]*$ ]]; then echo "ROWS must be a positive integer"; exit 1; fi

mkdir -p "$CACHE"
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/ferry-elt.XXXXXX")
FERRY_TIME_PID=
cleanup() {
  if [ -n "$FERRY_TIME_PID" ]; then
    for pid in $(pgrep -P "$FERRY_TIME_PID"); do kill -KILL "$pid" 2> /dev/null || true; done
  fi
  if [ -z "${KEEP:-}" ]; then
    rm -rf "$WORK"
    for peer in psql pgloader sling dlt ferry; do
      psql "$PG_URL" -q -c "DROP SCHEMA IF EXISTS bench_$peer CASCADE" > /dev/null 2>&1 || true
    done
  fi
}
trap cleanup EXIT

pg() { PGOPTIONS='-c client_min_messages=warning' psql "$PG_URL" -X -v ON_ERROR_STOP=1 -qAt "$@"; }
join() { local IFS=';'; local s="$*"; echo "${s//;/; }"; }
has_peer() { [[ " $PEERS " == *" $1 "* ]]; }
has_load() { [[ " $LOADS " == *" $1 "* ]]; }
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
apt_install() {
  $SUDO apt-get install -y -q "$@" > "$WORK/apt.log" 2>&1 ||
    { $SUDO apt-get update -q > /dev/null 2>&1 && $SUDO apt-get install -y -q "$@" >> "$WORK/apt.log" 2>&1; }
}

echo "ferry ELT benchmark: $ROWS rows, loads: $LOADS; peers: $PEERS"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- services and tools ------------------------------------------------------------------------
pg -c "SELECT 1" > /dev/null || { echo "PostgreSQL is not answering at $PG_URL (see ../shared/SERVICES.md)"; exit 1; }
"${MYSQL[@]}" -e "SELECT 1" > /dev/null || { echo "MariaDB is not answering at $MY_URL (see ../shared/SERVICES.md)"; exit 1; }
if [ ! -x /usr/bin/time ]; then apt_install time || { echo "needs GNU time: apt-get install -y time"; exit 1; }; fi
AWK=$(command -v mawk || command -v awk)

declare -A BROKEN  # peer → why it cannot run
if has_peer pgloader && ! command -v pgloader > /dev/null; then
  echo "installing pgloader (apt-get)…"
  apt_install pgloader || { tail -3 "$WORK/apt.log"; BROKEN[pgloader]="not installed: apt-get install pgloader failed"; }
fi
VENV=$CACHE/venv
REQ=bench/elt/requirements.txt
if has_peer sling || has_peer dlt; then
  if ! cmp -s "$REQ" "$VENV/.elt-requirements" 2> /dev/null; then
    echo "installing sling and dlt into $VENV (pip)…"
    if { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"; } > "$WORK/pip.log" 2>&1 &&
      "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >> "$WORK/pip.log" 2>&1; then
      cp "$REQ" "$VENV/.elt-requirements"
    else
      tail -5 "$WORK/pip.log"
      BROKEN[sling]="not installed: pip install failed"
      BROKEN[dlt]="not installed: pip install failed"
    fi
  fi
fi
SLING=
if has_peer sling && [ -z "${BROKEN[sling]:-}" ]; then
  SLING=$("$VENV/bin/python" -c 'import os, sling_linux_amd64 as s; print(os.path.join(os.path.dirname(s.__file__), "bin", "sling-linux-amd64"))')
  export SLING_BINARY=$SLING
fi
FERRY=${FERRY_BIN:-}
if has_peer ferry && [ -z "$FERRY" ]; then
  echo "building ferry (cargo build --release -p ferry)…"
  if cargo build --release -q -p ferry > "$WORK/ferry-build.log" 2>&1; then
    FERRY=$PWD/target/release/ferry
  else
    BROKEN[ferry]="build failed: $(grep -m1 '^error' "$WORK/ferry-build.log" || tail -1 "$WORK/ferry-build.log")"
  fi
fi

# --- the data ----------------------------------------------------------------------------------
STAMP="ferry-bench elt rows=$ROWS gen=$(sha256sum bench/elt/gen.awk | cut -c1-12)"
DATA=$CACHE/elt-data
CSV=$DATA/csv/elt_source.csv   # alone in its directory: ferry's table puller reads *.csv there
if [ "$(cat "$DATA/stamp" 2> /dev/null)" != "$STAMP" ] || [ ! -f "$CSV" ]; then
  echo "generating $CSV ($ROWS rows)…"
  rm -rf "$DATA"
  mkdir -p "$DATA/csv"
  start=$(date +%s.%N)
  "$AWK" -v rows="$ROWS" -f bench/elt/gen.awk > "$DATA/elt_source.csv.tmp"
  mv "$DATA/elt_source.csv.tmp" "$CSV"
  echo "$STAMP" > "$DATA/stamp"
  awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "  %.1f s\n", e - s }'
fi
if [ "$("${MYSQL[@]}" -N -e "SELECT table_comment FROM information_schema.tables
      WHERE table_schema = 'test' AND table_name = 'elt_source'")" != "$STAMP" ]; then
  echo "loading MariaDB test.elt_source ($ROWS rows, LOAD DATA LOCAL INFILE)…"
  start=$(date +%s.%N)
  {
    "${MYSQL[@]}" --local-infile=1 test <<SQL
DROP TABLE IF EXISTS elt_source_new;
CREATE TABLE elt_source_new $MY_DDL COMMENT='$STAMP';
LOAD DATA LOCAL INFILE '$CSV' INTO TABLE elt_source_new CHARACTER SET utf8mb4
  FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' LINES TERMINATED BY '\n' IGNORE 1 LINES
  (id, name, email, amount, created, @active, note) SET active = (@active = 'true');
DROP TABLE IF EXISTS elt_source;
RENAME TABLE elt_source_new TO elt_source;
ANALYZE TABLE elt_source;
SQL
  } > /dev/null
  awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "  %.1f s\n", e - s }'
fi
echo "data: $CSV ($(du -m "$CSV" | cut -f1) MB, $(awk -v r="$ROWS" -v b="$(stat -c %s "$CSV")" 'BEGIN { printf "%.0f", b / r }') bytes per row); MariaDB test.elt_source"

# --- versions ----------------------------------------------------------------------------------
VERSIONS=("PostgreSQL $(pg -c 'SHOW server_version')" "MariaDB $("${MYSQL[@]}" -N -e 'SELECT version()')")
has_peer psql && VERSIONS+=("$(psql --version | sed 's/ (PostgreSQL)//')")
if has_peer pgloader && [ -z "${BROKEN[pgloader]:-}" ]; then
  VERSIONS+=("pgloader $(pgloader --version 2>&1 | sed -n '1s/.*version "\(.*\)"/\1/p')")
fi
[ -n "$SLING" ] && VERSIONS+=("sling $("$SLING" --version 2>&1 | sed -n 's/^Version: //p')")
if has_peer dlt && [ -z "${BROKEN[dlt]:-}" ]; then
  VERSIONS+=("$("$VENV/bin/python" -c 'import dlt, pyarrow, connectorx, adbc_driver_postgresql as a
print(f"dlt {dlt.__version__} (pyarrow {pyarrow.__version__}, connectorx {connectorx.__version__}, adbc-driver-postgresql {a.__version__})")')")
fi
[ -n "$FERRY" ] && VERSIONS+=("$("$FERRY" --version)")
echo "versions: $(join "${VERSIONS[@]}")"

# --- measuring ---------------------------------------------------------------------------------
RESULTS=()   # load, peer, rows in the target, seconds, peak RSS KB, status, log; joined by $S
S=$'\x1f'
# reset SCHEMA [TABLE [COLUMNS]]: the peer's schema, empty (with TABLE created like psql's, or
# with COLUMNS, when given).
reset() {
  pg -c "DROP SCHEMA IF EXISTS $1 CASCADE" -c "CREATE SCHEMA $1" > /dev/null
  [ -z "${2:-}" ] || pg -c "CREATE TABLE $1.$2 ${3:-$DDL}" > /dev/null
  pg -c "CHECKPOINT" > /dev/null
}
count() { pg -c "SELECT count(*) FROM $1" 2> /dev/null || echo 0; }
# measure LOG COMMAND…: runs COMMAND under GNU time (and the timeout); sets RC, SECONDS_, RSS_KB.
measure() {
  local log=$1
  shift
  RC=0
  timeout -k 10 "$TIMEOUT" /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" > "$log" 2>&1 || RC=$?
  read -r SECONDS_ RSS_KB < <(tail -1 "$WORK/time" 2> /dev/null || echo "- -") || true
  [[ ${SECONDS_:-} =~ ^[0-9.]+$ ]] || { SECONDS_=-; RSS_KB=-; }
}
# verdict LOAD PEER TABLE LOG: counts the target, records the result.
verdict() {
  local n status
  n=$(count "$3")
  if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
    status="failed: timeout after ${TIMEOUT} s"
  elif [ "$RC" != 0 ]; then
    status="failed: exit $RC"
  elif [ "$n" != "$ROWS" ]; then
    status="failed: $n of $ROWS rows"
  else
    status=ok
  fi
  RESULTS+=("$1$S$2$S$n$S$SECONDS_$S$RSS_KB$S$status$S$4")
  printf '  %-8s %-20s %10s rows %8s s %8s MB  %s\n' "$1" "$2" "$n" "$SECONDS_" \
    "$([ "$RSS_KB" = - ] && echo - || echo $((RSS_KB / 1024)))" "$status"
}
fail() {  # LOAD PEER STATUS [LOG]
  RESULTS+=("$1$S$2$S-$S-$S-$S$3$S${4:-}")
  printf '  %-8s %-20s %s\n' "$1" "$2" "$3"
}
fill() {  # TEMPLATE SCHEMA → a pgloader command file in WORK
  sed -e "s|@CSV@|$CSV|g" -e "s|@PG_URL@|$PG_URL|g" -e "s|@MY_URL@|$MY_URL|g" -e "s|@SCHEMA@|$2|g" \
    "bench/elt/$1" > "$WORK/$1"
  echo "$WORK/$1"
}

run_psql() {  # LOAD
  local s=bench_psql log=$WORK/psql-$1.log
  reset $s "$1_load"
  if [ "$1" = csv ]; then
    measure "$log" psql "$PG_URL" -X -v ON_ERROR_STOP=1 -q \
      -c "\\copy $s.csv_load FROM '$CSV' WITH (FORMAT csv, HEADER true)"
    verdict csv 'psql \copy' $s.csv_load "$log"
  else
    # mysql --batch writes tab-separated text with PostgreSQL's escapes; booleans come as 1/0.
    # shellcheck disable=SC2016  # expanded by the inner bash
    measure "$log" bash -o pipefail -c 'url=$1 table=$2; shift 2
      "$@" --batch --skip-column-names --quick \
        -e "SELECT id, name, email, amount, created, active, note FROM test.elt_source" |
        psql "$url" -X -v ON_ERROR_STOP=1 -q -c "\\copy $table FROM STDIN"' \
      _ "$PG_URL" $s.mariadb_load "${MYSQL[@]}"
    verdict mariadb 'mysql | psql \copy' $s.mariadb_load "$log"
  fi
}

run_pgloader() {
  local s=bench_pgloader log=$WORK/pgloader-$1.log
  if [ "$1" = csv ]; then
    reset $s csv_load
    measure "$log" pgloader --root-dir "$WORK/pgloader" "$(fill pgloader-csv.load $s)"
  else
    reset $s
    measure "$log" pgloader --root-dir "$WORK/pgloader" "$(fill pgloader-mariadb.load $s)"
  fi
  verdict "$1" pgloader "$s.$1_load" "$log"
}

run_sling() {
  local s=bench_sling log=$WORK/sling-$1.log src
  reset $s
  if [ "$1" = csv ]; then src=(--src-stream "file://$CSV"); else src=(--src-conn ELT_MARIADB --src-stream test.elt_source); fi
  measure "$log" env SLING_HOME_DIR="$WORK/sling" SLING_DISABLE_TELEMETRY=true SLING_LOGGING_COLOR=false \
    ELT_PG="${PG_URL/postgres:/postgresql:}" ELT_MARIADB="$MY_URL" \
    "$SLING" run "${src[@]}" --tgt-conn ELT_PG --tgt-object "$s.$1_load" --mode full-refresh
  verdict "$1" sling "$s.$1_load" "$log"
}

run_dlt() {
  local s=bench_dlt log=$WORK/dlt-$1.log src
  reset $s
  rm -rf "$WORK/dlt"
  if [ "$1" = csv ]; then src=(csv --csv "$CSV"); else src=(mariadb --mysql "$MY_URL" --backend "$DLT_BACKEND"); fi
  measure "$log" env RUNTIME__DLTHUB_TELEMETRY=false "$VENV/bin/python" bench/elt/dlt_load.py "${src[@]}" \
    --pg "$PG_URL" --dataset $s --table "$1_load" --format "$DLT_FORMAT" --chunk "$DLT_CHUNK" --workdir "$WORK/dlt"
  verdict "$1" dlt "$s.$1_load" "$log"
}

# ferry_counts DIR PIPELINE: "pending in_flight failed dead complete filtered run-status" from
# `ferry status` (empty when it fails).
ferry_counts() {
  "$FERRY" status "$1" 2> /dev/null | awk -v p="$2" '$1 == p {
    for (i = 2; i <= NF && $i !~ /^[0-9]+$/; i++) ;
    if (i + 5 > NF) exit
    run = "never"
    if ($(i + 6) != "never") run = $(i + 8)
    print $i, $(i + 1), $(i + 2), $(i + 3), $(i + 4), $(i + 5), run
  }' || true
}

run_ferry() {
  local load=$1 s=bench_ferry dir=$WORK/ferry-$1 log=$WORK/ferry-$1.log table=bench_ferry.$1_load
  rm -rf "$dir"
  mkdir -p "$dir/clients/bench/pipelines"
  cat > "$dir/ferry.yaml" <<YAML
system_alias: bench
web: { listen: "127.0.0.1:0" }
workers: $FERRY_WORKERS
clients: { bench: { paths: ["$(dirname "$CSV")"] } }
YAML
  cat > "$dir/connections.yaml" <<YAML
dwh: { type: postgres, url: "$PG_URL", clients: [bench] }
erp: { type: mysql, url: "$MY_URL", clients: [bench] }
YAML
  : > "$dir/clients/bench/client.yaml"
  if [ "$load" = csv ]; then
    cat > "$dir/clients/bench/pipelines/csv.yaml" <<YAML
schedule: every 1h   # runs at start; a manual pipeline never runs by itself
batch_size: 8
pullers:
  - type: table
    path: $(dirname "$CSV")
    pattern: "*.csv"
    after_seat: keep
    columns:
      - { name: id, type: integer }
      - { name: name }
      - { name: email }
      - { name: amount, type: numeric }
      - { name: created, type: date }
      - { name: active, type: boolean }
      - { name: note }
pushers:
  - type: postgres
    connection: dwh
    table: $table
    mode: append
YAML
  else
    cat > "$dir/clients/bench/pipelines/mariadb.yaml" <<YAML
schedule: every 1h   # runs at start
batch_size: 8
pullers:
  - type: sql
    connection: erp
    query: SELECT * FROM elt_source
pushers:
  - type: postgres
    connection: dwh
    table: $table
    mode: append
YAML
  fi
  if ! "$FERRY" validate "$dir" > "$log" 2>&1; then
    # "file:line:col: key: message; valid types are: …" → "key: message", the first of them.
    fail "$load" ferry "failed: invalid project: $(grep -m1 -v '^ *$' "$log" |
      sed -e 's/^[^ ]*:[0-9]*:[0-9]*: //' -e 's/; valid .*//' | cut -c1-90)$(
      n=$(grep -c '^[^ ]*:[0-9]*:[0-9]*: ' "$log"); [ "$n" -le 1 ] || echo " (+$((n - 1)) more)")" "$log"
    return
  fi
  # ferry remembers every chunk it loaded (ferry.loads, for exactly-once); the target is new.
  pg -c "DELETE FROM ferry.loads WHERE target LIKE '$s.%'" > /dev/null 2>&1 || true
  local precreated=
  if [ "$FERRY_PRECREATE" = 1 ]; then
    local columns="FERRY_DDL_$load"
    reset $s "$load"_load "${!columns}"
    # The time of the last committed statement on the target, for the elapsed time.
    pg > /dev/null <<SQL
CREATE TABLE $s.commits (at timestamptz NOT NULL);
CREATE FUNCTION $s.log_commit() RETURNS trigger LANGUAGE plpgsql AS
  \$\$ BEGIN INSERT INTO $s.commits VALUES (clock_timestamp()); RETURN NULL; END \$\$;
CREATE TRIGGER log_commit AFTER INSERT ON $table FOR EACH STATEMENT EXECUTE FUNCTION $s.log_commit();
SQL
    precreated=1
  else
    reset $s
  fi

  local start end now n=0 counts last_change sig old_sig='' candidates=0 last_count=0 status='' ferry_pid
  start=$(date +%s.%N)
  RUST_LOG=${RUST_LOG:-warn} /usr/bin/time -f '%e %M' -o "$WORK/time" "$FERRY" run "$dir" > "$log" 2>&1 &
  FERRY_TIME_PID=$!
  last_change=$start
  last_count=$start
  while :; do
    sleep "$FERRY_POLL"
    now=$(date +%s.%N)
    if ! kill -0 "$FERRY_TIME_PID" 2> /dev/null; then
      n=$(count "$table")
      wait "$FERRY_TIME_PID" || true
      status="failed: ferry exited ($(sed -n 's/^Command exited with non-zero status /status /p; s/^Command terminated by signal /signal /p' "$WORK/time" | head -1 || true)): $( (grep -m1 -i 'error' "$log" || tail -1 "$log") | cut -c1-100)"
      break
    fi
    counts=$(ferry_counts "$dir" "bench/$load")
    # Count the target when the run is over and nothing is open, and every 10 s anyway.
    if [[ $counts =~ ^0\ 0\ 0\ [0-9]+\ [0-9]+\ [0-9]+\ (succeeded|partial|failed)$ ]] ||
      awk -v a="$now" -v b="$last_count" 'BEGIN { exit !(a - b >= 10) }'; then
      n=$(count "$table")
      last_count=$now
      if [ "$n" -ge "$ROWS" ]; then
        end=$now
        [ "$n" = "$ROWS" ] || status="failed: $n of $ROWS rows"
        break
      fi
      if [[ $counts =~ ^0\ 0\ 0 ]] && [[ ! $counts =~ running$ ]]; then
        candidates=$((candidates + 1))
        if [ $candidates -ge 3 ]; then
          status="failed: $n of $ROWS rows; queue done (pending in_flight failed dead complete filtered run: $counts)"
          break
        fi
      fi
    fi
    sig="$counts $n"
    if [ "$sig" != "$old_sig" ]; then old_sig=$sig; last_change=$now; fi
    if awk -v a="$now" -v b="$start" -v t="$TIMEOUT" 'BEGIN { exit !(a - b >= t) }'; then
      status="failed: timeout after $TIMEOUT s ($n rows; queue: $counts)"
      break
    fi
    if awk -v a="$now" -v b="$last_change" 'BEGIN { exit !(a - b >= 120) }'; then
      status="failed: stalled 120 s ($n rows; queue: $counts)"
      break
    fi
  done
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
  if [ -z "$status" ]; then
    if [ -n "$precreated" ]; then
      local last
      last=$(pg -c "SELECT extract(epoch FROM max(at)) FROM $s.commits" || true)
      [ -z "$last" ] || end=$last
    fi
    SECONDS_=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
    RC=0
    verdict "$load" ferry "$table" "$log"
  else
    RESULTS+=("$load${S}ferry$S$n$S-$S$RSS_KB$S$status$S$log")
    printf '  %-8s %-20s %10s rows %8s s %8s MB  %s\n' "$load" ferry "$n" - \
      "$([ "$RSS_KB" = - ] && echo - || echo $((RSS_KB / 1024)))" "$status"
  fi
}

echo
echo "timeout per load: $TIMEOUT s"
for load in csv mariadb; do
  has_load $load || continue
  for peer in $PEERS; do
    label=$peer
    [ "$peer" = psql ] && { [ $load = csv ] && label='psql \copy' || label='mysql | psql \copy'; }
    case $peer in
      psql | pgloader | sling | dlt | ferry) ;;
      *) fail $load "$peer" "failed: unknown peer (known: psql pgloader sling dlt ferry)"; continue ;;
    esac
    if [ -n "${BROKEN[$peer]:-}" ]; then
      log=$WORK/ferry-build.log
      [ "$peer" = ferry ] || log=
      fail $load "$label" "${BROKEN[$peer]}" "$log"
      continue
    fi
    "run_$peer" $load || fail $load "$label" "failed: the script's step for $peer broke (exit $?)"
  done
done

# --- the table ---------------------------------------------------------------------------------
# The reference for "% of psql": psql \copy from the file for the CSV load; the mysql | psql pipe
# for the MariaDB load.
declare -A REF
for r in "${RESULTS[@]}"; do
  IFS=$S read -r load peer n sec rss status log <<< "$r"
  if [ "$status" = ok ] && [[ $peer == *psql* ]]; then REF[$load]=$(awk -v n="$n" -v s="$sec" 'BEGIN { print (s > 0 ? n / s : 0) }'); fi
done
MD=$CACHE/elt-results-$ROWS.md
{
  echo "bench/elt.sh, $ROWS rows ($(du -m "$CSV" | cut -f1) MB of CSV), $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -sr), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Versions: $(join "${VERSIONS[@]}")."
  echo
  echo "| load | peer | rows | seconds | rows/s | % of psql | peak RSS MB | status |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$MD"
echo
printf '%-8s %-20s %10s %9s %10s %10s %12s  %s\n' load peer rows seconds rows/s "% of psql" "peak RSS MB" status
for r in "${RESULTS[@]}"; do
  IFS=$S read -r load peer n sec rss status log <<< "$r"
  line=$(awk -v n="$n" -v s="$sec" -v kb="$rss" -v ok="$([ "$status" = ok ] && echo 1 || echo 0)" \
    -v ref="${REF[$load]:-}" 'function group(x,   s, out) { s = sprintf("%d", x); out = ""
      while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
      return s out }
    BEGIN {
      rate = (ok && s > 0) ? n / s : 0
      printf "%s|%s|%s|%s|%s", (n ~ /^[0-9]+$/ ? group(n) : "-"), (s ~ /^[0-9.]+$/ ? sprintf("%.2f", s) : "-"),
        (rate ? group(rate + 0.5) : "-"), (rate && ref > 0 ? sprintf("%.0f %%", 100 * rate / ref) : "-"),
        (kb ~ /^[0-9]+$/ ? sprintf("%.0f", kb / 1024) : "-")
    }')
  IFS='|' read -r n_ sec_ rate_ pct_ rss_ <<< "$line"
  printf '%-8s %-20s %10s %9s %10s %10s %12s  %s\n' "$load" "$peer" "$n_" "$sec_" "$rate_" "$pct_" "$rss_" "$status"
  echo "| $load | ${peer//|/\\|} | $n_ | $sec_ | $rate_ | $pct_ | $rss_ | ${status//|/\\|} |" >> "$MD"
done
{
  echo
  echo "Seconds: wall time of the process under GNU time (ferry: from start to the last committed"
  echo "statement on the target). % of psql: against \`psql \\copy\` from the file (CSV load) and"
  echo "against \`mysql --quick | psql \\copy\` (MariaDB load). Peak RSS: max resident set size (for the"
  echo "pipe, its largest process). dlt: Arrow batches of $DLT_CHUNK rows, loader file format $DLT_FORMAT,"
  echo "MariaDB through the $DLT_BACKEND backend."
} >> "$MD"

# The failures' logs.
for r in "${RESULTS[@]}"; do
  IFS=$S read -r load peer n sec rss status log <<< "$r"
  if [ "$status" != ok ] && [ -n "$log" ] && [ -s "$log" ]; then
    echo
    echo "== $load / $peer: $status — last lines of its log =="
    tail -n 8 "$log" | cut -c1-200
  fi
done

# The issue's targets, when ferry ran.
rate_of() {  # LOAD PEER → rows/s, or nothing when it failed
  for r in "${RESULTS[@]}"; do
    IFS=$S read -r load peer n sec rss status log <<< "$r"
    if [ "$load" = "$1" ] && [ "$peer" = "$2" ] && [ "$status" = ok ]; then awk -v n="$n" -v s="$sec" 'BEGIN { print n / s }'; fi
  done
}
if has_peer ferry; then
  echo
  echo "targets:"
  ferry_csv=$(rate_of csv ferry)
  ferry_my=$(rate_of mariadb ferry)
  check() {  # DESCRIPTION CONDITION (awk)
    printf '  %-62s %s\n' "$1" "$(awk "BEGIN { print ($2) ? \"met\" : \"NOT met\" }")"
  }
  if [ -n "$ferry_csv" ]; then
    psql_rate=$(rate_of csv 'psql \copy')
    [ -n "$psql_rate" ] && check "CSV: at least 80 % of psql \\copy rows/s" "$ferry_csv >= 0.8 * $psql_rate"
    for peer in pgloader sling dlt; do
      r=$(rate_of csv $peer)
      [ -n "$r" ] && check "CSV: beats $peer" "$ferry_csv > $r"
    done
  elif has_load csv; then
    echo "  CSV load: ferry did not load (see above)"
  fi
  if [ -n "$ferry_my" ]; then
    for peer in pgloader sling; do
      r=$(rate_of mariadb $peer)
      [ -n "$r" ] && check "MariaDB: beats $peer" "$ferry_my > $r"
    done
  elif has_load mariadb; then
    echo "  MariaDB load: ferry did not load (see above)"
  fi
  for r in "${RESULTS[@]}"; do
    IFS=$S read -r load peer n sec rss status log <<< "$r"
    [ "$peer" = ferry ] && [[ $rss =~ ^[0-9]+$ ]] && check "$load: ferry peak RSS under 200 MB ($((rss / 1024)) MB)" "$rss < 200 * 1024"
  done
fi
echo
echo "Markdown: $MD"
