//! ferry's dispatcher: it loads definitions (the [`registrar`]), pulls on schedules
//! ([`runner`]), processes and pushes with a bounded pool of [`worker`]s, purges what is past
//! its retention ([`cleaner`]) and tells [`observer`]s about all of it; `notify` tells people
//! (by e-mail and webhooks) what their clients' `notifications:` ask for.
//!
//! One [`Engine`] runs one project. It keeps running whatever a pipeline does: a failing pull,
//! a panicking pusher or a store error affects that pipeline's run, never the others.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ferry_core::config::{ComponentDef, Pipeline, Project, StepDef};
use ferry_core::{BuildContext, BuildError, PassengerId, Processor, Pusher, Registry};
use ferry_store::{LeaseToken, PipelineKey, Store};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod cleaner;
mod dependencies;
mod nodes;
mod notify;
pub mod observer;
mod policy;
mod quarantine;
mod recording;
pub mod registrar;
mod runner;
pub mod testing;
pub mod trial;
mod worker;

pub use nodes::INTERRUPTED;
pub use observer::{Bus, Event};
pub use registrar::LoadError;

/// Timings of the dispatcher. The defaults suit production; tests shorten them.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a worker owns leased passengers before others may take them.
    pub lease: Duration,
    /// A push call that takes longer fails (retryable).
    pub push_timeout: Duration,
    /// How often idle workers look for due work (new work wakes them at once).
    pub idle_poll: Duration,
    /// How often definition files are checked for changes.
    pub reload_every: Duration,
    /// Pause between pulls of a `continuous` pipeline.
    pub continuous_pause: Duration,
    /// The first wait after a failed run of a `continuous` pipeline whose source cannot be
    /// reached; it doubles with each such run in a row, up to 32 times this.
    pub away_backoff: Duration,
    /// How long shutdown waits for in-flight work before giving it back to the queue.
    pub grace: Duration,
    /// How often this node tells the store it is alive.
    pub heartbeat: Duration,
    /// A node silent this long counts as stopped: other nodes take back its leases, runs and
    /// pipelines. Shorter than `lease`, so a dead node's work comes back before it expires.
    pub node_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lease: Duration::from_secs(300),
            push_timeout: Duration::from_secs(240),
            idle_poll: Duration::from_secs(1),
            reload_every: Duration::from_secs(2),
            continuous_pause: Duration::from_millis(250),
            away_backoff: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            heartbeat: Duration::from_secs(5),
            node_timeout: Duration::from_secs(30),
        }
    }
}

/// Errors of engine operations.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no pipeline `{0}`")]
    UnknownPipeline(PipelineKey),
    #[error(transparent)]
    Store(#[from] ferry_store::StoreError),
    #[error("pipeline {pipeline}: {component}: {error}")]
    Build {
        pipeline: String,
        component: String,
        error: BuildError,
    },
}

/// A puller with its component name; pullers belong to their pipeline's pull task alone.
pub type NamedPuller = (String, Box<dyn ferry_core::Puller>);

/// A processor with its component name.
pub(crate) type NamedProcessor = (String, Box<dyn Processor>);

/// A running pipeline: its built processors and pushers (shared by the workers) and the task
/// that pulls on its schedule.
pub(crate) struct Active {
    pub key: PipelineKey,
    pub def: Pipeline,
    pub steps: Vec<StepDef>,
    pub processors: Vec<NamedProcessor>,
    pub pushers: Vec<(String, Box<dyn Pusher>)>,
    pub run_now: Notify,
    /// Every master of the pipeline (`depends_on`) succeeded since its last run.
    pub masters_done: Notify,
    /// Stops this pipeline's pull task (on reload or shutdown).
    pub stop: CancellationToken,
}

/// State shared by every task of the engine.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub bus: Bus,
    pub options: Options,
    pub dir: PathBuf,
    pub shutdown: CancellationToken,
    pub project: RwLock<Arc<Project>>,
    pub pipelines: RwLock<BTreeMap<PipelineKey, Arc<Active>>>,
    pub runners: Mutex<HashMap<PipelineKey, JoinHandle<()>>>,
    pub paused: RwLock<HashSet<PipelineKey>>,
    /// Counts the changes this process made to `paused`, so that a refresh from the store
    /// that read the flags before such a change does not undo it.
    pub paused_changes: AtomicU64,
    /// The pipelines this node pulls (on a store several processes share).
    pub holds: Mutex<HashSet<PipelineKey>>,
    /// Wakes idle workers when passengers were seated.
    pub work: Notify,
    /// Leases held by workers right now, so shutdown can give them back.
    pub in_flight: Mutex<HashMap<PassengerId, LeaseToken>>,
}

