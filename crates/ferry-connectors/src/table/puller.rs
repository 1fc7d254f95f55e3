//! The `table` puller: each file of a directory becomes one load of record batches.
//!
//! A file is read in two steps. The first parses and converts every row into finished chunks
//! (batch bodies) in a [`Spool`]: in memory up to [`SPOOL_IN_MEMORY`], beyond that in an
//! unlinked temporary file, written sequentially and never synced. Only when the whole file
//! has converted does its first chunk leave the puller, so a malformed line fails the file
//! before anything of it reaches a target. The second step hands the chunks out of the spool,
//! up to `max` per pull.
//!
//! Spooling the converted chunks rather than validating in one pass and converting in a second
//! parses and converts each row once instead of twice, and what is emitted is exactly what was
//! checked even if the file changes while its chunks go out. Measured on a 1,000,000-row CSV
//! file of 120 MB (release build, two cores): parsing and converting take about 0.35–0.5 s
//! (0.55–0.8 s on one thread; CSV parsing runs on a thread of its own, see [`read_csv`]),
//! writing and reading back the 100 MB spool file about 0.05–0.1 s more, so a second parsing
//! pass would cost several times what the spool does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use calamine::{Data, Reader as _};
use chrono::{NaiveDate, NaiveDateTime};
use ferry_core::records::{self, BatchWriter, Chunk, Column, ColumnType};
use ferry_core::sandbox::Sandbox;
use ferry_core::{
    Body, BuildContext, BuildError, Passenger, PullFailure, Pulled, Puller, PullerFactory, Seated,
    StepError,
};
use globset::{Glob, GlobMatcher};
use tracing::{debug, warn};

use super::{AfterSeat, Encoding, SheetRef, TableFormat, TablePullerConfig};
use crate::columns::{self, Converter, Field, JsonPlan, Mapping, TabularPlan};
use crate::file::AFTER_SEAT_FORMS_WITH_KEEP;
use crate::file::fs::{
    Disposal, archive_dir, confined, dispose_files, is_plain_name, is_settling, modified_millis,
    wanted,
};

/// The passengers' `source_system`.
const SOURCE_SYSTEM: &str = "table";

/// Converted chunks of one file kept in memory before the spool moves to a temporary file.
const SPOOL_IN_MEMORY: usize = 16 * 1024 * 1024;

/// The largest spreadsheet read: a sheet is read into memory whole (calamine has no streaming
/// reader), at several times the size of the compressed file.
const MAX_SHEET_FILE: u64 = 64 * 1024 * 1024;

/// The largest `chunk_rows`, so a typo cannot make one passenger of a whole huge file.
const MAX_CHUNK_ROWS: usize = 1_000_000;

/// Builds `table` pullers.
pub struct TablePullerFactory;

impl PullerFactory for TablePullerFactory {
    const TYPE: &'static str = "table";
    type Config = TablePullerConfig;

    fn build(
        &self,
        config: TablePullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let settings = Settings::validate(config, ctx)?;
        Ok(Box::new(TablePuller {
            settings: Arc::new(settings),
            state: State::default(),
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            component: ctx.component.clone(),
        }))
    }
}

/// CSV options, validated.
#[derive(Debug)]
struct CsvOptions {
    /// `None`: `,`, or a tab for `*.tsv` files.
    delimiter: Option<u8>,
    header: bool,
    /// `None`: no quoting.
    quote: Option<u8>,
    encoding: Encoding,
}

/// A `table` puller's configuration, validated.
#[derive(Debug)]
struct Settings {
    dir: PathBuf,
    /// Where the client's definitions may reach, checked again before each use of `dir`.
    sandbox: Sandbox,
    pattern: GlobMatcher,
    /// `None`: from each file's extension.
    format: Option<TableFormat>,
    disposal: Disposal,
    chunk_rows: usize,
    settle: Duration,
    csv: CsvOptions,
    /// Segments of the pointer to the records of a JSON file; empty: the document.
    records: Vec<String>,
    sheet: SheetRef,
    /// 0-based row of a sheet's header.
    header_row: usize,
    mapping: Mapping,
}

impl Settings {
    /// Checks the configuration without touching the filesystem (validation calls this too).
    fn validate(config: TablePullerConfig, ctx: &BuildContext) -> Result<Settings, BuildError> {
        let nested = |key: &str, inner: &str, message: String| BuildError {
            path: vec![key.into(), inner.into()],
            message,
            within: None,
        };
        if config.path.is_empty() {
            return Err(BuildError::at("path", "the directory to read is empty"));
        }
        let dir = ctx.data_path("path", &config.path)?;
        let pattern = Glob::new(&config.pattern)
            .map_err(|error| BuildError::at("pattern", format!("invalid glob: {error}")))?
            .compile_matcher();
        let disposal = match config.after_seat {
            None => {
                return Err(BuildError::at(
                    "after_seat",
                    format!(
                        "missing: say what happens to a file once it is loaded, \
                         {AFTER_SEAT_FORMS_WITH_KEEP}"
                    ),
                ));
            }
            Some(AfterSeat::Delete) => Disposal::Delete,
            Some(AfterSeat::Keep) => Disposal::Keep,
            Some(AfterSeat::MoveTo(move_to)) => {
                Disposal::MoveTo(archive_dir(&move_to, &dir, ctx, "read")?)
            }
        };
        let chunk_rows = config.chunk_rows.unwrap_or(records::DEFAULT_CHUNK_ROWS);
        if !(1..=MAX_CHUNK_ROWS).contains(&chunk_rows) {
            return Err(BuildError::at(
                "chunk_rows",
                format!("must be between 1 and {MAX_CHUNK_ROWS}"),
            ));
        }
        let settle = ferry_core::duration::parse(&config.settle)
            .map_err(|message| BuildError::at("settle", message))?;

        let one_byte = |key: &str, text: &str| match text.as_bytes() {
            [byte] if byte.is_ascii() && !matches!(byte, b'\n' | b'\r') => Ok(*byte),
            _ => Err(nested(
                "csv",
                key,
                format!("`{text}` is not one ASCII character (e.g. `,`, `;`, `\"\\t\"`)"),
            )),
        };
        let delimiter = match &config.csv.delimiter {
            Some(delimiter) => Some(one_byte("delimiter", delimiter)?),
            None => None,
        };
        let quote = match config.csv.quote.as_str() {
            "" => None,
            quote => Some(one_byte("quote", quote)?),
        };
        if quote.is_some() && quote == Some(delimiter.unwrap_or(b',')) {
            return Err(nested(
                "csv",
                "quote",
                "the quote is the same character as the delimiter".into(),
            ));
        }
        let records = columns::parse_pointer(&config.json.records)
            .map_err(|message| nested("json", "records", message))?;
        let sheet = config.sheet.unwrap_or(SheetRef::Number(1));
        if sheet == SheetRef::Number(0) || sheet == SheetRef::Name(String::new()) {
            return Err(BuildError::at(
                "sheet",
                "name a sheet, or give its number from 1",
            ));
        }
        let header_row = match config.start_row {
            None => 0,
            Some(0) => {
                return Err(BuildError::at(
                    "start_row",
                    "rows are numbered from 1, as in the spreadsheet",
                ));
            }
            Some(row) => row as usize - 1,
        };
        let mapping = Mapping::validate(config.columns)?;
        mapping.check_json_sources()?;
        Ok(Settings {
            dir,
            sandbox: ctx.sandbox.clone(),
            pattern,
            format: config.format,
            disposal,
            chunk_rows,
            settle,
            csv: CsvOptions {
                delimiter,
                header: config.csv.header,
                quote,
                encoding: config.csv.encoding,
            },
            records,
            sheet,
            header_row,
            mapping,
        })
    }

