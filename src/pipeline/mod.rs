//! Pipelines: receivers → bounded input queue → processors → fan-out to exporters.
//!
//! The input queue is bounded in items (spans, points or records) by a semaphore; a receiver
//! takes permits before it hands a request over and the permits travel with the request until
//! every exporter has it in its own bounded sending queue. So memory is bounded end to end, and a
//! full pipeline shows up at the receiver, which refuses retryably or waits (`when_full`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exporter::{ExporterHandle, Payload};
use crate::processor::{self, Processor};
use crate::signal::{Batch, Signal};
use crate::telemetry::PipelineCounters;

/// What a receiver does when a pipeline's queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    /// Answer UNAVAILABLE with RetryInfo / 503 with Retry-After, so the client retries.
    #[default]
    Refuse,
    /// Wait for room (the client's own deadline bounds the wait).
    Block,
}

struct Queued {
    batch: Batch,
    /// Items to take off the queue gauge when this is taken from the queue (0 for the parts a
    /// sharded pipeline's router hands on).
    items: usize,
    /// Released when every part of the request is with the exporters.
    _permit: Arc<OwnedSemaphorePermit>,
}

/// The sending side of one pipeline's input queue.
#[derive(Clone)]
pub struct PipelineInput {
    id: Arc<str>,
    tx: mpsc::UnboundedSender<Queued>,
    sem: Arc<Semaphore>,
    capacity: u32,
    counters: PipelineCounters,
}

/// Every pipeline one receiver feeds for one signal.
#[derive(Clone, Default)]
pub struct Fanin {
    inputs: Vec<PipelineInput>,
}

/// Why a receiver could not hand a request over.
#[derive(Debug, thiserror::Error)]
pub enum HandOffError {
    #[error("pipeline {0} is full")]
    Full(String),
    #[error("pipeline {0} is shutting down")]
    Closed(String),
}

impl Fanin {
    pub fn new(inputs: Vec<PipelineInput>) -> Fanin {
        Fanin { inputs }
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Hand a batch to every pipeline, all or nothing: permits for all of them first.
    pub async fn send(&self, batch: Batch, when_full: WhenFull) -> Result<(), HandOffError> {
        let items = batch.item_count();
        let mut permits = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let n = (items.max(1) as u32).min(input.capacity);
            let permit = match when_full {
                WhenFull::Refuse => {
                    input
                        .sem
                        .clone()
                        .try_acquire_many_owned(n)
                        .map_err(|e| match e {
                            tokio::sync::TryAcquireError::NoPermits => {
                                HandOffError::Full(input.id.to_string())
                            }
                            tokio::sync::TryAcquireError::Closed => {
                                HandOffError::Closed(input.id.to_string())
                            }
                        })?
                }
                WhenFull::Block => input
                    .sem
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .map_err(|_| HandOffError::Closed(input.id.to_string()))?,
            };
            permits.push(permit);
        }
        let last = self.inputs.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (i, (input, permit)) in self.inputs.iter().zip(permits).enumerate() {
            let b = if i == last {
                batch.take()
            } else {
                batch.clone()
            };
            let Some(b) = b else { break };
            input.counters.queue_items.inc_by(items as i64);
            if input
                .tx
                .send(Queued {
                    batch: b,
                    items,
                    _permit: Arc::new(permit),
                })
                .is_err()
            {
                input.counters.queue_items.dec_by(items as i64);
                return Err(HandOffError::Closed(input.id.to_string()));
            }
        }
        Ok(())
    }
}

/// A running pipeline.
pub struct Pipeline {
    pub id: String,
    pub signal: Signal,
    pub input: PipelineInput,
    pub task: JoinHandle<()>,
}

