//! Randomized equivalence: random histories of creates, updates, cancellations
//! and deletes over all five inputs (resolutions included) — arriving in any order, in many small
//! batches — on 1, 2 and 3 workers. After every batch each output collection
//! must equal the plain evaluation of SPEC §2, §6 and §7 in `common::oracle`; afterwards,
//! reads as of every earlier time and the change stream must agree with the
//! snapshots recorded along the way.
//!
//! `TRIMATCH_EQUIVALENCE_SEEDS=N` runs N seeds per worker count (default 3).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use differential_dataflow::consolidation::consolidate_updates;
use trimatch_dataflows::engine::{Change, MatchConfig, ReadError};
use trimatch_dataflows::model::*;
use trimatch_dataflows::rows::{MatchStatus, MatchedBy, PaymentExceptionType, Resolution};

use common::history::{History, HOT_PO};
use common::oracle::{evaluate, without_details};
use common::{Snapshot, TestEngine};

/// Runs one history, checking every batch; returns what it exercised.
fn run_history(workers: usize, seed: u64, batches: usize, hot: bool) -> Coverage {
    let mut coverage = Coverage::default();
    let default = Tolerances::default();
    let mut engine = TestEngine::with_config(
        workers,
        MatchConfig {
            default_tolerances: default,
            ..MatchConfig::default()
        },
    );
    let mut history = History::new(seed, hot);
    let mut documents: BTreeMap<Fingerprint, Document> = BTreeMap::new();
    let mut recorded: Vec<(Time, Snapshot)> = Vec::new();
    let mut events = 0;
    for batch in 0..batches {
        let feeds = history.batch(&mut documents);
        events += feeds.len();
        let actual = engine.apply(feeds);
        let expected = evaluate(&documents, &default);
        let actual = without_details(actual);
        coverage.observe(&actual);
        coverage.hot_line_invoices = coverage
            .hot_line_invoices
            .max(hot_line_invoices(&documents));
        if batch % 10 == 9 {
            coverage.observe_policy_levels(&documents, &expected, &default);
        }
        assert_eq!(
            actual, expected,
            "workers={workers} seed={seed}: outputs differ from the plain evaluation after batch {batch}"
        );
        recorded.push((engine.time(), actual));
    }

    // Every earlier time reads back exactly, and the change stream replays to it.
    for (time, snapshot) in &recorded {
        let read = without_details(engine.read_at(*time).expect("within the retained history"));
        assert_eq!(
            &read, snapshot,
            "workers={workers} seed={seed}: read as of {time}"
        );
        let replayed = without_details(engine.state_from_changes(*time));
        assert_eq!(
            &replayed, snapshot,
            "workers={workers} seed={seed}: changes through {time}"
        );
    }

    // The outputs' history gives the same changes as the change stream, over
    // any range of times; counting rows agrees with reading them.
    let mut previous = 0;
    for (time, snapshot) in recorded.iter().step_by(7) {
        let mut observed: Vec<Change> = engine
            .changes
            .iter()
            .filter(|(_, at, _)| (previous + 1..=*time).contains(at))
            .cloned()
            .collect();
        consolidate_updates(&mut observed);
        assert_eq!(
            engine.read_changes(previous + 1, *time).unwrap(),
            observed,
            "workers={workers} seed={seed}: changes in {}..={time}",
            previous + 1
        );
        let rows = snapshot.invoice_matches.len()
            + snapshot.match_exceptions.len()
            + snapshot.po_lines.len()
            + snapshot.exception_summary.len()
            + snapshot.po_suggestions.len()
            + snapshot.payment_matches.len()
            + snapshot.payment_exceptions.len()
            + snapshot.payment_suggestions.len();
        assert_eq!(engine.count(*time).unwrap(), rows as u64);
        previous = *time;
    }

    // After compaction, older times are refused and newer ones still exact.
    let (middle, snapshot) = &recorded[recorded.len() / 2];
    engine.compact(*middle);
    assert!(matches!(
        engine.read_at(middle - 1),
        Err(ReadError::Compacted { .. })
    ));
    assert_eq!(&without_details(engine.read_at(*middle).unwrap()), snapshot);
    assert!(matches!(
        engine.read_changes(middle - 1, *middle),
        Err(ReadError::Compacted { .. })
    ));
    assert!(
        events > batches,
        "the history applies several events per batch"
    );
    coverage
}

