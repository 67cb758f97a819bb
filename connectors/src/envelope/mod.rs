//! Kafka message → document change, per envelope (SPEC §1.1): the
//! [`upsert`] envelope (the whole document, or a tombstone, with key rules)
//! and the [`debezium`] change events. Documents inside are validated by the
//! matching engine's decoders; every rejection is a
//! [`DecodeError`] naming the field path (`key.po_number`, `after.lines[0].quantity`).

use trimatch_dataflows::decode::{document_identity, DecodeError};
use trimatch_dataflows::model::{Document, DocumentKind, Fingerprint};

use crate::config::Envelope;

pub mod debezium;
pub mod upsert;

pub use upsert::decode_upsert;

/// One change to one document, as an upsert: the identity key and the new
/// version, or `None` for a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upsert {
    pub kind: DocumentKind,
    pub key: Fingerprint,
    /// The identity field values, tenant first (for logs and dead letters).
    pub identity: Vec<String>,
    pub document: Option<Document>,
}

impl Upsert {
    /// A new version of `document`.
    pub fn put(document: Document) -> Upsert {
        Upsert {
            kind: document.kind(),
            key: document.key(),
            identity: document_identity(&document),
            document: Some(document),
        }
    }

    /// The deletion of the document of `kind` with these identity values.
    pub fn delete(kind: DocumentKind, identity: Vec<String>) -> Upsert {
        let parts: Vec<&str> = identity.iter().map(String::as_str).collect();
        Upsert {
            kind,
            key: kind.key_of(&parts),
            identity,
            document: None,
        }
    }
}

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
            Some(bytes) => debezium::decode_debezium(kind, bytes).map(Decoded::Change),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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
