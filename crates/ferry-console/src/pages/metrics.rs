//! `/metrics` for Prometheus, in the OpenMetrics text format (which Prometheus scrapes as is).
//!
//! Two kinds of metrics:
//! - counted since the console started, by an observer of the engine's event bus
//!   ([`Metrics::start`]): passengers pulled, seated, pushed, failed, dead and filtered, and how
//!   long runs take;
//! - read from the store and the engine at scrape time: passengers per state, the age of the
//!   oldest unfinished passenger and whether a pipeline is paused.
//!
//! Every series is labelled with `client` and `pipeline`. The route is for root only: the
//! metrics cover every client.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ferry_engine::{Engine, Event};
use ferry_store::{PassengerState, PipelineKey};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::broadcast;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// What an OpenMetrics text exposition is served as.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the run duration buckets, in seconds: from an empty manual run to a load
/// of hours.
const RUN_SECONDS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabels {
    client: String,
    pipeline: String,
}

impl From<&PipelineKey> for PipelineLabels {
    fn from(key: &PipelineKey) -> Self {
        PipelineLabels {
            client: key.client.clone(),
            pipeline: key.pipeline.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PusherLabels {
    client: String,
    pipeline: String,
    pusher: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    client: String,
    pipeline: String,
    state: String,
}

type PerPipeline = Family<PipelineLabels, Counter>;

fn run_histogram() -> Histogram {
    Histogram::new(RUN_SECONDS)
}

/// The counters the observer keeps, registered once in their own registry.
pub struct Metrics {
    registry: Registry,
    pulled: PerPipeline,
    seated: PerPipeline,
    duplicates: PerPipeline,
    pushed: Family<PusherLabels, Counter>,
    failed: PerPipeline,
    dead: PerPipeline,
    filtered: PerPipeline,
    run_seconds: Family<PipelineLabels, Histogram, fn() -> Histogram>,
    /// Events the observer fell too far behind to see: the counters are short by them.
    missed: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let pulled = PerPipeline::default();
        let seated = PerPipeline::default();
        let duplicates = PerPipeline::default();
        let pushed = Family::<PusherLabels, Counter>::default();
        let failed = PerPipeline::default();
        let dead = PerPipeline::default();
        let filtered = PerPipeline::default();
        let run_seconds = Family::new_with_constructor(run_histogram as fn() -> Histogram);
        let missed = Counter::default();
        // Counters are named without `_total`: the encoder appends it.
        registry.register(
            "ferry_pulled",
            "Passengers pulled by finished runs",
            pulled.clone(),
        );
        registry.register(
            "ferry_seated",
            "Passengers seated in the queue",
            seated.clone(),
        );
        registry.register(
            "ferry_duplicates",
            "Pulled passengers skipped as duplicates",
            duplicates.clone(),
        );
        registry.register(
            "ferry_pushed",
            "Passengers delivered, per pusher",
            pushed.clone(),
        );
        registry.register(
            "ferry_failed",
            "Steps that failed and will be retried",
            failed.clone(),
        );
        registry.register(
            "ferry_dead",
            "Passengers that died (a step gave up)",
            dead.clone(),
        );
        registry.register(
            "ferry_filtered",
            "Passengers a processor stopped on purpose",
            filtered.clone(),
        );
        registry.register_with_unit(
            "ferry_run_duration",
            "How long runs took",
            Unit::Seconds,
            run_seconds.clone(),
        );
        registry.register(
            "ferry_metrics_missed_events",
            "Engine events the metrics observer fell behind on; the counters miss them",
            missed.clone(),
        );
        Metrics {
            registry,
            pulled,
            seated,
            duplicates,
            pushed,
            failed,
            dead,
            filtered,
            run_seconds,
            missed,
        }
    }

    /// The metrics of `engine`, counted by a task that observes its events from now on until
    /// the engine is gone.
    pub fn start(engine: &Engine) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics::new());
        tokio::spawn(observe(engine.subscribe(), metrics.clone()));
        metrics
    }

    /// Counts one event.
    fn count(&self, event: &Event) {
        match event {
            Event::RunFinished {
                pipeline,
                counts,
                seconds,
                ..
            } => {
                let labels = PipelineLabels::from(pipeline);
                self.pulled.get_or_create(&labels).inc_by(counts.pulled);
                self.run_seconds.get_or_create(&labels).observe(*seconds);
            }
            Event::PassengersSeated {
                pipeline,
                seated,
                duplicates,
            } => {
                let labels = PipelineLabels::from(pipeline);
                self.seated.get_or_create(&labels).inc_by(*seated);
                self.duplicates.get_or_create(&labels).inc_by(*duplicates);
            }
            Event::PassengersPushed {
                pipeline,
                pusher,
                count,
            } => {
                let labels = PusherLabels {
                    client: pipeline.client.clone(),
                    pipeline: pipeline.pipeline.clone(),
                    pusher: pusher.clone(),
                };
                self.pushed.get_or_create(&labels).inc_by(*count);
            }
            Event::PassengerFailed { pipeline, .. } => {
                self.failed.get_or_create(&pipeline.into()).inc();
            }
            Event::PassengerDead { pipeline, .. } => {
                self.dead.get_or_create(&pipeline.into()).inc();
            }
            Event::PassengerFiltered { pipeline, .. } => {
                self.filtered.get_or_create(&pipeline.into()).inc();
            }
            _ => {}
        }
    }

