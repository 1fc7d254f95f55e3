//! The `ferry` binary: subcommands and wiring only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ferry_core::{PassengerId, Registry};
use ferry_engine::{Engine, LoadError, Options};
use ferry_store::{PassengerState, PipelineKey, QueueFilter, Store};

mod demo;
mod show;
mod trials;
mod users;

/// Pulls data from source systems, keeps every item in a durable queue until it is delivered,
/// processes it and pushes it to target systems.
#[derive(Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dispatcher for a project (the demo project when none is given or found).
    Run {
        /// Project directory (with ferry.yaml). Default: the current directory if it has a
        /// ferry.yaml, else the demo project in the data directory.
        dir: Option<PathBuf>,
        /// Where the console listens, e.g. 127.0.0.1:5000 (default: `web.listen` in ferry.yaml).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Write a commented example project into DIR.
    Init {
        dir: PathBuf,
        /// Write this worked example instead: `mail-to-erp` (orders and price lists from a
        /// mailbox to SAP as IDocs, with pipeline tests).
        #[arg(long, value_name = "NAME")]
        example: Option<String>,
    },
    /// Check every definition of a project; print every error as file:line:column: key: message.
    Validate {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Validate a project, then connect to every connection of connections.yaml and say whether
    /// it works.
    Check {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Pipelines, queue counts per state and last runs.
    Status {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run the pipeline tests of a project (clients/<client>/tests/*.yaml) on the real
    /// processors; nothing is pulled, queued or pushed.
    Test {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Write the golden files with what comes out now instead of comparing.
        #[arg(long)]
        update: bool,
    },
    /// Show what a pipeline's pullers would pull now and what its processors would make of it,
    /// without seating, acking or pushing anything.
    Peek {
        /// CLIENT/PIPELINE, or PIPELINE when its name is unique.
        pipeline: String,
        /// Project directory.
        #[arg(short = 'C', long = "project", default_value = ".")]
        dir: PathBuf,
        /// Pull at most this many passengers from each puller.
        #[arg(long, default_value_t = 10)]
        max: usize,
    },
    /// Manage console users (in clients/<client>/client.yaml).
    User {
        /// Project directory.
        #[arg(short = 'C', long = "project", default_value = ".", global = true)]
        dir: PathBuf,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Inspect and repair the queue.
    Queue {
        /// Project directory.
        #[arg(short = 'C', long = "project", default_value = ".", global = true)]
        dir: PathBuf,
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Look after the store as a whole.
    Store {
        /// Project directory.
        #[arg(short = 'C', long = "project", default_value = ".", global = true)]
        dir: PathBuf,
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Write a consistent copy of the SQLite store, as of one moment, to a new file while
    /// ferry runs; the copy opens as a store of its own (`store: sqlite://FILE`).
    Backup {
        /// The new file.
        to: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user, or set the role and password of an existing one. The password is asked for
    /// (or read from the first line of stdin when it is not a terminal); only its argon2 hash
    /// is written.
    Add {
        client: String,
        user: String,
        #[arg(long)]
        role: ferry_core::config::UserRole,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List passengers, newest first.
    List {
        /// Only this client.
        #[arg(long)]
        client: Option<String>,
        /// Only this pipeline (CLIENT/PIPELINE or PIPELINE).
        #[arg(long)]
        pipeline: Option<String>,
        /// Only this state: pending, in_flight, failed, complete, filtered, dead, discarded.
        #[arg(long)]
        state: Option<PassengerState>,
        /// Text in external_id or source_system.
        #[arg(long)]
        text: Option<String>,
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Page: list passengers older than this id.
        #[arg(long)]
        before: Option<PassengerId>,
    },
    /// Everything about one passenger: metadata, body, steps, attempts.
    Show { id: PassengerId },
    /// Try the failed and dead steps of passengers again, with fresh attempts.
    Retry {
        #[arg(required = true)]
        ids: Vec<PassengerId>,
    },
    /// Give up on passengers; the cleaner purges them after the retention period.
    Discard {
        #[arg(required = true)]
        ids: Vec<PassengerId>,
    },
    /// Send passengers again from the start through the pipeline as defined now.
    Replay {
        #[arg(required = true)]
        ids: Vec<PassengerId>,
    },
    /// List quarantined input: items a puller could not take, with their reason.
    Quarantined,
    /// Take quarantined input items (by the number `quarantined` shows) again on the next pull.
    RetryInput {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Leave quarantined input items alone for good (until they change).
    DiscardInput {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { dir, listen } => run(dir, listen).await,
        Command::Init { dir, example } => {
            demo::init(&dir, example.as_deref())?;
            println!("wrote an example project to {}", dir.display());
            if example.is_some() {
                // Its connections and pipelines name the mailbox and SAP as ${NAME}.
                println!(
                    "it reads its mailbox and SAP system from the environment; example values \
                     are in {}",
                    dir.join(".env").display()
                );
                println!(
                    "next: cd {} && set -a && . ./.env && set +a && ferry validate && ferry test",
                    dir.display()
                );
            } else {
                println!("next: ferry validate {0} && ferry run {0}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { dir } => validate(&dir),
        Command::Check { dir } => check(&dir).await,
        Command::Status { dir } => {
            let (project, store) = open(&dir).await?;
            show::status(&project, store.as_ref()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { dir, update } => {
            let project = load(&dir)?;
            Ok(trials::test(&dir, &project, &registry(), update))
        }
        Command::Peek { pipeline, dir, max } => {
            let project = load(&dir)?;
            let pipeline = trials::find_pipeline(&project, &pipeline)?;
            trials::peek(&dir, &registry(), pipeline, max).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue { dir, command } => queue(&dir, command).await,
        Command::Store {
            dir,
            command: StoreCommand::Backup { to },
        } => {
            let (_, store) = open(&dir).await?;
            show::progress_of_file(store.backup(&to), &to).await?;
            println!("backed up to {}", to.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            dir,
            command: UserCommand::Add { client, user, role },
        } => {
            users::add(&dir, &client, &user, role)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn registry() -> Arc<Registry> {
    Arc::new(ferry_connectors::registry())
}

/// Loads and validates a project, printing every error.
fn load(dir: &Path) -> anyhow::Result<ferry_core::config::Project> {
    if !dir.join("ferry.yaml").is_file() {
        bail!(
            "{} has no ferry.yaml; create a project with `ferry init {}`",
            dir.display(),
            dir.display()
        );
    }
    match ferry_engine::registrar::load(dir, &registry()) {
        Ok(project) => Ok(project),
        Err(LoadError::Invalid(errors)) => {
            for error in &errors {
                eprintln!("{error}");
            }
            bail!(
                "{} error(s) in the definitions of {}",
                errors.len(),
                dir.display()
            )
        }
        Err(error) => Err(error.into()),
    }
}

async fn open(dir: &Path) -> anyhow::Result<(ferry_core::config::Project, Arc<dyn Store>)> {
    let project = load(dir)?;
    let store = ferry_store::open(&project.system.store, dir)
        .await
        .with_context(|| {
            format!(
                "cannot open store {}",
                ferry_store::redact_url(&project.system.store)
            )
        })?;
    Ok((project, store))
}

fn validate(dir: &Path) -> anyhow::Result<ExitCode> {
    let project = load(dir)?;
    let pipelines = project.pipelines().count();
    println!(
        "{}: {} client(s), {pipelines} pipeline(s), all definitions valid",
        dir.display(),
        project.clients.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// How long `ferry check` waits for one connection.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

async fn check(dir: &Path) -> anyhow::Result<ExitCode> {
    validate(dir)?;
    let project = load(dir)?;
    if project.connections.is_empty() {
        println!("no connections to check (connections.yaml defines none)");
        return Ok(ExitCode::SUCCESS);
    }
    let registry = registry();
    let checks = project.connections.values().map(|connection| {
        let (registry, dir) = (&registry, &project.dir);
        async move {
            let checked = registry.check_connection(connection, dir);
            let result = tokio::time::timeout(CHECK_TIMEOUT, checked)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())));
            (connection, result)
        }
    });
    let mut failed = 0;
    for (connection, result) in futures::future::join_all(checks).await {
        // An error names the connection and its URL (without the password) itself.
        let (mark, what) = match result {
            Ok(description) => ("ok  ", description),
            Err(error) => {
                failed += 1;
                ("FAIL", error)
            }
        };
        println!(
            "{mark} {:<16} {:<8} {what}",
            connection.name, connection.kind
        );
    }
    Ok(match failed {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

async fn run(dir: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    init_logging();
    let dir = match dir {
        Some(dir) => dir,
        None if Path::new("ferry.yaml").is_file() => PathBuf::from("."),
        None => {
            let demo = demo::ensure_demo()?;
            tracing::info!(dir = %demo.display(), "no project given or found here; running the demo project");
            demo
        }
    };
    let (project, store) = open(&dir).await?;
    // Several nodes may share a server store; a SQLite store is one process's.
    let _lock = match store.is_shared() {
        true => None,
        false => Some(lock_project(&dir)?),
    };
    let listen = listen.unwrap_or(project.system.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the console; choose another address with --listen or web.listen in ferry.yaml"))?;
    let engine = Engine::start(project, store, registry(), Options::default()).await?;
    let address = listener.local_addr().unwrap_or(listen);
    tracing::info!("console on http://{address}");
    let console = tokio::spawn(ferry_console::serve(listener, engine.clone(), {
        let engine = engine.clone();
        async move { engine.stopping().await }
    }));
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = engine.stopping() => {}
    }
    tracing::info!("stopping: no more pulling, finishing work in hand");
    engine.shutdown();
    engine.wait().await;
    if let Ok(Err(error)) = console.await {
        tracing::error!(%error, "the console stopped with an error");
    }
    Ok(ExitCode::SUCCESS)
}

/// Holds an exclusive lock on the project for as long as the returned file lives: one
/// dispatcher per project, so the leases a new process finds at start belong to a dead one.
fn lock_project(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join(".ferry.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!(
                "another `ferry run` is already running for {}",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Resolves at SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Redacted(std::io::stderr()))
        // Colour codes only for a person at a terminal: in a log file or journal they are
        // noise that breaks grep (issue 12).
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Standard error with every value the definitions took from the environment replaced by its
/// reference (issue 12): a secret that found its way into a message is never logged. The
/// formatter hands over one whole line per write.
struct Redacted<W>(W);

impl<W: std::io::Write> std::io::Write for Redacted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let secrets = ferry_core::config::Secrets::current();
        match std::str::from_utf8(buf) {
            Ok(text) if !secrets.is_empty() => {
                self.0.write_all(secrets.redact(text).as_bytes())?;
                Ok(buf.len())
            }
            _ => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Ends the quarantine of input items: `retry` takes them again on the next pull, else they are
/// discarded.
async fn end_quarantine(
    store: &dyn ferry_store::Store,
    ids: &[i64],
    retry: bool,
) -> anyhow::Result<()> {
    for &id in ids {
        let Some(item) = store.end_quarantine(id, None, retry).await? else {
            bail!("#{id}: no quarantined input with this number (see `ferry queue quarantined`)");
        };
        let verb = if retry {
            "taken again on the next pull"
        } else {
            "discarded"
        };
        println!(
            "#{id} {}/{} {}: {verb}",
            item.client, item.pipeline, item.item
        );
    }
    Ok(())
}

async fn queue(dir: &Path, command: QueueCommand) -> anyhow::Result<ExitCode> {
    let (project, store) = open(dir).await?;
    let now = chrono::Utc::now();
    match command {
        QueueCommand::List {
            client,
            pipeline,
            state,
            text,
            limit,
            before,
        } => {
            let (client, pipeline) = match pipeline {
                Some(p) => match p.split_once('/') {
                    Some((c, p)) => (Some(c.to_string()), Some(p.to_string())),
                    None => (client, Some(p)),
                },
                None => (client, None),
            };
            let filter = QueueFilter {
                client,
                pipeline,
                state,
                text,
                ..QueueFilter::default()
            };
            let entries = store.list(&filter, before, limit).await?;
            show::entries(&entries);
        }
        QueueCommand::Show { id } => {
            let detail = store.get(id).await?;
            show::detail(&detail);
        }
        QueueCommand::Retry { ids } => {
            for id in ids {
                store.retry(id, now).await?;
                println!("{id}: retrying");
            }
        }
        QueueCommand::Discard { ids } => {
            for id in ids {
                store.discard(id, now).await?;
                println!("{id}: discarded");
            }
        }
        QueueCommand::Replay { ids } => {
            for id in ids {
                let entry = store.get(id).await?.entry;
                let Some(pipeline) = project.pipeline(&entry.client, &entry.pipeline) else {
                    bail!(
                        "{id}: its pipeline {} is no longer defined; it can only be discarded",
                        PipelineKey::new(&entry.client, &entry.pipeline)
                    );
                };
                store.replay(id, &pipeline.steps(), now).await?;
                println!("{id}: replaying through {}", pipeline.key());
            }
        }
        QueueCommand::Quarantined => {
            let items = store.quarantined(None, None).await?;
            if items.is_empty() {
                println!("no quarantined input");
            }
            for item in items {
                println!(
                    "#{:<6} {}/{} {}: {}: {} (since {}, seen {} time(s))",
                    item.id,
                    item.client,
                    item.pipeline,
                    item.puller,
                    item.item,
                    item.reason,
                    item.first_seen.format("%Y-%m-%d %H:%M:%S"),
                    item.times
                );
            }
        }
        QueueCommand::RetryInput { ids } => end_quarantine(store.as_ref(), &ids, true).await?,
        QueueCommand::DiscardInput { ids } => end_quarantine(store.as_ref(), &ids, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}
