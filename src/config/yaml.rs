//! The one place YAML is read or written (serde-saphyr; serde_yaml is archived, RUSTSEC-2024-0449).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A YAML document that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(String);

/// Parse one YAML document.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str(text).map_err(|e| YamlError(e.to_string()))
}

/// Render a value as YAML.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_saphyr::to_string(value).map_err(|e| YamlError(e.to_string()))
}