    /// Whether `name` is a file this puller takes: not hidden, and matching the pattern.
    fn wants(&self, name: &OsStr) -> bool {
        wanted(name, &self.pattern)
    }
}

/// Reads the tables of one directory.
pub struct TablePuller {
    settings: Arc<Settings>,
    state: State,
    /// `client/pipeline`, for logs.
    pipeline: String,
    component: String,
}

/// What the puller remembers between pulls, in memory.
#[derive(Debug, Default)]
struct State {
    /// The file whose chunks are being handed out.
    current: Option<Current>,
    /// Files whose chunks were handed out and are waiting for their ack, by name and
    /// modification time.
    loads: HashMap<(String, i64), Load>,
    /// Files that failed, by name, with the modification time that failed: not read again until
    /// it changes.
    failed: HashMap<String, i64>,
    /// Failed files found changed or gone since: their quarantine ends.
    released: Vec<String>,
    /// With `after_seat: keep`: files loaded completely, by name, with their modification time.
    kept: HashMap<String, i64>,
}

/// The seated chunks of one load.
#[derive(Debug)]
struct Load {
    /// By chunk number - 1.
    seated: Vec<bool>,
}

impl Load {
    fn new(total: usize) -> Load {
        Load {
            seated: vec![false; total],
        }
    }

    fn complete(&self) -> bool {
        self.seated.iter().all(|&seated| seated)
    }
}

/// A checked file whose chunks are being handed out.
#[derive(Debug)]
struct Current {
    name: String,
    modified: i64,
    load: String,
    spool: Spool,
    /// Number of the next chunk, from 1.
    next: usize,
    total: usize,
}

impl Current {
    fn is_done(&self) -> bool {
        self.next > self.total
    }

    /// The next chunk as a passenger.
    fn next_passenger(&mut self) -> io::Result<Passenger> {
        let (data, rows) = self.spool.pop()?;
        let number = self.next;
        self.next += 1;
        let mut passenger = Passenger::pulled(
            SOURCE_SYSTEM,
            external_id(&self.name, self.modified, number),
        );
        passenger.body = Body {
            media_type: records::MEDIA_TYPE.into(),
            data,
        };
        Chunk {
            load: self.load.clone(),
            number: number as u64,
            last: number == self.total,
        }
        .mark(&mut passenger);
        let metadata = &mut passenger.metadata;
        metadata.insert(records::ROWS.into(), rows.to_string());
        metadata.insert("file".into(), self.name.clone());
        Ok(passenger)
    }
}

#[async_trait]
impl Puller for TablePuller {
    /// Quarantined files are the failed ones: their fingerprint is the modification time
    /// that failed. A file a person retried is read again.
    fn quarantined(&mut self, items: HashSet<(String, String)>) {
        self.state.failed = items
            .into_iter()
            .filter_map(|(name, modified)| Some((name, modified.parse().ok()?)))
            .collect();
    }

    fn released(&mut self) -> Vec<String> {
        mem::take(&mut self.state.released)
    }

    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        let settings = Arc::clone(&self.settings);
        let mut state = mem::take(&mut self.state);
        // One blocking task for the whole pull: listing, reading and converting are all I/O
        // and CPU work. Should the task fail, the state starts over: files are read again and
        // the queue's de-duplication drops chunks already seated.
        let (state, pulled) = tokio::task::spawn_blocking(move || {
            let pulled = pull_files(&settings, &mut state, max);
            (state, pulled)
        })
        .await
        .map_err(|error| StepError::retryable(format!("table pull task failed: {error}")))?;
        self.state = state;
        let pulled = pulled?;
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            passengers = pulled.passengers.len(),
            failures = pulled.failures.len(),
            more = pulled.more,
            "pulled table chunks"
        );
        Ok(pulled)
    }

    async fn ack(&mut self, seated: &[Seated]) -> Result<(), StepError> {
        let mut touched = HashSet::new();
        for item in seated {
            // Duplicates are acked too: the queue already holds them.
            let parsed = parse_external_id(&item.external_id).filter(|(name, _, _)| {
                item.source_system == SOURCE_SYSTEM
                    && is_plain_name(name)
                    && self.settings.wants(OsStr::new(name))
            });
            let Some((name, modified, number)) = parsed else {
                // Never act on a name this puller would not have read: an external id is not
                // trusted as a path.
                warn!(
                    pipeline = %self.pipeline,
                    component = %self.component,
                    source_system = %item.source_system,
                    external_id = %item.external_id,
                    "ignoring an ack for a passenger this puller did not pull"
                );
                continue;
            };
            let key = (name.to_string(), modified);
            // Unknown: a load from before a restart, read again whole by a later pull.
            if let Some(load) = self.state.loads.get_mut(&key)
                && let Some(seated) = number.checked_sub(1).and_then(|i| load.seated.get_mut(i))
            {
                *seated = true;
                touched.insert(key);
            }
        }
        let mut complete = Vec::new();
        for key in touched {
            if self.state.loads.get(&key).is_some_and(Load::complete) {
                self.state.loads.remove(&key);
                complete.push(key);
            }
        }
        if complete.is_empty() {
            return Ok(());
        }
        let count = complete.len();
        if self.settings.disposal == Disposal::Keep {
            self.state.kept.extend(complete);
        } else {
            let settings = Arc::clone(&self.settings);
            tokio::task::spawn_blocking(move || {
                dispose_files(
                    &settings.sandbox,
                    &settings.dir,
                    &settings.disposal,
                    &complete,
                )
            })
            .await
            .map_err(|error| StepError::retryable(format!("table ack task failed: {error}")))??;
        }
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            acked = count,
            "acked table files"
        );
        Ok(())
    }
}

