//! The command-line Flight clients: `trimatch query` prints a snapshot as an
//! aligned table, CSV or JSON lines; `trimatch subscribe` prints changes as
//! they arrive, with the progress time, so a person can watch exceptions
//! appear and clear.

use std::io::Write;

use anyhow::{bail, Result};
use arrow_flight::decode::DecodedPayload;
use arrow_flight::Ticket;
use clap::Args;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use trimatch_dataflows::OutputCollection;

use super::connection::Connection;
use super::parse_setting;
use super::print::{
    csv_field, json_rows, numeric_columns, readable_time, rows_as_text, sort_by_key, write_rows,
    write_table,
};
use crate::output::AS_OF_KEY;

#[derive(Args)]
pub struct QueryArgs {
    /// The collection: invoice_matches, match_exceptions, po_lines, exception_summary, po_suggestions, payment_matches, payment_exceptions, payment_suggestions, dead_letters, source_progress.
    collection: String,
    /// Equality filter COLUMN=VALUE (repeatable; they AND together).
    #[arg(long = "filter", value_name = "COLUMN=VALUE", value_parser = parse_setting)]
    filters: Vec<(String, String)>,
    /// The logical time to read at (default: the newest complete time).
    #[arg(long)]
    as_of: Option<u64>,
    /// At most this many rows.
    #[arg(long)]
    limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Args)]
pub struct SubscribeArgs {
    /// The collection to watch.
    collection: String,
    /// Equality filter COLUMN=VALUE (repeatable).
    #[arg(long = "filter", value_name = "COLUMN=VALUE", value_parser = parse_setting)]
    filters: Vec<(String, String)>,
    /// Resume from this progress time (no snapshot): every change at or after it.
    #[arg(long)]
    from: Option<u64>,
    #[command(flatten)]
    connection: Connection,
}

/// `trimatch query`: one snapshot, printed.
pub fn query(args: QueryArgs) -> Result<()> {
    let mut extra = serde_json::Map::new();
    if let Some(as_of) = args.as_of {
        extra.insert("as_of".to_string(), as_of.into());
    }
    if let Some(limit) = args.limit {
        extra.insert("limit".to_string(), limit.into());
    }
    let ticket = ticket("collection", &args.collection, &args.filters, extra);
    let runtime = tokio::runtime::Runtime::new()?;
    let mut stdout = std::io::stdout().lock();
    let key_columns = OutputCollection::from_name(&args.collection)
        .map(|collection| collection.key_columns())
        .unwrap_or_default();
    runtime.block_on(print_snapshot(
        &args.connection,
        ticket,
        args.format,
        key_columns,
        &mut stdout,
    ))?;
    Ok(())
}

/// `trimatch subscribe`: changes as they happen, printed until interrupted.
pub fn subscribe(args: SubscribeArgs) -> Result<()> {
    let mut extra = serde_json::Map::new();
    if let Some(from) = args.from {
        extra.insert("snapshot".to_string(), false.into());
        extra.insert("as_of".to_string(), from.into());
    }
    let ticket = ticket("subscribe", &args.collection, &args.filters, extra);
    let runtime = tokio::runtime::Runtime::new()?;
    let mut stdout = std::io::stdout().lock();
    runtime.block_on(print_changes(&args.connection, ticket, &mut stdout))
}

/// How `query` prints rows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line; decimals as exact strings.
    Json,
}

/// A JSON ticket from the CLI's options.
pub fn ticket(
    field: &str,
    collection: &str,
    filters: &[(String, String)],
    extra: Map<String, Value>,
) -> Vec<u8> {
    let mut ticket = Map::new();
    ticket.insert(field.to_string(), json!(collection));
    if !filters.is_empty() {
        let filter: Map<String, Value> = filters
            .iter()
            .map(|(column, value)| (column.clone(), filter_value(value)))
            .collect();
        ticket.insert("filter".to_string(), Value::Object(filter));
    }
    ticket.extend(extra);
    Value::Object(ticket).to_string().into_bytes()
}

/// `null` is null; anything else is sent as a string, which the server
/// parses per column type — so an id that looks like a number (`9001`)
/// still matches a text column.
fn filter_value(text: &str) -> Value {
    if text == "null" {
        return Value::Null;
    }
    json!(text)
}

/// Reads a snapshot and prints it sorted by `key_columns` (every format, so
/// that two reads of one state print the same lines); returns how many rows
/// it had.
pub async fn print_snapshot(
    connection: &Connection,
    ticket: Vec<u8>,
    format: Format,
    key_columns: &[&str],
    out: &mut impl Write,
) -> Result<usize> {
    let mut client = connection.connect().await?;
    let (schema, batches) = read_ticket(&mut client, Ticket::new(ticket)).await?;
    print_batches(&schema, &batches, format, key_columns, out)
}

