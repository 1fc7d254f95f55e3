//! The machine's RabbitMQ (`FERRY_TEST_AMQP`), driven through lapin. It is shared by every
//! test, so it is never restarted: ferry's connections are closed from the broker's side
//! instead (`rabbitmqctl close_connection`), which ferry must survive the same way.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use super::runtime;
use crate::{Broker, payload};

pub struct Rabbitmq {
    url: String,
    runtime: tokio::runtime::Runtime,
}

impl Rabbitmq {
    pub fn shared() -> Rabbitmq {
        Rabbitmq {
            url: std::env::var("FERRY_TEST_AMQP")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            runtime: runtime(),
        }
    }

    fn channel(&self) -> (Connection, Channel) {
        self.runtime.block_on(async {
            let connection =
                Connection::connect_uri(self.url.parse().expect("url"), Default::default())
                    .await
                    .expect("the test RabbitMQ runs");
            let channel = connection.create_channel().await.expect("channel");
            (connection, channel)
        })
    }

    /// Messages ready in `queue` (a passive declare).
    fn ready(&self, queue: &str) -> usize {
        let (_connection, channel) = self.channel();
        self.runtime.block_on(async {
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let declared = channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .expect("queue");
            declared.message_count() as usize
        })
    }
}

impl Broker for Rabbitmq {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn connection(&self) -> String {
        format!("url: \"{}\"", self.url)
    }

    fn puller(&self, source: &str) -> String {
        format!("queue: {source}, max_wait: 1s")
    }

    fn pusher(&self, target: &str) -> String {
        format!("exchange: \"\", routing_key: {target}")
    }

    fn prepare(&mut self, source: &str, target: &str) {
        let (_connection, channel) = self.channel();
        self.runtime.block_on(async {
            for name in [source, target] {
                let options = QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                };
                channel
                    .queue_declare(name.into(), options, FieldTable::default())
                    .await
                    .expect("queue");
            }
        });
    }

    fn produce(&mut self, source: &str, count: usize) {
        let (_connection, channel) = self.channel();
        self.runtime.block_on(async {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirms");
            for start in (0..count).step_by(1000) {
                let mut confirms = Vec::new();
                for n in start..count.min(start + 1000) {
                    let properties = BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_message_id(format!("{source}-{n}").into());
                    let confirm = channel
                        .basic_publish(
                            "".into(),
                            source.into(),
                            BasicPublishOptions::default(),
                            payload(n).as_bytes(),
                            properties,
                        )
                        .await
                        .expect("publish");
                    confirms.push(confirm);
                }
                for confirm in confirms {
                    confirm.await.expect("confirmed");
                }
            }
        });
    }

    fn count(&mut self, target: &str) -> usize {
        self.ready(target)
    }

    fn read(&mut self, target: &str) -> Vec<String> {
        let end = self.ready(target);
        let (_connection, channel) = self.channel();
        self.runtime.block_on(async {
            let options = BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            };
            let mut consumer = channel
                .basic_consume(
                    target.into(),
                    "e2e-reader".into(),
                    options,
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            let mut payloads = Vec::with_capacity(end);
            while payloads.len() < end {
                let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                    .await
                    .expect("every message within 30 s")
                    .expect("a delivery")
                    .expect("readable");
                payloads.push(String::from_utf8_lossy(&delivery.data).into_owned());
            }
            payloads
        })
    }

    fn exactly_once(&self) -> bool {
        false
    }

    /// Closes ferry's connections (its puller's and its pusher's) from the broker's side.
    fn restart(&mut self) {
        let output = std::process::Command::new("rabbitmqctl")
            .args([
                "list_connections",
                "-q",
                "--no-table-headers",
                "pid",
                "client_properties",
            ])
            .output()
            .expect("rabbitmqctl");
        let listing = String::from_utf8_lossy(&output.stdout);
        let pids: Vec<&str> = listing
            .lines()
            .filter(|line| line.contains("acme/copy"))
            .filter_map(|line| line.split('\t').next())
            .collect();
        assert!(
            !pids.is_empty(),
            "ferry's connections are listed:\n{listing}"
        );
        for pid in pids {
            let status = std::process::Command::new("rabbitmqctl")
                .args(["close_connection", pid, "closed by ferry's test"])
                .output()
                .expect("rabbitmqctl");
            assert!(status.status.success(), "{status:?}");
        }
    }
}
