//! Export of queue entries and runs as CSV, JSON and xlsx, with the filters of the queue browser
//! and the runs list.
//!
//! Exports stream: the store is read a page at a time (keyset pagination) and each page is
//! sent as it comes, so an export of millions of passengers holds one page in memory. An xlsx
//! file cannot be sent before it is complete, so its worksheet is written in constant-memory
//! mode to a temporary file, which is then streamed and deleted.

use std::io::{self, Seek, SeekFrom};

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::SecondsFormat;
use ferry_core::{PassengerId, Timestamp};
use ferry_store::{PassengerState, QueueEntry, QueueFilter, RunFilter, RunId, RunRecord, Store};
use futures::{Stream, StreamExt, stream};
use maud::{Markup, html};
use rust_xlsxwriter::{Format as CellFormat, Workbook, XlsxError};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::Page;
use super::queue::QueueQuery;
use super::runs::RunQuery;
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::redact::Redactor;

/// Rows read from the store at a time, and sent at a time.
const PAGE: usize = 1000;

/// The most rows a worksheet holds, the header included.
const XLSX_ROWS: u32 = 1_048_576;

/// The most characters an xlsx cell holds.
const XLSX_CELL: usize = 32_767;

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

const RUN_COLUMNS: &[&str] = &[
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
];

/// The export form's page.
pub async fn page(page: Page) -> ApiResult<Markup> {
    let root = page.principal.is_root();
    let body = html! {
        p.muted { "Exports hold every row that matches the filters, newest first. Times are UTC." }
        h2 { "Queue" }
        form.filters method="get" action="/export/queue" {
            @if root { label { "Client" input name="client"; } }
            label { "Pipeline" input name="pipeline"; }
            label { "State" select name="state" {
                option value="" { "any" }
                @for s in PassengerState::ALL { option value=(s.as_str()) { (s.as_str()) } }
            } }
            label { "Text in external id or source" input name="text"; }
            label { "Created since (UTC)" input name="since" type="datetime-local"; }
            label { "until" input name="until" type="datetime-local"; }
            (format_select())
            button type="submit" { "Export" }
        }
        h2 { "Runs" }
        form.filters method="get" action="/export/runs" {
            @if root { label { "Client" input name="client"; } }
            label { "Pipeline" input name="pipeline"; }
            label { "Status" select name="status" {
                option value="" { "any" }
                @for status in ["running", "succeeded", "partial", "failed"] { option value=(status) { (status) } }
            } }
            (format_select())
            button type="submit" { "Export" }
        }
    };
    Ok(page.render("Export", body))
}

fn format_select() -> Markup {
    html! {
        label { "Format" select name="format" {
            option value="csv" { "CSV" }
            option value="json" { "JSON" }
            option value="xlsx" { "Excel (xlsx)" }
        } }
    }
}

/// `?format=`, next to the filters.
#[derive(Deserialize)]
pub struct FormatQuery {
    #[serde(default)]
    format: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Json,
    Xlsx,
}