    /// Makes the counters of a pipeline exist (at zero) before its first event, so rates and
    /// alerts see it from the first scrape.
    fn touch(&self, pipeline: &ferry_core::config::Pipeline) {
        let labels = PipelineLabels {
            client: pipeline.client.clone(),
            pipeline: pipeline.name.clone(),
        };
        for family in [
            &self.pulled,
            &self.seated,
            &self.duplicates,
            &self.failed,
            &self.dead,
            &self.filtered,
        ] {
            let _ = family.get_or_create(&labels);
        }
        for pusher in &pipeline.pushers {
            let _ = self.pushed.get_or_create(&PusherLabels {
                client: pipeline.client.clone(),
                pipeline: pipeline.name.clone(),
                pusher: pusher.name.clone(),
            });
        }
    }
}

/// Counts every event until the bus closes. Counting is a few atomic additions, so falling
/// behind is unlikely; when it happens it is counted too.
async fn observe(mut events: broadcast::Receiver<Event>, metrics: Arc<Metrics>) {
    loop {
        match events.recv().await {
            Ok(event) => metrics.count(&event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "metrics observer fell behind; counters miss events");
                metrics.missed.inc_by(missed);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// `GET /metrics`: the counters, and the queue as the store sees it now.
pub async fn prometheus(State(state): State<AppState>) -> ApiResult<Response> {
    let project = state.engine.project();
    let counts = state.store.counts(None).await?;
    let oldest = state.store.oldest_open().await?;
    let now = chrono::Utc::now();

    let passengers = Family::<StateLabels, Gauge>::default();
    let oldest_age = Family::<PipelineLabels, Gauge<f64, AtomicU64>>::default();
    let paused = Family::<PipelineLabels, Gauge>::default();
    let up = Gauge::<i64>::default();
    up.set(1);

    // Defined pipelines, and removed ones that still have passengers.
    let mut keys: BTreeSet<PipelineKey> = counts.keys().cloned().collect();
    for pipeline in project.pipelines() {
        state.metrics.touch(pipeline);
        let key = PipelineKey::new(&pipeline.client, &pipeline.name);
        paused
            .get_or_create(&PipelineLabels::from(&key))
            .set(i64::from(state.engine.is_paused(&key)));
        keys.insert(key);
    }
    for key in &keys {
        let per_state = counts.get(key);
        for passenger_state in PassengerState::ALL {
            let n = per_state
                .and_then(|c| c.get(&passenger_state))
                .copied()
                .unwrap_or(0);
            passengers
                .get_or_create(&StateLabels {
                    client: key.client.clone(),
                    pipeline: key.pipeline.clone(),
                    state: passenger_state.as_str().to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        // 0 when nothing is open, so an alert on the age needs no special case.
        let age = oldest
            .get(key)
            .map_or(0.0, |at| (now - *at).as_seconds_f64().max(0.0));
        oldest_age
            .get_or_create(&PipelineLabels::from(key))
            .set(age);
    }

    let mut scraped = Registry::default();
    scraped.register("ferry_up", "1 while ferry serves metrics", up);
    scraped.register(
        "ferry_passengers",
        "Passengers in the queue, by state",
        passengers,
    );
    scraped.register_with_unit(
        "ferry_oldest_open_age",
        "Age of the oldest passenger not yet complete, filtered, dead or discarded (0 if none)",
        Unit::Seconds,
        oldest_age,
    );
    scraped.register(
        "ferry_pipeline_paused",
        "1 when the pipeline is paused",
        paused,
    );

    let mut text = String::new();
    encode_registry(&mut text, &scraped).map_err(ApiError::internal)?;
    encode_registry(&mut text, &state.metrics.registry).map_err(ApiError::internal)?;
    encode_eof(&mut text).map_err(ApiError::internal)?;
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use ferry_store::{RunCounts, RunStatus};

    use super::*;

    fn encoded(metrics: &Metrics) -> String {
        let mut text = String::new();
        encode_registry(&mut text, &metrics.registry).unwrap();
        text
    }

    #[test]
    fn events_are_counted_per_pipeline() {
        let metrics = Metrics::new();
        let key = PipelineKey::new("acme", "orders");
        metrics.count(&Event::PassengersSeated {
            pipeline: key.clone(),
            seated: 7,
            duplicates: 2,
        });
        metrics.count(&Event::PassengersPushed {
            pipeline: key.clone(),
            pusher: "file".into(),
            count: 5,
        });
        metrics.count(&Event::RunFinished {
            pipeline: key.clone(),
            run: Some(1),
            status: RunStatus::Succeeded,
            counts: RunCounts {
                pulled: 9,
                seated: 7,
                duplicates: 2,
                failed: 0,
            },
            error: None,
            seconds: 0.3,
        });
        let text = encoded(&metrics);
        for line in [
            r#"ferry_seated_total{client="acme",pipeline="orders"} 7"#,
            r#"ferry_duplicates_total{client="acme",pipeline="orders"} 2"#,
            r#"ferry_pushed_total{client="acme",pipeline="orders",pusher="file"} 5"#,
            r#"ferry_pulled_total{client="acme",pipeline="orders"} 9"#,
            r#"ferry_run_duration_seconds_count{client="acme",pipeline="orders"} 1"#,
            r#"ferry_run_duration_seconds_bucket{le="0.5",client="acme",pipeline="orders"} 1"#,
            r#"ferry_run_duration_seconds_bucket{le="0.25",client="acme",pipeline="orders"} 0"#,
        ] {
            assert!(text.contains(line), "no `{line}` in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_lagging_observer_counts_what_it_missed() {
        let bus = ferry_engine::Bus::default();
        let metrics = Arc::new(Metrics::new());
        let events = bus.subscribe();
        // More events than the bus holds before the observer reads any.
        for _ in 0..5000 {
            bus.publish(Event::DispatcherStopped);
        }
        drop(bus);
        observe(events, metrics.clone()).await;
        assert_eq!(metrics.missed.get(), 5000 - 4096);
    }
}
