//! What a reader asks for: Flight tickets (SPEC §5) parsed into queries, and
//! equality filters validated against the collection's schema.
//!
//! A ticket is either a bare collection name (`b"match_exceptions"`) or a JSON
//! object: `{"collection": …, "filter": {…}, "as_of": t, "limit": n}` for a
//! snapshot, `{"subscribe": …, "snapshot": true, "filter": {…}, "as_of": t}`
//! for a subscription. Every mistake gets a message saying what was wrong and
//! what would be right.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use trimatch_dataflows::{OutputCollection, Row, Time};

use crate::columns::{cells, schema, Cell};

/// Why a ticket or filter was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "unknown collection {name:?}; the collections are: {}",
        collection_names()
    )]
    UnknownCollection { name: String },
    #[error("the ticket is not valid JSON ({problem}); send a collection name such as b\"match_exceptions\" or a JSON object such as {{\"collection\": \"match_exceptions\", \"filter\": {{\"tenant_id\": \"acme\"}}}}")]
    BadJson { problem: String },
    #[error("{0}")]
    BadTicket(String),
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
}

fn collection_names() -> String {
    OutputCollection::ALL
        .iter()
        .map(|collection| collection.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The collection of this name, or an error listing the collections.
pub fn collection(name: &str) -> Result<OutputCollection, QueryError> {
    OutputCollection::from_name(name).ok_or_else(|| QueryError::UnknownCollection {
        name: name.to_string(),
    })
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
}

impl RowFilter {
    /// Parses `{"column": value, …}` against `collection`'s schema.
    pub fn parse(
        collection: OutputCollection,
        filter: &Map<String, Value>,
    ) -> Result<Self, QueryError> {
        let schema = schema(collection);
        let mut parsed = RowFilter::default();
        for (column, value) in filter {
            let index = schema
                .index_of(column)
                .map_err(|_| QueryError::UnknownColumn {
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

    /// The key (tenant or topic) every matching row has, if the filter fixes it.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Whether `row` satisfies every condition.
    pub fn matches(&self, row: &Row) -> bool {
        if self.conditions.is_empty() {
            return true;
        }
        let cells = cells(row);
        self.conditions
            .iter()
            .all(|(index, _, expected)| cell_equals(&cells[*index], expected))
    }
}

impl fmt::Display for RowFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .conditions
            .iter()
            .map(|(_, column, expected)| format!("{column}={expected:?}"))
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
) -> Result<Expected, QueryError> {
    let bad = |expected: &'static str| QueryError::BadFilterValue {
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
            Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
                .map(|time| Expected::Integer(time.timestamp_millis()))
                .map_err(|_| bad("milliseconds since the epoch or an RFC 3339 timestamp")),
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
        | (Cell::Decimal(None), Expected::Null) => true,
        (Cell::Text(Some(text)), Expected::Text(wanted)) => text == wanted,
        (Cell::Int32(Some(value)), Expected::Integer(wanted)) => i64::from(*value) == *wanted,
        (Cell::Int64(value), Expected::Integer(wanted)) => value == wanted,
        (Cell::UInt32(value), Expected::Integer(wanted)) => i64::from(*value) == *wanted,
        (Cell::UInt64(value), Expected::Integer(wanted)) => {
            i64::try_from(*value).is_ok_and(|value| value == *wanted)
        }
        (Cell::Decimal(Some(value)), Expected::Decimal(wanted)) => value == wanted,
        (Cell::Date32(value), Expected::Integer(wanted)) => i64::from(*value) == *wanted,
        (Cell::TimestampMs(value), Expected::Integer(wanted)) => value == wanted,
        _ => false,
    }
}

/// A snapshot read.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotQuery {
    pub collection: OutputCollection,
    pub filter: Arc<RowFilter>,
    pub as_of: Option<Time>,
    pub limit: Option<usize>,
    /// Only this process's shard (`"shard": true`): what one process of a
    /// cluster asks the others for, to answer a read with the whole state.
    pub shard: bool,
}

/// A subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscribeQuery {
    pub collection: OutputCollection,
    pub filter: Arc<RowFilter>,
    /// Send the state at `as_of` first (default true).
    pub snapshot: bool,
    /// With a snapshot, its time (default newest); without, the progress time
    /// to resume from: every change at or after it is sent.
    pub as_of: Option<Time>,
    /// Only this process's shard (see [`SnapshotQuery::shard`]).
    pub shard: bool,
}

/// A parsed ticket.
#[derive(Clone, Debug, PartialEq)]
pub enum Ticket {
    Snapshot(SnapshotQuery),
    Subscribe(SubscribeQuery),
}

/// Parses a DoGet ticket (SPEC §5).
pub fn parse_ticket(bytes: &[u8]) -> Result<Ticket, QueryError> {
    let text = std::str::from_utf8(bytes).map_err(|_| QueryError::BadJson {
        problem: "the ticket is not UTF-8".to_string(),
    })?;
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        return Ok(Ticket::Snapshot(SnapshotQuery {
            collection: collection(trimmed)?,
            filter: Arc::default(),
            as_of: None,
            limit: None,
            shard: false,
        }));
    }
    let value: Value = serde_json::from_str(trimmed).map_err(|error| QueryError::BadJson {
        problem: error.to_string(),
    })?;
    let object = value.as_object().expect("starts with {");
    const KNOWN: [&str; 7] = [
        "collection",
        "subscribe",
        "filter",
        "as_of",
        "limit",
        "snapshot",
        "shard",
    ];
    if let Some(unknown) = object.keys().find(|key| !KNOWN.contains(&key.as_str())) {
        return Err(QueryError::BadTicket(format!(
            "unknown ticket field {unknown:?}; the fields are: {}",
            KNOWN.join(", ")
        )));
    }
    let as_of = match object.get("as_of") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| {
            QueryError::BadTicket(format!(
                "as_of must be a time in milliseconds since the epoch, got {value}"
            ))
        })?),
    };
    let name_of = |field: &str| -> Result<Option<OutputCollection>, QueryError> {
        match object.get(field) {
            None => Ok(None),
            Some(Value::String(name)) => collection(name).map(Some),
            Some(other) => Err(QueryError::BadTicket(format!(
                "{field} must be a collection name, got {other}"
            ))),
        }
    };
    let filter_of = |collection: OutputCollection| -> Result<Arc<RowFilter>, QueryError> {
        match object.get("filter") {
            None | Some(Value::Null) => Ok(Arc::default()),
            Some(Value::Object(filter)) => RowFilter::parse(collection, filter).map(Arc::new),
            Some(other) => Err(QueryError::BadTicket(format!(
                "filter must be an object of column: value, got {other}"
            ))),
        }
    };
    let shard = match object.get("shard") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(other) => {
            return Err(QueryError::BadTicket(format!(
                "shard must be true or false, got {other}"
            )))
        }
    };
    match (name_of("collection")?, name_of("subscribe")?) {
        (Some(collection), None) => {
            if object.contains_key("snapshot") {
                return Err(QueryError::BadTicket("snapshot applies to subscriptions only".to_string()));
            }
            let limit = match object.get("limit") {
                None | Some(Value::Null) => None,
                Some(value) => Some(value.as_u64().ok_or_else(|| {
                    QueryError::BadTicket(format!("limit must be a non-negative integer, got {value}"))
                })? as usize),
            };
            Ok(Ticket::Snapshot(SnapshotQuery {
                collection,
                filter: filter_of(collection)?,
                as_of,
                limit,
                shard,
            }))
        }
        (None, Some(collection)) => {
            if object.contains_key("limit") {
                return Err(QueryError::BadTicket("limit applies to snapshots only".to_string()));
            }
            let snapshot = match object.get("snapshot") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(flag)) => *flag,
                Some(other) => return Err(QueryError::BadTicket(format!("snapshot must be true or false, got {other}"))),
            };
            Ok(Ticket::Subscribe(SubscribeQuery {
                collection,
                filter: filter_of(collection)?,
                snapshot,
                as_of,
                shard,
            }))
        }
        (Some(_), Some(_)) => Err(QueryError::BadTicket(
            "a ticket names either \"collection\" (a snapshot) or \"subscribe\" (a subscription), not both".to_string(),
        )),
        (None, None) => Err(QueryError::BadTicket(
            "a ticket needs \"collection\" (a snapshot) or \"subscribe\" (a subscription)".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trimatch_dataflows::model::Text;
    use trimatch_dataflows::rows::{ExceptionRow, ExceptionType};

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
        })
    }

    fn snapshot(ticket: &str) -> SnapshotQuery {
        match parse_ticket(ticket.as_bytes()).unwrap() {
            Ticket::Snapshot(query) => query,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bare_names_and_json_tickets() {
        assert_eq!(
            snapshot("match_exceptions").collection,
            OutputCollection::MatchExceptions
        );
        let query = snapshot(
            r#"{"collection": "po_lines", "as_of": 17, "limit": 5, "filter": {"tenant_id": "acme"}}"#,
        );
        assert_eq!(
            (query.collection, query.as_of, query.limit),
            (OutputCollection::PoLines, Some(17), Some(5))
        );
        assert_eq!(query.filter.key(), Some("acme"));
        let Ticket::Subscribe(subscription) =
            parse_ticket(br#"{"subscribe": "match_exceptions", "snapshot": false, "as_of": 9}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (subscription.snapshot, subscription.as_of),
            (false, Some(9))
        );
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

    #[test]
    fn mistakes_get_messages_that_say_what_to_do() {
        let error = |ticket: &str| parse_ticket(ticket.as_bytes()).unwrap_err().to_string();
        assert!(error("match_exception").contains("unknown collection \"match_exception\"; the collections are: invoice_matches, match_exceptions"));
        assert!(error("{\"collection\": ").starts_with("the ticket is not valid JSON"));
        assert!(error(r#"{"collection": "po_lines", "filter": {"tenant": "acme"}}"#)
            .contains("unknown filter column \"tenant\" for po_lines; its columns are: tenant_id, po_number"));
        assert!(
            error(r#"{"collection": "po_lines", "filter": {"line_no": "two"}}"#)
                .contains("needs an integer")
        );
        assert!(error(
            r#"{"collection": "invoice_matches", "filter": {"invoice_date": "03/11/2026"}}"#
        )
        .contains("YYYY-MM-DD"));
        assert!(
            error(r#"{"collection": "po_lines", "as_of": -1}"#).contains("as_of must be a time")
        );
        assert!(error(r#"{"collection": "po_lines", "lmit": 3}"#)
            .contains("unknown ticket field \"lmit\""));
        assert!(error(r#"{"filter": {}}"#).contains("needs \"collection\""));
    }
}
