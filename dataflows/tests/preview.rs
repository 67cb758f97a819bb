//! SPEC §12.4: a policy preview equals the change the pipeline makes when
//! the same documents are produced. Random histories on 1–3 workers; before
//! each of many random policy changes, its preview is taken, then the change
//! is applied, and the preview must equal the difference of the two
//! snapshots row for row — exceptions (details and resolutions included)
//! and statuses — and leave the state as it was.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use trimatch_dataflows::engine::MatchConfig;
use trimatch_dataflows::model::*;
use trimatch_dataflows::preview::{self, PolicyPreview, PreviewError, StatusChange};
use trimatch_dataflows::rows::ExceptionRow;

use common::history::History;
use common::{Snapshot, TestEngine};

/// What the pipeline did to `tenant` between two snapshots, in the
/// preview's form and order.
fn observed_change(before: &Snapshot, after: &Snapshot, tenant: &str) -> PolicyPreview {
    let of_tenant = |rows: &[ExceptionRow]| -> BTreeSet<ExceptionRow> {
        rows.iter()
            .filter(|row| *row.tenant_id == *tenant)
            .cloned()
            .collect()
    };
    let (was, is) = (
        of_tenant(&before.match_exceptions),
        of_tenant(&after.match_exceptions),
    );
    let mut exceptions: Vec<(ExceptionRow, i64)> = was
        .difference(&is)
        .map(|row| (row.clone(), -1))
        .chain(is.difference(&was).map(|row| (row.clone(), 1)))
        .collect();
    exceptions.sort_by(|(a, a_diff), (b, b_diff)| {
        let key = |row: &ExceptionRow| {
            (
                row.tenant_id.clone(),
                row.invoice_id.clone(),
                row.exception_type.as_str(),
                row.po_line_no,
            )
        };
        key(a).cmp(&key(b)).then(a_diff.cmp(b_diff))
    });
    let statuses_before: BTreeMap<_, _> = before
        .invoice_matches
        .iter()
        .filter(|row| *row.tenant_id == *tenant)
        .map(|row| (row.invoice_id.clone(), row.status))
        .collect();
    let mut statuses: Vec<StatusChange> = after
        .invoice_matches
        .iter()
        .filter(|row| *row.tenant_id == *tenant)
        .filter_map(|row| {
            let was = statuses_before.get(&row.invoice_id)?;
            (*was != row.status).then(|| StatusChange {
                tenant_id: row.tenant_id.clone(),
                invoice_id: row.invoice_id.clone(),
                before: *was,
                after: row.status,
            })
        })
        .collect();
    statuses.sort();
    PolicyPreview {
        exceptions,
        statuses,
    }
}

/// Counts of what the previews of one run showed.
#[derive(Default, Debug)]
struct Seen {
    released: usize,
    raised: usize,
    status_changes: usize,
    resolved: usize,
    empty: usize,
}

fn run(workers: usize, seed: u64) -> Seen {
    let default = Tolerances::default();
    let mut engine = TestEngine::with_config(
        workers,
        MatchConfig {
            default_tolerances: default,
            ..MatchConfig::default()
        },
    );
    let mut history = History::new(seed, false);
    let mut documents = BTreeMap::new();
    let mut seen = Seen::default();
    for batch in 0..120 {
        let snapshot = engine.apply(history.batch(&mut documents));
        if batch < 20 || batch % 2 == 1 {
            continue;
        }
        let (changes, feeds) = history.policy_changes(&mut documents);
        let answer = preview::preview(&mut engine, &changes, default, usize::MAX)
            .unwrap_or_else(|e| panic!("workers={workers} seed={seed}: {e}"));
        // The preview changed nothing.
        let unchanged = engine.read_at(engine.time()).unwrap();
        assert_eq!(unchanged, snapshot, "a preview changed the state");
        let after = engine.apply(feeds);
        let observed = observed_change(&snapshot, &after, &changes.tenant);
        assert_eq!(
            answer, observed,
            "workers={workers} seed={seed} batch={batch}: the preview of {changes:?} differs from the change the pipeline made"
        );
        seen.released += answer.exceptions.iter().filter(|(_, d)| *d < 0).count();
        seen.raised += answer.exceptions.iter().filter(|(_, d)| *d > 0).count();
        seen.status_changes += answer.statuses.len();
        seen.resolved += answer
            .exceptions
            .iter()
            .filter(|(row, _)| row.resolution.is_some())
            .count();
        seen.empty += usize::from(answer.exceptions.is_empty());
    }
    seen
}

#[test]
fn a_preview_equals_the_change_the_pipeline_makes_on_one_to_three_workers() {
    let mut total = Seen::default();
    for workers in 1..=3 {
        for seed in 0..3 {
            let seen = run(workers, 900 + 10 * workers as u64 + seed);
            total.released += seen.released;
            total.raised += seen.raised;
            total.status_changes += seen.status_changes;
            total.resolved += seen.resolved;
            total.empty += seen.empty;
        }
    }
    // The previews covered releases, raises, status changes, exceptions
    // with a decision on them, and changes that change nothing.
    assert!(
        total.released > 0
            && total.raised > 0
            && total.status_changes > 0
            && total.resolved > 0
            && total.empty > 0,
        "{total:?}"
    );
}

#[test]
fn a_preview_larger_than_its_bound_is_refused() {
    let mut engine = TestEngine::start(2);
    let mut history = History::new(5, false);
    let mut documents = BTreeMap::new();
    for _ in 0..60 {
        engine.apply(history.batch(&mut documents));
    }
    // Find a change that does something, then ask with a bound below it.
    for _ in 0..50 {
        let (changes, _) = history.policy_changes(&mut documents.clone());
        let answer =
            preview::preview(&mut engine, &changes, Tolerances::default(), usize::MAX).unwrap();
        if answer.exceptions.len() >= 2 {
            let refused = preview::preview(&mut engine, &changes, Tolerances::default(), 1);
            assert_eq!(refused, Err(PreviewError::TooLarge { limit: 1 }));
            return;
        }
    }
    panic!("no policy change of the history changed two exceptions");
}
