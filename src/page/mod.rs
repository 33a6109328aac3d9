//! The page: what ragwatch found, at the admin address's `/`, and the JSON API behind it.
//!
//! Not a trace store: a window on ragwatch's own analysis. A stage at the end of each traces
//! pipeline that analyses whole traces (the [`Observe`] tap, added by the service, not
//! configured) hands every analysed batch to one bounded in-memory [`Page`]: a time series of the
//! last hour at 10 s resolution ([`series`]) and the recent notable traces ([`notable`]). The rest
//! of what the page shows is read when asked for: alerts from the alert engine, SLOs, budgets and
//! the instrumentation lint from the derived metrics, pipeline health from ragwatch's own
//! metrics.

pub mod api;
pub mod notable;
pub mod series;
pub mod summary;

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::admin::AlertsSlot;
use crate::attributes::{get_f64, get_str};
use crate::config::Problems;
use crate::derived::DerivedMetrics;
use crate::names::attrs as a;
use crate::processor::Processor;
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

impl Targets {
    /// The SLOs and budgets of every `slo` processor of a configuration.
    pub fn of(config: &crate::Config) -> Targets {
        let mut t = Targets::default();
        for p in config.processors.values() {
            if let crate::processor::ProcessorConfig::Slo(c) = p {
                for s in &c.slos {
                    let kind = serde_json::to_value(s.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    t.slos.push((s.name.clone(), s.objective, kind));
                }
                for b in &c.budgets {
                    t.budgets
                        .push((b.name.clone(), b.limit_usd, b.period.as_secs()));
                }
            }
        }
        t
    }
}

/// What the tap records, behind one lock.
struct State {
    series: series::Series,
    notable: notable::Notable,
    traces_seen: u64,
}

/// The page's data and its sources.
pub struct Page {
    config: PageConfig,
    jaeger_url: Option<String>,
    state: Mutex<State>,
    metrics: Arc<SelfMetrics>,
    derived: Arc<DerivedMetrics>,
    alerts: AlertsSlot,
    targets: Targets,
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
        }
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

    /// Record a batch of analysed traces seen at `now_ms` (Unix milliseconds).
    pub fn record(
        &self,
        r: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        roots_are_requests: bool,
        now_ms: u64,
    ) {
        let groups = summary::group(r);
        // What each span says, read before taking the lock.
        struct Call<'a> {
            model: &'a str,
            cost: f64,
            input: u64,
            output: u64,
        }
        let mut calls: Vec<Call<'_>> = Vec::new();
        let mut stages: Vec<(&str, f64)> = Vec::new();
        let mut costs: Vec<(&str, f64)> = Vec::new();
        for g in &groups {
            for (service, s) in &g.spans {
                let stage = get_str(&s.attributes, a::RAG_STAGE);
                let cost =
                    get_f64(&s.attributes, a::COST_USD).filter(|c| c.is_finite() && *c > 0.0);
                if let Some(st) = stage {
                    let ms =
                        s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6;
                    stages.push((st, ms));
                }
                if let Some(c) = cost {
                    costs.push((service, c));
                }
                if cost.is_some() || matches!(stage, Some("llm" | "embedding" | "rerank")) {
                    let v = crate::genai::view(s);
                    if let Some(model) = v.model() {
                        calls.push(Call {
                            model,
                            cost: cost.unwrap_or(0.0),
                            input: v.tokens.input.unwrap_or(0),
                            output: v.tokens.output.unwrap_or(0),
                        });
                    }
                }
            }
        }
        let traces: Vec<(usize, summary::TraceFacts)> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                let s = summary::summary_span(g, roots_are_requests)?;
                Some((i, summary::facts(g, s, notable::MAX_FINDINGS)))
            })
            .collect();
        let mut st = self.state();
        for c in &calls {
            st.series
                .model_call(c.model, c.cost, c.input, c.output, now_ms);
        }
        for (stage, ms) in &stages {
            st.series.stage(stage, *ms, now_ms);
        }
        for (service, c) in &costs {
            st.series.service_cost(service, *c, now_ms);
        }
        for (i, f) in &traces {
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
            if let Some(g) = groups.get(*i) {
                st.notable.offer(g, f, now_ms);
            }
        }
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
        if let Batch::Traces(r) = &batch {
            let since = now.saturating_duration_since(self.epoch.0).as_millis();
            let now_ms = self
                .epoch
                .1
                .saturating_add(u64::try_from(since).unwrap_or(u64::MAX));
            self.page.record(r, self.roots_are_requests, now_ms);
        }
        out.push(batch);
    }
}

/// Whether the page taps traces pipeline `p` of `config`, and if so whether its roots are its
/// requests: the pipelines that assemble traces (`trace_assembly`) when there are any, else
/// every traces pipeline; in stream mode a request is its `ragwatch.analysis` span.
pub fn watches(config: &crate::Config, p: &crate::config::PipelineConfig) -> Option<bool> {
    use crate::analysis::assembly::Mode;
    use crate::processor::ProcessorConfig;
    let assembly = |p: &crate::config::PipelineConfig| {
        p.processors
            .iter()
            .find_map(|n| match config.processors.get(n) {
                Some(ProcessorConfig::TraceAssembly(c)) => Some(c.mode),
                _ => None,
            })
    };
    let any_assembles = config.service.pipelines.iter().any(|(id, q)| {
        crate::config::PipelineConfig::signal_of(id) == Some(crate::signal::Signal::Traces)
            && assembly(q).is_some()
    });
    match assembly(p) {
        Some(mode) => Some(mode != Mode::Stream),
        None if !any_assembles => Some(true),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{kv_f64, kv_str};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn page() -> Page {
        Page::new(
            &PageConfig::default(),
            Some("http://jaeger:16686/"),
            SelfMetrics::new(),
            Arc::new(DerivedMetrics::new(
                crate::genai::metrics::DEFS,
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
        p.record(&batch(vec![span(1, 0, "GET /")]), false, 1_000);
        assert_eq!(p.state().traces_seen, 0);
        // Then the analysis span, with the root's summary.
        let mut a = span(9, 1, crate::names::attrs::ANALYSIS_SPAN);
        a.attributes = vec![kv_f64(crate::names::attrs::TRACE_DURATION_MS, 500.0)];
        p.record(&batch(vec![a]), false, 1_000);
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
        p.record(&batch(vec![span(1, 0, "GET /"), llm]), true, 1_000);
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
    fn the_page_watches_the_pipelines_that_assemble_else_all() {
        let yaml = |assemble: &str| {
            format!(
                r#"
receivers:
  otlp:
processors:
  trace_assembly:
    mode: {assemble}
exporters:
  debug:
service:
  pipelines:
    traces/a:
      receivers: [otlp]
      processors: [trace_assembly]
      exporters: [debug]
    traces/b:
      receivers: [otlp]
      exporters: [debug]
"#
            )
        };
        let c = crate::Config::from_yaml_with_env(&yaml("hold"), "t", &|_| None).expect("valid");
        let p = |id: &str| c.service.pipelines.get(id).expect("pipeline");
        assert_eq!(watches(&c, p("traces/a")), Some(true));
        assert_eq!(watches(&c, p("traces/b")), None);
        let c = crate::Config::from_yaml_with_env(&yaml("stream"), "t", &|_| None).expect("valid");
        let p = |id: &str| c.service.pipelines.get(id).expect("pipeline");
        assert_eq!(watches(&c, p("traces/a")), Some(false));
    }
}
