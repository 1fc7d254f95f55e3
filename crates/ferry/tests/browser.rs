//! The console in real headless Chromium: the real `ferry` binary serves a temporary project,
//! chromedriver drives Chromium through it like a person would. Log in, run a pipeline whose
//! push fails, find the dead passenger in the queue, fix the cause, replay it from its page and
//! watch it complete.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `scripts/test.sh` installs them). Without them the test fails: a console
//! test that passes without a browser proves nothing.
//!
//! On the way it takes screenshots of the main pages. With `FERRY_SCREENSHOTS=1` they are
//! written to `docs/screenshots/` for the documentation, otherwise into the temporary project.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use support::{BIN, Project, files, stderr, wait_for};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PASSWORD: &str = "correct horse battery staple";
/// The browser window, screenshots included (they grow downwards to show whole pages).
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 900;

/// Three generated passengers, pushed as files into `outbox`; one attempt, so a failed push is
/// dead at once. The test puts a regular file where the `outbox` directory should be.
const DELIVERIES: &str = r#"
description: generated deliveries written to outbox/
schedule: manual
pullers:
  - type: generate
    count: 3
    size: 120
pushers:
  - type: file
    path: outbox
    name_template: "{external_id}.json"
retry: { max_attempts: 1, backoff: 100ms, max_backoff: 100ms }
"#;

/// JSON files from `inbox` to `archive`; the test drops one that is not JSON, so the run has
/// an error in its log.
const ORDERS: &str = r#"
description: JSON orders from inbox/, decoded, archived in archive/
schedule: manual
pullers:
  - type: file
    path: inbox
    pattern: "*.json"
    settle: 0s
    codec: json
    after_seat: delete
pushers:
  - type: file
    path: archive
    name_template: "{metadata.file.name}"
"#;

/// The processes a test started, killed when it ends, also when it panics.
struct Processes {
    /// Each with its name and whether it leads its own process group.
    children: Vec<(&'static str, Child, bool)>,
    /// Logs to print when the test fails.
    logs: Vec<PathBuf>,
    /// Set at the very end; until then the logs are printed when the processes are killed.
    succeeded: bool,
}

impl Processes {
    fn new(logs: Vec<PathBuf>) -> Self {
        Processes {
            children: Vec::new(),
            logs,
            succeeded: false,
        }
    }

