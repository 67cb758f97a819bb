//! The command line: one module per subcommand, the config file, and the
//! printing of rows for people.
//!
//! * `demo` — everything in one process, on an embedded broker;
//! * `serve` — run the job against Kafka and serve it over Arrow Flight; with
//!   `--until-end --output DIR`, a bounded backfill that writes every
//!   collection to Parquet;
//! * `generate` — produce a synthetic AP workload to Kafka;
//! * `query` / `subscribe` — read a running trimatch over Arrow Flight;
//! * `resolve` — record an analyst's decision on an exception, and see its effect;
//! * `auth` — manage the API tokens `serve --auth-file` accepts;
//! * `health` — probe a running trimatch's /healthz or /readyz;
//! * `validate` — check documents against the input contract (SPEC §1).
//!
//! This layer may use every other: it starts `pipeline`s, serves them with
//! `serve`, and prints `output` rows.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use trimatch_connectors::{Envelope, StartPosition};

mod auth;
mod bounded;
pub mod client;
mod config_file;
pub mod connection;
pub mod demo;
mod generate;
mod health;
mod policy;
mod print;
mod progress;
mod resolve;
mod security;
mod serve;
mod sql;
mod validate;

#[derive(Parser)]
#[command(
    name = "trimatch",
    version,
    about = "Live three-way match (PO ↔ goods receipt ↔ invoice) over Kafka"
)]
struct Cli {
    /// Log format: text (for people) or json (one object per line).
    #[arg(long, global = true, env = "TRIMATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: an embedded Kafka broker, a synthetic
    /// workload, the matching job and its Flight service, with a live summary.
    Demo(demo::DemoArgs),
    /// Run the matching job against Kafka.
    Serve(Box<serve::ServeArgs>),
    /// Produce a synthetic accounts-payable workload to Kafka.
    Generate(generate::GenerateArgs),
    /// Print a collection (a consistent snapshot) from a running trimatch.
    Query(client::QueryArgs),
    /// Print a collection's changes as they happen, with progress times.
    Subscribe(client::SubscribeArgs),
    /// Run SQL on a running trimatch (Flight SQL); with no statement, read
    /// statements from standard input.
    Sql(sql::SqlArgs),
    /// Accept or reject an exception (or withdraw the decision), and print
    /// the invoice's new status once trimatch reflects it.
    Resolve(Box<resolve::ResolveArgs>),
    /// Manage API tokens: add-token, revoke-token, list.
    Auth(auth::AuthArgs),
    /// Tolerance policies: `preview FILE` shows what a change would raise
    /// and release before it is produced.
    Policy(policy::PolicyArgs),
    /// Probe /healthz or /readyz: exit 0 when it answers 200.
    Health(health::HealthArgs),
    /// Check JSON documents (one per line) against the input contract.
    Validate {
        /// The topic whose documents these are: purchase_orders, goods_receipts, invoices, match_policies, exception_resolutions or payments.
        topic: String,
        /// Files to check (default: standard input).
        files: Vec<std::path::PathBuf>,
    },
}

/// The `trimatch` binary: parses the command line, sets up logging, runs the
/// subcommand. Exit codes: 0 done, 1 `validate` found invalid documents or
/// `health` got no 200, 2 an error (printed to stderr).
pub fn main() -> ExitCode {
    // One crypto provider for every rustls user (tonic's clients among them).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(error) = config_file::load_into_environment(std::env::args_os(), &settings()) {
        eprintln!("trimatch: {error:#}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let outcome = match cli.command {
        Command::Demo(args) => demo::run(args.into()).map(|()| true),
        Command::Serve(args) => serve::run(*args).map(|()| true),
        Command::Generate(args) => generate::run(args).map(|()| true),
        Command::Query(args) => client::query(args).map(|()| true),
        Command::Subscribe(args) => client::subscribe(args).map(|()| true),
        Command::Sql(args) => sql::run(args).map(|()| true),
        Command::Resolve(args) => resolve::run(*args).map(|()| true),
        Command::Auth(args) => auth::run(args).map(|()| true),
        Command::Policy(args) => policy::run(args).map(|()| true),
        Command::Health(args) => health::run(args),
        Command::Validate { topic, files } => validate::run(&topic, &files),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // The reader went away (`trimatch query … | head`): nothing more to say.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trimatch: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The environment variables the options read (what a config file may set).
fn settings() -> std::collections::BTreeSet<String> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").into_iter();
    cli.get_arguments()
        .chain(serve.flat_map(|serve| serve.get_arguments()))
        .filter(|argument| !argument.is_hide_set())
        .filter_map(|argument| argument.get_env())
        .map(|variable| variable.to_string_lossy().into_owned())
        .collect()
}

/// Whether `error` comes from writing to a pipe whose reader has closed it.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what container runtimes send).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

pub(crate) fn parse_envelope(text: &str) -> Result<(String, Envelope), String> {
    let (topic, envelope) = parse_setting(text)?;
    Ok((topic, envelope.parse()?))
}

pub(crate) fn parse_start(text: &str) -> Result<StartPosition, String> {
    text.parse()
}
