//! The brokers' own clients, for `bench/brokers.sh`: fill a topic (stream, queue), count what
//! it holds, and copy messages from one to another without any queue between (the limit
//! ferry is measured against). The copy reads a batch, writes it, waits for the broker's
//! confirmations and only then acknowledges the batch it read, as ferry does, but keeps
//! nothing on disk.
//!
//! ```text
//! brokers kafka 127.0.0.1:9092 create TOPIC
//! brokers kafka 127.0.0.1:9092 fill TOPIC COUNT SIZE
//! brokers kafka 127.0.0.1:9092 count TOPIC
//! brokers kafka 127.0.0.1:9092 copy FROM TO COUNT
//! ```

use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Messages per batch of the copy.
const BATCH: usize = 1000;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |index: usize| -> Result<&str, Error> {
        args.get(index)
            .map(String::as_str)
            .ok_or_else(|| "usage: brokers KIND ADDRESS (create TOPIC | fill TOPIC COUNT SIZE | count TOPIC | copy FROM TO COUNT)".into())
    };
    let number = |index: usize| -> Result<usize, Error> { Ok(arg(index)?.parse()?) };
    let (kind, address, command) = (arg(0)?, arg(1)?, arg(2)?);
    let started = Instant::now();
    match (kind, command) {
        ("kafka", "create") => kafka::create(address, arg(3)?).await?,
        ("kafka", "fill") => kafka::fill(address, arg(3)?, number(4)?, number(5)?).await?,
        ("kafka", "count") => println!("{}", kafka::count(address, arg(3)?)?),
        ("kafka", "copy") => kafka::copy(address, arg(3)?, arg(4)?, number(5)?).await?,
        _ => return Err(format!("unknown broker or command: {kind} {command}").into()),
    }
    if command == "fill" || command == "copy" {
        eprintln!("{kind} {command}: {:.2} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// The payload of message `n`: its number, padded to `size` bytes.
fn payload(n: usize, size: usize) -> Vec<u8> {
    let mut body = format!("{n:08} ").into_bytes();
    body.resize(size.max(9), b'x');
    body
}

mod kafka {
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    use super::*;

    fn config(address: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", address);
        config
    }

    fn producer(address: &str) -> Result<FutureProducer, Error> {
        Ok(config(address)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create()?)
    }

    pub async fn create(address: &str, topic: &str) -> Result<(), Error> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = config(address).create()?;
        let topics = [NewTopic::new(topic, 1, TopicReplication::Fixed(1))];
        for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
            result.map_err(|(topic, code)| format!("cannot create {topic}: {code}"))?;
        }
        Ok(())
    }

    pub async fn fill(address: &str, topic: &str, count: usize, size: usize) -> Result<(), Error> {
        let producer = producer(address)?;
        for start in (0..count).step_by(10_000) {
            let sends = (start..count.min(start + 10_000)).map(|n| {
                let producer = &producer;
                async move {
                    let body = payload(n, size);
                    let record: FutureRecord<'_, (), _> = FutureRecord::to(topic).payload(&body);
                    producer
                        .send(record, Duration::from_secs(60))
                        .await
                        .map_err(|(e, _)| e)
                }
            });
            for result in futures::future::join_all(sends).await {
                result?;
            }
        }
        Ok(())
    }

    pub fn count(address: &str, topic: &str) -> Result<i64, Error> {
        let consumer: rdkafka::consumer::BaseConsumer =
            config(address).set("group.id", "brokers-count").create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut total = 0;
        for partition in metadata.topics()[0].partitions() {
            let (low, high) =
                consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
            total += high - low;
        }
        Ok(total)
    }

    pub async fn copy(address: &str, from: &str, to: &str, count: usize) -> Result<(), Error> {
        let consumer: StreamConsumer = config(address)
            .set("group.id", format!("brokers-copy-{from}"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[from])?;
        let producer = producer(address)?;
        let mut copied = 0;
        while copied < count {
            let mut batch = Vec::with_capacity(BATCH);
            let mut next = std::collections::BTreeMap::new();
            while batch.len() < BATCH {
                let wait = if batch.is_empty() { 1000 } else { 5 };
                match tokio::time::timeout(Duration::from_millis(wait), consumer.recv()).await {
                    Err(_) => break,
                    Ok(message) => {
                        let message = message?;
                        next.insert(
                            (message.topic().to_string(), message.partition()),
                            message.offset() + 1,
                        );
                        batch.push(message.payload().unwrap_or_default().to_vec());
                    }
                }
            }
            let sends = batch.iter().map(|body| {
                let record: FutureRecord<'_, (), _> = FutureRecord::to(to).payload(body);
                let producer = &producer;
                async move {
                    producer
                        .send(record, Duration::from_secs(60))
                        .await
                        .map_err(|(e, _)| e)
                }
            });
            for result in futures::future::join_all(sends).await {
                result?;
            }
            if batch.is_empty() {
                continue;
            }
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), offset) in next {
                offsets.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
            }
            consumer.commit(&offsets, CommitMode::Async)?;
            copied += batch.len();
        }
        Ok(())
    }
}
