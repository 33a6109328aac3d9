//! The pipeline log (`service.pipelines.<id>.storage`): every request a receiver hands to the
//! pipeline is appended to a write-ahead log (the exporters' on-disk queue's [`Wal`]) before the
//! client is answered, and released once every exporter of the pipeline has all the data that
//! came from it. The next start replays what was not released.
//!
//! # When a record is released
//!
//! Processors regroup data: `batch` joins requests, `trace_assembly` holds spans for seconds and
//! sends them out grouped by trace. Which requests a batch leaving the pipeline came from is not
//! tracked span by span; a *low-water mark* is, which is simple and errs only on the side of
//! keeping records longer:
//!
//! - Every record gets a *mark*, a number from a counter, when it enters the pipeline.
//! - A stage that holds data (see [`crate::processor::Processor::held_mark`]) knows the lowest
//!   mark of what it holds. A batch a stage lets out gets the lowest of its input's mark and what
//!   the stage held just before, so a batch's mark is never above the mark of any data in it.
//! - A batch handed to the exporters carries a guard with its mark until every exporter is done
//!   with it: delivered, given up on and counted, or written to its own on-disk queue.
//! - A record is released when the pipeline has run it through its processors (its token is
//!   dropped) and its mark is below every mark still held by a stage or still carried by a
//!   batch with the exporters. Its data is then in none of them: it has left.
//!
//! So one trace held for `max_trace_age` keeps the records that came after it in the log too;
//! they are released together once it leaves. The log holds at most about `max_trace_age` of
//! traffic more than strictly needed, and a crash replays that much again (counted in
//! `ragwatch_pipeline_replayed_items_total`: delivery is at least once).
//!
//! Once the shutdown grace period has run out (the hard stop), nothing more is released: what
//! was dropped then stays in the log and is replayed by the next start.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exporter::helper::wal::{self, Record, RecordId, Recovered, Wal, WalError};
use crate::signal::Signal;
use crate::telemetry::PipelineCounters;

/// One pipeline's log and what is known of its records.
pub struct PipelineLog {
    id: Arc<str>,
    wal: Arc<Wal>,
    state: Mutex<State>,
    /// To the task that writes acknowledgements; taken by [`PipelineLog::close`].
    acks: Mutex<Option<mpsc::UnboundedSender<RecordId>>>,
    hard_stop: CancellationToken,
    counters: PipelineCounters,
}

#[derive(Default)]
struct State {
    next_mark: u64,
    /// Records being processed: their token is alive (queued, or in a processor call).
    in_flight: HashMap<u64, RecordId>,
    /// Records processed and waiting for the marks below them to leave.
    processed: BTreeMap<u64, RecordId>,
    /// Marks of the batches the exporters do not all have yet (a multiset).
    payloads: BTreeMap<u64, usize>,
    /// Per shard: the lowest mark its processors hold.
    held: Vec<Option<u64>>,
}

impl State {
    /// Every mark below this has left the pipeline.
    fn low_water(&self) -> u64 {
        let held = self.held.iter().flatten().min().copied();
        let sent = self.payloads.keys().next().copied();
        held.into_iter().chain(sent).min().unwrap_or(u64::MAX)
    }
}

/// A record on its way through the pipeline: the record is not released while a token (or a
/// clone of its `Arc`, one per shard a request is split over) is alive.
pub struct RecordToken {
    log: Arc<PipelineLog>,
    pub mark: u64,
}

impl RecordToken {
    /// The record's data was dropped (counted): keep the record for the next start.
    pub fn abandon(&self) {
        self.log.abandon(self.mark);
    }
}

impl Drop for RecordToken {
    fn drop(&mut self) {
        self.log.processed(self.mark);
    }
}

/// Carried by a batch handed to the exporters, until the last one is done with it.
struct PayloadGuard {
    log: Arc<PipelineLog>,
    mark: u64,
}

