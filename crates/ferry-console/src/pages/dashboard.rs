//! The dashboard: every pipeline the principal may see, its state, last run, queue counts per
//! state and passengers seated over the last two hours.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Extension, State};
use ferry_core::Timestamp;
use ferry_store::{PassengerState, PipelineKey, RunRecord, StateCounts};
use maud::{Markup, html};
use serde::Serialize;

use super::Page;
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::Json;
use crate::layout::{badge, bars, link, maybe_when, when};

/// Width of one throughput bar.
const BUCKET: Duration = Duration::from_secs(300);
/// Bars per pipeline.
const BUCKETS: usize = 24;

/// One line of the dashboard.
#[derive(Serialize)]
pub struct PipelineSummary {
    pub client: String,
    pub pipeline: String,
    pub description: String,
    pub schedule: String,
    /// `active` or `paused`.
    pub state: &'static str,
    /// Passengers per state (states with none left out).
    pub queue: BTreeMap<&'static str, u64>,
    pub last_run: Option<RunSummary>,
    /// Passengers seated per 5 minutes over the last two hours, oldest first.
    pub seated: Vec<u64>,
    pub oldest_open: Option<Timestamp>,
}

#[derive(Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub status: &'static str,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub pulled: u64,
    pub seated: u64,
}

impl From<&RunRecord> for RunSummary {
    fn from(run: &RunRecord) -> Self {
        RunSummary {
            id: run.id,
            status: run.status.as_str(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            pulled: run.counts.pulled,
            seated: run.counts.seated,
        }
    }
}

pub fn queue_counts(counts: Option<&StateCounts>) -> BTreeMap<&'static str, u64> {
    counts
        .into_iter()
        .flatten()
        .map(|(state, n)| (state.as_str(), *n))
        .collect()
}

/// The pipelines `principal` may see, summarised.
pub async fn summaries(state: &AppState, principal: &Principal) -> ApiResult<Vec<PipelineSummary>> {
    let project = state.engine.project();
    let scope = principal.scope();
    let counts = state.store.counts(scope).await?;
    let oldest = state.store.oldest_open().await?;
    let now = chrono::Utc::now();
    let since = now - BUCKET * BUCKETS as u32;
    let mut seated: BTreeMap<PipelineKey, Vec<u64>> = BTreeMap::new();
    for point in state.store.throughput(scope, since, BUCKET).await? {
        let bucket = ((point.at - since).num_seconds().max(0) as u64 / BUCKET.as_secs()) as usize;
        let bars = seated
            .entry(point.pipeline)
            .or_insert_with(|| vec![0; BUCKETS]);
        if let Some(bar) = bars.get_mut(bucket.min(BUCKETS - 1)) {
            *bar += point.seated;
        }
    }
    let mut summaries = Vec::new();
    for def in project.pipelines().filter(|p| principal.sees(&p.client)) {
        let key = PipelineKey::new(&def.client, &def.name);
        let last_run = state.store.runs(Some(&key), 1).await?;
        summaries.push(PipelineSummary {
            client: def.client.clone(),
            pipeline: def.name.clone(),
            description: def.description.clone(),
            schedule: def.schedule.to_string(),
            state: if state.engine.is_paused(&key) {
                "paused"
            } else {
                "active"
            },
            queue: queue_counts(counts.get(&key)),
            last_run: last_run.first().map(RunSummary::from),
            seated: seated.remove(&key).unwrap_or_else(|| vec![0; BUCKETS]),
            oldest_open: oldest.get(&key).copied(),
        });
    }
    Ok(summaries)
}

pub async fn api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Vec<PipelineSummary>>> {
    Ok(Json(summaries(&state, &principal).await?))
}

pub async fn page(State(state): State<AppState>, page: Page) -> ApiResult<Markup> {
    let summaries = summaries(&state, &page.principal).await?;
    let body = html! {
        table #pipelines data-live {
            thead { tr {
                th { "Pipeline" } th { "State" } th { "Schedule" } th { "Last run" }
                @for state in PassengerState::ALL { th.num { (state.as_str().replace('_', " ")) } }
                th { "Seated, last 2 h" } th { "Oldest open" } th {}
            } }
            tbody {
                @for s in &summaries { (row(&page, s)) }
                @if summaries.is_empty() {
                    tr { td colspan="14" .muted { "No pipelines yet. Add one under clients/<client>/pipelines/." } }
                }
            }
        }
    };
    Ok(page.render("Dashboard", body))
}

fn row(page: &Page, s: &PipelineSummary) -> Markup {
    let base = format!("/pipelines/{}/{}", s.client, s.pipeline);
    html! {
        tr {
            td {
                a href=(base) { (s.client) "/" (s.pipeline) }
                @if !s.description.is_empty() { br; span.muted { (s.description) } }
            }
            td { (badge(s.state)) }
            td { (s.schedule) }
            td {
                @if let Some(run) = &s.last_run {
                    a href={ "/runs/" (run.id) } { (badge(run.status)) } " " (when(run.started_at))
                } @else { span.muted { "never" } }
            }
            @for state in PassengerState::ALL {
                @let n = s.queue.get(state.as_str()).copied().unwrap_or(0);
                td.num {
                    @if n > 0 {
                        a href=(link("/queue", &[("client", s.client.clone()), ("pipeline", s.pipeline.clone()), ("state", state.as_str().to_string())])) { (n) }
                    } @else { span.muted { "0" } }
                }
            }
            td { (bars(&s.seated)) }
            td { (maybe_when(s.oldest_open)) }
            td {
                (page.chrome.button(&format!("{base}/run"), "Run now", None))
                @if s.state == "paused" {
                    (page.chrome.button(&format!("{base}/resume"), "Resume", None))
                } @else {
                    (page.chrome.button(&format!("{base}/pause"), "Pause", None))
                }
            }
        }
    }
}
