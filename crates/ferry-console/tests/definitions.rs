//! Definitions in the console and the API: who sees which files, and saving them.

mod support;

use axum::http::{Method, StatusCode, header};
use ferry_core::config::SourceFile;
use serde_json::json;
use support::{Console, SECRET, Who, eventually, pipeline};

const ORDERS: &str = "clients/acme/pipelines/orders.yaml";
const GLOBEX_ORDERS: &str = "clients/globex/pipelines/orders.yaml";

fn hash(content: &str) -> String {
    SourceFile {
        path: String::new(),
        content: content.to_string(),
    }
    .hash()
}

fn on_disk(console: &Console, path: &str) -> String {
    std::fs::read_to_string(console.dir.path().join(path)).unwrap()
}

/// The `base` the edit form of a file page carries.
fn base_of(page: &str) -> String {
    let marker = "name=\"base\" value=\"";
    let start = page.find(marker).expect("an edit form") + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

/// `file:line:column:` of `file` somewhere in `text`.
fn has_position(text: &str, file: &str) -> bool {
    text.match_indices(&format!("{file}:")).any(|(at, found)| {
        let rest = &text[at + found.len()..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap_or("");
        let column = parts.next().unwrap_or("");
        !line.is_empty()
            && line.chars().all(|c| c.is_ascii_digit())
            && !column.is_empty()
            && column.chars().all(|c| c.is_ascii_digit())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_shows_only_own_pipeline_files_and_never_secrets() {
    let console = Console::start().await;
    let ada = console.login("acme", "ada").await;
    let page = console.get(&ada, "/definitions").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(ORDERS));
    assert!(page.body.contains("clients/acme/pipelines/broken.yaml"));
    for hidden in [
        GLOBEX_ORDERS,
        "connections.yaml",
        "client.yaml",
        "ferry.yaml",
    ] {
        assert!(!page.body.contains(hidden), "{hidden} listed to acme");
    }

    let token = console.token("acme", "operator").await;
    let list = console.get(&token, "/api/v1/definitions").await;
    assert_eq!(list.status, StatusCode::OK);
    let files: Vec<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(files, ["clients/acme/pipelines/broken.yaml", ORDERS]);
    assert_eq!(
        list.json()[1]["hash"].as_str().unwrap(),
        hash(&on_disk(&console, ORDERS))
    );

    let admin = console.login("root", "admin").await;
    let page = console.get(&admin, "/definitions").await;
    assert!(page.body.contains("ferry.yaml"));
    assert!(page.body.contains(GLOBEX_ORDERS));
    assert!(page.body.contains(ORDERS));
    assert!(!page.body.contains("connections.yaml"));
    assert!(!page.body.contains("client.yaml"));

    let root_token = console.token("root", "administrator").await;
    for who in [&ada, &admin, &token, &root_token] {
        for path in [
            "connections.yaml",
            "clients/acme/client.yaml",
            "clients/root/client.yaml",
            "clients/acme/pipelines/../client.yaml",
            "clients/acme/pipelines/..%2Fclient.yaml",
            "clients%2Facme%2Fclient.yaml",
            "%2Fetc%2Fpasswd",
            "clients/acme/pipelines/missing.yaml",
        ] {
            let prefix = match who {
                Who::Token(_) => "/api/v1/definitions/",
                _ => "/definitions/",
            };
            let answer = console.get(who, &format!("{prefix}{path}")).await;
            if path.ends_with("missing.yaml") && matches!(who, Who::Session { .. }) {
                // Administrators may create it: the page offers an empty editor.
                assert_eq!(answer.status, StatusCode::OK, "{prefix}{path}");
                assert!(answer.body.contains("does not exist yet"));
                continue;
            }
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{prefix}{path}");
            assert!(!answer.body.contains(SECRET));
            assert!(!answer.body.contains("argon2"));
        }
    }
    let root_view = console
        .get(&root_token, "/api/v1/definitions/ferry.yaml")
        .await;
    assert_eq!(root_view.status, StatusCode::OK);
    assert!(
        root_view.json()["content"]
            .as_str()
            .unwrap()
            .contains("ferry TEST")
    );
    assert_eq!(
        console.get(&ada, "/definitions/ferry.yaml").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_file_is_not_found() {
    let console = Console::start().await;
    let before = on_disk(&console, GLOBEX_ORDERS);
    let ada = console.login("acme", "ada").await;
    let token = console.token("acme", "administrator").await;
    let path = format!("/definitions/{GLOBEX_ORDERS}");
    assert_eq!(console.get(&ada, &path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        console.get(&token, &format!("/api/v1{path}")).await.status,
        StatusCode::NOT_FOUND
    );
    let content = pipeline(1, "out/globex");
    let form = console
        .post_form(&ada, &path, &[("content", &content), ("base", "")])
        .await;
    assert_eq!(form.status, StatusCode::NOT_FOUND);
    let api = console
        .send_json(
            &token,
            Method::PUT,
            &format!("/api/v1{path}"),
            &json!({ "content": content }),
        )
        .await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(api.json()["code"], "not_found");
    // Nor may ada create files in globex's folder.
    let created = console
        .send_json(
            &token,
            Method::PUT,
            "/api/v1/definitions/clients/globex/pipelines/sneaky.yaml",
            &json!({ "content": content }),
        )
        .await;
    assert_eq!(created.status, StatusCode::NOT_FOUND);
    assert_eq!(on_disk(&console, GLOBEX_ORDERS), before);
    assert!(
        !console
            .dir
            .path()
            .join("clients/globex/pipelines/sneaky.yaml")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_but_cannot_save() {
    let console = Console::start().await;
    let before = on_disk(&console, ORDERS);
    let otto = console.login("acme", "otto").await;
    let page = console.get(&otto, &format!("/definitions/{ORDERS}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<pre"));
    assert!(page.body.contains("test pipeline"));
    assert!(
        !page.body.contains("<textarea"),
        "no edit form for operators"
    );

    let content = pipeline(9, "out/acme");
    let form = console
        .post_form(
            &otto,
            &format!("/definitions/{ORDERS}"),
            &[("content", &content), ("base", &hash(&before))],
        )
        .await;
    assert_eq!(form.status, StatusCode::FORBIDDEN);
    let token = console.token("acme", "operator").await;
    let api = console
        .send_json(
            &token,
            Method::PUT,
            &format!("/api/v1/definitions/{ORDERS}"),
            &json!({ "content": content }),
        )
        .await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert_eq!(api.json()["code"], "forbidden");
    assert_eq!(on_disk(&console, ORDERS), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_save_is_refused_with_line_and_column() {
    let console = Console::start().await;
    let before = on_disk(&console, ORDERS);
    let ada = console.login("acme", "ada").await;
    let path = format!("/definitions/{ORDERS}");

    // Broken YAML.
    let broken = "description: broken\npullers: [\n  - type: generate\n";
    let form = console
        .post_form(
            &ada,
            &path,
            &[("content", broken), ("base", &hash(&before))],
        )
        .await;
    assert_eq!(
        form.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        form.body
    );
    assert!(has_position(&form.body, ORDERS), "{}", form.body);
    assert!(
        form.body.contains("description: broken"),
        "the submitted text is back in the form"
    );
    assert!(form.body.contains("<textarea"));
    assert_eq!(on_disk(&console, ORDERS), before);

    // Valid YAML, invalid pipeline: an unknown key, reported with its line.
    let unknown = format!("{}colour: blue\n", pipeline(5, "out/acme"));
    let token = console.token("acme", "administrator").await;
    let api = console
        .send_json(
            &token,
            Method::PUT,
            &format!("/api/v1{path}"),
            &json!({ "content": unknown, "base": hash(&before) }),
        )
        .await;
    assert_eq!(api.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", api.body);
    assert_eq!(api.json()["code"], "invalid");
    let message = api.json()["message"].as_str().unwrap().to_string();
    assert!(has_position(&message, ORDERS), "{message}");
    assert!(message.contains("colour"), "{message}");
    assert_eq!(on_disk(&console, ORDERS), before);
    assert!(
        console
            .store
            .audit_log(Some("acme"), Some(ORDERS), 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing saved, nothing audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_save_is_loaded_shown_in_the_history_and_audited() {
    let console = Console::start().await;
    let before = on_disk(&console, ORDERS);
    let ada = console.login("acme", "ada").await;
    let path = format!("/definitions/{ORDERS}");
    let page = console.get(&ada, &path).await;
    assert!(page.body.contains("<textarea"));
    let base = base_of(&page.body);
    assert_eq!(base, hash(&before));

    // A browser sends the textarea with CRLF line ends.
    let content = pipeline(7, "out/acme");
    let sent = content.replace('\n', "\r\n");
    let saved = console
        .post_form(&ada, &path, &[("content", &sent), ("base", &base)])
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let location = saved.headers[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with(&path) && location.contains("notice="));
    assert_eq!(on_disk(&console, ORDERS), content);
    let new_hash = hash(&content);

    eventually("the engine to load the saved file", || async {
        console
            .store
            .definition_versions(ORDERS)
            .await
            .unwrap()
            .first()
            .is_some_and(|v| v.hash == new_hash)
            && console
                .engine
                .project()
                .files
                .iter()
                .any(|f| f.path == ORDERS && f.content == content)
    })
    .await;

    let audit = console
        .store
        .audit_log(Some("acme"), Some(ORDERS), 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "definition.save");
    assert_eq!(audit[0].actor, "acme/ada");
    assert!(new_hash.starts_with(&audit[0].detail) && !audit[0].detail.is_empty());

    // The page shows the history and, by default, the change from the previous version.
    let page = console.get(&ada, &path).await;
    assert!(page.body.contains(&new_hash[..12]));
    assert!(page.body.contains(&hash(&before)[..12]));
    assert!(page.body.contains("class=\"diff\""), "{}", page.body);
    assert!(
        page.body.contains("class=\"add\">+     count: 7"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("class=\"del\">-     count: 5"),
        "{}",
        page.body
    );

    let token = console.token("acme", "operator").await;
    let view = console
        .get(
            &token,
            &format!(
                "/api/v1{path}?from={}&to={}",
                &hash(&before)[..12],
                new_hash
            ),
        )
        .await
        .json();
    assert_eq!(view["hash"], new_hash);
    assert_eq!(view["content"], content);
    let versions = view["versions"].as_array().unwrap();
    assert_eq!(versions[0]["hash"], new_hash);
    assert!(versions.iter().any(|v| v["hash"] == hash(&before)));
    let diff = view["diff"].as_str().unwrap();
    assert!(
        diff.contains("-    count: 5") && diff.contains("+    count: 7"),
        "{diff}"
    );
    let no_diff = console.get(&token, &format!("/api/v1{path}")).await.json();
    assert!(no_diff.get("diff").is_none(), "a diff only when asked for");
    assert_eq!(
        console
            .get(&token, &format!("/api/v1{path}?from=0000"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_with_a_stale_base_is_a_conflict() {
    let console = Console::start().await;
    let before = on_disk(&console, ORDERS);
    let token = console.token("acme", "administrator").await;
    let api = format!("/api/v1/definitions/{ORDERS}");
    let first = pipeline(6, "out/acme");
    let saved = console
        .send_json(
            &token,
            Method::PUT,
            &api,
            &json!({ "content": first, "base": hash(&before) }),
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert!(saved.json()["done"].as_str().unwrap().contains("saved"));

    let second = pipeline(8, "out/acme");
    let stale = console
        .send_json(
            &token,
            Method::PUT,
            &api,
            &json!({ "content": second, "base": hash(&before) }),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert_eq!(stale.json()["code"], "conflict");

    let ada = console.login("acme", "ada").await;
    let form = console
        .post_form(
            &ada,
            &format!("/definitions/{ORDERS}"),
            &[("content", &second), ("base", &hash(&before))],
        )
        .await;
    assert_eq!(form.status, StatusCode::CONFLICT);
    assert!(form.body.contains("count: 8"), "the submitted text is kept");
    assert_eq!(on_disk(&console, ORDERS), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_creates_a_pipeline_file_of_own_client_only() {
    let console = Console::start().await;
    let token = console.token("acme", "administrator").await;
    let content = pipeline(1, "out/acme-extra");
    for refused in [
        "clients/acme/pipelines/Bad.yaml",
        "clients/acme/pipelines/extra.txt",
        "clients/acme/other/extra.yaml",
        "clients/acme/client.yaml",
        "clients/acme/pipelines/deep/extra.yaml",
        "clients/nobody/pipelines/extra.yaml",
        "connections.yaml",
    ] {
        let answer = console
            .send_json(
                &token,
                Method::PUT,
                &format!("/api/v1/definitions/{refused}"),
                &json!({ "content": content }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{refused}");
    }
    let connections = on_disk(&console, "connections.yaml");
    assert!(connections.contains(SECRET), "connections.yaml untouched");

    let path = "clients/acme/pipelines/extra.yaml";
    let created = console
        .send_json(
            &token,
            Method::PUT,
            &format!("/api/v1/definitions/{path}"),
            &json!({ "content": content }),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(on_disk(&console, path), content);
    eventually("the new pipeline to be listed", || async {
        let list = console.get(&token, "/api/v1/definitions").await.json();
        list.as_array().unwrap().iter().any(|f| f["file"] == path)
    })
    .await;
    let leftovers: Vec<_> = std::fs::read_dir(console.dir.path().join("clients/acme/pipelines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files left: {leftovers:?}"
    );
}
