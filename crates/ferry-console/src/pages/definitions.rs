//! Definitions: view with version history and diff; administrators edit. (Being written.)

use axum::extract::{Extension, State};
use axum::response::Redirect;
use maud::Markup;

use super::{Done, Page};
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};

fn todo() -> ApiError {
    ApiError::not_found("definitions are not in the console yet")
}

pub async fn page(State(_state): State<AppState>, _page: Page) -> ApiResult<Markup> {
    Err(todo())
}

pub async fn file_page(
    State(_state): State<AppState>,
    _page: Page,
    Path(_file): Path<String>,
) -> ApiResult<Markup> {
    Err(todo())
}

pub async fn save_form(
    State(_state): State<AppState>,
    Extension(_p): Extension<Principal>,
    Path(_file): Path<String>,
) -> ApiResult<Redirect> {
    Err(todo())
}

pub async fn api(
    State(_state): State<AppState>,
    Extension(_p): Extension<Principal>,
) -> ApiResult<Json<Done>> {
    Err(todo())
}

pub async fn file_api(
    State(_state): State<AppState>,
    Extension(_p): Extension<Principal>,
    Path(_file): Path<String>,
) -> ApiResult<Json<Done>> {
    Err(todo())
}

pub async fn save_api(
    State(_state): State<AppState>,
    Extension(_p): Extension<Principal>,
    Path(_file): Path<String>,
) -> ApiResult<Json<Done>> {
    Err(todo())
}
