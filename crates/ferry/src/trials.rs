//! `ferry test` and `ferry peek`: a pipeline's real processors on passengers in memory, with
//! nothing written to the queue and no puller acked.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ferry_core::config::{Pipeline, Project};
use ferry_core::{Passenger, Registry};
use ferry_engine::testing;
use ferry_engine::trial::{Arrival, Fate};

/// Runs every test file of the project; exit code 1 when a case fails.
pub fn test(dir: &Path, project: &Project, registry: &Registry, update: bool) -> ExitCode {
    let files = match testing::find_tests(dir) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("error: cannot list the tests of {}: {error}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    if files.is_empty() {
        println!(
            "no pipeline tests in {} (they go in clients/<client>/tests/*.yaml)",
            dir.display()
        );
        return ExitCode::SUCCESS;
    }
    let (mut passed, mut failed, mut broken) = (0, 0, 0);
    for path in files {
        let reports = match testing::run_file(dir, project, registry, &path, update) {
            Ok(reports) => reports,
            Err(error) => {
                println!("ERROR  {error}");
                broken += 1;
                continue;
            }
        };
        for report in reports {
            let mark = if report.problems.is_empty() {
                "ok"
            } else {
                "FAILED"
            };
            let updated = if report.updated {
                " (golden file written)"
            } else {
                ""
            };
            println!("{mark:<7}{} › {}{updated}", report.file, report.case);
            for problem in &report.problems {
                for (n, line) in problem.lines().enumerate() {
                    println!(
                        "{}{line}",
                        if n == 0 { "         - " } else { "           " }
                    );
                }
            }
            if report.problems.is_empty() {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!("\n{passed} passed, {failed} failed, {broken} test file(s) unusable");
    if failed + broken > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `CLIENT/PIPELINE`, or `PIPELINE` when only one client has a pipeline of that name.
pub fn find_pipeline<'a>(project: &'a Project, name: &str) -> anyhow::Result<&'a Pipeline> {
    if let Some((client, pipeline)) = name.split_once('/') {
        return project
            .pipeline(client, pipeline)
            .with_context(|| format!("no pipeline `{name}`"));
    }
    let found: Vec<&Pipeline> = project.pipelines().filter(|p| p.name == name).collect();
    match found[..] {
        [pipeline] => Ok(pipeline),
        [] => bail!("no pipeline `{name}`"),
        _ => bail!(
            "several clients have a pipeline `{name}`: {}; name it as CLIENT/PIPELINE",
            found
                .iter()
                .map(|p| p.key().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Pulls once from each puller of the pipeline, never acks, and shows what the processors
/// make of each passenger.
pub async fn peek(
    dir: &Path,
    registry: &Registry,
    pipeline: &Pipeline,
    max: usize,
) -> anyhow::Result<()> {
    println!(
        "peek at {} — nothing is seated or acked; the source is left as it is",
        pipeline.key()
    );
    for peeked in ferry_engine::trial::peek(registry, dir, pipeline, max).await? {
        let name = &peeked.puller;
        if let Some(error) = peeked.error {
            bail!("puller `{name}` failed: {error}");
        }
        println!(
            "\npuller `{name}`: {} passenger(s){}{}",
            peeked.passengers.len(),
            if peeked.failures.is_empty() {
                String::new()
            } else {
                format!(", {} unreadable", peeked.failures.len())
            },
            if peeked.more { ", more waiting" } else { "" }
        );
        for failure in &peeked.failures {
            println!("  ! {}: {}", failure.external_id, failure.error);
        }
        for (passenger, arrivals) in &peeked.passengers {
            println!(
                "\n  {} {}  ({}, {} bytes{})",
                passenger.source_system,
                passenger.external_id,
                passenger.body.media_type,
                passenger.body.data.len(),
                attachments(passenger)
            );
            for arrival in arrivals {
                print_arrival(arrival);
            }
        }
    }
    Ok(())
}

fn attachments(passenger: &Passenger) -> String {
    match passenger.attachments.len() {
        0 => String::new(),
        n => format!(", {n} attachment(s)"),
    }
}

fn print_arrival(arrival: &Arrival) {
    let passenger = &arrival.passenger;
    let fate = match &arrival.fate {
        Fate::Pushed { pushers } if pushers.is_empty() => "→ no pusher (all skipped)".to_string(),
        Fate::Pushed { pushers } => format!("→ {}", pushers.join(", ")),
        Fate::Filtered { processor, reason } => format!("filtered by {processor}: {reason}"),
        Fate::Split {
            processor,
            children,
        } => format!("split by {processor} into {children}"),
        Fate::Failed { processor, error } => format!(
            "{} in {processor}: {error}",
            if error.retryable {
                "fails (would be retried)"
            } else {
                "fails (would be dead)"
            }
        ),
    };
    println!("    {} {fate}", passenger.external_id);
    for (key, value) in &passenger.metadata {
        println!("      {key}: {value}");
    }
    println!("      body: {}", preview(&passenger.body.data));
}

/// At most 200 characters of a body, on one line.
fn preview(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match line.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line,
    }
}
