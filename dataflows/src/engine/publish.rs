//! How the engine publishes an output: the arranged collection becomes the
//! trace reads are served from, its changes go to the change sink (while the
//! sink wants them), the probe that says when a time is complete sits after
//! the sink, and its row count is kept as its batches form.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;
use timely::progress::frontier::AntichainRef;

use super::read::{self, OutputTrace};
use super::{ByTenant, SharedSink};
use crate::engine::{Change, OutputCollection, Row};
use crate::model::{Text, Time};
use crate::operators::{Collection, KeyedArrangement};

/// Rows per output collection in this worker's shard, kept as the outputs'
/// batches are formed (each batch's diffs added), so they cost nothing to
/// read: the counts as of the newest time this worker has processed, which
/// may be ahead of the newest complete time (a gauge, not a read).
pub(super) type LiveRows = Rc<RefCell<BTreeMap<OutputCollection, i64>>>;

/// What every output is published to: the probe, the change sink (if any)
/// and the row tally.
pub(super) struct Publisher {
    pub(super) probe: ProbeHandle<Time>,
    pub(super) changes: Option<SharedSink>,
    pub(super) live_rows: LiveRows,
}

/// Whether two values of an arranged output can make the same row.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RowsPerValue {
    /// Each value is its row (the outputs keyed by tenant or topic).
    Distinct,
    /// A value carries more than its row (the PO behind a PO line, an
    /// invoice's tolerance, a payment), so a change of what the row does not
    /// show retracts and re-adds the same row: the changes are consolidated
    /// before they are reported.
    MayRepeat,
}

impl Publisher {
    /// Arranges an output by tenant and publishes it (see
    /// [`publish_arranged`](Self::publish_arranged)): the collection with the
    /// trace its reads are served from.
    pub(super) fn publish<'s, R>(
        &self,
        output: OutputCollection,
        collection: Collection<'s, (Text, R)>,
        to_row: fn(R) -> Row,
    ) -> (OutputCollection, Box<dyn OutputTrace>)
    where
        R: differential_dataflow::ExchangeData,
        R: read::OutputValue,
    {
        let arranged = collection.arrange_by_key();
        let trace: ByTenant<R> = self.publish_arranged(
            output,
            arranged,
            move |_, row| Some(to_row(row.clone())),
            RowsPerValue::Distinct,
        );
        (output, Box::new(trace))
    }

    /// Reports the changes of an arranged output's rows (`to_row` picks and
    /// builds them from the arrangement's values) to the change sink while
    /// it wants `output`'s (rows are not built otherwise), and attaches the
    /// output to the probe that says when a time is complete. The probe sits
    /// after the change sink, so once a time is complete every change at or
    /// before it has been reported, on every worker. Keeps the output's row
    /// count (one addition per update of its batches). Returns the trace
    /// that reads are served from.
    pub(super) fn publish_arranged<'s, K, V>(
        &self,
        output: OutputCollection,
        arranged: KeyedArrangement<'s, K, V>,
        to_row: impl Fn(&K, &V) -> Option<Row> + 'static,
        rows: RowsPerValue,
    ) -> TraceAgent<ValSpine<K, V, Time, isize>>
    where
        K: differential_dataflow::ExchangeData,
        V: differential_dataflow::ExchangeData,
    {
        let tally = Rc::clone(&self.live_rows);
        tally.borrow_mut().insert(output, 0);
        arranged
            .clone()
            .as_collection(|_, _| ())
            .inspect_batch(move |_, updates| {
                let net: isize = updates.iter().map(|(_, _, diff)| diff).sum();
                *tally.borrow_mut().entry(output).or_default() += net as i64;
            });
        match self.changes.clone() {
            Some(sink) => {
                let mut buffer: Vec<Change> = Vec::new();
                let wanted = sink.clone();
                arranged
                    .clone()
                    .flat_map_ref(move |key, value| {
                        if wanted.borrow().wants(output) {
                            to_row(key, value)
                        } else {
                            None
                        }
                    })
                    .inspect_batch(move |_, updates| {
                        buffer.clear();
                        buffer.extend(updates.iter().cloned());
                        if rows == RowsPerValue::MayRepeat {
                            // What nets to nothing is not a change.
                            differential_dataflow::consolidation::consolidate_updates(&mut buffer);
                        }
                        if !buffer.is_empty() {
                            sink.borrow_mut().take(&mut buffer);
                        }
                    })
                    .inner
                    .probe_with(&self.probe);
            }
            None => {
                arranged.stream.clone().probe_with(&self.probe);
            }
        }
        let mut trace = arranged.trace;
        release_physical_compaction(&mut trace);
        trace
    }
}

/// Lets the spine merge an output's batches as soon as they arrive.
///
/// A spine holds back (unmerged, as "pending" batches) every batch whose upper
/// is beyond the physical compaction frontier of some handle. Holding that
/// frontier at the retention horizon left every batch of the retained window
/// unmerged — with a batch per sealed time, hundreds — so each read walked
/// hundreds of cursors (a one-tenant snapshot cost ~30 ms of a worker at
/// 5k changes/s), and the merges came in bursts. Reads take all batches
/// (`batches_through(&[])`), never a cut at some frontier, so they need no
/// batch boundaries kept; what they may ask for is bounded by *logical*
/// compaction alone ([`Matcher::allow_compaction`]).
pub(super) fn release_physical_compaction(trace: &mut impl TraceReader<Time = Time>) {
    trace.set_physical_compaction(AntichainRef::new(&[]));
}
