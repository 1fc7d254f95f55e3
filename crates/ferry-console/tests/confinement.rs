//! Issue 12: what an administrator of one client can make ferry do through a definition saved in
//! the console or the API. Each attack of the review, with a real project on disk: the save is
//! refused at the key that names the path, the variable or the connection, with the allowed
//! choices and without a path of the server or a secret, and nothing outside the client's
//! directories is read or written.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::json;
use support::{Console, SECRET, Who, eventually};

const FILE: &str = "clients/acme/pipelines/attack.yaml";

/// Saves `content` as acme's pipeline `attack` through the API, as an acme administrator.
async fn save(console: &Console, token: &Who, content: &str) -> support::Answer {
    console
        .send_json(
            token,
            Method::PUT,
            &format!("/api/v1/definitions/{FILE}"),
            &json!({ "content": content }),
        )
        .await
}

/// The save is refused, its message names `key` and says `says`, and shows no absolute path
/// of the server; the file was not written.
fn refused(console: &Console, answer: &support::Answer, key: &str, says: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.body
    );
    assert!(answer.body.contains(key), "{key} in {}", answer.body);
    assert!(answer.body.contains(says), "{says} in {}", answer.body);
    let server_path = console.dir.path().to_string_lossy().into_owned();
    assert!(
        !answer.body.contains(&server_path),
        "a server path is shown: {}",
        answer.body
    );
    assert!(!console.dir.path().join(FILE).exists(), "nothing saved");
}

/// A pipeline that writes a client.yaml of its own making into `path` every second.
fn attack_on(path: &str) -> String {
    format!(
        "schedule: every 1s\npullers: [{{ type: generate, count: 1 }}]\n\
         processors:\n  - {{ type: remap, source: '.admin = \"x\"' }}\n\
         pushers:\n  - {{ type: file, path: \"{path}\", name_template: client.yaml }}\n"
    )
}

