//! A local HTTP endpoint for `bench/http.sh`: takes every request with `204 No Content` over
//! kept-alive connections and counts them, and the distinct `Idempotency-Key`s among them.
//!
//! `cargo run --release -p ferry-connectors --example http_sink` prints its address on the
//! first line; `GET /stats` answers `REQUESTS DISTINCT_KEYS`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::get;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    keys: Mutex<HashSet<String>>,
}

/// One thread: the machine's other cores are ferry's.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let counts = Arc::new(Counts::default());
    let app = axum::Router::new()
        .route("/stats", get(stats))
        .fallback(take)
        .with_state(counts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}

async fn take(State(counts): State<Arc<Counts>>, request: Request) -> StatusCode {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    // Read the body, as a real endpoint does.
    if axum::body::to_bytes(request.into_body(), 16 * 1024 * 1024)
        .await
        .is_err()
    {
        return StatusCode::BAD_REQUEST;
    }
    counts.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(key) = key {
        counts.keys.lock().expect("keys lock").insert(key);
    }
    StatusCode::NO_CONTENT
}

async fn stats(State(counts): State<Arc<Counts>>) -> String {
    let requests = counts.requests.load(Ordering::Relaxed);
    let keys = counts.keys.lock().expect("keys lock").len();
    format!("{requests} {keys}\n")
}
