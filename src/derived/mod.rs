//! A store of metrics derived from spans: counters, gauges and histograms keyed by label values,
//! with a series limit per metric (an overflow series beyond it) and expiry of idle series.
//! Served as Prometheus text and converted to OTLP (cumulative temporality).
//!
//! Writers do not wait for one another. Each metric keeps its series in stripes, a mutex each,
//! and a thread writes to one stripe: the first time it finds that stripe locked it moves to the
//! next one, for good, so threads that write at the same time (the pipeline shards) settle on
//! stripes of their own, while a single writer keeps to one. A scrape merges the stripes. Which
//! series exist, and so the series limit, is decided per metric in a registry that a writer
//! consults only for a series its stripe does not have yet. An update of an existing series
//! takes one uncontended lock and does not allocate.

pub mod defs;

use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hashbrown::{Equivalent, HashMap};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
    metric::Data, number_data_point,
};

/// What a metric is.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram { buckets: &'static [f64] },
}

/// A metric's static definition.
#[derive(Debug)]
pub struct MetricDef {
    /// The OTLP name, e.g. `gen_ai.client.operation.duration`.
    pub otel_name: &'static str,
    /// The Prometheus name; counters without `_total`, which the encoder adds.
    pub prom_name: &'static str,
    pub help: &'static str,
    /// UCUM unit for OTLP.
    pub unit: &'static str,
    pub kind: Kind,
    /// Attribute keys; the Prometheus label is the key with every other character than
    /// `[a-zA-Z0-9_]` replaced by `_`.
    pub labels: &'static [&'static str],
}

/// Bounds of the store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_series_per_metric: usize,
    pub series_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series_per_metric: 2000,
            series_ttl: Duration::from_secs(600),
        }
    }
}

/// One series, or one stripe's part of it.
#[derive(Debug, Clone)]
struct Series {
    created: Instant,
    updated: Instant,
    /// Counter total or gauge value; histogram sum.
    value: f64,
    count: u64,
    buckets: Vec<u64>,
    /// When a gauge was last set, in the store's order of `set` calls (0: never): of the
    /// stripes' values of a gauge, the latest set one is the gauge's.
    set_order: u64,
}

impl Series {
    fn new(created: Instant, now: Instant, buckets: usize) -> Series {
        Series {
            created,
            updated: now,
            value: 0.0,
            count: 0,
            buckets: vec![0; buckets],
            set_order: 0,
        }
    }

    /// Adds another stripe's part of the same series.
    fn merge(&mut self, other: &Series, kind: Kind) {
        self.created = self.created.min(other.created);
        self.updated = self.updated.max(other.updated);
        self.count += other.count;
        for (b, o) in self.buckets.iter_mut().zip(&other.buckets) {
            *b += o;
        }
        match kind {
            Kind::Gauge => {
                if other.set_order > self.set_order {
                    self.value = other.value;
                    self.set_order = other.set_order;
                }
            }
            Kind::Counter | Kind::Histogram { .. } => self.value += other.value,
        }
    }
}

/// A series' label values. Hashes exactly as [`Values`] does, so a lookup by borrowed values
/// finds it without allocating.
#[derive(PartialEq, Eq)]
struct Key(Box<[Box<str>]>);

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_usize(self.0.len());
        for v in self.0.iter() {
            h.write(v.as_bytes());
            h.write_u8(0xff);
        }
    }
}

struct Values<'a>(&'a [&'a str]);

impl Hash for Values<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_usize(self.0.len());
        for v in self.0 {
            h.write(v.as_bytes());
            h.write_u8(0xff);
        }
    }
}

impl Equivalent<Key> for Values<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        key.0.len() == self.0.len() && key.0.iter().zip(self.0).all(|(a, b)| &**a == *b)
    }
}

impl Equivalent<Arc<Key>> for Values<'_> {
    fn equivalent(&self, key: &Arc<Key>) -> bool {
        self.equivalent(&**key)
    }
}

/// One stripe's series of a metric (each key shared with the registry).
#[derive(Default)]
struct Table {
    by_labels: HashMap<Arc<Key>, Series>,
    overflow: Option<Series>,
}

