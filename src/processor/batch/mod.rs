//! `batch`: combine small requests into larger ones, as the Collector's batch processor does,
//! so exporters send fewer, larger requests. Requests are concatenated, never split.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Processor;
use crate::config::{Problems, Validate, duration};
use crate::signal::{Batch, Signal};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Send once this many items are held (default 8192).
    #[serde(default = "default_size")]
    pub send_batch_size: usize,
    /// Send what is held after this long, however little (default 200ms).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_size() -> usize {
    8192
}
fn default_timeout() -> Duration {
    Duration::from_millis(200)
}

impl Validate for BatchConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.send_batch_size == 0 {
            problems.push(
                &format!("{path}.send_batch_size"),
                "must be greater than zero",
            );
        }
        if self.timeout.is_zero() {
            problems.push(&format!("{path}.timeout"), "must be greater than zero");
        }
    }
}

pub struct BatchProcessor {
    config: BatchConfig,
    held: Option<Batch>,
    items: usize,
    since: Option<Instant>,
    /// The mark of the next input, and the lowest mark of what is held (pipeline log).
    input_mark: Option<u64>,
    held_mark: Option<u64>,
}

impl BatchProcessor {
    pub fn new(config: BatchConfig) -> Self {
        BatchProcessor {
            config,
            held: None,
            items: 0,
            since: None,
            input_mark: None,
            held_mark: None,
        }
    }

    fn flush(&mut self, out: &mut Vec<Batch>) {
        if let Some(b) = self.held.take() {
            out.push(b);
        }
        self.items = 0;
        self.since = None;
        self.held_mark = None;
    }
}

fn append(into: &mut Batch, from: Batch) -> Result<(), Batch> {
    match (into, from) {
        (Batch::Traces(a), Batch::Traces(b)) => a.resource_spans.extend(b.resource_spans),
        (Batch::Metrics(a), Batch::Metrics(b)) => a.resource_metrics.extend(b.resource_metrics),
        (Batch::Logs(a), Batch::Logs(b)) => a.resource_logs.extend(b.resource_logs),
        (_, other) => return Err(other),
    }
    Ok(())
}

impl Processor for BatchProcessor {
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        let n = batch.item_count();
        if self
            .held
            .as_ref()
            .map(Batch::signal)
            .is_some_and(|s: Signal| s != batch.signal())
        {
            self.flush(out);
        }
        if let Some(m) = self.input_mark.take() {
            self.held_mark = Some(self.held_mark.map_or(m, |h| h.min(m)));
        }
        match self.held.as_mut() {
            None => {
                self.held = Some(batch);
                self.since = Some(now);
            }
            Some(h) => {
                if let Err(other) = append(h, batch) {
                    // Unreachable given the signal check above; pass it on rather than lose it.
                    out.push(other);
                }
            }
        }
        self.items += n;
        if self.items >= self.config.send_batch_size {
            self.flush(out);
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        if self
            .since
            .is_some_and(|t| now.duration_since(t) >= self.config.timeout)
        {
            self.flush(out);
        }
    }

    fn on_shutdown(&mut self, out: &mut Vec<Batch>) {
        self.flush(out);
    }

    fn input_mark(&mut self, mark: Option<u64>) {
        self.input_mark = mark;
    }

    fn held_mark(&self) -> Option<u64> {
        self.held_mark
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some((self.config.timeout / 2).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn spans(n: usize) -> Batch {
        Batch::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    #[test]
    fn releases_on_size_timeout_and_shutdown() {
        let mut p = BatchProcessor::new(BatchConfig {
            send_batch_size: 10,
            timeout: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        let mut out = Vec::new();
        p.on_input(spans(4), t0, &mut out);
        p.on_input(spans(4), t0, &mut out);
        assert!(out.is_empty());
        p.on_input(spans(3), t0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].item_count(), 11);

        out.clear();
        p.on_input(spans(2), t0, &mut out);
        p.on_tick(t0 + Duration::from_millis(999), &mut out);
        assert!(out.is_empty(), "not before the timeout");
        p.on_tick(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].item_count(), 2);

        out.clear();
        p.on_input(spans(1), t0, &mut out);
        p.on_shutdown(&mut out);
        assert_eq!(out[0].item_count(), 1);
    }
}
