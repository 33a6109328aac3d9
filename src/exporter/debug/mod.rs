//! `debug`: telemetry as log lines — one line per batch, or one per item with more verbosity.

use serde::{Deserialize, Serialize};

use super::helper::{Delivered, ExportError, Payload};
use crate::attributes::{hex, service_name};
use crate::signal::Batch;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugExporterConfig {
    #[serde(default)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch with counts.
    #[default]
    Basic,
    /// Also one line per span, metric or log record.
    Normal,
    /// One line per span, metric or log record with every attribute.
    Detailed,
    /// One line per analysed trace: service, duration, cost, bottleneck and share, quality,
    /// findings (metrics and logs: one line per batch, as `basic`).
    Summary,
}

pub(crate) struct DebugTransport {
    id: String,
    verbosity: Verbosity,
}

impl DebugTransport {
    pub(crate) fn new(id: &str, c: &DebugExporterConfig) -> Self {
        DebugTransport {
            id: id.to_string(),
            verbosity: c.verbosity,
        }
    }

    pub(crate) fn send(&self, p: &Payload) -> Result<Delivered, ExportError> {
        let signal = p.signal();
        if self.verbosity == Verbosity::Summary {
            return Ok(self.summary(p));
        }
        tracing::info!(exporter = %self.id, signal = %signal, items = p.items, "{} {}", p.items, signal.item_name());
        if self.verbosity == Verbosity::Basic {
            return Ok(Delivered::default());
        }
        let detailed = self.verbosity == Verbosity::Detailed;
        match p.batch() {
            Batch::Traces(r) => {
                for rs in &r.resource_spans {
                    let service = rs
                        .resource
                        .as_ref()
                        .and_then(|r| service_name(&r.attributes))
                        .unwrap_or("");
                    for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                        let ms = span
                            .end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano)
                            as f64
                            / 1e6;
                        let status = span.status.as_ref().map(|s| s.code).unwrap_or(0);
                        if detailed {
                            tracing::info!(
                                exporter = %self.id,
                                service,
                                trace_id = %hex(&span.trace_id),
                                span_id = %hex(&span.span_id),
                                parent_span_id = %hex(&span.parent_span_id),
                                duration_ms = ms,
                                status,
                                attributes = %attributes(&span.attributes),
                                "span {}", span.name
                            );
                        } else {
                            tracing::info!(exporter = %self.id, service, trace_id = %hex(&span.trace_id), duration_ms = ms, status, "span {}", span.name);
                        }
                    }
                }
            }
            Batch::Metrics(r) => {
                for m in r
                    .resource_metrics
                    .iter()
                    .flat_map(|rm| &rm.scope_metrics)
                    .flat_map(|sm| &sm.metrics)
                {
                    tracing::info!(exporter = %self.id, unit = %m.unit, "metric {}", m.name);
                }
            }
            Batch::Logs(r) => {
                for l in r
                    .resource_logs
                    .iter()
                    .flat_map(|rl| &rl.scope_logs)
                    .flat_map(|sl| &sl.log_records)
                {
                    if detailed {
                        tracing::info!(exporter = %self.id, severity = %l.severity_text, attributes = %attributes(&l.attributes), "log record {}", l.event_name);
                    } else {
                        tracing::info!(exporter = %self.id, severity = %l.severity_text, "log record {}", l.event_name);
                    }
                }
            }
        }
        Ok(Delivered::default())
    }
}

impl DebugTransport {
    /// One line per analysed trace; spans of traces whose root (or `ragwatch.analysis` span)
    /// is not in the batch are counted on one line.
    fn summary(&self, p: &Payload) -> Delivered {
        let Batch::Traces(r) = p.batch() else {
            tracing::info!(exporter = %self.id, signal = %p.signal(), items = p.items, "{} {}", p.items, p.signal().item_name());
            return Delivered::default();
        };
        let mut other = 0usize;
        for g in crate::trace::summary::group(r) {
            match crate::trace::summary::summary_span(&g, true) {
                Some(s) => {
                    let f = crate::trace::summary::facts(&g, s, 10);
                    // `items`: the spans of the trace this line stands for, so that the lines
                    // of a batch still add up to its spans.
                    tracing::info!(exporter = %self.id, signal = %p.signal(), items = g.spans.len(), trace_id = %f.trace_id, "{}", f.line());
                }
                None => other += g.spans.len(),
            }
        }
        if other > 0 {
            tracing::info!(exporter = %self.id, signal = %p.signal(), items = other, "{other} spans of traces whose root is not in this batch");
        }
        Delivered::default()
    }
}

fn attributes(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let mut s = String::new();
    for kv in attrs {
        if !s.is_empty() {
            s.push_str(", ");
        }
        s.push_str(&kv.key);
        s.push('=');
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(v)) => s.push_str(v),
            Some(Value::IntValue(v)) => s.push_str(&v.to_string()),
            Some(Value::DoubleValue(v)) => s.push_str(&v.to_string()),
            Some(Value::BoolValue(v)) => s.push_str(&v.to_string()),
            Some(other) => s.push_str(&format!("{other:?}")),
            None => {}
        }
    }
    s
}

impl super::helper::Transport for DebugTransport {
    fn send<'a>(
        &'a self,
        p: &'a Payload,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Delivered, ExportError>> + Send + 'a>,
    > {
        Box::pin(std::future::ready(DebugTransport::send(self, p)))
    }
}
