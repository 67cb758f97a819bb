//! Equality filters on a collection's columns (SPEC §5 `filter`), validated
//! against its Arrow schema and evaluated on rows.
//!
//! A filter on the collection's first column (`tenant_id`, or `topic` for the
//! bookkeeping collections) is also a key: reads seek to it instead of
//! scanning. A filter can also hold a set of tenants (a principal's scope,
//! SPEC §9): rows of other tenants never pass, and reads seek to each tenant.

use std::collections::BTreeSet;
use std::fmt;

use arrow::datatypes::{DataType, SchemaRef};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use trimatch_dataflows::{OutputCollection, Row};

use super::columns::{cell, schema, Cell};

/// Why a filter was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown filter column {column:?} for {collection}; its columns are: {columns}")]
    UnknownColumn {
        collection: &'static str,
        column: String,
        columns: String,
    },
    #[error("filter on {column:?} needs {expected}, got {got}")]
    BadFilterValue {
        column: String,
        expected: &'static str,
        got: String,
    },
    #[error("{collection} has no tenant_id column, so it cannot be limited to tenants")]
    NoTenants { collection: &'static str },
}

/// A value a column is compared with.
#[derive(Clone, Debug, PartialEq)]
enum Expected {
    Null,
    Text(String),
    Integer(i64),
    Decimal(Decimal),
}

/// Equality conditions on columns, ANDed together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowFilter {
    conditions: Vec<(usize, String, Expected)>,
    /// The value of the collection's key column (tenant or topic), if filtered
    /// on: reads seek to it instead of scanning.
    key: Option<String>,
    /// Only rows of these tenants pass (never empty: `None` is every tenant).
    tenants: Option<BTreeSet<String>>,
}

impl RowFilter {
    /// Parses `{"column": value, …}` against `collection`'s schema.
    pub fn parse(
        collection: OutputCollection,
        filter: &Map<String, Value>,
    ) -> Result<Self, FilterError> {
        let schema = schema(collection);
        let mut parsed = RowFilter::default();
        for (column, value) in filter {
            let index = schema
                .index_of(column)
                .map_err(|_| FilterError::UnknownColumn {
                    collection: collection.name(),
                    column: column.clone(),
                    columns: column_names(&schema),
                })?;
            let field = schema.field(index);
            let expected = expected_value(column, field.data_type(), field.is_nullable(), value)?;
            if index == 0 {
                if let Expected::Text(text) = &expected {
                    parsed.key = Some(text.clone());
                }
            }
            parsed.conditions.push((index, column.clone(), expected));
        }
        Ok(parsed)
    }

    /// This filter, passing only rows of `tenants` as well (for a collection
    /// whose first column is `tenant_id`).
    pub fn within_tenants(
        mut self,
        collection: OutputCollection,
        tenants: BTreeSet<String>,
    ) -> Result<Self, FilterError> {
        if !has_tenants(collection) {
            return Err(FilterError::NoTenants {
                collection: collection.name(),
            });
        }
        self.tenants = Some(match self.tenants.take() {
            Some(already) => already.intersection(&tenants).cloned().collect(),
            None => tenants,
        });
        Ok(self)
    }

    /// The key (tenant or topic) every matching row has, if the filter fixes it.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The tenants rows must belong to, if the filter limits them.
    pub fn tenants(&self) -> Option<&BTreeSet<String>> {
        self.tenants.as_ref()
    }

    /// The keys (tenants or topics) a read needs to visit, in order: one if
    /// the filter fixes the key, the tenant set if it has one, `None` for all.
    pub fn keys(&self) -> Option<Vec<String>> {
        match (&self.key, &self.tenants) {
            (Some(key), Some(tenants)) if !tenants.contains(key) => Some(Vec::new()),
            (Some(key), _) => Some(vec![key.clone()]),
            (None, Some(tenants)) => Some(tenants.iter().cloned().collect()),
            (None, None) => None,
        }
    }

    /// Whether the filter has column conditions (beyond a tenant set).
    pub fn has_conditions(&self) -> bool {
        !self.conditions.is_empty()
    }

    /// Whether every row passes.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && self.tenants.is_none()
    }

    /// Whether `row` satisfies every condition. Only the columns the
    /// filter names are looked at, in place.
    pub fn matches(&self, row: &Row) -> bool {
        let in_scope = match &self.tenants {
            None => true,
            Some(tenants) => match cell(row, 0) {
                Cell::Text(Some(tenant)) => tenants.contains(tenant),
                _ => false,
            },
        };
        in_scope
            && self
                .conditions
                .iter()
                .all(|(index, _, expected)| cell_equals(&cell(row, *index), expected))
    }
}

/// Whether `collection`'s rows belong to tenants (its first column is `tenant_id`).
pub fn has_tenants(collection: OutputCollection) -> bool {
    collection.key_columns().first() == Some(&"tenant_id")
}

impl fmt::Display for RowFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .conditions
            .iter()
            .map(|(_, column, expected)| format!("{column}={expected:?}"))
            .chain(self.tenants.iter().map(|tenants| {
                let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
                format!("tenant_id IN ({})", names.join(", "))
            }))
            .collect();
        f.write_str(&parts.join(" AND "))
    }
}

