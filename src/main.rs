#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ragwatch::Config;
use ragwatch::config::ConfigError;
use ragwatch::telemetry::logging::LogEncoding;

/// jemalloc, with background threads, gives memory back to the system a few seconds after a
/// burst (the system allocator keeps freed pages), so RSS follows what ragwatch holds rather than
/// its peak. Tune with `_RJEM_MALLOC_CONF` (e.g. `dirty_decay_ms:1000`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for a configuration that cannot be used (EX_USAGE, as linkerd2-proxy does).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "ragwatch",
    version,
    about = "An OpenTelemetry pipeline that understands RAG and LLM traffic"
)]
struct Cli {
    /// The configuration file; without it, the embedded default config is used.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format; overrides service.telemetry.logs.encoding.
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogEncoding>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration, print every problem with its key path, exit 64 if there are any.
    Validate,
    /// Print the effective configuration, defaults filled in and secrets redacted.
    PrintConfig,
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::from_file(p),
        None => Config::embedded_default(),
    }
}

fn report(e: &ConfigError) {
    eprintln!("ragwatch: the configuration cannot be used:");
    for p in e.problems() {
        eprintln!("  - {p}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(cli.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Some(Command::Validate) => {
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Some(Command::PrintConfig) => {
            print!("{}", config.to_redacted_yaml());
            ExitCode::SUCCESS
        }
        None => run(config, cli.log_format),
    }
}

fn run(config: Config, log_format: Option<LogEncoding>) -> ExitCode {
    let logs = &config.service.telemetry.logs;
    ragwatch::telemetry::logging::init(&logs.level, log_format.unwrap_or(logs.encoding));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ragwatch: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Listen for SIGTERM before anything starts: one arriving during start-up would
        // otherwise end the process at once (the default action), mid-way through opening
        // logs and binding ports. Start-up is then finished and shut down in order.
        let mut stop = StopSignal::listen();
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting");
        let start = ragwatch::Service::start(&config);
        tokio::pin!(start);
        let (started, early) = tokio::select! {
            biased;
            r = &mut start => (r, false),
            _ = stop.recv() => {
                tracing::info!("asked to stop during start-up: finishing start-up, then shutting down");
                (start.await, true)
            }
        };
        let service = match started {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        if !early {
            stop.recv().await;
        }
        service.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// SIGTERM or SIGINT (Ctrl-C).
struct StopSignal {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignal {
    fn listen() -> StopSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        if term.is_none() {
            tracing::warn!("cannot listen for SIGTERM; stopping on Ctrl-C only");
        }
        StopSignal { term, int }
    }

    async fn recv(&mut self) {
        match (&mut self.term, &mut self.int) {
            (Some(term), Some(int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            (Some(term), None) => {
                term.recv().await;
                tracing::info!("SIGTERM received");
            }
            (None, Some(int)) => {
                int.recv().await;
                tracing::info!("SIGINT received");
            }
            (None, None) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
