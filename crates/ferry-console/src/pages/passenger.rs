//! One passenger: metadata, body, attachments, every step with its attempts, the audit trail;
//! retry, replay, discard and skip a step.

use axum::extract::{Extension, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use ferry_core::{Body, Metadata, PassengerId, Timestamp};
use ferry_store::{PassengerDetail, QueueEntry};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::{Done, Notice, Page, done, json_done, record};
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::layout::{badge, maybe_when, when};

/// The passenger, if the principal may see it; others' passengers do not exist.
async fn find(
    state: &AppState,
    principal: &Principal,
    id: PassengerId,
) -> ApiResult<PassengerDetail> {
    let missing = || ApiError::not_found(format!("no passenger {id}"));
    let owner = state.store.owner(id).await?.ok_or_else(missing)?;
    if !principal.sees(&owner.client) {
        return Err(missing());
    }
    Ok(state.store.get(id).await?)
}

#[derive(Serialize)]
pub struct BodyView {
    pub media_type: String,
    pub size: usize,
    /// The content as text (JSON pretty-printed) when it is UTF-8; absent for binary bodies.
    pub text: Option<String>,
}

impl From<&Body> for BodyView {
    fn from(body: &Body) -> Self {
        BodyView {
            media_type: body.media_type.clone(),
            size: body.data.len(),
            text: readable(&body.data),
        }
    }
}

/// Text of a body for people: JSON pretty-printed, other UTF-8 as is, binary not at all.
fn readable(data: &[u8]) -> Option<String> {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        return serde_json::to_string_pretty(&value).ok();
    }
    std::str::from_utf8(data).ok().map(str::to_string)
}

#[derive(Serialize)]
pub struct StepView {
    pub index: u32,
    pub kind: &'static str,
    pub name: String,
    pub state: &'static str,
    pub attempts: u32,
    pub next_try_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub done_at: Option<Timestamp>,
    /// What the target answered, for a pusher that keeps it (`keep_response`).
    pub result: Option<String>,
    /// Every failed attempt, oldest first.
    pub history: Vec<AttemptView>,
}

#[derive(Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub at: Timestamp,
    pub error: String,
}

#[derive(Serialize)]
pub struct AttachmentView {
    pub index: usize,
    pub name: String,
    pub media_type: String,
    pub size: usize,
}

#[derive(Serialize)]
pub struct AuditView {
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

#[derive(Serialize)]
pub struct PassengerView {
    #[serde(flatten)]
    pub entry: QueueEntry,
    pub parent: Option<PassengerId>,
    pub metadata: Metadata,
    pub body: BodyView,
    /// What the processors made of it, when they ran.
    pub processed: Option<ProcessedView>,
    pub attachments: Vec<AttachmentView>,
    pub steps: Vec<StepView>,
    pub children: Vec<QueueEntry>,
    pub audit: Vec<AuditView>,
}

#[derive(Serialize)]
pub struct ProcessedView {
    pub metadata: Metadata,
    pub body: BodyView,
}

async fn load(
    state: &AppState,
    principal: &Principal,
    id: PassengerId,
) -> ApiResult<PassengerView> {
    let detail = find(state, principal, id).await?;
    let children = state.store.children(id).await?;
    let audit = state
        .store
        .audit_log(Some(&detail.entry.client), Some(&id.to_string()), 100)
        .await?;
    let steps = detail
        .steps
        .iter()
        .map(|step| StepView {
            index: step.index,
            kind: step.kind.as_str(),
            name: step.name.clone(),
            state: step.state.as_str(),
            attempts: step.attempts,
            next_try_at: step.next_try_at,
            last_error: step.last_error.clone(),
            done_at: step.done_at,
            result: step.result.clone(),
            history: detail
                .attempts
                .iter()
                .filter(|a| a.step == step.index)
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    at: a.at,
                    error: a.error.clone(),
                })
                .collect(),
        })
        .collect();
    let original = &detail.original;
    Ok(PassengerView {
        parent: original.parent,
        metadata: original.metadata.clone(),
        body: BodyView::from(&original.body),
        processed: detail
            .processed
            .as_ref()
            .map(|(metadata, body)| ProcessedView {
                metadata: metadata.clone(),
                body: BodyView::from(body),
            }),
        attachments: original
            .attachments
            .iter()
            .enumerate()
            .map(|(index, a)| AttachmentView {
                index,
                name: a.name.clone(),
                media_type: a.media_type.clone(),
                size: a.content.len(),
            })
            .collect(),
        steps,
        children,
        audit: audit
            .into_iter()
            .map(|a| AuditView {
                at: a.at,
                actor: a.actor,
                action: a.action,
                detail: a.detail,
            })
            .collect(),
        entry: detail.entry,
    })
}

