//! The queue browser: passengers newest first, filtered by pipeline, state, time range and text
//! in external_id or source_system; keyset pagination, so the millionth page is as fast as the
//! first.

use axum::extract::{Extension, State};
use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use ferry_core::{PassengerId, Timestamp};
use ferry_store::{PassengerState, QueueEntry, QueueFilter};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::Page;
use super::runs::{non_empty, scoped_client};
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::layout::{badge, link, when};

pub const PAGE_SIZE: usize = 50;

/// Filters of the queue browser, from the query string.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct QueueQuery {
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub pipeline: String,
    #[serde(default)]
    pub state: String,
    /// Text in external_id or source_system.
    #[serde(default)]
    pub text: String,
    /// Created at or after: `2026-11-23`, `2026-11-23T08:00` or RFC 3339.
    #[serde(default)]
    pub since: String,
    /// Created before.
    #[serde(default)]
    pub until: String,
    /// Only passengers older than this one (the next page).
    pub before: Option<PassengerId>,
}

impl QueueQuery {
    /// The store filter, limited to what `principal` may see.
    pub fn filter(&self, principal: &Principal) -> ApiResult<QueueFilter> {
        let state = match self.state.trim() {
            "" => None,
            text => Some(text.parse::<PassengerState>().map_err(ApiError::invalid)?),
        };
        Ok(QueueFilter {
            client: scoped_client(principal, &self.client),
            pipeline: non_empty(&self.pipeline),
            state,
            text: non_empty(&self.text),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
        })
    }

    /// The query string of these filters, for links to other pages of the same list.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("client", self.client.clone()),
            ("pipeline", self.pipeline.clone()),
            ("state", self.state.clone()),
            ("text", self.text.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
        ]
    }
}

/// A time from a filter field, in UTC.
pub fn time(key: &str, text: &str) -> ApiResult<Option<Timestamp>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    for format in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Some(Utc.from_utc_datetime(&at)));
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Some(
            Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight")),
        ));
    }
    Err(ApiError::invalid(format!(
        "{key}: `{text}` is not a time; write 2026-11-23, 2026-11-23T08:00 or RFC 3339 (UTC)"
    )))
}

#[derive(Serialize)]
pub struct QueuePage {
    pub passengers: Vec<QueueEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next: Option<PassengerId>,
}

async fn load(state: &AppState, principal: &Principal, query: &QueueQuery) -> ApiResult<QueuePage> {
    let filter = query.filter(principal)?;
    let entries = state.store.list(&filter, query.before, PAGE_SIZE).await?;
    let next = (entries.len() == PAGE_SIZE)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(QueuePage {
        passengers: entries,
        next,
    })
}

pub async fn api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<QueueQuery>,
) -> ApiResult<Json<QueuePage>> {
    Ok(Json(load(&state, &principal, &query).await?))
}

pub async fn page(
    State(state): State<AppState>,
    page: Page,
    Query(query): Query<QueueQuery>,
) -> ApiResult<Markup> {
    let list = load(&state, &page.principal, &query).await?;
    let body = html! {
        form.filters method="get" action="/queue" {
            @if page.principal.is_root() {
                label { "Client" input name="client" value=(query.client); }
            }
            label { "Pipeline" input name="pipeline" value=(query.pipeline); }
            label { "State" select name="state" {
                option value="" { "any" }
                @for s in PassengerState::ALL {
                    option value=(s.as_str()) selected[query.state == s.as_str()] { (s.as_str()) }
                }
            } }
            label { "Text in external id or source" input name="text" value=(query.text); }
            label { "Created since (UTC)" input name="since" type="datetime-local" value=(query.since); }
            label { "until" input name="until" type="datetime-local" value=(query.until); }
            button type="submit" { "Filter" }
            @if page.chrome.is_administrator() {
                a href=(link("/export/queue", &[query.pairs(), vec![("format", "csv".to_string())]].concat())) { "Export CSV" }
            }
        }
        (table(&list.passengers))
        div.pager {
            @if query.before.is_some() {
                a href=(link("/queue", &query.pairs())) { "← Newest" }
            }
            @if let Some(next) = list.next {
                a href=(link("/queue", &[query.pairs(), vec![("before", next.to_string())]].concat())) { "Older →" }
            }
        }
    };
    Ok(page.render("Queue", body))
}

/// The queue table, shared with the dead letters and a split parent's children.
pub fn table(entries: &[QueueEntry]) -> Markup {
    html! {
        table #queue data-live {
            thead { tr {
                th { "Passenger" } th { "Pipeline" } th { "Source" } th { "External id" }
                th { "State" } th { "Created" } th { "Updated" } th { "Last error" }
            } }
            tbody {
                @for e in entries {
                    tr {
                        td { a href={ "/passengers/" (e.id) } { code { "…" (e.id.to_string()[24..]) } } }
                        td { (e.client) "/" (e.pipeline) }
                        td { (e.source_system) }
                        td { a href={ "/passengers/" (e.id) } { (e.external_id) } }
                        td { (badge(e.state.as_str())) }
                        td { (when(e.created_at)) }
                        td { (when(e.updated_at)) }
                        td.error { (e.last_error.as_deref().unwrap_or("")) }
                    }
                }
                @if entries.is_empty() { tr { td colspan="8" .muted { "No passengers match." } } }
            }
        }
    }
}
