//! The dispatcher on a real SQLite store with real and test components.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferry_core::config::{Project, SourceFile, validate};
use ferry_core::{
    Body, BuildContext, BuildError, Outcome, Passenger, Processor, ProcessorFactory, Pulled,
    Puller, PullerFactory, Pusher, PusherFactory, Registry, Seated, StepError,
};
use ferry_engine::{Engine, Event, Options};
use ferry_store::{PassengerState, PipelineKey, RunStatus, Store};

/// A pusher that panics on every call: a broken component must not stop other pipelines.
struct Panicking;

#[async_trait]
impl Pusher for Panicking {
    async fn push(&self, _: &[&Passenger]) -> Vec<Result<(), StepError>> {
        panic!("this pusher is broken")
    }
}

struct PanickingFactory;

impl PusherFactory for PanickingFactory {
    const TYPE: &'static str = "panic";
    type Config = Empty;

    fn build(&self, _: Empty, _: &BuildContext) -> Result<Box<dyn Pusher>, BuildError> {
        Ok(Box::new(Panicking))
    }
}

/// A pusher that always fails, retryably: passengers stay open.
struct Refusing;

#[async_trait]
impl Pusher for Refusing {
    async fn push(&self, batch: &[&Passenger]) -> Vec<Result<(), StepError>> {
        vec![Err(StepError::retryable("target unavailable")); batch.len()]
    }
}

struct RefusingFactory;

impl PusherFactory for RefusingFactory {
    const TYPE: &'static str = "refuse";
    type Config = Empty;

    fn build(&self, _: Empty, _: &BuildContext) -> Result<Box<dyn Pusher>, BuildError> {
        Ok(Box::new(Refusing))
    }
}

/// A pusher that never finishes in time.
struct Hanging;

#[async_trait]
impl Pusher for Hanging {
    async fn push(&self, batch: &[&Passenger]) -> Vec<Result<(), StepError>> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        vec![Ok(()); batch.len()]
    }
}

struct HangingFactory;

impl PusherFactory for HangingFactory {
    const TYPE: &'static str = "hang";
    type Config = Empty;

    fn build(&self, _: Empty, _: &BuildContext) -> Result<Box<dyn Pusher>, BuildError> {
        Ok(Box::new(Hanging))
    }
}

/// A pusher that keeps what its target "answered" for each passenger, as the `http` pusher
/// does with `keep_response`.
struct Answering;

#[async_trait]
impl Pusher for Answering {
    async fn push(&self, batch: &[&Passenger]) -> Vec<Result<(), StepError>> {
        vec![Ok(()); batch.len()]
    }

    async fn push_keeping(&self, batch: &[&Passenger]) -> Vec<Result<Option<String>, StepError>> {
        batch
            .iter()
            .map(|passenger| Ok(Some(format!("took {}", passenger.external_id))))
            .collect()
    }
}

struct AnsweringFactory;

impl PusherFactory for AnsweringFactory {
    const TYPE: &'static str = "answer";
    type Config = Empty;

    fn build(&self, _: Empty, _: &BuildContext) -> Result<Box<dyn Pusher>, BuildError> {
        Ok(Box::new(Answering))
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// A processor that splits every passenger into three children.
struct SplitInThree;

impl Processor for SplitInThree {
    fn process(&self, passenger: Passenger) -> Result<Outcome, StepError> {
        let children = (1..=3)
            .map(|n| {
                let body = Body {
                    media_type: "application/json".into(),
                    data: format!("{{\"part\":{n}}}").into(),
                };
                passenger.child(format!("{}#{n}", passenger.external_id), body)
            })
            .collect();
        Ok(Outcome::Split(children))
    }
}

struct SplitInThreeFactory;

impl ProcessorFactory for SplitInThreeFactory {
    const TYPE: &'static str = "split3";
    type Config = Empty;

    fn build(&self, _: Empty, _: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(SplitInThree))
    }
}

/// A processor that routes passengers whose external id ends in an even digit to the pusher
/// `even`, the others to `odd`.
struct RouteByParity;

impl Processor for RouteByParity {
    fn process(&self, passenger: Passenger) -> Result<Outcome, StepError> {
        let last = passenger
            .external_id
            .chars()
            .last()
            .and_then(|c| c.to_digit(10));
        let to = if last.unwrap_or(1).is_multiple_of(2) {
            "even"
        } else {
            "odd"
        };
        Ok(Outcome::Route {
            passenger,
            pushers: vec![to.to_string()],
        })
    }
}

struct RouteByParityFactory;

impl ProcessorFactory for RouteByParityFactory {
    const TYPE: &'static str = "parity";
    type Config = Empty;

