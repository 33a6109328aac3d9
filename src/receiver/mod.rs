//! Receivers: where telemetry enters ragwatch.

pub mod derived;
pub mod otlp;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Problems, Validate, deserialize_collecting, unknown_type};

/// The configuration of one receiver instance.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ReceiverConfig {
    Otlp(otlp::OtlpReceiverConfig),
    DerivedMetrics(derived::DerivedMetricsConfig),
}

const KNOWN: &[&str] = &["otlp", "derived_metrics"];

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
                unknown_type("receiver", other, KNOWN, path, problems);
                None
            }
        }
    }
}

impl ReceiverConfig {
    /// Whether this receiver produces `signal`.
    pub fn supports(&self, signal: crate::signal::Signal) -> bool {
        match self {
            ReceiverConfig::Otlp(_) => true,
            ReceiverConfig::DerivedMetrics(_) => signal == crate::signal::Signal::Metrics,
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