impl Pipeline {
    /// Start the pipeline task. `hard_stop` fires when the shutdown grace period has run out:
    /// whatever is still held is then counted as dropped.
    pub fn start(
        id: &str,
        signal: Signal,
        queue_size: usize,
        mut chains: Vec<Vec<Box<dyn Processor>>>,
        exporters: Vec<ExporterHandle>,
        counters: PipelineCounters,
        hard_stop: CancellationToken,
    ) -> Pipeline {
        let capacity = queue_size
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize) as u32;
        let (tx, rx) = mpsc::unbounded_channel();
        counters.queue_capacity.set(capacity as i64);
        let input = PipelineInput {
            id: Arc::from(id),
            tx,
            sem: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            counters: counters.clone(),
        };
        let task = if chains.len() <= 1 {
            let runner = Runner {
                signal,
                chain: chains.pop().unwrap_or_default(),
                exporters,
                counters,
                hard_stop,
            };
            tokio::spawn(runner.run(rx))
        } else {
            // One runner per shard, each with its own processors; a router sends every span
            // of a trace to the same shard, so each shard sees whole traces.
            let mut shard_txs = Vec::new();
            let mut shard_tasks = Vec::new();
            for chain in chains {
                let (stx, srx) = mpsc::unbounded_channel();
                let runner = Runner {
                    signal,
                    chain,
                    exporters: exporters.clone(),
                    counters: counters.clone(),
                    hard_stop: hard_stop.clone(),
                };
                shard_txs.push(stx);
                shard_tasks.push(tokio::spawn(runner.run(srx)));
            }
            tokio::spawn(route(rx, shard_txs, shard_tasks, counters, hard_stop))
        };
        Pipeline {
            id: id.to_string(),
            signal,
            input,
            task,
        }
    }
}

/// Split each request by trace id over the shards; the shards are bounded by the pipeline's
/// permits, which travel with every part.
async fn route(
    mut rx: mpsc::UnboundedReceiver<Queued>,
    shards: Vec<mpsc::UnboundedSender<Queued>>,
    tasks: Vec<JoinHandle<()>>,
    counters: PipelineCounters,
    hard_stop: CancellationToken,
) {
    loop {
        let q = tokio::select! {
            biased;
            q = rx.recv() => match q { Some(q) => q, None => break },
            _ = hard_stop.cancelled() => break,
        };
        counters.queue_items.dec_by(q.items as i64);
        let parts = match q.batch {
            Batch::Traces(r) => split_by_trace(r, shards.len()),
            other => vec![(0, other)],
        };
        for (shard, batch) in parts {
            let Some(tx) = shards.get(shard) else {
                continue;
            };
            let part = Queued {
                items: 0,
                batch,
                _permit: q._permit.clone(),
            };
            if let Err(e) = tx.send(part) {
                let n = e.0.batch.item_count();
                counters.dropped(e.0.batch.signal(), n, "a pipeline shard has stopped");
            }
        }
    }
    rx.close();
    while let Some(q) = rx.recv().await {
        counters.queue_items.dec_by(q.items as i64);
        counters.dropped(q.batch.signal(), q.items, "shutdown grace period ran out");
    }
    drop(shards);
    for t in tasks {
        let _ = t.await;
    }
}

/// The shard of a trace id: FNV-1a over its bytes, then murmur3's finalizer so that the low bits
/// are well mixed too (cheap and stable).
pub fn shard_of(trace_id: &[u8], shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in trace_id {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % shards.max(1) as u64) as usize
}

/// Split a request into one request per shard, keeping each span with its resource and scope.
fn split_by_trace(
    r: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    shards: usize,
) -> Vec<(usize, Batch)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    let mut out: Vec<ExportTraceServiceRequest> =
        vec![ExportTraceServiceRequest::default(); shards];
    for rs in r.resource_spans {
        let mut per: Vec<Option<ResourceSpans>> = vec![None; shards];
        for ss in rs.scope_spans {
            let mut scoped: Vec<Option<ScopeSpans>> = vec![None; shards];
            for span in ss.spans {
                let i = shard_of(&span.trace_id, shards);
                scoped[i]
                    .get_or_insert_with(|| ScopeSpans {
                        scope: ss.scope.clone(),
                        schema_url: ss.schema_url.clone(),
                        spans: Vec::new(),
                    })
                    .spans
                    .push(span);
            }
            for (i, s) in scoped.into_iter().enumerate() {
                if let Some(s) = s {
                    per[i]
                        .get_or_insert_with(|| ResourceSpans {
                            resource: rs.resource.clone(),
                            schema_url: rs.schema_url.clone(),
                            scope_spans: Vec::new(),
                        })
                        .scope_spans
                        .push(s);
                }
            }
        }
        for (i, p) in per.into_iter().enumerate() {
            if let (Some(p), Some(o)) = (p, out.get_mut(i)) {
                o.resource_spans.push(p);
            }
        }
    }
    out.into_iter()
        .enumerate()
        .filter(|(_, r)| !r.resource_spans.is_empty())
        .map(|(i, r)| (i, Batch::Traces(r)))
        .collect()
}

