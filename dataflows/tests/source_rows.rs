//! The sources' bookkeeping collections: `source_progress` keeps one row per
//! partition, replaced at each report; `dead_letters` keeps the most recent
//! rejections up to its capacity; both are stamped with the engine's times.

use std::sync::{Arc, Mutex};

use trimatch_dataflows::engine::{MatchConfig, Matcher, OutputCollection, Row};
use trimatch_dataflows::model::Text;
use trimatch_dataflows::rows::{DeadLetterRow, SourceProgressRow};

fn progress(partition: i32, next_offset: i64) -> SourceProgressRow {
    SourceProgressRow {
        topic: Text::from("invoices"),
        partition,
        next_offset,
        high_watermark: 100,
        lag: (100 - next_offset) as u64,
        state: Default::default(),
        state_reason: None,
    }
}

fn dead_letter(partition: i32, offset: i64) -> DeadLetterRow {
    DeadLetterRow {
        topic: Text::from("invoices"),
        partition,
        offset,
        key: None,
        reason: Text::from("value: not valid JSON"),
        rejected_at: 1_700_000_000_000,
    }
}

/// Runs `workers` workers; worker `w` reports partition `w`'s progress at times
/// 1..=3 (next offsets 10, 20, 30) and five dead letters at time 2, then every
/// worker reads both collections as of times 1, 2 and 3.
fn run(workers: usize, capacity: usize) -> Vec<(u64, OutputCollection, Vec<Row>)> {
    let reads = Arc::new(Mutex::new(Vec::new()));
    let collected = reads.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let config = MatchConfig {
            dead_letter_capacity: capacity,
            ..MatchConfig::default()
        };
        let mut matcher = Matcher::build(worker, &config, None);
        let partition = worker.index() as i32;
        for time in 1..=3u64 {
            matcher.advance_to(time);
            matcher.record_progress(progress(partition, 10 * time as i64));
            if time == 2 {
                for offset in 0..5 {
                    matcher.record_dead_letter(dead_letter(partition, offset));
                }
            }
        }
        matcher.advance_to(4);
        while !matcher.is_complete(3) {
            worker.step();
        }
        for as_of in 1..=3 {
            for collection in [
                OutputCollection::SourceProgress,
                OutputCollection::DeadLetters,
            ] {
                let rows = matcher.read(collection, as_of, None).unwrap();
                assert!(rows.iter().all(|(_, count)| *count == 1), "{rows:?}");
                collected.lock().unwrap().push((
                    as_of,
                    collection,
                    rows.into_iter().map(|(row, _)| row).collect::<Vec<_>>(),
                ));
            }
        }
    })
    .unwrap();
    let reads = reads.lock().unwrap().clone();
    reads
}

fn rows_at(
    reads: &[(u64, OutputCollection, Vec<Row>)],
    as_of: u64,
    collection: OutputCollection,
) -> Vec<Row> {
    let mut rows: Vec<Row> = reads
        .iter()
        .filter(|(time, c, _)| *time == as_of && *c == collection)
        .flat_map(|(_, _, rows)| rows.clone())
        .collect();
    rows.sort();
    rows
}

#[test]
fn progress_is_one_row_per_partition_as_of_each_time() {
    for workers in [1, 2] {
        let reads = run(workers, 100);
        for as_of in 1..=3u64 {
            let expected: Vec<Row> = (0..workers as i32)
                .map(|partition| Row::SourceProgress(progress(partition, 10 * as_of as i64)))
                .collect();
            assert_eq!(
                rows_at(&reads, as_of, OutputCollection::SourceProgress),
                expected,
                "{workers} workers, as_of {as_of}"
            );
        }
    }
}

#[test]
fn dead_letters_keep_the_most_recent_up_to_capacity() {
    // Capacity 6 over 2 workers: 3 slots each, so each worker keeps offsets 2..5.
    for (workers, capacity, kept) in [(1, 100, 0..5), (1, 3, 2..5), (2, 6, 2..5)] {
        let reads = run(workers, capacity);
        assert!(rows_at(&reads, 1, OutputCollection::DeadLetters).is_empty());
        for as_of in [2, 3] {
            let mut expected: Vec<Row> = (0..workers as i32)
                .flat_map(|partition| {
                    kept.clone()
                        .map(move |offset| Row::DeadLetter(dead_letter(partition, offset)))
                })
                .collect();
            expected.sort();
            assert_eq!(
                rows_at(&reads, as_of, OutputCollection::DeadLetters),
                expected,
                "{workers} workers, capacity {capacity}, as_of {as_of}"
            );
        }
    }
}

/// Restoring a checkpoint continues the bookkeeping where it stopped: the
/// dead-letter ring goes on at the slot it reached (not at slot 0), and the
/// progress rows are replaced as before.
#[test]
fn a_restored_dead_letter_ring_goes_on_where_it_stopped() {
    let config = MatchConfig {
        // Two workers, three slots each.
        dead_letter_capacity: 6,
        ..MatchConfig::default()
    };
    let shards = Arc::new(Mutex::new(Vec::new()));
    let written = shards.clone();
    let first = config.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let mut matcher = Matcher::build(worker, &first, None);
        let partition = worker.index() as i32;
        matcher.advance_to(1);
        matcher.record_progress(progress(partition, 30));
        for offset in 0..5 {
            matcher.record_dead_letter(dead_letter(partition, offset));
        }
        matcher.advance_to(2);
        while !matcher.is_complete(1) {
            worker.step();
        }
        written.lock().unwrap().push(matcher.checkpoint(1).unwrap());
    })
    .unwrap();
    let shards = Arc::new(shards.lock().unwrap().clone());
    let reads = Arc::new(Mutex::new(Vec::new()));
    let collected = reads.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let mut matcher = Matcher::build(worker, &config, None);
        let partition = worker.index() as i32;
        matcher.advance_to(1);
        for shard in shards.iter().filter(|shard| shard.worker == worker.index()) {
            matcher.restore(shard.clone());
        }
        matcher.advance_to(5);
        matcher.record_progress(progress(partition, 40));
        for offset in 5..7 {
            matcher.record_dead_letter(dead_letter(partition, offset));
        }
        matcher.advance_to(6);
        while !matcher.is_complete(5) {
            worker.step();
        }
        for (as_of, collection) in [
            (1, OutputCollection::DeadLetters),
            (5, OutputCollection::DeadLetters),
            (5, OutputCollection::SourceProgress),
        ] {
            let rows = matcher.read(collection, as_of, None).unwrap();
            collected.lock().unwrap().push((
                as_of,
                collection,
                rows.into_iter().map(|(row, _)| row).collect::<Vec<_>>(),
            ));
        }
    })
    .unwrap();
    let reads = reads.lock().unwrap().clone();
    let letters = |offsets: std::ops::Range<i64>| {
        let mut rows: Vec<Row> = (0..2)
            .flat_map(|partition| {
                offsets
                    .clone()
                    .map(move |offset| Row::DeadLetter(dead_letter(partition, offset)))
            })
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(
        rows_at(&reads, 1, OutputCollection::DeadLetters),
        letters(2..5),
        "restored as checkpointed"
    );
    assert_eq!(
        rows_at(&reads, 5, OutputCollection::DeadLetters),
        letters(4..7),
        "the ring went on at the slot it had reached"
    );
    assert_eq!(
        rows_at(&reads, 5, OutputCollection::SourceProgress),
        vec![
            Row::SourceProgress(progress(0, 40)),
            Row::SourceProgress(progress(1, 40))
        ]
    );
}
