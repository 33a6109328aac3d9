//! The page in a real browser (Debian's `chromium`, headless, driven over the Chrome DevTools
//! Protocol): the real binary is started, fixture traffic with a slow-retrieval trace and a
//! costly one is sent, and what a person would see is checked — the services, the models and
//! their costs, the slow trace's id with its bottleneck, an alert — with no JavaScript error, no
//! console error and no request to any host but ragwatch's, at 1280 px and at phone width.
//! The `debug` exporter's summary line of the slow trace is checked in the log.
//!
//! With RAGWATCH_SCREENSHOT=<file.png> the page is saved there (the README's screenshot), with
//! RAGWATCH_SCREENSHOT_PHONE=<file.png> its first screen at phone width.
//! Skipped with a message when chromium is missing, unless RAGWATCH_INTEROP=1 (.ci/run).

use crate::harness;
use crate::page::{COSTLY_TRACE, PROCESSORS, SLOW_TRACE, send_traffic};

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn chromium() -> Option<String> {
    crate::harness::tools::tool_named(
        &["chromium", "chromium-browser"],
        "apt-get install chromium",
    )
}

/// The browser process, in a process group of its own; ended (the group) when dropped.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0.id())])
                .status();
        }
        let _ = self.0.wait();
    }
}

/// A CDP connection to the browser, with one page attached (flat session).
struct Cdp {
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
    session: Option<String>,
    /// Every event of the page's session, in order.
    events: Vec<Value>,
}

impl Cdp {
    fn connect(port: u16, path: &str) -> Cdp {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let (ws, _) = tungstenite::client::client(format!("ws://127.0.0.1:{port}{path}"), tcp)
            .expect("websocket handshake");
        Cdp {
            ws,
            next: 1,
            session: None,
            events: Vec::new(),
        }
    }

