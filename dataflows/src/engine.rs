//! The matching engine as one timely worker sees it: feed upserts at a logical
//! time, advance time, read any output collection as of a time, and observe
//! every change to the outputs.
//!
//! Sources (the Kafka connector, tests, the demo) own a [`Matcher`] per worker.
//! They call [`Matcher::upsert`] for each decoded message, then
//! [`Matcher::advance_to`] with the next ingestion time, and step the worker.
//! Once [`Matcher::is_complete`] says a time is complete, every worker's shard
//! of every output reflects exactly the upserts sent before it, and
//! [`Matcher::read`] on each worker returns that worker's shard of a consistent
//! snapshot.
//!
//! Sources also report their own bookkeeping through the engine —
//! [`Matcher::record_progress`] and [`Matcher::record_dead_letter`] — so that the
//! `source_progress` and `dead_letters` collections are stamped with the same
//! times as the matching outputs: a snapshot at `t` says exactly which offsets it
//! reflects. The engine treats these rows as opaque; it knows nothing of Kafka.
//!
//! **Upsert semantics.** Each document identity holds its latest version; a
//! `None` document deletes it. Within one time, the version with the highest
//! source offset wins ([`Matcher::upsert`]); across times, the later time wins.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use differential_dataflow::operators::arrange::upsert::arrange_from_upsert;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use timely::dataflow::operators::vec::input::Input;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::progress::frontier::AntichainRef;
use timely::worker::Worker;

use crate::graph::{three_way_match, Documents, MatchOutputs};
use crate::model::*;
use crate::rows::*;
use serde::{Deserialize, Serialize};

mod checkpoint;
mod preview;
mod publish;
mod read;
pub use checkpoint::ShardCheckpoint;
use preview::PreviewTraces;
use publish::{release_physical_compaction, LiveRows, Publisher, RowsPerValue};
use read::OutputTrace;

mod collections;
pub use collections::{OutputCollection, Row};

/// Configuration of the matching graph.
#[derive(Clone, Debug)]
pub struct MatchConfig {
    /// The global default policy (SPEC §1.2): what a tenant without a policy, or a
    /// policy field that is absent, falls back to.
    pub default_tolerances: Tolerances,
    /// How many of the most recent dead letters `dead_letters` keeps, across all
    /// workers (each worker keeps its share, at least one).
    pub dead_letter_capacity: usize,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            default_tolerances: Tolerances::default(),
            dead_letter_capacity: 10_000,
        }
    }
}

/// One change to an output collection: the row, the time it changed at, and
/// `+1` (insert) or `-1` (retract).
pub type Change = (Row, Time, isize);

/// Receives the changes one worker's shards of the outputs undergo, one batch
/// per (collection, time) as the graph produces them. Subscriptions are built on it.
pub trait ChangeSink {
    /// Whether the changes of `collection` are wanted now. Rows are built
    /// only for collections that are, so an output nobody reads costs
    /// nothing more than its arrangement. The answer may change at any
    /// time; a batch in progress may be reported in part.
    fn wants(&self, collection: OutputCollection) -> bool;

    /// Takes changes of one collection (draining the vector, so they are not
    /// cloned twice).
    fn take(&mut self, changes: &mut Vec<Change>);
}

/// A closure is a sink that wants every collection's changes.
impl<F: FnMut(&mut Vec<Change>)> ChangeSink for F {
    fn wants(&self, _collection: OutputCollection) -> bool {
        true
    }

    fn take(&mut self, changes: &mut Vec<Change>) {
        self(changes)
    }
}

/// The change sink as the dataflow's operators share it.
type SharedSink = Rc<RefCell<Box<dyn ChangeSink>>>;

/// Why a read was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("as_of {as_of} is older than the retained history, which starts at {since}")]
    Compacted { as_of: Time, since: Time },
    #[error("as_of {as_of} is not complete yet; the newest complete time is {newest}")]
    NotComplete { as_of: Time, newest: Time },
}

/// Fingerprint domains of the source bookkeeping slots (the model's keys use 1–9).
const SOURCE_PROGRESS_DOMAIN: u8 = 16;
const DEAD_LETTER_DOMAIN: u8 = 17;

/// An output arranged by tenant (or topic), rows as values.
type ByTenant<R> = TraceAgent<ValSpine<Text, R, Time, isize>>;

