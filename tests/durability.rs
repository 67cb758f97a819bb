//! Durable state (SPEC §11) against a real broker: a job with a state
//! directory checkpoints as it runs and at a clean stop; a new job on the same
//! directory restores the checkpoint, goes on at its offsets, and ends in
//! exactly the state of an uninterrupted run — nothing lost, nothing applied
//! twice, the counters continuing, times increasing — and a reader resuming
//! its change feed across the restart misses and repeats nothing. A
//! `trimatch serve` killed again and again under load, once in the middle of
//! a checkpoint write, ends in the same exact state, with no dead letter
//! produced twice.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use trimatch_connectors::dead_letter::{HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC};

use support::*;
use trimatch::pipeline::{DurabilityConfig, Pipeline, PipelineConfig, ServeError};
use trimatch_dataflows::{OutputCollection, Row, Time};
use trimatch_workload::{GeneratedMessage, Workload, WorkloadConfig};

fn history(seed: u64, count: usize) -> Vec<GeneratedMessage> {
    Workload::new(WorkloadConfig {
        seed,
        tenants: 3,
        vendors_per_tenant: 4,
        bad_share: 0.03,
        ..WorkloadConfig::default()
    })
    .take(count)
    .collect()
}

fn durable_config(broker: &Tansu, state_dir: &std::path::Path) -> PipelineConfig {
    let mut config = pipeline_config(source_config(&broker.address), 2);
    config.durability = Some(DurabilityConfig::new(state_dir, Duration::from_millis(300)));
    config
}

/// Per partition: (consumed, applied + dead-lettered + skipped, next offset).
fn counters(pipeline: &Pipeline) -> BTreeMap<(String, i32), (u64, u64, i64)> {
    pipeline
        .metrics()
        .snapshot()
        .into_iter()
        .map(|(key, c)| {
            (
                key,
                (
                    c.consumed,
                    c.applied + c.dead_lettered + c.skipped,
                    c.next_offset,
                ),
            )
        })
        .collect()
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
    create_input_topics(&broker.address, [3, 2, 3, 1]);
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
    let before_stop = counters(&pipeline);
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
    let after = counters(&pipeline);
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
        assert!(matches!(error, ServeError::AcrossRestart { .. }), "{error}");
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

const DEAD_LETTER_TOPIC: &str = "trimatch_dead_letters";

/// `trimatch serve --state-dir` on `broker`, not waited for.
fn spawn_serve(broker: &Tansu, state_dir: &Path, log: &Path) -> KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_trimatch"))
        .args(["serve", "--brokers", &broker.address, "--workers", "2"])
        .args([
            "--flight-addr",
            &free_addr(),
            "--metrics-addr",
            &free_addr(),
        ])
        .args(["--state-dir", state_dir.to_str().unwrap()])
        .args(["--checkpoint-interval-seconds", "1"])
        .args(["--dead-letter-topic", DEAD_LETTER_TOPIC])
        .args(["--fault-checkpoint-pause-ms", "400"])
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    KillOnDrop::new(child)
}

/// The name of the newest checkpoint generation in `state_dir`.
fn newest_generation(state_dir: &Path) -> Option<String> {
    std::fs::read_dir(state_dir)
        .ok()?
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".redb"))
        .max()
}

/// Whether a checkpoint is being written in `state_dir` right now.
fn writing_a_checkpoint(state_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return false;
    };
    entries.into_iter().any(|entry| {
        entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    })
}

/// Every generation in `state_dir` is one consistent cut: its dead letters
/// and progress rows are exactly those of the offsets below its positions.
fn assert_generations_are_consistent(state_dir: &Path) {
    let dir = trimatch_state::StateDir::open(state_dir).unwrap();
    for (as_of, path) in dir.generations().unwrap() {
        let checkpoint = trimatch_state::load(&path, &|_, _| {}).unwrap();
        let positions: BTreeMap<(String, i32), i64> = checkpoint
            .manifest
            .partitions
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.next_offset))
            .collect();
        for shard in &checkpoint.shards {
            for (_, row) in &shard.bookkeeping {
                match row {
                    trimatch_dataflows::SourceRow::DeadLetter(letter) => {
                        let key = (letter.topic.to_string(), letter.partition);
                        assert!(
                            positions.get(&key).is_some_and(|next| letter.offset < *next),
                            "generation {as_of}: dead letter at {key:?}/{} but the position is {:?}",
                            letter.offset,
                            positions.get(&key)
                        );
                    }
                    trimatch_dataflows::SourceRow::Progress(progress) => {
                        let key = (progress.topic.to_string(), progress.partition);
                        assert_eq!(
                            positions.get(&key),
                            Some(&progress.next_offset),
                            "generation {as_of}: progress of {key:?}"
                        );
                    }
                }
            }
        }
    }
}

