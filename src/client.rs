//! The command-line Flight clients: `trimatch query` prints a snapshot as an
//! aligned table, CSV or JSON lines; `trimatch subscribe` prints changes as
//! they arrive, with the progress time, so a person can watch exceptions
//! appear and clear.

use std::io::Write;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, ArrayRef};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_flight::decode::DecodedPayload;
use arrow_flight::{FlightClient, Ticket};
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tonic::transport::Channel;

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

/// Connects to a Flight service at `addr` (`host:port` or a URL).
pub async fn connect(addr: &str) -> Result<FlightClient> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let channel = Channel::from_shared(url.clone())
        .with_context(|| format!("bad Flight address {addr:?}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to trimatch's Flight service at {url}"))?;
    Ok(FlightClient::new(channel))
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

/// `null` and integers keep their JSON type; anything else is a string (the
/// server parses it per column type).
fn filter_value(text: &str) -> Value {
    if text == "null" {
        return Value::Null;
    }
    match text.parse::<i64>() {
        Ok(number) => json!(number),
        Err(_) => json!(text),
    }
}

/// Runs `trimatch query`: prints the snapshot and returns how many rows it had.
pub async fn query(
    addr: &str,
    ticket: Vec<u8>,
    format: Format,
    out: &mut impl Write,
) -> Result<usize> {
    let mut client = connect(addr).await?;
    let mut stream = client
        .do_get(Ticket::new(ticket))
        .await
        .map_err(flight_error)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.map_err(flight_error)?);
    }
    let Some(schema) = stream.schema().cloned() else {
        bail!("the server sent no schema");
    };
    let as_of = schema
        .metadata()
        .get("trimatch.as_of")
        .cloned()
        .unwrap_or_default();
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    let rows = rows_as_text(&batches)?;
    match format {
        Format::Table => {
            write_table(out, &columns, &rows, &numeric_columns(&batches))?;
            writeln!(out, "({} rows as of {as_of})", rows.len())?;
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
            for row in json_rows(&batches)? {
                writeln!(out, "{row}")?;
            }
        }
    }
    Ok(rows.len())
}

/// Runs `trimatch subscribe`: prints every change and progress time until the
/// server ends the stream.
pub async fn subscribe(addr: &str, ticket: Vec<u8>, out: &mut impl Write) -> Result<()> {
    let mut client = connect(addr).await?;
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
                    .get("trimatch.as_of")
                    .cloned()
                    .unwrap_or_default();
                writeln!(
                    out,
                    "subscribed; changes after {as_of} follow (+ insert, - retract)"
                )?;
            }
            DecodedPayload::RecordBatch(batch) if batch.num_rows() == 0 => {
                if let Ok(metadata) = serde_json::from_slice::<Value>(&message.inner.app_metadata) {
                    if let Some(progress) = metadata.get("progress") {
                        writeln!(out, "-- progress {progress}")?;
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

/// A Flight error with the server's message up front.
fn flight_error(error: arrow_flight::error::FlightError) -> anyhow::Error {
    match error {
        arrow_flight::error::FlightError::Tonic(status) => {
            anyhow::anyhow!("{} ({:?})", status.message(), status.code())
        }
        other => anyhow::anyhow!(other),
    }
}

/// Every cell as display text (`None` for null), decimals without trailing zeros.
fn rows_as_text(batches: &[RecordBatch]) -> Result<Vec<Vec<Option<String>>>> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<(ArrayFormatter, &ArrayRef)> = batch
            .columns()
            .iter()
            .map(|column| Ok((ArrayFormatter::try_new(column.as_ref(), &options)?, column)))
            .collect::<Result<_, arrow::error::ArrowError>>()?;
        for index in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|(formatter, column)| {
                        if column.is_null(index) {
                            return None;
                        }
                        let text = formatter.value(index).to_string();
                        Some(match column.data_type() {
                            DataType::Decimal128(_, _) => trim_decimal(&text),
                            _ => text,
                        })
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// `2.5000000000` → `2.5`, `3.0000000000` → `3`.
pub fn trim_decimal(text: &str) -> String {
    if !text.contains('.') {
        return text.to_string();
    }
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn numeric_columns(batches: &[RecordBatch]) -> Vec<usize> {
    batches
        .first()
        .map(|batch| {
            batch
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, field)| field.data_type().is_numeric())
                .map(|(index, _)| index)
                .collect()
        })
        .unwrap_or_default()
}

fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Value>> {
    let text = rows_as_text(batches)?;
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let schema = first.schema();
    Ok(text
        .into_iter()
        .map(|row| {
            let object: Map<String, Value> = schema
                .fields()
                .iter()
                .zip(row)
                .map(|(field, cell)| {
                    let value = match cell {
                        None => Value::Null,
                        Some(text) => match field.data_type() {
                            DataType::Int32
                            | DataType::Int64
                            | DataType::UInt32
                            | DataType::UInt64 => text
                                .parse::<i64>()
                                .map(Value::from)
                                .unwrap_or(Value::String(text)),
                            _ => Value::String(text),
                        },
                    };
                    (field.name().clone(), value)
                })
                .collect();
            Value::Object(object)
        })
        .collect())
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn write_table(
    out: &mut impl Write,
    header: &[String],
    rows: &[Vec<Option<String>>],
    right_aligned: &[usize],
) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|name| name.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.as_deref().unwrap_or("").chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(index, cell)| {
                if right_aligned.contains(&index) {
                    format!("{cell:>width$}", width = widths[index])
                } else {
                    format!("{cell:<width$}", width = widths[index])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.iter().map(String::as_str).collect()))?;
    writeln!(
        out,
        "{}",
        widths
            .iter()
            .map(|width| "-".repeat(*width))
            .collect::<Vec<_>>()
            .join("  ")
    )?;
    for row in rows {
        writeln!(
            out,
            "{}",
            line(
                row.iter()
                    .map(|cell| cell.as_deref().unwrap_or(""))
                    .collect()
            )
        )?;
    }
    Ok(())
}

fn write_rows(out: &mut impl Write, rows: &[Vec<Option<String>>]) -> Result<()> {
    for row in rows {
        let cells: Vec<&str> = row
            .iter()
            .map(|cell| cell.as_deref().unwrap_or(""))
            .collect();
        writeln!(out, "{}", cells.join("  "))?;
    }
    Ok(())
}
