//! A small in-memory time series of what the page charts: the last hour at 10 s resolution, per
//! service, per model and per stage, with a bounded number of keys of each kind.
//!
//! Memory is bounded by construction: at most [`SLOTS`] slots, each holding at most one cell per
//! key, and at most `max_*` keys of each kind (one more, `(other)`, takes what is beyond). A key
//! not seen for an hour gives its place back. [`Series::approx_bytes`] counts what is held and
//! [`Limits::max_bytes`] what may be held at most.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

/// Seconds per slot.
pub const RESOLUTION_S: u64 = 10;
/// Slots kept: one hour.
pub const SLOTS: u64 = 360;
/// Slots of the "recent" window of the per-service table: five minutes.
pub const RECENT_SLOTS: u64 = 30;
/// Durations kept per service for exact recent percentiles.
pub const RECENT_DURATIONS: usize = 512;
/// Buckets of a latency histogram: bucket `i` holds durations up to 2^(i/3) ms (26% wide),
/// the last one everything above 2^(47/3) ms (about 52 s).
pub const HIST: usize = 48;
/// The key that takes what is beyond a limit.
pub const OTHER: &str = "(other)";
/// Characters kept of a key (service, model or stage name).
pub const MAX_KEY_CHARS: usize = 96;

/// How many keys of each kind are tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_services: usize,
    pub max_models: usize,
    pub max_stages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_services: 32,
            max_models: 32,
            max_stages: 16,
        }
    }
}

impl Limits {
    /// The most the series can hold, in bytes (cells, key names, recent durations, slot
    /// headers), whatever the traffic.
    pub fn max_bytes(&self) -> usize {
        let keys = |n: usize| (n + 1) * (MAX_KEY_CHARS * 4 + KEY_OVERHEAD);
        // A slot's vectors grow by doubling (from 4): n + 1 cells take at most this capacity.
        let cap = |n: usize| (n + 1).max(4).next_power_of_two();
        let slot = |cap: &dyn Fn(usize) -> usize| {
            std::mem::size_of::<Slot>()
                + cap(self.max_services) * std::mem::size_of::<(u16, ServiceCell)>()
                + cap(self.max_models) * std::mem::size_of::<(u16, ModelCell)>()
                + cap(self.max_stages) * std::mem::size_of::<(u16, StageCell)>()
        };
        // Past slots are shrunk to fit when the next one opens; only the current one has room.
        (SLOTS as usize - 1) * slot(&|n| n + 1)
            + slot(&cap)
            + keys(self.max_services)
            + keys(self.max_models)
            + keys(self.max_stages)
            + (self.max_services + 1)
                * (RECENT_DURATIONS * std::mem::size_of::<(u64, f32, bool)>()
                    + std::mem::size_of::<VecDeque<(u64, f32, bool)>>())
    }
}

/// Per key: its name in the map and the vector, its last slot.
const KEY_OVERHEAD: usize = 2 * std::mem::size_of::<Box<str>>() + 2 * std::mem::size_of::<u64>();

#[derive(Debug, Clone, Copy, Default)]
struct ServiceCell {
    requests: u32,
    errors: u32,
    cost: f64,
    quality_sum: f64,
    quality_n: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct ModelCell {
    calls: u32,
    cost: f64,
    tokens_input: u64,
    tokens_output: u64,
}

#[derive(Debug, Clone, Copy)]
struct StageCell {
    hist: [u32; HIST],
}

impl Default for StageCell {
    fn default() -> Self {
        StageCell { hist: [0; HIST] }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// Absolute slot number: unix seconds / RESOLUTION_S.
    index: u64,
    services: Vec<(u16, ServiceCell)>,
    models: Vec<(u16, ModelCell)>,
    stages: Vec<(u16, StageCell)>,
}

fn cell<C: Default>(v: &mut Vec<(u16, C)>, id: u16) -> &mut C {
    let i = match v.iter().position(|(k, _)| *k == id) {
        Some(i) => i,
        None => {
            v.push((id, C::default()));
            v.len() - 1
        }
    };
    &mut v[i].1
}

/// Names of one kind of key, bounded; id 0 is `(other)`.
#[derive(Debug)]
struct Keys {
    limit: usize,
    by_name: HashMap<Box<str>, u16>,
    names: Vec<Option<Box<str>>>,
    last: Vec<u64>,
}

impl Keys {
    fn new(limit: usize) -> Keys {
        let limit = limit.min(u16::MAX as usize - 1);
        Keys {
            limit,
            by_name: HashMap::from([(Box::from(OTHER), 0)]),
            names: vec![Some(Box::from(OTHER))],
            last: vec![0],
        }
    }

