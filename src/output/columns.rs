//! The output collections as Arrow: the schema of each (SPEC §3, and
//! `schemas/collections.json`) and rows → record batches. Flight and the
//! Parquet writer both go through here, so the two cannot disagree.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder, Int64Array,
    Int64Builder, StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Array,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use rust_decimal::Decimal;
use trimatch_dataflows::{Change, OutputCollection, Row};

/// Precision and scale of every decimal column.
pub const DECIMAL_PRECISION: u8 = 38;
pub const DECIMAL_SCALE: i8 = 10;

/// The Arrow schema of a collection.
pub fn schema(collection: OutputCollection) -> SchemaRef {
    use DataType::*;
    let text = |name: &str| Field::new(name, Utf8, false);
    let decimal = |name: &str, nullable| {
        Field::new(name, Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE), nullable)
    };
    let timestamp = |name: &str, nullable| {
        Field::new(
            name,
            Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            nullable,
        )
    };
    let fields = match collection {
        OutputCollection::InvoiceMatches => vec![
            text("tenant_id"),
            text("invoice_id"),
            text("invoice_number"),
            text("kind"),
            text("vendor_id"),
            text("po_number"),
            text("currency"),
            Field::new("invoice_date", Date32, false),
            text("status"),
            Field::new("line_count", UInt32, false),
            decimal("invoice_amount", false),
            Field::new("exception_count", UInt32, false),
            Field::new("blocking_count", UInt32, false),
            Field::new("accepted_count", UInt32, false),
            decimal("gross_amount", false),
            decimal("paid_amount", false),
            text("payment_status"),
        ],
        OutputCollection::MatchExceptions => vec![
            text("tenant_id"),
            text("invoice_id"),
            text("po_number"),
            text("vendor_id"),
            Field::new("po_line_no", Int32, true),
            text("exception_type"),
            text("severity"),
            decimal("expected", true),
            decimal("actual", true),
            text("detail"),
            Field::new("resolution", Utf8, true),
            Field::new("resolved_by", Utf8, true),
            timestamp("resolved_at", true),
            Field::new("resolution_reason", Utf8, true),
        ],
        OutputCollection::PoLines => vec![
            text("tenant_id"),
            text("po_number"),
            Field::new("line_no", Int32, false),
            text("vendor_id"),
            text("currency"),
            text("po_status"),
            Field::new("sku", Utf8, true),
            decimal("ordered_qty", false),
            decimal("unit_price", false),
            decimal("received_qty", false),
            decimal("billed_qty", false),
            Field::new("invoice_count", UInt32, false),
            text("match_level"),
            Field::new("category", Utf8, true),
            // Null on amount lines (SPEC §12.3).
            decimal("accepted_qty", true),
        ],
        OutputCollection::ExceptionSummary => vec![
            text("tenant_id"),
            text("exception_type"),
            text("severity"),
            Field::new("exception_count", UInt64, false),
            Field::new("invoice_count", UInt64, false),
            Field::new("open_count", UInt64, false),
        ],
        OutputCollection::PoSuggestions => vec![
            text("tenant_id"),
            text("invoice_id"),
            Field::new("rank", UInt32, false),
            text("po_number"),
            text("matched_by"),
            decimal("amount_difference", true),
            Field::new("score", Float64, false),
        ],
        OutputCollection::PaymentMatches => vec![
            text("tenant_id"),
            text("payment_id"),
            text("vendor_id"),
            text("currency"),
            decimal("amount", false),
            decimal("applied_amount", false),
            decimal("unapplied_amount", false),
            text("matched_by"),
            text("status"),
        ],
        OutputCollection::PaymentExceptions => vec![
            text("tenant_id"),
            text("payment_id"),
            text("vendor_id"),
            Field::new("invoice_id", Utf8, true),
            text("exception_type"),
            text("severity"),
            decimal("expected", true),
            decimal("actual", true),
            text("detail"),
        ],
        OutputCollection::PaymentSuggestions => vec![
            text("tenant_id"),
            text("payment_id"),
            Field::new("rank", UInt32, false),
            text("invoice_id"),
            Field::new("similarity", Float64, false),
            decimal("amount_difference", false),
        ],
        OutputCollection::DeadLetters => vec![
            text("topic"),
            Field::new("partition", Int32, false),
            Field::new("offset", Int64, false),
            Field::new("key", Utf8, true),
            text("reason"),
            timestamp("rejected_at", false),
        ],
        OutputCollection::SourceProgress => vec![
            text("topic"),
            Field::new("partition", Int32, false),
            Field::new("next_offset", Int64, false),
            Field::new("high_watermark", Int64, false),
            Field::new("lag", UInt64, false),
            text("state"),
            Field::new("state_reason", Utf8, true),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// One cell, before it goes into its column.
#[derive(Clone, Copy)]
pub(crate) enum Cell<'a> {
    Text(Option<&'a str>),
    Int32(Option<i32>),
    Int64(i64),
    UInt32(u32),
    UInt64(u64),
    Decimal(Option<Decimal>),
    Date32(i32),
    TimestampMs(Option<i64>),
    Float64(f64),
}

/// The cell of `row` in column `column` (an index into its collection's
/// schema), built in place: a filter tests the columns it names and a record
/// batch builds the columns it projects, and neither builds the others.
pub(crate) fn cell(row: &Row, column: usize) -> Cell<'_> {
    use Cell::*;
    fn text(value: &str) -> Cell<'_> {
        Cell::Text(Some(value))
    }
    match row {
        Row::InvoiceMatch(r) => match column {
            0 => text(&r.tenant_id),
            1 => text(&r.invoice_id),
            2 => text(&r.invoice_number),
            3 => text(r.kind.as_str()),
            4 => text(&r.vendor_id),
            5 => text(&r.po_number),
            6 => text(r.currency.as_str()),
            7 => Date32(r.invoice_date),
            8 => text(r.status.as_str()),
            9 => UInt32(r.line_count),
            10 => Decimal(Some(r.invoice_amount)),
            11 => UInt32(r.exception_count),
            12 => UInt32(r.blocking_count),
            13 => UInt32(r.accepted_count),
            14 => Decimal(Some(r.gross_amount)),
            15 => Decimal(Some(r.paid_amount)),
            16 => text(r.payment_status.as_str()),
            _ => no_such_column(row, column),
        },
        Row::Exception(r) => match column {
            0 => text(&r.tenant_id),
            1 => text(&r.invoice_id),
            2 => text(&r.po_number),
            3 => text(&r.vendor_id),
            4 => Int32(r.po_line_no.map(|line| line as i32)),
            5 => text(r.exception_type.as_str()),
            6 => text(r.severity().as_str()),
            7 => Decimal(r.expected),
            8 => Decimal(r.actual),
            9 => text(&r.detail),
            10 => Text(r.resolution.as_ref().map(|d| d.resolution.as_str())),
            11 => Text(r.resolution.as_ref().map(|d| d.resolved_by.as_str())),
            12 => TimestampMs(r.resolution.as_ref().map(|d| d.resolved_at)),
            13 => Text(r.resolution.as_ref().and_then(|d| d.reason.as_deref())),
            _ => no_such_column(row, column),
        },
        Row::PoLine(r) => match column {
            0 => text(&r.tenant_id),
            1 => text(&r.po_number),
            2 => Int32(Some(r.line_no as i32)),
            3 => text(&r.vendor_id),
            4 => text(r.currency.as_str()),
            5 => text(r.po_status.as_str()),
            6 => Text(r.sku.as_deref()),
            7 => Decimal(Some(r.ordered_qty)),
            8 => Decimal(Some(r.unit_price)),
            9 => Decimal(Some(r.received_qty)),
            10 => Decimal(Some(r.billed_qty)),
            11 => UInt32(r.invoice_count),
            12 => text(r.match_level.as_str()),
            13 => Text(r.category.as_deref()),
            14 => Decimal(Some(r.accepted_qty)),
            _ => no_such_column(row, column),
        },
        Row::ExceptionSummary(r) => match column {
            0 => text(&r.tenant_id),
            1 => text(r.exception_type.as_str()),
            2 => text(r.severity().as_str()),
            3 => UInt64(r.exception_count),
            4 => UInt64(r.invoice_count),
            5 => UInt64(r.open_count),
            _ => no_such_column(row, column),
        },
        Row::PoSuggestion(r) => match column {
            0 => text(&r.tenant_id),
            1 => text(&r.invoice_id),
            2 => UInt32(r.rank),
            3 => text(&r.po_number),
            4 => text(r.matched_by.as_str()),
            5 => Decimal(r.amount_difference),
            6 => Float64(r.score()),
            _ => no_such_column(row, column),
        },
        Row::PaymentMatch(r) => match column {
            0 => text(&r.tenant_id),
            1 => text(&r.payment_id),
            2 => text(&r.vendor_id),
            3 => text(r.currency.as_str()),
            4 => Decimal(Some(r.amount)),
            5 => Decimal(Some(r.applied_amount)),
            6 => Decimal(Some(r.unapplied_amount())),
            7 => text(r.matched_by.as_str()),
            8 => text(r.status.as_str()),
            _ => no_such_column(row, column),
        },
        Row::PaymentException(r) => match column {
            0 => text(&r.tenant_id),
            1 => text(&r.payment_id),
            2 => text(&r.vendor_id),
            3 => Text(r.invoice_id.as_deref()),
            4 => text(r.exception_type.as_str()),
            5 => text(r.exception_type.severity().as_str()),
            6 => Decimal(r.expected),
            7 => Decimal(r.actual),
            8 => text(&r.detail),
            _ => no_such_column(row, column),
        },
        Row::PaymentSuggestion(r) => match column {
            0 => text(&r.tenant_id),
            1 => text(&r.payment_id),
            2 => UInt32(r.rank),
            3 => text(&r.invoice_id),
            4 => Float64(r.similarity()),
            5 => Decimal(Some(r.amount_difference)),
            _ => no_such_column(row, column),
        },
        Row::DeadLetter(r) => match column {
            0 => text(&r.topic),
            1 => Int32(Some(r.partition)),
            2 => Int64(r.offset),
            3 => Text(r.key.as_deref()),
            4 => text(&r.reason),
            5 => TimestampMs(Some(r.rejected_at)),
            _ => no_such_column(row, column),
        },
        Row::SourceProgress(r) => match column {
            0 => text(&r.topic),
            1 => Int32(Some(r.partition)),
            2 => Int64(r.next_offset),
            3 => Int64(r.high_watermark),
            4 => UInt64(r.lag),
            5 => text(r.state.as_str()),
            6 => Text(r.state_reason.as_deref()),
            _ => no_such_column(row, column),
        },
    }
}

