//! The page: what ragwatch found, at the admin address's `/`, and the JSON API behind it.
//!
//! Not a trace store: a window on ragwatch's own analysis. A stage at the end of each traces
//! pipeline that analyses whole traces (the [`Observe`] tap, added by the service, not
//! configured) reads every analysed batch into a compact [`Observation`] on the pipeline's thread
//! and hands it, without waiting, to the page's own task, the one owner of a bounded in-memory
//! store: a time series of the last hour at 10 s resolution ([`series`]) and the recent notable
//! traces ([`notable`]). (A lock shared by the shards' taps stalled the pipelines on a loaded
//! machine; the taps now only read the notable traces' floors, atomics.) The rest
//! of what the page shows is read when asked for: alerts from the alert engine, SLOs, budgets and
//! the instrumentation lint from the derived metrics, pipeline health from ragwatch's own
//! metrics.

pub mod api;
pub mod notable;
pub mod series;
use crate::trace::summary;

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::alerting::AlertsSlot;
use crate::attributes::{get_f64, get_str};
use crate::config::Problems;
use crate::derived::DerivedMetrics;
use crate::genai::Facts;
use crate::names::attrs as a;
use crate::processor::{Processor, WithFacts, dropping_facts};
use crate::signal::Batch;
use crate::telemetry::SelfMetrics;

/// `page:` under `service.telemetry.metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageConfig {
    /// Serve the page and its API (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Show prompt, completion, retrieved and tool text in span attributes (default false: they
    /// are replaced by a note).
    #[serde(default)]
    pub show_content: bool,
    /// Jaeger's UI, to link each notable trace to (`<jaeger_url>/trace/<id>`); default: the
    /// `alerts` section's `jaeger_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jaeger_url: Option<String>,
    /// Notable traces kept, spread evenly over the five categories (default 200).
    #[serde(default = "default_notable")]
    pub notable_traces: usize,
    /// Services and models tracked by the time series (default 32 each); what is beyond is
    /// counted under `(other)`.
    #[serde(default = "default_keys")]
    pub max_services: usize,
    #[serde(default = "default_keys")]
    pub max_models: usize,
}

fn yes() -> bool {
    true
}
fn default_notable() -> usize {
    200
}
fn default_keys() -> usize {
    32
}

impl Default for PageConfig {
    fn default() -> Self {
        PageConfig {
            enabled: true,
            show_content: false,
            jaeger_url: None,
            notable_traces: default_notable(),
            max_services: default_keys(),
            max_models: default_keys(),
        }
    }
}

impl PageConfig {
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if !(5..=10_000).contains(&self.notable_traces) {
            problems.push(&format!("{path}.notable_traces"), "must be from 5 to 10000");
        }
        for (k, v) in [
            ("max_services", self.max_services),
            ("max_models", self.max_models),
        ] {
            if !(1..=1000).contains(&v) {
                problems.push(&format!("{path}.{k}"), "must be from 1 to 1000");
            }
        }
        if let Some(u) = &self.jaeger_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            problems.push(
                &format!("{path}.jaeger_url"),
                "must be an http:// or https:// URL",
            );
        }
    }

    fn limits(&self) -> series::Limits {
        series::Limits {
            max_services: self.max_services,
            max_models: self.max_models,
            max_stages: 16,
        }
    }
}

/// What the page shows of the configuration: SLO objectives and budget limits.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// (slo name, objective, kind)
    pub slos: Vec<(String, f64, String)>,
    /// (budget name, limit USD, period seconds)
    pub budgets: Vec<(String, f64, u64)>,
}

/// What the tap records, behind one lock.
struct State {
    series: series::Series,
    notable: notable::Notable,
    traces_seen: u64,
}

/// What one analysed batch comes to, read by the tap on the pipeline's thread and applied to the
/// store by the page's own task: the pipeline never waits for the store's lock.
#[derive(Debug, Default)]
pub struct Observation {
    now_ms: u64,
    /// Per model: calls, cost, input and output tokens.
    calls: Vec<(String, u32, f64, u64, u64)>,
    /// Per stage: span durations (ms).
    stages: Vec<(String, Vec<f64>)>,
    /// Per service: the spans' cost.
    costs: Vec<(String, f64)>,
    /// The analysed traces, with their spans cut to budget when they may be notable.
    traces: Vec<(summary::TraceFacts, Option<notable::Prepared>)>,
}

/// Observations waiting for the page's task, at most (a batch each); beyond, dropped and
/// counted: the page is a window, the pipeline must not wait for it. Small: an observation of a
/// 2,000-span batch holds every staged span's duration and every trace's facts, and under a
/// flood 1,024 of them queued took the memory-limited flood test from under 200 MiB to 266.
const INBOX: usize = 64;

