//! Pipelines: receivers → bounded input queue → processors → fan-out to exporters.
//!
//! The input queue is bounded in items (spans, points or records) by a semaphore; a receiver
//! takes permits before it hands a request over and the permits travel with the request until
//! every exporter has it in its own bounded sending queue. So memory is bounded end to end, and a
//! full pipeline shows up at the receiver, which refuses retryably or waits (`when_full`).
//!
//! With `storage`, a request is also appended to the pipeline's log before the receiver answers,
//! and released once the exporters have its data (see [`storage`]).

pub mod storage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exporter::helper::{ExporterHandle, Payload};
use crate::processor::{self, Marked, Processor};
use crate::signal::{Batch, Encodable, Signal};
use crate::telemetry::PipelineCounters;
use storage::{PipelineLog, RecordToken};

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
    /// The request, shared with the other pipelines it went to (see [`Fanin::send`]).
    data: Arc<Encodable>,
    /// Items to take off the queue gauge when this is taken from the queue (0 for the parts a
    /// sharded pipeline's router hands on).
    items: usize,
    /// Released when every part of the request is with the exporters.
    _permit: Arc<Permit>,
    /// With a pipeline log: the request's record, kept until every part has been processed.
    record: Option<Arc<RecordToken>>,
}

impl Queued {
    fn mark(&self) -> Option<u64> {
        self.record.as_ref().map(|r| r.mark)
    }
}

/// A pipeline queue's room: items, and bytes (KiB of the requests' encoded size).
struct Budget {
    items: Arc<Semaphore>,
    items_cap: u32,
    kib: Arc<Semaphore>,
    kib_cap: u32,
}

/// Room taken in a pipeline queue, given back when dropped.
struct Permit {
    _items: OwnedSemaphorePermit,
    _kib: OwnedSemaphorePermit,
}

enum NoRoom {
    Full,
    Closed,
}

impl Budget {
    fn new(items: usize, bytes: u64) -> Budget {
        let cap = |n: u64| n.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize) as u64) as u32;
        let (items_cap, kib_cap) = (cap(items as u64), cap(bytes.div_ceil(1024)));
        Budget {
            items: Arc::new(Semaphore::new(items_cap as usize)),
            items_cap,
            kib: Arc::new(Semaphore::new(kib_cap as usize)),
            kib_cap,
        }
    }

    /// Room for a request of `items` items and `bytes` encoded bytes. A request larger than
    /// the whole queue takes all of it (it waits for an empty queue rather than never fitting).
    async fn take(&self, items: usize, bytes: usize, wait: bool) -> Result<Permit, NoRoom> {
        let n = (items.max(1) as u64).min(u64::from(self.items_cap)) as u32;
        let k = (bytes.div_ceil(1024).max(1) as u64).min(u64::from(self.kib_cap)) as u32;
        let closed = |_| NoRoom::Closed;
        if wait {
            let i = self
                .items
                .clone()
                .acquire_many_owned(n)
                .await
                .map_err(closed)?;
            let b = self
                .kib
                .clone()
                .acquire_many_owned(k)
                .await
                .map_err(closed)?;
            return Ok(Permit { _items: i, _kib: b });
        }
        let no = |e| match e {
            tokio::sync::TryAcquireError::NoPermits => NoRoom::Full,
            tokio::sync::TryAcquireError::Closed => NoRoom::Closed,
        };
        let i = self.items.clone().try_acquire_many_owned(n).map_err(no)?;
        let b = self.kib.clone().try_acquire_many_owned(k).map_err(no)?;
        Ok(Permit { _items: i, _kib: b })
    }
}

/// The sending side of one pipeline's input queue.
#[derive(Clone)]
pub struct PipelineInput {
    id: Arc<str>,
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Budget>,
    counters: PipelineCounters,
    log: Option<Arc<PipelineLog>>,
    /// Whether the pipeline changes what it is given (it has processors, or shards to split
    /// requests over), so needs a request of its own.
    mutates: bool,
}

impl PipelineInput {
    async fn room(&self, items: usize, bytes: usize, wait: bool) -> Result<Permit, HandOffError> {
        self.budget
            .take(items, bytes, wait)
            .await
            .map_err(|e| match e {
                NoRoom::Full => HandOffError::Full(self.id.to_string()),
                NoRoom::Closed => HandOffError::Closed(self.id.to_string()),
            })
    }

