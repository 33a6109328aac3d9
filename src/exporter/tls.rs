//! Client TLS settings for the network exporters (rustls; TLS 1.2 and later).

use serde::{Deserialize, Serialize};

use crate::config::Problems;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// Plaintext. For `otlp`, an endpoint without a scheme uses TLS unless this is true; an
    /// `http://` endpoint is always plaintext.
    #[serde(default)]
    pub insecure: bool,
    /// A PEM file of CA certificates to trust instead of the public web roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Override the server name checked against the certificate.
    #[serde(default)]
    pub server_name_override: Option<String>,
}

impl TlsClientConfig {
    pub(super) fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(f) = &self.ca_file
            && !std::path::Path::new(f).is_file()
        {
            problems.push(
                &format!("{path}.ca_file"),
                format!("`{f}` is not a readable file"),
            );
        }
    }

    pub(super) fn read_ca(&self) -> Result<Option<Vec<u8>>, String> {
        match &self.ca_file {
            None => Ok(None),
            Some(f) => std::fs::read(f)
                .map(Some)
                .map_err(|e| format!("cannot read tls.ca_file {f}: {e}")),
        }
    }
}