/// Which exception types, invoice statuses, resolutions and kinds of
/// suggestion a run produced.
#[derive(Default)]
struct Coverage {
    exception_types: BTreeSet<ExceptionType>,
    statuses: BTreeSet<MatchStatus>,
    resolutions: BTreeSet<Resolution>,
    suggestions: BTreeSet<MatchedBy>,
    payment_exceptions: BTreeSet<PaymentExceptionType>,
    payment_suggestions: usize,
    /// The most active invoices and credit memos on the hot line at once.
    hot_line_invoices: usize,
    /// The levels of SPEC §12.1 (1: vendor and category … 4: tenant) whose
    /// policies decided at least one exception: without them, the plain
    /// evaluation raises or releases something.
    deciding_levels: BTreeSet<u8>,
    /// The effective match levels (§12.2) of the PO lines seen.
    match_levels: BTreeSet<MatchLevel>,
}

/// A policy's level in SPEC §12.1's resolution order.
fn level_of(policy: &MatchPolicy) -> u8 {
    match (policy.vendor_id.is_some(), policy.category.is_some()) {
        (true, true) => 1,
        (true, false) => 2,
        (false, true) => 3,
        (false, false) => 4,
    }
}

/// How many active invoices and credit memos bill line 1 of the hot PO.
fn hot_line_invoices(documents: &BTreeMap<Fingerprint, Document>) -> usize {
    documents
        .values()
        .filter(|document| match document {
            Document::Invoice(invoice) => {
                invoice.is_active()
                    && *invoice.po_number == *HOT_PO
                    && invoice.lines.iter().any(|line| line.po_line_no == 1)
            }
            _ => false,
        })
        .count()
}

impl Coverage {
    /// Which levels' policies decide an exception of `expected`, the plain
    /// evaluation of `documents`.
    fn observe_policy_levels(
        &mut self,
        documents: &BTreeMap<Fingerprint, Document>,
        expected: &Snapshot,
        default: &Tolerances,
    ) {
        for level in 1..=4 {
            if self.deciding_levels.contains(&level) {
                continue;
            }
            let without: BTreeMap<Fingerprint, Document> = documents
                .iter()
                .filter(|(_, document)| {
                    !matches!(document, Document::MatchPolicy(policy) if level_of(policy) == level)
                })
                .map(|(key, document)| (*key, document.clone()))
                .collect();
            if evaluate(&without, default).match_exceptions != expected.match_exceptions {
                self.deciding_levels.insert(level);
            }
        }
    }

    fn observe(&mut self, snapshot: &Snapshot) {
        self.exception_types.extend(
            snapshot
                .match_exceptions
                .iter()
                .map(|row| row.exception_type),
        );
        self.statuses
            .extend(snapshot.invoice_matches.iter().map(|row| row.status));
        self.match_levels
            .extend(snapshot.po_lines.iter().map(|row| row.match_level));
        self.resolutions.extend(
            snapshot
                .match_exceptions
                .iter()
                .filter_map(|row| row.resolution.as_ref().map(|r| r.resolution)),
        );
        self.suggestions
            .extend(snapshot.po_suggestions.iter().map(|row| row.matched_by));
        self.payment_exceptions.extend(
            snapshot
                .payment_exceptions
                .iter()
                .map(|row| row.exception_type),
        );
        self.payment_suggestions += snapshot.payment_suggestions.len();
    }

    /// Asserts that the histories exercised every rule and every status.
    fn assert_complete(runs: impl IntoIterator<Item = Coverage>) {
        let mut all = Coverage::default();
        for run in runs {
            all.exception_types.extend(run.exception_types);
            all.statuses.extend(run.statuses);
            all.resolutions.extend(run.resolutions);
            all.suggestions.extend(run.suggestions);
            all.payment_exceptions.extend(run.payment_exceptions);
            all.payment_suggestions += run.payment_suggestions;
            all.deciding_levels.extend(run.deciding_levels);
            all.match_levels.extend(run.match_levels);
        }
        assert_eq!(
            all.match_levels,
            BTreeSet::from(MatchLevel::ALL),
            "the match levels of the PO lines"
        );
        assert_eq!(
            all.deciding_levels,
            BTreeSet::from([1, 2, 3, 4]),
            "the policy levels that decided an exception"
        );
        let missing: Vec<_> = ExceptionType::ALL
            .into_iter()
            .filter(|kind| !all.exception_types.contains(kind))
            .collect();
        assert!(missing.is_empty(), "the histories never raised {missing:?}");
        assert_eq!(all.statuses.len(), 4, "statuses seen: {:?}", all.statuses);
        assert_eq!(
            all.resolutions.len(),
            3,
            "resolutions: {:?}",
            all.resolutions
        );
        assert_eq!(
            all.suggestions.len(),
            2,
            "suggestions: {:?}",
            all.suggestions
        );
        let missing: Vec<_> = PaymentExceptionType::ALL
            .into_iter()
            .filter(|kind| !all.payment_exceptions.contains(kind))
            .collect();
        assert!(missing.is_empty(), "the histories never raised {missing:?}");
        assert!(
            all.payment_suggestions > 0,
            "no payment was ever suggested an invoice"
        );
    }
}

