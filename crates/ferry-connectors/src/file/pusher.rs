//! The `file` pusher: writes passengers into a directory, atomically, durable once per batch.
//!
//! A batch is written in phases so that its cost is one filesystem flush, not one per file:
//! every file goes to a temporary name next to its final name, one `syncfs` makes them all
//! durable, then each is renamed over its final name (so a reader never sees half a file) and
//! each directory touched is synced once (so the renames survive a crash). A crash at any point
//! leaves at most temporary files, which the retry of the same batch overwrites.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::sandbox::Sandbox;
use ferry_core::template::Template;
use ferry_core::{Body, BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use ferry_formats::Codec;
use tracing::debug;

use super::fs::{confined, create_dirs, sync_dir, temp_name};
use super::{Content, FilePusherConfig};
use crate::processors::{build_codec, encode_body};

/// Builds `file` pushers.
pub struct FilePusherFactory;

impl PusherFactory for FilePusherFactory {
    const TYPE: &'static str = "file";
    type Config = FilePusherConfig;

    fn build(
        &self,
        config: FilePusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        if config.path.is_empty() {
            return Err(BuildError::at(
                "path",
                "the directory to write into is empty",
            ));
        }
        let template = Template::parse(&config.name_template)
            .map_err(|message| BuildError::at("name_template", message))?;
        // Placeholder values are made safe when rendered, so only the template's own text can
        // climb out of the directory; catch that now rather than on every push.
        let literal = literal_text(&config.name_template);
        let sample = Path::new(&literal);
        if sample.has_root() {
            return Err(BuildError::at(
                "name_template",
                "file names must be relative to `path`, not absolute",
            ));
        }
        if sample.components().any(|c| c == Component::ParentDir) {
            return Err(BuildError::at(
                "name_template",
                "file names must not contain `..` segments",
            ));
        }
        let codec = match &config.codec {
            Some(_) if config.content == Content::Attachments => {
                return Err(BuildError::at(
                    "codec",
                    "`codec` encodes the body, so it cannot go with `content: attachments`",
                ));
            }
            Some(codec) => {
                let codec = build_codec(codec, ctx)?;
                codec.check_encode().map_err(|mut error| {
                    error.path.insert(0, "codec".into());
                    error
                })?;
                Some(Arc::new(codec))
            }
            None => None,
        };
        Ok(Box::new(FilePusher {
            dir: ctx.data_path("path", &config.path)?,
            sandbox: ctx.sandbox.clone(),
            template,
            content: config.content,
            codec,
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            component: ctx.component.clone(),
        }))
    }
}

/// Writes passengers as files into one directory.
pub struct FilePusher {
    dir: PathBuf,
    /// Where the client's definitions may reach, checked again before each write.
    sandbox: Sandbox,
    template: Template,
    content: Content,
    /// Encodes the JSON body into what is written, when configured.
    codec: Option<Arc<Codec>>,
    /// `client/pipeline`, for logs.
    pipeline: String,
    component: String,
}

/// One file a passenger asks for, relative to the pusher's directory.
struct PlannedFile {
    relative: PathBuf,
    data: Bytes,
}

/// What a passenger becomes: its files, or a body still to encode (on the blocking thread,
/// since encoding a large body takes longer than the runtime should be held).
enum Plan {
    Files(Vec<PlannedFile>),
    Encode { relative: PathBuf, body: Body },
}

impl Plan {
    fn into_files(self, codec: Option<&Codec>) -> Result<Vec<PlannedFile>, StepError> {
        let (relative, body, codec) = match (self, codec) {
            (Plan::Files(files), _) => return Ok(files),
            (Plan::Encode { relative, body }, Some(codec)) => (relative, body, codec),
            (Plan::Encode { .. }, None) => {
                return Err(StepError::permanent("no codec to encode the body with"));
            }
        };
        let encoded = encode_body(codec, &body)?;
        Ok(vec![PlannedFile {
            relative,
            data: Bytes::from(encoded),
        }])
    }
}

#[async_trait]
impl Pusher for FilePusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        let plans: Vec<_> = passengers.iter().map(|p| self.plan(p)).collect();
        let dir = self.dir.clone();
        let sandbox = self.sandbox.clone();
        let codec = self.codec.clone();
        // One blocking task for the whole batch, not one per file.
        let task = move || {
            let plans = plans
                .into_iter()
                .map(|plan| plan.and_then(|plan| plan.into_files(codec.as_deref())))
                .collect();
            write_batch(&sandbox, &dir, plans)
        };
        let results = match tokio::task::spawn_blocking(task).await {
            Ok(results) => results,
            Err(error) => {
                let error = StepError::retryable(format!("file push task failed: {error}"));
                vec![Err(error); passengers.len()]
            }
        };
        let failed = results.iter().filter(|result| result.is_err()).count();
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            written = results.len() - failed,
            failed,
            "pushed files"
        );
        results
    }
}