    /// The id of `name` at `slot`, taking a free place if needed; `(other)` when full.
    fn intern(&mut self, name: &str, slot: u64) -> u16 {
        let name = truncate(name, MAX_KEY_CHARS);
        if let Some(&id) = self.by_name.get(name) {
            if let Some(l) = self.last.get_mut(id as usize) {
                *l = slot;
            }
            return id;
        }
        // A place whose key was not seen for a whole hour holds no cell any more.
        let free = (1..self.names.len())
            .find(|&i| self.names[i].is_none() || self.last[i].saturating_add(SLOTS) <= slot);
        let id = match free {
            Some(i) => {
                if let Some(old) = self.names[i].take() {
                    self.by_name.remove(&old);
                }
                i
            }
            None if self.names.len() <= self.limit => {
                self.names.push(None);
                self.last.push(0);
                self.names.len() - 1
            }
            None => {
                if let Some(l) = self.last.get_mut(0) {
                    *l = slot;
                }
                return 0;
            }
        };
        self.names[id] = Some(Box::from(name));
        self.last[id] = slot;
        self.by_name.insert(Box::from(name), id as u16);
        id as u16
    }

    fn name(&self, id: u16) -> &str {
        self.names
            .get(id as usize)
            .and_then(|n| n.as_deref())
            .unwrap_or(OTHER)
    }

    fn len(&self) -> usize {
        self.names.iter().filter(|n| n.is_some()).count()
    }

    fn bytes(&self) -> usize {
        self.names
            .iter()
            .flatten()
            .map(|n| 2 * n.len() + KEY_OVERHEAD)
            .sum()
    }
}

/// At most `max` characters of `s`.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The bucket of a duration in milliseconds.
pub fn bucket(ms: f64) -> usize {
    if ms.is_nan() || ms <= 1.0 {
        return 0;
    }
    let i = (3.0 * ms.log2()).ceil();
    if i >= (HIST - 1) as f64 {
        HIST - 1
    } else {
        i as usize
    }
}

/// The upper bound of a bucket in milliseconds.
pub fn bucket_upper_ms(i: usize) -> f64 {
    2f64.powf(i as f64 / 3.0)
}

/// The `q` quantile of a histogram (the upper bound of its bucket); None when empty.
fn hist_quantile(h: &[u32; HIST], q: f64) -> Option<f64> {
    let n: u64 = h.iter().map(|&c| u64::from(c)).sum();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0u64;
    for (i, &c) in h.iter().enumerate() {
        seen += u64::from(c);
        if seen >= rank {
            return Some(bucket_upper_ms(i));
        }
    }
    Some(bucket_upper_ms(HIST - 1))
}

/// The exact `q` quantile (nearest rank) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

/// One analysed request of a service.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub duration_ms: f64,
    pub error: bool,
    pub quality: Option<f64>,
}

/// The time series.
#[derive(Debug)]
pub struct Series {
    slots: VecDeque<Slot>,
    services: Keys,
    models: Keys,
    stages: Keys,
    /// Per service id: (unix ms, duration ms, error) of its latest requests.
    recent: Vec<VecDeque<(u64, f32, bool)>>,
}

/// A row of the per-service table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceRow {
    pub service: String,
    /// Over the last 5 minutes.
    pub requests_per_minute: f64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub mean_quality: Option<f64>,
    /// Spend in the last hour.
    pub cost_per_hour_usd: f64,
    pub requests_last_hour: u64,
}

/// A row of the per-model table, over the last hour.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelRow {
    pub model: String,
    pub calls: u64,
    pub cost_usd: f64,
    pub tokens_input: u64,
    pub tokens_output: u64,
}

/// The charts' data: one value per slot (null where there was nothing), oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Charts {
    pub resolution_s: u64,
    /// Unix seconds of the first slot; slot `i` starts at `start + i * resolution_s`.
    pub start: u64,
    pub slots: usize,
    pub cost_usd_by_model: Vec<Line>,
    pub tokens_by_model: Vec<Line>,
    pub p95_ms_by_stage: Vec<Line>,
    pub error_rate_by_service: Vec<Line>,
    pub quality_by_service: Vec<Line>,
    pub requests_by_service: Vec<Line>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub key: String,
    pub values: Vec<Option<f64>>,
}