/// A file that may be read.
#[derive(Debug)]
struct Candidate {
    name: String,
    modified: i64,
    size: u64,
}

/// Hands out up to `max` chunks, reading the next files as needed. Runs on a blocking thread.
fn pull_files(settings: &Settings, state: &mut State, max: usize) -> Result<Pulled, StepError> {
    if state.current.as_ref().is_none_or(Current::is_done) {
        // Every load handed out before was acked completely right after its pull, or it was
        // not (its seating failed): then its file is read again whole, and the queue's
        // de-duplication drops the chunks it already holds.
        state.current = None;
        state.loads.clear();
    }
    let mut pulled = Pulled::default();
    let mut waiting: Option<VecDeque<Candidate>> = None;
    loop {
        if let Some(current) = state.current.as_mut().filter(|current| !current.is_done()) {
            if pulled.passengers.len() >= max {
                break;
            }
            match current.next_passenger() {
                Ok(passenger) => pulled.passengers.push(passenger),
                Err(error) => {
                    // The spool could not be read back: read the file again on a later pull.
                    pulled.failures.push(PullFailure {
                        external_id: current.name.clone(),
                        fingerprint: current.modified.to_string(),
                        error: StepError::io(
                            &format!("{}: cannot read back the converted chunks", current.name),
                            &error,
                        ),
                    });
                    state.current = None;
                }
            }
            continue;
        }
        state.current = None;
        let waiting = match &mut waiting {
            Some(waiting) => waiting,
            None => waiting.insert(list_files(settings, state, &mut pulled.failures)?),
        };
        // Failures do not count against `max`; the next file is read only when at least one
        // of its chunks can go out in this pull.
        if pulled.passengers.len() >= max {
            break;
        }
        let Some(candidate) = waiting.pop_front() else {
            break;
        };
        match read_file(settings, &candidate) {
            Reading::Ready(current) => {
                let key = (current.name.clone(), current.modified);
                state.loads.insert(key, Load::new(current.total));
                state.current = Some(current);
            }
            // Changed while it was read: the next pull reads it again once it has settled.
            Reading::Changed => {}
            Reading::Failed(error) => {
                // A retryable failure (a full disk) is tried again; a bad file waits for a
                // change.
                if !error.retryable {
                    state
                        .failed
                        .insert(candidate.name.clone(), candidate.modified);
                }
                pulled.failures.push(PullFailure {
                    external_id: candidate.name.clone(),
                    fingerprint: candidate.modified.to_string(),
                    error: StepError {
                        message: format!("{}: {}", candidate.name, error.message),
                        ..error
                    },
                });
            }
        }
    }
    let chunks_left = state.current.as_ref().is_some_and(|c| !c.is_done());
    let files_left = waiting.is_some_and(|waiting| !waiting.is_empty());
    pulled.more = chunks_left || files_left;
    Ok(pulled)
}

/// The files to read, by name: matching, settled, and neither failed nor loaded (`keep`) nor
/// handed out in this pull, as they are now. Forgets failed and kept files that are gone.
fn list_files(
    settings: &Settings,
    state: &mut State,
    failures: &mut Vec<PullFailure>,
) -> Result<VecDeque<Candidate>, StepError> {
    let list_error = |error: &io::Error| {
        StepError::io(&format!("cannot list {}", settings.dir.display()), error)
    };
    confined(&settings.sandbox, &settings.dir)?;
    let now = SystemTime::now();
    let mut present = HashSet::new();
    let mut candidates = Vec::new();
    for entry in fs::read_dir(&settings.dir).map_err(|error| list_error(&error))? {
        let entry = entry.map_err(|error| list_error(&error))?;
        let name = entry.file_name();
        if !settings.wants(&name) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let lossy = name.to_string_lossy().into_owned();
        present.insert(lossy.clone());
        // Follows a symbolic link: what matters is what would be read.
        let metadata = match fs::metadata(entry.path()) {
            Ok(metadata) => metadata,
            // Gone since the listing.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => {
                failures.push(PullFailure {
                    external_id: lossy.clone(),
                    fingerprint: String::new(),
                    error: StepError::io(
                        &format!("cannot read {}", entry.path().display()),
                        &error,
                    ),
                });
                continue;
            }
        };
        if !metadata.is_file() {
            continue;
        }
        let modified_time = metadata.modified().unwrap_or(UNIX_EPOCH);
        if is_settling(modified_time, now, settings.settle) {
            continue;
        }
        let modified = modified_millis(modified_time);
        if state
            .failed
            .get(&lossy)
            .is_some_and(|failed| *failed != modified)
        {
            state.failed.remove(&lossy);
            state.released.push(lossy.clone());
        }
        let seen = |map: &HashMap<String, i64>| map.get(&lossy) == Some(&modified);
        if seen(&state.failed)
            || seen(&state.kept)
            || state.loads.contains_key(&(lossy.clone(), modified))
        {
            continue;
        }
        if name.to_str().is_none() {
            state.failed.insert(lossy.clone(), modified);
            failures.push(PullFailure {
                external_id: lossy,
                fingerprint: modified.to_string(),
                error: StepError::permanent(
                    "file name is not valid UTF-8, so it cannot be an external id",
                ),
            });
            continue;
        }
        candidates.push(Candidate {
            name: lossy,
            modified,
            size: metadata.len(),
        });
    }
    let gone: Vec<String> = state
        .failed
        .keys()
        .filter(|name| !present.contains(*name))
        .cloned()
        .collect();
    for name in gone {
        state.failed.remove(&name);
        state.released.push(name);
    }
    state.kept.retain(|name, _| present.contains(name));
    // By name, so that what is read first does not depend on the filesystem's order.
    candidates.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(candidates.into())
}

