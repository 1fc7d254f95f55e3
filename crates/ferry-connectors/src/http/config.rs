//! The `http` puller's configuration, as written in a pipeline definition.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

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
    /// Credentials: `{ bearer: TOKEN }` or `{ basic: { user: U, password: P } }`. Never logged
    /// or shown in errors. Default none.
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
        }
    }
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
