//! ragwatch: an OpenTelemetry pipeline component that understands RAG and LLM traffic.
//!
//! The data's way through: receivers (OTLP gRPC/HTTP) → bounded pipeline queues → processors →
//! exporters (OTLP gRPC/HTTP, file, debug), each behind a bounded sending queue with retries.
#![forbid(unsafe_code)]

pub mod admin;
pub mod alerting;
pub mod attributes;
pub mod config;
pub mod derived;
pub mod exporter;
pub mod findings;
pub mod genai;
pub mod memory;
pub mod names;
pub mod net;
pub mod page;
pub mod pipeline;
pub mod processor;
pub mod receiver;
pub mod rpc_status;
pub mod service;
pub mod signal;
pub mod stage;
pub mod telemetry;
#[cfg(test)]
mod test_logs;
pub mod tls;
pub mod trace;

pub use service::Service;
pub use service::config::Config;
