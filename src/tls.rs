//! Server TLS for the receivers (rustls with the ring provider; TLS 1.2 and later): the `tls:`
//! settings, loading PEM files, mutual TLS, and a certificate that is reloaded when its files
//! change on disk.
//!
//! A receiver with TLS accepts TCP connections itself and does each handshake in a task of its
//! own (bounded by a timeout), so a slow or silent client never holds up the accept loop; the
//! finished TLS streams go to tonic (`serve_with_incoming`) or axum (`serve` over a
//! [`Listener`](axum::serve::Listener)). Each handshake takes the `ServerConfig` current at that
//! moment, which a reload task swaps when the certificate, key or client CA files change.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::{Problems, duration};
use crate::telemetry::TlsCounters;

/// The oldest TLS version a peer may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// `"1.2"` or `"1.3"`; also the unquoted YAML numbers 1.2 and 1.3, which is how people write it.
impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Number(n) => n.to_string(),
        };
        match text.as_str() {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            other => Err(serde::de::Error::custom(format!(
                "`{other}`: write \"1.2\" or \"1.3\" (older TLS versions are not offered)"
            ))),
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

impl TlsVersion {
    /// The rustls protocol versions from this one up.
    pub fn rustls_versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            // 1.3 and 1.2: everything rustls implements (it has nothing older).
            TlsVersion::Tls12 => rustls::ALL_VERSIONS,
            TlsVersion::Tls13 => TLS13_ONLY,
        }
    }
}

/// `tls:` under `receivers.otlp.protocols.grpc` or `.http`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate. Only the path is ever
    /// printed, never what the file holds.
    pub key_file: String,
    /// PEM CA certificates; when set, clients must present a certificate signed by one of them
    /// (mutual TLS) or the handshake fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// `"1.2"` (default) or `"1.3"`. Older versions are never offered.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// How often the files are checked for a change (default 10s). New handshakes use the new
    /// certificate; a file that does not load keeps the one in use.
    #[serde(default = "default_reload_interval", with = "duration")]
    pub reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once per listener. Each takes a task, buffers and CPU; past
