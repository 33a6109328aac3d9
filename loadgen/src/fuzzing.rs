//! Entry points for the cargo-fuzz targets in `fuzz/` (README, "Fuzzing"). Each is a thin
//! wrapper that runs the code a receiver, the config loader or a processor runs in service on
//! arbitrary input, and checks what must hold whatever the input. Not an API: no logic of its own
//! beyond choosing what to call.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use ragwatch::derived::{DerivedMetrics, Limits};
use ragwatch::processor::{Processor, run_chain, shutdown_chain, tick_chain};
use ragwatch::receiver::otlp::drop_invalid_spans;
use ragwatch::receiver::otlp::http::{self, Encoding};
use ragwatch::service::config::Config;
use ragwatch::service::registry::BuildContext;
use ragwatch::signal::{Batch, Signal, span_count};

const SIGNALS: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

/// The processors the fuzz targets run decoded data through: the full analysis
/// (config/full-analysis.yaml) with the anomaly warm-up at its minimum, every SLO kind and both
/// GenAI options that change spans, so that one short input reaches as much code as it can.
const ANALYSIS: &str = r#"
receivers:
  otlp:
processors:
  batch:
    timeout: 200ms
  genai:
    mark_instrumentation_issues: true
  genai/redact:
    redact_content: true
  trace_assembly:
    mode: hold
    wait_after_root: 1s
  quality:
    groundedness: true
  anomaly:
    warmup: 5
  slo:
    slos:
      - { name: latency, kind: latency, objective: 0.95, threshold: 2s }
      - { name: availability, kind: availability, objective: 0.99 }
      - { name: quality, kind: quality, objective: 0.9, threshold: 0.5 }
      - { name: ttft, kind: ttft, over: llm, by: model, objective: 0.95, threshold: 1s }
      - { name: cost, kind: cost, objective: 0.99, threshold: 0.05 }
    budgets:
      - { name: daily, limit_usd: 50 }
  tail_sampling:
    decision_wait: 1s
    policies:
      - { name: errors, type: status_code }
      - { name: costly, type: trace_cost, trace_cost: { min_usd: 0.01 } }
      - { name: odd, type: anomaly }
      - { name: half, type: probabilistic, probabilistic: { sampling_percentage: 50 } }
      - { name: rest, type: always_sample }
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly, slo, tail_sampling, batch]
      exporters: [debug]
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
    logs:
      receivers: [otlp]
      processors: [genai/redact, batch]
      exporters: [debug]
"#;

/// Bytes as an OTLP/gRPC or OTLP/HTTP receiver decodes a protobuf request, for each signal; what
/// decodes is validated and processed as [`received`] says.
pub fn otlp_protobuf(data: &[u8]) {
    for signal in SIGNALS {
        if let Ok(batch) = http::decode(signal, Encoding::Protobuf, data) {
            received(batch);
        }
    }
}

/// Bytes as the OTLP/HTTP receiver decodes an `application/json` body, for each signal.
pub fn otlp_json(data: &[u8]) {
    for signal in SIGNALS {
        if let Ok(batch) = http::decode(signal, Encoding::Json, data) {
            received(batch);
        }
    }
}

/// A decoded request as the receivers hand it on: spans with invalid ids dropped (the
/// partial-success path), then through the analysis processors and out through the encoders the
/// exporters use.
pub fn received(mut batch: Batch) {
    if let Batch::Traces(r) = &mut batch {
        let before = span_count(r);
        let (rejected, _) = drop_invalid_spans(r);
        assert_eq!(span_count(r) + rejected, before, "spans lost by validation");
        let again = drop_invalid_spans(r);
        assert_eq!(again.0, 0, "validation left an invalid span");
    }
    process(vec![batch]);
}

/// An OTLP/HTTP body as the receiver inflates it (`gzip` or `zstd` Content-Encoding) with its
/// size limit. Returns the inflated length, or None for a refused body. Panics if more than
/// `limit` bytes came out.
pub fn body_decompress(content_encoding: &str, raw: &[u8], limit: usize) -> Option<usize> {
    let out = match content_encoding {
        "gzip" => http::inflate(flate2::read::MultiGzDecoder::new(raw), limit),
        "zstd" => http::zstd_decoder(raw, limit).and_then(|d| http::inflate(d, limit)),
        _ => return None,
    };
    let out = out.ok()?;
    assert!(out.len() <= limit, "inflated past the limit");
    Some(out.len())
}

