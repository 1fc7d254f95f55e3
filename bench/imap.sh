#!/usr/bin/env bash
# bench/imap.sh — e-mail pulled from a local Dovecot and seated in the queue.
#
# Issue 14 target: at least 200 messages/s pulled and seated, 20 KB messages. N messages (a text
# part and a base64 attachment, SIZE bytes in all) are appended to a fresh user's INBOX of the
# test Dovecot (scripts/dovecot-test-server.sh), then a release `ferry run` with an `imap`
# puller (`after_seat: { move_to: Archive }`, so a message leaves INBOX only once seated) and
# the `blackhole` pusher drains it. Timed as a user sees it: from starting ferry to INBOX empty
# (polled every 100 ms over IMAP). Side by side, the same messages fetched by one Python
# imaplib client (`UID FETCH 1:* BODY.PEEK[]`, nothing stored): the rate this Dovecot serves.
# Release build. Usage: bench/imap.sh
# Environment: N (5000), SIZE (20000), BATCH (500, the pipeline's batch_size), PORT (5079),
#   FERRY_BIN=path runs that binary instead of a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-5000}
SIZE=${SIZE:-20000}
BATCH=${BATCH:-500}
PORT=${PORT:-5079}
IMAP_DIR=${FERRY_TEST_IMAP_DIR:-/tmp/ferry-dovecot}
IMAP_PORT=${FERRY_TEST_IMAP_PORT:-1143}

scripts/dovecot-test-server.sh
if [ -n "${FERRY_BIN:-}" ]; then
  BIN=$(realpath "$FERRY_BIN")
else
  cargo build --release -q -p ferry
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/ferry
fi
WORK=$(mktemp -d /tmp/ferry-imap-bench.XXXXXX)
trap '[ -n "${PID:-}" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

USER_NAME="bench$(date +%s%N)@example.com"
PASSWORD="bench-$RANDOM$RANDOM"
echo "$USER_NAME:{PLAIN}$PASSWORD" > "$IMAP_DIR/passwd/$USER_NAME"

export USER_NAME PASSWORD N SIZE IMAP_PORT
python3 - <<'PY'
import base64, imaplib, os, time
n, size = int(os.environ["N"]), int(os.environ["SIZE"])
m = imaplib.IMAP4("127.0.0.1", int(os.environ["IMAP_PORT"]))
m.login(os.environ["USER_NAME"], os.environ["PASSWORD"])
started = time.time()
for i in range(n):
    payload = base64.encodebytes(os.urandom(max(size - 1200, 100) * 3 // 4)).decode()
    msg = (f"From: partner{i % 7}@partner.example\r\nTo: orders@example.com\r\n"
           f"Subject: Order {i}\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n"
           f"Message-ID: <bench-{i}-{started}@partner.example>\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           f"Content-Type: text/plain\r\n\r\nOrder {i} attached.\r\n--b\r\n"
           f"Content-Type: application/octet-stream; name=order-{i}.bin\r\n"
           f"Content-Disposition: attachment; filename=order-{i}.bin\r\n"
           f"Content-Transfer-Encoding: base64\r\n\r\n{payload}--b--\r\n")
    m.append("INBOX", None, None, msg.replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode())
typ, data = m.select("INBOX")
print(f"appended {data[0].decode()} messages of ~{size} bytes in {time.time() - started:.1f} s")
# The same messages fetched by one client: what the server gives.
started = time.time()
typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
seconds = time.time() - started
total = sum(len(part[1]) for part in data if isinstance(part, tuple))
print(f"imaplib UID FETCH of all: {seconds:.2f} s = {n / seconds:,.0f} messages/s "
      f"({total / seconds / 1e6:.1f} MB/s)")
m.logout()
PY

mkdir -p "$WORK/clients/acme/pipelines"
cat > "$WORK/ferry.yaml" <<YAML
system_alias: ferry BENCH
store: sqlite://data/ferry.db
web:
  listen: 127.0.0.1:$PORT
YAML
cat > "$WORK/connections.yaml" <<YAML
mailbox:
  type: imap
  host: 127.0.0.1
  port: $IMAP_PORT
  security: none
  user: $USER_NAME
  password: $PASSWORD
  clients: [acme]
YAML
echo "queue_life_span: 1d" > "$WORK/clients/acme/client.yaml"
cat > "$WORK/clients/acme/pipelines/mail.yaml" <<YAML
description: bench/imap.sh
schedule: continuous
batch_size: $BATCH
pullers:
  - type: imap
    connection: mailbox
    after_seat: { move_to: Archive }
    idle: false
pushers:
  - type: blackhole
YAML
"$BIN" validate "$WORK" > /dev/null

START=$(date +%s.%N)
"$BIN" run "$WORK" > "$WORK/ferry.log" 2>&1 &
PID=$!
python3 - <<'PY'
import imaplib, os, time
m = imaplib.IMAP4("127.0.0.1", int(os.environ["IMAP_PORT"]))
m.login(os.environ["USER_NAME"], os.environ["PASSWORD"])
deadline = time.time() + 600
while time.time() < deadline:
    typ, data = m.status("INBOX", "(MESSAGES)")
    if b"(MESSAGES 0)" in data[0]:
        break
    time.sleep(0.1)
else:
    raise SystemExit("INBOX not drained within 10 minutes")
typ, data = m.status("Archive", "(MESSAGES)")
print("Archive:", data[0].decode())
PY
END=$(date +%s.%N)
RSS_KB=$(awk '/VmHWM/ { print $2 }' "/proc/$PID/status")
kill -TERM "$PID"; wait "$PID" || true; PID=
SECONDS_TAKEN=$(echo "$END - $START" | bc)
echo "ferry: $N messages pulled, seated and archived in ${SECONDS_TAKEN} s = $(echo "$N / $SECONDS_TAKEN" | bc) messages/s (start to INBOX empty); peak RSS $(( RSS_KB / 1024 )) MB"
echo "target: at least 200 messages/s"
rm -f "$IMAP_DIR/passwd/$USER_NAME"
