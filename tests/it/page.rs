//! The page's JSON API against the real service on 127.0.0.1: real captures (two instrumentation
//! libraries) plus two traces made from one of them — one whose retrieval takes 4 s, one whose
//! answer comes from an expensive model — sent over OTLP/HTTP; every endpoint asked with and
//! without the bearer token; and the memory of the page's store under a flood of distinct
//! services and trace ids. Expected numbers are worked out by hand in the comments.

use crate::harness;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

pub const TOKEN: &str = "page-test-token-0123456789";

/// The fixture's lines that hold traces, from the project's own copy.
pub fn fixture_traces(name: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/otlp")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .filter(|l| l.starts_with("{\"resourceSpans\""))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The slow trace (retrieval 4 s of 4.3 s) and the costly one (gpt-4o, 20,000 tokens in and
/// 2,000 out: 20,000 × $2.50/M + 2,000 × $10/M = $0.07).
pub const SLOW_TRACE: &str = "51000000000000000000000000000001";
pub const COSTLY_TRACE: &str = "c0000000000000000000000000000002";

/// One request holding the fixture's first trace of `otel-v2-normal.jsonl` (embeddings,
/// retrieval, chat under `rag.query`) twice, re-timed and re-identified, as service `rag-api`.
/// The slow one: root 0–4300 ms, embeddings 10–40, retrieval 50–4050, chat 4060–4290: the
/// critical path is the root's own 70 ms, embeddings 30, retrieval 4000 and chat 230, so the
/// bottleneck is retrieval with 4000 / 4300 = 93%. The costly one: root 0–1000, embeddings
/// 10–40, retrieval 50–100, chat 110–990 (gpt-4o).
pub fn made_traces() -> Value {
    let lines = fixture_traces("otel-v2-normal.jsonl");
    let first = lines[0]["resourceSpans"][0].clone();
    let mut spans: Vec<Value> = Vec::new();
    let mut trace = None;
    for l in &lines {
        for rs in l["resourceSpans"].as_array().expect("resourceSpans") {
            for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
                for s in ss["spans"].as_array().expect("spans") {
                    let t = s["traceId"].as_str().expect("traceId").to_string();
                    if trace.is_none() {
                        trace = Some(t.clone());
                    }
                    if Some(&t) == trace.as_ref() {
                        spans.push(s.clone());
                    }
                }
            }
        }
    }
    assert_eq!(spans.len(), 4, "embeddings, retrieval, chat and the root");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let ms = |x: u64| (now + x * 1_000_000).to_string();
    let make = |id: &str, times: [(&str, u64, u64); 4], costly: bool| -> Vec<Value> {
        spans
            .iter()
            .map(|s| {
                let mut s = s.clone();
                let name = s["name"].as_str().expect("name").to_string();
                let (_, start, end) = times
                    .iter()
                    .find(|(prefix, _, _)| name.starts_with(prefix))
                    .copied()
                    .unwrap_or_else(|| panic!("unexpected span {name}"));
                s["traceId"] = json!(id);
                s["startTimeUnixNano"] = json!(ms(start));
                s["endTimeUnixNano"] = json!(ms(end));
                if costly && name.starts_with("chat") {
                    s["name"] = json!("chat gpt-4o");
                    for a in s["attributes"].as_array_mut().expect("attributes") {
                        match a["key"].as_str() {
                            Some("gen_ai.request.model" | "gen_ai.response.model") => {
                                a["value"] = json!({"stringValue": "gpt-4o"});
                            }
                            Some("gen_ai.usage.input_tokens") => {
                                a["value"] = json!({"intValue": "20000"});
                            }
                            Some("gen_ai.usage.output_tokens") => {
                                a["value"] = json!({"intValue": "2000"});
                            }
                            _ => {}
                        }
                    }
                }
                s
            })
            .collect()
    };
    let mut all = make(
        SLOW_TRACE,
        [
            ("rag.query", 0, 4300),
            ("embeddings", 10, 40),
            ("retrieval", 50, 4050),
            ("chat", 4060, 4290),
        ],
        false,
    );
    all.extend(make(
        COSTLY_TRACE,
        [
            ("rag.query", 0, 1000),
            ("embeddings", 10, 40),
            ("retrieval", 50, 100),
            ("chat", 110, 990),
        ],
        true,
    ));
    let mut rs = first;
    for a in rs["resource"]["attributes"]
        .as_array_mut()
        .expect("resource attributes")
    {
        if a["key"] == "service.name" {
            a["value"] = json!({"stringValue": "rag-api"});
        }
    }
    rs["scopeSpans"] = json!([{ "scope": rs["scopeSpans"][0]["scope"].clone(), "spans": all }]);
    json!({ "resourceSpans": [rs] })
}

