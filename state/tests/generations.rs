//! Generations in a state directory: written atomically, verified on load,
//! a damaged one skipped for the previous one, an incompatible one refused.

use std::sync::Arc;

use trimatch_dataflows::model::{Document, Fingerprint, MatchPolicy};
use trimatch_dataflows::rows::{PartitionHealth, SourceProgressRow};
use trimatch_dataflows::{ShardCheckpoint, SourceRow};
use trimatch_state::codec::FORMAT_VERSION;
use trimatch_state::{
    Checkpoint, ClusterShape, Expected, Manifest, PartitionCheckpoint, ShardSummary, StateDir,
    StateDirLock, StateError, CHUNK_ROWS, KEEP_GENERATIONS,
};

fn shape() -> ClusterShape {
    ClusterShape {
        processes: 1,
        workers_per_process: 2,
        process: 0,
    }
}

fn expected() -> Expected {
    Expected {
        shape: shape(),
        topics: vec!["invoice=invoices".to_string()],
    }
}

/// A checkpoint at `as_of` whose worker 1 holds `documents` policies.
fn checkpoint(as_of: u64, documents: usize) -> Checkpoint {
    let shard = |worker: usize, count: usize| ShardCheckpoint {
        as_of,
        worker,
        documents: (0..count)
            .map(|i| {
                let policy = MatchPolicy {
                    tenant_id: format!("t-{worker}-{i}").into(),
                    ..MatchPolicy::default()
                };
                (policy.key(), Document::MatchPolicy(Arc::new(policy)))
            })
            .collect(),
        bookkeeping: vec![(
            Fingerprint(worker as u128),
            SourceRow::Progress(SourceProgressRow {
                topic: "invoices".into(),
                partition: worker as i32,
                next_offset: as_of as i64,
                high_watermark: as_of as i64,
                lag: 0,
                state: PartitionHealth::Ok,
                state_reason: None,
            }),
        )],
        dead_letters_recorded: 7,
    };
    let shards = vec![shard(0, 0), shard(1, documents)];
    Checkpoint {
        manifest: Manifest {
            format: FORMAT_VERSION,
            written_by: "test".to_string(),
            as_of,
            unchanged_since: as_of,
            written_at_ms: 0,
            shape: shape(),
            kafka_cluster_id: Some("test-cluster".to_string()),
            topics: expected().topics,
            partitions: vec![PartitionCheckpoint {
                topic: "invoices".to_string(),
                partition: 0,
                next_offset: as_of as i64,
                consumed: as_of,
                applied: as_of,
                dead_lettered: 0,
                skipped: 0,
            }],
            shards: shards
                .iter()
                .map(|shard| ShardSummary {
                    worker: shard.worker,
                    documents: shard.documents.len() as u64,
                    bookkeeping: shard.bookkeeping.len() as u64,
                    dead_letters_recorded: shard.dead_letters_recorded,
                })
                .collect(),
        },
        shards,
    }
}

fn newest(dir: &StateDir) -> Result<Option<Checkpoint>, StateError> {
    let manifests = dir.manifests(&expected())?;
    dir.load_newest_intact(&manifests, &|_, _| {})
}

#[test]
fn a_written_generation_loads_back_exactly_and_old_ones_are_pruned() {
    let temp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(temp.path()).unwrap();
    assert!(newest(&dir).unwrap().is_none());
    // More than one chunk of documents.
    let documents = CHUNK_ROWS * 2 + 5;
    for as_of in 1..=5 {
        let stats = dir.write(&checkpoint(as_of * 100, documents)).unwrap();
        assert_eq!(stats.documents, documents as u64);
        assert!(stats.bytes > 0);
    }
    assert_eq!(dir.generations().unwrap().len(), KEEP_GENERATIONS);
    assert_eq!(newest(&dir).unwrap(), Some(checkpoint(500, documents)));
}