pub async fn api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<PassengerId>,
) -> ApiResult<Json<PassengerView>> {
    Ok(Json(load(&state, &principal, id).await?))
}

pub async fn page(
    State(state): State<AppState>,
    page: Page,
    Path(id): Path<PassengerId>,
) -> ApiResult<Markup> {
    let view = load(&state, &page.principal, id).await?;
    let e = &view.entry;
    let base = format!("/passengers/{id}");
    let chrome = &page.chrome;
    let body = html! {
        div.actions {
            (badge(e.state.as_str()))
            (chrome.button(&format!("{base}/retry"), "Retry", None))
            (chrome.button(&format!("{base}/replay"), "Replay", Some("Send this passenger again from the start, through the pipeline as defined now?")))
            (chrome.button(&format!("{base}/discard"), "Discard", Some("Discard this passenger? Its open steps are skipped and it is purged later.")))
        }
        dl.grid {
            dt { "Id" } dd { code { (e.id) } }
            dt { "Pipeline" } dd { a href={ "/pipelines/" (e.client) "/" (e.pipeline) } { (e.client) "/" (e.pipeline) } }
            dt { "Source system" } dd { (e.source_system) }
            dt { "External id" } dd { (e.external_id) }
            dt { "Created" } dd { (when(e.created_at)) }
            dt { "Updated" } dd { (when(e.updated_at)) }
            @if let Some(parent) = view.parent { dt { "Split from" } dd { a href={ "/passengers/" (parent) } { code { (parent) } } } }
            @if let Some(error) = &e.last_error { dt { "Last error" } dd.error { (error) } }
        }
        h2 { "Steps" }
        table #steps data-live {
            thead { tr { th { "#" } th { "Step" } th { "State" } th.num { "Failed attempts" } th { "Next try" } th { "Done" } th { "Errors" } th {} } }
            tbody {
                @for step in &view.steps {
                    tr {
                        td { (step.index) }
                        td { (step.name) " " span.muted { (step.kind) } }
                        td { (badge(step.state)) }
                        td.num { (step.attempts) }
                        td { (maybe_when(step.next_try_at)) }
                        td { (maybe_when(step.done_at)) }
                        td.error {
                            @if !step.history.is_empty() && !matches!(step.state, "failed" | "dead") {
                                div.muted { "earlier attempts:" }
                            }
                            @for a in &step.history { div { "#" (a.attempt) " " (when(a.at)) ": " (a.error) } }
                        }
                        td {
                            @if matches!(step.state, "pending" | "failed" | "dead") {
                                (chrome.button(&format!("{base}/steps/{}/skip", step.index), "Skip", Some("Skip this step? It will not run for this passenger.")))
                            }
                        }
                    }
                }
            }
        }
        @if view.steps.iter().any(|step| step.result.is_some()) {
            h2 { "Responses" }
            @for step in &view.steps {
                @if let Some(result) = &step.result {
                    h3 { (step.name) }
                    pre.response { (result) }
                }
            }
        }
        h2 { "Metadata" }
        (metadata(&view.metadata))
        h2 { "Body " span.muted { (view.body.media_type) ", " (view.body.size) " bytes" } }
        (body_block(&view.body, &format!("{base}/body")))
        @if let Some(processed) = &view.processed {
            h2 { "After the processors " span.muted { (processed.body.media_type) ", " (processed.body.size) " bytes" } }
            (metadata(&processed.metadata))
            (body_block(&processed.body, &format!("{base}/body?processed=true")))
        }
        h2 { "Attachments" }
        @if view.attachments.is_empty() { p.muted { "None." } } @else {
            table {
                thead { tr { th { "Name" } th { "Media type" } th.num { "Bytes" } } }
                tbody {
                    @for a in &view.attachments {
                        tr {
                            td { a href={ (base) "/attachments/" (a.index) } download { (a.name) } }
                            td { (a.media_type) }
                            td.num { (a.size) }
                        }
                    }
                }
            }
        }
        @if !view.children.is_empty() {
            h2 { "Split into" }
            (super::queue::table(&view.children))
        }
        h2 { "Audit" }
        @if view.audit.is_empty() { p.muted { "Nobody acted on this passenger." } } @else {
            table {
                thead { tr { th { "At" } th { "Who" } th { "Action" } th { "Detail" } } }
                tbody {
                    @for a in &view.audit { tr { td { (when(a.at)) } td { (a.actor) } td { (a.action) } td { (a.detail) } } }
                }
            }
        }
    };
    Ok(page.render(&format!("Passenger {}", e.external_id), body))
}

