//! The audit log: who did what, when.

use axum::extract::{Extension, State};
use ferry_store::AuditEntry;
use maud::{Markup, html};
use serde::Deserialize;

use super::Page;
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::layout::when;

#[derive(Deserialize)]
pub struct AuditQuery {
    /// Only entries about this target (a passenger id, `client/pipeline`, a file).
    #[serde(default)]
    target: String,
}

async fn load(
    state: &AppState,
    principal: &Principal,
    query: &AuditQuery,
) -> ApiResult<Vec<AuditEntry>> {
    let target = super::runs::non_empty(&query.target);
    Ok(state
        .store
        .audit_log(principal.scope(), target.as_deref(), 500)
        .await?)
}

pub async fn api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    Ok(Json(load(&state, &principal, &query).await?))
}

pub async fn page(
    State(state): State<AppState>,
    page: Page,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Markup> {
    let entries = load(&state, &page.principal, &query).await?;
    let body = html! {
        form.filters method="get" {
            label { "Target" input name="target" value=(query.target); }
            button type="submit" { "Filter" }
        }
        table #audit data-live {
            thead { tr { th { "At" } th { "Client" } th { "Who" } th { "Action" } th { "Target" } th { "Detail" } } }
            tbody {
                @for e in &entries {
                    tr {
                        td { (when(e.at)) } td { (e.client) } td { (e.actor) } td { (e.action) }
                        td {
                            @if e.action.starts_with("passenger.") { a href={ "/passengers/" (e.target) } { (e.target) } }
                            @else { (e.target) }
                        }
                        td { (e.detail) }
                    }
                }
                @if entries.is_empty() { tr { td colspan="6" .muted { "Nothing recorded yet." } } }
            }
        }
    };
    Ok(page.render("Audit log", body))
}
