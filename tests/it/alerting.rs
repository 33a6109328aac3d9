//! Alerting end to end: synthetic RAG traces over gRPC into the real service, an SLO that burns
//! while retrieval is slow, and webhook sinks written for the test.

use crate::harness;

use std::time::Duration;

use base64::Engine as _;
use harness::backend::Backend;
use harness::load::Load;
use harness::webhook::Sink;
use hmac::{Hmac, Mac};
use ragwatch::Service;
use sha2::Sha256;

/// A service whose latency SLO (4 s, 90%) pages when 10 s and 1 s both burn faster than 2, with
/// alert timings shortened for the test; `receiver` is the YAML of one receiver named `hook`;
/// `extra` more keys of `alerts` (repeat_interval and resolve_after at least).
async fn start(down: &Backend, receiver: &str, extra: &str) -> Service {
    harness::start(&format!(
        r#"
receivers:
{}
{slo}
exporters:
  otlp:
    endpoint: {}
alerts:
  evaluation_interval: 100ms
  group_wait: 300ms
  group_interval: 1s
  jaeger_url: http://127.0.0.1:16686
  external_url: http://127.0.0.1:8888
  receivers:
    hook:
{receiver}
{extra}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, slo]
      exporters: [otlp]
"#,
        harness::otlp_receiver(""),
        down.grpc_endpoint(),
        slo = harness::load::SLO_PROCESSORS
    ))
    .await
}

const QUICK: &str = "  repeat_interval: 1h\n  resolve_after: 1500ms";