fn column_names(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|field| field.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn expected_value(
    column: &str,
    data_type: &DataType,
    nullable: bool,
    value: &Value,
) -> Result<Expected, FilterError> {
    let bad = |expected: &'static str| FilterError::BadFilterValue {
        column: column.to_string(),
        expected,
        got: value.to_string(),
    };
    if value.is_null() {
        return if nullable {
            Ok(Expected::Null)
        } else {
            Err(bad("a value (the column is never null)"))
        };
    }
    match data_type {
        DataType::Utf8 => value
            .as_str()
            .map(|text| Expected::Text(text.to_string()))
            .ok_or_else(|| bad("a string")),
        DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64 => integer(value)
            .map(Expected::Integer)
            .ok_or_else(|| bad("an integer")),
        DataType::Decimal128(_, _) => {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                _ => return Err(bad("a decimal (string or number)")),
            };
            text.trim()
                .parse::<Decimal>()
                .or_else(|_| Decimal::from_scientific(text.trim()))
                .map(|decimal| Expected::Decimal(decimal.normalize()))
                .map_err(|_| bad("a decimal (string or number)"))
        }
        DataType::Date32 => {
            let text = value
                .as_str()
                .ok_or_else(|| bad("a date as \"YYYY-MM-DD\""))?;
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| bad("a date as \"YYYY-MM-DD\""))?;
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date");
            Ok(Expected::Integer((date - epoch).num_days()))
        }
        DataType::Timestamp(_, _) => match value {
            Value::String(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .or_else(|| {
                    chrono::DateTime::parse_from_rfc3339(text)
                        .ok()
                        .map(|time| time.timestamp_millis())
                })
                .map(Expected::Integer)
                .ok_or_else(|| bad("milliseconds since the epoch or an RFC 3339 timestamp")),
            _ => integer(value)
                .map(Expected::Integer)
                .ok_or_else(|| bad("milliseconds since the epoch or an RFC 3339 timestamp")),
        },
        _ => Err(bad("a value of a filterable type")),
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn cell_equals(cell: &Cell<'_>, expected: &Expected) -> bool {
    match (cell, expected) {
        (Cell::Text(None), Expected::Null)
        | (Cell::Int32(None), Expected::Null)
        | (Cell::Decimal(None), Expected::Null)
        | (Cell::TimestampMs(None), Expected::Null) => true,
        (Cell::Text(Some(text)), Expected::Text(wanted)) => text == wanted,
        (Cell::Int32(Some(value)), Expected::Integer(wanted)) => i64::from(*value) == *wanted,
        (Cell::Int64(value), Expected::Integer(wanted)) => value == wanted,
        (Cell::UInt32(value), Expected::Integer(wanted)) => i64::from(*value) == *wanted,
        (Cell::UInt64(value), Expected::Integer(wanted)) => {
            i64::try_from(*value).is_ok_and(|value| value == *wanted)
        }
        (Cell::Decimal(Some(value)), Expected::Decimal(wanted)) => value == wanted,
        (Cell::Date32(value), Expected::Integer(wanted)) => i64::from(*value) == *wanted,
        (Cell::TimestampMs(Some(value)), Expected::Integer(wanted)) => value == wanted,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trimatch_dataflows::model::{ExceptionType, Text};
    use trimatch_dataflows::rows::ExceptionRow;

    fn exception(
        tenant: &str,
        kind: ExceptionType,
        line: Option<u32>,
        expected: Option<Decimal>,
    ) -> Row {
        Row::Exception(ExceptionRow {
            tenant_id: Text::from(tenant),
            invoice_id: Text::from("INV-1"),
            po_number: Text::from("PO-1"),
            vendor_id: Text::from("V"),
            po_line_no: line,
            exception_type: kind,
            expected,
            actual: None,
            detail: Text::from("A sentence."),
            resolution: None,
        })
    }

    #[test]
    fn filters_compare_typed_values() {
        let map = |json: &str| serde_json::from_str::<Map<String, Value>>(json).unwrap();
        let filter = RowFilter::parse(
            OutputCollection::MatchExceptions,
            &map(r#"{"tenant_id": "acme", "exception_type": "PRICE_VARIANCE", "po_line_no": 2, "expected": "2.50"}"#),
        )
        .unwrap();
        assert!(filter.matches(&exception(
            "acme",
            ExceptionType::PriceVariance,
            Some(2),
            Some(Decimal::new(25, 1))
        )));
        assert!(!filter.matches(&exception(
            "acme",
            ExceptionType::PriceVariance,
            Some(3),
            Some(Decimal::new(25, 1))
        )));
        assert!(!filter.matches(&exception(
            "other",
            ExceptionType::PriceVariance,
            Some(2),
            Some(Decimal::new(25, 1))
        )));
        let header = RowFilter::parse(
            OutputCollection::MatchExceptions,
            &map(r#"{"po_line_no": null}"#),
        )
        .unwrap();
        assert!(header.matches(&exception("acme", ExceptionType::PoNotFound, None, None)));
        assert!(!header.matches(&exception(
            "acme",
            ExceptionType::PriceVariance,
            Some(1),
            None
        )));
    }
}