impl Drop for PayloadGuard {
    fn drop(&mut self) {
        let mut st = self.log.lock();
        if let Some(n) = st.payloads.get_mut(&self.mark) {
            *n -= 1;
            if *n == 0 {
                st.payloads.remove(&self.mark);
            }
        }
        self.log.release(&mut st);
    }
}

/// A directory name for a pipeline id (`traces/rag` → `pipeline-traces_rag`).
pub fn dir_name(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("pipeline-{safe}")
}

impl PipelineLog {
    /// Open the log in `<storage>/pipeline-<id>/` (taking its lock), with `shards` runners
    /// reporting what they hold. Returns the log, what an earlier run left, and the task that
    /// writes acknowledgements and fsyncs every `sync_every` (it ends after [`PipelineLog::close`]).
    pub fn open(
        id: &str,
        storage: &Path,
        max_bytes: u64,
        sync_every: Duration,
        shards: usize,
        counters: PipelineCounters,
        hard_stop: CancellationToken,
    ) -> Result<(Arc<PipelineLog>, Recovered, JoinHandle<()>), WalError> {
        let dir = storage.join(dir_name(id));
        let (wal, found) = Wal::open_log(&dir, max_bytes)?;
        tracing::info!(
            pipeline = id,
            dir = %dir.display(),
            requests = found.requests,
            bytes = found.bytes,
            corrupted = found.corrupted,
            "pipeline log opened; {} requests left by the last run will be replayed",
            found.requests
        );
        counters.storage_corrupted.inc_by(found.corrupted as u64);
        counters.storage_capacity.set(max_bytes as i64);
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Arc::new(PipelineLog {
            id: Arc::from(id),
            wal: Arc::new(wal),
            state: Mutex::new(State {
                held: vec![None; shards.max(1)],
                ..State::default()
            }),
            acks: Mutex::new(Some(tx)),
            hard_stop,
            counters,
        });
        log.publish();
        let task = tokio::spawn(acks_and_syncs(log.clone(), rx, sync_every));
        Ok((log, found, task))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a set of numbers kept consistent under the lock at every step: go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self) {
        self.counters.storage_bytes.set(self.wal.usage().0 as i64);
        self.counters.storage_records.set(self.wal.pending() as i64);
    }

    /// Append one request (its OTLP protobuf encoding) off the async threads. When this
    /// returns Ok the request survives `kill -9`; the caller may answer the client.
    pub async fn append(
        self: &Arc<Self>,
        signal: Signal,
        items: usize,
        encoded: Bytes,
    ) -> Result<Arc<RecordToken>, WalError> {
        let wal = self.wal.clone();
        let id = tokio::task::spawn_blocking(move || wal.append(signal, items, &encoded))
            .await
            .unwrap_or_else(|e| Err(WalError::Io(format!("the writer task failed: {e}"))))?;
        let token = self.register(id);
        self.publish();
        Ok(token)
    }

    /// Track a record that is in the log (appended now, or left by an earlier run).
    pub fn register(self: &Arc<Self>, id: RecordId) -> Arc<RecordToken> {
        let mark = {
            let mut st = self.lock();
            let mark = st.next_mark;
            st.next_mark += 1;
            st.in_flight.insert(mark, id);
            mark
        };
        Arc::new(RecordToken {
            log: self.clone(),
            mark,
        })
    }