/// DoGet of `ticket`: the schema the server sent and every record batch.
pub async fn read_ticket(
    client: &mut arrow_flight::FlightClient,
    ticket: Ticket,
) -> Result<(
    arrow::datatypes::SchemaRef,
    Vec<arrow::record_batch::RecordBatch>,
)> {
    let mut stream = client.do_get(ticket).await.map_err(flight_error)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.map_err(flight_error)?);
    }
    let Some(schema) = stream.schema().cloned() else {
        bail!("the server sent no schema");
    };
    Ok((schema, batches))
}

/// Prints record batches sorted by `key_columns` (every format, so that two
/// reads of one state print the same lines), with the `trimatch.as_of` of
/// `schema`; returns how many rows there were.
pub fn print_batches(
    schema: &arrow::datatypes::Schema,
    batches: &[arrow::record_batch::RecordBatch],
    format: Format,
    key_columns: &[&str],
    out: &mut impl Write,
) -> Result<usize> {
    let as_of = schema
        .metadata()
        .get(AS_OF_KEY)
        .cloned()
        .unwrap_or_default();
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    let mut rows = rows_as_text(batches)?;
    let key: Vec<usize> = key_columns
        .iter()
        .filter_map(|name| columns.iter().position(|column| column == name))
        .collect();
    let numeric = numeric_columns(batches);
    sort_by_key(&mut rows, &key, &numeric);
    match format {
        Format::Table => {
            write_table(out, &columns, &rows, &numeric)?;
            writeln!(
                out,
                "({} rows as of {as_of}{})",
                rows.len(),
                readable_suffix(&as_of)
            )?;
        }
        Format::Csv => {
            writeln!(
                out,
                "{}",
                columns
                    .iter()
                    .map(|c| csv_field(c))
                    .collect::<Vec<_>>()
                    .join(",")
            )?;
            for row in &rows {
                let fields: Vec<String> = row
                    .iter()
                    .map(|cell| csv_field(cell.as_deref().unwrap_or("")))
                    .collect();
                writeln!(out, "{}", fields.join(","))?;
            }
        }
        Format::Json => {
            for row in json_rows(schema, &rows) {
                writeln!(out, "{row}")?;
            }
        }
    }
    Ok(rows.len())
}

/// Subscribes and prints every change and progress time until the server
/// ends the stream.
pub async fn print_changes(
    connection: &Connection,
    ticket: Vec<u8>,
    out: &mut impl Write,
) -> Result<()> {
    let mut client = connection.connect().await?;
    let stream = client
        .do_get(Ticket::new(ticket))
        .await
        .map_err(flight_error)?;
    let mut decoder = stream.into_inner();
    let mut header_printed = false;
    while let Some(message) = decoder.next().await {
        let message = message.map_err(flight_error)?;
        match message.payload {
            DecodedPayload::Schema(schema) => {
                let as_of = schema
                    .metadata()
                    .get(AS_OF_KEY)
                    .cloned()
                    .unwrap_or_default();
                writeln!(
                    out,
                    "subscribed; changes after {as_of}{} follow (+ insert, - retract)",
                    readable_suffix(&as_of)
                )?;
            }
            DecodedPayload::RecordBatch(batch) if batch.num_rows() == 0 => {
                if let Ok(metadata) = serde_json::from_slice::<Value>(&message.inner.app_metadata) {
                    if let Some(progress) = metadata.get("progress") {
                        let progress = progress.to_string();
                        writeln!(out, "-- progress {progress}{}", readable_suffix(&progress))?;
                    }
                }
            }
            DecodedPayload::RecordBatch(batch) => {
                let columns: Vec<String> = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                let rows = rows_as_text(std::slice::from_ref(&batch))?;
                let time_index = columns.len() - 2;
                let mut lines: Vec<Vec<Option<String>>> = Vec::new();
                for row in rows {
                    let diff: i64 = row[time_index + 1]
                        .as_deref()
                        .unwrap_or("0")
                        .parse()
                        .unwrap_or(0);
                    let sign = if diff > 0 { "+" } else { "-" };
                    let mut line = vec![Some(sign.to_string()), row[time_index].clone()];
                    line.extend(row[..time_index].iter().cloned());
                    lines.push(line);
                }
                let mut header = vec![" ".to_string(), "_time".to_string()];
                header.extend(columns[..time_index].iter().cloned());
                if !header_printed {
                    header_printed = true;
                    write_table(out, &header, &lines, &[])?;
                } else {
                    write_rows(out, &lines)?;
                }
            }
            DecodedPayload::None => {}
        }
        out.flush()?;
    }
    Ok(())
}

/// ` (2026-12-01 18:39:52.415 UTC)` for a time in epoch milliseconds, to
/// print beside it; nothing for text that is not one.
fn readable_suffix(ms: &str) -> String {
    ms.parse()
        .map(|ms| format!(" ({})", readable_time(ms)))
        .unwrap_or_default()
}

/// A Flight error with the server's message up front.
pub fn flight_error(error: arrow_flight::error::FlightError) -> anyhow::Error {
    match error {
        arrow_flight::error::FlightError::Tonic(status) => {
            anyhow::anyhow!("{} ({:?})", status.message(), status.code())
        }
        other => anyhow::anyhow!(other),
    }
}
