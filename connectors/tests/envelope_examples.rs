//! The upsert-envelope examples in `schemas/examples/upsert_keys.json`
//! through the real envelope decoder: every valid message decodes, every
//! invalid one is rejected with the documented reason.

use std::path::PathBuf;

use serde_json::Value;
use trimatch_connectors::envelope::decode_upsert;
use trimatch_dataflows::model::DocumentKind;

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/examples")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn kind_of(topic: &str) -> DocumentKind {
    DocumentKind::ALL
        .into_iter()
        .find(|kind| kind.default_topic() == topic)
        .unwrap_or_else(|| panic!("unknown topic {topic}"))
}

#[test]
fn upsert_key_examples_follow_the_envelope_rules() {
    let examples = load("upsert_keys.json");
    let text = |value: &Value| value.as_str().map(|s| s.as_bytes().to_vec());
    for valid in examples["valid"].as_array().unwrap() {
        let kind = kind_of(valid["topic"].as_str().unwrap());
        let (key, value) = (text(&valid["key"]), text(&valid["value"]));
        let upsert = decode_upsert(kind, key.as_deref(), value.as_deref())
            .unwrap_or_else(|e| panic!("{valid} was rejected: {e}"));
        assert_eq!(upsert.document.is_none(), value.is_none());
    }
    for invalid in examples["invalid"].as_array().unwrap() {
        let kind = kind_of(invalid["topic"].as_str().unwrap());
        let reason = invalid["reason"].as_str().unwrap();
        let (key, value) = (text(&invalid["key"]), text(&invalid["value"]));
        let error = decode_upsert(kind, key.as_deref(), value.as_deref()).expect_err(reason);
        assert!(
            error.to_string().starts_with(reason),
            "{error} is documented as {reason}"
        );
    }
}
