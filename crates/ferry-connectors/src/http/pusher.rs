//! The `http` pusher: each passenger is one request, sent over one pool of kept-alive
//! connections, several at once.
//!
//! A request that may pass later (no connection, a timeout, 408, 429, 5xx) is tried again
//! within the push after the `Retry-After` the server asks for, or a short back-off, for at
//! most [`MAX_WAIT_PER_PASSENGER`] in all; then the step fails retryably and the pipeline's
//! retry policy takes over. Every attempt, and every push after a restart, carries the same
//! idempotency key (the passenger's id), so a target that honours it takes each passenger once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::template::Template;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use tracing::{debug, warn};

use super::client::{
    self, Credentials, Failure, backoff, body_excerpt, retry_after, shown, transport_failure,
};
use super::config::{HttpPusherConfig, IdempotencyKey, Profile, PushMethod};
use super::sap::{self, CsrfSession};

/// The most a passenger's retries wait in all within one push; a longer wait is left to the
/// pipeline's retry policy, so that a push never holds its batch for minutes.
const MAX_WAIT_PER_PASSENGER: Duration = Duration::from_secs(60);

/// How much of an error response's body goes into the message.
const ERROR_BODY_CHARS: usize = 2048;

/// How much of a successful response's body is kept with `keep_response`.
const KEPT_BODY_BYTES: usize = 4096;

/// How much of a successful response's body is read at most: reading it to its end lets the
/// connection be used again; a larger one is dropped with its connection.
const MAX_DRAIN_BYTES: usize = 1024 * 1024;

/// The most requests in flight at once within one push.
const MAX_CONCURRENCY: usize = 256;

/// Header names whose configured values are blanked out of error messages.
const SECRET_HEADER_WORDS: [&str; 6] = ["auth", "key", "token", "secret", "password", "cookie"];

/// Builds `http` pushers.
pub struct HttpPusherFactory;

impl PusherFactory for HttpPusherFactory {
    const TYPE: &'static str = "http";
    type Config = HttpPusherConfig;

    fn build(
        &self,
        config: HttpPusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        let settings = Settings::validate(config)?;
        Ok(Box::new(HttpPusher {
            settings: Arc::new(settings),
            runtime: tokio::sync::OnceCell::new(),
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            component: ctx.component.clone(),
        }))
    }
}

/// A value of the configuration that may hold placeholders.
#[derive(Debug)]
enum Value {
    Fixed(String),
    Template(Template),
}

impl Value {
    fn parse(text: String) -> Result<Value, String> {
        if !text.contains('{') {
            return Ok(Value::Fixed(text));
        }
        Template::parse(&text).map(Value::Template)
    }

    fn render(&self, passenger: &Passenger) -> String {
        match self {
            Value::Fixed(text) => text.clone(),
            Value::Template(template) => template.render_text(passenger),
        }
    }
}

/// A header value: checked once when it holds no placeholder.
#[derive(Debug)]
enum HeaderTemplate {
    Fixed(HeaderValue),
    Template(Template),
}

/// A URL template: literal text and placeholders, whose values are percent-encoded.
#[derive(Debug)]
struct UrlTemplate {
    parts: Vec<UrlPart>,
    /// The URL, when the template holds no placeholder.
    fixed: Option<Url>,
}

#[derive(Debug)]
enum UrlPart {
    Literal(String),
    Value(Template),
}

