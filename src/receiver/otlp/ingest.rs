//! What both transports share: id validation, hand-off to the pipelines, and counting.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::OtlpReceiverConfig;
use crate::pipeline::{Fanin, HandOffError, WhenFull};
use crate::receiver::events::{ItemsAccepted, ItemsRefused, ReceiverCounters};
use crate::signal::{Batch, Signal};
use crate::telemetry::SelfMetrics;

/// The pipelines one receiver feeds, per signal.
#[derive(Clone, Default)]
pub struct Consumers {
    pub traces: Fanin,
    pub metrics: Fanin,
    pub logs: Fanin,
}

impl Consumers {
    fn for_signal(&self, s: Signal) -> &Fanin {
        match s {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }
}

/// Accepted, with this many items rejected (partial success) and why.
pub(crate) struct Accepted {
    pub rejected: usize,
    pub message: String,
}

impl Accepted {
    pub fn traces_response(self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: self.rejected as i64,
                error_message: self.message,
            }),
        }
    }
    pub fn metrics_response(self) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: (self.rejected > 0).then_some(ExportMetricsPartialSuccess {
                rejected_data_points: self.rejected as i64,
                error_message: self.message,
            }),
        }
    }
    pub fn logs_response(self) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: (self.rejected > 0).then_some(ExportLogsPartialSuccess {
                rejected_log_records: self.rejected as i64,
                error_message: self.message,
            }),
        }
    }
}

pub(crate) enum IngestError {
    /// No pipeline of this signal uses the receiver.
    NoPipeline(Signal),
    /// The pipeline is full (retryable).
    Full(Duration),
    /// Shutting down (retryable, elsewhere or later).
    Closed(Duration),
    /// Above the memory limiter's soft limit (retryable).
    Memory(Duration),
    /// A pipeline's log cannot take the request: full, its disk full, or failing (retryable).
    Storage(Duration, String),
    /// Larger than a pipeline's whole log (not retryable).
    TooLarge(String),
}

impl IngestError {
    pub fn message(&self) -> String {
        match self {
            IngestError::NoPipeline(s) => format!("no {s} pipeline uses this receiver"),
            IngestError::Full(_) => "the pipeline is full; retry later".into(),
            IngestError::Closed(_) => "ragwatch is shutting down; retry later".into(),
            IngestError::Memory(_) => "ragwatch is above its memory limit; retry later".into(),
            IngestError::Storage(_, why) => {
                format!("the pipeline's log cannot take the request ({why}); retry later")
            }
            IngestError::TooLarge(why) => format!("the request is too large: {why}"),
        }
    }
}

pub(crate) struct Ingest {
    consumers: Consumers,
    when_full: WhenFull,
    retry_after: Duration,
    pub counters: ReceiverCounters,
    pub limiter: Option<std::sync::Arc<crate::memory::MemoryLimiter>>,
}

impl Ingest {
    pub fn new(
        id: &str,
        transport: &str,
        consumers: Consumers,
        config: &OtlpReceiverConfig,
        metrics: &SelfMetrics,
    ) -> Ingest {
        Ingest {
            consumers,
            when_full: config.when_full,
            retry_after: config.retry_after,
            counters: ReceiverCounters::of(metrics, id, transport),
            limiter: None,
        }
    }

    /// While memory is above the limiter's soft limit: the retry delay to refuse with, before a
    /// request's body is read or decoded (decoding what will be refused takes memory too). The
    /// caller counts the request as refused; its items are unknown.
    pub fn refuse_for_memory(&self) -> Option<Duration> {
        self.limiter
            .as_ref()
            .is_some_and(|l| l.refusing())
            .then(|| {
                tracing::debug!(receiver = %self.counters.receiver, "memory limit: refused a request before decoding it");
                self.retry_after
            })
    }

    /// Validate and hand a decoded request to every pipeline of its signal.
    pub async fn ingest(&self, mut batch: Batch) -> Result<Accepted, IngestError> {
        let signal = batch.signal();
        let (rejected, message) = match &mut batch {
            Batch::Traces(r) => drop_invalid_spans(r),
            _ => (0, String::new()),
        };
        if rejected > 0 {
            ItemsRefused {
                signal,
                items: rejected,
                reason: &message,
            }
            .emit(&self.counters);
        }
        let items = batch.item_count();
        let fanin = self.consumers.for_signal(signal);
        if fanin.is_empty() {
            ItemsRefused {
                signal,
                items,
                reason: "no pipeline of this signal uses the receiver",
            }
            .emit(&self.counters);
            return Err(IngestError::NoPipeline(signal));
        }
        if items > 0 && self.limiter.as_ref().is_some_and(|l| l.refusing()) {
            ItemsRefused {
                signal,
                items,
                reason: "memory limit: the client retries",
            }
            .emit(&self.counters);
            return Err(IngestError::Memory(self.retry_after));
        }
        if items > 0 {
            match fanin.send(batch, self.when_full).await {
                Ok(()) => ItemsAccepted { signal, items }.emit(&self.counters),
                Err(e) => {
                    ItemsRefused {
                        signal,
                        items,
                        reason: &e.to_string(),
                    }
                    .emit(&self.counters);
                    return Err(match e {
                        HandOffError::Full(_) => IngestError::Full(self.retry_after),
                        HandOffError::Closed(_) => IngestError::Closed(self.retry_after),
                        HandOffError::Storage { message, .. } => {
                            IngestError::Storage(self.retry_after, message)
                        }
                        HandOffError::TooLargeForStorage { message, .. } => {
                            IngestError::TooLarge(message)
                        }
                    });
                }
            }
        }
        Ok(Accepted { rejected, message })
    }
}

/// Remove spans whose ids are invalid (trace id not 16 bytes or all zero, span id not 8 bytes or
/// all zero, parent span id neither empty nor 8 bytes); the valid rest is kept untouched.
/// Returns how many were removed and a message for the partial-success answer.
pub fn drop_invalid_spans(req: &mut ExportTraceServiceRequest) -> (usize, String) {
    fn valid(s: &opentelemetry_proto::tonic::trace::v1::Span) -> bool {
        s.trace_id.len() == 16
            && s.trace_id.iter().any(|b| *b != 0)
            && s.span_id.len() == 8
            && s.span_id.iter().any(|b| *b != 0)
            && (s.parent_span_id.is_empty() || s.parent_span_id.len() == 8)
    }
    let any_invalid = req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .any(|s| !valid(s));
    if !any_invalid {
        return (0, String::new());
    }
    let mut rejected = 0;
    let mut example = String::new();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|s| {
                let ok = valid(s);
                if !ok {
                    rejected += 1;
                    if example.is_empty() {
                        example = format!(
                            "span {:?} has a {}-byte trace id and a {}-byte span id",
                            s.name,
                            s.trace_id.len(),
                            s.span_id.len()
                        );
                    }
                }
                ok
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    let message = format!(
        "{rejected} span(s) rejected: a trace id must be 16 non-zero bytes, a span id 8 non-zero bytes, a parent span id empty or 8 bytes (e.g. {example})"
    );
    (rejected, message)
}
