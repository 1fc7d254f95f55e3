//! E-mail out through an SMTP server.
//!
//! The `smtp` connection type names a mail server (host, port, `tls: none | starttls | tls`,
//! login, default sender); `ferry check` connects, secures and logs in. The `smtp` pusher sends
//! each passenger as one message, with recipients, subject and text from templates and the
//! passenger's attachments (or its body) as MIME parts:
//!
//! ```yaml
//! # connections.yaml
//! mail:
//!   type: smtp
//!   host: smtp.example.com
//!   user: ferry@example.com
//!   password: ${SMTP_PASSWORD}
//!   from: "ferry <ferry@example.com>"
//!   clients: [acme]
//!
//! # clients/acme/pipelines/forward.yaml
//! pushers:
//!   - type: smtp
//!     connection: mail
//!     to: [orders@example.com]
//!     subject: "Order {external_id}"
//! ```
//!
//! Delivery is at least once: a message the server accepted whose acknowledgement is lost is
//! sent again on the next attempt, with the same `Message-ID` (derived from the passenger's id
//! and the pusher's name), by which receivers and mail stores drop the second copy. A 4xx
//! reply, a timeout or an unreachable server is retryable; a 5xx reply (a refused login too) is
//! permanent and keeps the server's text.

mod config;
pub mod connection;
mod pusher;
#[cfg(test)]
mod tests;

pub use config::{Attachments, SmtpConnectionConfig, SmtpPusherConfig, TlsMode};
pub use connection::{SmtpConnection, SmtpConnectionFactory};
pub use pusher::{SmtpPusher, SmtpPusherFactory};