    fn build(&self, _: Empty, _: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(RouteByParity))
    }
}

/// A puller that counts: each run pulls the next two numbers after where it stands, and says
/// where it stands now, so the engine must keep and restore its position.
struct Counting {
    next: u64,
}

#[async_trait]
impl Puller for Counting {
    async fn pull(&mut self, _max: usize) -> Result<Pulled, StepError> {
        let passengers = (self.next..self.next + 2)
            .map(|n| Passenger::pulled("count", n.to_string()))
            .collect();
        self.next += 2;
        Ok(Pulled {
            passengers,
            state: Some(self.next.to_string()),
            ..Pulled::default()
        })
    }

    async fn ack(&mut self, _: &[Seated]) -> Result<(), StepError> {
        Ok(())
    }

    fn restore(&mut self, state: Option<String>) {
        self.next = state.map_or(1, |s| s.parse().unwrap());
    }
}

struct CountingFactory;

impl PullerFactory for CountingFactory {
    const TYPE: &'static str = "count";
    type Config = Empty;

    fn build(&self, _: Empty, _: &BuildContext) -> Result<Box<dyn Puller>, BuildError> {
        // Wrong on purpose until restored: the engine must restore before every run.
        Ok(Box::new(Counting { next: 1000 }))
    }
}

/// A source that is away for its first four pulls (a broker restarting), then gives two
/// passengers once.
struct Away {
    pulls: u32,
}

#[async_trait]
impl Puller for Away {
    async fn pull(&mut self, _max: usize) -> Result<Pulled, StepError> {
        self.pulls += 1;
        match self.pulls {
            ..=4 => Err(StepError::retryable("broker `events`: connection refused")),
            5 => Ok(Pulled {
                passengers: vec![
                    Passenger::pulled("away", "a"),
                    Passenger::pulled("away", "b"),
                ],
                ..Pulled::default()
            }),
            _ => Ok(Pulled::default()),
        }
    }

    async fn ack(&mut self, _: &[Seated]) -> Result<(), StepError> {
        Ok(())
    }
}

struct AwayFactory;

impl PullerFactory for AwayFactory {
    const TYPE: &'static str = "away";
    type Config = Empty;

    fn build(&self, _: Empty, _: &BuildContext) -> Result<Box<dyn Puller>, BuildError> {
        Ok(Box::new(Away { pulls: 0 }))
    }
}

fn registry() -> Arc<Registry> {
    let mut registry = ferry_connectors::registry();
    registry.pullers.push(Box::new(CountingFactory));
    registry.pullers.push(Box::new(AwayFactory));
    registry.pushers.push(Box::new(PanickingFactory));
    registry.pushers.push(Box::new(RefusingFactory));
    registry.pushers.push(Box::new(HangingFactory));
    registry.pushers.push(Box::new(AnsweringFactory));
    registry.processors.push(Box::new(SplitInThreeFactory));
    registry.processors.push(Box::new(RouteByParityFactory));
    registry.processors.push(Box::new(SlowFactory));
    Arc::new(registry)
}

fn options() -> Options {
    Options {
        idle_poll: Duration::from_millis(50),
        reload_every: Duration::from_millis(200),
        continuous_pause: Duration::from_millis(50),
        away_backoff: Duration::from_millis(50),
        grace: Duration::from_secs(5),
        ..Options::default()
    }
}

