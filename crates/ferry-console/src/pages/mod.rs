//! The console's pages and their API twins, one module per subject. Each module loads its data
//! once (limited to what the principal may see) and renders it as a page or as JSON.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::response::Redirect;
use ferry_store::AuditEntry;
use serde::Deserialize;

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::layout::Chrome;

pub mod audit;
pub mod dashboard;
pub mod dead;
pub mod definitions;
pub mod export;
pub mod login;
pub mod metrics;
pub mod passenger;
pub mod pipelines;
pub mod quarantine;
pub mod queue;
pub mod runs;
pub mod system;
pub mod users;

/// A console page's context: the shell, the principal, and the notice of the action that led
/// here (`?notice=`).
pub struct Page {
    pub chrome: Chrome,
    pub principal: Principal,
    pub notice: Option<String>,
}

/// What a console action did, told on the page it leads back to. The address names the notice
/// (`?notice=retried`, with `&n=3` for a count), never its text, so a link someone sends cannot
/// make a page of ferry say what its author wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    RunStarted,
    Paused,
    Resumed,
    Retried,
    Replayed,
    Discarded,
    StepSkipped,
    TokenRevoked,
    Saved,
    PausedAll,
    ResumedAll,
    ShuttingDown,
    TakenAgain,
    InputDiscarded,
}

impl Notice {
    /// The sentence shown; `count` where the notice counts something.
    pub fn text(self, count: u64) -> String {
        match self {
            Notice::RunStarted => "Run started.".into(),
            Notice::Paused => "Paused.".into(),
            Notice::Resumed => "Resumed.".into(),
            Notice::Retried => {
                format!("Retrying the failed and dead steps of {count} passenger(s).")
            }
            Notice::Replayed => format!("Replaying {count} passenger(s) from the start."),
            Notice::Discarded => format!("Discarded {count} passenger(s)."),
            Notice::StepSkipped => "Step skipped.".into(),
            Notice::TokenRevoked => "Token revoked.".into(),
            Notice::Saved => "Saved; ferry loads it within seconds.".into(),
            Notice::PausedAll => format!("Paused {count} pipeline(s)."),
            Notice::ResumedAll => format!("Resumed {count} pipeline(s)."),
            Notice::ShuttingDown => "Shutting down.".into(),
            Notice::TakenAgain => "Taken again on the next pull.".into(),
            Notice::InputDiscarded => "Quarantined input discarded.".into(),
        }
    }
}

#[derive(Deserialize)]
struct NoticeQuery {
    notice: Option<Notice>,
    n: Option<u64>,
}

impl FromRequestParts<AppState> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Page> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        let notice = Query::<NoticeQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|Query(q)| Some(q.notice?.text(q.n.unwrap_or(1))));
        Ok(Page {
            chrome: Chrome::of(state, Some(&principal)),
            principal,
            notice,
        })
    }
}

impl Page {
    /// The page titled `title` with `body`, the notice first.
    pub fn render(&self, title: &str, body: maud::Markup) -> maud::Markup {
        let body = maud::html! {
            @if let Some(notice) = &self.notice {
                div.notice role="status" { (notice) }
            }
            (body)
        };
        crate::layout::page(&self.chrome, title, body)
    }
}

/// After a console action: back to `to`, telling what happened (`count`: how many).
pub fn done(to: &str, notice: Notice, count: u64) -> Redirect {
    #[derive(serde::Serialize)]
    struct Query {
        notice: Notice,
        n: u64,
    }
    let separator = if to.contains('?') { '&' } else { '?' };
    let query = serde_urlencoded::to_string(Query { notice, n: count }).unwrap_or_default();
    Redirect::to(&format!("{to}{separator}{query}"))
}

/// Records an action in the audit log.
pub async fn record(
    state: &AppState,
    principal: &Principal,
    client: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> ApiResult<()> {
    let entry = AuditEntry {
        at: chrono::Utc::now(),
        client: client.to_string(),
        actor: principal.actor(),
        action: action.to_string(),
        target: target.to_string(),
        detail: detail.to_string(),
    };
    state.store.audit(&entry).await?;
    Ok(())
}

/// A JSON answer for state changes: what was done.
#[derive(serde::Serialize)]
pub struct Done {
    pub done: String,
}

pub fn json_done(what: impl Into<String>) -> Json<Done> {
    Json(Done { done: what.into() })
}
