//! Interop with a real Alertmanager (Debian's prometheus-alertmanager, started here on
//! 127.0.0.1): ragwatch pushes its alerts, Alertmanager lists them with the same labels and
//! later as resolved, and Alertmanager's own webhook delivery of them reaches a sink.
//!
//! Skipped with a message when the binary is missing, unless RAGWATCH_INTEROP=1 (set by
//! .ci/run, which installs it), where a missing tool fails the test.

use crate::harness;
use crate::harness::tools::Killed;

use std::process::{Command, Stdio};
use std::time::Duration;

use harness::backend::Backend;
use harness::load::Load;
use harness::webhook::Sink;

fn find_alertmanager() -> Option<String> {
    [
        "/usr/bin/prometheus-alertmanager",
        "/usr/local/bin/alertmanager",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(|p| p.to_string())
    .or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("alertmanager"))
                .find(|p| p.exists())
                .map(|p| p.display().to_string())
        })
    })
}

async fn get_json(url: &str) -> Option<serde_json::Value> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    serde_json::from_str(&text).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ragwatch_alerts_reach_a_real_alertmanager_and_its_webhooks() {
    let Some(bin) = find_alertmanager() else {
        assert!(
            std::env::var("RAGWATCH_INTEROP").is_err(),
            "RAGWATCH_INTEROP is set but no alertmanager binary was found"
        );
        eprintln!("SKIPPED: no alertmanager binary (apt-get install prometheus-alertmanager)");
        return;
    };
    ragwatch::service::install_crypto_provider();
    let sink = Sink::start(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let am_addr = harness::free_port();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: sink\n  group_by: [alertname, service]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: sink\n    webhook_configs:\n      - url: {}\n        send_resolved: true\n",
            sink.url()
        ),
    )
    .expect("write config");
    let _am = Killed(
        Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={am_addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );
    let base = format!("http://{am_addr}");
    let ready = harness::eventually_async(Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/-/ready"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(ready, "alertmanager did not become ready");

    let down = Backend::start().await;
    let s = harness::start(&format!(
        r#"
receivers:
{}
{slo}
exporters:
  otlp:
    endpoint: {}
alerts:
  evaluation_interval: 100ms
  resolve_after: 1500ms
  receivers:
    am:
      type: alertmanager
      url: {base}
      resend_interval: 1s
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
    .await;
    let mut load = Load::new(&s).await;
    let want = serde_json::json!({
        "alertname": "RagSloBurn",
        "service": "rag-api",
        "severity": "critical",
        "slo": "fast-answers",
    });
    // Slow traffic for 2 s: the alert fires and is pushed.
    let t0 = tokio::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        load.slow(5).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = harness::eventually_async(Duration::from_secs(10), || async {
        get_json(&format!("{base}/api/v2/alerts"))
            .await
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|a| a.iter().any(|x| x["labels"] == want))
    })
    .await;
    assert!(listed, "Alertmanager lists the alert with our labels");
    // Alertmanager's own webhook delivery reaches the sink.
    assert!(
        sink.wait(Duration::from_secs(15), |k| k.delivered().iter().any(|r| {
            let b = r.json();
            b["status"] == "firing" && b["alerts"][0]["labels"] == want
        }))
        .await,
        "Alertmanager's webhook delivered the firing alert"
    );
    // Traffic stops: ragwatch resolves the alert and pushes endsAt; Alertmanager tells the sink.
    assert!(
        sink.wait(Duration::from_secs(20), |k| k.delivered().iter().any(|r| {
            let b = r.json();
            b["status"] == "resolved" && b["alerts"][0]["labels"] == want
        }))
        .await,
        "Alertmanager's webhook delivered the resolution"
    );
    // And its API shows it resolved: gone from the active alerts, or with endsAt in the past.
    let v = get_json(&format!(
        "{base}/api/v2/alerts?active=true&silenced=false&inhibited=false"
    ))
    .await
    .expect("alerts");
    assert!(
        v.as_array()
            .is_some_and(|a| a.iter().all(|x| x["labels"] != want)),
        "no longer active: {v}"
    );
    s.shutdown().await;
}
