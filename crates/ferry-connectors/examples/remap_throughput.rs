//! How many 500-byte JSON passengers a `remap` that renames and converts a few fields handles
//! per second on one thread. Run: `cargo run --release -p ferry-connectors --example
//! remap_throughput` (or `bench/processors.sh`).

use std::time::Instant;

use ferry_connectors::processors::{RemapConfig, RemapFactory};
use ferry_core::{Body, BuildContext, Outcome, Passenger, ProcessorFactory};

const PASSENGERS: usize = 200_000;

const PROGRAM: &str = r#"
.customer_id = to_int!(.cust)
del(.cust)
.amount = to_float!(.amount_text)
del(.amount_text)
.name = upcase!(.name)
%desk = "sales"
"#;

fn main() {
    let remap = RemapFactory
        .build(
            RemapConfig {
                source: Some(PROGRAM.into()),
                file: None,
            },
            &BuildContext::default(),
        )
        .expect("the program compiles");
    let passengers: Vec<Passenger> = (0..PASSENGERS)
        .map(|n| {
            let body = format!(
                r#"{{"cust":"{n}","name":"customer {n}","amount_text":"{}.{:02}","currency":"EUR","lines":[{{"sku":"A-{n}","qty":3}},{{"sku":"B-{n}","qty":1}}],"note":"{}"}}"#,
                n % 1000,
                n % 100,
                "x".repeat(366)
            );
            Passenger::pulled("bench", format!("p-{n}")).with_body(Body {
                media_type: "application/json".into(),
                data: body.into(),
            })
        })
        .collect();
    let size = passengers[0].body.data.len();
    let start = Instant::now();
    let mut out = 0;
    for passenger in passengers {
        if let Ok(Outcome::Continue(p)) = remap.process(passenger) {
            out += p.body.data.len().min(1);
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(out, PASSENGERS, "every passenger must come through");
    println!(
        "remap: {PASSENGERS} passengers of {size} bytes in {:.2} s = {:.0} passengers/s on one thread",
        elapsed.as_secs_f64(),
        PASSENGERS as f64 / elapsed.as_secs_f64()
    );
}
