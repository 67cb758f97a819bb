//! What a reader asks for: Flight tickets (SPEC §5) parsed into queries, with
//! their filters validated against the collection's schema (`output::filter`).
//!
//! A ticket is either a bare collection name (`b"match_exceptions"`) or a JSON
//! object: `{"collection": …, "filter": {…}, "as_of": t, "limit": n}` for a
//! snapshot, `{"subscribe": …, "snapshot": true, "filter": {…}, "as_of": t}`
//! for a subscription. Either may carry `"tenants": ["acme", …]`: only rows of
//! those tenants (what a tenant-scoped principal's reads are limited to, and
//! what one cluster process asks another for on its behalf). Every mistake
//! gets a message saying what was wrong and what would be right.
//!
//! May use: `output::filter` (the filters tickets carry); nothing of serving.

use std::collections::BTreeSet;

use std::sync::Arc;

use serde_json::Value;
use trimatch_dataflows::{OutputCollection, Time};

use crate::output::filter::{FilterError, RowFilter};

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
    #[error(transparent)]
    Filter(#[from] FilterError),
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
    // Text that starts with `{` can still parse as something else: serde_json
    // reads `{"$serde_json::private::Number": "1"}` as a number.
    let Some(object) = value.as_object() else {
        return Err(QueryError::BadTicket(format!(
            "a JSON ticket must be an object such as {{\"collection\": \"match_exceptions\"}}, got {value}"
        )));
    };
    const KNOWN: [&str; 8] = [
        "collection",
        "subscribe",
        "filter",
        "tenants",
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
    let tenants = match object.get("tenants") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if !items.is_empty() => Some(
            items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<BTreeSet<String>>>()
                .ok_or_else(|| {
                    QueryError::BadTicket(format!(
                        "tenants must be a list of tenant ids, got {}",
                        object["tenants"]
                    ))
                })?,
        ),
        Some(other) => {
            return Err(QueryError::BadTicket(format!(
                "tenants must be a non-empty list of tenant ids such as [\"acme\"], got {other}"
            )))
        }
    };
    let filter_of = |collection: OutputCollection| -> Result<Arc<RowFilter>, QueryError> {
        let filter = match object.get("filter") {
            None | Some(Value::Null) => RowFilter::default(),
            Some(Value::Object(filter)) => RowFilter::parse(collection, filter)?,
            Some(other) => {
                return Err(QueryError::BadTicket(format!(
                    "filter must be an object of column: value, got {other}"
                )))
            }
        };
        Ok(Arc::new(match &tenants {
            Some(tenants) => filter.within_tenants(collection, tenants.clone())?,
            None => filter,
        }))
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
        let scoped = snapshot(
            r#"{"collection": "match_exceptions", "tenants": ["b", "a"], "filter": {"exception_type": "PRICE_VARIANCE"}}"#,
        );
        assert_eq!(
            scoped.filter.keys(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        let fixed = snapshot(
            r#"{"collection": "po_lines", "tenants": ["a"], "filter": {"tenant_id": "c"}}"#,
        );
        assert_eq!(
            fixed.filter.keys(),
            Some(Vec::new()),
            "a tenant outside the list reads nothing"
        );
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
        assert!(error(r#"{"$serde_json::private::Number": "1"}"#)
            .contains("a JSON ticket must be an object"));
    }
}
