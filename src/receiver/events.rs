//! What receivers report about themselves, one small struct per event (Vector's internal
//! events): `emit` bumps the event's counter and, where an operator should hear of it, logs it
//! with its fields. The counters are registered with ragwatch's own metrics through
//! [`ComponentMetrics`]; the telemetry module knows nothing of receivers.
//!
//! Refusals are logged once per episode, not once per request: the first refusal of a
//! receiver logs a line; refusals within [`QUIET`] of the last line are only counted, and the
//! next line (after a quiet spell) says how many there were in between. Under overload a
//! client retries every few milliseconds; a line per refusal would flood the log.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::names::metrics as m;
use crate::signal::Signal;
use crate::telemetry::{
    ComponentMetrics, PerSignal, ReceiverLabels, RequestLabels, SelfMetrics, idx,
};

/// How long refusals are only counted after a logged one.
pub const QUIET: Duration = Duration::from_secs(10);

/// Every receiver's counters, by receiver id and transport.
#[derive(Clone, Default)]
pub struct ReceiverMetrics {
    accepted: PerSignal<ReceiverLabels>,
    refused: PerSignal<ReceiverLabels>,
    requests: Family<RequestLabels, Counter>,
    empty_json: Family<ReceiverLabels, Counter>,
}

impl ComponentMetrics for ReceiverMetrics {
    fn register(&self, r: &mut Registry) {
        for (fams, names, help) in [
            (
                &self.accepted,
                [
                    m::RECEIVER_ACCEPTED_SPANS,
                    m::RECEIVER_ACCEPTED_METRIC_POINTS,
                    m::RECEIVER_ACCEPTED_LOG_RECORDS,
                ],
                "Items accepted by a receiver and handed to its pipelines",
            ),
            (
                &self.refused,
                [
                    m::RECEIVER_REFUSED_SPANS,
                    m::RECEIVER_REFUSED_METRIC_POINTS,
                    m::RECEIVER_REFUSED_LOG_RECORDS,
                ],
                "Items a receiver refused (malformed, invalid ids, too large, or pipeline full)",
            ),
        ] {
            for (name, fam) in names.iter().zip(fams.iter()) {
                r.register(*name, help, fam.clone());
            }
        }
        r.register(
            m::RECEIVER_REQUESTS,
            "Requests a receiver answered, by outcome",
            self.requests.clone(),
        );
        r.register(
            m::RECEIVER_EMPTY_JSON_REQUESTS,
            "OTLP/JSON requests that decoded to zero items (check for snake_case keys)",
            self.empty_json.clone(),
        );
    }
}

/// One receiver's counters, resolved once so the hot path only bumps atomics.
#[derive(Clone)]
pub struct ReceiverCounters {
    pub receiver: String,
    pub transport: String,
    accepted: [Counter; 3],
    refused: [Counter; 3],
    requests: Family<RequestLabels, Counter>,
    empty_json: Counter,
    episode: Arc<Mutex<Episode>>,
}

/// The refusals of one receiver since its last log line.
#[derive(Default)]
struct Episode {
    last_line: Option<Instant>,
    unlogged_requests: u64,
    unlogged_items: u64,
}

impl ReceiverCounters {
    /// The counters of receiver `receiver` on `transport` (`grpc`, `http`, `internal`).
    pub fn of(metrics: &SelfMetrics, receiver: &str, transport: &str) -> ReceiverCounters {
        let set = metrics.component::<ReceiverMetrics>();
        let l = ReceiverLabels {
            receiver: receiver.to_string(),
            transport: transport.to_string(),
        };
        ReceiverCounters {
            receiver: receiver.to_string(),
            transport: transport.to_string(),
            accepted: set.accepted.each_ref().map(|f| f.get_or_create(&l).clone()),
            refused: set.refused.each_ref().map(|f| f.get_or_create(&l).clone()),
            requests: set.requests.clone(),
            empty_json: set.empty_json.get_or_create(&l).clone(),
            episode: Default::default(),
        }
    }
}

/// Items handed to the pipelines.
pub struct ItemsAccepted {
    pub signal: Signal,
    pub items: usize,
}

impl ItemsAccepted {
    pub fn emit(self, c: &ReceiverCounters) {
        c.accepted[idx(self.signal)].inc_by(self.items as u64);
    }
}

/// Items refused (malformed, invalid ids, too large, pipeline full, memory limit), with why.
pub struct ItemsRefused<'a> {
    pub signal: Signal,
    pub items: usize,
    pub reason: &'a str,
}

