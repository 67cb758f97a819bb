//! Hostile and mistaken input gets a clear answer and never a panic.
//!
//! * A corpus of bad input, each entry with the error it must get: Flight
//!   tickets (`tests/bad_input/tickets.json`), Debezium events
//!   (`schemas/examples/debezium.json`), and serve settings (below). The
//!   documents' and upsert keys' examples in `schemas/examples/` are run by
//!   the dataflows and connectors tests.
//! * A property test: arbitrary bytes, and valid documents and tickets
//!   mutated at random, through every document decoder, both envelopes and
//!   the ticket parser. Whatever comes in, each returns a value or an error.

use std::path::PathBuf;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use trimatch::serve::tickets::parse_ticket;
use trimatch_connectors::envelope::{decode_message, Decoded};
use trimatch_connectors::Envelope;
use trimatch_dataflows::decode::decode_document;
use trimatch_dataflows::model::DocumentKind;

fn load(path: &str) -> Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full)
        .unwrap_or_else(|error| panic!("{}: {error}", full.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_bad_ticket_gets_its_error() {
    let corpus = load("tests/bad_input/tickets.json");
    let entries = corpus["invalid"].as_array().unwrap();
    assert!(entries.len() >= 25);
    for entry in entries {
        let ticket = entry["ticket"].as_str().unwrap();
        let expected = entry["error"].as_str().unwrap();
        match parse_ticket(ticket.as_bytes()) {
            Ok(query) => panic!("{ticket:?} was accepted as {query:?}"),
            Err(error) => assert!(
                error.to_string().starts_with(expected),
                "{ticket:?}: got {:?}, expected it to start with {expected:?}",
                error.to_string()
            ),
        }
    }
}

#[test]
fn every_debezium_example_decodes_or_gets_its_reason() {
    let examples = load("schemas/examples/debezium.json");
    let kind = DocumentKind::PurchaseOrder;
    assert_eq!(examples["topic"], kind.default_topic());
    let bytes = |example: &Value| -> Option<Vec<u8>> {
        match (&example["raw"], &example["value"]) {
            (Value::String(raw), _) => Some(raw.clone().into_bytes()),
            (_, Value::Null) => None,
            (_, value) => Some(value.to_string().into_bytes()),
        }
    };
    for valid in examples["valid"].as_array().unwrap() {
        let decoded = decode_message(kind, Envelope::Debezium, None, bytes(valid).as_deref())
            .unwrap_or_else(|error| panic!("{valid} was rejected: {error}"));
        let effect = match decoded {
            Decoded::Ignored => "ignored",
            Decoded::Change(upsert) if upsert.document.is_some() => "upsert",
            Decoded::Change(_) => "delete",
        };
        assert_eq!(effect, valid["effect"], "{valid}");
    }
    let invalid = examples["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 10);
    for example in invalid {
        let reason = example["reason"].as_str().unwrap();
        let error = decode_message(kind, Envelope::Debezium, None, bytes(example).as_deref())
            .expect_err(reason)
            .to_string();
        assert!(
            error.starts_with(reason),
            "{error:?} is documented as {reason:?}"
        );
    }
}

/// Arguments and environment variables `trimatch serve` must refuse, and
/// words its error must contain.
type BadSetting = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

/// Settings `trimatch serve` must refuse at start, with the words its error
/// must contain (flags, environment variables and config-file keys alike).
#[test]
fn every_bad_setting_is_refused_naming_it() {
    let corpus: [BadSetting; 10] = [
        (
            &["--price-tolerance-pct=-1"],
            &[],
            &["--price-tolerance-pct", "cannot be negative"],
        ),
        (
            &["--total-tolerance-abs", "0.0000001"],
            &[],
            &["--total-tolerance-abs", "6 fractional digits"],
        ),
        (
            &["--qty-tolerance-pct", "lots"],
            &[],
            &["--qty-tolerance-pct", "expected a decimal"],
        ),
        (&["--retention-seconds", "0"], &[], &["--retention-seconds"]),
        (
            &["--retention-seconds", "99999999999"],
            &[],
            &["--retention-seconds"],
        ),
        (&["--workers", "0"], &[], &["--workers", "at least 1"]),
        (
            &["--dead-letter-capacity=-3"],
            &[],
            &["--dead-letter-capacity"],
        ),
        (&["--start", "yesterday"], &[], &["--start"]),
        (
            &[],
            &[("TRIMATCH_PRICE_TOLERANCE_ABS", "-0.5")],
            &["--price-tolerance-abs", "cannot be negative"],
        ),
        (&["--envelope", "invoices=avro"], &[], &["--envelope"]),
    ];
    for (args, environment, words) in corpus {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_trimatch"))
            .arg("serve")
            .args(args)
            .envs(environment.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?} {environment:?}: {stderr}"
        );
        for word in words {
            assert!(stderr.contains(word), "{args:?} {environment:?}: {stderr}");
        }
    }
}

/// Valid inputs to start mutations from: documents of every kind, a Debezium
/// event, tickets, keys.
fn seeds() -> Vec<(DocumentKind, Value)> {
    let mut seeds = Vec::new();
    for kind in DocumentKind::ALL {
        let examples = load(&format!("schemas/examples/{}.json", kind.default_topic()));
        for valid in examples["valid"].as_array().unwrap() {
            seeds.push((kind, valid.clone()));
        }
    }
    seeds
}

/// A JSON value of any shape, some of them hostile: huge and tiny numbers,
/// long strings, deep nesting, serde_json's private number token.
fn random_value(rng: &mut SmallRng, depth: u32) -> Value {
    match rng.random_range(0..12) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e300),
        4 => serde_json::from_str("1e400").unwrap_or(Value::Null),
        5 => json!("x".repeat(rng.random_range(0..600))),
        6 => json!(format!("{}.{}", rng.random::<u32>(), rng.random::<u64>())),
        7 => json!({"$serde_json::private::Number": "1"}),
        8 => json!("2026-13-45"),
        9 if depth < 4 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        10 if depth < 4 => {
            let mut object = serde_json::Map::new();
            for field in [
                "tenant_id",
                "lines",
                "quantity",
                "po_line_no",
                "collection",
                "filter",
            ] {
                if rng.random::<bool>() {
                    object.insert(field.to_string(), random_value(rng, depth + 1));
                }
            }
            Value::Object(object)
        }
        _ => json!("\u{0}\u{fffd}é"),
    }
}

