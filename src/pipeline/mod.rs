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
    items: usize,
    _permit: OwnedSemaphorePermit,
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
                    _permit: permit,
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
        chain: Vec<Box<dyn Processor>>,
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
        let runner = Runner {
            signal,
            chain,
            exporters,
            counters,
            hard_stop,
        };
        let task = tokio::spawn(runner.run(rx));
        Pipeline {
            id: id.to_string(),
            signal,
            input,
            task,
        }
    }
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
            let payload = Payload::new(b);
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
