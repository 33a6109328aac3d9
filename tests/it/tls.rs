//! TLS on the receivers and exporters, with certificates made at test time (rcgen) in a temporary
//! directory: OTLP/gRPC and OTLP/HTTP over TLS, mutual TLS, plaintext and old TLS refused, the
//! certificate reloaded when its files change (and kept when the new files are bad), the `otlp`
//! and `otlphttp` exporters presenting a client certificate, and configuration problems listed
//! with their key paths.

use crate::harness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use harness::backend::Backend;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use ragwatch::tls::{Reload, ServerTls, TlsServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const LIMIT: Duration = Duration::from_secs(10);

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate issued by a test CA, with its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("self-signed CA");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    fn server(&self, name: &str) -> Leaf {
        self.issue(
            name,
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    fn client(&self, name: &str) -> Leaf {
        self.issue(name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// Write a leaf as `<name>.crt` and `<name>.key`.
fn write_leaf(dir: &Path, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
    (
        write(dir, &format!("{name}.crt"), &leaf.cert_pem),
        write(dir, &format!("{name}.key"), &leaf.key_pem),
    )
}

/// Replace a file's contents at once (write beside it, then rename), as rotation tools do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A flow-mapping `tls:` value.
fn tls_yaml(cert: &Path, key: &Path, client_ca: Option<&Path>, extra: &str) -> String {
    let mut s = format!(
        "{{ cert_file: '{}', key_file: '{}'",
        cert.display(),
        key.display()
    );
    if let Some(ca) = client_ca {
        s.push_str(&format!(", client_ca_file: '{}'", ca.display()));
    }
    if !extra.is_empty() {
        s.push_str(", ");
        s.push_str(extra);
    }
    s.push_str(" }");
    s
}

/// ragwatch with TLS on both receivers' protocols, passing traces on to `backend` in plaintext.
fn config(grpc_tls: &str, http_tls: &str, backend: &Backend) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        tls: {grpc_tls}
      http:
        endpoint: 127.0.0.1:0
        tls: {http_tls}
exporters:
  otlp/down:
    endpoint: {}
    retry_on_failure: {{ initial_interval: 100ms, max_interval: 500ms }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp/down] }}
"#,
        backend.grpc_endpoint()
    )
}

fn request(name: &str) -> ExportTraceServiceRequest {
    harness::traces_request(vec![Span {
        trace_id: vec![7; 16],
        span_id: vec![name.len() as u8 + 1; 8],
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        ..Default::default()
    }])
}

async fn grpc_client(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<&Leaf>,
) -> Result<TraceServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(TraceServiceClient::new(channel))
}

fn http_client(ca: &Ca, identity: Option<&Leaf>, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("ca")]);
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    if http1_only {
        b = b.http1_only();
    }
    b.build().expect("client")
}

async fn post_traces(
    client: &reqwest::Client,
    addr: SocketAddr,
    name: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    client
        .post(format!("https://127.0.0.1:{}/v1/traces", addr.port()))
        .header("content-type", "application/x-protobuf")
        .body(request(name).encode_to_vec())
        .send()
        .await
}