/// A project in `dir` with client `acme` and the given pipelines.
fn project(dir: &Path, pipelines: &[(&str, &str)]) -> Project {
    let mut files = vec![
        SourceFile {
            path: "ferry.yaml".into(),
            content: "store: sqlite://data/ferry.db\nworkers: 2\n\
                      clients: { acme: { paths: [out, inbox, even, odd] } }\n"
                .into(),
        },
        SourceFile {
            path: "clients/acme/client.yaml".into(),
            content: "queue_life_span: 1h\n".into(),
        },
    ];
    for (name, yaml) in pipelines {
        files.push(SourceFile {
            path: format!("clients/acme/pipelines/{name}.yaml"),
            content: yaml.to_string(),
        });
    }
    let env = |_: &str| None;
    validate(dir, files, &registry(), &env).unwrap_or_else(|errors| {
        panic!("invalid test project: {errors:?}");
    })
}

async fn start(dir: &Path, pipelines: &[(&str, &str)]) -> (Engine, Arc<dyn Store>) {
    let project = project(dir, pipelines);
    let store = ferry_store::open(&project.system.store, dir).await.unwrap();
    let engine = Engine::start(project, store.clone(), registry(), options())
        .await
        .unwrap();
    (engine, store)
}

async fn count(store: &dyn Store, pipeline: &str, state: PassengerState) -> u64 {
    let counts = store.counts(Some("acme")).await.unwrap();
    counts
        .get(&PipelineKey::new("acme", pipeline))
        .and_then(|c| c.get(&state))
        .copied()
        .unwrap_or(0)
}

async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn generate(count: u64, pusher: &str) -> String {
    format!(
        "schedule: continuous\npullers:\n  - type: generate\n    count: {count}\npushers:\n  - {pusher}\nretry: {{ max_attempts: 2, backoff: 100ms, max_backoff: 100ms }}\nbatch_size: 20\n"
    )
}

#[tokio::test]
async fn a_panicking_pipeline_never_stops_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let good = generate(100, "{ type: file, path: out }");
    let bad = generate(100, "{ type: panic }");
    let (engine, store) = start(dir.path(), &[("good", &good), ("bad", &bad)]).await;

    eventually(
        "the good pipeline complete",
        Duration::from_secs(20),
        async || count(store.as_ref(), "good", PassengerState::Complete).await == 100,
    )
    .await;
    eventually(
        "the bad pipeline's passengers dead",
        Duration::from_secs(20),
        async || count(store.as_ref(), "bad", PassengerState::Dead).await == 100,
    )
    .await;
    let dead = store
        .list(
            &ferry_store::QueueFilter {
                pipeline: Some("bad".into()),
                ..Default::default()
            },
            None,
            1,
        )
        .await
        .unwrap();
    let detail = store.get(dead[0].id).await.unwrap();
    assert!(
        detail.attempts[0]
            .error
            .contains("pusher panicked: this pusher is broken"),
        "{:?}",
        detail.attempts
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        100
    );
    engine.shutdown();
    engine.wait().await;
}

#[tokio::test]
async fn what_a_pusher_keeps_is_recorded_with_its_step() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = generate(5, "{ type: answer }").replace(
        "pushers:\n  - { type: answer }",
        "pushers:\n  - { type: file, path: out }\n  - { type: answer }",
    );
    let (engine, store) = start(dir.path(), &[("kept", &pipeline)]).await;
    eventually(
        "the passengers complete",
        Duration::from_secs(20),
        async || count(store.as_ref(), "kept", PassengerState::Complete).await == 5,
    )
    .await;
    let listed = store
        .list(&ferry_store::QueueFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 5);
    for entry in listed {
        let detail = store.get(entry.id).await.unwrap();
        let results: Vec<Option<String>> = detail
            .steps
            .iter()
            .map(|step| step.result.clone())
            .collect();
        let took = format!("took {}", entry.external_id);
        assert_eq!(
            results,
            [None, Some(took)],
            "file keeps nothing, answer keeps its answer"
        );
    }
    engine.shutdown();
    engine.wait().await;
}

