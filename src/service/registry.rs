//! Which type name builds which component: the `type` part of a component id (`otlp` in
//! `otlp/jaeger`) picks the config struct to read and the runtime type to build. Adding a
//! component type means a variant here and a folder under `receiver/`, `processor/` or
//! `exporter/`; nothing else of the service changes.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Problems, Validate, deserialize_collecting, unknown_type};
use crate::exporter::debug::{self, DebugExporterConfig};
use crate::exporter::file::{self, FileExporterConfig};
use crate::exporter::helper::{
    ExporterContext, OtlpExporterConfig, QueueConfig, RetryConfig, RunningExporter, StartError,
    Transport,
};
use crate::exporter::prometheus::{self, PrometheusExporterConfig};
use crate::exporter::{otlp_grpc, otlp_http};
use crate::processor::{Processor, batch, tail_sampling};
use crate::receiver::{derived, otlp};
use crate::signal::Signal;

/// The configuration of one receiver instance.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ReceiverConfig {
    Otlp(otlp::OtlpReceiverConfig),
    DerivedMetrics(derived::DerivedMetricsConfig),
}

const KNOWN_RECEIVERS: &[&str] = &["otlp", "derived_metrics"];

impl ReceiverConfig {
    pub(crate) fn from_value(
        ty: &str,
        v: Value,
        path: &str,
        problems: &mut Problems,
    ) -> Option<Self> {
        match ty {
            "otlp" => deserialize_collecting(v, path, problems).map(ReceiverConfig::Otlp),
            "derived_metrics" => {
                deserialize_collecting(v, path, problems).map(ReceiverConfig::DerivedMetrics)
            }
            other => {
                unknown_type("receiver", other, KNOWN_RECEIVERS, path, problems);
                None
            }
        }
    }

    /// Whether this receiver produces `signal`.
    pub fn supports(&self, signal: Signal) -> bool {
        match self {
            ReceiverConfig::Otlp(_) => true,
            ReceiverConfig::DerivedMetrics(_) => signal == Signal::Metrics,
        }
    }
}

impl Validate for ReceiverConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        match self {
            ReceiverConfig::Otlp(c) => c.validate(path, problems),
            ReceiverConfig::DerivedMetrics(c) => c.validate(path, problems),
        }
    }
}

/// The configuration of one processor instance.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ProcessorConfig {
    Batch(batch::BatchConfig),
    Genai(crate::processor::genai::GenAiConfig),
    TraceAssembly(crate::processor::trace_assembly::TraceAssemblyConfig),
    Quality(crate::processor::quality::QualityConfig),
    Slo(crate::processor::slo::SloProcessorConfig),
    Anomaly(crate::processor::anomaly::AnomalyConfig),
    TailSampling(tail_sampling::TailSamplingConfig),
}

const KNOWN_PROCESSORS: &[&str] = &[
    "batch",
    "genai",
    "trace_assembly",
    "quality",
    "slo",
    "anomaly",
    "tail_sampling",
];

/// What building a processor may need from the running service.
#[derive(Clone)]
pub struct BuildContext {
    /// The store of metrics derived from spans.
    pub derived: std::sync::Arc<crate::derived::DerivedMetrics>,
    /// ragwatch's own metrics.
    pub self_metrics: std::sync::Arc<crate::telemetry::SelfMetrics>,
    /// Where verdicts go (alerting listens).
    pub findings: std::sync::Arc<crate::findings::Findings>,
    /// The memory limiter, when configured (trace assembly flushes when it says so).
    pub memory: Option<std::sync::Arc<crate::memory::MemoryLimiter>>,
    /// The SLOs burning now: the `slo` processors write it, `tail_sampling` reads it.
    pub slo_burning: std::sync::Arc<crate::processor::slo::burning::Burning>,
    /// Whether an earlier stage of the pipeline hands on whole traces (`trace_assembly` in hold
    /// mode), set for each stage as the pipeline is built.
    pub whole_traces: bool,
    /// The copies of the pipeline's processors (shards): a per-pipeline bound such as
    /// `max_held_mib` is shared out among them.
    pub shards: usize,
}

impl ProcessorConfig {
    pub(crate) fn from_value(
        ty: &str,
        v: Value,
        path: &str,
        problems: &mut Problems,
    ) -> Option<Self> {
        match ty {
            "batch" => deserialize_collecting(v, path, problems).map(ProcessorConfig::Batch),
            "genai" => deserialize_collecting(v, path, problems).map(ProcessorConfig::Genai),
            "trace_assembly" => {
                deserialize_collecting(v, path, problems).map(ProcessorConfig::TraceAssembly)
            }
            "quality" => deserialize_collecting(v, path, problems).map(ProcessorConfig::Quality),
            "slo" => deserialize_collecting(v, path, problems).map(ProcessorConfig::Slo),
            "anomaly" => deserialize_collecting(v, path, problems).map(ProcessorConfig::Anomaly),
            "tail_sampling" => {
                deserialize_collecting(v, path, problems).map(ProcessorConfig::TailSampling)
            }
            other => {
                unknown_type("processor", other, KNOWN_PROCESSORS, path, problems);
                None
            }
        }
    }

