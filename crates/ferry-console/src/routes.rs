//! Every route of the console and the API, with who may use it. The router is built from this
//! table, and the tests walk it: a route cannot exist without an access rule.

use axum::Router;
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, delete, get, post, put};

use crate::AppState;
use crate::auth::{self, Access};
use crate::layout;
use crate::pages::{
    audit, dashboard, dead, definitions, export, login, metrics, passenger, pipelines, quarantine,
    queue, runs, system, users,
};
use crate::webhook;

/// One route: method, path (axum syntax), who may use it, and its handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter<AppState>,
}

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// The whole table: console pages first, then the API under `/api/v1`.
pub fn table() -> Vec<Route> {
    use Access::{Administrator as Admin, Operator as Op, Public, Root, Webhook};
    let (g, p) = (Method::GET, Method::POST);
    vec![
        route(g.clone(), "/health", Public, get(system::health)),
        route(g.clone(), "/metrics", Root, get(metrics::prometheus)),
        route(
            g.clone(),
            "/static/console.css",
            Public,
            get(layout::stylesheet),
        ),
        route(g.clone(), "/static/console.js", Public, get(layout::script)),
        route(g.clone(), "/login", Public, get(login::form)),
        route(p.clone(), "/login", Public, post(login::submit)),
        route(p.clone(), "/logout", Op, post(login::logout)),
        // Console pages.
        route(g.clone(), "/", Op, get(dashboard::page)),
        route(
            g.clone(),
            "/pipelines/{client}/{pipeline}",
            Op,
            get(pipelines::page),
        ),
        route(
            g.clone(),
            "/pipelines/{client}/{pipeline}/peek",
            Op,
            get(pipelines::peek_page),
        ),
        route(
            p.clone(),
            "/pipelines/{client}/{pipeline}/{action}",
            Op,
            post(pipelines::action_form),
        ),
        route(g.clone(), "/runs", Op, get(runs::page)),
        route(g.clone(), "/runs/{id}", Op, get(runs::detail_page)),
        route(g.clone(), "/queue", Op, get(queue::page)),
        route(g.clone(), "/passengers/{id}", Op, get(passenger::page)),
        route(
            g.clone(),
            "/passengers/{id}/attachments/{index}",
            Op,
            get(passenger::attachment),
        ),
        route(g.clone(), "/passengers/{id}/body", Op, get(passenger::body)),
        route(
            p.clone(),
            "/passengers/{id}/{action}",
            Op,
            post(passenger::action_form),
        ),
        route(
            p.clone(),
            "/passengers/{id}/steps/{index}/skip",
            Op,
            post(passenger::skip_form),
        ),
        route(g.clone(), "/dead", Op, get(dead::page)),
        route(p.clone(), "/dead/{action}", Op, post(dead::action_form)),
        route(
            p.clone(),
            "/quarantine/{id}/{action}",
            Op,
            post(quarantine::action_form),
        ),
        route(g.clone(), "/definitions", Op, get(definitions::page)),
        route(
            g.clone(),
            "/definitions/{*file}",
            Op,
            get(definitions::file_page),
        ),
        route(
            p.clone(),
            "/definitions/{*file}",
            Admin,
            post(definitions::save_form),
        ),
        route(g.clone(), "/export", Admin, get(export::page)),
        route(g.clone(), "/export/queue", Admin, get(export::queue)),
        route(g.clone(), "/export/runs", Admin, get(export::runs)),
        route(g.clone(), "/users", Admin, get(users::page)),
        route(p.clone(), "/tokens", Admin, post(users::create_token_form)),
        route(
            p.clone(),
            "/tokens/{id}/revoke",
            Admin,
            post(users::revoke_token_form),
        ),
        route(g.clone(), "/audit", Admin, get(audit::page)),
        route(g.clone(), "/system", Root, get(system::page)),
        route(
            p.clone(),
            "/system/{action}",
            Root,
            post(system::action_form),
        ),
        // The API.
        route(g.clone(), "/api/v1/pipelines", Op, get(dashboard::api)),
        route(
            g.clone(),
            "/api/v1/pipelines/{client}/{pipeline}",
            Op,
            get(pipelines::api),
        ),
        route(
            g.clone(),
            "/api/v1/pipelines/{client}/{pipeline}/peek",
            Op,
            get(pipelines::peek_api),
        ),
        route(
            p.clone(),
            "/api/v1/pipelines/{client}/{pipeline}/{action}",
            Op,
            post(pipelines::action_api),
        ),
        route(g.clone(), "/api/v1/runs", Op, get(runs::api)),
        route(g.clone(), "/api/v1/runs/{id}", Op, get(runs::detail_api)),
        route(g.clone(), "/api/v1/queue", Op, get(queue::api)),
        route(
            g.clone(),
            "/api/v1/passengers/{id}",
            Op,
            get(passenger::api),
        ),
        route(
            g.clone(),
            "/api/v1/passengers/{id}/attachments/{index}",
            Op,
            get(passenger::attachment),
        ),
        route(
            g.clone(),
            "/api/v1/passengers/{id}/body",
            Op,
            get(passenger::body),
        ),
        route(
            p.clone(),
            "/api/v1/passengers/{id}/{action}",
            Op,
            post(passenger::action_api),
        ),
        route(
            p.clone(),
            "/api/v1/passengers/{id}/steps/{index}/skip",
            Op,
            post(passenger::skip_api),
        ),
        route(g.clone(), "/api/v1/dead", Op, get(dead::api)),
        route(
            p.clone(),
            "/api/v1/dead/{action}",
            Op,
            post(dead::action_api),
        ),
        route(g.clone(), "/api/v1/quarantine", Op, get(quarantine::api)),
        route(
            p.clone(),
            "/api/v1/quarantine/{id}/{action}",
            Op,
            post(quarantine::action_api),
        ),
        route(g.clone(), "/api/v1/definitions", Op, get(definitions::api)),
        route(
            g.clone(),
            "/api/v1/definitions/{*file}",
            Op,
            get(definitions::file_api),
        ),
        route(
            Method::PUT,
            "/api/v1/definitions/{*file}",
            Admin,
            put(definitions::save_api),
        ),
        route(g.clone(), "/api/v1/export/queue", Admin, get(export::queue)),
        route(g.clone(), "/api/v1/export/runs", Admin, get(export::runs)),
        route(g.clone(), "/api/v1/users", Admin, get(users::api)),
        route(g.clone(), "/api/v1/tokens", Admin, get(users::tokens_api)),
        route(
            p.clone(),
            "/api/v1/tokens",
            Admin,
            post(users::create_token_api),
        ),
        route(
            Method::DELETE,
            "/api/v1/tokens/{id}",
            Admin,
            delete(users::revoke_token_api),
        ),
        route(g.clone(), "/api/v1/audit", Admin, get(audit::api)),
        route(g.clone(), "/api/v1/system", Root, get(system::api)),
        route(
            p.clone(),
            "/api/v1/system/{action}",
            Root,
            post(system::action_api),
        ),
        // Deliveries to webhook pullers, authenticated by each webhook itself.
        route(
            p.clone(),
            "/hooks/{client}/{pipeline}",
            Webhook,
            post(webhook::receive),
        ),
        route(
            p,
            "/hooks/{client}/{pipeline}/{path}",
            Webhook,
            post(webhook::receive),
        ),
    ]
}

