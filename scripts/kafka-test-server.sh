#!/usr/bin/env bash
# Starts a Kafka-protocol broker for the tests: tansu (https://github.com/tansu-io/tansu, Apache
# 2.0), a Kafka-API broker in Rust, used only as an external test server and never linked. It is
# built once with `cargo install` into a cache outside the repository ($FERRY_TEST_CACHE, default
# ~/.cache/ferry-test; about 15 minutes on 2 cores the first time) and started on
# 127.0.0.1:9092 ($FERRY_TEST_KAFKA) with in-memory storage. Tests that restart a broker start a
# private one on a port of their own, its storage in a PostgreSQL schema (tansu's `postgres`
# engine), so it keeps what it holds across the restart.
# Idempotent: a broker already listening is left alone.
set -euo pipefail
CACHE="${FERRY_TEST_CACHE:-$HOME/.cache/ferry-test}"
ADDRESS="${FERRY_TEST_KAFKA:-127.0.0.1:9092}"
TANSU="$CACHE/tansu/bin/tansu"
VERSION=0.6.0
if ! "$TANSU" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "building tansu $VERSION into $CACHE (once)"
  cargo install tansu --version "$VERSION" --locked --features dynostore,postgres \
    --root "$CACHE/tansu" --target-dir "$CACHE/tansu-target" --quiet
fi
if (exec 3<>"/dev/tcp/${ADDRESS%:*}/${ADDRESS##*:}") 2>/dev/null; then
  exit 0
fi
mkdir -p "$CACHE/logs"
setsid nohup "$TANSU" broker \
  --storage-engine memory://tansu/ \
  --listener-url "tcp://$ADDRESS" \
  --advertised-listener-url "tcp://$ADDRESS" \
  >"$CACHE/logs/tansu.log" 2>&1 </dev/null &
for _ in $(seq 60); do
  (exec 3<>"/dev/tcp/${ADDRESS%:*}/${ADDRESS##*:}") 2>/dev/null && exit 0
  sleep 0.5
done
echo "tansu did not start; see $CACHE/logs/tansu.log" >&2
exit 1
