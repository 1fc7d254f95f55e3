//! What the `http` puller and pusher share: credentials, header values, the client, and how a
//! failed request is classified, retried and described without secrets.

use std::fmt;
use std::time::Duration;

use ferry_core::{BuildError, StepError};
use reqwest::header::{self, HeaderMap};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::Deserialize;

use crate::oauth::{OAuthConfig, TokenSource};

/// The longest wait between two attempts, whether the server asks for more or not.
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// A header or query value: YAML lets people write `limit: 100` or `debug: true`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Text(text) => f.write_str(text),
            Scalar::Integer(value) => write!(f, "{value}"),
            Scalar::Float(value) => write!(f, "{value}"),
            Scalar::Boolean(value) => write!(f, "{value}"),
        }
    }
}

// Header values may be secrets: never printed in debug output.
impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scalar(..)")
    }
}

/// Credentials sent with every request.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// HTTP basic authentication.
    Basic(BasicAuth),
    /// `Authorization: Bearer TOKEN` with a token from an OAuth 2.0 token endpoint (client
    /// credentials or a refresh token), fetched when needed and kept until it expires.
    Oauth2(OAuthConfig),
}

/// User and password of HTTP basic authentication.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

// Never print a secret, not even in debug output.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(..)"),
            Auth::Basic(basic) => write!(f, "Basic({}, ..)", basic.user),
            Auth::Oauth2(config) => write!(f, "Oauth2({config:?})"),
        }
    }
}

impl Auth {
    /// Checks the credentials without connecting; errors name the key under `auth`.
    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        let nested = |inner: &str, error: BuildError| {
            let mut path = vec!["auth".to_string(), inner.to_string()];
            path.extend(error.path);
            BuildError {
                path,
                message: error.message,
                within: error.within,
            }
        };
        match self {
            Auth::Bearer(token) if token.is_empty() => {
                Err(nested("bearer", BuildError::new("the token is empty")))
            }
            Auth::Bearer(_) => Ok(()),
            Auth::Basic(basic) if basic.user.contains(':') => Err(nested(
                "basic",
                BuildError::new("the user name must not contain `:`"),
            )),
            Auth::Basic(_) => Ok(()),
            Auth::Oauth2(config) => config.validate().map_err(|error| nested("oauth2", error)),
        }
    }

    /// The configured secrets, for blanking them out of messages.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut secrets = match self {
            Auth::Bearer(token) => vec![token.clone()],
            Auth::Basic(basic) => {
                // A server may echo the `Authorization` header it was sent.
                let encoded = base64(&format!("{}:{}", basic.user, basic.password));
                vec![basic.password.clone(), encoded]
            }
            Auth::Oauth2(config) => config.secrets(),
        };
        secrets.retain(|secret| !secret.is_empty());
        secrets
    }
}

/// Credentials ready to go on requests: for OAuth 2.0, the token source shared by every
/// request of one component.
#[derive(Clone, Debug)]
pub(crate) enum Credentials {
    None,
    Bearer(String),
    Basic { user: String, password: String },
    OAuth2(TokenSource),
}

impl Credentials {
    pub(crate) fn new(auth: Option<&Auth>, client: &reqwest::Client) -> Credentials {
        match auth {
            None => Credentials::None,
            Some(Auth::Bearer(token)) => Credentials::Bearer(token.clone()),
            Some(Auth::Basic(basic)) => Credentials::Basic {
                user: basic.user.clone(),
                password: basic.password.clone(),
            },
            Some(Auth::Oauth2(config)) => {
                Credentials::OAuth2(TokenSource::new(config.clone(), client.clone()))
            }
        }
    }

    /// `request` with the credentials; for OAuth 2.0 also the token it carries, to reject it if
    /// the server refuses it.
    pub(crate) async fn apply(
        &self,
        request: RequestBuilder,
    ) -> Result<(RequestBuilder, Option<String>), StepError> {
        Ok(match self {
            Credentials::None => (request, None),
            Credentials::Bearer(token) => (request.bearer_auth(token), None),
            Credentials::Basic { user, password } => {
                (request.basic_auth(user, Some(password)), None)
            }
            Credentials::OAuth2(tokens) => {
                let token = tokens.token().await?;
                (request.bearer_auth(&token), Some(token))
            }
        })
    }

    /// Secrets the credentials hold right now (a fetched token), for blanking them out.
    pub(crate) fn current_secrets(&self) -> Vec<String> {
        match self {
            Credentials::OAuth2(tokens) => tokens.secrets(),
            _ => Vec::new(),
        }
    }
}

