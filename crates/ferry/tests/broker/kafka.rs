//! A private tansu (a Kafka-protocol broker; `scripts/kafka-test-server.sh` builds it), driven
//! through rdkafka.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{Process, free_port, runtime, wait_for_port};
use crate::{Broker, payload};

const PARTITIONS: i32 = 4;

pub struct Kafka {
    address: String,
    /// What a reader of the target has seen (tansu 0.6's watermarks undercount a topic, so
    /// the target is counted by reading it).
    collected: Arc<Mutex<Vec<String>>>,
    /// Set to stop the reader.
    reading: Arc<AtomicBool>,
    /// The private broker; `None` for the machine's shared one.
    process: Option<Process>,
    runtime: tokio::runtime::Runtime,
}

impl Kafka {
    /// Starts tansu on a port of its own, its storage in memory.
    pub fn start() -> Kafka {
        let cache = std::env::var("FERRY_TEST_CACHE").unwrap_or_else(|_| {
            format!("{}/.cache/ferry-test", std::env::var("HOME").expect("HOME"))
        });
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(format!("{cache}/tansu/bin/tansu"))
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu (scripts/kafka-test-server.sh builds it)");
        let process = Process(child);
        wait_for_port(port, "tansu");
        Kafka {
            address: format!("127.0.0.1:{port}"),
            collected: Arc::default(),
            reading: Arc::default(),
            process: Some(process),
            runtime: runtime(),
        }
    }

    /// The test broker of the machine (`FERRY_TEST_KAFKA`, started by scripts/test.sh).
    pub fn shared() -> Kafka {
        Kafka {
            address: std::env::var("FERRY_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into()),
            collected: Arc::default(),
            reading: Arc::default(),
            process: None,
            runtime: runtime(),
        }
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.address);
        config
    }

    /// Writes `messages` to partition 0 of `topic`, in order.
    pub fn produce_raw(&mut self, topic: &str, messages: &[Vec<u8>]) {
        let producer: FutureProducer = self.config().create().expect("producer");
        self.runtime.block_on(async {
            for message in messages {
                let record: FutureRecord<'_, (), _> =
                    FutureRecord::to(topic).payload(message).partition(0);
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(error, _)| error)
                    .expect("produced");
            }
        });
    }

    fn consumer(&self) -> BaseConsumer {
        self.config()
            .set("group.id", crate::support::unique("reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer")
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.reading.store(false, Ordering::SeqCst);
    }
}

impl Broker for Kafka {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn connection(&self) -> String {
        format!("brokers: \"{}\"", self.address)
    }

    fn puller(&self, source: &str) -> String {
        format!("topics: [{source}], max_wait: 1s")
    }

    fn pusher(&self, target: &str) -> String {
        format!("topic: {target}")
    }

    fn prepare(&mut self, source: &str, target: &str) {
        let admin: AdminClient<_> = self.config().create().expect("admin");
        let topics = [source, target]
            .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)));
        let results = self
            .runtime
            .block_on(admin.create_topics(&topics, &AdminOptions::new()))
            .expect("create topics");
        for result in results {
            result.expect("topic created");
        }
        let consumer = self.consumer();
        consumer.subscribe(&[target]).expect("subscribe");
        let (collected, reading) = (self.collected.clone(), self.reading.clone());
        reading.store(true, Ordering::SeqCst);
        std::thread::spawn(move || {
            while reading.load(Ordering::SeqCst) {
                // A broker frozen or away: poll again.
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                    let body = message.payload().unwrap_or_default();
                    collected
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(body).into_owned());
                }
            }
        });
    }

    fn produce(&mut self, source: &str, count: usize) {
        // One record batch per message: tansu 0.6 answers a fetch from inside a batch with
        // nothing, so a consumer resuming mid-batch (after a kill) would wait for ever.
        let producer: FutureProducer = self
            .config()
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .expect("producer");
        self.runtime.block_on(async {
            for chunk in (0..count).collect::<Vec<_>>().chunks(10_000) {
                let sends = chunk.iter().map(|&n| {
                    let producer = &producer;
                    async move {
                        let body = payload(n);
                        let key = n.to_string();
                        producer
                            .send(
                                FutureRecord::to(source).payload(&body).key(&key),
                                Duration::from_secs(60),
                            )
                            .await
                            .map_err(|(error, _)| error)
                            .expect("produced");
                    }
                });
                futures::future::join_all(sends).await;
            }
        });
    }

    fn count(&mut self, _target: &str) -> usize {
        self.collected.lock().unwrap().len()
    }

    fn read(&mut self, _target: &str) -> Vec<String> {
        // What is on its way arrives within a moment of the last count.
        std::thread::sleep(Duration::from_secs(2));
        self.collected.lock().unwrap().clone()
    }

    fn exactly_once(&self) -> bool {
        false
    }

    /// tansu keeps what it holds only in memory here, so a restart would lose both topics:
    /// the broker is frozen for 10 s instead (every connection stalls, then it answers again).
    fn restart(&mut self) {
        let process = self.process.as_ref().expect("a private broker");
        process.signal("STOP");
        std::thread::sleep(Duration::from_secs(10));
        process.signal("CONT");
    }
}
