//! The `file` puller: one passenger per file of a directory, deleted or archived after seat.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use ferry_core::sandbox::Sandbox;
use ferry_core::{
    Attachment, Body, BuildContext, BuildError, Passenger, PullFailure, Pulled, Puller,
    PullerFactory, Seated, StepError,
};
use ferry_formats::Codec;
use globset::{Glob, GlobMatcher};
use serde_json::json;
use tracing::{debug, warn};

use super::config::AFTER_SEAT_FORMS;
use super::fs::{
    Disposal, archive_dir, confined, dispose_files, is_plain_name, is_settling, modified_millis,
    wanted,
};
use super::{AfterSeat, FilePullerConfig};
use crate::processors::build_codec;

/// Builds `file` pullers.
pub struct FilePullerFactory;

impl PullerFactory for FilePullerFactory {
    const TYPE: &'static str = "file";
    type Config = FilePullerConfig;

    fn build(
        &self,
        config: FilePullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let settings = Settings::validate(config, ctx)?;
        Ok(Box::new(FilePuller {
            settings: Arc::new(settings),
            quarantined: Arc::default(),
            released: Vec::new(),
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            component: ctx.component.clone(),
        }))
    }
}

/// A `file` puller's configuration, validated.
#[derive(Debug)]
struct Settings {
    dir: PathBuf,
    /// Where the client's definitions may reach, checked again before each use of `dir`.
    sandbox: Sandbox,
    pattern: GlobMatcher,
    disposal: Disposal,
    source_system: String,
    /// `None`: guessed per file from its extension.
    media_type: Option<String>,
    settle: Duration,
    /// Decodes each file into the body, when configured.
    codec: Option<Codec>,
}

impl Settings {
    /// Checks the configuration without touching the filesystem (validation calls this too).
    fn validate(config: FilePullerConfig, ctx: &BuildContext) -> Result<Settings, BuildError> {
        if config.path.is_empty() {
            return Err(BuildError::at(
                "path",
                "the directory to pull from is empty",
            ));
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
                        "missing: say what happens to a file once it is seated, \
                         {AFTER_SEAT_FORMS}"
                    ),
                ));
            }
            // The configuration as deserialized never says `keep`; one built in code may.
            Some(AfterSeat::Keep) => {
                return Err(BuildError::at(
                    "after_seat",
                    format!(
                        "`keep` is only for the `table` puller; the `file` puller takes \
                         {AFTER_SEAT_FORMS}"
                    ),
                ));
            }
            Some(AfterSeat::Delete) => Disposal::Delete,
            Some(AfterSeat::MoveTo(move_to)) => {
                Disposal::MoveTo(archive_dir(&move_to, &dir, ctx, "pulled")?)
            }
        };
        if config.source_system.is_empty() {
            return Err(BuildError::at("source_system", "must not be empty"));
        }
        let settle = ferry_core::duration::parse(&config.settle)
            .map_err(|message| BuildError::at("settle", message))?;
        let codec = match &config.codec {
            Some(codec) => Some(build_codec(codec, ctx)?),
            None => None,
        };
        Ok(Settings {
            dir,
            sandbox: ctx.sandbox.clone(),
            pattern,
            disposal,
            source_system: config.source_system,
            media_type: config.media_type,
            settle,
            codec,
        })
    }

    /// Whether `name` is a file this puller takes: not hidden, and matching the pattern.
    fn wants(&self, name: &OsStr) -> bool {
        wanted(name, &self.pattern)
    }
}

/// Pulls the files of one directory.
pub struct FilePuller {
    settings: Arc<Settings>,
    /// Files in quarantine, by name and [`fingerprint`]: left alone until they change.
    quarantined: Arc<HashSet<(String, String)>>,
    /// Quarantined files the last pull found changed or gone.
    released: Vec<String>,
    /// `client/pipeline`, for logs.
    pipeline: String,
    component: String,
}

