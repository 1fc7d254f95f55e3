//! The `redis` pusher: XADD per passenger through a Lua script that remembers the passenger id,
//! so a re-push after a crash adds nothing. A batch goes as one pipeline; each entry counts as
//! delivered on the script's reply (the entry id, new or remembered).

use async_trait::async_trait;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use super::config::{PusherSettings, RedisConnection, RedisPusherConfig};
use super::{connect, connection_of, failed};

/// Adds an entry unless this passenger id was added within the ttl, in one atomic step.
/// KEYS[1]: the stream; KEYS[2]: `ferry:seen:<stream>:<passenger id>`.
/// ARGV[1]: ttl in seconds; ARGV[2]: MAXLEN or empty; ARGV[3…]: field, value, ….
///
/// The id is remembered only once XADD succeeded (not `SET NX` first): a failed XADD leaves
/// nothing behind, so the passenger can be pushed again once the cause is fixed.
const ADD_ONCE: &str = r"
local seen = redis.call('GET', KEYS[2])
if seen then return seen end
local id
if ARGV[2] ~= '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
end
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
return id
";

/// Server answers that mean "try later" rather than "not this entry".
const TRY_LATER: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "MASTERDOWN",
    "READONLY",
    "OOM",
    "NOSCRIPT",
    "CLUSTERDOWN",
];

/// Builds `redis` pushers.
pub struct RedisPusherFactory;

impl PusherFactory for RedisPusherFactory {
    const TYPE: &'static str = "redis";
    type Config = RedisPusherConfig;

    fn build(
        &self,
        config: RedisPusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        let connection = connection_of(ctx, "connection", &config.connection)?;
        let settings = PusherSettings::validate(&config)?;
        Ok(Box::new(RedisPusher {
            connection,
            settings,
            script: redis::Script::new(ADD_ONCE),
            redis: Mutex::new(None),
        }))
    }
}

/// Adds passengers to streams.
pub struct RedisPusher {
    connection: RedisConnection,
    settings: PusherSettings,
    script: redis::Script,
    /// Opened on the first push (with the script loaded), kept, dropped after a failure.
    redis: Mutex<Option<MultiplexedConnection>>,
}

#[async_trait]
impl Pusher for RedisPusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        if passengers.is_empty() {
            return Vec::new();
        }
        let mut redis = match self.open().await {
            Ok(redis) => redis,
            Err(error) => return vec![Err(error); passengers.len()],
        };
        let ttl = self.settings.dedupe_ttl.as_secs().max(1);
        let max_len = self
            .settings
            .max_len
            .map(|n| n.to_string())
            .unwrap_or_default();
        let mut pipe = redis::pipe();
        let mut streams = Vec::with_capacity(passengers.len());
        for passenger in passengers {
            let stream = self.settings.stream.render_text(passenger);
            let id = passenger.id.to_string();
            let command = pipe
                .cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(2)
                .arg(&stream)
                .arg(format!("ferry:seen:{stream}:{id}"))
                .arg(ttl)
                .arg(&max_len)
                .arg(&self.settings.body_field)
                .arg(passenger.body.data.as_ref())
                .arg("ferry-id")
                .arg(&id)
                .arg("content_type")
                .arg(&passenger.body.media_type);
            for (name, template) in &self.settings.fields {
                command.arg(name).arg(template.render_text(passenger));
            }
            streams.push(stream);
        }
        let replies: Vec<redis::RedisResult<redis::Value>> =
            match pipe.ignore_errors().query_async(&mut redis).await {
                Ok(replies) => replies,
                Err(error) => {
                    *self.redis.lock().await = None;
                    let error = failed(&self.connection, "adding entries", &error);
                    return vec![Err(error); passengers.len()];
                }
            };
        let mut results = Vec::with_capacity(passengers.len());
        let mut broken = false;
        for (reply, stream) in replies.into_iter().zip(&streams) {
            results.push(match reply {
                Ok(_) => Ok(()),
                Err(error) => {
                    let error = self.classify(stream, &error);
                    broken |= error.retryable;
                    Err(error)
                }
            });
        }
        if broken {
            *self.redis.lock().await = None;
        }
        results
    }
}

impl RedisPusher {
    /// The kept connection, or a new one with the script loaded.
    async fn open(&self) -> Result<MultiplexedConnection, StepError> {
        let mut slot = self.redis.lock().await;
        if let Some(redis) = &*slot {
            return Ok(redis.clone());
        }
        let mut redis = connect(&self.connection, None).await?;
        let _: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(ADD_ONCE)
            .query_async(&mut redis)
            .await
            .map_err(|error| {
                failed(
                    &self.connection,
                    "loading the de-duplicating script",
                    &error,
                )
            })?;
        *slot = Some(redis.clone());
        Ok(redis)
    }

    /// Permanent when the server refused this entry (a key that is not a stream, say);
    /// retryable for connection failures and "try later" answers.
    fn classify(&self, stream: &str, error: &redis::RedisError) -> StepError {
        match error.code() {
            Some(code) if !TRY_LATER.contains(&code) => {
                StepError::permanent(self.connection.scrub(&format!(
                    "Redis server `{}` refused the entry for stream `{stream}`: {error}",
                    self.connection.name
                )))
            }
            _ => failed(
                &self.connection,
                &format!("adding to stream `{stream}`"),
                error,
            ),
        }
    }
}
