//! The Flight clients of the load harness: a subscriber that times new
//! invoices from their Kafka timestamp to their row, and a loop of one-tenant
//! snapshots that times each DoGet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray};
use arrow_flight::decode::DecodedPayload;
use arrow_flight::Ticket;
use futures::StreamExt;

use super::measure::wall_clock_ms;

/// New invoices sent and not yet seen by the subscriber: (tenant, invoice_id)
/// → Kafka timestamp (ms).
pub(crate) type Awaited = Arc<Mutex<HashMap<(String, String), i64>>>;

/// Connects to the Flight service, retrying while it starts.
async fn connect(addr: SocketAddr) -> Result<arrow_flight::FlightClient> {
    let started = Instant::now();
    loop {
        match trimatch::cli::connection::Connection::plain(&addr.to_string())
            .connect()
            .await
        {
            Ok(client) => return Ok(client),
            Err(error) if started.elapsed() > Duration::from_secs(10) => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Subscribes to `invoice_matches`' changes after `as_of` and, for each
/// inserted row of an awaited invoice, records now − its Kafka timestamp.
pub async fn subscribe_invoices(
    addr: SocketAddr,
    as_of: trimatch_dataflows::Time,
    awaited: Awaited,
    freshness: Arc<Mutex<Vec<f64>>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut client = connect(addr).await?;
    let ticket =
        serde_json::json!({"subscribe": "invoice_matches", "snapshot": false, "as_of": as_of});
    let mut stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await?
        .into_inner();
    while !stop.load(Ordering::SeqCst) {
        let next = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        let message = match next {
            Err(_) => continue,
            Ok(None) => bail!("the subscription ended"),
            Ok(Some(message)) => message?,
        };
        let DecodedPayload::RecordBatch(batch) = message.payload else {
            continue;
        };
        if batch.num_rows() == 0 {
            continue; // progress
        }
        let seen = wall_clock_ms();
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("no {name} column in a subscription batch"))
        };
        let tenants = column("tenant_id")?.as_string::<i32>().clone();
        let invoices = column("invoice_id")?.as_string::<i32>().clone();
        let diffs = column(trimatch::output::columns::DIFF_COLUMN)?
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        let mut awaited = awaited.lock().expect("awaited lock");
        let mut freshness = freshness.lock().expect("freshness lock");
        for row in 0..batch.num_rows() {
            if diffs.value(row) <= 0 || tenants.is_null(row) || invoices.is_null(row) {
                continue;
            }
            let identity = (
                tenants.value(row).to_string(),
                invoices.value(row).to_string(),
            );
            if let Some(sent) = awaited.remove(&identity) {
                freshness.push(seen - sent as f64);
            }
        }
    }
    Ok(())
}

/// Takes one-tenant `match_exceptions` snapshots back to back (with a short
/// pause) until stopped; returns each one's latency in ms and the mean row count.
pub async fn snapshot_loop(
    addr: SocketAddr,
    tenant: String,
    stop: Arc<AtomicBool>,
) -> Result<(Vec<f64>, f64)> {
    let mut client = connect(addr).await?;
    let ticket = serde_json::json!({
        "collection": "match_exceptions",
        "filter": {"tenant_id": tenant},
    })
    .to_string();
    let (mut latencies, mut rows) = (Vec::new(), 0usize);
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let mut stream = client
            .do_get(Ticket::new(ticket.clone()))
            .await?
            .into_inner();
        while let Some(message) = stream.next().await {
            if let DecodedPayload::RecordBatch(batch) = message?.payload {
                rows += batch.num_rows();
            }
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mean_rows = rows as f64 / latencies.len().max(1) as f64;
    Ok((latencies, mean_rows))
}
