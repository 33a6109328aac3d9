use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "TOKEN" => Some("s3cret-token".into()),
        "QUEUE" => Some("250".into()),
        _ => None,
    }
}

fn load(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_with_env(yaml, "test", &env)
}

fn problems(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => panic!("expected problems"),
        Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded_default().expect("embedded default");
    assert!(c.receivers.contains_key("otlp"));
    assert_eq!(c.service.pipelines.len(), 3);
    assert_eq!(c.service.telemetry.metrics.address, "127.0.0.1:8888");
}

#[test]
fn every_example_config_parses() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("config dir") {
        let path = e.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_string();
        // prices.yaml is the price table, checked by the genai tests. tls.yaml names certificate
        // and key files that validation reads: tests/it/tls.rs writes them and validates it.
        if !name.ends_with(".yaml") || name == "prices.yaml" || name == "tls.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        if let Err(e) = Config::from_yaml_with_env(&text, &name, &|_| None) {
            panic!("{name}: {e}");
        }
        n += 1;
    }
    assert!(n >= 3, "expected the example configs, found {n}");
}

#[test]
fn named_instances_and_env_expansion() {
    let c = load(
        r#"
receivers:
  otlp:
exporters:
  otlp/jaeger:
    endpoint: 127.0.0.1:4317
    tls: { insecure: true }
    headers:
      authorization: "Bearer ${env:TOKEN}"
    sending_queue:
      queue_size: ${env:QUEUE}
  otlp/tempo:
    endpoint: http://127.0.0.1:4417
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp/jaeger, otlp/tempo]
"#,
    )
    .expect("valid");
    let ExporterConfig::Otlp(j) = &c.exporters["otlp/jaeger"] else {
        panic!("otlp/jaeger is an otlp exporter");
    };
    assert_eq!(j.headers["authorization"].expose(), "Bearer s3cret-token");
    assert_eq!(j.sending_queue.queue_size, 250);
    assert!(c.exporters.contains_key("otlp/tempo"));
    // Both protocols on by default when `otlp:` is empty.
    let crate::service::registry::ReceiverConfig::Otlp(r) = &c.receivers["otlp"] else {
        panic!("otlp receiver");
    };
    assert!(r.protocols.grpc.is_some() && r.protocols.http.is_some());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let p = problems(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "not an address"
        max_recv_msg_size: 4
  kafka:
    brokers: [x]
exporters:
  otlp/jaeger:
    endpoint: 127.0.0.1:4317
    timeout: 0s
    retry_on_failure:
      initial_interval: -5s
    unknown_option: true
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/jaeger, otlp/missing]
"#,
    );
    let expect = [
        "receivers.otlp.protocols.grpc.max_recv_msg_size: unknown key",
        "receivers.otlp.protocols.grpc.endpoint: `not an address`",
        "receivers.kafka: unknown receiver type `kafka`",
        "exporters.otlp/jaeger.unknown_option: unknown key",
        "exporters.otlp/jaeger.retry_on_failure.initial_interval: `-5s`: a duration cannot be negative",
        "exporters.otlp/jaeger.timeout: must be greater than zero",
        "service.pipelines.traces.processors.0: processor `batch` is not defined",
        "service.pipelines.traces.exporters.1: exporter `otlp/missing` is not defined",
    ];
    for e in expect {
        assert!(
            p.iter().any(|l| l.starts_with(e)),
            "missing `{e}` in:\n{}",
            p.join("\n")
        );
    }
}

#[test]
fn missing_env_and_bad_yaml_are_reported() {
    let p = problems(
        r#"
receivers: { otlp: }
exporters:
  debug:
    verbosity: ${env:NOT_SET}
service:
  pipelines:
    traces: { receivers: [otlp], exporters: [debug] }
"#,
    );
    assert!(
        p[0].starts_with("exporters.debug.verbosity: environment variable NOT_SET is not set"),
        "{p:?}"
    );
    assert!(matches!(
        load("a: [unclosed"),
        Err(ConfigError::Yaml { .. })
    ));
}

