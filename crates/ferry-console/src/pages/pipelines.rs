//! One pipeline: its definition at a glance, queue counts, recent runs; run now, pause, resume.

use axum::extract::{Extension, State};
use axum::response::Redirect;
use ferry_core::config::{ComponentDef, Pipeline};
use ferry_store::{PipelineKey, RunFilter};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::dashboard::{RunSummary, queue_counts};
use super::{Done, Notice, Page, done, json_done, record};
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::layout::{badge, link, maybe_when, when};

#[derive(Deserialize)]
pub struct PipelinePath {
    client: String,
    pipeline: String,
}

impl PipelinePath {
    fn key(&self) -> PipelineKey {
        PipelineKey::new(&self.client, &self.pipeline)
    }
}

/// The pipeline's definition, if the principal may see it.
pub fn find(state: &AppState, principal: &Principal, key: &PipelineKey) -> ApiResult<Pipeline> {
    let missing = || ApiError::not_found(format!("no pipeline {key}"));
    if !principal.sees(&key.client) {
        return Err(missing());
    }
    state
        .engine
        .project()
        .pipeline(&key.client, &key.pipeline)
        .cloned()
        .ok_or_else(missing)
}

#[derive(Serialize)]
pub struct PipelineView {
    pub client: String,
    pub pipeline: String,
    pub description: String,
    pub schedule: String,
    pub state: &'static str,
    /// Why ferry paused it by itself (too many failed runs in a row).
    pub paused_reason: Option<String>,
    pub depends_on: Vec<String>,
    pub window: Option<String>,
    pub file: String,
    pub version: String,
    pub pullers: Vec<Component>,
    pub processors: Vec<Component>,
    pub pushers: Vec<Component>,
    pub queue: std::collections::BTreeMap<&'static str, u64>,
    pub runs: Vec<RunSummary>,
}

/// A component by name and type; its settings may hold secrets and are not shown.
#[derive(Serialize)]
pub struct Component {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

fn components(defs: &[ComponentDef]) -> Vec<Component> {
    defs.iter()
        .map(|c| Component {
            name: c.name.clone(),
            type_name: c.type_name.clone(),
        })
        .collect()
}

async fn load(
    state: &AppState,
    principal: &Principal,
    key: &PipelineKey,
) -> ApiResult<PipelineView> {
    let def = find(state, principal, key)?;
    let counts = state.store.counts(Some(&key.client)).await?;
    let filter = RunFilter {
        client: Some(key.client.clone()),
        pipeline: Some(key.pipeline.clone()),
        ..RunFilter::default()
    };
    let runs = state.store.runs_page(&filter, None, 20).await?;
    let mut reasons = state.store.pause_reasons().await?;
    Ok(PipelineView {
        client: def.client.clone(),
        pipeline: def.name.clone(),
        description: def.description.clone(),
        schedule: def.schedule.to_string(),
        state: if state.engine.is_paused(key) {
            "paused"
        } else {
            "active"
        },
        paused_reason: reasons.remove(key),
        depends_on: def.depends_on.clone(),
        window: def.window.map(|w| w.to_string()),
        file: def.file.clone(),
        version: def.version.clone(),
        pullers: components(&def.pullers),
        processors: components(&def.processors),
        pushers: components(&def.pushers),
        queue: queue_counts(counts.get(key)),
        runs: runs.iter().map(RunSummary::from).collect(),
    })
}

pub async fn api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<PipelinePath>,
) -> ApiResult<Json<PipelineView>> {
    Ok(Json(load(&state, &principal, &path.key()).await?))
}

