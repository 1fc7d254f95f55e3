//! The `http` puller: one run reads every page of a JSON API as one load of record batches.
//!
//! Pages are fetched one at a time; each is converted into the current chunk as soon as it
//! arrives and then dropped, so memory holds one page and the chunks not yet handed out. A
//! full chunk is held back until the next row or the end of the pages shows whether it is the
//! last one of the load.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::records::{self, BatchWriter, Chunk};
use ferry_core::{
    Body, BuildContext, BuildError, Passenger, Pulled, Puller, PullerFactory, Seated, StepError,
};
use reqwest::header::{self, HeaderMap};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tracing::{debug, warn};

use super::client::{
    self, Credentials, Failure, MAX_RETRY_WAIT, backoff, body_excerpt, is_retryable_status,
    retry_after, shown, transport_failure,
};
use super::config::{HttpPullerConfig, Method, Pagination};
use crate::columns::{self, JsonPlan, Mapping};

/// The largest response body read; a bigger page fails the run.
const MAX_PAGE_BYTES: usize = 256 * 1024 * 1024;

/// The largest `chunk_rows`.
const MAX_CHUNK_ROWS: usize = 1_000_000;

/// How much of an error response's body goes into the message.
const BODY_EXCERPT_CHARS: usize = 200;

/// Builds `http` pullers.
pub struct HttpPullerFactory;

impl PullerFactory for HttpPullerFactory {
    const TYPE: &'static str = "http";
    type Config = HttpPullerConfig;

    fn build(
        &self,
        config: HttpPullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let settings = Settings::validate(config)?;
        Ok(Box::new(HttpPuller {
            settings: Arc::new(settings),
            client: None,
            run: None,
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            component: ctx.component.clone(),
        }))
    }
}

/// How the next page is found, validated.
#[derive(Debug)]
enum Paging {
    /// One page.
    None,
    /// The next page's URL at this pointer (its segments) in each response.
    NextUrl(Vec<String>),
    Page {
        param: String,
        start: u64,
    },
    Offset {
        param: String,
        limit_param: Option<String>,
        limit: u64,
    },
    LinkHeader,
}

/// An `http` puller's configuration, validated.
#[derive(Debug)]
struct Settings {
    url: Url,
    method: Method,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    /// JSON text.
    body: Option<String>,
    auth: Option<super::Auth>,
    records: Vec<String>,
    paging: Paging,
    max_pages: u32,
    timeout: Duration,
    retries: u32,
    chunk_rows: usize,
    mapping: Mapping,
    /// `http:<host>`.
    source_system: String,
}

