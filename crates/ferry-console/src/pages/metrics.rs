//! `/metrics` in Prometheus format. (Being written.)

use axum::extract::State;
use axum::response::Response;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub async fn prometheus(State(_state): State<AppState>) -> ApiResult<Response> {
    Err(ApiError::not_found("metrics are not there yet"))
}