pub async fn page(
    State(state): State<AppState>,
    page: Page,
    Path(path): Path<PipelinePath>,
) -> ApiResult<Markup> {
    let view = load(&state, &page.principal, &path.key()).await?;
    let base = format!("/pipelines/{}/{}", view.client, view.pipeline);
    let list = |components: &[Component]| {
        html! {
            @for c in components { code { (c.name) } " (" (c.type_name) ") " }
            @if components.is_empty() { span.muted { "none" } }
        }
    };
    let body = html! {
        p {
            (badge(view.state)) " "
            (page.chrome.button(&format!("{base}/run"), "Run now", None))
            a href={ (base) "/peek" } { "Peek" } " "
            @if view.state == "paused" {
                (page.chrome.button(&format!("{base}/resume"), "Resume", None))
            } @else {
                (page.chrome.button(&format!("{base}/pause"), "Pause", Some("Pause this pipeline? Nothing is pulled, processed or pushed until it is resumed.")))
            }
        }
        @if let Some(reason) = &view.paused_reason { p.notice { (reason) } }
        dl.grid {
            dt { "Description" } dd { (view.description) }
            dt { "Schedule" } dd {
                (view.schedule)
                @if let Some(window) = &view.window { ", only " (window) }
            }
            @if !view.depends_on.is_empty() {
                dt { "Runs after" } dd {
                    @for master in &view.depends_on {
                        a href={ "/pipelines/" (view.client) "/" (master) } { (master) } " "
                    }
                }
            }
            dt { "Definition" } dd { a href={ "/definitions/" (view.file) } { (view.file) } " " span.muted { (&view.version[..12.min(view.version.len())]) } }
            dt { "Pullers" } dd { (list(&view.pullers)) }
            dt { "Processors" } dd { (list(&view.processors)) }
            dt { "Pushers" } dd { (list(&view.pushers)) }
            dt { "Queue" } dd {
                @for (state, n) in &view.queue {
                    a href=(link("/queue", &[("client", view.client.clone()), ("pipeline", view.pipeline.clone()), ("state", state.to_string())])) { (badge(state)) " " (n) } " "
                }
                @if view.queue.is_empty() { span.muted { "empty" } }
            }
        }
        h2 { "Recent runs" }
        table #runs data-live {
            thead { tr { th { "Run" } th { "Status" } th { "Started" } th { "Finished" } th.num { "Pulled" } th.num { "Seated" } } }
            tbody {
                @for run in &view.runs {
                    tr {
                        td { a href={ "/runs/" (run.id) } { "#" (run.id) } }
                        td { (badge(run.status)) }
                        td { (when(run.started_at)) }
                        td { (maybe_when(run.finished_at)) }
                        td.num { (run.pulled) }
                        td.num { (run.seated) }
                    }
                }
                @if view.runs.is_empty() { tr { td colspan="6" .muted { "No runs yet." } } }
            }
        }
    };
    Ok(page.render(&format!("{}/{}", view.client, view.pipeline), body))
}

/// At most this many passengers per puller in a peek.
const PEEK_MAX: usize = 10;

#[derive(Serialize)]
pub struct PeekView {
    pub puller: String,
    pub error: Option<String>,
    pub unreadable: Vec<String>,
    pub more: bool,
    pub passengers: Vec<PeekedPassenger>,
}

#[derive(Serialize)]
pub struct PeekedPassenger {
    pub source_system: String,
    pub external_id: String,
    pub media_type: String,
    pub size: usize,
    /// Where it and its split children would end: pushers, filtered, failed.
    pub fates: Vec<String>,
}

/// What the pipeline's pullers would pull now and where it would go; nothing is seated,
/// acked or pushed.
async fn peek(
    state: &AppState,
    principal: &Principal,
    key: &PipelineKey,
) -> ApiResult<Vec<PeekView>> {
    let def = find(state, principal, key)?;
    let project = state.engine.project();
    let peeked = ferry_engine::trial::peek(&state.engine.registry(), &project.dir, &def, PEEK_MAX)
        .await
        .map_err(|error| ApiError::conflict(format!("cannot peek at {key}: {error}")))?;
    Ok(peeked
        .into_iter()
        .map(|p| PeekView {
            puller: p.puller,
            error: p.error.map(|e| e.to_string()),
            unreadable: p
                .failures
                .iter()
                .map(|f| format!("{}: {}", f.external_id, f.error))
                .collect(),
            more: p.more,
            passengers: p
                .passengers
                .into_iter()
                .map(|(passenger, arrivals)| PeekedPassenger {
                    source_system: passenger.source_system,
                    external_id: passenger.external_id,
                    media_type: passenger.body.media_type,
                    size: passenger.body.data.len(),
                    fates: arrivals.iter().map(fate).collect(),
                })
                .collect(),
        })
        .collect())
}

