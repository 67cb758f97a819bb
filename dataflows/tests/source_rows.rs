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
