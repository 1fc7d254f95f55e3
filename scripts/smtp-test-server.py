#!/usr/bin/env python3
"""A real SMTP server for ferry's tests (aiosmtpd), started by scripts/test.sh.

Every message it accepts is written to a directory as `<time>-<uuid>.eml` (the message as
received), beside `<time>-<uuid>.json` (the envelope: `mail_from`, `rcpt_tos`, the
authenticated `user`, the `port` it came in on). The JSON file is written first and the .eml
renamed into place last, so a test that sees an .eml can read both. Tests find their messages by
a unique recipient or subject. Messages older than an hour are deleted now and then.

Recipients whose local part starts with `tempfail` are answered `451` (a temporary failure),
those starting with `reject` `550` (a permanent one). AUTH PLAIN and LOGIN accept the test user
`ferry` with the password `ferry-test-password` (also without TLS); any other credentials fail
with `535`. Authentication is optional.

Listeners (each `host:port`, from the environment):
  FERRY_TEST_SMTP       plain SMTP, STARTTLS offered            default 127.0.0.1:2525
  FERRY_TEST_SMTP_TLS   STARTTLS required before MAIL           default 127.0.0.1:2526
  FERRY_TEST_SMTPS      TLS from the first byte (SMTPS)         default 127.0.0.1:2527
  FERRY_TEST_SMTP_DIR   where messages are written              default /tmp/ferry-smtp
The TLS listeners use the machine's snakeoil certificate (`CN=localhost`,
/etc/ssl/certs/ssl-cert-snakeoil.pem); they are skipped, with a warning, when it is missing.

Usage: smtp-test-server.py   (runs in the foreground until SIGTERM or SIGINT)
"""

import json
import os
import signal
import ssl
import sys
import threading
import time
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER = b"ferry"
PASSWORD = b"ferry-test-password"
CERT = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
KEY = "/etc/ssl/private/ssl-cert-snakeoil.key"


def address(variable, default):
    host, _, port = os.environ.get(variable, default).rpartition(":")
    return host, int(port)


# Messages older than this are deleted (every 100 messages), so the directory tests scan stays
# small on a machine where the server runs for weeks.
KEEP_SECONDS = 3600


class Store:
    """Answers recipients as the test conventions say and writes each message to `directory`."""

    def __init__(self, directory, port):
        self.directory = directory
        self.port = port
        self.received = 0

    def prune(self):
        cutoff = time.time() - KEEP_SECONDS
        for entry in os.scandir(self.directory):
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("tempfail"):
            return "451 4.3.0 mailbox temporarily unavailable: " + address
        if local.startswith("reject"):
            return "550 5.1.1 no such user here: " + address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        name = "%d-%s" % (time.time_ns(), uuid.uuid4().hex)
        user = session.auth_data if session.authenticated else None
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "user": user,
            "port": self.port,
        }
        base = os.path.join(self.directory, name)
        with open(base + ".json", "w") as f:
            json.dump(meta, f)
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode()
        with open(base + ".tmp", "wb") as f:
            f.write(content)
        os.rename(base + ".tmp", base + ".eml")
        self.received += 1
        if self.received % 100 == 1:
            self.prune()
        return "250 Message accepted for delivery"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER
        and auth_data.password == PASSWORD
    )
    return AuthResult(success=ok, handled=False, auth_data=USER.decode() if ok else None)


def controller(variable, default, directory, **tls):
    host, port = address(variable, default)
    return Controller(
        Store(directory, port),
        hostname=host,
        port=port,
        server_hostname="localhost",
        authenticator=authenticate,
        auth_require_tls=False,
        auth_required=False,
        **tls,
    )


def main():
    directory = os.environ.get("FERRY_TEST_SMTP_DIR", "/tmp/ferry-smtp")
    os.makedirs(directory, exist_ok=True)
    context = None
    if os.path.exists(CERT) and os.access(KEY, os.R_OK):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(CERT, KEY)
    else:
        print("no readable snakeoil certificate: TLS listeners skipped", file=sys.stderr)

    # STARTTLS is offered on the plain port too, as most servers do.
    controllers = [
        controller(
            "FERRY_TEST_SMTP",
            "127.0.0.1:2525",
            directory,
            **({"tls_context": context} if context else {}),
        )
    ]
    if context:
        controllers.append(
            controller(
                "FERRY_TEST_SMTP_TLS",
                "127.0.0.1:2526",
                directory,
                tls_context=context,
                require_starttls=True,
            )
        )
        controllers.append(
            controller("FERRY_TEST_SMTPS", "127.0.0.1:2527", directory, ssl_context=context)
        )
    for c in controllers:
        c.start()
    print("smtp test server: %s, writing to %s" % (
        ", ".join("%s:%d" % (c.hostname, c.port) for c in controllers), directory), flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for c in controllers:
        c.stop()


if __name__ == "__main__":
    main()
