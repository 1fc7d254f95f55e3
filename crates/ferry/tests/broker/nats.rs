//! A private NATS server with JetStream on a port of its own, its streams on disk, driven
//! through async-nats.

use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use super::{Process, free_port, runtime, wait_for_port};
use crate::{Broker, payload};

pub struct Nats {
    port: u16,
    dir: tempfile::TempDir,
    process: Process,
    runtime: tokio::runtime::Runtime,
}

fn server(port: u16, dir: &std::path::Path) -> Process {
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server");
    wait_for_port(port, "nats-server");
    Process(child)
}

impl Nats {
    pub fn start() -> Nats {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let process = server(port, dir.path());
        Nats {
            port,
            dir,
            process,
            runtime: runtime(),
        }
    }

    fn jetstream(&self) -> jetstream::Context {
        let client = self
            .runtime
            .block_on(async_nats::connect(format!("127.0.0.1:{}", self.port)))
            .expect("connect");
        let _runtime = self.runtime.enter();
        jetstream::new(client)
    }
}

impl Broker for Nats {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn connection(&self) -> String {
        format!("url: nats://127.0.0.1:{}", self.port)
    }

    fn puller(&self, source: &str) -> String {
        format!("stream: {source}, max_wait: 1s, ack_wait: 10s")
    }

    fn pusher(&self, target: &str) -> String {
        format!("subject: {target}.copy")
    }

    fn prepare(&mut self, source: &str, target: &str) {
        let js = self.jetstream();
        self.runtime.block_on(async {
            for name in [source, target] {
                js.create_stream(stream::Config {
                    name: name.to_string(),
                    subjects: vec![format!("{name}.>")],
                    ..Default::default()
                })
                .await
                .expect("stream");
            }
        });
    }

    fn produce(&mut self, source: &str, count: usize) {
        let js = self.jetstream();
        self.runtime.block_on(async {
            for start in (0..count).step_by(1000) {
                let mut acks = Vec::new();
                for n in start..count.min(start + 1000) {
                    let ack = js
                        .publish(format!("{source}.in"), payload(n).into())
                        .await
                        .expect("publish");
                    acks.push(ack);
                }
                for ack in acks {
                    ack.await.expect("stored");
                }
            }
        });
    }

    fn count(&mut self, target: &str) -> usize {
        let js = self.jetstream();
        self.runtime.block_on(async {
            let mut stream = js.get_stream(target).await.expect("stream");
            stream.info().await.expect("info").state.messages as usize
        })
    }

    fn read(&mut self, target: &str) -> Vec<String> {
        let end = self.count(target);
        let js = self.jetstream();
        self.runtime.block_on(async {
            let stream = js.get_stream(target).await.expect("stream");
            let consumer = stream
                .create_consumer(consumer::pull::Config {
                    ack_policy: consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
                .expect("consumer");
            let mut messages = consumer.messages().await.expect("messages");
            let mut payloads = Vec::with_capacity(end);
            while payloads.len() < end {
                let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
                    .await
                    .expect("every message within 30 s")
                    .expect("a message")
                    .expect("readable");
                payloads.push(String::from_utf8_lossy(&message.payload).into_owned());
            }
            payloads
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
