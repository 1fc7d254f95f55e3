//! The `sql` puller: one load per run, its chunks pulled as they are read.

use super::SqlConnection;
use async_trait::async_trait;
use ferry_core::records::{self, Chunk};
use ferry_core::{
    BuildContext, BuildError, Passenger, Pulled, Puller, PullerFactory, Seated, StepError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tracing::debug;
use uuid::Uuid;

use super::chunk::Ready;
use super::{CursorJob, Job, SqlPullerConfig, run_load, trim_query};

/// The largest `chunk_rows` accepted: a chunk is one passenger, held in memory whole.
const MAX_CHUNK_ROWS: usize = 1_000_000;

/// Builds `sql` pullers.
pub struct SqlPullerFactory;

impl PullerFactory for SqlPullerFactory {
    const TYPE: &'static str = "sql";
    type Config = SqlPullerConfig;

    fn build(
        &self,
        config: SqlPullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let settings = Settings::validate(config, ctx)?;
        Ok(Box::new(SqlPuller {
            after: settings.start.clone(),
            unfinished: None,
            settings,
            load: None,
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            component: ctx.component.clone(),
        }))
    }
}

/// An `sql` puller's configuration, validated.
#[derive(Debug)]
struct Settings {
    connection: SqlConnection,
    /// `sql:<connection name>`.
    source_system: String,
    /// Trailing `;` removed.
    query: String,
    chunk_rows: usize,
    /// The cursor column; `None` for full loads.
    cursor: Option<String>,
    /// Where an incremental load starts before any state exists.
    start: Option<String>,
}

impl Settings {
    /// Checks the configuration and reads the query file; connects to nothing.
    fn validate(config: SqlPullerConfig, ctx: &BuildContext) -> Result<Settings, BuildError> {
        let connection = super::connection::connection(ctx, "connection", &config.connection)?;
        let (key, query) = match (config.query, config.file) {
            (Some(query), None) => ("query", query),
            (None, Some(file)) => (
                "file",
                crate::client_sql::read(ctx, &file).map_err(|m| BuildError::at("file", m))?,
            ),
            (None, None) => {
                return Err(BuildError::at(
                    "query",
                    "missing: give the query as `query: SELECT …`, or a file under \
                     clients/<client>/sql/ as `file: NAME.sql`",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(BuildError::at(
                    "file",
                    "give either `query` or `file`, not both",
                ));
            }
        };
        let query = trim_query(&query).to_string();
        if query.is_empty() {
            return Err(BuildError::at(key, "the query is empty"));
        }
        if !(1..=MAX_CHUNK_ROWS).contains(&config.chunk_rows) {
            return Err(BuildError::at(
                "chunk_rows",
                format!("must be from 1 to {MAX_CHUNK_ROWS}"),
            ));
        }
        if config
            .cursor
            .as_deref()
            .is_some_and(|cursor| cursor.trim().is_empty())
        {
            return Err(BuildError::at(
                "cursor",
                "is empty: name a column of the query's result, or leave `cursor` out for full \
                 loads",
            ));
        }
        if config.start.is_some() && config.cursor.is_none() {
            return Err(BuildError::at(
                "start",
                "only goes with `cursor`: full loads always pull the whole result",
            ));
        }
        Ok(Settings {
            source_system: format!("sql:{}", connection.name),
            connection,
            query,
            chunk_rows: config.chunk_rows,
            cursor: config.cursor,
            start: config.start,
        })
    }
}

/// Pulls the result of a query, one load per run.
pub struct SqlPuller {
    settings: Settings,
    /// Incremental mode: the cursor value the next load starts after (the state last
    /// returned or restored, else `start`).
    after: Option<String>,
    /// Incremental mode: the load whose last chunk was not seated yet, which the next load
    /// continues (its id and the number of its last seated chunk).
    unfinished: Option<(String, u64)>,
    /// The load being pulled; `None` between loads.
    load: Option<Load>,
    /// `client/pipeline`, for logs.
    pipeline: String,
    component: String,
}

/// An incremental puller's state: the cursor, and the load to continue when the last one was
/// interrupted (a crash, a failed run) before its last chunk was seated. Kept as JSON while a
/// load is unfinished, else as the cursor's text alone (as before loads were continued).
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    cursor: Option<String>,
    /// The unfinished load's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    load: Option<String>,
    /// The number of its last seated chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk: Option<u64>,
}

impl Position {
    fn parse(state: String) -> Position {
        match serde_json::from_str::<Position>(&state) {
            Ok(position) => position,
            Err(_) => Position {
                cursor: Some(state),
                ..Position::default()
            },
        }
    }

    fn into_state(self) -> Option<String> {
        match self.load {
            // A struct of strings and numbers always serializes.
            Some(_) => Some(serde_json::to_string(&self).unwrap_or_default()),
            None => self.cursor,
        }
    }
}

/// A load in progress: its reader task streams chunks into `chunks`. Dropping it closes the
/// channel, which makes the reader stop and disconnect.
struct Load {
    /// A UUIDv7, fresh for every load; an interrupted incremental load keeps its id when it
    /// is continued.
    id: String,
    /// Chunks of the load seated before this part of it (a continued load): the reader's
    /// chunks are numbered after them.
    offset: u64,
    /// Where the load started (incremental mode): part of an empty chunk's external id.
    after: Option<String>,
    chunks: mpsc::Receiver<Result<Ready, StepError>>,
    /// A failure that came after chunks that were returned first; the next pull reports it.
    failed: Option<StepError>,
}

impl SqlPuller {
    /// Starts the reader task of a new load, or of the rest of an interrupted incremental one.
    fn start_load(&mut self) -> Load {
        // One finished chunk waits in the channel while the reader fills the next one.
        let (sender, chunks) = mpsc::channel(1);
        let settings = &self.settings;
        let cursor = settings.cursor.as_ref().map(|column| CursorJob {
            column: column.clone(),
            after: self.after.clone(),
        });
        let job = Job {
            connection: settings.connection.clone(),
            query: settings.query.clone(),
            chunk_rows: settings.chunk_rows,
            cursor,
            sender,
        };
        // A full load cannot be continued: without an order, "the rest" of a result is not
        // defined. A newer load supersedes it instead (see `records::SERIES`).
        let (id, offset) = match self.unfinished.take() {
            Some((id, offset)) if settings.cursor.is_some() => (id, offset),
            _ => (Uuid::now_v7().to_string(), 0),
        };
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            load = %id,
            continued_after_chunk = offset,
            incremental = settings.cursor.is_some(),
            "starting an sql load"
        );
        tokio::spawn(run_load(job));
        Load {
            id,
            offset,
            after: self.after.clone(),
            chunks,
            failed: None,
        }
    }

    /// The passenger of one chunk of `load`.
    fn passenger(&self, load: &Load, chunk: Ready) -> Passenger {
        let external_id = match (
            &self.settings.cursor,
            &chunk.first_cursor,
            &chunk.last_cursor,
        ) {
            // The cursor range and the row count: a re-pull of the same rows after a crash
            // (from the same state) makes the same id, so the queue drops the copy.
            (Some(_), Some(first), Some(last)) => format!("{first}..{last}:{}", chunk.rows),
            // Nothing after the cursor: the same id on every run until new rows come.
            (Some(_), _, _) if load.offset == 0 => {
                format!("{}..:0", load.after.as_deref().unwrap_or(""))
            }
            // The end of a continued load: it must be seated even when an empty chunk from
            // the same cursor was seated before, or the load would never complete.
            (Some(_), _, _) => format!(
                "{}..:0:{}:{}",
                load.after.as_deref().unwrap_or(""),
                load.id,
                load.offset + chunk.number
            ),
            (None, _, _) => format!("{}:{}", load.id, chunk.number),
        };
        let mut passenger = Passenger::pulled(self.settings.source_system.clone(), external_id)
            .with_body(chunk.body);
        Chunk {
            load: load.id.clone(),
            number: load.offset + chunk.number,
            last: chunk.last,
        }
        .mark(&mut passenger);
        if self.settings.cursor.is_none() {
            // Every run pulls the whole result again: a newer load supersedes an older one
            // that was interrupted, so that it is discarded whole (issue 12).
            passenger
                .metadata
                .insert(records::SERIES.into(), self.component.clone());
        }
        passenger
            .metadata
            .insert(records::ROWS.into(), chunk.rows.to_string());
        passenger
    }
}

#[async_trait]
impl Puller for SqlPuller {
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        if max == 0 {
            return Ok(Pulled::default());
        }
        // The load stays in `self` while waiting, so that a pull cancelled by a timeout keeps it.
        if self.load.is_none() {
            self.load = Some(self.start_load());
        }
        let Some(load) = self.load.as_mut() else {
            unreachable!("a load was started above");
        };
        if let Some(error) = load.failed.take() {
            self.load = None;
            return Err(error);
        }

        let mut chunks = Vec::new();
        let mut finished = false;
        while chunks.len() < max && !finished {
            // Wait for the first chunk; after it, take only what is ready.
            let next = match chunks.is_empty() {
                true => load.chunks.recv().await,
                false => match load.chunks.try_recv() {
                    Ok(next) => Some(next),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => None,
                },
            };
            match next {
                Some(Ok(chunk)) => {
                    finished = chunk.last;
                    chunks.push(chunk);
                }
                Some(Err(error)) => {
                    load.failed = Some(error);
                    break;
                }
                None => {
                    load.failed = Some(StepError::retryable(format!(
                        "the reader of {} stopped before the end of the result",
                        super::label(&self.settings.connection)
                    )));
                    break;
                }
            }
        }
        let Some(load) = self.load.take() else {
            unreachable!("a load was started above");
        };
        if chunks.is_empty() {
            // Only a failure ends a pull without a chunk; the load is over.
            let error = load
                .failed
                .unwrap_or_else(|| StepError::retryable("the sql load ended without a chunk"));
            return Err(error);
        }
        let last_cursor = chunks
            .iter()
            .rev()
            .find_map(|chunk| chunk.last_cursor.clone());
        let last_number = chunks.last().map_or(0, |chunk| load.offset + chunk.number);
        let passengers: Vec<Passenger> = chunks
            .into_iter()
            .map(|chunk| self.passenger(&load, chunk))
            .collect();

        let more = !finished;
        let load_id = load.id.clone();
        if more {
            self.load = Some(load);
        }
        if last_cursor.is_some() {
            self.after = last_cursor;
        }
        // The state names the load while it is unfinished, so that a run after a crash
        // continues it rather than leaving its seated chunks as a load that never completes.
        let state = match self.settings.cursor {
            Some(_) => {
                let unfinished = more.then(|| load_id.clone());
                Position {
                    cursor: self.after.clone(),
                    chunk: unfinished.as_ref().map(|_| last_number),
                    load: unfinished,
                }
                .into_state()
            }
            None => None,
        };
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            passengers = passengers.len(),
            more,
            "pulled sql chunks"
        );
        Ok(Pulled {
            passengers,
            failures: Vec::new(),
            more,
            state,
        })
    }

    /// Nothing to acknowledge: the cursor position travels with the seat as the state.
    async fn ack(&mut self, _seated: &[Seated]) -> Result<(), StepError> {
        Ok(())
    }

    /// A new run: continue after the seated cursor value (else `start`), in a new load or
    /// in the load the seated state names as unfinished.
    fn restore(&mut self, state: Option<String>) {
        // Dropping an unfinished load stops its reader.
        self.load = None;
        self.unfinished = None;
        if self.settings.cursor.is_none() {
            return;
        }
        let position = state.map(Position::parse).unwrap_or_default();
        self.after = position.cursor.or_else(|| self.settings.start.clone());
        if let (Some(load), Some(chunk)) = (position.load, position.chunk) {
            self.unfinished = Some((load, chunk));
        }
    }
}
