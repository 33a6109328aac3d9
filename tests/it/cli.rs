//! The binary's command line: validate, print-config, exit codes.

use std::process::Command;

fn ragwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ragwatch"))
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

#[test]
fn a_config_with_several_mistakes_lists_them_all_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        &dir,
        "bad.yaml",
        r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:99999
exporters:
  otlp/jaeger:
    endpoint: 127.0.0.1:4317
    timeout: 0s
    compresion: gzip
  zipkin:
    endpoint: http://127.0.0.1:9411
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp/jaeger, debug]
    spans:
      receivers: [otlp]
      exporters: [otlp/jaeger]
"#,
    );
    let out = ragwatch()
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .expect("run ragwatch");
    assert_eq!(
        out.status.code(),
        Some(64),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "receivers.otlp.protocols.http.endpoint:",
        "exporters.otlp/jaeger.compresion: unknown key",
        "exporters.otlp/jaeger.timeout: must be greater than zero",
        "exporters.zipkin: unknown exporter type `zipkin`",
        "service.pipelines.traces.exporters.1: exporter `debug` is not defined",
        "service.pipelines.spans: a pipeline id is traces, metrics or logs",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }

    // Running (not just validating) a bad config exits 64 too, before listening anywhere.
    let run = ragwatch()
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run ragwatch");
    assert_eq!(run.status.code(), Some(64));
}

#[test]
fn unreadable_or_unparsable_config_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ragwatch()
        .args(["validate", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    let cfg = write(&dir, "broken.yaml", "receivers: [unclosed\n");
    let out = ragwatch()
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid YAML"));
}

#[test]
fn validate_accepts_the_embedded_default_and_the_examples() {
    let out = ragwatch().arg("validate").output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configuration OK"
    );
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/forward-to-jaeger.yaml");
    let out = ragwatch()
        .args(["validate", "--config", cfg])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn print_config_fills_defaults_and_redacts_secrets() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/saas-backend.yaml");
    let out = ragwatch()
        .args(["print-config", "--config", cfg])
        .env("OTLP_VENDOR_API_KEY", "key-that-must-not-leak")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(!printed.contains("key-that-must-not-leak"), "{printed}");
    assert!(
        printed.contains("x-api-key: '[REDACTED]'")
            || printed.contains("x-api-key: \"[REDACTED]\""),
        "{printed}"
    );
    // Defaults are filled in.
    assert!(printed.contains("queue_size: 1000"), "{printed}");
    assert!(printed.contains("shutdown_timeout: 30s"), "{printed}");
}