impl FilePusher {
    /// The files `passenger` becomes, or why it cannot be written.
    fn plan(&self, passenger: &Passenger) -> Result<Plan, StepError> {
        let relative = relative_path(&self.template.render(passenger))?;
        if self.codec.is_some() {
            let body = passenger.body.clone();
            return Ok(Plan::Encode { relative, body });
        }
        let write_attachments = match self.content {
            Content::Body => false,
            Content::Attachments if passenger.attachments.is_empty() => {
                return Err(StepError::permanent(
                    "the passenger has no attachments to write (`content: attachments`)",
                ));
            }
            Content::Attachments => true,
            Content::Auto => !passenger.attachments.is_empty(),
        };
        if !write_attachments {
            let data = passenger.body.data.clone();
            return Ok(Plan::Files(vec![PlannedFile { relative, data }]));
        }
        if let [attachment] = passenger.attachments.as_slice() {
            let data = attachment.content.clone();
            return Ok(Plan::Files(vec![PlannedFile { relative, data }]));
        }
        // Several attachments: `<name>-<attachment name>` each, next to each other.
        let base = relative
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut used = HashSet::new();
        let mut files = Vec::with_capacity(passenger.attachments.len());
        for (index, attachment) in passenger.attachments.iter().enumerate() {
            let mut segment = attachment_segment(&attachment.name, index);
            if !used.insert(segment.clone()) {
                // Two attachments with the same name must not overwrite each other.
                segment = format!("{}-{segment}", index + 1);
                used.insert(segment.clone());
            }
            files.push(PlannedFile {
                relative: relative.with_file_name(format!("{base}-{segment}")),
                data: attachment.content.clone(),
            });
        }
        Ok(Plan::Files(files))
    }
}

