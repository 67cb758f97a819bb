//! SPEC §8 end to end: `trimatch serve` against a real broker (tansu). The
//! POs, receipts, invoices and policies of a generated history are produced
//! here; its payments — allocated, by reference, with typos, partial, over,
//! duplicate, voided, by the wrong vendor or currency — are produced with confluent-kafka (a
//! producer nobody here wrote), in order. `tests/python/payment_client.py`
//! then reads `invoice_matches` and the three payment collections over
//! Flight with pyarrow, at one time after the last message, and checks that
//! they equal the plain evaluation of the final documents (the oracle,
//! written from the SPEC), which this test hands it as Arrow IPC files.

mod support;

use std::io::Write;

use support::*;
use trimatch::output::columns::{record_batch, schema};
use trimatch_dataflows::model::DocumentKind;
use trimatch_dataflows::{OutputCollection, Row};
use trimatch_workload::{Workload, WorkloadConfig};

#[test]
fn payments_produced_with_confluent_kafka_read_back_with_pyarrow_equal_the_oracle() {
    let Ok(python) = std::env::var("TRIMATCH_PYTHON") else {
        eprintln!("TRIMATCH_PYTHON is not set: skipping the payments test (scripts/test sets it)");
        return;
    };
    // A history rich in payments: a quarter of the messages, 3 % malformed.
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 18,
        tenants: 3,
        vendors_per_tenant: 3,
        bad_share: 0.03,
        payment_share: 0.25,
        ..WorkloadConfig::default()
    })
    .take(4_000)
    .collect();
    let (payments, others): (Vec<_>, Vec<_>) = messages
        .iter()
        .cloned()
        .partition(|message| message.kind == DocumentKind::Payment);
    assert!(payments.len() > 300, "{} payments", payments.len());

    let expected = expected_state(&final_documents(&messages));
    let kinds = |rows: &[trimatch_dataflows::rows::PaymentExceptionRow]| {
        rows.iter()
            .map(|row| row.exception_type)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(
        kinds(&expected.payment_exceptions).len() == 7,
        "the history raises every payment exception type: {:?}",
        kinds(&expected.payment_exceptions)
    );
    assert!(!expected.payment_suggestions.is_empty());
    assert!(!expected.payment_matches.is_empty());

    // The oracle's collections, as the Arrow IPC files the client compares with.
    let dir = tempfile::tempdir().unwrap();
    let expected_rows: [(OutputCollection, Vec<Row>); 4] = [
        (
            OutputCollection::InvoiceMatches,
            expected
                .invoice_matches
                .iter()
                .cloned()
                .map(Row::InvoiceMatch)
                .collect(),
        ),
        (
            OutputCollection::PaymentMatches,
            expected
                .payment_matches
                .iter()
                .cloned()
                .map(Row::PaymentMatch)
                .collect(),
        ),
        (
            OutputCollection::PaymentExceptions,
            expected
                .payment_exceptions
                .iter()
                .cloned()
                .map(Row::PaymentException)
                .collect(),
        ),
        (
            OutputCollection::PaymentSuggestions,
            expected
                .payment_suggestions
                .iter()
                .cloned()
                .map(Row::PaymentSuggestion)
                .collect(),
        ),
    ];
    for (collection, rows) in &expected_rows {
        let schema = schema(*collection);
        let batch = record_batch(&schema, rows.iter()).unwrap();
        let path = dir.path().join(format!("{}.arrow", collection.name()));
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = arrow_ipc::writer::FileWriter::try_new(file, &schema).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
    }
    // The payment messages, in order, for confluent-kafka: hex bytes, null
    // for an absent key or a tombstone.
    let payments_file = dir.path().join("payments.jsonl");
    let mut file = std::fs::File::create(&payments_file).unwrap();
    let hex = |bytes: &Option<Vec<u8>>| {
        bytes.as_ref().map(|bytes| {
            bytes
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        })
    };
    for message in &payments {
        let line = serde_json::json!({"key": hex(&message.key), "value": hex(&message.value)});
        writeln!(file, "{line}").unwrap();
    }
    drop(file);

    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 1, 2, 1, 1, 3]);
    produce(&broker.address, &others);
    let (_serve, flight) = start_ready_serve(&broker.address);
    let stdout = run_python_check(
        &python,
        "payment_client.py",
        &[
            ("FLIGHT_ADDR", flight),
            ("BROKERS", broker.address.clone()),
            ("PAYMENTS_FILE", payments_file.display().to_string()),
            ("EXPECTED_DIR", dir.path().display().to_string()),
        ],
    );
    for (collection, rows) in &expected_rows {
        assert!(
            stdout.contains(&format!("{}: {} rows equal", collection.name(), rows.len())),
            "{stdout}"
        );
    }
}