#[tokio::test]
async fn pulling_stops_at_the_queue_limit() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!("{}queue_limit: 50\n", generate(1000, "{ type: refuse }"))
        .replace("max_attempts: 2", "max_attempts: 100")
        .replace(
            "backoff: 100ms, max_backoff: 100ms",
            "backoff: 1h, max_backoff: 1h",
        );
    let (engine, store) = start(dir.path(), &[("limited", &pipeline)]).await;
    let key = PipelineKey::new("acme", "limited");

    eventually(
        "the queue filled to its limit",
        Duration::from_secs(20),
        async || store.open_count(&key).await.unwrap() >= 50,
    )
    .await;
    // Several more continuous runs happen; none may pull past the limit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.open_count(&key).await.unwrap(), 50);
    let runs = store.runs(Some(&key), 10).await.unwrap();
    let logs = store.run_logs(runs.last().unwrap().id).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.message.contains("queue limit 50 reached")),
        "{logs:?}"
    );
    engine.shutdown();
    engine.wait().await;
}

#[tokio::test]
async fn paused_pipelines_do_nothing_until_resumed_and_manual_ones_run_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let manual = "schedule: manual\npullers:\n  - type: generate\n    per_pull: 5\npushers:\n  - { type: file, path: out }\n";
    let (engine, store) = start(dir.path(), &[("manual", manual)]).await;
    let key = PipelineKey::new("acme", "manual");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store.runs(Some(&key), 10).await.unwrap().is_empty(),
        "manual must not run on its own"
    );

    engine.pause(&key).await.unwrap();
    engine.run_now(&key).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store.runs(Some(&key), 10).await.unwrap().is_empty(),
        "paused must not run"
    );
    assert_eq!(
        store.paused().await.unwrap(),
        vec![key.clone()],
        "the flag is stored"
    );

    engine.resume(&key).await.unwrap();
    engine.run_now(&key).unwrap();
    eventually(
        "five passengers complete",
        Duration::from_secs(10),
        async || count(store.as_ref(), "manual", PassengerState::Complete).await == 5,
    )
    .await;
    let runs = store.runs(Some(&key), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].counts.seated, 5);

    let unknown = PipelineKey::new("acme", "nope");
    assert!(engine.run_now(&unknown).is_err());
    engine.shutdown();
    engine.wait().await;
}

#[tokio::test]
async fn a_store_error_fails_the_run_visibly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("inbox")).unwrap();
    let pipeline = "schedule: every 200ms\npullers:\n  - { type: file, path: inbox, settle: 0s, after_seat: delete }\npushers:\n  - { type: file, path: out, name_template: \"{metadata.file.name}\" }\n";
    let (engine, store) = start(dir.path(), &[("files", pipeline)]).await;
    let key = PipelineKey::new("acme", "files");

    // Another connection holds SQLite's write lock longer than the store waits for it.
    // The run cannot be recorded in a store that fails, so it is told on the event bus (and
    // so in the log).
    let mut events = engine.subscribe();
    let blocker = rusqlite::Connection::open(dir.path().join("data/ferry.db")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::fs::write(dir.path().join("inbox/a.txt"), "a").unwrap();
    // Every store write waits out the busy timeout (10 s) in turn, and the run's writes queue
    // behind the workers' and the cleaner's in an order the writer's mutex does not fix: 50 s
    // usually, more at times.
    let failure = tokio::time::timeout(Duration::from_secs(150), async {
        loop {
            if let Ok(Event::RunFinished {
                status: RunStatus::Failed,
                error,
                pipeline,
                ..
            }) = events.recv().await
            {
                assert_eq!(pipeline, key);
                return error.unwrap_or_default();
            }
        }
    })
    .await
    .expect("a failed run");
    assert!(failure.contains("cannot seat passengers"), "{failure}");
    assert!(
        dir.path().join("inbox/a.txt").exists(),
        "nothing is acked before it is seated"
    );

    blocker.execute_batch("ROLLBACK").unwrap();
    eventually("the file delivered", Duration::from_secs(30), async || {
        dir.path().join("out/a.txt").exists()
    })
    .await;
    assert!(!dir.path().join("inbox/a.txt").exists());
    assert_eq!(
        count(store.as_ref(), "files", PassengerState::Complete).await,
        1
    );
    engine.shutdown();
    engine.wait().await;
}