/// A stripe, alone on its cache lines: the lock word of one writer's stripe is never on a line
/// another writer's stripe writes.
#[repr(align(128))]
#[derive(Default)]
struct Stripe(Mutex<Table>);

/// The series of a metric, whichever stripes hold them.
#[derive(Default)]
struct Registry {
    /// Every series, with its start time.
    series: HashMap<Arc<Key>, Instant>,
    /// The start of the overflow series, once an update went to it.
    overflow: Option<Instant>,
}

/// Where an update goes.
enum Place {
    /// A series (its key and start).
    Series(Arc<Key>, Instant),
    /// The overflow series (its start).
    Overflow(Instant),
}

impl Registry {
    /// Where an update of `values` goes, if that is decided without adding to the registry:
    /// the series, when it exists; the overflow series, when the metric is full and has it.
    fn place(&self, values: &[&str], max_series: usize) -> Option<Place> {
        if let Some((key, created)) = self.series.get_key_value(&Values(values)) {
            return Some(Place::Series(key.clone(), *created));
        }
        if self.series.len() >= max_series {
            return self.overflow.map(Place::Overflow);
        }
        None
    }
}

struct MetricState {
    def: &'static MetricDef,
    /// At least one.
    stripes: Box<[Stripe]>,
    registry: RwLock<Registry>,
    overflowed: AtomicU64,
}

thread_local! {
    /// The stripe this thread writes to (modulo the number of stripes).
    static STRIPE: Cell<usize> = const { Cell::new(0) };
}

/// The most stripes per metric; more than the threads that run at once would not help.
const MAX_STRIPES: usize = 32;

/// A lock, also after a panic in another holder (no update leaves a series half-written).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MetricState {
    /// Slots in a histogram series' bucket counts (the +Inf bucket included); 0 otherwise.
    fn bucket_slots(&self) -> usize {
        match self.def.kind {
            Kind::Histogram { buckets } => buckets.len() + 1,
            _ => 0,
        }
    }

    /// This thread's stripe, locked. A thread that finds it locked moves to the next stripe,
    /// from then on and for every metric.
    fn own_stripe(&self) -> MutexGuard<'_, Table> {
        let n = self.stripes.len();
        let slot = STRIPE.try_with(Cell::get).unwrap_or(0);
        match self.stripes[slot % n].0.try_lock() {
            Ok(t) => t,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                let next = slot.wrapping_add(1);
                let _ = STRIPE.try_with(|s| s.set(next));
                lock(&self.stripes[next % n].0)
            }
        }
    }

    /// Every stripe, locked in order (as every holder of more than one stripe locks them; a
    /// writer holds one stripe, then maybe the registry).
    fn all_stripes(&self) -> Vec<MutexGuard<'_, Table>> {
        self.stripes.iter().map(|s| lock(&s.0)).collect()
    }
}

/// The store. Share it with `Arc`.
pub struct DerivedMetrics {
    metrics: Vec<MetricState>,
    limits: Limits,
    anchor: (Instant, SystemTime),
    misuse: AtomicU64,
    /// Orders the `set` calls of gauges.
    sets: AtomicU64,
}

impl DerivedMetrics {
    pub fn new(defs: &'static [MetricDef], limits: Limits) -> DerivedMetrics {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_stripes(defs, limits, cores)
    }

    fn with_stripes(defs: &'static [MetricDef], limits: Limits, stripes: usize) -> DerivedMetrics {
        let stripes = stripes.clamp(1, MAX_STRIPES);
        DerivedMetrics {
            metrics: defs
                .iter()
                .map(|def| MetricState {
                    def,
                    stripes: (0..stripes).map(|_| Stripe::default()).collect(),
                    registry: RwLock::default(),
                    overflowed: AtomicU64::new(0),
                })
                .collect(),
            limits,
            anchor: (Instant::now(), SystemTime::now()),
            misuse: AtomicU64::new(0),
            sets: AtomicU64::new(0),
        }
    }

