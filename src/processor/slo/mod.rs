//! The `slo` processor: service level objectives over RAG requests (root spans) or a stage's
//! spans, evaluated with multi-window, multi-burn-rate rules as in the Google SRE workbook, and
//! spend budgets with their projected end-of-period spend.
//!
//! Every matching span is one event, good or bad, counted in time buckets (`resolution`). Every
//! `evaluation_interval` each SLO's SLI and burn rate are computed per window and per key
//! (service, and the operation or model with `by`), published as gauges, and a rule whose long
//! and short windows both burn faster than its rate gives an `slo_burn` finding. Time is the
//! processing time the pipeline passes in, so a test drives it by hand.

pub mod burning;
pub mod window;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::Span;
use serde::{Deserialize, Serialize};

use crate::attributes::{get_f64, get_str, hex};
use crate::config::{Problems, Validate, duration};
use crate::derived::DerivedMetrics;
use crate::derived::defs as m;
use crate::findings::{Finding, Findings, Severity};
use crate::genai::{Facts, Names, SpanFacts};
use crate::names::attrs as a;
use crate::processor::{Processor, WithFacts, dropping_facts};
use crate::signal::Batch;
use crate::trace::{FastMap, TraceSpans, group_by_trace};
use window::{Counts, Ring};

/// What an SLO counts as good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloKind {
    /// Duration at most `threshold` (a duration).
    Latency,
    /// Status not ERROR.
    Availability,
    /// `rag.quality.score` at least `threshold` (0..1); traces without a score do not count.
    Quality,
    /// Time to first token of model calls at most `threshold` (a duration).
    Ttft,
    /// Cost of the request (or of the stage's span) at most `threshold` USD.
    Cost,
}

/// A threshold: a duration (`2s`) or a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Threshold {
    Number(f64),
    Text(String),
}

/// An optional split of an SLO's events beyond the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Operation,
    Model,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    pub name: String,
    pub kind: SloKind,
    /// The target share of good events, e.g. 0.95.
    pub objective: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    /// Only this service; omitted, every service is evaluated on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `request` (the root span of each trace) or a stage (`retrieval`, `llm`, ...).
    #[serde(default = "default_over")]
    pub over: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<GroupBy>,
    /// The SLO period the error budget is spread over.
    #[serde(default = "default_period", with = "duration")]
    pub period: Duration,
}

fn default_over() -> String {
    "request".into()
}
fn default_period() -> Duration {
    Duration::from_secs(30 * 86_400)
}

/// Alert when both windows burn faster than `burn_rate` and each holds at least `min_events`
/// events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnRule {
    pub severity: RuleSeverity,
    #[serde(with = "duration")]
    pub long: Duration,
    #[serde(with = "duration")]
    pub short: Duration,
    pub burn_rate: f64,
    /// The fewest events each window must hold before the rule may fire: a burn rate over a
    /// handful of requests is noise (one slow cold-start request on a quiet service burns at
    /// 20x). Default 10: one bad request in a window cannot fire a rule, 15 bad in 30 can.
    #[serde(default = "default_min_events")]
    pub min_events: u64,
}

fn default_min_events() -> u64 {
    10
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSeverity {
    Critical,
    Warning,
}

impl From<RuleSeverity> for Severity {
    fn from(s: RuleSeverity) -> Severity {
        match s {
            RuleSeverity::Critical => Severity::Critical,
            RuleSeverity::Warning => Severity::Warning,
        }
    }
}

/// A spend budget per period (a day by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub name: String,
    pub limit_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Periods are aligned to the Unix epoch, so a day runs midnight to midnight UTC.
    #[serde(default = "one_day", with = "duration")]
    pub period: Duration,
    /// The recent window whose spend rate is projected to the end of the period.
    #[serde(default = "one_hour", with = "duration")]
    pub projection_window: Duration,
}

fn one_day() -> Duration {
    Duration::from_secs(86_400)
}
fn one_hour() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloProcessorConfig {
    #[serde(default)]
    pub slos: Vec<SloConfig>,
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    /// Defaults: page (critical) when 1h and 5m both burn > 14.4; ticket (warning) when 6h and
    /// 30m both burn > 6.
    #[serde(default = "default_rules")]
    pub burn_rules: Vec<BurnRule>,
    /// Width of the time buckets events are counted in.
    #[serde(default = "ten_seconds", with = "duration")]
    pub resolution: Duration,
    #[serde(default = "ten_seconds", with = "duration")]
    pub evaluation_interval: Duration,
    /// Keys (SLO × service × scope) tracked at most; beyond, new keys are not tracked (counted
    /// and logged).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn default_max_keys() -> usize {
    1000
}