impl Settings {
    /// Checks the configuration without connecting to anything (validation calls this too).
    fn validate(config: HttpPullerConfig) -> Result<Settings, BuildError> {
        let nested = |key: &str, inner: &str, message: String| BuildError {
            path: vec![key.into(), inner.into()],
            message,
            within: None,
        };
        let url = Url::parse(&config.url).map_err(|error| {
            BuildError::at(
                "url",
                format!("not a URL ({error}); write e.g. `https://api.example.com/v1/items`"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BuildError::at(
                "url",
                format!("the scheme is `{}`; valid are http and https", url.scheme()),
            ));
        }
        let Some(host) = url.host_str().filter(|host| !host.is_empty()) else {
            return Err(BuildError::at("url", "the URL has no host"));
        };
        let source_system = format!("http:{host}");

        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header_name = client::header_name(name)?;
            let header_value = client::header_value(name, &value.to_string())?;
            headers.insert(header_name, header_value);
        }
        let query = config
            .query
            .iter()
            .map(|(name, value)| (name.clone(), value.to_string()))
            .collect();

        let body = match config.body {
            None => None,
            Some(_) if config.method != Method::Post => {
                return Err(BuildError::at("body", "only a POST has a body"));
            }
            Some(Value::String(text)) => {
                if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
                    return Err(BuildError::at(
                        "body",
                        format!("not JSON: {error}; write JSON text or the JSON as YAML"),
                    ));
                }
                Some(text)
            }
            Some(value) => Some(value.to_string()),
        };
        if let Some(auth) = &config.auth {
            auth.validate()?;
        }
        let records = columns::parse_pointer(&config.records)
            .map_err(|message| BuildError::at("records", message))?;
        let paging = match config.pagination {
            None | Some(Pagination::LinkHeader(false)) => Paging::None,
            Some(Pagination::LinkHeader(true)) => Paging::LinkHeader,
            Some(Pagination::NextUrl(pointer)) => {
                if pointer.is_empty() {
                    return Err(nested(
                        "pagination",
                        "next_url",
                        "give the JSON pointer to the next page's URL, e.g. `/links/next`".into(),
                    ));
                }
                let segments = columns::parse_pointer(&pointer)
                    .map_err(|message| nested("pagination", "next_url", message))?;
                Paging::NextUrl(segments)
            }
            Some(Pagination::Page(page)) => {
                if page.param.is_empty() {
                    return Err(BuildError {
                        path: vec!["pagination".into(), "page".into(), "param".into()],
                        message: "name the page number's query parameter, e.g. `page`".into(),
                        within: None,
                    });
                }
                Paging::Page {
                    param: page.param,
                    start: page.start,
                }
            }
            Some(Pagination::Offset(offset)) => {
                let at = |key: &str, message: &str| BuildError {
                    path: vec!["pagination".into(), "offset".into(), key.into()],
                    message: message.into(),
                    within: None,
                };
                if offset.param.is_empty() {
                    return Err(at(
                        "param",
                        "name the offset's query parameter, e.g. `offset`",
                    ));
                }
                if offset.limit == 0 {
                    return Err(at("limit", "must be at least 1"));
                }
                if offset.limit_param.as_deref() == Some("") {
                    return Err(at("limit_param", "must not be empty"));
                }
                Paging::Offset {
                    param: offset.param,
                    limit_param: offset.limit_param,
                    limit: offset.limit,
                }
            }
        };
        if config.max_pages == 0 {
            return Err(BuildError::at("max_pages", "must be at least 1"));
        }
        let timeout = ferry_core::duration::parse(&config.timeout)
            .map_err(|message| BuildError::at("timeout", message))?;
        if timeout.is_zero() {
            return Err(BuildError::at("timeout", "must be more than 0s"));
        }
        if config.retries > 20 {
            return Err(BuildError::at("retries", "must be at most 20"));
        }
        let chunk_rows = config.chunk_rows.unwrap_or(records::DEFAULT_CHUNK_ROWS);
        if !(1..=MAX_CHUNK_ROWS).contains(&chunk_rows) {
            return Err(BuildError::at(
                "chunk_rows",
                format!("must be between 1 and {MAX_CHUNK_ROWS}"),
            ));
        }
        let mapping = Mapping::validate(config.columns)?;
        mapping.check_json_sources()?;
        Ok(Settings {
            url,
            method: config.method,
            headers,
            query,
            body,
            auth: config.auth,
            records,
            paging,
            max_pages: config.max_pages,
            timeout,
            retries: config.retries,
            chunk_rows,
            mapping,
            source_system,
        })
    }
}

/// Reads a JSON API, page by page.
pub struct HttpPuller {
    settings: Arc<Settings>,
    /// Made on the first pull, not at build time, with the credentials that go through it.
    client: Option<(reqwest::Client, Credentials)>,
    /// The load being read; `None` between runs.
    run: Option<Run>,
    /// `client/pipeline`, for logs.
    pipeline: String,
    component: String,
}

/// The page a run asks for next.
#[derive(Clone, Debug)]
enum NextPage {
    /// The configured URL, or a URL the previous page named.
    Url {
        url: Url,
        first: bool,
    },
    Page(u64),
    Offset(u64),
}