impl Series {
    pub fn new(limits: Limits) -> Series {
        Series {
            slots: VecDeque::new(),
            services: Keys::new(limits.max_services),
            models: Keys::new(limits.max_models),
            stages: Keys::new(limits.max_stages),
            recent: Vec::new(),
        }
    }

    /// The slot for `now_ms`, creating it and dropping what is older than an hour.
    fn slot(&mut self, now_ms: u64) -> &mut Slot {
        let index = now_ms / 1000 / RESOLUTION_S;
        let back = self.slots.back().map(|s| s.index);
        match back {
            // A clock that went back: count in the newest slot.
            Some(b) if index <= b => {}
            _ => {
                if let Some(prev) = self.slots.back_mut() {
                    prev.services.shrink_to_fit();
                    prev.models.shrink_to_fit();
                    prev.stages.shrink_to_fit();
                }
                self.slots.push_back(Slot {
                    index,
                    ..Default::default()
                });
                while self
                    .slots
                    .front()
                    .is_some_and(|f| f.index.saturating_add(SLOTS) <= index)
                {
                    self.slots.pop_front();
                }
            }
        }
        let last = self.slots.len() - 1;
        &mut self.slots[last]
    }

    fn current_index(&self) -> u64 {
        self.slots.back().map_or(0, |s| s.index)
    }

    /// A request of `service` (a trace's root, analysed).
    pub fn request(&mut self, service: &str, r: Request, now_ms: u64) {
        let index = self.slot(now_ms).index;
        let id = self.services.intern(service, index);
        let slot = self.slot(now_ms);
        let c = cell(&mut slot.services, id);
        c.requests = c.requests.saturating_add(1);
        if r.error {
            c.errors = c.errors.saturating_add(1);
        }
        if let Some(q) = r.quality.filter(|q| q.is_finite()) {
            c.quality_sum += q;
            c.quality_n = c.quality_n.saturating_add(1);
        }
        let i = id as usize;
        if self.recent.len() <= i {
            self.recent.resize_with(i + 1, VecDeque::new);
        }
        let d = &mut self.recent[i];
        // A place taken over from an expired key starts empty.
        if d.back()
            .is_some_and(|(t, _, _)| t / 1000 / RESOLUTION_S + SLOTS <= index)
        {
            d.clear();
        }
        if d.len() == RECENT_DURATIONS {
            d.pop_front();
        }
        let ms = if r.duration_ms.is_finite() {
            r.duration_ms.max(0.0) as f32
        } else {
            0.0
        };
        d.push_back((now_ms, ms, r.error));
    }

    /// Spend of a service (any span's cost).
    pub fn service_cost(&mut self, service: &str, usd: f64, now_ms: u64) {
        if !(usd.is_finite() && usd > 0.0) {
            return;
        }
        let index = self.slot(now_ms).index;
        let id = self.services.intern(service, index);
        cell(&mut self.slot(now_ms).services, id).cost += usd;
    }

    /// A model call.
    pub fn model_call(&mut self, model: &str, usd: f64, input: u64, output: u64, now_ms: u64) {
        self.model_calls(model, 1, usd, input, output, now_ms);
    }

    /// `n` model calls, with their cost and tokens together.
    pub fn model_calls(
        &mut self,
        model: &str,
        n: u32,
        usd: f64,
        input: u64,
        output: u64,
        now_ms: u64,
    ) {
        let index = self.slot(now_ms).index;
        let id = self.models.intern(model, index);
        let c = cell(&mut self.slot(now_ms).models, id);
        c.calls = c.calls.saturating_add(n);
        if usd.is_finite() && usd > 0.0 {
            c.cost += usd;
        }
        c.tokens_input = c.tokens_input.saturating_add(input);
        c.tokens_output = c.tokens_output.saturating_add(output);
    }

    /// A span of `stage` that took `ms`.
    pub fn stage(&mut self, stage: &str, ms: f64, now_ms: u64) {
        let index = self.slot(now_ms).index;
        let id = self.stages.intern(stage, index);
        let c = cell(&mut self.slot(now_ms).stages, id);
        let b = bucket(ms);
        c.hist[b] = c.hist[b].saturating_add(1);
    }

