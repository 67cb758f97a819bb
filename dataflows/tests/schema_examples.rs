//! The document examples in `schemas/examples/` through the real decoder:
//! every valid document decodes, every invalid one is rejected with the
//! documented reason. (The envelope's key examples are checked by the
//! connectors' tests.)

use std::path::PathBuf;

use serde_json::Value;
use trimatch_dataflows::decode::decode_document;
use trimatch_dataflows::model::DocumentKind;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples")
}

fn kind_of(topic: &str) -> DocumentKind {
    DocumentKind::ALL
        .into_iter()
        .find(|kind| kind.default_topic() == topic)
        .unwrap_or_else(|| panic!("unknown topic {topic}"))
}

fn load(name: &str) -> Value {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn document_examples_decode_or_are_rejected_with_their_reason() {
    let mut checked = 0;
    for topic in [
        "purchase_orders",
        "goods_receipts",
        "invoices",
        "match_policies",
        "exception_resolutions",
        "payments",
    ] {
        let examples = load(&format!("{topic}.json"));
        let kind = kind_of(examples["topic"].as_str().unwrap());
        for valid in examples["valid"].as_array().unwrap() {
            let bytes = valid.to_string();
            decode_document(kind, bytes.as_bytes())
                .unwrap_or_else(|e| panic!("{topic}: {valid} was rejected: {e}"));
            checked += 1;
        }
        for invalid in examples["invalid"].as_array().unwrap() {
            let reason = invalid["reason"].as_str().unwrap();
            let bytes = match &invalid["raw"] {
                Value::String(raw) => raw.clone(),
                _ => invalid["value"].to_string(),
            };
            match decode_document(kind, bytes.as_bytes()) {
                Ok(_) => {
                    panic!("{topic}: accepted a message that must be rejected ({reason}): {bytes}")
                }
                Err(error) => assert!(
                    error.to_string().starts_with(reason),
                    "{topic}: rejected with {:?}, documented as {reason:?}",
                    error.to_string()
                ),
            }
            checked += 1;
        }
    }
    assert!(checked >= 70, "only {checked} examples");
}

#[test]
fn every_topic_has_a_json_schema_naming_its_required_fields() {
    for kind in DocumentKind::ALL {
        let path = examples_dir().join(format!("../topics/{}.schema.json", kind.default_topic()));
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // An optional identity (a resolution's po_line_no, a policy's
        // vendor_id and category) may be absent: null.
        for field in kind
            .identity_fields()
            .iter()
            .filter(|field| !kind.is_optional_identity(field))
        {
            assert!(
                required.contains(field),
                "{}: identity field {field} is not required",
                path.display()
            );
        }
    }
}
