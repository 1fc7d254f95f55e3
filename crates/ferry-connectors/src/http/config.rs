//! The `http` puller's configuration, as written in a pipeline definition.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::client::{Auth, Scalar};
use crate::columns::ColumnConfig;

/// Configuration of the `http` puller.
///
/// ```yaml
/// pullers:
///   - type: http
///     url: https://api.example.com/v1/customers
///     auth: { bearer: "${API_TOKEN}" }
///     records: /data
///     pagination: { next_url: /links/next }
///     columns:
///       - { name: id, type: integer }
///       - { name: city, from: /address/city }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPullerConfig {
    /// The URL of the first page, `http` or `https`. Required.
    pub url: String,
    /// `GET` or `POST`. Default `GET`.
    #[serde(default)]
    pub method: Method,
    /// Request headers, e.g. `{ Accept: application/json }`. Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, Scalar>,
    /// Query parameters added to the first page's URL, e.g. `{ updated_since: "2024-01-01" }`.
    /// Default none.
    #[serde(default)]
    pub query: BTreeMap<String, Scalar>,
    /// The body of a `POST`: JSON text, or the JSON written as YAML. Sent with every page
    /// request. Default none.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Credentials: `{ bearer: TOKEN }`, `{ basic: { user: U, password: P } }` or `{ oauth2:
    /// { token_url: URL, client_id: ID, client_secret: SECRET, scopes: [..] } }` (see
    /// `crate::oauth::OAuthConfig`). Never logged or shown in errors. Default none.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// JSON pointer to the array of records in each response, e.g. `/data`. Default: the
    /// response is the array.
    #[serde(default)]
    pub records: String,
    /// How to get the next page: `{ next_url: POINTER }` (the next page's URL in the response,
    /// absolute or relative; none, null or empty ends), `{ page: { param: page, start: 1 } }`
    /// (a page number parameter; an empty page ends), `{ offset: { param: offset,
    /// limit_param: limit, limit: 100 } }` (a record offset; a page shorter than `limit` ends)
    /// or `{ link_header: true }` (the `Link: <…>; rel="next"` response header). Default: one
    /// page.
    #[serde(default)]
    pub pagination: Option<Pagination>,
    /// The most pages one run reads; reaching it ends the load there, with a warning. Default
    /// 1000.
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// Time limit of each request, e.g. `30s`. Default `30s`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// How often a request is tried again after a connection error, a timeout, HTTP 408, 429
    /// or 5xx: after the `Retry-After` the server sends (seconds or an HTTP date, up to 60
    /// seconds), else after 1s, 2s, 4s … up to 60s. Default 5.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Rows per chunk (one passenger per chunk). Default 10000.
    #[serde(default)]
    pub chunk_rows: Option<usize>,
    /// The target columns: their names, the field or JSON pointer each comes from, and its
    /// type (see `crate::columns`). Default: the fields of the first record, as `text`.
    #[serde(default)]
    pub columns: Option<Vec<ColumnConfig>>,
}

fn default_max_pages() -> u32 {
    1000
}

fn default_timeout() -> String {
    "30s".into()
}

fn default_retries() -> u32 {
    5
}

/// The request method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Method {
    #[default]
    #[serde(rename = "GET", alias = "get")]
    Get,
    #[serde(rename = "POST", alias = "post")]
    Post,
}

/// How the next page is found.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// A JSON pointer to the next page's URL in each response.
    NextUrl(String),
    /// A page number parameter.
    Page(PageParam),
    /// A record offset parameter.
    Offset(OffsetParam),
    /// The `Link` response header's `rel="next"`; `true` to use it.
    LinkHeader(bool),
}

/// `pagination: { page: … }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParam {
    /// Name of the query parameter holding the page number, e.g. `page`. Required.
    pub param: String,
    /// Number of the first page. Default 1.
    #[serde(default = "default_start")]
    pub start: u64,
}

fn default_start() -> u64 {
    1
}

/// `pagination: { offset: … }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetParam {
    /// Name of the query parameter holding the offset of the page's first record (0 first),
    /// e.g. `offset`. Required.
    pub param: String,
    /// Name of the query parameter holding the page size, e.g. `limit`. Default: none is sent.
    #[serde(default)]
    pub limit_param: Option<String>,
    /// Records per page: a page with fewer ends the load. Required.
    pub limit: u64,
}