    /// Slots within the last `n` slots before (and including) `now_ms`'s.
    fn last(&self, n: u64, now_ms: u64) -> impl Iterator<Item = &Slot> {
        let now = (now_ms / 1000 / RESOLUTION_S).max(self.current_index());
        self.slots
            .iter()
            .filter(move |s| s.index.saturating_add(n) > now)
    }

    /// The per-service table, busiest first.
    pub fn services(&self, now_ms: u64) -> Vec<ServiceRow> {
        let mut rows: Vec<ServiceRow> = Vec::new();
        for (i, name) in self.services.names.iter().enumerate() {
            let Some(name) = name else { continue };
            let id = i as u16;
            let mut hour = ServiceCell::default();
            let mut recent = ServiceCell::default();
            let now = (now_ms / 1000 / RESOLUTION_S).max(self.current_index());
            for s in self.last(SLOTS, now_ms) {
                if let Some((_, c)) = s.services.iter().find(|(k, _)| *k == id) {
                    hour.requests += c.requests;
                    hour.cost += c.cost;
                    if s.index + RECENT_SLOTS > now {
                        recent.requests += c.requests;
                        recent.errors += c.errors;
                        recent.quality_sum += c.quality_sum;
                        recent.quality_n += c.quality_n;
                    }
                }
            }
            if hour.requests == 0 && hour.cost == 0.0 {
                continue;
            }
            let cutoff = now_ms.saturating_sub(RECENT_SLOTS * RESOLUTION_S * 1000);
            let mut durations: Vec<f64> = self
                .recent
                .get(i)
                .map(|d| {
                    d.iter()
                        .filter(|(t, _, _)| *t >= cutoff)
                        .map(|(_, ms, _)| f64::from(*ms))
                        .collect()
                })
                .unwrap_or_default();
            durations.sort_by(f64::total_cmp);
            rows.push(ServiceRow {
                service: name.to_string(),
                requests_per_minute: f64::from(recent.requests)
                    / (RECENT_SLOTS * RESOLUTION_S) as f64
                    * 60.0,
                error_rate: (recent.requests > 0)
                    .then(|| f64::from(recent.errors) / f64::from(recent.requests)),
                p50_ms: quantile(&durations, 0.5),
                p95_ms: quantile(&durations, 0.95),
                mean_quality: (recent.quality_n > 0)
                    .then(|| recent.quality_sum / f64::from(recent.quality_n)),
                cost_per_hour_usd: hour.cost,
                requests_last_hour: u64::from(hour.requests),
            });
        }
        rows.sort_by(|a, b| {
            b.requests_last_hour
                .cmp(&a.requests_last_hour)
                .then_with(|| a.service.cmp(&b.service))
        });
        rows
    }

    /// The per-model table over the last hour, costliest first.
    pub fn models(&self, now_ms: u64) -> Vec<ModelRow> {
        let mut sums: HashMap<u16, ModelCell> = HashMap::new();
        for s in self.last(SLOTS, now_ms) {
            for (id, c) in &s.models {
                let m = sums.entry(*id).or_default();
                m.calls += c.calls;
                m.cost += c.cost;
                m.tokens_input += c.tokens_input;
                m.tokens_output += c.tokens_output;
            }
        }
        let mut rows: Vec<ModelRow> = sums
            .into_iter()
            .map(|(id, c)| ModelRow {
                model: self.models.name(id).to_string(),
                calls: u64::from(c.calls),
                cost_usd: c.cost,
                tokens_input: c.tokens_input,
                tokens_output: c.tokens_output,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.cost_usd
                .total_cmp(&a.cost_usd)
                .then_with(|| a.model.cmp(&b.model))
        });
        rows
    }