    /// Whether this processor handles `signal`.
    pub fn supports(&self, signal: Signal) -> bool {
        match self {
            ProcessorConfig::Batch(_) | ProcessorConfig::Genai(_) => true,
            ProcessorConfig::TraceAssembly(_)
            | ProcessorConfig::Quality(_)
            | ProcessorConfig::Slo(_)
            | ProcessorConfig::Anomaly(_)
            | ProcessorConfig::TailSampling(_) => signal == Signal::Traces,
        }
    }

    /// Build the runtime stage for one pipeline.
    pub fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Processor>, String> {
        Ok(match self {
            ProcessorConfig::Batch(c) => Box::new(batch::BatchProcessor::new(c.clone())),
            ProcessorConfig::Genai(c) => Box::new(
                crate::processor::genai::GenAiProcessor::new(c.clone(), ctx.derived.clone())?
                    .with_vectors_counter(ctx.self_metrics.embedding_vectors_dropped()),
            ),
            ProcessorConfig::TraceAssembly(c) => {
                let a = crate::processor::trace_assembly::TraceAssembly::new(
                    c.clone(),
                    vec![
                        Box::new(crate::processor::trace_assembly::summary::TraceSummary),
                        Box::new(
                            crate::processor::trace_assembly::critical_path::CriticalPathAnalyzer {
                                min_share: c.min_share,
                                derived: ctx.derived.clone(),
                            },
                        ),
                        Box::new(crate::processor::trace_assembly::agents::AgentAnalyzer {
                            config: c.patterns.clone(),
                            derived: ctx.derived.clone(),
                        }),
                        Box::new(
                            crate::processor::trace_assembly::patterns::PatternAnalyzer {
                                config: c.patterns.clone(),
                                derived: ctx.derived.clone(),
                            },
                        ),
                    ],
                    ctx.self_metrics.component(),
                )
                .one_of(ctx.shards);
                match &ctx.memory {
                    Some(m) => Box::new(a.with_memory_limiter(m.clone())),
                    None => Box::new(a),
                }
            }
            ProcessorConfig::Quality(c) => Box::new(
                crate::processor::quality::QualityProcessor::new(c.clone(), ctx.derived.clone()),
            ),
            ProcessorConfig::Slo(c) => Box::new(crate::processor::slo::SloShard::new(
                crate::processor::slo::SloProcessor::new(
                    c.clone(),
                    ctx.derived.clone(),
                    ctx.findings.clone(),
                )
                .with_burning(ctx.slo_burning.clone()),
            )),
            ProcessorConfig::Anomaly(c) => Box::new(crate::processor::anomaly::AnomalyShard::new(
                crate::processor::anomaly::AnomalyProcessor::new(
                    c.clone(),
                    ctx.derived.clone(),
                    ctx.findings.clone(),
                ),
            )),
            ProcessorConfig::TailSampling(c) => Box::new(
                tail_sampling::TailSampling::new(
                    c.clone(),
                    ctx.whole_traces,
                    ctx.self_metrics.component(),
                )?
                .with_burning(ctx.slo_burning.clone()),
            ),
        })
    }
}

impl Validate for ProcessorConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        match self {
            ProcessorConfig::Batch(c) => c.validate(path, problems),
            ProcessorConfig::Genai(c) => c.validate(path, problems),
            ProcessorConfig::TraceAssembly(c) => c.validate(path, problems),
            ProcessorConfig::Quality(c) => c.validate(path, problems),
            ProcessorConfig::Slo(c) => c.validate(path, problems),
            ProcessorConfig::Anomaly(c) => c.validate(path, problems),
            ProcessorConfig::TailSampling(c) => c.validate(path, problems),
        }
    }
}

/// The configuration of one exporter instance.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ExporterConfig {
    Otlp(OtlpExporterConfig),
    OtlpHttp(OtlpExporterConfig),
    File(FileExporterConfig),
    Debug(DebugExporterConfig),
    Prometheus(PrometheusExporterConfig),
}

const KNOWN_EXPORTERS: &[&str] = &["otlp", "otlphttp", "file", "debug", "prometheus"];

impl ExporterConfig {
    pub(crate) fn from_value(
        ty: &str,
        v: Value,
        path: &str,
        problems: &mut Problems,
    ) -> Option<Self> {
        match ty {
            "otlp" => deserialize_collecting(v, path, problems).map(ExporterConfig::Otlp),
            "otlphttp" => deserialize_collecting(v, path, problems).map(ExporterConfig::OtlpHttp),
            "file" => deserialize_collecting(v, path, problems).map(ExporterConfig::File),
            "debug" => deserialize_collecting(v, path, problems).map(ExporterConfig::Debug),
            "prometheus" => {
                deserialize_collecting(v, path, problems).map(ExporterConfig::Prometheus)
            }
            other => {
                unknown_type("exporter", other, KNOWN_EXPORTERS, path, problems);
                None
            }
        }
    }

