//! Randomized equivalence: random histories of creates, updates, cancellations
//! and deletes over all four inputs — arriving in any order, in many small
//! batches — on 1, 2 and 3 workers. After every batch each output collection
//! must equal the plain evaluation of SPEC §2 in `common::oracle`; afterwards,
//! reads as of every earlier time and the change stream must agree with the
//! snapshots recorded along the way.
//!
//! `TRIMATCH_EQUIVALENCE_SEEDS=N` runs N seeds per worker count (default 3).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use differential_dataflow::consolidation::consolidate_updates;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use trimatch_dataflows::engine::{Change, MatchConfig, ReadError};
use trimatch_dataflows::model::*;
use trimatch_dataflows::rows::{ExceptionType, MatchStatus};

use common::oracle::{evaluate, without_details};
use common::{Feed, Snapshot, TestEngine};

const TENANTS: [&str; 2] = ["acme", "globex"];
const VENDORS: [&str; 2] = ["V-1", "V-2"];
const INVOICE_NUMBERS: [&str; 5] = ["A-1", " a-1 ", "A-2", "b-7", "B-7 "];

/// Builds random documents over a small identifier space, so that documents
/// collide, duplicate and refer to each other often.
struct History {
    rng: SmallRng,
    next_offset: i64,
    /// Whether most invoices bill one hot PO line ([`HOT_PO`] line 1), as on
    /// a blanket PO: hundreds of them, in random date order, with credit
    /// memos, cancellations and deletions among them.
    hot: bool,
}

/// The blanket PO of hot histories.
const HOT_PO: &str = "PO-HOT";

impl History {
    fn new(seed: u64, hot: bool) -> Self {
        History {
            rng: SmallRng::seed_from_u64(seed),
            next_offset: 0,
            hot,
        }
    }

    /// In a hot history, mostly `HOT_PO` of tenant `acme`.
    fn hot_po(&mut self, probability: f64) -> Option<(Text, Text)> {
        (self.hot && self.rng.random_bool(probability)).then(|| ("acme".into(), HOT_PO.into()))
    }
}

impl History {
    fn decimal(&mut self, max_units: i64, fraction_digits: u32) -> Decimal {
        let scale = 10i64.pow(fraction_digits);
        Decimal::new(
            self.rng.random_range(1..=max_units * scale),
            fraction_digits,
        )
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options.choose(&mut self.rng).unwrap()
    }

    fn id(&mut self, prefix: &str, count: u32) -> Text {
        format!("{prefix}-{}", self.rng.random_range(1..=count)).into()
    }

    fn currency(&mut self) -> Currency {
        if self.rng.random_bool(0.9) {
            Currency(*b"USD")
        } else {
            Currency(*b"EUR")
        }
    }

    fn purchase_order(&mut self) -> PurchaseOrder {
        let mut line_numbers: Vec<u32> = (1..=4).filter(|_| self.rng.random_bool(0.7)).collect();
        if line_numbers.is_empty() {
            line_numbers.push(1);
        }
        let lines: Vec<PoLine> = line_numbers
            .into_iter()
            .map(|line_no| PoLine {
                line_no,
                sku: self
                    .rng
                    .random_bool(0.5)
                    .then(|| Text::from(format!("SKU-{line_no}"))),
                quantity: self.decimal(20, 1),
                unit_price: Decimal::new(self.rng.random_range(100..=500), 2),
            })
            .collect();
        let (tenant_id, po_number) = match self.hot_po(0.5) {
            Some(hot) => hot,
            None => (self.pick(&TENANTS).into(), self.id("PO", 5)),
        };
        // A blanket PO's lines are ordered in bulk: hundreds of invoices of
        // up to ten cross its quantity part way through.
        let lines = if *po_number == *HOT_PO {
            lines
                .into_iter()
                .map(|line| PoLine {
                    quantity: Decimal::from(self.rng.random_range(100..=600)),
                    ..line
                })
                .collect()
        } else {
            lines
        };
        PurchaseOrder {
            tenant_id,
            po_number,
            vendor_id: self.pick(&VENDORS).into(),
            currency: self.currency(),
            status: *[
                PoStatus::Open,
                PoStatus::Open,
                PoStatus::Open,
                PoStatus::Open,
                PoStatus::Closed,
                PoStatus::Cancelled,
            ]
            .choose(&mut self.rng)
            .unwrap(),
            receipt_required: self.rng.random_bool(0.8),
            lines,
        }
    }

