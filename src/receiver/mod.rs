//! Receivers: where telemetry enters ragwatch. One folder per receiver type; which type name
//! builds which receiver is `service::registry`.

pub mod derived;
pub mod events;
pub mod otlp;
