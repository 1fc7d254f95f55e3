//! OAuth 2.0 access tokens for connectors that send them: the `http` puller and pusher
//! (`auth: { oauth2: … }`) and XOAUTH2 mail logins.
//!
//! A [`TokenSource`] fetches a token from the provider's token endpoint, with the
//! client-credentials grant or, when a refresh token is configured, the refresh-token grant
//! (RFC 6749 §4.4 and §6), and keeps it until shortly before it expires. Clones share one cache:
//! many requests at once cause one fetch. The `oauth2` crate builds the token request and reads
//! the answer; the request itself goes through the connector's own `reqwest` client.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::{BuildError, StepError};
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicTokenResponse};
use oauth2::{
    ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, RefreshToken,
    RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

/// How long a token request may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A token is fetched anew this long before it expires (or after half its lifetime, for
/// tokens that live less than twice as long), so that no request goes out with a token about
/// to expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// The largest token response read.
const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;

/// OAuth 2.0 credentials, as written in a definition.
///
/// ```yaml
/// auth:
///   oauth2:
///     token_url: https://login.example.com/oauth2/token
///     client_id: ferry
///     client_secret: "${CLIENT_SECRET}"
///     scopes: [orders.write]
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The provider's token endpoint, `https` (or `http` for a local test server). Required.
    pub token_url: String,
    /// The client id. Required.
    pub client_id: String,
    /// The client secret, sent with HTTP basic authentication as RFC 6749 asks. Default none
    /// (a public client, which sends its `client_id` in the form). Never logged or shown.
    #[serde(default)]
    pub client_secret: String,
    /// The scopes asked for. Default none (the provider's default).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A refresh token: when given, tokens come from the refresh-token grant (a user's consent,
    /// as for a mailbox), else from the client-credentials grant. Default none. Never logged or
    /// shown.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

// Never print a secret, not even in debug output.
impl fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"..")
            .field("scopes", &self.scopes)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| ".."))
            .finish()
    }
}

impl OAuthConfig {
    /// Checks the configuration without connecting; errors name the key below `oauth2`.
    pub fn validate(&self) -> Result<(), BuildError> {
        let url = Url::parse(&self.token_url).map_err(|error| {
            BuildError::at(
                "token_url",
                format!("not a URL ({error}); write e.g. `https://login.example.com/token`"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BuildError::at(
                "token_url",
                format!("the scheme is `{}`; valid are http and https", url.scheme()),
            ));
        }
        if self.client_id.is_empty() {
            return Err(BuildError::at("client_id", "must not be empty"));
        }
        if self.scopes.iter().any(|scope| scope.is_empty()) {
            return Err(BuildError::at("scopes", "a scope must not be empty"));
        }
        if self.refresh_token.as_deref() == Some("") {
            return Err(BuildError::at("refresh_token", "must not be empty"));
        }
        Ok(())
    }

    /// The secrets of this configuration, for blanking them out of messages.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![self.client_secret.clone()];
        secrets.extend(self.refresh_token.clone());
        secrets.retain(|secret| !secret.is_empty());
        secrets
    }
}

type OAuthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Access tokens from one provider, fetched when needed and cached until shortly before they
/// expire. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    oauth: OAuthClient,
    scopes: Vec<String>,
    client: reqwest::Client,
    /// The token endpoint without its query, for messages.
    shown_url: String,
    /// The current token, if one was fetched and not invalidated.
    cached: Mutex<Option<Cached>>,
    /// The refresh token in use: the configured one, or the newer one a provider that
    /// rotates them handed out.
    refresh_token: Mutex<Option<String>>,
    /// Held while a token is fetched, so that callers arriving meanwhile wait for that fetch
    /// instead of starting their own.
    fetching: tokio::sync::Mutex<()>,
}

struct Cached {
    token: String,
    /// `None`: the provider did not say; kept until [`TokenSource::invalidate`].
    fresh_until: Option<Instant>,
}

impl Cached {
    fn is_fresh(&self) -> bool {
        self.fresh_until.is_none_or(|until| Instant::now() < until)
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSource({}, ..)", self.inner.shown_url)
    }
}