/// The arranged outputs of one worker, looked up by collection: its shard of
/// each collection, keyed by tenant (or topic) — except `invoice_matches`,
/// `po_lines` and `payment_matches`, whose rows are read from the graph's
/// per-document arrangements (keyed by invoice, PO and payment; the keys of
/// one tenant's documents sort together). Every collection has exactly one
/// trace.
struct OutputTraces(BTreeMap<OutputCollection, Box<dyn OutputTrace>>);

impl OutputTraces {
    /// The trace of `collection`.
    fn get(&mut self, collection: OutputCollection) -> &mut dyn OutputTrace {
        self.0
            .get_mut(&collection)
            .expect("every collection has a trace")
            .as_mut()
    }

    /// Every trace.
    fn all(&mut self) -> impl Iterator<Item = &mut Box<dyn OutputTrace>> {
        self.0.values_mut()
    }
}

/// A row of the sources' bookkeeping collections, as sent to the engine.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SourceRow {
    DeadLetter(DeadLetterRow),
    Progress(SourceProgressRow),
}

/// An upsert waiting for the current time to close.
struct PendingUpsert {
    key: Fingerprint,
    offset: i64,
    document: Option<Document>,
}

type UpsertInput = InputHandleVec<Time, (Fingerprint, Option<Document>, Time)>;
type SourceRowInput = InputHandleVec<Time, (Fingerprint, Option<SourceRow>, Time)>;

/// One worker's handle on the matching graph.
pub struct Matcher {
    input: UpsertInput,
    pending: Vec<PendingUpsert>,
    source_input: SourceRowInput,
    /// Source rows waiting for the current time to close, by slot; the last wins.
    pending_source_rows: HashMap<Fingerprint, SourceRow>,
    /// This worker's index, which names its dead-letter slots.
    worker_index: usize,
    /// How many dead-letter slots this worker cycles through.
    dead_letter_slots: u64,
    /// How many dead letters this worker has recorded.
    dead_letters_recorded: u64,
    traces: OutputTraces,
    /// The current documents and the bookkeeping rows, kept readable as of
    /// the newest complete time (or the held checkpoint time) for checkpoints.
    documents: TraceAgent<ValSpine<Fingerprint, Document, Time, isize>>,
    bookkeeping: TraceAgent<ValSpine<Fingerprint, SourceRow, Time, isize>>,
    /// A checkpoint time whose state must stay readable until it is taken.
    checkpoint_hold: Option<Time>,
    probe: ProbeHandle<Time>,
    live_rows: LiveRows,
    /// What a policy preview reads ([`crate::preview`]).
    preview: PreviewTraces,
}