impl UrlTemplate {
    fn parse(text: &str) -> Result<UrlTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(UrlPart::Literal(rest[..open].to_string()));
            }
            let Some(length) = rest[open..].find('}') else {
                return Err(format!("unclosed `{{` in template `{text}`"));
            };
            let placeholder = &rest[open..=open + length];
            parts.push(UrlPart::Value(Template::parse(placeholder)?));
            rest = &rest[open + length + 1..];
        }
        if !rest.is_empty() {
            parts.push(UrlPart::Literal(rest.to_string()));
        }
        let mut template = UrlTemplate { parts, fixed: None };
        if !template.has_placeholders() {
            template.fixed = Url::parse(text).ok();
        }
        Ok(template)
    }

    fn has_placeholders(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, UrlPart::Value(_)))
    }

    /// The URL text with every placeholder replaced by `sample`, for checking its shape.
    fn sample(&self, sample: &str) -> String {
        self.write(|_| sample.to_string())
    }

    fn render(&self, passenger: &Passenger) -> String {
        self.write(|template| percent_encode(&template.render_text(passenger)))
    }

    fn write(&self, mut value: impl FnMut(&Template) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                UrlPart::Literal(text) => out.push_str(text),
                UrlPart::Value(template) => out.push_str(&value(template)),
            }
        }
        out
    }
}

/// `value` with everything but the unreserved characters of RFC 3986 percent-encoded, so that
/// a value is one path segment (or one query value) whatever it holds.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An `http` pusher's configuration, validated.
#[derive(Debug)]
struct Settings {
    method: reqwest::Method,
    url: UrlTemplate,
    headers: Vec<(HeaderName, HeaderTemplate)>,
    query: Vec<(String, Value)>,
    body: Option<Template>,
    /// The `Content-Type` sent, unless `headers` set one, instead of the passenger's media
    /// type (for a profile, or `text/plain` for a `body` template).
    content_type: Option<HeaderValue>,
    auth: Option<super::Auth>,
    /// Configured secrets (passwords, tokens, secret header values), blanked out of messages.
    secrets: Vec<String>,
    idempotency_key: Option<HeaderName>,
    concurrency: usize,
    timeout: Duration,
    retries: u32,
    keep_response: bool,
    /// For `profile: sap_odata`: where the CSRF token is fetched.
    csrf_url: Option<Url>,
}

impl Settings {
    /// Checks the configuration without connecting to anything (validation calls this too).
    fn validate(config: HttpPusherConfig) -> Result<Settings, BuildError> {
        let nested = |key: &str, inner: &str, message: String| BuildError {
            path: vec![key.into(), inner.into()],
            message,
            within: None,
        };
        if config.profile.is_none() {
            if config.sap_client.is_some() {
                return Err(BuildError::at(
                    "sap_client",
                    "goes with `profile: sap_idoc` or `profile: sap_odata`",
                ));
            }
            if config.csrf_url.is_some() {
                return Err(BuildError::at("csrf_url", "goes with `profile: sap_odata`"));
            }
        }
        let url_text = match config.profile {
            Some(Profile::SapIdoc) => {
                if config.url.contains('?') {
                    return Err(BuildError::at(
                        "url",
                        "with `profile: sap_idoc`, give the system's base URL without a query, \
                         e.g. `https://sap.example.com:44300`",
                    ));
                }
                format!("{}{}", config.url.trim_end_matches('/'), sap::IDOC_PATH)
            }
            _ => config.url.clone(),
        };
        let url =
            UrlTemplate::parse(&url_text).map_err(|message| BuildError::at("url", message))?;
        let first = check_url(&url.sample("x"))?;
        let second = check_url(&url.sample("y"))?;
        if first.origin() != second.origin() {
            return Err(BuildError::at(
                "url",
                "the scheme, host and port must be written out, not filled in from a \
                 placeholder: credentials go only where the definition says",
            ));
        }
        if config.profile.is_some() && config.method != PushMethod::Post {
            return Err(BuildError::at(
                "method",
                "a profile posts: leave `method` out or write `POST`",
            ));
        }
        let method = match config.method {
            PushMethod::Post => reqwest::Method::POST,
            PushMethod::Put => reqwest::Method::PUT,
            PushMethod::Patch => reqwest::Method::PATCH,
            PushMethod::Delete => reqwest::Method::DELETE,
        };

        let idempotency_key = match &config.idempotency_key {
            IdempotencyKey::On(false) => None,
            IdempotencyKey::On(true) => Some(HeaderName::from_static("idempotency-key")),
            IdempotencyKey::Header(name) => Some(HeaderName::from_bytes(name.as_bytes()).map_err(
                |_| {
                    BuildError::at(
                        "idempotency_key",
                        format!("`{name}` is not a valid header name; write true, false or a header name"),
                    )
                },
            )?),
        };

        let mut secrets = config
            .auth
            .as_ref()
            .map(super::Auth::secrets)
            .unwrap_or_default();
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let header_name = client::header_name(name)?;
            if idempotency_key.as_ref() == Some(&header_name) {
                return Err(nested(
                    "headers",
                    name,
                    "`idempotency_key` sets this header; write `idempotency_key: false` to set \
                     it yourself"
                        .into(),
                ));
            }
            let secret_name = SECRET_HEADER_WORDS
                .iter()
                .any(|word| header_name.as_str().contains(word));
            // The value may be a secret: it is not repeated in the messages.
            let header = match Value::parse(value.to_string())
                .map_err(|message| nested("headers", name, message))?
            {
                Value::Fixed(text) => {
                    if secret_name && !text.is_empty() {
                        secrets.push(text.clone());
                    }
                    HeaderTemplate::Fixed(client::header_value(name, &text)?)
                }
                Value::Template(template) => HeaderTemplate::Template(template),
            };
            headers.push((header_name, header));
        }
        let has_accept = headers.iter().any(|(name, _)| name == header::ACCEPT);
        if config.profile == Some(Profile::SapOdata) && !has_accept {
            headers.push((
                header::ACCEPT,
                HeaderTemplate::Fixed(HeaderValue::from_static("application/json")),
            ));
        }
        // Without a `Content-Type` in `headers`: the passenger's media type, unless this says
        // otherwise.
        let content_type = match (&config.profile, &config.body) {
            (Some(Profile::SapIdoc), _) => Some(HeaderValue::from_static("application/xml")),
            (_, Some(_)) => Some(HeaderValue::from_static("text/plain; charset=utf-8")),
            _ => None,
        };

