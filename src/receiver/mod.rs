//! Receivers: where telemetry enters ragwatch.

pub mod otlp;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Problems, Validate, deserialize_collecting, unknown_type};

/// The configuration of one receiver instance.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ReceiverConfig {
    Otlp(otlp::OtlpReceiverConfig),
}

const KNOWN: &[&str] = &["otlp"];

impl ReceiverConfig {
    pub(crate) fn from_value(
        ty: &str,
        v: Value,
        path: &str,
        problems: &mut Problems,
    ) -> Option<Self> {
        match ty {
            "otlp" => deserialize_collecting(v, path, problems).map(ReceiverConfig::Otlp),
            other => {
                unknown_type("receiver", other, KNOWN, path, problems);
                None
            }
        }
    }
}

impl Validate for ReceiverConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        match self {
            ReceiverConfig::Otlp(c) => c.validate(path, problems),
        }
    }
}