impl Matcher {
    /// Builds the graph on `worker`. Every worker of the computation must build it,
    /// in the same order relative to other dataflows. `changes`, if given, sees
    /// every change to this worker's shard of the outputs.
    pub fn build(
        worker: &mut Worker,
        config: &MatchConfig,
        changes: Option<Box<dyn ChangeSink>>,
    ) -> Self {
        let mut input = UpsertInput::new();
        let mut source_input = SourceRowInput::new();
        let worker_index = worker.index();
        let dead_letter_slots = (config.dead_letter_capacity / worker.peers()).max(1) as u64;
        let changes = changes.map(|sink| Rc::new(RefCell::new(sink)));
        let publisher = Publisher {
            probe: ProbeHandle::new(),
            changes,
            live_rows: LiveRows::default(),
        };
        let default_tolerances = config.default_tolerances;
        let (traces, documents, bookkeeping, preview) = worker.dataflow::<Time, _, _>(|scope| {
            let upserts = scope.input_from(&mut input);
            let source_rows =
                arrange_from_upsert::<
                    ValBuilder<Fingerprint, SourceRow, Time, isize>,
                    ValSpine<Fingerprint, SourceRow, Time, isize>,
                    Fingerprint,
                    SourceRow,
                >(scope.input_from(&mut source_input), "source bookkeeping");
            let mut bookkeeping = source_rows.trace.clone();
            release_physical_compaction(&mut bookkeeping);
            let dead_letters = source_rows.clone().flat_map_ref(|_, row| match row {
                SourceRow::DeadLetter(row) => Some((row.topic.clone(), row.clone())),
                SourceRow::Progress(_) => None,
            });
            let source_progress = source_rows.flat_map_ref(|_, row| match row {
                SourceRow::Progress(row) => Some((row.topic.clone(), row.clone())),
                SourceRow::DeadLetter(_) => None,
            });
            let current = arrange_from_upsert::<
                ValBuilder<Fingerprint, Document, Time, isize>,
                ValSpine<Fingerprint, Document, Time, isize>,
                Fingerprint,
                Document,
            >(upserts, "current documents");
            let mut documents_trace = current.trace.clone();
            release_physical_compaction(&mut documents_trace);
            let documents = Documents {
                purchase_orders: current
                    .clone()
                    .flat_map_ref(|key, document| match document {
                        Document::PurchaseOrder(po) => Some((*key, po.clone())),
                        _ => None,
                    }),
                goods_receipts: current
                    .clone()
                    .flat_map_ref(|key, document| match document {
                        Document::GoodsReceipt(receipt) => Some((*key, receipt.clone())),
                        _ => None,
                    }),
                invoices: current
                    .clone()
                    .flat_map_ref(|key, document| match document {
                        Document::Invoice(invoice) => Some((*key, invoice.clone())),
                        _ => None,
                    }),
                match_policies: current
                    .clone()
                    .flat_map_ref(|key, document| match document {
                        Document::MatchPolicy(policy) => Some((*key, policy.clone())),
                        _ => None,
                    }),
                exception_resolutions: current.clone().flat_map_ref(
                    |key, document| match document {
                        Document::ExceptionResolution(resolution) => {
                            Some((*key, resolution.clone()))
                        }
                        _ => None,
                    },
                ),
                payments: current.flat_map_ref(|key, document| match document {
                    Document::Payment(payment) => Some((*key, payment.clone())),
                    _ => None,
                }),
            };
            let MatchOutputs {
                invoice_matches,
                match_exceptions,
                po_lines,
                exception_summary,
                po_suggestions,
                payment_matches,
                payment_exceptions,
                payment_suggestions,
                preview,
            } = three_way_match(documents, default_tolerances);
            let po_lines = publisher.publish_arranged(
                OutputCollection::PoLines,
                po_lines,
                |_, line| Some(Row::PoLine(line.to_row())),
                RowsPerValue::MayRepeat,
            );
            let invoice_matches = publisher.publish_arranged(
                OutputCollection::InvoiceMatches,
                invoice_matches,
                |_, (row, _)| Some(Row::InvoiceMatch(row.clone())),
                RowsPerValue::MayRepeat,
            );
            let payment_matches = publisher.publish_arranged(
                OutputCollection::PaymentMatches,
                payment_matches,
                |_, (row, _)| Some(Row::PaymentMatch(row.clone())),
                RowsPerValue::MayRepeat,
            );
            let preview = PreviewTraces::new(preview, invoice_matches.clone());
            let traces: [(OutputCollection, Box<dyn OutputTrace>); 10] = [
                (OutputCollection::InvoiceMatches, Box::new(invoice_matches)),
                publisher.publish(
                    OutputCollection::MatchExceptions,
                    match_exceptions,
                    Row::Exception,
                ),
                (OutputCollection::PoLines, Box::new(po_lines)),
                publisher.publish(
                    OutputCollection::ExceptionSummary,
                    exception_summary,
                    Row::ExceptionSummary,
                ),
                publisher.publish(
                    OutputCollection::PoSuggestions,
                    po_suggestions,
                    Row::PoSuggestion,
                ),
                (OutputCollection::PaymentMatches, Box::new(payment_matches)),
                publisher.publish(
                    OutputCollection::PaymentExceptions,
                    payment_exceptions,
                    Row::PaymentException,
                ),
                publisher.publish(
                    OutputCollection::PaymentSuggestions,
                    payment_suggestions,
                    Row::PaymentSuggestion,
                ),
                publisher.publish(OutputCollection::DeadLetters, dead_letters, Row::DeadLetter),
                publisher.publish(
                    OutputCollection::SourceProgress,
                    source_progress,
                    Row::SourceProgress,
                ),
            ];
            (
                OutputTraces(traces.into_iter().collect()),
                documents_trace,
                bookkeeping,
                preview,
            )
        });
        let Publisher {
            probe, live_rows, ..
        } = publisher;
        Matcher {
            input,
            pending: Vec::new(),
            source_input,
            pending_source_rows: HashMap::new(),
            worker_index,
            dead_letter_slots,
            dead_letters_recorded: 0,
            traces,
            documents,
            bookkeeping,
            checkpoint_hold: None,
            probe,
            live_rows,
            preview,
        }
    }