/// POST the fixtures' traces (otel-v2 and OpenLLMetry, 5 traces of 4 spans each) and the two
/// made traces as OTLP/JSON to `url` (…/v1/traces): 12 traces, 48 spans.
pub async fn send_traffic(url: &str) {
    ragwatch::service::install_crypto_provider();
    let client = reqwest::Client::new();
    let mut bodies = fixture_traces("otel-v2-normal.jsonl");
    bodies.extend(fixture_traces("openllmetry-normal.jsonl"));
    bodies.push(made_traces());
    for b in bodies {
        let r = client
            .post(url)
            .header("content-type", "application/json")
            .body(b.to_string())
            .send()
            .await
            .expect("post");
        assert!(r.status().is_success(), "{}", r.status());
    }
}

/// The processors of the page tests: an SLO of answers under 2 s (90%) and a $0.01 budget the
/// costly trace overspends.
pub const PROCESSORS: &str = r#"processors:
  genai:
  trace_assembly:
    wait_after_root: 50ms
  quality:
  anomaly:
  slo:
    resolution: 100ms
    evaluation_interval: 100ms
    slos:
      - name: answers-under-2s
        kind: latency
        objective: 0.9
        threshold: 2s
    budgets:
      - name: demo
        limit_usd: 0.01"#;

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.expect("get")
}

