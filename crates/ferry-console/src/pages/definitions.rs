//! Definitions: the files a principal may see, each with its version history and a diff between
//! two versions; administrators edit them, validated before they are saved.
//!
//! Only `ferry.yaml` (for root administrators) and pipeline files
//! (`clients/<client>/pipelines/<name>.yaml`) are definitions here. `connections.yaml` holds
//! secrets and every `client.yaml` holds password hashes: they are refused as if they did not
//! exist, whoever asks.

use std::io::{self, Write as _};
use std::path::Path as FsPath;
use std::sync::{Mutex, PoisonError};

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use ferry_core::Timestamp;
use ferry_core::config::{ConfigError, Project, SourceFile};
use ferry_engine::registrar::{self, LoadError};
use ferry_store::DefinitionVersion;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use similar::{ChangeTag, TextDiff};

use super::{Done, Notice, Page, done, json_done, record};
use crate::AppState;
use crate::auth::{Principal, ROOT_CLIENT};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Form, Json, Path, Query};
use crate::layout::{link, when};

/// How much of a version hash people see.
const SHORT: usize = 12;

/// Lines of unchanged text around each change in a diff.
const CONTEXT: usize = 3;

/// Saves run one at a time, so the conflict check and the write see the same file.
static SAVING: Mutex<()> = Mutex::new(());

/// A path the console may show, checked: `ferry.yaml` or a pipeline file.
struct Definition {
    path: String,
    /// The client of a pipeline file; `None` for `ferry.yaml`.
    client: Option<String>,
}

impl Definition {
    /// The definition `path` names, if it is one the console shows at all. Anything else
    /// (`connections.yaml`, `client.yaml`, `..`, absolute paths, other folders) is not one.
    fn parse(path: &str) -> Option<Definition> {
        if path == "ferry.yaml" {
            return Some(Definition {
                path: path.to_string(),
                client: None,
            });
        }
        let parts: Vec<&str> = path.split('/').collect();
        let ["clients", client, "pipelines", name] = parts.as_slice() else {
            return None;
        };
        let stem = name
            .strip_suffix(".yaml")
            .or_else(|| name.strip_suffix(".yml"))?;
        if !is_valid_name(client) || !is_valid_name(stem) {
            return None;
        }
        Some(Definition {
            path: path.to_string(),
            client: Some(client.to_string()),
        })
    }

    fn seen_by(&self, principal: &Principal) -> bool {
        match &self.client {
            Some(client) => principal.sees(client),
            None => principal.is_root(),
        }
    }

    /// Whether `principal` may create this file: a new `.yaml` pipeline file of an existing
    /// client, by one of its administrators.
    fn creatable_by(&self, principal: &Principal, project: &Project) -> bool {
        principal.is_administrator()
            && self.seen_by(principal)
            && self.path.ends_with(".yaml")
            && self
                .client
                .as_ref()
                .is_some_and(|client| project.clients.contains_key(client))
    }

    /// The client the audit log files a save under.
    fn audit_client(&self) -> &str {
        self.client.as_deref().unwrap_or(ROOT_CLIENT)
    }
}

/// `[a-z0-9][a-z0-9_-]*`, the names of clients and pipelines.
fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    chars.next().is_some_and(plain) && chars.all(|c| plain(c) || c == '_' || c == '-')
}

/// SHA-256 of a text, hex: the same version key the engine records.
fn hash(content: &str) -> String {
    Sha256::digest(content.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(SHORT)]
}

fn no_such_file(path: &str) -> ApiError {
    ApiError::not_found(format!("no definition file {path}"))
}

/// The definition at `path` if the principal may see it, with the file as the engine runs it
/// (`None` for a new file the principal may create). Everything else is not found.
fn find(
    project: &Project,
    principal: &Principal,
    path: &str,
) -> ApiResult<(Definition, Option<SourceFile>)> {
    let definition = Definition::parse(path)
        .filter(|d| d.seen_by(principal))
        .ok_or_else(|| no_such_file(path))?;
    let current = project.files.iter().find(|f| f.path == path).cloned();
    if current.is_none() && !definition.creatable_by(principal, project) {
        return Err(no_such_file(path));
    }
    Ok((definition, current))
}

