//! Kafka message → document change, per envelope (SPEC §1.1), with the
//! validated decoders of the matching engine.
//!
//! **Debezium.** The value is `{"before", "after", "op"}`, or the same wrapped
//! as `{"schema": …, "payload": {…}}`. A non-null `after` is an upsert of it; a
//! null `after` deletes the document named by `before`'s identity fields. A null
//! value (the Kafka tombstone Debezium writes after a delete) is ignored. The
//! message key is not checked: Debezium keys carry the table's primary-key
//! columns, whose names need not be the document's identity fields.

use serde_json::{Map, Value};
use trimatch_dataflows::decode::{
    decode_upsert, document_from_json, identity_from_key, DecodeError, Upsert,
};
use trimatch_dataflows::model::DocumentKind;

use crate::config::Envelope;

/// What one message means for the documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A new version of a document, or its deletion.
    Change(Upsert),
    /// A message the envelope says to skip (a Debezium tombstone).
    Ignored,
}

/// Decodes one message of a topic holding documents of `kind`.
pub fn decode_message(
    kind: DocumentKind,
    envelope: Envelope,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Decoded, DecodeError> {
    match envelope {
        Envelope::Upsert => decode_upsert(kind, key, value).map(Decoded::Change),
        Envelope::Debezium => match value {
            None => Ok(Decoded::Ignored),
            Some(bytes) => decode_debezium(kind, bytes).map(Decoded::Change),
        },
    }
}

fn decode_debezium(kind: DocumentKind, bytes: &[u8]) -> Result<Upsert, DecodeError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| problem("value", format!("not valid JSON: {error}")))?;
    let mut event = value
        .as_object()
        .ok_or_else(|| problem("value", "a Debezium change event must be a JSON object"))?;
    if event.contains_key("schema") || !event.contains_key("op") {
        if let Some(payload) = event.get("payload") {
            event = payload
                .as_object()
                .ok_or_else(|| problem("payload", "a Debezium payload must be a JSON object"))?;
        }
    }
    let op = event.get("op").and_then(Value::as_str);
    match non_null(event, "after") {
        Some(after) => {
            let document = document_from_json(kind, after)
                .map_err(|error| problem(format!("after.{}", error.field), error.problem))?;
            Ok(Upsert::put(document))
        }
        None => {
            if op.is_some_and(|op| op != "d") {
                return Err(problem(
                    "after",
                    format!("op {:?} needs a non-null `after`", op.unwrap_or_default()),
                ));
            }
            let before = non_null(event, "before")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    problem(
                        "before",
                        "a delete (null `after`) needs a `before` object with the identity fields",
                    )
                })?;
            let identity = identity_from_key(kind, before).map_err(|error| {
                problem(error.field.replacen("key.", "before.", 1), error.problem)
            })?;
            Ok(Upsert::delete(kind, identity))
        }
    }
}

fn non_null<'v>(object: &'v Map<String, Value>, field: &str) -> Option<&'v Value> {
    object.get(field).filter(|value| !value.is_null())
}

fn problem(field: impl Into<String>, problem: impl Into<String>) -> DecodeError {
    DecodeError {
        field: field.into(),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PO: &str = r#"{"tenant_id":"acme","po_number":"PO-1","vendor_id":"V","currency":"USD",
        "lines":[{"line_no":1,"quantity":"1","unit_price":"2"}]}"#;

    fn debezium(value: Value) -> Result<Decoded, DecodeError> {
        decode_message(
            DocumentKind::PurchaseOrder,
            Envelope::Debezium,
            None,
            Some(value.to_string().as_bytes()),
        )
    }

    fn po() -> Value {
        serde_json::from_str(PO).unwrap()
    }

    fn change(decoded: Result<Decoded, DecodeError>) -> Upsert {
        match decoded {
            Ok(Decoded::Change(upsert)) => upsert,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn debezium_bare_and_wrapped_events_upsert_after() {
        let bare = change(debezium(json!({"before": null, "after": po(), "op": "c"})));
        let wrapped = change(debezium(
            json!({"schema": {"type": "struct"}, "payload": {"before": null, "after": po(), "op": "u"}}),
        ));
        assert_eq!(bare, wrapped);
        assert_eq!(bare.identity, vec!["acme", "PO-1"]);
        assert!(bare.document.is_some());
    }

    #[test]
    fn debezium_delete_uses_before_identity_and_tombstones_are_ignored() {
        let upsert = change(debezium(
            json!({"payload": {"before": po(), "after": null, "op": "d"}}),
        ));
        assert_eq!(upsert.document, None);
        assert_eq!(
            upsert.key,
            DocumentKind::PurchaseOrder.key_of(&["acme", "PO-1"])
        );
        let tombstone = decode_message(
            DocumentKind::PurchaseOrder,
            Envelope::Debezium,
            Some(b"{}"),
            None,
        );
        assert_eq!(tombstone, Ok(Decoded::Ignored));
    }

    #[test]
    fn debezium_rejections_name_the_field() {
        let reason = |value: Value| debezium(value).unwrap_err().to_string();
        assert!(
            reason(json!({"before": null, "after": {"tenant_id": "acme"}, "op": "c"}))
                .starts_with("after.po_number: ")
        );
        assert!(
            reason(json!({"before": {"tenant_id": "acme"}, "after": null, "op": "d"}))
                .starts_with("before.po_number: ")
        );
        assert!(reason(json!({"before": null, "after": null, "op": "d"})).starts_with("before: "));
        assert!(reason(json!({"after": null, "op": "u"})).starts_with("after: "));
        assert!(reason(json!([1])).starts_with("value: "));
        let not_json = decode_message(
            DocumentKind::PurchaseOrder,
            Envelope::Debezium,
            None,
            Some(b"{"),
        );
        assert!(not_json
            .unwrap_err()
            .to_string()
            .starts_with("value: not valid JSON"));
    }

    #[test]
    fn upsert_envelope_is_the_engine_decoder() {
        let key = br#"{"tenant_id":"acme","po_number":"PO-1"}"#;
        let upsert = change(decode_message(
            DocumentKind::PurchaseOrder,
            Envelope::Upsert,
            Some(key),
            Some(PO.as_bytes()),
        ));
        assert_eq!(upsert.identity, vec!["acme", "PO-1"]);
        let tombstone = change(decode_message(
            DocumentKind::PurchaseOrder,
            Envelope::Upsert,
            Some(key),
            None,
        ));
        assert_eq!(tombstone.document, None);
        let contradicting = br#"{"tenant_id":"acme","po_number":"PO-2"}"#;
        assert!(decode_message(
            DocumentKind::PurchaseOrder,
            Envelope::Upsert,
            Some(contradicting),
            Some(PO.as_bytes())
        )
        .is_err());
    }
}
