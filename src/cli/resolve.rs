//! `trimatch resolve`: records an analyst's decision on an exception (SPEC §6)
//! on the resolutions topic, waits until the running trimatch reflects it,
//! and prints what it made of the exception and the invoice's new status.
//!
//! The decision is checked by the pipeline's own decoder before it is sent,
//! so a mistyped exception type or timestamp is refused here with the reason
//! the pipeline would dead-letter it for.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt32Type;
use arrow_flight::Ticket;
use clap::Args;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Map, Value};
use trimatch_dataflows::decode::{decode_document, identity_fields, json_object};
use trimatch_dataflows::model::{DocumentKind, ExceptionType};

use super::client::{read_ticket, ticket};
use super::connection::Connection;
use super::serve::TopicArgs;
use crate::output::{AS_OF_KEY, OFFSETS_KEY};

#[derive(Args)]
#[command(group = clap::ArgGroup::new("decision").required(true).args(["accept", "reject", "withdraw"]))]
pub struct ResolveArgs {
    /// Accept the exception TYPE of invoice INVOICE: it no longer blocks it.
    #[arg(long, num_args = 2, value_names = ["INVOICE", "TYPE"])]
    accept: Option<Vec<String>>,
    /// Reject it (confirmed, or disputed with the vendor): it stays open.
    #[arg(long, num_args = 2, value_names = ["INVOICE", "TYPE"])]
    reject: Option<Vec<String>>,
    /// Withdraw the decision on it: it is open again.
    #[arg(long, num_args = 2, value_names = ["INVOICE", "TYPE"])]
    withdraw: Option<Vec<String>>,
    /// The PO line of a line exception (PRICE_VARIANCE, RECEIPT_MISSING, …).
    #[arg(long, value_name = "N")]
    line: Option<u32>,
    /// The invoice's tenant.
    #[arg(long, env = "TRIMATCH_TENANT")]
    tenant: String,
    /// Who decides (recorded as resolved_by).
    #[arg(long, env = "TRIMATCH_ANALYST", required_unless_present = "withdraw")]
    by: Option<String>,
    /// Why (recorded as resolution_reason).
    #[arg(long)]
    reason: Option<String>,
    /// Accept only this value of the exception's `actual` (what the analyst
    /// saw): if the variance has moved since, the acceptance lapses.
    #[arg(long, value_name = "DECIMAL")]
    actual: Option<String>,
    /// How long to wait for trimatch to reflect the decision.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    timeout: f64,
    #[command(flatten)]
    topics: TopicArgs,
    #[command(flatten)]
    connection: Connection,
}

/// The message key: the identity fields in SPEC order, so that every
/// version of one decision this command writes hashes to one partition.
fn identity_key(tenant: &str, invoice: &str, exception_type: &str, line: Option<u32>) -> String {
    format!(
        "{{\"tenant_id\":{},\"invoice_id\":{},\"exception_type\":{},\"po_line_no\":{}}}",
        json!(tenant),
        json!(invoice),
        json!(exception_type),
        json!(line)
    )
}

/// The decision, as the resolutions topic carries it.
struct Decision {
    invoice_id: String,
    exception_type: String,
    /// The message key (see [`identity_key`]).
    key: String,
    /// `None` withdraws the decision (a tombstone).
    value: Option<Value>,
}

impl ResolveArgs {
    fn decision(&self) -> Result<Decision> {
        let (decision, target) = match (&self.accept, &self.reject, &self.withdraw) {
            (Some(target), _, _) => (Some("accept"), target),
            (_, Some(target), _) => (Some("reject"), target),
            (_, _, Some(target)) => (None, target),
            _ => bail!("give --accept, --reject or --withdraw"),
        };
        let [invoice_id, exception_type] = target.as_slice() else {
            bail!("name the exception as INVOICE TYPE");
        };
        // A line type needs its line and a header type has none: such a
        // decision could never meet an exception.
        if let Some(known) = ExceptionType::from_name(exception_type) {
            match (known.is_line_level(), self.line) {
                (true, None) => bail!("{exception_type} is a line exception: give --line N"),
                (false, Some(_)) => {
                    bail!("{exception_type} is a header exception: it has no --line")
                }
                _ => {}
            }
        }
        let key = identity_key(&self.tenant, invoice_id, exception_type, self.line);
        let value = decision.map(|decision| {
            let mut value = json!({"tenant_id": self.tenant, "invoice_id": invoice_id,
                                   "exception_type": exception_type, "po_line_no": self.line});
            value["decision"] = json!(decision);
            value["resolved_by"] = json!(self.by);
            value["resolved_at"] =
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            if let Some(reason) = &self.reason {
                value["reason"] = json!(reason);
            }
            if let Some(actual) = &self.actual {
                value["actual"] = json!(actual);
            }
            value
        });
        // The pipeline's own checks, before anything is sent: of the
        // document, or of a tombstone's key.
        let kind = DocumentKind::ExceptionResolution;
        let checked = match &value {
            Some(value) => decode_document(kind, value.to_string().as_bytes()).map(drop),
            None => json_object(key.as_bytes(), "key")
                .and_then(|object| identity_fields(kind, &object, "key"))
                .map(drop),
        };
        checked.map_err(|error| anyhow!("the decision would be rejected: {error}"))?;
        Ok(Decision {
            invoice_id: invoice_id.clone(),
            exception_type: exception_type.clone(),
            key,
            value,
        })
    }
}

