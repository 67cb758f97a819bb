//! Checks a client's Arrow IPC messages (bound parameters) before Arrow's
//! decoder sees them. The decoder trusts what a header says: a buffer
//! outside the body, an offsets buffer of 5 bytes, an integer of 48 bits or
//! a list without a child make it panic (found by the `parameters` fuzz
//! target). Parameters are values, so the schema may have only flat
//! columns of scalar types, and each batch must lay its buffers out as
//! those types need.

use arrow_flight::FlightData;
use arrow_ipc::{DateUnit, Precision, TimeUnit, Type};

/// How a column's values are laid out in a batch's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    /// No buffers.
    Null,
    /// Validity, then values as bits.
    Bits,
    /// Validity, then values of this many bytes each.
    Fixed(u64),
    /// Validity, offsets of this many bytes each, then the data.
    Variable(u64),
}

impl Column {
    fn buffers(self) -> usize {
        match self {
            Column::Null => 0,
            Column::Bits | Column::Fixed(_) => 2,
            Column::Variable(_) => 3,
        }
    }
}

/// Checks the messages of one IPC stream in order.
#[derive(Default)]
pub struct IpcChecker {
    /// The columns of the schema seen, once it has been.
    columns: Option<Vec<Column>>,
}

impl IpcChecker {
    /// Checks `message`; whether it is a record batch with a row.
    pub fn check(&mut self, message: &FlightData) -> Result<bool, String> {
        if message.data_header.is_empty() {
            return Ok(false);
        }
        let header =
            arrow_ipc::root_as_message(&message.data_header).map_err(|error| error.to_string())?;
        if let Some(schema) = header.header_as_schema() {
            self.columns = Some(columns(schema)?);
            return Ok(false);
        }
        if header.header_as_dictionary_batch().is_some() {
            return Err("dictionary batches are not accepted".into());
        }
        let Some(batch) = header.header_as_record_batch() else {
            return Ok(false);
        };
        let columns = self
            .columns
            .as_ref()
            .ok_or("a record batch before the schema")?;
        check_batch(batch, message.data_body.len() as u64, columns)?;
        Ok(batch.length() > 0)
    }
}

/// The layout of each column of `schema`, if it has only flat columns of
/// the scalar types a parameter can have, with the widths, units and
/// precisions Arrow's decoder supports.
fn columns(schema: arrow_ipc::Schema<'_>) -> Result<Vec<Column>, String> {
    if schema.endianness() != arrow_ipc::Endianness::Little {
        return Err("big-endian data is not accepted".into());
    }
    let fields = schema.fields().ok_or("a schema without fields")?;
    let mut columns = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        let refuse = |why: String| {
            format!(
                "parameter {}: {why}; bind scalar values (numbers, strings, booleans, decimals, \
                 dates, times, timestamps)",
                index + 1
            )
        };
        if field
            .children()
            .is_some_and(|children| !children.is_empty())
        {
            return Err(refuse("a nested column".into()));
        }
        if field.dictionary().is_some() {
            return Err(refuse("a dictionary-encoded column".into()));
        }
        let column = match field.type_type() {
            Type::Null => Some(Column::Null),
            Type::Bool => Some(Column::Bits),
            Type::Utf8 | Type::Binary => Some(Column::Variable(4)),
            Type::LargeUtf8 | Type::LargeBinary => Some(Column::Variable(8)),
            Type::Int => field.type_as_int().and_then(|int| match int.bitWidth() {
                width @ (8 | 16 | 32 | 64) => Some(Column::Fixed(width as u64 / 8)),
                _ => None,
            }),
            Type::FloatingPoint => {
                field
                    .type_as_floating_point()
                    .and_then(|float| match float.precision() {
                        Precision::HALF => Some(Column::Fixed(2)),
                        Precision::SINGLE => Some(Column::Fixed(4)),
                        Precision::DOUBLE => Some(Column::Fixed(8)),
                        _ => None,
                    })
            }
            Type::Decimal => field.type_as_decimal().and_then(|decimal| {
                let (limit, bytes) = match decimal.bitWidth() {
                    128 => (38, 16),
                    256 => (76, 32),
                    _ => return None,
                };
                let scale_fits =
                    (i32::from(i8::MIN)..=i32::from(i8::MAX)).contains(&decimal.scale());
                ((1..=limit).contains(&decimal.precision()) && scale_fits)
                    .then_some(Column::Fixed(bytes))
            }),
            Type::Date => field.type_as_date().and_then(|date| match date.unit() {
                DateUnit::DAY => Some(Column::Fixed(4)),
                DateUnit::MILLISECOND => Some(Column::Fixed(8)),
                _ => None,
            }),
            Type::Time => {
                field
                    .type_as_time()
                    .and_then(|time| match (time.unit(), time.bitWidth()) {
                        (TimeUnit::SECOND | TimeUnit::MILLISECOND, 32) => Some(Column::Fixed(4)),
                        (TimeUnit::MICROSECOND | TimeUnit::NANOSECOND, 64) => {
                            Some(Column::Fixed(8))
                        }
                        _ => None,
                    })
            }
            Type::Timestamp => field.type_as_timestamp().and_then(|timestamp| {
                matches!(
                    timestamp.unit(),
                    TimeUnit::SECOND
                        | TimeUnit::MILLISECOND
                        | TimeUnit::MICROSECOND
                        | TimeUnit::NANOSECOND
                )
                .then_some(Column::Fixed(8))
            }),
            _ => None,
        };
        columns.push(
            column.ok_or_else(|| refuse(format!("a column of type {:?}", field.type_type())))?,
        );
    }
    Ok(columns)
}