pub fn default_rules() -> Vec<BurnRule> {
    vec![
        BurnRule {
            severity: RuleSeverity::Critical,
            long: Duration::from_secs(3600),
            short: Duration::from_secs(300),
            burn_rate: 14.4,
            min_events: default_min_events(),
        },
        BurnRule {
            severity: RuleSeverity::Warning,
            long: Duration::from_secs(6 * 3600),
            short: Duration::from_secs(1800),
            burn_rate: 6.0,
            min_events: default_min_events(),
        },
    ]
}

impl Default for SloProcessorConfig {
    fn default() -> Self {
        SloProcessorConfig {
            slos: Vec::new(),
            budgets: Vec::new(),
            burn_rules: default_rules(),
            resolution: ten_seconds(),
            evaluation_interval: ten_seconds(),
            max_keys: default_max_keys(),
        }
    }
}

impl SloConfig {
    /// The threshold in the kind's unit (seconds, score or USD), or why it is wrong.
    fn threshold_value(&self) -> Result<f64, String> {
        match (self.kind, &self.threshold) {
            (SloKind::Availability, None) => Ok(0.0),
            (SloKind::Availability, Some(_)) => Err("availability takes no threshold".into()),
            (_, None) => Err("required for this kind".into()),
            (SloKind::Latency | SloKind::Ttft, Some(Threshold::Text(t))) => {
                duration::parse(t).map(|d| d.as_secs_f64())
            }
            (SloKind::Latency | SloKind::Ttft, Some(Threshold::Number(_))) => {
                Err("must be a duration such as 2s or 500ms".into())
            }
            (SloKind::Quality, Some(Threshold::Number(x))) if (0.0..=1.0).contains(x) => Ok(*x),
            (SloKind::Cost, Some(Threshold::Number(x))) if x.is_finite() && *x > 0.0 => Ok(*x),
            (SloKind::Quality, _) => Err("must be a score between 0 and 1".into()),
            (SloKind::Cost, _) => Err("must be a cost in USD greater than 0".into()),
        }
    }
}

impl Validate for SloProcessorConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.slos.iter().enumerate() {
            let p = format!("{path}.slos.{i}");
            if s.name.trim().is_empty() || !names.insert(s.name.as_str()) {
                problems.push(&format!("{p}.name"), "must be a non-empty name, unique");
            }
            if !(s.objective > 0.0 && s.objective < 1.0) {
                problems.push(
                    &format!("{p}.objective"),
                    "must be between 0 and 1 (exclusive)",
                );
            }
            if let Err(e) = s.threshold_value() {
                problems.push(&format!("{p}.threshold"), e);
            }
            let stages: Vec<&str> = crate::stage::Stage::ALL
                .iter()
                .map(|s| s.as_str())
                .collect();
            if s.over != "request" && !stages.contains(&s.over.as_str()) {
                problems.push(
                    &format!("{p}.over"),
                    format!("must be `request` or a stage: {}", stages.join(", ")),
                );
            }
            if s.kind == SloKind::Ttft && s.over != "request" && s.over != "llm" {
                problems.push(&format!("{p}.over"), "a ttft SLO is over `llm` spans");
            }
            if s.period.is_zero() {
                problems.push(&format!("{p}.period"), "must be greater than 0");
            }
        }
        for (i, b) in self.budgets.iter().enumerate() {
            let p = format!("{path}.budgets.{i}");
            if b.name.trim().is_empty() || !names.insert(b.name.as_str()) {
                problems.push(
                    &format!("{p}.name"),
                    "must be a non-empty name, unique among SLOs and budgets",
                );
            }
            if !(b.limit_usd.is_finite() && b.limit_usd > 0.0) {
                problems.push(&format!("{p}.limit_usd"), "must be greater than 0");
            }
            if b.period < Duration::from_secs(1) {
                problems.push(&format!("{p}.period"), "must be at least 1s");
            }
            if b.projection_window.is_zero() || b.projection_window > b.period {
                problems.push(
                    &format!("{p}.projection_window"),
                    "must be greater than 0 and at most the period",
                );
            }
        }
        for (i, r) in self.burn_rules.iter().enumerate() {
            let p = format!("{path}.burn_rules.{i}");
            if r.short.is_zero() || r.short >= r.long {
                problems.push(
                    &format!("{p}.short"),
                    "must be greater than 0 and shorter than long",
                );
            }
            if !(r.burn_rate.is_finite() && r.burn_rate > 0.0) {
                problems.push(&format!("{p}.burn_rate"), "must be greater than 0");
            }
        }
        if self.resolution.is_zero() {
            problems.push(&format!("{path}.resolution"), "must be greater than 0");
        }
        if self.evaluation_interval.is_zero() {
            problems.push(
                &format!("{path}.evaluation_interval"),
                "must be greater than 0",
            );
        }
        if self.max_keys == 0 {
            problems.push(&format!("{path}.max_keys"), "must be at least 1");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    slo: usize,
    service: String,
    scope: String,
}