/// `value` with one field somewhere replaced by a random value, or removed.
fn mutate(rng: &mut SmallRng, value: &mut Value) {
    match value {
        Value::Object(object) if !object.is_empty() => {
            let keys: Vec<String> = object.keys().cloned().collect();
            let key = &keys[rng.random_range(0..keys.len())];
            match rng.random_range(0..4) {
                0 => {
                    object.remove(key);
                }
                1 => mutate(rng, object.get_mut(key).unwrap()),
                _ => {
                    object.insert(key.clone(), random_value(rng, 0));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let index = rng.random_range(0..items.len());
            mutate(rng, &mut items[index]);
        }
        other => *other = random_value(rng, 0),
    }
}

/// Random bytes, or a seed's text with bytes flipped, cut or inserted.
fn random_bytes(rng: &mut SmallRng, seed: &[u8]) -> Vec<u8> {
    if rng.random_range(0..4) == 0 {
        return (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
    }
    let mut bytes = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..3) {
            0 => bytes[at] = rng.random(),
            1 => bytes.truncate(at),
            _ => bytes.insert(at, *b"{}[]\",:0e-\\".get(rng.random_range(0..11)).unwrap()),
        }
    }
    bytes
}

#[test]
fn arbitrary_input_never_panics_a_decoder_an_envelope_or_the_ticket_parser() {
    let seeds = seeds();
    let tickets = [
        json!({"collection": "match_exceptions", "filter": {"tenant_id": "acme", "po_line_no": 2}, "as_of": 17, "limit": 5}),
        json!({"subscribe": "po_lines", "snapshot": false, "as_of": 9, "filter": {"unit_price": "2.5"}}),
    ];
    let mut rng = SmallRng::seed_from_u64(0x7ee7);
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let cases: u64 = std::env::var("TRIMATCH_PROPERTY_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(30_000);
    for case in 0..cases {
        let (kind, seed) = &seeds[case as usize % seeds.len()];
        let mut document = seed.clone();
        for _ in 0..rng.random_range(1..4) {
            mutate(&mut rng, &mut document);
        }
        let text = document.to_string();
        let bytes = random_bytes(&mut rng, text.as_bytes());
        for input in [text.as_bytes(), &bytes] {
            match decode_document(*kind, input) {
                Ok(_) => accepted += 1,
                Err(_) => rejected += 1,
            }
            let debezium = json!({"before": document, "after": document, "op": "u"}).to_string();
            let _ = decode_message(*kind, Envelope::Debezium, None, Some(debezium.as_bytes()));
            let _ = decode_message(*kind, Envelope::Debezium, None, Some(input));
            let _ = decode_message(*kind, Envelope::Upsert, Some(&bytes), Some(input));
            let _ = decode_message(*kind, Envelope::Upsert, Some(input), None);
        }
        let mut ticket = tickets[case as usize % tickets.len()].clone();
        mutate(&mut rng, &mut ticket);
        let ticket = ticket.to_string();
        let _ = parse_ticket(ticket.as_bytes());
        let _ = parse_ticket(&random_bytes(&mut rng, ticket.as_bytes()));
    }
    // The mutations reach both sides: some inputs stay valid, most do not.
    assert!(
        accepted > 0 && rejected > accepted,
        "{accepted} accepted, {rejected} rejected"
    );
}