/// One load: its pages, and its chunks as they fill.
#[derive(Debug)]
struct Run {
    load: String,
    /// `None`: no page left.
    next: Option<NextPage>,
    /// Pages read so far.
    pages: u32,
    plan: Option<JsonPlan>,
    /// The chunk being filled.
    writer: Option<BatchWriter>,
    /// Finished chunks not handed out yet, with their row counts.
    ready: VecDeque<(Bytes, usize)>,
    /// Chunks handed out so far.
    emitted: u64,
    /// No page left and the last chunk finished.
    finished: bool,
    scratch: String,
}

impl Run {
    fn new(settings: &Settings) -> Run {
        let next = match &settings.paging {
            Paging::Page { start, .. } => NextPage::Page(*start),
            Paging::Offset { .. } => NextPage::Offset(0),
            _ => NextPage::Url {
                url: settings.url.clone(),
                first: true,
            },
        };
        Run {
            load: uuid::Uuid::now_v7().to_string(),
            next: Some(next),
            pages: 0,
            plan: None,
            writer: None,
            ready: VecDeque::new(),
            emitted: 0,
            finished: false,
            scratch: String::new(),
        }
    }

    /// Every chunk handed out.
    fn done(&self) -> bool {
        self.finished && self.ready.is_empty()
    }

    /// Converts the records of one page into chunks; returns how many there were.
    fn add_page(&mut self, settings: &Settings, page: &[u8]) -> Result<u64, StepError> {
        let mut count = 0u64;
        let Run {
            plan,
            writer,
            ready,
            scratch,
            ..
        } = self;
        let read = columns::json_records(
            serde_json::de::SliceRead::new(page),
            &settings.records,
            |record| {
                count += 1;
                let plan = plan.get_or_insert_with(|| settings.mapping.plan_json(Some(&record)));
                let out = writer.get_or_insert_with(|| BatchWriter::new(plan.columns()));
                plan.write_row(&record, out, scratch)
                    .map_err(|error| format!("record {count}: {error}"))?;
                out.end_row();
                if out.rows() >= settings.chunk_rows {
                    let full = writer.take().expect("the chunk being filled");
                    let rows = full.rows();
                    ready.push_back((full.finish().data, rows));
                }
                Ok(())
            },
        );
        if let Err(error) = read {
            return Err(StepError::permanent(format!(
                "page {}: {}",
                self.pages + 1,
                error.message
            )));
        }
        self.pages += 1;
        Ok(count)
    }

    /// No page left: the chunk being filled is the last (an empty load is one empty chunk).
    fn finish(&mut self, settings: &Settings) {
        self.next = None;
        self.finished = true;
        let pending = self.writer.take();
        let nothing_yet = self.emitted == 0 && self.ready.is_empty();
        let last = match pending {
            Some(writer) if writer.rows() > 0 => Some(writer),
            _ if nothing_yet => {
                let plan = self
                    .plan
                    .get_or_insert_with(|| settings.mapping.plan_json(None));
                Some(BatchWriter::new(plan.columns()))
            }
            _ => None,
        };
        if let Some(writer) = last {
            let rows = writer.rows();
            self.ready.push_back((writer.finish().data, rows));
        }
    }

    /// The next chunk that may go: a full chunk waits until it is known whether it is the
    /// last.
    fn take_ready(&mut self, settings: &Settings) -> Option<Passenger> {
        let filling = self.writer.as_ref().is_some_and(|w| w.rows() > 0);
        if !self.finished && self.ready.len() == 1 && !filling {
            return None;
        }
        let (data, rows) = self.ready.pop_front()?;
        self.emitted += 1;
        let number = self.emitted;
        let mut passenger = Passenger::pulled(
            settings.source_system.clone(),
            format!("{}:{number}", self.load),
        );
        passenger.body = Body {
            media_type: records::MEDIA_TYPE.into(),
            data,
        };
        Chunk {
            load: self.load.clone(),
            number,
            last: self.finished && self.ready.is_empty(),
        }
        .mark(&mut passenger);
        passenger
            .metadata
            .insert(records::ROWS.into(), rows.to_string());
        Some(passenger)
    }
}