#[async_trait]
impl Puller for FilePuller {
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        let settings = Arc::clone(&self.settings);
        let quarantined = Arc::clone(&self.quarantined);
        // One blocking task for the whole pull: listing, stats and reads.
        let (pulled, released) =
            tokio::task::spawn_blocking(move || pull_files(&settings, &quarantined, max))
                .await
                .map_err(|error| {
                    StepError::retryable(format!("file pull task failed: {error}"))
                })??;
        self.released = released;
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            passengers = pulled.passengers.len(),
            failures = pulled.failures.len(),
            more = pulled.more,
            "pulled files"
        );
        Ok(pulled)
    }

    fn quarantined(&mut self, items: HashSet<(String, String)>) {
        self.quarantined = Arc::new(items);
    }

    fn released(&mut self) -> Vec<String> {
        std::mem::take(&mut self.released)
    }

    async fn ack(&mut self, seated: &[Seated]) -> Result<(), StepError> {
        let mut names = Vec::with_capacity(seated.len());
        for item in seated {
            // Duplicates are acked too: the queue already holds them, so the file can go.
            let parsed = parse_external_id(&item.external_id);
            let Some((name, modified)) = parsed.filter(|(name, _)| {
                item.source_system == self.settings.source_system
                    && is_plain_name(name)
                    && self.settings.wants(OsStr::new(name))
            }) else {
                // Never act on a name this puller would not have pulled: an external id is not
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
            names.push((name.to_string(), modified));
        }
        if names.is_empty() {
            return Ok(());
        }
        let count = names.len();
        let settings = Arc::clone(&self.settings);
        tokio::task::spawn_blocking(move || {
            dispose_files(&settings.sandbox, &settings.dir, &settings.disposal, &names)
        })
        .await
        .map_err(|error| StepError::retryable(format!("file ack task failed: {error}")))??;
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            acked = count,
            "acked files"
        );
        Ok(())
    }
}

/// Lists the directory and reads up to `max` files, leaving quarantined ones alone. Runs on a
/// blocking thread. Also returns the quarantined files found changed (and read) or gone.
fn pull_files(
    settings: &Settings,
    quarantined: &HashSet<(String, String)>,
    max: usize,
) -> Result<(Pulled, Vec<String>), StepError> {
    confined(&settings.sandbox, &settings.dir)?;
    let list_error = |error: &io::Error| {
        StepError::io(&format!("cannot list {}", settings.dir.display()), error)
    };
    let mut candidates = Vec::new();
    for entry in fs::read_dir(&settings.dir).map_err(|error| list_error(&error))? {
        let entry = entry.map_err(|error| list_error(&error))?;
        let name = entry.file_name();
        if !settings.wants(&name) {
            continue;
        }
        // The entry's own type, without following symbolic links: plain subdirectories are
        // simply not files to pull. What a symbolic link points to is checked when it is read.
        match entry.file_type() {
            Ok(file_type) if file_type.is_dir() => continue,
            _ => candidates.push(name),
        }
    }
    // By name, so that what is pulled first does not depend on the filesystem's order.
    candidates.sort_unstable();

    let quarantined_names: HashSet<&str> = quarantined.iter().map(|(n, _)| n.as_str()).collect();
    let mut released: Vec<String> = quarantined_names
        .iter()
        .filter(|name| !candidates.iter().any(|c| c.to_str() == Some(**name)))
        .map(|name| name.to_string())
        .collect();
    let now = SystemTime::now();
    let mut pulled = Pulled::default();
    let mut next = 0;
    // Failures and files still settling do not count against `max`, so a file that can never
    // be read does not stop the others behind it.
    while next < candidates.len() && pulled.passengers.len() < max {
        let name = &candidates[next];
        next += 1;
        let found = read_file(settings, quarantined, name, now);
        let changed = match &found {
            Found::Passenger(_) => true,
            Found::Failure(failure) => {
                !quarantined.contains(&(failure.external_id.clone(), failure.fingerprint.clone()))
            }
            Found::Settling | Found::Quarantined => false,
        };
        if changed && let Some(name) = name.to_str().filter(|n| quarantined_names.contains(n)) {
            // Read again: it changed since it was quarantined.
            released.push(name.to_string());
        }
        match found {
            Found::Passenger(passenger) => pulled.passengers.push(*passenger),
            Found::Failure(failure) => pulled.failures.push(failure),
            Found::Settling | Found::Quarantined => {}
        }
    }
    // Possibly only settling files are left; then the next pull finds nothing and says so.
    pulled.more = next < candidates.len();
    Ok((pulled, released))
}

/// What became of one directory entry.
enum Found {
    Passenger(Box<Passenger>),
    Failure(PullFailure),
    /// Modified too recently: it may still be being written.
    Settling,
    /// In quarantine, unchanged since: not read again.
    Quarantined,
}