/// What became of reading one file.
enum Reading {
    Ready(Current),
    /// Modified while it was read.
    Changed,
    Failed(StepError),
}

/// Reads and converts a whole file into its spool. Runs on a blocking thread.
fn read_file(settings: &Settings, candidate: &Candidate) -> Reading {
    let name = &candidate.name;
    let path = settings.dir.join(name);
    // A symbolic link in the directory may lead anywhere: what would be read must be inside.
    if let Err(error) = confined(&settings.sandbox, &path) {
        return Reading::Failed(error);
    }
    let Some(format) = settings.format.or_else(|| TableFormat::of_name(name)) else {
        return Reading::Failed(StepError::permanent(
            "cannot tell the format from the file name; name files `*.csv`, `*.json`, \
             `*.ndjson` or `*.xlsx`, or set `format:` (csv, json, ndjson, xlsx)",
        ));
    };
    match fs::metadata(&path) {
        // Gone since the listing (another consumer, an operator): nothing to report.
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Reading::Changed,
        _ => {}
    }
    let mut chunker = Chunker::new(settings.chunk_rows);
    let read = match format {
        TableFormat::Csv => read_csv(settings, name, &path, &mut chunker),
        TableFormat::Json => read_json(settings, &path, &mut chunker),
        TableFormat::Ndjson => read_ndjson(settings, &path, &mut chunker),
        TableFormat::Xlsx => read_sheet(settings, &path, &mut chunker),
    };
    if let Err(error) = read {
        return Reading::Failed(error);
    }
    match fs::metadata(&path).and_then(|m| m.modified()) {
        Ok(modified) if modified_millis(modified) == candidate.modified => {}
        Ok(_) => return Reading::Changed,
        Err(error) => {
            return Reading::Failed(StepError::io(
                &format!("cannot read {}", path.display()),
                &error,
            ));
        }
    }
    let spool = match chunker.finish() {
        Ok(spool) => spool,
        Err(error) => return Reading::Failed(spool_error(&error)),
    };
    let total = spool.len();
    Reading::Ready(Current {
        name: name.clone(),
        modified: candidate.modified,
        load: load_id(settings, candidate),
        spool,
        next: 1,
        total,
    })
}

fn spool_error(error: &io::Error) -> StepError {
    StepError::io("cannot write the converted chunks to the spool", error)
}

fn read_error(path: &Path, error: &io::Error) -> StepError {
    StepError::io(&format!("cannot read {}", path.display()), error)
}

// ---- chunks and the spool --------------------------------------------------------------------

/// Cuts the rows of one file into chunks of `chunk_rows` and spools them.
struct Chunker {
    chunk_rows: usize,
    columns: Vec<Column>,
    writer: BatchWriter,
    spool: Spool,
}

impl Chunker {
    fn new(chunk_rows: usize) -> Chunker {
        Chunker {
            chunk_rows,
            columns: Vec::new(),
            writer: BatchWriter::new(Vec::new()),
            spool: Spool::default(),
        }
    }

    /// Sets the columns, once known (from a header, say), before the first row.
    fn start(&mut self, columns: Vec<Column>) {
        self.columns.clone_from(&columns);
        self.writer = BatchWriter::new(columns);
    }

    fn writer(&mut self) -> &mut BatchWriter {
        &mut self.writer
    }

    /// Ends the row written into [`Chunker::writer`]; spools the chunk when it is full.
    fn end_row(&mut self) -> io::Result<()> {
        self.writer.end_row();
        if self.writer.rows() >= self.chunk_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let full = mem::replace(&mut self.writer, BatchWriter::new(self.columns.clone()));
        let rows = full.rows();
        self.spool.push(full.finish().data, rows)
    }

    /// The spool, ready to be read; an empty file is one chunk without rows.
    fn finish(mut self) -> io::Result<Spool> {
        if self.writer.rows() > 0 || self.spool.is_empty() {
            self.flush()?;
        }
        self.spool.rewind()?;
        Ok(self.spool)
    }
}

/// The finished chunks of one file, in order: in memory up to [`SPOOL_IN_MEMORY`], the rest in
/// a temporary file.
#[derive(Debug, Default)]
struct Spool {
    chunks: VecDeque<Spooled>,
    /// Bytes held in memory.
    memory: usize,
    file: Option<SpoolFile>,
}

/// One spooled chunk.
#[derive(Debug)]
struct Spooled {
    rows: usize,
    len: usize,
    /// `None`: next in the spool file.
    data: Option<Bytes>,
}

/// The temporary file behind a large spool.
///
/// In the system's temporary directory (`TMPDIR`); on Unix it is unlinked as soon as it is
/// created, so nothing is left behind even by a crash. Never synced: it is rebuilt from the
/// source file whenever needed.
#[derive(Debug)]
struct SpoolFile {
    file: File,
    /// Removed on drop where an open file cannot be unlinked.
    #[cfg(not(unix))]
    path: PathBuf,
}