    fn goods_receipt(&mut self) -> GoodsReceipt {
        let lines: Vec<ReceiptLine> = (0..self.rng.random_range(1..=3))
            .map(|_| {
                let mut quantity = self.decimal(12, 1);
                if self.rng.random_bool(0.15) {
                    quantity = -quantity; // a return to vendor
                }
                ReceiptLine {
                    po_line_no: self.rng.random_range(1..=4),
                    quantity,
                }
            })
            .collect();
        let (tenant_id, po_number) = match self.hot_po(0.6) {
            Some(hot) => hot,
            None => (self.pick(&TENANTS).into(), self.id("PO", 5)),
        };
        let lines = if *po_number == *HOT_PO {
            lines
                .into_iter()
                .map(|line| ReceiptLine {
                    quantity: line.quantity * Decimal::from(20),
                    ..line
                })
                .collect()
        } else {
            lines
        };
        GoodsReceipt {
            tenant_id,
            receipt_id: self.id("GR", 6),
            po_number,
            received_at: None,
            lines,
        }
    }

    fn invoice(&mut self, documents: &BTreeMap<Fingerprint, Document>) -> Invoice {
        let hot = self.hot_po(0.85);
        let (tenant_id, po_number): (Text, Text) = match hot.clone() {
            Some(hot) => hot,
            None => (self.pick(&TENANTS).into(), self.id("PO", 5)),
        };
        let po = match documents.get(&po_key(&tenant_id, &po_number)) {
            Some(Document::PurchaseOrder(po)) => Some(po.clone()),
            _ => None,
        };
        let mut line_numbers: Vec<u32> = (1..=4).filter(|_| self.rng.random_bool(0.4)).collect();
        if line_numbers.is_empty() || hot.is_some() {
            line_numbers.retain(|&line| line > 1 && self.rng.random_bool(0.3));
            line_numbers.insert(0, 1);
        }
        let lines: Vec<InvoiceLine> = line_numbers
            .into_iter()
            .map(|po_line_no| {
                // Mostly the PO's price, sometimes a little or a lot above or below it.
                let base = po
                    .as_ref()
                    .and_then(|po| po.line(po_line_no))
                    .map(|line| line.unit_price)
                    .unwrap_or(Decimal::new(250, 2));
                let unit_price = match self.rng.random_range(0..10) {
                    0 => base + Decimal::new(self.rng.random_range(1..=10), 2),
                    1 => base + Decimal::new(self.rng.random_range(1..=100), 1),
                    2 if base > Decimal::ONE => base - Decimal::new(5, 1),
                    _ => base,
                };
                InvoiceLine {
                    po_line_no,
                    quantity: self.decimal(10, 1),
                    unit_price,
                }
            })
            .collect();
        let tax = if self.rng.random_bool(0.5) {
            Decimal::new(self.rng.random_range(0..500), 2)
        } else {
            Decimal::ZERO
        };
        let amount: Decimal = lines.iter().map(|l| l.quantity * l.unit_price).sum();
        let total = match self.rng.random_range(0..4) {
            0 => None,
            1 => Some(amount + tax + Decimal::new(self.rng.random_range(-300..300), 2)),
            _ => Some(amount + tax),
        };
        Invoice {
            tenant_id,
            invoice_id: self.id("INV", if hot.is_some() { 1000 } else { 10 }),
            kind: if self.rng.random_bool(0.15) {
                InvoiceKind::CreditMemo
            } else {
                InvoiceKind::Invoice
            },
            status: if self.rng.random_bool(0.1) {
                InvoiceStatus::Cancelled
            } else {
                InvoiceStatus::Active
            },
            vendor_id: if self.rng.random_bool(0.9) {
                po.as_ref()
                    .map(|po| po.vendor_id.clone())
                    .unwrap_or_else(|| "V-1".into())
            } else {
                self.pick(&VENDORS).into()
            },
            invoice_number: self.pick(&INVOICE_NUMBERS).into(),
            po_number,
            currency: po
                .as_ref()
                .filter(|_| self.rng.random_bool(0.9))
                .map(|po| po.currency)
                .unwrap_or_else(|| self.currency()),
            // Hot invoices arrive in random date order: back-dated before
            // many others as often as after all of them.
            invoice_date: 20_400
                + self
                    .rng
                    .random_range(0..if hot.is_some() { 120 } else { 4 }),
            lines,
            tax,
            freight: Decimal::ZERO,
            total,
        }
    }

