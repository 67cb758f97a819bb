//! Rows printed for people: display text of Arrow cells (decimals without
//! trailing zeros), aligned tables, CSV and JSON lines, rows sorted by their
//! collection's key, and logical times shown readably beside their epoch
//! milliseconds.

use std::cmp::Ordering;
use std::io::Write;

use anyhow::Result;
use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use rust_decimal::Decimal;
use serde_json::{Map, Value};

/// Rows as display text, one `Option<String>` per cell (`None` for null).
pub(super) type TextRow = Vec<Option<String>>;

/// A logical time (milliseconds since the epoch) as people read it:
/// `2026-12-01 18:39:52.415 UTC`.
pub fn readable_time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|time| time.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// Sorts `rows` by the cells at `key` (in that order): the columns listed in
/// `numeric` by value, others by bytes, nulls first; ties by the whole row, so
/// that two reads of the same state print the same lines.
pub(super) fn sort_by_key(rows: &mut [TextRow], key: &[usize], numeric: &[usize]) {
    rows.sort_by(|a, b| {
        key.iter()
            .map(|index| compare_cells(&a[*index], &b[*index], numeric.contains(index)))
            .find(|order| order.is_ne())
            .unwrap_or_else(|| a.cmp(b))
    });
}

fn compare_cells(a: &Option<String>, b: &Option<String>, numeric: bool) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) if numeric => match (a.parse::<Decimal>(), b.parse::<Decimal>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.cmp(b),
        },
        (a, b) => a.cmp(b),
    }
}

/// Every cell as display text (`None` for null), decimals without trailing zeros.
pub(super) fn rows_as_text(batches: &[RecordBatch]) -> Result<Vec<TextRow>> {
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

pub(super) fn numeric_columns(batches: &[RecordBatch]) -> Vec<usize> {
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

/// Rows as JSON objects: integers as numbers, everything else (decimals
/// included, exactly) as strings, null as null.
pub(super) fn json_rows(schema: &Schema, rows: &[TextRow]) -> Vec<Value> {
    rows.iter()
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
                                .unwrap_or_else(|_| Value::String(text.clone())),
                            _ => Value::String(text.clone()),
                        },
                    };
                    (field.name().clone(), value)
                })
                .collect();
            Value::Object(object)
        })
        .collect()
}

pub(super) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub(super) fn write_table(
    out: &mut impl Write,
    header: &[String],
    rows: &[TextRow],
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

pub(super) fn write_rows(out: &mut impl Write, rows: &[TextRow]) -> Result<()> {
    for row in rows {
        let cells: Vec<&str> = row
            .iter()
            .map(|cell| cell.as_deref().unwrap_or(""))
            .collect();
        writeln!(out, "{}", cells.join("  "))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[Option<&str>]) -> TextRow {
        cells.iter().map(|cell| cell.map(str::to_string)).collect()
    }

    #[test]
    fn rows_sort_by_key_with_numbers_by_value_text_by_bytes_and_nulls_first() {
        let mut rows = vec![
            row(&[Some("b"), Some("10"), Some("x")]),
            row(&[Some("a"), Some("9"), Some("y")]),
            row(&[Some("b"), Some("9"), Some("z")]),
            row(&[Some("b"), None, Some("w")]),
            row(&[Some("10"), Some("1"), Some("v")]),
            row(&[Some("9"), Some("1"), Some("u")]),
        ];
        sort_by_key(&mut rows, &[0, 1], &[1]);
        let order: Vec<_> = rows.iter().map(|row| row[2].clone().unwrap()).collect();
        // Text "10" sorts before "9" by bytes; the number 9 before 10.
        assert_eq!(order, ["v", "u", "y", "w", "z", "x"]);
    }

    #[test]
    fn times_read_as_utc_with_milliseconds() {
        assert_eq!(
            readable_time(1_764_614_392_415),
            "2025-12-01 18:39:52.415 UTC"
        );
        assert_eq!(readable_time(0), "1970-01-01 00:00:00.000 UTC");
    }
}