/// Reads one file into a passenger: the file as attachment, its description as JSON body.
fn read_file(
    settings: &Settings,
    quarantined: &HashSet<(String, String)>,
    name: &OsStr,
    now: SystemTime,
) -> Found {
    let mut fingerprint_now = String::new();
    let failure = |fingerprint: &str, error: StepError| {
        Found::Failure(PullFailure {
            external_id: name.to_string_lossy().into_owned(),
            fingerprint: fingerprint.to_string(),
            error,
        })
    };
    let Some(name) = name.to_str() else {
        return failure(
            &fingerprint_now,
            StepError::permanent("file name is not valid UTF-8, so it cannot be an external id"),
        );
    };
    let path = settings.dir.join(name);
    // A symbolic link in the directory may lead anywhere: what would be read must be inside.
    if let Err(error) = confined(&settings.sandbox, &path) {
        return failure(&fingerprint_now, error);
    }
    // Follows a symbolic link: what matters is what would be read.
    let metadata = match fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(error) => {
            return failure(
                &fingerprint_now,
                StepError::io(&format!("cannot read {}", path.display()), &error),
            );
        }
    };
    if metadata.is_dir() {
        return failure(
            &fingerprint_now,
            StepError::permanent(format!(
                "{} is a symbolic link to a directory, not a file",
                path.display()
            )),
        );
    }
    if !metadata.is_file() {
        // Never open a FIFO or a device: reading it could block forever.
        return failure(
            &fingerprint_now,
            StepError::permanent(format!("{} is not a regular file", path.display())),
        );
    }
    let modified = metadata.modified().unwrap_or(UNIX_EPOCH);
    if is_settling(modified, now, settings.settle) {
        return Found::Settling;
    }
    fingerprint_now = fingerprint(metadata.len(), modified);
    if quarantined.contains(&(name.to_string(), fingerprint_now.clone())) {
        return Found::Quarantined;
    }
    let content = match fs::read(&path) {
        Ok(content) => content,
        Err(error) => {
            return failure(
                &fingerprint_now,
                StepError::io(&format!("cannot read {}", path.display()), &error),
            );
        }
    };

    let size = content.len();
    // Decoded here, on the blocking thread of the pull, so that a malformed file fails alone.
    let decoded = match &settings.codec {
        Some(codec) => match codec.decode(&content) {
            Ok(value) => Some(value),
            Err(error) => {
                return failure(
                    &fingerprint_now,
                    StepError::permanent(format!("cannot decode {}: {error}", path.display())),
                );
            }
        },
        None => None,
    };
    let media_type = match &settings.media_type {
        Some(media_type) => media_type.clone(),
        None => ferry_core::media_type_of(name).to_string(),
    };
    let id = external_id(name, modified_millis(modified));
    let modified = DateTime::<Utc>::from(modified).to_rfc3339_opts(SecondsFormat::Millis, true);
    let body = match decoded {
        Some(value) => Body::json(&value),
        None => Body::json(&json!({ "file": name, "size": size, "modified": modified })),
    };
    let mut passenger = Passenger::pulled(settings.source_system.clone(), id).with_body(body);
    passenger.metadata.insert("file.name".into(), name.into());
    passenger
        .metadata
        .insert("file.size".into(), size.to_string());
    passenger.metadata.insert("file.modified".into(), modified);
    passenger.attachments.push(Attachment {
        name: name.into(),
        media_type,
        content: Bytes::from(content),
    });
    Found::Passenger(Box::new(passenger))
}

/// What changes when a file changes: its size and modification time.
fn fingerprint(size: u64, modified: SystemTime) -> String {
    format!("{size}:{}", modified_millis(modified))
}

/// The external id of a file: its name and modification time, `invoice.xml@1732357200123`.
///
/// The name alone would make a new file that reuses an old name (a daily `orders.csv`) a
/// duplicate of the one seated earlier, skipped and then deleted by the ack: lost. With the
/// time, a file seen again after a crash (unchanged) is a duplicate, a rewritten one is new.
fn external_id(name: &str, modified_millis: i64) -> String {
    format!("{name}@{modified_millis}")
}

/// The name and modification time in an external id made by [`external_id`].
fn parse_external_id(id: &str) -> Option<(&str, i64)> {
    let (name, millis) = id.rsplit_once('@')?;
    Some((name, millis.parse().ok()?))
}