        let mut query = Vec::new();
        for (name, value) in &config.query {
            if name.is_empty() {
                return Err(BuildError::at(
                    "query",
                    "a parameter name must not be empty",
                ));
            }
            let value = Value::parse(value.to_string())
                .map_err(|message| nested("query", name, message))?;
            query.push((name.clone(), value));
        }
        if let Some(sap_client) = &config.sap_client {
            let sap_client = sap_client.to_string();
            if sap_client.len() != 3 || !sap_client.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BuildError::at(
                    "sap_client",
                    format!(
                        "`{sap_client}` is not an SAP client; write three digits, e.g. \"100\""
                    ),
                ));
            }
            query.push(("sap-client".into(), Value::Fixed(sap_client)));
        }

        let body = match &config.body {
            None => None,
            Some(text) => {
                Some(Template::parse(text).map_err(|message| BuildError::at("body", message))?)
            }
        };
        if let Some(auth) = &config.auth {
            auth.validate()?;
        }
        if config.concurrency == 0 || config.concurrency > MAX_CONCURRENCY {
            return Err(BuildError::at(
                "concurrency",
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
        let timeout = ferry_core::duration::parse(&config.timeout)
            .map_err(|message| BuildError::at("timeout", message))?;
        if timeout.is_zero() {
            return Err(BuildError::at("timeout", "must be more than 0s"));
        }
        if config.retries > 10 {
            return Err(BuildError::at("retries", "must be at most 10"));
        }

        let csrf_url = match config.profile {
            Some(Profile::SapOdata) => Some(csrf_url(&config, &query)?),
            _ => None,
        };
        Ok(Settings {
            method,
            url,
            headers,
            query,
            body,
            content_type,
            auth: config.auth,
            secrets,
            idempotency_key,
            concurrency: config.concurrency,
            timeout,
            retries: config.retries,
            keep_response: config.keep_response,
            csrf_url,
        })
    }
}

/// `text` as an `http` or `https` URL with a host, or why not (as an error at `url`).
fn check_url(text: &str) -> Result<Url, BuildError> {
    let url = Url::parse(text).map_err(|error| {
        BuildError::at(
            "url",
            format!("not a URL ({error}); write e.g. `https://api.example.com/v1/orders`"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BuildError::at(
            "url",
            format!("the scheme is `{}`; valid are http and https", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(BuildError::at("url", "the URL has no host"));
    }
    Ok(url)
}

/// Where a `sap_odata` pusher fetches its CSRF token: `csrf_url`, or `url` up to its last `/`,
/// with the fixed query parameters (`sap-client`).
fn csrf_url(config: &HttpPusherConfig, query: &[(String, Value)]) -> Result<Url, BuildError> {
    let (key, text) = match &config.csrf_url {
        Some(text) => ("csrf_url", text.clone()),
        None => {
            let before_query = config.url.split('?').next().unwrap_or_default();
            let Some(slash) = before_query.rfind('/') else {
                return Err(BuildError::at("url", "not a URL"));
            };
            let root = &before_query[..=slash];
            if root.contains('{') {
                return Err(BuildError::at(
                    "csrf_url",
                    "`url` has a placeholder before its last `/`: give the service's URL, \
                     where the CSRF token is fetched",
                ));
            }
            ("url", root.to_string())
        }
    };
    if text.contains('{') {
        return Err(BuildError::at(
            key,
            "the CSRF token's URL takes no placeholders",
        ));
    }
    let mut url =
        Url::parse(&text).map_err(|error| BuildError::at(key, format!("not a URL ({error})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(BuildError::at(key, "give an http or https URL with a host"));
    }
    for (name, value) in query {
        if let Value::Fixed(value) = value {
            url.query_pairs_mut().append_pair(name, value);
        }
    }
    Ok(url)
}

/// Sends each passenger as one HTTP request.
pub struct HttpPusher {
    settings: Arc<Settings>,
    /// Made on the first push, not at build time.
    runtime: tokio::sync::OnceCell<Runtime>,
    /// `client/pipeline`, for logs.
    pipeline: String,
    component: String,
}

/// What the requests of one pusher share.
struct Runtime {
    client: reqwest::Client,
    credentials: Credentials,
    csrf: Option<CsrfSession>,
}

/// One passenger's request, rendered.
struct Prepared {
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
    /// `METHOD URL` without query and credentials, for messages.
    what: String,
}

/// Why one attempt failed, as the pusher sees it.
enum Attempt {
    Failed(Failure),
    /// `403` with `X-CSRF-Token: Required`: the CSRF `token` is no longer valid.
    CsrfRequired {
        token: String,
        error: StepError,
    },
}

impl From<Failure> for Attempt {
    fn from(failure: Failure) -> Attempt {
        Attempt::Failed(failure)
    }
}

#[async_trait]
impl Pusher for HttpPusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        self.deliver_all(passengers)
            .await
            .into_iter()
            .map(|result| result.map(drop))
            .collect()
    }

    /// With `keep_response`, each delivered passenger's result is the answer's status and the
    /// start of its body.
    async fn push_keeping(
        &self,
        passengers: &[&Passenger],
    ) -> Vec<Result<Option<String>, StepError>> {
        self.deliver_all(passengers).await
    }
}

impl HttpPusher {
    /// Delivers every passenger, `concurrency` at a time; one result per passenger, in order,
    /// with the kept response when `keep_response` is on.
    async fn deliver_all(
        &self,
        passengers: &[&Passenger],
    ) -> Vec<Result<Option<String>, StepError>> {
        let runtime = match self.runtime.get_or_try_init(|| self.make_runtime()).await {
            Ok(runtime) => runtime,
            Err(error) => return vec![Err(error); passengers.len()],
        };
        // Made first, then run: a stream that maps as it goes trips the compiler's lifetime
        // inference inside `async_trait`.
        let deliveries: Vec<_> = passengers
            .iter()
            .map(|passenger| self.deliver(runtime, passenger))
            .collect();
        let results: Vec<Result<Option<String>, StepError>> = futures::stream::iter(deliveries)
            .buffered(self.settings.concurrency)
            .collect()
            .await;
        let failed = results.iter().filter(|result| result.is_err()).count();
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            written = results.len() - failed,
            failed,
            "pushed passengers over HTTP"
        );
        results
    }

    async fn make_runtime(&self) -> Result<Runtime, StepError> {
        let client = client::build_client(self.settings.timeout, false)?;
        let credentials = Credentials::new(self.settings.auth.as_ref(), &client);
        let csrf = self
            .settings
            .csrf_url
            .clone()
            .map(|url| CsrfSession::new(url, self.settings.timeout));
        Ok(Runtime {
            client,
            credentials,
            csrf,
        })
    }

    /// One passenger: its request, tried again as configured.
    async fn deliver(
        &self,
        runtime: &Runtime,
        passenger: &Passenger,
    ) -> Result<Option<String>, StepError> {
        let prepared = self.prepare(passenger)?;
        let mut attempt = 0;
        let mut waited = Duration::ZERO;
        let mut token_renewed = false;
        let mut csrf_renewed = false;
        loop {
            let (error, asked) = match self.attempt(runtime, &prepared).await {
                Ok(kept) => return Ok(kept),
                Err(Attempt::Failed(Failure::Permanent(error))) => return Err(error),
                Err(Attempt::Failed(Failure::Retryable { error, wait })) => (error, wait),
                // A token the server refuses is fetched anew, once.
                Err(Attempt::Failed(Failure::Unauthorized { token, error })) => {
                    match &runtime.credentials {
                        Credentials::OAuth2(tokens) if !token_renewed => {
                            tokens.reject(&token);
                            token_renewed = true;
                            continue;
                        }
                        _ => return Err(error),
                    }
                }
                Err(Attempt::CsrfRequired { token, error }) => match &runtime.csrf {
                    Some(session) if !csrf_renewed => {
                        session.reject(&token).await;
                        csrf_renewed = true;
                        continue;
                    }
                    _ => return Err(error),
                },
            };
            if attempt >= self.settings.retries {
                let tries = attempt + 1;
                return Err(StepError::retryable(format!(
                    "{} (after {tries} attempts)",
                    error.message
                )));
            }
            attempt += 1;
            let wait = asked.unwrap_or_else(|| backoff(attempt));
            if waited + wait > MAX_WAIT_PER_PASSENGER {
                return Err(StepError::retryable(format!(
                    "{}; the server asks to wait {}s, longer than ferry waits within a push",
                    error.message,
                    wait.as_secs()
                )));
            }
            waited += wait;
            warn!(
                pipeline = %self.pipeline,
                component = %self.component,
                passenger = %passenger.id,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %error.message,
                "request failed, retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// The passenger's request: URL, headers and body rendered. A template that renders into
    /// something HTTP cannot carry fails the passenger for good.
    fn prepare(&self, passenger: &Passenger) -> Result<Prepared, StepError> {
        let settings = &self.settings;
        let mut url = match &settings.url.fixed {
            Some(url) => url.clone(),
            None => {
                let text = settings.url.render(passenger);
                Url::parse(&text).map_err(|error| {
                    StepError::permanent(format!(
                        "the URL rendered for the passenger is not a URL ({error})"
                    ))
                })?
            }
        };
        if !settings.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &settings.query {
                pairs.append_pair(name, &value.render(passenger));
            }
        }
        let what = format!("{} {}", settings.method, shown(&url));
        let mut headers = HeaderMap::with_capacity(settings.headers.len() + 2);
        for (name, value) in &settings.headers {
            let value = match value {
                HeaderTemplate::Fixed(value) => value.clone(),
                HeaderTemplate::Template(template) => {
                    HeaderValue::from_str(&template.render_text(passenger)).map_err(|_| {
                        StepError::permanent(format!(
                            "{what}: header `{name}` rendered for the passenger is not a valid \
                             header value (visible ASCII only)"
                        ))
                    })?
                }
            };
            headers.insert(name.clone(), value);
        }
        if let Some(name) = &settings.idempotency_key {
            let id = HeaderValue::from_str(&passenger.id.to_string())
                .expect("a UUID is a valid header value");
            headers.insert(name.clone(), id);
        }
        let body = match &settings.body {
            Some(template) => Some(Bytes::from(template.render_text(passenger))),
            None if settings.method == reqwest::Method::DELETE => None,
            None => Some(passenger.body.data.clone()),
        };
        if body.is_some() && !headers.contains_key(header::CONTENT_TYPE) {
            let content_type = match &settings.content_type {
                Some(value) => value.clone(),
                None => HeaderValue::from_str(&passenger.body.media_type)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            };
            headers.insert(header::CONTENT_TYPE, content_type);
        }
        Ok(Prepared {
            url,
            headers,
            body,
            what,
        })
    }

    /// One attempt at a passenger's request.
    async fn attempt(
        &self,
        runtime: &Runtime,
        prepared: &Prepared,
    ) -> Result<Option<String>, Attempt> {
        let settings = &self.settings;
        let what = &prepared.what;
        let mut request = runtime
            .client
            .request(settings.method.clone(), prepared.url.clone())
            .headers(prepared.headers.clone())
            .timeout(settings.timeout);
        if let Some(body) = &prepared.body {
            request = request.body(body.clone());
        }
        let csrf = match &runtime.csrf {
            Some(session) => {
                let csrf = session
                    .get(&runtime.client, &runtime.credentials, &settings.secrets)
                    .await?;
                request = request.header(sap::CSRF_HEADER, csrf.token.as_str());
                if let Some(cookies) = &csrf.cookies {
                    request = request.header(header::COOKIE, cookies.clone());
                }
                Some(csrf)
            }
            None => None,
        };
        let (request, token) = runtime
            .credentials
            .apply(request)
            .await
            .map_err(Failure::from_error)?;
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Err(transport_failure(what, error).into()),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(read_success(&mut response, settings.keep_response).await);
        }
        let asked = retry_after(response.headers());
        let csrf_required = status == StatusCode::FORBIDDEN
            && response
                .headers()
                .get(&sap::CSRF_HEADER)
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"required"));
        let mut secrets = settings.secrets.clone();
        secrets.extend(runtime.credentials.current_secrets());
        if let Some(csrf) = &csrf {
            secrets.push(csrf.token.clone());
        }
        let excerpt = body_excerpt(&mut response, ERROR_BODY_CHARS, &secrets).await;
        let message = format!("{what}: HTTP {status}: {excerpt}");
        if let (true, Some(csrf)) = (csrf_required, csrf) {
            return Err(Attempt::CsrfRequired {
                token: csrf.token.clone(),
                error: StepError::permanent(message),
            });
        }
        if let (StatusCode::UNAUTHORIZED, Some(token)) = (status, token) {
            let error = StepError::permanent(message);
            return Err(Failure::Unauthorized { token, error }.into());
        }
        Err(if client::is_retryable_status(status) {
            Failure::retryable(message, asked)
        } else {
            Failure::Permanent(StepError::permanent(message))
        }
        .into())
    }
}

/// Reads a successful response to its end (or a bound), so that its connection can be used
/// again; with `keep`, returns its status and the start of its body.
async fn read_success(response: &mut reqwest::Response, keep: bool) -> Option<String> {
    let status = response.status();
    let mut kept = Vec::new();
    let mut read = 0;
    let mut complete = true;
    loop {
        match response.chunk().await {
            Ok(Some(piece)) => {
                read += piece.len();
                if keep && kept.len() < KEPT_BODY_BYTES {
                    let room = KEPT_BODY_BYTES - kept.len();
                    kept.extend_from_slice(&piece[..piece.len().min(room)]);
                }
                if read > MAX_DRAIN_BYTES {
                    break;
                }
            }
            Ok(None) => break,
            // The request was delivered: a body cut short changes nothing about that.
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    if !keep {
        return None;
    }
    let mut text = format!("HTTP {status}");
    if !kept.is_empty() {
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&kept));
        if read > kept.len() || !complete {
            text.push('…');
        }
    }
    Some(text)
}
