//! Durable state (SPEC §11) against a real broker: a job with a state
//! directory checkpoints as it runs and at a clean stop; a new job on the same
//! directory restores the checkpoint, goes on at its offsets, and ends in
//! exactly the state of an uninterrupted run — nothing lost, nothing applied
//! twice, the counters continuing, times increasing — and a reader resuming
//! its change feed across the restart misses and repeats nothing.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

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
    config.durability = Some(DurabilityConfig {
        state_dir: state_dir.to_path_buf(),
        interval: Duration::from_millis(300),
    });
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
    let error = handle
        .read(
            OutputCollection::InvoiceMatches,
            Some(restored.checkpoint - 1),
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
