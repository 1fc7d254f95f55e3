//! The `redis` puller: one consumer of a consumer group on a stream.
//!
//! Each pull takes, in this order: the consumer's own pending entries (re-read from id `0` when
//! the puller starts or reconnects: what a crashed process was given and never acknowledged),
//! entries other consumers have held for `claim_idle` (XAUTOCLAIM), then new entries
//! (XREADGROUP `>`, waiting up to `max_wait`). Nothing is acknowledged before [`Puller::ack`]
//! (XACK of exactly the seated entries).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::{
    Body, BuildContext, BuildError, Passenger, PullFailure, Pulled, Puller, PullerFactory, Seated,
    StepError,
};
use redis::Value;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::config::{PullerSettings, RedisConnection, RedisPullerConfig};
use super::{connect, connection_of, failed};

/// Builds `redis` pullers.
pub struct RedisPullerFactory;

impl PullerFactory for RedisPullerFactory {
    const TYPE: &'static str = "redis";
    type Config = RedisPullerConfig;

    fn build(
        &self,
        config: RedisPullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let connection = connection_of(ctx, "connection", &config.connection)?;
        let settings = PullerSettings::validate(&config, &ctx.client, &ctx.pipeline)?;
        Ok(Box::new(RedisPuller {
            source_system: format!("redis:{}", connection.name),
            connection,
            settings,
            redis: None,
            own_cursor: None,
            claim_cursor: "0-0".into(),
            pending: HashMap::new(),
            position: Position::default(),
            quarantined: HashSet::new(),
            released: Vec::new(),
        }))
    }
}

/// The position kept in the pipeline's state: the highest entry id seated.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Position {
    id: Option<String>,
}

/// An entry as read: its id and its fields (`None`: deleted from the stream while pending).
type Entry = (String, Option<Vec<(Vec<u8>, Vec<u8>)>>);

/// Pulls from one consumer group.
pub struct RedisPuller {
    connection: RedisConnection,
    settings: PullerSettings,
    source_system: String,
    /// Opened on the first pull, kept across runs, dropped after a failure.
    redis: Option<MultiplexedConnection>,
    /// Where the re-read of the own pending list stands; `None` once it is done.
    own_cursor: Option<String>,
    /// Where XAUTOCLAIM goes on from.
    claim_cursor: String,
    /// The entry ids pulled and not yet acknowledged, by external id.
    pending: HashMap<String, String>,
    position: Position,
    /// External ids in quarantine (entries delivered too often): left alone.
    quarantined: HashSet<String>,
    /// Entry ids whose quarantine ended: claimed afresh (XCLAIM … RETRYCOUNT 0) by the next pull.
    released: Vec<String>,
}

#[async_trait]
impl Puller for RedisPuller {
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        let max = max.max(1);
        let result = self.pull_from_server(max).await;
        if result.is_err() {
            self.redis = None;
        }
        result
    }

    async fn ack(&mut self, seated: &[Seated]) -> Result<(), StepError> {
        let ids: Vec<String> = seated
            .iter()
            .filter_map(|seat| self.pending.remove(&seat.external_id))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let Some(redis) = &mut self.redis else {
            warn!(
                count = ids.len(),
                "no connection to acknowledge on; the entries come back"
            );
            return Ok(());
        };
        let acked: redis::RedisResult<i64> = redis::cmd("XACK")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(&ids)
            .query_async(redis)
            .await;
        if let Err(error) = acked {
            // What was seated is safe: the entries stay pending, come back at the next start
            // (or claim), and the queue drops the copies.
            let error = self.connection.scrub(&error.to_string());
            warn!(%error, "XACK failed; the entries come back");
            self.redis = None;
        }
        Ok(())
    }

    fn restore(&mut self, state: Option<String>) {
        self.position = state
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
    }

    fn quarantined(&mut self, items: HashSet<(String, String)>) {
        let now: HashSet<String> = items.into_iter().map(|(id, _)| id).collect();
        // A person ended the quarantine (after a fix): the entry travels again, its delivery
        // count reset so `max_deliveries` does not fail it at once.
        let prefix = format!("{}/", self.settings.stream);
        for external_id in self.quarantined.difference(&now) {
            if let Some(id) = external_id.strip_prefix(&prefix) {
                self.released.push(id.to_string());
            }
        }
        self.quarantined = now;
    }
}

