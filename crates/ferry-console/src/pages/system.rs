//! The whole installation (root administrators): pause all, resume all, shut down; and
//! `/health`.

use axum::extract::{Extension, State};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Serialize;

use super::{Done, Notice, Page, done, json_done, record};
use crate::AppState;
use crate::auth::{Principal, ROOT_CLIENT};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};

#[derive(Serialize)]
pub struct SystemView {
    pub alias: String,
    pub version: &'static str,
    pub workers: usize,
    pub store: String,
    pub clients: usize,
    pub pipelines: usize,
    pub paused: usize,
}

fn load(state: &AppState) -> SystemView {
    let project = state.engine.project();
    let keys: Vec<_> = project
        .pipelines()
        .map(|p| ferry_store::PipelineKey::new(&p.client, &p.name))
        .collect();
    SystemView {
        alias: project.system.alias.clone(),
        version: env!("CARGO_PKG_VERSION"),
        workers: project.system.workers,
        // A server URL may hold a password.
        store: ferry_store::redact_url(&project.system.store),
        clients: project.clients.len(),
        pipelines: keys.len(),
        paused: keys.iter().filter(|k| state.engine.is_paused(k)).count(),
    }
}

pub async fn api(State(state): State<AppState>) -> Json<SystemView> {
    Json(load(&state))
}

pub async fn page(State(state): State<AppState>, page: Page) -> Markup {
    let view = load(&state);
    let chrome = &page.chrome;
    let body = html! {
        dl.grid {
            dt { "Alias" } dd { (view.alias) }
            dt { "Version" } dd { (view.version) }
            dt { "Store" } dd { code { (view.store) } }
            dt { "Workers" } dd { (view.workers) }
            dt { "Clients" } dd { (view.clients) }
            dt { "Pipelines" } dd { (view.pipelines) " (" (view.paused) " paused)" }
        }
        p {
            (chrome.button("/system/pause", "Pause all", Some("Pause every pipeline of every client?")))
            (chrome.button("/system/resume", "Resume all", None))
            (chrome.button("/system/shutdown", "Shut down", Some("Stop ferry? Work in hand is finished or given back to the queue; the console goes away.")))
        }
    };
    page.render("System", body)
}

async fn act(
    state: &AppState,
    principal: &Principal,
    action: &str,
) -> ApiResult<(Notice, u64, String)> {
    let project = state.engine.project();
    let keys = project
        .pipelines()
        .map(|p| ferry_store::PipelineKey::new(&p.client, &p.name));
    let acted = match action {
        "pause" | "resume" => {
            let mut n = 0;
            for key in keys {
                if action == "pause" {
                    state.engine.pause(&key).await?;
                } else {
                    state.engine.resume(&key).await?;
                }
                n += 1;
            }
            let notice = match action {
                "pause" => Notice::PausedAll,
                _ => Notice::ResumedAll,
            };
            (notice, n, format!("{action}d {n} pipeline(s)"))
        }
        "shutdown" => (Notice::ShuttingDown, 1, "shutting down".to_string()),
        other => {
            return Err(ApiError::not_found(format!(
                "no action `{other}`; actions are pause, resume and shutdown"
            )));
        }
    };
    record(
        state,
        principal,
        ROOT_CLIENT,
        &format!("system.{action}"),
        "system",
        "",
    )
    .await?;
    if action == "shutdown" {
        tracing::warn!(actor = %principal.actor(), "shutdown asked for from the console");
        state.engine.shutdown();
    }
    Ok(acted)
}

pub async fn action_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(action): Path<String>,
) -> ApiResult<Redirect> {
    let (notice, count, _) = act(&state, &principal, &action).await?;
    Ok(done("/system", notice, count))
}

pub async fn action_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(action): Path<String>,
) -> ApiResult<Json<Done>> {
    Ok(json_done(act(&state, &principal, &action).await?.2))
}

#[derive(Serialize)]
pub struct Health {
    pub status: &'static str,
}

/// For load balancers: 200 while the store answers, 503 otherwise.
pub async fn health(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state.store.counts(Some("")).await.map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the store does not answer",
        )
    })?;
    Ok(Json(Health { status: "ok" }))
}
