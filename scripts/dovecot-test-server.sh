#!/usr/bin/env bash
# Starts a Dovecot IMAP server for the tests, without touching /etc: a standalone configuration
# in $FERRY_TEST_IMAP_DIR (default /tmp/ferry-dovecot), plain IMAP with STARTTLS on
# 127.0.0.1:1143 and IMAPS on 127.0.0.1:1993, the machine's snakeoil certificate. Each test
# makes its own user: a file $FERRY_TEST_IMAP_DIR/passwd/USER holding `USER:{PLAIN}PASSWORD`,
# read at each login, so tests run in parallel without a restart.
# Idempotent: does nothing when the server answers. Installs dovecot-imapd when missing.
set -euo pipefail
D="${FERRY_TEST_IMAP_DIR:-/tmp/ferry-dovecot}"
PORT="${FERRY_TEST_IMAP_PORT:-1143}"
TLS_PORT="${FERRY_TEST_IMAPS_PORT:-1993}"

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  exit 0
fi
if ! command -v dovecot >/dev/null; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends dovecot-imapd ssl-cert >/dev/null
fi
if [ ! -f /etc/ssl/private/ssl-cert-snakeoil.key ]; then
  make-ssl-cert generate-default-snakeoil
fi
mkdir -p "$D/run" "$D/mail" "$D/passwd"
cat > "$D/dovecot.conf" <<CONF
protocols = imap
listen = 127.0.0.1
base_dir = $D/run
state_dir = $D/run/state
log_path = $D/dovecot.log
ssl = yes
ssl_cert = </etc/ssl/certs/ssl-cert-snakeoil.pem
ssl_key = </etc/ssl/private/ssl-cert-snakeoil.key
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$D/mail/%u
mail_max_userip_connections = 400
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $D/passwd/%u
}
userdb {
  driver = static
  args = uid=dovenull gid=dovenull home=$D/mail/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $TLS_PORT
  }
  process_limit = 400
}
service imap {
  process_limit = 400
}
protocol imap {
  mail_plugins =
  imap_idle_notify_interval = 1 secs
}
first_valid_uid = 1
CONF
chown -R dovenull:dovenull "$D/mail"
chmod -R a+rwX "$D"
# Its output goes to the log, so that it does not hold the caller's pipe open.
dovecot -c "$D/dovecot.conf" </dev/null >>"$D/startup.log" 2>&1
for _ in $(seq 50); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then exit 0; fi
  sleep 0.1
done
echo "dovecot did not start; see $D/dovecot.log" >&2
tail -20 "$D/dovecot.log" >&2 || true
exit 1