impl RedisPuller {
    async fn pull_from_server(&mut self, max: usize) -> Result<Pulled, StepError> {
        let mut redis = match &self.redis {
            Some(redis) => redis.clone(),
            None => {
                let redis = self.open().await?;
                self.redis = Some(redis.clone());
                // A new connection (a restart, or after a failure): first what this consumer
                // was given and never acknowledged.
                self.own_cursor = Some("0".into());
                redis
            }
        };
        let stream = self.settings.stream.clone();
        let mut entries = Vec::new();
        let mut redelivered = false;
        if !self.released.is_empty() {
            let reply: Value = redis::cmd("XCLAIM")
                .arg(&stream)
                .arg(&self.settings.group)
                .arg(&self.settings.consumer)
                .arg(0)
                .arg(&self.released)
                .arg("RETRYCOUNT")
                .arg(0)
                .query_async(&mut redis)
                .await
                .map_err(|e| failed(&self.connection, "claiming released entries (XCLAIM)", &e))?;
            self.released.clear();
            entries = parse_entries(reply);
            redelivered = !entries.is_empty();
        }
        if entries.is_empty()
            && let Some(cursor) = self.own_cursor.clone()
        {
            let reply = self
                .read_group(&mut redis, max, &cursor, None)
                .await
                .map_err(|e| failed(&self.connection, "re-reading the pending list", &e))?;
            match reply.last() {
                Some((last, _)) => self.own_cursor = Some(last.clone()),
                None => self.own_cursor = None,
            }
            entries = reply;
            redelivered = true;
        }
        if entries.is_empty() {
            entries = self
                .claim(&mut redis, max)
                .await
                .map_err(|e| failed(&self.connection, "claiming idle entries (XAUTOCLAIM)", &e))?;
            redelivered = !entries.is_empty();
        }
        if entries.is_empty() {
            let wait = Some(self.settings.max_wait);
            entries = self
                .read_group(&mut redis, max, ">", wait)
                .await
                .map_err(|e| failed(&self.connection, "reading (XREADGROUP)", &e))?;
        }
        let counts = match redelivered {
            true => self
                .deliveries(&mut redis, &entries)
                .await
                .map_err(|e| failed(&self.connection, "reading delivery counts (XPENDING)", &e))?,
            false => HashMap::new(),
        };

        let mut pulled = Pulled::default();
        let mut gone = Vec::new();
        let count = entries.len();
        for (id, fields) in entries {
            let external_id = format!("{stream}/{id}");
            let Some(fields) = fields else {
                // Trimmed or deleted from the stream while pending: nothing left to deliver.
                gone.push(id);
                continue;
            };
            if self.quarantined.contains(&external_id) {
                continue;
            }
            let delivered = counts.get(&id).copied().unwrap_or(1);
            if delivered > u64::from(self.settings.max_deliveries) {
                pulled.failures.push(PullFailure {
                    external_id,
                    fingerprint: String::new(),
                    error: StepError::permanent(format!(
                        "entry `{id}` of stream `{stream}` was delivered {delivered} times, more \
                         than max_deliveries ({}); it stays in group `{}`'s pending list",
                        self.settings.max_deliveries, self.settings.group
                    )),
                });
                continue;
            }
            match self.passenger(&id, fields) {
                Ok(passenger) => {
                    self.pending.insert(external_id, id.clone());
                    if later(&id, self.position.id.as_deref()) {
                        self.position.id = Some(id.clone());
                    }
                    pulled.passengers.push(passenger);
                }
                Err(error) => pulled.failures.push(PullFailure {
                    external_id,
                    fingerprint: String::new(),
                    error,
                }),
            }
        }
        if !gone.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("XACK")
                .arg(&stream)
                .arg(&self.settings.group)
                .arg(&gone)
                .query_async(&mut redis)
                .await;
        }
        debug!(%stream, group = %self.settings.group, count = pulled.passengers.len(), "pulled");
        // Re-read or claimed entries may be followed by more of either, or by new ones.
        pulled.more = count >= max || (redelivered && count > 0);
        if !pulled.passengers.is_empty() {
            pulled.state = serde_json::to_string(&self.position).ok();
        }
        Ok(pulled)
    }

    /// Connects and makes sure the group exists (created with the stream when missing, from
    /// the seated position when the state has one, else from `start`).
    async fn open(&self) -> Result<MultiplexedConnection, StepError> {
        let mut redis = connect(&self.connection, Some(self.settings.max_wait)).await?;
        let from = self
            .position
            .id
            .clone()
            .unwrap_or_else(|| self.settings.start.clone());
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(&from)
            .arg("MKSTREAM")
            .query_async(&mut redis)
            .await;
        match created {
            Ok(()) => {}
            Err(error) if error.code() == Some("BUSYGROUP") => {}
            Err(error) if error.code() == Some("WRONGTYPE") => {
                return Err(StepError::permanent(format!(
                    "Redis server `{}`: key `{}` is not a stream",
                    self.connection.name, self.settings.stream
                )));
            }
            Err(error) => return Err(failed(&self.connection, "creating the group", &error)),
        }
        Ok(redis)
    }

    /// XREADGROUP of up to `count` entries after `cursor` (`>`: new ones).
    async fn read_group(
        &self,
        redis: &mut MultiplexedConnection,
        count: usize,
        cursor: &str,
        block: Option<std::time::Duration>,
    ) -> redis::RedisResult<Vec<Entry>> {
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(&self.settings.group)
            .arg(&self.settings.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            command.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        command
            .arg("STREAMS")
            .arg(&self.settings.stream)
            .arg(cursor);
        let reply: Value = command.query_async(redis).await?;
        let mut entries = Vec::new();
        // [[stream, [[id, [field, value, …]], …]]]
        if let Value::Array(streams) = reply {
            for stream in streams {
                if let Value::Array(parts) = stream
                    && let Some(list) = parts.into_iter().nth(1)
                {
                    entries.extend(parse_entries(list));
                }
            }
        }
        Ok(entries)
    }

    /// XAUTOCLAIM of up to `count` entries idle for `claim_idle`, going on from the cursor.
    async fn claim(
        &mut self,
        redis: &mut MultiplexedConnection,
        count: usize,
    ) -> redis::RedisResult<Vec<Entry>> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(&self.settings.consumer)
            .arg(self.settings.claim_idle.as_millis() as u64)
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(redis)
            .await?;
        // [next cursor, [[id, fields], …], [deleted ids]]
        let Value::Array(parts) = reply else {
            return Ok(Vec::new());
        };
        let mut parts = parts.into_iter();
        if let Some(next) = parts.next() {
            self.claim_cursor = text(&next);
        }
        let entries = parts.next().map(parse_entries).unwrap_or_default();
        if !entries.is_empty() {
            debug!(count = entries.len(), stream = %self.settings.stream, "claimed idle entries");
        }
        Ok(entries)
    }

    /// How often each entry was delivered (this delivery included), from XPENDING.
    async fn deliveries(
        &self,
        redis: &mut MultiplexedConnection,
        entries: &[Entry],
    ) -> redis::RedisResult<HashMap<String, u64>> {
        let mut pipe = redis::pipe();
        for (id, _) in entries {
            pipe.cmd("XPENDING")
                .arg(&self.settings.stream)
                .arg(&self.settings.group)
                .arg(id)
                .arg(id)
                .arg(1);
        }
        let replies: Vec<Value> = pipe.query_async(redis).await?;
        let mut counts = HashMap::new();
        // Each: [[id, consumer, idle ms, deliveries]]
        for reply in replies {
            if let Value::Array(rows) = reply
                && let Some(Value::Array(row)) = rows.first()
                && let (Some(id), Some(Value::Int(times))) = (row.first(), row.get(3))
            {
                counts.insert(text(id), u64::try_from(*times).unwrap_or(0));
            }
        }
        Ok(counts)
    }

    /// The passenger of one entry: the body field as its body, the others as metadata.
    fn passenger(&self, id: &str, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Passenger, StepError> {
        let stream = &self.settings.stream;
        let mut passenger = Passenger::pulled(&self.source_system, format!("{stream}/{id}"));
        passenger
            .metadata
            .insert("redis.stream".into(), stream.clone());
        passenger.metadata.insert("redis.id".into(), id.to_string());
        let mut body = None;
        let mut content_type = None;
        for (name, value) in fields {
            let name = String::from_utf8_lossy(&name);
            if name == self.settings.body_field {
                body = Some(Bytes::from(value));
                continue;
            }
            let value = String::from_utf8_lossy(&value).into_owned();
            if name == "content_type" {
                content_type = Some(value.clone());
            }
            passenger
                .metadata
                .insert(format!("redis.field.{name}"), value);
        }
        let Some(data) = body else {
            return Err(StepError::permanent(format!(
                "entry `{id}` of stream `{stream}` has no field `{}` (the body)",
                self.settings.body_field
            )));
        };
        let media_type = self
            .settings
            .media_type
            .clone()
            .or(content_type)
            .unwrap_or_else(|| "application/octet-stream".into());
        passenger.body = Body { media_type, data };
        Ok(passenger)
    }
}

/// The entries of `[[id, [field, value, …] | nil], …]`, taking the bytes out of the reply
/// (no copy of the payloads).
fn parse_entries(list: Value) -> Vec<Entry> {
    let mut entries = Vec::new();
    let Value::Array(items) = list else {
        return entries;
    };
    for item in items {
        let Value::Array(pair) = item else { continue };
        let mut pair = pair.into_iter();
        let Some(id) = pair.next() else { continue };
        let fields = match pair.next() {
            Some(Value::Array(flat)) => {
                let mut fields = Vec::with_capacity(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                    fields.push((bytes(name), bytes(value)));
                }
                Some(fields)
            }
            _ => None,
        };
        entries.push((text(&id), fields));
    }
    entries
}

fn bytes(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes,
        Value::SimpleString(text) => text.into_bytes(),
        Value::Int(number) => number.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(text) => text.clone(),
        Value::Int(number) => number.to_string(),
        _ => String::new(),
    }
}

/// Whether stream id `id` comes after `than` (`ms-seq`, compared as numbers).
fn later(id: &str, than: Option<&str>) -> bool {
    let parse = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    match than {
        None => true,
        Some(than) => parse(id) > parse(than),
    }
}
