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
//! **Upsert semantics.** Each document identity holds its latest version; a
//! `None` document deletes it. Within one time, the version with the highest
//! source offset wins ([`Matcher::upsert`]); across times, the later time wins.

use std::cell::RefCell;
use std::rc::Rc;

use differential_dataflow::operators::arrange::upsert::arrange_from_upsert;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::trace::TraceReader;
use timely::dataflow::operators::vec::input::Input;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::progress::frontier::AntichainRef;
use timely::worker::Worker;

use crate::graph::{three_way_match, Collection, Documents, MatchOutputs};
use crate::model::*;
use crate::rows::*;

/// Configuration of the matching graph.
#[derive(Clone, Debug, Default)]
pub struct MatchConfig {
    /// The global default policy (SPEC §1.2): what a tenant without a policy, or a
    /// policy field that is absent, falls back to.
    pub default_tolerances: Tolerances,
}

/// The output collections of SPEC §3 that the graph maintains.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutputCollection {
    InvoiceMatches,
    MatchExceptions,
    PoLines,
    ExceptionSummary,
}

impl OutputCollection {
    /// Every collection the graph maintains.
    pub const ALL: [OutputCollection; 4] = [
        OutputCollection::InvoiceMatches,
        OutputCollection::MatchExceptions,
        OutputCollection::PoLines,
        OutputCollection::ExceptionSummary,
    ];
    /// The collection's name in SPEC §3.
    pub fn name(&self) -> &'static str {
        match self {
            OutputCollection::InvoiceMatches => "invoice_matches",
            OutputCollection::MatchExceptions => "match_exceptions",
            OutputCollection::PoLines => "po_lines",
            OutputCollection::ExceptionSummary => "exception_summary",
        }
    }
    /// The collection with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|collection| collection.name() == name)
    }
}

/// A row of any output collection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Row {
    InvoiceMatch(InvoiceMatchRow),
    Exception(ExceptionRow),
    PoLine(PoLineRow),
    ExceptionSummary(ExceptionSummaryRow),
}

impl Row {
    /// The collection the row belongs to.
    pub fn collection(&self) -> OutputCollection {
        match self {
            Row::InvoiceMatch(_) => OutputCollection::InvoiceMatches,
            Row::Exception(_) => OutputCollection::MatchExceptions,
            Row::PoLine(_) => OutputCollection::PoLines,
            Row::ExceptionSummary(_) => OutputCollection::ExceptionSummary,
        }
    }
}

/// One change to an output collection: the row, the time it changed at, and
/// `+1` (insert) or `-1` (retract).
pub type Change = (Row, Time, isize);

/// Receives the changes one worker's shards of the outputs undergo, one batch
/// per (collection, time) as the graph produces them. Subscriptions are built on it.
pub type ChangeSink = Box<dyn FnMut(&[Change])>;

/// Why a read was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("as_of {as_of} is older than the retained history, which starts at {since}")]
    Compacted { as_of: Time, since: Time },
    #[error("as_of {as_of} is not complete yet; the newest complete time is {newest}")]
    NotComplete { as_of: Time, newest: Time },
}

type OutputTrace<R> = TraceAgent<ValSpine<Text, R, Time, isize>>;

/// The arranged outputs of one worker: its shard of each collection, keyed by tenant.
struct OutputTraces {
    invoice_matches: OutputTrace<InvoiceMatchRow>,
    match_exceptions: OutputTrace<ExceptionRow>,
    po_lines: OutputTrace<PoLineRow>,
    exception_summary: OutputTrace<ExceptionSummaryRow>,
}

/// An upsert waiting for the current time to close.
struct PendingUpsert {
    key: Fingerprint,
    offset: i64,
    document: Option<Document>,
}

type UpsertInput = InputHandleVec<Time, (Fingerprint, Option<Document>, Time)>;

/// One worker's handle on the matching graph.
pub struct Matcher {
    input: UpsertInput,
    pending: Vec<PendingUpsert>,
    traces: OutputTraces,
    probe: ProbeHandle<Time>,
}