struct KeyState {
    fine: Ring,
    period: Ring,
    last_seen: Instant,
    /// The latest bad event's trace, as an example for alerts.
    example: Option<String>,
}

struct Budget {
    config: BudgetConfig,
    period_index: u64,
    spent: f64,
    recent: Ring,
    started: Instant,
}

/// The runtime of one `slo` processor.
pub struct SloProcessor {
    config: SloProcessorConfig,
    thresholds: Vec<f64>,
    /// Every window some rule uses, shortest first, with its label.
    windows: Vec<(Duration, String)>,
    keys: FastMap<Key, KeyState>,
    budgets: Vec<Budget>,
    derived: Arc<DerivedMetrics>,
    findings: Arc<Findings>,
    clock: (Instant, SystemTime),
    next_eval: Option<Instant>,
    untracked: u64,
    /// Where the SLOs burning at each evaluation are told (`tail_sampling`'s `slo_burn`).
    burning: Option<(Arc<burning::Burning>, u64)>,
}

/// One event of one SLO.
struct Event {
    slo: usize,
    service: String,
    scope: String,
    good: bool,
    trace: String,
}

impl SloProcessor {
    pub fn new(
        config: SloProcessorConfig,
        derived: Arc<DerivedMetrics>,
        findings: Arc<Findings>,
    ) -> Self {
        Self::with_clock(
            config,
            derived,
            findings,
            (Instant::now(), SystemTime::now()),
        )
    }

    /// With a wall clock read as `clock.1` at the instant `clock.0` (tests set both by hand).
    pub fn with_clock(
        config: SloProcessorConfig,
        derived: Arc<DerivedMetrics>,
        findings: Arc<Findings>,
        clock: (Instant, SystemTime),
    ) -> Self {
        let thresholds = config
            .slos
            .iter()
            .map(|s| s.threshold_value().unwrap_or(0.0))
            .collect();
        let mut windows: Vec<Duration> = config
            .burn_rules
            .iter()
            .flat_map(|r| [r.long, r.short])
            .collect();
        windows.sort();
        windows.dedup();
        let windows = windows
            .into_iter()
            .map(|d| (d, duration::format(d)))
            .collect();
        let budgets = config
            .budgets
            .iter()
            .map(|b| Budget {
                config: b.clone(),
                period_index: u64::MAX,
                spent: 0.0,
                recent: Ring::new(clock.0, b.projection_window / 60, b.projection_window),
                started: clock.0,
            })
            .collect();
        SloProcessor {
            config,
            thresholds,
            windows,
            keys: FastMap::default(),
            budgets,
            derived,
            findings,
            clock,
            next_eval: None,
            untracked: 0,
            burning: None,
        }
    }

    /// Tell `burning` which SLOs burn at each evaluation.
    pub fn with_burning(mut self, burning: Arc<burning::Burning>) -> Self {
        let w = burning.writer();
        self.burning = Some((burning, w));
        self
    }

    fn wall_secs(&self, now: Instant) -> f64 {
        let since = self
            .clock
            .1
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        since + now.saturating_duration_since(self.clock.0).as_secs_f64()
            - self.clock.0.saturating_duration_since(now).as_secs_f64()
    }