#[async_trait]
impl Puller for HttpPuller {
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        let settings = Arc::clone(&self.settings);
        let (client, credentials) = self.client()?;
        let run = self.run.get_or_insert_with(|| Run::new(&settings));
        let mut passengers = Vec::new();
        loop {
            while passengers.len() < max {
                match run.take_ready(&settings) {
                    Some(mut passenger) => {
                        // Every run reads the whole API again: a newer load supersedes an
                        // older one that was interrupted, so that it is discarded whole.
                        passenger
                            .metadata
                            .insert(records::SERIES.into(), self.component.clone());
                        passengers.push(passenger)
                    }
                    None => break,
                }
            }
            // Stop fetching once something can go: pulls stay short, and the engine pulls
            // again at once while `more` is set.
            if !passengers.is_empty() || max == 0 || run.done() {
                break;
            }
            let Some(next) = run.next.clone() else {
                run.finish(&settings);
                continue;
            };
            let page = match fetch(
                &client,
                &credentials,
                &settings,
                &next,
                &self.pipeline,
                &self.component,
            )
            .await
            {
                Ok(page) => page,
                Err(error) => {
                    // A permanent error ends the load; a retryable one leaves it where it is,
                    // so the next pull asks for the same page again.
                    if !error.retryable {
                        self.run = None;
                    }
                    return Err(error);
                }
            };
            let count = match run.add_page(&settings, &page.body) {
                Ok(count) => count,
                Err(error) => {
                    self.run = None;
                    return Err(error);
                }
            };
            let following = match next_page(&settings, &next, &page, count) {
                Ok(following) => following,
                Err(error) => {
                    self.run = None;
                    return Err(error);
                }
            };
            run.next = following;
            if run.next.is_some() && run.pages >= settings.max_pages {
                warn!(
                    pipeline = %self.pipeline,
                    component = %self.component,
                    pages = run.pages,
                    "max_pages reached; the load ends here"
                );
                run.next = None;
            }
        }
        let more = !run.done();
        if !more {
            self.run = None;
        }
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            passengers = passengers.len(),
            failures = 0,
            more,
            "pulled API pages"
        );
        Ok(Pulled {
            passengers,
            more,
            ..Pulled::default()
        })
    }

    /// Nothing to acknowledge: an API is read, not consumed.
    async fn ack(&mut self, _seated: &[Seated]) -> Result<(), StepError> {
        Ok(())
    }
}

impl HttpPuller {
    fn client(&mut self) -> Result<(reqwest::Client, Credentials), StepError> {
        if let Some(made) = &self.client {
            return Ok(made.clone());
        }
        let client = client::build_client(self.settings.timeout, true)?;
        let credentials = Credentials::new(self.settings.auth.as_ref(), &client);
        self.client = Some((client.clone(), credentials.clone()));
        Ok((client, credentials))
    }
}

/// A fetched page.
struct Page {
    body: Bytes,
    /// The URL it came from, for relative next-page URLs.
    url: Url,
    /// The `Link` header's `rel="next"`, resolved.
    link_next: Option<String>,
}

/// The URL and query of a page request.
fn request_url(settings: &Settings, next: &NextPage) -> (Url, Vec<(String, String)>) {
    let mut query = Vec::new();
    match next {
        NextPage::Url { url, first } => {
            if *first {
                query.clone_from(&settings.query);
            }
            return (url.clone(), query);
        }
        NextPage::Page(number) => {
            query.clone_from(&settings.query);
            if let Paging::Page { param, .. } = &settings.paging {
                query.push((param.clone(), number.to_string()));
            }
        }
        NextPage::Offset(offset) => {
            query.clone_from(&settings.query);
            if let Paging::Offset {
                param,
                limit_param,
                limit,
            } = &settings.paging
            {
                query.push((param.clone(), offset.to_string()));
                if let Some(limit_param) = limit_param {
                    query.push((limit_param.clone(), limit.to_string()));
                }
            }
        }
    }
    (settings.url.clone(), query)
}