impl Matcher {
    /// Builds the graph on `worker`. Every worker of the computation must build it,
    /// in the same order relative to other dataflows. `changes`, if given, sees
    /// every change to this worker's shard of the outputs.
    pub fn build(worker: &mut Worker, config: &MatchConfig, changes: Option<ChangeSink>) -> Self {
        let mut input = UpsertInput::new();
        let probe = ProbeHandle::new();
        let changes = changes.map(|sink| Rc::new(RefCell::new(sink)));
        let default_tolerances = config.default_tolerances;
        let traces = worker.dataflow::<Time, _, _>(|scope| {
            let upserts = scope.input_from(&mut input);
            let current = arrange_from_upsert::<
                ValBuilder<Fingerprint, Document, Time, isize>,
                ValSpine<Fingerprint, Document, Time, isize>,
                Fingerprint,
                Document,
            >(upserts, "current documents");
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
                match_policies: current.flat_map_ref(|key, document| match document {
                    Document::MatchPolicy(policy) => Some((*key, policy.clone())),
                    _ => None,
                }),
            };
            let MatchOutputs {
                invoice_matches,
                match_exceptions,
                po_lines,
                exception_summary,
            } = three_way_match(documents, default_tolerances);
            OutputTraces {
                invoice_matches: publish(invoice_matches, Row::InvoiceMatch, &probe, &changes),
                match_exceptions: publish(match_exceptions, Row::Exception, &probe, &changes),
                po_lines: publish(po_lines, Row::PoLine, &probe, &changes),
                exception_summary: publish(
                    exception_summary,
                    Row::ExceptionSummary,
                    &probe,
                    &changes,
                ),
            }
        });
        Matcher {
            input,
            pending: Vec::new(),
            traces,
            probe,
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
        self.input.advance_to(time);
        self.input.flush();
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
    pub fn allow_compaction(&mut self, since: Time) {
        let frontier = [since];
        let frontier = AntichainRef::new(&frontier);
        let traces = &mut self.traces;
        for_each_trace!(traces, |trace| {
            trace.set_logical_compaction(frontier);
            trace.set_physical_compaction(frontier);
        });
    }

    /// This worker's shard of `collection` as of `as_of`: every row with its
    /// multiplicity (always 1 for a correct graph), in key order. With `tenant`,
    /// only that tenant's rows (a seek, not a scan).
    pub fn read(
        &mut self,
        collection: OutputCollection,
        as_of: Time,
        tenant: Option<&str>,
    ) -> Result<Vec<(Row, isize)>, ReadError> {
        let newest = self.newest_complete();
        if newest.is_none_or(|newest| as_of > newest) {
            return Err(ReadError::NotComplete {
                as_of,
                newest: newest.unwrap_or(0),
            });
        }
        let mut rows = Vec::new();
        let traces = &mut self.traces;
        match collection {
            OutputCollection::InvoiceMatches => read_trace(
                &mut traces.invoice_matches,
                as_of,
                tenant,
                Row::InvoiceMatch,
                &mut rows,
            ),
            OutputCollection::MatchExceptions => read_trace(
                &mut traces.match_exceptions,
                as_of,
                tenant,
                Row::Exception,
                &mut rows,
            ),
            OutputCollection::PoLines => {
                read_trace(&mut traces.po_lines, as_of, tenant, Row::PoLine, &mut rows)
            }
            OutputCollection::ExceptionSummary => read_trace(
                &mut traces.exception_summary,
                as_of,
                tenant,
                Row::ExceptionSummary,
                &mut rows,
            ),
        }?;
        Ok(rows)
    }
}

/// Runs `$body` with `$trace` bound to each output trace in turn.
macro_rules! for_each_trace {
    ($traces:expr, |$trace:ident| $body:block) => {{
        {
            let $trace = &mut $traces.invoice_matches;
            $body
        }
        {
            let $trace = &mut $traces.match_exceptions;
            $body
        }
        {
            let $trace = &mut $traces.po_lines;
            $body
        }
        {
            let $trace = &mut $traces.exception_summary;
            $body
        }
    }};
}
use for_each_trace;

/// Arranges an output by tenant, reports its changes to `changes`, and attaches
/// it to the probe that says when a time is complete.
fn publish<'s, R>(
    collection: Collection<'s, (Text, R)>,
    to_row: fn(R) -> Row,
    probe: &ProbeHandle<Time>,
    changes: &Option<Rc<RefCell<ChangeSink>>>,
) -> OutputTrace<R>
where
    R: differential_dataflow::ExchangeData,
{
    let arranged = collection.arrange_by_key();
    arranged.stream.clone().probe_with(probe);
    if let Some(sink) = changes.clone() {
        let mut buffer: Vec<Change> = Vec::new();
        arranged
            .clone()
            .as_collection(move |_, row: &R| to_row(row.clone()))
            .inspect_batch(move |_, updates| {
                buffer.clear();
                buffer.extend(updates.iter().cloned());
                (sink.borrow_mut())(&buffer);
            });
    }
    arranged.trace
}

/// Accumulates `trace` as of `as_of` into `rows`, optionally for one tenant.
fn read_trace<R: Clone + Ord + 'static>(
    trace: &mut OutputTrace<R>,
    as_of: Time,
    tenant: Option<&str>,
    to_row: fn(R) -> Row,
    rows: &mut Vec<(Row, isize)>,
) -> Result<(), ReadError> {
    let since = trace
        .get_logical_compaction()
        .first()
        .copied()
        .unwrap_or(Time::MAX);
    if as_of < since {
        return Err(ReadError::Compacted { as_of, since });
    }
    let Some(batches) = trace.batches_through(AntichainRef::new(&[])) else {
        return Ok(());
    };
    let (mut cursor, storage) = cursor_list(batches);
    let wanted: Option<Text> = tenant.map(Text::from);
    if let Some(tenant) = &wanted {
        cursor.seek_key(&storage, tenant);
    }
    while let Some(key) = cursor.get_key(&storage) {
        if wanted.as_ref().is_some_and(|tenant| tenant != key) {
            break;
        }
        while let Some(row) = cursor.get_val(&storage) {
            let mut count = 0isize;
            cursor.map_times(&storage, |time, diff| {
                if *time <= as_of {
                    count += *diff;
                }
            });
            if count != 0 {
                rows.push((to_row(row.clone()), count));
            }
            cursor.step_val(&storage);
        }
        cursor.step_key(&storage);
    }
    Ok(())
}