/// A column index past the end of a row's schema: `schema()` and `cell()`
/// list the same columns, so only a programming error gets here.
#[cold]
fn no_such_column(row: &Row, column: usize) -> ! {
    unreachable!("{} has no column {column}", row.collection().name())
}

/// A decimal as the `Decimal128(38, 10)` integer: the value times 10^10.
/// Values with more than 10 fractional digits are rounded (half to even).
pub fn decimal_to_i128(value: Decimal) -> i128 {
    let mut value = value;
    if value.scale() > DECIMAL_SCALE as u32 {
        value = value.round_dp(DECIMAL_SCALE as u32);
    }
    value.mantissa() * 10i128.pow(DECIMAL_SCALE as u32 - value.scale())
}

enum Column {
    Text(StringBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Decimal(Decimal128Builder),
    Date32(Date32Builder),
    TimestampMs(TimestampMillisecondBuilder),
    Float64(Float64Builder),
}

impl Column {
    fn for_type(data_type: &DataType, capacity: usize) -> Column {
        match data_type {
            DataType::Utf8 => Column::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Int32 => Column::Int32(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Column::Int64(Int64Builder::with_capacity(capacity)),
            DataType::UInt32 => Column::UInt32(UInt32Builder::with_capacity(capacity)),
            DataType::UInt64 => Column::UInt64(UInt64Builder::with_capacity(capacity)),
            DataType::Decimal128(precision, scale) => Column::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*precision, *scale)
                    .expect("valid decimal type"),
            ),
            DataType::Date32 => Column::Date32(Date32Builder::with_capacity(capacity)),
            DataType::Timestamp(TimeUnit::Millisecond, zone) => Column::TimestampMs(
                TimestampMillisecondBuilder::with_capacity(capacity)
                    .with_timezone_opt(zone.clone()),
            ),
            DataType::Float64 => Column::Float64(Float64Builder::with_capacity(capacity)),
            other => unreachable!("no output column has type {other}"),
        }
    }

    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Column::Text(builder), Cell::Text(value)) => builder.append_option(value),
            (Column::Int32(builder), Cell::Int32(value)) => builder.append_option(value),
            (Column::Int64(builder), Cell::Int64(value)) => builder.append_value(value),
            (Column::UInt32(builder), Cell::UInt32(value)) => builder.append_value(value),
            (Column::UInt64(builder), Cell::UInt64(value)) => builder.append_value(value),
            (Column::Decimal(builder), Cell::Decimal(value)) => {
                builder.append_option(value.map(decimal_to_i128))
            }
            (Column::Date32(builder), Cell::Date32(value)) => builder.append_value(value),
            (Column::TimestampMs(builder), Cell::TimestampMs(value)) => {
                builder.append_option(value)
            }
            (Column::Float64(builder), Cell::Float64(value)) => builder.append_value(value),
            _ => unreachable!("cell() and schema() list the same types in the same order"),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::Text(mut builder) => Arc::new(builder.finish()),
            Column::Int32(mut builder) => Arc::new(builder.finish()),
            Column::Int64(mut builder) => Arc::new(builder.finish()),
            Column::UInt32(mut builder) => Arc::new(builder.finish()),
            Column::UInt64(mut builder) => Arc::new(builder.finish()),
            Column::Decimal(mut builder) => Arc::new(builder.finish()),
            Column::Date32(mut builder) => Arc::new(builder.finish()),
            Column::TimestampMs(mut builder) => Arc::new(builder.finish()),
            Column::Float64(mut builder) => Arc::new(builder.finish()),
        }
    }
}