// ---- the list ----

/// A definition file in the list.
#[derive(Serialize)]
pub struct FileEntry {
    pub file: String,
    /// The version running now.
    pub hash: String,
}

fn list(state: &AppState, principal: &Principal) -> Vec<FileEntry> {
    let project = state.engine.project();
    let mut files: Vec<FileEntry> = project
        .files
        .iter()
        .filter(|f| Definition::parse(&f.path).is_some_and(|d| d.seen_by(principal)))
        .map(|f| FileEntry {
            file: f.path.clone(),
            hash: f.hash(),
        })
        .collect();
    files.sort_by(|a, b| a.file.cmp(&b.file));
    files
}

/// The definition files the principal may see, with their running versions.
pub async fn api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Vec<FileEntry>>> {
    Ok(Json(list(&state, &principal)))
}

/// The list page's query: the new-pipeline form sends `new` (and `client`, for root).
#[derive(Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    new: String,
    #[serde(default)]
    client: String,
}

/// The list of definition files; administrators also get a form for a new pipeline file.
pub async fn page(
    State(state): State<AppState>,
    page: Page,
    Query(query): Query<ListQuery>,
) -> ApiResult<Response> {
    let principal = &page.principal;
    let name = query.new.trim();
    if !name.is_empty() {
        let client = match principal.scope() {
            Some(own) => own.to_string(),
            None => query.client.trim().to_string(),
        };
        if !is_valid_name(name) {
            return Err(ApiError::invalid(format!(
                "`{name}` cannot name a pipeline; use lowercase letters, digits, `_` and `-`, \
                 starting with a letter or a digit"
            )));
        }
        let path = format!("clients/{client}/pipelines/{name}.yaml");
        return Ok(Redirect::to(&format!("/definitions/{path}")).into_response());
    }
    let files = list(&state, principal);
    let clients: Vec<String> = state.engine.project().clients.keys().cloned().collect();
    let body = html! {
        table #definitions {
            thead { tr { th { "File" } th { "Running version" } } }
            tbody {
                @for f in &files {
                    tr {
                        td { a href={ "/definitions/" (f.file) } { (f.file) } }
                        td { code { (short(&f.hash)) } }
                    }
                }
                @if files.is_empty() { tr { td colspan="2" .muted { "No definition files." } } }
            }
        }
        @if principal.is_administrator() {
            h2 { "New pipeline" }
            form.filters method="get" action="/definitions" {
                @if principal.is_root() {
                    label { "Client" select name="client" {
                        @for client in &clients { option value=(client) { (client) } }
                    } }
                }
                label { "Name" input name="new" required pattern="[a-z0-9][a-z0-9_\\-]*"; }
                button type="submit" { "Create" }
            }
        }
    };
    Ok(page.render("Definitions", body).into_response())
}

// ---- one file ----

/// Which two versions to compare: hashes or unique hash prefixes.
#[derive(Default, Deserialize)]
pub struct FileQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// A stored version of a file.
#[derive(Serialize)]
pub struct VersionView {
    pub hash: String,
    pub loaded_at: Timestamp,
}

/// One file as the API shows it.
#[derive(Serialize)]
pub struct FileView {
    pub file: String,
    pub content: String,
    pub hash: String,
    /// Newest first.
    pub versions: Vec<VersionView>,
    /// A unified diff from `from` to `to`, when they were asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// Two versions of a file side by side.
struct Comparison {
    from: String,
    to: String,
    old: String,
    new: String,
}

impl Comparison {
    fn unified(&self, file: &str) -> String {
        TextDiff::from_lines(&self.old, &self.new)
            .unified_diff()
            .context_radius(CONTEXT)
            .header(
                &format!("{file}@{}", short(&self.from)),
                &format!("{file}@{}", short(&self.to)),
            )
            .to_string()
    }
}

/// Everything the file page and its API twin show.
struct Loaded {
    definition: Definition,
    /// The file as the engine runs it; `None` for a new file.
    current: Option<SourceFile>,
    versions: Vec<DefinitionVersion>,
    comparison: Option<Comparison>,
}

impl Loaded {
    fn current_hash(&self) -> Option<String> {
        self.current.as_ref().map(SourceFile::hash)
    }