    fn put(
        &self,
        data: Arc<Encodable>,
        items: usize,
        permit: Permit,
        record: Option<Arc<RecordToken>>,
    ) -> Result<(), HandOffError> {
        self.counters.queue_items.inc_by(items as i64);
        let q = Queued {
            data,
            items,
            _permit: Arc::new(permit),
            record,
        };
        if self.tx.send(q).is_err() {
            self.counters.queue_items.dec_by(items as i64);
            return Err(HandOffError::Closed(self.id.to_string()));
        }
        Ok(())
    }
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
    /// The pipeline's log cannot take the request: full, the disk full, or failing.
    #[error("pipeline {pipeline}: {message}")]
    Storage { pipeline: String, message: String },
    /// The request is larger than the pipeline's whole log (`storage_max_mib`): never retried.
    #[error("pipeline {pipeline}: {message}")]
    TooLargeForStorage { pipeline: String, message: String },
}

impl Fanin {
    pub fn new(inputs: Vec<PipelineInput>) -> Fanin {
        Fanin { inputs }
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Hand a batch to every pipeline, all or nothing: permits for all of them first.
    ///
    /// Pipelines that only pass the request on share it, with its encoded size and encoding,
    /// computed once. A pipeline whose stages change it needs its own: beside one that shares
    /// it, it copies the request when it takes it (not at all if the others are done with it by
    /// then); when every pipeline changes it, copies are made here and the last pipeline gets the
    /// request itself, as before (copies made later could all be made at once, one too many).
    pub async fn send(&self, batch: Batch, when_full: WhenFull) -> Result<(), HandOffError> {
        let items = batch.item_count();
        let data = Arc::new(Encodable::new(batch));
        let bytes = data.encoded_len();
        let mut permits = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            permits.push(
                input
                    .room(items, bytes, when_full == WhenFull::Block)
                    .await?,
            );
        }
        // With a log: the request is on disk in every pipeline's log before anyone has it.
        let mut records: Vec<Option<Arc<RecordToken>>> = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let Some(log) = &input.log else {
                records.push(None);
                continue;
            };
            match log
                .append(data.signal(), items, data.encoding().clone())
                .await
            {
                Ok(token) => records.push(Some(token)),
                // Records already written for the other pipelines are released as their tokens
                // drop here: the request is refused as a whole and the client sends it again.
                Err(e @ crate::exporter::helper::wal::WalError::TooLarge(_)) => {
                    return Err(HandOffError::TooLargeForStorage {
                        pipeline: input.id.to_string(),
                        message: e.to_string(),
                    });
                }
                Err(e) => {
                    return Err(HandOffError::Storage {
                        pipeline: input.id.to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
        let shared = self.inputs.iter().any(|i| !i.mutates);
        let last = self.inputs.len().saturating_sub(1);
        let mut data = Some(data);
        for (i, ((input, permit), record)) in
            self.inputs.iter().zip(permits).zip(records).enumerate()
        {
            let d = if i == last {
                data.take()
            } else if shared {
                data.clone()
            } else {
                data.as_deref().map(|d| Arc::new(d.copy()))
            };
            let Some(d) = d else { break };
            input.put(d, items, permit, record)?;
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
    /// With `storage`: the log, and the tasks that replay what the last run left and write
    /// acknowledgements (ends after [`PipelineLog::close`]).
    pub log: Option<Arc<PipelineLog>>,
    pub storage_tasks: Vec<JoinHandle<()>>,
}

/// Where and how a pipeline keeps its log (`service.pipelines.<id>.storage`).
#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub sync_interval: Duration,
}

/// What a pipeline is made of.
pub struct PipelineParts {
    pub queue_size: usize,
    /// The queue's byte budget (the encoded size of the requests in it).
    pub queue_max_bytes: u64,
    pub chains: Vec<Vec<Box<dyn Processor>>>,
    pub exporters: Vec<ExporterHandle>,
    pub storage: Option<StorageSettings>,
}

impl Pipeline {
    /// Start the pipeline task. `hard_stop` fires when the shutdown grace period has run out:
    /// whatever is still held is then counted as dropped. `stop_intake` fires when receivers
    /// stop: the replay of the log (if any) stops too, leaving the rest for the next start.
    pub fn start(
        id: &str,
        signal: Signal,
        parts: PipelineParts,
        counters: PipelineCounters,
        hard_stop: CancellationToken,
        stop_intake: CancellationToken,
    ) -> Result<Pipeline, String> {
        let PipelineParts {
            queue_size,
            queue_max_bytes,
            mut chains,
            exporters,
            storage,
        } = parts;
        let budget = Arc::new(Budget::new(queue_size, queue_max_bytes));
        let mutates = chains.len() > 1 || chains.iter().any(|c| !c.is_empty());
        let mut storage_tasks = Vec::new();
        let (log, found) = match &storage {
            Some(st) => {
                let (log, found, task) = PipelineLog::open(
                    id,
                    &st.dir,
                    st.max_bytes,
                    st.sync_interval,
                    chains.len(),
                    counters.clone(),
                    hard_stop.clone(),
                )
                .map_err(|e| format!("pipeline {id}: storage: {e}"))?;
                storage_tasks.push(task);
                (Some(log), found.requests)
            }
            None => (None, 0),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        counters.queue_capacity.set(i64::from(budget.items_cap));
        let input = PipelineInput {
            id: Arc::from(id),
            tx,
            budget,
            counters: counters.clone(),
            log: log.clone(),
            mutates,
        };
        let task = if chains.len() <= 1 {
            let runner = Runner {
                signal,
                chain: chains.pop().unwrap_or_default(),
                exporters,
                counters,
                hard_stop,
                log: log.clone(),
                shard: 0,
            };
            tokio::spawn(runner.run(rx))
        } else {
            // One runner per shard, each with its own processors; a router sends every span
            // of a trace to the same shard, so each shard sees whole traces.
            let mut shard_txs = Vec::new();
            let mut shard_tasks = Vec::new();
            for (shard, chain) in chains.into_iter().enumerate() {
                let (stx, srx) = mpsc::unbounded_channel();
                let runner = Runner {
                    signal,
                    chain,
                    exporters: exporters.clone(),
                    counters: counters.clone(),
                    hard_stop: hard_stop.clone(),
                    log: log.clone(),
                    shard,
                };
                shard_txs.push(stx);
                shard_tasks.push(tokio::spawn(runner.run(srx)));
            }
            tokio::spawn(route(rx, shard_txs, shard_tasks, counters, hard_stop))
        };
        if let Some(log) = &log
            && found > 0
        {
            storage_tasks.push(tokio::spawn(replay(
                log.clone(),
                input.clone(),
                signal,
                stop_intake,
            )));
        }
        Ok(Pipeline {
            id: id.to_string(),
            signal,
            input,
            task,
            log,
            storage_tasks,
        })
    }
}

/// Send what the last run left in the log through the pipeline again, waiting for room in its
/// queue; stop when the receivers do (the rest stays for the next start).
async fn replay(
    log: Arc<PipelineLog>,
    input: PipelineInput,
    signal: Signal,
    stop: CancellationToken,
) {
    let (mut requests, mut items_total) = (0u64, 0u64);
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = log.next_left_by_last_run() => r,
        };
        let record = match next {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(pipeline = %log.id(), error = %e, "pipeline log: cannot read what the last run left; the rest is replayed by the next start");
                break;
            }
        };
        let batch = match Batch::decode(record.signal, &record.payload) {
            Ok(b) if b.signal() == signal => b,
            Ok(b) => {
                tracing::error!(pipeline = %log.id(), signal = %b.signal(), items = record.items, "pipeline log: a record of another signal; discarded");
                log.counters().dropped(
                    b.signal(),
                    record.items,
                    "a record of another signal in the pipeline log",
                );
                log.discard(record.id);
                continue;
            }
            Err(e) => {
                log.counters().dropped(
                    signal,
                    record.items,
                    &format!("a record of the pipeline log does not decode: {e}"),
                );
                log.discard(record.id);
                continue;
            }
        };
        let items = batch.item_count();
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            p = input.room(items, record.payload.len(), true) => p,
        };
        let Ok(permit) = permit else { break };
        let token = log.register(record.id);
        let mark = token.mark;
        // The record is the batch's encoding: a pipeline that sends it unchanged reuses it.
        let data = Arc::new(Encodable::with_encoding(batch, record.payload));
        if input.put(data, items, permit, Some(token)).is_err() {
            // The pipeline has stopped: the record stays in the log for the next start.
            log.abandon(mark);
            break;
        }
        requests += 1;
        items_total += items as u64;
        log.counters().replayed.inc_by(items as u64);
    }
    tracing::info!(
        pipeline = %log.id(),
        requests,
        items = items_total,
        "pipeline log: replayed what the last run left (delivery is at least once: some may have been delivered before)"
    );
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
        // Only traces are split (which changes them); the rest goes on as it came.
        let parts = if q.data.signal() == Signal::Traces {
            match Encodable::into_batch(q.data) {
                Batch::Traces(r) => split_by_trace(r, shards.len())
                    .into_iter()
                    .map(|(shard, b)| (shard, Arc::new(Encodable::new(b))))
                    .collect(),
                other => vec![(0, Arc::new(Encodable::new(other)))],
            }
        } else {
            vec![(0, q.data)]
        };
        for (shard, data) in parts {
            let Some(tx) = shards.get(shard) else {
                continue;
            };
            let part = Queued {
                items: 0,
                data,
                _permit: q._permit.clone(),
                record: q.record.clone(),
            };
            if let Err(e) = tx.send(part) {
                // Counted as dropped, and kept in the log (if any) for the next start.
                if let Some(r) = &e.0.record {
                    r.abandon();
                }
                let n = e.0.data.batch().item_count();
                counters.dropped(e.0.data.signal(), n, "a pipeline shard has stopped");
            }
        }
    }
    rx.close();
    while let Some(q) = rx.recv().await {
        counters.queue_items.dec_by(q.items as i64);
        counters.dropped(q.data.signal(), q.items, "shutdown grace period ran out");
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
pub fn split_by_trace(
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
    /// With `storage`: the log this runner reports what it holds to, as shard `shard`.
    log: Option<Arc<PipelineLog>>,
    shard: usize,
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
                    let mark = q.mark();
                    // Without processors the request goes on as it came, still shared.
                    let out = if self.chain.is_empty() {
                        vec![(q.data, mark)]
                    } else {
                        let batch = Encodable::into_batch(q.data);
                        shared(processor::run_chain_marked(&mut self.chain, vec![(batch, mark)], Instant::now()))
                    };
                    if !self.deliver(out).await {
                        break;
                    }
                    // The permit (q._permit) is released here, once exporters hold the data, and
                    // the record (q.record) is processed: what is left of it is held or sent.
                    drop(q._permit);
                    drop(q.record);
                }
                _ = self.hard_stop.cancelled() => break,
                _ = ticker.tick(), if ticking => {
                    let out = shared(processor::tick_chain_marked(&mut self.chain, Instant::now()));
                    if !self.deliver(out).await {
                        break;
                    }
                }
            }
        }
        // Input closed (receivers stopped) or the hard stop fired: flush what stages hold.
        let out = shared(processor::shutdown_chain_marked(
            &mut self.chain,
            Instant::now(),
        ));
        self.deliver(out).await;
        // Whatever is still queued after a hard stop is counted, never silently lost (and stays
        // in the log, if any: nothing is released after the hard stop).
        rx.close();
        while let Some(q) = rx.recv().await {
            self.counters.queue_items.dec_by(q.items as i64);
            self.counters
                .dropped(self.signal, q.items, "shutdown grace period ran out");
        }
    }

    /// Fan batches out to every exporter; false once the hard stop has fired.
    async fn deliver(&mut self, batches: Vec<(Arc<Encodable>, Option<u64>)>) -> bool {
        let wire = !self.exporters.is_empty() && self.exporters.iter().all(|e| e.wire_only());
        let payloads: Vec<Arc<Payload>> = batches
            .into_iter()
            .filter(|(d, _)| d.batch().item_count() > 0)
            .map(|(d, mark)| {
                let release = self.log.as_ref().and_then(|l| l.guard(mark));
                Payload::of(d, release, wire)
            })
            .collect();
        // The batches let out carry their marks now: only then may the log learn that the
        // processors hold less (see `storage`).
        if let Some(log) = &self.log {
            log.set_held(self.shard, processor::held_mark(&self.chain));
        }
        for payload in payloads {
            let items = payload.items;
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

/// Batches out of the processors, each to be encoded at most once.
fn shared(batches: Vec<Marked>) -> Vec<(Arc<Encodable>, Option<u64>)> {
    batches
        .into_iter()
        .map(|(b, mark)| (Arc::new(Encodable::new(b)), mark))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_as_well_as_items() {
        // 1000 items, 8 KiB.
        let b = Budget::new(1000, 8 * 1024);
        let first = b.take(10, 6 * 1024, false).await;
        assert!(first.is_ok());
        // 10 items fit, 3 KiB do not: refused although the items would fit.
        assert!(matches!(
            b.take(10, 3 * 1024, false).await,
            Err(NoRoom::Full)
        ));
        let third = b.take(10, 2 * 1024, false).await;
        assert!(third.is_ok());
        drop(first);
        // A request larger than the whole budget takes all of it, once the queue is empty.
        let all = b.take(1, 1 << 20, false).await;
        assert!(matches!(all, Err(NoRoom::Full)), "2 KiB are still taken");
        drop(third);
        assert!(b.take(1, 1 << 20, false).await.is_ok());
    }

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    /// An input of `mutates`, and its queue, for a Fanin without pipeline tasks.
    fn input(
        id: &str,
        mutates: bool,
    ) -> (PipelineInput, mpsc::UnboundedReceiver<Queued>, Arc<Budget>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Budget::new(1000, 1 << 20));
        let metrics = crate::telemetry::SelfMetrics::new();
        let input = PipelineInput {
            id: Arc::from(id),
            tx,
            budget: budget.clone(),
            counters: metrics.pipeline(id),
            log: None,
            mutates,
        };
        (input, rx, budget)
    }

    fn request(spans: u8) -> Batch {
        Batch::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (1..=spans)
                        .map(|i| Span {
                            trace_id: vec![i; 16],
                            span_id: vec![i; 8],
                            name: "x".repeat(100),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    /// Hand `request(spans)` to inputs of the given kinds; what each queue got.
    async fn fan_out(mutates: &[bool], spans: u8) -> (Vec<Queued>, Vec<Arc<Budget>>) {
        let (mut inputs, mut queues, mut budgets) = (Vec::new(), Vec::new(), Vec::new());
        for (i, m) in mutates.iter().enumerate() {
            let (input, rx, budget) = input(&format!("traces/{i}"), *m);
            inputs.push(input);
            queues.push(rx);
            budgets.push(budget);
        }
        let fanin = Fanin::new(inputs);
        assert!(fanin.send(request(spans), WhenFull::Refuse).await.is_ok());
        let got = queues
            .iter_mut()
            .map(|rx| rx.try_recv().expect("queued"))
            .collect();
        (got, budgets)
    }

    #[tokio::test]
    async fn pipelines_that_pass_a_request_on_share_it() {
        let (got, budgets) = fan_out(&[false, false, false], 10).await;
        assert!(Arc::ptr_eq(&got[0].data, &got[1].data));
        assert!(Arc::ptr_eq(&got[1].data, &got[2].data));
        assert_eq!(got[0].data.batch(), &request(10));
        assert!(got.iter().all(|q| q.items == 10));
        // Each queue's byte budget is charged the request's encoded size, as before: a span
        // is 2 + 16 + 2 + 8 + 2 + 100 = 130 bytes, 133 with its tag and 2-byte length; the
        // scope's 10 are 1330 bytes, 1333 in the resource, 1336 in the request: 2 KiB.
        assert_eq!(got[0].data.encoded_len(), 1336);
        for b in budgets {
            assert_eq!(b.kib.available_permits(), 1024 - 2);
            assert_eq!(b.items.available_permits(), 1000 - 10);
        }
    }

    #[tokio::test]
    async fn pipelines_that_change_a_request_get_their_own_and_the_last_the_original() {
        let (got, _) = fan_out(&[true, true], 3).await;
        assert!(!Arc::ptr_eq(&got[0].data, &got[1].data));
        // Nothing else holds either: each pipeline takes its batch without copying it again.
        for q in &got {
            assert_eq!(Arc::strong_count(&q.data), 1);
            assert_eq!(q.data.batch(), &request(3));
        }
    }

    #[tokio::test]
    async fn beside_one_that_passes_it_on_a_changing_pipeline_copies_when_it_takes() {
        let (mut got, _) = fan_out(&[true, false], 3).await;
        assert!(Arc::ptr_eq(&got[0].data, &got[1].data));
        let passing = got.pop().expect("two");
        let changing = got.pop().expect("two");
        let Batch::Traces(mut r) = Encodable::into_batch(changing.data) else {
            panic!("traces")
        };
        r.resource_spans.clear();
        assert_eq!(
            passing.data.batch(),
            &request(3),
            "the shared one is intact"
        );
        assert_eq!(Arc::strong_count(&passing.data), 1);
    }

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
