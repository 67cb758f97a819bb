//! The **upsert** envelope (SPEC §1.1): the value is the whole current
//! document, a null value (tombstone) deletes it. The key is optional with a
//! value; a JSON-object key must carry the identity fields with the
//! document's values, and a tombstone needs one.

use trimatch_dataflows::decode::json::JsonObject;
use trimatch_dataflows::decode::{decode_document, identity_fields, identity_text, DecodeError};
use trimatch_dataflows::model::DocumentKind;

use super::Upsert;

/// Decodes a message of the upsert envelope.
pub fn decode_upsert(
    kind: DocumentKind,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Upsert, DecodeError> {
    // A key that is not a JSON object is the document's id as plain text
    // (SPEC §1.1), not checked.
    let key_object = key.and_then(|bytes| JsonObject::parse(bytes).ok());
    match value {
        None => {
            let object = key_object.ok_or_else(|| {
                DecodeError::new(
                    "key",
                    "a tombstone (null value) needs a JSON-object key with the identity fields",
                )
            })?;
            Ok(Upsert::delete(kind, identity_fields(kind, &object, "key")?))
        }
        Some(bytes) => {
            let upsert = Upsert::put(decode_document(kind, bytes)?);
            if let Some(object) = key_object {
                check_key_agrees(kind, &object, &upsert.identity)?;
            }
            Ok(upsert)
        }
    }
}

/// A JSON-object key beside a value must name the same document. An
/// optional identity field (a resolution's `po_line_no`, a policy's
/// `vendor_id` and `category`) may be left out of the key when the
/// document's is null.
fn check_key_agrees(
    kind: DocumentKind,
    key: &JsonObject<'_>,
    identity: &[String],
) -> Result<(), DecodeError> {
    for (field, value) in kind.identity_fields().iter().zip(identity) {
        let in_key = key.get(field);
        let agrees = match in_key {
            Some(in_key) => identity_text(kind, field, in_key).is_some_and(|text| text == *value),
            None if kind.is_optional_identity(field) => value.is_empty(),
            None => {
                return Err(DecodeError::new(
                    format!("key.{field}"),
                    "missing: a JSON-object key must carry the identity fields",
                ))
            }
        };
        if !agrees {
            let in_key = in_key.map_or_else(|| "nothing".to_string(), |json| json.to_string());
            return Err(DecodeError::new(
                format!("key.{field}"),
                format!("contradicts the value: key has {in_key}, document has {value:?}"),
            ));
        }
    }
    Ok(())
}