    /// The full hash and text of the version `wanted` names (a hash or a unique prefix).
    fn version(&self, wanted: &str) -> ApiResult<(String, String)> {
        let wanted = wanted.trim().to_ascii_lowercase();
        let missing =
            || ApiError::not_found(format!("no version {wanted} of {}", self.definition.path));
        if wanted.is_empty() {
            return Err(missing());
        }
        if let Some(current) = &self.current
            && current.hash().starts_with(&wanted)
        {
            return Ok((current.hash(), current.content.clone()));
        }
        let mut matches = self.versions.iter().filter(|v| v.hash.starts_with(&wanted));
        match (matches.next(), matches.next()) {
            (Some(version), None) => Ok((version.hash.clone(), version.content.clone())),
            _ => Err(missing()),
        }
    }

    /// The version before `hash` in the history, if there is one.
    fn previous(&self, hash: &str) -> Option<&DefinitionVersion> {
        match self.versions.iter().position(|v| v.hash == hash) {
            Some(index) => self.versions.get(index + 1),
            // Not recorded yet: the newest recorded version came before it.
            None => self.versions.first().filter(|v| v.hash != hash),
        }
    }
}

/// The file with its history; compared versions as asked, or (when `by_default`) the previous
/// version against the current one.
async fn load(
    state: &AppState,
    principal: &Principal,
    path: &str,
    query: &FileQuery,
    by_default: bool,
) -> ApiResult<Loaded> {
    let project = state.engine.project();
    let (definition, current) = find(&project, principal, path)?;
    let versions = state.store.definition_versions(&definition.path).await?;
    let mut loaded = Loaded {
        definition,
        current,
        versions,
        comparison: None,
    };
    let asked = !query.from.trim().is_empty() || !query.to.trim().is_empty();
    if !asked && !by_default {
        return Ok(loaded);
    }
    let to = match query.to.trim() {
        "" => match loaded.current_hash() {
            Some(hash) => hash,
            None => return Ok(loaded),
        },
        to => to.to_string(),
    };
    let (to, new) = loaded.version(&to)?;
    let (from, old) = match query.from.trim() {
        "" => match loaded.previous(&to) {
            Some(previous) => (previous.hash.clone(), previous.content.clone()),
            None => return Ok(loaded),
        },
        from => loaded.version(from)?,
    };
    loaded.comparison = Some(Comparison { from, to, old, new });
    Ok(loaded)
}

/// One file: its text, its history and, when `from` or `to` is given, a diff.
pub async fn file_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(file): Path<String>,
    Query(query): Query<FileQuery>,
) -> ApiResult<Json<FileView>> {
    let loaded = load(&state, &principal, &file, &query, false).await?;
    let path = loaded.definition.path.clone();
    let Some(current) = loaded.current else {
        return Err(no_such_file(&path));
    };
    Ok(Json(FileView {
        diff: loaded.comparison.map(|c| c.unified(&path)),
        hash: current.hash(),
        content: current.content,
        versions: loaded
            .versions
            .into_iter()
            .map(|v| VersionView {
                hash: v.hash,
                loaded_at: v.loaded_at,
            })
            .collect(),
        file: path,
    }))
}

/// One file: its text, the edit form for administrators, a diff and the history.
pub async fn file_page(
    State(state): State<AppState>,
    page: Page,
    Path(file): Path<String>,
    Query(query): Query<FileQuery>,
) -> ApiResult<Markup> {
    let loaded = load(&state, &page.principal, &file, &query, true).await?;
    Ok(render_file(&page, &loaded, None))
}

