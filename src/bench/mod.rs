//! `trimatch bench`: the performance harness of issue 6.
//!
//! * [`graph`] — the matching graph alone (no Kafka) on N workers, with the
//!   decode-only reference rate from the same run.
//! * [`load`] — end to end against a real broker: preload, sustained ingest at a
//!   rate or flat out, freshness through a Flight subscriber, snapshot latency,
//!   RSS, catch-up replay, and the bare librdkafka consumer's rate as reference.
//!
//! Both write a JSON report and print a human summary that names the machine.
//! Benchmarks report; the test suite never times anything.

pub mod graph;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

/// What `trimatch bench` runs.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// The matching graph alone (no Kafka), with the decode-only reference rate.
    Graph(GraphArgs),
}

/// `trimatch bench graph`.
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
            });
            println!("machine: {}", machine.describe());
            println!(
                "graph: {:.0} document changes/s on {} worker(s) over {} live documents \
                 ({} changes in batches of {}, {:.2} s)",
                report.changes_per_second,
                report.config.workers,
                report.live_documents,
                report.config.changes,
                report.config.batch,
                report.seconds
            );
            println!(
                "decode-only reference: {:.0} documents/s (1 thread); graph / decode = {:.2}",
                report.decode_per_second, report.ratio_to_decode
            );
            write_report(&args.report, &machine, &report)
        }
    }
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

/// This process's resident set size and its peak, in bytes (Linux `/proc/self/status`).
pub fn resident_set() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Percentile `p` (0–100) of `sorted` values, nearest rank; `None` if empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_machine_is_described() {
        let machine = Machine::current();
        assert!(machine.cores >= 1);
        assert!(machine.describe().contains("cores"));
    }
}