    fn longest_window(&self) -> Duration {
        self.windows
            .last()
            .map(|w| w.0)
            .unwrap_or(Duration::from_secs(3600))
    }

    /// Whether some budget is split by model (then spends read the model).
    fn budgets_by_model(&self) -> bool {
        self.budgets.iter().any(|b| b.config.model.is_some())
    }
}

/// The events and spends of a batch's traces: read from the spans, the facts handed along and
/// the SLOs' settings alone, so a shard reads them without holding the shared windows.
fn read_batch(
    slos: &[SloConfig],
    thresholds: &[f64],
    by_model: bool,
    batch: &mut Batch,
    facts: Option<&Facts>,
) -> (Vec<Event>, Vec<Spend>) {
    let (mut found, mut spent) = (Vec::new(), Vec::new());
    if let Batch::Traces(r) = batch {
        for t in group_by_trace(r) {
            events(slos, thresholds, &t, facts, &mut found);
            spent.extend(spends(&t, by_model, facts));
        }
    }
    (found, spent)
}

/// The events a trace gives each SLO: read from the spans and the SLOs' settings alone, so a
/// shard computes them without holding the shared windows.
fn events(
    slos: &[SloConfig],
    thresholds: &[f64],
    t: &TraceSpans<'_>,
    facts: Option<&Facts>,
    out: &mut Vec<Event>,
) {
    let root = t.root().map(|i| &*t.spans[i].1);
    let trace = t
        .spans
        .first()
        .map(|(_, s)| hex(&s.trace_id))
        .unwrap_or_default();
    // The model is read (a GenAI view) only for SLOs split by model.
    let trace_model = || {
        t.spans
            .iter()
            .find(|(_, s)| stage_of(s) == Some("llm"))
            .and_then(|(_, s)| model_of(s, facts))
    };
    for (i, slo) in slos.iter().enumerate() {
        let Some(&threshold) = thresholds.get(i) else {
            continue;
        };
        let mut push =
            |service: &str, span: &Span, model: &dyn Fn() -> Option<String>, good: bool| {
                if slo.service.as_deref().is_some_and(|s| s != service) {
                    return;
                }
                let scope = match slo.by {
                    None => String::new(),
                    Some(GroupBy::Operation) => get_str(&span.attributes, "gen_ai.operation.name")
                        .filter(|_| slo.over != "request")
                        .unwrap_or(&span.name)
                        .to_string(),
                    Some(GroupBy::Model) => model().unwrap_or_default(),
                };
                out.push(Event {
                    slo: i,
                    service: service.to_string(),
                    scope,
                    good,
                    trace: trace.clone(),
                });
            };
        if slo.kind == SloKind::Ttft {
            for (service, s) in &t.spans {
                if stage_of(s) != Some("llm") {
                    continue;
                }
                if let Some(ms) = get_f64(&s.attributes, a::LLM_TTFT_MS) {
                    push(service, s, &|| model_of(s, facts), ms / 1000.0 <= threshold);
                }
            }
            continue;
        }
        let judge = |s: &Span, request: bool| -> Option<bool> {
            Some(match slo.kind {
                SloKind::Latency => crate::attributes::duration_secs(s) <= threshold,
                SloKind::Availability => !crate::attributes::is_error(s),
                SloKind::Quality => get_f64(&s.attributes, a::QUALITY_SCORE)? >= threshold,
                SloKind::Cost => {
                    let cost = if request {
                        get_f64(&s.attributes, a::TRACE_COST_USD).unwrap_or_else(|| {
                            t.spans
                                .iter()
                                .filter_map(|(_, x)| get_f64(&x.attributes, a::COST_USD))
                                .sum()
                        })
                    } else {
                        // An agent run costs what its model calls cost.
                        get_f64(&s.attributes, a::COST_USD)
                            .or_else(|| get_f64(&s.attributes, a::AGENT_COST_USD))
                            .unwrap_or(0.0)
                    };
                    cost <= threshold
                }
                SloKind::Ttft => return None,
            })
        };
        if slo.over == "request" {
            if let Some(r) = root
                && let Some(good) = judge(r, true)
            {
                push(t.service, r, &trace_model, good);
            }
        } else {
            for (service, s) in &t.spans {
                if stage_of(s) == Some(slo.over.as_str())
                    && let Some(good) = judge(s, false)
                {
                    push(service, s, &|| model_of(s, facts), good);
                }
            }
        }
    }
}

