//! Exporters: where telemetry leaves ragwatch. One folder per exporter type, each with its config
//! beside the transport it builds; what they share (the sending queue, retries, the on-disk log,
//! client TLS) is `helper`. Which type name builds which exporter is `service::registry`.

pub mod debug;
pub mod file;
pub mod helper;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod prometheus;