/// The page's data and its sources.
pub struct Page {
    config: PageConfig,
    jaeger_url: Option<String>,
    state: Mutex<State>,
    metrics: Arc<SelfMetrics>,
    derived: Arc<DerivedMetrics>,
    alerts: AlertsSlot,
    targets: Targets,
    /// The page's task, once started; without it observations are applied at once.
    inbox: std::sync::OnceLock<tokio::sync::mpsc::Sender<Observation>>,
    /// The notable traces' floors (f64 bits), so the taps cut only traces that may be kept.
    floors: [std::sync::atomic::AtomicU64; 2],
    /// Analysed traces the page could not take (its inbox full).
    dropped: std::sync::atomic::AtomicU64,
}

/// Now in Unix milliseconds.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

impl Page {
    pub fn new(
        config: &PageConfig,
        alerts_jaeger_url: Option<&str>,
        metrics: Arc<SelfMetrics>,
        derived: Arc<DerivedMetrics>,
        alerts: AlertsSlot,
        targets: Targets,
    ) -> Page {
        let neg = f64::NEG_INFINITY.to_bits();
        Page {
            jaeger_url: config
                .jaeger_url
                .as_deref()
                .or(alerts_jaeger_url)
                .map(|u| u.trim_end_matches('/').to_string()),
            state: Mutex::new(State {
                series: series::Series::new(config.limits()),
                notable: notable::Notable::new(config.notable_traces, config.show_content),
                traces_seen: 0,
            }),
            config: config.clone(),
            metrics,
            derived,
            alerts,
            targets,
            inbox: std::sync::OnceLock::new(),
            floors: [
                std::sync::atomic::AtomicU64::new(neg),
                std::sync::atomic::AtomicU64::new(neg),
            ],
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Start the page's task: it applies the taps' observations and expires old notable traces
    /// every second, until `stop` fires.
    pub fn start(
        self: &Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Observation>(INBOX);
        let _ = self.inbox.set(tx);
        let page = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    o = rx.recv() => match o {
                        Some(o) => page.apply(o),
                        None => return,
                    },
                    _ = tick.tick() => page.expire(unix_ms(SystemTime::now())),
                }
            }
        })
    }

    pub fn config(&self) -> &PageConfig {
        &self.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock must not take the page down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tap for one traces pipeline (one per shard). `roots_are_requests` is false when the
    /// pipeline's trace assembly streams: a request is then its `ragwatch.analysis` span.
    pub fn tap(self: &Arc<Self>, roots_are_requests: bool) -> Box<dyn Processor> {
        Box::new(Observe {
            page: self.clone(),
            roots_are_requests,
            epoch: (Instant::now(), unix_ms(SystemTime::now())),
        })
    }

    fn floors(&self) -> notable::Floors {
        use std::sync::atomic::Ordering::Relaxed;
        notable::Floors {
            slowest_ms: f64::from_bits(self.floors[0].load(Relaxed)),
            costliest_usd: f64::from_bits(self.floors[1].load(Relaxed)),
        }
    }

    fn publish_floors(&self, f: notable::Floors) {
        use std::sync::atomic::Ordering::Relaxed;
        self.floors[0].store(f.slowest_ms.to_bits(), Relaxed);
        self.floors[1].store(f.costliest_usd.to_bits(), Relaxed);
    }

    /// Read a batch of analysed traces seen at `now_ms` (Unix milliseconds); a span's model
    /// and tokens come from the `facts` handed along the chain when they have it.
    pub fn observe(
        &self,
        r: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        roots_are_requests: bool,
        now_ms: u64,
        facts: Option<&Facts>,
    ) -> Observation {
        use std::collections::HashMap;
        let groups = summary::group(r);
        let mut calls: HashMap<Arc<str>, (u32, f64, u64, u64)> = HashMap::new();
        let mut stages: HashMap<&str, Vec<f64>> = HashMap::new();
        let mut costs: HashMap<&str, f64> = HashMap::new();
        for g in &groups {
            for (service, s) in &g.spans {
                let stage = get_str(&s.attributes, a::RAG_STAGE);
                let cost =
                    get_f64(&s.attributes, a::COST_USD).filter(|c| c.is_finite() && *c > 0.0);
                if let Some(st) = stage {
                    let ms =
                        s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6;
                    stages.entry(st).or_default().push(ms);
                }
                if let Some(c) = cost {
                    *costs.entry(service).or_default() += c;
                }
                if cost.is_some() || matches!(stage, Some("llm" | "embedding" | "rerank")) {
                    let (model, input, output) = match facts.and_then(|f| f.get(s)) {
                        Some(f) => (f.model.clone(), f.input_tokens, f.output_tokens),
                        None => {
                            let v = crate::genai::view(s);
                            (v.model().map(Arc::from), v.tokens.input, v.tokens.output)
                        }
                    };
                    if let Some(model) = model {
                        let e = calls.entry(model).or_default();
                        e.0 = e.0.saturating_add(1);
                        e.1 += cost.unwrap_or(0.0);
                        e.2 = e.2.saturating_add(input.unwrap_or(0));
                        e.3 = e.3.saturating_add(output.unwrap_or(0));
                    }
                }
            }
        }
        let floors = self.floors();
        let traces = groups
            .iter()
            .filter_map(|g| {
                let s = summary::summary_span(g, roots_are_requests)?;
                let f = summary::facts(g, s, notable::MAX_FINDINGS);
                let prepared = floors
                    .admits(&f)
                    .then(|| notable::prepare(g, &f, self.config.show_content));
                Some((f, prepared))
            })
            .collect();
        Observation {
            now_ms,
            calls: calls
                .into_iter()
                .map(|(m, (n, c, i, o))| (m.to_string(), n, c, i, o))
                .collect(),
            stages: stages
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            costs: costs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            traces,
        }
    }

    /// Record a batch: to the page's task when it runs (never waiting: a full inbox drops the
    /// observation and counts its traces), else at once.
    pub fn record(
        &self,
        r: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        roots_are_requests: bool,
        now_ms: u64,
        facts: Option<&Facts>,
    ) {
        let o = self.observe(r, roots_are_requests, now_ms, facts);
        match self.inbox.get() {
            Some(tx) => {
                if let Err(e) = tx.try_send(o) {
                    let o = match e {
                        tokio::sync::mpsc::error::TrySendError::Full(o)
                        | tokio::sync::mpsc::error::TrySendError::Closed(o) => o,
                    };
                    self.dropped
                        .fetch_add(o.traces.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            None => self.apply(o),
        }
    }

    /// Apply an observation to the store.
    pub fn apply(&self, o: Observation) {
        let now_ms = o.now_ms;
        let mut st = self.state();
        for (model, n, cost, input, output) in &o.calls {
            st.series
                .model_calls(model, *n, *cost, *input, *output, now_ms);
        }
        for (stage, durations) in &o.stages {
            for ms in durations {
                st.series.stage(stage, *ms, now_ms);
            }
        }
        for (service, c) in &o.costs {
            st.series.service_cost(service, *c, now_ms);
        }
        let mut kept = false;
        for (f, prepared) in o.traces {
            st.traces_seen += 1;
            st.series.request(
                &f.service,
                series::Request {
                    duration_ms: f.duration_ms,
                    error: f.error,
                    quality: f.quality,
                },
                now_ms,
            );
            if let Some(p) = prepared {
                st.notable.insert(p, now_ms);
                kept = true;
            }
        }
        if kept {
            let floors = st.notable.floors();
            drop(st);
            self.publish_floors(floors);
        }
    }

    /// Forget the slowest and costliest traces older than an hour.
    fn expire(&self, now_ms: u64) {
        let mut st = self.state();
        st.notable.expire_now(now_ms);
        let floors = st.notable.floors();
        drop(st);
        self.publish_floors(floors);
    }

    /// Analysed traces the page could not take.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes held by the time series and the notable traces now.
    pub fn approx_bytes(&self) -> (usize, usize) {
        let st = self.state();
        (st.series.approx_bytes(), st.notable.approx_bytes())
    }

    /// The most the time series and the notable traces can hold, in bytes.
    pub fn max_bytes(&self) -> (usize, usize) {
        (
            self.config.limits().max_bytes(),
            notable::Notable::max_bytes(self.config.notable_traces),
        )
    }
}

/// The tap: records each analysed batch and passes it on untouched.
pub struct Observe {
    page: Arc<Page>,
    roots_are_requests: bool,
    /// The processing time `now` is taken to the wall clock from this pair, read once.
    epoch: (Instant, u64),
}

impl Processor for Observe {
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_input_with(batch, None, now, with));
    }

    /// Models and tokens from the facts handed along; they go on (to nothing: the tap is last).
    fn on_input_with(
        &mut self,
        batch: Batch,
        facts: Option<Facts>,
        now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
        if let Batch::Traces(r) = &batch {
            let since = now.saturating_duration_since(self.epoch.0).as_millis();
            let now_ms = self
                .epoch
                .1
                .saturating_add(u64::try_from(since).unwrap_or(u64::MAX));
            self.page
                .record(r, self.roots_are_requests, now_ms, facts.as_ref());
        }
        out.push((batch, facts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README states these bounds; this keeps it true.
    #[test]
    fn the_stated_memory_bounds_hold() {
        let series = series::Limits::default().max_bytes();
        let notable = notable::Notable::max_bytes(200);
        eprintln!("series {series} bytes, notable {notable} bytes");
        assert!(series <= 5 * 1024 * 1024 / 2, "{series}");
        assert!(notable <= 10 * 1024 * 1024, "{notable}");
    }
    use crate::attributes::{kv_f64, kv_str};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn page() -> Page {
        Page::new(
            &PageConfig::default(),
            Some("http://jaeger:16686/"),
            SelfMetrics::new(),
            Arc::new(DerivedMetrics::new(
                crate::derived::defs::DEFS,
                crate::derived::Limits::default(),
            )),
            AlertsSlot::default(),
            Targets::default(),
        )
    }

    fn batch(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![kv_str("service.name", "svc")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn span(id: u8, parent: u8, name: &str) -> Span {
        Span {
            trace_id: vec![3; 16],
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                vec![parent; 8]
            },
            name: name.into(),
            start_time_unix_nano: 1_000_000,
            end_time_unix_nano: 501_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn in_stream_mode_a_request_is_its_analysis_span() {
        let p = page();
        assert_eq!(p.jaeger_url.as_deref(), Some("http://jaeger:16686"));
        // The root passes first, unanalysed: not yet a request.
        p.record(&batch(vec![span(1, 0, "GET /")]), false, 1_000, None);
        assert_eq!(p.state().traces_seen, 0);
        // Then the analysis span, with the root's summary.
        let mut a = span(9, 1, crate::names::attrs::ANALYSIS_SPAN);
        a.attributes = vec![kv_f64(crate::names::attrs::TRACE_DURATION_MS, 500.0)];
        p.record(&batch(vec![a]), false, 1_000, None);
        let st = p.state();
        assert_eq!(st.traces_seen, 1);
        let rows = st.series.services(1_000);
        assert_eq!(rows[0].service, "svc");
        assert_eq!(rows[0].p50_ms, Some(500.0));
    }

    #[test]
    fn without_assembly_every_root_is_a_request() {
        let p = page();
        let mut llm = span(2, 1, "chat");
        llm.attributes = vec![
            kv_str(a::RAG_STAGE, "llm"),
            kv_str("gen_ai.request.model", "m"),
            kv_f64(a::COST_USD, 0.25),
        ];
        p.record(&batch(vec![span(1, 0, "GET /"), llm]), true, 1_000, None);
        let st = p.state();
        assert_eq!(st.traces_seen, 1);
        let m = st.series.models(1_000);
        assert_eq!(
            (m[0].model.as_str(), m[0].calls, m[0].cost_usd),
            ("m", 1, 0.25)
        );
        assert_eq!(st.series.services(1_000)[0].cost_per_hour_usd, 0.25);
        // 500 ms, no cost on the root: the spans' cost is the trace's.
        let slow = st.notable.list(notable::Category::Slowest);
        assert_eq!(slow[0].facts.cost_usd, 0.25);
        assert_eq!(slow[0].facts.duration_ms, 500.0);
    }

    #[test]
    fn model_calls_are_read_from_the_facts_handed_along() {
        use crate::genai::{Names, SpanFacts};
        let p = page();
        let mut llm = span(2, 1, "chat");
        llm.attributes = vec![
            kv_str(a::RAG_STAGE, "llm"),
            kv_str("gen_ai.request.model", "m"),
            kv_f64(a::COST_USD, 0.25),
        ];
        // The facts say another model and 40 + 2 tokens, which the span does not carry: the
        // page believes the facts (read once, by genai) over reading the span again.
        let mut f = SpanFacts::read(&llm, &mut Names::default());
        f.model = Some("from-facts".into());
        f.input_tokens = Some(40);
        f.output_tokens = Some(2);
        let mut facts = Facts::default();
        facts.insert(&llm, f);
        p.record(
            &batch(vec![span(1, 0, "GET /"), llm]),
            true,
            1_000,
            Some(&facts),
        );
        let st = p.state();
        let m = st.series.models(1_000);
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].model.as_str(), m[0].calls, m[0].cost_usd),
            ("from-facts", 1, 0.25)
        );
        assert_eq!((m[0].tokens_input, m[0].tokens_output), (40, 2));
    }
}
