//! Every compression codec producers use (none, gzip, snappy, lz4, zstd),
//! produced by confluent-kafka into librdkafka's mock cluster (which keeps
//! batches exactly as produced, so the consumer really decompresses each
//! codec) and into a real broker process (tansu): every message is consumed
//! and accounted for, and every collection equals the plain evaluation of the
//! final documents.
//!
//! tansu 0.6.0 accepts snappy batches but cannot serve them back (it fails
//! the fetch with its own `UnexpectedType("Snappy")`), so against tansu the
//! history is produced without snappy; `kafka_stalls.rs` uses that to check
//! that an unreadable partition is reported as stalled.

mod support;

use std::io::Write;
use std::process::Command;

use serde_json::json;
use support::*;
use trimatch::pipeline::Pipeline;
use trimatch_dataflows::model::DocumentKind;
use trimatch_workload::{Workload, WorkloadConfig};

const EVERY_CODEC: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];
/// What tansu 0.6.0 can serve back.
const TANSU_CODECS: &[&str] = &["none", "gzip", "lz4", "zstd"];

#[test]
fn every_codec_is_read_and_applied_from_tansu() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 2, 2, 1, 1, 1]);
    produce_with_codecs_and_compare(&broker.address, TANSU_CODECS);
}

#[test]
fn every_codec_is_read_and_applied_from_the_mock_cluster() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    for (kind, partitions) in DocumentKind::ALL.into_iter().zip([2, 2, 2, 1, 1, 1]) {
        mock.create_topic(kind.default_topic(), partitions, 1)
            .unwrap();
    }
    produce_with_codecs_and_compare(&mock.bootstrap_servers(), EVERY_CODEC);
}

/// Produces a generated history with confluent-kafka, a slice per codec, to
/// `brokers`, then checks a bounded run over it.
fn produce_with_codecs_and_compare(brokers: &str, codecs: &[&str]) {
    let python = std::env::var("TRIMATCH_PYTHON")
        .expect("TRIMATCH_PYTHON must name a Python with confluent-kafka (scripts/test sets it)");
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 23,
        tenants: 3,
        bad_share: 0.02,
        ..WorkloadConfig::default()
    })
    .take(5_000)
    .collect();
    // Consecutive slices, one per codec, so every codec carries creates,
    // updates and deletes of documents the other codecs carried too.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let slice = messages.len().div_ceil(codecs.len());
    for (index, message) in messages.iter().enumerate() {
        let text = |bytes: &Option<Vec<u8>>| {
            bytes
                .as_ref()
                .map(|bytes| String::from_utf8(bytes.clone()).unwrap())
        };
        let line = json!({
            "topic": message.kind.default_topic(),
            "key": text(&message.key),
            "value": text(&message.value),
            "codec": codecs[index / slice],
        });
        writeln!(file, "{line}").unwrap();
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/produce_with_codecs.py"
    );
    let output = Command::new(&python)
        .arg(script)
        .arg(brokers)
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for codec in codecs {
        assert!(stdout.contains(&format!("{codec}: ")), "{stdout}");
    }

    let mut source = source_config(brokers);
    source.until_end = true;
    let pipeline = Pipeline::start(pipeline_config(source, 2)).unwrap();
    let metrics = pipeline.metrics();
    let state = pipeline.join().unwrap();
    let counters = metrics.snapshot();
    let consumed: u64 = counters.values().map(|partition| partition.consumed).sum();
    assert_eq!(consumed, messages.len() as u64, "every message consumed");
    for ((topic, partition), counters) in &counters {
        assert_eq!(
            counters.consumed,
            counters.applied + counters.dead_lettered + counters.skipped,
            "{topic}/{partition}"
        );
        assert!(
            counters.errors.is_empty(),
            "{topic}/{partition}: {:?}",
            counters.errors
        );
    }
    assert_same_state(
        &matching_state(&state.collections),
        &expected_state(&final_documents(&messages)),
        "messages produced with every codec",
    );
    let kinds: Vec<DocumentKind> = messages.iter().map(|message| message.kind).collect();
    assert!(DocumentKind::ALL.iter().all(|kind| kinds.contains(kind)));
}
