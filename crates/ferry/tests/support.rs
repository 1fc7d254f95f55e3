//! Helpers for tests that run the real `ferry` binary on a temporary project.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// What a test project grants its client `acme`: the folders its pipelines use.
pub const GRANTS: &str = "clients: { acme: { paths: [inbox, outbox, archive, out] } }\n";

/// A temporary project directory.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// A project with one client `acme` and the given client.yaml and pipelines.
    pub fn new(client_yaml: &str, pipelines: &[(&str, &str)]) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = Project { dir };
        project.write(
            "ferry.yaml",
            &format!(
                "system_alias: ferry TEST\nstore: sqlite://data/ferry.db\nworkers: 2\n\
             web: {{ listen: \"127.0.0.1:0\" }}\n{GRANTS}"
            ),
        );
        project.write("clients/acme/client.yaml", client_yaml);
        for (name, yaml) in pipelines {
            project.write(&format!("clients/acme/pipelines/{name}.yaml"), yaml);
        }
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn write(&self, relative: &str, content: &str) {
        let path = self.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    /// Starts `ferry run` on the project, logging to a file in the project. `FERRY_TEST_BIN`
    /// names another binary to run instead (a build from before a fix, to see a test fail).
    pub fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.join("ferry.log"))
            .expect("log file");
        let bin = std::env::var("FERRY_TEST_BIN").unwrap_or_else(|_| BIN.to_string());
        Command::new(bin)
            .arg("run")
            .arg(self.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ferry")
    }

    /// Runs a ferry subcommand to completion.
    pub fn ferry(&self, args: &[&str]) -> Output {
        Command::new(BIN).args(args).output().expect("run ferry")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.join("ferry.log")).unwrap_or_default()
    }
}

/// Names of the regular, non-hidden files in `dir`.
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // What a reader sees: the file pusher writes under a hidden temporary name
            // (`.NAME.ferry-tmp`) and renames when the file is whole.
            .filter(|name| !name.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Polls `check` until it is true or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGTERM and waits for the process; returns whether it exited with 0.
pub fn terminate(mut child: Child) -> bool {
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.success();
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("ferry did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Waits until a passenger of `client/pipeline` is dead and returns its id. On a timeout the
/// message holds the last listing and ferry's log, so a failure on CI says what happened.
pub fn wait_for_dead(project: &Project, pipeline: &str) -> String {
    let dir = project.path().to_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let listed = project.ferry(&["queue", "-C", &dir, "list", "--state", "dead"]);
        let text = stdout(&listed);
        if let Some(line) = text.lines().find(|l| l.contains(pipeline)) {
            return line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        if start.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(project.join("ferry.log")).unwrap_or_default();
            panic!(
                "timed out after 60 s waiting for a dead passenger of {pipeline}\n\
                 listing: {text}{}\nferry.log:\n{log}",
                stderr(&listed)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The PostgreSQL of the tests (`FERRY_TEST_POSTGRES`).
pub fn postgres_url() -> String {
    std::env::var("FERRY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test?sslmode=disable".into())
}

/// The MariaDB of the tests (`FERRY_TEST_MYSQL`).
pub fn mysql_url() -> String {
    std::env::var("FERRY_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// connections.yaml of the test databases: `dwh` (PostgreSQL) and `erp` (MariaDB), granted to
/// `acme`.
pub fn connections() -> String {
    format!(
        "dwh: {{ type: postgres, url: \"{}\", clients: [acme] }}\n\
         erp: {{ type: mysql, url: \"{}\", clients: [acme] }}\n",
        postgres_url(),
        mysql_url()
    )
}

/// Runs SQL on PostgreSQL with `psql`; returns the unaligned output.
pub fn psql(sql: &str) -> String {
    let output = Command::new("psql")
        .args([&postgres_url(), "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        output.status.success(),
        "psql failed: {sql}\n{}",
        stderr(&output)
    );
    stdout(&output).trim().to_string()
}

/// Runs SQL on MariaDB with the `mysql` client; returns the tab-separated output.
pub fn mysql(sql: &str) -> String {
    // mysql://user@host:port/database
    let url = mysql_url();
    let rest = url.trim_start_matches("mysql://");
    let (user, rest) = rest.split_once('@').expect("user in FERRY_TEST_MYSQL");
    let (address, database) = rest.split_once('/').expect("database in FERRY_TEST_MYSQL");
    let (host, port) = address.split_once(':').unwrap_or((address, "3306"));
    let output = Command::new("mysql")
        .args([
            "-h", host, "-P", port, "-u", user, "-N", "-B", database, "-e", sql,
        ])
        .output()
        .expect("mysql");
    assert!(
        output.status.success(),
        "mysql failed: {sql}\n{}",
        stderr(&output)
    );
    stdout(&output).trim().to_string()
}

/// Serves `app` on 127.0.0.1 (a free port) from a thread of its own, for the test's lifetime;
/// returns its base URL, `http://127.0.0.1:PORT`.
pub fn serve(app: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// Drops a PostgreSQL schema, and the load records of its tables, when the test ends, also
/// when it fails.
pub struct Schema(pub String);

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &postgres_url(),
                "-c",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
                "-c",
                &format!("DELETE FROM ferry.loads WHERE target LIKE '{}.%'", self.0),
            ])
            .output();
    }
}

/// Polls `check` until it is `Ok`; on a timeout, or when ferry ended, the panic holds the last
/// answer of `check` (what was seen) and ferry's log.
pub fn wait_until(
    project: &Project,
    child: &mut Child,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let start = Instant::now();
    loop {
        let seen = match check() {
            Ok(()) => return,
            Err(seen) => seen,
        };
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "ferry ended ({status}) while waiting for {what} (seen: {seen})\nferry.log:\n{}",
                project.log()
            );
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what} (seen: {seen})\nferry.log:\n{}",
                project.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `Ok` when `done`, else what was seen.
pub fn until(done: bool, seen: impl std::fmt::Debug) -> Result<(), String> {
    match done {
        true => Ok(()),
        false => Err(format!("{seen:?}")),
    }
}

/// A running `ferry run`; killed when dropped, so a failing test leaves no ferry behind.
pub struct Ferry(Option<Child>);

impl Ferry {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    /// `kill -9`, and reaps it.
    pub fn kill_9(mut self) {
        let mut child = self.0.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// SIGTERM; whether it stopped cleanly.
    pub fn terminate(mut self) -> bool {
        terminate(self.0.take().expect("running"))
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts ferry and waits until it runs (its console listens), so the `ferry` commands of the
/// test do not open the store while it is being made.
pub fn start(project: &Project) -> Ferry {
    let before = project.log().len();
    let mut ferry = Ferry(Some(project.spawn()));
    wait_until(
        project,
        ferry.child(),
        "ferry started",
        Duration::from_secs(30),
        || {
            until(
                project.log()[before..].contains("console on http://"),
                "no console yet",
            )
        },
    );
    ferry
}

/// The queue counts of `acme/<pipeline>`, a continuous one (its schedule one word in `ferry
/// status`): pending, in flight, failed, dead.
pub fn open_counts(project: &Project, pipeline: &str) -> Vec<String> {
    let dir = project.path().to_str().unwrap();
    let status = stdout(&project.ferry(&["status", dir]));
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("acme/{pipeline} ")))
        .unwrap_or("")
        .to_string();
    line.split_whitespace()
        .skip(2)
        .take(4)
        .map(str::to_string)
        .collect()
}
