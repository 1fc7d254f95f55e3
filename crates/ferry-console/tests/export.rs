//! Exports of the queue and of runs as CSV, JSON and xlsx.

mod support;

use std::collections::BTreeSet;
use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use ferry_core::Passenger;
use ferry_store::{PipelineKey, QueueFilter};
use http_body_util::BodyExt;
use support::{Console, Who};
use tower::ServiceExt;

/// An answer with its body as bytes (xlsx is not text).
struct Download {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn download(console: &Console, who: &Who, path: &str) -> Download {
    let mut builder = Request::get(path);
    match who {
        Who::Anonymous => {}
        Who::Session { cookie, .. } => {
            builder = builder.header(header::COOKIE, format!("ferry_session={cookie}"));
        }
        Who::Token(secret) => {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {secret}"));
        }
    }
    let response = console
        .app
        .clone()
        .oneshot(builder.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Download {
        status,
        headers,
        body: body.to_vec(),
    }
}

/// The ids of a client's passengers, as the store lists them.
async fn ids_of(console: &Console, filter: QueueFilter) -> BTreeSet<String> {
    console
        .store
        .list(&filter, None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect()
}

fn client(name: &str) -> QueueFilter {
    QueueFilter {
        client: Some(name.to_string()),
        ..QueueFilter::default()
    }
}

/// The rows of a CSV export, by column name, after checking the header.
fn csv_rows(body: &[u8], columns: &[&str]) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, columns);
    reader
        .records()
        .map(|record| {
            header
                .iter()
                .cloned()
                .zip(record.unwrap().iter().map(str::to_string))
                .collect()
        })
        .collect()
}

const QUEUE_COLUMNS: &[&str] = &[
    "id",
    "client",
    "pipeline",
    "source_system",
    "external_id",
    "state",
    "created_at",
    "updated_at",
    "last_error",
];

/// The text of every cell of the first worksheet of an xlsx file, row by row.
fn xlsx_rows(body: &[u8]) -> Vec<Vec<String>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(body)).expect("an xlsx is a zip");
    let mut xml = String::new();
    archive
        .by_name("xl/worksheets/sheet1.xml")
        .expect("a worksheet")
        .read_to_string(&mut xml)
        .unwrap();
    xml.split("<row ")
        .skip(1)
        .map(|row| {
            row.split("<t>")
                .skip(1)
                .filter_map(|cell| cell.split("</t>").next())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// Seats passengers of acme's `imported` pipeline (not running, so they stay pending).
async fn seat(console: &Console, external_ids: &[String]) {
    let passengers: Vec<Passenger> = external_ids
        .iter()
        .map(|id| Passenger::pulled("import", id.as_str()))
        .collect();
    console
        .store
        .seat(
            &PipelineKey::new("acme", "imported"),
            "v1",
            &[],
            &passengers,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_json_and_xlsx_hold_exactly_the_clients_passengers() {
    let console = Console::start().await;
    let acme = ids_of(&console, client("acme")).await;
    let globex = ids_of(&console, client("globex")).await;
    assert_eq!(acme.len(), 7);
    let ada = console.login("acme", "ada").await;

    let csv = download(&console, &ada, "/export/queue?format=csv").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let disposition = csv.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"ferry-queue-")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let stamp = &disposition["attachment; filename=\"ferry-queue-".len()..][..15];
    assert!(
        stamp
            .chars()
            .enumerate()
            .all(|(i, c)| if i == 8 { c == '-' } else { c.is_ascii_digit() }),
        "{stamp}"
    );
    let rows = csv_rows(&csv.body, QUEUE_COLUMNS);
    let ids: BTreeSet<String> = rows.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, acme);
    assert_eq!(rows.len(), acme.len(), "each once");
    assert!(rows.iter().all(|r| r["client"] == "acme"));
    assert!(
        rows.iter()
            .any(|r| r["state"] == "dead" && !r["last_error"].is_empty())
    );
    assert!(rows.iter().all(|r| r["created_at"].ends_with('Z')));

    let token = console.token("acme", "administrator").await;
    let json = download(&console, &token, "/api/v1/export/queue?format=json").await;
    assert_eq!(json.status, StatusCode::OK);
    assert_eq!(json.headers[header::CONTENT_TYPE], "application/json");
    assert!(
        json.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .ends_with(".json\"")
    );
    let array: Vec<serde_json::Value> = serde_json::from_slice(&json.body).unwrap();
    let ids: BTreeSet<String> = array
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, acme);
    assert_eq!(array.len(), acme.len());
    assert!(array.iter().all(|p| p["client"] == "acme"));

    let xlsx = download(&console, &ada, "/export/queue?format=xlsx").await;
    assert_eq!(xlsx.status, StatusCode::OK);
    assert_eq!(
        xlsx.headers[header::CONTENT_TYPE],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert!(
        xlsx.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .ends_with(".xlsx\"")
    );
    assert_eq!(
        xlsx.headers[header::CONTENT_LENGTH].to_str().unwrap(),
        xlsx.body.len().to_string()
    );
    let rows = xlsx_rows(&xlsx.body);
    assert_eq!(rows[0], QUEUE_COLUMNS);
    let ids: BTreeSet<String> = rows[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, acme);
    assert_eq!(rows.len() - 1, acme.len());
    assert!(rows[1..].iter().all(|r| r[1] == "acme"));
    let everything = String::from_utf8_lossy(&xlsx.body).into_owned() + &rows.concat().join(" ");
    for id in &globex {
        assert!(!everything.contains(id.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply() {
    let console = Console::start().await;
    let token = console.token("acme", "administrator").await;
    let dead = download(
        &console,
        &token,
        "/api/v1/export/queue?format=csv&state=dead",
    )
    .await;
    let rows = csv_rows(&dead.body, QUEUE_COLUMNS);
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["state"] == "dead" && r["pipeline"] == "broken")
    );

    let orders = download(
        &console,
        &token,
        "/api/v1/export/queue?format=json&pipeline=orders",
    )
    .await;
    let array: Vec<serde_json::Value> = serde_json::from_slice(&orders.body).unwrap();
    assert_eq!(array.len(), 5);
    assert!(array.iter().all(|p| p["pipeline"] == "orders"));

    let future = download(
        &console,
        &token,
        "/api/v1/export/queue?format=json&since=2999-01-01",
    )
    .await;
    assert_eq!(future.status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&future.body).unwrap(),
        serde_json::json!([])
    );
    let empty_csv = download(
        &console,
        &token,
        "/api/v1/export/queue?format=csv&since=2999-01-01",
    )
    .await;
    assert!(csv_rows(&empty_csv.body, QUEUE_COLUMNS).is_empty());

    let runs = download(
        &console,
        &token,
        "/api/v1/export/runs?format=csv&status=failed",
    )
    .await;
    assert_eq!(runs.status, StatusCode::OK);
    assert!(
        runs.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("ferry-runs-")
    );
    let rows = csv_rows(
        &runs.body,
        &[
            "id",
            "client",
            "pipeline",
            "version",
            "status",
            "started_at",
            "finished_at",
            "pulled",
            "seated",
            "duplicates",
            "failed",
            "error",
        ],
    );
    assert!(
        rows.iter()
            .all(|r| r["status"] == "failed" && r["client"] == "acme")
    );
    let all_runs = download(&console, &token, "/api/v1/export/runs?format=json").await;
    let all_runs: Vec<serde_json::Value> = serde_json::from_slice(&all_runs.body).unwrap();
    assert_eq!(all_runs.len(), 2, "acme's two runs: {all_runs:?}");
    assert!(all_runs.iter().all(|r| r["client"] == "acme"));
    let orders_run = all_runs.iter().find(|r| r["pipeline"] == "orders").unwrap();
    assert!(orders_run["seated"].is_u64());
    let xlsx = download(&console, &token, "/api/v1/export/runs?format=xlsx").await;
    assert_eq!(xlsx.status, StatusCode::OK);
    assert_eq!(xlsx_rows(&xlsx.body)[0][0], "id");

    for bad in [
        "/api/v1/export/queue?format=pdf",
        "/api/v1/export/runs?format=xml",
        "/api/v1/export/queue?format=csv&state=asleep",
        "/api/v1/export/queue?format=csv&since=yesterday",
    ] {
        let answer = download(&console, &token, bad).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let ada = console.login("acme", "ada").await;
    assert_eq!(
        download(&console, &ada, "/export/queue?format=pdf")
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_globex_user_never_gets_acme_rows() {
    let console = Console::start().await;
    let acme = ids_of(&console, client("acme")).await;
    let globex = ids_of(&console, client("globex")).await;
    let gina = console.token("globex", "administrator").await;
    for format in ["csv", "json", "xlsx"] {
        for query in ["", "&client=acme", "&client=acme&pipeline=broken"] {
            let path = format!("/api/v1/export/queue?format={format}{query}");
            let answer = download(&console, &gina, &path).await;
            assert_eq!(answer.status, StatusCode::OK, "{path}");
            let text = match format {
                "xlsx" => xlsx_rows(&answer.body).concat().join(" "),
                _ => String::from_utf8(answer.body).unwrap(),
            };
            for id in &acme {
                assert!(!text.contains(id.as_str()), "{path} leaks {id}");
            }
            assert!(!text.contains("acme"), "{path}");
            if query.is_empty() {
                for id in &globex {
                    assert!(text.contains(id.as_str()), "{path} misses {id}");
                }
            }
        }
    }
    let runs = download(
        &console,
        &gina,
        "/api/v1/export/runs?format=json&client=acme",
    )
    .await;
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&runs.body).unwrap();
    assert!(!runs.is_empty());
    assert!(runs.iter().all(|r| r["client"] == "globex"));

    // Operators export nothing; root exports any client.
    let gus = console.token("globex", "operator").await;
    assert_eq!(
        download(&console, &gus, "/api/v1/export/queue?format=csv")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let gus = console.login("globex", "gus").await;
    assert_eq!(
        download(&console, &gus, "/export/queue?format=csv")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let root = console.token("root", "administrator").await;
    let all = download(&console, &root, "/api/v1/export/queue?format=json").await;
    let all: Vec<serde_json::Value> = serde_json::from_slice(&all.body).unwrap();
    assert_eq!(all.len(), acme.len() + globex.len());
    let only_acme = download(
        &console,
        &root,
        "/api/v1/export/queue?format=json&client=acme",
    )
    .await;
    let only_acme: Vec<serde_json::Value> = serde_json::from_slice(&only_acme.body).unwrap();
    assert_eq!(only_acme.len(), acme.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formula_injection_is_neutralised() {
    let console = Console::start().await;
    let dangerous = [
        "=HYPERLINK(\"http://evil.example\",\"click\")",
        "+1+1",
        "-2+3",
        "@SUM(A1:A2)",
        "\t=1+1",
        "safe-id",
    ];
    seat(
        &console,
        &dangerous.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )
    .await;
    let token = console.token("acme", "administrator").await;
    let csv = download(
        &console,
        &token,
        "/api/v1/export/queue?format=csv&pipeline=imported",
    )
    .await;
    let rows = csv_rows(&csv.body, QUEUE_COLUMNS);
    let external: BTreeSet<String> = rows.iter().map(|r| r["external_id"].clone()).collect();
    let expected: BTreeSet<String> = dangerous
        .iter()
        .map(|id| {
            if id.starts_with(['=', '+', '-', '@', '\t']) {
                format!("'{id}")
            } else {
                id.to_string()
            }
        })
        .collect();
    assert_eq!(external, expected);

    // JSON keeps the values as they are; xlsx writes them as text, never as formulas.
    let json = download(
        &console,
        &token,
        "/api/v1/export/queue?format=json&pipeline=imported",
    )
    .await;
    let array: Vec<serde_json::Value> = serde_json::from_slice(&json.body).unwrap();
    assert!(array.iter().any(|p| p["external_id"] == dangerous[0]));
    let xlsx = download(
        &console,
        &token,
        "/api/v1/export/queue?format=xlsx&pipeline=imported",
    )
    .await;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(xlsx.body)).unwrap();
    let mut sheet = String::new();
    archive
        .by_name("xl/worksheets/sheet1.xml")
        .unwrap()
        .read_to_string(&mut sheet)
        .unwrap();
    assert!(!sheet.contains("<f>"), "no formulas in the worksheet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_stream_across_many_pages() {
    let console = Console::start().await;
    let ids: Vec<String> = (0..2_345).map(|i| format!("bulk-{i:05}")).collect();
    seat(&console, &ids).await;
    let token = console.token("acme", "administrator").await;
    for format in ["csv", "json", "xlsx"] {
        let answer = download(
            &console,
            &token,
            &format!("/api/v1/export/queue?format={format}&pipeline=imported"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        let got: BTreeSet<String> = match format {
            "csv" => csv_rows(&answer.body, QUEUE_COLUMNS)
                .into_iter()
                .map(|r| r["external_id"].clone())
                .collect(),
            "json" => serde_json::from_slice::<Vec<serde_json::Value>>(&answer.body)
                .unwrap()
                .into_iter()
                .map(|p| p["external_id"].as_str().unwrap().to_string())
                .collect(),
            _ => xlsx_rows(&answer.body)[1..]
                .iter()
                .map(|r| r[4].clone())
                .collect(),
        };
        assert_eq!(got.len(), ids.len(), "{format}");
        assert_eq!(
            got,
            ids.iter().cloned().collect::<BTreeSet<_>>(),
            "{format}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_page_has_forms_for_administrators() {
    let console = Console::start().await;
    let ada = console.login("acme", "ada").await;
    let page = console.get(&ada, "/export").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("action=\"/export/queue\""));
    assert!(page.body.contains("action=\"/export/runs\""));
    assert!(page.body.contains("value=\"xlsx\""));
    let otto = console.login("acme", "otto").await;
    assert_eq!(
        console.get(&otto, "/export").await.status,
        StatusCode::FORBIDDEN
    );
}
