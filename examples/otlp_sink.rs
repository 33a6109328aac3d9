//! A counting OTLP/gRPC sink for benchmarks: accepts traces, counts spans, requests and their
//! bytes (protobuf, as decoded: before any gzip), and writes the totals (`spans requests bytes`)
//! to a file every 200 ms and on exit (SIGTERM / Ctrl-C).
//!
//! `cargo run --release --example otlp_sink -- 127.0.0.1:14317 /tmp/sink.count`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Sink {
    spans: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let n: usize = req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(req.get_ref().encoded_len() as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn write(path: &str, s: &Sink) {
    let body = format!(
        "{} {} {}\n",
        s.spans.load(Ordering::Relaxed),
        s.requests.load(Ordering::Relaxed),
        s.bytes.load(Ordering::Relaxed)
    );
    let tmp = format!("{path}.tmp");
    if std::fs::write(&tmp, body).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:14317".into())
        .parse()?;
    let path = args.next().unwrap_or_else(|| "/tmp/otlp_sink.count".into());
    let sink = Sink::default();
    let s2 = sink.clone();
    let p2 = path.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            write(&p2, &s2);
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(sink.clone())
                .max_decoding_message_size(64 * 1024 * 1024)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
        )
        .serve_with_shutdown(addr, async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    write(&path, &sink);
    Ok(())
}