fn fate(arrival: &ferry_engine::trial::Arrival) -> String {
    use ferry_engine::trial::Fate;
    let id = &arrival.passenger.external_id;
    match &arrival.fate {
        Fate::Pushed { pushers } if pushers.is_empty() => {
            format!("{id}: to no pusher (all skipped)")
        }
        Fate::Pushed { pushers } => format!("{id}: to {}", pushers.join(", ")),
        Fate::Filtered { processor, reason } => format!("{id}: filtered by {processor}: {reason}"),
        Fate::Split {
            processor,
            children,
        } => format!("{id}: split by {processor} into {children}"),
        Fate::Failed { processor, error } => format!(
            "{id}: fails in {processor} ({}): {error}",
            if error.retryable {
                "would be retried"
            } else {
                "would be dead"
            }
        ),
    }
}

pub async fn peek_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<PipelinePath>,
) -> ApiResult<Json<Vec<PeekView>>> {
    Ok(Json(peek(&state, &principal, &path.key()).await?))
}

pub async fn peek_page(
    State(state): State<AppState>,
    page: Page,
    Path(path): Path<PipelinePath>,
) -> ApiResult<Markup> {
    let key = path.key();
    let views = peek(&state, &page.principal, &key).await?;
    let body = html! {
        p.muted { "What the pullers would pull now (at most " (PEEK_MAX) " each) and what the processors would make of it. Nothing was seated, acknowledged or pushed." }
        @for view in &views {
            h2 { "Puller " code { (view.puller) } @if view.more { " " span.muted { "(more waiting)" } } }
            @if let Some(error) = &view.error { p.error { (error) } }
            @for line in &view.unreadable { p.error { "Unreadable: " (line) } }
            table {
                thead { tr { th { "Source" } th { "External id" } th { "Body" } th { "Would go" } } }
                tbody {
                    @for p in &view.passengers {
                        tr {
                            td { (p.source_system) } td { (p.external_id) }
                            td { (p.media_type) ", " (p.size) " bytes" }
                            td { @for fate in &p.fates { div { (fate) } } }
                        }
                    }
                    @if view.passengers.is_empty() && view.error.is_none() { tr { td colspan="4" .muted { "Nothing to pull right now." } } }
                }
            }
        }
    };
    Ok(page.render(&format!("Peek at {key}"), body))
}

/// `run`, `pause` or `resume` a pipeline.
#[derive(Deserialize)]
pub struct ActionPath {
    client: String,
    pipeline: String,
    action: String,
}

async fn act(
    state: &AppState,
    principal: &Principal,
    path: &ActionPath,
) -> ApiResult<(Notice, String)> {
    let key = PipelineKey::new(&path.client, &path.pipeline);
    find(state, principal, &key)?;
    let acted = match path.action.as_str() {
        "run" => {
            state.engine.run_now(&key)?;
            (Notice::RunStarted, format!("{key}: run started"))
        }
        "pause" => {
            state.engine.pause(&key).await?;
            (Notice::Paused, format!("{key}: paused"))
        }
        "resume" => {
            state.engine.resume(&key).await?;
            (Notice::Resumed, format!("{key}: resumed"))
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no action `{other}`; actions are run, pause and resume"
            )));
        }
    };
    let action = format!("pipeline.{}", path.action);
    record(state, principal, &key.client, &action, &key.to_string(), "").await?;
    Ok(acted)
}

pub async fn action_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<ActionPath>,
) -> ApiResult<Redirect> {
    let (notice, _) = act(&state, &principal, &path).await?;
    let to = format!("/pipelines/{}/{}", path.client, path.pipeline);
    Ok(done(&to, notice, 1))
}

pub async fn action_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<ActionPath>,
) -> ApiResult<Json<Done>> {
    Ok(json_done(act(&state, &principal, &path).await?.1))
}
