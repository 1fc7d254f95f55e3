//! How many 500-byte JSON passengers a `remap` that renames and converts a few fields handles
//! per second on one thread (issue 5 asks for at least 200,000). Run:
//!
//! ```sh
//! cargo run --release -p ferry-connectors --example remap_throughput [PASSENGERS] [ROUNDS]
//! ```
//!
//! Each round makes fresh passengers (not timed), then times `process` over all of them,
//! including dropping the results. Prints every round and the best and median rate.

use std::time::Instant;

use ferry_connectors::processors::{RemapConfig, RemapFactory};
use ferry_core::{Body, BuildContext, Outcome, Passenger, Processor, ProcessorFactory};

/// Renames and converts a few fields, as an integration would.
const PROGRAM: &str = r#"
.customer_id = to_int!(.cust)
del(.cust)
.amount = to_float!(.amount_text)
del(.amount_text)
.name = upcase!(.name)
%desk = "sales"
"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);

    let remap = RemapFactory
        .build(
            RemapConfig {
                source: Some(PROGRAM.into()),
                file: None,
                columns: None,
            },
            &BuildContext::default(),
        )
        .expect("the program compiles");

    let size = passengers(1)[0].body.data.len();
    let mut rates = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let batch = passengers(count);
        let start = Instant::now();
        let through = run(&*remap, batch);
        let elapsed = start.elapsed();
        assert_eq!(through, count, "every passenger must come through");
        let rate = count as f64 / elapsed.as_secs_f64();
        println!(
            "round {round}: {count} passengers of {size} bytes in {:.3} s = {rate:.0}/s",
            elapsed.as_secs_f64()
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "remap on one thread: best {:.0} passengers/s, median {:.0} passengers/s",
        rates[rates.len() - 1],
        rates[rates.len() / 2]
    );
}

/// Processes the passengers and returns how many came through changed as expected.
fn run(remap: &dyn Processor, passengers: Vec<Passenger>) -> usize {
    let mut through = 0;
    for passenger in passengers {
        if let Ok(Outcome::Continue(out)) = remap.process(passenger) {
            through += usize::from(out.metadata.contains_key("desk"));
        }
    }
    through
}

/// `count` passengers with 500-byte JSON bodies.
fn passengers(count: usize) -> Vec<Passenger> {
    (0..count)
        .map(|n| {
            let body = format!(
                r#"{{"cust":"{:06}","name":"customer {:06}","amount_text":"{:03}.{:02}","currency":"EUR","lines":[{{"sku":"A-{:06}","qty":3}},{{"sku":"B-{:06}","qty":1}}],"note":"{}"}}"#,
                n % 1_000_000,
                n % 1_000_000,
                n % 1000,
                n % 100,
                n % 1_000_000,
                n % 1_000_000,
                "x".repeat(344)
            );
            Passenger::pulled("bench", format!("p-{n}")).with_body(Body {
                media_type: "application/json".into(),
                data: body.into(),
            })
        })
        .collect()
}
