//! Issue 14: notifications through the real binary. Passengers go dead and one webhook
//! message, received by a real HTTP server, tells about all of them.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::Value;
use support::{Project, terminate, wait_for, wait_for_dead};

type Posts = Arc<Mutex<Vec<Value>>>;

async fn receive(State(posts): State<Posts>, Json(body): Json<Value>) {
    posts.lock().unwrap().push(body);
}

/// A webhook receiver on a free port, served by its own runtime; its URL and what it got.
fn receiver() -> (String, Posts) {
    let posts = Posts::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(posts.clone());
    let url = format!("{}/hook", support::serve(app));
    (url, posts)
}

/// Three generated passengers that fail the schema: each goes dead at once.
const DOOMED: &str = r#"
schedule: every 1h
pullers:
  - type: generate
    count: 3
processors:
  - type: validate
    schema: { type: object, required: [order_id] }
pushers:
  - type: blackhole
"#;

#[test]
fn dead_passengers_are_told_to_a_webhook_in_one_message() {
    let (url, posts) = receiver();
    let client_yaml = format!(
        "notifications:\n  - on: [dead]\n    to: {{ webhook: \"{url}\" }}\n    every: 2s\n"
    );
    let project = Project::new(&client_yaml, &[("doomed", DOOMED)]);
    let child = project.spawn();
    wait_for_dead(&project, "acme/doomed");
    wait_for("the notification", Duration::from_secs(30), || {
        !posts.lock().unwrap().is_empty()
    });
    // Nothing more arrives: the three are in the one message.
    std::thread::sleep(Duration::from_secs(3));
    assert!(terminate(child), "{}", project.log());

    let posts = posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1, "{posts:#?}\n{}", project.log());
    let message = &posts[0];
    assert_eq!(message["system"], "ferry TEST");
    assert_eq!(message["client"], "acme");
    assert_eq!(message["dead"]["count"], 3, "{message:#}");
    assert_eq!(message["dead"]["pipelines"]["acme/doomed"], 3);
    let sample = &message["dead"]["samples"][0];
    assert_eq!(sample["step"], "validate");
    assert!(
        sample["error"]
            .as_str()
            .unwrap()
            .contains("\"order_id\" is a required property"),
        "{sample}"
    );
    let log = project.log();
    assert!(log.contains("notification sent"), "{log}");
    assert!(
        !log.contains(&url),
        "the webhook URL is never logged:\n{log}"
    );
}
