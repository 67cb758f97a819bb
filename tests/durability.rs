//! Durable state (SPEC §11) against a real broker: a job with a state
//! directory checkpoints as it runs and at a clean stop; a new job on the same
//! directory restores the checkpoint, goes on at its offsets, and ends in
//! exactly the state of an uninterrupted run — nothing lost, nothing applied
//! twice, the counters continuing, times increasing — and a reader resuming
//! its change feed across the restart misses and repeats nothing (in process,
//! and over Flight across a SIGTERM of `trimatch serve`). Restarts after the
//! broker deleted history, and against another Kafka cluster, are here too;
//! SIGKILLs under load are in `durability_kill.rs`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use support::*;
use trimatch::pipeline::{DurabilityConfig, Pipeline, PipelineConfig, ReadFailure};
use trimatch_dataflows::{OutputCollection, Row, Time};

fn durable_config(broker: &Tansu, state_dir: &std::path::Path) -> PipelineConfig {
    let mut config = pipeline_config(source_config(&broker.address), 2);
    config.durability = Some(DurabilityConfig::new(state_dir, Duration::from_millis(300)));
    config
}

/// Applies a change feed to a snapshot's rows.
fn apply(rows: &mut BTreeMap<Row, isize>, changes: &[(Row, Time, isize)]) {
    for (row, _, diff) in changes {
        *rows.entry(row.clone()).or_default() += diff;
    }
    rows.retain(|_, count| *count != 0);
}

#[test]
fn a_restart_from_a_checkpoint_goes_on_exactly_where_the_clean_stop_left_off() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [3, 2, 3, 1, 1, 1]);
    let state = tempfile::tempdir().unwrap();
    let messages = history(21, 4_000);
    let (first, second) = messages.split_at(2_500);
    produce(&broker.address, first);

    // The first run reads the first part and stops cleanly.
    let pipeline = Pipeline::start(durable_config(&broker, state.path())).unwrap();
    wait_until_reflected(&pipeline, first.len() as u64);
    wait_for("a periodic checkpoint", Duration::from_secs(10), || {
        pipeline
            .handle()
            .checkpoints()
            .is_some_and(|c| c.written.load(std::sync::atomic::Ordering::Relaxed) > 0)
    });
    let before_stop = partition_counters(&pipeline);
    let last_time_served = pipeline.newest_complete().unwrap();
    // What a subscriber of `match_exceptions` had seen up to the stop.
    let mut seen: BTreeMap<Row, isize> = pipeline
        .handle()
        .read(
            OutputCollection::MatchExceptions,
            Some(last_time_served),
            &Default::default(),
            None,
        )
        .unwrap()
        .rows
        .into_iter()
        .map(|row| (row, 1))
        .collect();
    pipeline.shutdown().unwrap();

    // The rest arrives while nothing runs.
    produce(&broker.address, second);

    let pipeline = Pipeline::start(durable_config(&broker, state.path())).unwrap();
    wait_until_reflected(&pipeline, messages.len() as u64);
    let restored = pipeline
        .handle()
        .restored()
        .expect("restored from the checkpoint");
    assert!(
        restored.checkpoint >= last_time_served,
        "the clean stop's checkpoint {} is after every time served ({last_time_served})",
        restored.checkpoint
    );
    let newest = wait_until_complete_now(&pipeline);
    assert!(
        newest > restored.checkpoint,
        "times keep increasing across the restart"
    );

    // Exactly the state of all the messages.
    let collections = read_all(&pipeline, newest);
    assert_same_state(
        &matching_state(&collections),
        &expected_state(&final_documents(&messages)),
        "after the restart",
    );
    // Nothing applied twice: the counters continue and balance, and every
    // partition was read once up to its high watermark.
    let after = partition_counters(&pipeline);
    let watermarks = high_watermarks(&broker.address);
    for (key, (consumed, accounted, next_offset)) in &after {
        assert_eq!(
            consumed, accounted,
            "{key:?}: consumed = applied + dead-lettered + skipped"
        );
        assert_eq!(*next_offset, watermarks[key], "{key:?} read to its end");
        assert_eq!(
            *consumed, *next_offset as u64,
            "{key:?}: each offset consumed once"
        );
        let (before, _, _) = before_stop.get(key).copied().unwrap_or_default();
        assert!(consumed >= &before, "{key:?}: counters continue");
    }
    let malformed = messages.iter().filter(|m| m.malformed).count();
    assert_eq!(collections[&OutputCollection::DeadLetters].len(), malformed);

    // A subscriber resuming from the last time it saw gets exactly the rest.
    let handle = pipeline.handle();
    let changes = handle
        .changes(
            OutputCollection::MatchExceptions,
            restored.checkpoint + 1,
            newest,
            &Default::default(),
        )
        .unwrap();
    apply(&mut seen, &changes);
    let now: BTreeMap<Row, isize> = collections[&OutputCollection::MatchExceptions]
        .iter()
        .map(|row| (row.clone(), 1))
        .collect();
    assert_eq!(seen, now, "resumed feed = snapshot before + changes after");

    // Resuming from a time between the checkpoint and the restart, or from
    // before the checkpoint, is refused with the reason.
    if restored.readable_from > restored.checkpoint + 1 {
        let error = handle
            .changes(
                OutputCollection::MatchExceptions,
                restored.checkpoint + 2,
                newest,
                &Default::default(),
            )
            .unwrap_err();
        assert!(
            matches!(error, ReadFailure::AcrossRestart { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("restored from the checkpoint"),
            "{error}"
        );
    }
    // From the previous run's last batch to the checkpoint the state is the
    // checkpoint's; before that batch nothing is retained.
    assert!(restored.unchanged_since <= restored.checkpoint);
    assert!(
        restored.unchanged_since <= last_time_served,
        "the last batch was served before the stop"
    );
    let at_last_batch = handle
        .read(
            OutputCollection::MatchExceptions,
            Some(restored.unchanged_since),
            &Default::default(),
            None,
        )
        .unwrap();
    assert_eq!(at_last_batch.as_of, restored.checkpoint);
    let error = handle
        .read(
            OutputCollection::InvoiceMatches,
            Some(restored.unchanged_since - 1),
            &Default::default(),
            None,
        )
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("older than the retained history"),
        "{error}"
    );
    pipeline.shutdown().unwrap();
}

