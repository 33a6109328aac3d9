//! `ragwatch-loadgen`: realistic RAG traces over OTLP, from pre-encoded requests.
//!
//! Exit codes: 0 when every span sent was acknowledged; 1 when any was lost (failed, rejected in
//! a partial success, unacknowledged at the end) or the generator could not run; 2 for bad
//! arguments.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ragwatch_loadgen::loadgen::{self, Args, LoadgenError};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ragwatch-loadgen: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(loadgen::run(args)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("ragwatch-loadgen: {e}"),
                }
            } else {
                print!("{}", report.text());
            }
            if report.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(LoadgenError::Usage(m)) => {
            eprintln!("ragwatch-loadgen: {m}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("ragwatch-loadgen: {e}");
            ExitCode::from(1)
        }
    }
}