    /// The next record the last run left, to replay; None once all are handed out.
    pub async fn next_left_by_last_run(&self) -> Result<Option<Record>, WalError> {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.next_left_by_last_run())
            .await
            .unwrap_or_else(|e| Err(WalError::Io(format!("the reader task failed: {e}"))))
    }

    /// A replayed record that cannot be decoded (impossible unless the file changed under us:
    /// its checksum held): acknowledge it so it is not read again, and say so.
    pub fn discard(&self, id: RecordId) {
        self.send_acks(vec![id]);
    }

    /// The guard a batch with `mark` carries to the exporters (None: not from any record).
    pub fn guard(self: &Arc<Self>, mark: Option<u64>) -> Option<crate::exporter::helper::Release> {
        let mark = mark?;
        *self.lock().payloads.entry(mark).or_insert(0) += 1;
        Some(Box::new(PayloadGuard {
            log: self.clone(),
            mark,
        }))
    }

    /// What shard `shard`'s processors hold now, as its lowest mark.
    pub fn set_held(&self, shard: usize, mark: Option<u64>) {
        let mut st = self.lock();
        let Some(slot) = st.held.get_mut(shard) else {
            return;
        };
        let rose = match (*slot, mark) {
            (Some(a), Some(b)) => b > a,
            (Some(_), None) => true,
            _ => false,
        };
        *slot = mark;
        if rose {
            self.release(&mut st);
        }
    }

    /// Forget a record without releasing it: it stays in the log and the next start replays it.
    pub fn abandon(&self, mark: u64) {
        self.lock().in_flight.remove(&mark);
    }

    fn processed(&self, mark: u64) {
        let mut st = self.lock();
        if let Some(id) = st.in_flight.remove(&mark) {
            st.processed.insert(mark, id);
        }
        self.release(&mut st);
    }

    /// Release every processed record below the low-water mark.
    fn release(&self, st: &mut State) {
        if self.hard_stop.is_cancelled() {
            // Whatever was dropped for lack of time stays in the log for the next start.
            return;
        }
        let low = st.low_water();
        let mut ids = Vec::new();
        while let Some(entry) = st.processed.first_entry() {
            if *entry.key() >= low {
                break;
            }
            ids.push(entry.remove());
        }
        if !ids.is_empty() {
            self.send_acks(ids);
        }
    }

    fn send_acks(&self, ids: Vec<RecordId>) {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = acks.as_ref() {
            for id in ids {
                // Only fails once the writer has ended: then the record is replayed, not lost.
                let _ = tx.send(id);
            }
        }
    }

    /// No more releases will come (the exporters have stopped): the acknowledgement task writes
    /// what it was sent, fsyncs and ends.
    pub fn close(&self) {
        self.acks.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn counters(&self) -> &PipelineCounters {
        &self.counters
    }
}

/// Write acknowledgements as they come and fsync every `every`, until closed; then a last fsync.
async fn acks_and_syncs(
    log: Arc<PipelineLog>,
    rx: mpsc::UnboundedReceiver<RecordId>,
    every: Duration,
) {
    let stop = CancellationToken::new();
    let syncer = {
        let log = log.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let last = tokio::select! {
                    _ = tick.tick() => false,
                    _ = stop.cancelled() => true,
                };
                sync(&log).await;
                if last {
                    return;
                }
            }
        })
    };
    let l = log.clone();
    wal::ack_loop(log.wal.clone(), rx, move || l.publish()).await;
    stop.cancel();
    let _ = syncer.await;
    log.publish();
}

