//! A private Redis on a port of its own, every write on disk before it is answered
//! (`appendfsync always`), driven through the redis crate.

use std::process::{Command, Stdio};

use super::{Process, free_port, runtime, wait_for_port};
use crate::{Broker, payload};

pub struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    process: Process,
    runtime: tokio::runtime::Runtime,
}

fn server(port: u16, dir: &std::path::Path) -> Process {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    wait_for_port(port, "redis-server");
    Process(child)
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let process = server(port, dir.path());
        Redis {
            port,
            dir,
            process,
            runtime: runtime(),
        }
    }

    fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).expect("url");
        self.runtime
            .block_on(client.get_multiplexed_async_connection())
            .expect("connect")
    }
}

impl Broker for Redis {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn connection(&self) -> String {
        format!("url: redis://127.0.0.1:{}", self.port)
    }

    fn puller(&self, source: &str) -> String {
        format!("stream: {source}, max_wait: 1s, claim_idle: 10s")
    }

    fn pusher(&self, target: &str) -> String {
        format!("stream: {target}")
    }

    fn prepare(&mut self, _source: &str, _target: &str) {}

    fn produce(&mut self, source: &str, count: usize) {
        let mut connection = self.connection();
        self.runtime.block_on(async {
            for start in (0..count).step_by(1000) {
                let mut pipe = redis::pipe();
                for n in start..count.min(start + 1000) {
                    pipe.cmd("XADD")
                        .arg(source)
                        .arg("*")
                        .arg("body")
                        .arg(payload(n));
                }
                let _: Vec<String> = pipe.query_async(&mut connection).await.expect("XADD");
            }
        });
    }

    /// 0 while the restarted server loads its data.
    fn count(&mut self, target: &str) -> usize {
        let mut connection = self.connection();
        self.runtime.block_on(async {
            redis::cmd("XLEN")
                .arg(target)
                .query_async(&mut connection)
                .await
                .unwrap_or(0)
        })
    }

    fn read(&mut self, target: &str) -> Vec<String> {
        let mut connection = self.connection();
        self.runtime.block_on(async {
            let mut payloads = Vec::new();
            let mut after = "-".to_string();
            loop {
                let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(target)
                    .arg(&after)
                    .arg("+")
                    // Pages of 1 MB: a page of 10 MB outlasted the client's response
                    // timeout on a slower machine.
                    .arg("COUNT")
                    .arg(1_000)
                    .query_async(&mut connection)
                    .await
                    .expect("XRANGE");
                let Some((last, _)) = page.last() else {
                    return payloads;
                };
                after = format!("({last}");
                for (_, fields) in page {
                    let body = fields.into_iter().find(|(name, _)| name == "body");
                    payloads.push(body.expect("a body field").1);
                }
            }
        })
    }

    fn exactly_once(&self) -> bool {
        true
    }

    fn restart(&mut self) {
        self.process.kill();
        self.process = server(self.port, self.dir.path());
    }
}
