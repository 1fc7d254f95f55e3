//! `docs/openapi.yaml` against the route table, both ways, and against real answers: every
//! `/api/` route (and `/health`, `/metrics`) is documented with its access rule, every
//! documented operation exists, and what the console answers matches the documented schema.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use axum::http::{Method, StatusCode, header};
use bytes::Bytes;
use ferry_console::auth::{Access, is_api};
use ferry_console::routes::table;
use ferry_core::{Attachment, Body, Passenger, PassengerId};
use ferry_store::{PassengerState, QueueFilter, RunFilter};
use serde_json::{Value, json};
use support::{Answer, Console, Who};

/// The definition file of acme/orders.
const ORDERS_FILE: &str = "clients/acme/pipelines/orders.yaml";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn spec() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("docs/openapi.yaml: {e}"))
}

/// An axum path as OpenAPI writes it: `{*file}` is `{file}`.
fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Public => "public",
        Access::Operator => "operator",
        Access::Administrator => "administrator",
        Access::Root => "root",
        Access::Webhook => "webhook",
    }
}

/// The operations the document must describe, by (method, OpenAPI path): the API routes,
/// `/health` and `/metrics`.
fn table_operations() -> BTreeMap<(String, String), Access> {
    table()
        .iter()
        .filter(|r| is_api(r.path) || r.path == "/health" || r.path == "/metrics")
        .map(|r| {
            let key = (r.method.as_str().to_lowercase(), openapi_path(r.path));
            (key, r.access)
        })
        .collect()
}

/// The documented operations, by (method, path).
fn documented(spec: &Value) -> BTreeMap<(String, String), &Value> {
    let mut operations = BTreeMap::new();
    let paths = spec["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                operations.insert((method.to_string(), path.clone()), operation);
            }
        }
    }
    operations
}

/// The value a local `$ref` points at.
fn resolve<'a>(spec: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references: {reference}"));
        value = spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} points at nothing"));
    }
    value
}

/// The parameters of an operation: its path item's and its own, resolved.
fn parameters<'a>(spec: &'a Value, path: &str, operation: &'a Value) -> Vec<&'a Value> {
    let item = &spec["paths"][path];
    let mut all: Vec<&Value> = Vec::new();
    for list in [&item["parameters"], &operation["parameters"]] {
        for parameter in list.as_array().into_iter().flatten() {
            all.push(resolve(spec, parameter));
        }
    }
    all
}