/// Fetches one page, retrying as configured.
async fn fetch(
    client: &reqwest::Client,
    credentials: &Credentials,
    settings: &Settings,
    next: &NextPage,
    pipeline: &str,
    component: &str,
) -> Result<Page, StepError> {
    let (url, query) = request_url(settings, next);
    let method = match settings.method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
    };
    let mut attempt = 0;
    let mut token_renewed = false;
    loop {
        let sent = send(client, credentials, settings, &method, &url, &query).await;
        let (error, asked) = match sent {
            Ok(page) => return Ok(page),
            // An OAuth2 token the server refuses is fetched anew, once.
            Err(Failure::Unauthorized { token, error }) => match &credentials {
                Credentials::OAuth2(tokens) if !token_renewed => {
                    tokens.reject(&token);
                    token_renewed = true;
                    continue;
                }
                _ => return Err(error),
            },
            Err(Failure::Permanent(error)) => return Err(error),
            Err(Failure::Retryable { error, wait }) => (error, wait),
        };
        if attempt >= settings.retries {
            let tries = attempt + 1;
            return Err(StepError::retryable(format!(
                "{} (after {tries} attempts)",
                error.message
            )));
        }
        attempt += 1;
        let wait = match asked {
            Some(wait) if wait > MAX_RETRY_WAIT => {
                return Err(StepError::retryable(format!(
                    "{}; the server asks to wait {}s, longer than ferry waits within a pull",
                    error.message,
                    wait.as_secs()
                )));
            }
            Some(wait) => wait,
            None => backoff(attempt),
        };
        warn!(
            pipeline = %pipeline,
            component = %component,
            attempt,
            wait_ms = wait.as_millis() as u64,
            error = %error.message,
            "request failed, retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

/// One attempt at a page.
async fn send(
    client: &reqwest::Client,
    credentials: &Credentials,
    settings: &Settings,
    method: &reqwest::Method,
    url: &Url,
    query: &[(String, String)],
) -> Result<Page, Failure> {
    let what = format!("{method} {}", shown(url));
    let mut request = client
        .request(method.clone(), url.clone())
        .headers(settings.headers.clone())
        .timeout(settings.timeout);
    if !query.is_empty() {
        request = request.query(query);
    }
    if !settings.headers.contains_key(header::ACCEPT) {
        request = request.header(header::ACCEPT, "application/json");
    }
    if let Some(body) = &settings.body {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone());
    }
    let (request, token) = credentials
        .apply(request)
        .await
        .map_err(Failure::from_error)?;
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Err(transport_failure(&what, error)),
    };
    let status = response.status();
    let retry_after = retry_after(response.headers());
    if !status.is_success() {
        let mut secrets = settings
            .auth
            .as_ref()
            .map(super::Auth::secrets)
            .unwrap_or_default();
        secrets.extend(credentials.current_secrets());
        let excerpt = body_excerpt(&mut response, BODY_EXCERPT_CHARS, &secrets).await;
        let error = format!("{what}: HTTP {status}: {excerpt}");
        if let (StatusCode::UNAUTHORIZED, Some(token)) = (status, token) {
            let error = StepError::permanent(error);
            return Err(Failure::Unauthorized { token, error });
        }
        return Err(if is_retryable_status(status) {
            Failure::retryable(error, retry_after)
        } else {
            Failure::Permanent(StepError::permanent(error))
        });
    }
    if let Some(content_type) = response.headers().get(header::CONTENT_TYPE) {
        let content_type = String::from_utf8_lossy(content_type.as_bytes()).into_owned();
        if !content_type.to_ascii_lowercase().contains("json") {
            return Err(Failure::Permanent(StepError::permanent(format!(
                "{what}: the response is `{content_type}`, not JSON"
            ))));
        }
    }
    let link_next = response
        .headers()
        .get_all(header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(next_link)
        .map(str::to_string);
    let page_url = response.url().clone();
    if response
        .content_length()
        .is_some_and(|length| length > MAX_PAGE_BYTES as u64)
    {
        return Err(Failure::Permanent(StepError::permanent(format!(
            "{what}: the response is larger than {MAX_PAGE_BYTES} bytes"
        ))));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(piece)) => {
                if body.len() + piece.len() > MAX_PAGE_BYTES {
                    return Err(Failure::Permanent(StepError::permanent(format!(
                        "{what}: the response is larger than {MAX_PAGE_BYTES} bytes"
                    ))));
                }
                body.extend_from_slice(&piece);
            }
            Ok(None) => break,
            Err(error) => return Err(transport_failure(&what, error)),
        }
    }
    Ok(Page {
        body: Bytes::from(body),
        url: page_url,
        link_next,
    })
}

