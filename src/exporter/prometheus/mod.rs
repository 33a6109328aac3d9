//! `prometheus`: serves ragwatch's metrics derived from spans (cost, tokens, latency, span
//! metrics) for Prometheus to scrape, at `http://<endpoint>/metrics`. What its pipeline sends it
//! is acknowledged and not forwarded: it is a window on the derived metrics, not a converter of
//! the OTLP metrics passing through.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::helper::{Delivered, ExportError, Payload};
use crate::config::{Problems, Validate};
use crate::derived::DerivedMetrics;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusExporterConfig {
    /// Default 127.0.0.1:9464.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
}

impl Default for PrometheusExporterConfig {
    fn default() -> Self {
        PrometheusExporterConfig {
            endpoint: default_endpoint(),
        }
    }
}

fn default_endpoint() -> String {
    "127.0.0.1:9464".into()
}

impl Validate for PrometheusExporterConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if let Err(e) = crate::net::parse_listen_address(&self.endpoint) {
            problems.push(&format!("{path}.endpoint"), e);
        }
    }
}

pub(crate) struct PrometheusTransport {
    pub(crate) addr: std::net::SocketAddr,
}

impl PrometheusTransport {
    /// Bind now (so a port in use fails the start) and serve until `stop`.
    pub(crate) fn start(
        id: &str,
        c: &PrometheusExporterConfig,
        derived: Arc<DerivedMetrics>,
        stop: CancellationToken,
    ) -> Result<Self, String> {
        let addr = crate::net::parse_listen_address(&c.endpoint)?;
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {}: {e}", c.endpoint))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot listen on {}: {e}", c.endpoint))?;
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| format!("cannot listen on {}: {e}", c.endpoint))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        if !addr.ip().is_loopback() {
            tracing::warn!(exporter = id, address = %addr, "listening on a non-loopback address because the configuration says so");
        }
        tracing::info!(component = %format!("exporter {id}"), address = %addr, "listening");
        let app = Router::new()
            .route("/metrics", get(scrape))
            .with_state(derived);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "prometheus exporter failed");
            }
        });
        Ok(PrometheusTransport { addr })
    }

    pub(crate) fn send(&self, _p: &Payload) -> Result<Delivered, ExportError> {
        Ok(Delivered::default())
    }
}

async fn scrape(State(d): State<Arc<DerivedMetrics>>) -> impl IntoResponse {
    let mut out = String::new();
    d.encode_prometheus(&mut out);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
}

impl super::helper::Transport for PrometheusTransport {
    fn send<'a>(
        &'a self,
        p: &'a Payload,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Delivered, ExportError>> + Send + 'a>,
    > {
        Box::pin(std::future::ready(PrometheusTransport::send(self, p)))
    }
}
