//! `trimatch-bench`: the performance harness, a crate of its own so that the
//! product binary does not carry it.
//!
//! * [`graph`] — the matching graph alone (no Kafka) on N workers, with the
//!   decode-only reference rate from the same run.
//! * [`load`] — end to end against a real broker: preload, sustained ingest at a
//!   rate or flat out, freshness through a Flight subscriber, snapshot latency,
//!   RSS, catch-up replay, and the bare librdkafka consumer's rate as reference.
//! * [`restart`] — a restart from a checkpoint against a full replay, the
//!   checkpoints' write time and size, and their cost to ingest.
//! * [`group_size`] — the latency of one change to a PO line or an
//!   `exception_summary` group holding 100 … 100,000 invoices.
//! * [`payments`] — payments per second through the graph at a 1M-invoice
//!   state, and the latency of one payment for a vendor with 100 … 10,000
//!   open invoices.
//! * [`policies`] — the latency of one vendor-scoped policy change as the
//!   tenant grows, and one preview over a tenant of 100,000 invoices.
//! * [`measure`] — what they measure with: wall-clock time, latency
//!   percentiles, the resident set.
//!
//! Both write a JSON report and print a human summary that names the machine.
//! Benchmarks report; the test suite never times anything.

mod broker;
mod flight_clients;
pub mod graph;
pub mod group_size;
mod kafka_reference;
pub mod load;
pub mod measure;
pub mod operator_profile;
pub mod payments;
pub mod policies;
pub mod restart;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

/// What `trimatch-bench` runs.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// The matching graph alone (no Kafka), with the decode-only reference rate.
    Graph(GraphArgs),
    /// End to end against a broker: replay, sustained ingest, freshness,
    /// snapshot latency, memory, and the bare consumer's rate.
    Load(LoadArgs),
    /// A restart from a checkpoint against a full replay from earliest, the
    /// checkpoint's write time and size, and checkpointing's cost to ingest.
    Restart(RestartArgs),
    /// The latency of one change to a group (a PO line, an
    /// `exception_summary` group) as the group grows.
    GroupSize(GroupSizeArgs),
    /// Payments through the graph at a large invoice state, and the latency
    /// of one payment as its vendor's open invoices grow.
    Payments(PaymentsArgs),
    /// One vendor-scoped policy change as the tenant grows, and one policy
    /// preview over a large tenant.
    Policies(PoliciesArgs),
    /// Decoding alone, one thread: JSON messages to validated documents
    /// (the hot path's first step; also a target for `perf record`).
    Decode(DecodeArgs),
}

/// `trimatch-bench decode`.
#[derive(Args)]
pub struct DecodeArgs {
    /// Messages of the graph benchmark's mix, decoded each round.
    #[arg(long, default_value_t = 400_000)]
    pub documents: usize,
    /// Rounds; the best is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value = "target/bench/decode.json")]
    pub report: PathBuf,
}

/// `trimatch-bench payments`.
#[derive(Args)]
pub struct PaymentsArgs {
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Live invoices to reach before the payments are timed.
    #[arg(long, default_value_t = 1_000_000)]
    pub invoices: usize,
    /// Payments timed through the graph.
    #[arg(long, default_value_t = 200_000)]
    pub payments: usize,
    /// Changes per logical time.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    /// Open invoices of one vendor, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub vendor_sizes: Vec<usize>,
    /// Payments timed per vendor size.
    #[arg(long, default_value_t = 300)]
    pub probes: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print each worker's largest arrangements at the invoice state and its
    /// busiest operators.
    #[arg(long)]
    pub operator_profile: bool,
    #[arg(long, default_value = "target/bench/payments.json")]
    pub report: PathBuf,
}

/// `trimatch-bench policies`.
#[derive(Args)]
pub struct PoliciesArgs {
    /// Tenant sizes (invoices) for the vendor-scoped change, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    pub sizes: Vec<usize>,
    /// Changes timed per size.
    #[arg(long, default_value_t = 50)]
    pub probes: usize,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The tenant size of the preview.
    #[arg(long, default_value_t = 100_000)]
    pub preview_invoices: usize,
    /// Previews timed.
    #[arg(long, default_value_t = 5)]
    pub previews: usize,
    #[arg(long, default_value = "target/bench/policies.json")]
    pub report: PathBuf,
}

/// `trimatch-bench group-size`.
#[derive(Args)]
pub struct GroupSizeArgs {
    /// Group sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000,100000")]
    pub sizes: Vec<usize>,
    /// Changes timed per size and group.
    #[arg(long, default_value_t = 300)]
    pub probes: usize,
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    #[arg(long, default_value = "target/bench/group-size.json")]
    pub report: PathBuf,
}

/// `trimatch-bench restart`.
#[derive(Args)]
pub struct RestartArgs {
    /// Bootstrap servers of a running broker (default: librdkafka's mock
    /// cluster, which keeps only 5 MB per partition: small runs only).
    #[arg(long)]
    pub brokers: Option<String>,
    #[arg(long, default_value = "Kafka-protocol broker")]
    pub broker_name: String,
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Live documents to reach before the restarts.
    #[arg(long, default_value_t = 1_000_000)]
    pub documents: usize,
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
    /// Seconds between checkpoints during the checkpointing replay.
    #[arg(long, default_value_t = 10)]
    pub checkpoint_interval: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value = "target/bench/restart.json")]
    pub report: PathBuf,
}