/// A TLS handshake with our own rustls client, trusting `roots`, offering `alpn`.
async fn handshake(
    addr: SocketAddr,
    roots: &[&Ca],
    identity: Option<&Leaf>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for ca in roots {
        for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            store.add(c.expect("pem")).expect("root");
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(store);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(id.der.clone())],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The certificate the server at `addr` presents now.
async fn presented(addr: SocketAddr, roots: &[&Ca]) -> Option<Vec<u8>> {
    let versions = rustls::DEFAULT_VERSIONS;
    let s = handshake(addr, roots, None, &[b"h2"], versions)
        .await
        .ok()?;
    let (_, conn) = s.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}

fn handshake_failures(s: &ragwatch::Service, transport: &str) -> f64 {
    harness::metric(
        s,
        &format!(
            r#"ragwatch_receiver_tls_handshake_failures_total{{receiver="otlp",transport="{transport}"}}"#
        ),
    )
}

fn reloads(s: &ragwatch::Service, transport: &str, outcome: &str) -> f64 {
    harness::metric(
        s,
        &format!(
            r#"ragwatch_receiver_tls_reloads_total{{receiver="otlp",transport="{transport}",outcome="{outcome}"}}"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_tls_on_grpc_and_http_reaches_the_backend() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let (cert, key) = write_leaf(dir.path(), "server", &ca.server("ragwatch"));
    let backend = Backend::start().await;
    let tls = tls_yaml(&cert, &key, None, "");
    let s = harness::start(&config(&tls, &tls, &backend)).await;
    let grpc = s.grpc_addr("otlp").expect("grpc");
    let http = s.http_addr("otlp").expect("http");

    // (a) gRPC over TLS, a tonic client trusting only the test CA.
    let mut c = grpc_client(grpc, &ca, None).await.expect("TLS connect");
    c.export(request("grpc")).await.expect("export over TLS");

    // (b) HTTP over TLS, with HTTP/2 (ALPN) and with HTTP/1.1.
    for (name, http1) in [("http2", false), ("http1", true)] {
        let r = post_traces(&http_client(&ca, None, http1), http, name)
            .await
            .expect("post over TLS");
        assert_eq!(r.status().as_u16(), 200);
        let expected = if http1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        assert_eq!(r.version(), expected);
    }

    assert!(
        backend.wait_for_spans(3, LIMIT).await,
        "spans not delivered"
    );
    let mut names: Vec<String> = backend.spans().into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, ["grpc", "http1", "http2"]);

    // ALPN: gRPC offers h2 only; HTTP offers h2 and http/1.1.
    let v = rustls::DEFAULT_VERSIONS;
    let g = handshake(grpc, &[&ca], None, &[b"h2", b"http/1.1"], v)
        .await
        .expect("handshake");
    assert_eq!(g.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h = handshake(http, &[&ca], None, &[b"http/1.1"], v)
        .await
        .expect("handshake");
    assert_eq!(h.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(
        handshake(grpc, &[&ca], None, &[b"http/1.1"], v)
            .await
            .is_err(),
        "the gRPC port must not agree to HTTP/1.1"
    );
    // Connections that never send a request would hold up a graceful shutdown.
    drop((g, h));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_only_clients_with_a_certificate_from_the_client_ca() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let other_ca = Ca::new("someone else's CA");
    let (cert, key) = write_leaf(dir.path(), "server", &server_ca.server("ragwatch"));
    let client_ca_file = write(dir.path(), "clients.pem", &client_ca.pem);
    let good = client_ca.client("app");
    let stranger = other_ca.client("app");
    let backend = Backend::start().await;
    let tls = tls_yaml(&cert, &key, Some(&client_ca_file), "");
    let s = harness::start(&config(&tls, &tls, &backend)).await;
    let grpc = s.grpc_addr("otlp").expect("grpc");
    let http = s.http_addr("otlp").expect("http");

    // gRPC: no certificate, a certificate from another CA, then the right one.
    for (who, id) in [("none", None), ("stranger", Some(&stranger))] {
        let result = match grpc_client(grpc, &server_ca, id).await {
            Err(_) => Err(()),
            Ok(mut c) => c.export(request(who)).await.map(|_| ()).map_err(|_| ()),
        };
        assert!(
            result.is_err(),
            "{who}: a client without the right certificate got in"
        );
    }
    let mut c = grpc_client(grpc, &server_ca, Some(&good))
        .await
        .expect("connect with the client certificate");
    c.export(request("grpc-ok")).await.expect("export");

    // HTTP: the same.
    for id in [None, Some(&stranger)] {
        assert!(
            post_traces(&http_client(&server_ca, id, false), http, "no")
                .await
                .is_err()
        );
    }
    let r = post_traces(
        &http_client(&server_ca, Some(&good), false),
        http,
        "http-ok",
    )
    .await
    .expect("post with the client certificate");
    assert_eq!(r.status().as_u16(), 200);

    // The refusals happened in the handshake, and were counted there.
    assert!(harness::eventually(LIMIT, || handshake_failures(&s, "grpc") >= 2.0).await);
    assert!(harness::eventually(LIMIT, || handshake_failures(&s, "http") >= 2.0).await);
    assert!(backend.wait_for_spans(2, LIMIT).await);
    let mut names: Vec<String> = backend.spans().into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, ["grpc-ok", "http-ok"]);
    s.shutdown().await;
}

/// A ClientHello offering only TLS 1.1 (no supported_versions extension), written by hand since
/// no TLS library here speaks 1.1.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version: TLS 1.1
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
    body.extend([0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // two TLS 1.1 cipher suites
    body.extend([0x01, 0x00]); // compression: null only
    // signature_algorithms (ecdsa_secp256r1_sha256): not a TLS 1.1 extension, but without it
    // rustls refuses before it looks at the version (handshake_failure), and the point here is
    // that the version is what is refused.
    body.extend([0x00, 0x08, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
    let mut hs = vec![0x01, 0x00, 0x00, body.len() as u8]; // handshake: ClientHello
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x02, 0x00, hs.len() as u8]; // record: handshake, TLS 1.1
    record.extend(hs);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tls_older_than_the_minimum_are_refused() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let (cert, key) = write_leaf(dir.path(), "server", &ca.server("ragwatch"));
    let backend = Backend::start().await;
    // gRPC with the default minimum (1.2), HTTP with 1.3.
    let s = harness::start(&config(
        &tls_yaml(&cert, &key, None, ""),
        &tls_yaml(&cert, &key, None, "min_version: '1.3'"),
        &backend,
    ))
    .await;
    let grpc = s.grpc_addr("otlp").expect("grpc");
    let http = s.http_addr("otlp").expect("http");

    // Plaintext HTTP and plaintext gRPC to the TLS ports.
    let plain = reqwest::Client::new()
        .post(format!("http://{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request("plain").encode_to_vec())
        .send()
        .await;
    assert!(plain.is_err(), "plaintext HTTP was answered: {plain:?}");
    let plain_grpc = match TraceServiceClient::connect(format!("http://{grpc}")).await {
        Err(_) => false,
        Ok(mut c) => c.export(request("plain")).await.is_ok(),
    };
    assert!(!plain_grpc, "plaintext gRPC was answered");

    // A TLS 1.1 ClientHello gets a fatal protocol_version alert (70), not a ServerHello.
    for addr in [grpc, http] {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&tls11_client_hello()).await.expect("write");
        let mut reply = Vec::new();
        tokio::time::timeout(LIMIT, tcp.read_to_end(&mut reply))
            .await
            .expect("the server closes the connection")
            .expect("read");
        assert_eq!(reply.first(), Some(&0x15), "not an alert: {reply:?}");
        assert_eq!(
            &reply[5..7],
            &[2, 70],
            "not a fatal protocol_version: {reply:?}"
        );
    }

    // min_version 1.3: a TLS 1.2-only client is refused on HTTP, accepted on gRPC.
    let tls12 = &[&rustls::version::TLS12][..];
    assert!(
        handshake(http, &[&ca], None, &[b"h2"], tls12)
            .await
            .is_err()
    );
    let g = handshake(grpc, &[&ca], None, &[b"h2"], tls12)
        .await
        .expect("TLS 1.2 on gRPC");
    assert_eq!(
        g.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let h = handshake(http, &[&ca], None, &[b"h2"], rustls::DEFAULT_VERSIONS)
        .await
        .expect("TLS 1.3 on HTTP");
    assert_eq!(
        h.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // Plaintext (2), TLS 1.1 (2) and TLS 1.2 to the 1.3 port (1) were refused in the handshake.
    assert!(harness::eventually(LIMIT, || handshake_failures(&s, "grpc") >= 2.0).await);
    assert!(harness::eventually(LIMIT, || handshake_failures(&s, "http") >= 3.0).await);
    assert_eq!(backend.span_count(), 0);
    drop((g, h));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_used_for_new_connections_and_a_bad_one_is_not() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let (old_leaf, new_leaf) = (old_ca.server("ragwatch"), new_ca.server("ragwatch"));
    let (cert, key) = write_leaf(dir.path(), "server", &old_leaf);
    let client_ca_file = write(dir.path(), "clients.pem", &old_ca.pem);
    let backend = Backend::start().await;
    let grpc_tls = tls_yaml(&cert, &key, None, "reload_interval: 50ms");
    // HTTP also checks client certificates, against a CA file that changes too.
    let http_tls = tls_yaml(&cert, &key, Some(&client_ca_file), "reload_interval: 50ms");
    let s = harness::start(&config(&grpc_tls, &http_tls, &backend)).await;
    let grpc = s.grpc_addr("otlp").expect("grpc");
    let http = s.http_addr("otlp").expect("http");
    let both = [&old_ca, &new_ca];
    assert_eq!(presented(grpc, &both).await, Some(old_leaf.der.clone()));

    // Rotate: the new key, then the new certificate; then trust clients of the new CA.
    replace(&key, &new_leaf.key_pem);
    replace(&cert, &new_leaf.cert_pem);
    replace(&client_ca_file, &new_ca.pem);
    let (roots, new_der) = (&both, &new_leaf.der);
    let rotated = harness::eventually_async(LIMIT, || async move {
        presented(grpc, roots).await.as_ref() == Some(new_der)
    })
    .await;
    assert!(rotated, "still presenting the old certificate");
    // A connection trusting only the new CA works, with no restart.
    let mut c = grpc_client(grpc, &new_ca, None).await.expect("connect");
    c.export(request("after-rotation")).await.expect("export");
    // HTTP rotated too: it presents the new certificate and takes the new CA's clients.
    let new_client = new_ca.client("app");
    let (ca, client) = (&new_ca, &new_client);
    let http_rotated = harness::eventually_async(LIMIT, || async move {
        post_traces(&http_client(ca, Some(client), false), http, "http-rotated")
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(
        http_rotated,
        "HTTP did not take the new certificate and client CA"
    );
    assert!(reloads(&s, "grpc", "reloaded") >= 1.0);
    assert!(reloads(&s, "http", "reloaded") >= 1.0);

    // A garbage certificate file: the reload fails, is counted, and the new certificate stays.
    let failed_before = reloads(&s, "grpc", "failed");
    replace(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    assert!(
        harness::eventually(LIMIT, || reloads(&s, "grpc", "failed") > failed_before).await,
        "the bad file was not noticed"
    );
    assert_eq!(presented(grpc, &both).await, Some(new_leaf.der.clone()));
    let mut c = grpc_client(grpc, &new_ca, None).await.expect("connect");
    c.export(request("after-garbage")).await.expect("export");
    assert!(backend.wait_for_spans(3, LIMIT).await);
    s.shutdown().await;
}

/// The reload check itself, step by step: each change is acted on (and so logged and counted)
/// once, a key that does not match its certificate or a missing file keeps what is in use.
#[test]
fn a_reload_check_acts_on_each_change_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let (a, b) = (ca.server("a"), ca.server("b"));
    let (cert, key) = write_leaf(dir.path(), "server", &a);
    let settings = TlsServerConfig {
        cert_file: cert.display().to_string(),
        key_file: key.display().to_string(),
        client_ca_file: None,
        min_version: Default::default(),
        reload_interval: Duration::from_secs(10),
    };
    let tls = ServerTls::load(&settings, &[b"h2"]).expect("load");
    assert_eq!(tls.reload_if_changed(), Reload::Unchanged);

    // Half-way through a rotation: the new key beside the old certificate.
    replace(&key, &b.key_pem);
    let mismatch = Reload::Failed(ragwatch::tls::TlsError {
        problems: vec![(
            "key_file",
            format!(
                "the key in `{}` does not belong to the certificate in `{}`",
                key.display(),
                cert.display()
            ),
        )],
    });
    assert_eq!(tls.reload_if_changed(), mismatch);
    assert_eq!(tls.reload_if_changed(), Reload::Unchanged);
    // The rotation completes.
    replace(&cert, &b.cert_pem);
    assert_eq!(tls.reload_if_changed(), Reload::Reloaded);
    assert_eq!(tls.reload_if_changed(), Reload::Unchanged);
    assert_eq!(tls.current().alpn_protocols, vec![b"h2".to_vec()]);
    // The certificate file disappears, then comes back.
    std::fs::remove_file(&cert).expect("remove");
    match tls.reload_if_changed() {
        Reload::Failed(e) => {
            assert_eq!(e.problems.len(), 1);
            assert_eq!(e.problems[0].0, "cert_file");
            assert!(
                e.problems[0]
                    .1
                    .starts_with(&format!("cannot read `{}`", cert.display()))
            );
        }
        other => panic!("expected a failed reload, got {other:?}"),
    }
    assert_eq!(tls.reload_if_changed(), Reload::Unchanged);
    write(dir.path(), "server.crt", &b.cert_pem);
    assert_eq!(tls.reload_if_changed(), Reload::Reloaded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporters_present_a_client_certificate_to_a_backend_that_requires_one() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (cert, key) = write_leaf(dir.path(), "server", &server_ca.server("ragwatch-b"));
    let server_ca_file = write(dir.path(), "server-ca.pem", &server_ca.pem);
    let client_ca_file = write(dir.path(), "client-ca.pem", &client_ca.pem);
    let (client_cert, client_key) =
        write_leaf(dir.path(), "client", &client_ca.client("ragwatch-a"));

    // B: TLS receivers that require a client certificate, forwarding to the backend.
    let backend = Backend::start().await;
    let tls = tls_yaml(&cert, &key, Some(&client_ca_file), "");
    let b = harness::start(&config(&tls, &tls, &backend)).await;
    let (b_grpc, b_http) = (
        b.grpc_addr("otlp").expect("grpc"),
        b.http_addr("otlp").expect("http"),
    );

    // A: plaintext receivers on loopback, exporting to B over mutual TLS with both exporters.
    let client_tls = format!(
        "{{ ca_file: '{}', cert_file: '{}', key_file: '{}' }}",
        server_ca_file.display(),
        client_cert.display(),
        client_key.display()
    );
    let a = harness::start(&format!(
        r#"
receivers:
{}
exporters:
  otlp/b:
    endpoint: https://127.0.0.1:{}
    tls: {client_tls}
  otlphttp/b:
    endpoint: https://127.0.0.1:{}
    tls: {client_tls}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp/b, otlphttp/b] }}
"#,
        harness::otlp_receiver(""),
        b_grpc.port(),
        b_http.port()
    ))
    .await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&a))
        .await
        .expect("connect");
    c.export(request("via-mtls")).await.expect("export");

    // One span through each exporter, and no handshake B refused.
    assert!(
        backend.wait_for_spans(2, LIMIT).await,
        "nothing arrived through B"
    );
    let names: Vec<String> = backend.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["via-mtls", "via-mtls"]);
    assert_eq!(handshake_failures(&b, "grpc"), 0.0);
    assert_eq!(handshake_failures(&b, "http"), 0.0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handshakes_are_capped_and_the_next_waits_for_a_free_one() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let (cert, key) = write_leaf(dir.path(), "server", &ca.server("ragwatch"));
    let backend = Backend::start().await;
    let tls = tls_yaml(&cert, &key, None, "");
    let s = harness::start(&config(&tls, &tls, &backend)).await;
    let grpc = s.grpc_addr("otlp").expect("grpc");
    // As many silent clients as handshakes may run: connected, never saying hello.
    let mut silent = Vec::new();
    for _ in 0..ragwatch::tls::MAX_CONCURRENT_HANDSHAKES {
        silent.push(TcpStream::connect(grpc).await.expect("connect"));
    }
    // The next client's handshake waits (accepting has paused)...
    let versions = rustls::DEFAULT_VERSIONS;
    let mut next =
        tokio::spawn(async move { handshake(grpc, &[&ca], None, &[b"h2"], versions).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut next)
            .await
            .is_err(),
        "a handshake past the cap waits"
    );
    // ...until a silent one goes away and frees its place.
    drop(silent.pop());
    let done = tokio::time::timeout(LIMIT, next)
        .await
        .expect("finished once a place was free")
        .expect("join");
    assert!(done.is_ok(), "{done:?}");
    drop((done, silent));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlphttp_checks_the_certificate_against_server_name_override() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("backend CA");
    // B's certificate names only `ragwatch-b.internal`, not the address A connects to.
    let leaf = ca.issue(
        "ragwatch-b",
        vec!["ragwatch-b.internal".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cert, key) = write_leaf(dir.path(), "server", &leaf);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let backend = Backend::start().await;
    let tls = tls_yaml(&cert, &key, None, "");
    let b = harness::start(&config(&tls, &tls, &backend)).await;
    let b_http = b.http_addr("otlp").expect("http");
    let a = |over: &str| {
        format!(
            r#"
receivers:
{}
exporters:
  otlphttp/b:
    endpoint: https://127.0.0.1:{}
    tls: {{ ca_file: '{}'{over} }}
    retry_on_failure: {{ enabled: false }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlphttp/b] }}
"#,
            harness::otlp_receiver(""),
            b_http.port(),
            ca_file.display()
        )
    };
    // Without the override the name checked is 127.0.0.1, which the certificate does not name.
    let wrong = harness::start(&a("")).await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&wrong))
        .await
        .expect("connect");
    c.export(request("unnamed")).await.expect("export");
    let failed = r#"ragwatch_exporter_send_failed_spans_total{exporter="otlphttp/b"}"#;
    assert!(
        harness::eventually(LIMIT, || harness::metric(&wrong, failed) == 1.0).await,
        "the certificate is refused without the override"
    );
    wrong.shutdown().await;
    // With it, the same certificate is accepted.
    let right = harness::start(&a(", server_name_override: ragwatch-b.internal")).await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&right))
        .await
        .expect("connect");
    c.export(request("named")).await.expect("export");
    assert!(
        backend.wait_for_spans(1, LIMIT).await,
        "delivered with the override"
    );
    let names: Vec<String> = backend.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["named"]);
    right.shutdown().await;
    b.shutdown().await;
}