#[tokio::test]
async fn an_unreadable_file_fails_alone_and_the_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("a.txt"), "a").unwrap();
    std::fs::write(inbox.join("c.txt"), "c").unwrap();
    // A FIFO matches the pattern but is not a file that can be read.
    let fifo = std::process::Command::new("mkfifo")
        .arg(inbox.join("b.txt"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let pipeline = "schedule: manual\npullers:\n  - { type: file, path: inbox, settle: 0s, after_seat: delete }\npushers:\n  - { type: file, path: out, name_template: \"{metadata.file.name}\" }\n";
    let (engine, store) = start(dir.path(), &[("files", pipeline)]).await;
    let key = PipelineKey::new("acme", "files");

    let versions = store
        .definition_versions("clients/acme/pipelines/files.yaml")
        .await
        .unwrap();
    assert_eq!(
        versions.len(),
        1,
        "the loaded definition is stored with its hash"
    );
    assert_eq!(versions[0].content, pipeline);

    engine.run_now(&key).unwrap();
    eventually(
        "the readable files delivered",
        Duration::from_secs(10),
        async || dir.path().join("out/a.txt").exists() && dir.path().join("out/c.txt").exists(),
    )
    .await;
    let run = store.runs(Some(&key), 1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Partial);
    assert_eq!((run.counts.seated, run.counts.failed), (2, 1));
    let logs = store.run_logs(run.id).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.message.contains("b.txt") && l.message.contains("not a regular file")),
        "{logs:?}"
    );
    assert!(
        inbox.join("b.txt").exists(),
        "what failed stays for the next run"
    );
    engine.shutdown();
    engine.wait().await;
}

#[tokio::test]
async fn shutdown_gives_every_leased_passenger_back() {
    let dir = tempfile::tempdir().unwrap();
    let project = project(dir.path(), &[("stuck", &generate(10, "{ type: hang }"))]);
    let store = ferry_store::open(&project.system.store, dir.path())
        .await
        .unwrap();
    let options = Options {
        grace: Duration::from_millis(300),
        ..options()
    };
    let engine = Engine::start(project, store.clone(), registry(), options)
        .await
        .unwrap();
    eventually("the batch in flight", Duration::from_secs(10), async || {
        count(store.as_ref(), "stuck", PassengerState::InFlight).await == 10
    })
    .await;

    engine.shutdown();
    engine.wait().await;
    // Regression: one lease token covers a whole batch; every passenger of it must come back.
    assert_eq!(
        count(store.as_ref(), "stuck", PassengerState::InFlight).await,
        0
    );
    assert_eq!(
        count(store.as_ref(), "stuck", PassengerState::Pending).await,
        10
    );
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

#[tokio::test]
async fn split_children_travel_on_their_own_and_name_their_parent() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "schedule: continuous\npullers:\n  - { type: generate, count: 10 }\nprocessors:\n  - { type: split3 }\npushers:\n  - { type: file, path: out }\nbatch_size: 4\n";
    let (engine, store) = start(dir.path(), &[("split", pipeline)]).await;
    eventually(
        "40 complete passengers",
        Duration::from_secs(20),
        async || count(store.as_ref(), "split", PassengerState::Complete).await == 40,
    )
    .await;
    engine.shutdown();
    engine.wait().await;

    // Only the children reach the pusher; the parents end at the split.
    assert_eq!(files_in(&dir.path().join("out")), 30);
    let filter = ferry_store::QueueFilter {
        client: Some("acme".into()),
        ..Default::default()
    };
    let entries = store.list(&filter, None, 100).await.unwrap();
    assert_eq!(entries.len(), 40);
    let mut children = 0;
    for entry in &entries {
        let detail = store.get(entry.id).await.unwrap();
        let pusher = detail.steps.last().unwrap();
        match detail.original.parent {
            Some(parent) => {
                children += 1;
                let parent = store.get(parent).await.unwrap();
                assert!(
                    detail
                        .entry
                        .external_id
                        .starts_with(&format!("{}#", parent.entry.external_id))
                );
                assert_eq!(detail.steps[0].state, ferry_store::StepState::Done);
                assert_eq!(pusher.state, ferry_store::StepState::Done);
            }
            None => assert_eq!(pusher.state, ferry_store::StepState::Skipped),
        }
    }
    assert_eq!(children, 30);
}

