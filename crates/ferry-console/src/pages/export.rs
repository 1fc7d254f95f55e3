//! Export of queue entries and runs as CSV, JSON and xlsx. (Being written.)

use axum::extract::{Extension, State};
use axum::response::Response;
use maud::Markup;

use super::Page;
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};

fn todo() -> ApiError {
    ApiError::not_found("export is not in the console yet")
}

pub async fn page(State(_state): State<AppState>, _page: Page) -> ApiResult<Markup> {
    Err(todo())
}

pub async fn queue(
    State(_state): State<AppState>,
    Extension(_p): Extension<Principal>,
) -> ApiResult<Response> {
    Err(todo())
}

pub async fn runs(
    State(_state): State<AppState>,
    Extension(_p): Extension<Principal>,
) -> ApiResult<Response> {
    Err(todo())
}