/// Checks that `batch` lays out one node per column, each of the batch's
/// length, and the buffers its columns need: inside a body of `body`
/// bytes, 8-byte aligned, uncompressed, each a whole number of values.
fn check_batch(
    batch: arrow_ipc::RecordBatch<'_>,
    body: u64,
    columns: &[Column],
) -> Result<(), String> {
    if batch.compression().is_some() {
        return Err("compressed batches are not accepted".into());
    }
    let length = u64::try_from(batch.length()).map_err(|_| "a negative row count")?;
    let nodes: Vec<_> = batch.nodes().into_iter().flatten().collect();
    if nodes.len() != columns.len() {
        return Err(format!(
            "{} columns in the schema, {} in the batch",
            columns.len(),
            nodes.len()
        ));
    }
    for node in &nodes {
        if u64::try_from(node.length()).ok() != Some(length)
            || node.null_count() < 0
            || node.null_count() > node.length()
        {
            return Err("a column whose length or null count does not fit the batch".into());
        }
    }
    let buffers: Vec<_> = batch.buffers().into_iter().flatten().collect();
    let wanted: usize = columns.iter().map(|column| column.buffers()).sum();
    if buffers.len() != wanted {
        return Err(format!(
            "{} buffers where the columns have {wanted}",
            buffers.len()
        ));
    }
    let mut buffers = buffers.iter();
    for (column, node) in columns.iter().zip(&nodes) {
        for position in 0..column.buffers() {
            let buffer = buffers.next().expect("counted above");
            let (offset, size) = (
                u64::try_from(buffer.offset()).map_err(|_| "a negative buffer offset")?,
                u64::try_from(buffer.length()).map_err(|_| "a negative buffer length")?,
            );
            if offset % 8 != 0 || offset.checked_add(size).is_none_or(|end| end > body) {
                return Err(format!(
                    "a buffer at {offset} of {size} bytes, misaligned or outside the body of {body} bytes"
                ));
            }
            let element = match (column, position) {
                (Column::Fixed(bytes), 1) | (Column::Variable(bytes), 1) => *bytes,
                _ => 1,
            };
            if size % element != 0 {
                return Err(format!(
                    "a buffer of {size} bytes for values of {element} bytes"
                ));
            }
            let bits = length.div_ceil(8);
            let needed = match (column, position) {
                // Validity: read only when there are nulls.
                (_, 0) if node.null_count() == 0 => 0,
                (_, 0) | (Column::Bits, 1) => bits,
                (Column::Fixed(bytes), 1) => length.saturating_mul(*bytes),
                (Column::Variable(bytes), 1) if length > 0 => (length + 1).saturating_mul(*bytes),
                _ => 0,
            };
            if size < needed {
                return Err(format!(
                    "a buffer of {size} bytes where {length} rows need {needed}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use futures::{stream, TryStreamExt};
    use std::sync::Arc;

    fn messages(batch: RecordBatch) -> Vec<FlightData> {
        futures::executor::block_on(
            FlightDataEncoderBuilder::new()
                .build(stream::iter([Ok(batch)]))
                .try_collect(),
        )
        .unwrap()
    }

    #[test]
    fn scalar_columns_pass_and_a_nested_one_is_refused() {
        let batch = RecordBatch::try_from_iter([
            ("0", Arc::new(StringArray::from(vec!["acme"])) as ArrayRef),
            ("1", Arc::new(Int64Array::from(vec![7])) as ArrayRef),
        ])
        .unwrap();
        let mut checker = IpcChecker::default();
        let rows: Vec<bool> = messages(batch)
            .iter()
            .map(|message| checker.check(message).unwrap())
            .collect();
        assert_eq!(rows, vec![false, true]);

        let list = arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::Int32Type, _, _>(
            vec![Some(vec![Some(1)])],
        );
        let nested = RecordBatch::try_from_iter([("0", Arc::new(list) as ArrayRef)]).unwrap();
        let refused = IpcChecker::default()
            .check(&messages(nested)[0])
            .unwrap_err();
        assert!(refused.contains("nested"), "{refused}");
    }

    #[test]
    fn a_batch_before_its_schema_is_refused() {
        let batch =
            RecordBatch::try_from_iter([("0", Arc::new(Int64Array::from(vec![7])) as ArrayRef)])
                .unwrap();
        let refused = IpcChecker::default()
            .check(&messages(batch)[1])
            .unwrap_err();
        assert!(refused.contains("before the schema"), "{refused}");
    }
}