#[tokio::test]
async fn route_sends_each_passenger_only_to_its_pushers() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "schedule: continuous\npullers:\n  - { type: generate, count: 10 }\nprocessors:\n  - { type: parity }\npushers:\n  - { type: file, name: even, path: even }\n  - { type: file, name: odd, path: odd }\n  - { type: refuse, name: never }\n";
    let (engine, store) = start(dir.path(), &[("route", pipeline)]).await;
    eventually(
        "10 complete passengers",
        Duration::from_secs(20),
        async || count(store.as_ref(), "route", PassengerState::Complete).await == 10,
    )
    .await;
    engine.shutdown();
    engine.wait().await;
    // The refusing pusher was never asked: every passenger went to exactly one file pusher.
    assert_eq!(files_in(&dir.path().join("even")), 5);
    assert_eq!(files_in(&dir.path().join("odd")), 5);
}

// ---- loads: puller positions, dependencies, windows, failure limits ----

#[tokio::test]
async fn a_pullers_position_is_kept_with_what_it_seated_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let counting =
        "schedule: manual\npullers: [{ type: count }]\npushers: [{ type: file, path: out }]\n";
    let key = PipelineKey::new("acme", "counting");
    let (engine, store) = start(dir.path(), &[("counting", counting)]).await;
    for runs in 1..=2 {
        engine.run_now(&key).unwrap();
        eventually("the run", Duration::from_secs(10), async || {
            store.runs(Some(&key), 10).await.unwrap().len() == runs
                && store.runs(Some(&key), 1).await.unwrap()[0]
                    .finished_at
                    .is_some()
        })
        .await;
    }
    assert_eq!(
        store.puller_state(&key, "count").await.unwrap().as_deref(),
        Some("5")
    );
    engine.shutdown();
    engine.wait().await;
    drop(store);

    let (engine, store) = start(dir.path(), &[("counting", counting)]).await;
    engine.run_now(&key).unwrap();
    eventually("six passengers", Duration::from_secs(10), async || {
        count(store.as_ref(), "counting", PassengerState::Complete).await == 6
    })
    .await;
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| n.parse::<u64>().unwrap_or(u64::MAX));
    assert_eq!(
        names,
        ["1", "2", "3", "4", "5", "6"],
        "no number twice, none skipped"
    );
    engine.shutdown();
    engine.wait().await;
}

fn manual_load(extra: &str, pusher: &str) -> String {
    format!(
        "schedule: manual\npullers:\n  - type: generate\n    per_pull: 3\n    count: 3\npushers:\n  - {pusher}\nretry: {{ max_attempts: 1 }}\n{extra}"
    )
}

async fn finished_runs(store: &dyn Store, key: &PipelineKey) -> Vec<ferry_store::RunRecord> {
    let mut runs = store.runs(Some(key), 100).await.unwrap();
    runs.retain(|r| r.finished_at.is_some());
    runs
}

#[tokio::test]
async fn a_slave_runs_once_after_all_its_masters_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let a = manual_load("", "{ type: file, path: out/a }");
    let b = manual_load("", "{ type: file, path: out/b }");
    let c = manual_load("depends_on: [a, b]\n", "{ type: file, path: out/c }");
    let (engine, store) = start(dir.path(), &[("a", &a), ("b", &b), ("c", &c)]).await;
    let key = |name: &str| PipelineKey::new("acme", name);

    engine.run_now(&key("a")).unwrap();
    eventually("a's run", Duration::from_secs(10), async || {
        finished_runs(store.as_ref(), &key("a")).await.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store.runs(Some(&key("c")), 10).await.unwrap().is_empty(),
        "c waits for b too"
    );

    engine.run_now(&key("b")).unwrap();
    eventually("c's run", Duration::from_secs(10), async || {
        finished_runs(store.as_ref(), &key("c")).await.len() == 1
    })
    .await;
    let a_run = &finished_runs(store.as_ref(), &key("a")).await[0];
    let b_run = &finished_runs(store.as_ref(), &key("b")).await[0];
    let c_run = &finished_runs(store.as_ref(), &key("c")).await[0];
    assert_eq!(a_run.status, RunStatus::Succeeded);
    // Masters' runs end when delivered: their files exist before c starts.
    assert!(c_run.started_at >= a_run.finished_at.unwrap());
    assert!(c_run.started_at >= b_run.finished_at.unwrap());
    assert_eq!(files_in(&dir.path().join("out/b")), 3);

    // A new cycle: b alone again does not start c.
    engine.run_now(&key("b")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.runs(Some(&key("c")), 10).await.unwrap().len(), 1);
    engine.shutdown();
    engine.wait().await;
}