#[test]
fn otlphttp_insecure_with_an_https_endpoint_is_a_problem() {
    let yaml = r#"
receivers:
  otlp:
    protocols:
      grpc: { endpoint: 127.0.0.1:0 }
exporters:
  otlphttp/contradiction:
    endpoint: https://backend.example.com
    tls: { insecure: true }
  otlphttp/plain:
    endpoint: http://backend.example.com
    tls: { insecure: true, server_name_override: backend.internal }
service:
  pipelines:
    traces: { receivers: [otlp], exporters: [otlphttp/contradiction, otlphttp/plain] }
"#;
    let e = ragwatch::Config::from_yaml_with_env(yaml, "test", &|_| None)
        .expect_err("contradictions are problems");
    let problems: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        problems,
        [
            "exporters.otlphttp/contradiction.tls.insecure: is true but endpoint `https://backend.example.com` is https://; use http:// for plaintext, or drop insecure",
            "exporters.otlphttp/plain.tls.server_name_override: is set but every endpoint is http:// (plaintext): there is no certificate to check",
        ]
    );
}

#[test]
fn bad_tls_settings_are_listed_each_with_its_key_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let leaf = ca.server("ragwatch");
    let other = ca.server("another");
    let (cert, key) = write_leaf(dir.path(), "server", &leaf);
    let other_key = write(dir.path(), "other.key", &other.key_pem);
    let garbage = write(dir.path(), "garbage.pem", "this is not PEM\n");
    let missing = dir.path().join("missing.pem");
    let d = dir.path().display();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        tls:
          cert_file: {d}/missing.pem
          key_file: {d}/missing.pem
          client_ca_file: {d}/garbage.pem
          min_version: 1.1
          reload_interval: 0s
      http:
        endpoint: 127.0.0.1:0
        tls:
          cert_file: {cert}
          key_file: {other_key}
          ca_file: {cert}
