//! The console and API on a real engine and store.

mod support;

use axum::http::StatusCode;
use support::{Console, Who};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_sees_the_dashboard_and_logs_out() {
    let console = Console::start().await;
    assert_eq!(
        console.get(&Who::Anonymous, "/").await.status,
        StatusCode::SEE_OTHER
    );
    let ada = console.login("acme", "ada").await;
    let page = console.get(&ada, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("ferry TEST"),
        "the alias is on every page"
    );
    assert!(page.body.contains("acme/orders"));
    assert!(
        !page.body.contains("globex/orders"),
        "another client's pipeline"
    );
    let out = console.post_form(&ada, "/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        console.get(&ada, "/").await.status,
        StatusCode::SEE_OTHER,
        "the session ended on the server"
    );
}
