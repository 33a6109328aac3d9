//! The sending queue and retry loop shared by every exporter: in memory, or on disk when
//! `sending_queue.storage` is set (see [`super::wal`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::wal::{RecordId, Wal, WalError};
use super::{ExportError, Payload, QueueConfig, RetryConfig, Transport};
use crate::telemetry::ExporterCounters;

/// Where pipelines put data for one exporter. Cloned into every pipeline that uses it; the queue
/// closes when the last clone is dropped, and the consumers then drain it and stop.
#[derive(Clone)]
pub struct ExporterHandle {
    id: Arc<str>,
    queue: Backlog,
    block: bool,
    wire_only: bool,
    counters: ExporterCounters,
}

/// Where a handle puts requests: exactly one of the two queues.
#[derive(Clone)]
enum Backlog {
    Memory(Memory),
    Disk(Arc<CloseOnDrop>),
}

/// The in-memory queue: bounded in requests (the channel) and in bytes (`queue_max_mib`, KiB
/// permits held by each request until it has been delivered or given up on).
#[derive(Clone)]
struct Memory {
    tx: mpsc::Sender<Queued>,
    kib: Arc<Semaphore>,
    kib_cap: u32,
}

type Queued = (Arc<Payload>, OwnedSemaphorePermit);

/// The on-disk queue of one exporter, shared by its handle and its consumers.
struct Disk {
    wal: Arc<Wal>,
    /// A request was written, or the queue closed.
    readable: Notify,
    /// Room was made.
    room: Notify,
    closed: AtomicBool,
    counters: ExporterCounters,
    hard_stop: CancellationToken,
}

impl Disk {
    fn publish(&self) {
        self.counters.storage_bytes.set(self.wal.usage().0 as i64);
        self.counters.queue_size.set(self.wal.pending() as i64);
    }

    async fn append(self: &Arc<Self>, p: &Payload, block: bool) {
        let (signal, items) = (p.signal(), p.items);
        let bytes = p.protobuf().clone();
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let d = self.clone();
            let b = bytes.clone();
            let r = tokio::task::spawn_blocking(move || d.wal.append(signal, items, &b))
                .await
                .unwrap_or_else(|e| Err(WalError::Io(format!("the writer task failed: {e}"))));
            match r {
                Ok(_) => {
                    self.readable.notify_one();
                    self.publish();
                    return;
                }
                Err(e) if e.is_full() && block => {
                    // A full device gives room back as other files shrink too: look again
                    // every second as well as when a delivery made room.
                    tokio::select! {
                        _ = &mut room => continue,
                        _ = tokio::time::sleep(Duration::from_secs(1)), if matches!(e, WalError::NoSpace(_)) => continue,
                        _ = self.hard_stop.cancelled() => {
                            self.counters.send_failed(signal, items, "shutdown grace period ran out while the on-disk queue was full");
                            return;
                        }
                    }
                }
                Err(e) if e.is_full() => {
                    self.counters.enqueue_failed(signal, items);
                    return;
                }
                Err(e) => {
                    self.counters.send_failed(
                        signal,
                        items,
                        &format!("cannot write to the on-disk queue: {e}"),
                    );
                    return;
                }
            }
        }
    }
}

/// Closes the on-disk queue when the last handle is gone, as dropping the last sender closes an
/// in-memory one.
struct CloseOnDrop(Arc<Disk>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.readable.notify_waiters();
    }
}

impl ExporterHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this exporter sends only the OTLP encoding (see [`Payload::of`]).
    pub fn wire_only(&self) -> bool {
        self.wire_only
    }

    /// Put a payload in the queue: wait for room when `block_on_overflow`, else drop and count.
    pub async fn enqueue(&self, p: Arc<Payload>) {
        let m = match &self.queue {
            Backlog::Disk(d) => return d.0.append(&p, self.block).await,
            Backlog::Memory(m) => m,
        };
        let (signal, items) = (p.signal(), p.items);
        // A request larger than the whole budget takes all of it, so it still goes (alone).
        let k = (p.size().div_ceil(1024).max(1) as u64).min(u64::from(m.kib_cap)) as u32;
        self.counters.queue_size.inc();
        let result = if self.block {
            match m.kib.clone().acquire_many_owned(k).await {
                Ok(room) => {
                    m.tx.send((p, room))
                        .await
                        .map_err(|_| "the exporter has stopped")
                }
                Err(_) => Err("the exporter has stopped"),
            }
        } else {
            match m.kib.clone().try_acquire_many_owned(k) {
                Ok(room) => m.tx.try_send((p, room)).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => "full",
                    mpsc::error::TrySendError::Closed(_) => "the exporter has stopped",
                }),
                Err(tokio::sync::TryAcquireError::NoPermits) => Err("full"),
                Err(tokio::sync::TryAcquireError::Closed) => Err("the exporter has stopped"),
            }
        };
        if let Err(why) = result {
            self.counters.queue_size.dec();
            if why == "full" {
                self.counters.enqueue_failed(signal, items);
            } else {
                self.counters.send_failed(signal, items, why);
            }
        }
    }
}

