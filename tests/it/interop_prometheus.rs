//! Interop with Prometheus (Debian's `prometheus` package): promtool lints our /metrics output,
//! a real Prometheus scrapes ragwatch on 127.0.0.1 and a PromQL query returns the cost per model
//! computed by hand, and every query of the Grafana dashboard parses and names metrics ragwatch
//! really exposes.
//!
//! Skipped with a message when the tools are missing, unless RAGWATCH_INTEROP=1 (.ci/run).

use crate::harness;
use crate::harness::tools::collect_exprs;
use crate::harness::tools::start_prometheus;
use crate::harness::tools::tool;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;
use ragwatch::attributes::{kv_i64, kv_str};

fn promtool_check_metrics(promtool: &str, text: &str) -> (bool, String) {
    let mut c = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = c.wait_with_output().expect("promtool output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `n` model calls of `model` with 1000 input and 500 output tokens, each in its own trace.
fn calls(model: &str, n: u8, seed: u8) -> Vec<Span> {
    (0..n)
        .map(|i| Span {
            trace_id: vec![seed, i, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
            span_id: vec![seed, i, 1, 1, 1, 1, 1, 1],
            name: format!("chat {model}"),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_500_000_000,
            attributes: vec![
                kv_str("gen_ai.operation.name", "chat"),
                kv_str("gen_ai.provider.name", "openai"),
                kv_str("gen_ai.request.model", model),
                kv_i64("gen_ai.usage.input_tokens", 1000),
                kv_i64("gen_ai.usage.output_tokens", 500),
            ],
            ..Default::default()
        })
        .collect()
}

async fn get(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("get")
        .text()
        .await
        .expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_ragwatch_and_the_dashboard_queries_hold() {
    let (Some(promtool), Some(prometheus)) = (
        tool("promtool", "apt-get install prometheus"),
        tool("prometheus", "apt-get install prometheus"),
    ) else {
        return;
    };
    ragwatch::service::install_crypto_provider();
    let s = harness::start(&format!(
        r#"
receivers:
{}
processors:
  genai:
    prices:
      - {{ id: test/model-a, model: model-a, input: 1.0, output: 2.0 }}
      - {{ id: test/model-b, model: model-b, input: 3.0, output: 6.0 }}
exporters:
  debug:
    verbosity: basic
  prometheus:
    endpoint: 127.0.0.1:0
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [genai], exporters: [debug, prometheus] }}
"#,
        harness::otlp_receiver("")
    ))
    .await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    // model-a: 10 calls × (1000 × 1.0 + 500 × 2.0) / 1e6 = 10 × 0.002 = 0.02 USD.
    // model-b: 4 calls × (1000 × 3.0 + 500 × 6.0) / 1e6 = 4 × 0.006 = 0.024 USD.
    c.export(harness::traces_request(calls("model-a", 10, 1)))
        .await
        .expect("export a");
    c.export(harness::traces_request(calls("model-b", 4, 2)))
        .await
        .expect("export b");
    let derived = s.exporter_addr("prometheus").expect("prometheus exporter");

    // promtool lints both endpoints.
    let derived_text = get(&format!("http://{derived}/metrics")).await;
    let own_text = get(&format!("http://{}/metrics", s.admin_addr())).await;
    // One deliberate exception: the span-metrics histogram keeps the Collector spanmetrics
    // connector's name and unit, which Jaeger's Monitor tab queries.
    const EXCEPTION: &str = r#"traces_span_metrics_duration_milliseconds use base unit "seconds" instead of "milliseconds""#;
    for (what, text) in [("derived", &derived_text), ("admin", &own_text)] {
        let (ok, out) = promtool_check_metrics(&promtool, text);
        let problems: Vec<&str> = out
            .lines()
            .filter(|l| !l.trim().is_empty() && l.trim() != EXCEPTION)
            .collect();
        assert!(
            problems.is_empty() && (ok || out.contains(EXCEPTION)),
            "promtool check metrics on the {what} endpoint:\n{out}"
        );
    }

    // A real Prometheus scrapes the derived metrics every second.
    let dir = tempfile::tempdir().expect("tempdir");
    let prom_addr = harness::free_port();
    let _p = start_prometheus(
        &prometheus,
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ragwatch\n    static_configs:\n      - targets: ['{derived}', '{}']\n",
            s.admin_addr()
        ),
        &prom_addr,
    );
    let query = format!(
        "http://{prom_addr}/api/v1/query?query=sum%20by%20(model)%20(rag_llm_cost_usd_total)"
    );
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let found = harness::eventually_async(Duration::from_secs(30), || {
        let q = query.clone();
        let last = last.clone();
        async move {
            let Ok(r) = reqwest::get(&q).await else {
                return false;
            };
            let Ok(text) = r.text().await else {
                return false;
            };
            *last.lock().expect("lock") = text.clone();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                return false;
            };
            let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
            let cost = |m: &str| {
                result
                    .iter()
                    .find(|r| r["metric"]["model"] == m)
                    .and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            };
            cost("model-a").is_some_and(|c| (c - 0.02).abs() < 1e-9)
                && cost("model-b").is_some_and(|c| (c - 0.024).abs() < 1e-9)
        }
    })
    .await;
    assert!(
        found,
        "PromQL cost per model: {}",
        last.lock().expect("lock")
    );

    // The dashboard: every query parses (as a recording rule, checked by promtool) and every
    // metric it names is one ragwatch exposes.
    let mut known: BTreeSet<String> = BTreeSet::new();
    for d in ragwatch::derived::defs::DEFS {
        known.insert(d.prom_name.to_string());
    }
    known.extend(ragwatch::names::metrics::ALL.iter().map(|n| n.to_string()));
    for line in own_text.lines().chain(derived_text.lines()) {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.split_whitespace().next()
        {
            known.insert(name.to_string());
        }
    }
    let with_suffixes: BTreeSet<String> = known
        .iter()
        .flat_map(|n| {
            ["", "_total", "_bucket", "_sum", "_count"]
                .iter()
                .map(move |s| format!("{n}{s}"))
        })
        .collect();
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("deploy/grafana/ragwatch-dashboard.json").expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() > 20, "the dashboard has its queries");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$service", ".*");
        for name in metric_names(&e) {
            assert!(
                with_suffixes.contains(&name),
                "dashboard query names `{name}`, which ragwatch does not expose: {e}"
            );
        }
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&e).expect("quote")
        ));
    }
    let rules_file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&rules_file, rules).expect("rules");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules_file)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "dashboard queries parse:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.shutdown().await;
}