async fn api(base: &str, path: &str) -> Value {
    let r = get(&format!("{base}{path}"), Some(TOKEN)).await;
    assert_eq!(r.status(), 200, "{path}");
    let v: Value = json_of(r).await;
    assert_eq!(v["status"], "success", "{path}: {v}");
    v["data"].clone()
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64()
        .is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_with_the_token_and_401_without() {
    let s = harness::start(&format!(
        r#"
receivers:
{}
{PROCESSORS}
exporters:
  debug:
    verbosity: summary
alerts:
  evaluation_interval: 100ms
  jaeger_url: http://127.0.0.1:16686/
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly, slo]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:0
      auth:
        bearer_token: {TOKEN}
"#,
        harness::otlp_receiver("")
    ))
    .await;
    let base = format!("http://{}", s.admin_addr());
    send_traffic(&harness::http_url(&s, "/v1/traces")).await;

    // Ready when all 12 traces are analysed and the overspent budget has raised its alert.
    let ready = harness::eventually_async(Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let o = api(&base, "/api/v1/overview").await;
            o["traces_seen"] == 12 && o["alerts"]["firing"].as_u64().unwrap_or(0) >= 1
        }
    })
    .await;
    assert!(ready, "{}", api(&base, "/api/v1/overview").await);

    // Without a token, or with a wrong one: 401 on every endpoint but the probes and the
    // page's static files.
    let guarded = [
        "/metrics",
        "/api/v1/alerts",
        "/api/v1/overview",
        "/api/v1/series",
        "/api/v1/traces",
        &format!("/api/v1/traces/{SLOW_TRACE}"),
        "/api/v1/slos",
        "/api/v1/instrumentation",
        "/api/v1/pipeline",
    ];
    for p in guarded {
        let url = format!("{base}{p}");
        assert_eq!(get(&url, None).await.status(), 401, "{p} without a token");
        let wrong = get(&url, Some("page-test-token-0123456780")).await;
        assert_eq!(wrong.status(), 401, "{p} with a wrong token");
        assert_eq!(
            wrong
                .headers()
                .get("www-authenticate")
                .map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        assert_eq!(
            get(&url, Some(TOKEN)).await.status(),
            200,
            "{p} with the token"
        );
    }
    for p in ["/healthz", "/readyz", "/", "/page.css", "/page.js"] {
        let r = get(&format!("{base}{p}"), None).await;
        assert_eq!(r.status(), 200, "{p} is open");
        if p == "/" {
            let csp = r
                .headers()
                .get("content-security-policy")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            assert!(csp.contains("default-src 'none'"), "{csp}");
            assert!(csp.contains("connect-src 'self'"), "{csp}");
            let html = r.text().await.expect("html");
            assert!(html.contains("<script src=\"page.js\"></script>"));
            assert!(
                !html.contains("http://") && !html.contains("https://"),
                "nothing from elsewhere"
            );
        }
    }

    // Overview. rag-api: 2 requests of 4300 and 1000 ms (p50 the 1st by nearest rank: 1000,
    // p95 the 2nd: 4300), 2 per 5 minutes = 0.4/min; its cost is the made traces':
    // slow = chat 210 × $0.15/M + 60 × $0.60/M = $0.0000675 and embeddings 11 × $0.02/M =
    // $0.00000022; costly = $0.07 + $0.00000022.
    let o = api(&base, "/api/v1/overview").await;
    let services = o["services"].as_array().expect("services");
    let names: Vec<&str> = services
        .iter()
        .filter_map(|s| s["service"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["rag-openllmetry", "rag-otel-v2", "rag-api"],
        "busiest first, then by name"
    );
    let api_row = &services[2];
    assert_eq!(api_row["requests_last_hour"], 2);
    assert!(close(&api_row["requests_per_minute"], 0.4));
    assert_eq!(api_row["p50_ms"], 1000.0);
    assert_eq!(api_row["p95_ms"], 4300.0);
    assert_eq!(api_row["error_rate"], 0.0);
    assert!(close(
        &api_row["cost_per_hour_usd"],
        0.0000675 + 0.07 + 2.0 * 0.00000022
    ));
    // Each fixture: chats of 210, 209, 220, 207 and 210 input tokens with 60 output each:
    // 1056 × 0.15 + 300 × 0.60 = 338.4 micro-dollars; embeddings 11+13+15+11+16 = 66 tokens:
    // 1.32 micro-dollars.
    for row in &services[..2] {
        assert_eq!(row["requests_last_hour"], 5);
        assert!(
            close(&row["cost_per_hour_usd"], 338.4e-6 + 1.32e-6),
            "{row}"
        );
    }
    // Models: gpt-4o once ($0.07); gpt-4o-mini 11 calls (5 + 5 + the slow trace's), 2322
    // tokens in (1056 × 2 + 210), 660 out, 2 × 338.4 + 67.5 = 744.3 micro-dollars;
    // text-embedding-3-small 12 calls, 154 tokens, 3.08 micro-dollars.
    let models = o["models"].as_array().expect("models");
    let m: Vec<(&str, u64, f64, u64, u64)> = models
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap_or(""),
                m["calls"].as_u64().unwrap_or(0),
                m["cost_usd"].as_f64().unwrap_or(0.0),
                m["tokens_input"].as_u64().unwrap_or(0),
                m["tokens_output"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(m.len(), 3, "{o}");
    assert_eq!((m[0].0, m[0].1, m[0].3, m[0].4), ("gpt-4o", 1, 20000, 2000));
    assert!((m[0].2 - 0.07).abs() < 1e-12);
    assert_eq!(
        (m[1].0, m[1].1, m[1].3, m[1].4),
        ("gpt-4o-mini", 11, 2322, 660)
    );
    assert!((m[1].2 - 744.3e-6).abs() < 1e-12);
    assert_eq!(
        (m[2].0, m[2].1, m[2].3),
        ("text-embedding-3-small", 12, 154)
    );
    assert!((m[2].2 - 3.08e-6).abs() < 1e-12);
    assert_eq!(o["jaeger_url"], "http://127.0.0.1:16686");
    assert_eq!(o["show_content"], false);

    // Notable traces: the slow one is the slowest, the costly one the costliest.
    let t = api(&base, "/api/v1/traces").await;
    let slowest = &t["categories"]["slowest"][0];
    assert_eq!(slowest["trace_id"], SLOW_TRACE);
    assert_eq!(slowest["service"], "rag-api");
    assert_eq!(slowest["duration_ms"], 4300.0);
    assert_eq!(slowest["bottleneck"]["stage"], "retrieval");
    assert_eq!(slowest["bottleneck"]["span_name"], "retrieval kb_docs");
    assert!(
        close(&slowest["bottleneck"]["share"], 4000.0 / 4300.0),
        "{slowest}"
    );
    assert_eq!(t["categories"]["costliest"][0]["trace_id"], COSTLY_TRACE);
    assert_eq!(
        t["categories"]["slowest"].as_array().map(Vec::len),
        Some(12)
    );
    assert_eq!(t["per_category"], 40);
    let one = api(&base, "/api/v1/traces?category=costliest").await;
    assert_eq!(one["categories"].as_object().map(|o| o.len()), Some(1));
    let bad = get(&format!("{base}/api/v1/traces?category=nope"), Some(TOKEN)).await;
    assert_eq!(bad.status(), 400);

    // The slow trace's spans: the bottleneck marked on retrieval, prompts not shown.
    let d = api(&base, &format!("/api/v1/traces/{SLOW_TRACE}")).await;
    assert_eq!(
        d["jaeger_url"],
        format!("http://127.0.0.1:16686/trace/{SLOW_TRACE}")
    );
    let spans = d["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 4);
    let retrieval = spans
        .iter()
        .find(|s| s["name"] == "retrieval kb_docs")
        .expect("retrieval");
    assert_eq!(retrieval["bottleneck"], true);
    assert_eq!(retrieval["critical_path"], true);
    assert_eq!(retrieval["start_ms"], 50.0);
    assert_eq!(retrieval["duration_ms"], 4000.0);
    assert_eq!(retrieval["stage"], "retrieval");
    let chat = spans
        .iter()
        .find(|s| s["name"] == "chat gpt-4o-mini")
        .expect("chat");
    let attrs = chat["attributes"].as_array().expect("attributes");
    let input = attrs
        .iter()
        .find(|kv| kv[0] == "gen_ai.input.messages")
        .expect("the prompt's attribute is listed");
    assert_eq!(input[1], ragwatch::page::notable::REDACTED);
    assert!(
        attrs
            .iter()
            .any(|kv| kv[0] == "gen_ai.usage.input_tokens" && kv[1] == "210")
    );
    let missing = get(
        &format!("{base}/api/v1/traces/{}", "ab".repeat(16)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(missing.status(), 404);

    // SLOs, per service: rag-api has 1 request over 2 s of 2: SLI 0.5, burn rate
    // (1 - 0.5) / (1 - 0.9) = 5 in every window, error budget left 1 - 5 = -4; the fixtures'
    // services none over 2 s: SLI 1.
    let slo = api(&base, "/api/v1/slos").await;
    let rows = slo["slos"].as_array().expect("slos");
    let api_slo = rows
        .iter()
        .find(|r| r["service"] == "rag-api")
        .expect("rag-api's SLO");
    assert_eq!(api_slo["slo"], "answers-under-2s");
    assert_eq!(api_slo["objective"], 0.9);
    assert_eq!(api_slo["kind"], "latency");
    let w = api_slo["windows"].as_object().expect("windows");
    assert!(!w.is_empty());
    for (name, v) in w {
        assert!(close(&v["sli"], 0.5), "{name}: {v}");
        assert!(close(&v["burn_rate"], 5.0), "{name}: {v}");
    }
    assert!(close(&api_slo["error_budget_remaining"], 1.0 - 5.0));
    let otel = rows
        .iter()
        .find(|r| r["service"] == "rag-otel-v2")
        .expect("rag-otel-v2's SLO");
    assert!(
        otel["windows"]
            .as_object()
            .expect("windows")
            .values()
            .all(|v| close(&v["sli"], 1.0))
    );
    // The budget: everything spent, 744.3 + 3.08 micro-dollars and $0.07, over its $0.01.
    let b = &slo["budgets"][0];
    assert_eq!(b["budget"], "demo");
    assert_eq!(b["limit_usd"], 0.01);
    assert!(close(&b["spend_usd"], 744.3e-6 + 3.08e-6 + 0.07), "{b}");
    assert_eq!(b["period_s"], 86400);

    // Alerts: the budget's.
    let al = api(&base, "/api/v1/alerts").await;
    let alerts = al["alerts"].as_array().expect("alerts");
    assert!(
        alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "RagBudgetProjection"
                && a["labels"]["budget"] == "demo"
                && a["state"] == "firing"),
        "{al}"
    );

    // Series: the hour's cost of gpt-4o is the costly trace's.
    let ser = api(&base, "/api/v1/series").await;
    assert_eq!(ser["resolution_s"], 10);
    assert_eq!(ser["slots"], 360);
    let gpt4o = ser["cost_usd_by_model"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["key"] == "gpt-4o")
        .expect("gpt-4o");
    let sum: f64 = gpt4o["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(Value::as_f64)
        .sum();
    assert!((sum - 0.07).abs() < 1e-12);
    let stages: Vec<&str> = ser["p95_ms_by_stage"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["key"].as_str())
        .collect();
    assert!(
        stages.contains(&"retrieval") && stages.contains(&"llm"),
        "{stages:?}"
    );

    // Instrumentation: a list per service (these captures carry what the lint asks for).
    let lint = api(&base, "/api/v1/instrumentation").await;
    assert!(lint["services"].is_array(), "{lint}");

    // Pipeline: 48 spans accepted, none refused or dropped, all 48 sent by the debug exporter.
    let ok = harness::eventually_async(Duration::from_secs(10), || {
        let base = base.clone();
        async move { api(&base, "/api/v1/pipeline").await["totals"]["sent"] == 48.0 }
    })
    .await;
    let pl = api(&base, "/api/v1/pipeline").await;
    assert!(ok, "{pl}");
    assert_eq!(pl["totals"]["accepted"], 48.0);
    assert_eq!(pl["totals"]["refused"], 0.0);
    assert_eq!(pl["totals"]["dropped"], 0.0);
    assert!(pl["pipelines"][0]["queue_fill"].as_f64().is_some());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_the_api_is_open_and_show_content_shows_prompts() {
    let s = harness::start(&format!(
        r#"
receivers:
{}
{PROCESSORS}
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, slo]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:0
      page:
        show_content: true
"#,
        harness::otlp_receiver("")
    ))
    .await;
    let base = format!("http://{}", s.admin_addr());
    send_traffic(&harness::http_url(&s, "/v1/traces")).await;
    let ok = harness::eventually_async(Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let r = get(&format!("{base}/api/v1/traces/{SLOW_TRACE}"), None).await;
            r.status() == 200
        }
    })
    .await;
    assert!(ok);
    let d: Value = json_of(get(&format!("{base}/api/v1/traces/{SLOW_TRACE}"), None).await).await;
    let chat = d["data"]["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["name"] == "chat gpt-4o-mini")
        .expect("chat")
        .clone();
    let input = chat["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .find(|kv| kv[0] == "gen_ai.input.messages")
        .expect("prompt")
        .clone();
    let text = input[1].as_str().expect("text");
    assert!(text.contains("You are a helpful assistant"), "{text}");
    assert_eq!(
        text.chars().count(),
        ragwatch::page::notable::MAX_VALUE_CHARS,
        "cut"
    );
    // No alerts section: the alerts list is empty, not an error.
    let al: Value = json_of(get(&format!("{base}/api/v1/alerts"), None).await).await;
    assert_eq!(al["data"]["alerts"], json!([]));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_page_serves_nothing() {
    let s = harness::start(&format!(
        r#"
receivers:
{}
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:0
      page:
        enabled: false
"#,
        harness::otlp_receiver("")
    ))
    .await;
    let base = format!("http://{}", s.admin_addr());
    assert!(s.page().is_none());
    assert_eq!(get(&format!("{base}/"), None).await.status(), 404);
    assert_eq!(
        get(&format!("{base}/api/v1/overview"), None).await.status(),
        404
    );
    assert_eq!(get(&format!("{base}/metrics"), None).await.status(), 200);
    s.shutdown().await;
}

/// A flood of traces from 3000 distinct services with distinct trace ids and models: the time
/// series keeps at most 8 services and 8 models (plus `(other)`), the notable traces at most 20,
/// and the bytes held stay under the bounds the README states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_a_flood_of_services_and_trace_ids() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use ragwatch::attributes::{kv_f64, kv_i64, kv_str};

    let _heavy = harness::heavy().await;
    let s = harness::start(&format!(
        r#"
receivers:
{}
processors:
  genai:
  trace_assembly:
    wait_after_root: 10ms
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:0
      page:
        notable_traces: 20
        max_services: 8
        max_models: 8
"#,
        harness::otlp_receiver("")
    ))
    .await;
    let mut client = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    const TRACES: u32 = 3000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    for chunk in (0..TRACES).collect::<Vec<_>>().chunks(300) {
        let req = ExportTraceServiceRequest {
            resource_spans: chunk
                .iter()
                .map(|&i| {
                    let mut tid = vec![7u8; 16];
                    tid[..4].copy_from_slice(&i.to_be_bytes());
                    let root = Span {
                        trace_id: tid.clone(),
                        span_id: vec![1; 8],
                        name: format!("request {i}"),
                        start_time_unix_nano: now,
                        end_time_unix_nano: now + u64::from(i) * 1000 + 1,
                        attributes: vec![kv_str("user.note", &"x".repeat(2000))],
                        status: Some(Status {
                            code: if i % 3 == 0 { 2 } else { 0 },
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    let call = Span {
                        trace_id: tid,
                        span_id: vec![2; 8],
                        parent_span_id: vec![1; 8],
                        name: "chat".into(),
                        start_time_unix_nano: now,
                        end_time_unix_nano: now + 1000,
                        attributes: vec![
                            kv_str("gen_ai.operation.name", "chat"),
                            kv_str("gen_ai.provider.name", "openai"),
                            kv_str("gen_ai.request.model", &format!("model-{i}")),
                            kv_i64("gen_ai.usage.input_tokens", 10),
                            kv_i64("gen_ai.usage.output_tokens", 10),
                            kv_f64("gen_ai.usage.cost", f64::from(i) * 1e-6),
                        ],
                        ..Default::default()
                    };
                    ResourceSpans {
                        resource: Some(Resource {
                            attributes: vec![kv_str("service.name", &format!("svc-{i}"))],
                            ..Default::default()
                        }),
                        scope_spans: vec![ScopeSpans {
                            spans: vec![root, call],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                })
                .collect(),
        };
        client.export(req).await.expect("export");
    }
    let page = s.page().expect("the page is on by default").clone();
    let base = format!("http://{}", s.admin_addr());
    let seen = harness::eventually_async(Duration::from_secs(60), || {
        let base = base.clone();
        async move { api_open(&base, "/api/v1/overview").await["traces_seen"] == TRACES }
    })
    .await;
    let o = api_open(&base, "/api/v1/overview").await;
    assert!(seen, "{}", o["traces_seen"]);
    // 8 services and 8 models and `(other)`; stages: llm only.
    assert_eq!(o["keys"]["services"], 9, "{}", o["keys"]);
    assert_eq!(o["keys"]["models"], 9, "{}", o["keys"]);
    assert!(o["notable_kept"].as_u64().expect("kept") <= 20);
    let services = o["services"].as_array().expect("services");
    assert_eq!(services.len(), 9);
    let other = services
        .iter()
        .find(|r| r["service"] == "(other)")
        .expect("(other)");
    // The first 8 services keep their names; the 2992 after them are counted under (other).
    assert_eq!(other["requests_last_hour"], TRACES - 8);
    let t = api_open(&base, "/api/v1/traces").await;
    for (c, list) in t["categories"].as_object().expect("categories") {
        assert!(list.as_array().expect("list").len() <= 4, "{c}");
    }
    // Slowest: the last four (durations grow with i); failed: the latest four with i % 3 == 0.
    let slow: Vec<&str> = t["categories"]["slowest"]
        .as_array()
        .expect("slowest")
        .iter()
        .filter_map(|x| x["service"].as_str())
        .collect();
    assert_eq!(slow, vec!["svc-2999", "svc-2998", "svc-2997", "svc-2996"]);
    let (series_bytes, notable_bytes) = page.approx_bytes();
    let (series_max, notable_max) = page.max_bytes();
    assert!(series_bytes <= series_max, "{series_bytes} > {series_max}");
    assert!(
        notable_bytes <= notable_max,
        "{notable_bytes} > {notable_max}"
    );
    // A kept trace's 2000-character attribute is cut to 256.
    let id = t["categories"]["slowest"][0]["trace_id"]
        .as_str()
        .expect("id")
        .to_string();
    let d = api_open(&base, &format!("/api/v1/traces/{id}")).await;
    let root = d["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["parent_span_id"] == "")
        .expect("the root")
        .clone();
    let note = root["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .find(|kv| kv[0] == "user.note")
        .expect("user.note")
        .clone();
    assert_eq!(
        note[1].as_str().map(|s| s.chars().count()),
        Some(ragwatch::page::notable::MAX_VALUE_CHARS)
    );
    s.shutdown().await;
}

async fn api_open(base: &str, path: &str) -> Value {
    let v: Value = json_of(get(&format!("{base}{path}"), None).await).await;
    v["data"].clone()
}

/// The JSON body of a response.
pub async fn json_of(r: reqwest::Response) -> Value {
    let text = r.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The admin address with the receivers' `tls` and `auth`: HTTPS with the probes open and the
/// API behind the token; plaintext to the TLS port gets nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_address_serves_the_page_over_tls_behind_the_token() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    ragwatch::service::install_crypto_provider();
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "page test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("key");
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    leaf.distinguished_name
        .push(DnType::CommonName, "ragwatch admin");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().expect("key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("sign");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("admin.crt");
    let key = dir.path().join("admin.key");
    std::fs::write(&cert, leaf_cert.pem()).expect("write");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write");
    let s = harness::start(&format!(
        r#"
receivers:
{}
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:0
      tls:
        cert_file: {}
        key_file: {}
      auth:
        bearer_token: {TOKEN}
"#,
        harness::otlp_receiver(""),
        cert.display(),
        key.display()
    ))
    .await;
    let client = reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca")])
        .build()
        .expect("client");
    let base = format!("https://{}", s.admin_addr());
    let status = |r: reqwest::Response| r.status().as_u16();
    let get = |path: &str, token: Option<&str>| {
        let mut r = client.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(status(get("/healthz", None).await.expect("healthz")), 200);
    assert_eq!(status(get("/readyz", None).await.expect("readyz")), 200);
    assert_eq!(status(get("/", None).await.expect("page")), 200);
    assert_eq!(
        status(get("/api/v1/overview", None).await.expect("api")),
        401
    );
    assert_eq!(status(get("/metrics", None).await.expect("metrics")), 401);
    assert_eq!(
        status(get("/api/v1/overview", Some(TOKEN)).await.expect("api")),
        200
    );
    assert_eq!(
        status(get("/metrics", Some(TOKEN)).await.expect("metrics")),
        200
    );
    // Plaintext HTTP to the TLS port: no answer.
    let plain = reqwest::get(format!("http://{}/healthz", s.admin_addr())).await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));
    s.shutdown().await;
}

#[test]
fn bad_page_settings_are_listed_with_their_key_paths() {
    let e = ragwatch::Config::from_yaml_with_env(
        r#"
receivers:
  otlp:
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
  telemetry:
    metrics:
      auth:
        bearer_token: short
      page:
        notable_traces: 1
        max_services: 0
        jaeger_url: jaeger:16686
"#,
        "test",
        &|_| None,
    )
    .expect_err("invalid");
    let text = e.to_string();
    for path in [
        "service.telemetry.metrics.auth.bearer_token",
        "service.telemetry.metrics.page.notable_traces",
        "service.telemetry.metrics.page.max_services",
        "service.telemetry.metrics.page.jaeger_url",
    ] {
        assert!(text.contains(path), "{path} in {text}");
    }
}
