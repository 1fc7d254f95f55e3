#!/usr/bin/env bash
# The whole test suite: formatting, lints, every crate's tests (unit, store model, end to end,
# crash). The same command runs in CI (.ci/run).
#
# Tests of this version need no external service: the store is embedded SQLite. Suites that
# need PostgreSQL, MariaDB, brokers or Dovecot start them here (see ../shared/SERVICES.md).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format"
cargo fmt --all -- --check
echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== browser"
# The console test (crates/ferry/tests/browser.rs) drives real headless Chromium.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked
fi