/// Rows of one collection as a record batch of `schema`. Rows of another
/// collection are a programming error.
pub fn record_batch<'r>(
    schema: &SchemaRef,
    rows: impl ExactSizeIterator<Item = &'r Row>,
) -> Result<RecordBatch, ArrowError> {
    let all: Vec<usize> = (0..schema.fields().len()).collect();
    projected_record_batch(schema, &all, rows)
}

/// Only the columns `projection` lists (indices into `schema`, in that
/// order) of rows of one collection: a SQL query builds only what it reads.
pub fn projected_record_batch<'r>(
    schema: &SchemaRef,
    projection: &[usize],
    rows: impl ExactSizeIterator<Item = &'r Row>,
) -> Result<RecordBatch, ArrowError> {
    let projected = Arc::new(schema.project(projection)?);
    let rows: Vec<&Row> = rows.collect();
    let row_count = rows.len();
    // Column by column: each builder takes its cells in one pass.
    let columns = projected
        .fields()
        .iter()
        .zip(projection)
        .map(|(field, index)| {
            let mut column = Column::for_type(field.data_type(), row_count);
            for row in &rows {
                column.append(cell(row, *index));
            }
            column.finish()
        })
        .collect();
    // A query may need no column at all (`count(*)`): the row count says it.
    let options = RecordBatchOptions::new().with_row_count(Some(row_count));
    RecordBatch::try_new_with_options(projected, columns, &options)
}

