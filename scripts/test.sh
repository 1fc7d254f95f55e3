#!/usr/bin/env bash
# The whole test suite: formatting, lints, every crate's tests (unit, store model, end to end,
# crash). The same command runs in CI (.ci/run).
#
# The store is embedded SQLite; the ELT connectors' tests load into the real PostgreSQL and
# read the real MariaDB of the machine, started here when they are stopped (see
# ../shared/SERVICES.md; FERRY_TEST_POSTGRES and FERRY_TEST_MYSQL point the tests elsewhere).
# The broker connectors' tests use the machine's NATS, RabbitMQ, Mosquitto and Redis (started
# here when stopped) and a Kafka-protocol broker (tansu, scripts/kafka-test-server.sh).
# The mail code sends to a real SMTP server (FERRY_TEST_SMTP, FERRY_TEST_SMTP_DIR) and reads a
# Dovecot of its own (FERRY_TEST_IMAP_*), both installed and started here.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build needs: cmake and the curl headers for librdkafka (the `kafka`
# connectors).
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
apt_install() {
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
echo "== packages"
command -v cmake >/dev/null || apt_install cmake
# librdkafka includes curl.h even when built without curl (its config.h defines the flag as 0).
[ -e /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -e /usr/include/curl/curl.h ] || apt_install libcurl4-openssl-dev

echo "== services"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! mysqladmin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 30); do mysqladmin -h 127.0.0.1 -u root ping >/dev/null 2>&1 && break; sleep 1; done
fi

# The message brokers of the machine (../shared/SERVICES.md), for the broker connectors.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 60); do port_open "$1" && return 0; sleep 0.5; done; return 1; }
if ! port_open 6379; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379
fi
if ! port_open 5672; then
  rabbitmq-server -detached
  wait_port 5672
fi
if ! port_open 1883; then
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
  wait_port 1883
fi
if ! port_open 4222; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222
fi
# A Kafka-protocol broker (tansu), built once into a cache outside the repository.
scripts/kafka-test-server.sh

# A real SMTP server (aiosmtpd, scripts/smtp-test-server.py) for the `smtp` connector and the
# e-mail notifications; its venv is cached outside the repository.
smtp="${FERRY_TEST_SMTP:-127.0.0.1:2525}"
if ! (exec 3<>"/dev/tcp/${smtp%:*}/${smtp##*:}") 2>/dev/null; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/ferry-test/venv"
  if ! "$venv/bin/python" -c "import aiosmtpd" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q aiosmtpd
  fi
  mkdir -p "${FERRY_TEST_SMTP_DIR:-/tmp/ferry-smtp}"
  setsid nohup "$venv/bin/python" scripts/smtp-test-server.py \
    >"${FERRY_TEST_SMTP_DIR:-/tmp/ferry-smtp}.log" 2>&1 </dev/null &
  for _ in $(seq 30); do (exec 3<>"/dev/tcp/${smtp%:*}/${smtp##*:}") 2>/dev/null && break; sleep 1; done
fi

# The IMAP tests' Dovecot (installed on first use; FERRY_TEST_IMAP_* point elsewhere).
scripts/dovecot-test-server.sh

echo "== format"
cargo fmt --all -- --check
echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== browser"
# The console test (crates/ferry/tests/browser.rs) drives real headless Chromium.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt_install chromium chromium-driver
fi
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked
fi
