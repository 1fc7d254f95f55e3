//! The webhook route on a running engine: the delivery is in the store when its sender hears
//! 202, a paused pipeline answers 503, and no console login is needed or looked at. (Every
//! authentication scheme over real HTTP: crates/ferry/tests/webhook.rs.)

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ferry_connectors::webhook::{github_signature, hub};
use ferry_store::{PipelineKey, QueueFilter};
use support::{Console, eventually};

const SECRET: &str = "hook-SECRET-7731";

async fn deliver(console: &Console, path: &str, id: &str, body: &[u8]) -> support::Answer {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("x-hub-signature-256", github_signature(SECRET, body))
        .header("x-github-delivery", id)
        .header("content-type", "application/json")
        // A stale console cookie is not looked at.
        .header("cookie", "ferry_session=stale")
        .body(Body::from(body.to_vec()))
        .unwrap();
    console.send(request).await
}

async fn listed(console: &Console, id: &str) -> usize {
    let filter = QueueFilter {
        client: Some("acme".into()),
        text: Some(id.into()),
        ..QueueFilter::default()
    };
    console.store.list(&filter, None, 10).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_seated_when_answered_and_a_paused_pipeline_answers_503() {
    let console = Console::start().await;
    let file = console.dir.path().join("clients/acme/pipelines/hooks.yaml");
    std::fs::write(
        file,
        format!(
            "pullers:\n  - type: webhook\n    auth: {{ github: \"{SECRET}\" }}\n\
             pushers:\n  - {{ type: file, path: out/acme-extra, name_template: \"{{external_id}}.json\" }}\n"
        ),
    )
    .unwrap();
    // The engine picks the new pipeline up; its first run makes the endpoint live.
    eventually("the webhook receiving", || async {
        hub().endpoint("acme/hooks").is_some()
    })
    .await;

    let answer = deliver(&console, "/hooks/acme/hooks", "wh-delivery-1", b"{\"n\":1}").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(
        answer.json(),
        serde_json::json!({ "id": "wh-delivery-1", "duplicate": false })
    );
    assert_eq!(
        listed(&console, "wh-delivery-1").await,
        1,
        "in the store when answered"
    );

    let key = PipelineKey::new("acme", "hooks");
    console.engine.pause(&key).await.unwrap();
    let paused = deliver(&console, "/hooks/acme/hooks", "wh-delivery-2", b"{}").await;
    assert_eq!(
        paused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        paused.body
    );
    assert!(paused.body.contains("is paused"), "{}", paused.body);
    assert!(paused.headers.contains_key("retry-after"));
    assert_eq!(listed(&console, "wh-delivery-2").await, 0);
    console.engine.resume(&key).await.unwrap();
    let resumed = deliver(&console, "/hooks/acme/hooks", "wh-delivery-2", b"{}").await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{}", resumed.body);

    // JSON answers, not the console's pages, and never the secret.
    let wrong = Request::builder()
        .method(Method::POST)
        .uri("/hooks/acme/hooks")
        .header("x-hub-signature-256", github_signature("guess", b"{}"))
        .body(Body::from("{}"))
        .unwrap();
    let refused = console.send(wrong).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json()["code"], "unauthorized");
    assert!(!refused.body.contains(SECRET));
    let unknown = deliver(&console, "/hooks/acme/orders", "x", b"{}").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["code"], "not_found");
    let get = console
        .get(&support::Who::Anonymous, "/hooks/acme/hooks")
        .await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
}
