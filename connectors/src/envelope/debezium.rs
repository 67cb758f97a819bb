//! The **Debezium** envelope (SPEC §1.1). The value is `{"before", "after",
//! "op"}`, or the same wrapped as `{"schema": …, "payload": {…}}`. A non-null
//! `after` is an upsert of it; a null `after` deletes the document named by
//! `before`'s identity fields. A null value (the Kafka tombstone Debezium
//! writes after a delete) is ignored, by [`super::decode_message`]. The
//! message key is not checked: Debezium keys carry the table's primary-key
//! columns, whose names need not be the document's identity fields.

use trimatch_dataflows::decode::json::{JsonObject, NotAnObject};
use trimatch_dataflows::decode::{document_from_json, identity_fields, DecodeError};
use trimatch_dataflows::model::DocumentKind;

use super::Upsert;

/// Decodes the value of a Debezium change event.
pub fn decode_debezium(kind: DocumentKind, bytes: &[u8]) -> Result<Upsert, DecodeError> {
    let mut event = JsonObject::parse(bytes).map_err(|error| match error {
        NotAnObject::Invalid(error) => DecodeError::not_json("value", &error),
        NotAnObject::OtherType(_) => {
            DecodeError::new("value", "a Debezium change event must be a JSON object")
        }
    })?;
    if event.contains_key("schema") || !event.contains_key("op") {
        if let Some(payload) = event.get("payload") {
            event = payload.as_object().ok_or_else(|| {
                DecodeError::new("payload", "a Debezium payload must be a JSON object")
            })?;
        }
    }
    let op = event.get("op").and_then(|op| op.as_str());
    match event.present("after") {
        Some(after) => {
            let document =
                document_from_json(kind, after).map_err(|error| error.nested_in("after"))?;
            Ok(Upsert::put(document))
        }
        None => {
            if op.as_ref().is_some_and(|op| op != "d") {
                return Err(DecodeError::new(
                    "after",
                    format!("op {:?} needs a non-null `after`", op.unwrap_or_default()),
                ));
            }
            let before = event
                .present("before")
                .and_then(|before| before.as_object())
                .ok_or_else(|| {
                    DecodeError::new(
                        "before",
                        "a delete (null `after`) needs a `before` object with the identity fields",
                    )
                })?;
            Ok(Upsert::delete(
                kind,
                identity_fields(kind, &before, "before")?,
            ))
        }
    }
}