async fn sync(log: &Arc<PipelineLog>) {
    let wal = log.wal.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || wal.sync()).await {
        tracing::error!(pipeline = %log.id, error = %e, "pipeline log: fsync failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> PipelineCounters {
        crate::telemetry::SelfMetrics::new().pipeline("traces")
    }

    async fn open(dir: &Path, shards: usize) -> (Arc<PipelineLog>, JoinHandle<()>) {
        let (log, _, task) = PipelineLog::open(
            "traces",
            dir,
            1 << 20,
            Duration::from_millis(50),
            shards,
            counters(),
            CancellationToken::new(),
        )
        .expect("open");
        (log, task)
    }

    async fn append(log: &Arc<PipelineLog>, what: &[u8]) -> Arc<RecordToken> {
        log.append(Signal::Traces, 1, Bytes::copy_from_slice(what))
            .await
            .expect("append")
    }

    /// Close, wait for the acknowledgements, and reopen: what is left is what was not released.
    async fn left_after(log: Arc<PipelineLog>, task: JoinHandle<()>, dir: &Path) -> Vec<Bytes> {
        log.close();
        drop(log);
        task.await.expect("ack task");
        let (log, found, task) = PipelineLog::open(
            "traces",
            dir,
            1 << 20,
            Duration::from_millis(50),
            1,
            counters(),
            CancellationToken::new(),
        )
        .expect("reopen");
        let mut left = Vec::new();
        while let Some(r) = log.next_left_by_last_run().await.expect("next") {
            left.push(r.payload);
        }
        assert_eq!(found.requests, left.len());
        log.close();
        drop(log);
        task.await.expect("ack task");
        left
    }

    #[tokio::test]
    async fn a_record_stays_while_its_token_a_held_mark_or_a_payload_below_it_lives() {
        let d = tempfile::tempdir().expect("tempdir");
        let (log, task) = open(d.path(), 2).await;
        let a = append(&log, b"a").await; // mark 0
        let b = append(&log, b"b").await; // mark 1
        let c = append(&log, b"c").await; // mark 2
        let d2 = append(&log, b"d").await; // mark 3
        let e = append(&log, b"e").await; // mark 4
        assert_eq!((a.mark, e.mark), (0, 4));
        // Shard 0 holds data of mark 1 (b is held by a stage); a batch of mark 2 is with the
        // exporters.
        log.set_held(0, Some(1));
        let payload = log.guard(Some(2));
        // All five are processed (their tokens are gone).
        drop((a, b, c, d2, e));
        // Released: a (mark 0 < 1). Kept: b, c, d, e (marks >= 1).
        let left = left_after_reopen_without_closing(&log);
        assert_eq!(left, 4);
        // The stage lets b's data out; the payload of mark 2 remains: only mark 1 leaves.
        log.set_held(0, None);
        assert_eq!(left_after_reopen_without_closing(&log), 3);
        drop(payload);
        assert_eq!(left_after_reopen_without_closing(&log), 0);
        assert_eq!(left_after(log, task, d.path()).await, Vec::<Bytes>::new());
    }

    /// Records not yet released, as the state sees them (processed or in flight).
    fn left_after_reopen_without_closing(log: &Arc<PipelineLog>) -> usize {
        let st = log.lock();
        st.processed.len() + st.in_flight.len()
    }

    #[tokio::test]
    async fn a_token_alive_keeps_its_record_and_the_rest_replays_after_a_crash() {
        let d = tempfile::tempdir().expect("tempdir");
        let stop = CancellationToken::new();
        let (log, _, task) = PipelineLog::open(
            "traces",
            d.path(),
            1 << 20,
            Duration::from_millis(50),
            1,
            counters(),
            stop.clone(),
        )
        .expect("open");
        let a = append(&log, b"a").await;
        let b = append(&log, b"b").await;
        let c = append(&log, b"c").await;
        drop(a);
        drop(c);
        // a and c are released (nothing holds a mark); b's token is alive (still queued).
        assert_eq!(left_after_reopen_without_closing(&log), 1);
        // Time runs out before b is processed: it is dropped, and stays for the next start.
        stop.cancel();
        drop(b);
        assert_eq!(
            left_after(log, task, d.path()).await,
            vec![Bytes::from_static(b"b")]
        );
    }

    #[tokio::test]
    async fn nothing_is_released_after_the_hard_stop() {
        let d = tempfile::tempdir().expect("tempdir");
        let stop = CancellationToken::new();
        let (log, _, task) = PipelineLog::open(
            "traces",
            d.path(),
            1 << 20,
            Duration::from_millis(50),
            1,
            counters(),
            stop.clone(),
        )
        .expect("open");
        let a = append(&log, b"a").await;
        let p = log.guard(Some(a.mark));
        drop(a);
        stop.cancel();
        // The exporter dropped the batch because time ran out: the record must stay.
        drop(p);
        assert_eq!(
            left_after(log, task, d.path()).await,
            vec![Bytes::from_static(b"a")]
        );
    }
}