fn metadata(metadata: &Metadata) -> Markup {
    html! {
        @if metadata.is_empty() { p.muted { "None." } } @else {
            dl.grid { @for (key, value) in metadata { dt { (key) } dd { (value) } } }
        }
    }
}

fn body_block(body: &BodyView, download: &str) -> Markup {
    html! {
        @match &body.text {
            Some(text) => pre { (text) },
            None => p.muted { "Binary content. " a href=(download) { "Download" } },
        }
    }
}

#[derive(Deserialize)]
pub struct BodyQuery {
    #[serde(default)]
    processed: bool,
}

/// A body or an attachment, always as a download that browsers neither render nor sniff.
fn download(name: &str, content: bytes::Bytes) -> Response {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    let mut response = content.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

pub async fn attachment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, index)): Path<(PassengerId, usize)>,
) -> ApiResult<Response> {
    let detail = find(&state, &principal, id).await?;
    let attachment = detail
        .original
        .attachments
        .into_iter()
        .nth(index)
        .ok_or_else(|| ApiError::not_found(format!("passenger {id} has no attachment {index}")))?;
    Ok(download(&attachment.name, attachment.content))
}

pub async fn body(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<PassengerId>,
    Query(query): Query<BodyQuery>,
) -> ApiResult<Response> {
    let detail = find(&state, &principal, id).await?;
    let body = if query.processed {
        detail
            .processed
            .map(|(_, body)| body)
            .ok_or_else(|| ApiError::not_found("no processor ran on this passenger yet"))?
    } else {
        detail.original.body
    };
    Ok(download(
        &format!("{}.body", detail.entry.external_id),
        body.data,
    ))
}

#[derive(Deserialize)]
pub struct ActionPath {
    id: PassengerId,
    action: String,
}

async fn act(
    state: &AppState,
    principal: &Principal,
    id: PassengerId,
    action: &str,
) -> ApiResult<(Notice, String)> {
    let detail = find(state, principal, id).await?;
    let entry = &detail.entry;
    let now = chrono::Utc::now();
    let (notice, message) = match action {
        "retry" => {
            state.store.retry(id, now).await?;
            (Notice::Retried, "retrying its failed and dead steps")
        }
        "replay" => {
            let project = state.engine.project();
            let pipeline = project
                .pipeline(&entry.client, &entry.pipeline)
                .ok_or_else(|| {
                    ApiError::conflict(format!(
                        "its pipeline {}/{} is no longer defined; it can only be discarded",
                        entry.client, entry.pipeline
                    ))
                })?;
            state.store.replay(id, &pipeline.steps(), now).await?;
            (Notice::Replayed, "replaying from the start")
        }
        "discard" => {
            state.store.discard(id, now).await?;
            (Notice::Discarded, "discarded")
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no action `{other}`; actions are retry, replay and discard"
            )));
        }
    };
    record(
        state,
        principal,
        &entry.client,
        &format!("passenger.{action}"),
        &id.to_string(),
        "",
    )
    .await?;
    state.engine.wake();
    Ok((notice, format!("{}: {message}", entry.external_id)))
}

pub async fn action_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<ActionPath>,
) -> ApiResult<Redirect> {
    let (notice, _) = act(&state, &principal, path.id, &path.action).await?;
    Ok(done(&format!("/passengers/{}", path.id), notice, 1))
}

pub async fn action_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<ActionPath>,
) -> ApiResult<Json<Done>> {
    Ok(json_done(
        act(&state, &principal, path.id, &path.action).await?.1,
    ))
}

async fn skip(
    state: &AppState,
    principal: &Principal,
    id: PassengerId,
    index: u32,
) -> ApiResult<String> {
    let detail = find(state, principal, id).await?;
    let step = detail
        .steps
        .iter()
        .find(|s| s.index == index)
        .ok_or_else(|| ApiError::not_found(format!("passenger {id} has no step {index}")))?;
    state.store.skip_step(id, index, chrono::Utc::now()).await?;
    let detail_text = format!("step {index} ({} {})", step.kind.as_str(), step.name);
    record(
        state,
        principal,
        &detail.entry.client,
        "passenger.skip_step",
        &id.to_string(),
        &detail_text,
    )
    .await?;
    state.engine.wake();
    Ok(format!(
        "{}: skipped {detail_text}",
        detail.entry.external_id
    ))
}

pub async fn skip_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, index)): Path<(PassengerId, u32)>,
) -> ApiResult<Redirect> {
    skip(&state, &principal, id, index).await?;
    Ok(done(&format!("/passengers/{id}"), Notice::StepSkipped, 1))
}

pub async fn skip_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, index)): Path<(PassengerId, u32)>,
) -> ApiResult<Json<Done>> {
    Ok(json_done(skip(&state, &principal, id, index).await?))
}