/// this, accepting pauses (new connections wait in the kernel's backlog) until one finishes or
/// times out, so a crowd of slow or silent clients cannot take unbounded memory.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// Why TLS files could not be used: each problem with the setting it is about (`cert_file`,
/// `key_file`, `client_ca_file`). Messages name files by path and never quote their contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.problems))]
pub struct TlsError {
    pub problems: Vec<(&'static str, String)>,
}

fn render(problems: &[(&'static str, String)]) -> String {
    problems
        .iter()
        .map(|(k, m)| format!("tls.{k}: {m}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl TlsError {
    fn one(key: &'static str, message: String) -> TlsError {
        TlsError {
            problems: vec![(key, message)],
        }
    }

    /// Each problem under `path` (the `tls` key's own path).
    pub fn report(&self, path: &str, problems: &mut Problems) {
        for (k, m) in &self.problems {
            problems.push(&format!("{path}.{k}"), m.clone());
        }
    }
}

/// The ring provider, the one the whole process uses.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in a PEM file's contents (other sections are skipped).
pub(crate) fn parse_certs(pem: &[u8], file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if certs.is_empty() => Err(format!(
            "`{file}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )),
        Ok(certs) => Ok(certs),
        Err(e) => Err(format!(
            "`{file}` is not valid PEM ({})",
            pem_error_kind(&e)
        )),
    }
}

/// The first private key in a PEM file's contents.
pub(crate) fn parse_key(pem: &[u8], file: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            format!("`{file}` holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")
        }
        e => format!("`{file}` is not valid PEM ({})", pem_error_kind(&e)),
    })
}

/// What is wrong with PEM text, without quoting any of it (it may be a private key).
fn pem_error_kind(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line",
        pem::Error::Base64Decode(_) => "bad base64",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "unreadable",
    }
}

fn read(key: &'static str, file: &str) -> Result<Vec<u8>, (&'static str, String)> {
    std::fs::read(file).map_err(|e| (key, format!("cannot read `{file}`: {e}")))
}

/// The contents of the files a TLS config names, read at one moment.
struct Files {
    cert: Result<Vec<u8>, (&'static str, String)>,
    key: Result<Vec<u8>, (&'static str, String)>,
    client_ca: Option<Result<Vec<u8>, (&'static str, String)>>,
}

impl Files {
    fn read(c: &TlsServerConfig) -> Files {
        Files {
            cert: read("cert_file", &c.cert_file),
            key: read("key_file", &c.key_file),
            client_ca: c
                .client_ca_file
                .as_deref()
                .map(|f| read("client_ca_file", f)),
        }
    }

    /// A digest of what was read (contents or errors), to see whether anything changed without
    /// keeping a copy of the private key.
    fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            match part {
                None => h.update([0u8]),
                Some(Ok(bytes)) => {
                    h.update([1u8]);
                    h.update((bytes.len() as u64).to_le_bytes());
                    h.update(bytes);
                }
                Some(Err((_, e))) => {
                    h.update([2u8]);
                    h.update((e.len() as u64).to_le_bytes());
                    h.update(e.as_bytes());
                }
            }
        }
        h.finalize().into()
    }
}

impl TlsServerConfig {
    /// Check the settings and that the files load into a working server configuration; every
    /// problem is reported under `path` (the `tls` key).
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.reload_interval.is_zero() {
            problems.push(
                &format!("{path}.reload_interval"),
                "must be greater than zero",
            );
        }
        if let Err(e) = self.build(&Files::read(self), Vec::new()) {
            e.report(path, problems);
        }
    }

    /// A rustls server configuration from the files' contents, with `alpn` offered.
    fn build(&self, files: &Files, alpn: Vec<Vec<u8>>) -> Result<rustls::ServerConfig, TlsError> {
        let mut problems = Vec::new();
        let certs = match &files.cert {
            Ok(pem) => parse_certs(pem, &self.cert_file)
                .map_err(|m| problems.push(("cert_file", m)))
                .ok(),
            Err(e) => {
                problems.push(e.clone());
                None
            }
        };
        let key = match &files.key {
            Ok(pem) => parse_key(pem, &self.key_file)
                .map_err(|m| problems.push(("key_file", m)))
                .ok(),
            Err(e) => {
                problems.push(e.clone());
                None
            }
        };
        let verifier = match (&files.client_ca, &self.client_ca_file) {
            (Some(Ok(pem)), Some(file)) => client_verifier(pem, file)
                .map_err(|m| problems.push(("client_ca_file", m)))
                .ok(),
            (Some(Err(e)), _) => {
                problems.push(e.clone());
                None
            }
            _ => None,
        };
        let (Some(certs), Some(key)) = (certs, key) else {
            return Err(TlsError { problems });
        };
        if !problems.is_empty() {
            return Err(TlsError { problems });
        }
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(self.min_version.rustls_versions())
            .map_err(|e| TlsError::one("min_version", e.to_string()))?;
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| self.certificate_error(e))?;
        config.alpn_protocols = alpn;
        Ok(config)
    }

    fn certificate_error(&self, e: rustls::Error) -> TlsError {
        match e {
            rustls::Error::InconsistentKeys(_) => TlsError::one(
                "key_file",
                format!(
                    "the key in `{}` does not belong to the certificate in `{}`",
                    self.key_file, self.cert_file
                ),
            ),
            rustls::Error::General(m) => {
                TlsError::one("key_file", format!("`{}`: {m}", self.key_file))
            }
            other => TlsError::one("cert_file", format!("`{}`: {other}", self.cert_file)),
        }
    }
}

/// A verifier requiring a client certificate signed by one of the CAs in `pem`.
fn client_verifier(
    pem: &[u8],
    file: &str,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for (i, c) in parse_certs(pem, file)?.into_iter().enumerate() {
        roots
            .add(c)
            .map_err(|e| format!("`{file}`: certificate {}: {e}", i + 1))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("`{file}`: {e}"))
}

/// What a reload check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files are as they were when last looked at.
    Unchanged,
    /// They changed and the new ones are in use.
    Reloaded,
    /// They changed and do not load; the configuration in use stays.
    Failed(TlsError),
}

/// A receiver's server TLS: the configuration in use, swapped when the files change.
pub struct ServerTls {
    settings: TlsServerConfig,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// The fingerprint of the files as last looked at, loaded or not.
    seen: Mutex<[u8; 32]>,
}

