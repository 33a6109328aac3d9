//! The sending queue and retry loop shared by every exporter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ExportError, Payload, QueueConfig, RetryConfig, Transport};
use crate::telemetry::ExporterCounters;

/// Where pipelines put data for one exporter. Cloned into every pipeline that uses it; the queue
/// closes when the last clone is dropped, and the consumers then drain it and stop.
#[derive(Clone)]
pub struct ExporterHandle {
    id: Arc<str>,
    tx: mpsc::Sender<Arc<Payload>>,
    block: bool,
    counters: ExporterCounters,
}

impl ExporterHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Put a payload in the queue: wait for room when `block_on_overflow`, else drop and count.
    pub async fn enqueue(&self, p: Arc<Payload>) {
        let (signal, items) = (p.signal(), p.items);
        self.counters.queue_size.inc();
        let result = if self.block {
            self.tx
                .send(p)
                .await
                .map_err(|_| "the exporter has stopped")
        } else {
            self.tx.try_send(p).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => "full",
                mpsc::error::TrySendError::Closed(_) => "the exporter has stopped",
            })
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

pub(super) fn start(
    id: &str,
    transport: Transport,
    queue: QueueConfig,
    retry: RetryConfig,
    counters: ExporterCounters,
    hard_stop: CancellationToken,
) -> (ExporterHandle, Vec<JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel(queue.queue_size);
    counters.queue_capacity.set(queue.queue_size as i64);
    let rx = Arc::new(Mutex::new(rx));
    let transport = Arc::new(transport);
    let tasks = (0..queue.num_consumers)
        .map(|_| {
            let w = Worker {
                rx: rx.clone(),
                transport: transport.clone(),
                retry: retry.clone(),
                counters: counters.clone(),
                hard_stop: hard_stop.clone(),
            };
            tokio::spawn(w.run())
        })
        .collect();
    let handle = ExporterHandle {
        id: Arc::from(id),
        tx,
        block: queue.block_on_overflow,
        counters,
    };
    (handle, tasks)
}

struct Worker {
    rx: Arc<Mutex<mpsc::Receiver<Arc<Payload>>>>,
    transport: Arc<Transport>,
    retry: RetryConfig,
    counters: ExporterCounters,
    hard_stop: CancellationToken,
}

impl Worker {
    async fn run(self) {
        loop {
            let next = {
                let mut rx = self.rx.lock().await;
                tokio::select! {
                    biased;
                    p = rx.recv() => p,
                    _ = self.hard_stop.cancelled() => {
                        // Out of time: count everything still queued, then stop.
                        rx.close();
                        while let Some(p) = rx.recv().await {
                            self.counters.queue_size.dec();
                            self.counters.send_failed(p.signal(), p.items, "shutdown grace period ran out");
                        }
                        None
                    }
                }
            };
            let Some(p) = next else { return };
            self.counters.queue_size.dec();
            self.deliver(&p).await;
        }
    }

    async fn deliver(&self, p: &Payload) {
        let (signal, items) = (p.signal(), p.items);
        let started = Instant::now();
        let mut backoff = self.retry.initial_interval;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result = tokio::select! {
                biased;
                r = self.transport.send(p) => r,
                _ = self.hard_stop.cancelled() => {
                    self.counters.send_failed(signal, items, "shutdown grace period ran out");
                    return;
                }
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
                    return;
                }
                Err(ExportError::Permanent(message)) => {
                    self.counters.send_failed(
                        signal,
                        items,
                        &format!("permanent error, not retried: {message}"),
                    );
                    return;
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
                return;
            }
            let delay =
                retry_after.unwrap_or_else(|| jitter(backoff, self.retry.randomization_factor));
            if started.elapsed() + delay > self.retry.max_elapsed_time {
                let why = format!(
                    "gave up after {attempt} attempts over {:?} (max_elapsed_time): {message}",
                    started.elapsed()
                );
                self.counters.send_failed(signal, items, &why);
                return;
            }
            self.counters.retry(signal, attempt, delay, &message);
            tokio::select! {
                biased;
                _ = tokio::time::sleep(delay) => {}
                _ = self.hard_stop.cancelled() => {
                    self.counters.send_failed(signal, items, "shutdown grace period ran out while retrying");
                    return;
                }
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