    /// Every chart's lines over the last hour.
    pub fn charts(&self, now_ms: u64) -> Charts {
        let now = (now_ms / 1000 / RESOLUTION_S).max(self.current_index());
        let first = now.saturating_sub(SLOTS - 1);
        let n = (now - first + 1) as usize;
        let mut lines: [HashMap<u16, Vec<Option<f64>>>; 6] = Default::default();
        let mut put = |chart: usize, id: u16, at: usize, v: f64| {
            let l = lines[chart].entry(id).or_insert_with(|| vec![None; n]);
            if let Some(x) = l.get_mut(at) {
                *x = Some(v);
            }
        };
        for s in self
            .slots
            .iter()
            .filter(|s| s.index >= first && s.index <= now)
        {
            let at = (s.index - first) as usize;
            for (id, c) in &s.models {
                put(0, *id, at, c.cost);
                put(1, *id, at, (c.tokens_input + c.tokens_output) as f64);
            }
            for (id, c) in &s.stages {
                if let Some(p) = hist_quantile(&c.hist, 0.95) {
                    put(2, *id, at, p);
                }
            }
            for (id, c) in &s.services {
                if c.requests > 0 {
                    put(3, *id, at, f64::from(c.errors) / f64::from(c.requests));
                    put(5, *id, at, f64::from(c.requests));
                }
                if c.quality_n > 0 {
                    put(4, *id, at, c.quality_sum / f64::from(c.quality_n));
                }
            }
        }
        let [cost, tokens, stages, errors, quality, requests] = lines;
        let named = |m: HashMap<u16, Vec<Option<f64>>>, keys: &Keys| {
            let mut v: Vec<Line> = m
                .into_iter()
                .map(|(id, values)| Line {
                    key: keys.name(id).to_string(),
                    values,
                })
                .collect();
            v.sort_by(|a, b| a.key.cmp(&b.key));
            v
        };
        Charts {
            resolution_s: RESOLUTION_S,
            start: first * RESOLUTION_S,
            slots: n,
            cost_usd_by_model: named(cost, &self.models),
            tokens_by_model: named(tokens, &self.models),
            p95_ms_by_stage: named(stages, &self.stages),
            error_rate_by_service: named(errors, &self.services),
            quality_by_service: named(quality, &self.services),
            requests_by_service: named(requests, &self.services),
        }
    }