    /// Send a command and wait for its answer, keeping the events that come meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(tungstenite::Message::Text(msg.to_string().into()))
            .expect("send");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let m = self.ws.read().expect("read");
            let tungstenite::Message::Text(t) = m else {
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str()).expect("CDP JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// Evaluate JavaScript in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluate until `ok` holds of the value, for at most `limit`.
    fn eval_until(
        &mut self,
        expression: &str,
        limit: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(expression);
            if ok(&v) || Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ask the browser to close (its answer may never come: the connection goes with it).
    fn close(&mut self) {
        let msg = json!({ "id": self.next, "method": "Browser.close", "params": {} });
        let _ = self
            .ws
            .send(tungstenite::Message::Text(msg.to_string().into()));
    }

    fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
    }
}

/// Start chromium headless on a DevTools port of its own choosing; the port and the browser's
/// websocket path from `DevToolsActivePort`.
fn start_browser(exe: &str, profile: &std::path::Path) -> (Browser, u16, String) {
    use std::os::unix::process::CommandExt;
    let child = Command::new(exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--hide-scrollbars",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let browser = Browser(child);
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next())
                && let Ok(port) = port.trim().parse::<u16>()
            {
                return (browser, port, path.trim().to_string());
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromium wrote no DevToolsActivePort"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The page's visible text.
const TEXT: &str = "document.body ? document.body.innerText : ''";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_ragwatch_found_in_a_real_browser() {
    let Some(exe) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ragwatch.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
{PROCESSORS}
exporters:
  debug:
    verbosity: summary
alerts:
  evaluation_interval: 100ms
  jaeger_url: http://127.0.0.1:16686
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly, slo]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:0
"#
        ),
    )
    .expect("write config");
    let rw = harness::child::Ragwatch::spawn(
        dir.path(),
        &["--config", config.to_str().expect("utf-8 path")],
    );
    let admin = rw.address("admin").expect("admin address");
    let http = rw.address("receiver otlp (http)").expect("http receiver");
    send_traffic(&format!("http://{http}/v1/traces")).await;
    let base = format!("http://{admin}");
    // Ready when the 12 traces are analysed and the overspent budget's alert fires.
    let ready = harness::eventually_async(Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let Ok(r) = reqwest::get(format!("{base}/api/v1/overview")).await else {
                return false;
            };
            let v: Value =
                serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default();
            v["data"]["traces_seen"] == 12 && v["data"]["alerts"]["firing"].as_u64() >= Some(1)
        }
    })
    .await;
    assert!(ready, "ragwatch analysed the traffic");

    let profile = tempfile::tempdir().expect("profile dir");
    let base2 = base.clone();
    let shot = std::env::var("RAGWATCH_SCREENSHOT").ok();
    let seen = tokio::task::spawn_blocking(move || browse(&exe, profile.path(), &base2, shot))
        .await
        .expect("the browser session");

    // What a person sees at 1280 px. The services:
    for s in ["rag-api", "rag-otel-v2", "rag-openllmetry"] {
        assert!(seen.text.contains(s), "service {s} in:\n{}", seen.text);
    }
    // The models with their costs over the hour (see tests/it/page.rs for the arithmetic):
    // gpt-4o $0.07, gpt-4o-mini $0.0007443, text-embedding-3-small $0.00000308, each shown
    // with three significant digits.
    for (model, cost) in [
        ("gpt-4o", "$0.0700"),
        ("gpt-4o-mini", "$0.000744"),
        ("text-embedding-3-small", "$0.00000308"),
    ] {
        let line = seen
            .text
            .lines()
            .find(|l| l.starts_with(&format!("{model}\t")))
            .unwrap_or_else(|| panic!("a row for {model} in:\n{}", seen.text));
        assert!(line.ends_with(cost), "{model}: {line}");
    }
    // The slow trace, first among the slowest, with its bottleneck: retrieval, 4000 of 4300 ms.
    let slow_row = seen
        .text
        .lines()
        .find(|l| l.contains(SLOW_TRACE))
        .unwrap_or_else(|| panic!("the slow trace in:\n{}", seen.text));
    assert!(
        slow_row.contains("rag-api") && slow_row.contains("4.30 s"),
        "{slow_row}"
    );
    assert!(
        slow_row.contains("retrieval (retrieval kb_docs) 93%"),
        "{slow_row}"
    );
    // An alert: the budget's, firing.
    let at = seen
        .text
        .find("RagBudgetProjection")
        .unwrap_or_else(|| panic!("an alert in:\n{}", seen.text));
    let row: String = seen.text[at..].chars().take(80).collect();
    assert!(seen.text[..at].ends_with("firing\t"), "{row}");
    assert!(row.contains("budget demo is spent"), "{row}");
    // The waterfall of the slow trace, opened by a click: the bottleneck marked, the link.
    assert!(
        seen.waterfall.contains("▲ retrieval kb_docs"),
        "{}",
        seen.waterfall
    );
    assert!(
        seen.waterfall.contains("4.00 s retrieval bottleneck"),
        "{}",
        seen.waterfall
    );
    assert_eq!(
        seen.jaeger_link,
        format!("http://127.0.0.1:16686/trace/{SLOW_TRACE}")
    );
    // The costly trace under its tab.
    assert!(seen.costliest.contains(COSTLY_TRACE), "{}", seen.costliest);
    // Phone width: nothing wider than the screen (tables scroll inside their boxes).
    assert!(
        seen.phone_fits,
        "page wider than 390 px: {}",
        seen.phone_width
    );
    // No JavaScript error, no console error, nothing from anywhere but ragwatch.
    assert!(seen.errors.is_empty(), "{:#?}", seen.errors);
    assert!(!seen.requests.is_empty());
    for u in &seen.requests {
        assert!(
            u.starts_with(&format!("{base}/")) || u.starts_with("data:") || u == "about:blank",
            "a request elsewhere: {u}"
        );
    }
    assert!(
        seen.requests
            .iter()
            .any(|u| u.ends_with("/api/v1/overview"))
    );

    // The terminal: one summary line per analysed trace.
    rw.sigterm();
    let (code, log) = rw.wait();
    assert_eq!(code, Some(0), "{log}");
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["trace_id"] == SLOW_TRACE)
        .unwrap_or_else(|| panic!("the slow trace's summary line in:\n{log}"));
    let message = line["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with(
            "rag-api 4.30 s $0.0001 bottleneck retrieval (retrieval kb_docs) 93% quality "
        ),
        "{message}"
    );
    let lines = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["exporter"] == "debug" && v["trace_id"].is_string())
        .count();
    assert_eq!(lines, 12, "one line per trace");
}

struct Seen {
    text: String,
    waterfall: String,
    jaeger_link: String,
    costliest: String,
    phone_fits: bool,
    phone_width: Value,
    errors: Vec<Value>,
    requests: Vec<String>,
}

