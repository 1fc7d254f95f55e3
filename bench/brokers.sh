#!/usr/bin/env bash
# bench/brokers.sh — broker → ferry (durable queue) → the same broker, another topic.
#
# Issue 15 targets, 1 KB messages: at least 0.5× of the broker's own client copying the same
# messages without any queue (the limit), and at least 30,000 messages/s for Kafka, NATS and
# Redis, 10,000/s for RabbitMQ and MQTT; peak RSS under 150 MB at 1,000,000 messages.
#
# For each broker: N messages of SIZE bytes are written to a fresh source; then, in one run,
# the broker's own client copies them to one target (`brokers … copy`: read a batch, write it,
# wait for the confirmations, acknowledge the batch; the example in
# crates/ferry-connectors/examples/brokers.rs), and a release `ferry run` copies them to
# another through its durable queue (SQLite, synchronous=FULL). Each is timed as a user sees it,
# from starting the process until a waiter started before it (`brokers … wait`) has seen N
# messages at the target.
# Usage: bench/brokers.sh
# Environment: N (1000000), SIZE (1000), BROKERS ("kafka nats redis rabbitmq mqtt"), BATCH (1000, the pipeline's
#   batch_size), PORT (5081), FERRY_BIN=path runs that binary instead of a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
SIZE=${SIZE:-1000}
BROKERS=${BROKERS:-kafka nats redis rabbitmq mqtt}
BATCH=${BATCH:-1000}
PORT=${PORT:-5081}
KAFKA=${FERRY_TEST_KAFKA:-127.0.0.1:9092}

scripts/kafka-test-server.sh
cargo build --release -q -p ferry-connectors --example brokers
CLIENT=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/brokers
if [ -n "${FERRY_BIN:-}" ]; then
  BIN=$(realpath "$FERRY_BIN")
else
  cargo build --release -q -p ferry
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/ferry
fi
WORK=$(mktemp -d /tmp/ferry-brokers-bench.XXXXXX)
chmod 777 "$WORK"
trap 'for p in ${PID:-} ${WAITER:-} ${MOSQUITTO:-}; do kill -9 "$p" 2>/dev/null; done; rm -rf "$WORK"' EXIT

# MQTT keeps messages only for sessions, and the machine's Mosquitto queues at most 1000 for a
# session that is away and hands out 20 at a time: a private one without those bounds.
MQTT_PORT=18830
cat > "$WORK/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 1000
CONF

# Seconds since $1 (from `date +%s.%N`).
since() { echo "$(date +%s.%N) - $1" | bc; }