impl SpoolFile {
    fn create() -> io::Result<SpoolFile> {
        let path = std::env::temp_dir().join(format!(
            ".ferry-table-{}.spool",
            uuid::Uuid::now_v7().simple()
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        #[cfg(unix)]
        {
            fs::remove_file(&path)?;
            Ok(SpoolFile { file })
        }
        #[cfg(not(unix))]
        Ok(SpoolFile { file, path })
    }
}

#[cfg(not(unix))]
impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Spool {
    fn len(&self) -> usize {
        self.chunks.len()
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn push(&mut self, data: Bytes, rows: usize) -> io::Result<()> {
        let len = data.len();
        if self.file.is_none() && self.memory + len <= SPOOL_IN_MEMORY {
            self.memory += len;
            self.chunks.push_back(Spooled {
                rows,
                len,
                data: Some(data),
            });
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(SpoolFile::create()?),
        };
        file.file.write_all(&data)?;
        self.chunks.push_back(Spooled {
            rows,
            len,
            data: None,
        });
        Ok(())
    }

    /// Done writing: reading starts at the first chunk.
    fn rewind(&mut self) -> io::Result<()> {
        if let Some(file) = &mut self.file {
            file.file.seek(SeekFrom::Start(0))?;
        }
        Ok(())
    }

    /// The next chunk and its row count.
    fn pop(&mut self) -> io::Result<(Bytes, usize)> {
        let Some(chunk) = self.chunks.pop_front() else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no chunk left in the spool",
            ));
        };
        if let Some(data) = chunk.data {
            self.memory -= chunk.len;
            return Ok((data, chunk.rows));
        }
        let Some(file) = &mut self.file else {
            return Err(io::Error::other("the spool file is missing"));
        };
        let mut data = vec![0; chunk.len];
        file.file.read_exact(&mut data)?;
        Ok((Bytes::from(data), chunk.rows))
    }
}

// ---- CSV ---------------------------------------------------------------------------------------

/// CSV records parsed and handed to the converting thread at a time.
const CSV_BATCH: usize = 4096;

/// Batches of parsed records on their way to the converting thread: enough to keep both
/// threads busy, few enough to bound the memory (about 2 MB with 120-byte rows).
const CSV_BATCHES_IN_FLIGHT: usize = 4;

/// What the parsing thread hands the converting thread, in file order.
enum Parsed {
    Rows(Vec<Row>),
    /// The CSV reader failed here: nothing follows.
    Failed(csv::Error),
}

/// One parsed CSV record. The parsing thread checks the text, so that the converting thread
/// (the busier one) does not have to.
enum Row {
    /// Every field is text as it is: valid UTF-8, and ASCII unless the encoding is UTF-8.
    Text(csv::StringRecord),
    /// Fields to decode one by one (see [`decode`]).
    Bytes(csv::ByteRecord),
}

impl Row {
    fn new(record: csv::ByteRecord, encoding: Encoding) -> Row {
        match csv::StringRecord::from_byte_record(record) {
            Ok(text)
                if encoding == Encoding::Utf8 || text.as_byte_record().as_slice().is_ascii() =>
            {
                Row::Text(text)
            }
            Ok(text) => Row::Bytes(text.into_byte_record()),
            Err(error) => Row::Bytes(error.into_byte_record()),
        }
    }

    fn into_bytes(self) -> csv::ByteRecord {
        match self {
            Row::Text(text) => text.into_byte_record(),
            Row::Bytes(bytes) => bytes,
        }
    }

    fn len(&self) -> usize {
        match self {
            Row::Text(text) => text.len(),
            Row::Bytes(bytes) => bytes.len(),
        }
    }

    fn position(&self) -> Option<&csv::Position> {
        match self {
            Row::Text(text) => text.position(),
            Row::Bytes(bytes) => bytes.position(),
        }
    }

    /// The field at `index` as text (missing: empty); `None` when it is not valid UTF-8.
    fn field<'a>(
        &'a self,
        index: Option<usize>,
        encoding: Encoding,
        decoded: &'a mut String,
    ) -> Option<&'a str> {
        match self {
            Row::Text(text) => Some(index.and_then(|i| text.get(i)).unwrap_or("")),
            Row::Bytes(bytes) => decode(
                index.and_then(|i| bytes.get(i)).unwrap_or(b""),
                encoding,
                decoded,
            ),
        }
    }
}

/// Reads a CSV file into `chunker`, converting every row; the first bad line fails it.
///
/// Two threads share the work: a scoped thread parses the file into records (and checks their
/// text) and hands them over in batches, in file order, while this one converts them and
/// spools the chunks. Each side takes about half of the time, so on two cores a file converts
/// in about 0.6 of what one thread takes. Records keep their positions, so line numbers,
/// chunks and errors are those of reading the file on one thread: the first bad line fails
/// it, whichever thread finds it.
fn read_csv(
    settings: &Settings,
    name: &str,
    path: &Path,
    chunker: &mut Chunker,
) -> Result<(), StepError> {
    let options = &settings.csv;
    let mut file = File::open(path).map_err(|error| read_error(path, &error))?;
    let bom = skip_bom(&mut file).map_err(|error| read_error(path, &error))?;
    let tsv = name.to_ascii_lowercase().ends_with(".tsv");
    let delimiter = options.delimiter.unwrap_or(if tsv { b'\t' } else { b',' });
    let mut builder = csv::ReaderBuilder::new();
    builder
        .has_headers(false)
        .flexible(false)
        .delimiter(delimiter)
        .buffer_capacity(64 * 1024);
    match options.quote {
        Some(quote) => builder.quote(quote),
        None => builder.quoting(false),
    };
    let reader = builder.from_reader(file);
    let (parsed_tx, parsed_rx) = mpsc::sync_channel(CSV_BATCHES_IN_FLIGHT);
    let (spare_tx, spare_rx) = mpsc::channel();
    thread::scope(|scope| {
        let encoding = options.encoding;
        scope.spawn(move || parse_csv(reader, encoding, &parsed_tx, &spare_rx));
        // Returning drops the receiver, which stops the parsing thread at its next batch.
        let source = CsvSource {
            parsed: parsed_rx,
            spare: spare_tx,
        };
        convert_csv(settings, path, bom, delimiter, source, chunker)
    })
}

