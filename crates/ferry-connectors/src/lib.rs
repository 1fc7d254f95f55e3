//! ferry's connectors: one folder per external system, each with the same shape (`mod.rs`,
//! `config.rs`, `puller.rs`, `pusher.rs`, `tests.rs`), and the built-in processors.
//!
//! [`registry`] is the one list of everything ferry can build from a definition's `type:`; what
//! every connector must meet is written down in `docs/connector-spec.md`.

pub mod blackhole;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod client_sql;
mod columns;
#[cfg(test)]
mod conformance;
pub mod file;
pub mod generate;
pub mod http;
pub mod imap;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "nats")]
pub mod nats;
pub mod oauth;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod processors;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;
pub mod smtp;
/// The `sql` puller, for any of the database families built in.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod table;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod table_load;
#[cfg(all(test, any(feature = "nats", feature = "redis", feature = "mqtt")))]
mod test_server;
pub mod webhook;

use ferry_core::Registry;

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
use sql::connection::DatabaseConnectionFactory;

/// Every connection type, puller, processor and pusher ferry knows, by `type:` name.
///
/// This is the one place a new connector is added. An optional connector gets a
/// `#[cfg(feature = "…")]` on its line; an unknown `type:` fails in [`Registry`] with the list of
/// valid names.
pub fn registry() -> Registry {
    Registry {
        connections: vec![
            Box::new(imap::ImapConnectionFactory),
            #[cfg(feature = "kafka")]
            Box::new(kafka::KafkaConnectionFactory),
            #[cfg(feature = "mqtt")]
            Box::new(mqtt::MqttConnectionFactory),
            #[cfg(feature = "mysql")]
            Box::new(DatabaseConnectionFactory::<mysql::Mysql>::new()),
            #[cfg(feature = "nats")]
            Box::new(nats::NatsConnectionFactory),
            #[cfg(feature = "postgres")]
            Box::new(DatabaseConnectionFactory::<postgres::Postgres>::new()),
            #[cfg(feature = "rabbitmq")]
            Box::new(rabbitmq::RabbitmqConnectionFactory),
            #[cfg(feature = "redis")]
            Box::new(redis::RedisConnectionFactory),
            Box::new(smtp::SmtpConnectionFactory),
            #[cfg(feature = "sqlite")]
            Box::new(DatabaseConnectionFactory::<sqlite::Sqlite>::new()),
        ],
        pullers: vec![
            Box::new(file::FilePullerFactory),
            Box::new(generate::GeneratePullerFactory),
            Box::new(http::HttpPullerFactory),
            Box::new(imap::ImapPullerFactory),
            #[cfg(feature = "kafka")]
            Box::new(kafka::KafkaPullerFactory),
            #[cfg(feature = "mqtt")]
            Box::new(mqtt::MqttPullerFactory),
            #[cfg(feature = "nats")]
            Box::new(nats::NatsPullerFactory),
            #[cfg(feature = "rabbitmq")]
            Box::new(rabbitmq::RabbitmqPullerFactory),
            #[cfg(feature = "redis")]
            Box::new(redis::RedisPullerFactory),
            #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
            Box::new(sql::SqlPullerFactory),
            Box::new(table::TablePullerFactory),
            Box::new(webhook::WebhookPullerFactory),
        ],
        processors: vec![
            Box::new(processors::DecodeFactory),
            Box::new(processors::DedupeFactory),
            Box::new(processors::EncodeFactory),
            Box::new(processors::FilterFactory),
            Box::new(processors::RemapFactory),
            Box::new(processors::RouteFactory),
            Box::new(processors::SetFactory),
            Box::new(processors::SplitFactory),
            Box::new(processors::ValidateFactory),
        ],
        pushers: vec![
            Box::new(blackhole::BlackholePusherFactory),
            Box::new(file::FilePusherFactory),
            Box::new(http::HttpPusherFactory),
            #[cfg(feature = "kafka")]
            Box::new(kafka::KafkaPusherFactory),
            #[cfg(feature = "mqtt")]
            Box::new(mqtt::MqttPusherFactory),
            #[cfg(feature = "mysql")]
            Box::new(mysql::MysqlPusherFactory),
            #[cfg(feature = "nats")]
            Box::new(nats::NatsPusherFactory),
            #[cfg(feature = "postgres")]
            Box::new(postgres::PostgresPusherFactory),
            #[cfg(feature = "rabbitmq")]
            Box::new(rabbitmq::RabbitmqPusherFactory),
            #[cfg(feature = "redis")]
            Box::new(redis::RedisPusherFactory),
            Box::new(smtp::SmtpPusherFactory),
            #[cfg(feature = "sqlite")]
            Box::new(sqlite::SqlitePusherFactory),
        ],
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::{BuildContext, Role};
    use serde_json::json;

    use super::*;

    #[test]
    fn registry_lists_every_component() {
        let registry = registry();
        assert_eq!(
            registry.connection_types(),
            [
                "imap", "kafka", "mqtt", "mysql", "nats", "postgres", "rabbitmq", "redis", "smtp",
                "sqlite"
            ]
        );
        assert_eq!(
            registry.type_names(Role::Puller),
            [
                "file", "generate", "http", "imap", "kafka", "mqtt", "nats", "rabbitmq", "redis",
                "sql", "table", "webhook"
            ]
        );
        assert_eq!(
            registry.type_names(Role::Processor),
            [
                "decode", "dedupe", "encode", "filter", "remap", "route", "set", "split",
                "validate"
            ]
        );
        assert_eq!(
            registry.type_names(Role::Pusher),
            [
                "blackhole",
                "file",
                "http",
                "kafka",
                "mqtt",
                "mysql",
                "nats",
                "postgres",
                "rabbitmq",
                "redis",
                "smtp",
                "sqlite"
            ]
        );
        // Runs of pipelines that load tables end when the rows are in (run_ends: delivered).
        assert!(registry.pusher_loads("postgres"));
        assert!(registry.pusher_loads("mysql"));
        assert!(registry.pusher_loads("sqlite"));
        assert!(!registry.pusher_loads("file"));
        // Webhook pipelines run continuously: the puller only receives while they run.
        assert!(registry.puller_receives("webhook"));
        assert!(!registry.puller_receives("file"));
        assert!(!registry.pusher_loads("http"));
    }

    #[test]
    fn unknown_type_lists_the_valid_ones() {
        let registry = registry();
        let ctx = BuildContext::default();
        let error = registry
            .check(Role::Puller, "ftp", &json!({}), &ctx)
            .unwrap_err();
        assert_eq!(error.path, ["type"]);
        assert!(
            error.message.contains("valid types are: file, generate"),
            "{error}"
        );
        let error = registry
            .check(Role::Processor, "transmogrify", &json!({}), &ctx)
            .unwrap_err();
        assert!(error.message.contains("filter, remap, route"), "{error}");
    }

    #[test]
    fn registry_builds_each_component_from_its_definition() {
        let registry = registry();
        let ctx = BuildContext {
            sandbox: ferry_core::sandbox::Sandbox::within(std::path::Path::new("/project"), ""),
            ..BuildContext::default()
        };
        let file_puller = json!({ "path": "in", "after_seat": "delete" });
        registry
            .check(Role::Puller, "file", &file_puller, &ctx)
            .unwrap();
        registry
            .check(Role::Puller, "generate", &json!({}), &ctx)
            .unwrap();
        let filter = json!({ "keep": { "metadata": "kind", "equals": "order" } });
        registry
            .check(Role::Processor, "filter", &filter, &ctx)
            .unwrap();
        let set = json!({ "metadata": { "origin": "{source_system}" } });
        registry.check(Role::Processor, "set", &set, &ctx).unwrap();
        let with_pusher = BuildContext {
            pushers: vec!["erp".into()],
            ..ctx.clone()
        };
        for (type_name, config) in [
            ("remap", json!({ "source": ".a = 1" })),
            ("filter", json!({ "condition": ".a == 1" })),
            (
                "route",
                json!({ "routes": [{ "when": ".a == 1", "to": ["erp"] }] }),
            ),
            ("split", json!({ "items": ".lines" })),
            ("dedupe", json!({ "key": ".id", "window": "10m" })),
            ("validate", json!({ "schema": { "type": "object" } })),
        ] {
            registry
                .check(Role::Processor, type_name, &config, &with_pusher)
                .unwrap();
        }
        registry
            .check(Role::Pusher, "file", &json!({ "path": "out" }), &ctx)
            .unwrap();
        let webhook = json!({ "auth": { "github": "s3cret" } });
        registry
            .check(Role::Puller, "webhook", &webhook, &ctx)
            .unwrap();
    }
}