/// What another node does reaches this one through the store: a master's run that succeeded
/// there starts the slave here, and a pause set there stops the pipeline here within a second.
#[tokio::test]
async fn masters_runs_and_pauses_of_other_nodes_count_here() {
    let dir = tempfile::tempdir().unwrap();
    let a = manual_load("", "{ type: file, path: out/a }");
    let c = manual_load("depends_on: [a]\n", "{ type: file, path: out/c }");
    let (engine, store) = start(dir.path(), &[("a", &a), ("c", &c)]).await;
    let key = |name: &str| PipelineKey::new("acme", name);
    // The other node: a second handle on the same store.
    let other = ferry_store::open("sqlite://data/ferry.db", dir.path())
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let run = other.start_run(&key("a"), "v1", now).await.unwrap();
    let counts = ferry_store::RunCounts::default();
    other
        .finish_run(run, RunStatus::Succeeded, counts, None, now)
        .await
        .unwrap();
    eventually("c's run", Duration::from_secs(10), async || {
        finished_runs(store.as_ref(), &key("c")).await.len() == 1
    })
    .await;
    assert_eq!(files_in(&dir.path().join("out/c")), 3);
    // The same master run does not start c twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.runs(Some(&key("c")), 10).await.unwrap().len(), 1);

    other.set_paused(&key("a"), true).await.unwrap();
    eventually("the pause", Duration::from_secs(2), async || {
        engine.is_paused(&key("a"))
    })
    .await;
    other.set_paused(&key("a"), false).await.unwrap();
    eventually("the resume", Duration::from_secs(2), async || {
        !engine.is_paused(&key("a"))
    })
    .await;
    engine.shutdown();
    engine.wait().await;
}

#[tokio::test]
async fn undelivered_loads_fail_their_run_pause_at_the_limit_and_hold_back_slaves() {
    let dir = tempfile::tempdir().unwrap();
    let master = "schedule: manual\npullers: [{ type: count }]\npushers: [{ type: refuse }]\nretry: { max_attempts: 1 }\nfailure_limit: 2\n";
    let slave = manual_load("depends_on: [master]\n", "{ type: file, path: out }");
    let (engine, store) = start(dir.path(), &[("master", master), ("slave", &slave)]).await;
    let key = PipelineKey::new("acme", "master");
    for runs in 1..=2 {
        engine.run_now(&key).unwrap();
        eventually("a failed run", Duration::from_secs(10), async || {
            finished_runs(store.as_ref(), &key).await.len() == runs
        })
        .await;
        let run = &finished_runs(store.as_ref(), &key).await[0];
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(
            run.error.as_deref(),
            Some(
                "2 passenger(s) not delivered (2 dead, 0 waiting for a retry, 0 discarded); \
                 see the queue"
            )
        );
    }
    eventually("the pause", Duration::from_secs(5), async || {
        engine.is_paused(&key)
    })
    .await;
    assert_eq!(
        store
            .pause_reasons()
            .await
            .unwrap()
            .get(&key)
            .map(String::as_str),
        Some("paused after 2 failed runs in a row; resume it once the cause is fixed")
    );
    let slave_key = PipelineKey::new("acme", "slave");
    assert!(store.runs(Some(&slave_key), 10).await.unwrap().is_empty());

    // A person's resume clears the flag.
    engine.resume(&key).await.unwrap();
    assert!(store.pause_reasons().await.unwrap().is_empty());
    engine.shutdown();
    engine.wait().await;
}

