//! The brokers' own clients, for `bench/brokers.sh`: make a source or target, fill it, copy
//! messages from one to another without any queue between (the limit ferry is measured
//! against), and wait until a target holds a number of messages. The copy reads a batch of up
//! to 1000, writes it, waits for the broker's confirmations and only then acknowledges the batch
//! it read, as ferry does, but keeps nothing on disk.
//!
//! ```text
//! brokers KIND ADDRESS create NAME            (mqtt: create NAME CLIENT_ID)
//! brokers KIND ADDRESS fill NAME COUNT SIZE
//! brokers KIND ADDRESS copy FROM TO COUNT
//! brokers KIND ADDRESS wait NAME COUNT
//! brokers KIND ADDRESS count NAME             (not mqtt)
//! brokers KIND ADDRESS delete NAME            (mqtt: delete CLIENT_ID, ends its session)
//! ```
//!
//! KIND and ADDRESS: `kafka 127.0.0.1:9092`, `nats nats://127.0.0.1:4222`,
//! `redis redis://127.0.0.1:6379`, `rabbitmq amqp://guest:guest@127.0.0.1:5672/%2f`,
//! `mqtt 127.0.0.1:1883`.
//!
//! - kafka: a topic of one partition; `wait` counts by consuming from the earliest offset in
//!   a fresh group (tansu's watermarks are wrong); `copy` commits the group `brokers-copy-FROM`.
//! - nats: `create` makes the JetStream stream NAME taking `NAME.>`; `fill` publishes to
//!   `NAME.fill`, `copy` to `TO.copy`, both awaiting each PubAck; `copy` pulls with the
//!   durable consumer `brokers-copy` (ack policy all: one ack per batch); `wait` polls the
//!   stream's message count.
//! - redis: streams; `create` does nothing (XADD makes the stream); `fill` and `copy` XADD
//!   the field `body`; `copy` reads with XREADGROUP in the group `brokers-copy` (made at the
//!   start of the stream) and XACKs each batch; `wait` polls XLEN.
//! - rabbitmq: `create` declares the durable queue NAME; `fill` and `copy` publish persistent
//!   messages with publisher confirms to the default exchange, routing key the queue; `copy`
//!   consumes with prefetch 1000 and acks each batch with one `multiple` ack; `wait` polls the
//!   queue's ready-message count (a passive declare), consuming nothing.
//! - mqtt (3.1.1): `create NAME CLIENT_ID` opens a persistent session for CLIENT_ID subscribed
//!   to NAME at QoS 1 and leaves, so what is published later is queued for it; `copy` uses the
//!   session `brokers-copy` (so `create FROM brokers-copy` must come before `fill`), acks the
//!   deliveries only after the PUBACKs of their copies; `fill` and `copy` publish at QoS 1;
//!   `wait` subscribes in a clean session and counts what arrives, so it must be running
//!   before the copy starts: it prints `ready` on stdout once subscribed. `wait` of the other
//!   brokers print `ready` as well, at once.

use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Messages per batch of the fill and the copy.
const BATCH: usize = 1000;

/// How long `wait` waits at most.
const WAIT_LIMIT: Duration = Duration::from_secs(1200);

/// How often `wait` polls a count.
const POLL: Duration = Duration::from_millis(100);

