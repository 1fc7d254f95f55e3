//! `POST /hooks/{client}/{pipeline}[/{path}]`: deliveries pushed to a running `webhook`
//! puller (see `ferry_connectors::webhook`). No session, no CSRF token and no API token: the
//! webhook authenticates its senders itself (a signature of the body, a bearer token or basic
//! credentials), so the route's access is [`Access::Webhook`](crate::auth::Access::Webhook).
//!
//! The handler finds the endpoint the running puller registered, refuses what it can before
//! reading the body (unknown path 404, paused or not running 503, wrong bearer or basic
//! credentials 401, a `Content-Length` over `max_body` 413), reads the body with the size limit
//! enforced while reading (413), and hands the request to the endpoint, which answers 202 once
//! the delivery is seated.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_connectors::webhook::{self, Answer, Delivery};
use ferry_store::PipelineKey;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::AppState;

/// Receives one delivery.
pub async fn receive(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Response {
    let (Some(client), Some(pipeline)) = (params.get("client"), params.get("pipeline")) else {
        return answer(Answer::not_found(""));
    };
    let path = match params.get("path") {
        Some(suffix) => format!("{client}/{pipeline}/{suffix}"),
        None => format!("{client}/{pipeline}"),
    };
    let key = PipelineKey::new(client, pipeline);
    let hub = webhook::hub();
    let Some(endpoint) = hub.endpoint(&path) else {
        // Defined with a webhook but not receiving (starting, paused before its first run,
        // stopped): the sender should come back. A path the running pipeline does not receive
        // at, or of no webhook pipeline, does not exist.
        let project = state.engine.project();
        let defined = project.pipeline(client, pipeline).is_some_and(|def| {
            def.pullers
                .iter()
                .any(|puller| puller.type_name == webhook::TYPE)
        });
        let running = hub.receives_for(client, pipeline);
        return answer(match defined && !running {
            true if state.engine.is_paused(&key) => Answer::paused(&key.to_string()),
            true => Answer::not_running(&key.to_string()),
            false => Answer::not_found(&path),
        });
    };
    if state.engine.is_paused(&key) {
        return answer(Answer::paused(&key.to_string()));
    }
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let (parts, body) = request.into_parts();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    if let Err(refusal) = endpoint.admit(&headers, remote) {
        return answer(refusal);
    }
    let max_body = endpoint.max_body();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return answer(Answer::too_large(max_body));
    }
    let body = match Limited::new(body, max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return answer(Answer::too_large(max_body));
        }
        Err(error) => {
            return answer(Answer::refused(
                400,
                "invalid",
                format!("the body could not be read: {error}"),
            ));
        }
    };
    let delivery = Delivery {
        method: parts.method.to_string(),
        headers,
        body,
        remote,
    };
    answer(endpoint.deliver(delivery).await)
}

/// The endpoint's answer as an HTTP response: JSON, not the console's error page.
fn answer(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(answer.body.to_string()),
    )
        .into_response();
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
}