/// A broker restarting made four runs of a continuous pipeline fail within a second, and the
/// failure limit (3) paused it until a person came. A source that cannot be reached is tried
/// again, less and less often, and the pipeline goes on when it is back.
#[tokio::test]
async fn a_continuous_pipeline_whose_source_is_away_backs_off_instead_of_pausing() {
    let dir = tempfile::tempdir().unwrap();
    let stream =
        "schedule: continuous\npullers: [{ type: away }]\npushers: [{ type: file, path: out }]\n";
    let (engine, store) = start(dir.path(), &[("stream", stream)]).await;
    let key = PipelineKey::new("acme", "stream");
    eventually(
        "both passengers delivered",
        Duration::from_secs(20),
        async || std::fs::read_dir(dir.path().join("out")).map_or(0, Iterator::count) == 2,
    )
    .await;
    assert!(!engine.is_paused(&key));
    let runs = finished_runs(store.as_ref(), &key).await;
    let failed = runs
        .iter()
        .filter(|r| r.status == RunStatus::Failed)
        .count();
    assert_eq!(failed, 4, "{runs:?}");
    engine.shutdown();
    engine.wait().await;
}

#[tokio::test]
async fn schedules_wait_for_the_time_window_but_a_person_does_not() {
    let dir = tempfile::tempdir().unwrap();
    // A window that opened two hours ago and closed one hour ago.
    let now = chrono::Local::now().time();
    let window = format!(
        "{}-{}",
        (now - chrono::Duration::hours(2)).format("%H:%M"),
        (now - chrono::Duration::hours(1)).format("%H:%M")
    );
    let timed = format!(
        "schedule: every 100ms\nwindow: {window}\npullers: [{{ type: generate, per_pull: 1, count: 1 }}]\npushers: [{{ type: file, path: out }}]\n"
    );
    let (engine, store) = start(dir.path(), &[("timed", &timed)]).await;
    let key = PipelineKey::new("acme", "timed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store.runs(Some(&key), 10).await.unwrap().is_empty());
    engine.run_now(&key).unwrap();
    eventually("the run asked for", Duration::from_secs(10), async || {
        finished_runs(store.as_ref(), &key).await.len() == 1
    })
    .await;
    engine.shutdown();
    engine.wait().await;
}

/// Set when [`Slow`] first runs.
static SLOW_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// How many passengers [`Slow`] finished.
static SLOW_DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A processor that works (sleeps, holding its thread) for 1.5 s per passenger, like VRL over
/// a large record batch.
struct Slow;

impl Processor for Slow {
    fn process(&self, passenger: Passenger) -> Result<Outcome, StepError> {
        SLOW_STARTED.store(true, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1500));
        SLOW_DONE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Outcome::Continue(passenger))
    }
}

struct SlowFactory;

impl ProcessorFactory for SlowFactory {
    const TYPE: &'static str = "slow";
    type Config = Empty;

    fn build(&self, _: Empty, _: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(Slow))
    }
}

/// On a runtime of one thread (`tokio::test`'s), a processor run there would stop every other
/// task until it ends; large passengers are processed on the blocking pool, so another
/// pipeline pulls and pushes while the slow one still works on its batch (two passengers,
/// 3 s, one worker; the other worker is free).
#[tokio::test]
async fn a_long_processor_run_never_stalls_other_pipelines() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let slow = "schedule: continuous\npullers:\n  - type: generate\n    count: 2\n    size: 300000\nprocessors:\n  - type: slow\npushers:\n  - { type: file, path: even }\nbatch_size: 2\n";
    let quick = "schedule: manual\npullers:\n  - type: generate\n    per_pull: 5\npushers:\n  - { type: file, path: out }\n";
    let (engine, store) = start(dir.path(), &[("slow", slow), ("quick", quick)]).await;
    eventually(
        "the slow processor starts",
        Duration::from_secs(10),
        async || SLOW_STARTED.load(Ordering::SeqCst),
    )
    .await;
    engine.run_now(&PipelineKey::new("acme", "quick")).unwrap();
    eventually(
        "the quick pipeline delivers",
        Duration::from_secs(20),
        async || count(store.as_ref(), "quick", PassengerState::Complete).await == 5,
    )
    .await;
    assert!(
        SLOW_DONE.load(Ordering::SeqCst) < 2,
        "the quick pipeline was delivered only after the slow batch was processed"
    );
    eventually(
        "the slow pipeline delivers too",
        Duration::from_secs(20),
        async || count(store.as_ref(), "slow", PassengerState::Complete).await == 2,
    )
    .await;
    engine.shutdown();
    engine.wait().await;
}