impl ItemsRefused<'_> {
    pub fn emit(self, c: &ReceiverCounters) {
        self.emit_at(c, Instant::now());
    }

    /// `emit` at a given instant (the log's episode is decided by it).
    pub fn emit_at(self, c: &ReceiverCounters, now: Instant) {
        c.refused[idx(self.signal)].inc_by(self.items as u64);
        if let Some((requests, items)) = c.log_line_due(now, self.items as u64) {
            tracing::warn!(
                receiver = %c.receiver,
                transport = %c.transport,
                signal = %self.signal,
                items = self.items,
                reason = self.reason,
                refusals_since_last_line = requests,
                items_refused_since_last_line = items,
                "refused {} (further refusals within {}s are counted, not logged)",
                self.signal.item_name(),
                QUIET.as_secs()
            );
        }
    }
}

/// A request refused before its items were counted (malformed, too large, undecodable body),
/// with the status answered; logged once per episode like [`ItemsRefused`].
pub struct RequestRefused<'a> {
    pub status: &'a str,
    pub reason: &'a str,
}

impl RequestRefused<'_> {
    pub fn emit(self, c: &ReceiverCounters) {
        if let Some((requests, _)) = c.log_line_due(Instant::now(), 0) {
            tracing::warn!(
                receiver = %c.receiver,
                transport = %c.transport,
                status = self.status,
                reason = self.reason,
                refusals_since_last_line = requests,
                "refused an OTLP request (further refusals within {}s are counted, not logged)",
                QUIET.as_secs()
            );
        }
    }
}

impl ReceiverCounters {
    /// Whether a refusal at `now` starts a new log line: Some(refusals and items counted but not
    /// logged since the last line), or None when it is only counted.
    fn log_line_due(&self, now: Instant, items: u64) -> Option<(u64, u64)> {
        let mut e = self.episode.lock().unwrap_or_else(|p| p.into_inner());
        let quiet = e
            .last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= QUIET);
        if !quiet {
            e.unlogged_requests += 1;
            e.unlogged_items += items;
            return None;
        }
        let since = (e.unlogged_requests, e.unlogged_items);
        *e = Episode {
            last_line: Some(now),
            ..Episode::default()
        };
        Some(since)
    }
}

/// A request answered, by outcome (`accepted`, `partial`, `refused`, `invalid`, ...).
pub struct RequestAnswered<'a> {
    pub outcome: &'a str,
}

impl RequestAnswered<'_> {
    pub fn emit(self, c: &ReceiverCounters) {
        c.requests
            .get_or_create(&RequestLabels {
                receiver: c.receiver.clone(),
                transport: c.transport.clone(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}

/// An OTLP/JSON request that decoded to zero items: usually snake_case keys.
pub struct EmptyJson<'a> {
    pub signal: Signal,
    pub hint: &'a str,
}

impl EmptyJson<'_> {
    pub fn emit(self, c: &ReceiverCounters) {
        c.empty_json.inc();
        tracing::warn!(
            receiver = %c.receiver,
            signal = %self.signal,
            hint = self.hint,
            "an OTLP/JSON request decoded to zero items; OTLP/JSON keys are lowerCamelCase (resourceSpans, not resource_spans)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(c: &ReceiverCounters) -> u64 {
        c.refused[idx(Signal::Traces)].get()
    }

    /// Every refusal is counted; a log line is written for the first, then for the first after
    /// each quiet spell of QUIET, with what was refused in between.
    #[test]
    fn refusals_are_all_counted_and_logged_once_per_episode() {
        let metrics = SelfMetrics::new();
        let c = ReceiverCounters::of(&metrics, "otlp/episode-test", "grpc");
        let t0 = Instant::now();
        let refuse = |n: usize, at: Duration| {
            ItemsRefused {
                signal: Signal::Traces,
                items: n,
                reason: "pipeline full",
            }
            .emit_at(&c, t0 + at)
        };
        let logged = crate::test_logs::logged(|| {
            refuse(10, Duration::ZERO); // logged
            refuse(20, Duration::from_secs(1)); // counted
            refuse(30, Duration::from_secs(9)); // counted
            refuse(40, Duration::from_secs(19)); // 10 s after the last line: logged, with 2 / 50
        });
        assert_eq!(refused(&c), 100);
        let lines: Vec<String> = logged
            .into_iter()
            .filter(|l| l.contains("otlp/episode-test"))
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("items=10"), "{}", lines[0]);
        assert!(lines[1].contains("items=40"), "{}", lines[1]);
        assert!(
            lines[1].contains("refusals_since_last_line=2"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains("items_refused_since_last_line=50"),
            "{}",
            lines[1]
        );
        // The same counters are what /metrics shows.
        let text = metrics.encode();
        assert!(
            text.lines()
                .any(|l| l.starts_with("ragwatch_receiver_refused_spans_total{")
                    && l.contains("otlp/episode-test")
                    && l.ends_with(" 100")),
            "{text}"
        );
    }
}