pub fn run(args: ResolveArgs) -> Result<()> {
    let decision = args.decision()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (partition, offset) = produce(&args, &decision).await?;
        let topic = &args.topics.resolution_topic;
        eprintln!("sent to {topic}/{partition} at offset {offset}; waiting for trimatch to reflect it");
        let timeout = Duration::try_from_secs_f64(args.timeout)
            .map_err(|_| anyhow!("--timeout must be a number of seconds, not {}", args.timeout))?;
        let deadline = Instant::now() + timeout;
        let mut client = args.connection.connect().await?;
        loop {
            let invoice = ticket(
                "collection",
                "invoice_matches",
                &[
                    ("tenant_id".into(), args.tenant.clone()),
                    ("invoice_id".into(), decision.invoice_id.clone()),
                ],
                Map::new(),
            );
            let (schema, batches) = read_ticket(&mut client, Ticket::new(invoice)).await?;
            if reflects(schema.metadata(), topic, partition, offset)? {
                let as_of = schema.metadata().get(AS_OF_KEY).cloned().unwrap_or_default();
                let resolution = exception_resolution(&mut client, &args, &decision, &as_of).await?;
                println!("{}", outcome(&decision, &args, &batches, resolution));
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "trimatch at {} has not reflected {topic}/{partition} offset {offset} after {}s \
                     (is it reading that topic? `trimatch query source_progress` shows how far it is)",
                    args.connection.flight_addr,
                    args.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Produces the decision, keyed by its identity; its partition and offset.
async fn produce(args: &ResolveArgs, decision: &Decision) -> Result<(i32, i64)> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.topics.brokers);
    for (key, value) in &args.topics.client_settings {
        config.set(key, value);
    }
    let producer: FutureProducer = config.create().context("cannot create a Kafka producer")?;
    let value = decision.value.as_ref().map(Value::to_string);
    let mut record = FutureRecord::to(&args.topics.resolution_topic).key(&decision.key);
    if let Some(value) = &value {
        record = record.payload(value);
    }
    let delivery = producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(error, _)| error)
        .with_context(|| {
            format!(
                "cannot produce to {} at {}",
                args.topics.resolution_topic, args.topics.brokers
            )
        })?;
    Ok((delivery.partition, delivery.offset))
}

/// Whether a snapshot's offsets are past `offset` of `topic/partition`.
fn reflects(
    metadata: &std::collections::HashMap<String, String>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<bool> {
    let offsets: Value = serde_json::from_str(
        metadata
            .get(OFFSETS_KEY)
            .context("the server sent no trimatch.offsets")?,
    )?;
    Ok(offsets
        .get(format!("{topic}/{partition}"))
        .and_then(Value::as_i64)
        .is_some_and(|next| next > offset))
}

/// The exception's `resolution` and `resolved_by` as of `as_of`, or `None`
/// if no such exception is raised.
async fn exception_resolution(
    client: &mut arrow_flight::FlightClient,
    args: &ResolveArgs,
    decision: &Decision,
    as_of: &str,
) -> Result<Option<(Option<String>, Option<String>)>> {
    let mut filters = vec![
        ("tenant_id".to_string(), args.tenant.clone()),
        ("invoice_id".to_string(), decision.invoice_id.clone()),
        (
            "exception_type".to_string(),
            decision.exception_type.clone(),
        ),
    ];
    filters.push((
        "po_line_no".to_string(),
        args.line
            .map_or("null".to_string(), |line| line.to_string()),
    ));
    let mut extra = Map::new();
    if let Ok(as_of) = as_of.parse::<u64>() {
        extra.insert("as_of".to_string(), as_of.into());
    }
    let exception = ticket("collection", "match_exceptions", &filters, extra);
    let (_, batches) = read_ticket(client, Ticket::new(exception)).await?;
    let text = |batch: &arrow::record_batch::RecordBatch, column: &str| {
        let array = batch.column_by_name(column)?.as_string::<i32>();
        (!array.is_null(0)).then(|| array.value(0).to_string())
    };
    Ok(batches
        .iter()
        .find(|batch| batch.num_rows() > 0)
        .map(|batch| (text(batch, "resolution"), text(batch, "resolved_by"))))
}

/// What to tell the analyst.
fn outcome(
    decision: &Decision,
    args: &ResolveArgs,
    invoice: &[arrow::record_batch::RecordBatch],
    resolution: Option<(Option<String>, Option<String>)>,
) -> String {
    let line = args
        .line
        .map(|line| format!(" line {line}"))
        .unwrap_or_default();
    let exception = format!("{} {}{line}", decision.invoice_id, decision.exception_type);
    let withdrawn = decision.value.is_none();
    let exception = match resolution {
        None if withdrawn => format!("{exception}: not raised"),
        None => format!("{exception}: not raised; the decision applies when it is"),
        Some((None, _)) => format!("{exception}: open, no decision"),
        Some((Some(resolution), by)) if resolution == "lapsed" => format!(
            "{exception}: lapsed — accepted by {} for another actual than the \
             exception's now; it is open again",
            by.unwrap_or_default()
        ),
        Some((Some(resolution), by)) => {
            format!("{exception}: {resolution} by {}", by.unwrap_or_default())
        }
    };
    let status = invoice
        .iter()
        .find(|batch| batch.num_rows() > 0)
        .map(|batch| {
            let status = batch
                .column_by_name("status")
                .map(|column| column.as_string::<i32>().value(0).to_string())
                .unwrap_or_default();
            let count = |name: &str| {
                batch
                    .column_by_name(name)
                    .map(|column| column.as_primitive::<UInt32Type>().value(0))
                    .unwrap_or_default()
            };
            format!(
                "invoice {} is {status} ({} open blocking, {} accepted)",
                decision.invoice_id,
                count("blocking_count"),
                count("accepted_count")
            )
        });
    match status {
        Some(status) => format!("{exception}\n{status}"),
        None => format!(
            "{exception}\ninvoice {} is not present",
            decision.invoice_id
        ),
    }
}