impl TokenSource {
    /// A token source for `config`, fetching through `client`. Connects to nothing yet. The
    /// configuration should have passed [`OAuthConfig::validate`]; an invalid token URL makes
    /// every [`TokenSource::token`] fail permanently.
    pub fn new(config: OAuthConfig, client: reqwest::Client) -> TokenSource {
        let shown_url = match Url::parse(&config.token_url) {
            Ok(mut url) => {
                url.set_query(None);
                url.set_fragment(None);
                let _ = url.set_password(None);
                let _ = url.set_username("");
                url.to_string()
            }
            Err(_) => "(invalid token URL)".into(),
        };
        // `TokenUrl::new` only parses; an invalid URL was refused by `validate`, and the
        // fallback makes any use fail clearly rather than panic.
        let token_url = TokenUrl::new(config.token_url.clone())
            .unwrap_or_else(|_| TokenUrl::new("http://invalid.invalid/".into()).expect("a URL"));
        let mut oauth =
            BasicClient::new(ClientId::new(config.client_id.clone())).set_token_uri(token_url);
        if !config.client_secret.is_empty() {
            oauth = oauth.set_client_secret(ClientSecret::new(config.client_secret.clone()));
        }
        TokenSource {
            inner: Arc::new(Inner {
                oauth,
                scopes: config.scopes,
                client,
                shown_url,
                cached: Mutex::new(None),
                refresh_token: Mutex::new(config.refresh_token),
                fetching: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A valid access token: the cached one, or a new one from the token endpoint. A failure
    /// is retryable when the endpoint could not be reached or answered 408, 429 or 5xx, and
    /// permanent when it refused the credentials; its message never holds a secret.
    pub async fn token(&self) -> Result<String, StepError> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _fetching = self.inner.fetching.lock().await;
        // Another caller may have fetched one while this one waited.
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let fetched = self.fetch().await?;
        let token = fetched.access_token().secret().clone();
        let fresh_until = fetched.expires_in().map(|lifetime| {
            let margin = EXPIRY_MARGIN.min(lifetime / 2);
            Instant::now() + lifetime - margin
        });
        if let Some(rotated) = fetched.refresh_token() {
            *self.inner.refresh_token.lock().expect("refresh token lock") =
                Some(rotated.secret().clone());
        }
        *self.inner.cached.lock().expect("token cache lock") = Some(Cached {
            token: token.clone(),
            fresh_until,
        });
        Ok(token)
    }

    /// Forgets the cached token, so that the next [`TokenSource::token`] fetches a new one (the
    /// server refused it with 401, say).
    pub fn invalidate(&self) {
        *self.inner.cached.lock().expect("token cache lock") = None;
    }

    /// Forgets the cached token if it is still `token`: when many requests are refused with
    /// the same old token at once, the first fetches a new one and the others keep it.
    pub fn reject(&self, token: &str) {
        let mut cached = self.inner.cached.lock().expect("token cache lock");
        if cached.as_ref().is_some_and(|cached| cached.token == token) {
            *cached = None;
        }
    }

    /// The secrets this source holds right now (the current token and refresh token), for
    /// blanking them out of messages.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        if let Some(cached) = &*self.inner.cached.lock().expect("token cache lock") {
            secrets.push(cached.token.clone());
        }
        if let Some(refresh) = &*self.inner.refresh_token.lock().expect("refresh token lock") {
            secrets.push(refresh.clone());
        }
        secrets
    }

    fn fresh(&self) -> Option<String> {
        let cached = self.inner.cached.lock().expect("token cache lock");
        cached
            .as_ref()
            .filter(|cached| cached.is_fresh())
            .map(|cached| cached.token.clone())
    }

    /// One token request.
    async fn fetch(&self) -> Result<BasicTokenResponse, StepError> {
        let inner = &self.inner;
        let client = inner.client.clone();
        let http = move |request: HttpRequest| send(client.clone(), request);
        let refresh = inner
            .refresh_token
            .lock()
            .expect("refresh token lock")
            .clone();
        let scopes = inner.scopes.iter().map(|scope| Scope::new(scope.clone()));
        let result = match refresh {
            Some(refresh) => {
                let refresh = RefreshToken::new(refresh);
                inner
                    .oauth
                    .exchange_refresh_token(&refresh)
                    .add_scopes(scopes)
                    .request_async(&http)
                    .await
            }
            None => {
                inner
                    .oauth
                    .exchange_client_credentials()
                    .add_scopes(scopes)
                    .request_async(&http)
                    .await
            }
        };
        result.map_err(|error| self.failure(error))
    }

    /// A failed token request as a step error, without secrets: the provider's error code and
    /// description, or why it could not be reached.
    fn failure(&self, error: RequestTokenError<TransportError, BasicErrorResponse>) -> StepError {
        let what = format!("OAuth2 token request to {}", self.inner.shown_url);
        match error {
            RequestTokenError::Request(TransportError::Unreachable(message)) => {
                StepError::retryable(format!("{what}: {message}"))
            }
            RequestTokenError::Request(TransportError::Status(status)) => {
                StepError::retryable(format!("{what}: HTTP {status}"))
            }
            RequestTokenError::Request(TransportError::Invalid(message)) => {
                StepError::permanent(format!("{what}: {message}"))
            }
            RequestTokenError::ServerResponse(response) => {
                StepError::permanent(format!("{what}: refused: {response}"))
            }
            RequestTokenError::Parse(error, _) => StepError::permanent(format!(
                "{what}: the answer is not a token response: {error}"
            )),
            RequestTokenError::Other(message) => StepError::permanent(format!("{what}: {message}")),
        }
    }
}

/// Why a token request got no usable answer.
#[derive(Debug)]
enum TransportError {
    /// No answer: a connection error or a timeout.
    Unreachable(String),
    /// The endpoint answered 408, 429 or 5xx.
    Status(StatusCode),
    /// The request could not be made.
    Invalid(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Unreachable(message) | TransportError::Invalid(message) => {
                f.write_str(message)
            }
            TransportError::Status(status) => write!(f, "HTTP {status}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// Sends a token request through `client`. Answers that may pass later (408, 429, 5xx) are
/// errors here, so that they are retried rather than read as a refusal.
async fn send(
    client: reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, TransportError> {
    let mut request = reqwest::Request::try_from(request)
        .map_err(|error| TransportError::Invalid(error.without_url().to_string()))?;
    *request.timeout_mut() = Some(TOKEN_TIMEOUT);
    let mut response = client.execute(request).await.map_err(|error| {
        TransportError::Unreachable(crate::http::error_chain(&error.without_url()))
    })?;
    let status = response.status();
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        return Err(TransportError::Status(status));
    }
    let mut answer = oauth2::http::Response::builder().status(status);
    for (name, value) in response.headers() {
        answer = answer.header(name, value);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(piece)) if body.len() + piece.len() <= MAX_TOKEN_RESPONSE => {
                body.extend_from_slice(&piece)
            }
            Ok(Some(_)) => {
                return Err(TransportError::Invalid(format!(
                    "the answer is larger than {MAX_TOKEN_RESPONSE} bytes"
                )));
            }
            Ok(None) => break,
            Err(error) => {
                return Err(TransportError::Unreachable(crate::http::error_chain(
                    &error.without_url(),
                )));
            }
        }
    }
    answer
        .body(body)
        .map_err(|error| TransportError::Invalid(error.to_string()))
}