/// A rendered name as a path relative to the pusher's directory; refuses anything that could
/// end up outside it.
fn relative_path(name: &str) -> Result<PathBuf, StepError> {
    if name.ends_with('/') {
        return Err(StepError::permanent(format!(
            "the rendered file name `{name}` ends with `/`"
        )));
    }
    let mut relative = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(segment) => relative.push(segment),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(StepError::permanent(format!(
                    "the rendered file name `{name}` contains `..`"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(StepError::permanent(format!(
                    "the rendered file name `{name}` is absolute"
                )));
            }
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(StepError::permanent(format!(
            "the name template rendered an empty file name `{name}`"
        )));
    }
    Ok(relative)
}

/// A template's text with every placeholder replaced by `x`: what all rendered names share.
fn literal_text(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        out.push('x');
        rest = match rest[open..].find('}') {
            Some(close) => &rest[open + close + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// An attachment's name as one safe path segment (it comes from outside and is never trusted).
fn attachment_segment(name: &str, index: usize) -> String {
    let segment = name.replace(['/', '\\', '\0'], "_");
    match segment.as_str() {
        "" | "." | ".." => format!("attachment-{}", index + 1),
        _ => segment,
    }
}

/// One file of the batch on its way to its final name.
struct Write {
    final_path: PathBuf,
    temp_path: PathBuf,
    /// The directory both names are in.
    dir: PathBuf,
    data: Bytes,
    /// The passengers whose result depends on this file (more than one when several
    /// passengers of the batch render the same name).
    owners: Vec<usize>,
    failed: bool,
}

/// The state of a batch while it is written: one result per passenger and its files.
struct Batch {
    results: Vec<Result<(), StepError>>,
    writes: Vec<Write>,
}

impl Batch {
    /// Marks a file as failed, and with it every passenger it belongs to.
    fn fail(&mut self, write: usize, error: &StepError) {
        self.writes[write].failed = true;
        for &owner in &self.writes[write].owners {
            if self.results[owner].is_ok() {
                self.results[owner] = Err(error.clone());
            }
        }
    }

    /// Indices of the files still on their way.
    fn live(&self) -> Vec<usize> {
        (0..self.writes.len())
            .filter(|&index| !self.writes[index].failed)
            .collect()
    }
}

/// Writes a batch (see the module documentation for the phases). Runs on a blocking thread.
fn write_batch(
    sandbox: &Sandbox,
    root: &Path,
    plans: Vec<Result<Vec<PlannedFile>, StepError>>,
) -> Vec<Result<(), StepError>> {
    let mut batch = Batch {
        results: Vec::with_capacity(plans.len()),
        writes: Vec::with_capacity(plans.len()),
    };
    let mut by_path: HashMap<PathBuf, usize> = HashMap::new();
    for (passenger, plan) in plans.into_iter().enumerate() {
        let files = match plan {
            Ok(files) => files,
            Err(error) => {
                batch.results.push(Err(error));
                continue;
            }
        };
        // A symbolic link on the way may lead out of the client's directories.
        let outside = files
            .iter()
            .find_map(|file| confined(sandbox, &root.join(&file.relative)).err());
        if let Some(error) = outside {
            batch.results.push(Err(error));
            continue;
        }
        batch.results.push(Ok(()));
        for file in files {
            let final_path = root.join(&file.relative);
            if let Some(&index) = by_path.get(&final_path) {
                // A later passenger of the batch writes the same file: the later one wins, as
                // it would in a later batch.
                batch.writes[index].data = file.data;
                batch.writes[index].owners.push(passenger);
                continue;
            }
            let dir = final_path.parent().unwrap_or(root).to_path_buf();
            let file_name = final_path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            by_path.insert(final_path.clone(), batch.writes.len());
            batch.writes.push(Write {
                temp_path: dir.join(temp_name(&file_name)),
                final_path,
                dir,
                data: file.data,
                owners: vec![passenger],
                failed: false,
            });
        }
    }

    // 1. Directories, once each. New ones need their parent synced to survive a crash.
    let mut ready_dirs: HashMap<PathBuf, Result<(), StepError>> = HashMap::new();
    let mut created_parents = BTreeSet::new();
    for index in batch.live() {
        let dir = batch.writes[index].dir.clone();
        let ready = ready_dirs.entry(dir).or_insert_with_key(|dir| {
            let created = create_dirs(dir).map_err(|error| {
                StepError::io(
                    &format!("cannot create directory {}", dir.display()),
                    &error,
                )
            })?;
            created_parents.extend(created);
            Ok(())
        });
        if let Err(error) = ready.clone() {
            batch.fail(index, &error);
        }
    }

    // 2. Every file under its temporary name.
    for index in batch.live() {
        let write = &batch.writes[index];
        if let Err(error) = write_temp(&write.temp_path, &write.data) {
            // Names the directory, not the temporary file: the cause is the same for every
            // passenger of the batch, so the console groups their dead letters together.
            let dir = write.temp_path.parent().unwrap_or(Path::new("."));
            let error = StepError::io(&format!("cannot write into {}", dir.display()), &error);
            let _ = fs::remove_file(&write.temp_path);
            batch.fail(index, &error);
        }
    }

    // 3. One durable flush for the whole batch.
    flush(&mut batch);

    // 4. Into place: from now on readers see whole files only.
    for index in batch.live() {
        let write = &batch.writes[index];
        if let Err(error) = fs::rename(&write.temp_path, &write.final_path) {
            let error = StepError::io(
                &format!("cannot rename to {}", write.final_path.display()),
                &error,
            );
            let _ = fs::remove_file(&write.temp_path);
            batch.fail(index, &error);
        }
    }

    // 5. The renames made durable: each directory synced once.
    let live = batch.live();
    for parent in &created_parents {
        if let Err(error) = sync_dir(parent) {
            let error = StepError::io(&format!("cannot sync {}", parent.display()), &error);
            for &index in &live {
                batch.fail(index, &error);
            }
        }
    }
    let mut by_dir: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
    for index in batch.live() {
        let dir = batch.writes[index].dir.clone();
        by_dir.entry(dir).or_default().push(index);
    }
    for (dir, indices) in by_dir {
        if let Err(error) = sync_dir(&dir) {
            let error = StepError::io(&format!("cannot sync {}", dir.display()), &error);
            for index in indices {
                batch.fail(index, &error);
            }
        }
    }

    batch.results
}

/// Writes `data` to `path`, replacing a leftover from an earlier attempt.
fn write_temp(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(data)?;
    // Without `syncfs` each file is made durable on its own.
    #[cfg(not(target_os = "linux"))]
    file.sync_all()?;
    Ok(())
}

/// Makes every temporary file of the batch durable with one `syncfs` per filesystem involved
/// (almost always one), instead of one `fsync` per file.
#[cfg(target_os = "linux")]
fn flush(batch: &mut Batch) {
    use std::os::unix::fs::MetadataExt;

    // Directories of the live files, grouped by the filesystem they are on.
    let mut dirs: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
    for index in batch.live() {
        dirs.entry(batch.writes[index].dir.clone())
            .or_default()
            .push(index);
    }
    let mut devices: HashMap<u64, (PathBuf, Vec<usize>)> = HashMap::new();
    for (dir, indices) in dirs {
        match fs::metadata(&dir) {
            Ok(metadata) => {
                let device = devices
                    .entry(metadata.dev())
                    .or_insert_with(|| (dir, Vec::new()));
                device.1.extend(indices);
            }
            Err(error) => {
                let error = StepError::io(&format!("cannot stat {}", dir.display()), &error);
                for index in indices {
                    batch.fail(index, &error);
                }
            }
        }
    }
    for (dir, indices) in devices.into_values() {
        let synced = fs::File::open(&dir)
            .and_then(|handle| rustix::fs::syncfs(&handle).map_err(io::Error::from));
        if let Err(error) = synced {
            let error = StepError::io(&format!("cannot flush {}", dir.display()), &error);
            for index in indices {
                batch.fail(index, &error);
            }
        }
    }
}

/// Each file was made durable as it was written ([`write_temp`]).
#[cfg(not(target_os = "linux"))]
fn flush(_batch: &mut Batch) {}