/// What the edit form shows after a refused save.
struct Refused {
    content: String,
    base: String,
    message: String,
    errors: Vec<String>,
}

fn render_file(page: &Page, loaded: &Loaded, refused: Option<&Refused>) -> Markup {
    let path = &loaded.definition.path;
    let current_hash = loaded.current_hash().unwrap_or_default();
    let href = format!("/definitions/{path}");
    let body = html! {
        p { a href="/definitions" { "← All definitions" } }
        @match &loaded.current {
            Some(current) => {
                p { "Running version " code { (short(&current_hash)) } }
                pre #content { (current.content) }
            }
            None => p.muted { "A new file: it does not exist yet." },
        }
        @if page.principal.is_administrator() {
            (edit_form(page, &href, loaded, refused))
        }
        @if let Some(c) = &loaded.comparison {
            h2 { "Changes from " code { (short(&c.from)) } " to " code { (short(&c.to)) } }
            (diff(&c.old, &c.new))
        }
        @if !loaded.versions.is_empty() {
            h2 { "History" }
            @if loaded.versions.len() > 1 {
                form.filters method="get" action=(href) {
                    label { "Compare" (version_select("from", loaded, loaded.comparison.as_ref().map(|c| c.from.as_str()))) }
                    label { "with" (version_select("to", loaded, loaded.comparison.as_ref().map(|c| c.to.as_str()))) }
                    button type="submit" { "Show changes" }
                }
            }
            table #versions {
                thead { tr { th { "Version" } th { "Loaded" } th {} } }
                tbody {
                    @for v in &loaded.versions {
                        tr {
                            td {
                                code { (short(&v.hash)) }
                                @if v.hash == current_hash { " " span.badge.running { "running" } }
                            }
                            td { (when(v.loaded_at)) }
                            td {
                                @if let Some(previous) = loaded.previous(&v.hash) {
                                    a href=(link(&href, &[("from", previous.hash.clone()), ("to", v.hash.clone())])) { "changes" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page.render(path, body)
}

fn version_select(name: &str, loaded: &Loaded, selected: Option<&str>) -> Markup {
    html! {
        select name=(name) {
            @for v in &loaded.versions {
                option value=(v.hash) selected[selected == Some(v.hash.as_str())] {
                    (short(&v.hash)) " · " (when(v.loaded_at))
                }
            }
        }
    }
}

fn edit_form(page: &Page, action: &str, loaded: &Loaded, refused: Option<&Refused>) -> Markup {
    let current = loaded.current.as_ref();
    let content = refused.map_or_else(
        || current.map(|c| c.content.as_str()).unwrap_or_default(),
        |r| r.content.as_str(),
    );
    let base = refused.map_or_else(
        || current.map(SourceFile::hash).unwrap_or_default(),
        |r| r.base.clone(),
    );
    html! {
        details #edit open[refused.is_some() || current.is_none()] {
            summary { "Edit" }
            @if let Some(refused) = refused {
                p.error role="alert" { (refused.message) }
                @if !refused.errors.is_empty() {
                    ul.errors { @for error in &refused.errors { li.error { code { (error) } } } }
                }
            }
            form method="post" action=(action) {
                (page.chrome.csrf())
                input type="hidden" name="base" value=(base);
                textarea name="content" spellcheck="false" { (content) }
                p {
                    button type="submit" { "Check and save" }
                    " "
                    span.muted { "ferry checks the whole project with this change before saving." }
                }
            }
        }
    }
}

/// The changes from `old` to `new`, line by line, with a little context around each.
fn diff(old: &str, new: &str) -> Markup {
    let diff = TextDiff::from_lines(old, new);
    let groups = diff.grouped_ops(CONTEXT);
    html! {
        @if groups.is_empty() {
            p.muted { "The two versions are the same." }
        } @else {
            pre.diff {
                @for (i, group) in groups.iter().enumerate() {
                    @if i > 0 { span.muted { "⋯\n" } }
                    @for op in group {
                        @for change in diff.iter_changes(op) {
                            @let text = change.to_string_lossy();
                            @let line = if text.ends_with('\n') { text.to_string() } else { format!("{text}\n") };
                            @match change.tag() {
                                ChangeTag::Insert => span.add { "+ " (line) },
                                ChangeTag::Delete => span.del { "- " (line) },
                                ChangeTag::Equal => span { "  " (line) },
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---- saving ----

/// Why a save did not happen.
enum SaveError {
    /// The project would not be valid: the errors the principal may see, and how many others.
    Invalid {
        errors: Vec<String>,
        hidden: usize,
    },
    /// The file changed since the version the edit started from.
    Conflict {
        now: Option<String>,
    },
    Refused(ApiError),
}

impl From<ApiError> for SaveError {
    fn from(error: ApiError) -> Self {
        SaveError::Refused(error)
    }
}

impl SaveError {
    fn message(&self) -> String {
        match self {
            SaveError::Invalid { errors, hidden } => {
                let mut message = format!(
                    "not saved: the definitions would not be valid ({} problem{})",
                    errors.len() + hidden,
                    if errors.len() + hidden == 1 { "" } else { "s" }
                );
                if *hidden > 0 {
                    message.push_str(&format!(
                        "; {hidden} of them in files only administrators of the root client see"
                    ));
                }
                message
            }
            SaveError::Conflict { now: Some(now) } => format!(
                "not saved: the file changed since you opened it (it is now version {}); \
                 compare your text with it, then save again",
                short(now)
            ),
            SaveError::Conflict { now: None } => {
                "not saved: the file was deleted since you opened it".to_string()
            }
            SaveError::Refused(error) => error.message.clone(),
        }
    }
}

impl From<SaveError> for ApiError {
    fn from(error: SaveError) -> Self {
        match &error {
            SaveError::Invalid { errors, .. } => {
                let mut message = error.message();
                for line in errors {
                    message.push('\n');
                    message.push_str(line);
                }
                ApiError::invalid(message)
            }
            SaveError::Conflict { .. } => ApiError::conflict(error.message()),
            SaveError::Refused(error) => error.clone(),
        }
    }
}

/// Checks `content` as the new text of `path` and writes it; returns its hash.
async fn save(
    state: &AppState,
    principal: &Principal,
    path: &str,
    content: String,
    base: Option<String>,
) -> Result<String, SaveError> {
    let project = state.engine.project();
    let (definition, _) = find(&project, principal, path)?;
    if !principal.is_administrator() {
        return Err(ApiError::forbidden("only an administrator may do this").into());
    }
    let checked = tokio::task::spawn_blocking({
        let dir = project.dir.clone();
        let registry = state.engine.registry();
        let path = definition.path.clone();
        let content = content.clone();
        move || registrar::check_change(&dir, &registry, &path, &content)
    })
    .await
    .map_err(ApiError::internal)?;
    match checked {
        Ok(_) => {}
        Err(LoadError::Invalid(errors)) => return Err(invalid(principal, &errors)),
        Err(error) => return Err(ApiError::internal(error).into()),
    }
    let new_hash = hash(&content);
    let target = project.dir.join(&definition.path);
    let base = base.filter(|b| !b.trim().is_empty());
    tokio::task::spawn_blocking(move || write_unless_changed(&target, base.as_deref(), &content))
        .await
        .map_err(ApiError::internal)??;
    tracing::info!(file = %definition.path, version = short(&new_hash), actor = %principal.actor(), "definition saved");
    record(
        state,
        principal,
        definition.audit_client(),
        "definition.save",
        &definition.path,
        short(&new_hash),
    )
    .await?;
    Ok(new_hash)
}

/// The validation errors as the principal may see them: others' files are only counted.
fn invalid(principal: &Principal, errors: &[ConfigError]) -> SaveError {
    let mut shown = Vec::new();
    let mut hidden = 0;
    for error in errors {
        let visible = principal.is_root()
            || error
                .file
                .strip_prefix("clients/")
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|client| principal.sees(client));
        if visible {
            shown.push(error.to_string());
        } else {
            hidden += 1;
        }
    }
    SaveError::Invalid {
        errors: shown,
        hidden,
    }
}

/// Writes `content` to `target` unless the file is no longer the version `base`.
fn write_unless_changed(
    target: &FsPath,
    base: Option<&str>,
    content: &str,
) -> Result<(), SaveError> {
    let _one_at_a_time = SAVING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(base) = base {
        let now = match std::fs::read_to_string(target) {
            Ok(text) => Some(hash(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(ApiError::internal(e).into()),
        };
        if now.as_deref() != Some(base.trim()) {
            return Err(SaveError::Conflict { now });
        }
    }
    write_atomically(target, content).map_err(|e| ApiError::internal(e).into())
}

/// Replaces `target` with `content` so that readers see the old file or the new one, never
/// half of it: a temporary file in the same directory, synced, then renamed over the target.
fn write_atomically(target: &FsPath, content: &str) -> io::Result<()> {
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::other("a definition file has a directory"))?;
    std::fs::create_dir_all(dir)?;
    // A dot name: the engine skips it should it ever see one left behind.
    let mut temporary = tempfile::Builder::new()
        .prefix(".ferry-save-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    if let Ok(metadata) = std::fs::metadata(target) {
        std::fs::set_permissions(temporary.path(), metadata.permissions())?;
    }
    temporary.write_all(content.as_bytes())?;
    temporary.as_file().sync_all()?;
    temporary.persist(target).map_err(|e| e.error)?;
    // The rename is only durable once the directory is.
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The edit form's fields.
#[derive(Deserialize)]
pub struct SaveFields {
    content: String,
    #[serde(default)]
    base: String,
}

/// Saves a file from the edit form; a refused save shows the form again with the reasons.
pub async fn save_form(
    State(state): State<AppState>,
    page: Page,
    Path(file): Path<String>,
    Form(fields): Form<SaveFields>,
) -> ApiResult<Response> {
    // Browsers send a textarea's lines with CRLF.
    let content = fields.content.replace("\r\n", "\n");
    let base = Some(fields.base.clone());
    match save(&state, &page.principal, &file, content.clone(), base).await {
        Ok(_) => Ok(done(&format!("/definitions/{file}"), Notice::Saved, 1).into_response()),
        Err(SaveError::Refused(error)) => Err(error),
        Err(error) => {
            let status = match error {
                SaveError::Conflict { .. } => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let loaded = load(&state, &page.principal, &file, &FileQuery::default(), true).await?;
            let base = match &error {
                // Saving again overwrites the changed file, as the message says.
                SaveError::Conflict { now } => now.clone().unwrap_or_default(),
                _ => fields.base,
            };
            let errors = match &error {
                SaveError::Invalid { errors, .. } => errors.clone(),
                _ => Vec::new(),
            };
            let refused = Refused {
                content,
                base,
                message: error.message(),
                errors,
            };
            Ok((status, render_file(&page, &loaded, Some(&refused))).into_response())
        }
    }
}

/// The API's save: the new text, and the version it was edited from.
#[derive(Deserialize)]
pub struct SaveBody {
    content: String,
    #[serde(default)]
    base: Option<String>,
}

/// Saves a file: `{content, base?}`, where `base` is the version the edit started from.
pub async fn save_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(file): Path<String>,
    Json(body): Json<SaveBody>,
) -> ApiResult<Json<Done>> {
    let saved = save(&state, &principal, &file, body.content, body.base).await?;
    Ok(json_done(format!(
        "saved {file} as version {}; ferry loads it within seconds",
        short(&saved)
    )))
}
