//! `trimatch serve --state-dir` SIGKILLed again and again under load, twice
//! in the middle of a checkpoint write, ends in exactly the state of the
//! plain evaluation: every generation on disk is a consistent cut, every
//! offset is consumed once, and no dead letter is produced twice.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use support::*;
use trimatch::pipeline::{DurabilityConfig, Pipeline};
use trimatch_connectors::dead_letter::{HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC};
use trimatch_dataflows::{OutputCollection, Row};

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
    create_input_topics(&broker.address, [3, 2, 3, 1, 1, 1]);
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
    for (key, (consumed, accounted, next_offset)) in partition_counters(&pipeline) {
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