#[test]
fn print_config_redacts_secrets() {
    let c = load(
        r#"
receivers: { otlp: }
exporters:
  otlphttp:
    endpoint: https://otlp.example.com
    headers: { x-api-key: "${env:TOKEN}" }
service:
  pipelines:
    traces: { receivers: [otlp], exporters: [otlphttp] }
"#,
    )
    .expect("valid");
    let yaml = c.to_redacted_yaml();
    assert!(!yaml.contains("s3cret-token"), "{yaml}");
    assert!(yaml.contains("[REDACTED]"), "{yaml}");
    assert!(!format!("{c:?}").contains("s3cret-token"));
    // The printed config is itself a valid config.
    Config::from_yaml_with_env(&yaml, "printed", &|_| None).expect("printed config parses");
}

#[test]
fn bad_price_entries_and_misused_receivers_are_reported() {
    let p = problems(
        r#"
receivers:
  otlp:
  derived_metrics:
processors:
  genai:
    prices:
      - id: bad
        model: gpt-4o
        input: -1.0
        output: 1.0
exporters:
  debug:
service:
  pipelines:
    traces: { receivers: [otlp, derived_metrics], processors: [genai], exporters: [debug] }
"#,
    );
    assert!(
        p.iter()
            .any(|l| l.starts_with("processors.genai.prices.0:")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|l| l.starts_with(
            "service.pipelines.traces.receivers.1: receiver `derived_metrics` does not produce traces"
        )),
        "{p:?}"
    );
}

#[test]
fn on_disk_queue_settings_are_checked() {
    let p = problems(
        r#"
receivers:
  otlp:
exporters:
  otlp:
    endpoint: http://127.0.0.1:4317
    sending_queue: { storage: Cargo.toml, storage_max_mib: 0, storage_sync_interval: 2s }
service:
  pipelines:
    traces: { receivers: [otlp], exporters: [otlp] }
"#,
    );
    for want in [
        "exporters.otlp.sending_queue.storage: `Cargo.toml` exists and is not a directory",
        "exporters.otlp.sending_queue.storage_max_mib: must be greater than zero",
        "exporters.otlp.sending_queue.storage_sync_interval: must be greater than zero and at most 500ms",
    ] {
        assert!(p.iter().any(|l| l == want), "{want} in {p:?}");
    }
}

mod page {
    use super::*;

    #[test]
    fn the_page_watches_the_pipelines_that_assemble_else_all() {
        let yaml = |assemble: &str| {
            format!(
                r#"
receivers:
  otlp:
processors:
  trace_assembly:
    mode: {assemble}
exporters:
  debug:
service:
  pipelines:
    traces/a:
      receivers: [otlp]
      processors: [trace_assembly]
      exporters: [debug]
    traces/b:
      receivers: [otlp]
      exporters: [debug]
"#
            )
        };
        let c = Config::from_yaml_with_env(&yaml("hold"), "t", &|_| None).expect("valid");
        let p = |id: &str| c.service.pipelines.get(id).expect("pipeline");
        assert_eq!(c.page_watches(p("traces/a")), Some(true));
        assert_eq!(c.page_watches(p("traces/b")), None);
        let c = Config::from_yaml_with_env(&yaml("stream"), "t", &|_| None).expect("valid");
        let p = |id: &str| c.service.pipelines.get(id).expect("pipeline");
        assert_eq!(c.page_watches(p("traces/a")), Some(false));
    }
}

