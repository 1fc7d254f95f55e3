//! Plain-text views of the store for the terminal.

use ferry_core::config::Project;
use ferry_store::{
    LogLevel, PassengerDetail, PassengerState, PipelineKey, QueueEntry, RunStatus, Store,
};

const TIME: &str = "%Y-%m-%d %H:%M:%S";

/// `ferry status`: every pipeline with its queue counts and last run.
pub async fn status(project: &Project, store: &dyn Store) -> anyhow::Result<()> {
    println!(
        "{} — store {}",
        project.system.alias,
        ferry_store::redact_url(&project.system.store)
    );
    let counts = store.counts(None).await?;
    let paused = store.paused().await?;
    let reasons = store.pause_reasons().await?;
    let states = [
        PassengerState::Pending,
        PassengerState::InFlight,
        PassengerState::Failed,
        PassengerState::Dead,
        PassengerState::Complete,
        PassengerState::Filtered,
    ];
    print!("\n{:<32} {:<22}", "PIPELINE", "SCHEDULE");
    for state in states {
        print!(" {:>9}", state.as_str());
    }
    println!("  LAST RUN");
    for pipeline in project.pipelines() {
        let key = PipelineKey::new(&pipeline.client, &pipeline.name);
        let mut schedule = pipeline.schedule.to_string();
        if paused.contains(&key) {
            schedule = format!("PAUSED ({schedule})");
        }
        print!("{:<32} {:<22}", key.to_string(), schedule);
        let by_state = counts.get(&key);
        for state in states {
            let n = by_state.and_then(|c| c.get(&state)).copied().unwrap_or(0);
            print!(" {n:>9}");
        }
        let last = store.runs(Some(&key), 1).await?;
        match last.first() {
            Some(run) => println!(
                "  {} {} (pulled {}, seated {}, duplicates {}, failed {}){}",
                run.started_at.format(TIME),
                run.status.as_str(),
                run.counts.pulled,
                run.counts.seated,
                run.counts.duplicates,
                run.counts.failed,
                run.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            None => println!("  never"),
        }
        // What went wrong in a partial run is in its log, not its error.
        if let Some(run) = last.first().filter(|r| r.status == RunStatus::Partial) {
            let logs = store.run_logs(run.id).await?;
            if let Some(line) = logs.iter().find(|l| l.level == LogLevel::Error) {
                println!("{:<32} ↳ {}", "", line.message);
            }
        }
        if let Some(reason) = reasons.get(&key) {
            println!("{:<32} ↳ {reason}", "");
        }
        for item in store.quarantined(Some(&key), None).await? {
            if item.discarded {
                continue;
            }
            println!(
                "{:<32} ↳ quarantined #{} {}: {}: {} (since {}, seen {} time(s); `ferry queue retry-input|discard-input {}`, or the console's dead letters)",
                "",
                item.id,
                item.puller,
                item.item,
                item.reason,
                item.first_seen.format(TIME),
                item.times,
                item.id
            );
        }
    }
    // Passengers of pipelines that are no longer defined still need attention.
    for (key, by_state) in &counts {
        if project.pipeline(&key.client, &key.pipeline).is_none() {
            let open: u64 = by_state
                .iter()
                .filter(|(s, _)| s.is_open() || **s == PassengerState::Dead)
                .map(|(_, n)| n)
                .sum();
            if open > 0 {
                println!("{key:<32} (no longer defined) {open} passenger(s) open or dead");
            }
        }
    }
    let nodes = store.nodes().await?;
    if !nodes.is_empty() {
        println!(
            "\n{:<6} {:<40} {:<20} LAST HEARTBEAT",
            "NODE", "NAME", "STARTED"
        );
        for node in nodes {
            println!(
                "{:<6} {:<40} {:<20} {}",
                node.id,
                node.name,
                node.started_at.format(TIME).to_string(),
                node.heartbeat_at.format(TIME)
            );
        }
    }
    Ok(())
}

/// `ferry queue list`.
pub fn entries(entries: &[QueueEntry]) {
    if entries.is_empty() {
        println!("no passengers");
        return;
    }
    println!(
        "{:<36}  {:<24} {:<10} {:<19}  EXTERNAL ID / LAST ERROR",
        "ID", "PIPELINE", "STATE", "CREATED"
    );
    for e in entries {
        let mut line = format!(
            "{:<36}  {:<24} {:<10} {:<19}  {}",
            e.id.to_string(),
            format!("{}/{}", e.client, e.pipeline),
            e.state.as_str(),
            e.created_at.format(TIME).to_string(),
            e.external_id
        );
        if let Some(error) = &e.last_error {
            line.push_str(&format!(" — {}", first_line(error, 100)));
        }
        println!("{line}");
    }
    if let Some(last) = entries.last() {
        println!("(next page: --before {})", last.id);
    }
}

/// `ferry queue show`.
pub fn detail(d: &PassengerDetail) {
    let e = &d.entry;
    println!("id             {}", e.id);
    println!("pipeline       {}/{}", e.client, e.pipeline);
    println!("state          {}", e.state);
    println!("source_system  {}", e.source_system);
    println!("external_id    {}", e.external_id);
    println!("created        {}", e.created_at.format(TIME));
    println!("updated        {}", e.updated_at.format(TIME));
    println!("metadata");
    for (key, value) in &d.original.metadata {
        println!("  {key}: {value}");
    }
    println!(
        "body           {} ({} bytes)",
        d.original.body.media_type,
        d.original.body.data.len()
    );
    println!("{}", preview(&d.original.body.data));
    if let Some((metadata, body)) = &d.processed {
        println!(
            "processed body {} ({} bytes)",
            body.media_type,
            body.data.len()
        );
        println!("{}", preview(&body.data));
        println!("processed metadata");
        for (key, value) in metadata {
            println!("  {key}: {value}");
        }
    }
    for a in &d.original.attachments {
        println!(
            "attachment     {} ({}, {} bytes)",
            a.name,
            a.media_type,
            a.content.len()
        );
    }
    println!("steps");
    for s in &d.steps {
        print!(
            "  {:>2} {:<9} {:<20} {:<9}",
            s.index,
            s.kind.as_str(),
            s.name,
            s.state.as_str()
        );
        if s.attempts > 0 {
            print!(" attempts {}", s.attempts);
        }
        if let Some(at) = s.next_try_at {
            print!(" next try {}", at.format(TIME));
        }
        if let Some(at) = s.done_at {
            print!(" at {}", at.format(TIME));
        }
        println!();
    }
    if !d.attempts.is_empty() {
        println!("failed attempts");
        for a in &d.attempts {
            println!(
                "  step {} attempt {} at {}: {}",
                a.step,
                a.attempt,
                a.at.format(TIME),
                a.error
            );
        }
    }
}

/// The start of a body, as text when it is text.
fn preview(data: &[u8]) -> String {
    const MAX: usize = 2000;
    let shown = &data[..data.len().min(MAX)];
    let text = match std::str::from_utf8(shown) {
        Ok(text) => text.to_string(),
        Err(_) => return "  (binary)".into(),
    };
    let mut out: String = text.lines().map(|l| format!("  {l}\n")).collect();
    if data.len() > MAX {
        out.push_str("  …\n");
    }
    out.trim_end().to_string()
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    line.chars().take(max).collect()
}

/// Waits for `work`, which writes the file `to` (as `to.partial` until complete), showing how
/// much it has written once a second on a terminal.
pub async fn progress_of_file<T>(
    work: impl std::future::Future<Output = T>,
    to: &std::path::Path,
) -> T {
    use std::io::{IsTerminal, Write};
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let terminal = std::io::stderr().is_terminal();
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => {
                if terminal {
                    eprint!("\r\x1b[K");
                }
                return done;
            }
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                let written = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
                if terminal {
                    eprint!("\r\x1b[K  {} MB written", written / 1_000_000);
                    let _ = std::io::stderr().flush();
                }
            }
        }
    }
}
