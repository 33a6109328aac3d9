//! `batch`: combine small requests into larger ones, as the Collector's batch processor does,
//! so exporters send fewer, larger requests. Requests are concatenated, never split.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Processor, WithFacts, dropping_facts};
use crate::config::{Problems, Validate, duration};
use crate::genai::Facts;
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
    /// The facts handed along with what is held (of some of its spans, or none).
    held_facts: Option<Facts>,
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
            held_facts: None,
            items: 0,
            since: None,
            input_mark: None,
            held_mark: None,
        }
    }

    fn flush(&mut self, out: &mut Vec<WithFacts>) {
        let facts = self.held_facts.take();
        if let Some(b) = self.held.take() {
            out.push((b, facts));
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
        dropping_facts(out, |with| self.on_input_with(batch, None, now, with));
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_tick_with(now, with));
    }

    fn on_shutdown(&mut self, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_shutdown_with(with));
    }

    /// The facts of the batches merged are merged too.
    fn on_input_with(
        &mut self,
        batch: Batch,
        facts: Option<Facts>,
        now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
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
                self.held_facts = facts;
                self.since = Some(now);
            }
            Some(h) => match append(h, batch) {
                Ok(()) => match (&mut self.held_facts, facts) {
                    (Some(held), Some(f)) => held.extend(f),
                    (held @ None, Some(f)) => *held = Some(f),
                    (_, None) => {}
                },
                Err(other) => out.push((other, facts)),
            },
        }
        self.items += n;
        if self.items >= self.config.send_batch_size {
            self.flush(out);
        }
    }

    fn on_tick_with(&mut self, now: Instant, out: &mut Vec<WithFacts>) {
        if self
            .since
            .is_some_and(|t| now.duration_since(t) >= self.config.timeout)
        {
            self.flush(out);
        }
    }

    fn on_shutdown_with(&mut self, out: &mut Vec<WithFacts>) {
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

    #[test]
    fn the_facts_of_batches_merged_are_merged() {
        use crate::genai::SpanFacts;
        let with_id = |id: u8| Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            ..Default::default()
        };
        let request = |s: Span| {
            Batch::Traces(ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![s],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            })
        };
        let facts = |s: &Span, tokens: u64| {
            let mut f = Facts::default();
            f.insert(
                s,
                SpanFacts {
                    input_tokens: Some(tokens),
                    ..Default::default()
                },
            );
            f
        };
        let mut p = BatchProcessor::new(BatchConfig {
            send_batch_size: 3,
            timeout: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        let mut out = Vec::new();
        let (a, b, c) = (with_id(1), with_id(2), with_id(3));
        p.on_input_with(request(a.clone()), Some(facts(&a, 10)), t0, &mut out);
        // A batch without facts adds none (its spans are read where needed).
        p.on_input_with(request(b.clone()), None, t0, &mut out);
        p.on_input_with(request(c.clone()), Some(facts(&c, 30)), t0, &mut out);
        assert_eq!(out.len(), 1, "three spans: released");
        let (batch, facts) = out.pop().expect("one batch");
        assert_eq!(batch.item_count(), 3);
        let facts = facts.expect("facts");
        assert_eq!(facts.len(), 2);
        assert_eq!(facts.get(&a).and_then(|f| f.input_tokens), Some(10));
        assert_eq!(facts.get(&b), None);
        assert_eq!(facts.get(&c).and_then(|f| f.input_tokens), Some(30));
    }
}