#[test]
fn compression_levels_follow_the_collectors_conventions() {
    use crate::exporter::helper::{Compressor, DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL};
    use crate::service::registry::ExporterConfig;
    let c = load(
        r#"
receivers:
  otlp:
exporters:
  otlp/nine: { endpoint: http://127.0.0.1:4317, compression_params: { level: 9 } }
  otlp/unset: { endpoint: http://127.0.0.1:4317 }
  otlphttp/minus-one: { endpoint: http://127.0.0.1:4318, compression_params: { level: -1 } }
  otlphttp/zero: { endpoint: http://127.0.0.1:4318, compression_params: { level: 0 } }
  otlp/zstd: { endpoint: http://127.0.0.1:4317, compression: zstd, compression_params: { level: 19 } }
  otlp/zstd-fast: { endpoint: http://127.0.0.1:4317, compression: zstd, compression_params: { level: -5 } }
  otlphttp/zstd-unset: { endpoint: http://127.0.0.1:4318, compression: zstd }
  otlphttp/none: { endpoint: http://127.0.0.1:4318, compression: none, compression_params: { level: 0 } }
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp/nine, otlp/unset, otlphttp/minus-one, otlphttp/zero, otlp/zstd, otlp/zstd-fast, otlphttp/zstd-unset, otlphttp/none]
"#,
    )
    .expect("valid");
    let compressor = |id: &str| match c.exporters.get(id) {
        Some(ExporterConfig::Otlp(e) | ExporterConfig::OtlpHttp(e)) => e.compressor(),
        _ => panic!("{id}"),
    };
    assert_eq!(DEFAULT_GZIP_LEVEL, 1);
    assert_eq!(DEFAULT_ZSTD_LEVEL, 3);
    for (id, want) in [
        ("otlp/nine", Compressor::Gzip(9)),
        ("otlp/unset", Compressor::Gzip(1)),
        ("otlphttp/minus-one", Compressor::Gzip(1)),
        ("otlphttp/zero", Compressor::Gzip(1)),
        ("otlp/zstd", Compressor::Zstd(19)),
        ("otlp/zstd-fast", Compressor::Zstd(-5)),
        ("otlphttp/zstd-unset", Compressor::Zstd(3)),
        ("otlphttp/none", Compressor::None),
    ] {
        assert_eq!(compressor(id), Ok(want), "{id}");
    }

    let p = problems(
        r#"
receivers:
  otlp:
exporters:
  otlp/ten: { endpoint: http://127.0.0.1:4317, compression_params: { level: 10 } }
  otlp/huffman: { endpoint: http://127.0.0.1:4317, compression: gzip, compression_params: { level: -2 } }
  otlphttp/zstd: { endpoint: http://127.0.0.1:4318, compression: zstd, compression_params: { level: 23 } }
  otlphttp/none: { endpoint: http://127.0.0.1:4318, compression: none, compression_params: { level: 5 } }
  otlp/typo: { endpoint: http://127.0.0.1:4317, compression_params: { levle: 5 } }
  otlp/text: { endpoint: http://127.0.0.1:4317, compression_params: { level: best } }
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp/ten, otlp/huffman, otlphttp/zstd, otlphttp/none, otlp/typo, otlp/text]
"#,
    );
    for want in [
        "exporters.otlp/ten.compression_params.level: gzip level 10: gzip levels are 1 (fastest) to 9 (smallest), or 0 / -1 for the default (1)",
        "exporters.otlp/huffman.compression_params.level: gzip level -2 (Huffman-only) is not available here; gzip levels are 1 (fastest) to 9 (smallest)",
        "exporters.otlphttp/zstd.compression_params.level: zstd level 23: zstd levels are -131072 to 22 (1 to 19 usual, negative ones faster still), or 0 for the default (3)",
        "exporters.otlphttp/none.compression_params.level: level 5 with compression: none (there is nothing to set a level for)",
        "exporters.otlp/typo.compression_params.levle: unknown key; expected `level`",
        "exporters.otlp/typo.compression_params: missing field `level`",
        "exporters.otlp/text.compression_params.level: invalid type: string \"best\", expected i32",
        "exporters.otlp/text.compression_params: missing field `level`",
    ] {
        assert!(
            p.iter().any(|l| l == want),
            "`{want}` in:\n{}",
            p.join("\n")
        );
    }
    assert_eq!(p.len(), 8, "{}", p.join("\n"));
}
