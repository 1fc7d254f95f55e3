//! Connecting to an IMAP server: TCP, TLS or STARTTLS through rustls, then logging in.

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use ferry_core::StepError;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::config::{ImapConnection, Login, Security};

/// The byte stream under a session: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug> Io for T {}

/// A logged-in IMAP session.
pub(crate) type Session = async_imap::Session<Box<dyn Io>>;

/// The certificate authorities a server's certificate must chain to: `ca_file`'s, or the
/// public ones. The error names the file.
pub(crate) fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let Some(file) = ca_file else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let certificates = CertificateDer::pem_file_iter(file)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(format!("{} holds no certificate", file.display()));
    }
    Ok(roots)
}

/// Connects and logs in. Every error is retryable and names the server, never the password.
pub(crate) async fn open(connection: &ImapConnection) -> Result<Session, StepError> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        StepError::retryable(format!(
            "IMAP server `{}` ({}): {what}: {error}",
            connection.name,
            connection.shown()
        ))
    };
    let within = |what: &'static str| {
        move |_| {
            StepError::retryable(format!(
                "IMAP server `{}` ({}): {what} timed out after {}",
                connection.name,
                connection.shown(),
                ferry_core::duration::format(connection.timeout)
            ))
        }
    };
    let address = (connection.host.as_str(), connection.port);
    let tcp = tokio::time::timeout(connection.timeout, TcpStream::connect(address))
        .await
        .map_err(within("connecting"))?
        .map_err(|e| failed("cannot connect", &e))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match connection.security {
        Security::Tls => Box::new(tls(connection, tcp).await.map_err(|e| failed("TLS", &e))?),
        Security::None => Box::new(tcp),
        Security::Starttls => {
            let mut client = async_imap::Client::new(tcp);
            greeting(&mut client)
                .await
                .map_err(|e| failed("greeting", &e))?;
            tokio::time::timeout(
                connection.timeout,
                client.run_command_and_check_ok("STARTTLS", None),
            )
            .await
            .map_err(within("STARTTLS"))?
            .map_err(|e| failed("STARTTLS refused", &e))?;
            Box::new(
                tls(connection, client.into_inner())
                    .await
                    .map_err(|e| failed("TLS", &e))?,
            )
        }
    };
    let mut client = async_imap::Client::new(stream);
    if connection.security != Security::Starttls {
        tokio::time::timeout(connection.timeout, greeting(&mut client))
            .await
            .map_err(within("greeting"))?
            .map_err(|e| failed("greeting", &e))?;
    }
    let refused = format!("login as {} refused", connection.user);
    match &connection.login {
        Login::Password(password) => {
            let login = client.login(&connection.user, password);
            match tokio::time::timeout(connection.timeout, login)
                .await
                .map_err(within("login"))?
            {
                Ok(session) => Ok(session),
                // The server's answer, never the password.
                Err((error, _)) => Err(failed(&refused, &error)),
            }
        }
        Login::OAuth(tokens) => {
            let token = tokens.token().await?;
            let xoauth2 = XOAuth2 {
                user: connection.user.clone(),
                token: token.clone(),
            };
            let login = client.authenticate("XOAUTH2", xoauth2);
            match tokio::time::timeout(connection.timeout, login)
                .await
                .map_err(within("login"))?
            {
                Ok(session) => Ok(session),
                Err((error, _)) => {
                    // The token may have been revoked: the next attempt fetches a new one.
                    tokens.reject(&token);
                    Err(failed(&format!("{refused} (XOAUTH2)"), &error))
                }
            }
        }
    }
}

/// The SASL XOAUTH2 exchange: the user and the bearer token in one message.
struct XOAuth2 {
    user: String,
    token: String,
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = String;

    fn process(&mut self, _challenge: &[u8]) -> String {
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token)
    }
}

async fn greeting<T: Io>(client: &mut async_imap::Client<T>) -> Result<(), String> {
    match client.read_response().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the server closed the connection".into()),
        Err(error) => Err(error.to_string()),
    }
}

async fn tls(
    connection: &ImapConnection,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(connection.ca_file.as_deref())?)
        .with_no_client_auth();
    let name = ServerName::try_from(connection.host.clone())
        .map_err(|_| format!("`{}` is not a host name", connection.host))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(connection.timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())
}