fn webhook(url: &str, more: &str) -> String {
    format!("      type: webhook\n      url: {url}\n{more}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_grouped_alert_fires_repeats_and_resolves() {
    ragwatch::service::install_crypto_provider();
    let down = Backend::start().await;
    let sink = Sink::start(&[]).await;
    let s = start(
        &down,
        &webhook(&sink.url(), ""),
        "  repeat_interval: 3s\n  resolve_after: 1500ms",
    )
    .await;
    let mut load = Load::new(&s).await;
    // Slow traffic for 3 s: the SLO burns from the first traces until the 1 s window empties
    // (about 4 s), and the alert resolves 1.5 s later (about 5.5 s).
    let t0 = tokio::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        load.slow(5).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // While it fires: one alert in the API and in the gauge.
    let api: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("http://{}/api/v1/alerts", s.admin_addr()))
            .await
            .expect("api")
            .text()
            .await
            .expect("body"),
    )
    .expect("json");
    let alerts = api["data"]["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{api}");
    assert_eq!(alerts[0]["state"], "firing");
    assert_eq!(alerts[0]["labels"]["alertname"], "RagSloBurn");
    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_alerts_firing{alertname="RagSloBurn",severity="critical"}"#
        ),
        1.0
    );
    // Then nothing: the short window empties, the condition clears, resolved after 1.5 s and
    // told at the next group interval.
    assert!(
        sink.wait(Duration::from_secs(10), |k| k
            .delivered()
            .iter()
            .any(|r| r.json()["status"] == "resolved"))
            .await,
        "a resolved notification: {:?}",
        sink.received().iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    // And nothing after it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got: Vec<serde_json::Value> = sink.delivered().iter().map(|r| r.json()).collect();
    let statuses: Vec<&str> = got.iter().filter_map(|b| b["status"].as_str()).collect();
    // Fired after group_wait (~0.4 s), repeated once after repeat_interval (~3.4 s; the next
    // would be ~6.4 s, after the resolution), resolved once.
    assert_eq!(statuses, vec!["firing", "firing", "resolved"], "{got:#?}");
    for b in &got {
        assert_eq!(b["version"], "4");
        assert_eq!(b["receiver"], "hook");
        assert_eq!(
            b["groupKey"],
            r#"{}/hook:{alertname="RagSloBurn", service="rag-api"}"#
        );
        assert_eq!(b["groupLabels"]["service"], "rag-api");
        assert_eq!(b["externalURL"], "http://127.0.0.1:8888");
        assert_eq!(b["truncatedAlerts"], 0);
        let a = &b["alerts"].as_array().expect("alerts")[0];
        assert_eq!(b["alerts"].as_array().map(Vec::len), Some(1));
        assert_eq!(a["labels"]["slo"], "fast-answers");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["fingerprint"], got[0]["alerts"][0]["fingerprint"]);
        assert!(a["annotations"]["description"].as_str().is_some());
        let trace = a["annotations"]["trace_id"]
            .as_str()
            .expect("an example trace");
        assert_eq!(
            a["annotations"]["trace_url"],
            format!("http://127.0.0.1:16686/trace/{trace}")
        );
        assert_eq!(a["generatorURL"], "http://127.0.0.1:8888/api/v1/alerts");
    }
    assert_eq!(got[0]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(got[2]["alerts"][0]["status"], "resolved");
    assert_ne!(got[2]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_alerts_firing{alertname="RagSloBurn",severity="critical"}"#
        ),
        0.0
    );
    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_alert_notifications_total{receiver="hook",result="success"}"#
        ),
        3.0
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_retried_on_500_delivered_once_and_never_retried_on_400() {
    ragwatch::service::install_crypto_provider();
    let down = Backend::start().await;
    let key = b"0123456789abcdef0123456789abcdef";
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    // 500, 500, then 200.
    let sink = Sink::start(&[500, 500]).await;
    let more = format!(
        "      secret: {secret}\n      initial_backoff: 50ms\n      headers:\n        x-team: rag\n"
    );
    let s = start(&down, &webhook(&sink.url(), &more), QUICK).await;
    let mut load = Load::new(&s).await;
    load.slow(10).await;
    assert!(
        sink.wait(Duration::from_secs(10), |k| !k.delivered().is_empty())
            .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = sink.received();
    assert_eq!(
        all.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    assert_eq!(sink.delivered().len(), 1, "delivered exactly once");
    // Every attempt is signed: HMAC-SHA256 of "id.timestamp.body" with the decoded secret,
    // computed here independently.
    for r in &all {
        let h = |k: &str| {
            r.headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .expect(k)
                .to_string()
        };
        let (id, ts, sig) = (
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(&r.body);
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("v1,{expected}"));
        assert_eq!(h("x-team"), "rag");
        let age = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .abs_diff(ts.parse::<u64>().expect("timestamp"));
        assert!(age < 60);
    }
    let m = |result: &str| {
        harness::metric(
            &s,
            &format!(r#"ragwatch_alert_notifications_total{{receiver="hook",result="{result}"}}"#),
        )
    };
    assert_eq!((m("retried"), m("success")), (2.0, 1.0));
    s.shutdown().await;

    // A receiver answering 400 is not retried.
    let down = Backend::start().await;
    let sink = Sink::start(&[400]).await;
    let s = start(
        &down,
        &webhook(&sink.url(), "      initial_backoff: 50ms\n"),
        QUICK,
    )
    .await;
    let mut load = Load::new(&s).await;
    load.slow(10).await;
    assert!(
        sink.wait(Duration::from_secs(10), |k| !k.received().is_empty())
            .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sink.received().len(), 1, "not retried");
    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_alert_notifications_total{receiver="hook",result="failed"}"#
        ),
        1.0
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_state_survives_a_restart() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = format!(
        "  storage_dir: {}\n  repeat_interval: 1h\n  resolve_after: 3s",
        dir.path().display()
    );
    let down = Backend::start().await;
    let sink = Sink::start(&[]).await;
    let hook = webhook(&sink.url(), "");
    let s = start(&down, &hook, &storage).await;
    let mut load = Load::new(&s).await;
    load.slow(10).await;
    assert!(
        sink.wait(Duration::from_secs(10), |k| k.delivered().len() == 1)
            .await
    );
    s.shutdown().await;

    // A new process while the SLO still burns: no second "firing" (the alert is still the one
    // told of, repeat_interval is an hour).
    let s = start(&down, &hook, &storage).await;
    let mut load = Load::new(&s).await;
    let t0 = tokio::time::Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        load.slow(5).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sink.delivered().len(), 1, "no storm after the restart");
    // It clears: the resolution is not lost.
    assert!(
        sink.wait(Duration::from_secs(10), |k| k
            .delivered()
            .iter()
            .any(|r| r.json()["status"] == "resolved"))
            .await
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_exporter_becomes_an_alert() {
    ragwatch::service::install_crypto_provider();
    // Nothing listens downstream: every send fails (connection refused) and is retried.
    let dead = harness::free_port();
    let s = harness::start(&format!(
        r#"
receivers:
{}
exporters:
  otlp:
    endpoint: {dead}
    retry_on_failure:
      initial_interval: 50ms
      max_interval: 100ms
      max_elapsed_time: 300ms
alerts:
  evaluation_interval: 100ms
  rules:
    exporter_failing: {{ for: 300ms }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
"#,
        harness::otlp_receiver("")
    ))
    .await;
    let mut load = Load::new(&s).await;
    let api = format!("http://{}/api/v1/alerts", s.admin_addr());
    let mut firing = false;
    let t0 = tokio::time::Instant::now();
    while !firing && t0.elapsed() < Duration::from_secs(15) {
        load.slow(2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = match reqwest::get(&api).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => continue,
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        firing = v["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["labels"]["alertname"] == "RagwatchExporterFailing"
                    && x["labels"]["exporter"] == "otlp"
                    && x["labels"]["severity"] == "critical"
                    && x["state"] == "firing"
            })
        });
    }
    assert!(firing, "RagwatchExporterFailing fires");
    s.shutdown().await;
}