impl ServerTls {
    /// Load the files now; `alpn` is what the server offers (`h2` for gRPC; `h2` and
    /// `http/1.1` for HTTP).
    pub fn load(settings: &TlsServerConfig, alpn: &[&[u8]]) -> Result<ServerTls, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let files = Files::read(settings);
        let config = settings.build(&files, alpn.clone())?;
        Ok(ServerTls {
            settings: settings.clone(),
            alpn,
            current: RwLock::new(Arc::new(config)),
            seen: Mutex::new(files.fingerprint()),
        })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Read the files; if they changed since last looked at, load them and use them from the
    /// next handshake on, or keep what is in use if they do not load.
    pub fn reload_if_changed(&self) -> Reload {
        let files = Files::read(&self.settings);
        let fingerprint = files.fingerprint();
        {
            let mut seen = match self.seen.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            if *seen == fingerprint {
                return Reload::Unchanged;
            }
            *seen = fingerprint;
        }
        match self.settings.build(&files, self.alpn.clone()) {
            Ok(config) => {
                let mut current = match self.current.write() {
                    Ok(c) => c,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *current = Arc::new(config);
                Reload::Reloaded
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// Check the files every `reload_interval` until `stop` fires.
    pub fn spawn_reloader(
        self: Arc<Self>,
        what: String,
        counters: TlsCounters,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.settings.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let tls = self.clone();
                let outcome = match tokio::task::spawn_blocking(move || tls.reload_if_changed())
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(component = %what, error = %e, "TLS reload check failed");
                        continue;
                    }
                };
                match outcome {
                    Reload::Unchanged => {}
                    Reload::Reloaded => {
                        counters.reloaded();
                        tracing::info!(
                            component = %what,
                            cert_file = %self.settings.cert_file,
                            key_file = %self.settings.key_file,
                            client_ca_file = self.settings.client_ca_file.as_deref().unwrap_or(""),
                            "TLS files changed; new handshakes use the new certificate"
                        );
                    }
                    Reload::Failed(e) => {
                        counters.reload_failed();
                        tracing::error!(
                            component = %what,
                            error = %e,
                            "TLS files changed but do not load; keeping the certificate in use"
                        );
                    }
                }
            }
        })
    }
}

/// TLS connections accepted on a listener, handshakes done. Serves axum as a
/// [`Listener`](axum::serve::Listener) and tonic through [`TlsIncoming::into_stream`].
pub struct TlsIncoming {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsIncoming {
    /// Accept on `listener` until `stop` fires, each handshake in a task of its own.
    pub fn start(
        listener: TcpListener,
        tls: Arc<ServerTls>,
        what: String,
        counters: TlsCounters,
        stop: CancellationToken,
    ) -> io::Result<TlsIncoming> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
        tokio::spawn(async move {
            let mut at_cap = false;
            loop {
                let permit = match handshakes.clone().try_acquire_owned() {
                    Ok(p) => {
                        at_cap = false;
                        p
                    }
                    Err(_) => {
                        if !std::mem::replace(&mut at_cap, true) {
                            tracing::warn!(component = %what, max = MAX_CONCURRENT_HANDSHAKES, "TLS handshakes at their limit: new connections wait until one finishes");
                        }
                        let p = tokio::select! {
                            _ = stop.cancelled() => return,
                            p = handshakes.clone().acquire_owned() => p,
                        };
                        match p {
                            Ok(p) => p,
                            Err(_) => return,
                        }
                    }
                };
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment rather than spin.
                        tracing::error!(component = %what, error = %e, "accept failed");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        }
                    }
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let acceptor = TlsAcceptor::from(tls.current());
                let (tx, stop, counters, what) =
                    (tx.clone(), stop.clone(), counters.clone(), what.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    let result = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = handshake => r,
                    };
                    match result {
                        Ok(Ok(stream)) => {
                            // The server is gone when this fails; the connection just closes.
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            counters.handshake_failed();
                            tracing::debug!(component = %what, peer = %peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            counters.handshake_failed();
                            tracing::debug!(component = %what, peer = %peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsIncoming { rx, local })
    }

    /// The connections as the stream tonic's `serve_with_incoming` takes.
    pub fn into_stream(
        self,
    ) -> impl tokio_stream::Stream<Item = Result<TlsStream<TcpStream>, io::Error>> {
        use tokio_stream::StreamExt;
        tokio_stream::wrappers::ReceiverStream::new(self.rx).map(|(s, _)| Ok(s))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // Accepting has stopped: the server is shutting down and stops calling this.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_problems_never_quote_the_file() {
        let secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==!!\n-----END PRIVATE KEY-----\n";
        let e = parse_key(secret, "/k.pem").expect_err("bad base64");
        assert_eq!(e, "`/k.pem` is not valid PEM (bad base64)");
        let e = parse_key(b"hello", "/k.pem").expect_err("nothing");
        assert_eq!(
            e,
            "`/k.pem` holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"
        );
        let e = parse_certs(b"", "/c.pem").expect_err("nothing");
        assert_eq!(
            e,
            "`/c.pem` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        );
    }

    #[test]
    fn min_version_is_1_2_or_1_3() {
        let v: TlsVersion = serde_json::from_str("\"1.3\"").expect("1.3");
        assert_eq!(v, TlsVersion::Tls13);
        assert_eq!(v.rustls_versions().len(), 1);
        let v: TlsVersion = serde_json::from_str("1.2").expect("a YAML number");
        assert_eq!(v, TlsVersion::Tls12);
        assert!(serde_json::from_str::<TlsVersion>("\"1.1\"").is_err());
        assert!(serde_json::from_str::<TlsVersion>("1.0").is_err());
        assert_eq!(TlsVersion::default().rustls_versions().len(), 2);
    }
}
