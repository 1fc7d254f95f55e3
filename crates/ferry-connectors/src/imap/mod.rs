//! Mailboxes over IMAP: the `imap` connection type and the `imap` puller.
//!
//! The puller makes one passenger per message (metadata `mail.from`, `mail.to`, `mail.cc`,
//! `mail.subject`, `mail.date`, `mail.message_id`, `mail.mailbox`, `mail.uid`, `mail.size`; the
//! text or HTML body; every attachment, its name made a plain file name). Nothing on the server
//! changes until the passengers are seated; then `after_seat` moves, deletes or flags them.
//! See [`puller`] for how a crash, a second pull and a recreated mailbox are handled.

mod config;
mod message;
mod puller;
mod session;
#[cfg(test)]
mod tests;

use std::path::Path;

use async_trait::async_trait;
use ferry_core::config::Connection;
use ferry_core::{BuildContext, BuildError, ConnectionFactory};

pub use config::{ImapConnection, ImapConnectionConfig, ImapPullerConfig, Security};
pub use puller::{ImapPuller, ImapPullerFactory};

/// The `imap` connection type.
pub struct ImapConnectionFactory;

#[async_trait]
impl ConnectionFactory for ImapConnectionFactory {
    const TYPE: &'static str = "imap";
    type Config = ImapConnection;

    fn config(connection: &Connection, project_dir: &Path) -> Result<ImapConnection, BuildError> {
        ImapConnection::read(connection, project_dir)
    }

    async fn check(connection: ImapConnection) -> Result<String, String> {
        let mut session = session::open(&connection)
            .await
            .map_err(|error| error.message)?;
        let inbox = session.examine("INBOX").await.map_err(|error| {
            format!("IMAP server `{}`: EXAMINE INBOX: {error}", connection.name)
        })?;
        let _ = session.logout().await;
        Ok(format!(
            "IMAP {} as {}, INBOX holds {} message(s)",
            connection.host, connection.user, inbox.exists
        ))
    }
}

/// The `imap` connection `name` that the component's `key` names.
fn connection_of(ctx: &BuildContext, key: &str, name: &str) -> Result<ImapConnection, BuildError> {
    let named = ctx.connection(key, name)?;
    if named.kind != ImapConnectionFactory::TYPE {
        return Err(BuildError::at(
            key,
            format!(
                "connection `{name}` is a `{}` connection; the imap puller reads `imap` \
                 connections",
                named.kind
            ),
        ));
    }
    ImapConnection::read(named, &ctx.project_dir)
        .map_err(|error| BuildError::at(key, format!("connection `{name}`: {error}")))
}