fn browse(exe: &str, profile: &std::path::Path, base: &str, shot: Option<String>) -> Seen {
    let (_browser, port, path) = start_browser(exe, profile);
    let mut cdp = Cdp::connect(port, &path);
    let target = cdp.call("Target.createTarget", json!({ "url": "about:blank" }));
    let attached = cdp.call(
        "Target.attachToTarget",
        json!({ "targetId": target["targetId"], "flatten": true }),
    );
    cdp.session = attached["sessionId"].as_str().map(str::to_string);
    assert!(cdp.session.is_some(), "{attached}");
    for m in [
        "Runtime.enable",
        "Network.enable",
        "Log.enable",
        "Page.enable",
    ] {
        cdp.call(m, json!({}));
    }
    cdp.viewport(1280, 900, false);
    cdp.call("Page.navigate", json!({ "url": format!("{base}/") }));
    let text = cdp.eval_until(TEXT, Duration::from_secs(30), |v| {
        v.as_str()
            .is_some_and(|t| t.contains(SLOW_TRACE) && t.contains("RagBudgetProjection"))
    });
    let text = text.as_str().unwrap_or("").to_string();

    // Open the slow trace's waterfall as a person would: a click on its row.
    let clicked = cdp.eval(&format!(
        "(() => {{ const r = [...document.querySelectorAll('#traces tbody tr')].find(tr => tr.textContent.includes('{SLOW_TRACE}')); if (!r) return false; r.click(); return true; }})()"
    ));
    assert_eq!(clicked, json!(true));
    let waterfall = cdp.eval_until(
        "(() => { const w = document.getElementById('waterfall'); return w && !w.hidden ? w.textContent : ''; })()",
        Duration::from_secs(10),
        |v| v.as_str().is_some_and(|t| t.contains("retrieval kb_docs")),
    );
    let jaeger_link = cdp.eval(
        "(() => { const a = document.querySelector('#waterfall a'); return a ? a.href : ''; })()",
    );

    if let Some(file) = shot {
        let h = cdp.eval("document.documentElement.scrollHeight");
        let h = h.as_u64().unwrap_or(2000).clamp(600, 6000) as u32;
        cdp.viewport(1280, h, false);
        let png = cdp.call("Page.captureScreenshot", json!({ "format": "png" }));
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png["data"].as_str().unwrap_or(""))
            .expect("base64 PNG");
        std::fs::write(&file, bytes).expect("write the screenshot");
        cdp.viewport(1280, 900, false);
    }

    // The costliest tab.
    cdp.eval("(() => { [...document.querySelectorAll('#tabs button')].find(b => b.textContent.startsWith('costliest')).click(); return true; })()");
    let costliest = cdp.eval("document.getElementById('traces').innerText");

    // Phone width (RAGWATCH_SCREENSHOT_PHONE=<file.png> saves how it looks).
    cdp.viewport(390, 844, true);
    let phone_width = cdp.eval("document.documentElement.scrollWidth");
    if let Ok(file) = std::env::var("RAGWATCH_SCREENSHOT_PHONE") {
        let png = cdp.call("Page.captureScreenshot", json!({ "format": "png" }));
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png["data"].as_str().unwrap_or(""))
            .expect("base64 PNG");
        std::fs::write(&file, bytes).expect("write the screenshot");
    }
    let phone_fits = phone_width.as_u64().is_some_and(|w| w <= 390);
    // Everything the page asked for, and anything that went wrong, so far.
    cdp.eval("1");
    let errors: Vec<Value> = cdp
        .events
        .iter()
        .filter(|e| match e["method"].as_str() {
            Some("Runtime.exceptionThrown") => true,
            Some("Runtime.consoleAPICalled") => {
                matches!(
                    e["params"]["type"].as_str(),
                    Some("error" | "assert" | "warning")
                )
            }
            Some("Log.entryAdded") => {
                matches!(
                    e["params"]["entry"]["level"].as_str(),
                    Some("error" | "warning")
                )
            }
            _ => false,
        })
        .cloned()
        .collect();
    let requests: Vec<String> = cdp
        .events
        .iter()
        .filter(|e| e["method"] == "Network.requestWillBeSent")
        .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_string))
        .collect();
    cdp.close();
    Seen {
        text,
        waterfall: waterfall.as_str().unwrap_or("").to_string(),
        jaeger_link: jaeger_link.as_str().unwrap_or("").to_string(),
        costliest: costliest.as_str().unwrap_or("").to_string(),
        phone_fits,
        phone_width,
        errors,
        requests,
    }
}