    fn update(&self, metric: usize, values: &[&str], now: Instant, f: impl FnOnce(&mut Series)) {
        let Some(m) = self.metrics.get(metric) else {
            self.misuse.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if values.len() != m.def.labels.len() {
            self.misuse.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut t = m.own_stripe();
        if let Some(s) = t.by_labels.get_mut(&Values(values)) {
            s.updated = now;
            f(s);
            return;
        }
        self.update_elsewhere(m, &mut t, values, now, f);
    }

    /// An update of a series this thread's stripe does not have: one another stripe has, a new
    /// one, or (the metric at its limit) the overflow series. `t` is this thread's stripe.
    #[inline(never)]
    fn update_elsewhere(
        &self,
        m: &MetricState,
        t: &mut Table,
        values: &[&str],
        now: Instant,
        f: impl FnOnce(&mut Series),
    ) {
        let max = self.limits.max_series_per_metric;
        // The registry is shared for a look; exclusive only to add.
        let known = m
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .place(values, max);
        let place = match known {
            Some(place) => place,
            None => {
                let mut r = m.registry.write().unwrap_or_else(PoisonError::into_inner);
                // Again: another stripe may have added the series, or the last one, meanwhile.
                match r.place(values, max) {
                    Some(place) => place,
                    None if r.series.len() < max => {
                        let key =
                            Arc::new(Key(values.iter().map(|v| Box::<str>::from(*v)).collect()));
                        r.series.insert(key.clone(), now);
                        Place::Series(key, now)
                    }
                    None => Place::Overflow(*r.overflow.get_or_insert(now)),
                }
            }
        };
        let nb = m.bucket_slots();
        let s = match place {
            Place::Series(key, created) => t
                .by_labels
                .entry(key)
                .or_insert_with(|| Series::new(created, now, nb)),
            Place::Overflow(created) => {
                m.overflowed.fetch_add(1, Ordering::Relaxed);
                t.overflow
                    .get_or_insert_with(|| Series::new(created, now, nb))
            }
        };
        s.updated = now;
        f(s);
    }

    /// Add to a counter (negative or NaN deltas are ignored).
    pub fn add(&self, metric: usize, values: &[&str], delta: f64, now: Instant) {
        if delta.is_nan() || delta < 0.0 || delta.is_infinite() {
            self.misuse.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.update(metric, values, now, |s| {
            s.value += delta;
            s.count += 1;
        });
    }

    /// Set a gauge.
    pub fn set(&self, metric: usize, values: &[&str], value: f64, now: Instant) {
        if value.is_nan() {
            return;
        }
        let order = self.sets.fetch_add(1, Ordering::Relaxed) + 1;
        self.update(metric, values, now, |s| {
            s.value = value;
            s.count += 1;
            s.set_order = order;
        });
    }

    /// Observe a histogram value (a value equal to a bound falls into that bound's bucket).
    pub fn observe(&self, metric: usize, values: &[&str], value: f64, now: Instant) {
        if value.is_nan() {
            self.misuse.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let bounds = match self.metrics.get(metric).map(|m| m.def.kind) {
            Some(Kind::Histogram { buckets }) => buckets,
            _ => {
                self.misuse.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let i = bounds.partition_point(|b| *b < value);
        self.update(metric, values, now, |s| {
            s.value += value;
            s.count += 1;
            if let Some(b) = s.buckets.get_mut(i) {
                *b += 1;
            }
        });
    }

    /// Drop series not updated for `series_ttl` (in any stripe).
    pub fn expire(&self, now: Instant) {
        let idle =
            |updated: Instant| now.saturating_duration_since(updated) >= self.limits.series_ttl;
        for m in &self.metrics {
            let mut stripes = m.all_stripes();
            let mut r = m.registry.write().unwrap_or_else(PoisonError::into_inner);
            r.series.retain(|key, _| {
                let latest = stripes
                    .iter()
                    .filter_map(|t| t.by_labels.get(key))
                    .map(|s| s.updated)
                    .max();
                let keep = latest.is_some_and(|u| !idle(u));
                if !keep {
                    for t in &mut stripes {
                        t.by_labels.remove(key);
                    }
                }
                keep
            });
            let latest = stripes
                .iter()
                .filter_map(|t| t.overflow.as_ref())
                .map(|s| s.updated)
                .max();
            if latest.is_none_or(idle) {
                for t in &mut stripes {
                    t.overflow = None;
                }
                r.overflow = None;
            }
        }
    }

    /// Series of one metric, the overflow series included.
    pub fn series(&self, metric: usize) -> usize {
        self.metrics.get(metric).map_or(0, |m| {
            let r = m.registry.read().unwrap_or_else(PoisonError::into_inner);
            r.series.len() + usize::from(r.overflow.is_some())
        })
    }

    /// Updates that went to the overflow series of one metric.
    pub fn overflowed(&self, metric: usize) -> u64 {
        self.metrics
            .get(metric)
            .map_or(0, |m| m.overflowed.load(Ordering::Relaxed))
    }

    /// Calls with a wrong label count, an unknown metric, or a negative / NaN value.
    pub fn misuse(&self) -> u64 {
        self.misuse.load(Ordering::Relaxed)
    }

    /// A sorted copy of one metric's series, the stripes merged: (label values, series); the
    /// overflow series last with no values.
    fn snapshot(&self, m: &MetricState) -> Vec<(Option<Vec<String>>, Series)> {
        let kind = m.def.kind;
        let mut merged: HashMap<Arc<Key>, Series> = HashMap::new();
        let mut overflow: Option<Series> = None;
        // All stripes at once: a series `expire` drops goes from all of them together.
        for t in &m.all_stripes() {
            for (key, s) in &t.by_labels {
                match merged.get_mut(key) {
                    Some(sum) => sum.merge(s, kind),
                    None => {
                        merged.insert(key.clone(), s.clone());
                    }
                }
            }
            match (&mut overflow, &t.overflow) {
                (Some(sum), Some(s)) => sum.merge(s, kind),
                (None, Some(s)) => overflow = Some(s.clone()),
                (_, None) => {}
            }
        }
        let mut v: Vec<(Option<Vec<String>>, Series)> = merged
            .into_iter()
            .map(|(k, s)| (Some(k.0.iter().map(|x| x.to_string()).collect()), s))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(o) = overflow {
            v.push((None, o));
        }
        v
    }

    /// The Prometheus text exposition format (0.0.4). A metric with no series is left out.
    /// The current value of each series of a counter or gauge (the overflow series left out).
    pub fn values(&self, metric: usize) -> Vec<(Vec<String>, f64)> {
        let Some(m) = self.metrics.get(metric) else {
            return Vec::new();
        };
        self.snapshot(m)
            .into_iter()
            .filter_map(|(labels, s)| Some((labels?, s.value)))
            .collect()
    }

    pub fn encode_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        for m in &self.metrics {
            let series = self.snapshot(m);
            if series.is_empty() {
                continue;
            }
            let d = m.def;
            let (ty, name) = match d.kind {
                Kind::Counter => ("counter", format!("{}_total", d.prom_name)),
                Kind::Gauge => ("gauge", d.prom_name.to_string()),
                Kind::Histogram { .. } => ("histogram", d.prom_name.to_string()),
            };
            // In text format 0.0.4 a counter's HELP and TYPE name it with its `_total`.
            let _ = writeln!(out, "# HELP {name} {}", escape_help(d.help));
            let _ = writeln!(out, "# TYPE {name} {ty}");
            for (values, s) in &series {
                let labels = label_text(d.labels, values.as_deref());
                match d.kind {
                    Kind::Counter | Kind::Gauge => {
                        let _ = writeln!(out, "{name}{} {}", braces(&labels), num(s.value));
                    }
                    Kind::Histogram { buckets } => {
                        let mut cum = 0u64;
                        for (i, b) in buckets.iter().enumerate() {
                            cum += s.buckets.get(i).copied().unwrap_or(0);
                            let l = join(&labels, &format!("le=\"{}\"", num(*b)));
                            let _ = writeln!(out, "{name}_bucket{{{l}}} {cum}");
                        }
                        let l = join(&labels, "le=\"+Inf\"");
                        let _ = writeln!(out, "{name}_bucket{{{l}}} {}", s.count);
                        let _ = writeln!(out, "{name}_sum{} {}", braces(&labels), num(s.value));
                        let _ = writeln!(out, "{name}_count{} {}", braces(&labels), s.count);
                    }
                }
            }
        }
    }

    fn unix_nanos(&self, t: Instant) -> u64 {
        let (i0, s0) = self.anchor;
        let st = if t >= i0 {
            s0 + (t - i0)
        } else {
            s0 - (i0 - t)
        };
        st.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    /// Every metric with series as OTLP, cumulative; `now_unix_nanos` is the data points' time.
    pub fn to_otlp(&self, now_unix_nanos: u64) -> Vec<Metric> {
        let mut out = Vec::new();
        for m in &self.metrics {
            let series = self.snapshot(m);
            if series.is_empty() {
                continue;
            }
            let d = m.def;
            let attrs = |values: &Option<Vec<String>>| -> Vec<KeyValue> {
                match values {
                    Some(v) => d
                        .labels
                        .iter()
                        .zip(v)
                        .map(|(k, v)| KeyValue {
                            key: k.to_string(),
                            value: Some(AnyValue {
                                value: Some(Value::StringValue(v.clone())),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    None => vec![KeyValue {
                        key: "otel.metric.overflow".into(),
                        value: Some(AnyValue {
                            value: Some(Value::BoolValue(true)),
                        }),
                        ..Default::default()
                    }],
                }
            };
            let data = match d.kind {
                Kind::Counter | Kind::Gauge => {
                    let points = series
                        .iter()
                        .map(|(v, s)| NumberDataPoint {
                            attributes: attrs(v),
                            start_time_unix_nano: self.unix_nanos(s.created),
                            time_unix_nano: now_unix_nanos,
                            value: Some(number_data_point::Value::AsDouble(s.value)),
                            ..Default::default()
                        })
                        .collect();
                    if matches!(d.kind, Kind::Counter) {
                        Data::Sum(Sum {
                            data_points: points,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })
                    } else {
                        Data::Gauge(Gauge {
                            data_points: points,
                        })
                    }
                }
                Kind::Histogram { buckets } => Data::Histogram(Histogram {
                    data_points: series
                        .iter()
                        .map(|(v, s)| HistogramDataPoint {
                            attributes: attrs(v),
                            start_time_unix_nano: self.unix_nanos(s.created),
                            time_unix_nano: now_unix_nanos,
                            count: s.count,
                            sum: Some(s.value),
                            bucket_counts: s.buckets.clone(),
                            explicit_bounds: buckets.to_vec(),
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            };
            out.push(Metric {
                name: d.otel_name.to_string(),
                description: d.help.to_string(),
                unit: d.unit.to_string(),
                data: Some(data),
                ..Default::default()
            });
        }
        out
    }
}

fn prom_label(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn label_text(keys: &[&str], values: Option<&[String]>) -> String {
    match values {
        None => "otel_metric_overflow=\"true\"".to_string(),
        Some(v) => keys
            .iter()
            .zip(v)
            .map(|(k, v)| format!("{}=\"{}\"", prom_label(k), escape_value(v)))
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

fn join(labels: &str, extra: &str) -> String {
    if labels.is_empty() {
        extra.to_string()
    } else {
        format!("{labels},{extra}")
    }
}

/// Integers without a fraction, other values in Rust's shortest round-trip form.
fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl DerivedMetrics {
    /// The value of one sample of the Prometheus text, found by its name (with any `_total`,
    /// `_sum` or `_count` suffix) and labels; for tests.
    pub fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut text = String::new();
        self.encode_prometheus(&mut text);
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).ok()?;
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(k).unwrap_or("") == *v)
            })
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    }
}

/// Bounds of the metrics derived from spans: cardinality and expiry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedMetricsLimits {
    /// Series per metric (default 2000); label sets beyond it are counted in one overflow series
    /// labelled `otel_metric_overflow="true"`.
    #[serde(default = "default_max_series")]
    pub max_series_per_metric: usize,
    /// A series not updated for this long is dropped (default 10m).
    #[serde(default = "default_series_ttl", with = "crate::config::duration")]
    pub series_ttl: Duration,
}

impl Default for DerivedMetricsLimits {
    fn default() -> Self {
        DerivedMetricsLimits {
            max_series_per_metric: default_max_series(),
            series_ttl: default_series_ttl(),
        }
    }
}

fn default_max_series() -> usize {
    2000
}

fn default_series_ttl() -> Duration {
    Duration::from_secs(600)
}