/// The router of [`table`], every route behind the guard of its access rule.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for route in table() {
        let guard = from_fn_with_state((state.clone(), route.access), auth::guard);
        router = router.route(route.path, route.handler.route_layer(guard));
    }
    router
        .fallback(|| async { crate::ApiError::not_found("no such page") })
        .layer(from_fn_with_state(state.clone(), layout::error_pages))
        .layer(from_fn_with_state(state.clone(), security_headers))
        .layer(from_fn_with_state(state.clone(), redact))
        .with_state(state)
}

/// Never shows a value the definitions took from the environment, nor where the server keeps
/// the project (issue 12): every text answer (pages, the API, CSV and JSON exports) passes
/// through the [`Redactor`](crate::redact::Redactor) on its way out, whichever description,
/// passenger or error message they found their way into.
async fn redact(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::header;
    use http_body_util::BodyExt;
    let response = next.run(request).await;
    let textual = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|kind| kind.starts_with("text/") || kind.contains("json"));
    if !textual {
        return response;
    }
    let redactor = crate::redact::Redactor::of(&state.engine.project());
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = body.map_frame(move |frame| {
        frame.map_data(|data| {
            let Ok(text) = std::str::from_utf8(&data) else {
                return data;
            };
            match redactor.apply(text) {
                std::borrow::Cow::Borrowed(_) => data,
                std::borrow::Cow::Owned(shown) => bytes::Bytes::from(shown),
            }
        })
    });
    axum::response::Response::from_parts(parts, axum::body::Body::new(body))
}

/// Headers every response carries.
async fn security_headers(
    axum::extract::State(_): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