    fn match_policy(&mut self) -> MatchPolicy {
        let field = |rng: &mut SmallRng, max: i64| {
            rng.random_bool(0.6)
                .then(|| Decimal::new(rng.random_range(0..=max), 2))
        };
        MatchPolicy {
            tenant_id: self.pick(&TENANTS).into(),
            price_tolerance_pct: field(&mut self.rng, 500),
            price_tolerance_abs: field(&mut self.rng, 20),
            qty_tolerance_pct: field(&mut self.rng, 1000),
            total_tolerance_abs: field(&mut self.rng, 200),
        }
    }

    /// One batch of 1–6 random changes, shuffled (a source may hand them
    /// over in any order; they take effect in offset order, the tie rule);
    /// `documents` becomes the documents present after it.
    fn batch(&mut self, documents: &mut BTreeMap<Fingerprint, Document>) -> Vec<Feed> {
        let size = self.rng.random_range(1..=6);
        let mut feeds = Vec::new();
        for _ in 0..size {
            let feed = self.change(documents);
            match &feed.document {
                Some(document) => documents.insert(feed.key, document.clone()),
                None => documents.remove(&feed.key),
            };
            feeds.push(feed);
        }
        feeds.shuffle(&mut self.rng);
        feeds
    }

    /// One random change given the current documents.
    fn change(&mut self, documents: &BTreeMap<Fingerprint, Document>) -> Feed {
        // Hot histories are mostly new invoices, so that the hot line grows.
        let roll = match self.rng.random_range(0..100) {
            roll if !self.hot => roll,
            roll @ 0..=59 => roll / 2,
            roll @ 60..=64 => 30 + roll - 60,
            roll @ 65..=74 => 50 + roll - 65,
            roll @ 75..=76 => 70 + roll - 75,
            roll @ 77..=86 => 75 + roll - 77,
            roll => roll,
        };
        let feed = match roll {
            0..=29 => Feed::put(Document::Invoice(Arc::new(self.invoice(documents)))),
            30..=49 => Feed::put(Document::PurchaseOrder(Arc::new(self.purchase_order()))),
            50..=69 => Feed::put(Document::GoodsReceipt(Arc::new(self.goods_receipt()))),
            70..=74 => Feed::put(Document::MatchPolicy(Arc::new(self.match_policy()))),
            75..=89 if !documents.is_empty() => {
                let keys: Vec<_> = documents.keys().copied().collect();
                Feed::delete(*keys.choose(&mut self.rng).unwrap())
            }
            _ => {
                let invoices: Vec<_> = documents
                    .values()
                    .filter_map(|document| match document {
                        Document::Invoice(invoice) => Some(invoice.clone()),
                        _ => None,
                    })
                    .collect();
                match invoices.choose(&mut self.rng) {
                    Some(invoice) => {
                        let mut flipped = (**invoice).clone();
                        flipped.status = match flipped.status {
                            InvoiceStatus::Active => InvoiceStatus::Cancelled,
                            InvoiceStatus::Cancelled => InvoiceStatus::Active,
                        };
                        Feed::put(Document::Invoice(Arc::new(flipped)))
                    }
                    None => Feed::put(Document::Invoice(Arc::new(self.invoice(documents)))),
                }
            }
        };
        self.next_offset += 1;
        feed.at_offset(self.next_offset)
    }
}

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
            + snapshot.exception_summary.len();
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

/// Which exception types and invoice statuses a run produced.
#[derive(Default)]
struct Coverage {
    exception_types: BTreeSet<ExceptionType>,
    statuses: BTreeSet<MatchStatus>,
    /// The most active invoices and credit memos on the hot line at once.
    hot_line_invoices: usize,
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
    fn observe(&mut self, snapshot: &Snapshot) {
        self.exception_types.extend(
            snapshot
                .match_exceptions
                .iter()
                .map(|row| row.exception_type),
        );
        self.statuses
            .extend(snapshot.invoice_matches.iter().map(|row| row.status));
    }

    /// Asserts that the histories exercised every rule and every status.
    fn assert_complete(runs: impl IntoIterator<Item = Coverage>) {
        let mut all = Coverage::default();
        for run in runs {
            all.exception_types.extend(run.exception_types);
            all.statuses.extend(run.statuses);
        }
        let missing: Vec<_> = ExceptionType::ALL
            .into_iter()
            .filter(|kind| !all.exception_types.contains(kind))
            .collect();
        assert!(missing.is_empty(), "the histories never raised {missing:?}");
        assert_eq!(all.statuses.len(), 3, "statuses seen: {:?}", all.statuses);
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
