//! `otlphttp`: OTLP protobuf over HTTP to `<endpoint>/v1/<signal>`.

use std::time::Duration;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use super::helper::{Compressor, Delivered, ExportError, OtlpExporterConfig, Payload};
use crate::rpc_status::RpcStatus;
use crate::signal::Signal;

pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(()),
        _ => Err(format!(
            "`{url}` must be an http:// or https:// URL with a host"
        )),
    }
}

pub(crate) struct HttpTransport {
    client: reqwest::Client,
    urls: [String; 3],
    headers: HeaderMap,
    compressor: Compressor,
    timeout: Duration,
}

impl HttpTransport {
    pub(crate) fn new(c: &OtlpExporterConfig) -> Result<Self, String> {
        let base = c.endpoint.trim_end_matches('/');
        let url = |over: &Option<String>, s: Signal| {
            over.clone()
                .unwrap_or_else(|| format!("{base}{}", s.http_path()))
        };
        let urls = [
            url(&c.traces_endpoint, Signal::Traces),
            url(&c.metrics_endpoint, Signal::Metrics),
            url(&c.logs_endpoint, Signal::Logs),
        ];
        let mut headers = HeaderMap::new();
        for (k, v) in &c.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("bad header name `{k}`"))?;
            let mut value = HeaderValue::from_str(v.expose())
                .map_err(|_| format!("bad value for header `{k}`"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(c.timeout)
            .connect_timeout(c.timeout)
            .tcp_nodelay(true)
            .tls_backend_rustls()
            .tls_version_min(reqwest::tls::Version::TLS_1_2);
        if let Some(name) = &c.tls.server_name_override {
            // reqwest has no such setting: a rustls configuration of our own, with CA and
            // client certificate in it.
            builder = builder.use_preconfigured_tls(c.tls.rustls_with_server_name(name)?);
        } else {
            if let Some(pem) = c.tls.read_ca()? {
                let cert = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| format!("tls.ca_file: {e}"))?;
                builder = builder.tls_certs_only([cert]);
            }
            if let Some(id) = c
                .tls
                .read_identity()
                .map_err(super::helper::tls::identity_error)?
            {
                let identity = reqwest::Identity::from_pem(&id.combined_pem())
                    .map_err(|e| format!("tls.cert_file / tls.key_file: {e}"))?;
                builder = builder.identity(identity);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpTransport {
            client,
            urls,
            headers,
            compressor: c.compressor()?,
            timeout: c.timeout,
        })
    }

    pub(crate) async fn send(&self, p: &Payload) -> Result<Delivered, ExportError> {
        let signal = p.signal();
        let url = match signal {
            Signal::Traces => &self.urls[0],
            Signal::Metrics => &self.urls[1],
            Signal::Logs => &self.urls[2],
        };
        let mut req = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .timeout(self.timeout);
        if let Some(encoding) = self.compressor.encoding() {
            req = req.header(CONTENT_ENCODING, encoding);
        }
        req = req.body(
            self.compressor
                .compress(p.protobuf())
                .map_err(ExportError::Permanent)?,
        );
        let resp = req.send().await.map_err(|e| ExportError::Retryable {
            message: format!("request to {url} failed: {e}"),
            retry_after: None,
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(partial_success(signal, &body));
        }
        let message = format!("{url} answered {status}: {}", error_message(&body));
        match status {
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Err(ExportError::Retryable {
                message,
                retry_after,
            }),
            _ => Err(ExportError::Permanent(message)),
        }
    }
}

fn partial_success(signal: Signal, body: &[u8]) -> Delivered {
    let found = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|s| (s.rejected_spans, s.error_message)),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|s| (s.rejected_data_points, s.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|s| (s.rejected_log_records, s.error_message)),
    };
    match found {
        Some((rejected, message)) => Delivered {
            rejected: rejected.max(0) as u64,
            message,
        },
        None => Delivered::default(),
    }
}

/// The message of a google.rpc.Status body, or the body as text.
fn error_message(body: &[u8]) -> String {
    match RpcStatus::decode(body) {
        Ok(s) if !s.message.is_empty() => s.message,
        _ => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    }
}

impl super::helper::Transport for HttpTransport {
    fn send<'a>(
        &'a self,
        p: &'a Payload,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Delivered, ExportError>> + Send + 'a>,
    > {
        Box::pin(HttpTransport::send(self, p))
    }
}