struct Runner {
    signal: Signal,
    chain: Vec<Box<dyn Processor>>,
    exporters: Vec<ExporterHandle>,
    counters: PipelineCounters,
    hard_stop: CancellationToken,
}

impl Runner {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Queued>) {
        let tick_every = self
            .chain
            .iter()
            .filter_map(|p| p.tick_interval())
            .min()
            .unwrap_or(Duration::from_secs(3600));
        let mut ticker = tokio::time::interval(tick_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ticking = self.chain.iter().any(|p| p.tick_interval().is_some());
        loop {
            tokio::select! {
                biased;
                msg = rx.recv() => {
                    let Some(q) = msg else { break };
                    self.counters.queue_items.dec_by(q.items as i64);
                    let out = processor::run_chain(&mut self.chain, vec![q.batch], Instant::now());
                    if !self.deliver(out).await {
                        break;
                    }
                    // The permit (q._permit) is released here, once exporters hold the data.
                }
                _ = self.hard_stop.cancelled() => break,
                _ = ticker.tick(), if ticking => {
                    let out = processor::tick_chain(&mut self.chain, Instant::now());
                    if !self.deliver(out).await {
                        break;
                    }
                }
            }
        }
        // Input closed (receivers stopped) or the hard stop fired: flush what stages hold.
        let out = processor::shutdown_chain(&mut self.chain, Instant::now());
        self.deliver(out).await;
        // Whatever is still queued after a hard stop is counted, never silently lost.
        rx.close();
        while let Some(q) = rx.recv().await {
            self.counters.queue_items.dec_by(q.items as i64);
            self.counters
                .dropped(self.signal, q.items, "shutdown grace period ran out");
        }
    }

    /// Fan a batch out to every exporter; false once the hard stop has fired.
    async fn deliver(&mut self, batches: Vec<Batch>) -> bool {
        for b in batches {
            let items = b.item_count();
            if items == 0 {
                continue;
            }
            let payload =
                if !self.exporters.is_empty() && self.exporters.iter().all(|e| e.wire_only()) {
                    Payload::wire(b)
                } else {
                    Payload::new(b)
                };
            for e in &self.exporters {
                tokio::select! {
                    biased;
                    _ = e.enqueue(payload.clone()) => {}
                    _ = self.hard_stop.cancelled() => {
                        self.counters.dropped(self.signal, items, "shutdown grace period ran out");
                        return false;
                    }
                }
            }
        }
        !self.hard_stop.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[test]
    fn splitting_keeps_traces_together_with_their_resource_and_scope() {
        let span = |t: u8, s: u8| Span {
            trace_id: vec![t; 16],
            span_id: vec![s; 8],
            ..Default::default()
        };
        let scope = |n: &str| ScopeSpans {
            scope: Some(InstrumentationScope {
                name: n.into(),
                ..Default::default()
            }),
            spans: Vec::new(),
            ..Default::default()
        };
        let mut a = scope("a");
        a.spans = (0..20u8).map(|t| span(t, 1)).collect();
        let mut b = scope("b");
        b.spans = (0..20u8).map(|t| span(t, 2)).collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![a, b],
                ..Default::default()
            }],
        };
        let parts = split_by_trace(req, 4);
        assert_eq!(parts.len(), 4, "20 traces spread over all 4 shards");
        let mut seen = 0;
        for (shard, batch) in parts {
            let Batch::Traces(r) = batch else { panic!() };
            for rs in &r.resource_spans {
                for ss in &rs.scope_spans {
                    let name = ss
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    for s in &ss.spans {
                        assert_eq!(shard_of(&s.trace_id, 4), shard);
                        assert_eq!(name, if s.span_id[0] == 1 { "a" } else { "b" });
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(seen, 40);
    }
}
