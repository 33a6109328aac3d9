//! Client TLS settings for the network exporters (rustls; TLS 1.2 and later), with an optional
//! client certificate for backends that require mutual TLS.

use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::tls::{parse_certs, parse_key};

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
    /// A PEM client certificate chain presented to the backend (mutual TLS); needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// The PEM private key of `cert_file`. Only the path is ever printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

impl TlsClientConfig {
    pub(crate) fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(f) = &self.ca_file {
            match std::fs::read(f) {
                Err(e) => problems.push(
                    &format!("{path}.ca_file"),
                    format!("cannot read `{f}`: {e}"),
                ),
                Ok(pem) => {
                    if let Err(m) = parse_certs(&pem, f) {
                        problems.push(&format!("{path}.ca_file"), m);
                    }
                }
            }
        }
        match (&self.cert_file, &self.key_file) {
            (None, None) => {}
            (Some(_), None) => problems.push(
                &format!("{path}.key_file"),
                "cert_file is set without key_file; a client certificate needs its key",
            ),
            (None, Some(_)) => problems.push(
                &format!("{path}.cert_file"),
                "key_file is set without cert_file; a client certificate needs both",
            ),
            (Some(_), Some(_)) => {
                if self.insecure {
                    problems.push(
                        &format!("{path}.insecure"),
                        "is true, so the client certificate in cert_file would never be sent; remove one of them",
                    );
                }
                if let Err(found) = self.read_identity() {
                    for (key, message) in found {
                        problems.push(&format!("{path}.{key}"), message);
                    }
                }
            }
        }
    }

    pub(crate) fn read_ca(&self) -> Result<Option<Vec<u8>>, String> {
        match &self.ca_file {
            None => Ok(None),
            Some(f) => std::fs::read(f)
                .map(Some)
                .map_err(|e| format!("cannot read tls.ca_file {f}: {e}")),
        }
    }

    /// The client certificate and key as PEM (`None` without `cert_file`), checked to be a
    /// certificate with its own key. Each problem names the setting it is about.
    pub(crate) fn read_identity(
        &self,
    ) -> Result<Option<ClientIdentity>, Vec<(&'static str, String)>> {
        let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) else {
            return Ok(None);
        };
        let mut problems = Vec::new();
        let cert = std::fs::read(cert_file)
            .map_err(|e| format!("cannot read `{cert_file}`: {e}"))
            .and_then(|pem| parse_certs(&pem, cert_file).map(|chain| (pem, chain)))
            .map_err(|m| problems.push(("cert_file", m)))
            .ok();
        let key = std::fs::read(key_file)
            .map_err(|e| format!("cannot read `{key_file}`: {e}"))
            .and_then(|pem| parse_key(&pem, key_file).map(|der| (pem, der)))
            .map_err(|m| problems.push(("key_file", m)))
            .ok();
        let (Some((cert, chain)), Some((key, key_der))) = (cert, key) else {
            return Err(problems);
        };
        rustls::sign::CertifiedKey::from_der(chain, key_der, &crate::tls::provider()).map_err(
            |e| {
                vec![match e {
                    rustls::Error::InconsistentKeys(_) => (
                        "key_file",
                        format!(
                            "the key in `{key_file}` does not belong to the certificate in `{cert_file}`"
                        ),
                    ),
                    rustls::Error::General(m) => ("key_file", format!("`{key_file}`: {m}")),
                    other => ("cert_file", format!("`{cert_file}`: {other}")),
                }]
            },
        )?;
        Ok(Some(ClientIdentity { cert, key }))
    }
}

/// A client certificate chain and its key, as the PEM files hold them. Debug shows neither.
pub(crate) struct ClientIdentity {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity([REDACTED])")
    }
}

impl ClientIdentity {
    /// Certificate and key in one PEM text, as reqwest takes them.
    pub(crate) fn combined_pem(&self) -> Vec<u8> {
        let mut pem = self.cert.clone();
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        pem.extend_from_slice(&self.key);
        pem
    }
}

/// The problems reading a client identity, as one message.
pub(crate) fn identity_error(problems: Vec<(&'static str, String)>) -> String {
    problems
        .iter()
        .map(|(k, m)| format!("tls.{k}: {m}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl TlsClientConfig {
    /// A rustls client configuration that checks the server's certificate against
    /// `server_name_override` instead of the endpoint's host, trusting `ca_file` (or the public
    /// web roots) and presenting the client certificate if one is set: for `otlphttp`, whose
    /// HTTP client has no such setting of its own.
    pub(crate) fn rustls_with_server_name(
        &self,
        name: &str,
    ) -> Result<rustls::ClientConfig, String> {
        let name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| format!("tls.server_name_override `{name}`: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        match self.read_ca()? {
            Some(pem) => {
                let file = self.ca_file.as_deref().unwrap_or("ca_file");
                for c in parse_certs(&pem, file).map_err(|m| format!("tls.ca_file: {m}"))? {
                    roots
                        .add(c)
                        .map_err(|e| format!("tls.ca_file `{file}`: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = crate::tls::provider();
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("tls: {e}"))?;
        let verifier = std::sync::Arc::new(NamedVerifier { inner, name });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match self.read_identity().map_err(identity_error)? {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let chain = parse_certs(&id.cert, "cert_file")
                    .map_err(|m| format!("tls.cert_file: {m}"))?;
                let key =
                    parse_key(&id.key, "key_file").map_err(|m| format!("tls.key_file: {m}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("tls.cert_file / tls.key_file: {e}"))?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Verifies the server's certificate as usual (chain, dates, signatures), against a fixed name
/// rather than the host the connection went to.
#[derive(Debug)]
struct NamedVerifier {
    inner: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
