//! The `derived_metrics` receiver: every `interval`, ragwatch's metrics derived from spans (cost,
//! tokens, latency, span metrics) enter the metrics pipelines that list it, as OTLP, so they reach
//! any OTLP backend like the applications' own metrics.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Problems, Validate, duration};
use crate::derived::DerivedMetrics;
use crate::pipeline::{Fanin, WhenFull};
use crate::receiver::events::{ItemsAccepted, ItemsRefused};
use crate::signal::{Batch, Signal};
use crate::telemetry::SelfMetrics;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedMetricsConfig {
    /// How often the derived metrics are sent (default 60s), cumulative.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
}

impl Default for DerivedMetricsConfig {
    fn default() -> Self {
        DerivedMetricsConfig {
            interval: default_interval(),
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

impl Validate for DerivedMetricsConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.interval.is_zero() {
            problems.push(&format!("{path}.interval"), "must be greater than zero");
        }
    }
}

/// The derived metrics as one OTLP request (None when there are none yet).
pub fn snapshot(derived: &DerivedMetrics) -> Option<ExportMetricsServiceRequest> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let metrics = derived.to_otlp(now);
    if metrics.is_empty() {
        return None;
    }
    let s = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    Some(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "ragwatch"),
                    s("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "ragwatch.derived".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

pub fn start(
    id: &str,
    config: &DerivedMetricsConfig,
    fanin: Fanin,
    derived: Arc<DerivedMetrics>,
    metrics: &SelfMetrics,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let counters = crate::receiver::events::ReceiverCounters::of(metrics, id, "internal");
    let every = config.interval;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = ticker.tick() => false,
                _ = stop.cancelled() => true,
            };
            derived.expire(Instant::now());
            if let Some(req) = snapshot(&derived) {
                let batch = Batch::Metrics(req);
                let n = batch.item_count();
                // Waiting is right here: this is our own data, and the pipeline drains.
                match fanin.send(batch, WhenFull::Block).await {
                    Ok(()) => ItemsAccepted {
                        signal: Signal::Metrics,
                        items: n,
                    }
                    .emit(&counters),
                    Err(e) => ItemsRefused {
                        signal: Signal::Metrics,
                        items: n,
                        reason: &e.to_string(),
                    }
                    .emit(&counters),
                }
            }
            if last {
                return;
            }
        }
    })
}