impl Shared {
    pub fn is_paused(&self, key: &PipelineKey) -> bool {
        self.paused.read().expect("paused lock").contains(key)
    }

    /// Marks the pipeline paused in memory, once the store has the flag.
    pub fn pause_here(&self, key: &PipelineKey) {
        let mut flags = self.paused.write().expect("paused lock");
        self.paused_changes.fetch_add(1, Ordering::SeqCst);
        flags.insert(key.clone());
    }

    /// Marks the pipeline running in memory, once the store has the flag.
    pub fn resume_here(&self, key: &PipelineKey) {
        let mut flags = self.paused.write().expect("paused lock");
        self.paused_changes.fetch_add(1, Ordering::SeqCst);
        flags.remove(key);
    }

    /// The running pipelines, in key order.
    pub fn active(&self) -> Vec<Arc<Active>> {
        self.pipelines
            .read()
            .expect("pipelines lock")
            .values()
            .cloned()
            .collect()
    }
}

/// The dispatcher of one project.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Engine {
    /// Starts the dispatcher for a validated project: records definition versions, starts
    /// every pipeline's pull task, the workers, the cleaner and the definition watcher.
    pub async fn start(
        project: Project,
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        options: Options,
    ) -> Result<Engine, EngineError> {
        let started = chrono::Utc::now();
        registrar::record_versions(store.as_ref(), &project).await?;
        nodes::join(store.as_ref(), &project, &options).await?;
        let paused = store.paused().await?.into_iter().collect();
        let workers = project.system.workers;
        project.secrets.publish();
        let shared = Arc::new(Shared {
            store,
            registry,
            bus: Bus::default(),
            options,
            dir: project.dir.clone(),
            shutdown: CancellationToken::new(),
            project: RwLock::new(Arc::new(project.clone())),
            pipelines: RwLock::new(BTreeMap::new()),
            runners: Mutex::new(HashMap::new()),
            paused: RwLock::new(paused),
            paused_changes: AtomicU64::new(0),
            holds: Mutex::new(HashSet::new()),
            work: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
        });
        let engine = Engine {
            shared: shared.clone(),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        tokio::spawn(observer::log_observer(shared.bus.subscribe()));
        let changed = engine.apply(&project)?;
        let mut tasks = Vec::new();
        for number in 0..workers {
            tasks.push(tokio::spawn(worker::work(shared.clone(), number)));
        }
        tasks.push(tokio::spawn(cleaner::clean(shared.clone())));
        tasks.push(tokio::spawn(cleaner::index(shared.clone())));
        tasks.push(tokio::spawn(nodes::keep_alive(shared.clone())));
        tasks.push(tokio::spawn(dependencies::follow(
            shared.clone(),
            shared.bus.subscribe(),
            started,
        )));
        tasks.push(tokio::spawn(notify::notify(
            shared.clone(),
            shared.bus.subscribe(),
        )));
        tasks.push(tokio::spawn(engine.clone().watch()));
        engine.tasks.lock().expect("tasks lock").extend(tasks);
        shared.bus.publish(Event::DispatcherStarted {
            alias: project.system.alias.clone(),
            pipelines: changed.len(),
        });
        Ok(engine)
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.shared.bus.subscribe()
    }

    /// The project as currently running.
    pub fn project(&self) -> Arc<Project> {
        self.shared.project.read().expect("project lock").clone()
    }

    /// The component registry the engine builds pipelines with.
    pub fn registry(&self) -> Arc<Registry> {
        self.shared.registry.clone()
    }

    /// The store the engine works on.
    pub fn store(&self) -> Arc<dyn Store> {
        self.shared.store.clone()
    }

    /// Starts a run of the pipeline now, whatever its schedule.
    pub fn run_now(&self, key: &PipelineKey) -> Result<(), EngineError> {
        let pipelines = self.shared.pipelines.read().expect("pipelines lock");
        let active = pipelines
            .get(key)
            .ok_or_else(|| EngineError::UnknownPipeline(key.clone()))?;
        active.run_now.notify_one();
        Ok(())
    }

    /// Stops pulling, processing and pushing for the pipeline until it is resumed. The flag is
    /// stored, so it survives restarts.
    pub async fn pause(&self, key: &PipelineKey) -> Result<(), EngineError> {
        self.set_paused(key, true).await
    }

    /// Resumes a paused pipeline.
    pub async fn resume(&self, key: &PipelineKey) -> Result<(), EngineError> {
        self.set_paused(key, false).await
    }

    async fn set_paused(&self, key: &PipelineKey, paused: bool) -> Result<(), EngineError> {
        if !self
            .shared
            .pipelines
            .read()
            .expect("pipelines lock")
            .contains_key(key)
        {
            return Err(EngineError::UnknownPipeline(key.clone()));
        }
        self.shared.store.set_paused(key, paused).await?;
        let event = if paused {
            self.shared.pause_here(key);
            Event::PipelinePaused {
                pipeline: key.clone(),
                reason: None,
            }
        } else {
            self.shared.resume_here(key);
            Event::PipelineResumed {
                pipeline: key.clone(),
            }
        };
        self.shared.bus.publish(event);
        if !paused {
            self.shared.work.notify_waiters();
        }
        Ok(())
    }

    /// Tells idle workers that work may be due (after a person retried or replayed something).
    pub fn wake(&self) {
        self.shared.work.notify_waiters();
    }

    /// Whether the pipeline is paused.
    pub fn is_paused(&self, key: &PipelineKey) -> bool {
        self.shared.is_paused(key)
    }

    /// Asks every task to stop: pulling stops at once, workers finish the batch in hand.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Resolves once shutdown was asked for (by [`Engine::shutdown`], from anywhere).
    pub async fn stopping(&self) {
        self.shared.shutdown.cancelled().await;
    }

    /// Waits until every task stopped, at most the grace period after [`Engine::shutdown`];
    /// leases still held then are given back to the queue.
    pub async fn wait(&self) {
        self.shared.shutdown.cancelled().await;
        let mut handles: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        handles.extend(
            self.shared
                .runners
                .lock()
                .expect("runners lock")
                .drain()
                .map(|(_, handle)| handle),
        );
        let all = futures::future::join_all(handles.iter_mut());
        if tokio::time::timeout(self.shared.options.grace, all)
            .await
            .is_err()
        {
            tracing::warn!("grace period over; giving unfinished work back to the queue");
            for handle in &handles {
                handle.abort();
            }
        }
        let leases: Vec<(PassengerId, LeaseToken)> = self
            .shared
            .in_flight
            .lock()
            .expect("in-flight lock")
            .drain()
            .collect();
        if !leases.is_empty()
            && let Err(error) = self.shared.store.release(&leases, chrono::Utc::now()).await
        {
            tracing::error!(%error, "could not give leases back; they return when they expire");
        }
        nodes::leave(self.shared.store.as_ref()).await;
        self.shared.bus.publish(Event::DispatcherStopped);
        // Let the log observer print the last events.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Makes `project` the running one: starts new and changed pipelines, stops removed ones.
    /// Every component is built before anything is swapped, so a build error changes nothing.
    fn apply(&self, project: &Project) -> Result<Vec<String>, EngineError> {
        let current = self
            .shared
            .pipelines
            .read()
            .expect("pipelines lock")
            .clone();
        let mut next = BTreeMap::new();
        let mut started = Vec::new();
        for def in project.pipelines() {
            let key = PipelineKey::new(&def.client, &def.name);
            match current.get(&key) {
                Some(active) if active.def.version == def.version => {
                    next.insert(key, active.clone());
                }
                _ => {
                    let active = build(&self.shared.registry, &project.dir, def)?;
                    let pullers = build_pullers(&self.shared.registry, &project.dir, def)?;
                    started.push((Arc::new(active), pullers));
                }
            }
        }
        let mut changed: Vec<String> = started.iter().map(|(a, _)| a.key.to_string()).collect();
        for (key, active) in &current {
            if !next.contains_key(key) {
                active.stop.cancel();
                if !started.iter().any(|(a, _)| &a.key == key) {
                    changed.push(format!("{key} (removed)"));
                }
            }
        }
        let mut runners = self.shared.runners.lock().expect("runners lock");
        for (active, pullers) in started {
            next.insert(active.key.clone(), active.clone());
            let handle = tokio::spawn(runner::run(self.shared.clone(), active.clone(), pullers));
            runners.insert(active.key.clone(), handle);
        }
        drop(runners);
        *self.shared.pipelines.write().expect("pipelines lock") = next;
        project.secrets.publish();
        *self.shared.project.write().expect("project lock") = Arc::new(project.clone());
        Ok(changed)
    }

    /// Checks the definition files for changes; a valid change is applied, an invalid one is
    /// refused with its errors and the running version stays.
    async fn watch(self) {
        let shared = self.shared.clone();
        let mut last = fingerprint(&shared.project.read().expect("project lock").files);
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(shared.options.reload_every) => {}
            }
            let dir = shared.dir.clone();
            let registry = shared.registry.clone();
            let files = match tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || registrar::read_project(&dir)
            })
            .await
            {
                Ok(Ok(files)) => files,
                Ok(Err(error)) => {
                    tracing::warn!(%error, dir = %dir.display(), "cannot read definitions");
                    continue;
                }
                Err(_) => continue,
            };
            let print = fingerprint(&files);
            if print == last {
                continue;
            }
            last = print;
            let loaded =
                tokio::task::spawn_blocking(move || registrar::load(&dir, &registry)).await;
            let project = match loaded {
                Ok(Ok(project)) => project,
                Ok(Err(LoadError::Invalid(errors))) => {
                    shared.bus.publish(Event::DefinitionsRefused {
                        errors: errors.iter().map(ToString::to_string).collect(),
                    });
                    continue;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot read definitions");
                    continue;
                }
                Err(_) => continue,
            };
            let running = self.project();
            if project.system != running.system {
                tracing::warn!(
                    "ferry.yaml changed: store, listen address and workers apply after a restart"
                );
            }
            if let Err(error) = registrar::record_versions(shared.store.as_ref(), &project).await {
                tracing::error!(%error, "cannot record definition versions; keeping the running version");
                continue;
            }
            match self.apply(&project) {
                Ok(changed) => shared.bus.publish(Event::DefinitionsLoaded { changed }),
                Err(error) => shared.bus.publish(Event::DefinitionsRefused {
                    errors: vec![error.to_string()],
                }),
            }
        }
    }
}

