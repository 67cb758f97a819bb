//! A two-process cluster of `trimatch serve` on loopback for the cluster
//! tests (`tests/cluster.rs`, `tests/cluster_preview.rs`): its plan
//! (addresses, hostfile, arguments), the running processes, and snapshot
//! reads from either process.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use arrow::array::{Array, AsArray};
use arrow::record_batch::RecordBatch;
use arrow_flight::Ticket;
use futures::StreamExt;

use super::{free_addr, KillOnDrop};

/// Two `trimatch serve` processes of one cluster, 2 workers each, killed when
/// dropped; process `i` reads from `brokers[i]`.
pub struct Cluster {
    pub flights: [String; 2],
    pub metrics: [String; 2],
    pub processes: Vec<KillOnDrop>,
    pub _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(brokers: [&str; 2]) -> Cluster {
        Cluster::start_with(brokers, tempfile::tempdir().unwrap(), &[])
    }

    /// A cluster whose processes also get `args` (`{process}` in them is the
    /// process id); `dir` holds its files.
    pub fn start_with(brokers: [&str; 2], dir: tempfile::TempDir, args: &[String]) -> Cluster {
        let plan = ClusterPlan::new(dir.path(), args);
        let processes = (0..2)
            .map(|process| {
                KillOnDrop::new(plan.command(process, brokers[process]).spawn().unwrap())
            })
            .collect();
        Cluster {
            flights: plan.flights,
            metrics: plan.metrics,
            processes,
            _dir: dir,
        }
    }
}

/// The addresses and arguments of a two-process cluster, before any of it
/// runs.
pub struct ClusterPlan {
    pub hostfile: std::path::PathBuf,
    /// Each process's cluster (timely) address.
    pub addresses: [String; 2],
    pub flights: [String; 2],
    pub metrics: [String; 2],
    /// Each process's `--workers` (2 unless a test starts one differently).
    pub workers: [usize; 2],
    pub args: Vec<String>,
}

impl ClusterPlan {
    pub fn new(dir: &std::path::Path, args: &[String]) -> ClusterPlan {
        let hostfile = dir.join("hosts");
        let addresses = [free_addr(), free_addr()];
        std::fs::write(&hostfile, format!("{}\n{}\n", addresses[0], addresses[1])).unwrap();
        ClusterPlan {
            hostfile,
            addresses,
            flights: [free_addr(), free_addr()],
            metrics: [free_addr(), free_addr()],
            workers: [2, 2],
            args: args.to_vec(),
        }
    }

    /// `trimatch serve` as process `process`, reading from `brokers`, its
    /// standard error piped.
    pub fn command(&self, process: usize, brokers: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_trimatch"));
        command
            .args(["serve", "--brokers", brokers])
            .args(["--workers", &self.workers[process].to_string()])
            .args(["--processes", "2", "--process-id", &process.to_string()])
            .args(["--hostfile", self.hostfile.to_str().unwrap()])
            .args(["--flight-peers", &self.flights.join(",")])
            .args([
                "--flight-addr",
                &self.flights[process],
                "--metrics-addr",
                &self.metrics[process],
            ])
            .args(
                self.args
                    .iter()
                    .map(|arg| arg.replace("{process}", &process.to_string())),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }
}

/// A snapshot from one process: its rows as (key columns joined) and its as_of.
pub async fn read(flight: &str, ticket: serde_json::Value) -> (BTreeSet<String>, usize, u64) {
    read_as(trimatch::cli::connection::Connection::plain(flight), ticket)
        .await
        .unwrap()
}

/// A snapshot through `connection`, or the refusal.
pub async fn read_as(
    connection: trimatch::cli::connection::Connection,
    ticket: serde_json::Value,
) -> Result<(BTreeSet<String>, usize, u64), tonic::Status> {
    let mut client = connection.connect().await.unwrap();
    let status = |error| match error {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    };
    let mut stream = client
        .do_get(Ticket::new(match ticket {
            serde_json::Value::String(name) => name,
            other => other.to_string(),
        }))
        .await
        .map_err(status)?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.map_err(status)?);
    }
    let as_of = stream.schema().unwrap().metadata()["trimatch.as_of"]
        .parse()
        .unwrap();
    let mut rows = BTreeSet::new();
    let mut count = 0;
    for batch in &batches {
        for index in 0..batch.num_rows() {
            count += 1;
            let mut key = Vec::new();
            for column in batch.columns() {
                key.push(match column.data_type() {
                    arrow::datatypes::DataType::Utf8 => {
                        let strings = column.as_string::<i32>();
                        if strings.is_null(index) {
                            "null".to_string()
                        } else {
                            strings.value(index).to_string()
                        }
                    }
                    _ => format!("{:?}", column.slice(index, 1)),
                });
            }
            rows.insert(key.join("|"));
        }
    }
    Ok((rows, count, as_of))
}