impl SloProcessor {
    fn record(&mut self, e: Event, now: Instant) {
        let key = Key {
            slo: e.slo,
            service: e.service,
            scope: e.scope,
        };
        if !self.keys.contains_key(&key) {
            if self.keys.len() >= self.config.max_keys {
                self.untracked += 1;
                if self.untracked.is_power_of_two() {
                    tracing::warn!(
                        max_keys = self.config.max_keys,
                        untracked = self.untracked,
                        "slo: too many keys; events of new keys are not tracked"
                    );
                }
                return;
            }
            let slo = &self.config.slos[e.slo];
            let fine = Ring::new(now, self.config.resolution, self.longest_window());
            let period = Ring::new(
                now,
                (slo.period / 720).max(self.config.resolution),
                slo.period,
            );
            self.keys.insert(
                key.clone(),
                KeyState {
                    fine,
                    period,
                    last_seen: now,
                    example: None,
                },
            );
        }
        if let Some(st) = self.keys.get_mut(&key) {
            let g = if e.good { 1.0 } else { 0.0 };
            st.fine.record(now, g, 1.0);
            st.period.record(now, g, 1.0);
            st.last_seen = now;
            if !e.good {
                st.example = Some(e.trace);
            }
        }
    }

    /// Count a batch's events and spends; the first batch starts the evaluation clock.
    fn record_all(&mut self, events: Vec<Event>, spends: Vec<Spend>, now: Instant) {
        self.apply_spends(spends, now);
        for e in events {
            self.record(e, now);
        }
        if self.next_eval.is_none() {
            self.next_eval = Some(now + self.config.evaluation_interval);
        }
    }

    fn apply_spends(&mut self, spends: Vec<Spend>, now: Instant) {
        if self.budgets.is_empty() || spends.is_empty() {
            return;
        }
        let wall = self.wall_secs(now);
        for sp in spends {
            for b in &mut self.budgets {
                if b.config.service.as_deref().is_some_and(|x| x != sp.service)
                    || b.config
                        .model
                        .as_deref()
                        .is_some_and(|x| Some(x) != sp.model.as_deref())
                {
                    continue;
                }
                roll_period(b, wall);
                b.spent += sp.cost;
                b.recent.record(now, sp.cost, 0.0);
            }
        }
    }