# Starts the waiter on $1 (it counts what arrives there until N), returns when it is ready.
start_waiter() {
  "$CLIENT" "$broker" "$ADDRESS" wait "$1" "$N" > "$WORK/wait.out" 2>/dev/null &
  WAITER=$!
  until grep -q ready "$WORK/wait.out"; do sleep 0.05; done
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ { print $2 }') GB; $N messages of $SIZE bytes"
for broker in $BROKERS; do
  RUN=$(date +%s)
  SOURCE=bench-source-$RUN; LIMIT=bench-limit-$RUN; TARGET=bench-ferry-$RUN
  # Where ferry reads: the same source, except for a queue, which the limit's copy empties.
  FERRY_SOURCE=$SOURCE
  case $broker in
    kafka)
      ADDRESS=$KAFKA
      CONNECTION="brokers: \"$ADDRESS\""
      PULLER="topics: [$SOURCE]"
      PUSHER="topic: $TARGET" ;;
    nats)
      ADDRESS=nats://127.0.0.1:4222
      CONNECTION="url: $ADDRESS"
      PULLER="stream: $SOURCE"
      PUSHER="subject: $TARGET.ferry" ;;
    redis)
      ADDRESS=redis://127.0.0.1:6379
      CONNECTION="url: $ADDRESS"
      PULLER="stream: $SOURCE"
      PUSHER="stream: $TARGET" ;;
    rabbitmq)
      ADDRESS=amqp://guest:guest@127.0.0.1:5672/%2f
      CONNECTION="url: amqp://127.0.0.1:5672/%2f, user: guest, password: guest"
      FERRY_SOURCE=bench-source-ferry-$RUN
      PULLER="queue: $FERRY_SOURCE"
      PUSHER="routing_key: $TARGET" ;;
    mqtt)
      mosquitto -c "$WORK/mosquitto.conf" > /dev/null 2>&1 &
      MOSQUITTO=$!
      for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break; sleep 0.1; done
      ADDRESS=127.0.0.1:$MQTT_PORT
      CONNECTION="host: 127.0.0.1, port: $MQTT_PORT"
      PULLER="topics: [$SOURCE], client_id: bench-ferry"
      PUSHER="topic: $TARGET" ;;
    *) echo "unknown broker $broker" >&2; exit 1 ;;
  esac
  case $broker in
    # The sessions that will read the source, made before it is filled.
    mqtt) for id in brokers-copy bench-ferry; do "$CLIENT" mqtt "$ADDRESS" create "$SOURCE" "$id"; done ;;
    redis) ;;
    *) for topic in $(echo "$SOURCE $FERRY_SOURCE $LIMIT $TARGET" | tr ' ' '\n' | sort -u); do
         "$CLIENT" "$broker" "$ADDRESS" create "$topic"
       done ;;
  esac
  "$CLIENT" "$broker" "$ADDRESS" fill "$SOURCE" "$N" "$SIZE" 2>/dev/null
  if [ "$FERRY_SOURCE" != "$SOURCE" ]; then
    "$CLIENT" "$broker" "$ADDRESS" fill "$FERRY_SOURCE" "$N" "$SIZE" 2>/dev/null
  fi

  # The limit: the broker's own client copies, no queue.
  start_waiter "$LIMIT"
  START=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$WORK/limit.rss" "$CLIENT" "$broker" "$ADDRESS" copy "$SOURCE" "$LIMIT" "$N" 2>/dev/null
  wait "$WAITER"; WAITER=
  LIMIT_S=$(since "$START")

  # ferry: the same messages (read again by its own consumer, group or session) through its
  # durable queue.
  rm -rf "$WORK/project"; mkdir -p "$WORK/project/clients/acme/pipelines"
  cat > "$WORK/project/ferry.yaml" <<YAML
system_alias: ferry BENCH
store: sqlite://data/ferry.db
web:
  listen: 127.0.0.1:$PORT
YAML
  echo "broker: { type: $broker, clients: [acme], $CONNECTION }" > "$WORK/project/connections.yaml"
  echo "queue_life_span: 1d" > "$WORK/project/clients/acme/client.yaml"
  cat > "$WORK/project/clients/acme/pipelines/copy.yaml" <<YAML
description: bench/brokers.sh
schedule: continuous
batch_size: $BATCH
pullers:
  - { type: $broker, connection: broker, $PULLER }
pushers:
  - { type: $broker, connection: broker, $PUSHER }
YAML
  "$BIN" validate "$WORK/project" > /dev/null
  start_waiter "$TARGET"
  START=$(date +%s.%N)
  "$BIN" run "$WORK/project" > "$WORK/ferry-$broker.log" 2>&1 &
  PID=$!
  wait "$WAITER"; WAITER=
  FERRY_S=$(since "$START")
  RSS_KB=$(awk '/VmHWM/ { print $2 }' "/proc/$PID/status")
  kill -TERM "$PID"; wait "$PID" || true; PID=

  printf '%s: limit (own client, no queue) %.1f s = %.0f msg/s, peak RSS %d MB; ferry %.1f s = %.0f msg/s (%.2fx of the limit), peak RSS %d MB\n' \
    "$broker" "$LIMIT_S" "$(echo "$N / $LIMIT_S" | bc -l)" "$(( $(cat "$WORK/limit.rss") / 1024 ))" \
    "$FERRY_S" "$(echo "$N / $FERRY_S" | bc -l)" "$(echo "$LIMIT_S / $FERRY_S" | bc -l)" "$(( RSS_KB / 1024 ))"

  case $broker in
    mqtt) for id in brokers-copy bench-ferry; do "$CLIENT" mqtt "$ADDRESS" delete "$id" || true; done
          kill "$MOSQUITTO"; MOSQUITTO= ;;
    *) for topic in $(echo "$SOURCE $FERRY_SOURCE $LIMIT $TARGET" | tr ' ' '\n' | sort -u); do
         "$CLIENT" "$broker" "$ADDRESS" delete "$topic" || true
       done ;;
  esac
done
