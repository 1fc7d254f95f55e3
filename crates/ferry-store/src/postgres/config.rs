//! The store's PostgreSQL URL: which server, which schema (`schema=NAME`, default `ferry`),
//! and how the connection is secured (`sslmode=`, as libpq reads it, and `sslrootcert=PATH`,
//! the certificate authorities `verify-ca` and `verify-full` trust instead of the public
//! ones).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{Result, StoreError};

/// The schema the store's tables live in when the URL names none.
pub(super) const DEFAULT_SCHEMA: &str = "ferry";

/// A transaction of the store never waits for anything but the database; one idle this long
/// belongs to a process that hangs.
const IDLE_IN_TRANSACTION_MS: u64 = 60_000;

/// What a store URL says, ready to connect.
pub(super) struct Target {
    pub config: tokio_postgres::Config,
    /// The store's schema, validated as a plain identifier.
    pub schema: String,
    pub tls: TlsMode,
    /// `sslrootcert`: a PEM file of the authorities to trust; the public ones when `None`.
    pub root_cert: Option<PathBuf>,
}

/// libpq's `sslmode` values. tokio-postgres knows only the first three; the checks of the
/// last two are done by the TLS connector here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TlsMode {
    Disable,
    /// Encrypted when the server offers it (libpq's default), certificate unchecked.
    Prefer,
    /// Always encrypted, certificate unchecked (as libpq's `require`).
    Require,
    /// The certificate must chain to a public certificate authority (webpki roots).
    VerifyCa,
    /// As `verify-ca`, and it must name the host.
    VerifyFull,
}

/// Reads a `postgres://` or `postgresql://` URL. The parameters `schema` and `sslmode` are
/// taken out; the rest goes to tokio-postgres as it is. Errors never show the password.
pub(super) fn parse(url: &str) -> Result<Target> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut schema = DEFAULT_SCHEMA.to_owned();
    let mut tls = TlsMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "schema" => {
                if !is_identifier(value) {
                    return Err(invalid(
                        url,
                        &format!(
                            "schema `{value}` is not a plain identifier (letters, digits and \
                             `_`, not starting with a digit, at most 63)"
                        ),
                    ));
                }
                schema = value.to_owned();
            }
            "sslmode" => {
                tls = match value {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(invalid(url, &format!("unknown sslmode `{other}`")));
                    }
                };
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value))),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|error| invalid(url, &format!("{error}")))?;
    config.ssl_mode(match tls {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
    });
    // Every connection of the pool works in the store's schema, set as the session starts so
    // that no statement has to name it. A session left idle inside a transaction (a node that
    // hangs) is ended by the server rather than holding its locks on the queue's rows.
    let session = format!(
        "-c search_path={} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
        quote_identifier(&schema)
    );
    let options = match config.get_options() {
        Some(given) if !given.is_empty() => format!("{given} {session}"),
        _ => session,
    };
    config.options(&options);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(super::CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("ferry");
    }
    Ok(Target {
        config,
        schema,
        tls,
        root_cert,
    })
}

/// A URL parameter's value with its `%XX` escapes decoded (a path may hold any character).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| value.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn invalid(url: &str, why: &str) -> StoreError {
    StoreError::Backend(format!("invalid store URL `{}`: {why}", redact(url)).into())
}

/// A schema name ferry accepts: what PostgreSQL takes unquoted, in any case, so that it
/// cannot hide SQL whatever the quoting.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 63
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An identifier quoted for SQL.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The URL with its password (in the user part or a `password=` parameter) replaced by
/// `***`, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let mut redacted = url.to_owned();
    if let Some(scheme_end) = redacted.find("://") {
        let rest = &redacted[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            let end = scheme_end + 3 + at;
            redacted.replace_range(start..end, "***");
        }
    }
    if let Some((base, query)) = redacted.split_once('?') {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => pair.to_owned(),
            })
            .collect();
        redacted = format!("{base}?{}", pairs.join("&"));
    }
    redacted
}

/// The TLS connector for `mode`, trusting the authorities in `root_cert` (else the public
/// ones) when the mode checks certificates; the error names a file that cannot be read. With
/// `disable` it is never used (tokio-postgres does not ask for TLS), but the pool wants one
/// type of connector whatever the mode.
pub(super) fn connector(
    mode: TlsMode,
    root_cert: Option<&std::path::Path>,
) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(ring::default_provider());
    let webpki = match mode {
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let roots = match root_cert {
                None => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
                Some(path) => {
                    let unreadable = |error: &dyn std::fmt::Display| {
                        StoreError::Backend(
                            format!("cannot read sslrootcert {}: {error}", path.display()).into(),
                        )
                    };
                    let certificates = CertificateDer::pem_file_iter(path)
                        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                        .map_err(|error| unreadable(&error))?;
                    let mut roots = RootCertStore::empty();
                    let (added, _) = roots.add_parsable_certificates(certificates);
                    if added == 0 {
                        return Err(unreadable(&"it holds no certificate"));
                    }
                    roots
                }
            };
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|error| tls_error(&error))?;
            Some(verifier)
        }
        TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => None,
    };
    let verifier = Arc::new(Verifier {
        webpki,
        check_name: mode == TlsMode::VerifyFull,
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| tls_error(&error))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn tls_error(error: &dyn std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("TLS setup: {error}").into())
}

