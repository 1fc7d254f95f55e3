#!/usr/bin/env bash
# bench/processors.sh — how fast the processors and formats are, on one core (release build).
#
# 1. remap: a VRL program that renames and converts a few fields of 500-byte JSON passengers,
#    run on one thread; passengers per second (issue 5's target: 200,000/s per core).
# 2. remap over record batches: rows of 7 columns per second on one thread (issue 13: 300,000);
#    bench/records.sh times the same example as a whole process, beside MariaDB → Parquet.
# 3. formats: decode and encode throughput of every codec, in MB/s, on generated records.
# Usage: bench/processors.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
cargo build --release -q -p ferry-formats --example format_throughput
if [ -f crates/ferry-connectors/examples/remap_throughput.rs ]; then
  cargo build --release -q -p ferry-connectors --example remap_throughput
  echo
  echo "== remap (one thread) =="
  target/release/examples/remap_throughput
  cargo build --release -q -p ferry-connectors --example records_remap
  echo
  echo "== remap over record batches (one thread) =="
  target/release/examples/records_remap
else
  echo "remap: not built yet (the VRL processors are still to come; see README, Status)"
fi
echo
echo "== formats (one thread) =="
target/release/examples/format_throughput