/// The `rel="next"` URL of a `Link` header (RFC 8288), as written.
fn next_link(header: &str) -> Option<&str> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let params_end = rest[close..].find('<').map_or(rest.len(), |i| close + i);
        // Up to the next link, without the comma between links.
        let params = rest[close + 1..params_end].trim().trim_end_matches(',');
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target);
        }
        rest = &rest[params_end..];
    }
    None
}

/// The page after `current`, which held `count` records; `None` when it was the last.
fn next_page(
    settings: &Settings,
    current: &NextPage,
    page: &Page,
    count: u64,
) -> Result<Option<NextPage>, StepError> {
    let following = match (&settings.paging, current) {
        (Paging::None, _) => None,
        (Paging::Page { .. }, NextPage::Page(number)) => {
            (count > 0).then(|| NextPage::Page(number + 1))
        }
        (Paging::Offset { limit, .. }, NextPage::Offset(offset)) => {
            (count >= *limit).then(|| NextPage::Offset(offset + count))
        }
        (Paging::NextUrl(pointer), _) => {
            let document: Value = serde_json::from_slice(&page.body).map_err(|error| {
                StepError::permanent(format!("the response is not JSON: {error}"))
            })?;
            let mut value = &document;
            for segment in pointer {
                value = match value {
                    Value::Object(map) => map.get(segment).unwrap_or(&Value::Null),
                    Value::Array(items) => segment
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| items.get(i))
                        .unwrap_or(&Value::Null),
                    _ => &Value::Null,
                };
            }
            match value {
                Value::Null => None,
                Value::String(next) if next.is_empty() => None,
                Value::String(next) => Some(resolve(settings, &page.url, next)?),
                other => {
                    return Err(StepError::permanent(format!(
                        "the next page's URL is {other}, not a string"
                    )));
                }
            }
        }
        (Paging::LinkHeader, _) => match &page.link_next {
            Some(next) => Some(resolve(settings, &page.url, next)?),
            None => None,
        },
        // A page request of another kind than configured: cannot happen.
        _ => None,
    };
    Ok(following)
}

/// A next-page URL, absolute or relative to the page that named it. Credentials go only to
/// the configured origin, so a page cannot send them elsewhere.
fn resolve(settings: &Settings, base: &Url, next: &str) -> Result<NextPage, StepError> {
    let url = base.join(next).map_err(|error| {
        StepError::permanent(format!(
            "the next page's URL `{next}` is not valid: {error}"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(StepError::permanent(format!(
            "the next page's URL has the scheme `{}`",
            url.scheme()
        )));
    }
    if settings.auth.is_some() && url.origin() != settings.url.origin() {
        return Err(StepError::permanent(format!(
            "the next page is on another site ({}); ferry sends the credentials only to {}",
            shown(&url),
            shown(&settings.url)
        )));
    }
    Ok(NextPage::Url { url, first: false })
}