/// Checks the server's certificate as the mode asks: not at all (`prefer`, `require`), its
/// chain (`verify-ca`), its chain and name (`verify-full`). Handshake signatures are always
/// checked, so the server holds the certificate's key. As ferry-connectors' PostgreSQL TLS.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://ferry:s3cret@db:5432/x?schema=a"),
            "postgres://ferry:***@db:5432/x?schema=a"
        );
        assert_eq!(
            redact("postgresql://db/x?user=u&password=s3cret"),
            "postgresql://db/x?user=u&password=***"
        );
        assert_eq!(redact("postgres://ferry@db/x"), "postgres://ferry@db/x");
    }

    #[test]
    fn schema_and_sslmode_are_taken_out() {
        let target = parse("postgres://u:pw@db:5433/x?schema=Ops_1&sslmode=verify-full").unwrap();
        assert_eq!(target.schema, "Ops_1");
        assert_eq!(target.tls, TlsMode::VerifyFull);
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(target.config.get_dbname(), Some("x"));
        let options = target.config.get_options().unwrap();
        assert!(
            options.starts_with("-c search_path=\"Ops_1\" "),
            "{options}"
        );
        let default = parse("postgresql://db/x").unwrap();
        assert_eq!(
            (default.schema.as_str(), default.tls),
            ("ferry", TlsMode::Prefer)
        );
    }

    /// Whether a connection to the test database with these TLS parameters (`sslmode=…`) is
    /// encrypted.
    async fn encrypted(parameters: &str) -> Result<bool> {
        let base = crate::tests::test_postgres_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        let target = parse(&format!("{base}{separator}{parameters}"))?;
        let tls = connector(target.tls, target.root_cert.as_deref())?;
        let (client, connection) = target.config.connect(tls).await?;
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The test server (Debian's PostgreSQL) offers TLS with a self-signed certificate:
    /// `require` encrypts without checking it, as libpq does; `verify-full` checks it against
    /// the public authorities and refuses it; trusted through `sslrootcert`, it passes
    /// `verify-ca`.
    #[tokio::test]
    async fn sslmode_is_honoured() {
        assert!(!encrypted("sslmode=disable").await.unwrap());
        match encrypted("sslmode=require").await {
            Ok(true) => {}
            Ok(false) => panic!("sslmode=require gave an unencrypted connection"),
            // A server without TLS: nothing more to see here.
            Err(error) if error.to_string().contains("TLS") => {
                eprintln!("the test server offers no TLS ({error}); sslmode not checked");
                return;
            }
            Err(error) => panic!("{error}"),
        }
        let refused = encrypted("sslmode=verify-full").await;
        assert!(
            refused.is_err(),
            "a self-signed certificate passed verify-full"
        );
        // Trusted as its own authority, Debian's certificate passes verify-ca (it names
        // `localhost`, not the address connected to, so verify-full still refuses it).
        let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
        if std::path::Path::new(snakeoil).exists() {
            let trusted = format!("sslmode=verify-ca&sslrootcert={snakeoil}");
            assert!(encrypted(&trusted).await.unwrap());
            let named = format!("sslmode=verify-full&sslrootcert={snakeoil}");
            assert!(encrypted(&named).await.is_err());
        }
        let missing = encrypted("sslmode=verify-ca&sslrootcert=/nonexistent%20dir/ca.pem").await;
        let message = missing
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("/nonexistent dir/ca.pem"), "{message}");
    }

    #[test]
    fn bad_schemas_and_modes_fail_without_the_password() {
        for url in [
            "postgres://u:s3cret@db/x?schema=a;drop",
            "postgres://u:s3cret@db/x?schema=1a",
            "postgres://u:s3cret@db/x?schema=",
            "postgres://u:s3cret@db/x?sslmode=sometimes",
        ] {
            let Err(error) = parse(url) else {
                panic!("{url} was accepted");
            };
            let message = error.to_string();
            assert!(!message.contains("s3cret"), "{message}");
        }
    }
}