#[test]
fn a_damaged_newest_generation_falls_back_to_the_previous_one() {
    let temp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(temp.path()).unwrap();
    dir.write(&checkpoint(100, 3000)).unwrap();
    dir.write(&checkpoint(200, 3000)).unwrap();
    let (_, newest_path) = dir.generations().unwrap()[0].clone();
    // Flip bytes in the middle of the file, where the chunks are.
    let mut bytes = std::fs::read(&newest_path).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 64] {
        *byte ^= 0x5a;
    }
    std::fs::write(&newest_path, &bytes).unwrap();
    assert_eq!(newest(&dir).unwrap(), Some(checkpoint(100, 3000)));

    // A file cut short (a partial copy) is damaged too; with nothing intact
    // left, the error says what to do.
    let (_, older_path) = dir.generations().unwrap()[1].clone();
    let bytes = std::fs::read(&older_path).unwrap();
    std::fs::write(&older_path, &bytes[..bytes.len() / 3]).unwrap();
    let error = newest(&dir).unwrap_err().to_string();
    assert!(error.contains("no intact checkpoint"), "{error}");
    assert!(error.contains("--reset-state"), "{error}");
}

#[test]
fn a_checkpoint_for_another_shape_or_topics_is_refused_with_what_to_do() {
    let temp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(temp.path()).unwrap();
    dir.write(&checkpoint(100, 10)).unwrap();
    let mut other_shape = expected();
    other_shape.shape.workers_per_process = 4;
    let error = dir.manifests(&other_shape).unwrap_err().to_string();
    assert!(error.contains("2 workers each"), "{error}");
    assert!(error.contains("4 workers each"), "{error}");
    assert!(error.contains("re-sharding is not supported"), "{error}");
    assert!(error.contains("--reset-state"), "{error}");
    let mut other_topics = expected();
    other_topics.topics = vec!["invoice=bills".to_string()];
    let error = dir.manifests(&other_topics).unwrap_err().to_string();
    assert!(error.contains("invoice=bills"), "{error}");
    // --reset-state discards it.
    assert_eq!(dir.reset().unwrap(), 1);
    assert!(newest(&dir).unwrap().is_none());
}

#[test]
fn a_half_written_generation_is_ignored_and_removed() {
    let temp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(temp.path()).unwrap();
    dir.write(&checkpoint(100, 10)).unwrap();
    let partial = temp
        .path()
        .join("checkpoint-00000000000000000200.redb.partial");
    std::fs::write(&partial, b"half a database").unwrap();
    assert_eq!(newest(&dir).unwrap(), Some(checkpoint(100, 10)));
    let dir = StateDir::open(temp.path()).unwrap();
    assert!(!partial.exists());
    assert_eq!(dir.generations().unwrap().len(), 1);
}

#[test]
fn a_failed_write_leaves_no_half_written_file() {
    let temp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(temp.path()).unwrap();
    // The generation's own name is taken by a directory, so the write
    // fails at its last step, the rename, as a full disk fails it earlier.
    std::fs::create_dir(temp.path().join(format!("checkpoint-{:020}.redb", 700))).unwrap();
    std::fs::write(
        temp.path()
            .join(format!("checkpoint-{:020}.redb", 700))
            .join("x"),
        b"x",
    )
    .unwrap();
    assert!(dir.write(&checkpoint(700, 10)).is_err());
    let partials: Vec<_> = std::fs::read_dir(temp.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".partial"))
        .collect();
    assert!(partials.is_empty(), "{partials:?}");
}

#[test]
fn a_second_holder_of_a_state_directory_is_refused_naming_the_first() {
    let temp = tempfile::tempdir().unwrap();
    let first = StateDirLock::take(temp.path()).unwrap();
    let refused = StateDirLock::take(temp.path()).unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("in use by another process")
            && message.contains(&format!("trimatch process {}", std::process::id())),
        "{message}"
    );
    drop(first);
    StateDirLock::take(temp.path()).expect("free again once the holder is gone");
}
