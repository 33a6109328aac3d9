//! The integration tests, linked into one binary: one link instead of one per file keeps
//! `cargo test` lean on CI's disk and cores. Each module is one concern's tests, run through
//! the real interfaces (gRPC, HTTP, child processes) on 127.0.0.1.

mod architecture;
mod harness;

mod admin_and_local_exporters;
mod agents;
mod alerting;
mod chain;
mod cli;
mod compression;
mod delivery;
mod disk_queue;
mod example_service;
mod false_alarms;
mod genai;
mod interop_alertmanager;
mod interop_prometheus;
mod interop_python;
mod interop_scale_out;
mod loadgen;
mod loose_ends;
mod memory_limiter;
mod page;
mod page_browser;
mod passthrough;
mod pipeline_log;
mod properties;
mod quality;
mod receiver_auth;
mod receiver_errors;
mod sampling;
mod sdk;
mod shutdown;
mod slo_anomaly;
mod tls;
mod trace_assembly;
mod verdicts;