/// The source (topic, partition, offset) of every record on the dead-letter topic.
fn dead_letter_origins(brokers: &str) -> Vec<(String, i32, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "dead-letter-audit")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(DEAD_LETTER_TOPIC, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(DEAD_LETTER_TOPIC, 0, rdkafka::Offset::Offset(low))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut origins = Vec::new();
    let mut next = low;
    while next < high {
        let message = consumer
            .poll(Duration::from_secs(10))
            .expect("a dead letter within 10 s")
            .unwrap();
        let headers = message.headers().expect("headers");
        let header = |name: &str| -> String {
            headers
                .iter()
                .find(|header| header.key == name)
                .and_then(|header| header.value)
                .map(|value| String::from_utf8_lossy(value).to_string())
                .unwrap_or_else(|| panic!("no {name} header"))
        };
        origins.push((
            header(HEADER_TOPIC),
            header(HEADER_PARTITION).parse().unwrap(),
            header(HEADER_OFFSET).parse().unwrap(),
        ));
        next = message.offset() + 1;
    }
    origins
}

#[test]
fn serve_killed_again_and_again_under_load_ends_in_the_exact_state() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [3, 2, 3, 1]);
    create_topics(&broker.address, &[(DEAD_LETTER_TOPIC, 1)]);
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("serve.log");
    let state_dir = state.path().join("state");
    let messages = history(33, 9_000);

    // The history arrives in bursts while the process is killed and restarted.
    let producing = {
        let (brokers, messages) = (broker.address.clone(), messages.clone());
        std::thread::spawn(move || {
            for chunk in messages.chunks(500) {
                produce(&brokers, chunk);
                std::thread::sleep(Duration::from_millis(400));
            }
        })
    };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(33);
    let mut kills_during_a_write = 0;
    for round in 0..6 {
        let serve = spawn_serve(&broker, &state_dir, &log);
        if round == 2 || round == 4 {
            // In the middle of a checkpoint write (it pauses before its commit).
            let deadline = Instant::now() + Duration::from_secs(30);
            while !writing_a_checkpoint(&state_dir) {
                assert!(Instant::now() < deadline, "no checkpoint write to kill");
                std::thread::sleep(Duration::from_millis(5));
            }
            kills_during_a_write += 1;
        } else {
            // After this run has written a checkpoint of its own, at a random point.
            let before = newest_generation(&state_dir);
            wait_for("a checkpoint", Duration::from_secs(30), || {
                newest_generation(&state_dir) != before
            });
            std::thread::sleep(Duration::from_millis(rng.random_range(0..1_500)));
        }
        let mut child = serve.into_inner();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    assert_eq!(kills_during_a_write, 2);
    producing.join().unwrap();
    assert_generations_are_consistent(&state_dir);

    // The last run restores the last intact checkpoint and reads the rest.
    let mut config = pipeline_config(source_config(&broker.address), 2);
    config.source.dead_letter_topic = Some(DEAD_LETTER_TOPIC.to_string());
    config.durability = Some(DurabilityConfig::new(&state_dir, Duration::from_secs(1)));
    let pipeline = Pipeline::start(config).unwrap();
    wait_until_reflected(&pipeline, messages.len() as u64);
    assert!(
        pipeline.handle().restored().is_some(),
        "restored from a checkpoint; the state directory holds {:?}; the log:\n{}",
        std::fs::read_dir(&state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let newest = wait_until_complete_now(&pipeline);
    let collections = read_all(&pipeline, newest);
    assert_same_state(
        &matching_state(&collections),
        &expected_state(&final_documents(&messages)),
        "after six SIGKILLs",
    );
    // Nothing applied twice: every offset consumed exactly once, over all runs.
    let watermarks = high_watermarks(&broker.address);
    for (key, (consumed, accounted, next_offset)) in counters(&pipeline) {
        if key.0 == DEAD_LETTER_TOPIC {
            continue;
        }
        assert_eq!(
            consumed, accounted,
            "{key:?}: consumed = applied + dead-lettered + skipped"
        );
        assert_eq!(next_offset, watermarks[&key], "{key:?} read to its end");
        assert_eq!(
            consumed, next_offset as u64,
            "{key:?}: each offset consumed once"
        );
    }
    let malformed = messages.iter().filter(|m| m.malformed).count();
    let mut letters: BTreeMap<(String, i32, i64), usize> = BTreeMap::new();
    for row in &collections[&OutputCollection::DeadLetters] {
        let Row::DeadLetter(letter) = row else {
            panic!("{row:?}")
        };
        *letters
            .entry((letter.topic.to_string(), letter.partition, letter.offset))
            .or_default() += 1;
    }
    let twice: Vec<_> = letters.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        twice.is_empty(),
        "dead_letters rows recorded twice: {twice:?}"
    );
    assert_eq!(
        letters.len(),
        malformed,
        "one dead_letters row per rejected message"
    );
    pipeline.shutdown().unwrap();

    // Each rejected message is on the dead-letter topic exactly once.
    let origins = dead_letter_origins(&broker.address);
    let unique: std::collections::BTreeSet<_> = origins.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        origins.len(),
        "a dead letter was produced twice"
    );
    assert_eq!(
        origins.len(),
        malformed,
        "every rejected message was dead-lettered"
    );
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
    let consumed = first.len() as u64 + 4 * 40;
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
    wait_until_reflected(&pipeline, consumed + 4 * 20 + second.len() as u64);
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
    create_input_topics(&broker.address, [2, 1, 2, 1]);
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
