//! Runs, newest first, and one run with its log (filtered by level).

use axum::extract::{Extension, State};
use ferry_core::Timestamp;
use ferry_store::{LogLevel, RunFilter, RunRecord, RunStatus};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::Page;
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::layout::{badge, link, maybe_when, when};

const PAGE_SIZE: usize = 50;

/// Filters of the runs list, from the query string.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RunQuery {
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub pipeline: String,
    #[serde(default)]
    pub status: String,
    /// Only runs older than this id (the next page).
    pub before: Option<i64>,
}

impl RunQuery {
    /// The store filter, limited to what `principal` may see.
    pub fn filter(&self, principal: &Principal) -> ApiResult<RunFilter> {
        let status = match self.status.as_str() {
            "" => None,
            text => Some(RunStatus::parse(text).ok_or_else(|| {
                ApiError::invalid(format!(
                    "unknown status `{text}`; statuses are running, succeeded, partial, failed"
                ))
            })?),
        };
        Ok(RunFilter {
            client: scoped_client(principal, &self.client),
            pipeline: non_empty(&self.pipeline),
            status,
            ..RunFilter::default()
        })
    }
}

/// The client filter a principal may use: root chooses freely, everyone else sees their own.
pub fn scoped_client(principal: &Principal, asked: &str) -> Option<String> {
    match principal.scope() {
        Some(own) => Some(own.to_string()),
        None => non_empty(asked),
    }
}

pub fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[derive(Serialize)]
pub struct RunList {
    pub runs: Vec<RunRecord>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next: Option<i64>,
}

async fn list(state: &AppState, principal: &Principal, query: &RunQuery) -> ApiResult<RunList> {
    let filter = query.filter(principal)?;
    let runs = state
        .store
        .runs_page(&filter, query.before, PAGE_SIZE)
        .await?;
    let next = (runs.len() == PAGE_SIZE)
        .then(|| runs.last().map(|r| r.id))
        .flatten();
    Ok(RunList { runs, next })
}

pub async fn api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<RunQuery>,
) -> ApiResult<Json<RunList>> {
    Ok(Json(list(&state, &principal, &query).await?))
}

pub async fn page(
    State(state): State<AppState>,
    page: Page,
    Query(query): Query<RunQuery>,
) -> ApiResult<Markup> {
    let list = list(&state, &page.principal, &query).await?;
    let body = html! {
        form.filters method="get" action="/runs" {
            @if page.principal.is_root() {
                label { "Client" input name="client" value=(query.client); }
            }
            label { "Pipeline" input name="pipeline" value=(query.pipeline); }
            label { "Status" select name="status" {
                option value="" { "any" }
                @for status in ["running", "succeeded", "partial", "failed"] {
                    option value=(status) selected[query.status == status] { (status) }
                }
            } }
            button type="submit" { "Filter" }
        }
        table #runs data-live {
            thead { tr {
                th { "Run" } th { "Pipeline" } th { "Status" } th { "Started" } th { "Finished" }
                th.num { "Pulled" } th.num { "Seated" } th.num { "Duplicates" } th.num { "Failed" } th { "Error" }
            } }
            tbody {
                @for run in &list.runs {
                    tr {
                        td { a href={ "/runs/" (run.id) } { "#" (run.id) } }
                        td { a href={ "/pipelines/" (run.client) "/" (run.pipeline) } { (run.client) "/" (run.pipeline) } }
                        td { (badge(run.status.as_str())) }
                        td { (when(run.started_at)) }
                        td { (maybe_when(run.finished_at)) }
                        td.num { (run.counts.pulled) } td.num { (run.counts.seated) } td.num { (run.counts.duplicates) } td.num { (run.counts.failed) }
                        td.error { (run.error.as_deref().unwrap_or("")) }
                    }
                }
                @if list.runs.is_empty() { tr { td colspan="10" .muted { "No runs match." } } }
            }
        }
        @if let Some(next) = list.next {
            div.pager { a href=(link("/runs", &[("client", query.client.clone()), ("pipeline", query.pipeline.clone()), ("status", query.status.clone()), ("before", next.to_string())])) { "Older runs →" } }
        }
    };
    Ok(page.render("Runs", body))
}

#[derive(Deserialize)]
pub struct LogQuery {
    /// Lowest level shown: info (everything), warn or error.
    #[serde(default)]
    level: String,
}

#[derive(Serialize)]
pub struct LogLineView {
    pub at: Timestamp,
    pub level: &'static str,
    pub message: String,
}

#[derive(Serialize)]
pub struct RunDetail {
    pub run: RunRecord,
    pub log: Vec<LogLineView>,
}

async fn detail(
    state: &AppState,
    principal: &Principal,
    id: i64,
    level: &str,
) -> ApiResult<RunDetail> {
    let missing = || ApiError::not_found(format!("no run {id}"));
    let run = state.store.run(id).await?.ok_or_else(missing)?;
    if !principal.sees(&run.client) {
        return Err(missing());
    }
    let lowest = match level {
        "" => LogLevel::Info,
        text => LogLevel::parse(text).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown level `{text}`; levels are info, warn, error"
            ))
        })?,
    };
    let log = state
        .store
        .run_logs(id)
        .await?
        .into_iter()
        .filter(|line| line.level >= lowest)
        .map(|line| LogLineView {
            at: line.at,
            level: line.level.as_str(),
            message: line.message,
        })
        .collect();
    Ok(RunDetail { run, log })
}

pub async fn detail_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Json<RunDetail>> {
    Ok(Json(detail(&state, &principal, id, &query.level).await?))
}

pub async fn detail_page(
    State(state): State<AppState>,
    page: Page,
    Path(id): Path<i64>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Markup> {
    let RunDetail { run, log } = detail(&state, &page.principal, id, &query.level).await?;
    let body = html! {
        dl.grid {
            dt { "Pipeline" } dd { a href={ "/pipelines/" (run.client) "/" (run.pipeline) } { (run.client) "/" (run.pipeline) } }
            dt { "Status" } dd { (badge(run.status.as_str())) }
            dt { "Started" } dd { (when(run.started_at)) }
            dt { "Finished" } dd { (maybe_when(run.finished_at)) }
            dt { "Counts" } dd { (run.counts.pulled) " pulled, " (run.counts.seated) " seated, " (run.counts.duplicates) " duplicates, " (run.counts.failed) " failed" }
            dt { "Definition version" } dd { code { (run.version) } }
            @if let Some(error) = &run.error { dt { "Error" } dd.error { (error) } }
        }
        h2 { "Log" }
        form.filters method="get" {
            label { "Level" select name="level" {
                @for level in ["info", "warn", "error"] {
                    option value=(level) selected[query.level == level] { (level) " and above" }
                }
            } }
            button type="submit" { "Show" }
        }
        table #log data-live {
            thead { tr { th { "At" } th { "Level" } th { "Message" } } }
            tbody {
                @for line in &log {
                    tr { td { (when(line.at)) } td { (badge(line.level)) } td { (line.message) } }
                }
                @if log.is_empty() { tr { td colspan="3" .muted { "No log lines at this level." } } }
            }
        }
    };
    Ok(page.render(&format!("Run #{}", run.id), body))
}