/// The names of the two columns a subscription adds to a collection's.
pub const TIME_COLUMN: &str = "_time";
pub const DIFF_COLUMN: &str = "_diff";

/// The schema of a subscription to `collection`: its columns, then `_time`
/// (UInt64) and `_diff` (Int64), per SPEC §5.
pub fn change_schema(collection: OutputCollection) -> SchemaRef {
    let base = schema(collection);
    let mut fields: Vec<Field> = base
        .fields()
        .iter()
        .map(|field| field.as_ref().clone())
        .collect();
    fields.push(Field::new(TIME_COLUMN, DataType::UInt64, false));
    fields.push(Field::new(DIFF_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// Changes of one collection as a record batch of its [`change_schema`].
pub fn change_batch(
    change_schema: &SchemaRef,
    changes: &[Change],
) -> Result<RecordBatch, ArrowError> {
    let base_fields = change_schema.fields().len() - 2;
    let base_schema = Arc::new(Schema::new(change_schema.fields()[..base_fields].to_vec()));
    let rows = record_batch(&base_schema, changes.iter().map(|(row, _, _)| row))?;
    let mut columns = rows.columns().to_vec();
    columns.push(Arc::new(UInt64Array::from_iter_values(
        changes.iter().map(|(_, time, _)| *time),
    )));
    columns.push(Arc::new(Int64Array::from_iter_values(
        changes.iter().map(|(_, _, diff)| *diff as i64),
    )));
    RecordBatch::try_new(change_schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_scale_to_ten_digits() {
        assert_eq!(decimal_to_i128(Decimal::new(250, 2)), 25_000_000_000);
        assert_eq!(decimal_to_i128(Decimal::new(-1, 0)), -10_000_000_000);
        assert_eq!(decimal_to_i128(Decimal::new(1, 12)), 0);
        assert_eq!(decimal_to_i128(Decimal::new(15, 11)), 2);
    }

    /// The schemas served are the ones published in `schemas/collections.json`.
    #[test]
    fn schemas_match_the_published_contract() {
        let published: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/collections.json")).unwrap();
        for collection in OutputCollection::ALL {
            let fields = published["collections"][collection.name()]["fields"]
                .as_array()
                .unwrap_or_else(|| panic!("{} is not published", collection.name()));
            let schema = schema(collection);
            let ours: Vec<(String, String, bool)> = schema
                .fields()
                .iter()
                .map(|field| {
                    let spelled = match field.data_type() {
                        DataType::Timestamp(TimeUnit::Millisecond, Some(zone)) => {
                            format!("Timestamp(Millisecond, {zone})")
                        }
                        other => other.to_string(),
                    };
                    (field.name().clone(), spelled, field.is_nullable())
                })
                .collect();
            let theirs: Vec<(String, String, bool)> = fields
                .iter()
                .map(|field| {
                    (
                        field["name"].as_str().unwrap().to_string(),
                        field["type"].as_str().unwrap().to_string(),
                        field["nullable"].as_bool().unwrap(),
                    )
                })
                .collect();
            assert_eq!(ours, theirs, "{}", collection.name());
            let key: Vec<&str> = published["collections"][collection.name()]["key"]
                .as_array()
                .unwrap()
                .iter()
                .map(|column| column.as_str().unwrap())
                .collect();
            assert_eq!(collection.key_columns(), key, "{}", collection.name());
        }
    }
}