/// Configuration of the `http` pusher: one request per passenger.
///
/// ```yaml
/// pushers:
///   - type: http
///     url: https://api.example.com/v1/orders/{external_id}
///     method: PUT
///     headers: { X-Source: "{source_system}" }
///     auth:
///       oauth2:
///         token_url: https://login.example.com/oauth2/token
///         client_id: ferry
///         client_secret: "${ORDERS_SECRET}"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPusherConfig {
    /// Where each request goes, `http` or `https`: a template whose placeholders (`{id}`,
    /// `{external_id}`, `{source_system}`, `{metadata.KEY}`, …) are filled in from the
    /// passenger, percent-encoded; scheme, host and port are written out. With `profile:
    /// sap_idoc`, the system's base URL (`https://sap.example.com:44300`). Required.
    pub url: String,
    /// `POST`, `PUT`, `PATCH` or `DELETE`. Default `POST`.
    #[serde(default)]
    pub method: PushMethod,
    /// Request headers; the values are templates, e.g. `{ X-Order: "{metadata.order}" }`.
    /// Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, Scalar>,
    /// Query parameters added to the URL; the values are templates. Default none.
    #[serde(default)]
    pub query: BTreeMap<String, Scalar>,
    /// The request body as a template, sent as `text/plain; charset=utf-8` unless `headers`
    /// set a `Content-Type`. Default: the passenger's body, with its media type as
    /// `Content-Type` (a `DELETE` sends none).
    #[serde(default)]
    pub body: Option<String>,
    /// Credentials: `{ bearer: TOKEN }`, `{ basic: { user: U, password: P } }` or `{ oauth2:
    /// { token_url: URL, client_id: ID, client_secret: SECRET, scopes: [..] } }` (a token
    /// refused with 401 is fetched anew once). Never logged or shown in errors. Default none.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// The header that carries the passenger's id, the same on every attempt and after a
    /// restart, so that the target can tell a request it already took: `true` for
    /// `Idempotency-Key`, another header's name, or `false` for none. Default `true`.
    #[serde(default)]
    pub idempotency_key: IdempotencyKey,
    /// Requests in flight at once within one push, over one pool of kept-alive connections.
    /// Default 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Time limit of each request, e.g. `30s`. Default `30s`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// How often a request is tried again within a push after a connection error, a timeout,
    /// HTTP 408, 429 or 5xx: after the `Retry-After` the server sends (up to 60 seconds), else
    /// after 1s, 2s, 4s …; then the step fails retryably and the pipeline's retry policy takes
    /// over. Default 3.
    #[serde(default = "default_push_retries")]
    pub retries: u32,
    /// Keep the status and (the first 4 KiB of) the body of each successful response as the
    /// passenger's result, shown on its page in the console. Default false.
    #[serde(default)]
    pub keep_response: bool,
    /// A preset for a system: `sap_idoc` (IDoc XML to `{url}/sap/bc/idoc_xml`) or `sap_odata`
    /// (a CSRF token fetched first and sent with each request). Default none.
    #[serde(default)]
    pub profile: Option<Profile>,
    /// With a `profile`: the SAP client (`Mandant`), three digits, sent as the `sap-client`
    /// query parameter of every request. Default none (the system's default client).
    #[serde(default)]
    pub sap_client: Option<Scalar>,
    /// With `profile: sap_odata`: the URL fetched for the CSRF token, usually the service's
    /// root. Default: `url` up to its last `/`.
    #[serde(default)]
    pub csrf_url: Option<String>,
}

fn default_concurrency() -> usize {
    16
}

fn default_push_retries() -> u32 {
    3
}

/// The method of the `http` pusher's requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum PushMethod {
    #[default]
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "PUT", alias = "put")]
    Put,
    #[serde(rename = "PATCH", alias = "patch")]
    Patch,
    #[serde(rename = "DELETE", alias = "delete")]
    Delete,
}

/// `idempotency_key: true | false | HEADER`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IdempotencyKey {
    On(bool),
    Header(String),
}

impl Default for IdempotencyKey {
    fn default() -> Self {
        IdempotencyKey::On(true)
    }
}

/// Presets of the `http` pusher for particular systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// SAP's IDoc XML inbound service: the body (an IDoc as XML) is posted to
    /// `{url}/sap/bc/idoc_xml` as `application/xml`.
    SapIdoc,
    /// An SAP OData service: a `GET` of `csrf_url` with `X-CSRF-Token: Fetch` gets a token and
    /// session cookies, sent with every request; a `403` with `X-CSRF-Token: Required` (an
    /// expired session) fetches them anew once.
    SapOdata,
}
