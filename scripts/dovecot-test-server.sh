#!/usr/bin/env bash
# Starts a Dovecot IMAP server for the tests, without touching /etc: a standalone configuration
# in $FERRY_TEST_IMAP_DIR (default /tmp/ferry-dovecot), plain IMAP with STARTTLS on
# 127.0.0.1:1143 and IMAPS on 127.0.0.1:1993, the machine's snakeoil certificate. Each test
# makes its own user: a file $FERRY_TEST_IMAP_DIR/passwd/USER holding `USER:{PLAIN}PASSWORD`,
# read at each login, so tests run in parallel without a restart. XOAUTH2 logins are checked
# by token introspection at http://127.0.0.1:$FERRY_TEST_IMAP_OAUTH_PORT/introspect (default
# 18931), which the XOAUTH2 test serves while it runs.
# Idempotent: a running server only re-reads a changed configuration. Installs dovecot-imapd
# (with its oauth2 support) when missing.
set -euo pipefail
D="${FERRY_TEST_IMAP_DIR:-/tmp/ferry-dovecot}"
PORT="${FERRY_TEST_IMAP_PORT:-1143}"
TLS_PORT="${FERRY_TEST_IMAPS_PORT:-1993}"
OAUTH_PORT="${FERRY_TEST_IMAP_OAUTH_PORT:-18931}"
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
cat > "$D/oauth2.conf.ext" <<CONF
introspection_mode = post
introspection_url = http://127.0.0.1:$OAUTH_PORT/introspect
username_attribute = username
active_attribute = active
active_value = true
CONF
cat > "$D/dovecot.conf.new" <<CONF
protocols = imap
listen = 127.0.0.1
base_dir = $D/run
state_dir = $D/run/state
log_path = $D/dovecot.log
ssl = yes
ssl_cert = </etc/ssl/certs/ssl-cert-snakeoil.pem
ssl_key = </etc/ssl/private/ssl-cert-snakeoil.key
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
mail_location = maildir:$D/mail/%u
mail_max_userip_connections = 400
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u $D/passwd/%u
}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $D/oauth2.conf.ext
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
chmod a+rx "$D"
chmod -R a+rwX "$D/mail" "$D/passwd"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  if ! cmp -s "$D/dovecot.conf.new" "$D/dovecot.conf"; then
    mv "$D/dovecot.conf.new" "$D/dovecot.conf"
    dovecot -c "$D/dovecot.conf" reload
  fi
  exit 0
fi
mv "$D/dovecot.conf.new" "$D/dovecot.conf"
# Its output goes to the log, so that it does not hold the caller's pipe open.
dovecot -c "$D/dovecot.conf" </dev/null >>"$D/startup.log" 2>&1
for _ in $(seq 50); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then exit 0; fi
  sleep 0.1
done
echo "dovecot did not start; see $D/dovecot.log" >&2
tail -20 "$D/dovecot.log" >&2 || true
exit 1