impl Format {
    /// CSV unless asked otherwise.
    fn parse(text: &str) -> ApiResult<Format> {
        match text.trim() {
            "" | "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "xlsx" => Ok(Format::Xlsx),
            other => Err(ApiError::invalid(format!(
                "unknown format `{other}`; formats are csv, json, xlsx"
            ))),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Xlsx => "xlsx",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

/// Passengers matching the queue browser's filters, as `?format=` says.
pub async fn queue(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<QueueQuery>,
    Query(format): Query<FormatQuery>,
) -> ApiResult<Response> {
    let format = Format::parse(&format.format)?;
    let pager = Pager {
        store: state.store.clone(),
        redactor: Redactor::of(&state.engine.project()),
        list: List::Queue {
            filter: query.filter(&principal)?,
            before: query.before,
        },
        finished: false,
    };
    export(pager, format).await
}

/// Runs matching the runs list's filters, as `?format=` says.
pub async fn runs(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<RunQuery>,
    Query(format): Query<FormatQuery>,
) -> ApiResult<Response> {
    let format = Format::parse(&format.format)?;
    let pager = Pager {
        store: state.store.clone(),
        redactor: Redactor::of(&state.engine.project()),
        list: List::Runs {
            filter: query.filter(&principal)?,
            before: query.before,
        },
        finished: false,
    };
    export(pager, format).await
}

/// What is exported, and where the next page starts.
enum List {
    Queue {
        filter: QueueFilter,
        before: Option<PassengerId>,
    },
    Runs {
        filter: RunFilter,
        before: Option<RunId>,
    },
}

/// Reads a list from the store a page at a time.
struct Pager {
    store: std::sync::Arc<dyn Store>,
    /// For the cells of an xlsx export (text answers pass the console's middleware).
    redactor: Redactor,
    list: List,
    finished: bool,
}

impl Pager {
    fn name(&self) -> &'static str {
        match self.list {
            List::Queue { .. } => "queue",
            List::Runs { .. } => "runs",
        }
    }

    fn columns(&self) -> &'static [&'static str] {
        match self.list {
            List::Queue { .. } => QUEUE_COLUMNS,
            List::Runs { .. } => RUN_COLUMNS,
        }
    }

    /// The next page; `None` after the last.
    async fn next(&mut self) -> ferry_store::Result<Option<Vec<Row>>> {
        if self.finished {
            return Ok(None);
        }
        let rows: Vec<Row> = match &mut self.list {
            List::Queue { filter, before } => {
                let entries = self.store.list(filter, *before, PAGE).await?;
                *before = entries.last().map(|e| e.id);
                entries.into_iter().map(Row::Queue).collect()
            }
            List::Runs { filter, before } => {
                let runs = self.store.runs_page(filter, *before, PAGE).await?;
                *before = runs.last().map(|r| r.id);
                runs.into_iter().map(Row::Run).collect()
            }
        };
        self.finished = rows.len() < PAGE;
        Ok(Some(rows))
    }
}

/// One exported row.
enum Row {
    Queue(QueueEntry),
    Run(RunRecord),
}

/// A value as the formats write it.
enum Cell<'a> {
    Text(&'a str),
    Owned(String),
    Number(i64),
    Time(Timestamp),
    Empty,
}

impl Row {
    /// The cells in the order of the columns.
    fn cells(&self) -> Vec<Cell<'_>> {
        fn optional(t: &Option<String>) -> Cell<'_> {
            t.as_deref().map_or(Cell::Empty, Cell::Text)
        }
        let count = |n: u64| Cell::Number(i64::try_from(n).unwrap_or(i64::MAX));
        match self {
            Row::Queue(e) => vec![
                Cell::Owned(e.id.to_string()),
                Cell::Text(&e.client),
                Cell::Text(&e.pipeline),
                Cell::Text(&e.source_system),
                Cell::Text(&e.external_id),
                Cell::Text(e.state.as_str()),
                Cell::Time(e.created_at),
                Cell::Time(e.updated_at),
                optional(&e.last_error),
            ],
            Row::Run(r) => vec![
                Cell::Number(r.id),
                Cell::Text(&r.client),
                Cell::Text(&r.pipeline),
                Cell::Text(&r.version),
                Cell::Text(r.status.as_str()),
                Cell::Time(r.started_at),
                r.finished_at.map_or(Cell::Empty, Cell::Time),
                count(r.counts.pulled),
                count(r.counts.seated),
                count(r.counts.duplicates),
                count(r.counts.failed),
                optional(&r.error),
            ],
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Row::Queue(entry) => serde_json::to_writer(out, entry),
            Row::Run(run) => serde_json::to_writer(out, run),
        }
    }
}

/// Answers with the export: headers as soon as the first page is read (so that a failing store
/// still gets a proper error answer), then the rest as it comes.
async fn export(mut pager: Pager, format: Format) -> ApiResult<Response> {
    let first = pager.next().await?.unwrap_or_default();
    let file_name = format!(
        "ferry-{}-{}.{}",
        pager.name(),
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        format.extension()
    );
    let (body, length) = match format {
        Format::Csv | Format::Json => (Body::from_stream(text(pager, first, format)), None),
        Format::Xlsx => {
            let (file, length) = xlsx(pager, first).await?;
            (Body::from_stream(chunks(file)), Some(length))
        }
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    let disposition = format!("attachment; filename=\"{file_name}\"");
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(ApiError::internal)?,
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}

/// CSV or JSON, a page at a time: the header row or `[`, each page, then `]`.
fn text(
    pager: Pager,
    first: Vec<Row>,
    format: Format,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let opening = match format {
        Format::Json => Ok(Bytes::from_static(b"[")),
        _ => csv_lines(&[pager
            .columns()
            .iter()
            .map(|c| Cell::Text(c))
            .collect::<Vec<_>>()]),
    };
    let closing = match format {
        Format::Json => Bytes::from_static(b"]\n"),
        _ => Bytes::new(),
    };
    // (pager, the page already read, whether a JSON element was written)
    let pages = stream::unfold(Some((pager, Some(first), false)), move |state| async move {
        let (mut pager, pending, mut written) = state?;
        let rows = match pending {
            Some(rows) => rows,
            None => match pager.next().await {
                Ok(Some(rows)) => rows,
                Ok(None) => return None,
                Err(error) => {
                    // The answer has begun: all that is left is to break it off, so the
                    // file is visibly incomplete.
                    tracing::error!(%error, export = pager.name(), "export broken off");
                    return Some((Err(io::Error::other("export broken off")), None));
                }
            },
        };
        let bytes = match format {
            Format::Json => json_elements(&rows, &mut written),
            _ => csv_lines(&rows.iter().map(Row::cells).collect::<Vec<_>>()),
        };
        Some((bytes, Some((pager, None, written))))
    });
    stream::once(async move { opening })
        .chain(pages)
        .chain(stream::once(async { Ok(closing) }))
}

/// Rows of a JSON array, each after a comma unless it is the first of the whole array.
fn json_elements(rows: &[Row], written: &mut bool) -> io::Result<Bytes> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    for row in rows {
        if *written {
            out.push(b',');
        }
        out.push(b'\n');
        row.write_json(&mut out).map_err(io::Error::other)?;
        *written = true;
    }
    Ok(Bytes::from(out))
}

