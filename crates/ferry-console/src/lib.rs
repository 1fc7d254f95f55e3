//! ferry's web console and REST API, served by `ferry run`.
//!
//! Server-rendered pages (maud templates, no front-end build) and a JSON API under `/api/v1/`
//! mirroring them, from one route table ([`routes::table`]) that also says who may use each
//! route: the guard in [`auth`] enforces it before any handler runs, and the tests walk the same
//! table. Every handler limits its queries to the clients its [`auth::Principal`] may see.

use std::sync::Arc;

use axum::Router;
use ferry_engine::Engine;
use ferry_store::Store;

pub mod accounts;
pub mod auth;
mod error;
mod extract;
mod layout;
mod pages;
mod redact;
pub mod routes;
mod webhook;

pub use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) engine: Engine,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) limiter: Arc<auth::Limiter>,
    pub(crate) demo: Arc<layout::DemoCheck>,
    /// Counters for `/metrics`, fed by an observer of the engine's events.
    pub(crate) metrics: Arc<pages::metrics::Metrics>,
}

/// The console and API of a running engine.
pub fn router(engine: Engine) -> Router {
    let state = AppState {
        store: engine.store(),
        metrics: pages::metrics::Metrics::start(&engine),
        engine,
        limiter: Arc::default(),
        demo: Arc::default(),
    };
    routes::router(state)
}

/// Serves the console on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(engine).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}