    /// Evaluate every SLO and budget at `now`: gauges and findings.
    pub fn evaluate(&mut self, now: Instant) {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(self.wall_secs(now).max(0.0));
        // Forget keys silent for longer than their period.
        let slos = &self.config.slos;
        self.keys
            .retain(|k, st| now.saturating_duration_since(st.last_seen) <= slos[k.slo].period);
        let mut burning_now = Vec::new();
        for (k, st) in &mut self.keys {
            let slo = &self.config.slos[k.slo];
            let mut burns: HashMap<Duration, (f64, f64)> = HashMap::new();
            for (w, label) in &self.windows {
                let c = st.fine.window(now, *w);
                let labels = [slo.name.as_str(), &k.service, &k.scope, label];
                if let (Some(r), Some(b)) = (c.ratio(), c.burn_rate(slo.objective)) {
                    self.derived.set(m::SLO_SLI_RATIO, &labels, r, now);
                    self.derived.set(m::SLO_BURN_RATE, &labels, b, now);
                    self.derived.set(m::SLO_EVENTS, &labels, c.total, now);
                    burns.insert(*w, (b, c.total));
                }
            }
            let p: Counts = st.period.window(now, slo.period);
            if let Some(b) = p.burn_rate(slo.objective) {
                self.derived.set(
                    m::SLO_ERROR_BUDGET_REMAINING,
                    &[slo.name.as_str(), &k.service, &k.scope],
                    1.0 - b,
                    now,
                );
            }
            // The most severe rule that holds.
            let fired = self
                .config
                .burn_rules
                .iter()
                .filter(|r| {
                    // Exceeds, not equals: 1 - 0.9 is not exactly 0.1 in binary, so compare
                    // with a relative margin far below any meaningful difference.
                    let above = |w: &Duration| {
                        burns.get(w).is_some_and(|(b, events)| {
                            *b > r.burn_rate * (1.0 + 1e-9) && *events >= r.min_events as f64
                        })
                    };
                    above(&r.long) && above(&r.short)
                })
                .max_by_key(|r| Severity::from(r.severity));
            if let Some(r) = fired {
                burning_now.push(burning::BurningSlo {
                    slo: slo.name.clone(),
                    service: k.service.clone(),
                    over: slo.over.clone(),
                });
                let ((bl, nl), (bs, ns)) = (burns[&r.long], burns[&r.short]);
                let sli = st.fine.window(now, r.long).ratio().unwrap_or(0.0);
                let mut labels = std::collections::BTreeMap::new();
                labels.insert("slo", slo.name.clone());
                labels.insert("service", k.service.clone());
                match slo.by {
                    Some(GroupBy::Operation) => {
                        labels.insert("operation", k.scope.clone());
                    }
                    Some(GroupBy::Model) => {
                        labels.insert("model", k.scope.clone());
                    }
                    None => {}
                }
                if slo.over != "request" {
                    labels.insert("stage", slo.over.clone());
                }
                self.findings.publish(Finding {
                    name: "slo_burn",
                    severity: r.severity.into(),
                    labels,
                    summary: format!(
                        "SLO {} of {} is burning its error budget {:.1}x too fast",
                        slo.name, k.service, bl
                    ),
                    description: format!(
                        "burn rate {bl:.2} over {} ({nl:.0} events) and {bs:.2} over {} ({ns:.0} \
                         events) (threshold {}); SLI over {} {sli:.4} against objective {}",
                        duration::format(r.long),
                        duration::format(r.short),
                        r.burn_rate,
                        duration::format(r.long),
                        slo.objective
                    ),
                    trace_id: st.example.clone(),
                    at,
                });
            }
        }
        if let Some((b, w)) = &self.burning {
            b.set(*w, burning_now);
        }
        let wall = self.wall_secs(now);
        for b in &mut self.budgets {
            roll_period(b, wall);
            let period = b.config.period.as_secs_f64();
            let into_period = wall.rem_euclid(period);
            let remaining = period - into_period;
            // The rate over the projection window, or over what of it has been seen.
            let seen = b
                .config
                .projection_window
                .as_secs_f64()
                .min(now.saturating_duration_since(b.started).as_secs_f64())
                .min(into_period)
                .max(1.0);
            let recent = b.recent.window(now, b.config.projection_window).good;
            // A rate from a few seconds of data is noise: project only once a sixth of the
            // window (10 minutes of the default hour) has been seen; until then the projection
            // is the spend so far.
            let enough = seen >= b.config.projection_window.as_secs_f64() / 6.0;
            let projected = if enough {
                b.spent + recent / seen * remaining
            } else {
                b.spent
            };
            let name = b.config.name.as_str();
            self.derived.set(m::BUDGET_SPEND, &[name], b.spent, now);
            self.derived
                .set(m::BUDGET_PROJECTED_SPEND, &[name], projected, now);
            let severity = if b.spent >= b.config.limit_usd {
                Severity::Critical
            } else if projected >= b.config.limit_usd {
                Severity::Warning
            } else {
                continue;
            };
            let mut labels = std::collections::BTreeMap::new();
            labels.insert("budget", name.to_string());
            if let Some(s) = &b.config.service {
                labels.insert("service", s.clone());
            }
            if let Some(x) = &b.config.model {
                labels.insert("model", x.clone());
            }
            self.findings.publish(Finding {
                name: "budget_projection",
                severity,
                labels,
                summary: if severity == Severity::Critical {
                    format!("budget {name} is spent")
                } else {
                    format!("budget {name} will be exceeded by the end of the period")
                },
                description: format!(
                    "spent {:.4} USD of {:.4} USD; projected {:.4} USD at the end of the period \
                     ({:.0} s left) at the rate of the last {}",
                    b.spent,
                    b.config.limit_usd,
                    projected,
                    remaining,
                    // The span really projected from: the window, or what of it has passed
                    // since ragwatch started (or since the period began).
                    duration::format(Duration::from_secs(seen.round() as u64))
                ),
                trace_id: None,
                at,
            });
        }
    }
}

