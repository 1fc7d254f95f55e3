//! Quarantined input: items a puller could not take (an unreadable or malformed file), shown
//! with their reason on the dead letters page, and retried or discarded one at a time.

use axum::extract::{Extension, State};
use axum::response::Redirect;
use ferry_store::Quarantined;
use maud::{Markup, html};

use super::{Done, Notice, done, json_done, record};
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::layout::when;

/// The quarantined items the principal may see, oldest first.
pub async fn items(state: &AppState, principal: &Principal) -> ApiResult<Vec<Quarantined>> {
    Ok(state.store.quarantined(None, principal.scope()).await?)
}

pub async fn api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Vec<Quarantined>>> {
    Ok(Json(items(&state, &principal).await?))
}

/// The table of quarantined items, with a retry and a discard button each.
pub fn section(items: &[Quarantined], csrf: &Markup) -> Markup {
    html! {
        h2 { "Quarantined input" }
        p.muted { "Items a puller could not take. Later pulls skip them until you retry (after fixing the item) or discard them, or the item changes." }
        table #quarantine data-live {
            thead { tr { th { "Pipeline" } th { "Puller" } th { "Item" } th { "Reason" } th.num { "Seen" } th { "Since" } th {} } }
            tbody {
                @for item in items {
                    tr {
                        td { (item.client) "/" (item.pipeline) }
                        td { (item.puller) }
                        td { (item.item) }
                        td.error { (item.reason) }
                        td.num { (item.times) }
                        td { (when(item.first_seen)) }
                        td {
                            @for (action, label, question) in [
                                ("retry", "Retry", "Take this item again on the next pull?"),
                                ("discard", "Discard", "Leave this item alone for good (until it changes)?"),
                            ] {
                                form.inline method="post" action={ "/quarantine/" (item.id) "/" (action) } data-confirm=(question) {
                                    (csrf)
                                    button type="submit" { (label) }
                                }
                            }
                        }
                    }
                }
                @if items.is_empty() { tr { td colspan="7" .muted { "Nothing in quarantine." } } }
            }
        }
    }
}

async fn act(state: &AppState, principal: &Principal, id: i64, action: &str) -> ApiResult<String> {
    let retry = match action {
        "retry" => true,
        "discard" => false,
        other => {
            return Err(ApiError::not_found(format!(
                "no action `{other}`; actions are retry and discard"
            )));
        }
    };
    // Tenant isolation in the query itself: another client's item does not exist here.
    let item = state
        .store
        .end_quarantine(id, principal.scope(), retry)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no quarantined item {id}")))?;
    let detail = format!(
        "{}/{} {}: {}",
        item.client, item.pipeline, item.puller, item.item
    );
    record(
        state,
        principal,
        &item.client,
        &format!("quarantine.{action}"),
        &id.to_string(),
        &detail,
    )
    .await?;
    Ok(match retry {
        true => format!("{detail}: taken again on the next pull"),
        false => format!("{detail}: discarded"),
    })
}

pub async fn action_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, action)): Path<(i64, String)>,
) -> ApiResult<Redirect> {
    act(&state, &principal, id, &action).await?;
    let notice = match action.as_str() {
        "retry" => Notice::TakenAgain,
        _ => Notice::InputDiscarded,
    };
    Ok(done("/dead", notice, 1))
}

pub async fn action_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, action)): Path<(i64, String)>,
) -> ApiResult<Json<Done>> {
    Ok(json_done(act(&state, &principal, id, &action).await?))
}