/// The client every request of one component goes through (one connection pool, kept alive).
/// Without `follow_redirects`, a redirect is an answer like any other (a pusher does not send a
/// body, nor a token request its credentials, somewhere the definition does not say).
pub(crate) fn build_client(
    connect_timeout: Duration,
    follow_redirects: bool,
) -> Result<reqwest::Client, StepError> {
    let redirects = match follow_redirects {
        true => reqwest::redirect::Policy::default(),
        false => reqwest::redirect::Policy::none(),
    };
    reqwest::Client::builder()
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .redirect(redirects)
        .build()
        .map_err(|error| {
            StepError::permanent(format!(
                "cannot make an HTTP client: {}",
                error.without_url()
            ))
        })
}

/// The URL without its query, fragment and credentials, which may hold tokens: what messages
/// show.
pub(crate) fn shown(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

/// 1s, 2s, 4s … for the first, second, third retry, at most [`MAX_RETRY_WAIT`].
pub(crate) fn backoff(attempt: u32) -> Duration {
    let seconds = 1u64 << (attempt.saturating_sub(1)).min(6);
    Duration::from_secs(seconds).min(MAX_RETRY_WAIT)
}

/// Whether an answer with this status may pass on a later attempt: 408, 429 and 5xx.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// Why one attempt failed.
pub(crate) enum Failure {
    Permanent(StepError),
    /// The server refused the OAuth2 `token` (401): worth one attempt with a new token, else
    /// `error`.
    Unauthorized {
        token: String,
        error: StepError,
    },
    /// Worth another attempt, after the wait the server asked for, if it did.
    Retryable {
        error: StepError,
        wait: Option<Duration>,
    },
}

impl Failure {
    pub(crate) fn retryable(message: String, wait: Option<Duration>) -> Failure {
        Failure::Retryable {
            error: StepError::retryable(message),
            wait,
        }
    }

    /// A [`StepError`] as a failure of its kind, without a wait.
    pub(crate) fn from_error(error: StepError) -> Failure {
        if error.retryable {
            Failure::Retryable { error, wait: None }
        } else {
            Failure::Permanent(error)
        }
    }
}

/// A request that did not get a response: retryable but for a bad request.
pub(crate) fn transport_failure(what: &str, error: reqwest::Error) -> Failure {
    let permanent = error.is_builder();
    // Without the URL: its query may hold a token.
    let message = format!("{what}: {}", error_chain(&error.without_url()));
    if permanent {
        Failure::Permanent(StepError::permanent(message))
    } else {
        Failure::retryable(message, None)
    }
}

/// An error and its sources, `a: b: c`: reqwest's own message alone says little
/// ("error sending request").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The first `max_chars` characters of a response's body, on one line, with `secrets` blanked
/// out as `***` (before cutting, so that no part of one shows).
pub(crate) async fn body_excerpt(
    response: &mut reqwest::Response,
    max_chars: usize,
    secrets: &[String],
) -> String {
    let mut body = Vec::new();
    while body.len() < max_chars * 4 {
        match response.chunk().await {
            Ok(Some(piece)) => body.extend_from_slice(&piece),
            _ => break,
        }
    }
    let text = redact(&String::from_utf8_lossy(&body), secrets);
    let mut excerpt: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > max_chars {
        excerpt.push('…');
    }
    if excerpt.trim().is_empty() {
        "(empty body)".into()
    } else {
        excerpt.trim().to_string()
    }
}

/// `text` with every one of `secrets` replaced by `***`.
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "***");
        }
    }
    text
}

/// The wait a `Retry-After` header asks for: seconds, or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// A name of a definition's `headers`; the error is at `headers.NAME`.
pub(crate) fn header_name(name: &str) -> Result<reqwest::header::HeaderName, BuildError> {
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| at_header(name, format!("`{name}` is not a valid header name")))
}

/// A written-out value of a definition's `headers`. The value may be a secret: the error does
/// not repeat it.
pub(crate) fn header_value(
    name: &str,
    value: &str,
) -> Result<reqwest::header::HeaderValue, BuildError> {
    reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        at_header(
            name,
            "the value is not a valid header value (visible ASCII only)",
        )
    })
}

fn at_header(name: &str, message: impl Into<String>) -> BuildError {
    BuildError {
        path: vec!["headers".into(), name.into()],
        message: message.into(),
        within: None,
    }
}

/// Standard base64 with padding, for the basic credentials a server may echo.
pub(crate) fn base64(input: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64("user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64("a"), "YQ==");
        assert_eq!(base64("ab"), "YWI=");
        assert_eq!(base64(""), "");
    }

    #[test]
    fn redact_blanks_every_secret() {
        let secrets = vec!["s3cret".to_string(), String::new()];
        assert_eq!(redact("a s3cret and s3cret", &secrets), "a *** and ***");
    }
}
