//! The SAP presets of the `http` pusher.
//!
//! `sap_idoc` posts IDoc XML to the IDoc inbound service of the ICF (`/sap/bc/idoc_xml`).
//! `sap_odata` writes through an OData service (Gateway), which refuses a modifying request
//! without a CSRF token: a `GET` with `X-CSRF-Token: Fetch` hands one out together with the
//! session cookies it belongs to, and both go with every later request. When the session ends,
//! the service answers `403` with `X-CSRF-Token: Required`, and a new token is fetched.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::StepError;
use reqwest::Url;
use reqwest::header::{self, HeaderName, HeaderValue};

use super::client::{self, Credentials, Failure, body_excerpt, shown, transport_failure};

/// Where the IDoc XML inbound service listens, below the system's base URL.
pub(crate) const IDOC_PATH: &str = "/sap/bc/idoc_xml";

/// The header of the CSRF token.
pub(crate) const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

/// How much of the token fetch's answer is read: the service document is small.
const MAX_FETCH_BODY: usize = 1024 * 1024;

/// A CSRF token and the session cookies it belongs to.
#[derive(Debug)]
pub(crate) struct Csrf {
    pub token: String,
    /// The `Cookie` header that goes with the token; `None` when the service set none.
    pub cookies: Option<HeaderValue>,
}

/// The CSRF session of one `sap_odata` pusher, shared by its requests.
#[derive(Debug)]
pub(crate) struct CsrfSession {
    /// What is fetched for a token (with `sap-client`, when configured).
    url: Url,
    timeout: Duration,
    /// The current token; held while one is fetched so that requests arriving meanwhile wait
    /// for it.
    current: tokio::sync::Mutex<Option<Arc<Csrf>>>,
}

impl CsrfSession {
    pub(crate) fn new(url: Url, timeout: Duration) -> CsrfSession {
        CsrfSession {
            url,
            timeout,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The current token, fetched first if there is none.
    pub(crate) async fn get(
        &self,
        client: &reqwest::Client,
        credentials: &Credentials,
        secrets: &[String],
    ) -> Result<Arc<Csrf>, Failure> {
        let mut current = self.current.lock().await;
        if let Some(csrf) = &*current {
            return Ok(Arc::clone(csrf));
        }
        let csrf = Arc::new(self.fetch(client, credentials, secrets).await?);
        *current = Some(Arc::clone(&csrf));
        Ok(csrf)
    }

    /// Forgets `token` if it is still the current one: the service said it is no longer valid.
    pub(crate) async fn reject(&self, token: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|csrf| csrf.token == token) {
            *current = None;
        }
    }

    /// One `GET` with `X-CSRF-Token: Fetch`.
    async fn fetch(
        &self,
        client: &reqwest::Client,
        credentials: &Credentials,
        secrets: &[String],
    ) -> Result<Csrf, Failure> {
        let what = format!("CSRF token fetch GET {}", shown(&self.url));
        let request = client
            .get(self.url.clone())
            .header(CSRF_HEADER, "Fetch")
            .header(header::ACCEPT, "application/json")
            .timeout(self.timeout);
        let (request, _token) = credentials
            .apply(request)
            .await
            .map_err(Failure::from_error)?;
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Err(transport_failure(&what, error)),
        };
        let status = response.status();
        if !status.is_success() {
            let retry_after = client::retry_after(response.headers());
            let mut secrets = secrets.to_vec();
            secrets.extend(credentials.current_secrets());
            let excerpt = body_excerpt(&mut response, 500, &secrets).await;
            let message = format!("{what}: HTTP {status}: {excerpt}");
            return Err(if client::is_retryable_status(status) {
                Failure::retryable(message, retry_after)
            } else {
                Failure::Permanent(StepError::permanent(message))
            });
        }
        let token = response
            .headers()
            .get(&CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|token| !token.is_empty() && !token.eq_ignore_ascii_case("required"))
            .map(str::to_string);
        let cookies: Vec<String> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|value| value.split(';').next())
            .map(str::trim)
            .filter(|pair| pair.contains('='))
            .map(str::to_string)
            .collect();
        // Read the answer to its end (or a bound), so that its connection can be used again.
        let mut read = 0;
        while read < MAX_FETCH_BODY {
            match response.chunk().await {
                Ok(Some(piece)) => read += piece.len(),
                _ => break,
            }
        }
        let Some(token) = token else {
            return Err(Failure::Permanent(StepError::permanent(format!(
                "{what}: HTTP {status} without an X-CSRF-Token header; is `csrf_url` a URL of \
                 the OData service?"
            ))));
        };
        let cookies = match cookies.is_empty() {
            true => None,
            false => HeaderValue::from_str(&cookies.join("; ")).ok(),
        };
        Ok(Csrf { token, cookies })
    }
}
