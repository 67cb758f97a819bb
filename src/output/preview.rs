//! A policy preview's answer as Arrow (SPEC §12.4): the exception changes
//! (the columns of `match_exceptions` and `_diff`) and the status changes
//! (`tenant_id`, `invoice_id`, `status_before`, `status_after`), each one
//! Arrow IPC stream — the body of one Flight `Result`.

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use trimatch_dataflows::preview::PolicyPreview;
use trimatch_dataflows::{OutputCollection, Row};

use super::columns::{record_batch, schema, DIFF_COLUMN};

/// The schema of the exception changes: `match_exceptions`' columns and `_diff`.
pub fn exception_changes_schema() -> SchemaRef {
    let mut fields: Vec<Field> = schema(OutputCollection::MatchExceptions)
        .fields()
        .iter()
        .map(|field| field.as_ref().clone())
        .collect();
    fields.push(Field::new(DIFF_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The schema of the status changes.
pub fn status_changes_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        text("tenant_id"),
        text("invoice_id"),
        text("status_before"),
        text("status_after"),
    ]))
}

/// The two record batches of an answer: exception changes, status changes.
pub fn preview_batches(preview: &PolicyPreview) -> Result<[RecordBatch; 2], ArrowError> {
    let rows: Vec<Row> = preview
        .exceptions
        .iter()
        .map(|(row, _)| Row::Exception(row.clone()))
        .collect();
    let exceptions = record_batch(&schema(OutputCollection::MatchExceptions), rows.iter())?;
    let mut columns = exceptions.columns().to_vec();
    columns.push(Arc::new(Int64Array::from_iter_values(
        preview.exceptions.iter().map(|(_, diff)| *diff),
    )));
    let exceptions = RecordBatch::try_new(exception_changes_schema(), columns)?;
    let column = |value: fn(&trimatch_dataflows::preview::StatusChange) -> &str| {
        Arc::new(StringArray::from_iter_values(
            preview.statuses.iter().map(value),
        )) as _
    };
    let statuses = RecordBatch::try_new(
        status_changes_schema(),
        vec![
            column(|change| &change.tenant_id),
            column(|change| &change.invoice_id),
            column(|change| change.before.as_str()),
            column(|change| change.after.as_str()),
        ],
    )?;
    Ok([exceptions, statuses])
}

/// One record batch as a complete Arrow IPC stream (schema, batch, end).
pub fn ipc_stream(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    writer.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::ipc::reader::StreamReader;
    use trimatch_dataflows::model::ExceptionType;
    use trimatch_dataflows::preview::StatusChange;
    use trimatch_dataflows::rows::{ExceptionRow, MatchStatus};

    #[test]
    fn an_answer_reads_back_from_its_two_streams() {
        let row = ExceptionRow {
            tenant_id: "acme".into(),
            invoice_id: "INV-1".into(),
            po_number: "PO-1".into(),
            vendor_id: "V-17".into(),
            po_line_no: Some(1),
            exception_type: ExceptionType::PriceVariance,
            expected: None,
            actual: None,
            detail: "d".into(),
            resolution: None,
        };
        let preview = PolicyPreview {
            exceptions: vec![(row, -1)],
            statuses: vec![StatusChange {
                tenant_id: "acme".into(),
                invoice_id: "INV-1".into(),
                before: MatchStatus::Exception,
                after: MatchStatus::Matched,
            }],
        };
        let [exceptions, statuses] = preview_batches(&preview).unwrap();
        for (batch, schema) in [
            (exceptions, exception_changes_schema()),
            (statuses, status_changes_schema()),
        ] {
            let bytes = ipc_stream(&batch).unwrap();
            let read: Vec<RecordBatch> = StreamReader::try_new(bytes.as_slice(), None)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(read, vec![batch]);
            assert_eq!(read[0].schema(), schema);
        }
    }
}