/// The metric names in a PromQL expression: identifiers of ours (rag_, ragwatch_, gen_ai_,
/// traces_) outside label matchers, label lists (`by (...)`, `without`, `on`, `ignoring`,
/// `group_left`, `group_right`) and strings.
fn metric_names(e: &str) -> Vec<String> {
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let mut out = Vec::new();
    let (mut in_braces, mut in_string, mut label_list) = (0, false, 0);
    let mut expect_list = false;
    let mut word = String::new();
    let flush = |w: &mut String, out: &mut Vec<String>, expect: &mut bool| {
        if !w.is_empty() {
            *expect = LABEL_LISTS.contains(&w.as_str());
        }
        if ["rag_", "ragwatch_", "gen_ai_", "traces_"]
            .iter()
            .any(|p| w.starts_with(p))
        {
            out.push(w.clone());
        }
        w.clear();
    };
    for ch in e.chars() {
        if in_string {
            in_string = ch != '"';
            continue;
        }
        if label_list > 0 {
            match ch {
                '(' => label_list += 1,
                ')' => label_list -= 1,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => {
                flush(&mut word, &mut out, &mut expect_list);
                in_string = true;
            }
            '{' => {
                flush(&mut word, &mut out, &mut expect_list);
                in_braces += 1;
            }
            '}' => in_braces -= 1,
            '(' => {
                flush(&mut word, &mut out, &mut expect_list);
                if expect_list {
                    label_list = 1;
                    expect_list = false;
                }
            }
            c if (c.is_alphanumeric() || c == '_' || c == ':') && in_braces == 0 => word.push(c),
            c if c.is_whitespace() => {
                let keep = expect_list && word.is_empty();
                flush(&mut word, &mut out, &mut expect_list);
                expect_list = expect_list || keep;
            }
            _ => {
                flush(&mut word, &mut out, &mut expect_list);
                expect_list = false;
            }
        }
    }
    flush(&mut word, &mut out, &mut expect_list);
    out
}