    /// Every exporter type handles all three signals.
    pub fn supports(&self, _signal: Signal) -> bool {
        true
    }

    fn queue(&self) -> QueueConfig {
        match self {
            ExporterConfig::Otlp(c) | ExporterConfig::OtlpHttp(c) => c.sending_queue.clone(),
            // Local sinks: one writer keeps lines whole and in order.
            ExporterConfig::File(_) | ExporterConfig::Debug(_) | ExporterConfig::Prometheus(_) => {
                QueueConfig {
                    num_consumers: 1,
                    ..QueueConfig::default()
                }
            }
        }
    }

    fn retry(&self) -> RetryConfig {
        match self {
            ExporterConfig::Otlp(c) | ExporterConfig::OtlpHttp(c) => c.retry_on_failure.clone(),
            ExporterConfig::File(_) | ExporterConfig::Debug(_) | ExporterConfig::Prometheus(_) => {
                RetryConfig::default()
            }
        }
    }
}

impl Validate for ExporterConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        match self {
            ExporterConfig::Otlp(c) => {
                if let Err(e) = otlp_grpc::grpc_url(&c.endpoint, c.tls.insecure) {
                    problems.push(&format!("{path}.endpoint"), e);
                }
                for (name, v) in c.signal_endpoints() {
                    if v.is_some() {
                        problems.push(
                            &format!("{path}.{name}"),
                            "only the otlphttp exporter has per-signal endpoints",
                        );
                    }
                }
                c.validate(path, problems);
            }
            ExporterConfig::OtlpHttp(c) => {
                for (name, v) in [("endpoint", Some(&c.endpoint))]
                    .into_iter()
                    .chain(c.signal_endpoints())
                {
                    if let Some(v) = v
                        && let Err(e) = otlp_http::check_url(v)
                    {
                        problems.push(&format!("{path}.{name}"), e);
                    }
                    // The URL's scheme decides for otlphttp; a contradiction is not guessed at.
                    if let Some(v) = v
                        && c.tls.insecure
                        && v.starts_with("https://")
                    {
                        problems.push(
                            &format!("{path}.tls.insecure"),
                            format!("is true but {name} `{v}` is https://; use http:// for plaintext, or drop insecure"),
                        );
                    }
                }
                if c.tls.server_name_override.is_some()
                    && [Some(&c.endpoint)]
                        .into_iter()
                        .chain(c.signal_endpoints().map(|(_, v)| v))
                        .flatten()
                        .all(|v| v.starts_with("http://"))
                {
                    problems.push(
                        &format!("{path}.tls.server_name_override"),
                        "is set but every endpoint is http:// (plaintext): there is no certificate to check",
                    );
                }
                c.validate(path, problems);
            }
            ExporterConfig::File(c) => c.validate(path, problems),
            ExporterConfig::Prometheus(c) => c.validate(path, problems),
            ExporterConfig::Debug(_) => {}
        }
    }
}

/// Build and start one exporter.
pub fn start_exporter(
    id: &str,
    config: &ExporterConfig,
    ctx: &ExporterContext<'_>,
) -> Result<RunningExporter, StartError> {
    let err = |message: String| StartError::Exporter {
        id: id.to_string(),
        message,
    };
    let mut addr = None;
    let transport: Arc<dyn Transport> = match config {
        ExporterConfig::Otlp(c) => Arc::new(otlp_grpc::GrpcTransport::new(c).map_err(err)?),
        ExporterConfig::OtlpHttp(c) => Arc::new(otlp_http::HttpTransport::new(c).map_err(err)?),
        ExporterConfig::File(c) => Arc::new(file::FileTransport::new(c).map_err(err)?),
        ExporterConfig::Debug(c) => Arc::new(debug::DebugTransport::new(id, c)),
        ExporterConfig::Prometheus(c) => {
            let t = prometheus::PrometheusTransport::start(
                id,
                c,
                ctx.derived.clone(),
                ctx.stop_servers.clone(),
            )
            .map_err(err)?;
            addr = Some(t.addr);
            Arc::new(t)
        }
    };
    let counters = ctx.metrics.exporter(id);
    let wire_only = matches!(
        config,
        ExporterConfig::Otlp(_) | ExporterConfig::OtlpHttp(_)
    );
    let (handle, tasks) = crate::exporter::helper::start(
        id,
        wire_only,
        transport,
        config.queue(),
        config.retry(),
        counters,
        ctx.hard_stop.clone(),
    )
    .map_err(err)?;
    Ok(RunningExporter {
        handle,
        tasks,
        addr,
    })
}
