//! The page's HTTP side: the static page (`/`, `/page.css`, `/page.js`, compiled in) and the JSON
//! API under `/api/v1/` that is its only source of data. Every answer is
//! `{"status": "success", "data": ...}` like `/api/v1/alerts`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde_json::{Value, json};

use super::notable::Category;
use super::{Page, series, unix_ms};
use crate::derived::defs as m;

const INDEX_HTML: &str = include_str!("assets/index.html");
const PAGE_CSS: &str = include_str!("assets/page.css");
const PAGE_JS: &str = include_str!("assets/page.js");

/// Nothing but ragwatch itself: scripts, styles and requests go to the page's own origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The static page and its assets: no data, served without a token (the page asks for one when
/// the API wants it).
pub fn static_routes() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/page.css",
            get(|| async { asset(PAGE_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/page.js",
            get(|| async { asset(PAGE_JS, "text/javascript; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (http::header::CONTENT_SECURITY_POLICY, CSP),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (http::header::REFERRER_POLICY, "no-referrer"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The JSON API.
pub fn api_routes(page: Arc<Page>) -> Router {
    Router::new()
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/series", get(series_handler))
        .route("/api/v1/traces", get(traces))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/slos", get(slos))
        .route("/api/v1/instrumentation", get(instrumentation))
        .route("/api/v1/pipeline", get(pipeline))
        .with_state(page)
}

pub fn success(data: Value) -> Response {
    (
        [
            (CONTENT_TYPE, "application/json"),
            (CACHE_CONTROL, "no-store"),
        ],
        json!({ "status": "success", "data": data }).to_string(),
    )
        .into_response()
}

fn error(code: StatusCode, message: &str) -> Response {
    (
        code,
        [(CONTENT_TYPE, "application/json")],
        json!({ "status": "error", "error": message }).to_string(),
    )
        .into_response()
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Per service and per model, and what the page needs to know of the configuration.
async fn overview(State(p): State<Arc<Page>>) -> Response {
    let now = now_ms();
    let mut alerts: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(e) = p.alerts.get()
        && let Ok(e) = e.lock()
    {
        for v in e.view(SystemTime::now()) {
            let state = serde_json::to_value(v.alert.state)
                .ok()
                .and_then(|s| s.as_str().map(str::to_string))
                .unwrap_or_default();
            *alerts.entry(state).or_default() += 1;
        }
    }
    let st = p.state();
    let (s, mo, stg) = st.series.key_counts();
    success(json!({
        "now_ms": now,
        "services": st.series.services(now),
        "models": st.series.models(now),
        "traces_seen": st.traces_seen,
        "traces_dropped": p.dropped(),
        "alerts": alerts,
        "notable_kept": st.notable.len(),
        "window": {
            "recent_s": series::RECENT_SLOTS * series::RESOLUTION_S,
            "series_s": series::SLOTS * series::RESOLUTION_S,
            "resolution_s": series::RESOLUTION_S,
        },
        "keys": { "services": s, "models": mo, "stages": stg },
        "jaeger_url": p.jaeger_url,
        "show_content": p.config.show_content,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn series_handler(State(p): State<Arc<Page>>) -> Response {
    let now = now_ms();
    let charts = p.state().series.charts(now);
    success(serde_json::to_value(charts).unwrap_or(Value::Null))
}

#[derive(serde::Deserialize)]
struct TracesQuery {
    category: Option<String>,
}

/// Notable traces by category, without their spans.
async fn traces(State(p): State<Arc<Page>>, Query(q): Query<TracesQuery>) -> Response {
    let cats: Vec<Category> = match q.category.as_deref() {
        None | Some("") => Category::ALL.to_vec(),
        Some(c) => match Category::parse(c) {
            Some(c) => vec![c],
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "category: one of slowest, costliest, failed, anomalous, with_findings",
                );
            }
        },
    };
    let st = p.state();
    let mut out = serde_json::Map::new();
    for c in cats {
        let list: Vec<Value> = st
            .notable
            .list(c)
            .into_iter()
            .map(|d| {
                json!({
                    "trace_id": d.facts.trace_id,
                    "service": d.facts.service,
                    "name": d.facts.name,
                    "duration_ms": d.facts.duration_ms,
                    "cost_usd": d.facts.cost_usd,
                    "bottleneck": d.facts.bottleneck,
                    "quality": d.facts.quality,
                    "error": d.facts.error,
                    "anomalous": d.facts.anomalous,
                    "findings": d.facts.findings,
                    "span_count": d.facts.span_count,
                    "seen_at_ms": d.seen_at_ms,
                })
            })
            .collect();
        out.insert(c.as_str().to_string(), Value::Array(list));
    }
    success(json!({
        "categories": out,
        "kept": st.notable.len(),
        "per_category": st.notable.per_category(),
    }))
}

/// One notable trace with its spans, for the waterfall.
async fn trace(State(p): State<Arc<Page>>, Path(trace_id): Path<String>) -> Response {
    let id = trace_id.to_ascii_lowercase();
    let st = p.state();
    match st.notable.get(&id) {
        Some(d) => {
            let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
            if let (Some(obj), Some(j)) = (v.as_object_mut(), &p.jaeger_url) {
                obj.insert("jaeger_url".into(), json!(format!("{j}/trace/{id}")));
            }
            success(v)
        }
        None => error(
            StatusCode::NOT_FOUND,
            "no such trace among the notable ones kept",
        ),
    }
}

/// SLOs (SLI and burn rate per window, error budget left) and budgets (spend, projection).
async fn slos(State(p): State<Arc<Page>>) -> Response {
    success(slos_json(&p))
}

pub fn slos_json(p: &Page) -> Value {
    // (slo, service, scope) → windows
    let mut rows: BTreeMap<(String, String, String), serde_json::Map<String, Value>> =
        BTreeMap::new();
    let key = |l: &[String]| {
        (
            l.first().cloned().unwrap_or_default(),
            l.get(1).cloned().unwrap_or_default(),
            l.get(2).cloned().unwrap_or_default(),
        )
    };
    for (metric, field) in [(m::SLO_SLI_RATIO, "sli"), (m::SLO_BURN_RATE, "burn_rate")] {
        for (labels, v) in p.derived.values(metric) {
            let window = labels.get(3).cloned().unwrap_or_default();
            let row = rows.entry(key(&labels)).or_default();
            let w = row
                .entry("windows")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|o| o.entry(window).or_insert_with(|| json!({})));
            if let Some(Value::Object(o)) = w {
                o.insert(field.into(), json!(finite(v)));
            }
        }
    }
    for (labels, v) in p.derived.values(m::SLO_ERROR_BUDGET_REMAINING) {
        rows.entry(key(&labels))
            .or_default()
            .insert("error_budget_remaining".into(), json!(finite(v)));
    }
    let slos: Vec<Value> = rows
        .into_iter()
        .map(|((slo, service, scope), mut o)| {
            let target = p.targets.slos.iter().find(|(n, _, _)| *n == slo);
            o.insert("slo".into(), json!(slo));
            o.insert("service".into(), json!(service));
            o.insert("scope".into(), json!(scope));
            o.insert("objective".into(), json!(target.map(|t| t.1)));
            o.insert("kind".into(), json!(target.map(|t| t.2.clone())));
            o.entry("windows").or_insert_with(|| json!({}));
            Value::Object(o)
        })
        .collect();
    let spend: BTreeMap<String, f64> = p
        .derived
        .values(m::BUDGET_SPEND)
        .into_iter()
        .filter_map(|(l, v)| Some((l.first()?.clone(), v)))
        .collect();
    let projected: BTreeMap<String, f64> = p
        .derived
        .values(m::BUDGET_PROJECTED_SPEND)
        .into_iter()
        .filter_map(|(l, v)| Some((l.first()?.clone(), v)))
        .collect();
    let budgets: Vec<Value> = p
        .targets
        .budgets
        .iter()
        .map(|(name, limit, period)| {
            json!({
                "budget": name,
                "limit_usd": limit,
                "period_s": period,
                "spend_usd": spend.get(name).copied().map(finite),
                "projected_spend_usd": projected.get(name).copied().map(finite),
            })
        })
        .collect();
    json!({ "slos": slos, "budgets": budgets })
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Per service, what its instrumentation lacks: issues found by the genai processor's lint and
/// model calls no price matched.
async fn instrumentation(State(p): State<Arc<Page>>) -> Response {
    let mut per: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (labels, v) in p.derived.values(m::ISSUES) {
        if let (Some(service), Some(issue)) = (labels.first(), labels.get(1)) {
            *per.entry(service.clone())
                .or_default()
                .entry(issue.clone())
                .or_default() += v;
        }
    }
    for (labels, v) in p.derived.values(m::UNPRICED) {
        if let Some(service) = labels.first() {
            *per.entry(service.clone())
                .or_default()
                .entry("unpriced_model_calls".into())
                .or_default() += v;
        }
    }
    let services: Vec<Value> = per
        .into_iter()
        .map(|(service, issues)| {
            let issues: Vec<Value> = issues
                .into_iter()
                .map(|(issue, count)| json!({ "issue": issue, "count": count }))
                .collect();
            json!({ "service": service, "issues": issues })
        })
        .collect();
    success(json!({ "services": services }))
}

/// The pipeline's health from ragwatch's own metrics.
async fn pipeline(State(p): State<Arc<Page>>) -> Response {
    success(pipeline_health(&crate::telemetry::openmetrics_to_text(
        &p.metrics.encode(),
    )))
}

/// Accepted, refused, sent, failed and dropped items and queue fill, per component and in total.
pub fn pipeline_health(text: &str) -> Value {
    let Ok(scrape) = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
    else {
        return json!({});
    };
    let mut receivers: BTreeMap<String, BTreeMap<&str, f64>> = BTreeMap::new();
    let mut exporters: BTreeMap<String, BTreeMap<&str, f64>> = BTreeMap::new();
    let mut pipelines: BTreeMap<String, BTreeMap<&str, f64>> = BTreeMap::new();
    let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
    for s in &scrape.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let name = s.metric.trim_end_matches("_total");
        let Some(rest) = name.strip_prefix("ragwatch_") else {
            continue;
        };
        let label = |k: &str| s.labels.get(k).unwrap_or("").to_string();
        if let Some(what) = rest.strip_prefix("receiver_") {
            let field = match what {
                "accepted_spans" | "accepted_metric_points" | "accepted_log_records" => what,
                "refused_spans" | "refused_metric_points" | "refused_log_records" => what,
                _ => continue,
            };
            let key = format!("{}/{}", label("receiver"), label("transport"));
            *receivers.entry(key).or_default().entry(field).or_default() += v;
            let total = if field.starts_with("accepted") {
                "accepted"
            } else {
                "refused"
            };
            *totals.entry(total).or_default() += v;
        } else if let Some(what) = rest.strip_prefix("exporter_") {
            let (field, total) = match what {
                "sent_spans" | "sent_metric_points" | "sent_log_records" => (what, Some("sent")),
                "send_failed_spans"
                | "send_failed_metric_points"
                | "send_failed_log_records"
                | "enqueue_failed_spans"
                | "enqueue_failed_metric_points"
                | "enqueue_failed_log_records" => (what, Some("dropped")),
                "queue_size" | "queue_capacity" | "retries" => (what, None),
                _ => continue,
            };
            *exporters
                .entry(label("exporter"))
                .or_default()
                .entry(field)
                .or_default() += v;
            if let Some(t) = total {
                *totals.entry(t).or_default() += v;
            }
        } else if let Some(what) = rest.strip_prefix("pipeline_") {
            let field = match what {
                "queue_items" | "queue_capacity" => what,
                "dropped_items" => {
                    *totals.entry("dropped").or_default() += v;
                    what
                }
                _ => continue,
            };
            *pipelines
                .entry(label("pipeline"))
                .or_default()
                .entry(field)
                .or_default() += v;
        }
    }
    let fill = |m: &BTreeMap<&str, f64>, used: &str, cap: &str| {
        let c = m.get(cap).copied().unwrap_or(0.0);
        (c > 0.0).then(|| m.get(used).copied().unwrap_or(0.0) / c)
    };
    let exporters: Vec<Value> = exporters
        .into_iter()
        .map(|(k, m)| {
            let f = fill(&m, "queue_size", "queue_capacity");
            json!({ "exporter": k, "counts": m, "queue_fill": f })
        })
        .collect();
    let pipelines: Vec<Value> = pipelines
        .into_iter()
        .map(|(k, m)| {
            let f = fill(&m, "queue_items", "queue_capacity");
            json!({ "pipeline": k, "counts": m, "queue_fill": f })
        })
        .collect();
    let receivers: Vec<Value> = receivers
        .into_iter()
        .map(|(k, m)| json!({ "receiver": k, "counts": m }))
        .collect();
    for k in ["accepted", "refused", "sent", "dropped"] {
        totals.entry(k).or_insert(0.0);
    }
    json!({
        "totals": totals,
        "receivers": receivers,
        "exporters": exporters,
        "pipelines": pipelines,
    })
}