/// Content hashes of a set of files, to notice any change.
fn fingerprint(files: &[ferry_core::config::SourceFile]) -> Vec<(String, String)> {
    files.iter().map(|f| (f.path.clone(), f.hash())).collect()
}

/// Builds every component of one role of a pipeline, each with its name.
fn build_each<T>(
    dir: &Path,
    def: &Pipeline,
    components: &[ComponentDef],
    build: impl Fn(&ComponentDef, &BuildContext) -> Result<T, BuildError>,
) -> Result<Vec<(String, T)>, EngineError> {
    let mut built = Vec::with_capacity(components.len());
    for c in components {
        let ctx = BuildContext {
            project_dir: dir.to_path_buf(),
            client: def.client.clone(),
            pipeline: def.name.clone(),
            component: c.name.clone(),
            pushers: def.pushers.iter().map(|p| p.name.clone()).collect(),
            connections: def.connections.clone(),
            sandbox: def.sandbox.clone(),
        };
        let component = build(c, &ctx).map_err(|error| EngineError::Build {
            pipeline: def.key(),
            component: c.name.clone(),
            error,
        })?;
        built.push((c.name.clone(), component));
    }
    Ok(built)
}

/// Builds a pipeline's processors and pushers.
fn build(registry: &Registry, dir: &Path, def: &Pipeline) -> Result<Active, EngineError> {
    let processors = build_processors(registry, dir, def)?;
    let pushers = build_each(dir, def, &def.pushers, |c, ctx| {
        registry.pusher(&c.type_name, &c.config, ctx)
    })?;
    Ok(Active {
        key: PipelineKey::new(&def.client, &def.name),
        def: def.clone(),
        steps: def.steps(),
        processors,
        pushers,
        run_now: Notify::new(),
        masters_done: Notify::new(),
        stop: CancellationToken::new(),
    })
}

/// Builds a pipeline's processors (for the workers, or for a trial).
fn build_processors(
    registry: &Registry,
    dir: &Path,
    def: &Pipeline,
) -> Result<Vec<NamedProcessor>, EngineError> {
    build_each(dir, def, &def.processors, |c, ctx| {
        registry.processor(&c.type_name, &c.config, ctx)
    })
}

/// Builds a pipeline's pullers; they belong to its pull task alone (or to `ferry peek`).
pub fn build_pullers(
    registry: &Registry,
    dir: &Path,
    def: &Pipeline,
) -> Result<Vec<NamedPuller>, EngineError> {
    build_each(dir, def, &def.pullers, |c, ctx| {
        registry.puller(&c.type_name, &c.config, ctx)
    })
}
