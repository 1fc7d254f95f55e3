//! Dead letters: dead passengers grouped by pipeline and error, replayed or discarded a group
//! at a time.

use axum::extract::{Extension, State};
use axum::response::Redirect;
use ferry_store::{DeadGroup, PipelineKey};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Done, Notice, Page, done, json_done, quarantine, record};
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Form, Json, Path};
use crate::layout::{link, when};

/// Most passengers one bulk action touches; the rest stay for the next click.
const MAX_BULK: usize = 10_000;

async fn groups(state: &AppState, principal: &Principal) -> ApiResult<Vec<DeadGroup>> {
    Ok(state.store.dead_groups(principal.scope()).await?)
}

pub async fn api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Vec<DeadGroup>>> {
    Ok(Json(groups(&state, &principal).await?))
}

pub async fn page(State(state): State<AppState>, page: Page) -> ApiResult<Markup> {
    let groups = groups(&state, &page.principal).await?;
    let quarantined = quarantine::items(&state, &page.principal).await?;
    let csrf = page.chrome.csrf();
    let body = html! {
        table #dead data-live {
            thead { tr { th { "Pipeline" } th { "Error" } th.num { "Passengers" } th { "Newest" } th {} } }
            tbody {
                @for g in &groups {
                    tr {
                        td { (g.client) "/" (g.pipeline) }
                        td.error { (g.error) }
                        td.num { a href=(link("/queue", &[("client", g.client.clone()), ("pipeline", g.pipeline.clone()), ("state", "dead".to_string())])) { (g.count) } }
                        td { (when(g.newest)) }
                        td {
                            @for (action, label, question) in [
                                ("replay", "Replay all", "Replay every passenger of this group from the start?"),
                                ("discard", "Discard all", "Discard every passenger of this group?"),
                            ] {
                                form.inline method="post" action={ "/dead/" (action) } data-confirm=(question) {
                                    (csrf)
                                    input type="hidden" name="client" value=(g.client);
                                    input type="hidden" name="pipeline" value=(g.pipeline);
                                    input type="hidden" name="error" value=(g.error);
                                    button type="submit" { (label) }
                                }
                            }
                        }
                    }
                }
                @if groups.is_empty() { tr { td colspan="5" .muted { "No dead passengers. " } } }
            }
        }
        (quarantine::section(&quarantined, &csrf))
    };
    Ok(page.render("Dead letters", body))
}

/// One group of dead passengers.
#[derive(Deserialize)]
pub struct Group {
    client: String,
    pipeline: String,
    error: String,
}

async fn act(
    state: &AppState,
    principal: &Principal,
    action: &str,
    group: &Group,
) -> ApiResult<(Notice, u64, String)> {
    let key = PipelineKey::new(&group.client, &group.pipeline);
    if !principal.sees(&key.client) {
        return Err(ApiError::not_found(format!("no pipeline {key}")));
    }
    let steps = match action {
        "replay" => {
            let project = state.engine.project();
            let pipeline = project
                .pipeline(&key.client, &key.pipeline)
                .ok_or_else(|| {
                    ApiError::conflict(format!(
                        "{key} is no longer defined; its passengers can only be discarded"
                    ))
                })?;
            Some(pipeline.steps())
        }
        "discard" => None,
        other => {
            return Err(ApiError::not_found(format!(
                "no action `{other}`; actions are replay and discard"
            )));
        }
    };
    let ids = state.store.dead_ids(&key, &group.error, MAX_BULK).await?;
    let now = chrono::Utc::now();
    for id in &ids {
        match &steps {
            Some(steps) => state.store.replay(*id, steps, now).await?,
            None => state.store.discard(*id, now).await?,
        }
        let detail = format!("bulk, dead of: {}", group.error);
        record(
            state,
            principal,
            &key.client,
            &format!("passenger.{action}"),
            &id.to_string(),
            &detail,
        )
        .await?;
    }
    state.engine.wake();
    let (notice, verb) = match steps {
        Some(_) => (Notice::Replayed, "replaying"),
        None => (Notice::Discarded, "discarded"),
    };
    let count = ids.len() as u64;
    Ok((notice, count, format!("{key}: {verb} {count} passenger(s)")))
}

pub async fn action_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(action): Path<String>,
    Form(group): Form<Group>,
) -> ApiResult<Redirect> {
    let (notice, count, _) = act(&state, &principal, &action, &group).await?;
    Ok(done("/dead", notice, count))
}

pub async fn action_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(action): Path<String>,
    Json(group): Json<Group>,
) -> ApiResult<Json<Done>> {
    Ok(json_done(act(&state, &principal, &action, &group).await?.2))
}
