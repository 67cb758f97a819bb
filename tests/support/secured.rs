//! Support for the security tests: a `trimatch serve` process with the
//! options a test gives (waited for until ready, over TLS if asked), tokens
//! issued through the CLI, Flight clients with credentials, and reads whose
//! rows compare regardless of order.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_flight::decode::DecodedPayload;
use arrow_flight::{FlightClient, Ticket};
use futures::StreamExt;
use serde_json::Value;
use trimatch::cli::connection::Connection;
use trimatch_workload::{Workload, WorkloadConfig};

use super::{create_input_topics, free_addr, produce, wait_for, KillOnDrop, Tansu};

pub const TENANTS: usize = 5;

/// A broker with a produced history of `TENANTS` tenants.
pub fn broker_with_history(seed: u64) -> Tansu {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 1, 2, 1, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed,
        tenants: TENANTS,
        bad_share: 0.02,
        ..WorkloadConfig::default()
    })
    .take(1_500)
    .collect();
    produce(&broker.address, &messages);
    broker
}

/// A running `trimatch serve`, its addresses, and where its log goes.
pub struct Served {
    pub process: KillOnDrop,
    pub flight: String,
    pub metrics: String,
    pub log: PathBuf,
}

/// Starts `trimatch serve` against `broker` with `args`, and waits until it
/// is ready (asked over loopback, where the metrics need no token).
pub fn serve(broker: &Tansu, dir: &Path, args: &[&str], tls_ca: Option<&Path>) -> Served {
    let (flight, metrics) = (free_addr(), free_addr());
    let log = dir.join(format!("serve-{}.log", flight.replace([':', '.'], "-")));
    let process = Command::new(env!("CARGO_BIN_EXE_trimatch"))
        .args(["serve", "--brokers", &broker.address, "--workers", "2"])
        .args(["--flight-addr", &flight, "--metrics-addr", &metrics])
        .args(args)
        .env("TRIMATCH_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let process = KillOnDrop::new(process);
    let scheme = if tls_ca.is_some() { "https" } else { "http" };
    wait_for("readiness", Duration::from_secs(60), || {
        let mut health = Command::new(env!("CARGO_BIN_EXE_trimatch"));
        health.args([
            "health",
            "--url",
            &format!("{scheme}://localhost:{}/readyz", port_of(&metrics)),
        ]);
        if let Some(ca) = tls_ca {
            health.args(["--tls-ca", ca.to_str().unwrap()]);
        }
        health.output().is_ok_and(|output| output.status.success())
    });
    Served {
        process,
        flight,
        metrics,
        log,
    }
}

pub fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

/// Adds a token to the file and returns it (through the CLI, as an operator does).
pub fn add_token(file: &Path, name: &str, role: &str, tenants: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_trimatch"))
        .args(["auth", "add-token", "--file", file.to_str().unwrap()])
        .args(["--name", name, "--role", role, "--tenants", tenants])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

pub fn connection(served: &Served, token: Option<&str>) -> Connection {
    let mut connection = Connection::plain(&served.flight);
    connection.token = token.map(str::to_string);
    connection
}

pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// The rows of `batches` as text cells, sorted (an order-free comparison).
pub fn rows_of(batches: &[RecordBatch], skip: &[&str]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("∅");
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<usize> = (0..batch.num_columns())
            .filter(|index| !skip.contains(&batch.schema().field(*index).name().as_str()))
            .collect();
        // Timestamps as epoch numbers: the formatter knows no named time zones.
        let arrays: Vec<_> = columns
            .iter()
            .map(|index| match batch.column(*index).data_type() {
                DataType::Timestamp(_, _) => cast(batch.column(*index), &DataType::Int64).unwrap(),
                _ => batch.column(*index).clone(),
            })
            .collect();
        let formatters: Vec<_> = arrays
            .iter()
            .map(|array| ArrayFormatter::try_new(array.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|formatter| formatter.value(row).to_string())
                    .collect(),
            );
        }
    }
    rows.sort();
    rows
}

/// A snapshot's rows and `trimatch.as_of`, or the gRPC status.
pub async fn snapshot(
    client: &mut FlightClient,
    ticket: &Value,
) -> Result<(Vec<Vec<String>>, u64), tonic::Status> {
    let mut stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .map_err(status_of)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.map_err(status_of)?);
    }
    let as_of = stream
        .schema()
        .and_then(|schema| schema.metadata().get("trimatch.as_of").cloned());
    Ok((
        rows_of(&batches, &[]),
        as_of.and_then(|time| time.parse().ok()).unwrap_or(0),
    ))
}

/// A subscription's snapshot (the rows before its first progress message).
pub async fn subscription_snapshot(
    client: &mut FlightClient,
    ticket: &Value,
) -> Result<Vec<Vec<String>>, tonic::Status> {
    let stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .map_err(status_of)?;
    let mut messages = stream.into_inner();
    let mut batches = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.map_err(status_of)?;
        if let DecodedPayload::RecordBatch(batch) = message.payload {
            if batch.num_rows() == 0 {
                break;
            }
            batches.push(batch);
        }
    }
    Ok(rows_of(&batches, &["_time", "_diff"]))
}

pub fn status_of(error: arrow_flight::error::FlightError) -> tonic::Status {
    match error {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    }
}