const USAGE: &str = "usage: brokers KIND ADDRESS (create NAME [CLIENT_ID] | fill NAME COUNT SIZE \
                     | copy FROM TO COUNT | wait NAME COUNT | count NAME | delete NAME)";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |index: usize| -> Result<&str, Error> {
        args.get(index)
            .map(String::as_str)
            .ok_or_else(|| USAGE.into())
    };
    let number = |index: usize| -> Result<usize, Error> { Ok(arg(index)?.parse()?) };
    let (kind, address, command) = (arg(0)?, arg(1)?, arg(2)?);
    let started = Instant::now();
    match (kind, command) {
        ("kafka", "create") => kafka::create(address, arg(3)?).await?,
        ("kafka", "fill") => kafka::fill(address, arg(3)?, number(4)?, number(5)?).await?,
        ("kafka", "count") => println!("{}", kafka::count(address, arg(3)?)?),
        ("kafka", "copy") => kafka::copy(address, arg(3)?, arg(4)?, number(5)?).await?,
        ("kafka", "wait") => kafka::wait(address, arg(3)?, number(4)?).await?,
        ("kafka", "delete") => kafka::delete(address, arg(3)?).await?,

        ("nats", "create") => nats::create(address, arg(3)?).await?,
        ("nats", "fill") => nats::fill(address, arg(3)?, number(4)?, number(5)?).await?,
        ("nats", "count") => println!("{}", nats::count(address, arg(3)?).await?),
        ("nats", "copy") => nats::copy(address, arg(3)?, arg(4)?, number(5)?).await?,
        ("nats", "wait") => nats::wait(address, arg(3)?, number(4)?).await?,
        ("nats", "delete") => nats::delete(address, arg(3)?).await?,

        ("redis", "create") => {}
        ("redis", "fill") => redis_streams::fill(address, arg(3)?, number(4)?, number(5)?).await?,
        ("redis", "count") => println!("{}", redis_streams::count(address, arg(3)?).await?),
        ("redis", "copy") => redis_streams::copy(address, arg(3)?, arg(4)?, number(5)?).await?,
        ("redis", "wait") => redis_streams::wait(address, arg(3)?, number(4)?).await?,
        ("redis", "delete") => redis_streams::delete(address, arg(3)?).await?,

        ("rabbitmq", "create") => rabbitmq::create(address, arg(3)?).await?,
        ("rabbitmq", "fill") => rabbitmq::fill(address, arg(3)?, number(4)?, number(5)?).await?,
        ("rabbitmq", "count") => println!("{}", rabbitmq::count(address, arg(3)?).await?),
        ("rabbitmq", "copy") => rabbitmq::copy(address, arg(3)?, arg(4)?, number(5)?).await?,
        ("rabbitmq", "wait") => rabbitmq::wait(address, arg(3)?, number(4)?).await?,
        ("rabbitmq", "delete") => rabbitmq::delete(address, arg(3)?).await?,

        ("mqtt", "create") => mqtt::create(address, arg(3)?, arg(4)?).await?,
        ("mqtt", "fill") => mqtt::fill(address, arg(3)?, number(4)?, number(5)?).await?,
        ("mqtt", "copy") => mqtt::copy(address, arg(3)?, arg(4)?, number(5)?).await?,
        ("mqtt", "wait") => mqtt::wait(address, arg(3)?, number(4)?).await?,
        ("mqtt", "delete") => mqtt::delete(address, arg(3)?).await?,
        _ => return Err(format!("unknown broker or command: {kind} {command}\n{USAGE}").into()),
    }
    if matches!(command, "fill" | "copy" | "wait") {
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

/// Tells a bench waiting on stdout that `wait` is ready (subscribed, for MQTT).
fn ready() {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}

/// Polls `count` every [`POLL`] until it reaches `target`, for at most [`WAIT_LIMIT`].
async fn poll_until<F, Fut>(target: usize, mut count: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, Error>>,
{
    ready();
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let now = count().await?;
        if now >= target as u64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {now} of {target} messages after {WAIT_LIMIT:?}").into());
        }
        tokio::time::sleep(POLL).await;
    }
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

    /// Counts by consuming `topic` from the earliest offset in a fresh group.
    pub async fn wait(address: &str, topic: &str, count: usize) -> Result<(), Error> {
        let consumer: StreamConsumer = config(address)
            .set(
                "group.id",
                format!("brokers-wait-{}", uuid::Uuid::now_v7().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[topic])?;
        ready();
        let mut seen = 0;
        while seen < count {
            match tokio::time::timeout(WAIT_LIMIT, consumer.recv()).await {
                Ok(message) => {
                    message?;
                    seen += 1;
                }
                Err(_) => return Err(format!("only {seen} of {count} messages").into()),
            }
        }
        Ok(())
    }

    pub async fn delete(address: &str, topic: &str) -> Result<(), Error> {
        use rdkafka::admin::{AdminClient, AdminOptions};
        let admin: AdminClient<_> = config(address).create()?;
        for result in admin.delete_topics(&[topic], &AdminOptions::new()).await? {
            result.map_err(|(topic, code)| format!("cannot delete {topic}: {code}"))?;
        }
        Ok(())
    }
}

mod nats {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
    use async_nats::jetstream::{self, Context, stream};
    use futures::StreamExt;

    use super::*;

    async fn context(address: &str) -> Result<Context, Error> {
        let client = async_nats::connect(address).await?;
        Ok(jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(30))
            .max_ack_inflight(2 * BATCH)
            .build(client))
    }

    /// Publishes `bodies` to `subject` and waits for every PubAck.
    async fn publish(
        context: &Context,
        subject: &str,
        bodies: impl Iterator<Item = bytes::Bytes>,
    ) -> Result<(), Error> {
        let mut waiting = Vec::with_capacity(BATCH);
        for body in bodies {
            waiting.push(context.publish(subject.to_string(), body).await?);
        }
        for ack in waiting {
            ack.await?;
        }
        Ok(())
    }

    pub async fn create(address: &str, name: &str) -> Result<(), Error> {
        context(address)
            .await?
            .create_stream(stream::Config {
                name: name.to_string(),
                subjects: vec![format!("{name}.>")],
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    pub async fn fill(address: &str, name: &str, count: usize, size: usize) -> Result<(), Error> {
        let context = context(address).await?;
        let subject = format!("{name}.fill");
        for start in (0..count).step_by(BATCH) {
            let bodies = (start..count.min(start + BATCH)).map(|n| payload(n, size).into());
            publish(&context, &subject, bodies).await?;
        }
        Ok(())
    }

    pub async fn count(address: &str, name: &str) -> Result<u64, Error> {
        let stream = context(address).await?.get_stream(name).await?;
        Ok(stream.get_info().await?.state.messages)
    }

    pub async fn copy(address: &str, from: &str, to: &str, count: usize) -> Result<(), Error> {
        let context = context(address).await?;
        let consumer: PullConsumer = context
            .get_stream(from)
            .await?
            .get_or_create_consumer(
                "brokers-copy",
                pull::Config {
                    durable_name: Some("brokers-copy".into()),
                    ack_policy: AckPolicy::All,
                    deliver_policy: DeliverPolicy::All,
                    max_ack_pending: 2 * BATCH as i64,
                    ..Default::default()
                },
            )
            .await?;
        let subject = format!("{to}.copy");
        let mut copied = 0;
        while copied < count {
            let mut messages = consumer
                .batch()
                .max_messages(BATCH.min(count - copied))
                .expires(Duration::from_secs(1))
                .messages()
                .await?;
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(message) = messages.next().await {
                batch.push(message?);
            }
            let Some(last) = batch.last() else { continue };
            publish(&context, &subject, batch.iter().map(|m| m.payload.clone())).await?;
            // Ack policy all: acknowledging the last message acknowledges the batch.
            last.double_ack().await?;
            copied += batch.len();
        }
        Ok(())
    }

    pub async fn wait(address: &str, name: &str, count: usize) -> Result<(), Error> {
        let stream = context(address).await?.get_stream(name).await?;
        poll_until(count, || async {
            Ok(stream.get_info().await?.state.messages)
        })
        .await
    }

    pub async fn delete(address: &str, name: &str) -> Result<(), Error> {
        context(address).await?.delete_stream(name).await?;
        Ok(())
    }
}

/// Redis streams (the module is not called `redis`, which would shadow the crate).
mod redis_streams {
    use redis::aio::MultiplexedConnection;
    use redis::streams::StreamReadReply;

    use super::*;

    const GROUP: &str = "brokers-copy";

    async fn connect(address: &str) -> Result<MultiplexedConnection, Error> {
        Ok(redis::Client::open(address)?
            .get_multiplexed_async_connection()
            .await?)
    }

    /// XADDs `bodies` to `stream` in one pipeline, failing if any is refused.
    async fn add<'a>(
        redis: &mut MultiplexedConnection,
        stream: &str,
        bodies: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        for body in bodies {
            pipe.cmd("XADD").arg(stream).arg("*").arg("body").arg(body);
        }
        let _: Vec<String> = pipe.query_async(redis).await?;
        Ok(())
    }

    pub async fn fill(address: &str, name: &str, count: usize, size: usize) -> Result<(), Error> {
        let mut redis = connect(address).await?;
        for start in (0..count).step_by(BATCH) {
            let bodies: Vec<Vec<u8>> = (start..count.min(start + BATCH))
                .map(|n| payload(n, size))
                .collect();
            add(&mut redis, name, bodies.iter().map(Vec::as_slice)).await?;
        }
        Ok(())
    }

    pub async fn count(address: &str, name: &str) -> Result<u64, Error> {
        let mut redis = connect(address).await?;
        Ok(redis::cmd("XLEN").arg(name).query_async(&mut redis).await?)
    }

    pub async fn copy(address: &str, from: &str, to: &str, count: usize) -> Result<(), Error> {
        let mut redis = connect(address).await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(from)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut redis)
            .await;
        if let Err(error) = created
            && error.code() != Some("BUSYGROUP")
        {
            return Err(error.into());
        }
        let mut copied = 0;
        while copied < count {
            let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg("brokers")
                .arg("COUNT")
                .arg(BATCH.min(count - copied))
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(from)
                .arg(">")
                .query_async(&mut redis)
                .await?;
            let entries: Vec<_> = reply
                .into_iter()
                .flat_map(|reply| reply.keys)
                .flat_map(|key| key.ids)
                .collect();
            if entries.is_empty() {
                continue;
            }
            let mut bodies = Vec::with_capacity(entries.len());
            for entry in &entries {
                match entry.map.get("body") {
                    Some(redis::Value::BulkString(body)) => bodies.push(body.as_slice()),
                    _ => return Err(format!("entry {} of {from} has no body", entry.id).into()),
                }
            }
            add(&mut redis, to, bodies.into_iter()).await?;
            let mut ack = redis::cmd("XACK");
            ack.arg(from).arg(GROUP);
            for entry in &entries {
                ack.arg(&entry.id);
            }
            let _: u64 = ack.query_async(&mut redis).await?;
            copied += entries.len();
        }
        Ok(())
    }

    pub async fn wait(address: &str, name: &str, count: usize) -> Result<(), Error> {
        let redis = connect(address).await?;
        poll_until(count, || {
            let mut redis = redis.clone();
            async move { Ok(redis::cmd("XLEN").arg(name).query_async(&mut redis).await?) }
        })
        .await
    }

    pub async fn delete(address: &str, name: &str) -> Result<(), Error> {
        let mut redis = connect(address).await?;
        let _: u64 = redis::cmd("DEL").arg(name).query_async(&mut redis).await?;
        Ok(())
    }
}

mod rabbitmq {
    use futures::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

    use super::*;

    /// A connection (kept alive with it) and a channel in confirm mode.
    async fn channel(address: &str) -> Result<(Connection, Channel), Error> {
        let amqp = Connection::connect(address, ConnectionProperties::default()).await?;
        let channel = amqp.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((amqp, channel))
    }

    /// Publishes `bodies` persistent to the queue `queue` (through the default exchange) and
    /// waits for every confirm.
    async fn publish<'a>(
        channel: &Channel,
        queue: &str,
        bodies: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), Error> {
        let mut waiting = Vec::with_capacity(BATCH);
        for body in bodies {
            let properties = BasicProperties::default().with_delivery_mode(2);
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await?;
            waiting.push(confirm);
        }
        for confirm in waiting {
            match confirm.await? {
                Confirmation::Ack(None) => {}
                other => return Err(format!("publish to {queue} not confirmed: {other:?}").into()),
            }
        }
        Ok(())
    }

    async fn declare(channel: &Channel, name: &str, passive: bool) -> Result<u32, Error> {
        let options = QueueDeclareOptions {
            passive,
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let queue = channel
            .queue_declare(name.into(), options, FieldTable::default())
            .await?;
        Ok(queue.message_count())
    }

    pub async fn create(address: &str, name: &str) -> Result<(), Error> {
        let (_amqp, channel) = channel(address).await?;
        declare(&channel, name, false).await?;
        Ok(())
    }

    pub async fn fill(address: &str, name: &str, count: usize, size: usize) -> Result<(), Error> {
        let (_amqp, channel) = channel(address).await?;
        for start in (0..count).step_by(BATCH) {
            let bodies: Vec<Vec<u8>> = (start..count.min(start + BATCH))
                .map(|n| payload(n, size))
                .collect();
            publish(&channel, name, bodies.iter().map(Vec::as_slice)).await?;
        }
        Ok(())
    }

    pub async fn count(address: &str, name: &str) -> Result<u32, Error> {
        let (_amqp, channel) = channel(address).await?;
        declare(&channel, name, true).await
    }

    pub async fn copy(address: &str, from: &str, to: &str, count: usize) -> Result<(), Error> {
        let (amqp, publisher) = channel(address).await?;
        let reader = amqp.create_channel().await?;
        reader
            .basic_qos(BATCH as u16, BasicQosOptions::default())
            .await?;
        let mut consumer = reader
            .basic_consume(
                from.into(),
                "brokers-copy".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut copied = 0;
        while copied < count {
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH.min(count - copied) {
                let wait = if batch.is_empty() { 1000 } else { 5 };
                match tokio::time::timeout(Duration::from_millis(wait), consumer.next()).await {
                    Err(_) => break,
                    Ok(None) => return Err("the consumer was cancelled".into()),
                    Ok(Some(delivery)) => batch.push(delivery?),
                }
            }
            let Some(last) = batch.last() else { continue };
            publish(&publisher, to, batch.iter().map(|d| d.data.as_slice())).await?;
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
            copied += batch.len();
        }
        // The acks are written before the channel closes.
        reader.close(200, "done".into()).await?;
        Ok(())
    }

    /// Polls the queue's count of ready messages (a passive declare); consumes nothing.
    pub async fn wait(address: &str, name: &str, count: usize) -> Result<(), Error> {
        let (_amqp, channel) = channel(address).await?;
        poll_until(count, || async {
            Ok(declare(&channel, name, true).await?.into())
        })
        .await
    }

    pub async fn delete(address: &str, name: &str) -> Result<(), Error> {
        let (_amqp, channel) = channel(address).await?;
        channel
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    }
}

/// MQTT 3.1.1: one client and its event loop per command; the loop runs in a task that hands
/// the events that matter to the command.
mod mqtt {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS};
    use tokio::sync::mpsc;

    use super::*;

    /// The persistent session `copy` reads through.
    const COPY_CLIENT: &str = "brokers-copy";

    enum Got {
        Publish(Publish),
        PubAck,
        SubAck,
        Disconnected,
        Failed(String),
    }

    struct Link {
        client: AsyncClient,
        events: mpsc::UnboundedReceiver<Got>,
        task: tokio::task::JoinHandle<()>,
    }

    /// Connects as `id` and waits for the CONNACK.
    async fn connect(
        address: &str,
        id: &str,
        clean: bool,
        manual_acks: bool,
    ) -> Result<Link, Error> {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or("the mqtt address is HOST:PORT")?;
        let mut options = MqttOptions::new(id, host, port.parse::<u16>()?);
        options
            .set_clean_session(clean)
            .set_manual_acks(manual_acks)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(BATCH as u16)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 2 * BATCH + 10);
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let (connected, connack) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connected = Some(connected);
            loop {
                let got = match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(connected) = connected.take() {
                            let _ = connected.send(());
                        }
                        continue;
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => Got::Publish(publish),
                    Ok(Event::Incoming(Packet::PubAck(_))) => Got::PubAck,
                    Ok(Event::Incoming(Packet::SubAck(_))) => Got::SubAck,
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Got::Disconnected,
                    Ok(_) => continue,
                    Err(error) => Got::Failed(error.to_string()),
                };
                let end = matches!(got, Got::Disconnected | Got::Failed(_));
                if sender.send(got).is_err() || end {
                    return;
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), connack).await {
            Ok(Ok(())) => {}
            _ => match receiver.recv().await {
                Some(Got::Failed(error)) => return Err(format!("connecting: {error}").into()),
                _ => return Err("connecting: no CONNACK".into()),
            },
        }
        Ok(Link {
            client,
            events: receiver,
            task,
        })
    }

    impl Link {
        /// The next event, failing on a connection error or after `limit`.
        async fn next(&mut self, limit: Duration) -> Result<Option<Got>, Error> {
            match tokio::time::timeout(limit, self.events.recv()).await {
                Err(_) => Ok(None),
                Ok(Some(Got::Failed(error))) => Err(error.into()),
                Ok(Some(got)) => Ok(Some(got)),
                Ok(None) => Err("the connection ended".into()),
            }
        }

        async fn subscribe(&mut self, topic: &str) -> Result<(), Error> {
            self.client.subscribe(topic, QoS::AtLeastOnce).await?;
            loop {
                match self.next(Duration::from_secs(10)).await? {
                    Some(Got::SubAck) => return Ok(()),
                    Some(_) => {}
                    None => return Err("no SUBACK".into()),
                }
            }
        }

        /// Waits for `count` PUBACKs, keeping the deliveries that come meanwhile in `held`.
        async fn await_pubacks(
            &mut self,
            count: usize,
            held: &mut Vec<Publish>,
        ) -> Result<(), Error> {
            let mut acked = 0;
            while acked < count {
                match self.next(Duration::from_secs(60)).await? {
                    Some(Got::PubAck) => acked += 1,
                    Some(Got::Publish(publish)) => held.push(publish),
                    Some(_) => {}
                    None => return Err(format!("{acked} of {count} PUBACKs in 60 s").into()),
                }
            }
            Ok(())
        }

        /// Sends a DISCONNECT after everything asked before it, and waits until it is written.
        async fn disconnect(mut self) -> Result<(), Error> {
            self.client.disconnect().await?;
            while let Some(got) = self.next(Duration::from_secs(10)).await? {
                if let Got::Disconnected = got {
                    break;
                }
            }
            self.task.abort();
            Ok(())
        }
    }

    pub async fn create(address: &str, topic: &str, client_id: &str) -> Result<(), Error> {
        let mut link = connect(address, client_id, false, true).await?;
        link.subscribe(topic).await?;
        link.disconnect().await
    }

    /// Ends the persistent session of `client_id` (a clean connection discards it).
    pub async fn delete(address: &str, client_id: &str) -> Result<(), Error> {
        connect(address, client_id, true, false)
            .await?
            .disconnect()
            .await
    }

    pub async fn fill(address: &str, topic: &str, count: usize, size: usize) -> Result<(), Error> {
        let id = format!("brokers-fill-{}", uuid::Uuid::now_v7().simple());
        let mut link = connect(address, &id, true, false).await?;
        for start in (0..count).step_by(BATCH) {
            let end = count.min(start + BATCH);
            for n in start..end {
                link.client
                    .publish(topic, QoS::AtLeastOnce, false, payload(n, size))
                    .await?;
            }
            link.await_pubacks(end - start, &mut Vec::new()).await?;
        }
        link.disconnect().await
    }

    /// Copies through the persistent session [`COPY_CLIENT`]; the broker hands over at most
    /// its `max_inflight_messages` unacknowledged deliveries at a time, so batches are no
    /// larger than that.
    pub async fn copy(address: &str, from: &str, to: &str, count: usize) -> Result<(), Error> {
        let mut link = connect(address, COPY_CLIENT, false, true).await?;
        link.client.subscribe(from, QoS::AtLeastOnce).await?;
        let mut held = Vec::new();
        let mut copied = 0;
        while copied < count {
            let mut batch = std::mem::take(&mut held);
            while batch.len() < BATCH.min(count - copied) {
                let wait = if batch.is_empty() { 1000 } else { 5 };
                match link.next(Duration::from_millis(wait)).await? {
                    None => break,
                    Some(Got::Publish(publish)) => batch.push(publish),
                    Some(_) => {}
                }
            }
            if batch.is_empty() {
                continue;
            }
            // Deliveries beyond the count stay unacknowledged, in the session.
            batch.truncate(count - copied);
            for publish in &batch {
                link.client
                    .publish_bytes(to, QoS::AtLeastOnce, false, publish.payload.clone())
                    .await?;
            }
            link.await_pubacks(batch.len(), &mut held).await?;
            for publish in &batch {
                link.client.ack(publish).await?;
            }
            copied += batch.len();
        }
        link.disconnect().await
    }

    /// Counts what arrives on `topic` in a clean session; prints `ready` once subscribed.
    pub async fn wait(address: &str, topic: &str, count: usize) -> Result<(), Error> {
        let id = format!("brokers-wait-{}", uuid::Uuid::now_v7().simple());
        let mut link = connect(address, &id, true, false).await?;
        link.subscribe(topic).await?;
        ready();
        let mut seen = 0;
        while seen < count {
            match link.next(WAIT_LIMIT).await? {
                Some(Got::Publish(_)) => seen += 1,
                Some(_) => {}
                None => return Err(format!("only {seen} of {count} messages").into()),
            }
        }
        link.disconnect().await
    }
}