pub fn start(
    id: &str,
    wire_only: bool,
    transport: Arc<dyn Transport>,
    queue: QueueConfig,
    retry: RetryConfig,
    counters: ExporterCounters,
    hard_stop: CancellationToken,
) -> Result<(ExporterHandle, Vec<JoinHandle<()>>), String> {
    // Only the OTLP exporters have a configurable sending queue, so on disk implies wire_only.
    if let Some(dir) = queue.storage.clone() {
        return start_on_disk(id, &dir, transport, queue, retry, counters, hard_stop);
    }
    let (tx, rx) = mpsc::channel(queue.queue_size);
    counters.queue_capacity.set(queue.queue_size as i64);
    let kib_cap = queue
        .queue_max_mib
        .saturating_mul(1024)
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize) as u64) as u32;
    let rx = Arc::new(Mutex::new(rx));
    let w = Worker {
        transport,
        retry,
        counters: counters.clone(),
        hard_stop,
    };
    let tasks = (0..queue.num_consumers)
        .map(|_| tokio::spawn(w.clone().run_memory(rx.clone())))
        .collect();
    let handle = ExporterHandle {
        id: Arc::from(id),
        queue: Backlog::Memory(Memory {
            tx,
            kib: Arc::new(Semaphore::new(kib_cap as usize)),
            kib_cap,
        }),
        block: queue.block_on_overflow,
        wire_only,
        counters,
    };
    Ok((handle, tasks))
}

/// A directory name for an exporter id (`otlp/jaeger` → `otlp_jaeger`).
fn dir_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn start_on_disk(
    id: &str,
    storage: &Path,
    transport: Arc<dyn Transport>,
    queue: QueueConfig,
    retry: RetryConfig,
    counters: ExporterCounters,
    hard_stop: CancellationToken,
) -> Result<(ExporterHandle, Vec<JoinHandle<()>>), String> {
    let dir = storage.join(dir_name(id));
    let (wal, found) = Wal::open(&dir, queue.storage_max_mib.saturating_mul(1 << 20))
        .map_err(|e| e.to_string())?;
    let wal = Arc::new(wal);
    tracing::info!(
        exporter = id,
        dir = %dir.display(),
        requests = found.requests,
        bytes = found.bytes,
        corrupted = found.corrupted,
        "on-disk sending queue opened; {} requests left by the last run will be sent",
        found.requests
    );
    counters.storage_corrupted.inc_by(found.corrupted as u64);
    // In requests, the in-memory capacity means nothing here; the storage gauges say how full.
    counters.queue_capacity.set(0);
    let disk = Arc::new(Disk {
        wal,
        readable: Notify::new(),
        room: Notify::new(),
        closed: AtomicBool::new(false),
        counters: counters.clone(),
        hard_stop: hard_stop.clone(),
    });
    counters.storage_capacity.set(disk.wal.usage().1 as i64);
    disk.publish();
    let w = Worker {
        transport,
        retry,
        counters: counters.clone(),
        hard_stop,
    };
    // Acknowledgements are file writes: a task of their own writes them off the async threads
    // and ends once every consumer has.
    let (acks, acks_rx) = mpsc::unbounded_channel();
    let mut tasks: Vec<JoinHandle<()>> = (0..queue.num_consumers)
        .map(|_| tokio::spawn(w.clone().run_disk(disk.clone(), acks.clone())))
        .collect();
    drop(acks);
    let d = disk.clone();
    tasks.push(tokio::spawn(async move {
        let wal = d.wal.clone();
        super::wal::ack_loop(wal, acks_rx, || {
            d.room.notify_waiters();
            d.publish();
        })
        .await;
    }));
    tasks.push(tokio::spawn(sync_loop(
        disk.clone(),
        queue.storage_sync_interval,
    )));
    let handle = ExporterHandle {
        id: Arc::from(id),
        queue: Backlog::Disk(Arc::new(CloseOnDrop(disk))),
        block: queue.block_on_overflow,
        wire_only: true,
        counters,
    };
    Ok((handle, tasks))
}

/// fsync what was written, every `every`, until the queue is closed and drained or time is up.
async fn sync_loop(disk: Arc<Disk>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = disk.hard_stop.cancelled() => {}
        }
        let d = disk.clone();
        let r = tokio::task::spawn_blocking(move || d.wal.sync()).await;
        if let Ok(Err(e)) = r {
            tracing::error!(exporter = %disk.counters.exporter, error = %e, "on-disk queue: fsync failed");
        }
        // Every other holder gone (the handle and the consumers): the last sync is done.
        if disk.hard_stop.is_cancelled() || Arc::strong_count(&disk) == 1 {
            return;
        }
    }
}

#[derive(Clone)]
struct Worker {
    transport: Arc<dyn Transport>,
    retry: RetryConfig,
    counters: ExporterCounters,
    hard_stop: CancellationToken,
}

const INTERRUPTED: &str = "shutdown grace period ran out";

