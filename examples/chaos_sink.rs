//! The backend of `bench/chaos.sh`: an OTLP/gRPC trace sink that counts spans received and
//! distinct spans (trace id + span id), so duplicates and losses can be told apart, and can
//! refuse every Nth request retryably (UNAVAILABLE).
//!
//! `chaos_sink <addr> <state> [--refuse-every N]` writes `<state>.count` ("received distinct
//! requests refused") every 200 ms, and on SIGTERM also `<state>.keys`, which the next start
//! with the same `<state>` loads: a sink stopped and started again (a backend down for a while)
//! keeps counting where it left off.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct State {
    received: u64,
    requests: u64,
    refused: u64,
    keys: HashSet<[u8; 24]>,
}

#[derive(Clone)]
struct Sink {
    state: Arc<Mutex<State>>,
    refuse_every: u64,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        st.requests += 1;
        if self.refuse_every > 0 && st.requests % self.refuse_every == 0 {
            st.refused += 1;
            return Err(Status::unavailable("refusing every Nth request (chaos)"));
        }
        for s in req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            let mut k = [0u8; 24];
            let (t, i) = (s.trace_id.len().min(16), s.span_id.len().min(8));
            k[..t].copy_from_slice(&s.trace_id[..t]);
            k[16..16 + i].copy_from_slice(&s.span_id[..i]);
            st.received += 1;
            st.keys.insert(k);
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn write_count(path: &str, st: &Mutex<State>) {
    let body = match st.lock() {
        Ok(s) => format!(
            "{} {} {} {}\n",
            s.received,
            s.keys.len(),
            s.requests,
            s.refused
        ),
        Err(_) => return,
    };
    let tmp = format!("{path}.count.tmp");
    if std::fs::write(&tmp, body).is_ok() {
        let _ = std::fs::rename(&tmp, format!("{path}.count"));
    }
}

fn save_keys(path: &str, st: &Mutex<State>) {
    let Ok(s) = st.lock() else { return };
    let mut buf = Vec::with_capacity(8 + s.keys.len() * 24);
    buf.extend_from_slice(&s.received.to_le_bytes());
    for k in &s.keys {
        buf.extend_from_slice(k);
    }
    let _ = std::fs::write(format!("{path}.keys"), buf);
}

fn load_keys(path: &str) -> State {
    let mut st = State::default();
    if let Ok(buf) = std::fs::read(format!("{path}.keys"))
        && let Some((head, rest)) = buf.split_at_checked(8)
    {
        st.received = u64::from_le_bytes(head.try_into().unwrap_or([0; 8]));
        for c in rest.chunks_exact(24) {
            let mut k = [0u8; 24];
            k.copy_from_slice(c);
            st.keys.insert(k);
        }
    }
    st
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .first()
        .map_or("127.0.0.1:14317", String::as_str)
        .parse()?;
    let path = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "/tmp/chaos_sink".into());
    let refuse_every = match args.iter().position(|a| a == "--refuse-every") {
        Some(i) => args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(0),
        None => 0,
    };
    let sink = Sink {
        state: Arc::new(Mutex::new(load_keys(&path))),
        refuse_every,
    };
    let (st, p) = (sink.state.clone(), path.clone());
    tokio::spawn(async move {
        loop {
            write_count(&p, &st);
            tokio::time::sleep(Duration::from_millis(200)).await;
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
    write_count(&path, &sink.state);
    save_keys(&path, &sink.state);
    Ok(())
}