fn roll_period(b: &mut Budget, wall: f64) {
    let idx = (wall / b.config.period.as_secs_f64()).floor().max(0.0) as u64;
    if idx != b.period_index {
        b.period_index = idx;
        b.spent = 0.0;
    }
}

/// The cost of one model call, for the budgets.
struct Spend {
    service: String,
    cost: f64,
    model: Option<String>,
}

/// What a trace spends: each span's cost with its service (and model, when a budget is split
/// by model).
fn spends(t: &TraceSpans<'_>, by_model: bool, facts: Option<&Facts>) -> Vec<Spend> {
    t.spans
        .iter()
        .filter_map(|(service, s)| {
            let cost = get_f64(&s.attributes, a::COST_USD)?;
            Some(Spend {
                service: service.to_string(),
                cost,
                model: if by_model { model_of(s, facts) } else { None },
            })
        })
        .collect()
}

fn stage_of(s: &Span) -> Option<&str> {
    get_str(&s.attributes, a::RAG_STAGE)
}

/// What `by: model` splits by: a model call's model; an agent run's agent, a tool call's tool
/// (so agents and tools get SLOs of their own as model calls do).
fn model_of(s: &Span, facts: Option<&Facts>) -> Option<String> {
    let f = match facts {
        Some(facts) => facts.of(s),
        None => Cow::Owned(SpanFacts::read(s, &mut Names::default())),
    };
    match f.stage {
        Some(crate::stage::Stage::Agent) => f.agent_name.as_deref(),
        Some(crate::stage::Stage::Tool) => f.tool_name.as_deref(),
        _ => f.model.as_deref(),
    }
    .map(str::to_string)
}

impl Processor for SloProcessor {
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_input_with(batch, None, now, with));
    }

    /// Reads models from the facts handed along (when an SLO or budget is split by model),
    /// and hands them on.
    fn on_input_with(
        &mut self,
        mut batch: Batch,
        facts: Option<Facts>,
        now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
        let (found, spent) = read_batch(
            &self.config.slos,
            &self.thresholds,
            self.budgets_by_model(),
            &mut batch,
            facts.as_ref(),
        );
        self.record_all(found, spent, now);
        out.push((batch, facts));
    }

    fn on_tick(&mut self, now: Instant, _out: &mut Vec<Batch>) {
        if self.next_eval.is_some_and(|t| now >= t) {
            self.evaluate(now);
            self.next_eval = Some(now + self.config.evaluation_interval);
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.config.evaluation_interval.min(Duration::from_secs(1)))
    }
}

/// The `slo` stage of one shard of a pipeline. The windows and budgets are one for the whole
/// pipeline; each shard reads its traces' events and spends without holding them (the SLOs'
/// settings are copied into every shard), then takes the lock once per batch only to count
/// them. (A lock around the whole stage made the shards wait on each other's attribute reading.)
pub struct SloShard {
    state: Arc<std::sync::Mutex<SloProcessor>>,
    slos: Arc<[SloConfig]>,
    thresholds: Arc<[f64]>,
    by_model: bool,
}

impl SloShard {
    pub fn new(p: SloProcessor) -> Self {
        SloShard {
            slos: p.config.slos.clone().into(),
            thresholds: p.thresholds.clone().into(),
            by_model: p.budgets_by_model(),
            state: Arc::new(std::sync::Mutex::new(p)),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut SloProcessor) -> R) -> R {
        // A panic elsewhere while holding the lock must not stop the pipeline.
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }
}

impl Processor for SloShard {
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_input_with(batch, None, now, with));
    }

    /// As [`SloProcessor`]'s: models from the facts handed along, which go on.
    fn on_input_with(
        &mut self,
        mut batch: Batch,
        facts: Option<Facts>,
        now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
        let (found, spent) = read_batch(
            &self.slos,
            &self.thresholds,
            self.by_model,
            &mut batch,
            facts.as_ref(),
        );
        self.with(|p| p.record_all(found, spent, now));
        out.push((batch, facts));
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        self.with(|p| p.on_tick(now, out))
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.with(|p| p.tick_interval())
    }

    fn share(&self) -> Option<Box<dyn Processor>> {
        Some(Box::new(SloShard {
            state: self.state.clone(),
            slos: self.slos.clone(),
            thresholds: self.thresholds.clone(),
            by_model: self.by_model,
        }))
    }
}

#[cfg(test)]
mod tests;
