//! A partition that cannot make progress is reported, not hidden: tansu 0.6.0
//! accepts snappy-compressed batches but fails every fetch that would return
//! one, so the partition holding one can never be read. It must show up as
//! `stalled` in `source_progress` (with a reason) and in the metrics, the job
//! must be not ready, and the rest of the pipeline must go on: the other
//! worker's partitions are read to their ends and times keep completing.

mod support;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::*;
use trimatch::pipeline::Pipeline;
use trimatch_connectors::ownership::owner;
use trimatch_dataflows::model::DocumentKind;
use trimatch_dataflows::rows::PartitionHealth;
use trimatch_dataflows::{OutputCollection, Row};
use trimatch_workload::{Workload, WorkloadConfig};

#[test]
fn an_unreadable_partition_is_stalled_and_the_rest_goes_on() {
    let python = std::env::var("TRIMATCH_PYTHON")
        .expect("TRIMATCH_PYTHON must name a Python with confluent-kafka (scripts/test sets it)");
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 2, 2, 2, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 41,
        tenants: 2,
        bad_share: 0.0,
        ..WorkloadConfig::default()
    })
    .take(600)
    .collect();
    produce(&broker.address, &messages);

    // One snappy batch on a partition of worker 0 (of 2).
    let (topic, partition) = DocumentKind::ALL
        .iter()
        .flat_map(|kind| (0..2).map(move |partition| (kind.default_topic(), partition)))
        .find(|(topic, partition)| owner(topic, *partition, 2) == 0)
        .unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for index in 0..20 {
        let line = json!({"topic": topic, "partition": partition, "codec": "snappy",
            "key": null, "value": format!("{{\"not\": \"read\", \"index\": {index}}}")});
        writeln!(file, "{line}").unwrap();
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/produce_with_codecs.py"
    );
    let output = Command::new(&python)
        .args([script, &broker.address, file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ends = high_watermarks(&broker.address);

    let mut source = source_config(&broker.address);
    source.stall_after = Duration::from_secs(3);
    let pipeline = Pipeline::start(pipeline_config(source, 2)).unwrap();
    let metrics = pipeline.metrics();
    // Worker 1's partitions are read to their ends.
    wait_for(
        "worker 1's partitions to be read",
        Duration::from_secs(60),
        || {
            let counters = metrics.snapshot();
            ends.iter()
                .filter(|((topic, partition), _)| owner(topic, *partition, 2) == 1)
                .all(|(key, end)| counters.get(key).is_some_and(|c| c.next_offset == *end))
        },
    );
    // The unreadable partition is stalled, with a reason, in the metrics and
    // in source_progress at a complete time.
    wait_for(
        "the partition to be stalled",
        Duration::from_secs(30),
        || metrics.stalled().contains(&(topic.to_string(), partition)),
    );
    let reason = wait_for_stalled_row(&pipeline, topic, partition);
    assert!(reason.contains("no message for 3 s"), "{reason}");
    let why = pipeline
        .handle()
        .not_ready()
        .expect("not ready while a partition is stalled");
    assert!(why.contains(&format!("{topic}/{partition}")), "{why}");
    // Times keep completing: the rest of the pipeline goes on.
    let before = pipeline.newest_complete().unwrap();
    wait_for("a later complete time", Duration::from_secs(10), || {
        pipeline
            .newest_complete()
            .is_some_and(|now| now > before + 500)
    });
    assert!(pipeline.handle().unhealthy().is_none());
    pipeline.shutdown().unwrap();
}

/// Waits for `topic/partition`'s `source_progress` row to say `stalled`;
/// returns its reason.
fn wait_for_stalled_row(pipeline: &Pipeline, topic: &str, partition: i32) -> String {
    let mut reason = None;
    wait_for(
        "a stalled source_progress row",
        Duration::from_secs(30),
        || {
            let as_of = pipeline.newest_complete().unwrap_or(0);
            let rows = read_all(pipeline, as_of);
            reason = rows[&OutputCollection::SourceProgress]
                .iter()
                .find_map(|row| match row {
                    Row::SourceProgress(row)
                        if row.topic == topic
                            && row.partition == partition
                            && row.state == PartitionHealth::Stalled =>
                    {
                        row.state_reason.as_ref().map(|reason| reason.to_string())
                    }
                    _ => None,
                });
            reason.is_some()
        },
    );
    reason.unwrap()
}