/// Parses CSV records and sends them in batches, until the end of the file, a CSV error, or
/// the converting side hanging up. Runs on its own thread.
fn parse_csv(
    mut reader: csv::Reader<File>,
    encoding: Encoding,
    parsed: &mpsc::SyncSender<Parsed>,
    spare: &mpsc::Receiver<Vec<Row>>,
) {
    loop {
        let mut old = spare.try_recv().unwrap_or_default();
        let mut rows = Vec::with_capacity(CSV_BATCH);
        let mut failure = None;
        while rows.len() < CSV_BATCH {
            let mut record = old.pop().map_or_else(csv::ByteRecord::new, Row::into_bytes);
            match reader.read_byte_record(&mut record) {
                Ok(true) => rows.push(Row::new(record, encoding)),
                Ok(false) => break,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let full = rows.len() == CSV_BATCH;
        if !rows.is_empty() && parsed.send(Parsed::Rows(rows)).is_err() {
            return;
        }
        if let Some(error) = failure {
            let _ = parsed.send(Parsed::Failed(error));
            return;
        }
        if !full {
            return;
        }
    }
}

/// The converting side of the CSV channel: records in file order.
struct CsvSource {
    parsed: mpsc::Receiver<Parsed>,
    /// Emptied batches go back to be filled again.
    spare: mpsc::Sender<Vec<Row>>,
}

/// Converts the records from `source` into `chunker`.
fn convert_csv(
    settings: &Settings,
    path: &Path,
    bom: u64,
    delimiter: u8,
    source: CsvSource,
    chunker: &mut Chunker,
) -> Result<(), StepError> {
    let options = &settings.csv;
    let mut plan: Option<TabularPlan> = None;
    let mut scratch = String::new();
    let mut decoded = String::new();
    // Where the last record started: an unclosed quote swallows the rest of the file into it.
    let mut last = None;
    for parsed in &source.parsed {
        let batch = match parsed {
            Parsed::Rows(batch) => batch,
            Parsed::Failed(error) => {
                return Err(csv_error(&error, path, bom, options.quote, delimiter));
            }
        };
        for record in &batch {
            let (line, start) = record
                .position()
                .map_or((0, 0), |position| (position.line(), position.byte()));
            last = Some((line, start));
            let plan = match &plan {
                Some(plan) => plan,
                None => {
                    let new_plan = if options.header {
                        let mut header = Vec::with_capacity(record.len());
                        for index in 0..record.len() {
                            let field = record.field(Some(index), options.encoding, &mut decoded);
                            let Some(text) = field else {
                                return Err(StepError::permanent(format!(
                                    "line {line}: the header is not valid UTF-8; set \
                                     `csv.encoding` (latin1, windows-1252) for files in \
                                     another encoding"
                                )));
                            };
                            header.push(text.trim().to_string());
                        }
                        settings.mapping.plan_tabular(Some(&header), header.len())
                    } else {
                        settings.mapping.plan_tabular(None, record.len())
                    }
                    .map_err(|error| StepError::permanent(format!("line {line}: {error}")))?;
                    chunker.start(new_plan.columns());
                    let plan = plan.insert(new_plan);
                    if options.header {
                        continue;
                    }
                    plan
                }
            };
            let writer = chunker.writer();
            for field in &plan.fields {
                let converted = match record.field(field.index, options.encoding, &mut decoded) {
                    Some(text) => field.converter.write_str(text, writer, &mut scratch),
                    None => Err(
                        "not valid UTF-8; set `csv.encoding` (latin1, windows-1252) for \
                         files in another encoding"
                            .to_string(),
                    ),
                };
                if let Err(error) = converted {
                    // A quote left open makes the rest of the file one bad value: say so
                    // instead.
                    let unclosed = options.quote.is_some_and(|quote| {
                        ends_in_quote(path, bom + start, quote, delimiter).unwrap_or(false)
                    });
                    return Err(StepError::permanent(match unclosed {
                        true => format!("line {line}: a quoted field is not closed"),
                        false => format!("line {line}: column {}: {error}", field.name),
                    }));
                }
            }
            chunker.end_row().map_err(|error| spool_error(&error))?;
        }
        // The parsing thread may have finished already: then the batch is dropped.
        let _ = source.spare.send(batch);
    }
    if let (Some((line, start)), Some(quote)) = (last, options.quote) {
        let unclosed = ends_in_quote(path, bom + start, quote, delimiter)
            .map_err(|error| read_error(path, &error))?;
        if unclosed {
            return Err(StepError::permanent(format!(
                "line {line}: a quoted field is not closed"
            )));
        }
    }
    if plan.is_none() {
        // An empty file: no rows, and the mapped columns if there are any.
        chunker.start(settings.mapping.columns());
    }
    Ok(())
}

/// Skips a UTF-8 byte order mark at the start of `file`; returns how many bytes were skipped.
fn skip_bom(file: &mut File) -> io::Result<u64> {
    let mut start = [0u8; 3];
    let mut read = 0;
    while read < 3 {
        match file.read(&mut start[read..])? {
            0 => break,
            n => read += n,
        }
    }
    if read == 3 && start == [0xEF, 0xBB, 0xBF] {
        return Ok(3);
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(0)
}

/// The CSV reader's error, with the line.
fn csv_error(
    error: &csv::Error,
    path: &Path,
    bom: u64,
    quote: Option<u8>,
    delimiter: u8,
) -> StepError {
    match error.kind() {
        csv::ErrorKind::Io(error) => read_error(path, error),
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => {
            let line = pos.as_ref().map_or(0, |pos| pos.line());
            // A quote left open swallows the lines after it, and so usually the field count.
            if let (Some(pos), Some(quote)) = (pos, quote)
                && ends_in_quote(path, bom + pos.byte(), quote, delimiter).unwrap_or(false)
            {
                return StepError::permanent(format!("line {line}: a quoted field is not closed"));
            }
            StepError::permanent(format!(
                "line {line}: {len} fields where the first line has {expected_len}"
            ))
        }
        _ => StepError::permanent(error.to_string()),
    }
}

/// Whether the file, read as CSV from `offset` (the start of a record) to its end, ends inside
/// a quoted field. Follows the CSV reader's rules: a quote opens a quoted field only at the
/// start of a field, and a doubled quote inside one is a quote.
fn ends_in_quote(path: &Path, offset: u64, quote: u8, delimiter: u8) -> io::Result<bool> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        /// A quote inside a quoted field: its end, or the first of a doubled quote.
        QuoteInQuoted,
    }
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut state = State::FieldStart;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(state == State::Quoted);
        }
        for &byte in buffer {
            let end_of_field = byte == delimiter || byte == b'\n' || byte == b'\r';
            state = match state {
                State::FieldStart if byte == quote => State::Quoted,
                State::Quoted if byte == quote => State::QuoteInQuoted,
                State::Quoted => State::Quoted,
                State::QuoteInQuoted if byte == quote => State::Quoted,
                _ if end_of_field => State::FieldStart,
                _ => State::Unquoted,
            };
        }
        let consumed = buffer.len();
        reader.consume(consumed);
    }
}

