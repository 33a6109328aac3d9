//! The unit of data: one OTLP export request of one signal, kept as the owned prost types from
//! receiver to exporter (no second internal copy of every span).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde::{Deserialize, Serialize};

/// One of the three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// What one item of this signal is called, for logs and metric names.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }

    /// The OTLP/HTTP path of this signal.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "traces" => Some(Signal::Traces),
            "metrics" => Some(Signal::Metrics),
            "logs" => Some(Signal::Logs),
            _ => None,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One export request of any signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Batch {
    pub fn signal(&self) -> Signal {
        match self {
            Batch::Traces(_) => Signal::Traces,
            Batch::Metrics(_) => Signal::Metrics,
            Batch::Logs(_) => Signal::Logs,
        }
    }

    /// The OTLP protobuf encoding of the request.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        use prost::Message;
        match self {
            Batch::Traces(r) => r.encode_to_vec(),
            Batch::Metrics(r) => r.encode_to_vec(),
            Batch::Logs(r) => r.encode_to_vec(),
        }
    }

    /// [`Batch::encode_to_vec`] for a batch whose encoded size is known. prost's `encode_to_vec`
    /// (and `encode`) walk the whole request once for its size before encoding; `encode_raw`
    /// into a `Vec` (which grows, so it cannot run out of room) skips that walk.
    fn encode_sized(&self, len: usize) -> Vec<u8> {
        use prost::Message;
        let mut buf = Vec::with_capacity(len);
        match self {
            Batch::Traces(r) => r.encode_raw(&mut buf),
            Batch::Metrics(r) => r.encode_raw(&mut buf),
            Batch::Logs(r) => r.encode_raw(&mut buf),
        }
        debug_assert_eq!(buf.len(), len, "encoded size");
        buf
    }

    /// [`Batch::encode_to_vec`] without its first walk for the size: into a buffer that starts
    /// at a guess (about what an enriched span takes) and grows.
    fn encode_growing(&self) -> Vec<u8> {
        use prost::Message;
        let mut buf = Vec::with_capacity(self.item_count().saturating_mul(GUESSED_ITEM_BYTES));
        match self {
            Batch::Traces(r) => r.encode_raw(&mut buf),
            Batch::Metrics(r) => r.encode_raw(&mut buf),
            Batch::Logs(r) => r.encode_raw(&mut buf),
        }
        buf
    }

    /// The size of [`Batch::encode_to_vec`]'s result, without encoding.
    pub fn encoded_len(&self) -> usize {
        use prost::Message;
        match self {
            Batch::Traces(r) => r.encoded_len(),
            Batch::Metrics(r) => r.encoded_len(),
            Batch::Logs(r) => r.encoded_len(),
        }
    }

    /// A request of `signal` from its OTLP protobuf encoding.
    pub fn decode(signal: Signal, bytes: &[u8]) -> Result<Batch, prost::DecodeError> {
        use prost::Message;
        Ok(match signal {
            Signal::Traces => Batch::Traces(ExportTraceServiceRequest::decode(bytes)?),
            Signal::Metrics => Batch::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
            Signal::Logs => Batch::Logs(ExportLogsServiceRequest::decode(bytes)?),
        })
    }

    /// Spans, metric data points or log records in this batch.
    pub fn item_count(&self) -> usize {
        match self {
            Batch::Traces(r) => span_count(r),
            Batch::Metrics(r) => metric_point_count(r),
            Batch::Logs(r) => log_record_count(r),
        }
    }
}

/// The first guess of an item's encoded size, for [`Batch::encode_growing`]: a GenAI span with
/// ragwatch's attributes is about 600 bytes; a smaller guess costs a copy or two as the buffer
/// grows, a larger one memory held until the request is sent.
const GUESSED_ITEM_BYTES: usize = 512;

/// A batch with its encoded size and its OTLP encoding, each computed at most once and only when
/// asked for: the size for the byte budgets of the queues, the encoding for a pipeline log and
/// the network exporters. Shared behind an `Arc` by the pipelines a request goes to and by the
/// exporters of a pipeline, so none of them computes either again; a stage that changes the
/// batch takes it out with [`Encodable::into_batch`], which copies it only while it is shared.
#[derive(Debug)]
pub struct Encodable {
    batch: Batch,
    len: OnceLock<usize>,
    encoding: OnceLock<Bytes>,
}

impl Encodable {
    pub fn new(batch: Batch) -> Encodable {
        Encodable {
            batch,
            len: OnceLock::new(),
            encoding: OnceLock::new(),
        }
    }

    /// A batch decoded from `encoding`, which prost made from the same batch (a pipeline log's
    /// record): encoding it again would give the same bytes.
    pub fn with_encoding(batch: Batch, encoding: Bytes) -> Encodable {
        Encodable {
            batch,
            len: OnceLock::new(),
            encoding: OnceLock::from(encoding),
        }
    }

    /// A request known only by its encoding: the batch is an empty one of `signal`.
    pub fn encoded(signal: Signal, encoding: Bytes) -> Encodable {
        let batch = match signal {
            Signal::Traces => Batch::Traces(Default::default()),
            Signal::Metrics => Batch::Metrics(Default::default()),
            Signal::Logs => Batch::Logs(Default::default()),
        };
        Encodable::with_encoding(batch, encoding)
    }

    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    pub fn signal(&self) -> Signal {
        self.batch.signal()
    }