exporters:
  otlp/half:
    endpoint: 127.0.0.1:4317
    tls: {{ cert_file: {cert} }}
  otlphttp/mixed:
    endpoint: https://127.0.0.1:4318
    tls: {{ cert_file: {garbage}, key_file: {key}, ca_file: {missing} }}
  otlp/insecure:
    endpoint: 127.0.0.1:4317
    tls: {{ insecure: true, cert_file: {cert}, key_file: {key} }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp/half, otlphttp/mixed, otlp/insecure] }}
"#,
        cert = cert.display(),
        key = key.display(),
        other_key = other_key.display(),
        garbage = garbage.display(),
        missing = missing.display(),
    );
    let e = ragwatch::Config::from_yaml_with_env(&yaml, "test", &|_| None).expect_err("invalid");
    let mut got: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
    got.sort();
    let g = "receivers.otlp.protocols.grpc.tls";
    let h = "receivers.otlp.protocols.http.tls";
    let (cert, other_key, garbage, missing) = (
        cert.display(),
        other_key.display(),
        garbage.display(),
        missing.display(),
    );
    let enoent = "No such file or directory (os error 2)";
    let mut expected = vec![
        format!("{g}.min_version: `1.1`: write \"1.2\" or \"1.3\" (older TLS versions are not offered)"),
        format!("{g}.reload_interval: must be greater than zero"),
        format!("{g}.cert_file: cannot read `{missing}`: {enoent}"),
        format!("{g}.key_file: cannot read `{missing}`: {enoent}"),
        format!("{g}.client_ca_file: `{garbage}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        format!("{h}.ca_file: unknown key; expected one of `cert_file`, `key_file`, `client_ca_file`, `min_version`, `reload_interval`"),
        format!("{h}.key_file: the key in `{other_key}` does not belong to the certificate in `{cert}`"),
        "exporters.otlp/half.tls.key_file: cert_file is set without key_file; a client certificate needs its key".to_string(),
        format!("exporters.otlphttp/mixed.tls.ca_file: cannot read `{missing}`: {enoent}"),
        format!("exporters.otlphttp/mixed.tls.cert_file: `{garbage}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        "exporters.otlp/insecure.tls.insecure: is true, so the client certificate in cert_file would never be sent; remove one of them".to_string(),
    ];
    expected.sort();
    assert_eq!(got, expected);
    // No problem quotes a private key.
    let text = e.to_string();
    let body_line = |pem: &str| {
        pem.lines()
            .nth(1)
            .map(str::to_string)
            .expect("a PEM body line")
    };
    assert!(!text.contains(&body_line(&leaf.key_pem)), "{text}");
    assert!(!text.contains(&body_line(&other.key_pem)), "{text}");
}

#[test]
fn the_example_config_is_valid_with_its_files_in_place_and_never_prints_the_key() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tls.yaml"))
        .expect("config/tls.yaml");
    let run = |args: &[&str], cfg: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ragwatch"))
            .args(args)
            .arg("--config")
            .arg(cfg)
            .output()
            .expect("run ragwatch")
    };
    let dir = tempfile::tempdir().expect("tempdir");

    // As shipped, the files it names are not on this machine: exit 64, each file by its key.
    let as_shipped = write(dir.path(), "shipped.yaml", &example);
    let out = run(&["validate"], &as_shipped);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "receivers.otlp.protocols.grpc.tls.cert_file: cannot read `/etc/ragwatch/tls/server.crt`",
        "receivers.otlp.protocols.grpc.tls.key_file: cannot read `/etc/ragwatch/tls/server.key`",
        "receivers.otlp.protocols.grpc.tls.client_ca_file: cannot read `/etc/ragwatch/tls/clients-ca.crt`",
        "receivers.otlp.protocols.http.tls.cert_file:",
        "exporters.otlp/backend.tls.ca_file: cannot read `/etc/ragwatch/tls/backend-ca.crt`",
        "exporters.otlp/backend.tls.cert_file:",
        "exporters.otlp/backend.tls.key_file:",
    ] {
        assert!(stderr.contains(key), "missing `{key}` in:\n{stderr}");
    }

    // With the files it names written (here under a temporary directory), it is valid.
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let server = ca.server("ragwatch");
    let client = clients.client("ragwatch");
    write_leaf(dir.path(), "server", &server);
    write_leaf(dir.path(), "client", &client);
    write(dir.path(), "clients-ca.crt", &clients.pem);
    write(dir.path(), "backend-ca.crt", &ca.pem);
    let here = example.replace("/etc/ragwatch/tls/", &format!("{}/", dir.path().display()));
    assert_ne!(
        here, example,
        "config/tls.yaml names its files under /etc/ragwatch/tls/"
    );
    let cfg = write(dir.path(), "tls.yaml", &here);
    let out = run(&["validate"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // print-config shows the paths and never what the key files hold.
    let out = run(&["print-config"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("{}/server.key", dir.path().display())),
        "{printed}"
    );
    for pem in [&server.key_pem, &client.key_pem] {
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!printed.contains(line), "{printed}");
        }
    }
    assert!(!printed.contains("PRIVATE KEY"), "{printed}");
}