fn read(console: &Console, path: &str) -> String {
    std::fs::read_to_string(console.dir.path().join(path)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_pusher_cannot_write_root_s_client_yaml_or_outside_the_project() {
    let console = Console::start().await;
    let token = console.token("acme", "administrator").await;
    let root_before = read(&console, "clients/root/client.yaml");
    let outside = tempfile::tempdir().unwrap();
    let absolute = outside.path().to_string_lossy().into_owned();
    let attacks = [
        ("clients/root", "is in another client's directory"),
        ("../escape", "is outside the directories of client `acme`"),
        (
            absolute.as_str(),
            "is outside the directories of client `acme`",
        ),
        ("out/globex", "is outside the directories of client `acme`"),
        (".", "holds"),
    ];
    for (path, says) in attacks {
        let answer = save(&console, &token, &attack_on(path)).await;
        refused(&console, &answer, "pushers[0].path", says);
    }
    let answer = save(&console, &token, &attack_on("../escape")).await;
    assert!(
        answer.body.contains(
            "(out/acme/, out/acme-extra/, blocked/); root grants directories in \
                       ferry.yaml under `clients: acme: paths:`"
        ),
        "the allowed directories are named: {}",
        answer.body
    );
    // Given time to run, it would have written within two seconds.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(read(&console, "clients/root/client.yaml"), root_before);
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puller_cannot_take_another_clients_files_or_read_definitions() {
    let console = Console::start().await;
    let token = console.token("acme", "administrator").await;
    std::fs::write(console.dir.path().join("out/globex/invoice.xml"), "<x/>").unwrap();
    let attacks = [
        // globex's files.
        (
            "{ type: file, path: out/globex, after_seat: delete }",
            "is outside",
        ),
        // The connection passwords and globex's password hashes.
        (
            "{ type: table, path: ., pattern: connections.yaml, after_seat: keep, \
             csv: { delimiter: '|', header: false } }",
            "is (or holds) ferry's store",
        ),
        (
            "{ type: table, path: clients/globex, pattern: client.yaml, after_seat: keep, \
             csv: { delimiter: '|', header: false } }",
            "is in another client's directory",
        ),
        (
            "{ type: file, path: out/acme, after_seat: { move_to: clients/root } }",
            "is in another client's directory",
        ),
    ];
    for (puller, says) in attacks {
        let attack = format!(
            "schedule: every 1s\npullers:\n  - {puller}\npushers: [{{ type: file, path: out/acme }}]\n"
        );
        let answer = save(&console, &token, &attack).await;
        refused(&console, &answer, "pullers[0]", says);
    }
    assert!(console.dir.path().join("out/globex/invoice.xml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_and_schemas_come_only_from_the_clients_own_places() {
    let console = Console::start().await;
    let token = console.token("acme", "administrator").await;
    let attacks = [
        (
            "{ type: remap, file: clients/root/client.yaml }",
            "processors[0].file",
        ),
        (
            "{ type: remap, file: ../../etc/passwd }",
            "processors[0].file",
        ),
        (
            "{ type: validate, schema_file: connections.yaml }",
            "processors[0].schema_file",
        ),
        (
            "{ type: decode, codec: { type: avro, schema: clients/globex/client.yaml } }",
            "processors[0].codec.schema",
        ),
    ];
    for (processor, key) in attacks {
        let attack = format!(
            "pullers: [{{ type: generate, count: 1 }}]\nprocessors:\n  - {processor}\n\
             pushers: [{{ type: file, path: out/acme }}]\n"
        );
        let answer = save(&console, &token, &attack).await;
        refused(&console, &answer, key, "");
        assert!(
            answer.body.contains("another client's directory")
                || answer
                    .body
                    .contains("is outside the directories of client `acme`")
                || answer.body.contains("is a definition of the project"),
            "{}",
            answer.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_names_only_granted_environment_variables_and_connections() {
    let console = Console::start().await;
    let token = console.token("acme", "administrator").await;
    // Set in every test process by cargo; stands for a database password here.
    let value = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    for (place, key) in [
        ("description: \"${CARGO_MANIFEST_DIR}\"\n", "description"),
        (
            "processors: [{ type: set, metadata: { leak: \"${CARGO_MANIFEST_DIR}\" } }]\n",
            "processors[0].metadata.leak",
        ),
    ] {
        let attack = format!(
            "{place}pullers: [{{ type: generate, count: 1 }}]\npushers: [{{ type: file, path: out/acme }}]\n"
        );
        let answer = save(&console, &token, &attack).await;
        refused(
            &console,
            &answer,
            key,
            "environment variable `CARGO_MANIFEST_DIR` is not granted to client `acme`",
        );
        assert!(!answer.body.contains(&value), "{}", answer.body);
    }
    let attack = "pullers: [{ type: sql, connection: warehouse, query: SELECT 1 }]\n\
                  pushers: [{ type: file, path: out/acme }]\n";
    let answer = save(&console, &token, attack).await;
    refused(
        &console,
        &answer,
        "pullers[0].connection",
        "connection `warehouse` is not granted to client `acme`",
    );
    assert!(!answer.body.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_variable_is_used_but_never_shown() {
    let console = Console::start().await;
    let token = console.token("acme", "administrator").await;
    let value = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    // Root grants acme the variable.
    let ferry_yaml = console.dir.path().join("ferry.yaml");
    let granted = read(&console, "ferry.yaml").replace(
        "acme: { paths: [out/acme, out/acme-extra, blocked] }",
        "acme: { paths: [out/acme, out/acme-extra, blocked], env: [CARGO_MANIFEST_DIR] }",
    );
    std::fs::write(&ferry_yaml, granted).unwrap();
    let pipeline = "description: \"secret ${CARGO_MANIFEST_DIR}\"\nschedule: manual\n\
                    pullers: [{ type: generate, count: 1 }]\n\
                    processors: [{ type: set, metadata: { leak: \"${CARGO_MANIFEST_DIR}\" } }]\n\
                    pushers: [{ type: file, path: out/acme }]\n";
    eventually("the grant to be loaded and the save to pass", || async {
        save(&console, &token, pipeline).await.status == StatusCode::OK
    })
    .await;
    eventually("the pipeline to be loaded", || async {
        console
            .get(&token, "/api/v1/pipelines")
            .await
            .body
            .contains("attack")
    })
    .await;
    let key = ferry_store::PipelineKey::new("acme", "attack");
    console.engine.run_now(&key).unwrap();
    let seated = || async {
        let queue = console.get(&token, "/api/v1/queue").await.json();
        queue["passengers"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|p| {
                (p["pipeline"] == "attack")
                    .then(|| p["id"].to_string().trim_matches('"').to_string())
            })
    };
    eventually("the passenger to be seated", || async {
        seated().await.is_some()
    })
    .await;
    let id = seated().await.unwrap();
    let ada = console.login("acme", "ada").await;
    let passenger_api = format!("/api/v1/passengers/{id}");
    let passenger_page = format!("/passengers/{id}");
    for (who, path) in [
        (&token, "/api/v1/pipelines"),
        (&token, "/api/v1/queue"),
        (&token, passenger_api.as_str()),
        (&ada, "/"),
        (&ada, "/pipelines/acme/attack"),
        (&ada, passenger_page.as_str()),
        (&ada, "/export/queue?format=csv"),
        (&ada, "/export/queue?format=json"),
    ] {
        let answer = console.get(who, path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        assert!(!answer.body.contains(&value), "{path} shows the value");
    }
    let metadata = console.get(&token, &passenger_api).await.body;
    assert!(metadata.contains("${CARGO_MANIFEST_DIR}"), "{metadata}");
    let pipelines = console.get(&token, "/api/v1/pipelines").await.body;
    assert!(
        pipelines.contains("secret ${CARGO_MANIFEST_DIR}"),
        "{pipelines}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_show_paths_relative_to_the_project() {
    let console = Console::start().await;
    let token = console.token("acme", "operator").await;
    let server_path = console.dir.path().to_string_lossy().into_owned();
    // `broken` writes into `blocked`, a file: its passengers are dead with an I/O error that
    // names the path.
    let dead = console.get(&token, "/api/v1/queue?state=dead").await.json();
    let id = dead["passengers"][0]["id"].to_string();
    let id = id.trim_matches('"');
    let ada = console.login("acme", "ada").await;
    for (who, path) in [
        (&token, format!("/api/v1/passengers/{id}")),
        (&ada, format!("/passengers/{id}")),
        (&ada, "/dead".to_string()),
    ] {
        let answer = console.get(who, &path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(answer.body.contains("blocked"), "{path}: {}", answer.body);
        assert!(
            !answer.body.contains(&server_path),
            "{path} shows where the project is: {}",
            answer.body
        );
    }
}