/// CSV lines of `rows`, text neutralised against formula injection.
fn csv_lines(rows: &[Vec<Cell<'_>>]) -> io::Result<Bytes> {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 256));
    for row in rows {
        let fields = row.iter().map(|cell| match cell {
            Cell::Text(text) => neutralise(text),
            Cell::Owned(text) => neutralise(text),
            Cell::Number(n) => n.to_string(),
            Cell::Time(at) => at.to_rfc3339_opts(SecondsFormat::Secs, true),
            Cell::Empty => String::new(),
        });
        writer.write_record(fields).map_err(io::Error::other)?;
    }
    let out = writer
        .into_inner()
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Bytes::from(out))
}

/// A text a spreadsheet would take for a formula (`=`, `+`, `-`, `@`, or a tab or carriage
/// return before one) gets a leading `'`, so that it stays text.
fn neutralise(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

/// Writes the whole list as an xlsx workbook into an anonymous temporary file (gone once
/// closed), returned rewound with its length. The store is read here while a blocking task
/// writes the worksheet, a page at a time.
async fn xlsx(mut pager: Pager, first: Vec<Row>) -> ApiResult<(tokio::fs::File, u64)> {
    let (pages, received) = mpsc::channel::<Vec<Row>>(2);
    let columns = pager.columns();
    let sheet = pager.name();
    let redactor = pager.redactor.clone();
    let writer =
        tokio::task::spawn_blocking(move || write_xlsx(sheet, columns, &redactor, received));
    let mut pending = Some(first);
    loop {
        let rows = match pending.take() {
            Some(rows) => rows,
            None => match pager.next().await? {
                Some(rows) => rows,
                None => break,
            },
        };
        if pages.send(rows).await.is_err() {
            // The writer gave up; its result says why.
            break;
        }
    }
    drop(pages);
    let (file, length) = writer.await.map_err(ApiError::internal)??;
    Ok((tokio::fs::File::from_std(file), length))
}

fn write_xlsx(
    sheet_name: &str,
    columns: &[&str],
    redactor: &Redactor,
    mut pages: mpsc::Receiver<Vec<Row>>,
) -> ApiResult<(std::fs::File, u64)> {
    let failed = |error: XlsxError| ApiError::internal(format!("cannot write xlsx: {error}"));
    let bold = CellFormat::new().set_bold();
    let time = CellFormat::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    let mut workbook = Workbook::new();
    let sheet = workbook
        .add_worksheet_with_constant_memory()
        .map_err(failed)?;
    sheet.set_name(sheet_name).map_err(failed)?;
    for (col, name) in (0u16..).zip(columns) {
        let width = match *name {
            "id" if sheet_name == "queue" => 38.0,
            "external_id" | "last_error" | "error" | "version" => 30.0,
            name if name.ends_with("_at") => 20.0,
            _ => 14.0,
        };
        sheet.set_column_width(col, width).map_err(failed)?;
        sheet
            .write_string_with_format(0, col, *name, &bold)
            .map_err(failed)?;
    }
    sheet.set_freeze_panes(1, 0).map_err(failed)?;
    let mut row: u32 = 1;
    while let Some(rows) = pages.blocking_recv() {
        for line in &rows {
            if row >= XLSX_ROWS {
                return Err(ApiError::invalid(format!(
                    "more than {} rows do not fit in a worksheet; narrow the filters or export \
                     csv or json",
                    XLSX_ROWS - 1
                )));
            }
            for (col, cell) in (0u16..).zip(line.cells()) {
                match cell {
                    Cell::Text(text) => {
                        sheet.write_string(row, col, cell_text(&redactor.apply(text)))
                    }
                    Cell::Owned(text) => {
                        sheet.write_string(row, col, cell_text(&redactor.apply(&text)))
                    }
                    Cell::Number(n) => sheet.write_number(row, col, n as f64),
                    Cell::Time(at) => {
                        sheet.write_datetime_with_format(row, col, at.naive_utc(), &time)
                    }
                    Cell::Empty => continue,
                }
                .map_err(failed)?;
            }
            row += 1;
        }
    }
    let mut file = tempfile::tempfile().map_err(ApiError::internal)?;
    workbook.save_to_writer(&mut file).map_err(failed)?;
    let length = file.stream_position().map_err(ApiError::internal)?;
    file.seek(SeekFrom::Start(0)).map_err(ApiError::internal)?;
    Ok((file, length))
}

/// At most what a cell holds.
fn cell_text(text: &str) -> &str {
    match text.char_indices().nth(XLSX_CELL) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// A file's content in chunks; the file closes (and, being anonymous, is deleted) at the end.
fn chunks(file: tokio::fs::File) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    stream::try_unfold(file, |mut file| async move {
        let mut buffer = vec![0; 64 * 1024];
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.truncate(read);
        Ok(Some((Bytes::from(buffer), file)))
    })
}