/// A CSV field as text in `encoding`; `None` when it is not valid UTF-8.
fn decode<'a>(raw: &'a [u8], encoding: Encoding, buffer: &'a mut String) -> Option<&'a str> {
    if encoding == Encoding::Utf8 || raw.is_ascii() {
        return std::str::from_utf8(raw).ok();
    }
    buffer.clear();
    match encoding {
        Encoding::Latin1 => buffer.extend(raw.iter().map(|&byte| char::from(byte))),
        _ => buffer.extend(raw.iter().map(|&byte| windows_1252(byte))),
    }
    Some(buffer)
}

/// A Windows-1252 byte as a character: Latin-1 but for 0x80–0x9F.
fn windows_1252(byte: u8) -> char {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}',
        '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}',
        '\u{178}',
    ];
    match byte {
        0x80..=0x9F => HIGH[usize::from(byte - 0x80)],
        _ => char::from(byte),
    }
}

// ---- JSON and NDJSON -------------------------------------------------------------------------

/// Reads the records of a JSON file (the array at `json.records`), streaming.
fn read_json(settings: &Settings, path: &Path, chunker: &mut Chunker) -> Result<(), StepError> {
    let file = File::open(path).map_err(|error| read_error(path, &error))?;
    let reader = BufReader::with_capacity(64 * 1024, file);
    let mut plan: Option<JsonPlan> = None;
    let mut scratch = String::new();
    let mut spool_failure = None;
    let mut number = 0u64;
    let result = columns::json_records(
        serde_json::de::IoRead::new(reader),
        &settings.records,
        |record| {
            number += 1;
            let plan = plan.get_or_insert_with(|| {
                let plan = settings.mapping.plan_json(Some(&record));
                chunker.start(plan.columns());
                plan
            });
            plan.write_row(&record, chunker.writer(), &mut scratch)
                .map_err(|error| format!("record {number}: {error}"))?;
            chunker.end_row().map_err(|error| {
                let message = error.to_string();
                spool_failure = Some(error);
                message
            })
        },
    );
    if let Some(error) = spool_failure {
        return Err(spool_error(&error));
    }
    if let Err(error) = result {
        return Err(match error.io {
            Some(kind) => read_error(path, &io::Error::new(kind, error.message)),
            None => StepError::permanent(error.message),
        });
    }
    if plan.is_none() {
        chunker.start(settings.mapping.plan_json(None).columns());
    }
    Ok(())
}

/// Reads an NDJSON file: one record per line; blank lines are skipped.
fn read_ndjson(settings: &Settings, path: &Path, chunker: &mut Chunker) -> Result<(), StepError> {
    let file = File::open(path).map_err(|error| read_error(path, &error))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut plan: Option<JsonPlan> = None;
    let mut scratch = String::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|error| read_error(path, &error))?;
        if read == 0 {
            break;
        }
        number += 1;
        let Ok(text) = std::str::from_utf8(&line) else {
            return Err(StepError::permanent(format!(
                "line {number}: not valid UTF-8"
            )));
        };
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            continue;
        }
        let record = columns::parse_record(text, 0).map_err(|error| {
            StepError::permanent(format!(
                "line {number}: {}",
                columns::without_position(&error)
            ))
        })?;
        let plan = plan.get_or_insert_with(|| {
            let plan = settings.mapping.plan_json(Some(&record));
            chunker.start(plan.columns());
            plan
        });
        plan.write_row(&record, chunker.writer(), &mut scratch)
            .map_err(|error| StepError::permanent(format!("line {number}: {error}")))?;
        chunker.end_row().map_err(|error| spool_error(&error))?;
    }
    if plan.is_none() {
        chunker.start(settings.mapping.plan_json(None).columns());
    }
    Ok(())
}

// ---- spreadsheets ----------------------------------------------------------------------------

/// Reads one sheet of a workbook. calamine reads the sheet into memory, hence the size limit.
fn read_sheet(settings: &Settings, path: &Path, chunker: &mut Chunker) -> Result<(), StepError> {
    let size = fs::metadata(path)
        .map_err(|error| read_error(path, &error))?
        .len();
    if size > MAX_SHEET_FILE {
        return Err(StepError::permanent(format!(
            "the workbook has {size} bytes; spreadsheets are read into memory, so at most \
             {MAX_SHEET_FILE} bytes are accepted (save large sheets as CSV)"
        )));
    }
    let mut workbook = calamine::open_workbook_auto(path)
        .map_err(|error| StepError::permanent(format!("cannot open the workbook: {error}")))?;
    let names = workbook.sheet_names();
    let sheet = match &settings.sheet {
        SheetRef::Name(name) => names.iter().find(|sheet| *sheet == name),
        SheetRef::Number(number) => names.get(number - 1),
    };
    let Some(sheet) = sheet.cloned() else {
        return Err(StepError::permanent(format!(
            "the workbook has no sheet {}; it has: {}",
            match &settings.sheet {
                SheetRef::Name(name) => format!("`{name}`"),
                SheetRef::Number(number) => number.to_string(),
            },
            names.join(", ")
        )));
    };
    let range = workbook
        .worksheet_range(&sheet)
        .map_err(|error| StepError::permanent(format!("cannot read sheet `{sheet}`: {error}")))?;
    let (first_row, first_column) = range.start().unwrap_or((0, 0));
    let (first_row, first_column) = (first_row as usize, first_column as usize);
    let mut plan: Option<TabularPlan> = None;
    let mut scratch = String::new();
    for (offset, cells) in range.rows().enumerate() {
        let row = first_row + offset;
        if row < settings.header_row {
            continue;
        }
        if row == settings.header_row {
            let header: Vec<String> = cells
                .iter()
                .map(|cell| cell.to_string().trim().to_string())
                .collect();
            let new_plan = plan_sheet(settings, &header, first_column)
                .map_err(|error| StepError::permanent(format!("row {}: {error}", row + 1)))?;
            chunker.start(new_plan.columns());
            plan = Some(new_plan);
            continue;
        }
        let plan = match &mut plan {
            Some(plan) => plan,
            // The header row is empty, so the sheet's cells start below it.
            None => {
                let unnamed = vec![String::new(); cells.len()];
                let new_plan = plan_sheet(settings, &unnamed, first_column).map_err(|error| {
                    StepError::permanent(format!("row {}: {error}", settings.header_row + 1))
                })?;
                chunker.start(new_plan.columns());
                plan.insert(new_plan)
            }
        };
        if cells.iter().all(|cell| *cell == Data::Empty) {
            continue;
        }
        let writer = chunker.writer();
        for field in &plan.fields {
            let cell = field
                .index
                .and_then(|index| index.checked_sub(first_column))
                .and_then(|index| cells.get(index))
                .unwrap_or(&Data::Empty);
            if let Err(error) = write_cell(cell, &field.converter, writer, &mut scratch) {
                return Err(StepError::permanent(format!(
                    "row {}: column {}: {error}",
                    row + 1,
                    field.name
                )));
            }
        }
        chunker.end_row().map_err(|error| spool_error(&error))?;
    }
    if plan.is_none() {
        chunker.start(settings.mapping.columns());
    }
    Ok(())
}