    /// The size of the OTLP encoding (computed, not encoded, when not encoded yet).
    pub fn encoded_len(&self) -> usize {
        match self.encoding.get() {
            Some(b) => b.len(),
            None => *self.len.get_or_init(|| self.batch.encoded_len()),
        }
    }

    /// The OTLP protobuf encoding. When the size is not known yet it is not computed first (a
    /// walk of the whole request, 3.5% of the full chain's CPU in perf): the buffer grows as it
    /// is written, from a guess.
    pub fn encoding(&self) -> &Bytes {
        self.encoding.get_or_init(|| match self.len.get() {
            Some(&len) => Bytes::from(self.batch.encode_sized(len)),
            None => Bytes::from(self.batch.encode_growing()),
        })
    }

    /// A copy of the batch that shares nothing with this one (its size is carried over).
    pub fn copy(&self) -> Encodable {
        Encodable {
            batch: self.batch.clone(),
            len: self.len.clone(),
            encoding: self.encoding.clone(),
        }
    }

    /// The batch itself, to change: taken without copying when nothing else holds it, else
    /// copied.
    pub fn into_batch(this: Arc<Encodable>) -> Batch {
        match Arc::try_unwrap(this) {
            Ok(e) => e.batch,
            Err(shared) => shared.batch.clone(),
        }
    }
}

pub fn span_count(r: &ExportTraceServiceRequest) -> usize {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

pub fn log_record_count(r: &ExportLogsServiceRequest) -> usize {
    r.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len())
        .sum()
}

/// Data points, counted the way the Collector counts them: one per point of a gauge, sum,
/// histogram, exponential histogram or summary.
pub fn metric_point_count(r: &ExportMetricsServiceRequest) -> usize {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    use super::*;

    fn traces(names: &[&str]) -> Batch {
        Batch::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: names
                        .iter()
                        .map(|n| Span {
                            trace_id: vec![7; 16],
                            span_id: vec![1; 8],
                            name: n.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    #[test]
    fn the_size_and_encoding_are_prosts() {
        // A span of 16 + 8 id bytes and a 3-byte name: 2 + 16 + 2 + 8 + 2 + 3 = 33 bytes; in
        // its ScopeSpans 2 + 33 = 35, in its ResourceSpans 2 + 35 = 37, in the request 2 + 37.
        let e = Encodable::new(traces(&["abc"]));
        assert_eq!(e.encoded_len(), 39);
        let Batch::Traces(r) = e.batch() else {
            panic!("traces")
        };
        assert_eq!(e.encoding().as_ref(), r.encode_to_vec().as_slice());
        assert_eq!(e.encoded_len(), 39);
        let decoded = Batch::decode(Signal::Traces, e.encoding()).expect("decodes");
        assert_eq!(&decoded, e.batch());
    }

    #[test]
    fn encoded_without_its_size_first_it_is_the_same_bytes() {
        // Spans far larger than the first guess (the buffer grows) and far smaller.
        let long = "x".repeat(5 * GUESSED_ITEM_BYTES);
        for names in [vec![long.as_str(), "a", long.as_str()], vec!["a"], vec![]] {
            let e = Encodable::new(traces(&names));
            let Batch::Traces(r) = e.batch() else {
                panic!("traces")
            };
            let want = r.encode_to_vec();
            assert_eq!(e.encoding().as_ref(), want.as_slice());
            assert_eq!(e.encoded_len(), want.len(), "the size is the encoding's");
        }
    }

    #[test]
    fn a_batch_is_taken_without_a_copy_only_when_nothing_else_holds_it() {
        let a = Arc::new(Encodable::new(traces(&["a", "b"])));
        let other = a.clone();
        // Shared: the taker gets a copy, and changing it leaves the other holder's alone.
        let Batch::Traces(mut r) = Encodable::into_batch(a) else {
            panic!("traces")
        };
        r.resource_spans.clear();
        assert_eq!(other.batch().item_count(), 2);
        // The last holder takes the batch itself: the spans' buffers are the very same.
        let name_at = match other.batch() {
            Batch::Traces(r) => r.resource_spans[0].scope_spans[0].spans[0].name.as_ptr(),
            _ => panic!("traces"),
        };
        let Batch::Traces(taken) = Encodable::into_batch(other) else {
            panic!("traces")
        };
        assert_eq!(
            taken.resource_spans[0].scope_spans[0].spans[0]
                .name
                .as_ptr(),
            name_at
        );
    }

    #[test]
    fn a_copy_shares_nothing_but_keeps_what_is_known_of_the_encoding() {
        let a = Encodable::new(traces(&["x"]));
        let bytes = a.encoding().clone();
        let c = a.copy();
        assert_eq!(c.batch(), a.batch());
        assert_eq!(c.encoded_len(), bytes.len());
        assert_eq!(
            c.encoding().as_ptr(),
            bytes.as_ptr(),
            "the encoding is not made again"
        );
        // Known only by its encoding: an empty batch of the signal, the bytes as given.
        let e = Encodable::encoded(Signal::Logs, Bytes::from_static(b"\x0a\x00"));
        assert_eq!(e.signal(), Signal::Logs);
        assert_eq!(e.batch().item_count(), 0);
        assert_eq!(e.encoded_len(), 2);
    }
}