/// Start the binary on `yaml`, wait until it is ready (so its whole startup log is written),
/// and return that log.
async fn startup_log(dir: &Path, yaml: &str) -> String {
    let cfg = write(dir, "child.yaml", yaml);
    let cfg = cfg.to_str().expect("utf-8 path").to_string();
    let mut child = harness::child::Ragwatch::spawn(dir, &["--config", &cfg]);
    let admin = tokio::task::block_in_place(|| child.address("admin")).expect("did not start");
    let ready = harness::eventually_async(LIMIT, || {
        let url = format!("http://{admin}/readyz");
        async move {
            reqwest::get(url)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    assert!(ready, "not ready");
    // Killed, not signalled: only the startup log matters here.
    child.child.kill().expect("kill");
    tokio::task::block_in_place(|| child.wait().1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_warning_names_only_the_transports_without_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let (cert, key) = write_leaf(dir.path(), "server", &ca.server("ragwatch"));
    let tls = tls_yaml(&cert, &key, None, "");
    let yaml = |http_tls: &str| {
        format!(
            r#"
receivers:
  otlp:
    auth: {{ bearer_token: a-token-of-24-characters }}
    protocols:
      grpc: {{ endpoint: 127.0.0.1:0, tls: {tls} }}
      http: {{ endpoint: 127.0.0.1:0{http_tls} }}
exporters:
  debug:
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [debug] }}
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
"#
        )
    };
    let token_warning = "a bearer token is set but these transports have no TLS";

    let both_tls = startup_log(dir.path(), &yaml(&format!(", tls: {tls}"))).await;
    assert!(!both_tls.contains(token_warning), "{both_tls}");
    assert_eq!(both_tls.matches("serving TLS").count(), 2, "{both_tls}");

    let http_plain = startup_log(dir.path(), &yaml("")).await;
    let warning = http_plain
        .lines()
        .find(|l| l.contains(token_warning))
        .unwrap_or_else(|| panic!("no warning in:\n{http_plain}"));
    let v: serde_json::Value = serde_json::from_str(warning).expect("a JSON log line");
    assert_eq!(v["transports"], "[\"http\"]", "{warning}");
    assert_eq!(http_plain.matches("serving TLS").count(), 1, "{http_plain}");
    assert!(
        !http_plain.contains("a-token-of-24-characters"),
        "{http_plain}"
    );
}