/// Produces `count` rejected messages of `bytes` bytes each to every input
/// topic: history a broker's retention can delete.
fn produce_filler(brokers: &str, count: usize, bytes: usize) {
    use rdkafka::producer::{BaseRecord, Producer};
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let value = vec![b'x'; bytes];
    for kind in trimatch_dataflows::model::DocumentKind::ALL {
        for i in 0..count {
            let key = format!("filler-{i}");
            loop {
                let record = BaseRecord::to(kind.default_topic())
                    .key(key.as_bytes())
                    .payload(&value[..]);
                match producer.send(record) {
                    Ok(()) => break,
                    Err(_) => {
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

#[test]
fn a_restart_after_the_topics_were_truncated_keeps_the_full_state_from_the_checkpoint() {
    // librdkafka's mock cluster keeps about 5 MB per partition and deletes
    // the oldest records beyond that, as retention does on a real broker.
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    for kind in trimatch_dataflows::model::DocumentKind::ALL {
        mock.create_topic(kind.default_topic(), 1, 1).unwrap();
    }
    let brokers = mock.bootstrap_servers();
    let state = tempfile::tempdir().unwrap();
    let messages = history(41, 2_000);
    let (first, second) = messages.split_at(1_500);
    produce(&brokers, first);
    // Four megabytes of rejected messages after the documents: read, and
    // covered by the checkpoint.
    produce_filler(&brokers, 40, 100_000);

    let config = || {
        let mut config = pipeline_config(source_config(&brokers), 2);
        config.durability = Some(DurabilityConfig::new(state.path(), Duration::from_secs(1)));
        config
    };
    let pipeline = Pipeline::start(config()).unwrap();
    let topics = trimatch_dataflows::model::DocumentKind::ALL.len() as u64;
    let consumed = first.len() as u64 + topics * 40;
    wait_until_reflected(&pipeline, consumed);
    pipeline.shutdown().unwrap();

    // Two more megabytes: the broker deletes the oldest records, every
    // document of the first part among them, below the checkpoint's offsets.
    produce_filler(&brokers, 20, 100_000);
    produce(&brokers, second);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let manifest = {
        let dir = trimatch_state::StateDir::open(state.path()).unwrap();
        let (_, newest) = dir.generations().unwrap()[0].clone();
        trimatch_state::read_manifest(&newest).unwrap()
    };
    for kind in trimatch_dataflows::model::DocumentKind::ALL {
        let (low, _) = consumer
            .fetch_watermarks(kind.default_topic(), 0, Duration::from_secs(5))
            .unwrap();
        let checkpointed = manifest
            .partitions
            .iter()
            .find(|p| p.topic == kind.default_topic())
            .unwrap()
            .next_offset;
        assert!(
            low > 0 && low <= checkpointed,
            "{}: records deleted below the checkpoint's offset {checkpointed} (low watermark {low})",
            kind.default_topic()
        );
    }

    // A restart from the checkpoint has every document, the deleted ones too.
    let pipeline = Pipeline::start(config()).unwrap();
    wait_until_reflected(&pipeline, consumed + topics * 20 + second.len() as u64);
    assert!(pipeline.handle().restored().is_some());
    let newest = wait_until_complete_now(&pipeline);
    let expected = expected_state(&final_documents(&messages));
    assert_same_state(
        &matching_state(&read_all(&pipeline, newest)),
        &expected,
        "restored after the truncation",
    );
    pipeline.shutdown().unwrap();

    // Without the checkpoint, the deleted documents are gone: the state of
    // a replay differs (which is why the checkpoint matters).
    let mut replay = pipeline_config(source_config(&brokers), 2);
    replay.source.until_end = true;
    let replayed = trimatch::pipeline::run_until_end(replay).unwrap();
    assert_ne!(
        matching_state(&replayed.collections),
        expected,
        "a replay of the truncated topics must lose documents"
    );
}

/// Follows a subscription: applies its rows (the snapshot part as `+1`) to
/// `state` until a progress time after `until`, applying only changes at
/// times up to `until`; returns the last progress.
async fn follow_subscription(
    client: &mut arrow_flight::FlightClient,
    ticket: serde_json::Value,
    until: u64,
    state: &mut BTreeMap<Vec<String>, i64>,
) -> u64 {
    use arrow::array::AsArray;
    use arrow::datatypes::{Int64Type, UInt64Type};
    use futures::StreamExt;
    let mut stream = client
        .do_get(arrow_flight::Ticket::new(ticket.to_string()))
        .await
        .unwrap()
        .into_inner();
    while let Some(message) = stream.next().await {
        let message = message.unwrap();
        let arrow_flight::decode::DecodedPayload::RecordBatch(batch) = message.payload else {
            continue;
        };
        if let Ok(metadata) =
            serde_json::from_slice::<serde_json::Value>(&message.inner.app_metadata)
        {
            let progress = metadata["progress"].as_u64().unwrap();
            if progress > until {
                return progress;
            }
            continue;
        }
        let times = batch
            .column_by_name("_time")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let diffs = batch
            .column_by_name("_diff")
            .unwrap()
            .as_primitive::<Int64Type>();
        for index in 0..batch.num_rows() {
            if times.value(index) > until {
                continue;
            }
            let row = support::secured::rows_of(&[batch.slice(index, 1)], &["_time", "_diff"])
                .pop()
                .unwrap();
            *state.entry(row).or_default() += diffs.value(index);
        }
        state.retain(|_, count| *count != 0);
    }
    panic!("the subscription ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flight_subscription_resumes_across_a_clean_restart_missing_and_repeating_nothing() {
    use support::secured::{connection, serve, snapshot};
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 1, 2, 1, 1, 1]);
    let messages = history(51, 2_000);
    let (first, second) = messages.split_at(1_200);
    produce(&broker.address, first);
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let args = [
        "--state-dir",
        state_dir.to_str().unwrap(),
        "--checkpoint-interval-seconds",
        "1",
    ];

    // A dashboard subscribes (snapshot, then changes) and keeps the last progress.
    let served = serve(&broker, dir.path(), &args, None);
    let mut client = connection(&served, None).connect().await.unwrap();
    let (_, as_of) = snapshot(
        &mut client,
        &serde_json::json!({"collection": "invoice_matches"}),
    )
    .await
    .unwrap();
    let mut seen = BTreeMap::new();
    let progress = follow_subscription(
        &mut client,
        serde_json::json!({"subscribe": "invoice_matches"}),
        as_of,
        &mut seen,
    )
    .await;
    // SIGTERM: a clean stop, with a last checkpoint.
    let child = served.process.into_inner();
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "serve stops cleanly on SIGTERM");

    // More arrives while it is down; the restarted process reads it after the checkpoint.
    produce(&broker.address, second);
    let served = serve(&broker, dir.path(), &args, None);
    let mut client = connection(&served, None).connect().await.unwrap();
    let (rows, as_of) = snapshot(
        &mut client,
        &serde_json::json!({"collection": "invoice_matches"}),
    )
    .await
    .unwrap();
    let expected = expected_state(&final_documents(&messages));
    assert_eq!(
        rows.len(),
        expected.invoice_matches.len(),
        "every message is reflected"
    );
    follow_subscription(
        &mut client,
        serde_json::json!({"subscribe": "invoice_matches", "as_of": progress}),
        as_of,
        &mut seen,
    )
    .await;
    let resumed: Vec<Vec<String>> = seen
        .iter()
        .map(|(row, count)| {
            assert_eq!(*count, 1, "{row:?} seen {count} times");
            row.clone()
        })
        .collect();
    assert_eq!(
        resumed, rows,
        "the resumed feed equals the snapshot: nothing missing, nothing repeated"
    );
}

#[test]
fn a_checkpoint_is_refused_against_another_kafka_cluster() {
    let config = |brokers: &str, state: &Path| {
        let mut config = pipeline_config(source_config(brokers), 2);
        config.durability = Some(DurabilityConfig::new(state, Duration::from_secs(1)));
        config
    };
    let mock_cluster = || {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        for kind in trimatch_dataflows::model::DocumentKind::ALL {
            mock.create_topic(kind.default_topic(), 1, 1).unwrap();
        }
        mock
    };
    let state = tempfile::tempdir().unwrap();
    let first = mock_cluster();
    let messages = history(61, 300);
    produce(&first.bootstrap_servers(), &messages);
    let pipeline = Pipeline::start(config(&first.bootstrap_servers(), state.path())).unwrap();
    wait_until_reflected(&pipeline, messages.len() as u64);
    pipeline.shutdown().unwrap();
    let dir = trimatch_state::StateDir::open(state.path()).unwrap();
    let (_, newest) = dir.generations().unwrap()[0].clone();
    let recorded = trimatch_state::read_manifest(&newest)
        .unwrap()
        .kafka_cluster_id
        .expect("the checkpoint names its Kafka cluster");

    // Same topic names, another cluster: its offsets would mean nothing.
    let second = mock_cluster();
    produce(&second.bootstrap_servers(), &messages);
    let pipeline = Pipeline::start(config(&second.bootstrap_servers(), state.path())).unwrap();
    wait_for("the refusal", Duration::from_secs(30), || {
        pipeline.error().is_some()
    });
    let error = pipeline.error().unwrap();
    assert!(error.contains(&recorded), "{error}");
    assert!(error.contains("--reset-state"), "{error}");
    let _ = pipeline.shutdown();

    // The same cluster again restores.
    let pipeline = Pipeline::start(config(&first.bootstrap_servers(), state.path())).unwrap();
    wait_until_reflected(&pipeline, messages.len() as u64);
    assert!(pipeline.handle().restored().is_some());
    assert!(pipeline.error().is_none());
    pipeline.shutdown().unwrap();
}

/// `trimatch serve` on `state_dir` with fresh ports, run to its end: its
/// exit status and its log.
fn serve_to_the_end(broker: &Tansu, state_dir: &Path, extra: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_trimatch"))
        .args(["serve", "--brokers", &broker.address, "--workers", "1"])
        .args([
            "--flight-addr",
            &free_addr(),
            "--metrics-addr",
            &free_addr(),
        ])
        .args(["--state-dir", state_dir.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn one_process_owns_a_state_directory_and_damage_everywhere_stops_the_start() {
    use support::secured::serve;
    let broker = Tansu::start();
    create_input_topics(&broker.address, [1, 1, 1, 1, 1, 1]);
    produce(&broker.address, &history(52, 300));
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let args = [
        "--state-dir",
        state_dir.to_str().unwrap(),
        "--checkpoint-interval-seconds",
        "1",
    ];
    let served = serve(&broker, dir.path(), &args, None);
    let holder = served.process.id();

    // A second process on the same directory is refused, naming the first,
    // and touches nothing of it (the audit's shared-directory reproduction).
    let (started, log) = serve_to_the_end(&broker, &state_dir, &[]);
    assert!(!started, "{log}");
    assert!(
        log.contains("is in use by another process")
            && log.contains(&format!("trimatch process {holder} on")),
        "{log}"
    );
    wait_for("a checkpoint", Duration::from_secs(30), || {
        std::fs::read_dir(&state_dir).unwrap().any(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().to_string();
            name.starts_with("checkpoint-") && name.ends_with(".redb")
        })
    });
    drop(served);

    // Every checkpoint damaged: the start is refused instead of silently
    // reading the topics again, unless the operator says so.
    for entry in std::fs::read_dir(&state_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".redb") {
            std::fs::write(&path, b"not a checkpoint any more").unwrap();
        }
    }
    let (started, log) = serve_to_the_end(&broker, &state_dir, &[]);
    assert!(!started, "{log}");
    assert!(
        log.contains("none can be restored") && log.contains("--allow-replay-on-damage"),
        "{log}"
    );
    let replaying = serve(
        &broker,
        dir.path(),
        &[&args[..], &["--allow-replay-on-damage"]].concat(),
        None,
    );
    drop(replaying);
}
