//! Log setup: human lines by default, JSON with `--log-format json`.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. RUST_LOG, when set, overrides `level`.
pub fn init(level: &str, encoding: LogEncoding) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or a collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match encoding {
        LogEncoding::Json => builder.json().flatten_event(true).try_init(),
        LogEncoding::Console => builder.try_init(),
    };
    // A second init (tests starting several services) keeps the first subscriber.
    let _ = result;
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryLogsConfig {
    /// A tracing filter: `info`, `debug`, `ragwatch=debug,info`. RUST_LOG overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub encoding: LogEncoding,
}

impl Default for TelemetryLogsConfig {
    fn default() -> Self {
        TelemetryLogsConfig {
            level: default_log_level(),
            encoding: LogEncoding::default(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_string()
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    /// Human-readable lines.
    #[default]
    Console,
    /// One JSON object per line.
    Json,
}