/// `trimatch-bench load`.
#[derive(Args)]
pub struct LoadArgs {
    /// Bootstrap servers of a running broker (default: an in-process mock cluster).
    #[arg(long)]
    pub brokers: Option<String>,
    /// What that broker is, for the report.
    #[arg(long, default_value = "Kafka-protocol broker")]
    pub broker_name: String,
    /// Partitions per input topic (created fresh for each run).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Timely worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Messages produced before the pipeline starts (replayed from earliest).
    #[arg(long, default_value_t = 200_000)]
    pub preload: usize,
    /// Messages/s during the sustained phase; 0 is flat out.
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Seconds the sustained phase produces for.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
    /// Share of messages that change a tenant's match policy. Each change
    /// re-evaluates every invoice of its tenant (SPEC §2), in one step.
    #[arg(long, default_value_t = 0.0001)]
    pub policy_share: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/load.json")]
    pub report: PathBuf,
}

/// `trimatch-bench graph`.
#[derive(Args)]
pub struct GraphArgs {
    /// Timely worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Document changes applied before timing starts.
    #[arg(long, default_value_t = 100_000)]
    pub preload: usize,
    /// Document changes timed.
    #[arg(long, default_value_t = 300_000)]
    pub changes: usize,
    /// Changes per logical time.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print each worker's largest arrangements after the preload and its
    /// busiest operators.
    #[arg(long)]
    pub operator_profile: bool,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/graph.json")]
    pub report: PathBuf,
}

/// Runs a benchmark, prints its summary, and writes its JSON report.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let machine = Machine::current();
    match command {
        BenchCommand::Graph(args) => {
            let report = graph::run(&graph::GraphBenchConfig {
                workers: args.workers,
                preload: args.preload,
                changes: args.changes,
                batch: args.batch,
                seed: args.seed,
                operator_profile: args.operator_profile,
            });
            finish(&machine, &graph::summary(&report), &args.report, &report)
        }
        BenchCommand::Load(args) => {
            let report = load::run(&load::LoadConfig {
                brokers: args.brokers,
                broker_name: args.broker_name,
                partitions: args.partitions,
                workers: args.workers,
                preload: args.preload,
                rate: (args.rate > 0.0).then_some(args.rate),
                duration: std::time::Duration::from_secs_f64(args.duration),
                tenants: args.tenants,
                policy_share: args.policy_share,
                seed: args.seed,
            })?;
            finish(&machine, &load::summary(&report), &args.report, &report)
        }
        BenchCommand::Restart(args) => {
            let report = restart::run(&restart::RestartConfig {
                brokers: args.brokers,
                broker_name: args.broker_name,
                partitions: args.partitions,
                workers: args.workers,
                documents: args.documents,
                tenants: args.tenants,
                checkpoint_interval: std::time::Duration::from_secs(args.checkpoint_interval),
                seed: args.seed,
            })?;
            finish(&machine, &restart::summary(&report), &args.report, &report)
        }
        BenchCommand::Decode(args) => {
            let report = graph::decode_bench(args.seed, args.documents, args.rounds);
            let summary = vec![format!(
                "decode-only: {:.0} documents/s, {:.0} MB/s of JSON (1 thread, best of {} rounds of {})",
                report.documents_per_second, report.megabytes_per_second, args.rounds, args.documents
            )];
            finish(&machine, &summary, &args.report, &report)
        }
        BenchCommand::Payments(args) => {
            let report = payments::run(&payments::PaymentsBenchConfig {
                workers: args.workers,
                invoices: args.invoices,
                payments: args.payments,
                batch: args.batch,
                vendor_sizes: args.vendor_sizes,
                probes: args.probes,
                seed: args.seed,
                operator_profile: args.operator_profile,
            });
            finish(&machine, &payments::summary(&report), &args.report, &report)
        }
        BenchCommand::Policies(args) => {
            let report = policies::run(&policies::PolicyBenchConfig {
                sizes: args.sizes,
                probes: args.probes,
                workers: args.workers,
                preview_invoices: args.preview_invoices,
                previews: args.previews,
            });
            finish(&machine, &policies::summary(&report), &args.report, &report)
        }
        BenchCommand::GroupSize(args) => {
            let report = group_size::run(&group_size::GroupSizeConfig {
                sizes: args.sizes,
                probes: args.probes,
                workers: args.workers,
            });
            finish(
                &machine,
                &group_size::summary(&report),
                &args.report,
                &report,
            )
        }
    }
}

/// Prints the machine and a report's summary, and writes the JSON report.
fn finish(
    machine: &Machine,
    summary: &[String],
    path: &std::path::Path,
    report: &impl Serialize,
) -> anyhow::Result<()> {
    println!("machine: {}", machine.describe());
    for line in summary {
        println!("{line}");
    }
    write_report(path, machine, report)
}

/// Writes `{"machine": …, "report": …}` as pretty JSON, creating the directory.
fn write_report(
    path: &std::path::Path,
    machine: &Machine,
    report: &impl Serialize,
) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let json = serde_json::json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "machine": machine,
        "report": report,
    });
    std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("report: {}", path.display());
    Ok(())
}

/// The machine a report came from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub os: String,
}

impl Machine {
    /// Reads the machine's facts (Linux `/proc`; "unknown" elsewhere).
    pub fn current() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os: std::env::consts::OS.to_string(),
        }
    }

    /// One line for a summary.
    pub fn describe(&self) -> String {
        format!(
            "{} cores, {}, {} GiB, {}",
            self.cores, self.cpu_model, self.memory_gib, self.os
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_described() {
        let machine = Machine::current();
        assert!(machine.cores >= 1);
        assert!(machine.describe().contains("cores"));
    }
}