    fn add(&mut self, name: &'static str, child: Child, group: bool) {
        self.children.push((name, child, group));
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (name, child, group) in &mut self.children {
            // chromedriver leads its own process group, so the Chromium it started goes with
            // it. Errors are ignored: the processes may be gone already.
            if *group {
                let group = format!("-{}", child.id());
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &group])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.kill();
            if let Err(error) = child.wait() {
                eprintln!("cannot wait for {name}: {error}");
            }
        }
        if !self.succeeded {
            for log in &self.logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("--- last lines of {}:", log.display());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn wait_for_port(what: &str, port: u16) {
    wait_for(what, Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Where screenshots go: the documentation when asked for, else the temporary project.
fn screenshot_dir(project: &Project) -> PathBuf {
    if std::env::var("FERRY_SCREENSHOTS").is_ok_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
    } else {
        project.join("screenshots")
    }
}

/// The project: client `acme` with administrator `ada`, pipelines `acme/deliveries` and
/// `acme/orders`.
fn project(web_port: u16) -> Project {
    let project = Project::new(
        "queue_life_span: 1h\nlog_life_span: 1d\n",
        &[("deliveries", DELIVERIES), ("orders", ORDERS)],
    );
    project.write(
        "ferry.yaml",
        &format!(
            "system_alias: ferry BROWSER\nstore: sqlite://data/ferry.db\n\
             web: {{ listen: 127.0.0.1:{web_port} }}\nworkers: 2\n{}",
            support::GRANTS
        ),
    );
    // A file where the pusher's directory should be: every push fails until it is removed.
    project.write("outbox", "in the way");
    project.write("inbox/order-1.json", r#"{"order": 1, "amount": 12.5}"#);
    project.write("inbox/order-2.json", r#"{"order": 2, "amount": "#);

    let dir = project.path().to_str().expect("utf-8 path");
    let mut add = Command::new(BIN)
        .args([
            "user",
            "add",
            "-C",
            dir,
            "acme",
            "ada",
            "--role",
            "administrator",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry user add");
    {
        use std::io::Write;
        let mut stdin = add.stdin.take().expect("stdin");
        writeln!(stdin, "{PASSWORD}").expect("write the password");
    }
    let added = add.wait_with_output().expect("ferry user add");
    assert!(added.status.success(), "{}", stderr(&added));

    let validate = project.ferry(&["validate", dir]);
    assert!(validate.status.success(), "{}", stderr(&validate));
    project
}

/// Starts chromedriver in its own process group, logging into the project.
fn chromedriver(project: &Project, port: u16) -> Child {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(project.join("chromedriver.log")).expect("log file");
    Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start chromedriver")
}

/// A Chromium session on the console, with helpers that say what they were doing when they
/// fail.
struct Browser {
    client: Client,
    base: String,
    shots: PathBuf,
}

impl Browser {
    async fn connect(driver_port: u16, web_port: u16, project: &Project) -> anyhow::Result<Self> {
        let profile = project.join("chromium-profile");
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={WIDTH},{HEIGHT}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .context("cannot start a Chromium session through chromedriver")?;
        let shots = screenshot_dir(project);
        std::fs::create_dir_all(&shots)
            .with_context(|| format!("cannot create {}", shots.display()))?;
        Ok(Browser {
            client,
            base: format!("http://127.0.0.1:{web_port}"),
            shots,
        })
    }

    async fn open(&self, path: &str) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .with_context(|| format!("cannot open {url}"))
    }

    /// The path and query of the current page.
    async fn location(&self) -> anyhow::Result<String> {
        let url = self.client.current_url().await?;
        Ok(match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        })
    }

    /// The first element matching `css`; the error names the page.
    async fn find(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => Ok(element),
            Err(error) => {
                let location = self.location().await.unwrap_or_default();
                Err(error).with_context(|| format!("no `{css}` on {location}"))
            }
        }
    }

    async fn text(&self, css: &str) -> anyhow::Result<String> {
        let element = self.find(css).await?;
        Ok(element.text().await?)
    }

    async fn count(&self, css: &str) -> anyhow::Result<usize> {
        Ok(self.client.find_all(Locator::Css(css)).await?.len())
    }

    async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        element
            .click()
            .await
            .with_context(|| format!("cannot click `{css}`"))
    }

    /// Clicks a submit button and waits for the page it leads to.
    async fn submit(&self, css: &str) -> anyhow::Result<()> {
        let old = self.find("html").await?;
        self.click(css).await?;
        self.wait_for_new_page(old, css).await
    }

    /// Waits until `old` (the `html` element of the previous page) is gone: clicking a submit
    /// button returns before the browser has navigated.
    async fn wait_for_new_page(
        &self,
        old: fantoccini::elements::Element,
        after: &str,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        while old.tag_name().await.is_ok() {
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "no new page within 10 s of `{after}`"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        element.clear().await?;
        element
            .send_keys(text)
            .await
            .with_context(|| format!("cannot type into `{css}`"))
    }

    /// A PNG of the whole page: the window grows to the page's height for the picture.
    async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let heights = self
            .client
            .execute(
                "return [document.documentElement.scrollHeight, window.innerHeight];",
                Vec::new(),
            )
            .await?;
        let height = |i: usize| heights[i].as_u64().unwrap_or(0);
        let (page, viewport) = (height(0), height(1));
        let grown = page > viewport;
        if grown {
            let extra = u32::try_from(page - viewport)?;
            self.client.set_window_size(WIDTH, HEIGHT + extra).await?;
        }
        let png = self.client.screenshot().await;
        if grown {
            self.client.set_window_size(WIDTH, HEIGHT).await?;
        }
        let png = png?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Reloads until `check` holds for the page, or `timeout` passes.
    async fn reload_until<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        check: F,
    ) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let start = Instant::now();
        loop {
            if check().await? {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let page = self.text("main").await.unwrap_or_default();
                bail!("timed out after {timeout:?} waiting for {what}; the page shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            self.client.refresh().await?;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_dead_passenger_and_replays_it_in_chromium() -> anyhow::Result<()> {
    for program in [CHROMIUM, CHROMEDRIVER] {
        ensure!(
            Path::new(program).exists(),
            "{program} is missing: this test drives the console in real headless Chromium. \
             Install it with `apt-get install chromium chromium-driver` (scripts/test.sh does)"
        );
    }
    let web_port = free_port();
    let driver_port = free_port();
    let project = project(web_port);
    let mut processes = Processes::new(vec![
        project.join("ferry.log"),
        project.join("chromedriver.log"),
    ]);
    processes.add("ferry", project.spawn(), false);
    processes.add("chromedriver", chromedriver(&project, driver_port), true);
    wait_for_port("the console", web_port);
    wait_for_port("chromedriver", driver_port);

    let browser = Browser::connect(driver_port, web_port, &project).await?;
    let result = walk_through(&browser, &project).await;
    // Ends Chromium cleanly; the guard kills whatever is left.
    let closed = browser.client.close().await;
    result?;
    closed?;
    processes.succeeded = true;
    Ok(())
}

async fn walk_through(browser: &Browser, project: &Project) -> anyhow::Result<()> {
    // Everything but the login page needs a session.
    browser.open("/").await?;
    ensure!(
        browser.location().await? == "/login",
        "/ should redirect to /login, not {}",
        browser.location().await?
    );
    ensure!(browser.text("header").await?.contains("ferry BROWSER"));
    browser.screenshot("login").await?;
    browser.fill("input[name=client]", "acme").await?;
    browser.fill("input[name=user]", "ada").await?;
    browser.fill("input[name=password]", PASSWORD).await?;
    browser.submit("form.login button[type=submit]").await?;
    ensure!(
        browser.location().await? == "/",
        "logging in should lead to the dashboard, not {}",
        browser.location().await?
    );
    let who = browser.text("header .who").await?;
    ensure!(who.contains("ada") && who.contains("acme"), "{who}");

    // The pipeline is manual: run it from the dashboard. Its three pushes fail and, with one
    // attempt allowed, the passengers are dead at once.
    ensure!(
        browser
            .text("table#pipelines")
            .await?
            .contains("acme/deliveries")
    );
    browser
        .submit("form[action='/pipelines/acme/deliveries/run'] button")
        .await?;
    let notice = browser.text("div.notice").await?;
    ensure!(notice.contains("Run started."), "{notice}");
    // And the orders, one of which is not JSON.
    browser.open("/").await?;
    browser
        .submit("form[action='/pipelines/acme/orders/run'] button")
        .await?;

    // The queue, filtered with the form to dead passengers.
    browser.open("/queue").await?;
    browser
        .find("form.filters select[name=state]")
        .await?
        .select_by_value("dead")
        .await
        .context("cannot choose state dead")?;
    browser.submit("form.filters button[type=submit]").await?;
    let location = browser.location().await?;
    ensure!(
        location.starts_with("/queue?") && location.contains("state=dead"),
        "{location}"
    );
    browser
        .reload_until("three dead passengers", Duration::from_secs(20), || async {
            Ok(browser.count("table#queue tbody .badge.dead").await? == 3)
        })
        .await?;
    browser.screenshot("queue").await?;

    browser.open("/").await?;
    // The dead count links to the queue filtered to them.
    let dead_count = browser
        .text("table#pipelines a[href*='pipeline=deliveries'][href*='state=dead']")
        .await?;
    ensure!(dead_count == "3", "the dashboard counts {dead_count} dead");
    browser.screenshot("dashboard").await?;

    // Dead letters group them by pipeline and error. The error names each passenger's file,
    // so here every group holds one passenger.
    browser.open("/dead").await?;
    let dead = browser.text("table#dead tbody").await?;
    ensure!(dead.contains("acme/deliveries"), "{dead}");
    let mut grouped = 0;
    for cell in browser
        .client
        .find_all(Locator::Css("table#dead tbody td.num"))
        .await?
    {
        grouped += cell.text().await?.parse::<u64>()?;
    }
    ensure!(
        grouped == 3,
        "dead letters count {grouped} passengers:\n{dead}"
    );
    browser.screenshot("dead-letters").await?;

    // Runs, and the run of the orders with the decoding error in its log.
    browser.open("/runs").await?;
    browser
        .reload_until("both runs finished", Duration::from_secs(10), || async {
            let runs = browser.text("table#runs tbody").await?;
            Ok(runs.contains("acme/deliveries")
                && runs.contains("acme/orders")
                && browser.count("table#runs tbody .badge.running").await? == 0)
        })
        .await?;
    browser.screenshot("runs").await?;
    browser
        .click("table#runs tbody tr:has(a[href='/pipelines/acme/orders']) a[href^='/runs/']")
        .await?;
    ensure!(browser.location().await?.starts_with("/runs/"));
    let log = browser.text("table#log tbody").await?;
    ensure!(
        browser.count("table#log tbody .badge.error").await? == 1 && log.contains("order-2.json"),
        "the run log should show the file that is not JSON:\n{log}"
    );
    browser.screenshot("run").await?;
    // The good order travelled; the broken one stays where it is.
    ensure!(files(&project.join("archive")) == vec!["order-1.json"]);
    ensure!(files(&project.join("inbox")) == vec!["order-2.json"]);

    // A dead passenger's page, from the queue.
    browser.open("/queue?state=dead").await?;
    browser
        .click("table#queue tbody td:nth-child(4) a[href^='/passengers/']")
        .await?;
    let passenger = browser.location().await?;
    ensure!(passenger.starts_with("/passengers/"), "{passenger}");
    let title = browser.text("main h1").await?;
    let external_id = title
        .strip_prefix("Passenger ")
        .with_context(|| format!("unexpected title {title}"))?
        .to_string();
    ensure!(browser.text("main .badge").await? == "dead");
    ensure!(browser.text("table#steps").await?.contains("dead"));
    browser.screenshot("passenger-dead").await?;

    // Fix the cause, then replay from the passenger's page; the button asks first.
    std::fs::remove_file(project.join("outbox"))?;
    std::fs::create_dir(project.join("outbox"))?;
    let old = browser.find("html").await?;
    browser.click("form[action$='/replay'] button").await?;
    let question = browser
        .client
        .get_alert_text()
        .await
        .context("Replay should ask for confirmation")?;
    ensure!(question.contains("from the start"), "{question}");
    browser.client.accept_alert().await?;
    browser.wait_for_new_page(old, "Replay").await?;
    browser
        .reload_until(
            "the replayed passenger complete",
            Duration::from_secs(20),
            || async { Ok(browser.text("main .badge").await? == "complete") },
        )
        .await?;
    ensure!(
        browser.location().await?.starts_with(&passenger),
        "replay should come back to the passenger"
    );
    let audit = browser.text("main").await?;
    ensure!(
        audit.contains("replay"),
        "the audit should show the replay:\n{audit}"
    );
    browser.screenshot("passenger-complete").await?;

    let delivered = files(&project.join("outbox"));
    ensure!(
        delivered == vec![format!("{external_id}.json")],
        "outbox holds {delivered:?}, expected only {external_id}.json"
    );
    Ok(())
}
