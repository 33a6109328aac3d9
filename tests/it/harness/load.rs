//! Synthetic RAG traffic sent to a running service over gRPC.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use ragwatch::Service;
use ragwatch_loadgen::synth::{Fault, Profile, rag_trace};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tonic::transport::Channel;

/// Processors for the alerting tests: a latency SLO (4 s, 90%) that pages when 10 s and 1 s both
/// burn faster than 2 — which [`Load::slow`] traffic does at once.
pub const SLO_PROCESSORS: &str = r#"processors:
  genai:
  trace_assembly:
    wait_after_root: 50ms
  slo:
    resolution: 100ms
    evaluation_interval: 100ms
    burn_rules:
      - { severity: critical, long: 10s, short: 1s, burn_rate: 2 }
    slos:
      - name: fast-answers
        kind: latency
        objective: 0.9
        threshold: 4s"#;

pub struct Load {
    client: TraceServiceClient<Channel>,
    rng: StdRng,
    profile: Profile,
}

impl Load {
    pub async fn new(s: &Service) -> Load {
        Load {
            client: TraceServiceClient::connect(super::grpc_url(s))
                .await
                .expect("connect"),
            rng: StdRng::seed_from_u64(9),
            profile: Profile {
                error_rate: 0.0,
                ..Profile::new("rag-api", "gpt-4o-mini")
            },
        }
    }

    /// `n` traces with retrieval 40x slower (80 ms → 3.2 s): each breaks the 4 s objective.
    pub async fn slow(&mut self, n: usize) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let req = ExportTraceServiceRequest {
            resource_spans: (0..n)
                .map(|_| {
                    rag_trace(
                        &mut self.rng,
                        &self.profile,
                        Some(Fault::SlowRetrieval(40.0)),
                        now,
                    )
                })
                .collect(),
        };
        self.client.export(req).await.expect("export");
    }
}
