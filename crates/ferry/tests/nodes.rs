//! Issue 16: several `ferry run` processes (nodes) on one PostgreSQL store share the work. One
//! node pulls a pipeline, every node works its queue; a node killed with `kill -9` loses
//! nothing: its leases come back once its heartbeat is overdue, and the `postgres` table
//! pusher's load records keep every row loaded exactly once. A cron run is started by one node
//! per tick.

mod support;

use std::time::Duration;

use support::{Ferry, Project, Schema, psql, start, unique, until, wait_until};

/// Not the issue's 100,000: the `postgres` table pusher records a load per passenger and
/// serializes the loads into one table, about 450 passengers/s for one-row passengers here,
/// whatever the store (measured with this test at 100,000: 78,792 loaded in 340 s).
const PASSENGERS: u64 = 20_000;

/// The store's URL: the tests' PostgreSQL, in schema `schema`.
fn store_url(schema: &str) -> String {
    let url = support::postgres_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}schema={schema}")
}

#[test]
fn three_nodes_deliver_every_passenger_once_when_one_is_killed() {
    let store = Schema(unique("ferry_nodes"));
    let target = Schema(unique("nodes_target"));
    psql(&format!(
        "CREATE SCHEMA {t}; CREATE TABLE {t}.items (seq bigint, kind text)",
        t = target.0
    ));
    let copy = format!(
        r#"schedule: continuous
pullers:
  - type: generate
    count: {PASSENGERS}
    size: 256
processors:
  - type: decode
    codec: json
    columns:
      - {{ name: seq, type: integer }}
      - {{ name: kind, type: text }}
pushers:
  - type: postgres
    connection: dwh
    table: {}.items
    mode: append
batch_size: 200
# A stream, not a load: each run does not wait for what it seated to be delivered.
run_ends: seated
"#,
        target.0
    );
    let ticks = "schedule: cron \"*/2 * * * * *\"\npullers: [{ type: generate, count: 1 }]\n\
                 pushers: [{ type: blackhole }]\n";
    let project = Project::new(
        "queue_life_span: 1d\n",
        &[("copy", &copy), ("ticks", ticks)],
    );
    project.write(
        "ferry.yaml",
        &format!(
            "system_alias: ferry NODES\nstore: \"{}\"\nworkers: 2\n\
             web: {{ listen: \"127.0.0.1:0\" }}\n{}",
            store_url(&store.0),
            support::GRANTS
        ),
    );
    project.write("connections.yaml", &support::connections());

    // Three processes on the one project and store: no project lock on a shared store.
    let mut nodes: Vec<Ferry> = (0..3).map(|_| start(&project)).collect();
    let loaded = || psql(&format!("SELECT count(*) FROM {}.items", target.0));
    let s = &store.0;
    wait_until(
        &project,
        nodes[0].child(),
        "a fifth of the rows loaded",
        Duration::from_secs(120),
        || {
            let rows: u64 = loaded().parse().unwrap_or(0);
            until(rows >= PASSENGERS / 5, rows)
        },
    );
    // Every node registered; one of them pulls `copy`.
    assert_eq!(psql(&format!("SELECT count(*) FROM {s}.nodes")), "3");
    let puller_pid = psql(&format!(
        "SELECT split_part(n.name, 'pid ', 2) FROM {s}.pull_leases l
         JOIN {s}.nodes n ON n.id = l.node WHERE l.pipeline = 'copy'"
    ));
    // Kill a node that works the queue but does not pull (the `generate` puller starts its
    // sequence afresh on the node that takes it over).
    let victim = nodes
        .iter_mut()
        .position(|node| node.child().id().to_string() != puller_pid)
        .expect("a node that does not pull");
    let victim_pid = nodes[victim].child().id();
    let in_flight = psql(&format!(
        "SELECT count(*) FROM {s}.queue q JOIN {s}.nodes n ON n.id = q.lease_node
         WHERE q.state = 'in_flight' AND n.name LIKE '% pid {victim_pid}'"
    ));
    nodes.remove(victim).kill_9();

    let survivor = nodes[0].child();
    wait_until(
        &project,
        survivor,
        "every row loaded",
        Duration::from_secs(240),
        || {
            let rows: u64 = loaded().parse().unwrap_or(0);
            until(rows >= PASSENGERS, rows)
        },
    );
    // Exactly once: as many rows as passengers, none twice.
    assert_eq!(
        psql(&format!(
            "SELECT count(*), count(DISTINCT seq) FROM {}.items",
            target.0
        )),
        format!("{PASSENGERS}|{PASSENGERS}"),
        "(the killed node held {in_flight} passengers in flight)"
    );
    // The dead node is forgotten, its leases were taken back, nothing is left open.
    wait_until(
        &project,
        nodes[0].child(),
        "the dead node forgotten",
        Duration::from_secs(60),
        || {
            let names = psql(&format!("SELECT string_agg(name, ',') FROM {s}.nodes"));
            until(!names.contains(&format!("pid {victim_pid}")), names)
        },
    );
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM {s}.queue WHERE state IN ('pending', 'in_flight', 'failed', 'dead')"
        )),
        "0"
    );
    // One run per cron tick, whichever node started it.
    let (runs, ticks) = psql(&format!(
        "SELECT count(*) || '|' || count(DISTINCT started_at / 1000) FROM {s}.runs
         WHERE pipeline = 'ticks'"
    ))
    .split_once('|')
    .map(|(r, t)| (r.to_string(), t.to_string()))
    .unwrap();
    assert_eq!(runs, ticks, "a tick ran twice");
    assert!(runs.parse::<u64>().unwrap() >= 3, "{runs} tick runs");
    for node in nodes {
        assert!(node.terminate(), "{}", project.log());
    }
    // A clean stop leaves the store: no node is listed any more.
    assert_eq!(psql(&format!("SELECT count(*) FROM {s}.nodes")), "0");
}
