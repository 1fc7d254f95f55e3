//! The one error type of every route: `{code, message}` as JSON for the API, an error page for
//! the console.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_store::StoreError;
use serde::Serialize;

/// What went wrong, with the HTTP status it maps to.
#[derive(Clone, Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not_found`, `invalid`,
    /// `conflict`, `csrf`, `too_many_attempts`, `internal`.
    pub code: &'static str,
    /// For people; never holds a secret.
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in, or send an API token as `Authorization: Bearer TOKEN`",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// Also the answer for things of another client: their existence is not revealed.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "console request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "ferry could not answer; the log has the details",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => ApiError::not_found(format!("no passenger {id}")),
            StoreError::Refused(message) => ApiError::conflict(message),
            other => ApiError::internal(other),
        }
    }
}

impl From<ferry_engine::EngineError> for ApiError {
    fn from(error: ferry_engine::EngineError) -> Self {
        match error {
            ferry_engine::EngineError::UnknownPipeline(key) => {
                ApiError::not_found(format!("no pipeline {key}"))
            }
            ferry_engine::EngineError::Store(error) => error.into(),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    /// JSON; console routes turn it into a page (see `layout::error_pages`), which finds the
    /// error among the response's extensions.
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self)).into_response();
        response.extensions_mut().insert(self);
        response
    }
}