    /// Keys tracked now: (services, models, stages), `(other)` included.
    pub fn key_counts(&self) -> (usize, usize, usize) {
        (self.services.len(), self.models.len(), self.stages.len())
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// What the series holds, in bytes (allocated capacity of cells and names).
    pub fn approx_bytes(&self) -> usize {
        let slots: usize = self
            .slots
            .iter()
            .map(|s| {
                std::mem::size_of::<Slot>()
                    + s.services.capacity() * std::mem::size_of::<(u16, ServiceCell)>()
                    + s.models.capacity() * std::mem::size_of::<(u16, ModelCell)>()
                    + s.stages.capacity() * std::mem::size_of::<(u16, StageCell)>()
            })
            .sum();
        let recent: usize = self
            .recent
            .iter()
            .map(|d| {
                std::mem::size_of::<VecDeque<(u64, f32, bool)>>()
                    + d.capacity() * std::mem::size_of::<(u64, f32, bool)>()
            })
            .sum();
        slots + recent + self.services.bytes() + self.models.bytes() + self.stages.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn buckets_are_26_percent_wide_and_bounded() {
        assert_eq!(bucket(0.5), 0);
        assert_eq!(bucket(f64::NAN), 0);
        assert_eq!(bucket(2.0), 3);
        assert_eq!(bucket(2.1), 4);
        assert_eq!(bucket(1e12), HIST - 1);
        assert_eq!(bucket(f64::INFINITY), HIST - 1);
        assert!((bucket_upper_ms(30) - 1024.0).abs() < 1e-9);
    }

    #[test]
    fn the_table_counts_the_last_five_minutes_and_the_last_hour() {
        let mut s = Series::new(Limits::default());
        // Ten minutes ago: 2 requests and $1 (in the hour, not in the last 5 minutes).
        let old = T0 - 600_000;
        for d in [100.0, 200.0] {
            s.request(
                "a",
                Request {
                    duration_ms: d,
                    error: false,
                    quality: Some(1.0),
                },
                old,
            );
        }
        s.service_cost("a", 1.0, old);
        // Now: 4 requests, one failed, durations 10, 20, 30, 1000; quality 0.5 and 0.7; $0.25.
        for (d, e, q) in [
            (10.0, false, Some(0.5)),
            (20.0, true, None),
            (30.0, false, Some(0.7)),
            (1000.0, false, None),
        ] {
            s.request(
                "a",
                Request {
                    duration_ms: d,
                    error: e,
                    quality: q,
                },
                T0,
            );
        }
        s.service_cost("a", 0.25, T0);
        let rows = s.services(T0);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.requests_per_minute, 4.0 / 5.0);
        assert_eq!(r.error_rate, Some(0.25));
        // Nearest rank: p50 of 4 is the 2nd, p95 the 4th.
        assert_eq!(r.p50_ms, Some(20.0));
        assert_eq!(r.p95_ms, Some(1000.0));
        assert!((r.mean_quality.expect("quality") - 0.6).abs() < 1e-12);
        assert_eq!(r.cost_per_hour_usd, 1.25);
        assert_eq!(r.requests_last_hour, 6);
        // An hour later everything is gone.
        assert!(s.services(T0 + 3_600_000).is_empty());
    }

    #[test]
    fn models_and_charts() {
        let mut s = Series::new(Limits::default());
        s.model_call("gpt-4o", 0.5, 1000, 100, T0);
        s.model_call("gpt-4o", 0.25, 10, 1, T0 + 10_000);
        s.model_call("mini", 0.01, 5, 5, T0);
        s.stage("retrieval", 3000.0, T0);
        let m = s.models(T0 + 10_000);
        assert_eq!(m[0].model, "gpt-4o");
        assert_eq!(m[0].cost_usd, 0.75);
        assert_eq!(m[0].calls, 2);
        assert_eq!(m[0].tokens_input, 1010);
        let c = s.charts(T0 + 10_000);
        assert_eq!(c.slots, SLOTS as usize);
        let gpt = &c.cost_usd_by_model[0];
        assert_eq!(gpt.key, "gpt-4o");
        assert_eq!(gpt.values[SLOTS as usize - 1], Some(0.25));
        assert_eq!(gpt.values[SLOTS as usize - 2], Some(0.5));
        assert_eq!(gpt.values[0], None);
        let st = &c.p95_ms_by_stage[0];
        // Recorded after a later slot was opened (a clock gone back): counted in the newest.
        // 3000 ms falls in the bucket up to 2^(35/3) ms.
        assert_eq!(st.values[SLOTS as usize - 1], Some(bucket_upper_ms(35)));
        assert_eq!(st.values[SLOTS as usize - 2], None);
    }

    #[test]
    fn keys_are_bounded_and_come_back_after_an_hour() {
        let limits = Limits {
            max_services: 3,
            max_models: 2,
            max_stages: 2,
        };
        let mut s = Series::new(limits);
        for i in 0..100 {
            let r = Request {
                duration_ms: 1.0,
                error: false,
                quality: None,
            };
            s.request(&format!("svc-{i}"), r, T0);
            s.model_call(&format!("m-{i}"), 0.1, 1, 1, T0);
        }
        assert_eq!(s.key_counts(), (4, 3, 1));
        let rows = s.services(T0);
        assert_eq!(
            rows.iter()
                .find(|r| r.service == OTHER)
                .map(|r| r.requests_last_hour),
            Some(97)
        );
        // An hour on, new names take the places back.
        let later = T0 + 3_600_000;
        s.request(
            "new",
            Request {
                duration_ms: 1.0,
                error: false,
                quality: None,
            },
            later,
        );
        let rows = s.services(later);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].service, "new");
        assert!(s.approx_bytes() <= limits.max_bytes());
    }
}

#[cfg(test)]
mod bound {
    use super::*;

    /// More than an hour of slots, each with new names of every kind: the bound holds at
    /// every step, the keys stay within their limits.
    #[test]
    fn a_flood_of_names_for_over_an_hour_stays_within_the_bound() {
        let limits = Limits::default();
        let mut s = Series::new(limits);
        let t0 = 1_700_000_000_000u64;
        for slot in 0..400u64 {
            let now = t0 + slot * RESOLUTION_S * 1000;
            for k in 0..50 {
                let name = format!("{}-{slot}-{k}", "n".repeat(200));
                let r = Request {
                    duration_ms: k as f64,
                    error: k % 2 == 0,
                    quality: Some(0.5),
                };
                s.request(&name, r, now);
                s.service_cost(&name, 0.01, now);
                s.model_call(&name, 0.01, 10, 10, now);
                s.stage(&name, k as f64 * 100.0, now);
            }
            assert!(s.approx_bytes() <= limits.max_bytes(), "slot {slot}");
            let (sv, m, st) = s.key_counts();
            assert!(sv <= limits.max_services + 1 && m <= limits.max_models + 1);
            assert!(st <= limits.max_stages + 1);
        }
        assert_eq!(s.slot_count(), SLOTS as usize);
    }
}