impl Worker {
    async fn run_memory(self, rx: Arc<Mutex<mpsc::Receiver<Queued>>>) {
        loop {
            let next = {
                let mut rx = rx.lock().await;
                tokio::select! {
                    biased;
                    p = rx.recv() => p,
                    _ = self.hard_stop.cancelled() => {
                        // Out of time: count everything still queued, then stop.
                        rx.close();
                        while let Some((p, _room)) = rx.recv().await {
                            self.counters.queue_size.dec();
                            self.counters.send_failed(p.signal(), p.items, INTERRUPTED);
                        }
                        None
                    }
                }
            };
            // The room the request takes is given back once it is delivered or given up on.
            let Some((p, _room)) = next else { return };
            self.counters.queue_size.dec();
            if !self.deliver(&p).await {
                self.counters.send_failed(p.signal(), p.items, INTERRUPTED);
            }
        }
    }

    /// Send what the log holds, in order; acknowledge each request delivered or given up on.
    /// What is still on disk when time runs out is sent by the next start.
    async fn run_disk(self, disk: Arc<Disk>, acks: mpsc::UnboundedSender<RecordId>) {
        loop {
            let readable = disk.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            let d = disk.clone();
            let next = tokio::task::spawn_blocking(move || d.wal.next())
                .await
                .unwrap_or_else(|e| Err(WalError::Io(format!("the reader task failed: {e}"))));
            let record = match next {
                Ok(Some(r)) => r,
                Ok(None) if disk.closed.load(Ordering::SeqCst) => return,
                Ok(None) => {
                    tokio::select! {
                        _ = &mut readable => continue,
                        _ = self.hard_stop.cancelled() => return,
                    }
                }
                Err(e) => {
                    tracing::error!(exporter = %self.counters.exporter, error = %e, "on-disk queue: cannot read; trying again in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = self.hard_stop.cancelled() => return,
                    }
                }
            };
            let p = Payload::encoded(record.signal, record.items, record.payload);
            if !self.deliver(&p).await {
                tracing::info!(
                    exporter = %self.counters.exporter,
                    signal = %p.signal(),
                    items = p.items,
                    "shutdown grace period ran out; the request stays on disk for the next start"
                );
                return;
            }
            // Written by the acknowledgement task, which then makes room.
            let _ = acks.send(record.id);
        }
    }

    /// Send with retries until delivered, rejected or given up on (counted); false when the
    /// grace period ran out first (the caller decides what that means for the request).
    async fn deliver(&self, p: &Payload) -> bool {
        let (signal, items) = (p.signal(), p.items);
        let started = Instant::now();
        let mut backoff = self.retry.initial_interval;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result = tokio::select! {
                biased;
                r = self.transport.send(p) => r,
                _ = self.hard_stop.cancelled() => return false,
            };
            let (message, retry_after) = match result {
                Ok(d) => {
                    let rejected = (d.rejected as usize).min(items);
                    self.counters.sent(signal, items - rejected);
                    if rejected > 0 {
                        let why = format!(
                            "the backend rejected them in a partial success: {}",
                            d.message
                        );
                        self.counters.send_failed(signal, rejected, &why);
                    }
                    return true;
                }
                Err(ExportError::Permanent(message)) => {
                    self.counters.send_failed(
                        signal,
                        items,
                        &format!("permanent error, not retried: {message}"),
                    );
                    return true;
                }
                Err(ExportError::Retryable {
                    message,
                    retry_after,
                }) => (message, retry_after),
            };
            if !self.retry.enabled {
                self.counters.send_failed(
                    signal,
                    items,
                    &format!("retryable error and retries are disabled: {message}"),
                );
                return true;
            }
            let delay =
                retry_after.unwrap_or_else(|| jitter(backoff, self.retry.randomization_factor));
            if started.elapsed() + delay > self.retry.max_elapsed_time {
                let why = format!(
                    "gave up after {attempt} attempts over {:?} (max_elapsed_time): {message}",
                    started.elapsed()
                );
                self.counters.send_failed(signal, items, &why);
                return true;
            }
            self.counters.retry(signal, attempt, delay, &message);
            tokio::select! {
                biased;
                _ = tokio::time::sleep(delay) => {}
                _ = self.hard_stop.cancelled() => return false,
            }
            backoff = backoff
                .mul_f64(self.retry.multiplier)
                .min(self.retry.max_interval);
        }
    }
}

/// `d` scaled by a random factor in [1 - r, 1 + r].
fn jitter(d: Duration, r: f64) -> Duration {
    if r <= 0.0 {
        return d;
    }
    let f = rand::rng().random_range((1.0 - r)..=(1.0 + r));
    d.mul_f64(f.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_its_band() {
        let d = Duration::from_millis(1000);
        for _ in 0..1000 {
            let j = jitter(d, 0.5);
            assert!(
                j >= Duration::from_millis(500) && j <= Duration::from_millis(1500),
                "{j:?}"
            );
        }
        assert_eq!(jitter(d, 0.0), d);
    }
}