    /// The time new upserts are stamped with.
    pub fn time(&self) -> Time {
        *self.input.time()
    }

    /// Stages a new version of the document with identity `key` (`None` deletes it)
    /// at the current time. `offset` is the message's source offset: if the same
    /// key is upserted more than once before the time advances, the version with
    /// the highest offset wins, whatever the call order.
    pub fn upsert(&mut self, key: Fingerprint, document: Option<Document>, offset: i64) {
        self.pending.push(PendingUpsert {
            key,
            offset,
            document,
        });
    }

    /// Records, at the current time, how far one source partition is reflected:
    /// the row replaces the partition's previous one in `source_progress`.
    pub fn record_progress(&mut self, row: SourceProgressRow) {
        let partition = row.partition.to_string();
        let slot = Fingerprint::of(SOURCE_PROGRESS_DOMAIN, &[&row.topic, &partition]);
        self.pending_source_rows
            .insert(slot, SourceRow::Progress(row));
    }

    /// Records a rejected message at the current time. `dead_letters` keeps the
    /// most recent ones: this worker's oldest is dropped once its share of
    /// [`MatchConfig::dead_letter_capacity`] is full.
    pub fn record_dead_letter(&mut self, row: DeadLetterRow) {
        let slot = (self.dead_letters_recorded % self.dead_letter_slots).to_string();
        let worker = self.worker_index.to_string();
        self.dead_letters_recorded += 1;
        let slot = Fingerprint::of(DEAD_LETTER_DOMAIN, &[&worker, &slot]);
        self.pending_source_rows
            .insert(slot, SourceRow::DeadLetter(row));
    }

    /// Sends the staged upserts at the current time and moves to `time`, which
    /// must not be earlier than [`time`](Self::time). Outputs reflect everything
    /// sent before `time` once [`is_complete`](Self::is_complete)`(time - 1)`.
    pub fn advance_to(&mut self, time: Time) {
        let now = self.time();
        // Highest offset first within each key, then keep the first of each key.
        self.pending
            .sort_unstable_by(|a, b| a.key.cmp(&b.key).then(b.offset.cmp(&a.offset)));
        self.pending.dedup_by_key(|upsert| upsert.key);
        for upsert in self.pending.drain(..) {
            self.input.send((upsert.key, upsert.document, now));
        }
        for (slot, row) in self.pending_source_rows.drain() {
            self.source_input.send((slot, Some(row), now));
        }
        self.input.advance_to(time);
        self.input.flush();
        self.source_input.advance_to(time);
        self.source_input.flush();
    }

    /// Rows per collection in this worker's shard as of the newest time it
    /// has processed, kept as the outputs' batches form; free to call after
    /// every step.
    pub fn live_rows(&self) -> Vec<(OutputCollection, i64)> {
        let rows = self.live_rows.borrow();
        rows.iter()
            .map(|(collection, rows)| (*collection, *rows))
            .collect()
    }

    /// Whether every output reflects all upserts at times `<= time`, on every worker.
    pub fn is_complete(&self, time: Time) -> bool {
        !self.probe.less_equal(&time)
    }

    /// The newest complete time, if any time is complete.
    pub fn newest_complete(&self) -> Option<Time> {
        let mut newest = None;
        self.probe.with_frontier(|frontier| {
            newest = match frontier.first() {
                Some(0) => None,
                Some(first) => Some(first - 1),
                None => Some(Time::MAX),
            }
        });
        newest
    }

    /// Lets the outputs forget history before `since`: reads `as_of` an earlier
    /// time are refused from then on. Callers keep `since` at most the oldest
    /// time any reader may still ask for.
    ///
    /// Only *logical* compaction waits for `since`; physical compaction (the
    /// spine's licence to merge batches) is never held back — see
    /// `release_physical_compaction`.
    pub fn allow_compaction(&mut self, since: Time) {
        let frontier = [since];
        for trace in self.traces.all() {
            trace.set_logical_compaction(AntichainRef::new(&frontier));
        }
        self.preview
            .set_logical_compaction(AntichainRef::new(&frontier));
        self.compact_checkpoint_state();
    }
}