fn seeds() -> u64 {
    std::env::var("TRIMATCH_EQUIVALENCE_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

#[test]
fn incremental_outputs_equal_plain_evaluation_on_one_worker() {
    Coverage::assert_complete((0..seeds()).map(|seed| run_history(1, seed, 200, false)));
}

#[test]
fn incremental_outputs_equal_plain_evaluation_on_two_workers() {
    Coverage::assert_complete((0..seeds()).map(|seed| run_history(2, 100 + seed, 200, false)));
}

#[test]
fn incremental_outputs_equal_plain_evaluation_on_three_workers() {
    Coverage::assert_complete((0..seeds()).map(|seed| run_history(3, 200 + seed, 200, false)));
}

/// Issue 19: one PO line with hundreds of invoices — arriving in random date
/// order (each new one back-dated before some of the others), with credit
/// memos, cancellations and deletions among them — on 1–3 workers.
#[test]
fn a_hot_po_line_equals_plain_evaluation_on_one_to_three_workers() {
    for workers in 1..=3 {
        for seed in 0..seeds() {
            let coverage = run_history(workers, 300 + 10 * workers as u64 + seed, 150, true);
            assert!(
                coverage.hot_line_invoices >= 100,
                "workers={workers} seed={seed}: the hot line held at most {} invoices",
                coverage.hot_line_invoices
            );
            for rule in [
                ExceptionType::QtyExceedsOrdered,
                ExceptionType::QtyExceedsReceived,
            ] {
                assert!(
                    coverage.exception_types.contains(&rule),
                    "workers={workers} seed={seed}: the hot line never raised {rule:?}"
                );
            }
        }
    }
}

/// SPEC §11: a computation fed every worker's checkpoint shard goes on exactly
/// as the one that wrote them. The checkpoint holds exactly the present
/// documents; the restored outputs equal the original's (details included)
/// at the checkpoint and after every later batch, and the plain evaluation.
fn restore_continues_exactly(workers: usize, seed: u64) {
    let default = Tolerances::default();
    let config = || MatchConfig {
        default_tolerances: default,
        ..MatchConfig::default()
    };
    let mut history = History::new(seed, false);
    let mut documents: BTreeMap<Fingerprint, Document> = BTreeMap::new();
    let mut original = TestEngine::with_config(workers, config());
    for _ in 0..30 {
        original.apply(history.batch(&mut documents));
    }
    let cut = original.time();
    // Compaction keeps the present readable, and nothing older.
    original.compact(cut);
    assert!(matches!(
        original.checkpoint(cut - 1),
        Err(ReadError::Compacted { .. })
    ));
    assert!(matches!(
        original.checkpoint(cut + 5),
        Err(ReadError::NotComplete { .. })
    ));
    let shards = original.checkpoint(cut).expect("the newest complete time");
    let mut checkpointed: Vec<(Fingerprint, Document)> = shards
        .iter()
        .flat_map(|shard| shard.documents.iter().cloned())
        .collect();
    checkpointed.sort_by_key(|(key, _)| *key);
    let present: Vec<(Fingerprint, Document)> = documents.clone().into_iter().collect();
    assert_eq!(
        checkpointed, present,
        "workers={workers} seed={seed}: the checkpoint holds the present documents"
    );

    let mut restored = TestEngine::restored(workers, config(), shards);
    assert_eq!(
        restored.read_at(cut).unwrap(),
        original.read_at(cut).unwrap(),
        "workers={workers} seed={seed}: the restored state at the checkpoint"
    );
    for batch in 0..30 {
        let feeds = history.batch(&mut documents);
        let expected = original.apply(feeds.clone());
        let actual = restored.apply(feeds);
        assert_eq!(
            actual, expected,
            "workers={workers} seed={seed}: batch {batch} after the restore"
        );
        assert_eq!(
            without_details(actual),
            evaluate(&documents, &default),
            "workers={workers} seed={seed}: batch {batch} after the restore, against the plain evaluation"
        );
    }
}

#[test]
fn a_restore_from_a_checkpoint_continues_exactly_on_one_and_two_workers() {
    for seed in 0..seeds() {
        restore_continues_exactly(1, 900 + seed);
        restore_continues_exactly(2, 950 + seed);
    }
}
