//! `trimatch-bench`: the performance harness, apart from the product binary.
//! `scripts/bench` runs it; `docs/performance.md` quotes its figures.

use std::process::ExitCode;

use clap::Parser;
use trimatch_bench::BenchCommand;

/// The same allocator as the `trimatch` binary, so the figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure throughput, freshness, latency and memory.
#[derive(Parser)]
#[command(name = "trimatch-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match trimatch_bench::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trimatch-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}