/// Plans the columns of a sheet whose header row holds `header`, from `first_column` (0-based)
/// on. Mapped columns are found by header name or by the sheet's own column letters.
fn plan_sheet(
    settings: &Settings,
    header: &[String],
    first_column: usize,
) -> Result<TabularPlan, String> {
    if settings.mapping.is_default() {
        let mut plan = settings.mapping.plan_tabular(Some(header), header.len())?;
        for field in &mut plan.fields {
            field.index = field.index.map(|index| index + first_column);
        }
        return Ok(plan);
    }
    let mut absolute = vec![String::new(); first_column];
    absolute.extend_from_slice(header);
    let width = absolute.len().max(first_column + 1);
    settings.mapping.plan_tabular(Some(&absolute), width)
}

/// Writes one cell. Numbers in date and time columns are Excel serial dates.
fn write_cell(
    cell: &Data,
    converter: &Converter,
    out: &mut BatchWriter,
    scratch: &mut String,
) -> Result<(), String> {
    let temporal = matches!(
        converter.kind(),
        ColumnType::Date | ColumnType::Time | ColumnType::Timestamp | ColumnType::Timestamptz
    );
    let field = match cell {
        Data::Empty => Field::Null,
        Data::String(text) => Field::Text(text),
        Data::Int(value) if temporal => serial_date(*value as f64)?,
        Data::Int(value) => Field::Int(*value),
        Data::Float(value) if temporal => serial_date(*value)?,
        Data::Float(value) => Field::Float(*value),
        Data::Bool(value) => Field::Bool(*value),
        Data::DateTime(value) if value.is_datetime() => date_time(value)
            .map(Field::DateTime)
            .ok_or_else(|| format!("{} is not a valid Excel date", value.as_f64()))?,
        // A duration: its number of days.
        Data::DateTime(value) => Field::Float(value.as_f64()),
        Data::DateTimeIso(text) | Data::DurationIso(text) => Field::Text(text),
        Data::Error(error) => return Err(format!("the cell holds the error {error}")),
    };
    converter.write(field, out, scratch)
}

/// The date and time of an Excel date, when it is a valid one.
fn date_time(value: &calamine::ExcelDateTime) -> Option<NaiveDateTime> {
    let (year, month, day, hour, minute, second, milli) = value.to_ymd_hms_milli();
    NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day)).and_then(|date| {
        date.and_hms_milli_opt(
            u32::from(hour),
            u32::from(minute),
            u32::from(second),
            u32::from(milli),
        )
    })
}

/// An Excel serial date (days since 1899-12-30, the fraction the time of day).
fn serial_date<'a>(serial: f64) -> Result<Field<'a>, String> {
    let value = calamine::ExcelDateTime::new(serial, calamine::ExcelDateTimeType::DateTime, false);
    date_time(&value)
        .filter(|_| serial.is_finite() && (0.0..2_958_466.0).contains(&serial))
        .map(Field::DateTime)
        .ok_or_else(|| format!("{serial} is not an Excel serial date"))
}

// ---- ids -------------------------------------------------------------------------------------

/// The external id of a chunk: the file's name and modification time, and the chunk's number,
/// `orders.csv@1732357200123#2`. A file rewritten under the same name is a new load; the same
/// file read again after a crash gives the same ids, which the queue drops as duplicates.
fn external_id(name: &str, modified: i64, number: usize) -> String {
    format!("{name}@{modified}#{number}")
}

/// The name, modification time and chunk number in an external id made by [`external_id`].
fn parse_external_id(id: &str) -> Option<(&str, i64, usize)> {
    let (rest, number) = id.rsplit_once('#')?;
    let (name, modified) = rest.rsplit_once('@')?;
    Some((name, modified.parse().ok()?, number.parse().ok()?))
}

/// The load id of a file: a UUIDv7 whose time is the file's modification time and whose other
/// bits hash the directory, name and size. The same file read again (after a crash, say) is the
/// same load, so chunks seated before and after belong together.
fn load_id(settings: &Settings, candidate: &Candidate) -> String {
    /// FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    fn fnv(seed: u64, parts: &[&[u8]]) -> u64 {
        let mut hash = seed;
        for part in parts {
            for &byte in *part {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            hash ^= 0xff;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }
    let dir = settings.dir.as_os_str().as_encoded_bytes();
    let size = candidate.size.to_le_bytes();
    let parts: [&[u8]; 3] = [dir, candidate.name.as_bytes(), &size];
    let first = fnv(0xcbf2_9ce4_8422_2325, &parts).to_le_bytes();
    let second = fnv(0x6c62_272e_07bb_0142, &parts).to_le_bytes();
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&first);
    random[8..].copy_from_slice(&second[..2]);
    let millis = u64::try_from(candidate.modified).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}
