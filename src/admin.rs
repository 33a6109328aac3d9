//! The admin endpoint: /metrics (Prometheus text), /healthz (alive), /readyz (ready to serve),
//! /api/v1/alerts, and the page at / with its API (`crate::page`); optionally over TLS and behind a
//! bearer token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::telemetry::SelfMetrics;

/// What /readyz reports.
#[derive(Default)]
pub struct Health {
    exporters_started: AtomicBool,
    receivers_listening: AtomicBool,
    shutting_down: AtomicBool,
}

impl Health {
    pub fn set_exporters_started(&self) {
        self.exporters_started.store(true, Ordering::SeqCst);
    }
    pub fn set_receivers_listening(&self) {
        self.receivers_listening.store(true, Ordering::SeqCst);
    }
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
    /// None when ready, else why not.
    pub fn not_ready_because(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::SeqCst) {
            Some("shutting down")
        } else if !self.exporters_started.load(Ordering::SeqCst) {
            Some("exporters are starting")
        } else if !self.receivers_listening.load(Ordering::SeqCst) {
            Some("receivers are starting")
        } else {
            None
        }
    }
}

use crate::alerting::AlertsSlot;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<SelfMetrics>,
    health: Arc<Health>,
    alerts: AlertsSlot,
}

/// Where the admin server takes its connections from.
pub enum AdminIncoming {
    Plain(TcpListener),
    Tls(crate::tls::TlsIncoming),
}

/// Bind the admin address and, with `tls`, load the certificate and start the handshakes and the
/// reload task (ending when `stop` fires). Warns when the address is reachable from elsewhere
/// without a token or without TLS.
pub async fn listen(
    config: &TelemetryMetricsConfig,
    metrics: &SelfMetrics,
    stop: &CancellationToken,
) -> std::io::Result<(AdminIncoming, SocketAddr)> {
    let tls = match &config.tls {
        Some(t) => Some(Arc::new(
            crate::tls::ServerTls::load(t, &[b"h2", b"http/1.1"])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        )),
        None => None,
    };
    let listener = crate::net::bind("admin", &config.address).await?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            address = %addr,
            page = config.page.enabled,
            auth = config.auth.is_some(),
            tls = tls.is_some(),
            show_content = config.page.show_content,
            "the admin address is reachable from other machines: besides /metrics it serves the page at / and its API, which show span attributes (user ids, model names, and prompts and completions when show_content is set); set auth (a bearer token) and tls, or keep it on loopback"
        );
    }
    if config.auth.is_some() && tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(address = %addr, "a bearer token is set on the admin address without tls: the token crosses the network in clear text");
    }
    let Some(tls) = tls else {
        return Ok((AdminIncoming::Plain(listener), addr));
    };
    let counters = metrics.tls("admin", "http");
    tls.clone()
        .spawn_reloader("admin".into(), counters.clone(), stop.clone());
    let incoming =
        crate::tls::TlsIncoming::start(listener, tls, "admin".into(), counters, stop.clone())?;
    Ok((AdminIncoming::Tls(incoming), addr))
}

/// Serve /metrics, /healthz, /readyz, /api/v1/alerts and, with `page`, the page and its API.
/// With `token`, everything but /healthz, /readyz and the page's static files asks for
/// `Authorization: Bearer <token>`.
pub fn serve(
    incoming: AdminIncoming,
    metrics: Arc<SelfMetrics>,
    health: Arc<Health>,
    alerts: AlertsSlot,
    page: Option<Arc<crate::page::Page>>,
    token: Option<String>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let state = AdminState {
        metrics,
        health,
        alerts,
    };
    let mut open = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(state.clone());
    let mut guarded = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/api/v1/alerts", get(alerts_handler))
        .with_state(state);
    if let Some(p) = page {
        open = open.merge(crate::page::api::static_routes());
        guarded = guarded.merge(crate::page::api::api_routes(p));
    }
    if let Some(token) = token {
        let check = move |req: axum::extract::Request, next: axum::middleware::Next| {
            let ok = crate::receiver::otlp::bearer_matches(
                req.headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
                &token,
            );
            async move {
                if ok {
                    next.run(req).await
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(http::header::WWW_AUTHENTICATE, "Bearer")],
                        "missing or wrong bearer token (Authorization: Bearer <token>)\n",
                    )
                        .into_response()
                }
            }
        };
        guarded = guarded.layer(axum::middleware::from_fn(check));
    }
    let app = open.merge(guarded);
    tokio::spawn(async move {
        let result = match incoming {
            AdminIncoming::Plain(listener) => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
            AdminIncoming::Tls(tls) => {
                axum::serve(tls, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "admin server failed");
        }
    })
}

/// OpenMetrics for clients that ask for it (Prometheus does), else the Prometheus text format
/// 0.0.4 (curl, promtool, older scrapers).
async fn metrics_handler(
    State(s): State<AdminState>,
    headers: http::HeaderMap,
) -> impl IntoResponse {
    let open_metrics = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = s.metrics.encode();
    if open_metrics {
        (
            [(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
    } else {
        (
            [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            crate::telemetry::openmetrics_to_text(&text),
        )
    }
}

/// Active alerts (pending, firing, and resolved ones still kept) as JSON.
async fn alerts_handler(State(s): State<AdminState>) -> impl IntoResponse {
    let now = std::time::SystemTime::now();
    let alerts: Vec<serde_json::Value> = match s.alerts.get() {
        Some(e) => e
            .lock()
            .map(|e| e.view(now).iter().map(|v| v.to_json()).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let body = serde_json::json!({ "status": "success", "data": { "alerts": alerts } });
    ([(CONTENT_TYPE, "application/json")], body.to_string())
}

async fn ready_handler(State(s): State<AdminState>) -> impl IntoResponse {
    match s.health.not_ready_because() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// The admin endpoint: /metrics, /healthz, /readyz, /api/v1/..., and the page at /.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryMetricsConfig {
    /// Default 127.0.0.1:8888.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// Serve over TLS, as the receivers do; plaintext when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<crate::tls::TlsServerConfig>>,
    /// Require `Authorization: Bearer <token>` on everything but /healthz, /readyz and the
    /// page's static files (the page asks for the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::receiver::otlp::AuthConfig>,
    /// The page at / and its API.
    #[serde(default)]
    pub page: crate::page::PageConfig,
}

impl Default for TelemetryMetricsConfig {
    fn default() -> Self {
        TelemetryMetricsConfig {
            address: default_admin_address(),
            tls: None,
            auth: None,
            page: crate::page::PageConfig::default(),
        }
    }
}

fn default_admin_address() -> String {
    "127.0.0.1:8888".to_string()
}