/// YAML text through the config loader and its validation, with a fixed environment; a config
/// that loads is rendered back (print-config) and its processors are built.
pub fn config(text: &str) {
    let env = |name: &str| match name {
        "PORT" => Some("4317".to_string()),
        "TOKEN" => Some("0123456789abcdef-token".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let Ok(config) = Config::from_yaml_with_env(text, "fuzz", &env) else {
        return;
    };
    let rendered = config.to_redacted_yaml();
    if let Err(e) = ragwatch::config::yaml::from_str::<serde_json::Value>(&rendered) {
        panic!("print-config rendered YAML that does not parse: {e}\n{rendered}");
    }
    let ctx = context();
    for p in config.processors.values() {
        let _ = p.build(&ctx);
    }
}

/// A trace export request (built by the fuzz target from arbitrary bytes) through the GenAI view
/// of every span, then the analysis processors.
pub fn genai_view(req: ExportTraceServiceRequest) {
    for rs in &req.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let v = ragwatch::genai::view(span);
                let _ = v.model();
                if let Some(stage) = v.stage {
                    let _ = ragwatch::processor::genai::lint(&v, stage);
                }
            }
        }
    }
    received(Batch::Traces(req));
}

fn analysis_config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| Config::from_yaml_with_env(ANALYSIS, "fuzzing", &|_| None).ok())
        .as_ref()
}

/// A fresh store of derived metrics (bounded per metric: a shared one would fill up and change
/// what later inputs do), and ragwatch's own metrics and the findings channel shared by every
/// input: processors only write to those, and building them (a 4,096-slot broadcast channel)
/// took a third of each input's time.
fn context() -> BuildContext {
    type Sinks = (
        Arc<ragwatch::telemetry::SelfMetrics>,
        Arc<ragwatch::findings::Findings>,
    );
    static SINKS: OnceLock<Sinks> = OnceLock::new();
    let (self_metrics, findings) = SINKS.get_or_init(|| {
        (
            ragwatch::telemetry::SelfMetrics::new(),
            Arc::new(ragwatch::findings::Findings::default()),
        )
    });
    BuildContext {
        derived: Arc::new(DerivedMetrics::new(
            ragwatch::derived::defs::DEFS,
            Limits::default(),
        )),
        self_metrics: self_metrics.clone(),
        findings: findings.clone(),
        memory: None,
        slo_burning: Default::default(),
        whole_traces: false,
        shards: 1,
    }
}

/// Run batches through a fresh chain of the analysis processors for their signal (fresh, so a
/// crash reproduces from its one input), tick it long after, shut it down, then encode what
/// came out as the exporters do and render the derived metrics.
fn process(batches: Vec<Batch>) {
    let Some(first) = batches.first() else {
        return;
    };
    let signal = first.signal();
    let config = analysis_config().expect("the fuzzing analysis config is valid");
    let ctx = context();
    let mut chain: Vec<Box<dyn Processor>> = config
        .service
        .pipelines
        .get(signal.as_str())
        .map(|p| &p.processors[..])
        .unwrap_or_default()
        .iter()
        .filter_map(|id| config.processors.get(id))
        .map(|c| c.build(&ctx).expect("the fuzzing processors build"))
        .collect();
    let now = Instant::now();
    let later = now + Duration::from_secs(3600);
    let mut out = run_chain(&mut chain, batches, now);
    out.extend(tick_chain(&mut chain, later));
    out.extend(shutdown_chain(&mut chain, later));
    for b in &out {
        let (pb, json) = match b {
            Batch::Traces(r) => (r.encode_to_vec(), serde_json::to_vec(r)),
            Batch::Metrics(r) => (r.encode_to_vec(), serde_json::to_vec(r)),
            Batch::Logs(r) => (r.encode_to_vec(), serde_json::to_vec(r)),
        };
        // What an exporter sends, a receiver takes back.
        assert!(
            http::decode(signal, Encoding::Protobuf, &pb).is_ok(),
            "re-encoded output does not decode"
        );
        drop(json);
    }
    let mut text = String::new();
    ctx.derived.encode_prometheus(&mut text);
    let _ = ctx.derived.to_otlp(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        // The seeds live with the fuzz targets, in the repository's fuzz/ beside this crate.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds")
            .join(target);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .expect("seed dir")
            .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_analysis_config_loads() {
        assert!(analysis_config().is_some());
    }

    // The fuzz targets are only built by cargo fuzz; this keeps their entry points and seeds
    // working under `cargo test`.
    #[test]
    fn every_entry_point_runs_on_its_seeds() {
        for s in seeds("otlp_protobuf") {
            otlp_protobuf(&s);
        }
        for s in seeds("otlp_json") {
            otlp_json(&s);
        }
        for s in seeds("config") {
            config(std::str::from_utf8(&s).expect("utf-8"));
        }
        let mut inflated = 0;
        for s in seeds("body_decompress") {
            let (head, body) = s.split_first().expect("non-empty");
            let encoding = if head & 1 == 0 { "gzip" } else { "zstd" };
            if body_decompress(encoding, body, 1 << ((head >> 1) % 17)).is_some() {
                inflated += 1;
            }
        }
        assert_eq!(
            inflated, 2,
            "the 64 KiB seeds inflate, the 256-byte ones are refused"
        );
    }
}