fn path_names(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_document_describes_every_api_route_and_nothing_else() {
    let spec = spec();
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1"
    );
    let wanted = table_operations();
    let documented = documented(&spec);
    let missing: Vec<String> = wanted
        .keys()
        .filter(|k| !documented.contains_key(*k))
        .map(|(m, p)| format!("{} {p}", m.to_uppercase()))
        .collect();
    let extra: Vec<String> = documented
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .map(|(m, p)| format!("{} {p}", m.to_uppercase()))
        .collect();
    assert!(
        missing.is_empty(),
        "routes of the table not in docs/openapi.yaml:\n{}",
        missing.join("\n")
    );
    assert!(
        extra.is_empty(),
        "operations in docs/openapi.yaml that are no route:\n{}",
        extra.join("\n")
    );

    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    let global_bearer = spec["security"]
        .as_array()
        .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
    for ((method, path), operation) in &documented {
        let name = format!("{} {path}", method.to_uppercase());
        let access = wanted[&(method.clone(), path.clone())];
        if operation["x-access"].as_str() != Some(access_name(access)) {
            problems.push(format!(
                "{name}: x-access is {}, the table says {}",
                operation["x-access"],
                access_name(access)
            ));
        }
        match operation["operationId"].as_str() {
            Some(id) if ids.insert(id.to_string()) => {}
            other => problems.push(format!("{name}: operationId {other:?} missing or repeated")),
        }
        // Bearer tokens everywhere but the public routes.
        let security = operation.get("security").and_then(Value::as_array);
        let bearer = match security {
            Some(list) => list.iter().any(|r| r.get("bearer").is_some()),
            None => global_bearer,
        };
        if bearer == (access == Access::Public) {
            problems.push(format!(
                "{name}: security {security:?} does not fit access {access:?}"
            ));
        }
        // Every path parameter declared, required, and no other.
        let declared: BTreeSet<String> = parameters(&spec, path, operation)
            .into_iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                if p["required"] != true {
                    problems.push(format!("{name}: path parameter {} not required", p["name"]));
                }
                p["name"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        if declared != path_names(path) {
            problems.push(format!(
                "{name}: path parameters declared {declared:?}, in the path {:?}",
                path_names(path)
            ));
        }
        // A success answer; errors in the one error shape; 401 wherever a token is needed.
        let responses = operation["responses"].as_object().expect("responses");
        if !responses.keys().any(|status| status.starts_with('2')) {
            problems.push(format!("{name}: no success answer"));
        }
        // Without a token: 401 under /api/, the login page's redirect elsewhere.
        let refused = if is_api(path) { "401" } else { "303" };
        if access != Access::Public && !responses.contains_key(refused) {
            problems.push(format!("{name}: {refused} not documented"));
        }
        if matches!(access, Access::Administrator | Access::Root) && !responses.contains_key("403")
        {
            problems.push(format!("{name}: 403 not documented"));
        }
        for (status, response) in responses {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            if !is_api(path) {
                continue;
            }
            let schema = &resolve(&spec, response)["content"]["application/json"]["schema"];
            if schema.get("$ref").and_then(Value::as_str) != Some("#/components/schemas/Error") {
                problems.push(format!("{name}: {status} is not the Error shape"));
            }
        }
    }
    // The error codes the console uses, no more, no fewer.
    let codes: BTreeSet<&str> =
        spec["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
            .as_array()
            .expect("Error.code enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
    let used: BTreeSet<&str> = [
        "unauthorized",
        "forbidden",
        "not_found",
        "invalid",
        "conflict",
        "csrf",
        "too_many_attempts",
        "unavailable",
        "internal",
    ]
    .into();
    if codes != used {
        problems.push(format!(
            "Error.code lists {codes:?}, the console uses {used:?}"
        ));
    }
    let scheme = &spec["components"]["securitySchemes"]["bearer"];
    if scheme["type"] != "http" || scheme["scheme"] != "bearer" {
        problems.push(format!("the bearer scheme is {scheme}"));
    }
    // Every reference points at something.
    let mut references = Vec::new();
    collect_references(&spec, &mut references);
    for reference in references {
        if spec.pointer(reference.trim_start_matches('#')).is_none() {
            problems.push(format!("{reference} points at nothing"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn collect_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value.as_str()) {
                    ("$ref", Some(reference)) => out.push(reference.to_string()),
                    _ => collect_references(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, out)),
        _ => {}
    }
}

// ---- checking answers against schemas ----

/// Checks JSON values against the document's schemas: types, `enum`/`const`, required and
/// undocumented properties, array items, `allOf`/`oneOf`/`anyOf`. Formats are not checked.
struct Checker<'a> {
    spec: &'a Value,
}

/// An object schema with `allOf` merged.
struct Shape<'a> {
    properties: BTreeMap<String, &'a Value>,
    required: BTreeSet<String>,
    /// Other properties: `None` when they are not allowed.
    additional: Option<&'a Value>,
}

impl<'a> Checker<'a> {
    fn shape(&self, schema: &'a Value) -> Shape<'a> {
        let mut properties = BTreeMap::new();
        let mut required = BTreeSet::new();
        let parts = schema["allOf"].as_array().into_iter().flatten();
        let parts = parts.map(|p| resolve(self.spec, p)).chain([schema]);
        for part in parts {
            for (name, property) in part["properties"].as_object().into_iter().flatten() {
                properties.insert(name.clone(), property);
            }
            for name in part["required"].as_array().into_iter().flatten() {
                required.insert(name.as_str().unwrap_or_default().to_string());
            }
        }
        // A merged schema is closed by `unevaluatedProperties: false`, a plain one by
        // `additionalProperties: false`; an `additionalProperties` schema types the others.
        let others = if schema.get("allOf").is_some() {
            &schema["unevaluatedProperties"]
        } else {
            &schema["additionalProperties"]
        };
        let additional = match others {
            Value::Bool(false) => None,
            Value::Object(_) => Some(others),
            _ => Some(&Value::Bool(true)),
        };
        Shape {
            properties,
            required,
            additional,
        }
    }

    fn check(&self, schema: &'a Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = resolve(self.spec, schema);
        if *schema == Value::Bool(true) {
            return;
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(alternatives) = schema[key].as_array() {
                let fits = alternatives.iter().any(|alternative| {
                    let mut found = Vec::new();
                    self.check(alternative, value, at, &mut found);
                    found.is_empty()
                });
                if !fits {
                    errors.push(format!("{at}: {value} fits none of {key}"));
                }
                return;
            }
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !types.iter().any(|t| is_type(value, t)) {
                let shown: String = value.to_string().chars().take(80).collect();
                errors.push(format!("{at}: {shown} is not {types:?}"));
                return;
            }
        }
        if let Some(values) = schema["enum"].as_array()
            && !values.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {values:?}"));
        }
        if let Some(constant) = schema.get("const")
            && constant != value
        {
            errors.push(format!("{at}: {value} is not {constant}"));
        }
        match value {
            Value::Object(object) => {
                let shape = self.shape(schema);
                for name in &shape.required {
                    if !object.contains_key(name) {
                        errors.push(format!("{at}: required `{name}` missing"));
                    }
                }
                for (name, member) in object {
                    let at = format!("{at}.{name}");
                    match (shape.properties.get(name), shape.additional) {
                        (Some(property), _) => self.check(property, member, &at, errors),
                        (None, Some(additional)) => self.check(additional, member, &at, errors),
                        (None, None) => errors.push(format!("{at}: not documented")),
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, element) in items.iter().enumerate() {
                        self.check(item, element, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            _ => {}
        }
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// The checker is no rubber stamp: each kind of misfit is found.
#[test]
fn the_checker_finds_what_does_not_fit() {
    let spec = spec();
    let checker = Checker { spec: &spec };
    let errors = |schema: &str, value: &Value| {
        let mut errors = Vec::new();
        let reference = json!({ "$ref": format!("#/components/schemas/{schema}") });
        checker.check(&reference, value, "$", &mut errors);
        errors
    };
    let run = json!({
        "id": 7, "client": "acme", "pipeline": "orders", "version": "abc",
        "status": "succeeded", "started_at": "2026-11-23T08:00:00Z", "finished_at": null,
        "pulled": 5, "seated": 5, "duplicates": 0, "failed": 0, "error": null
    });
    assert_eq!(errors("Run", &run), Vec::<String>::new());
    let misfits = [
        ("/pulled", None, "required `pulled` missing"),
        ("/secret", Some(json!("x")), "$.secret: not documented"),
        ("/status", Some(json!("sleeping")), "is not one of"),
        ("/id", Some(json!("7")), "is not"),
        ("/error", Some(json!(3)), "is not"),
    ];
    for (pointer, value, expected) in misfits {
        let mut wrong = run.clone();
        let key = &pointer[1..];
        match value {
            Some(value) => {
                wrong[key] = value;
            }
            None => {
                wrong.as_object_mut().unwrap().remove(key);
            }
        }
        let found = errors("Run", &wrong);
        assert!(
            found.iter().any(|e| e.contains(expected)),
            "{pointer}: {found:?}"
        );
    }
    // `allOf` merges; `unevaluatedProperties: false` closes the merge.
    let mut token = json!({
        "id": 1, "client": "acme", "name": "ci", "role": "operator", "created_by": "acme/ada",
        "created_at": "2026-11-23T08:00:00Z", "last_used_at": null, "secret": "s"
    });
    assert_eq!(errors("CreatedToken", &token), Vec::<String>::new());
    token["hash"] = json!("h");
    assert!(!errors("CreatedToken", &token).is_empty());
    // `oneOf` with null.
    assert!(errors("PipelineSummary", &json!({})).len() >= 9);
    let lists = json!([{ "client": "acme" }]);
    assert!(
        !errors("DeadGroup", &lists).is_empty(),
        "an array is not an object"
    );
}

// ---- the live check ----

/// Things of acme that fill path parameters.
struct Things {
    passenger: PassengerId,
    dead: PassengerId,
    run: i64,
    token: i64,
    file: String,
    content: String,
    group: (String, String, String),
    quarantined: i64,
}

/// A documented `path` filled with `t`: a state change of a passenger acts on a dead one.
/// Panics on a parameter without a rule here.
fn fill(path: &str, t: &Things, action: Option<&str>, changes: bool) -> String {
    let under = |what: &str| path.starts_with(&format!("/api/v1/{what}/"));
    path.split('/')
        .map(|segment| {
            let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                return segment.to_string();
            };
            match (name, action) {
                ("client", _) => "acme".to_string(),
                ("pipeline", _) => "orders".to_string(),
                ("file", _) => t.file.clone(),
                ("index", _) => "0".to_string(),
                ("id", _) if under("passengers") && changes => t.dead.to_string(),
                ("id", _) if under("passengers") => t.passenger.to_string(),
                ("id", _) if under("runs") => t.run.to_string(),
                ("id", _) if under("tokens") => t.token.to_string(),
                ("id", _) if under("quarantine") => t.quarantined.to_string(),
                ("action", Some(action)) => action.to_string(),
                _ => panic!(
                    "{path}: no rule fills `{segment}`; add one to fill() in tests/openapi.rs"
                ),
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// What a state change sends, and with which action, by operationId. Actions are chosen to do
/// no harm (never `shutdown`).
fn change(operation_id: &str, t: &Things) -> (Option<&'static str>, Option<Value>) {
    match operation_id {
        "actOnPipeline" => (Some("run"), None),
        "actOnPassenger" => (Some("retry"), None),
        "skipStep" => (None, None),
        "actOnDeadGroup" => (
            Some("replay"),
            Some(json!({ "client": t.group.0, "pipeline": t.group.1, "error": t.group.2 })),
        ),
        "actOnQuarantined" => (Some("retry"), None),
        "saveDefinition" => (None, Some(json!({ "content": t.content }))),
        "createToken" => (None, Some(json!({ "name": "openapi", "role": "operator" }))),
        "revokeToken" => (None, None),
        "actOnSystem" => (Some("resume"), None),
        other => {
            panic!("no rule for the state change {other}; add one to change() in tests/openapi.rs")
        }
    }
}

/// The media type of an answer, without parameters.
fn essence(answer: &Answer) -> String {
    answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Checks `answer` against what the document says `operation` answers with its status.
fn check_answer(
    spec: &Value,
    name: &str,
    operation: &Value,
    answer: &Answer,
    problems: &mut Vec<String>,
) {
    let status = answer.status.as_u16().to_string();
    let Some(response) = operation["responses"].get(&status) else {
        problems.push(format!(
            "{name}: answered {status}, which is not documented: {}",
            answer.body.chars().take(300).collect::<String>()
        ));
        return;
    };
    let response = resolve(spec, response);
    let Some(content) = response["content"].as_object() else {
        return;
    };
    let media = essence(answer);
    let Some(documented) = content.get(&media) else {
        problems.push(format!(
            "{name}: answered {media}, documented are {:?}",
            content.keys().collect::<Vec<_>>()
        ));
        return;
    };
    if media != "application/json" {
        return;
    }
    let value: Value = match serde_json::from_str(&answer.body) {
        Ok(value) => value,
        Err(e) => {
            problems.push(format!("{name}: not JSON ({e})"));
            return;
        }
    };
    if value.as_array().is_some_and(Vec::is_empty) && answer.status.is_success() {
        problems.push(format!("{name}: an empty list leaves its items unchecked"));
    }
    let mut errors = Vec::new();
    Checker { spec }.check(&documented["schema"], &value, "$", &mut errors);
    for error in errors {
        problems.push(format!("{name} ({status}): {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_documented_schemas() {
    let spec = spec();
    let console = Console::start().await;
    let root = console.token("root", "administrator").await;
    // A passenger with an attachment, and something in the audit log.
    let mut passenger = Passenger::pulled("openapi", "with-attachment");
    passenger
        .metadata
        .insert("subject".into(), "an order".into());
    passenger.body = Body::json(&json!({ "order": 7 }));
    passenger.attachments.push(Attachment {
        name: "order.pdf".into(),
        media_type: "application/pdf".into(),
        content: Bytes::from_static(b"%PDF-1.4"),
    });
    let id = passenger.id;
    console.seat("acme", "orders", passenger).await;
    console
        .wait_for("acme", "orders", PassengerState::Complete, 6)
        .await;
    for action in ["pause", "resume"] {
        let path = format!("/api/v1/pipelines/globex/orders/{action}");
        let answer = console.request(&root, Method::POST, &path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    }
    let dead_filter = QueueFilter {
        client: Some("acme".into()),
        state: Some(PassengerState::Dead),
        ..QueueFilter::default()
    };
    let runs = RunFilter {
        client: Some("acme".into()),
        ..RunFilter::default()
    };
    console.token("acme", "operator").await;
    let group = console.store.dead_groups(Some("acme")).await.unwrap()[0].clone();
    let content = std::fs::read_to_string(console.dir.path().join(ORDERS_FILE)).unwrap();
    let quarantined = console.quarantine_one("acme").await;
    let things = Things {
        passenger: id,
        dead: console.store.list(&dead_filter, None, 1).await.unwrap()[0].id,
        run: console.store.runs_page(&runs, None, 1).await.unwrap()[0].id,
        token: console.store.tokens(Some("acme")).await.unwrap()[0].id,
        file: ORDERS_FILE.into(),
        content,
        group: (group.client, group.pipeline, group.error),
        quarantined,
    };

    let mut problems = Vec::new();
    let documented = documented(&spec);
    // Reads first: every documented GET, in each export format, as root.
    for ((method, path), operation) in documented.iter().filter(|((m, _), _)| m == "get") {
        let filled = fill(path, &things, None, false);
        let mut variants = vec![filled.clone()];
        for parameter in parameters(&spec, path, operation) {
            if parameter["name"] == "format" && parameter["in"] == "query" {
                let schema = resolve(&spec, &parameter["schema"]);
                for format in schema["enum"].as_array().into_iter().flatten() {
                    variants.push(format!("{filled}?format={}", format.as_str().unwrap()));
                }
            }
        }
        for url in variants {
            let name = format!("{} {url}", method.to_uppercase());
            let who = if operation["x-access"] == "public" {
                Who::Anonymous
            } else {
                root.clone()
            };
            let answer = console.get(&who, &url).await;
            if answer.status != StatusCode::OK {
                problems.push(format!(
                    "{name}: expected 200, got {}: {}",
                    answer.status,
                    answer.body.chars().take(300).collect::<String>()
                ));
            }
            check_answer(&spec, &name, operation, &answer, &mut problems);
        }
    }
    // Without a token every operation answers as documented: 401 under /api/, the login
    // page's redirect elsewhere; a wrong token is no better.
    let wrong = Who::Token("ferry_not-a-token".into());
    for ((method, path), operation) in &documented {
        if operation["x-access"] == "public" {
            continue;
        }
        let url = fill(path, &things, Some("x"), false);
        // Outside /api/, a wrong token is refused as such; no credentials at all go to the login.
        let anonymous = if is_api(path) {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::SEE_OTHER
        };
        for (who, label, expected) in [
            (&Who::Anonymous, "without a token", anonymous),
            (&wrong, "with a wrong token", StatusCode::UNAUTHORIZED),
        ] {
            let name = format!("{} {url} {label}", method.to_uppercase());
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let answer = console.request(who, method, &url, None).await;
            if answer.status != expected {
                problems.push(format!(
                    "{name}: expected {expected}, got {}",
                    answer.status
                ));
            }
            check_answer(&spec, &name, operation, &answer, &mut problems);
        }
    }
    // A token without the role answers the documented 403.
    let operator = console.token("acme", "operator").await;
    for ((method, path), operation) in &documented {
        if !matches!(
            operation["x-access"].as_str(),
            Some("administrator" | "root")
        ) {
            continue;
        }
        let url = fill(path, &things, Some("x"), false);
        let name = format!("{} {url} as an operator", method.to_uppercase());
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let answer = console.request(&operator, method, &url, None).await;
        if answer.status != StatusCode::FORBIDDEN {
            problems.push(format!("{name}: expected 403, got {}", answer.status));
        }
        check_answer(&spec, &name, operation, &answer, &mut problems);
    }
    // Things of nobody answer the documented 404.
    for (path, url) in [
        (
            "/api/v1/passengers/{id}",
            format!("/api/v1/passengers/{}", PassengerId::new()),
        ),
        ("/api/v1/runs/{id}", "/api/v1/runs/999999".to_string()),
        (
            "/api/v1/pipelines/{client}/{pipeline}",
            "/api/v1/pipelines/acme/nothing".to_string(),
        ),
    ] {
        let operation = documented[&("get".to_string(), path.to_string())];
        let answer = console.get(&root, &url).await;
        if answer.status != StatusCode::NOT_FOUND {
            problems.push(format!("GET {url}: expected 404, got {}", answer.status));
        }
        check_answer(
            &spec,
            &format!("GET {url}"),
            operation,
            &answer,
            &mut problems,
        );
    }
    // Then every state change, as root, with what the document says it takes.
    for ((method, path), operation) in documented.iter().filter(|((m, _), _)| m != "get") {
        let operation_id = operation["operationId"].as_str().unwrap_or_default();
        let (action, body) = change(operation_id, &things);
        if action.is_some() != path.contains("{action}") {
            problems.push(format!(
                "{operation_id}: change() and the path disagree on the action"
            ));
            continue;
        }
        let url = fill(path, &things, action, true);
        let name = format!("{} {url}", method.to_uppercase());
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let answer = match &body {
            Some(body) => console.send_json(&root, method, &url, body).await,
            None => console.request(&root, method, &url, None).await,
        };
        if !answer.status.is_success() && answer.status != StatusCode::CONFLICT {
            problems.push(format!(
                "{name}: expected success, got {}: {}",
                answer.status,
                answer.body.chars().take(300).collect::<String>()
            ));
        }
        check_answer(&spec, &name, operation, &answer, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
